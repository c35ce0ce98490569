//! The crate-wide error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while finding PostgreSQL, building a cluster,
/// driving its nodes or running a [`DelayRelay`](crate::DelayRelay).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PostgreSQL server binaries (`pg_ctl`, `initdb`, `postgres`, ...)
    /// could not be found (and could not be installed).
    #[error("PostgreSQL server binaries not found: {0}")]
    PostgresNotFound(String),

    /// Looking up the unprivileged OS user that runs the servers failed.
    #[error("cannot use OS user `{user}` to run PostgreSQL: {reason}")]
    User {
        /// The OS user name (normally `postgres`).
        user: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// The requested configuration is invalid (bad setting name, replica
    /// index out of range, path too long for a unix socket, ...).
    #[error("invalid testkit configuration: {0}")]
    Config(String),

    /// A filesystem or socket operation failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A child process could not be spawned.
    #[error("failed to run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A child process exited unsuccessfully.
    #[error("`{command}` failed ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// A child process did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The time limit.
        timeout: Duration,
    },

    /// A PostgreSQL node failed to start; carries the tail of its log.
    #[error("node {node} failed to start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    NodeStart {
        /// Node name (`pg1`, `pg2`, ...).
        node: String,
        /// What went wrong (usually pg_ctl's message).
        reason: String,
        /// Path of the node's server log.
        log: PathBuf,
        /// The last lines the server logged during this start attempt.
        log_tail: String,
    },

    /// `psql` failed (connection or SQL error).
    #[error(
        "psql against {target} (user {user}, database {db}) failed: {stderr}\n--- SQL ---\n{sql}"
    )]
    Psql {
        /// `node name @ address` or just the address.
        target: String,
        /// Role used to connect.
        user: String,
        /// Database.
        db: String,
        /// The SQL text sent.
        sql: String,
        /// psql's error output.
        stderr: String,
    },

    /// The operation needs a running node but its postmaster is not running.
    #[error("node {0} is not running")]
    NotRunning(String),

    /// Waiting for some condition timed out.
    #[error("timed out after {timeout:?} waiting for {what}")]
    WaitTimeout {
        /// What was awaited, with diagnostics.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when this is a start failure caused by the port being taken.
    pub(crate) fn is_port_conflict(&self) -> bool {
        match self {
            Error::NodeStart {
                log_tail, reason, ..
            } => {
                let hay = format!("{reason}\n{log_tail}");
                hay.contains("could not bind")
                    || hay.contains("Address already in use")
                    || hay.contains("could not create any TCP/IP sockets")
                    || hay.contains("could not create lock file")
            }
            _ => false,
        }
    }
}
