//! Failed-authentication limiting per client address: after `proxy.auth_failure_limit` failures
//! within `proxy.auth_failure_window_s`, an address's further attempts are refused before any
//! password check until its window ends. The table is bounded: expired entries are dropped,
//! and when it is full the entry whose window started first makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once (about 3 MiB at the cap).
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the address's current window began (at its first failure in it).
    since: Instant,
    /// Failures in the window.
    failures: u32,
}

/// Failed authentications by client address.
#[derive(Debug)]
pub struct AuthFailures {
    table: Mutex<HashMap<IpAddr, Entry>>,
    cap: usize,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures::with_cap(MAX_TRACKED)
    }
}

impl AuthFailures {
    /// A table holding at most `cap` addresses.
    pub fn with_cap(cap: usize) -> Self {
        AuthFailures {
            table: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `addr` has used up its failures for the current window (`limit` 0: never).
    pub fn blocked(&self, addr: IpAddr, limit: u32, window: Duration) -> bool {
        self.blocked_at(addr, limit, window, Instant::now())
    }

    fn blocked_at(&self, addr: IpAddr, limit: u32, window: Duration, now: Instant) -> bool {
        if limit == 0 {
            return false;
        }
        let mut table = self.table();
        match table.get(&addr) {
            Some(e) if now.duration_since(e.since) >= window => {
                table.remove(&addr);
                false
            }
            Some(e) => e.failures >= limit,
            None => false,
        }
    }

    /// Records a failed authentication from `addr`; returns the failures in its window.
    pub fn record(&self, addr: IpAddr, limit: u32, window: Duration) -> u32 {
        self.record_at(addr, limit, window, Instant::now())
    }

    fn record_at(&self, addr: IpAddr, limit: u32, window: Duration, now: Instant) -> u32 {
        if limit == 0 {
            return 0;
        }
        let mut table = self.table();
        if let Some(e) = table.get_mut(&addr) {
            if now.duration_since(e.since) >= window {
                *e = Entry {
                    since: now,
                    failures: 0,
                };
            }
            e.failures = e.failures.saturating_add(1);
            return e.failures;
        }
        if table.len() >= self.cap {
            table.retain(|_, e| now.duration_since(e.since) < window);
        }
        if table.len() >= self.cap {
            if let Some(oldest) = table.iter().min_by_key(|(_, e)| e.since).map(|(a, _)| *a) {
                table.remove(&oldest);
            }
        }
        table.insert(
            addr,
            Entry {
                since: now,
                failures: 1,
            },
        );
        1
    }

    /// Addresses tracked right now.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn an_address_is_blocked_after_the_limit_until_its_window_ends() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for i in 1..=3 {
            assert!(!f.blocked_at(ip(1), 3, MIN, t0));
            assert_eq!(f.record_at(ip(1), 3, MIN, t0), i);
        }
        assert!(f.blocked_at(ip(1), 3, MIN, t0 + Duration::from_secs(59)));
        assert!(
            !f.blocked_at(ip(2), 3, MIN, t0),
            "other addresses are not affected"
        );
        assert!(!f.blocked_at(ip(1), 3, MIN, t0 + MIN), "the window ended");
        assert_eq!(f.record_at(ip(1), 3, MIN, t0 + MIN), 1, "a fresh window");
    }

    #[test]
    fn limit_zero_disables() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            f.record_at(ip(1), 0, MIN, t0);
        }
        assert!(!f.blocked_at(ip(1), 0, MIN, t0));
        assert!(f.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let f = AuthFailures::with_cap(4);
        let t0 = Instant::now();
        for i in 0..4u8 {
            f.record_at(ip(i), 2, MIN, t0 + Duration::from_secs(u64::from(i)));
        }
        // Full of live entries: the oldest window makes room.
        f.record_at(ip(9), 2, MIN, t0 + Duration::from_secs(10));
        assert_eq!(f.len(), 4);
        assert_eq!(f.record_at(ip(0), 2, MIN, t0 + Duration::from_secs(11)), 1);
        // Expired entries go first.
        let later = t0 + Duration::from_secs(200);
        f.record_at(ip(20), 2, MIN, later);
        assert_eq!(f.len(), 1);
    }
}
