//! `meridian demo` / `make demo`: a local primary with streaming replicas (real PostgreSQL, in a
//! temp dir, on free loopback ports) and Meridian in front of them, until Ctrl-C.

use meridian_config::Config;
use meridian_testkit::{creds, Cluster};

/// A configuration pointing at `cluster`, with the testkit's users, listening on `listen`.
pub fn config_for(cluster: &Cluster, listen: &str) -> Result<Config, meridian_config::ConfigError> {
    Config::from_toml(&config_text_for(cluster, listen))
}

/// `config_for` as TOML text (to write to a file and edit, as the reload tests do).
pub fn config_text_for(cluster: &Cluster, listen: &str) -> String {
    let mut text = format!(
        r#"
[proxy]
listen = "{listen}"
region = "local"

[monitor]
user = "{su}"
password = "{su_pw}"
database = "postgres"

[failover]
check_interval_ms = 200

[[users]]
name = "{app}"
password = "{app_pw}"

[[users]]
name = "{md5}"
password = "{md5_pw}"
auth = "md5"

[[users]]
name = "{plain}"
password = "{plain_pw}"

[[users]]
name = "{trust}"
password = "trust-needs-none"
"#,
        su = creds::SUPERUSER,
        su_pw = creds::SUPERUSER_PASSWORD,
        app = creds::APP_USER,
        app_pw = creds::APP_PASSWORD,
        md5 = creds::MD5_USER,
        md5_pw = creds::MD5_PASSWORD,
        plain = creds::PLAIN_USER,
        plain_pw = creds::PLAIN_PASSWORD,
        trust = creds::TRUST_USER,
    );
    for node in cluster.nodes() {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nregion = \"local\"\n",
            node.name, node.port
        ));
    }
    text
}

/// Runs the demo until Ctrl-C, then stops Meridian and the cluster.
pub async fn run(port: u16, replicas: usize) -> anyhow::Result<()> {
    let pg = meridian_testkit::ensure_postgres()?;
    println!("PostgreSQL binaries: {}", pg.bindir.display());
    println!("starting a primary and {replicas} streaming replicas...");
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::builder().replicas(replicas).start())
            .await??;
    let port = if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        port
    } else {
        meridian_testkit::free_port()
    };
    let mut config = config_for(&cluster, &format!("127.0.0.1:{port}"))?;
    let admin_port = if std::net::TcpListener::bind(("127.0.0.1", 9930)).is_ok() {
        9930
    } else {
        meridian_testkit::free_port()
    };
    config.proxy.admin_listen = Some(format!("127.0.0.1:{admin_port}"));
    config.proxy.admin_token = Some(format!("demo-{:016x}", rand_u64()));
    let token = config.proxy.admin_token.clone().unwrap_or_default();
    let running = crate::start(config).await?;
    let addr = running.listen_addr;
    println!();
    println!("Meridian is up. Nodes:");
    for node in cluster.nodes() {
        println!(
            "  {:<4} 127.0.0.1:{}  (data: {})",
            node.name,
            node.port,
            node.datadir.display()
        );
    }
    println!();
    println!(
        "  DATABASE_URL=postgres://{}:{}@{addr}/{}",
        creds::APP_USER,
        creds::APP_PASSWORD,
        creds::APP_DB
    );
    println!(
        "  psql \"postgres://{}:{}@{addr}/{}\"",
        creds::APP_USER,
        creds::APP_PASSWORD,
        creds::APP_DB
    );
    if let Some(admin) = running.admin_addr {
        println!();
        println!("  dashboard:  http://{admin}/");
        println!("  metrics:    http://{admin}/metrics");
        println!("  meridian ctl --admin http://{admin} --token {token} status");
    }
    println!();
    println!("Press Ctrl-C to stop everything and clean up.");
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping...");
    running.stop().await;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    println!("stopped; temporary cluster removed");
    Ok(())
}

/// A random-enough value for the demo's admin token (no extra dependency).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
