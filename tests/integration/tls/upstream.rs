//! Meridian to Postgres servers that serve TLS: `sslmode` against `hostssl`-only servers, a
//! certificate for another name, and a reload that changes the mode.

use super::*;

/// A cluster whose nodes serve TLS with a certificate for `localhost` only (no IP address),
/// and refuse plaintext TCP logins of the app role.
async fn ssl_cluster(pki: &Pki) -> Cluster {
    let leaf = pki.leaf("postgres", &["localhost"]);
    tokio::task::spawn_blocking(move || {
        Cluster::builder()
            .replicas(1)
            .ssl(leaf.cert_pem, leaf.key_pem, Some(creds::APP_USER))
            .start()
            .expect("cluster with ssl starts")
    })
    .await
    .expect("cluster task")
}

/// Points every node at `localhost` (the name in the servers' certificate) with `sslmode`.
fn upstream_tls(config: &mut Config, mode: SslMode, ca: Option<&std::path::Path>) {
    for node in &mut config.nodes {
        node.host = "localhost".into();
    }
    config.tls.upstream.sslmode = mode;
    config.tls.upstream.ca_file = ca.map(|p| p.display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes_against_hostssl_servers() {
    let pki = Pki::new("Meridian test CA");
    let cluster = ssl_cluster(&pki).await;
    let ca = pki.ca_file();

    // require: sessions and the monitor use TLS (the app role could not log in otherwise).
    let env = Env::with_cluster(cluster, |c| upstream_tls(c, SslMode::Require, None)).await;
    let client = env.connect().await;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query through meridian");
    assert!(row.get::<_, bool>(0), "the server connection uses TLS");
    let monitor_ssl = env.primary_sql(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'meridian-monitor'",
    );
    assert_eq!(monitor_ssl, "t", "monitor connections use TLS");
    drop(client);
    let Env { proxy, cluster } = env;
    drop(proxy);

    // verify-full with the CA: the certificate names localhost.
    let env = Env::with_cluster(cluster, |c| upstream_tls(c, SslMode::VerifyFull, Some(&ca))).await;
    let client = env.connect().await;
    let row = client
        .query_one("SELECT 1 + 1", &[])
        .await
        .expect("query through meridian");
    assert_eq!(row.get::<_, i32>(0), 2);
    drop(client);
    let Env { proxy, cluster } = env;
    drop(proxy);

    // disable: the server's own pg_hba refusal reaches the client, naming the missing
    // encryption. (The monitor role may log in without TLS, so the proxy itself starts.)
    let env = Env::with_cluster(cluster, |c| upstream_tls(c, SslMode::Disable, None)).await;
    let err = env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .err()
        .expect("plaintext login refused by the server");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("no encryption"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_for_another_name() {
    let pki = Pki::new("Meridian test CA");
    let cluster = ssl_cluster(&pki).await;
    let port = cluster.primary().port;
    let ca = pki.ca_file();
    let text = |mode: &str| {
        format!(
            "[[users]]\nname = \"x\"\npassword = \"x\"\n[monitor]\nuser = \"x\"\npassword = \"x\"\n\
         [[nodes]]\nname = \"n\"\nhost = \"localhost\"\n\
             [tls.upstream]\nsslmode = \"{mode}\"\nca_file = \"{}\"\n",
            ca.display()
        )
    };
    let connect = |mode: &'static str, host: &'static str| {
        let config = Config::from_toml(&text(mode)).expect("config");
        async move {
            let tls = meridian_upstream::NodeTls::for_host(&config, host, port).expect("tls");
            let params = meridian_upstream::ConnectParams {
                node: 0,
                host,
                port,
                user: creds::APP_USER,
                password: creds::APP_PASSWORD,
                database: creds::APP_DB,
                extra: &[],
                max_message_bytes: 1 << 20,
                timeout: Duration::from_secs(10),
                tls: &tls,
            };
            meridian_upstream::connect(&params).await.map(|_| ())
        }
    };
    // The certificate names localhost, not 127.0.0.1.
    let err = connect("verify-full", "127.0.0.1")
        .await
        .expect_err("wrong name refused");
    assert_eq!(err.sqlstate(), "08001");
    let text_of = err.to_string();
    assert!(
        text_of.contains("TLS with server") && text_of.contains("not valid for name"),
        "{text_of}"
    );
    // verify-ca checks only the chain; verify-full with the right name passes.
    connect("verify-ca", "127.0.0.1").await.expect("verify-ca");
    connect("verify-full", "localhost")
        .await
        .expect("verify-full");
    // A CA that did not sign the server certificate fails even verify-ca.
    let other = Pki::new("Another CA");
    let config = Config::from_toml(&format!(
        "[[users]]\nname = \"x\"\npassword = \"x\"\n[monitor]\nuser = \"x\"\npassword = \"x\"\n\
         [[nodes]]\nname = \"n\"\nhost = \"localhost\"\n\
         [tls.upstream]\nsslmode = \"verify-ca\"\nca_file = \"{}\"\n",
        other.ca_file().display()
    ))
    .expect("config");
    let tls = meridian_upstream::NodeTls::for_host(&config, "localhost", port).expect("tls");
    let params = meridian_upstream::ConnectParams {
        node: 0,
        host: "localhost",
        port,
        user: creds::APP_USER,
        password: creds::APP_PASSWORD,
        database: creds::APP_DB,
        extra: &[],
        max_message_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
        tls: &tls,
    };
    let err = meridian_upstream::connect(&params)
        .await
        .expect_err("unknown CA refused");
    assert_eq!(err.sqlstate(), "08001", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_upstream_sslmode_for_new_server_connections() {
    let pki = Pki::new("Meridian test CA");
    let cluster = ssl_cluster(&pki).await;
    let path = pki.dir.path().join("meridian.toml");
    let nodes: Vec<(String, u16)> = cluster.nodes().map(|n| (n.name.clone(), n.port)).collect();
    let write = |sslmode: &str, ca: &str| {
        let mut text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
             [monitor]\nuser = \"{}\"\npassword = \"{}\"\n\n[tls.upstream]\nsslmode = \"{sslmode}\"\n\
             ca_file = \"{ca}\"\n",
            creds::APP_USER,
            creds::APP_PASSWORD,
            creds::SUPERUSER,
            creds::SUPERUSER_PASSWORD,
        );
        for (name, port) in &nodes {
            text.push_str(&format!(
                "\n[[nodes]]\nname = \"{name}\"\nhost = \"localhost\"\nport = {port}\n"
            ));
        }
        std::fs::write(&path, text).expect("write config");
    };
    let ca = pki.ca_file().display().to_string();
    write("disable", &ca);
    let config = Config::load(&path).expect("config loads");
    let proxy = meridian::start_from(config, Some(path.clone()))
        .await
        .expect("proxy starts");
    proxy
        .topology
        .wait_for(Duration::from_secs(20), |t| t.primary.is_some())
        .await
        .primary
        .expect("primary discovered");
    let env = Env { proxy, cluster };

    // Plaintext: the server's hostssl-only rule for the app role refuses it.
    let err = env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .err()
        .expect("refused without TLS");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");

    // A CA file that does not parse refuses the reload and changes nothing.
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    write("verify-full", &garbage.display().to_string());
    let refused = env.proxy.reload().expect_err("bad CA file refused");
    assert!(
        refused
            .errors
            .iter()
            .any(|e| e.contains("tls.upstream.ca_file")),
        "{refused:?}"
    );
    assert!(env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .is_err());

    // verify-full with the right CA: new sessions' server connections use TLS.
    write("verify-full", &ca);
    let report = env.proxy.reload().expect("reload applies");
    assert!(
        report.changed.iter().any(|k| k.starts_with("tls.upstream")),
        "{report:?}"
    );
    let client = env.connect().await;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query through meridian");
    assert!(row.get::<_, bool>(0));
}
