//! Whole-pipeline benchmark (issue 4's speed and memory targets). Prints figures; asserts nothing.
//!
//! Simulates `--scenario seeing --frames 100 --width 1024 --height 1024` once (cached under
//! `target/bench-data/`), then runs the `tlr` binary on it with 1 and 2 workers in this one process's
//! lifetime, alternating (which goes first alternates from round to round), and reports per run: wall
//! time, CPU time (and so how many cores were busy), the child's peak RSS (VmHWM) and the bytes it read
//! relative to the data set size; then the speed-up 1 → 2 workers measured in this run, three ways: best
//! wall of each, the median over rounds of back-to-back pairs, and the ratio of cores kept busy (the
//! machine's speed drifts by up to ±20 % within a minute; the last does not depend on it).
//!
//! Run: `cargo bench -p tlr --bench pipeline` (env `TLR_BENCH_FRAMES`, `TLR_BENCH_SIZE`, `TLR_BENCH_REPEAT`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tlr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tlr"))
}

fn dataset(frames: usize, size: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(format!("seeing-{frames}x{size}"));
    if !dir.join(format!("frame_{:04}.fits", frames - 1)).exists() {
        let status = tlr()
            .args([
                "simulate",
                dir.to_str().unwrap(),
                "--scenario",
                "seeing",
                "--seed",
                "1",
            ])
            .args(["--frames", &frames.to_string()])
            .args(["--width", &size.to_string(), "--height", &size.to_string()])
            .status()
            .expect("tlr simulate runs");
        assert!(status.success(), "simulate failed");
    }
    dir
}

fn data_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("frame_"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

struct Figures {
    wall_s: f64,
    /// User + system CPU time of the child run.
    cpu_s: f64,
    peak_rss_mib: f64,
    bytes_read: f64,
    tiles: u64,
}

/// User + system CPU seconds of all waited-for children so far.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn run(dir: &Path, workers: usize, out: &Path, global_only: bool) -> Figures {
    let cpu_before = children_cpu_s();
    let started = Instant::now();
    let mut cmd = tlr();
    cmd.args([
        "run",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ])
    .args(["--parallel-tiles", &workers.to_string()]);
    if global_only {
        cmd.arg("--global-only");
    }
    let output = cmd.output().expect("tlr run runs");
    let wall_s = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .expect("a finished event")["summary"]
        .clone();
    Figures {
        wall_s,
        cpu_s: children_cpu_s() - cpu_before,
        peak_rss_mib: summary["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        bytes_read: summary["bytes_read"].as_f64().unwrap_or(f64::NAN),
        tiles: summary["tiles_total"].as_u64().unwrap_or(0),
    }
}

fn main() {
    let frames = env_usize("TLR_BENCH_FRAMES", 100);
    let size = env_usize("TLR_BENCH_SIZE", 1024);
    let repeat = env_usize("TLR_BENCH_REPEAT", 2);
    let dir = dataset(frames, size);
    let total = data_bytes(&dir) as f64;
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("bench.fits");
    println!(
        "pipeline benchmark: {frames} frames of {size}x{size} (seeing), data set {:.1} MB",
        total / 1e6
    );
    let mut best = [f64::INFINITY; 2];
    let mut busy: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut paired = Vec::new();
    for round in 0..repeat {
        // Alternate which goes first, so that a drift of the machine's speed within a round favours
        // neither.
        let order = if round % 2 == 0 { [1usize, 2] } else { [2, 1] };
        let mut wall = [f64::NAN; 2];
        for workers in order {
            let slot = workers - 1;
            let f = run(&dir, workers, &out, false);
            best[slot] = best[slot].min(f.wall_s);
            wall[slot] = f.wall_s;
            busy[slot].push(f.cpu_s / f.wall_s);
            println!(
                "round {round} workers {workers}: wall {:.2} s, CPU {:.2} s ({:.2} cores busy), peak RSS {:.0} MiB, \
                 read {:.2}x the data set, {} tiles",
                f.wall_s,
                f.cpu_s,
                f.cpu_s / f.wall_s,
                f.peak_rss_mib,
                f.bytes_read / total,
                f.tiles
            );
        }
        paired.push(wall[0] / wall[1]);
        println!(
            "round {round}: speed-up 1 -> 2 workers {:.2}x",
            wall[0] / wall[1]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
        }
    };
    println!(
        "best wall: 1 worker {:.2} s, 2 workers {:.2} s, speed-up 1 -> 2 workers {:.2}x",
        best[0],
        best[1],
        best[0] / best[1]
    );
    println!(
        "speed-up 1 -> 2 workers per round (back-to-back runs): median {:.2}x",
        median(&mut paired)
    );
    // The machine's speed drifts; how busy the cores were during a run does not.
    let (busy1, busy2) = (median(&mut busy[0]), median(&mut busy[1]));
    println!(
        "cores busy (median over rounds): 1 worker {busy1:.2}, 2 workers {busy2:.2} of 2 \
         (their ratio {:.2}x is the speed-up for equal CPU work)",
        busy2 / busy1
    );
    let g = run(&dir, 2, &out, true);
    println!("global-only baseline, 2 workers: wall {:.2} s", g.wall_s);
}
