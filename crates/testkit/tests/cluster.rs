//! Integration tests: these start real PostgreSQL clusters.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use meridian_testkit::{creds, free_port, Cluster, DelayRelay, Error};

const WAIT: Duration = Duration::from_secs(60);

fn q(c: &Cluster, node: &str, sql: &str) -> String {
    let n = c.node(node).expect("node exists");
    c.psql(n, creds::APP_DB, sql)
        .unwrap_or_else(|e| panic!("{node}: {e}"))
}

#[test]
fn replicates_and_survives_stop_start_kill9() {
    let t0 = Instant::now();
    let c = Cluster::builder()
        .replicas(2)
        .replica_setting(1, "recovery_min_apply_delay", "500ms")
        .start()
        .expect("cluster starts");
    eprintln!("primary + 2 replicas started in {:?}", t0.elapsed());

    let names: Vec<&str> = c.nodes().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pg1", "pg2", "pg3"]);
    assert_eq!(c.primary().name, "pg1");
    assert_eq!(c.replicas().len(), 2);
    let ports: HashSet<u16> = c.nodes().map(|n| n.port).collect();
    assert_eq!(ports.len(), 3);
    for n in c.nodes() {
        assert_eq!(n.addr().to_string(), format!("127.0.0.1:{}", n.port));
        assert!(n.postmaster_pid().is_some(), "{} running", n.name);
        assert!(n.datadir.starts_with(c.dir()));
        assert!(n.log_path().exists());
    }
    assert_eq!(q(&c, "pg1", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(q(&c, "pg2", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        c.node("pg3")
            .unwrap()
            .show("recovery_min_apply_delay")
            .unwrap(),
        "500ms"
    );
    assert_eq!(
        c.node("pg2")
            .unwrap()
            .show("recovery_min_apply_delay")
            .unwrap(),
        "0"
    );
    // The primary sees both replicas by application_name, via their slots.
    assert_eq!(
        c.psql(
            c.primary(),
            "postgres",
            "SELECT string_agg(application_name || ':' || state, ',' ORDER BY application_name) \
             FROM pg_stat_replication"
        )
        .unwrap(),
        "pg2:streaming,pg3:streaming"
    );
    assert_eq!(
        c.psql(
            c.primary(),
            "postgres",
            "SELECT string_agg(slot_name || ':' || active, ',' ORDER BY slot_name) FROM pg_replication_slots"
        )
        .unwrap(),
        "pg2:true,pg3:true"
    );

    // Write on the primary, see it everywhere.
    q(
        &c,
        "pg1",
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());\n\
         INSERT INTO t (id) VALUES (1), (2), (3);",
    );
    c.wait_replicas_caught_up(WAIT).expect("caught up");
    for r in c.replicas() {
        assert_eq!(
            c.psql(r, creds::APP_DB, "SELECT count(*) FROM t").unwrap(),
            "3"
        );
    }

    // The delayed replica makes a row visible no earlier than 500 ms after
    // it was inserted (both timestamps are server clocks on this machine).
    q(&c, "pg1", "INSERT INTO t (id) VALUES (4)");
    let pg3 = c.node("pg3").unwrap();
    let deadline = Instant::now() + WAIT;
    let lag_ms: f64 = loop {
        let out = c
            .psql(
                pg3,
                creds::APP_DB,
                "SELECT extract(epoch FROM clock_timestamp() - at) * 1000 FROM t WHERE id = 4",
            )
            .unwrap();
        if !out.is_empty() {
            break out.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "row never replicated to pg3");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        lag_ms >= 500.0,
        "delayed replica showed the row after {lag_ms} ms"
    );

    // Stop a replica, write, start it again: it catches up.
    let pg2 = c.node("pg2").unwrap();
    pg2.stop().unwrap();
    assert!(pg2.postmaster_pid().is_none());
    pg2.stop().unwrap(); // idempotent
    assert!(c.psql(pg2, "postgres", "SELECT 1").is_err());
    q(&c, "pg1", "INSERT INTO t (id) VALUES (5)");
    c.wait_replicas_caught_up(WAIT)
        .expect("pg3 catches up while pg2 is down");
    pg2.start().unwrap();
    c.wait_streaming(WAIT).unwrap();
    c.wait_replicas_caught_up(WAIT).unwrap();
    assert_eq!(q(&c, "pg2", "SELECT count(*) FROM t"), "5");

    // kill -9 the primary: every connection dies, crash recovery on start,
    // committed data survives and the replicas reconnect.
    let primary = c.primary();
    let old_pid = primary.postmaster_pid().unwrap();
    primary.kill9().unwrap();
    assert!(primary.postmaster_pid().is_none());
    assert!(matches!(primary.kill9(), Err(Error::NotRunning(_))));
    assert!(c.psql(primary, "postgres", "SELECT 1").is_err());
    primary.start().unwrap();
    assert_ne!(primary.postmaster_pid(), Some(old_pid));
    assert_eq!(q(&c, "pg1", "SELECT count(*) FROM t"), "5");
    q(&c, "pg1", "INSERT INTO t (id) VALUES (6)");
    c.wait_streaming(WAIT).unwrap();
    c.wait_replicas_caught_up(WAIT).unwrap();
    assert_eq!(q(&c, "pg2", "SELECT count(*) FROM t"), "6");

    // kill -9 a replica and restart it; restart() the primary.
    pg2.kill9().unwrap();
    pg2.start().unwrap();
    primary.restart().unwrap();
    q(&c, "pg1", "INSERT INTO t (id) VALUES (7)");
    c.wait_streaming(WAIT).unwrap();
    c.wait_replicas_caught_up(WAIT).unwrap();
    for r in c.replicas() {
        assert_eq!(
            c.psql(r, creds::APP_DB, "SELECT max(id) FROM t").unwrap(),
            "7"
        );
    }

    // set_setting goes through ALTER SYSTEM + reload.
    primary.set_setting("work_mem", "7MB").unwrap();
    assert_eq!(primary.show("work_mem").unwrap(), "7MB");
    pg2.set_setting("work_mem", "9MB").unwrap();
    assert_eq!(pg2.show("work_mem").unwrap(), "9MB");
    primary.reset_setting("work_mem").unwrap();
    assert_eq!(primary.show("work_mem").unwrap(), "4MB");
    assert!(primary.set_setting("work_mem; DROP", "1").is_err());

    // Errors carry psql's message.
    let err = c
        .psql(primary, creds::APP_DB, "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");

    // Drop removes everything.
    let dir = c.dir().to_path_buf();
    let pids: Vec<i32> = c.nodes().filter_map(|n| n.postmaster_pid()).collect();
    assert_eq!(pids.len(), 3);
    drop(c);
    assert!(!dir.exists(), "cluster dir removed");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "postmaster {pid} still alive"
        );
    }
}

#[test]
fn roles_and_auth_methods() {
    let c = Cluster::builder()
        .replicas(1)
        .start()
        .expect("cluster starts");
    let p = c.primary();
    assert_eq!(
        p.psql_as(
            creds::APP_USER,
            Some(creds::APP_PASSWORD),
            creds::APP_DB,
            "SELECT current_user"
        )
        .unwrap(),
        "app"
    );
    for (user, pw) in [
        (creds::MD5_USER, Some(creds::MD5_PASSWORD)),
        (creds::PLAIN_USER, Some(creds::PLAIN_PASSWORD)),
        (creds::TRUST_USER, None),
    ] {
        let table = format!("t_{user}");
        p.psql_as(
            user,
            pw,
            creds::APP_DB,
            &format!("CREATE TABLE {table} (x int); INSERT INTO {table} VALUES (1);"),
        )
        .unwrap_or_else(|e| panic!("{user}: {e}"));
    }
    assert!(p
        .psql_as(creds::APP_USER, Some("wrong"), creds::APP_DB, "SELECT 1")
        .is_err());
    assert!(p
        .psql_as(creds::MD5_USER, Some("wrong"), creds::APP_DB, "SELECT 1")
        .is_err());
    assert_eq!(
        p.psql(
            "postgres",
            "SELECT rolname || ':' || left(rolpassword, 3) FROM pg_authid \
             WHERE rolname IN ('app', 'app_md5', 'replicator') ORDER BY rolname"
        )
        .unwrap(),
        "app:SCR\napp_md5:md5\nreplicator:SCR"
    );
    assert_eq!(
        p.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"
        )
        .unwrap(),
        "app"
    );
    // The replica accepts the same logins (read-only).
    let r = &c.replicas()[0];
    c.wait_replicas_caught_up(WAIT).unwrap();
    assert_eq!(
        r.psql_as(
            creds::PLAIN_USER,
            Some(creds::PLAIN_PASSWORD),
            creds::APP_DB,
            "SELECT count(*) FROM t_app_plain"
        )
        .unwrap(),
        "1"
    );
    let err = r
        .psql_as(
            creds::APP_USER,
            Some(creds::APP_PASSWORD),
            creds::APP_DB,
            "CREATE TABLE nope (x int)",
        )
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[test]
fn synchronous_promote_and_follow() {
    let c = Cluster::builder()
        .replicas(2)
        .synchronous(true)
        .start()
        .expect("cluster starts");
    let p = c.primary();
    assert_eq!(
        p.show("synchronous_standby_names").unwrap(),
        "ANY 1 (pg2, pg3)"
    );
    assert_eq!(
        p.psql(
            "postgres",
            "SELECT string_agg(sync_state, ',' ORDER BY application_name) FROM pg_stat_replication"
        )
        .unwrap(),
        "quorum,quorum"
    );
    c.psql(
        p,
        creds::APP_DB,
        "CREATE TABLE f (x int); INSERT INTO f VALUES (1);",
    )
    .unwrap();
    c.wait_replicas_caught_up(WAIT).unwrap();

    // Failover: stop pg1, promote pg2, make pg3 follow pg2.
    p.stop().unwrap();
    let pg2 = c.node("pg2").unwrap();
    let pg3 = c.node("pg3").unwrap();
    pg2.promote().unwrap();
    assert!(!pg2.is_in_recovery().unwrap());
    assert_eq!(c.current_primary().unwrap().name, "pg2");
    pg3.follow(pg2).unwrap();
    c.wait_streaming(WAIT).unwrap();
    c.psql(pg2, creds::APP_DB, "INSERT INTO f VALUES (2)")
        .unwrap();
    c.wait_replicas_caught_up(WAIT).unwrap();
    assert_eq!(
        c.psql(pg3, creds::APP_DB, "SELECT sum(x) FROM f").unwrap(),
        "3"
    );
}

#[test]
fn builder_rejects_bad_config() {
    let err = Cluster::builder()
        .replicas(1)
        .replica_setting(1, "work_mem", "1MB")
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = Cluster::builder()
        .primary_setting("bad name", "1")
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn free_ports_are_unique_and_bindable() {
    let ports: Vec<u16> = (0..60).map(|_| free_port()).collect();
    let set: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(set.len(), ports.len());
    for p in ports.iter().take(20) {
        TcpListener::bind(("127.0.0.1", *p)).expect("handed-out port is bindable");
    }
    // Parallel callers never get the same port either.
    let handles: Vec<_> = (0..4)
        .map(|_| thread::spawn(|| (0..25).map(|_| free_port()).collect::<Vec<u16>>()))
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for p in h.join().unwrap() {
            assert!(all.insert(p), "port {p} handed out twice");
            assert!(!set.contains(&p));
        }
    }
}

/// A TCP echo server; returns its address.
fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn round_trip(s: &mut TcpStream, payload: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(payload).unwrap();
    let mut got = vec![0u8; payload.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, payload);
    t.elapsed()
}

#[test]
fn delay_relay_adds_latency_and_blocks() {
    let target = echo_server();
    let relay = DelayRelay::start(target, Duration::from_millis(100)).unwrap();
    assert_eq!(relay.addr().port(), relay.port);
    let mut s = TcpStream::connect(relay.addr()).unwrap();
    s.set_nodelay(true).unwrap();
    for _ in 0..3 {
        let rtt = round_trip(&mut s, b"ping");
        assert!(rtt >= Duration::from_millis(200), "rtt {rtt:?} < 2 x 100ms");
    }

    // Pipelined chunks each get the delay, but not one delay per chunk in
    // sequence: report the total for information only.
    let t = Instant::now();
    let mut r = s.try_clone().unwrap();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 20 * 1000];
        r.read_exact(&mut buf).unwrap();
        buf
    });
    for i in 0..20u8 {
        s.write_all(&[i; 1000]).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let echoed = reader.join().unwrap();
    assert!(echoed
        .chunks(1000)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| usize::from(*b) == i)));
    let pipelined = t.elapsed();
    assert!(pipelined >= Duration::from_millis(200));
    eprintln!("20 pipelined 1 kB chunks with 100 ms one-way delay: {pipelined:?}");

    relay.set_delay(Duration::from_millis(30));
    assert_eq!(relay.delay(), Duration::from_millis(30));
    let rtt = round_trip(&mut s, b"pong");
    assert!(rtt >= Duration::from_millis(60), "rtt {rtt:?}");
    assert_eq!(relay.connection_count(), 1);

    // Partition: nothing flows and new connections are dropped.
    relay.block(true);
    assert!(relay.is_blocked());
    s.write_all(b"held").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4];
    assert!(s.read(&mut buf).is_err(), "data crossed a blocked relay");
    let mut fresh = TcpStream::connect(relay.addr()).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut one = [0u8; 1];
    assert!(
        matches!(fresh.read(&mut one), Ok(0) | Err(_)),
        "new connection not dropped"
    );
    // Healing delivers what was held.
    relay.block(false);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");

    relay.disconnect_all();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));

    // Drop closes relayed connections and stops listening.
    let mut s2 = TcpStream::connect(relay.addr()).unwrap();
    round_trip(&mut s2, b"x");
    let addr = relay.addr();
    drop(relay);
    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(s2.read(&mut buf), Ok(0) | Err(_)));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn delay_relay_in_front_of_postgres() {
    let c = Cluster::builder()
        .replicas(0)
        .start()
        .expect("cluster starts");
    let relay = DelayRelay::start(c.primary().addr(), Duration::from_millis(50)).unwrap();
    let t = Instant::now();
    let out = c
        .bin()
        .psql(
            relay.addr(),
            creds::APP_USER,
            Some(creds::APP_PASSWORD),
            creds::APP_DB,
            "SELECT 42",
        )
        .unwrap();
    assert_eq!(out, "42");
    // Startup + SCRAM + query are several round trips of >= 100 ms each.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Cluster>();
    check::<meridian_testkit::Node>();
    check::<DelayRelay>();
    check::<Error>();
}

#[test]
fn finds_postgres() {
    let bin = meridian_testkit::ensure_postgres().unwrap();
    assert!(bin.is_complete());
    assert!(bin.path("pg_ctl").is_file());
    assert!(bin.major_version().unwrap() >= 13);
}
