//! Routing policy that does not depend on a particular session: which replica serves a read.
//!
//! A replica is a candidate when it is healthy, streaming from the current primary, within
//! `max_replica_lag_bytes`/`max_replica_lag_ms`, and has replayed at least the position the
//! session requires. Among candidates, the proxy's own region wins, then the lowest round-trip
//! time (within `latency_tolerance_ms` of the best, candidates count as equal), then the balance
//! policy picks one.

mod choose;

pub use choose::{Choice, NoReplica, ReplicaChooser};
