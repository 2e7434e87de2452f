//! Whole-pipeline benchmark (issue 4's speed and memory targets, issue 13's serial fraction). Prints
//! figures; asserts nothing.
//!
//! Simulates `--scenario seeing --frames 100 --width 1024 --height 1024` once (cached under
//! `target/bench-data/`), then runs the `tlr` binary on it with 1 and 2 workers in this one process's
//! lifetime, alternating (which goes first alternates from round to round), and reports per run: wall
//! time, CPU time (and so how many cores were busy), the child's peak RSS (VmHWM) and the bytes it read
//! relative to the data set size; then the speed-up 1 -> 2 workers measured in this run, three ways: best
//! wall of each, the median over rounds of back-to-back pairs, and the ratio of cores kept busy (the
//! machine's speed drifts by up to ±20 % within a minute; the last does not depend on it).
//!
//! Serial fraction (issue 13): every run is cut into phases by the arrival of its JSON events (start ->
//! `scanned` -> `global_done` -> first `tile_done` -> last `tile_done` -> `finished` -> `written` ->
//! exit). Per phase it prints the wall time, the CPU time of the child's threads and the cores they
//! *asked for* (CPU time plus time spent runnable on the run queue, from `/proc/PID/task/*/schedstat`,
//! per wall second): a phase that asks for one core with 2 workers is serial, whatever the machine's
//! load. From the whole-process wall times (median of back-to-back pairs) and from the in-pipeline time
//! (`elapsed_s` of the summary) it prints Amdahl's serial fraction `s = 2 / S2 - 1` and the projected
//! speed-ups `1 / (s + (1 - s) / n)` for 4, 8 and 16 workers next to the measured 1 and 2; and the same
//! from the cores asked for per phase (`CPU / min(asked, 2)` summed over phases: what the run would take
//! on two idle cores). That estimate does not depend on whether other processes took the cores
//! (waiting for a core counts as asking for it), but CPU seconds themselves grow when other jobs share
//! the caches and cores: measured on a shared 2-core machine it moved between 1.79x and 1.87x from one
//! bench run to the next, while the wall-time speed-up of single rounds moved between 0.65x and 2.05x.
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
    /// The run's own time from the scan to the summary (`elapsed_s`): the pipeline without process
    /// start, writing and exit.
    pipeline_s: f64,
    /// Per phase of [`PHASES`]: wall, CPU and asked-for seconds.
    phases: Vec<Phase>,
}

/// The phases of a CLI run, each ending at the arrival of an event (the last at the child's exit).
const PHASES: [(&str, &str); 7] = [
    ("start", "process start, configuration, scan"),
    ("scanned", "global pass (every frame once)"),
    (
        "global_done",
        "tile phase start: first tile row read, first tile",
    ),
    ("first tile", "tile phase"),
    ("last tile", "validity check, summary"),
    ("finished", "writing FITS, PNG, diagnostics"),
    ("written", "exit"),
];

/// One phase of one run.
#[derive(Clone, Copy, Default)]
struct Phase {
    wall_s: f64,
    /// CPU seconds of the child (the last phase: rusage minus what came before).
    cpu_s: f64,
    /// CPU seconds plus seconds the threads were runnable but waiting for a core: the cores the phase
    /// asked for, times its wall time.
    asked_s: f64,
}

/// The child's CPU seconds (all its threads, ended ones included: `/proc/PID/stat`) and the seconds its
/// threads were runnable but waiting for a core (`/proc/PID/task/*/schedstat`; an ended thread keeps
/// the last figure seen, and a thread that starts and ends between two events is not seen at all, so
/// this part is a lower bound). NaN without `/proc`.
#[derive(Default)]
struct ThreadTimes {
    waits: std::collections::HashMap<String, f64>,
}

impl ThreadTimes {
    /// `(CPU seconds, run-queue wait seconds)` of `pid` so far.
    fn sample(&mut self, pid: u32) -> (f64, f64) {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.filter_map(Result::ok) {
                let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
                    continue;
                };
                if let Some(Ok(wait)) = text.split_whitespace().nth(1).map(str::parse::<f64>) {
                    let tid = task.file_name().to_string_lossy().into_owned();
                    self.waits.insert(tid, wait * 1e-9);
                }
            }
        }
        let wait = if self.waits.is_empty() {
            f64::NAN
        } else {
            self.waits.values().sum()
        };
        (process_cpu_s(pid), wait)
    }
}

/// User + system CPU seconds of process `pid` (every thread, also those that ended), from
/// `/proc/PID/stat` (clock ticks).
fn process_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name may hold spaces: the fields that follow it start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |k: usize| fields.get(k).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) if hz > 0.0 => (user + system) / hz,
        _ => f64::NAN,
    }
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

/// Which phase boundaries (indices into [`PHASES`], 1 = the end of the first phase) the JSON event
/// `v` marks: none for most events; the first and the last tile may be one event.
fn boundaries(v: &serde_json::Value) -> Vec<usize> {
    let tile = |k: &str| v[k].as_u64();
    match v["event"].as_str() {
        Some("scanned") => vec![1],
        Some("global_done") => vec![2],
        Some("tile_done") => {
            let mut marks = Vec::new();
            if tile("done") == Some(1) {
                marks.push(3);
            }
            if tile("done") == tile("total") {
                marks.push(4);
            }
            marks
        }
        Some("finished") => vec![5],
        Some("written") => vec![6],
        _ => Vec::new(),
    }
}

fn run(dir: &Path, workers: usize, out: &Path, global_only: bool) -> Figures {
    use std::io::BufRead;
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
    .args(["--parallel-tiles", &workers.to_string()])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    if global_only {
        cmd.arg("--global-only");
    }
    let mut child = cmd.spawn().expect("tlr run runs");
    let pid = child.id();
    let mut threads = ThreadTimes::default();
    // (seconds since start, CPU, asked-for) at each phase boundary; index 0 is the start.
    let mut marks: Vec<Option<(f64, f64, f64)>> = vec![None; PHASES.len()];
    marks[0] = Some((0.0, 0.0, 0.0));
    let mut summary = serde_json::Value::Null;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        // Every event refreshes the thread figures, so that threads which end keep their time.
        let (cpu, wait) = threads.sample(pid);
        let at = (started.elapsed().as_secs_f64(), cpu, cpu + wait);
        for k in boundaries(&v) {
            marks[k] = Some(at);
        }
        if v["event"] == "finished" {
            summary = v["summary"].clone();
        }
    }
    let stderr = {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    };
    let status = child.wait().expect("tlr run ends");
    let wall_s = started.elapsed().as_secs_f64();
    assert!(status.success(), "run failed: {stderr}");
    let cpu_s = children_cpu_s() - cpu_before;
    // The exit phase ends with the child: its CPU time is the rest of the rusage figure, and the wait
    // on the run queue is no longer visible, so it counts as asking for the cores it used.
    let end = marks[PHASES.len() - 1].map_or((wall_s, f64::NAN, f64::NAN), |(_, cpu, asked)| {
        (wall_s, cpu_s, asked + (cpu_s - cpu))
    });
    let ends = marks[1..].iter().copied().chain(std::iter::once(Some(end)));
    let mut phases = Vec::with_capacity(PHASES.len());
    let mut last = marks[0].expect("start");
    for at in ends {
        phases.push(match at {
            Some(at) => {
                let phase = Phase {
                    wall_s: at.0 - last.0,
                    cpu_s: at.1 - last.1,
                    asked_s: at.2 - last.2,
                };
                last = at;
                phase
            }
            None => Phase {
                wall_s: f64::NAN,
                cpu_s: f64::NAN,
                asked_s: f64::NAN,
            },
        });
    }
    Figures {
        wall_s,
        cpu_s,
        peak_rss_mib: summary["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        bytes_read: summary["bytes_read"].as_f64().unwrap_or(f64::NAN),
        tiles: summary["tiles_total"].as_u64().unwrap_or(0),
        pipeline_s: summary["elapsed_s"].as_f64().unwrap_or(f64::NAN),
        phases,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Amdahl's serial fraction from the speed-up on two workers: `S2 = 1 / (s + (1 - s) / 2)`.
fn serial_fraction(speedup_2: f64) -> f64 {
    (2.0 / speedup_2 - 1.0).clamp(0.0, 1.0)
}

/// Amdahl's speed-up on `n` workers for the serial fraction `s`.
fn amdahl(s: f64, n: f64) -> f64 {
    1.0 / (s + (1.0 - s) / n)
}

/// One line: the measured speed-ups on 1 and 2 workers, the serial fraction and the projections.
fn print_amdahl(label: &str, speedup_2: f64) {
    let s = serial_fraction(speedup_2);
    println!(
        "{label}: measured 1 worker 1.00x, 2 workers {speedup_2:.2}x -> serial fraction s = {:.1} %; \
         projected 4 workers {:.2}x, 8 workers {:.2}x, 16 workers {:.2}x",
        100.0 * s,
        amdahl(s, 4.0),
        amdahl(s, 8.0),
        amdahl(s, 16.0)
    );
}

/// Per phase, the median over rounds of each figure, for 1 and 2 workers side by side; returns the
/// time each worker count would take on two idle cores (CPU / min(cores asked for, 2), summed).
fn print_phases(runs: &[Vec<Figures>; 2]) -> [f64; 2] {
    println!(
        "phases (median over rounds; busy = CPU / wall, asked = cores the threads wanted = (CPU + run-queue \
         wait) / wall; a phase asking for ~1 core with 2 workers is serial):"
    );
    println!(
        "  {:<52} {:>24} | {:>24}",
        "phase (ends at)", "1 worker: wall CPU asked", "2 workers: wall CPU asked"
    );
    let mut idle = [0.0; 2];
    for (k, (_, what)) in PHASES.iter().enumerate() {
        let ends = PHASES.get(k + 1).map_or("exit", |(name, _)| name);
        let mut cols = Vec::new();
        for (slot, list) in runs.iter().enumerate() {
            let pick = |f: fn(&Phase) -> f64| {
                median(&mut list.iter().map(|r| f(&r.phases[k])).collect::<Vec<_>>())
            };
            let (wall, cpu, asked) = (pick(|p| p.wall_s), pick(|p| p.cpu_s), pick(|p| p.asked_s));
            let cores = (asked / wall).clamp(1.0, 2.0);
            if cpu.is_finite() && cores.is_finite() {
                idle[slot] += cpu / cores;
            }
            cols.push(format!("{wall:7.2} s {cpu:6.2} s {:4.2}", asked / wall));
        }
        println!(
            "  {:<52} {:>24} | {:>24}",
            format!("{what} ({ends})"),
            cols[0],
            cols[1]
        );
    }
    idle
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
    let mut paired_pipeline = Vec::new();
    let mut runs: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    for round in 0..repeat {
        // Alternate which goes first, so that a drift of the machine's speed within a round favours
        // neither.
        let order = if round % 2 == 0 { [1usize, 2] } else { [2, 1] };
        let mut wall = [f64::NAN; 2];
        let mut pipeline = [f64::NAN; 2];
        for workers in order {
            let slot = workers - 1;
            let f = run(&dir, workers, &out, false);
            best[slot] = best[slot].min(f.wall_s);
            wall[slot] = f.wall_s;
            pipeline[slot] = f.pipeline_s;
            busy[slot].push(f.cpu_s / f.wall_s);
            println!(
                "round {round} workers {workers}: wall {:.2} s, CPU {:.2} s ({:.2} cores busy), peak RSS {:.0} MiB, \
                 read {:.2}x the data set, {} tiles; in-pipeline {:.2} s, outside it {:.2} s",
                f.wall_s,
                f.cpu_s,
                f.cpu_s / f.wall_s,
                f.peak_rss_mib,
                f.bytes_read / total,
                f.tiles,
                f.pipeline_s,
                f.wall_s - f.pipeline_s
            );
            runs[slot].push(f);
        }
        paired.push(wall[0] / wall[1]);
        paired_pipeline.push(pipeline[0] / pipeline[1]);
        println!(
            "round {round}: speed-up 1 -> 2 workers {:.2}x (in-pipeline {:.2}x)",
            wall[0] / wall[1],
            pipeline[0] / pipeline[1]
        );
    }
    println!(
        "best wall: 1 worker {:.2} s, 2 workers {:.2} s, speed-up 1 -> 2 workers {:.2}x",
        best[0],
        best[1],
        best[0] / best[1]
    );
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        format!("{lo:.2}-{hi:.2}x over {} rounds", v.len())
    };
    let whole = median(&mut paired.clone());
    let in_pipeline = median(&mut paired_pipeline.clone());
    println!(
        "speed-up 1 -> 2 workers per round (back-to-back runs): median {whole:.2}x (spread {}); \
         in-pipeline median {in_pipeline:.2}x (spread {})",
        spread(&paired),
        spread(&paired_pipeline)
    );
    // The machine's speed drifts; how busy the cores were during a run does not.
    let (busy1, busy2) = (median(&mut busy[0]), median(&mut busy[1]));
    println!(
        "cores busy (median over rounds): 1 worker {busy1:.2}, 2 workers {busy2:.2} of 2 \
         (their ratio {:.2}x is the speed-up for equal CPU work)",
        busy2 / busy1
    );
    let idle = print_phases(&runs);
    println!(
        "on two idle cores (CPU / cores asked for, per phase): 1 worker {:.2} s, 2 workers {:.2} s",
        idle[0], idle[1]
    );
    print_amdahl("whole process (wall, median pair)", whole);
    print_amdahl("in-pipeline (elapsed_s, median pair)", in_pipeline);
    print_amdahl(
        "whole process on two idle cores (asked-for cores)",
        idle[0] / idle[1],
    );
    let g = run(&dir, 2, &out, true);
    println!("global-only baseline, 2 workers: wall {:.2} s", g.wall_s);
}
