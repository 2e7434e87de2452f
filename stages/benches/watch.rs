//! Tail-mode benchmark at the scale: the real `tlr watch` binary follows a folder that a
//! simulated capture program writes frames into at a steady rate (prints figures; no criterion
//! statistics: the quantity of interest is behaviour over time, not one kernel's speed).
//!
//! Frames of `TLR_BENCH_SIZE` x `TLR_BENCH_SIZE` px (default 2048) are written (u16, as cameras do,
//! directly under their final names) every `TLR_BENCH_INTERVAL_MS` (default 2000) until
//! `TLR_BENCH_FRAMES` (default 60) frames; `tlr watch --json` publishes a snapshot per frame (FITS +
//! PNG) and checkpoints every 10 frames, with its default completion policy (a file must be unchanged
//! for 500 ms before it is examined; `TLR_BENCH_STABLE_MS` passes `--stable-ms`). `TLR_BENCH_WORKERS` sets `--parallel-tiles` (default: the
//! configuration's choice). `TLR_BENCH_COLOR=RGGB` (or another pattern) writes raw Bayer frames
//! (`BAYERPAT`) instead of mono ones, for a colour session; `TLR_BENCH_FWHM` sets the seeing FWHM in
//! px (default the simulator's 3.2: Bayer planes in cell space; 1.4 and below: frames demosaiced one
//! by one). Printed, from the watcher's JSON events and the writer's clock:
//! - latency from a frame's completion on disk to the first published snapshot that includes it
//!   (mean / p95 / max, after the bootstrap has caught up), split into the wait for completion
//!   detection (completion -> hand-out) and processing + publication;
//! - backlog: frames complete on disk but not yet in a published snapshot, sampled as each frame
//!   completes, maximum per quarter of the run (keeps up = it does not grow);
//! - sustained rate: frames per second of tile-stage processing, and of the whole pipeline (reader,
//!   tiles, publisher) while it works off the frames that queued up on disk during the bootstrap;
//! - resident memory of the watcher after the bootstrap, after 50 frames and at the end, its peak.
//!
//! Run: `cargo bench -p tlr --bench watch` (env vars above to change the load); 200 frames at 2 s take
//! about 7 minutes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tlr_core::fits::{self, OutputMeta, SampleFormat};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore arguments.
    let size = env("TLR_BENCH_SIZE", 2048) as usize;
    let frames = env("TLR_BENCH_FRAMES", 60) as usize;
    let interval = Duration::from_millis(env("TLR_BENCH_INTERVAL_MS", 2000));
    let workers = std::env::var("TLR_BENCH_WORKERS").ok();
    let pattern: Option<tlr_core::bayer::CfaPattern> = match std::env::var("TLR_BENCH_COLOR") {
        Ok(name) => Some(name.parse()?),
        Err(_) => None,
    };
    let fwhm = std::env::var("TLR_BENCH_FWHM")
        .ok()
        .and_then(|v| v.parse::<f32>().ok());
    let distinct = 8usize.min(frames.max(1));
    let root = tempfile::tempdir()?;
    let (scratch, watched, outdir) = (
        root.path().join("scratch"),
        root.path().join("capture"),
        root.path().join("out"),
    );
    for d in [&scratch, &watched, &outdir] {
        fs::create_dir_all(d)?;
    }
    let t = Instant::now();
    // Distinct frames are simulated once and written again under new names (simulating is slower
    // than capturing).
    let pool: Vec<Vec<u8>> = {
        let config = SimConfig {
            frames: distinct,
            width: size,
            height: size,
            seed: 21,
            scenario: Scenario::Seeing,
            color: pattern,
            ..SimConfig::default()
        };
        let sim = Simulation::new(match fwhm {
            Some(px) => config.with_seeing_fwhm(px),
            None => config,
        });
        let meta = match pattern {
            Some(p) => OutputMeta::default().with_card(
                "BAYERPAT",
                fits::CardValue::Str(p.name().to_string()),
                "Bayer pattern",
            ),
            None => OutputMeta::default(),
        };
        (0..distinct)
            .map(|i| {
                let path = scratch.join(format!("f{i}.fits"));
                fits::write_image_atomic(&path, sim.frame(i).view(), SampleFormat::U16, &meta)?;
                Ok(fs::read(&path)?)
            })
            .collect::<anyhow::Result<_>>()?
    };
    eprintln!(
        "simulated {distinct} frames of {size}x{size} in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let out = outdir.join("live.fits");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlr"));
    cmd.arg("watch")
        .arg(&watched)
        .arg("-o")
        .arg(&out)
        .args(["--json", "--until-idle", "6"]);
    if let Some(w) = &workers {
        cmd.args(["--parallel-tiles", w]);
    }
    if let Ok(ms) = std::env::var("TLR_BENCH_STABLE_MS") {
        cmd.args(["--stable-ms", &ms]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel::<(Instant, Value)>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send((Instant::now(), v));
            }
        }
    });

    // The capture program: frame i completes at about start + i * interval.
    let started = Instant::now();
    let mut completed: Vec<Instant> = Vec::with_capacity(frames);
    let mut late = 0usize;
    for i in 0..frames {
        let due = started + interval * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else if i > 0 && !interval.is_zero() {
            late += 1;
        }
        let path = watched.join(format!("light_{i:05}.fits"));
        let mut f = fs::File::create(&path)?;
        f.write_all(&pool[i % distinct])?;
        drop(f);
        completed.push(Instant::now());
    }
    let status = child.wait()?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("event reader panicked"))?;
    anyhow::ensure!(status.success(), "tlr watch failed: {status}");
    let events: Vec<(Instant, Value)> = rx.try_iter().collect();

    // Hand-out times (FrameSeen) and snapshots (time, frames in it, RSS).
    let mut handed: BTreeMap<String, Instant> = BTreeMap::new();
    let mut added: BTreeMap<String, Instant> = BTreeMap::new();
    let mut snaps: Vec<(Instant, usize, u64)> = Vec::new();
    let mut bootstrap_frames = 0usize;
    let mut summary = Value::Null;
    for (at, e) in &events {
        match e["event"].as_str() {
            Some("frame_seen") => {
                if let Some(n) = e["name"].as_str() {
                    handed.insert(n.to_string(), *at);
                }
            }
            Some("frame_used") => {
                if let Some(n) = e["name"].as_str() {
                    added.insert(n.to_string(), *at);
                }
            }
            Some("snapshot") => snaps.push((
                *at,
                e["frames_used"].as_u64().unwrap_or(0) as usize,
                e["resident_mib"].as_u64().unwrap_or(0),
            )),
            Some("bootstrapped") => bootstrap_frames = e["frames"].as_u64().unwrap_or(0) as usize,
            Some("finished") => summary = e["summary"].clone(),
            _ => {}
        }
    }
    let used = summary["frames_used"].as_array().map_or(0, Vec::len);
    // Frame i is in the first snapshot with at least i + 1 frames (frames are used in order).
    let in_snapshot = |i: usize| snaps.iter().find(|s| s.1 > i).map(|s| s.0);
    let bootstrap_done = in_snapshot(bootstrap_frames.saturating_sub(1));
    let mut total = Vec::new();
    let mut detect = Vec::new();
    let mut steady = Vec::new();
    // Steady-state stages: completion -> read (frame_seen), -> added to the tiles (frame_used), ->
    // published.
    let mut stage_times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (i, done) in completed.iter().enumerate().skip(bootstrap_frames) {
        let Some(snap) = in_snapshot(i) else { continue };
        let lat = snap.duration_since(*done).as_secs_f64();
        total.push(lat);
        if let Some(h) = handed.get(&format!("light_{i:05}.fits")) {
            detect.push(h.saturating_duration_since(*done).as_secs_f64());
        }
        // Steady state: frames completed after the bootstrap's snapshot plus one interval.
        if bootstrap_done.is_some_and(|b| *done > b + interval) {
            steady.push(lat);
            let name = format!("light_{i:05}.fits");
            if let (Some(h), Some(a)) = (handed.get(&name), added.get(&name)) {
                stage_times[0].push(h.saturating_duration_since(*done).as_secs_f64());
                stage_times[1].push(a.saturating_duration_since(*h).as_secs_f64());
                stage_times[2].push(snap.saturating_duration_since(*a).as_secs_f64());
            }
        }
    }
    let stats = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        (
            mean,
            percentile(&s, 0.95),
            s.last().copied().unwrap_or(f64::NAN),
        )
    };
    // Backlog when frame i completes: frames complete by then and not in a snapshot yet.
    let backlog: Vec<usize> = completed
        .iter()
        .map(|&t| {
            let published = snaps
                .iter()
                .filter(|s| s.0 <= t)
                .map(|s| s.1)
                .max()
                .unwrap_or(0);
            let complete = completed.iter().filter(|&&c| c <= t).count();
            complete.saturating_sub(published)
        })
        .collect();
    let quarter = (frames / 4).max(1);
    let backlog_max: Vec<usize> = backlog
        .chunks(quarter)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    let rss_at = |n: usize| snaps.iter().find(|s| s.1 >= n).map(|s| s.2);
    let last_snap = snaps.last().copied();

    println!(
        "tlr watch bench: {frames} frames of {size}x{size} written every {:.2} s ({late} writes late), \
         snapshot (FITS + PNG) per frame, checkpoint every 10 frames, workers {}",
        interval.as_secs_f64(),
        workers.as_deref().unwrap_or("default")
    );
    println!(
        "  frames used {used} of {frames}; bootstrap of {bootstrap_frames} frames published {:.1} s \
         after the first frame completed",
        bootstrap_done.map_or(f64::NAN, |b| b.duration_since(completed[0]).as_secs_f64())
    );
    let (m, p, x) = stats(&total);
    println!("  latency completion -> snapshot, all frames after bootstrap: mean {m:.2} s, p95 {p:.2} s, max {x:.2} s");
    let (m, p, x) = stats(&steady);
    println!(
        "  latency completion -> snapshot, steady state ({} frames): mean {m:.2} s, p95 {p:.2} s, max {x:.2} s",
        steady.len()
    );
    let (m, _, x) = stats(&detect);
    println!(
        "    completion detection + read, all frames after bootstrap: mean {m:.2} s, max {x:.2} s"
    );
    let stable = std::env::var("TLR_BENCH_STABLE_MS").unwrap_or_else(|_| "500 (default)".into());
    let first = format!("completion -> read (stable for {stable} ms + checks + read)");
    for (label, v) in [
        first.as_str(),
        "read -> added to the tiles (global pass + tile stage)",
        "added -> snapshot published (blend + FITS + PNG)",
    ]
    .iter()
    .zip(&stage_times)
    {
        let (m, p, x) = stats(v);
        println!("    steady state, {label}: mean {m:.2} s, p95 {p:.2} s, max {x:.2} s");
    }
    println!("  backlog (complete, not yet published) max per quarter of the run: {backlog_max:?}");
    // Whole-pipeline capacity: the catch-up after the bootstrap (frames queued on disk meanwhile),
    // from the bootstrap's snapshot to the first snapshot whose newest frame is less than one
    // interval old.
    let boot_snap = snaps.iter().find(|s| s.1 >= bootstrap_frames).copied();
    let caught_up = snaps.iter().copied().find(|s| {
        s.1 > 0
            && boot_snap.is_some_and(|b| s.0 > b.0)
            && completed
                .get(s.1 - 1)
                .is_some_and(|c| s.0.duration_since(*c) < interval + Duration::from_millis(1100))
    });
    let catch_up = match (boot_snap, caught_up) {
        (Some(b), Some(e)) if e.1 > b.1 => format!(
            "{} frames in {:.1} s = {:.2} frames/s",
            e.1 - b.1,
            e.0.duration_since(b.0).as_secs_f64(),
            (e.1 - b.1) as f64 / e.0.duration_since(b.0).as_secs_f64().max(1e-9)
        ),
        _ => "n/a".to_string(),
    };
    let after_boot = match (boot_snap, last_snap) {
        (Some(b), Some(e)) if e.1 > b.1 => format!(
            "{:.2} frames/s",
            (e.1 - b.1) as f64 / e.0.duration_since(b.0).as_secs_f64().max(1e-9)
        ),
        _ => "n/a".to_string(),
    };
    println!(
        "  sustained processing: {:.2} frames/s of tile-stage time; whole pipeline while catching up \
         after the bootstrap: {catch_up}; from the bootstrap to the end: {after_boot} \
         (= capacity with TLR_BENCH_INTERVAL_MS=0)",
        summary["frames_per_s"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "  watcher RSS: after bootstrap {:?} MiB, after 50 frames {:?} MiB, after 100 {:?} MiB, \
         after {} frames {:?} MiB; peak {} MiB",
        rss_at(bootstrap_frames),
        rss_at(50),
        rss_at(100),
        last_snap.map_or(0, |s| s.1),
        last_snap.map(|s| s.2),
        summary["peak_rss_mib"]
    );
    let step = (snaps.len() / 10).max(1);
    for (at, n, rss) in snaps.iter().step_by(step) {
        println!(
            "    t {:6.1} s: {n:4} frames published, RSS {rss:5} MiB",
            at.duration_since(started).as_secs_f64()
        );
    }
    Ok(())
}
