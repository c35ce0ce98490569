//! The client side of Meridian: the listener, startup and authentication, and the per-client
//! session that routes statements to backends and forwards frames both ways.

mod cancel;
mod error;
mod listener;
mod pool;
mod ratelimit;
mod reload;
mod session;

pub use session::route::{want_of, Want};
mod startup;
mod state;
mod stats;
mod tls;
mod workers;

pub use cancel::{CancelGuard, CancelRegistry, CancelSlot};
pub use error::SessionError;
pub use listener::{serve, Listeners};
pub use ratelimit::AuthFailures;
pub use reload::{ReloadRefused, ReloadReport, Reloader};
pub use state::{Drain, ProxyState, UserAuth, Users};
pub use stats::{ClientGuard, ServerConns, Stats, QUERY_BUCKETS_S, WAIT_BUCKETS_MS};
pub use tls::ClientTls;
pub use workers::Workers;
