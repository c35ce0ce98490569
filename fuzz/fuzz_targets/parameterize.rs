//! `cargo fuzz run parameterize`: the body is `meridian_classify::fuzzing::parameterize`,
//! which `crates/classify/tests/fuzz_corpus.rs` replays over `fuzz/corpus/parameterize/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_classify::fuzzing::parameterize(data));
