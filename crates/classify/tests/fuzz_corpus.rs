//! Replays the committed fuzz corpora (`fuzz/corpus/classifier/`, `fuzz/corpus/parameterize/`)
//! through the same functions the `cargo fuzz` targets call, so `cargo test` keeps the targets
//! compiling and every seed and past crash passing.

use std::fs;
use std::path::PathBuf;

/// Runs `body` on every file of `fuzz/corpus/<target>/`, in name order.
fn replay(target: &str, body: fn(&[u8])) {
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
        body(&data);
    }
}

#[test]
fn classifier_corpus() {
    replay("classifier", meridian_classify::fuzzing::classifier);
}

#[test]
fn parameterize_corpus() {
    replay("parameterize", meridian_classify::fuzzing::parameterize);
}
