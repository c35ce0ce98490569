//! Giving memory back after a burst of connections. glibc's allocator keeps memory freed by
//! ended sessions in its per-thread arenas, so after thousands of connections close the process
//! would stay at its peak size (measured: about 200 MB after 10,000 connections that never
//! finished startup, see docs/performance.md). When at least `TRIM_AFTER` client connections
//! have ended since the highest count seen, `malloc_trim(0)` hands the free pages back.
//! Connections that come and go at a steady count never trigger it.

use std::sync::Arc;
use std::time::Duration;

use meridian_session::ProxyState;

/// Client connections that must have ended since the high-water mark before a trim.
const TRIM_AFTER: i64 = 1_000;
/// How often the client count is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Starts the trimming task; it runs until aborted.
pub fn spawn_trimmer(state: Arc<ProxyState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clients = || state.stats.clients_in("startup") + state.stats.clients_in("session");
        let mut high = clients();
        loop {
            tokio::time::sleep(EVERY).await;
            let now = clients();
            high = high.max(now);
            if high - now >= TRIM_AFTER {
                // Trimming walks every arena: off the event loop.
                let _ = tokio::task::spawn_blocking(trim).await;
                tracing::debug!(
                    from = high,
                    to = now,
                    "client connections ended: freed memory returned"
                );
                high = now;
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
