//! Helpers every end-to-end test uses: finding the project's binaries and
//! the test virtualenv, and making scratch directories.
//!
//! Binaries are looked up next to the running test executable
//! (`target/debug/deps/..` is `target/debug`), so tests use exactly the build
//! that `cargo build --workspace --bins` produced, without rebuilding.

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TOIL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| {
            // target/debug/deps/test-binary -> target/debug; a program
            // such as bench-local sits in target/debug itself.
            if dir.ends_with("deps") {
                dir.parent().unwrap_or(dir).to_path_buf()
            } else {
                dir.to_path_buf()
            }
        })
        .unwrap_or_else(|| repo_root().join("target/debug"))
}

/// For the benchmark programs: `explicit` (their `--bin-dir`) or the
/// directory they run from, checked to hold every one of `names`, with an
/// error that says how to build them otherwise.
pub fn bins_for_program(explicit: Option<&Path>, names: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = explicit.map_or_else(bin_dir, Path::to_path_buf);
    for name in names {
        let p = dir.join(name);
        anyhow::ensure!(
            p.exists(),
            "{} not found: build with `cargo build --release --bins` (or pass --bin-dir)",
            p.display()
        );
    }
    Ok(dir)
}

/// Path of a workspace binary such as `toil-leader`, with a clear panic if
/// it has not been built (tests cannot run without it).
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The test virtualenv made by `scripts/setup-test-env.sh`.
pub fn venv() -> PathBuf {
    std::env::var("TOIL_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".venv-test"))
}

/// Path of an executable in the test virtualenv, with a clear panic if the
/// venv has not been set up.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = venv().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-test-env.sh first",
        p.display()
    );
    p
}

/// A fresh scratch directory, removed when dropped. Kept under `target/` so
/// it is on the same filesystem as the build and cleaned by `cargo clean`.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let base = repo_root().join("target/test-scratch");
    let _ = std::fs::create_dir_all(&base);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap_or_else(|e| panic!("cannot create a scratch directory: {e}"))
}
