//! End-to-end quality of the staged pipeline on the simulator (issue 4): the tile-local result is sharper
//! than the global-registration stack of the same frames, and the per-tile warp diagnostics follow the
//! simulated displacement field.

mod common;

use tlr::{PipelineOptions, Registration, RunOutput};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn simulation(scenario: Scenario) -> Simulation {
    Simulation::new(SimConfig {
        frames: 30,
        width: 448,
        height: 448,
        seed: 11,
        scenario,
        ..SimConfig::default()
    })
}

fn reconstruct(sim: &Simulation, registration: Registration) -> RunOutput {
    common::reconstruct_memory(
        sim,
        PipelineOptions {
            registration,
            ..PipelineOptions::default()
        },
    )
}

fn fwhm(run: &RunOutput) -> f32 {
    tlr_core::stars::measure(run.image.view()).median_fwhm
}

#[test]
fn tile_local_is_sharper_than_global_on_seeing_and_not_worse_on_static() {
    let seeing = simulation(Scenario::Seeing);
    let (local, global) = (
        fwhm(&reconstruct(&seeing, Registration::TileLocal)),
        fwhm(&reconstruct(&seeing, Registration::GlobalOnly)),
    );
    println!("seeing: tile-local FWHM {local:.3} px, global {global:.3} px");
    assert!(
        local < 0.95 * global,
        "seeing: local {local} vs global {global}"
    );

    let still = simulation(Scenario::Static);
    let (local, global) = (
        fwhm(&reconstruct(&still, Registration::TileLocal)),
        fwhm(&reconstruct(&still, Registration::GlobalOnly)),
    );
    println!("static: tile-local FWHM {local:.3} px, global {global:.3} px");
    assert!(
        local <= 1.02 * global,
        "static: local {local} vs global {global}"
    );
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn warp_diagnostics_follow_the_simulated_displacement_field() {
    let sim = simulation(Scenario::Seeing);
    let run = reconstruct(&sim, Registration::TileLocal);
    let (mut measured, mut truth) = (Vec::new(), Vec::new());
    for tile in run.tiles.iter().filter(|t| t.valid && t.fallback.is_none()) {
        for (slot, report) in tile.frames.iter().enumerate() {
            if !report.status.is_used() {
                continue;
            }
            let frame = run.used_frames[slot];
            let local = report.shift - frame.prior();
            // The truth: the local part of the simulated displacement, averaged over the tile.
            let (mut dy, mut dx, mut n) = (0.0f64, 0.0f64, 0.0f64);
            for fy in 0..8 {
                for fx in 0..8 {
                    let y = tile.tile.y0 as f32 + (fy as f32 + 0.5) * tile.tile.h as f32 / 8.0;
                    let x = tile.tile.x0 as f32 + (fx as f32 + 0.5) * tile.tile.w as f32 / 8.0;
                    let d = sim.local_displacement(frame.index, y, x);
                    dy += f64::from(d.dy);
                    dx += f64::from(d.dx);
                    n += 1.0;
                }
            }
            measured.extend([f64::from(local.dy), f64::from(local.dx)]);
            truth.extend([dy / n, dx / n]);
        }
    }
    assert!(
        measured.len() > 200,
        "too few tile/frame pairs: {}",
        measured.len()
    );
    let r = pearson(&measured, &truth);
    println!(
        "correlation of per-tile warps with the truth field: {r:.3} over {} values",
        measured.len()
    );
    assert!(
        r > 0.8,
        "warp maps do not follow the simulated field: r = {r}"
    );
}
