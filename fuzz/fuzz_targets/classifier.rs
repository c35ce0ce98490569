//! `cargo fuzz run classifier`: the body is `meridian_classify::fuzzing::classifier`,
//! which `crates/classify/tests/fuzz_corpus.rs` replays over `fuzz/corpus/classifier/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_classify::fuzzing::classifier(data));
