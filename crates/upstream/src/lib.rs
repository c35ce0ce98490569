//! Everything on the server side of Meridian: connections to Postgres nodes, the topology
//! snapshot the router reads, and the monitor loop that keeps it fresh.

mod conn;
mod error;
pub mod failover;
mod functions;
mod lsn;
pub mod monitor;
pub mod replay;
pub mod stream;
pub mod tls;
mod topology;

pub use conn::{
    connect, send_cancel, server_error, unix_socket_path, BackendConn, ConnectParams, ServerAddr,
};
pub use error::UpstreamError;
pub use failover::{Ha, HaEvent, HaReport};
pub use functions::{spawn_loader as spawn_function_loader, FunctionCatalog, Volatility};
pub use lsn::{BadLsn, Lsn};
pub use replay::ReplayTracker;
pub use tls::{NodeTls, PgTls, UpstreamTls};
pub use topology::{NodeState, Role, Topology, TopologyHandle};
