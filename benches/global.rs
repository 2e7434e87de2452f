//! Benchmarks of the global pass (issue 4): `measure_frame` (background, noise, star detection and
//! FWHM of one frame: the per-frame cost of the pass; target <= 15 ms on one core), its two parts, the
//! whole `GlobalPass::add_frame` (adds the star match against the reference) and `stars::measure`
//! (`tlr inspect`), all on simulated 1024 x 1024 frames (`SimConfig::default()`).
//!
//! Times are the CPU time of the benchmarking thread, not wall time: on a shared machine wall time
//! mostly measures the other processes.
//!
//! Run: `cargo bench --bench global` (a filter such as `-- measure_frame` runs one benchmark).

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array2;
use std::time::Duration;
use tlr_core::global::{measure_frame, GlobalOptions, GlobalPass, MAX_MEASURED_STARS};
use tlr_core::simulate::{SimConfig, Simulation};
use tlr_core::stars::{detect_stars, measure, DetectOptions};
use tlr_core::stats::background_and_noise;

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in ns.
struct ThreadCpuTime;

fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = f64;
    type Value = f64;
    fn start(&self) -> f64 {
        thread_cpu_ns()
    }
    fn end(&self, start: f64) -> f64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, value: &f64) -> f64 {
        *value
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Prints nanosecond values as "ms cpu" (or µs / ns for small ones).
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical >= 1e6 {
            (1e-6, "ms cpu")
        } else if typical >= 1e3 {
            (1e-3, "µs cpu")
        } else {
            (1.0, "ns cpu")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v = 0.0);
        "n/a"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

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
