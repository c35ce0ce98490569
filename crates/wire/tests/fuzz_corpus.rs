//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same functions the `cargo fuzz` targets call, so `cargo test` keeps the
//! targets compiling and every seed and past crash passing.

use std::fs;
use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()).expect("corpus entry"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        eprintln!("{target}: {}", path.display());
        run(&data);
    }
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", meridian_wire::fuzzing::frame_decoder);
}

#[test]
fn startup_packet_corpus() {
    replay("startup_packet", meridian_wire::fuzzing::startup_packet);
}

#[test]
fn scram_server_corpus() {
    replay("scram_server", meridian_wire::fuzzing::scram_server);
}
