//! The dashboard in headless Chromium against a live Meridian: it renders the real nodes, and a
//! replica that stops replaying shows up as lagging. Skipped (with a notice) when Chromium is
//! not installed. With `MERIDIAN_DASHBOARD_SCREENSHOT=path.png` it also saves a screenshot.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{base, get, make_lag, node_sql, start};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
async fn chromium(url: &str, extra: &[&str]) -> String {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile: PathBuf =
        std::env::temp_dir().join(format!("meridian-chromium-{}-{n}", std::process::id()));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 90 s")
    .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The opening tag of the node row for `node` in a dumped DOM.
fn row<'a>(dom: &'a str, node: &str) -> Option<&'a str> {
    let at = dom.find(&format!("<tr data-node=\"{node}\""))?;
    let end = dom[at..].find('>')?;
    Some(&dom[at..at + end])
}

fn attr(tag: &str, name: &str) -> Option<u64> {
    let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[at..].find('"')?;
    tag[at..at + end].parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_nodes_and_lag_in_chromium() {
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("notice: {CHROMIUM} is not installed; skipping the dashboard test");
        return;
    }
    let env = start(2).await;
    let url = format!("{}/", base(&env));
    let dom = chromium(&url, &["--dump-dom"]).await;
    for node in ["pg1", "pg2", "pg3"] {
        assert!(row(&dom, node).is_some(), "{node} not rendered:\n{dom}");
    }
    assert!(row(&dom, "pg1").is_some_and(|r| r.contains("data-role=\"primary\"")));
    assert!(dom.contains("id=\"ready\" class=\"pill ok\""), "{dom}");
    assert_eq!(
        row(&dom, "pg3").and_then(|r| attr(r, "data-lag-bytes")),
        Some(0)
    );

    make_lag(&env, "pg3").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&env, "/api/v1/lag").await.json().expect("json")["replicas"]
        .as_array()
        .is_none_or(|r| !r.iter().any(|x| x["name"] == "pg3" && x["lag_bytes"] != 0))
    {
        assert!(Instant::now() < deadline, "pg3 never lagged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dom = chromium(&url, &["--dump-dom"]).await;
    let pg3 = row(&dom, "pg3").expect("pg3 row");
    assert!(attr(pg3, "data-lag-bytes").unwrap_or(0) > 0, "{pg3}");
    assert!(
        dom.contains("lag lagging"),
        "the lag cell is highlighted:\n{dom}"
    );
    assert_eq!(
        row(&dom, "pg2").and_then(|r| attr(r, "data-lag-bytes")),
        Some(0)
    );

    if let Some(path) = std::env::var_os("MERIDIAN_DASHBOARD_SCREENSHOT") {
        // Some traffic so the traffic panel has something to show.
        let client = env.connect().await;
        for _ in 0..20 {
            let _ = client.simple_query("SELECT count(*) FROM lag_probe").await;
        }
        let _ = client
            .simple_query("INSERT INTO lag_probe VALUES (1)")
            .await;
        let shot = format!("--screenshot={}", PathBuf::from(path).display());
        chromium(
            &url,
            &[&shot, "--window-size=1280,900", "--hide-scrollbars"],
        )
        .await;
    }
    node_sql(&env, "pg3", "postgres", "SELECT pg_wal_replay_resume()");
}
