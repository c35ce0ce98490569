//! `cargo fuzz run scram_server`: the body is `meridian_wire::fuzzing::scram_server`, which
//! `crates/wire/tests/fuzz_corpus.rs` replays over `fuzz/corpus/scram_server/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_wire::fuzzing::scram_server(data));
