//! Surfaces bench (issue 14 §2): RMS error against the truth of star-less stacks on simulated
//! granulation and lunar scenes whose seeing varies across the field, for the frame and tile weights
//! and best-N % selections. Prints figures; asserts nothing. Quality figures only (no timings), so it
//! can run on a busy machine.
//!
//! Per scene (`SurfaceSim`, 256x224 by default, seeing variation 0.3 and 0 — a uniform blur per frame
//! — unless `TLR_BENCH_VARIATION` says otherwise), in memory, in 64 px tiles, the same frames are
//! stacked as:
//! - `global stack`: whole-frame registration only (`--global-only`), global weights `G_f`;
//! - `tiles, G only`: tile-local registration, the tiles weighted by `G_f` (no per-tile measure);
//! - `tiles + L`: tile-local, star-less tiles weighted by their own sharpness (the default);
//! - `tiles + L, best N %`: and per-tile best-N % (`registration.local_tiles.keep_best_percent`);
//! - `tiles, global best N %`: the frames' best-N % (`registration.global.keep_best_percent`) instead.
//!
//! The score is [`rms_against_truth`] (after whole-frame placement and a linear level fit, over the
//! interior without a 24 px border), lower is better.
//!
//! Run: `cargo bench -p tlr --bench surfaces`, or in the (optimised) dev profile
//! `cargo test -p tlr --bench surfaces` (env `TLR_BENCH_FRAMES` (60), `TLR_BENCH_SIZE` (256x224 for
//! 256), `TLR_BENCH_SCENES` (`granulation,lunar`), `TLR_BENCH_VARIATION` (`0.3,0`),
//! `TLR_BENCH_KEEP` (25), `TLR_BENCH_TILE` (64: `tile.max_size`, the tile edge on surfaces)).

use std::sync::Arc;

use tlr::core::operator::{reconstruct_tile, OperatorParams, TileStack};
use tlr::core::simulate::{rms_against_truth, SurfaceConfig, SurfaceScene, SurfaceSim};
use tlr::settings::operator_params;
use tlr::{Input, MemoryFrames, PipelineOptions, Registration};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One way of stacking: registration, per-tile sharpness weights, per-tile and global best-N %.
struct Variant {
    label: &'static str,
    registration: Registration,
    tile_sharpness: bool,
    local_keep: f64,
    global_keep: f64,
}

/// The RMS error against `truth` of the stack of `frames` made as `variant` says.
fn stack(frames: &[ndarray::Array2<f32>], truth: &ndarray::Array2<f32>, variant: &Variant) -> f32 {
    let mut options = PipelineOptions {
        registration: variant.registration,
        ..PipelineOptions::default()
    };
    options.config.registration.global.keep_best_percent = variant.global_keep;
    options.config.tile.max_size = env_or("TLR_BENCH_TILE", 64usize);
    let kept = (variant.local_keep / 100.0 * variant.global_keep / 100.0 * frames.len() as f64)
        .ceil() as usize;
    let params = OperatorParams {
        tile_sharpness: variant.tile_sharpness,
        keep_best_percent: variant.local_keep as f32,
        min_valid_frames: 10.min(kept.max(1)),
        ..operator_params(&options.config, variant.registration)
    };
    options.processor = Some(Arc::new(move |s: &TileStack| reconstruct_tile(s, &params)));
    let input = Input::Memory(MemoryFrames::new(frames.to_vec()).expect("frames"));
    let out = tlr::run_blocking(
        input,
        options,
        Arc::new(|_: &tlr::Event| {}),
        tlr::CancellationToken::new(),
    )
    .expect("the run succeeds");
    rms_against_truth(&out.image, truth, 24)
}

fn main() {
    let frames = env_or("TLR_BENCH_FRAMES", 60usize);
    let size = env_or("TLR_BENCH_SIZE", 256usize);
    let keep = env_or("TLR_BENCH_KEEP", 25.0f64);
    let scenes = std::env::var("TLR_BENCH_SCENES").unwrap_or_else(|_| "granulation,lunar".into());
    let variations = std::env::var("TLR_BENCH_VARIATION").unwrap_or_else(|_| "0.3,0".into());
    let variants = [
        Variant {
            label: "global stack",
            registration: Registration::GlobalOnly,
            tile_sharpness: false,
            local_keep: 100.0,
            global_keep: 100.0,
        },
        Variant {
            label: "tiles, G only",
            registration: Registration::TileLocal,
            tile_sharpness: false,
            local_keep: 100.0,
            global_keep: 100.0,
        },
        Variant {
            label: "tiles + L",
            registration: Registration::TileLocal,
            tile_sharpness: true,
            local_keep: 100.0,
            global_keep: 100.0,
        },
        Variant {
            label: "tiles + L, best N % per tile",
            registration: Registration::TileLocal,
            tile_sharpness: true,
            local_keep: keep,
            global_keep: 100.0,
        },
        Variant {
            label: "tiles, global best N %",
            registration: Registration::TileLocal,
            tile_sharpness: false,
            local_keep: 100.0,
            global_keep: keep,
        },
    ];
    println!("{frames} frames of {size}x{}, N = {keep}", size * 7 / 8);
    println!(
        "{:<12} {:>9} {:<30} {:>9} {:>10}",
        "scene", "variation", "stack", "rms ADU", "vs global"
    );
    for scene in scenes.split(',') {
        let scene: SurfaceScene = scene.parse().expect("a surface scene");
        for variation in variations.split(',') {
            let mut cfg = SurfaceConfig::new(scene, frames, size, size * 7 / 8, 3);
            cfg.seeing_variation = variation.parse().expect("a seeing variation");
            let sim = SurfaceSim::new(cfg).expect("a valid simulation");
            let images: Vec<ndarray::Array2<f32>> = sim.frames().map(|f| f.image).collect();
            let mut global = f32::NAN;
            for variant in &variants {
                let rms = stack(&images, sim.truth(), variant);
                if variant.registration == Registration::GlobalOnly {
                    global = rms;
                }
                println!(
                    "{:<12} {:>9} {:<30} {:>9.2} {:>10.3}",
                    format!("{scene:?}"),
                    variation,
                    variant.label,
                    rms,
                    rms / global
                );
            }
        }
    }
}
