//! Shared setup for the integration suite: a real cluster from meridian-testkit and a Meridian
//! started in-process in front of it, plus client helpers.

use std::net::SocketAddr;

use bytes::BytesMut;
use meridian_wire::tag::backend;
use meridian_wire::{auth, frame, messages, parse, startup};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use meridian::Running;
use meridian_config::Config;
use meridian_testkit::{creds, Cluster};
use tokio_postgres::{Client, NoTls};

/// A cluster with Meridian in front of it. Dropping it stops both.
pub struct Env {
    pub proxy: Running,
    pub cluster: Cluster,
}

impl Env {
    /// Starts a cluster with `replicas` replicas and a proxy with the default test config.
    pub async fn start(replicas: usize) -> Env {
        Self::start_with(replicas, |_| {}).await
    }

    /// Like `start`, with a chance to adjust the proxy configuration.
    pub async fn start_with(replicas: usize, tweak: impl FnOnce(&mut Config)) -> Env {
        let cluster = tokio::task::spawn_blocking(move || {
            Cluster::builder()
                .replicas(replicas)
                .start()
                .expect("cluster starts")
        })
        .await
        .expect("cluster task");
        Self::with_cluster(cluster, tweak).await
    }

    /// Puts a proxy in front of an existing cluster.
    pub async fn with_cluster(cluster: Cluster, tweak: impl FnOnce(&mut Config)) -> Env {
        if std::env::var_os("RUST_LOG").is_some() {
            meridian::logging::init(meridian_config::LogFormat::Text);
        }
        let mut config = meridian::demo::config_for(&cluster, "127.0.0.1:0").expect("config");
        tweak(&mut config);
        let proxy = meridian::start(config).await.expect("proxy starts");
        proxy
            .topology
            .wait_for(Duration::from_secs(10), |t| t.primary.is_some())
            .await
            .primary
            .expect("primary discovered");
        Env { proxy, cluster }
    }

    /// Waits (up to 15 s) until the health loop has seen every node of the cluster healthy;
    /// reads go to a replica only after that.
    pub async fn wait_all_healthy(&self) {
        let n = self.cluster.nodes().count();
        self.proxy
            .topology
            .wait_for(Duration::from_secs(15), |t| {
                t.nodes.iter().filter(|x| x.healthy).count() == n
            })
            .await;
    }

    /// Meridian's address.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.listen_addr
    }

    /// Runs pgbench through Meridian as the app user and returns its output (stdout then
    /// stderr); panics with that output if pgbench fails.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(self.cluster.bin().path("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &self.addr().port().to_string()])
            .args(["-U", creds::APP_USER])
            .args(args)
            .arg(creds::APP_DB)
            .env("PGPASSWORD", creds::APP_PASSWORD)
            .output()
            .expect("pgbench runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        text
    }

    /// A libpq-style URL for `user`.
    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}/{}",
            self.addr(),
            creds::APP_DB
        )
    }

    /// The app user's URL.
    pub fn url(&self) -> String {
        self.url_for(creds::APP_USER, creds::APP_PASSWORD)
    }

    /// A tokio-postgres config for `user` through Meridian.
    pub fn pg_config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr().port())
            .user(user)
            .password(password)
            .dbname(creds::APP_DB)
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Connects as the app user through Meridian.
    pub async fn connect(&self) -> Client {
        self.try_connect(creds::APP_USER, creds::APP_PASSWORD)
            .await
            .expect("connect through meridian")
    }

    /// Connects as `user` through Meridian.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = self.pg_config(user, password).connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Runs SQL on the primary directly as the superuser (through psql), returning stdout.
    pub fn primary_sql(&self, sql: &str) -> String {
        self.cluster
            .psql(self.cluster.primary(), creds::APP_DB, sql)
            .expect("psql on primary")
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server (or Meridian) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Logs in over a raw socket with md5 (the simplest method to drive by hand).
pub async fn raw_login(addr: SocketAddr) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = BytesMut::new();
    startup::encode_startup(
        &mut out,
        &[("user", creds::MD5_USER), ("database", creds::APP_DB)],
    );
    s.write_all(&out).await.expect("startup");
    let mut buf = BytesMut::new();
    loop {
        while let Some((tag, f)) = frame::split_frame(&mut buf, 1 << 30).expect("frame") {
            match tag {
                backend::AUTHENTICATION => {
                    match parse::auth_request(frame::body(&f)).expect("auth") {
                        parse::AuthRequest::Md5 { salt } => {
                            let hash =
                                auth::md5_password_hash(creds::MD5_USER, creds::MD5_PASSWORD, salt);
                            let mut out = BytesMut::new();
                            messages::password_message(&mut out, hash.as_bytes());
                            s.write_all(&out).await.expect("password");
                        }
                        parse::AuthRequest::Ok => {}
                        other => panic!("unexpected auth request {other:?}"),
                    }
                }
                backend::READY_FOR_QUERY => return (s, buf),
                backend::ERROR_RESPONSE => panic!("login failed"),
                _ => {}
            }
        }
        let n = s.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "closed during login");
    }
}

/// Reads frames up to and including the next ReadyForQuery; returns error SQLSTATEs seen.
pub async fn read_until_ready(stream: &mut TcpStream, buf: &mut BytesMut) -> Vec<String> {
    let mut codes = Vec::new();
    loop {
        while let Some((tag, f)) = frame::split_frame(buf, 1 << 30).expect("frame") {
            if tag == backend::ERROR_RESPONSE {
                let fields = parse::ErrorFields::parse(frame::body(&f)).expect("fields");
                codes.push(fields.code().unwrap_or_default().to_string());
            }
            if tag == backend::READY_FOR_QUERY {
                return codes;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(buf))
            .await
            .expect("timely answer")
            .expect("read");
        assert!(n > 0, "closed before ReadyForQuery; errors {codes:?}");
    }
}
