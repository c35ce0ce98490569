//! Cancel keys. Each client gets a BackendKeyData minted by Meridian; the registry maps it to the
//! server backend the session is currently using, so a CancelRequest on a fresh connection reaches
//! the right Postgres process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a session's cancel should go: the server address and its BackendKeyData.
pub type CancelTarget = (meridian_upstream::ServerAddr, i32, i32);

/// A session's slot, updated when its active backend changes.
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Option<CancelTarget>>);

impl CancelSlot {
    /// Points the slot at a new backend (or none).
    pub fn set(&self, target: Option<CancelTarget>) {
        *lock(&self.0) = target;
    }

    /// The backend a cancel should go to now.
    pub fn get(&self) -> Option<CancelTarget> {
        lock(&self.0).clone()
    }
}

/// All live sessions' cancel keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    next_pid: AtomicI32,
    slots: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Mints a key for a new session and registers its slot. The guard unregisters on drop.
    pub fn register(self: &Arc<Self>) -> CancelGuard {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & 0x7fff_ffff;
        let secret: i32 = rand::random();
        let slot = Arc::new(CancelSlot::default());
        lock(&self.slots).insert((pid, secret), slot.clone());
        CancelGuard {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// The current target for a client-presented key, if the key is live.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        lock(&self.slots).get(&(pid, secret)).and_then(|s| s.get())
    }
}

/// A registered key; dropping it removes the key.
#[derive(Debug)]
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    /// Process id given to the client.
    pub pid: i32,
    /// Secret given to the client.
    pub secret: i32,
    /// The session's slot.
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        lock(&self.registry.slots).remove(&(self.pid, self.secret));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_while_registered() {
        let reg = Arc::new(CancelRegistry::default());
        let guard = reg.register();
        assert_eq!(reg.lookup(guard.pid, guard.secret), None);
        let addr = meridian_upstream::ServerAddr::Tcp("127.0.0.1:5432".parse().expect("addr"));
        let target: CancelTarget = (addr, 42, 7);
        guard.slot.set(Some(target.clone()));
        assert_eq!(reg.lookup(guard.pid, guard.secret), Some(target));
        assert_eq!(reg.lookup(guard.pid, guard.secret.wrapping_add(1)), None);
        let (pid, secret) = (guard.pid, guard.secret);
        drop(guard);
        assert_eq!(reg.lookup(pid, secret), None);
    }
}
