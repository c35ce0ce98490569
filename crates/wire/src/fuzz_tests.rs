//! Property-style robustness tests: random input must never panic.

#![allow(clippy::unwrap_used)]

use bytes::{BufMut, BytesMut};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::{decode_startup, parse, split_frame};

fn random_buf(rng: &mut SmallRng) -> BytesMut {
    let len = rng.random_range(0..96usize);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    let mut b = BytesMut::with_capacity(len + 8);
    // Half the time, start with a plausible length/code so the decoders get
    // past the header checks and into the body parsing.
    if rng.random_bool(0.5) {
        b.put_u32(u32::try_from(len + 8).unwrap());
        b.put_i32(
            *[196_608, 196_610, 80_877_102, 80_877_103, 131_072]
                .get(rng.random_range(0..5usize))
                .unwrap(),
        );
        // Sprinkle NULs so key/value parsing gets exercised.
        for x in v.iter_mut() {
            if rng.random_bool(0.2) {
                *x = 0;
            }
        }
    }
    b.put_slice(&v);
    b
}

#[test]
fn decode_startup_never_panics() {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    for _ in 0..5000 {
        let mut b = random_buf(&mut rng);
        let _ = decode_startup(&mut b, 10_000);
    }
}

#[test]
fn split_frame_and_parsers_never_panic() {
    let mut rng = SmallRng::seed_from_u64(0xf00d);
    for _ in 0..5000 {
        let mut b = random_buf(&mut rng);
        while let Ok(Some((_, frame))) = split_frame(&mut b, 64) {
            let body = crate::body(&frame);
            let _ = parse::query_sql(body);
            let _ = parse::parse_parse(body);
            let _ = parse::bind_names(body);
            let _ = parse::describe_target(body);
            let _ = parse::execute_portal(body);
            let _ = parse::ready_status(body);
            let _ = parse::parameter_status(body);
            let _ = parse::backend_key_data(body);
            let _ = parse::auth_request(body);
            let _ = parse::password_message(body);
            let _ = parse::sasl_initial_response(body);
            if let Ok(f) = parse::ErrorFields::parse(body) {
                let _ = (f.code(), f.message(), f.severity(), f.iter().count());
            }
        }
    }
}

#[test]
fn scram_server_never_panics_on_garbage() {
    let secret = crate::auth::ScramSecret::from_password("pw", b"salt", 1).unwrap();
    let mut rng = SmallRng::seed_from_u64(0xbeef);
    for _ in 0..2000 {
        let mut s = crate::auth::ScramServer::new(&secret);
        let a = random_buf(&mut rng);
        let b = random_buf(&mut rng);
        let _ = s.client_first(&a);
        let _ = s.client_final(&b);
        let mut s = crate::auth::ScramServer::new(&secret);
        let _ = s.client_first(b"n,,n=,r=abc");
        let _ = s.client_final(&b);
    }
}
