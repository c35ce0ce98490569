#![allow(clippy::unwrap_used)]

use super::*;

const MAX: usize = crate::DEFAULT_MAX_STARTUP_BYTES;

fn raw_packet(code: i32, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(8 + payload.len() as i32);
    b.put_i32(code);
    b.put_slice(payload);
    b
}

fn decode(mut b: BytesMut, max: usize) -> Result<Option<StartupPacket>, WireError> {
    decode_startup(&mut b, max)
}

#[test]
fn valid_startup_roundtrip() {
    let mut buf = BytesMut::new();
    encode_startup(
        &mut buf,
        &[
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "psql"),
        ],
    );
    buf.put_slice(b"Qtrailing");
    let pkt = decode_startup(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(&buf[..], b"Qtrailing", "only the packet is consumed");
    assert_eq!(pkt.user(), Some("alice"));
    assert_eq!(pkt.database(), Some("app"));
    assert_eq!(pkt.param("application_name"), Some("psql"));
    assert_eq!(pkt.param("nope"), None);
    assert!(!pkt.needs_negotiation());
    match pkt {
        StartupPacket::Startup { protocol, params } => {
            assert_eq!(protocol, (3, 0));
            assert_eq!(params.len(), 3);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn database_defaults_to_user() {
    let mut buf = BytesMut::new();
    encode_startup(&mut buf, &[("user", "bob")]);
    let pkt = decode_startup(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(pkt.database(), Some("bob"));
}

#[test]
fn incomplete_packet_needs_more_bytes() {
    let mut full = BytesMut::new();
    encode_startup(&mut full, &[("user", "alice")]);
    for cut in 0..full.len() {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(decode_startup(&mut part, MAX).unwrap(), None, "cut {cut}");
        assert_eq!(part.len(), cut, "nothing consumed");
    }
}

#[test]
fn ssl_gssenc_cancel() {
    let mut buf = BytesMut::new();
    encode_ssl_request(&mut buf);
    encode_gssenc_request(&mut buf);
    encode_cancel(&mut buf, 4242, -7);
    assert_eq!(
        decode_startup(&mut buf, MAX).unwrap(),
        Some(StartupPacket::SslRequest)
    );
    assert_eq!(
        decode_startup(&mut buf, MAX).unwrap(),
        Some(StartupPacket::GssEncRequest)
    );
    let cancel = decode_startup(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(
        cancel,
        StartupPacket::Cancel {
            pid: 4242,
            secret: -7
        }
    );
    assert_eq!(cancel.param("user"), None);
    assert!(buf.is_empty());
}

#[test]
fn special_requests_with_wrong_length_are_rejected() {
    let err = decode(raw_packet(SSL_REQUEST_CODE, &[0]), MAX).unwrap_err();
    assert_eq!(err.sqlstate(), "08P01");
    let err = decode(raw_packet(CANCEL_REQUEST_CODE, &[0; 4]), MAX).unwrap_err();
    assert_eq!(err.sqlstate(), "08P01");
}

#[test]
fn protocol_v2_is_unsupported() {
    let err = decode(raw_packet(0x0002_0000, b"user\0x\0\0"), MAX).unwrap_err();
    assert_eq!(err, WireError::UnsupportedProtocol { major: 2, minor: 0 });
    assert_eq!(err.sqlstate(), "0A000");
    let err = decode(raw_packet(1234 << 16 | 9999, b""), MAX).unwrap_err();
    assert_eq!(err.sqlstate(), "0A000");
}

#[test]
fn newer_minor_and_protocol_options_need_negotiation() {
    let pkt = decode(
        raw_packet(0x0003_0002, b"user\0u\0_pq_.compression\0on\0_pq_.x\0y\0\0"),
        MAX,
    )
    .unwrap()
    .unwrap();
    assert_eq!(pkt.requested_minor(), Some(2));
    assert_eq!(
        pkt.protocol_options().collect::<Vec<_>>(),
        ["_pq_.compression", "_pq_.x"]
    );
    assert!(pkt.needs_negotiation());
    let mut out = BytesMut::new();
    assert!(pkt.write_negotiation(&mut out));
    let mut expected = BytesMut::new();
    crate::messages::negotiate_protocol_version(&mut expected, 0, &["_pq_.compression", "_pq_.x"]);
    assert_eq!(out, expected);
    assert_eq!(
        &out[..],
        b"v\0\0\0\x24\0\0\0\0\0\0\0\x02_pq_.compression\0_pq_.x\0"
    );
}

#[test]
fn missing_user() {
    let err = decode(raw_packet(PROTOCOL_3_0, b"database\0db\0\0"), MAX).unwrap_err();
    assert_eq!(err, WireError::MissingUser);
    assert_eq!(err.sqlstate(), "28000");
    let err = decode(raw_packet(PROTOCOL_3_0, b"user\0\0\0"), MAX).unwrap_err();
    assert_eq!(err.sqlstate(), "28000");
}

#[test]
fn missing_terminator() {
    for payload in [&b"user\0alice\0"[..], b"user\0alice", b"user", b""] {
        let err = decode(raw_packet(PROTOCOL_3_0, payload), MAX).unwrap_err();
        assert_eq!(err.sqlstate(), "08P01", "{payload:?}");
    }
    // Garbage after the terminator.
    let err = decode(raw_packet(PROTOCOL_3_0, b"user\0a\0\0x"), MAX).unwrap_err();
    assert_eq!(err.sqlstate(), "08P01");
}

#[test]
fn too_many_params() {
    let mut payload = b"user\0u\0".to_vec();
    for i in 0..10_000 {
        payload.extend_from_slice(format!("k{i}\0v\0").as_bytes());
    }
    payload.push(0);
    let err = decode(raw_packet(PROTOCOL_3_0, &payload), usize::MAX).unwrap_err();
    assert_eq!(
        err,
        WireError::TooManyParams {
            limit: MAX_STARTUP_PARAMS
        }
    );
    assert_eq!(err.sqlstate(), "08P01");
    // With the default size cap the packet is rejected on length alone.
    let err = decode(raw_packet(PROTOCOL_3_0, &payload), MAX).unwrap_err();
    assert!(matches!(err, WireError::MessageTooLong { .. }));
}

#[test]
fn exactly_max_params_is_fine() {
    let mut payload = b"user\0u\0".to_vec();
    for i in 1..MAX_STARTUP_PARAMS {
        payload.extend_from_slice(format!("k{i}\0v\0").as_bytes());
    }
    payload.push(0);
    assert!(decode(raw_packet(PROTOCOL_3_0, &payload), MAX)
        .unwrap()
        .is_some());
}

#[test]
fn invalid_utf8() {
    let err = decode(raw_packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0"), MAX).unwrap_err();
    assert!(matches!(err, WireError::InvalidUtf8(_)));
}

#[test]
fn bad_lengths() {
    for len in [0i32, 4, 7] {
        let mut b = BytesMut::new();
        b.put_i32(len);
        b.put_i32(PROTOCOL_3_0);
        assert!(matches!(
            decode(b, MAX),
            Err(WireError::InvalidLength { .. })
        ));
    }
    let mut b = BytesMut::new();
    b.put_i32(-1);
    assert!(matches!(
        decode(b, MAX),
        Err(WireError::MessageTooLong { .. })
    ));
}

#[test]
fn embedded_nul_cannot_corrupt_encoding() {
    let mut buf = BytesMut::new();
    encode_startup(&mut buf, &[("user", "ali\0ce"), ("database", "db")]);
    let pkt = decode_startup(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(pkt.user(), Some("ali"));
    assert_eq!(pkt.database(), Some("db"));
}
