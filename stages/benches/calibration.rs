//! Calibration costs: the time to build a master from 50 frames of 1024² (sigma-clipped mean, all
//! cores), and what calibrating costs a whole run: the same raw lights (`tlr simulate --calibration`
//! detector) run with and without `--darks/--flats/--bias`, alternating, masters cached after the
//! first calibrated run. `TLR_BENCH_REPEAT` rounds (default 2), `TLR_BENCH_FRAMES` lights (default 30)
//! of `TLR_BENCH_SIZE`² (default 768). `TLR_BENCH_MASTER_DIR=DIR` only builds a master from DIR (for
//! `/usr/bin/time -v`: peak memory).
//! What it does not: compare with other programs, or measure memory itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ndarray::Array2;
use tlr::{Input, PipelineOptions};
use tlr_core::calibrate::{build_master, masters::BAND_BUDGET_BYTES, Combine};
use tlr_core::fits::{self, write_image_atomic, OutputMeta, SampleFormat};
use tlr_core::simulate::calibration::{write_calibration_set, CalibrationFrames};
use tlr_core::simulate::{Scenario, SimConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall and CPU seconds to build a master from 50 frames of 1024² (bias-like: pedestal, column
/// pattern, noise).
fn master_build(dir: &Path) -> (f64, f64) {
    let headers: Vec<_> = (0..50)
        .map(|k| {
            let image = Array2::from_shape_fn((1024, 1024), |(r, c)| {
                1000.0 + (c % 7) as f32 + ((r * 31 + c * 17 + k * 101) % 23) as f32
            });
            let path = dir.join(format!("bias_{k:03}.fits"));
            write_image_atomic(
                &path,
                image.view(),
                SampleFormat::U16,
                &OutputMeta::default(),
            )
            .unwrap();
            fits::read_header(&path).unwrap()
        })
        .collect();
    let threads = num_cpus().max(1);
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let master = build_master(&headers, Combine::default(), BAND_BUDGET_BYTES, threads).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(master.dim(), (1024, 1024));
    (seconds, cpu_seconds() - cpu)
}

/// CPU time (user + system) of this process so far, s: on a loaded machine it tells what the work
/// costs, which its wall time does not.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Wall and CPU seconds of one run.
fn run(lights: &Path, calibrated: Option<&Path>, out: &Path) -> (f64, f64) {
    let mut options = PipelineOptions::default();
    if let Some(set) = calibrated {
        let c = &mut options.config.calibration;
        (c.use_bias, c.use_dark, c.use_flat) = (true, true, true);
        c.bias_dir = Some(set.join("bias"));
        c.darks_dir = Some(set.join("darks"));
        c.flats_dir = Some(set.join("flats"));
        options.calibration_cache = Some(out.join("tlr-masters"));
    }
    let input = Input::Folder {
        dir: lights.to_path_buf(),
        scan: tlr_core::scan::ScanOptions::default(),
    };
    let (started, cpu) = (Instant::now(), cpu_seconds());
    tlr::run_blocking(
        input,
        options,
        Arc::new(|_| {}),
        tlr::CancellationToken::new(),
    )
    .unwrap();
    (started.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

/// `TLR_BENCH_MASTER_DIR=DIR`: only build a master (sigma-clipped mean, 2 threads) from the frames of
/// DIR, as a calibration folder is read, and print its size and time: run under `/usr/bin/time -v` for
/// the peak memory of building a master (e.g. 50 frames of 24 MP).
fn master_only(dir: &Path) {
    let headers: Vec<_> = tlr_core::scan::scan_folder(dir, &tlr_core::scan::ScanOptions::default())
        .unwrap()
        .frames;
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let master = build_master(&headers, Combine::default(), BAND_BUDGET_BYTES, 2).unwrap();
    println!(
        "master of {} frames of {}x{}: {:.2} s wall, {:.2} s CPU",
        headers.len(),
        master.ncols(),
        master.nrows(),
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
}

fn main() {
    if let Some(dir) = std::env::var_os("TLR_BENCH_MASTER_DIR") {
        return master_only(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let masters = dir.path().join("masters");
    std::fs::create_dir_all(&masters).unwrap();
    let (wall, cpu) = master_build(&masters);
    println!(
        "master of 50 frames of 1024x1024 (sigma-clipped mean, {} threads): {wall:.2} s wall, \
         {cpu:.2} s CPU",
        num_cpus()
    );
    let (frames, size, rounds) = (
        env("TLR_BENCH_FRAMES", 30),
        env("TLR_BENCH_SIZE", 768),
        env("TLR_BENCH_REPEAT", 2),
    );
    let cfg = SimConfig::new(Scenario::Seeing, frames, size, size, 3);
    let set = dir.path().join("set");
    write_calibration_set(&cfg, &set, CalibrationFrames::default()).unwrap();
    let lights = set.join("lights");
    // The first calibrated run builds and caches the masters.
    let first = run(&lights, Some(&set), dir.path());
    println!(
        "first calibrated run (masters built): {:.2} s wall, {:.2} s CPU",
        first.0, first.1
    );
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Which goes first alternates.
        let (plain, calibrated) = if round % 2 == 0 {
            let p = run(&lights, None, dir.path());
            (p, run(&lights, Some(&set), dir.path()))
        } else {
            let c = run(&lights, Some(&set), dir.path());
            (run(&lights, None, dir.path()), c)
        };
        println!(
            "round {round}: uncalibrated {:.2} s wall {:.2} s CPU, calibrated {:.2} s wall {:.2} s CPU",
            plain.0, plain.1, calibrated.0, calibrated.1
        );
        ratios.push((calibrated.0 / plain.0, calibrated.1 / plain.1));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "calibrated / uncalibrated run ({frames} frames of {size}², masters cached): median {:.3} \
         wall, {:.3} CPU",
        median(ratios.iter().map(|r| r.0).collect()),
        median(ratios.iter().map(|r| r.1).collect())
    );
}
