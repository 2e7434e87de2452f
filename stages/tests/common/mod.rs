//! Helpers shared by the test binaries that run `tlr` as a user does: run the binary, read its output,
//! simulate a folder of frames. What it does not: assert anything about a subcommand.
#![allow(dead_code)] // each test binary uses its own subset

pub mod images;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// Runs the `tlr` binary with `args` and waits for it.
pub fn tlr<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlr"))
        .args(args)
        .output()
        .expect("the tlr binary runs")
}

/// Bytes of stdout or stderr as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `tlr simulate DIR` with `frames` seeing frames of `size`² (seed 2).
pub fn simulate(dir: &Path, frames: usize, size: usize) {
    let (frames, size) = (frames.to_string(), size.to_string());
    let out = tlr(&[
        OsStr::new("simulate"),
        dir.as_os_str(),
        OsStr::new("--frames"),
        OsStr::new(&frames),
        OsStr::new("--width"),
        OsStr::new(&size),
        OsStr::new("--height"),
        OsStr::new(&size),
        OsStr::new("--seed"),
        OsStr::new("2"),
        OsStr::new("--scenario"),
        OsStr::new("seeing"),
    ]);
    assert!(
        out.status.success(),
        "simulate failed: {}",
        text(&out.stderr)
    );
}
