//! Ten thousand connections that never finish startup, against the `meridian` binary: a normal
//! client keeps running queries through Meridian during the barrage, and once the connections are
//! gone Meridian's resident memory (VmRSS from /proc) returns near its baseline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_testkit::{creds, Cluster};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::reload::Child;

const CONNECTIONS: usize = 10_000;
/// Barrages in a row: memory held after one would show up as growth in the next.
const ROUNDS: usize = 2;
/// How far above its baseline Meridian's RSS may stay once the barrage is over.
const TOLERANCE_KB: u64 = 20 * 1024;
/// Bound for anything asynchronous. A liveness guard only.
const WAIT: Duration = Duration::from_secs(60);

/// Raises this process's open-file limit to its hard limit (the child inherits it).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One client that never finishes startup: even ones send nothing, odd ones half a startup
/// packet (a length announcing 40 bytes, then the first half of the protocol version).
async fn unfinished(addr: SocketAddr, i: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    if i % 2 == 1 {
        s.write_all(&[0, 0, 0, 40, 0, 3]).await.expect("write");
    }
    s
}

/// What one round measured.
struct Round {
    opened_in: Duration,
    peak: u64,
    fds_at_peak: usize,
    after: u64,
}

/// Opens the barrage, checks that new logins and the normal client's queries go on while it is
/// held, closes it and waits until Meridian has let go of the sockets.
async fn round(child: &Child, addr: SocketAddr, ok: &AtomicU64) -> Round {
    let pid = child.pid();
    let started = Instant::now();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for chunk in 0..CONNECTIONS / 100 {
        let batch = (0..100).map(|j| unfinished(addr, chunk * 100 + j));
        conns.extend(futures_util::future::join_all(batch).await);
    }
    let ok_before_accept = ok.load(Ordering::Relaxed);
    // Meridian has accepted them all once it holds that many sockets.
    while open_fds(pid) < CONNECTIONS {
        assert!(
            started.elapsed() < WAIT,
            "meridian holds {} descriptors",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = rss_kb(pid);
    let fds_at_peak = open_fds(pid);
    // New logins still work while the barrage holds its connections.
    let fresh = child
        .connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .expect("a fresh login during the barrage");
    fresh.simple_query("SELECT 1").await.expect("query");
    drop(fresh);
    assert!(
        ok.load(Ordering::Relaxed) > ok_before_accept,
        "the normal client ran no query while the barrage was held"
    );
    drop(conns);
    let closing = Instant::now();
    while open_fds(pid) > 200 {
        assert!(
            closing.elapsed() < WAIT,
            "meridian still holds {} descriptors",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Round {
        opened_in,
        peak,
        fds_at_peak,
        after: rss_kb(pid),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unfinished_startups() {
    let nofile = raise_nofile();
    assert!(
        nofile as usize > CONNECTIONS + 1000,
        "RLIMIT_NOFILE hard limit {nofile} is too low for this test"
    );
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::builder()
            .replicas(0)
            .start()
            .expect("cluster starts")
    })
    .await
    .expect("cluster task");
    let dir = std::env::temp_dir().join(format!("meridian-barrage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let port = meridian_testkit::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // The unfinished clients are closed by the test, well before the startup timeout.
    let text = meridian::demo::config_text_for(&cluster, &addr.to_string()).replacen(
        "[proxy]\n",
        "[proxy]\nmax_client_connections = 20000\nstartup_timeout_ms = 300000\n",
        1,
    );
    let path = dir.join("meridian.toml");
    std::fs::write(&path, text).expect("write config");
    let child = Child::start(&path, dir.join("meridian.log"), addr).await;
    let pid = child.pid();
    let deadline = Instant::now() + WAIT;
    let client = loop {
        match child.connect(creds::APP_USER, creds::APP_PASSWORD).await {
            Ok(c) => break Arc::new(c),
            Err(e) => assert!(Instant::now() < deadline, "{e}: {}", child.log_text()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Warm up (first server connection, caches, worker threads), then take the baseline.
    for _ in 0..200 {
        client
            .simple_query("SELECT 1")
            .await
            .expect("warm-up query");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kb(pid);

    // A normal client runs queries throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let worker = {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.query_one("SELECT count(*) FROM pg_class", &[]).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(round(&child, addr, &ok).await);
    }
    stop.store(true, Ordering::Relaxed);
    worker.await.expect("worker");
    client
        .simple_query("SELECT 1")
        .await
        .expect("the normal client after the barrage");

    for (i, r) in rounds.iter().enumerate() {
        eprintln!(
            "barrage round {}: {CONNECTIONS} connections accepted in {:?}; meridian VmRSS baseline {baseline} kB, \
             peak {} kB ({} fds), after close {} kB",
            i + 1,
            r.opened_in,
            r.peak,
            r.fds_at_peak,
            r.after
        );
    }
    eprintln!(
        "barrage: {} queries ok, {} failed on the normal client",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "queries failed during the barrage"
    );
    for r in &rounds {
        assert!(
            r.peak > baseline + 1024,
            "memory should grow while 10,000 connections are held: baseline {baseline} kB, peak {} kB",
            r.peak
        );
        assert!(
            r.after <= baseline + TOLERANCE_KB,
            "memory did not return near the baseline: baseline {baseline} kB, peak {} kB, after {} kB",
            r.peak,
            r.after
        );
    }
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}
