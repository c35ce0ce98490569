#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn cstr_helpers() {
    assert_eq!(read_cstr(b"abc\0rest").unwrap(), ("abc", &b"rest"[..]));
    assert!(read_cstr(b"abc").is_err());
    assert!(matches!(
        read_cstr(b"\xff\0"),
        Err(WireError::InvalidUtf8(_))
    ));
    assert_eq!(
        read_cstr_bytes(b"\xff\0x").unwrap(),
        (&b"\xff"[..], &b"x"[..])
    );
}

#[test]
fn query() {
    assert_eq!(query_sql(b"select 1\0").unwrap(), "select 1");
    assert!(query_sql(b"select 1").is_err());
    assert!(query_sql(b"select 1\0extra").is_err());
}

#[test]
fn parse_message() {
    let mut body = b"stmt1\0select $1, $2\0\0\x02".to_vec();
    body.extend_from_slice(&23u32.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    let p = parse_parse(&body).unwrap();
    assert_eq!(p.name, "stmt1");
    assert_eq!(p.sql, "select $1, $2");
    assert_eq!(p.param_types.len(), 2);
    assert_eq!(p.param_types.iter().collect::<Vec<_>>(), [23, 0]);
    assert_eq!(p.param_types.get(0), Some(23));
    assert_eq!(p.param_types.get(2), None);
    assert_eq!(p.param_types.get(usize::MAX), None);
    // Count says 2 but only one type present.
    assert!(parse_parse(&body[..body.len() - 4]).is_err());
    // Negative count.
    assert!(parse_parse(b"\0q\0\xff\xff").is_err());
    let empty = parse_parse(b"\0select 1\0\0\0").unwrap();
    assert!(empty.param_types.is_empty());
}

#[test]
fn bind_describe_close_execute() {
    assert_eq!(bind_names(b"p1\0s1\0\0\0\0\0\0\0").unwrap(), ("p1", "s1"));
    assert!(bind_names(b"p1\0s1").is_err());
    assert_eq!(describe_target(b"Sname\0").unwrap(), (b'S', "name"));
    assert_eq!(describe_target(b"P\0").unwrap(), (b'P', ""));
    assert!(describe_target(b"Xname\0").is_err());
    assert!(describe_target(b"").is_err());
    assert_eq!(close_target(b"Pportal\0").unwrap(), (b'P', "portal"));
    assert_eq!(execute_portal(b"\0\0\0\0\x05").unwrap(), ("", 5));
    assert!(execute_portal(b"\0\0\0").is_err());
}

#[test]
fn backend_messages() {
    assert!(ready_status(b"X").is_err());
    assert!(ready_status(b"II").is_err());
    assert!(parameter_status(b"a\0").is_err());
    assert!(backend_key_data(&[0; 7]).is_err());
    assert!(backend_key_data(&[0; 9]).is_err());
    assert!(ErrorFields::parse(b"").is_err());
    assert!(ErrorFields::parse(b"Mmissing-terminators").is_err());
    assert!(ErrorFields::parse(b"Mx\0\0junk").is_err());
    let f = ErrorFields::parse(b"\0").unwrap();
    assert_eq!(f.code(), None);
}

#[test]
fn auth_requests() {
    assert_eq!(
        auth_request(&7i32.to_be_bytes()).unwrap(),
        AuthRequest::Other(7)
    );
    assert!(auth_request(b"\0\0\0\x05\x01").is_err(), "short md5 salt");
    assert!(
        auth_request(b"\0\0\0\x0aSCRAM-SHA-256\0").is_err(),
        "no list end"
    );
    assert!(auth_request(b"\0\0\0\0x").is_err(), "trailing bytes");
    assert!(auth_request(b"\0\0").is_err());
}

#[test]
fn client_auth_messages() {
    assert!(password_message(b"pw").is_err());
    assert!(password_message(b"pw\0x\0").is_err());
    assert_eq!(
        sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xff").unwrap(),
        ("SCRAM-SHA-256", None)
    );
    assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x05abc").is_err());
    assert!(sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xfe").is_err());
}
