//! Meridian's integration suite: every test starts a real PostgreSQL primary with streaming
//! replicas (meridian-testkit) and talks to Meridian with real clients.

mod auth;
mod bad_input;
mod cli;
mod clients;
mod protocol;
mod support;
mod upstream_failure;
