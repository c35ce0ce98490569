#![allow(clippy::unwrap_used)]

use super::*;
use crate::WireError;

/// Runs a full exchange between our client and server.
fn exchange(secret: &ScramSecret, password: &str) -> Result<(), WireError> {
    let mut server = ScramServer::new(secret);
    run(&mut server, password)
}

fn run(server: &mut ScramServer, password: &str) -> Result<(), WireError> {
    let mut client = ScramClient::new(password);
    let server_first = server.client_first(&client.initial())?;
    let client_final = client.update(&server_first)?;
    let server_final = server.client_final(&client_final)?;
    assert!(server.is_authenticated());
    client.finish(&server_final)
}

#[test]
fn scram_exchange_right_password() {
    let secret = ScramSecret::from_password("s3cret", b"0123456789abcdef", 4096).unwrap();
    exchange(&secret, "s3cret").unwrap();
}

#[test]
fn scram_exchange_wrong_password() {
    let secret = ScramSecret::from_password("s3cret", b"0123456789abcdef", 4096).unwrap();
    let mut server = ScramServer::new(&secret);
    let err = run(&mut server, "wrong").unwrap_err();
    assert_eq!(err, WireError::AuthFailed);
    assert_eq!(err.sqlstate(), "28P01");
    assert!(!server.is_authenticated());
    // The exchange is over: further messages are protocol violations.
    assert_eq!(
        server.client_final(b"c=biws").unwrap_err().sqlstate(),
        "08P01"
    );
}

#[test]
fn scram_mock_always_fails() {
    let mut server = ScramServer::mock("nobody");
    assert_eq!(
        run(&mut server, "anything").unwrap_err(),
        WireError::AuthFailed
    );
    // Stable salt per user, different across users.
    let salt_of = |user: &str| {
        let mut s = ScramServer::mock(user);
        let first = s.client_first(b"n,,n=,r=abc").unwrap();
        String::from_utf8(first)
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(salt_of("a"), salt_of("a"));
    assert_ne!(salt_of("a"), salt_of("b"));
}

/// Recorded psql exchange (from postgres-protocol's test suite), replayed
/// against our server with the same server nonce.
#[test]
fn scram_server_matches_recorded_psql_exchange() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode("fs3IXBy7U7+IvVjZ").unwrap();
    let secret = ScramSecret::from_password("foobar", &salt, 4096).unwrap();
    let mut server = ScramServer::new(&secret);
    let first = server
        .client_first_with_nonce(
            b"n,,n=,r=9IZ2O01zb9IgiIZ1WJ/zgpJB",
            "jx/oIRLs02gGSHcw1KEty3eY",
        )
        .unwrap();
    assert_eq!(
        first,
        b"r=9IZ2O01zb9IgiIZ1WJ/zgpJBjx/oIRLs02gGSHcw1KEty3eY,s=fs3IXBy7U7+IvVjZ,i=4096"
    );
    let fin = server
        .client_final(
            b"c=biws,r=9IZ2O01zb9IgiIZ1WJ/zgpJBjx/oIRLs02gGSHcw1KEty3eY,\
              p=AmNKosjJzS31NTlQYNs5BTeQjdHdk7lOflDo5re2an8=",
        )
        .unwrap();
    assert_eq!(fin, b"v=U+ppxD5XUKtradnv8e2MkeupiA8FU87Sg8CXzXHDAzw=");
}

/// Verifier computed independently with Python's hashlib/hmac.
const PY_VERIFIER: &str = "SCRAM-SHA-256$4096:bWVyaWRpYW4tc2FsdC0xNg==$\
    v3Q9Yp8furJrOm+4p0PevFi9UaFt4+dDt3CGlZHEuxQ=:VJN3cworj20ItxlHubGzdy1Sk+8oIkLhUqAaeD4giOo=";

#[test]
fn postgres_format_verifier() {
    let secret: ScramSecret = PY_VERIFIER.parse().unwrap();
    assert_eq!(secret.iterations, 4096);
    assert_eq!(secret.salt, b"meridian-salt-16");
    assert_eq!(
        secret,
        ScramSecret::from_password("verifier-pw", b"meridian-salt-16", 4096).unwrap()
    );
    assert_eq!(secret.to_string(), PY_VERIFIER);
    exchange(&secret, "verifier-pw").unwrap();
    assert_eq!(
        exchange(&secret, "verifier-pw!"),
        Err(WireError::AuthFailed)
    );
    assert!(!format!("{secret:?}").contains("v3Q9"), "keys are redacted");
}

#[test]
fn generated_secret_uses_saslprep_like_postgres() {
    // U+00A0 (no-break space) is mapped to a plain space by SASLprep.
    let secret = ScramSecret::generate("pass\u{a0}word").unwrap();
    exchange(&secret, "pass word").unwrap();
    exchange(&secret, "pass\u{a0}word").unwrap();
    assert_eq!(secret.iterations, ScramSecret::DEFAULT_ITERATIONS);
}

#[test]
fn bad_verifiers() {
    for v in [
        "",
        "md5abc",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$0:c2FsdA==$v3Q9Yp8furJrOm+4p0PevFi9UaFt4+dDt3CGlZHEuxQ=:VJN3cworj20ItxlHubGzdy1Sk+8oIkLhUqAaeD4giOo=",
        "SCRAM-SHA-256$+4096:c2FsdA==$v3Q9Yp8furJrOm+4p0PevFi9UaFt4+dDt3CGlZHEuxQ=:VJN3cworj20ItxlHubGzdy1Sk+8oIkLhUqAaeD4giOo=",
        "SCRAM-SHA-256$4096:!!$v3Q9Yp8furJrOm+4p0PevFi9UaFt4+dDt3CGlZHEuxQ=:VJN3cworj20ItxlHubGzdy1Sk+8oIkLhUqAaeD4giOo=",
    ] {
        assert!(matches!(ScramSecret::parse(v), Err(WireError::InvalidSecret(_))), "{v}");
    }
    assert!(ScramSecret::from_password("x", b"", 4096).is_err());
    assert!(ScramSecret::from_password("x", b"salt", 0).is_err());
}

#[test]
fn scram_server_rejects_channel_binding_and_authzid() {
    let secret = ScramSecret::from_password("pw", b"salt", 1).unwrap();
    let first = |msg: &[u8]| ScramServer::new(&secret).client_first(msg).unwrap_err();
    let err = first(b"p=tls-server-end-point,,n=,r=abc");
    assert_eq!(err.sqlstate(), "0A000");
    assert!(err.to_string().contains("channel binding"));
    assert_eq!(first(b"n,a=admin,n=,r=abc").sqlstate(), "0A000");
    assert_eq!(first(b"n,,m=ext,n=,r=abc").sqlstate(), "0A000");
    for bad in [
        &b""[..],
        b"x,,n=,r=abc",
        b"n,,",
        b"n,,n=",
        b"n,,n=,r=",
        b"n,,r=abc",
        b"n,,n=,r=a\x01c",
        b"n,,n=,r=abc,junk",
        b"\xff,,n=,r=abc",
    ] {
        assert_eq!(first(bad).sqlstate(), "08P01", "{bad:?}");
    }
    // "y" (client could bind, thinks we can't) is fine without TLS.
    assert!(ScramServer::new(&secret)
        .client_first(b"y,,n=u,r=abc")
        .is_ok());
}

#[test]
fn scram_server_rejects_bad_client_final() {
    let secret = ScramSecret::from_password("pw", b"salt", 1).unwrap();
    let proof = "p=AmNKosjJzS31NTlQYNs5BTeQjdHdk7lOflDo5re2an8=";
    let cases = [
        (format!("c=eSws,r=abcSRV,{proof}"), "08P01"), // cbind mismatch
        (format!("c=biws,r=abcXXX,{proof}"), "08P01"), // nonce mismatch
        (format!("c=biws,{proof}"), "08P01"),
        ("c=biws,r=abcSRV".to_owned(), "08P01"),
        ("c=biws,r=abcSRV,p=AAAA".to_owned(), "08P01"), // short proof
        (format!("c=biws,r=abcSRV,bogus,{proof}"), "08P01"),
        (format!("c=biws,r=abcSRV,x=ext,{proof}"), "28P01"), // extension ok, proof wrong
        (format!("c=biws,r=abcSRV,{proof}"), "28P01"),
    ];
    for (msg, state) in cases {
        let mut s = ScramServer::new(&secret);
        s.client_first_with_nonce(b"n,,n=,r=abc", "SRV").unwrap();
        assert_eq!(
            s.client_final(msg.as_bytes()).unwrap_err().sqlstate(),
            state,
            "{msg}"
        );
    }
    // Out of order.
    let mut s = ScramServer::new(&secret);
    assert_eq!(s.client_final(b"c=biws").unwrap_err().sqlstate(), "08P01");
}

#[test]
fn scram_client_rejects_bad_server_messages() {
    let mut c = ScramClient::new("pw");
    assert!(matches!(
        c.finish(b"v=AAAA"),
        Err(WireError::UpstreamAuth(_))
    ));
    assert!(c.update(b"r=not-our-nonce,s=c2FsdA==,i=4096").is_err());
    assert!(
        c.update(b"r=x,s=c2FsdA==,i=4096").is_err(),
        "exchange is over"
    );
    assert!(!c.initial().is_empty(), "initial() never panics");

    // Server signature mismatch.
    let secret = ScramSecret::from_password("pw", b"salt", 16).unwrap();
    let mut server = ScramServer::new(&secret);
    let mut client = ScramClient::new("pw");
    let sf = server.client_first(&client.initial()).unwrap();
    let cf = client.update(&sf).unwrap();
    server.client_final(&cf).unwrap();
    let err = client
        .finish(b"v=U+ppxD5XUKtradnv8e2MkeupiA8FU87Sg8CXzXHDAzw=")
        .unwrap_err();
    assert_eq!(err.sqlstate(), "08001");
}

#[test]
fn md5_known_values() {
    // python3: "md5" + md5(md5(b"md5-secret" + b"app_md5").hexdigest().encode() + bytes([1,2,3,4]))
    let h = md5_password_hash("app_md5", "md5-secret", [1, 2, 3, 4]);
    assert_eq!(h, "md55be5fda7590a1d56ede1b20fb4923813");
    let stored = md5_stored_hash("app_md5", "md5-secret");
    assert_eq!(stored, "md50a2b6a39d03d795b7d1eace799b9838e");
    assert_eq!(
        md5_salted_from_stored(&stored, [1, 2, 3, 4]).as_deref(),
        Some(h.as_str())
    );
    assert_eq!(md5_salted_from_stored("md5xyz", [1, 2, 3, 4]), None);
    // Cross-check with postgres-protocol's implementation.
    let salt = [0x2a, 0x3d, 0x8f, 0xe0];
    assert_eq!(
        md5_password_hash("md5_user", "password", salt),
        postgres_protocol::authentication::md5_hash(b"md5_user", b"password", salt)
    );
}

#[test]
fn ct_eq_works() {
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(ct_eq(b"", b""));
}
