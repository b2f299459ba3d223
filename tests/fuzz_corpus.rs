//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same checks the fuzz targets run, so that a plain `cargo test` keeps the
//! corpora and the checks alive without cargo-fuzz or a nightly compiler.
//! See `fuzz/README.md`.

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Fewest files a target's corpus may have: an emptied or misplaced corpus
/// would otherwise pass silently.
const CORPUS_FILES_MIN: usize = 3;

/// Runs `check` on every file of `fuzz/corpus/<target>/` and fails, naming
/// every file whose check panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            // libFuzzer's hidden scratch files are not corpus entries.
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= CORPUS_FILES_MIN,
        "{}: {} files, expected at least {CORPUS_FILES_MIN}",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus files fail their check:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn http_framer_corpus() {
    replay("http_framer", checks::http_framer);
}

#[test]
fn poll_query_corpus() {
    replay("poll_query", checks::poll_query);
}

#[test]
fn ids_tokens_corpus() {
    replay("ids_tokens", checks::ids_tokens);
}

#[test]
fn json_escape_corpus() {
    replay("json_escape", checks::json_escape);
}

#[test]
fn api_requests_corpus() {
    replay("api_requests", checks::api_requests);
}
