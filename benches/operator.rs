//! Benchmarks of the per-tile operator (issue 3): one registration of a 128x128 tile against a prepared
//! reference (targets: <= 0.1 ms median on one core), Lanczos resampling of a tile, and the whole operator
//! on a 128x128 x 100-frame stack with 3 iterations (target <= 80 ms). Data come from the project's
//! simulator (`seeing` scenario), cut like the pipeline's reader does.
//!
//! Every benchmark runs twice: `operator/...` measures wall-clock time (criterion's default) and
//! `operator-cpu/...` measures the CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`), which
//! stays meaningful when the machine is shared (this one has 2 cores and several users).
//!
//! Run: `cargo bench --bench operator`.

use criterion::measurement::Measurement;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ndarray::{s, Array2, Array3};
use tlr_core::geom::{Shift, TileBox};
use tlr_core::operator::{reconstruct_tile, FrameInput, Mode, OperatorParams, TileStack};
use tlr_core::register::{register, Reference};
use tlr_core::resample::{sample_shifted, Resampler};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

#[path = "cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;

const TILE: usize = 128;
const MARGIN: usize = 32;

/// A 100-frame `seeing` stack of one 128x128 tile (margin 32) in the middle of a 256x256 simulation.
fn tile_stack(frames: usize) -> TileStack {
    let size = 256;
    let sim = Simulation::new(SimConfig::new(Scenario::Seeing, frames, size, size, 7));
    let tile = TileBox {
        index: 0,
        x0: 64,
        y0: 64,
        w: TILE,
        h: TILE,
    };
    let (ch, cw) = (TILE + 2 * MARGIN, TILE + 2 * MARGIN);
    let mut cutouts = Array3::from_elem((frames, ch, cw), f32::NAN);
    let mut inputs = Vec::new();
    for i in 0..frames {
        let frame = sim.frame(i);
        let g = sim.global_displacement(i);
        let (iy, ix) = (g.dy.round() as i64, g.dx.round() as i64);
        let y0 = tile.y0 as i64 + iy - MARGIN as i64;
        let x0 = tile.x0 as i64 + ix - MARGIN as i64;
        for r in 0..ch {
            for c in 0..cw {
                let (fr, fc) = (y0 + r as i64, x0 + c as i64);
                if fr >= 0 && fc >= 0 && (fr as usize) < size && (fc as usize) < size {
                    cutouts[[i, r, c]] = frame[[fr as usize, fc as usize]];
                }
            }
        }
        inputs.push(FrameInput {
            index: i,
            weight: 1.0,
            scale: 1.0,
            prior_shift: Shift::new(g.dy - iy as f32, g.dx - ix as f32),
        });
    }
    TileStack {
        tile,
        margin: MARGIN,
        cutouts,
        frames: inputs,
    }
}

fn wall(c: &mut Criterion) {
    benches(c, "operator");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    benches(c, "operator-cpu");
}

fn benches<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let stack = tile_stack(100);
    // Reference: the per-pixel median of the stack's cores (what the operator's first round uses).
    let n = stack.frames.len();
    let mut reference = Array2::from_elem((TILE, TILE), 0.0f32);
    let mut col = Vec::with_capacity(n);
    for r in 0..TILE {
        for cc in 0..TILE {
            col.clear();
            col.extend((0..n).map(|f| stack.cutouts[[f, r + MARGIN, cc + MARGIN]]));
            reference[[r, cc]] = tlr_core::stats::median(&col);
        }
    }
    let prepared = Reference::new(reference.view());
    let frame = stack.cutouts.slice(s![37, .., ..]).to_owned();
    let prior = stack.frames[37].prior_shift;

    let mut group = c.benchmark_group(name);
    group.bench_function("register 128x128, start at prior", |b| {
        b.iter(|| register(black_box(&prepared), black_box(frame.view()), Some(prior)))
    });
    let warm = register(&prepared, frame.view(), Some(prior)).shift;
    group.bench_function(
        "register 128x128, warm start (previous round's shift)",
        |b| b.iter(|| register(black_box(&prepared), black_box(frame.view()), Some(warm))),
    );
    group.bench_function("register 128x128, FFT search (no start)", |b| {
        b.iter(|| register(black_box(&prepared), black_box(frame.view()), None))
    });
    group.bench_function("Reference::new 128x128", |b| {
        b.iter(|| Reference::new(black_box(reference.view())))
    });
    let mut out = Array2::from_elem((TILE, TILE), 0.0f32);
    let mut resampler = Resampler::new();
    group.bench_function("Lanczos-3 resample 128x128", |b| {
        b.iter(|| resampler.sample_shifted(black_box(frame.view()), 32.37, 31.61, out.view_mut()))
    });
    group.bench_function("Lanczos-3 resample 128x128 (one-shot API)", |b| {
        b.iter(|| sample_shifted(black_box(frame.view()), 32.37, 31.61, out.view_mut()))
    });
    group.sample_size(20);
    let params = OperatorParams::default();
    group.bench_function("reconstruct_tile 128x128 x 100 frames, 3 iterations", |b| {
        b.iter(|| reconstruct_tile(black_box(&stack), &params))
    });
    let no_early_stop = OperatorParams {
        convergence_enabled: false,
        ..OperatorParams::default()
    };
    group.bench_function(
        "reconstruct_tile 128x128 x 100, 3 iterations, no early stop",
        |b| b.iter(|| reconstruct_tile(black_box(&stack), &no_early_stop)),
    );
    let global = OperatorParams {
        mode: Mode::GlobalOnly,
        ..OperatorParams::default()
    };
    group.bench_function(
        "reconstruct_tile 128x128 x 100, global-only baseline",
        |b| b.iter(|| reconstruct_tile(black_box(&stack), &global)),
    );
    group.finish();
    if name != "operator" {
        return;
    }
    let reg = register(&prepared, frame.view(), Some(prior));
    eprintln!("bench registration from the prior: {reg:?} (prior {prior:?})");
    let reg = register(&prepared, frame.view(), Some(warm));
    eprintln!("bench registration, warm start: {reg:?}");
    let r = reconstruct_tile(&stack, &params);
    eprintln!(
        "operator on the bench stack: valid {}, iterations {}, frames used {}, mean cc {:.3}, warp variance {:.3}",
        r.valid, r.iterations, r.frames_used, r.mean_cc, r.warp_variance
    );
}

criterion_group!(operator, wall);
criterion_group! {
    name = operator_cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(operator, operator_cpu);
