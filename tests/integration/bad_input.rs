//! Bad input from clients: every case ends in a Postgres ErrorResponse with a fitting SQLSTATE
//! (or a clean close), and other sessions never notice.

use std::net::SocketAddr;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use meridian_wire::tag::backend;
use meridian_wire::{frame, messages, parse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{raw_login, read_until_ready, Env};

/// Reads frames until the server closes (or 10 s pass) and returns (tag, sqlstate) of errors and
/// the tags seen.
async fn read_until_close(stream: &mut TcpStream) -> (Vec<u8>, Vec<String>) {
    let mut buf = BytesMut::new();
    let mut tags = Vec::new();
    let mut codes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(Some((tag, f))) = frame::split_frame(&mut buf, 1 << 30) {
            tags.push(tag);
            if tag == backend::ERROR_RESPONSE {
                let fields = parse::ErrorFields::parse(frame::body(&f)).expect("error fields");
                codes.push(fields.code().unwrap_or_default().to_string());
            }
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (tags, codes),
            Ok(Ok(_)) => {}
            Err(_) => panic!("server neither answered nor closed; tags so far {tags:?}"),
        }
    }
}

async fn send_startup_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_until_close(&mut s).await.1
}

fn startup_packet(protocol: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u32(protocol);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(&body);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_get_protocol_errors() {
    let env = Env::start_with(0, |c| c.proxy.max_message_bytes = 1024 * 1024).await;
    let keeper = env.connect().await;
    let addr = env.addr();

    // Length below the minimum.
    assert_eq!(
        send_startup_bytes(addr, &[0, 0, 0, 3, 0, 0, 0, 0]).await,
        ["08P01"]
    );
    // Unsupported protocol version 2.0.
    let v2 = startup_packet(2 << 16, &[("user", "app")]);
    assert_eq!(send_startup_bytes(addr, &v2).await, ["0A000"]);
    // No user.
    let nouser = startup_packet(3 << 16, &[("database", "app")]);
    assert_eq!(send_startup_bytes(addr, &nouser).await, ["28000"]);
    // Absurd length.
    assert_eq!(
        send_startup_bytes(addr, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await,
        ["08P01"]
    );
    // Ten thousand parameters.
    let many: Vec<(String, String)> = (0..10_000).map(|i| (format!("k{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let codes = send_startup_bytes(addr, &startup_packet(3 << 16, &refs)).await;
    assert_eq!(codes, ["08P01"]);
    // Parameters without terminators.
    let mut broken = startup_packet(3 << 16, &[("user", "app")]);
    broken.truncate(broken.len() - 2);
    let len = broken.len() as u32;
    broken[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(send_startup_bytes(addr, &broken).await, ["08P01"]);
    // Random bytes: an error or a clean close, never a hang.
    for seed in 0u32..20 {
        let junk: Vec<u8> = (0..64u32)
            .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 7) as u8)
            .collect();
        let codes = send_startup_bytes(addr, &junk).await;
        assert!(codes.len() <= 1, "{codes:?}");
    }
    // SSL and GSS requests are declined with 'N' and the client may continue in plaintext.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("ssl request");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.expect("answer");
    assert_eq!(&one, b"N");

    let row = keeper
        .query_one("SELECT 1", &[])
        .await
        .expect("keeper unaffected");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_startup_gets_a_protocol_error_and_a_close() {
    let env = Env::start_with(0, |c| c.proxy.max_message_bytes = 1024 * 1024).await;
    let keeper = env.connect().await;
    let addr = env.addr();

    // A message length below 4.
    let (mut s, _) = raw_login(addr).await;
    s.write_all(&[b'Q', 0, 0, 0, 2]).await.expect("write");
    assert_eq!(read_until_close(&mut s).await.1, ["08P01"]);

    // A message above max_message_bytes.
    let (mut s, _) = raw_login(addr).await;
    s.write_all(&[b'Q', 0, 0x20, 0, 0]).await.expect("write");
    assert_eq!(read_until_close(&mut s).await.1, ["08P01"]);

    // An unknown message type.
    let (mut s, _) = raw_login(addr).await;
    s.write_all(&[b'z', 0, 0, 0, 4]).await.expect("write");
    assert_eq!(read_until_close(&mut s).await.1, ["08P01"]);

    // Invalid UTF-8 in a Query is the server's to judge: it answers 22021 and the session lives.
    let (mut s, mut buf) = raw_login(addr).await;
    let mut q = BytesMut::new();
    q.put_u8(b'Q');
    let sql = b"SELECT '\xff\xfe'\0";
    q.put_u32(4 + sql.len() as u32);
    q.put_slice(sql);
    s.write_all(&q).await.expect("write");
    assert_eq!(read_until_ready(&mut s, &mut buf).await, ["22021"]);
    let mut q = BytesMut::new();
    messages::query(&mut q, "SELECT 1");
    s.write_all(&q).await.expect("write");
    assert!(read_until_ready(&mut s, &mut buf).await.is_empty());

    // Bind of a statement that was never parsed, and Execute of an unknown portal: server errors,
    // then the session continues after Sync.
    let mut m = BytesMut::new();
    m.put_u8(b'B');
    let body: &[u8] = b"\0nostmt\0\0\0\0\0\0\0";
    m.put_u32(4 + body.len() as u32);
    m.put_slice(body);
    messages::sync(&mut m);
    m.put_u8(b'E');
    m.put_u32(4 + 6 + 4);
    m.put_slice(b"nopor\0");
    m.put_u32(0);
    messages::sync(&mut m);
    s.write_all(&m).await.expect("write");
    assert_eq!(read_until_ready(&mut s, &mut buf).await, ["26000"]);
    assert_eq!(read_until_ready(&mut s, &mut buf).await, ["34000"]);

    let row = keeper
        .query_one("SELECT 1", &[])
        .await
        .expect("keeper unaffected");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_after_the_startup_timeout() {
    let env = Env::start_with(0, |c| c.proxy.startup_timeout_ms = 300).await;
    let mut s = TcpStream::connect(env.addr()).await.expect("connect");
    // Half a startup packet, then silence.
    s.write_all(&[0, 0, 0, 40, 0, 3]).await.expect("write");
    let (_, codes) = read_until_close(&mut s).await;
    assert_eq!(codes, ["08006"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_of_zero_three_and_two_to_the_31st_and_truncated_frames() {
    let env = Env::start_with(0, |c| c.proxy.max_message_bytes = 1024 * 1024).await;
    let keeper = env.connect().await;
    let addr = env.addr();

    // Startup packets announcing 0 and 3 bytes.
    assert_eq!(send_startup_bytes(addr, &[0, 0, 0, 0]).await, ["08P01"]);
    assert_eq!(send_startup_bytes(addr, &[0, 0, 0, 3]).await, ["08P01"]);
    // A truncated startup packet, then the client closes: a clean close.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 40, 0, 3, 0]).await.expect("write");
    s.shutdown().await.expect("shutdown");
    assert!(read_until_close(&mut s).await.1.is_empty());

    // After startup: message lengths 0, 3 and 2^31-1.
    for len in [0u32, 3, 0x7fff_ffff] {
        let (mut s, _) = raw_login(addr).await;
        let mut m = vec![b'Q'];
        m.extend_from_slice(&len.to_be_bytes());
        s.write_all(&m).await.expect("write");
        assert_eq!(read_until_close(&mut s).await.1, ["08P01"], "length {len}");
    }
    // A truncated frame (100 bytes announced, 10 sent), then the client closes.
    let (mut s, _) = raw_login(addr).await;
    let mut m = vec![b'Q', 0, 0, 0, 100];
    m.extend_from_slice(b"SELECT 1;-");
    s.write_all(&m).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let (_, codes) = read_until_close(&mut s).await;
    assert!(codes.is_empty(), "{codes:?}");

    let row = keeper
        .query_one("SELECT 1", &[])
        .await
        .expect("keeper unaffected");
    assert_eq!(row.get::<_, i32>(0), 1);
}
