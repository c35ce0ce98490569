//! `cargo fuzz run startup_packet`: the body is `meridian_wire::fuzzing::startup_packet`, which
//! `crates/wire/tests/fuzz_corpus.rs` replays over `fuzz/corpus/startup_packet/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_wire::fuzzing::startup_packet(data));
