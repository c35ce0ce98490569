#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use super::*;
use crate::frame::split_frame;
use crate::parse::{self, AuthRequest, ErrorFields};
use crate::tag;

const MAX: usize = 1 << 20;

/// Encodes with `f`, then checks that exactly one well-formed frame with
/// `expected_tag` came out; returns its body.
fn one_frame(expected_tag: u8, f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f(&mut buf);
    let (t, frame) = split_frame(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(t, expected_tag);
    assert!(buf.is_empty(), "exactly one frame");
    crate::body(&frame).to_vec()
}

#[test]
fn error_response_roundtrip() {
    let body = one_frame(tag::backend::ERROR_RESPONSE, |b| {
        error_response(
            b,
            "FATAL",
            "28P01",
            "password authentication failed for user \"x\"",
        )
    });
    let f = ErrorFields::parse(&body).unwrap();
    assert_eq!(f.severity(), Some("FATAL"));
    assert_eq!(f.severity_nonlocalized(), Some("FATAL"));
    assert_eq!(f.code(), Some("28P01"));
    assert_eq!(
        f.message(),
        Some("password authentication failed for user \"x\"")
    );
    assert_eq!(f.detail(), None);
    let codes: Vec<u8> = f.iter().map(|(c, _)| c).collect();
    assert_eq!(codes, b"SVCM");
}

#[test]
fn error_response_detail_and_notice() {
    let body = one_frame(tag::backend::ERROR_RESPONSE, |b| {
        error_response_detail(
            b,
            "ERROR",
            "0A000",
            "nope",
            Some("because"),
            Some("try again"),
        )
    });
    let f = parse::error_fields(&body).unwrap();
    assert_eq!(f.detail(), Some("because"));
    assert_eq!(f.hint(), Some("try again"));
    let body = one_frame(tag::backend::NOTICE_RESPONSE, |b| {
        notice_response(b, "WARNING", "01000", "careful\0ignored")
    });
    let f = ErrorFields::parse(&body).unwrap();
    assert_eq!(f.message(), Some("careful"), "embedded NUL truncates");
    assert_eq!(f.severity(), Some("WARNING"));
}

#[test]
fn wire_error_to_error_response() {
    let body = one_frame(b'E', |b| {
        crate::WireError::MissingUser.write_error_response(b)
    });
    let f = ErrorFields::parse(&body).unwrap();
    assert_eq!(f.code(), Some("28000"));
    assert_eq!(f.severity(), Some("FATAL"));
}

#[test]
fn fixed_messages_exact_bytes() {
    let mut b = BytesMut::new();
    ready_for_query(&mut b, b'I');
    auth_ok(&mut b);
    auth_cleartext(&mut b);
    auth_md5(&mut b, [1, 2, 3, 4]);
    backend_key_data(&mut b, 7, -1);
    empty_query_response(&mut b);
    terminate(&mut b);
    sync(&mut b);
    flush(&mut b);
    let expected: &[u8] = b"Z\0\0\0\x05I\
        R\0\0\0\x08\0\0\0\0\
        R\0\0\0\x08\0\0\0\x03\
        R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04\
        K\0\0\0\x0c\0\0\0\x07\xff\xff\xff\xff\
        I\0\0\0\x04\
        X\0\0\0\x04\
        S\0\0\0\x04\
        H\0\0\0\x04";
    assert_eq!(&b[..], expected);
}

#[test]
fn auth_messages_parse_back() {
    let body = one_frame(b'R', |b| {
        auth_sasl(b, &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"])
    });
    assert_eq!(
        parse::auth_request(&body).unwrap(),
        AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
        }
    );
    let body = one_frame(b'R', |b| auth_sasl_continue(b, b"r=abc,s=xyz,i=1"));
    assert_eq!(
        parse::auth_request(&body).unwrap(),
        AuthRequest::SaslContinue(b"r=abc,s=xyz,i=1")
    );
    let body = one_frame(b'R', |b| auth_sasl_final(b, b"v=sig"));
    assert_eq!(
        parse::auth_request(&body).unwrap(),
        AuthRequest::SaslFinal(b"v=sig")
    );
    let body = one_frame(b'R', |b| auth_md5(b, [9, 8, 7, 6]));
    assert_eq!(
        parse::auth_request(&body).unwrap(),
        AuthRequest::Md5 { salt: [9, 8, 7, 6] }
    );
    let body = one_frame(b'R', auth_ok);
    assert_eq!(parse::auth_request(&body).unwrap(), AuthRequest::Ok);
    let body = one_frame(b'R', auth_cleartext);
    assert_eq!(parse::auth_request(&body).unwrap(), AuthRequest::Cleartext);
}

#[test]
fn frontend_messages_parse_back() {
    let body = one_frame(b'Q', |b| query(b, "select 1"));
    assert_eq!(parse::query_sql(&body).unwrap(), "select 1");
    let body = one_frame(b'p', |b| password_message(b, b"md5abc"));
    assert_eq!(parse::password_message(&body).unwrap(), b"md5abc");
    let body = one_frame(b'p', |b| {
        sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=x")
    });
    assert_eq!(
        parse::sasl_initial_response(&body).unwrap(),
        ("SCRAM-SHA-256", Some(&b"n,,n=,r=x"[..]))
    );
    let body = one_frame(b'p', |b| sasl_response(b, b"c=biws"));
    assert_eq!(parse::sasl_response(&body), b"c=biws");
}

#[test]
fn status_key_data_command_complete() {
    let body = one_frame(b'S', |b| parameter_status(b, "server_version", "17.0"));
    assert_eq!(
        parse::parameter_status(&body).unwrap(),
        ("server_version", "17.0")
    );
    let body = one_frame(b'K', |b| backend_key_data(b, 1234, 5678));
    assert_eq!(parse::backend_key_data(&body).unwrap(), (1234, 5678));
    let body = one_frame(b'C', |b| command_complete(b, "SHOW"));
    assert_eq!(parse::command_complete(&body).unwrap(), "SHOW");
    let body = one_frame(b'Z', |b| ready_for_query(b, b'T'));
    assert_eq!(parse::ready_status(&body).unwrap(), b'T');
}

#[test]
fn row_description_and_data_row() {
    let body = one_frame(b'T', |b| row_description_text(b, &["a", "bc"]));
    let mut expected = vec![0, 2];
    for name in ["a", "bc"] {
        expected.extend_from_slice(name.as_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
    }
    assert_eq!(body, expected);
    let body = one_frame(b'D', |b| data_row_text(b, &[Some("xy"), None, Some("")]));
    assert_eq!(
        body,
        [0, 3, 0, 0, 0, 2, b'x', b'y', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
    );
}

#[test]
fn negotiate_protocol_version_layout() {
    let body = one_frame(b'v', |b| negotiate_protocol_version(b, 0, &["_pq_.a"]));
    assert_eq!(body, b"\0\0\0\0\0\0\0\x01_pq_.a\0");
}
