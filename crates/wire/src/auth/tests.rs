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
    // Binding data under plain SCRAM-SHA-256 (nothing was offered to bind to).
    let err = first(b"p=tls-server-end-point,,n=,r=abc");
    assert_eq!(err.sqlstate(), "08P01");
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

/// Runs an exchange where the server offered PLUS with `server_binding` and the client sends
/// `binding`, selecting PLUS when `plus`.
fn bound_exchange(
    server_binding: Option<Vec<u8>>,
    plus: bool,
    binding: ClientBinding,
) -> Result<(), WireError> {
    let secret = ScramSecret::from_password("pw", b"salt", 16).unwrap();
    let mut server = ScramServer::new(&secret).with_channel_binding(server_binding, plus);
    let mut client = ScramClient::with_binding("pw", binding);
    let sf = server.client_first(&client.initial())?;
    let cf = client.update(&sf)?;
    let fin = server.client_final(&cf)?;
    client.finish(&fin)
}

#[test]
fn scram_plus_with_matching_binding_data_succeeds() {
    let data = vec![7u8; 32];
    bound_exchange(
        Some(data.clone()),
        true,
        ClientBinding::TlsServerEndPoint(data),
    )
    .unwrap();
}

#[test]
fn scram_plus_with_other_certificate_hash_fails() {
    // A man in the middle terminates TLS with its own certificate: the hashes differ.
    let err = bound_exchange(
        Some(vec![7u8; 32]),
        true,
        ClientBinding::TlsServerEndPoint(vec![8u8; 32]),
    )
    .unwrap_err();
    assert_eq!(err.sqlstate(), "08P01");
    assert!(err.to_string().contains("channel binding"), "{err}");
}

#[test]
fn gs2_y_on_a_connection_that_offered_plus_is_a_downgrade() {
    let err = bound_exchange(Some(vec![7u8; 32]), false, ClientBinding::Unrequested).unwrap_err();
    assert_eq!(err, WireError::ChannelBinding("the client supports SCRAM channel binding but thinks the server does not, although this connection offered SCRAM-SHA-256-PLUS"));
    // Without TLS (nothing offered) the same client is fine.
    bound_exchange(None, false, ClientBinding::Unrequested).unwrap();
    // And `n` on TLS is a client that cannot bind: allowed (libpq's channel_binding=disable).
    bound_exchange(Some(vec![7u8; 32]), false, ClientBinding::None).unwrap();
}

#[test]
fn gs2_flag_must_match_the_selected_mechanism() {
    let data = vec![7u8; 32];
    // PLUS selected, but no binding data sent.
    for binding in [ClientBinding::None, ClientBinding::Unrequested] {
        let err = bound_exchange(Some(data.clone()), true, binding).unwrap_err();
        assert!(matches!(err, WireError::ChannelBinding(_)), "{err}");
    }
    // Binding data sent under plain SCRAM-SHA-256.
    let err = bound_exchange(
        Some(data.clone()),
        false,
        ClientBinding::TlsServerEndPoint(data),
    )
    .unwrap_err();
    assert!(matches!(err, WireError::ChannelBinding(_)), "{err}");
}

#[test]
fn gs2_p_with_another_binding_type_is_refused() {
    let secret = ScramSecret::from_password("pw", b"salt", 1).unwrap();
    let mut server = ScramServer::new(&secret).with_channel_binding(Some(vec![1; 32]), true);
    let err = server.client_first(b"p=tls-unique,,n=,r=abc").unwrap_err();
    assert!(err.to_string().contains("tls-server-end-point"), "{err}");
    assert_eq!(err.sqlstate(), "08P01");
}

#[test]
fn gs2_header_and_binding_data_make_the_c_attribute() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret = ScramSecret::from_password("pw", b"salt", 1).unwrap();
    let data = vec![0xab; 48];
    let mut server = ScramServer::new(&secret).with_channel_binding(Some(data.clone()), true);
    server
        .client_first_with_nonce(b"p=tls-server-end-point,,n=,r=abc", "SRV")
        .unwrap();
    let mut expected = b"p=tls-server-end-point,,".to_vec();
    expected.extend_from_slice(&data);
    // Right c= but wrong proof: the binding check passed, the proof check failed.
    let msg = format!(
        "c={},r=abcSRV,p=AmNKosjJzS31NTlQYNs5BTeQjdHdk7lOflDo5re2an8=",
        b64.encode(&expected)
    );
    assert_eq!(
        server.client_final(msg.as_bytes()).unwrap_err(),
        WireError::AuthFailed
    );
    // The bare gs2 header (without the data) is not enough.
    let mut server = ScramServer::new(&secret).with_channel_binding(Some(data), true);
    server
        .client_first_with_nonce(b"p=tls-server-end-point,,n=,r=abc", "SRV")
        .unwrap();
    let msg = format!(
        "c={},r=abcSRV,p=AmNKosjJzS31NTlQYNs5BTeQjdHdk7lOflDo5re2an8=",
        b64.encode(b"p=tls-server-end-point,,")
    );
    assert_eq!(
        server.client_final(msg.as_bytes()).unwrap_err().sqlstate(),
        "08P01"
    );
}

fn cert_with(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn end_point_hash_follows_the_signature_algorithm() {
    use sha2::Digest;
    let p256 = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(end_point_hash(&p256).unwrap(), EndPointHash::Sha256);
    assert_eq!(
        tls_server_end_point(&p256).unwrap(),
        sha2::Sha256::digest(&p256).to_vec()
    );
    let p384 = cert_with(&rcgen::PKCS_ECDSA_P384_SHA384);
    assert_eq!(end_point_hash(&p384).unwrap(), EndPointHash::Sha384);
    assert_eq!(
        tls_server_end_point(&p384).unwrap(),
        sha2::Sha384::digest(&p384).to_vec()
    );
    // Ed25519 signs without a separate hash: SHA-256.
    let ed = cert_with(&rcgen::PKCS_ED25519);
    assert_eq!(end_point_hash(&ed).unwrap(), EndPointHash::Sha256);
}

#[test]
fn end_point_hash_of_garbage_is_an_error() {
    for bad in [
        &b""[..],
        b"\x30",
        b"\x30\x82\xff\xff",
        b"\x02\x01\x00",
        b"\x30\x03\x02\x01\x00",
    ] {
        assert!(end_point_hash(bad).is_err(), "{bad:?}");
    }
    let mut cert = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256);
    cert.truncate(cert.len() / 2);
    assert!(end_point_hash(&cert).is_err());
}
