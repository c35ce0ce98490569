//! Fuzz-target bodies, shared by the `cargo fuzz` targets in `fuzz/` and by
//! the corpus replay tests (`tests/fuzz_corpus.rs`), so neither can rot.
//!
//! Every function takes arbitrary bytes and must not panic on any of them.
//! They do check invariants with `assert!`: a violated invariant is a bug
//! the fuzzer is meant to find, and the panic is how libFuzzer reports it.
//! Not part of the crate's API.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{BufMut, BytesMut};
use sha2::Sha256;

use crate::auth::{hmac_sha256, sha256, xor32, ScramSecret, ScramServer};
use crate::frame::HEADER_LEN;
use crate::startup::{self, StartupPacket, MAX_STARTUP_PARAMS};
use crate::{messages, parse, peek_frame, split_frame, WireError};

/// `max_message_bytes` values the frame decoder is run with (picked by the
/// first input byte): the production default, tiny ones so the limit is hit
/// often, and ones around the smallest legal length.
const FRAME_LIMITS: [usize; 8] = [
    crate::DEFAULT_MAX_MESSAGE_BYTES,
    0,
    3,
    4,
    5,
    64,
    4096,
    usize::MAX,
];

/// `max_len` values for [`decode_startup`](crate::decode_startup).
const STARTUP_LIMITS: [usize; 4] = [crate::DEFAULT_MAX_STARTUP_BYTES, 8, 64, usize::MAX];

/// What decoding a stream with [`split_frame`] produced: every frame, how it
/// stopped, and the bytes left over.
#[derive(Debug, PartialEq, Eq)]
struct FrameRun {
    frames: Vec<(u8, Vec<u8>)>,
    error: Option<WireError>,
    rest: Vec<u8>,
}

/// Frame decoder: `data[0]` picks the message size limit, `data[1..4]` the
/// sizes of the pieces the stream is fed in; the rest is the byte stream.
///
/// Checks, for the whole stream, byte by byte and in those pieces: the same
/// frames come out (the decoder is independent of how reads are split), each
/// frame is exactly `tag + length field + body` with the length its header
/// announces and within the limit, [`peek_frame`] agrees with
/// [`split_frame`], nothing is consumed while a frame is incomplete or after
/// an error, errors are 08P01, and the frames concatenated are a prefix of
/// the stream. Every frame body is also run through the [`parse`] decoders,
/// and those that decode are re-encoded and compared byte for byte.
pub fn frame_decoder(data: &[u8]) {
    let (ctl, stream) = data.split_at(data.len().min(4));
    let max = ctl
        .first()
        .and_then(|&b| FRAME_LIMITS.get(usize::from(b) % FRAME_LIMITS.len()))
        .copied()
        .unwrap_or(crate::DEFAULT_MAX_MESSAGE_BYTES);
    let sizes: Vec<usize> = ctl.iter().skip(1).map(|&b| usize::from(b) + 1).collect();

    let mut buf = BytesMut::from(stream);
    let mut frames = Vec::new();
    let error = drain_frames(&mut buf, max, &mut frames);
    let whole = FrameRun {
        frames,
        error,
        rest: buf.to_vec(),
    };
    let mut consumed = 0usize;
    for (tag, frame) in &whole.frames {
        let end = consumed + frame.len();
        assert!(
            stream.get(consumed..end) == Some(frame.as_slice()),
            "frames are the stream's bytes, in order"
        );
        consumed = end;
        assert_eq!(frame.first(), Some(tag));
        frame_parsers(crate::body(frame));
    }
    assert!(stream.get(consumed..) == Some(whole.rest.as_slice()));
    if let Some(e) = &whole.error {
        assert_eq!(e.sqlstate(), "08P01");
        assert!(matches!(
            e,
            WireError::InvalidLength { .. } | WireError::MessageTooLong { .. }
        ));
    }

    let bytewise = feed_in_pieces(stream, &[1], max);
    assert_eq!(bytewise, whole, "byte-at-a-time decoding differs");
    if !sizes.is_empty() {
        let pieces = feed_in_pieces(stream, &sizes, max);
        assert_eq!(pieces, whole, "decoding in pieces {sizes:?} differs");
    }
}

/// Splits every frame off `buf` into `frames` until the decoder wants more
/// bytes (`None`) or fails (the error).
fn drain_frames(
    buf: &mut BytesMut,
    max: usize,
    frames: &mut Vec<(u8, Vec<u8>)>,
) -> Option<WireError> {
    loop {
        match next_frame(buf, max) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// One [`split_frame`] call, checked against [`peek_frame`].
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, Vec<u8>)>, WireError> {
    let before = buf.len();
    let peeked = peek_frame(buf, max);
    let split = split_frame(buf, max);
    let agree = match (&peeked, &split) {
        (Err(p), Err(s)) => {
            assert_eq!(p, s);
            assert_eq!(buf.len(), before, "an error consumes nothing");
            true
        }
        (Ok(None), Ok(None)) => {
            assert!(before < HEADER_LEN);
            assert_eq!(buf.len(), before);
            true
        }
        (Ok(Some(hdr)), Ok(None)) => {
            assert!(before < hdr.len, "a complete frame was not split off");
            assert_eq!(buf.len(), before, "an incomplete frame consumes nothing");
            true
        }
        (Ok(Some(hdr)), Ok(Some((tag, frame)))) => {
            assert_eq!(*tag, hdr.tag);
            assert_eq!(frame.len(), hdr.len, "frame length differs from its header");
            assert!(frame.len() >= HEADER_LEN);
            assert_eq!(crate::body(frame).len(), hdr.body_len());
            let field = frame
                .get(1..HEADER_LEN)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes);
            assert_eq!(field.map(|l| l as usize + 1), Some(frame.len()));
            assert!(frame.len() - 1 <= max, "frame above the size limit");
            assert_eq!(buf.len() + frame.len(), before);
            true
        }
        _ => false,
    };
    assert!(
        agree,
        "peek_frame {peeked:?} and split_frame {split:?} disagree"
    );
    split.map(|o| o.map(|(tag, frame)| (tag, frame.to_vec())))
}

/// Feeds `stream` into a read buffer in pieces of the given sizes (cycled),
/// draining frames after every piece, as the proxy's read loop does.
fn feed_in_pieces(stream: &[u8], sizes: &[usize], max: usize) -> FrameRun {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().cycle();
    loop {
        let size = sizes.next().copied().unwrap_or(1).max(1);
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        buf.put_slice(piece);
        let error = drain_frames(&mut buf, max, &mut frames);
        if error.is_some() || rest.is_empty() {
            return FrameRun {
                frames,
                error,
                rest: [buf.as_ref(), rest].concat(),
            };
        }
    }
}

/// Runs every body decoder; the ones with an encoder must round-trip.
fn frame_parsers(body: &[u8]) {
    let mut out = BytesMut::new();
    let mut roundtrip = |encode: &dyn Fn(&mut BytesMut)| {
        out.clear();
        encode(&mut out);
        assert!(
            crate::body(&out) == body,
            "decode/encode round trip differs"
        );
    };
    if let Ok(sql) = parse::query_sql(body) {
        roundtrip(&|b| messages::query(b, sql));
    }
    if let Ok((k, v)) = parse::parameter_status(body) {
        roundtrip(&|b| messages::parameter_status(b, k, v));
    }
    if let Ok((pid, secret)) = parse::backend_key_data(body) {
        roundtrip(&|b| messages::backend_key_data(b, pid, secret));
    }
    if let Ok(t) = parse::command_complete(body) {
        roundtrip(&|b| messages::command_complete(b, t));
    }
    if let Ok(s) = parse::ready_status(body) {
        roundtrip(&|b| messages::ready_for_query(b, s));
    }
    if let Ok(pw) = parse::password_message(body) {
        roundtrip(&|b| messages::password_message(b, pw));
    }
    if let Ok((mechanism, Some(data))) = parse::sasl_initial_response(body) {
        roundtrip(&|b| messages::sasl_initial_response(b, mechanism, data));
    }
    if let Ok(p) = parse::parse_parse(body) {
        assert_eq!(p.param_types.iter().count(), p.param_types.len());
        for (i, oid) in p.param_types.iter().enumerate() {
            assert_eq!(p.param_types.get(i), Some(oid));
        }
        assert_eq!(p.param_types.get(p.param_types.len()), None);
    }
    let _ = parse::bind_names(body);
    let _ = parse::describe_target(body);
    let _ = parse::close_target(body);
    let _ = parse::execute_portal(body);
    let _ = parse::auth_request(body);
    let _ = parse::read_cstr(body);
    if let Ok(f) = parse::error_fields(body) {
        let _ = (
            f.severity(),
            f.severity_nonlocalized(),
            f.code(),
            f.message(),
        );
        let _ = (f.detail(), f.hint());
        assert!(f
            .iter()
            .all(|(code, value)| code != 0 && !value.contains(&0)));
    }
}

/// Startup packets: `data[0]` picks the size limit; the rest is the stream
/// of startup-phase packets (a client may pipeline its StartupMessage
/// behind an SSLRequest).
///
/// Checks that decoding byte by byte gives the same packets and error as
/// decoding the whole stream, that nothing is consumed until a packet is
/// complete, that each packet consumes exactly its length field's bytes and
/// re-encodes to exactly those bytes (StartupMessage 3.0, SSLRequest,
/// GSSENCRequest, CancelRequest), and that a StartupMessage has a non-empty
/// `user` and at most [`MAX_STARTUP_PARAMS`] parameters.
pub fn startup_packet(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let max = STARTUP_LIMITS
        .get(usize::from(ctl) % STARTUP_LIMITS.len())
        .copied()
        .unwrap_or(crate::DEFAULT_MAX_STARTUP_BYTES);

    let mut buf = BytesMut::from(stream);
    let mut whole = Vec::new();
    let whole_end = loop {
        let before = buf.len();
        match crate::decode_startup(&mut buf, max) {
            Ok(Some(pkt)) => {
                let start = stream.len() - before;
                let raw = stream.get(start..stream.len() - buf.len());
                check_startup(&pkt, raw.unwrap_or_default(), max);
                whole.push(pkt);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete packet consumes nothing");
                break Ok(buf.len());
            }
            // Errors are fatal for the connection: what was consumed does not matter.
            Err(e) => break Err(e),
        }
    };

    let mut buf = BytesMut::new();
    let mut bytewise = Vec::new();
    let mut bytewise_end = Ok(0);
    for &b in stream {
        buf.put_u8(b);
        match crate::decode_startup(&mut buf, max) {
            Ok(Some(pkt)) => {
                assert!(
                    buf.is_empty(),
                    "a packet was decoded before it was complete"
                );
                bytewise.push(pkt);
            }
            Ok(None) => {}
            Err(e) => {
                bytewise_end = Err(e);
                break;
            }
        }
    }
    if bytewise_end.is_ok() {
        bytewise_end = Ok(buf.len());
    }
    assert_eq!(bytewise, whole, "byte-at-a-time decoding differs");
    assert_eq!(bytewise_end, whole_end);
}

/// Invariants of one decoded startup packet; `raw` is what it consumed.
fn check_startup(pkt: &StartupPacket, raw: &[u8], max: usize) {
    let len = raw
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b) as usize);
    assert_eq!(
        len,
        Some(raw.len()),
        "consumed length differs from the header"
    );
    assert!(raw.len() >= 8 && raw.len() <= max);
    let mut again = BytesMut::new();
    match pkt {
        StartupPacket::Startup { protocol, params } => {
            assert_eq!(protocol.0, 3);
            assert!(params.len() <= MAX_STARTUP_PARAMS);
            assert!(pkt.user().is_some_and(|u| !u.is_empty()));
            assert!(pkt.database().is_some());
            assert!(params
                .iter()
                .all(|(k, v)| !k.is_empty() && !k.contains('\0') && !v.contains('\0')));
            if *protocol == (3, 0) {
                let pairs: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                startup::encode_startup(&mut again, &pairs);
                assert!(again.as_ref() == raw, "StartupMessage does not round-trip");
            }
            let mut out = BytesMut::new();
            let wrote = pkt.write_negotiation(&mut out);
            assert_eq!(wrote, pkt.needs_negotiation());
            if wrote {
                let options: Vec<&str> = pkt.protocol_options().collect();
                let mut expected = BytesMut::new();
                messages::negotiate_protocol_version(&mut expected, 0, &options);
                assert!(out == expected);
                let frame = split_frame(&mut out, usize::MAX);
                assert!(matches!(frame, Ok(Some((b'v', _)))) && out.is_empty());
            } else {
                assert!(out.is_empty());
            }
        }
        StartupPacket::SslRequest => startup::encode_ssl_request(&mut again),
        StartupPacket::GssEncRequest => startup::encode_gssenc_request(&mut again),
        StartupPacket::Cancel { pid, secret } => startup::encode_cancel(&mut again, *pid, *secret),
    }
    if !matches!(pkt, StartupPacket::Startup { .. }) {
        assert!(again.as_ref() == raw, "{pkt:?} does not round-trip");
        assert_eq!(pkt.user(), None);
        assert!(!pkt.needs_negotiation());
    }
}

/// The password of the fixed SCRAM secret the server is fuzzed against.
const SCRAM_PASSWORD: &str = "pencil";
/// The server nonce used instead of a random one, so inputs can reach the
/// proof check (the client-final must echo the combined nonce).
const SCRAM_SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";

struct ScramFixture {
    secret: ScramSecret,
    client_key: [u8; 32],
}

// The fixture is built from constants: failing here is a bug, not input.
#[allow(clippy::expect_used)]
fn scram_fixture() -> &'static ScramFixture {
    static FIXTURE: OnceLock<ScramFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let salt = b"fuzzing-salt-16b";
        let iterations = ScramSecret::DEFAULT_ITERATIONS;
        let secret = ScramSecret::from_password(SCRAM_PASSWORD, salt, iterations)
            .expect("fixed SCRAM secret");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(SCRAM_PASSWORD.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        assert_eq!(sha256(&client_key), secret.stored_key);
        ScramFixture { secret, client_key }
    })
}

/// SCRAM server: `data[0] % 4` picks a scenario; the rest is split at its
/// first NUL into `a` and `b`. The whole input is also parsed as a verifier
/// with [`ScramSecret::parse`] (a parsed secret must round-trip through its
/// `Display` form).
///
/// * 0: `a` is the client-first, `b` the client-final message. A server
///   never authenticates a proof it did not get from the password, so
///   success is only possible with the real proof, and it is checked.
/// * 1: `a` is the client-first message; the harness builds the matching
///   client-final with the correct proof, adding `b` as extension
///   attributes. The server must accept exactly when `b` is well formed, and
///   its signature must be right.
/// * 2: as 1 with one bit of the proof flipped: must fail with
///   [`WireError::AuthFailed`] (28P01) or a format error, never succeed.
/// * 3: the mock exchange for an unknown user: never succeeds.
///
/// In every case a message out of order is rejected and a finished exchange
/// stays finished.
pub fn scram_server(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(secret) = ScramSecret::parse(&text) {
        assert!(secret.iterations > 0 && !secret.salt.is_empty());
        let shown = secret.to_string();
        assert!(ScramSecret::parse(&shown).as_ref() == Ok(&secret));
    }

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = match rest.iter().position(|&c| c == 0) {
        Some(nul) => (
            rest.get(..nul).unwrap_or_default(),
            rest.get(nul + 1..).unwrap_or_default(),
        ),
        None => (rest, <&[u8]>::default()),
    };
    let fixture = scram_fixture();
    match mode % 4 {
        0 => {
            let mut server = ScramServer::new(&fixture.secret);
            assert_eq!(server.client_final(b), Err(out_of_order()));
            let mut server = ScramServer::new(&fixture.secret);
            let first = server.client_first_with_nonce(a, SCRAM_SERVER_NONCE);
            let result = server.client_final(b);
            if let Ok(server_final) = &result {
                let first = first.as_deref().unwrap_or_default();
                let expected = expected_exchange(fixture, a, first, b);
                assert!(expected.is_some_and(|(_, sig)| sig == *server_final));
            }
            finish_checks(&mut server, result.is_ok());
        }
        1 | 2 => {
            let mut server = ScramServer::new(&fixture.secret);
            let Ok(server_first) = server.client_first_with_nonce(a, SCRAM_SERVER_NONCE) else {
                assert!(!server.is_authenticated());
                return;
            };
            check_server_first(fixture, a, &server_first);
            let Some(ext) = core::str::from_utf8(b).ok() else {
                return;
            };
            let Some((final_msg, signature)) = build_client_final(fixture, a, &server_first, ext)
            else {
                return;
            };
            let mut final_msg = final_msg.into_bytes();
            let corrupt = mode % 4 == 2;
            if corrupt {
                flip_proof_bit(&mut final_msg, data.len());
            }
            let result = server.client_final(&final_msg);
            let well_formed = ext.is_empty() || ext.split(',').all(is_attr);
            match &result {
                Ok(server_final) => {
                    assert!(!corrupt, "a corrupted proof was accepted");
                    assert!(well_formed);
                    assert!(*server_final == signature, "wrong server signature");
                }
                Err(e) => {
                    assert!(
                        corrupt || !well_formed,
                        "a correct proof was refused: {e:?}"
                    );
                    if corrupt && well_formed {
                        assert_eq!(*e, WireError::AuthFailed);
                    }
                }
            }
            finish_checks(&mut server, result.is_ok());
        }
        _ => {
            let user = String::from_utf8_lossy(b);
            let mut server = ScramServer::mock(&user);
            if let Ok(server_first) = server.client_first_with_nonce(a, SCRAM_SERVER_NONCE) {
                // The proof a client with the fixture's password would send.
                if let Some((final_msg, _)) = build_client_final(fixture, a, &server_first, "") {
                    let result = server.client_final(final_msg.as_bytes());
                    assert!(result.is_err(), "the mock exchange succeeded");
                }
            }
            let result = server.client_final(b);
            assert!(result.is_err());
            finish_checks(&mut server, false);
        }
    }
}

fn out_of_order() -> WireError {
    WireError::Malformed("unexpected SCRAM message")
}

/// After client-final: the outcome is as reported, further messages are
/// refused, and a failed exchange can never turn into a successful one.
fn finish_checks(server: &mut ScramServer, succeeded: bool) {
    assert_eq!(server.is_authenticated(), succeeded);
    assert_eq!(server.client_first(b"n,,n=,r=x"), Err(out_of_order()));
    assert_eq!(server.client_final(b"c=biws,r=x,p=x"), Err(out_of_order()));
    assert!(succeeded || !server.is_authenticated());
}

/// `attr-val`: one ASCII letter, `=`, value (RFC 5802).
fn is_attr(a: &str) -> bool {
    matches!(a.as_bytes(), [l, b'=', ..] if l.is_ascii_alphabetic())
}

/// The client-first message's parts: gs2 header (with its trailing comma),
/// bare message and client nonce.
fn split_client_first(client_first: &str) -> Option<(&str, &str, &str)> {
    let mut commas = client_first.match_indices(',').map(|(i, _)| i);
    commas.next()?;
    let gs2_end = commas.next()? + 1;
    let gs2 = client_first.get(..gs2_end)?;
    let bare = client_first.get(gs2_end..)?;
    let nonce = bare.split(',').nth(1)?.strip_prefix("r=")?;
    Some((gs2, bare, nonce))
}

/// An accepted server-first message must be `r=<client nonce><server
/// nonce>,s=<salt>,i=<iterations>`.
fn check_server_first(fixture: &ScramFixture, client_first: &[u8], server_first: &[u8]) {
    let parts = core::str::from_utf8(client_first)
        .ok()
        .and_then(split_client_first);
    assert!(parts.is_some(), "server accepted a malformed client-first");
    let nonce = parts.map(|(_, _, n)| n).unwrap_or_default();
    assert!(!nonce.is_empty() && !nonce.contains(','));
    let expected = format!(
        "r={nonce}{SCRAM_SERVER_NONCE},s={},i={}",
        B64.encode(&fixture.secret.salt),
        fixture.secret.iterations
    );
    assert!(
        server_first == expected.as_bytes(),
        "unexpected server-first"
    );
}

/// The client-final message a real client with the fixture's password sends
/// (extension attributes `ext` before the proof), and the server-final
/// message it expects.
fn build_client_final(
    fixture: &ScramFixture,
    client_first: &[u8],
    server_first: &[u8],
    ext: &str,
) -> Option<(String, Vec<u8>)> {
    let client_first = core::str::from_utf8(client_first).ok()?;
    let server_first = core::str::from_utf8(server_first).ok()?;
    let (gs2, bare, _) = split_client_first(client_first)?;
    let nonce = server_first.split(',').next()?.strip_prefix("r=")?;
    let mut without_proof = format!("c={},r={nonce}", B64.encode(gs2));
    if !ext.is_empty() {
        without_proof.push(',');
        without_proof.push_str(ext);
    }
    let auth_message = [
        bare.as_bytes(),
        b",",
        server_first.as_bytes(),
        b",",
        without_proof.as_bytes(),
    ];
    let mut proof = fixture.client_key;
    xor32(
        &mut proof,
        &hmac_sha256(&fixture.secret.stored_key, &auth_message),
    );
    let signature = hmac_sha256(&fixture.secret.server_key, &auth_message);
    Some((
        format!("{without_proof},p={}", B64.encode(proof)),
        format!("v={}", B64.encode(signature)).into_bytes(),
    ))
}

/// For mode 0: if the server accepted `client_final`, the signature it
/// returned must be the one computed from the password.
fn expected_exchange(
    fixture: &ScramFixture,
    client_first: &[u8],
    server_first: &[u8],
    client_final: &[u8],
) -> Option<(String, Vec<u8>)> {
    let client_final = core::str::from_utf8(client_final).ok()?;
    let (without_proof, _) = client_final.rsplit_once(',')?;
    let ext = without_proof.splitn(3, ',').nth(2).unwrap_or_default();
    let built = build_client_final(fixture, client_first, server_first, ext)?;
    (built.0 == client_final).then_some(built)
}

/// Flips one bit of the decoded proof (chosen by `seed`) and re-encodes it.
fn flip_proof_bit(final_msg: &mut Vec<u8>, seed: usize) {
    let Some(at) = final_msg.windows(3).rposition(|w| w == b",p=") else {
        return;
    };
    let Some(mut proof) = final_msg
        .get(at + 3..)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
    else {
        return;
    };
    if let Some(byte) = proof.get_mut(seed / 8 % 32) {
        *byte ^= 1 << (seed % 8);
    }
    final_msg.truncate(at + 3);
    final_msg.extend_from_slice(B64.encode(proof).as_bytes());
}
