//! Failover timing benchmark: time from `kill -9` of the primary to the first successful write
//! through Meridian, over several runs with the default `[failover]` settings.
//!
//! `cargo run --release -p meridian --example failover_time -- [RUNS]` (default 10). Each run
//! starts its own primary + 2 replicas (synchronous standby) and Meridian in-process.

use std::time::{Duration, Instant};

use meridian_testkit::{creds, Cluster};
use tokio_postgres::NoTls;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    meridian_testkit::ensure_postgres()?;
    let mut times = Vec::new();
    for run in 1..=runs {
        let cluster = tokio::task::spawn_blocking(|| {
            Cluster::builder().replicas(2).synchronous(true).start()
        })
        .await??;
        let mut config = meridian::demo::config_for(&cluster, "127.0.0.1:0")?;
        // Default health-loop and failover settings, not the demo's faster ones.
        config.failover = meridian_config::FailoverConfig::default();
        let proxy = meridian::start(config).await?;
        proxy
            .topology
            .wait_for(Duration::from_secs(15), |t| {
                t.nodes.iter().all(|n| n.healthy)
            })
            .await;
        let url = format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            proxy.listen_addr.port(),
            creds::APP_USER,
            creds::APP_PASSWORD,
            creds::APP_DB
        );
        let (mut client, conn) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE ledger (id serial PRIMARY KEY)")
            .await?;
        for _ in 0..100 {
            client
                .execute("INSERT INTO ledger DEFAULT VALUES", &[])
                .await?;
        }
        let primary = cluster.primary().clone();
        let killed = Instant::now();
        tokio::task::spawn_blocking(move || primary.kill9()).await??;
        let elapsed = loop {
            if client
                .execute("INSERT INTO ledger DEFAULT VALUES", &[])
                .await
                .is_ok()
            {
                break killed.elapsed();
            }
            // A statement caught by the kill may end its connection (its outcome is unknown);
            // reconnect as an application would.
            if client.is_closed() {
                if let Ok((c, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    client = c;
                }
            }
            if killed.elapsed() > Duration::from_secs(60) {
                for e in proxy.ha.events() {
                    eprintln!("  event {}: {}", e.kind, e.message);
                }
                anyhow::bail!("run {run}: writes did not resume within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "run {run}: first write {} ms after kill -9",
            elapsed.as_millis()
        );
        times.push(elapsed);
        drop(client);
        drop(proxy);
        tokio::task::spawn_blocking(move || drop(cluster)).await?;
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "runs: {}  median: {} ms  max: {} ms",
        times.len(),
        median.as_millis(),
        max.as_millis()
    );
    Ok(())
}
