//! Helpers shared by the test binaries that run `tlr` as a user does: run the binary, read its output,
//! simulate a folder of frames. What it does not: assert anything about a subcommand.
#![allow(dead_code)] // each test binary uses its own subset

pub mod images;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the `tlr` binary with `args` and waits for it.
pub fn tlr<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlr"))
        .args(args)
        .output()
        .expect("the tlr binary runs")
}

/// `tlr run FRAMES -o OUT --quiet EXTRA…`, which must succeed.
pub fn run_ok(frames: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "run",
        frames.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let output = tlr(&args);
    assert!(
        output.status.success(),
        "tlr {args:?} failed: {}",
        text(&output.stderr)
    );
}

/// Bytes of stdout or stderr as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `tlr simulate DIR` with `frames` seeing frames of `size`² (seed 2).
pub fn simulate(dir: &Path, frames: usize, size: usize) {
    simulate_with(dir, frames, size, 2, &["--scenario", "seeing"]);
}

/// `tlr simulate DIR` with `frames` frames of `size`², `seed` and the `extra` arguments (e.g.
/// `--color RGGB`).
pub fn simulate_with(dir: &Path, frames: usize, size: usize, seed: u64, extra: &[&str]) {
    let (frames, size, seed) = (frames.to_string(), size.to_string(), seed.to_string());
    let mut args = vec![OsStr::new("simulate"), dir.as_os_str()];
    for (flag, value) in [
        ("--frames", &frames),
        ("--width", &size),
        ("--height", &size),
    ] {
        args.extend([OsStr::new(flag), OsStr::new(value)]);
    }
    args.extend([OsStr::new("--seed"), OsStr::new(&seed)]);
    args.extend(extra.iter().map(OsStr::new));
    let out = tlr(&args);
    assert!(
        out.status.success(),
        "simulate failed: {}",
        text(&out.stderr)
    );
}

/// Runs the pipeline (the library, not the binary) on every frame of `sim`, held in memory, with
/// `options` and 2 workers.
pub fn reconstruct_memory(
    sim: &tlr_core::simulate::Simulation,
    mut options: tlr::PipelineOptions,
) -> tlr::RunOutput {
    let frames = (0..sim.frames()).map(|i| sim.frame(i)).collect();
    options.config.v4.parallel_tiles = Some(2);
    tlr::run_blocking(
        tlr::Input::Memory(tlr::MemoryFrames::new(frames).unwrap()),
        options,
        tlr::events::no_events(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap()
}

/// `tlr watch DIR -o OUT --json` with quick settings (`--until-idle 1` unless `extra` sets it) and
/// `extra`, not started yet.
pub fn quick_watch(dir: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlr"));
    cmd.arg("watch").arg(dir).arg("-o").arg(out);
    if !extra.contains(&"--until-idle") {
        cmd.args(["--until-idle", "1"]);
    }
    cmd.args([
        "--stable-ms",
        "100",
        "--json",
        "--bootstrap",
        "5",
        "--parallel-tiles",
        "2",
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs a quick watch to its end: (exit code, JSON events, stderr).
pub fn run_quick(
    dir: &Path,
    out: &Path,
    extra: &[&str],
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let output = quick_watch(dir, out, extra)
        .output()
        .expect("run tlr watch");
    let events = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    (
        output.status.code(),
        events,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}
