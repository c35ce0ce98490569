//! Failover through the API and `meridian ctl`; the consistency check.

use serde_json::{json, Value};

use super::{
    base, checked, get, metric, node_sql, post, promtool_check, schema, scrape_until, start, TOKEN,
};
use crate::support::Env;

/// Runs `meridian ctl --admin URL args...`.
fn ctl(env: &Env, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.arg("ctl").arg("--admin").arg(base(env)).args(args);
    cmd.env_remove("MERIDIAN_ADMIN_TOKEN")
        .env_remove("MERIDIAN_ADMIN_URL");
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    tokio::task::block_in_place(|| cmd.output().expect("meridian ctl runs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_through_the_api_and_ctl() {
    let env = start(2).await;
    let spec = schema::spec();
    let out = ctl(&env, None, &["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("primary: pg1") && stdout.contains("pg3"),
        "{stdout}"
    );
    let out = ctl(&env, None, &["route", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("replica"));
    let out = ctl(&env, None, &["failover", "--to", "pg2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    let r = post(
        &env,
        "/api/v1/failover",
        Some(TOKEN),
        &json!({ "to": "pg2" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = checked(&spec, "POST", "/api/v1/failover", &r);
    assert_eq!(
        (&report["new_primary"], &report["fenced"]),
        (&json!("pg2"), &json!("pg1"))
    );

    let text = scrape_until(&env, "pg2 primary", |t| {
        metric(
            t,
            "meridian_node_role",
            &[("node", "pg2"), ("role", "primary")],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(&text, "meridian_failovers_total", &[("result", "success")]),
        Some(1.0)
    );
    assert!(metric(&text, "meridian_last_failover_duration_seconds", &[]).unwrap_or(0.0) > 0.0);
    assert!(metric(&text, "meridian_last_failover_timestamp_seconds", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(
        metric(&text, "meridian_node_fenced", &[("node", "pg1")]),
        Some(1.0)
    );
    // Only the old primary is fenced (not the node just promoted, as a split-brain check racing
    // with the promotion would do).
    assert_eq!(
        metric(&text, "meridian_fenced_nodes", &[]),
        Some(1.0),
        "events: {}",
        get(&env, "/api/v1/events").await.body
    );
    promtool_check(&text);

    let status = checked(
        &spec,
        "GET",
        "/api/v1/status",
        &get(&env, "/api/v1/status").await,
    );
    assert_eq!(status["primary"], "pg2");
    assert_eq!(status["last_failover"]["node"], "pg2", "{status}");
    let events = checked(
        &spec,
        "GET",
        "/api/v1/events",
        &get(&env, "/api/v1/events").await,
    );
    assert!(events["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["kind"] == "promote")));

    let out = ctl(&env, None, &["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("primary: pg2") && stdout.contains("FENCED"),
        "{stdout}"
    );
    let out = ctl(&env, None, &["events"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("promote"));
    let out = ctl(&env, Some(TOKEN), &["unfence", "pg1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A planned switchover through ctl: pg3 (re-pointed to pg2) takes over.
    let out = ctl(&env, Some(TOKEN), &["switchover", "--to", "pg3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("promoted pg3"));
    let text = scrape_until(&env, "pg3 primary", |t| {
        metric(
            t,
            "meridian_node_role",
            &[("node", "pg3"), ("role", "primary")],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(&text, "meridian_failovers_total", &[("result", "success")]),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_check_finds_a_divergent_node() {
    let env = start(2).await;
    let spec = schema::spec();
    node_sql(
        &env,
        "pg1",
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, v text); \
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g; \
         CREATE TABLE other (x int); INSERT INTO other VALUES (1), (2)",
    );
    let body = json!({ "database": "app" });
    let r = post(&env, "/api/v1/consistency-check", Some(TOKEN), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = checked(&spec, "POST", "/api/v1/consistency-check", &r);
    assert_eq!(report["consistent"], true, "{report:#}");
    assert_eq!(report["summary"]["mismatched"], 0);
    let tables: Vec<&str> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["table"].as_str())
        .collect();
    assert!(
        tables.contains(&"items") && tables.contains(&"other"),
        "{tables:?}"
    );

    // pg3 leaves replication and takes a write of its own: it diverges.
    let pg3 = env.cluster.node("pg3").expect("pg3").clone();
    tokio::task::block_in_place(|| pg3.promote()).expect("promote pg3");
    node_sql(
        &env,
        "pg3",
        "app",
        "UPDATE items SET v = 'diverged' WHERE id = 7",
    );
    let body = json!({ "database": "app", "tables": ["items", "public.other", "missing"] });
    let r = post(&env, "/api/v1/consistency-check", Some(TOKEN), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = checked(&spec, "POST", "/api/v1/consistency-check", &r);
    assert_eq!(report["consistent"], false);
    let table = |name: &str| {
        report["tables"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["table"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {report:#}"))
    };
    let node = |t: &Value, n: &str| {
        t["nodes"]
            .as_array()
            .and_then(|x| x.iter().find(|x| x["node"] == n))
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {t:#}"))
    };
    let items = table("items");
    assert_eq!(items["status"], "mismatch", "{items:#}");
    assert_eq!(node(&items, "pg3")["status"], "mismatch");
    assert_eq!(node(&items, "pg3")["replica"], false);
    assert_eq!(node(&items, "pg2")["status"], "match");
    assert_eq!(table("other")["status"], "match");
    assert_eq!(table("missing")["status"], "error");
    assert_eq!(report["summary"]["mismatched"], 1);
}
