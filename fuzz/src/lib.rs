//! Helpers shared by the fuzz targets: the core's readers take paths, so each iteration writes the
//! fuzzed bytes to a file in a scratch folder private to this process (under `/dev/shm` when it
//! exists, so the writes stay in memory).
//!
//! What it does not do: clean the folder up between runs of different processes (each process has its
//! own, named by its pid, and removes nothing; a crash leaves the last input there, next to the copy
//! libFuzzer saves under `artifacts/`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder, created on first use.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("tlr-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch folder");
        dir
    })
}

/// Writes `data` to `name` in the scratch folder (replacing the previous iteration's file) and returns
/// its path.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("cannot write the fuzz input file");
    path
}
