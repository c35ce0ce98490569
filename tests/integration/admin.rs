//! The admin side against a live cluster: metrics move with the cluster, the JSON API matches
//! docs/openapi.json, mutating calls need the token, failover through the API, `meridian ctl`,
//! the consistency check, and the dashboard in headless Chromium.

mod actions;
mod dashboard;
mod deploy;
mod schema;

use std::time::{Duration, Instant};

use meridian_admin::client::{encode_query, request, HttpResponse};
use serde_json::{json, Value};

use crate::support::Env;

/// The admin token the tests configure.
pub const TOKEN: &str = "test-admin-token";

/// A cluster with `replicas` replicas and Meridian with the admin API on a free port.
pub async fn start(replicas: usize) -> Env {
    Env::start_with(replicas, |c| {
        c.proxy.admin_listen = Some("127.0.0.1:0".into());
        c.proxy.admin_token = Some(TOKEN.into());
    })
    .await
}

/// The admin API's base URL.
pub fn base(env: &Env) -> String {
    format!("http://{}", env.proxy.admin_addr.expect("admin API is on"))
}

/// `GET path`.
pub async fn get(env: &Env, path: &str) -> HttpResponse {
    request(&base(env), "GET", path, None, None, Duration::from_secs(30))
        .await
        .expect("admin API answers")
}

/// `POST path` with `body`, with or without a token.
pub async fn post(env: &Env, path: &str, token: Option<&str>, body: &Value) -> HttpResponse {
    let body = body.to_string();
    request(
        &base(env),
        "POST",
        path,
        token,
        Some(&body),
        Duration::from_secs(120),
    )
    .await
    .expect("admin API answers")
}

/// The body as JSON, after checking it against the spec for `method path`.
pub fn checked(spec: &Value, method: &str, path: &str, r: &HttpResponse) -> Value {
    let v = r.json().expect("JSON body");
    let spec_path = path.split('?').next().unwrap_or(path);
    schema::check_response(spec, method, spec_path, r.status, &v);
    v
}

/// Sum of the samples of `name` whose labels include every pair of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            continue;
        }
        let have: Vec<(&str, &str)> = rest
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

/// Scrapes until `pred` holds for a metric value (or 20 s pass); returns the last text.
pub async fn scrape_until(env: &Env, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(env, "/metrics").await.body;
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs SQL as the superuser on a node (blocking psql, off the runtime's worker).
pub fn node_sql(env: &Env, node: &str, db: &str, sql: &str) -> String {
    let node = env.cluster.node(node).expect("node").clone();
    tokio::task::block_in_place(|| node.psql(db, sql).expect("psql"))
}

/// Pauses replay on `replica` and writes on the primary until Meridian reports it lagging.
pub async fn make_lag(env: &Env, replica: &str) {
    node_sql(
        env,
        "pg1",
        "app",
        "CREATE TABLE IF NOT EXISTS lag_probe (x int)",
    );
    tokio::task::block_in_place(|| env.cluster.wait_replicas_caught_up(Duration::from_secs(30)))
        .expect("caught up");
    node_sql(env, replica, "postgres", "SELECT pg_wal_replay_pause()");
    node_sql(
        env,
        "pg1",
        "app",
        "INSERT INTO lag_probe SELECT generate_series(1, 5000)",
    );
}

/// `promtool check metrics` on `text`, when promtool is installed.
pub fn promtool_check(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("notice: promtool is not installed; skipping `promtool check metrics`");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_cluster() {
    let env = start(2).await;
    let text = scrape_until(&env, "all nodes up", |t| {
        metric(t, "meridian_healthy_replicas", &[]) == Some(2.0)
    })
    .await;
    for node in ["pg1", "pg2", "pg3"] {
        assert_eq!(
            metric(&text, "meridian_node_up", &[("node", node)]),
            Some(1.0),
            "{node}"
        );
    }
    let role = |t: &str, n, r| metric(t, "meridian_node_role", &[("node", n), ("role", r)]);
    assert_eq!(role(&text, "pg1", "primary"), Some(1.0));
    assert_eq!(role(&text, "pg2", "replica"), Some(1.0));
    assert_eq!(metric(&text, "meridian_primary_known", &[]), Some(1.0));
    assert_eq!(metric(&text, "meridian_fenced_nodes", &[]), Some(0.0));

    // Traffic moves the routing, cache, connection and byte counters.
    let client = env.connect().await;
    client
        .batch_execute("CREATE TABLE m (id int); INSERT INTO m VALUES (1)")
        .await
        .expect("write");
    for _ in 0..5 {
        client
            .simple_query("SELECT count(*) FROM m")
            .await
            .expect("read");
    }
    let text = get(&env, "/metrics").await.body;
    let routed = |target| {
        metric(
            &text,
            "meridian_statements_routed_total",
            &[("target", target)],
        )
    };
    assert!(routed("primary").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(routed("replica").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(metric(&text, "meridian_classify_cache_misses_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(metric(&text, "meridian_client_to_server_bytes_total", &[]).unwrap_or(0.0) > 0.0);
    assert!(metric(&text, "meridian_server_to_client_bytes_total", &[]).unwrap_or(0.0) > 0.0);
    let sessions = metric(
        &text,
        "meridian_client_connections",
        &[("state", "session")],
    );
    assert!(sessions.unwrap_or(0.0) >= 1.0, "{text}");
    let opened = metric(
        &text,
        "meridian_server_connections_opened_total",
        &[("node", "pg1")],
    );
    assert!(opened.unwrap_or(0.0) >= 1.0, "{text}");
    promtool_check(&text);
    deploy::check_names_against(&text);

    // A replica that stops replaying shows lag in bytes and seconds; it goes away on resume.
    make_lag(&env, "pg3").await;
    let lagging = |t: &str| {
        metric(t, "meridian_replication_lag_bytes", &[("node", "pg3")]).unwrap_or(0.0) > 0.0
            && metric(t, "meridian_replication_lag_seconds", &[("node", "pg3")]).unwrap_or(0.0)
                > 0.0
    };
    let text = scrape_until(&env, "pg3 lagging", lagging).await;
    assert_eq!(
        metric(&text, "meridian_replication_lag_bytes", &[("node", "pg2")]),
        Some(0.0),
        "pg2 keeps replaying"
    );
    let lag = get(&env, "/api/v1/lag").await.json().expect("json");
    let pg3 = lag["replicas"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["name"] == "pg3"))
        .cloned()
        .expect("pg3 listed");
    assert!(pg3["lag_bytes"].as_u64().unwrap_or(0) > 0, "{lag}");
    node_sql(&env, "pg3", "postgres", "SELECT pg_wal_replay_resume()");
    scrape_until(&env, "pg3 caught up", |t| {
        metric(t, "meridian_replication_lag_bytes", &[("node", "pg3")]) == Some(0.0)
    })
    .await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_match_the_openapi_document() {
    let env = start(2).await;
    let spec = schema::spec();
    let served = get(&env, "/api/v1/openapi.json")
        .await
        .json()
        .expect("json");
    assert_eq!(served, spec, "the served document is docs/openapi.json");
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/status",
        "/api/v1/lag",
        "/api/v1/events",
    ] {
        let r = get(&env, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        checked(&spec, "GET", path, &r);
    }
    let status = checked(
        &spec,
        "GET",
        "/api/v1/status",
        &get(&env, "/api/v1/status").await,
    );
    assert_eq!(status["primary"], "pg1");
    let names: Vec<&str> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["pg1", "pg2", "pg3"]);
    assert!(status["last_failover"].is_null());

    let route = |sql: &str| format!("/api/v1/route?sql={}", encode_query(sql));
    let r = checked(
        &spec,
        "GET",
        "/api/v1/route",
        &get(&env, &route("SELECT 1")).await,
    );
    assert_eq!(
        (&r["target"], &r["reason"]),
        (&json!("replica"), &json!("read")),
        "{r}"
    );
    assert!(matches!(r["node"].as_str(), Some("pg2" | "pg3")), "{r}");
    let r = get(&env, &route("INSERT INTO t VALUES (1)")).await;
    let r = checked(&spec, "GET", "/api/v1/route", &r);
    assert_eq!(
        (&r["target"], &r["node"]),
        (&json!("primary"), &json!("pg1")),
        "{r}"
    );
    assert_eq!(r["classification"]["kind"], "write");
    let r = get(&env, &route("/* meridian:primary */ SELECT 1")).await;
    assert_eq!(checked(&spec, "GET", "/api/v1/route", &r)["reason"], "hint");
    let r = get(&env, &(route("SELECT 1") + "&consistency=strong")).await;
    assert_eq!(
        checked(&spec, "GET", "/api/v1/route", &r)["reason"],
        "strong"
    );

    let r = get(&env, "/api/v1/route").await;
    assert_eq!(r.status, 400);
    checked(&spec, "GET", "/api/v1/route", &r);
    let r = get(&env, "/api/v1/events?limit=x").await;
    assert_eq!(r.status, 400);
    checked(&spec, "GET", "/api/v1/events", &r);
    let r = get(&env, "/api/v1/events?limit=1").await;
    let last = checked(&spec, "GET", "/api/v1/events", &r);
    assert!(last["events"].as_array().is_some_and(|e| e.len() <= 1));
    let r = get(&env, "/api/v1/failover").await;
    assert_eq!(r.status, 405);
    assert!(r.json().expect("json")["error"].is_string());
    let r = get(&env, "/api/v1/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.json().expect("json")["error"].is_string());
    let r = get(&env, "/metrics").await;
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    let r = get(&env, "/").await;
    assert!(r.body.contains("<title>Meridian</title>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_the_token() {
    let env = start(1).await;
    let spec = schema::spec();
    let body = json!({ "node": "pg2" });
    let r = post(&env, "/api/v1/unfence", None, &body).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    checked(&spec, "POST", "/api/v1/unfence", &r);
    let r = post(&env, "/api/v1/unfence", Some("wrong"), &body).await;
    assert_eq!(r.status, 401);
    let r = post(
        &env,
        "/api/v1/unfence",
        Some(TOKEN),
        &json!({ "node": "pg9" }),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    checked(&spec, "POST", "/api/v1/unfence", &r);
    let r = post(&env, "/api/v1/unfence", Some(TOKEN), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    checked(&spec, "POST", "/api/v1/unfence", &r);
    let r = post(&env, "/api/v1/switchover", Some(TOKEN), &json!({})).await;
    assert_eq!(r.status, 400);
    checked(&spec, "POST", "/api/v1/switchover", &r);
    let r = post(&env, "/api/v1/failover", Some(TOKEN), &json!({ "too": 1 })).await;
    assert_eq!(r.status, 400);
    // Started without a configuration file: nothing to reload (tests/integration/reload.rs
    // covers the real thing).
    let r = post(&env, "/api/v1/reload", Some(TOKEN), &json!({})).await;
    assert_eq!(r.status, 409);
    checked(&spec, "POST", "/api/v1/reload", &r);
    let r = post(&env, "/api/v1/consistency-check", None, &json!({})).await;
    assert_eq!(r.status, 401);

    // Without a configured token, mutating calls are refused outright.
    let mut config = meridian::demo::config_for(&env.cluster, "127.0.0.1:0").expect("config");
    config.proxy.admin_listen = Some("127.0.0.1:0".into());
    let open = meridian::start(config).await.expect("second proxy");
    let url = format!("http://{}", open.admin_addr.expect("admin"));
    let body = json!({ "to": "pg2" }).to_string();
    let r = request(
        &url,
        "POST",
        "/api/v1/failover",
        Some(TOKEN),
        Some(&body),
        Duration::from_secs(10),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("admin_token"), "{}", r.body);
    checked(&spec, "POST", "/api/v1/failover", &r);
    assert_eq!(
        env.proxy
            .ha
            .counters
            .succeeded
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
