//! Configuration reload, failed-authentication limiting and secrets from files, against a real
//! cluster: `POST /api/v1/reload` on an in-process Meridian, SIGHUP on the `meridian` binary.
//! Client sessions (one holds a transaction open throughout) must not notice a reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meridian_config::Config;
use meridian_testkit::{creds, Cluster, Node};
use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::admin::{checked, post};
use crate::support::{sqlstate, Env};

/// Bound for anything asynchronous (health checks, replication). A liveness guard only.
const WAIT: Duration = Duration::from_secs(20);

const TOKEN: &str = "reload-token";

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .expect("openapi.json");
    serde_json::from_str(&text).expect("openapi.json parses")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

async fn cluster(replicas: usize) -> Cluster {
    tokio::task::spawn_blocking(move || {
        Cluster::builder()
            .replicas(replicas)
            .start()
            .expect("cluster starts")
    })
    .await
    .expect("cluster task")
}

/// The `[[nodes]]` entry `config_text_for` writes for `node`.
fn node_block(node: &Node) -> String {
    format!(
        "\n[[nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nregion = \"local\"\n",
        node.name, node.port
    )
}

/// The `[[users]]` entry `config_text_for` writes for `app_plain`.
fn plain_user_block() -> String {
    format!(
        "[[users]]\nname = \"{}\"\npassword = \"{}\"\n",
        creds::PLAIN_USER,
        creds::PLAIN_PASSWORD
    )
}

/// Adds `lines` to the `[proxy]` table.
fn with_proxy(text: &str, lines: &str) -> String {
    text.replacen("[proxy]\n", &format!("[proxy]\n{}\n", lines.trim_end()), 1)
}

/// Starts Meridian in-process from the file at `path`, with reloads enabled.
async fn start_from(cluster: Cluster, path: &Path) -> Env {
    let config = Config::load(path).expect("config loads");
    let proxy = meridian::start_from(config, Some(path.to_path_buf()))
        .await
        .expect("proxy starts");
    proxy
        .topology
        .wait_for(WAIT, |t| t.primary.is_some())
        .await
        .primary
        .expect("primary discovered");
    Env { proxy, cluster }
}

async fn reload(env: &Env, spec: &Value) -> (u16, Value) {
    let r = post(env, "/api/v1/reload", Some(TOKEN), &json!({})).await;
    let v = checked(spec, "POST", "/api/v1/reload", &r);
    (r.status, v)
}

fn keys(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

async fn port_of(client: &Client, sql: &str) -> u16 {
    let rows = client.simple_query(sql).await.expect("query");
    for m in rows {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).and_then(|p| p.parse().ok()).expect("a port");
        }
    }
    panic!("no row for {sql}");
}

/// Waits for `what` to become true, polling every 100 ms.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reload_applies_users_nodes_lists_and_limits_without_dropping_sessions() {
    let cluster = cluster(2).await;
    let (r1, r2) = (cluster.replicas()[0].clone(), cluster.replicas()[1].clone());
    let primary_port = cluster.primary().port;
    let dir = temp_dir("api");
    let path = dir.join("meridian.toml");
    let full = with_proxy(
        &meridian::demo::config_text_for(&cluster, "127.0.0.1:0"),
        &format!("admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\""),
    )
        + "\n[consistency]\nmode = \"eventual\"\n\n[routing]\nlatency_tolerance_ms = 50.0\n";
    let first = full.replace(&node_block(&r2), "");
    std::fs::write(&path, &first).expect("write config");
    let env = start_from(cluster, &path).await;
    let spec = spec();

    // A session with a transaction open across every reload below.
    let keeper = env.connect().await;
    keeper
        .batch_execute("BEGIN; CREATE TEMP TABLE kept (x int); INSERT INTO kept VALUES (1)")
        .await
        .expect("transaction starts");
    env.primary_sql(
        "CREATE FUNCTION port_of() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT inet_server_port()';\
         CREATE ROLE newbie LOGIN PASSWORD 'newbie-secret'",
    );
    // Replicas must have the function before reads of it may go there.
    tokio::task::block_in_place(|| env.cluster.wait_replicas_caught_up(WAIT))
        .expect("replicas catch up");
    let reader = env.connect().await;
    // A volatile function is a write until routing.read_only_functions says otherwise.
    assert_eq!(port_of(&reader, "SELECT port_of()").await, primary_port);
    assert_eq!(
        sqlstate(
            &env.try_connect("newbie", "newbie-secret")
                .await
                .err()
                .expect("unknown user")
        ),
        Some("28P01".into())
    );
    assert!(env
        .try_connect(creds::PLAIN_USER, creds::PLAIN_PASSWORD)
        .await
        .is_ok());

    // Reload 1: add a node and a user, remove a user, list a function, change a limit, and
    // change a restart-only key.
    let second = with_proxy(&full, "max_client_connections = 500\nworker_threads = 3")
        .replace(&plain_user_block(), "")
        .replace(
            "[[users]]\nname = \"app_trust\"",
            "[[users]]\nname = \"newbie\"\npassword = \"newbie-secret\"\n\n[[users]]\nname = \"app_trust\"",
        )
        .replace(
            "latency_tolerance_ms = 50.0\n",
            "latency_tolerance_ms = 50.0\nread_only_functions = [\"port_of\"]\n",
        );
    std::fs::write(&path, &second).expect("write config");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], json!(true));
    let changed = keys(&v, "changed");
    for k in [
        "nodes",
        "users",
        "routing.read_only_functions",
        "proxy.max_client_connections",
    ] {
        assert!(changed.contains(&k.to_string()), "{k} missing from {v}");
    }
    assert_eq!(keys(&v, "restart_required"), ["proxy.worker_threads"]);
    assert_eq!(
        env.proxy.state.live.load().proxy.worker_threads,
        env.proxy.state.config.proxy.worker_threads,
        "a restart-only key keeps its running value"
    );

    let newbie = env
        .try_connect("newbie", "newbie-secret")
        .await
        .expect("a new user logs in");
    let who = newbie
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query");
    assert_eq!(who.get::<_, String>(0), "newbie");
    let e = env
        .try_connect(creds::PLAIN_USER, creds::PLAIN_PASSWORD)
        .await
        .err()
        .expect("a removed user cannot log in");
    assert_eq!(sqlstate(&e), Some("28P01".into()));
    // The added node is checked, becomes healthy and gets reads.
    let r2_port = r2.port;
    env.proxy
        .topology
        .wait_for(WAIT, |t| {
            t.nodes
                .iter()
                .any(|n| n.name == r2.name && n.healthy && !n.removed)
        })
        .await;
    eventually("a read on the added node", || {
        let reader = &reader;
        async move { port_of(reader, "SELECT port_of()").await == r2_port }
    })
    .await;
    // The listed function now reads from replicas.
    for _ in 0..6 {
        assert_ne!(port_of(&reader, "SELECT port_of()").await, primary_port);
    }

    // A limit applies to new clients: with max_client_connections = 3 and three open
    // (keeper, reader, newbie), a fourth is refused.
    std::fs::write(&path, with_proxy(&full, "max_client_connections = 3")).expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 200, "{v}");
    let e = env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .err();
    assert_eq!(
        e.as_ref().and_then(sqlstate),
        Some("53300".into()),
        "over the reloaded limit"
    );
    drop(newbie);
    std::fs::write(&path, &second).expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 200, "{v}");

    // An invalid file is refused with the key named; the running configuration stays.
    std::fs::write(
        &path,
        second.replace("max_client_connections = 500", "max_client_connections = 0"),
    )
    .expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["ok"], json!(false));
    let errors = keys(&v, "errors");
    assert!(
        errors[0].starts_with("proxy.max_client_connections"),
        "{errors:?}"
    );
    std::fs::write(
        &path,
        second.replace(
            "password = \"newbie-secret\"",
            "password_file = \"/nonexistent/pw\"",
        ),
    )
    .expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 400, "{v}");
    assert!(keys(&v, "errors")[0].contains(".password_file"), "{v}");
    // Removing the current primary is refused.
    let no_primary = second.replace(&node_block(env.cluster.primary()), "");
    std::fs::write(&path, &no_primary).expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 400, "{v}");
    let errors = keys(&v, "errors");
    assert!(
        errors[0].starts_with("nodes") && errors[0].contains("primary"),
        "{errors:?}"
    );
    // Still the second configuration: newbie logs in.
    env.try_connect("newbie", "newbie-secret")
        .await
        .expect("the running configuration stayed");

    // Reload 2: remove a replica. It is marked removed, gets no reads, and is no longer checked.
    std::fs::write(&path, second.replace(&node_block(&r1), "")).expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(keys(&v, "changed"), ["nodes"]);
    let topo = env.proxy.topology.load_full();
    let slot = topo
        .nodes
        .iter()
        .find(|n| n.name == r1.name)
        .expect("the slot stays");
    assert!(slot.removed && !slot.healthy);
    for _ in 0..10 {
        assert_eq!(port_of(&reader, "SELECT port_of()").await, r2_port);
    }
    let status = crate::admin::get(&env, "/api/v1/status").await;
    let status = checked(&spec, "GET", "/api/v1/status", &status);
    assert!(
        status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["name"] == json!(r1.name) && n["removed"] == json!(true)),
        "{status}"
    );

    // The transaction opened before the first reload commits.
    keeper
        .batch_execute("INSERT INTO kept VALUES (2); COMMIT")
        .await
        .expect("the transaction survived every reload");
    let n = keeper
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .expect("query");
    assert_eq!(n.get::<_, i64>(0), 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// Logs in from `source` (a loopback address other than 127.0.0.1 counts as another client).
async fn connect_from(
    source: &str,
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("addr"))
        .expect("bind source");
    let stream = socket.connect(addr).await.expect("connect");
    let mut c = tokio_postgres::Config::new();
    c.user(user).password(password).dbname(creds::APP_DB);
    let (client, conn) = c.connect_raw(stream, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address() {
    let env = Env::start_with(0, |c| {
        c.proxy.auth_failure_limit = 3;
        c.proxy.auth_failure_window_s = 600;
    })
    .await;
    let addr = env.addr();
    let other = "127.0.0.2";
    // A success from the address before any failure is unaffected by what follows elsewhere.
    let before = connect_from(other, addr, creds::APP_USER, creds::APP_PASSWORD)
        .await
        .expect("login from the other address");
    for _ in 0..3 {
        let e = env
            .try_connect(creds::APP_USER, "wrong")
            .await
            .err()
            .expect("wrong password");
        assert_eq!(sqlstate(&e), Some("28P01".into()));
    }
    // Blocked now: refused before any password check, even with the right password, also for
    // an unknown user and an md5 user.
    for (user, password) in [
        (creds::APP_USER, creds::APP_PASSWORD),
        ("nobody", "x"),
        (creds::MD5_USER, creds::MD5_PASSWORD),
    ] {
        let e = env
            .try_connect(user, password)
            .await
            .err()
            .expect("blocked address");
        assert_eq!(sqlstate(&e), Some("28000".into()), "{e}");
        let message = e.as_db_error().map(|d| d.message().to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("too many failed authentication attempts")),
            "{message:?}"
        );
    }
    // Another address is not affected, and its session from before keeps working.
    let c = connect_from(other, addr, creds::APP_USER, creds::APP_PASSWORD)
        .await
        .expect("another address logs in");
    c.simple_query("SELECT 1").await.expect("query");
    before.simple_query("SELECT 1").await.expect("query");
    assert_eq!(env.proxy.state.auth_failures.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_and_a_password_rotated_by_reload() {
    let cluster = cluster(0).await;
    let dir = temp_dir("files");
    let (app_pw, monitor_pw, token) = (
        dir.join("app.pw"),
        dir.join("monitor.pw"),
        dir.join("admin.token"),
    );
    std::fs::write(&app_pw, format!("{}\n", creds::APP_PASSWORD)).expect("write");
    std::fs::write(&monitor_pw, format!("{}\n", creds::SUPERUSER_PASSWORD)).expect("write");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("write");
    let text = with_proxy(
        &meridian::demo::config_text_for(&cluster, "127.0.0.1:0"),
        &format!(
            "admin_listen = \"127.0.0.1:0\"\nadmin_token_file = {:?}",
            token.display().to_string()
        ),
    )
    .replace(
        &format!("password = \"{}\"", creds::APP_PASSWORD),
        &format!("password_file = {:?}", app_pw.display().to_string()),
    )
    .replace(
        &format!("password = \"{}\"", creds::SUPERUSER_PASSWORD),
        &format!("password_file = {:?}", monitor_pw.display().to_string()),
    );
    let path = dir.join("meridian.toml");
    std::fs::write(&path, &text).expect("write config");
    // The monitor's password comes from its file: the primary is discovered.
    let env = start_from(cluster, &path).await;
    let spec = spec();
    let before = env.connect().await;

    // The token from its file authorizes; nothing changed yet.
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(keys(&v, "changed"), Vec::<String>::new());

    // Rotate the password on the server and in the file, then reload.
    env.primary_sql("ALTER ROLE app PASSWORD 'rotated-secret'");
    std::fs::write(&app_pw, "rotated-secret\n").expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(keys(&v, "changed"), ["users"]);
    env.try_connect(creds::APP_USER, "rotated-secret")
        .await
        .expect("the new password applies to new logins");
    let e = env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .err()
        .expect("the old password no longer works");
    assert_eq!(sqlstate(&e), Some("28P01".into()));
    before
        .simple_query("SELECT 1")
        .await
        .expect("a session from before the rotation continues");
    // An emptied secret file is refused with the key named.
    std::fs::write(&app_pw, "\n").expect("write");
    let (status, v) = reload(&env, &spec).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        keys(&v, "errors")[0].starts_with("users[0].password_file"),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The `meridian` binary running `run -c <path>`, logging to a file; killed on drop.
pub struct Child {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub addr: SocketAddr,
}

impl Child {
    /// Starts the binary on `path` (whose `proxy.listen` is `addr`) and waits until it accepts
    /// clients.
    pub async fn start(path: &Path, log: PathBuf, addr: SocketAddr) -> Child {
        let out = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("run")
            .arg("-c")
            .arg(path)
            .env("RUST_LOG", "debug")
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("meridian starts");
        let c = Child { child, log, addr };
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "meridian did not listen: {}",
                c.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connects through the child as `user`.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname(creds::APP_DB)
            .connect_timeout(Duration::from_secs(10));
        let (client, conn) = c.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_and_keeps_it_on_a_bad_file() {
    let cluster = cluster(0).await;
    let dir = temp_dir("sighup");
    let port = meridian_testkit::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Polling logins below fail until the reload lands; they must not trip the limit.
    let full = with_proxy(
        &meridian::demo::config_text_for(&cluster, &addr.to_string()),
        "auth_failure_limit = 1000",
    );
    let path = dir.join("meridian.toml");
    std::fs::write(&path, full.replace(&plain_user_block(), "")).expect("write config");
    let child = Child::start(&path, dir.join("meridian.log"), addr).await;
    // Wait for the primary: the first login succeeds.
    let deadline = Instant::now() + WAIT;
    let keeper = loop {
        match child.connect(creds::APP_USER, creds::APP_PASSWORD).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "{e}: {}", child.log_text()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    keeper.batch_execute("BEGIN").await.expect("begin");
    let e = child
        .connect(creds::PLAIN_USER, creds::PLAIN_PASSWORD)
        .await
        .err()
        .expect("not configured yet");
    assert_eq!(sqlstate(&e), Some("28P01".into()));
    let wrong = "Wr0ng-Passw0rd-Marker";
    let e = child
        .connect(creds::MD5_USER, wrong)
        .await
        .err()
        .expect("wrong password");
    assert_eq!(sqlstate(&e), Some("28P01".into()));

    std::fs::write(&path, &full).expect("write config");
    child.signal(libc::SIGHUP);
    eventually("the reloaded user to log in", || async {
        child
            .connect(creds::PLAIN_USER, creds::PLAIN_PASSWORD)
            .await
            .is_ok()
    })
    .await;

    // A bad file: logged with the key, the running configuration stays.
    std::fs::write(
        &path,
        full.replace(
            &format!("password = \"{}\"", creds::APP_PASSWORD),
            "password_file = \"/nonexistent/meridian/app.pw\"",
        ),
    )
    .expect("write config");
    child.signal(libc::SIGHUP);
    eventually("the refusal in the log", || async {
        child.log_text().contains("configuration reload refused")
    })
    .await;
    let log = child.log_text();
    assert!(log.contains("users[0].password_file"), "{log}");
    child
        .connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .expect("the old configuration still serves");
    child
        .connect(creds::PLAIN_USER, creds::PLAIN_PASSWORD)
        .await
        .expect("including the user added by the first reload");
    keeper
        .batch_execute("SELECT 1; COMMIT")
        .await
        .expect("the session from before both reloads goes on");
    assert!(child.child.id() > 0);

    // Failed logins are logged with user and address, never with a secret.
    assert!(
        log.lines().any(|l| l.contains("authentication failed")
            && l.contains(creds::MD5_USER)
            && l.contains("127.0.0.1")),
        "{log}"
    );
    for secret in [
        wrong,
        creds::APP_PASSWORD,
        creds::MD5_PASSWORD,
        creds::PLAIN_PASSWORD,
        creds::SUPERUSER_PASSWORD,
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}
