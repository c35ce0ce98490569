//! # meridian-testkit
//!
//! A reusable harness that runs a **real** PostgreSQL primary with **real**
//! streaming replicas on loopback, for Meridian's integration tests,
//! `meridian demo` and benchmarks, plus a [`DelayRelay`] that adds network
//! latency (or partitions) between components.
//!
//! ```no_run
//! use std::time::Duration;
//! use meridian_testkit::{creds, Cluster};
//!
//! let cluster = Cluster::builder()
//!     .replicas(2)
//!     .replica_setting(1, "recovery_min_apply_delay", "500ms")
//!     .start()?;
//! let primary = cluster.primary();
//! cluster.psql(primary, creds::APP_DB, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")?;
//! cluster.wait_replicas_caught_up(Duration::from_secs(30))?;
//! assert_eq!(cluster.psql(&cluster.replicas()[0], creds::APP_DB, "SELECT count(*) FROM t")?, "1");
//! # Ok::<(), meridian_testkit::Error>(())
//! ```
//!
//! * Binaries are located (or installed with apt when root) by
//!   [`ensure_postgres`].
//! * Servers never run as root: when the process is root they run as the
//!   `postgres` OS user, which owns the cluster directory.
//! * Several clusters may run in parallel in one process (cargo's test
//!   threads) and across processes: ports come from [`free_port`], every
//!   cluster has its own directory and unix socket directory.
//! * Each node's port, replication upstream and node-specific settings live
//!   in [`NODE_CONF_FILE`] inside its data directory, included last from
//!   `postgresql.conf` (so `ALTER SYSTEM` still wins).
//! * Everything is blocking (std processes and threads, no async runtime),
//!   so it works from sync tests and, via `spawn_blocking`, from async code.
//!   A primary with two replicas starts in about 1.5 s.
//! * If the process dies without unwinding (SIGKILL, Ctrl-C), a per-cluster
//!   watchdog process stops the servers and removes the directory.
//! * Set `MERIDIAN_TESTKIT_KEEP=1` to keep data directories and logs after
//!   a run.

#![warn(missing_docs)]

mod cluster;
mod error;
mod node;
mod pgbin;
mod port;
mod process;
mod relay;

pub use cluster::{Cluster, ClusterBuilder, KEEP_ENV, TMPDIR_ENV};
pub use error::Error;
pub use node::{Node, NODE_CONF_FILE};
pub use pgbin::{ensure_postgres, PgBin, BINDIR_ENV, DEFAULT_PSQL_TIMEOUT};
pub use port::free_port;
pub use relay::DelayRelay;

/// Roles, passwords and the database every [`Cluster`] is created with.
///
/// `pg_hba.conf` (all TCP rules are for `127.0.0.1/32`):
///
/// | type  | database    | user         | method          |
/// |-------|-------------|--------------|-----------------|
/// | local | all         | all          | trust           |
/// | local | replication | all          | trust           |
/// | host  | replication | `replicator` | scram-sha-256   |
/// | host  | all         | `app_md5`    | md5             |
/// | host  | all         | `app_plain`  | password        |
/// | host  | all         | `app_trust`  | trust           |
/// | host  | all         | all          | scram-sha-256   |
///
/// `app` owns database `app`; `app_md5`, `app_plain` and `app_trust` have
/// CONNECT/CREATE/TEMPORARY on it and ALL on its `public` schema.
pub mod creds {
    /// Superuser role (also the initdb bootstrap user).
    pub const SUPERUSER: &str = "postgres";
    /// Superuser password (SCRAM).
    pub const SUPERUSER_PASSWORD: &str = "postgres-secret";
    /// Application role; owns [`APP_DB`]. SCRAM password.
    pub const APP_USER: &str = "app";
    /// Password of [`APP_USER`].
    pub const APP_PASSWORD: &str = "app-secret";
    /// Application database.
    pub const APP_DB: &str = "app";
    /// Role authenticated with `md5` (its password is stored as an md5 hash).
    pub const MD5_USER: &str = "app_md5";
    /// Password of [`MD5_USER`].
    pub const MD5_PASSWORD: &str = "md5-secret";
    /// Role authenticated with cleartext `password`.
    pub const PLAIN_USER: &str = "app_plain";
    /// Password of [`PLAIN_USER`].
    pub const PLAIN_PASSWORD: &str = "plain-secret";
    /// Role authenticated with `trust` (no password).
    pub const TRUST_USER: &str = "app_trust";
    /// Replication role used by the replicas (SCRAM).
    pub const REPL_USER: &str = "replicator";
    /// Password of [`REPL_USER`].
    pub const REPL_PASSWORD: &str = "repl-secret";
}
