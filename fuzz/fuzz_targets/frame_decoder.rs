//! `cargo fuzz run frame_decoder`: the body is `meridian_wire::fuzzing::frame_decoder`, which
//! `crates/wire/tests/fuzz_corpus.rs` replays over `fuzz/corpus/frame_decoder/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_wire::fuzzing::frame_decoder(data));
