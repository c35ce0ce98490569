//! TLS both ways: clients to Meridian (psql with sslmode=require/verify-full and
//! channel_binding=require, tokio-postgres over rustls, require_client_tls, a client that sends
//! garbage instead of a ClientHello, SCRAM downgrades) and Meridian to Postgres servers that
//! serve TLS (sslmode=require/verify-full, disable refused by pg_hba, a certificate for another
//! name; see `upstream`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use meridian_config::{Config, SslMode};
use meridian_testkit::{creds, Cluster};
use meridian_wire::auth::{ClientBinding, ScramClient};
use meridian_wire::tag::backend;
use meridian_wire::{frame, messages, parse, startup};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::ChannelBinding;

use crate::support::{sqlstate, Env};

/// A test CA and certificates it signed, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

/// A certificate and its key, as PEM and as files.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = params.self_signed(&key).expect("CA cert").pem();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write CA");
        Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as `<file>.crt`
    /// and `<file>.key`.
    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meridian test server");
        let cert_pem = params.signed_by(&key, &self.ca).expect("sign").pem();
        let key_pem = key.serialize_pem();
        let cert = self.dir.path().join(format!("{file}.crt"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert, &cert_pem).expect("write cert");
        std::fs::write(&key_path, &key_pem).expect("write key");
        Leaf {
            cert_pem,
            key_pem,
            cert,
            key: key_path,
        }
    }
}

/// Client-side TLS on Meridian with a certificate for localhost and 127.0.0.1.
fn client_tls(config: &mut Config, leaf: &Leaf, required: bool) {
    config.tls.cert = Some(leaf.cert.display().to_string());
    config.tls.key = Some(leaf.key.display().to_string());
    config.tls.require_client_tls = required;
}

/// Runs psql with a conninfo string through Meridian; returns (success, stdout, stderr).
fn psql(env: &Env, conninfo: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new(env.cluster.bin().path("psql"))
        .arg(conninfo)
        .args(["-X", "-At", "-c", sql])
        .env("PGPASSWORD", creds::APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn conninfo(env: &Env, extra: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={} dbname={} {extra}",
        env.addr().port(),
        creds::APP_USER,
        creds::APP_DB
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_with_verify_full_and_channel_binding() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost", "127.0.0.1"]);
    let env = Env::start_with(1, |c| client_tls(c, &leaf, false)).await;
    let ca = pki.ca_file().display().to_string();

    // sslmode=require: encrypted, certificate not checked.
    let (ok, out, err) = psql(&env, &conninfo(&env, "sslmode=require"), "SELECT 40 + 2");
    assert!(ok, "{err}");
    assert_eq!(out, "42\n");

    // verify-full: the chain leads to the test CA and the certificate names localhost.
    let info = conninfo(&env, &format!("sslmode=verify-full sslrootcert={ca}"));
    let (ok, out, err) = psql(&env, &info, "SELECT current_user");
    assert!(ok, "{err}");
    assert_eq!(out, "app\n");

    // channel_binding=require: libpq insists on SCRAM-SHA-256-PLUS, which Meridian offers on
    // TLS and verifies against its certificate's hash.
    let info = conninfo(
        &env,
        &format!("sslmode=verify-full sslrootcert={ca} channel_binding=require"),
    );
    let (ok, out, err) = psql(&env, &info, "\\conninfo");
    assert!(ok, "{err}");
    assert!(out.contains("SSL connection"), "{out}");

    // Without TLS there is nothing to bind to: libpq refuses to go on.
    let (ok, _, err) = psql(
        &env,
        &conninfo(&env, "sslmode=disable channel_binding=require"),
        "SELECT 1",
    );
    assert!(!ok);
    assert!(err.contains("channel binding"), "{err}");

    // Plaintext is still accepted while require_client_tls is off.
    let (ok, out, err) = psql(&env, &conninfo(&env, "sslmode=disable"), "SELECT 1");
    assert!(ok, "{err}");
    assert_eq!(out, "1\n");

    // A CA that did not sign Meridian's certificate fails verification.
    let other = Pki::new("Another CA");
    let info = conninfo(
        &env,
        &format!(
            "sslmode=verify-ca sslrootcert={}",
            other.ca_file().display()
        ),
    );
    let (ok, _, err) = psql(&env, &info, "SELECT 1");
    assert!(!ok);
    assert!(err.contains("certificate verify failed"), "{err}");
}

/// A tokio-postgres connector over rustls that trusts `ca` and checks the name, built with
/// Meridian's own upstream TLS code (as a client of Meridian here).
fn rustls_connector(ca: &std::path::Path) -> meridian_upstream::PgTls {
    let text = format!(
        "[[users]]\nname = \"x\"\npassword = \"x\"\n[monitor]\nuser = \"x\"\npassword = \"x\"\n\
         [[nodes]]\nname = \"n\"\nhost = \"localhost\"\n\
         [tls.upstream]\nsslmode = \"verify-full\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let config = Config::from_toml(&text).expect("config");
    let tls = meridian_upstream::NodeTls::for_host(&config, "localhost", 1).expect("tls");
    assert_eq!(tls.mode(), SslMode::VerifyFull);
    tls.postgres().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_rustls_with_channel_binding() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost", "127.0.0.1"]);
    let env = Env::start_with(1, |c| client_tls(c, &leaf, false)).await;
    let mut pg = tokio_postgres::Config::new();
    pg.host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(env.addr().port())
        .user(creds::APP_USER)
        .password(creds::APP_PASSWORD)
        .dbname(creds::APP_DB)
        .connect_timeout(Duration::from_secs(10))
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(ChannelBinding::Require);
    let (client, conn) = pg
        .connect(rustls_connector(&pki.ca_file()))
        .await
        .expect("TLS connection with SCRAM-SHA-256-PLUS");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i32>(0), 42);
    // A few thousand rows in one reply exercise the write path under TLS.
    let rows = client
        .query(
            "SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g",
            &[],
        )
        .await
        .expect("big reply");
    assert_eq!(rows.len(), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_when_client_tls_is_required() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost", "127.0.0.1"]);
    let env = Env::start_with(1, |c| client_tls(c, &leaf, true)).await;

    let err = env
        .try_connect(creds::APP_USER, creds::APP_PASSWORD)
        .await
        .err()
        .expect("plaintext refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let message = err.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("SSL connection is required")),
        "{message:?}"
    );

    // psql with sslmode=prefer (its default) upgrades and works; sslmode=disable is refused.
    let (ok, out, err) = psql(&env, &conninfo(&env, "sslmode=prefer"), "SELECT 1");
    assert!(ok, "{err}");
    assert_eq!(out, "1\n");
    let (ok, _, err) = psql(&env, &conninfo(&env, "sslmode=disable"), "SELECT 1");
    assert!(!ok);
    assert!(err.contains("SSL connection is required"), "{err}");
}

/// Reads until the peer closes; true if it did so within the time limit.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_handshakes_and_injected_bytes_are_refused_cleanly() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost", "127.0.0.1"]);
    let env = Env::start_with(1, |c| client_tls(c, &leaf, false)).await;
    let keeper = env.connect().await;
    keeper.simple_query("SELECT 1").await.expect("keeper works");

    let mut ssl_request = BytesMut::new();
    startup::encode_ssl_request(&mut ssl_request);

    // Garbage instead of a ClientHello: the connection is closed, nothing else happens.
    let mut s = TcpStream::connect(env.addr()).await.expect("connect");
    s.write_all(&ssl_request).await.expect("send");
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"S");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send garbage");
    assert!(
        closes(&mut s).await,
        "connection closed after a bad handshake"
    );

    // Bytes pipelined behind the SSLRequest (before any TLS) would be injectable by a man in
    // the middle: refused in plaintext, before the handshake starts (CVE-2021-23214).
    let mut s = TcpStream::connect(env.addr()).await.expect("connect");
    let mut packet = ssl_request.clone();
    startup::encode_startup(
        &mut packet,
        &[("user", creds::APP_USER), ("database", creds::APP_DB)],
    );
    s.write_all(&packet).await.expect("send");
    let mut buf = BytesMut::new();
    let fields = loop {
        if let Some((tag, f)) = frame::split_frame(&mut buf, 1 << 20).expect("frame") {
            assert_eq!(
                tag,
                backend::ERROR_RESPONSE,
                "no 'S' for an injected startup"
            );
            let fields = parse::ErrorFields::parse(frame::body(&f)).expect("fields");
            break (
                fields.code().unwrap_or_default().to_string(),
                fields.message().unwrap_or_default().to_string(),
            );
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf))
            .await
            .expect("timely")
            .expect("read");
        assert!(n > 0, "closed without an error");
    };
    assert_eq!(fields.0, "08P01");
    assert!(
        fields.1.contains("unencrypted data after SSL request"),
        "{}",
        fields.1
    );

    // GSSAPI encryption is declined with 'N'; the client may go on in plaintext.
    let mut s = TcpStream::connect(env.addr()).await.expect("connect");
    let mut gss = BytesMut::new();
    startup::encode_gssenc_request(&mut gss);
    s.write_all(&gss).await.expect("send");
    s.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"N");

    // The session opened before all this is unaffected.
    let rows = keeper
        .simple_query("SELECT 2")
        .await
        .expect("keeper still works");
    assert!(!rows.is_empty());
}

/// Opens a TLS connection to Meridian trusting `ca`, sends a StartupMessage and reads the
/// AuthenticationSASL mechanisms.
async fn tls_startup(
    env: &Env,
    ca: &str,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    BytesMut,
    Vec<String>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut s = TcpStream::connect(env.addr()).await.expect("connect");
    let mut out = BytesMut::new();
    startup::encode_ssl_request(&mut out);
    s.write_all(&out).await.expect("send");
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"S");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, s)
        .await
        .expect("handshake");
    out.clear();
    startup::encode_startup(
        &mut out,
        &[("user", creds::APP_USER), ("database", creds::APP_DB)],
    );
    tls.write_all(&out).await.expect("startup");
    let mut buf = BytesMut::new();
    let (tag, f) = read_frame(&mut tls, &mut buf).await;
    assert_eq!(tag, backend::AUTHENTICATION);
    let mechanisms = match parse::auth_request(frame::body(&f)).expect("auth") {
        parse::AuthRequest::Sasl { mechanisms } => {
            mechanisms.iter().map(|m| m.to_string()).collect()
        }
        other => panic!("expected SASL, got {other:?}"),
    };
    (tls, buf, mechanisms)
}

async fn read_frame(
    s: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> (u8, bytes::Bytes) {
    loop {
        if let Some(found) = frame::split_frame(buf, 1 << 20).expect("frame") {
            return found;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("timely")
            .expect("read");
        assert!(n > 0, "closed");
    }
}

/// The SQLSTATE and message of an ErrorResponse frame.
fn error_of(tag: u8, f: &[u8]) -> (String, String) {
    assert_eq!(tag, backend::ERROR_RESPONSE, "expected an error");
    let fields = parse::ErrorFields::parse(frame::body(f)).expect("fields");
    (
        fields.code().unwrap_or_default().to_string(),
        fields.message().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_is_offered_on_tls_only_and_downgrades_are_refused() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost", "127.0.0.1"]);
    let env = Env::start_with(1, |c| client_tls(c, &leaf, false)).await;

    let (mut tls, mut buf, mechanisms) = tls_startup(&env, &pki.ca_pem).await;
    assert_eq!(mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    // gs2 flag 'y' ("I could bind, but you can't") on a connection that offered PLUS: someone
    // removed PLUS from the list on the way. Refused.
    let client = ScramClient::with_binding(creds::APP_PASSWORD, ClientBinding::Unrequested);
    let mut out = BytesMut::new();
    messages::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.initial());
    tls.write_all(&out).await.expect("send");
    let (tag, f) = read_frame(&mut tls, &mut buf).await;
    let (code, message) = error_of(tag, &f);
    assert_eq!(code, "08P01");
    assert!(message.contains("channel binding"), "{message}");

    // Binding to a different certificate hash (what a man in the middle would present) fails.
    let (mut tls, mut buf, _) = tls_startup(&env, &pki.ca_pem).await;
    let mut client = ScramClient::with_binding(
        creds::APP_PASSWORD,
        ClientBinding::TlsServerEndPoint(vec![0u8; 32]),
    );
    out.clear();
    messages::sasl_initial_response(&mut out, "SCRAM-SHA-256-PLUS", &client.initial());
    tls.write_all(&out).await.expect("send");
    let (_, f) = read_frame(&mut tls, &mut buf).await;
    let server_first = match parse::auth_request(frame::body(&f)).expect("auth") {
        parse::AuthRequest::SaslContinue(d) => d.to_vec(),
        other => panic!("expected SASL continue, got {other:?}"),
    };
    out.clear();
    messages::sasl_response(
        &mut out,
        &client.update(&server_first).expect("client final"),
    );
    tls.write_all(&out).await.expect("send");
    let (tag, f) = read_frame(&mut tls, &mut buf).await;
    let (code, _) = error_of(tag, &f);
    assert_eq!(code, "28P01");

    // On plaintext, only SCRAM-SHA-256 is offered.
    let mut s = TcpStream::connect(env.addr()).await.expect("connect");
    out.clear();
    startup::encode_startup(
        &mut out,
        &[("user", creds::APP_USER), ("database", creds::APP_DB)],
    );
    s.write_all(&out).await.expect("send");
    let mut buf = BytesMut::new();
    let (_, f) = read_frame(&mut s, &mut buf).await;
    match parse::auth_request(frame::body(&f)).expect("auth") {
        parse::AuthRequest::Sasl { mechanisms } => assert_eq!(mechanisms, ["SCRAM-SHA-256"]),
        other => panic!("expected SASL, got {other:?}"),
    }
}

#[test]
fn check_config_loads_the_tls_files_and_names_the_key() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost"]);
    let other = pki.leaf("other", &["localhost"]);
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let base = "[[users]]\nname = \"app\"\npassword = \"x\"\n\n[monitor]\nuser = \"postgres\"\n\
                password = \"x\"\n\n[[nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n";
    let check = |tls: String| {
        let path = pki.dir.path().join("meridian.toml");
        std::fs::write(&path, format!("{base}\n{tls}")).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequire_client_tls = true\n\
         [tls.upstream]\nsslmode = \"verify-full\"\nca_file = \"{}\"\n",
        leaf.cert.display(),
        leaf.key.display(),
        pki.ca_file().display()
    ));
    assert_eq!(code, Some(0), "{err}");
    let cases = [
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                garbage.display(),
                leaf.key.display()
            ),
            "tls.cert",
        ),
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                leaf.cert.display(),
                garbage.display()
            ),
            "tls.key",
        ),
        // A key that belongs to another certificate.
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                leaf.cert.display(),
                other.key.display()
            ),
            "tls.key",
        ),
        (
            format!(
                "[tls.upstream]\nsslmode = \"verify-ca\"\nca_file = \"{}\"\n",
                garbage.display()
            ),
            "tls.upstream.ca_file",
        ),
    ];
    for (tls, key) in cases {
        let (code, err) = check(tls.clone());
        assert_eq!(code, Some(2), "{tls} should be refused");
        assert!(
            err.contains(key),
            "error for {tls:?} should name {key}: {err}"
        );
    }
}

/// PEM to DER for the first certificate in `pem`.
fn der_of(pem: &str) -> Vec<u8> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_reply_to_a_client_that_reads_late_arrives_whole_over_tls() {
    let pki = Pki::new("Meridian test CA");
    let leaf = pki.leaf("meridian", &["localhost", "127.0.0.1"]);
    let env = Env::start_with(1, |c| client_tls(c, &leaf, false)).await;
    let (mut tls, mut buf, mechanisms) = tls_startup(&env, &pki.ca_pem).await;
    assert_eq!(mechanisms[0], "SCRAM-SHA-256-PLUS");
    // A full SCRAM-SHA-256-PLUS login with the real certificate's hash.
    let binding = meridian_wire::auth::tls_server_end_point(&der_of(&leaf.cert_pem)).expect("hash");
    let mut client = ScramClient::with_binding(
        creds::APP_PASSWORD,
        ClientBinding::TlsServerEndPoint(binding),
    );
    let mut out = BytesMut::new();
    messages::sasl_initial_response(&mut out, "SCRAM-SHA-256-PLUS", &client.initial());
    tls.write_all(&out).await.expect("send");
    loop {
        let (tag, f) = read_frame(&mut tls, &mut buf).await;
        match tag {
            backend::AUTHENTICATION => match parse::auth_request(frame::body(&f)).expect("auth") {
                parse::AuthRequest::SaslContinue(d) => {
                    let reply = client.update(d).expect("client final");
                    out.clear();
                    messages::sasl_response(&mut out, &reply);
                    tls.write_all(&out).await.expect("send");
                }
                parse::AuthRequest::SaslFinal(d) => client.finish(d).expect("server signature"),
                parse::AuthRequest::Ok => {}
                other => panic!("unexpected {other:?}"),
            },
            backend::ERROR_RESPONSE => panic!("login failed: {:?}", error_of(tag, &f)),
            backend::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    // About 20 MB of rows: far more than the socket buffers hold while the client sleeps, so
    // Meridian's TLS writes stall half-way and must resume when the client reads again.
    out.clear();
    messages::query(
        &mut out,
        "SELECT repeat('x', 1000) FROM generate_series(1, 20000)",
    );
    tls.write_all(&out).await.expect("query");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rows = 0;
    loop {
        let (tag, f) = read_frame(&mut tls, &mut buf).await;
        match tag {
            backend::DATA_ROW => rows += 1,
            backend::ERROR_RESPONSE => panic!("query failed: {:?}", error_of(tag, &f)),
            backend::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    assert_eq!(rows, 20000);
}

mod upstream;
