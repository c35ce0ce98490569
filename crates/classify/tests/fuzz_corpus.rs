//! Replays the committed fuzz corpus (`fuzz/corpus/classifier/`) through the
//! same function the `cargo fuzz` target calls, so `cargo test` keeps the
//! target compiling and every seed and past crash passing.

use std::fs;
use std::path::PathBuf;

#[test]
fn classifier_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/classifier");
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
        eprintln!("classifier: {}", path.display());
        meridian_classify::fuzzing::classifier(&data);
    }
}

#[test]
fn parameterize_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/parameterize");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading corpus {}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()).expect("corpus entry"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        meridian_classify::fuzzing::parameterize(&data);
    }
}
