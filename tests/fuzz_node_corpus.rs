//! Replays the checked-in node-protocol fuzz corpora (`fuzz/corpus/node_*/`)
//! through the same checks the fuzz targets run, under a plain `cargo test`,
//! so the targets and their corpora never rot. See fuzz/README.md.

#[path = "../fuzz/fuzz_targets/node_checks.rs"]
mod node_checks;

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no corpus", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            file.display()
        );
    }
}

#[test]
fn node_frames_corpus() {
    replay("node_frames", node_checks::node_frames);
}

#[test]
fn node_handshake_corpus() {
    replay("node_handshake", node_checks::node_handshake);
}

#[test]
fn node_conn_stream_corpus() {
    replay("node_conn_stream", node_checks::node_conn_stream);
}

#[test]
fn node_core_corpus() {
    replay("node_core", node_checks::node_core);
}
