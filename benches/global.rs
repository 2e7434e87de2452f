//! Benchmarks of the global pass (issue 4): `measure_frame` (background, noise, star detection and
//! FWHM of one frame: the per-frame cost of the pass; target <= 15 ms on one core), its two parts, the
//! whole `GlobalPass::add_frame` (adds the star match against the reference) and `stars::measure`
//! (`tlr inspect`), all on simulated 1024 x 1024 frames (`SimConfig::default()`).
//!
//! Times are the CPU time of the benchmarking thread, not wall time: on a shared machine wall time
//! mostly measures the other processes.
//!
//! Run: `cargo bench --bench global` (a filter such as `-- measure_frame` runs one benchmark).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use std::time::Duration;
use tlr_core::global::{measure_frame, GlobalOptions, GlobalPass, MAX_MEASURED_STARS};
use tlr_core::simulate::{SimConfig, Simulation};
use tlr_core::stars::{detect_stars, measure, DetectOptions};
use tlr_core::stats::background_and_noise;

#[path = "cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;

fn frames(n: usize) -> Vec<Array2<f32>> {
    let sim = Simulation::new(SimConfig::default());
    (0..n).map(|i| sim.frame(i)).collect()
}

fn bench_global(c: &mut Criterion<ThreadCpuTime>) {
    let frames = frames(4);
    let options = GlobalOptions::default();
    let mut g = c.benchmark_group("global_1024");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("measure_frame", |b| {
        b.iter(|| measure_frame(black_box(frames[0].view()), &options))
    });
    g.bench_function("add_frame", |b| {
        let mut pass = GlobalPass::new();
        pass.add_frame(frames[0].view());
        let mut k = 0;
        b.iter(|| {
            k = k % (frames.len() - 1) + 1;
            pass.add_frame(black_box(frames[k].view()))
        })
    });
    g.bench_function("background_and_noise", |b| {
        b.iter(|| background_and_noise(black_box(frames[0].view()), options.background_samples))
    });
    let detect = DetectOptions {
        max_stars: MAX_MEASURED_STARS,
        ..DetectOptions::default()
    };
    g.bench_function("detect_stars_150", |b| {
        b.iter(|| detect_stars(black_box(frames[0].view()), &detect))
    });
    g.bench_function("stars_measure", |b| {
        b.iter(|| measure(black_box(frames[0].view())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_global
}
criterion_main!(benches);
