//! Handing out free loopback TCP ports.

use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports handed out by this process, with the cross-process lock file held
/// for each (kept open, hence locked, until the process exits).
fn handed_out() -> &'static Mutex<HashMap<u16, Option<File>>> {
    static SET: OnceLock<Mutex<HashMap<u16, Option<File>>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashMap::new()))
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = SystemTime::now().duration_since(UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// Candidate range: below the kernel's ephemeral range, so that outgoing
/// connections (which take ephemeral local ports) never steal a port between
/// the moment we hand it out and the moment a server binds it.
fn candidate_range() -> (u16, u16) {
    let eph = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if eph.0 >= 12_000 {
        (10_000, u16::try_from(eph.0).unwrap_or(32768))
    } else if eph.1 <= 60_000 {
        (u16::try_from(eph.1 + 1).unwrap_or(61000), 65535)
    } else {
        (1024, 65535)
    }
}

fn lock_dir() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("meridian-testkit-ports");
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            // World-writable + sticky so root and non-root runs can share it.
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    Some(dir)
}

/// `Some(Some(file))`: we hold the lock; `Some(None)`: another process holds
/// it; `None`: locking unavailable.
fn lock_port(port: u16) -> Option<Option<File>> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR.get_or_init(lock_dir).as_ref()?;
    let path = dir.join(port.to_string());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(&path)
        .or_else(|_| File::open(&path))
        .ok()?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Some(Some(file))
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
        Some(None)
    } else {
        None
    }
}

/// Returns a TCP port on 127.0.0.1 that is currently free and that this
/// process has never handed out before.
///
/// Collisions are made unlikely both inside one process (a global set of
/// handed-out ports; parallel tests share it) and across processes (each port
/// is reserved with an `flock`ed file under
/// `$TMPDIR/meridian-testkit-ports/`, held until the process exits). Ports are
/// drawn at random from below the kernel's ephemeral range, so outgoing
/// connections cannot grab them, and each is verified by binding it.
///
/// # Panics
///
/// Only if the OS refuses to bind even `127.0.0.1:0`.
pub fn free_port() -> u16 {
    let (lo, hi) = candidate_range();
    let span = u64::from(hi.saturating_sub(lo)).max(1);
    let mut set = handed_out()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..5000 {
        let port = lo + u16::try_from(random_u64() % span).unwrap_or(0);
        if port < 1024 || set.contains_key(&port) {
            continue;
        }
        let lock = match lock_port(port) {
            Some(Some(f)) => Some(f),
            Some(None) => continue,
            None => None,
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        set.insert(port, lock);
        return port;
    }
    // Fallback: let the kernel choose.
    for _ in 0..1000 {
        let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        if let Entry::Vacant(slot) = set.entry(addr.port()) {
            slot.insert(None);
            return addr.port();
        }
    }
    panic!("meridian-testkit: cannot bind any TCP port on 127.0.0.1");
}
