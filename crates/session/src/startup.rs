//! Client startup: SSL/GSS negotiation (TLS when `[tls]` has a certificate; GSSAPI encryption is
//! always declined), cancel requests, the startup packet, and authentication against the
//! configured users (SCRAM-SHA-256, SCRAM-SHA-256-PLUS on TLS, or md5). Nothing is sent upstream
//! before the client has proven who it is.

use bytes::{Bytes, BytesMut};
use meridian_config::AuthMethod;
use meridian_upstream::stream::Stream;
use meridian_wire::auth::{self, ScramServer};
use meridian_wire::startup::{self, StartupPacket};
use meridian_wire::{frame, messages, parse, tag::frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};

use crate::{ProxyState, SessionError};

/// Largest message accepted before authentication completes.
const MAX_STARTUP_BYTES: usize = 10_000;

/// A client that passed authentication.
#[derive(Debug)]
pub struct Authenticated {
    /// Role name.
    pub user: String,
    /// Database name (defaults to the user name, as in Postgres).
    pub database: String,
    /// Every other startup parameter, passed upstream.
    pub params: Vec<(String, String)>,
    /// `meridian.*` settings given at startup (as parameters or `-c` options), applied by the
    /// session instead of being sent upstream.
    pub meridian: Vec<(String, String)>,
}

/// What the startup phase ended with.
pub enum Outcome {
    /// A normal client, authenticated.
    Session(Authenticated),
    /// A CancelRequest connection, already handled.
    Cancelled,
}

/// Runs the startup phase on a fresh client connection.
pub async fn handshake(
    stream: &mut Stream,
    buf: &mut BytesMut,
    state: &ProxyState,
    peer: std::net::IpAddr,
) -> Result<Outcome, SessionError> {
    let packet = loop {
        let packet = loop {
            if let Some(p) = startup::decode_startup(buf, MAX_STARTUP_BYTES)? {
                break p;
            }
            read_more(stream, buf).await?;
        };
        match packet {
            StartupPacket::SslRequest if stream.is_tls() => {
                return Err(SessionError::Protocol(
                    "SSLRequest on a connection that already uses TLS".into(),
                ))
            }
            // As Postgres does, no TLS on a Unix-domain socket.
            StartupPacket::SslRequest if stream.is_unix() => write(stream, b"N").await?,
            StartupPacket::SslRequest => match &state.client_tls {
                Some(tls) => {
                    // Whatever follows the SSLRequest before the handshake was sent in
                    // plaintext, possibly by someone in the middle: it must not be taken as if
                    // it came over TLS (CVE-2021-23214).
                    if !buf.is_empty() {
                        return Err(SessionError::Protocol(
                            "received unencrypted data after SSL request".into(),
                        ));
                    }
                    write(stream, b"S").await?;
                    stream
                        .accept_tls(tls.acceptor())
                        .await
                        .map_err(SessionError::ClientIo)?;
                }
                // No TLS configured: the client may continue in plaintext.
                None => write(stream, b"N").await?,
            },
            // GSSAPI encryption is not offered; inside TLS the request makes no sense.
            StartupPacket::GssEncRequest if stream.is_tls() => {
                return Err(SessionError::Protocol(
                    "GSSENCRequest on a connection that already uses TLS".into(),
                ))
            }
            StartupPacket::GssEncRequest => write(stream, b"N").await?,
            other => break other,
        }
    };
    // A local socket is as private as its directory's permissions: `require_client_tls`
    // applies to TCP clients.
    if matches!(packet, StartupPacket::Startup { .. })
        && !stream.is_tls()
        && !stream.is_unix()
        && state.client_tls.as_ref().is_some_and(|t| t.required())
    {
        return Err(SessionError::Auth {
            code: "28000",
            message: "SSL connection is required: Meridian refuses unencrypted client connections \
                      (tls.require_client_tls); connect with sslmode=require or stronger"
                .into(),
        });
    }
    let (protocol, params) = match packet {
        StartupPacket::Cancel { pid, secret } => {
            if let Some((addr, bpid, bsecret)) = state.cancels.lookup(pid, secret) {
                debug!(%addr, "forwarding cancel request");
                let _ = meridian_upstream::send_cancel(&addr, bpid, bsecret).await;
            }
            return Ok(Outcome::Cancelled);
        }
        StartupPacket::Startup { protocol, params } => (protocol, params),
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            return Err(SessionError::Protocol(
                "unexpected negotiation packet".into(),
            ))
        }
    };

    let mut user = None;
    let mut database = None;
    let mut rest = Vec::new();
    let mut unsupported = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "user" => user = Some(v),
            "database" => database = Some(v),
            "replication" if !is_false(&v) => {
                return Err(SessionError::Unsupported(
                    "replication connections are not supported through Meridian".into(),
                ))
            }
            _ if k.starts_with("_pq_.") => unsupported.push(k),
            _ => rest.push((k, v)),
        }
    }
    let user = user.ok_or_else(|| SessionError::Auth {
        code: "28000",
        message: "no PostgreSQL user name specified in startup packet".into(),
    })?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());

    let mut out = BytesMut::with_capacity(256);
    if protocol.1 > 0 || !unsupported.is_empty() {
        let names: Vec<&str> = unsupported.iter().map(String::as_str).collect();
        messages::negotiate_protocol_version(&mut out, 0, &names);
        write(stream, &out).await?;
        out.clear();
    }

    let mut meridian = Vec::new();
    let mut params = Vec::with_capacity(rest.len());
    for (k, v) in rest {
        if k.starts_with("meridian.") {
            meridian.push((k, v));
        } else if k == "options" {
            let (kept, ours) = split_options(&v);
            meridian.extend(ours);
            if !kept.is_empty() {
                params.push((k, kept));
            }
        } else {
            params.push((k, v));
        }
    }

    limited_authenticate(stream, buf, state, &user, peer).await?;
    info!(%user, %database, "client authenticated");
    Ok(Outcome::Session(Authenticated {
        user,
        database,
        params,
        meridian,
    }))
}

/// Authentication behind the failed-attempt limit: an address with `proxy.auth_failure_limit`
/// failures in its window is refused (28000) before any password check; each failure is logged
/// with the user name and address (never what the client sent).
async fn limited_authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    state: &ProxyState,
    user: &str,
    peer: std::net::IpAddr,
) -> Result<(), SessionError> {
    let (limit, window) = {
        let cfg = state.live.load();
        let p = &cfg.proxy;
        (
            p.auth_failure_limit,
            std::time::Duration::from_secs(p.auth_failure_window_s),
        )
    };
    if state.auth_failures.blocked(peer, limit, window) {
        debug!(%user, client = %peer, "authentication refused: too many failed attempts");
        return Err(SessionError::Auth {
            code: "28000",
            message: "too many failed authentication attempts from this address; try again later"
                .into(),
        });
    }
    let result = authenticate(stream, buf, state, user).await;
    if let Err(SessionError::Auth { code: "28P01", .. }) = &result {
        let failures = state.auth_failures.record(peer, limit, window);
        tracing::warn!(%user, client = %peer, failures, "authentication failed");
        if limit > 0 && failures == limit {
            tracing::warn!(
                client = %peer,
                window_s = window.as_secs(),
                "too many failed authentications: refusing this address for the rest of its window"
            );
        }
    }
    result
}

async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    state: &ProxyState,
    user: &str,
) -> Result<(), SessionError> {
    let failed = || SessionError::Auth {
        code: "28P01",
        message: format!("password authentication failed for user \"{user}\""),
    };
    let known = state.users.get(user);
    if known.is_none() {
        info!(%user, "authentication attempt for unknown user");
    }
    match known.as_ref().map(|u| u.method) {
        Some(AuthMethod::Md5) => {
            let salt: [u8; 4] = rand::random();
            let mut out = BytesMut::new();
            messages::auth_md5(&mut out, salt);
            write(stream, &out).await?;
            let reply = read_password(stream, buf).await?;
            let offered = parse::password_message(frame::body(&reply))?;
            let ok = known.as_ref().is_some_and(|u| {
                let expected = auth::md5_password_hash(user, &u.password, salt);
                auth::ct_eq(expected.as_bytes(), offered)
            });
            if ok {
                Ok(())
            } else {
                Err(failed())
            }
        }
        // Unknown users run a mock SCRAM exchange (a per-name salt, as a real user would have)
        // and fail at the proof, exactly like a wrong password.
        Some(AuthMethod::ScramSha256) | None => {
            let mut server = match &known {
                Some(u) => ScramServer::new(&u.scram),
                None => ScramServer::mock(user),
            };
            // On TLS, SCRAM-SHA-256-PLUS binds the exchange to this connection's certificate,
            // so a man in the middle that terminates TLS cannot relay it.
            let binding = match &state.client_tls {
                Some(tls) if stream.is_tls() => Some(tls.end_point().to_vec()),
                _ => None,
            };
            let offered: &[&str] = if binding.is_some() {
                &[auth::SCRAM_SHA_256_PLUS, auth::SCRAM_SHA_256]
            } else {
                &[auth::SCRAM_SHA_256]
            };
            let mut out = BytesMut::new();
            messages::auth_sasl(&mut out, offered);
            write(stream, &out).await?;
            let first = read_password(stream, buf).await?;
            let (mechanism, data) = parse::sasl_initial_response(frame::body(&first))?;
            if !offered.contains(&mechanism) {
                return Err(SessionError::Auth {
                    code: "28000",
                    message: format!("unsupported SASL mechanism {mechanism:?}"),
                });
            }
            let plus = mechanism == auth::SCRAM_SHA_256_PLUS;
            server = server.with_channel_binding(binding, plus);
            let scram_failed = |e: meridian_wire::WireError| match e {
                meridian_wire::WireError::ChannelBinding(_) => SessionError::Wire(e),
                _ => failed(),
            };
            let server_first = server
                .client_first(data.unwrap_or_default())
                .map_err(scram_failed)?;
            out.clear();
            messages::auth_sasl_continue(&mut out, &server_first);
            write(stream, &out).await?;
            let last = read_password(stream, buf).await?;
            let server_final = server
                .client_final(frame::body(&last))
                .map_err(scram_failed)?;
            if known.is_none() {
                return Err(failed());
            }
            out.clear();
            messages::auth_sasl_final(&mut out, &server_final);
            write(stream, &out).await?;
            Ok(())
        }
    }
}

/// Reads one PasswordMessage-family frame ('p').
async fn read_password(stream: &mut Stream, buf: &mut BytesMut) -> Result<Bytes, SessionError> {
    loop {
        if let Some((tag, frame)) = frame::split_frame(buf, MAX_STARTUP_BYTES)? {
            if tag != frontend::PASSWORD {
                return Err(SessionError::Protocol(format!(
                    "expected password response, got message type 0x{tag:02x}"
                )));
            }
            return Ok(frame);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> Result<(), SessionError> {
    match stream.read_buf(buf).await {
        Ok(0) => Err(SessionError::ClientIo(
            std::io::ErrorKind::UnexpectedEof.into(),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(SessionError::ClientIo(e)),
    }
}

async fn write(stream: &mut Stream, bytes: &[u8]) -> Result<(), SessionError> {
    stream
        .write_all(bytes)
        .await
        .map_err(SessionError::ClientIo)
}

/// Postgres's spellings of boolean false (`replication=no` is a normal connection).
fn is_false(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "off" | "no" | "0" | "f" | "n"
    )
}

/// Splits a startup `options` string into the part for the server and the `meridian.*`
/// settings it carries (`-c meridian.x=y`, `-cmeridian.x=y` or `--meridian.x=y`). Words are
/// separated by spaces; a backslash escapes the next character, as libpq does.
pub fn split_options(options: &str) -> (String, Vec<(String, String)>) {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    in_word = true;
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut kept: Vec<String> = Vec::new();
    let mut ours = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let (setting, used) = if w == "-c" {
            (words.get(i + 1).map(String::as_str), 2)
        } else if let Some(rest) = w.strip_prefix("-c") {
            (Some(rest), 1)
        } else if let Some(rest) = w.strip_prefix("--") {
            (Some(rest), 1)
        } else {
            (None, 1)
        };
        match setting.and_then(|s| s.split_once('=')) {
            Some((k, v)) if k.starts_with("meridian.") => {
                ours.push((k.to_string(), v.to_string()));
            }
            _ => {
                for w in words.iter().skip(i).take(used) {
                    kept.push(w.replace('\\', "\\\\").replace(' ', "\\ "));
                }
            }
        }
        i += used;
    }
    (kept.join(" "), ours)
}

#[cfg(test)]
mod tests {
    use super::split_options;

    #[test]
    fn meridian_settings_are_taken_out_of_options() {
        let (kept, ours) = split_options(
            "-c meridian.min_lsn=0/3000148 -c statement_timeout=5s --meridian.consistency=strong",
        );
        assert_eq!(kept, "-c statement_timeout=5s");
        assert_eq!(
            ours,
            vec![
                ("meridian.min_lsn".to_string(), "0/3000148".to_string()),
                ("meridian.consistency".to_string(), "strong".to_string())
            ]
        );
        let (kept, ours) = split_options("-csearch_path=a\\ b");
        assert_eq!(kept, "-csearch_path=a\\ b");
        assert!(ours.is_empty());
    }
}
