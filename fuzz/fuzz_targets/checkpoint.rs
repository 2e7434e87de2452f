//! Fuzzes the live checkpoint loader (`tlr_core::live::LiveState::load`) on a folder holding a fuzzed
//! `checkpoint.json` next to the state files of a real `tlr watch` checkpoint (copied once from
//! `fuzz/checkpoint_files/`, or from `$TLR_FUZZ_CHECKPOINT_FILES`). An input of the form
//! `JSON \0 BYTES` also replaces the content of every state file with `BYTES`, so the binary state
//! reader is reached too (a fuzzed JSON rarely matches the real files' SHA-256).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tlr_core::live::{LiveState, CHECKPOINT_JSON};

/// The checkpoint folder (this process's scratch folder) and the names of the state files copied into it.
fn folder() -> &'static (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
    static FOLDER: OnceLock<(PathBuf, Vec<(PathBuf, Vec<u8>)>)> = OnceLock::new();
    FOLDER.get_or_init(|| {
        let source = std::env::var_os("TLR_FUZZ_CHECKPOINT_FILES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("checkpoint_files"));
        let dir = tlr_fuzz::scratch_dir().join("checkpoint");
        std::fs::create_dir_all(&dir).expect("cannot create the checkpoint folder");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&source).expect("cannot list the checkpoint files") {
            let entry = entry.expect("cannot list the checkpoint files");
            if entry.file_name() == CHECKPOINT_JSON {
                continue;
            }
            let bytes = std::fs::read(entry.path()).expect("cannot read a checkpoint file");
            files.push((dir.join(entry.file_name()), bytes));
        }
        (dir, files)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, files) = folder();
    let (json, replacement) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    for (path, original) in files {
        std::fs::write(path, replacement.unwrap_or(original)).expect("cannot write a state file");
    }
    std::fs::write(dir.join(CHECKPOINT_JSON), json).expect("cannot write checkpoint.json");
    let _ = LiveState::load(dir);
});
