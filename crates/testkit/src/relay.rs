//! A userspace TCP relay that adds a fixed one-way delay (poor man's netem).

use std::collections::HashMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::Error;

const CHUNK: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    target: SocketAddr,
    delay_nanos: AtomicU64,
    blocked: AtomicBool,
    shutdown: AtomicBool,
    /// Wakes pumps waiting while blocked.
    gate: (Mutex<()>, Condvar),
    conns: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (TcpStream, TcpStream)>> {
        self.conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Blocks while the relay is blocked; false once it shuts down.
    fn wait_open(&self) -> bool {
        let (lock, cv) = &self.gate;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return false;
            }
            if !self.blocked.load(Ordering::SeqCst) {
                return true;
            }
            g = match cv.wait_timeout(g, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn wake(&self) {
        let (lock, cv) = &self.gate;
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        cv.notify_all();
    }

    fn close_all(&self) {
        let conns: Vec<_> = self.conns().drain().collect();
        for (_, (a, b)) in conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP relay on `127.0.0.1:port` that forwards every accepted connection
/// to a target, adding a fixed one-way delay in each direction (so a round
/// trip costs `2 × delay` more). Useful because this environment has no
/// `tc netem`.
///
/// Per connection and direction, a reader thread stamps each chunk it reads
/// with `now + delay` and queues it; a writer thread sleeps until the stamp
/// and writes. Delay is thus added without limiting throughput to one chunk
/// per delay, and byte order is preserved. Half-closes (FIN) are forwarded
/// after the delay too; TCP_NODELAY is set on both legs.
///
/// Dropping the relay stops accepting and closes every relayed connection.
pub struct DelayRelay {
    /// The port the relay listens on (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for DelayRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayRelay")
            .field("port", &self.port)
            .field("target", &self.shared.target)
            .field("delay", &self.shared.delay())
            .field("blocked", &self.is_blocked())
            .finish()
    }
}

impl DelayRelay {
    /// Starts a relay on a fresh 127.0.0.1 port forwarding to `target` with
    /// `one_way_delay` added in each direction.
    pub fn start(target: SocketAddr, one_way_delay: Duration) -> Result<DelayRelay, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding the delay relay", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading the delay relay's address", e))?
            .port();
        let shared = Arc::new(Shared {
            target,
            delay_nanos: AtomicU64::new(duration_nanos(one_way_delay)),
            blocked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            gate: (Mutex::new(()), Condvar::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let sh = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("delay-relay-{port}"))
            .spawn(move || accept_loop(listener, sh))
            .map_err(|e| Error::io("spawning the delay relay thread", e))?;
        Ok(DelayRelay {
            port,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// `127.0.0.1:port`, the address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Changes the one-way delay for data read from now on (data already
    /// queued keeps its stamp; order is always preserved).
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_nanos
            .store(duration_nanos(d), Ordering::Relaxed);
    }

    /// The current one-way delay.
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// Simulates a network partition: while blocked, nothing is forwarded on
    /// existing connections (data is held, as TCP would retransmit it after
    /// the partition heals) and new connections are accepted and immediately
    /// closed. `block(false)` resumes forwarding.
    pub fn block(&self, blocked: bool) {
        self.shared.blocked.store(blocked, Ordering::SeqCst);
        self.shared.wake();
    }

    /// True while [`block`](Self::block)ed.
    pub fn is_blocked(&self) -> bool {
        self.shared.blocked.load(Ordering::SeqCst)
    }

    /// Closes every currently relayed connection (both legs); the relay keeps
    /// accepting new ones.
    pub fn disconnect_all(&self) {
        self.shared.close_all();
    }

    /// Number of currently relayed connections.
    pub fn connection_count(&self) -> usize {
        self.shared.conns().len()
    }

    /// Number of connections accepted and forwarded so far.
    pub fn total_connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake();
        // Wake the blocking accept().
        let woke = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).is_ok();
        if let Some(h) = self.accept_thread.take() {
            if woke {
                let _ = h.join();
            }
        }
        self.shared.close_all();
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let client = match stream {
            Ok(s) => s,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) {
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        if shared.blocked.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let sh = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name("delay-relay-conn".into())
            .spawn(move || setup_connection(client, sh));
    }
}

fn setup_connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let dup = |s: &TcpStream| s.try_clone().ok();
    // Registry copies (to shut down on demand) and one read/write handle per
    // direction: client -> upstream and upstream -> client.
    let (Some(c_reg), Some(u_reg), Some(c_read), Some(u_write), Some(u_read), Some(c_write)) = (
        dup(&client),
        dup(&upstream),
        dup(&client),
        dup(&upstream),
        dup(&upstream),
        dup(&client),
    ) else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = shared.conns();
        if shared.shutdown.load(Ordering::SeqCst) || shared.blocked.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        conns.insert(id, (c_reg, u_reg));
    }
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    let done = Arc::new(AtomicUsize::new(0));
    drop((client, upstream));
    pump(c_read, u_write, id, Arc::clone(&shared), Arc::clone(&done));
    pump(u_read, c_write, id, shared, done);
}

enum Msg {
    Data(Instant, Vec<u8>),
    Eof(Instant),
    Abort,
}

/// Starts the reader/writer thread pair for one direction `src -> dst`.
fn pump(src: TcpStream, dst: TcpStream, id: u64, shared: Arc<Shared>, done: Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel::<Msg>();
    let reader_shared = Arc::clone(&shared);
    let Ok(src_for_writer) = src.try_clone() else {
        let _ = src.shutdown(Shutdown::Both);
        let _ = dst.shutdown(Shutdown::Both);
        return;
    };
    let reader = move || {
        let mut src = src;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if !reader_shared.wait_open() {
                let _ = tx.send(Msg::Abort);
                return;
            }
            match src.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Msg::Eof(Instant::now() + reader_shared.delay()));
                    return;
                }
                Ok(n) => {
                    let msg = Msg::Data(Instant::now() + reader_shared.delay(), buf[..n].to_vec());
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = tx.send(Msg::Abort);
                    return;
                }
            }
        }
    };
    let writer = move || {
        let src = src_for_writer;
        let finish = |abort: bool| {
            if abort {
                let _ = src.shutdown(Shutdown::Both);
                let _ = dst.shutdown(Shutdown::Both);
            }
            if done.fetch_add(1, Ordering::SeqCst) + 1 >= 2 || abort {
                if let Some((a, b)) = shared.conns().remove(&id) {
                    if abort {
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    }
                }
            }
        };
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Data(at, bytes) => {
                    sleep_until(at);
                    if !shared.wait_open() || (&dst).write_all(&bytes).is_err() {
                        finish(true);
                        return;
                    }
                }
                Msg::Eof(at) => {
                    sleep_until(at);
                    if !shared.wait_open() {
                        finish(true);
                        return;
                    }
                    let _ = dst.shutdown(Shutdown::Write);
                    finish(false);
                    return;
                }
                Msg::Abort => {
                    finish(true);
                    return;
                }
            }
        }
        finish(true);
    };
    // If the reader cannot start, the writer sees a closed channel and
    // aborts the connection.
    let _ = thread::Builder::new()
        .name("delay-relay-rd".into())
        .spawn(reader);
    let _ = thread::Builder::new()
        .name("delay-relay-wr".into())
        .spawn(writer);
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}
