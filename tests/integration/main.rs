//! Meridian's integration suite: every test starts a real PostgreSQL primary with streaming
//! replicas (meridian-testkit) and talks to Meridian with real clients.

// tokio_postgres::Client is not Debug, so `.err().expect()` stands in for `expect_err`.
#![allow(clippy::err_expect)]

mod admin;
mod auth;
mod auto_prepare;
mod auto_prepare_extended;
mod bad_input;
mod barrage;
mod cli;
mod clients;
mod consistency;
mod failover;
mod limits;
mod pooling;
mod protocol;
mod reload;
mod routing;
mod shutdown;
mod support;
mod tls;
mod unix_socket;
mod upstream_failure;
