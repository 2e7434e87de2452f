//! Geometry bench (issue 10): where the stars of a result sit, against the simulator's truth. Prints
//! figures; asserts nothing. Quality figures only (no timings), so it can run on a busy machine.
//!
//! Simulates three scenes (cached under `target/bench-data/`): `seeing` (drift, jitter and a 1.5 px
//! RMS anisoplanatic field), `altaz` (the same plus 0.5 degrees of field rotation) and `mixed` (2
//! degrees of rotation and 12 px of drift on top of the seeing), then runs the `tlr` binary on each,
//! tile-local and `--global-only`, and prints per result the star position RMS against the sequence's
//! mean geometry (the time mean of every used frame's true displacement,
//! `Simulation::star_position_errors`), its mean offset, the RMS around that offset, the RMS of the
//! brightest 40 % of the stars (`bright`: faint stars' positions carry photon noise), the same stars'
//! RMS against the exact-motion stack of the same frames (`bright-orc`: the photon noise both share
//! cancels, the geometric error is left; `Simulation::exact_motion_stack`), and the median star FWHM.
//! The oracle's own row is printed first (its `bright` is the measurement's floor). `TLR_BENCH_BEFORE=/path/to/tlr` runs a second binary on the same frames (the before
//! figures of a change).
//!
//! Run: `cargo bench -p tlr --bench geometry` (env `TLR_BENCH_FRAMES` (100), `TLR_BENCH_SIZE` (1024),
//! `TLR_BENCH_SCENES` (`seeing,altaz,mixed`), `TLR_BENCH_BEFORE`).

use std::path::{Path, PathBuf};
use std::process::Command;

use tlr_core::simulate::{
    frame_file_name, write_sequence, Scenario, SimConfig, Simulation, StarPositionErrors,
};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The configuration of scene `name`.
fn scene(name: &str, frames: usize, size: usize) -> SimConfig {
    let scenario = match name {
        "seeing" => Scenario::Seeing,
        "static" => Scenario::Static,
        _ => Scenario::Altaz,
    };
    let mut cfg = SimConfig::new(scenario, frames, size, size, 1);
    if name == "mixed" {
        cfg.rotation_deg = Some(2.0);
        cfg.drift_px = 12.0;
    }
    cfg
}

/// The scene's frames on disk (written once).
fn dataset(name: &str, cfg: &SimConfig) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(format!("geometry-{name}-{}x{}", cfg.frames, cfg.width));
    if !dir.join("simulation.json").exists() {
        write_sequence(cfg, &dir).expect("the simulation is written");
    }
    dir
}

/// Runs `binary` on `dir` (`--global-only` when `global`) and returns the result and which frames it
/// used (from the diagnostics' `tile_report.json`).
fn run(binary: &Path, dir: &Path, label: &str, global: bool) -> (ndarray::Array2<f32>, Vec<usize>) {
    let out = std::env::temp_dir().join(format!("tlr-geometry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let result = out.join(format!("{label}.fits"));
    let diagnostics = out.join(format!("{label}.diagnostics"));
    let mut command = Command::new(binary);
    command.args(["run", dir.to_str().unwrap(), "--quiet", "-o"]);
    command.arg(&result).arg("--diagnostics").arg(&diagnostics);
    if global {
        command.arg("--global-only");
    }
    let status = command.status().expect("tlr runs");
    assert!(status.success(), "{label}: tlr failed");
    let (_, image) = tlr_core::fits::read_image(&result).expect("the result reads");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(diagnostics.join("tile_report.json")).unwrap(),
    )
    .unwrap();
    let used = report["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .enumerate()
                .filter(|(_, f)| f["used"].as_bool() == Some(true))
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    (image, used)
}

/// Share of the matched stars (the brightest) whose positions show the geometry rather than photon
/// noise: on the 40-frame scenes the oracle's error is 0.005-0.04 px for them and 0.25-0.3 px for the
/// faintest third.
const BRIGHT_FRACTION: f64 = 0.4;

/// One line of the table.
fn report(
    name: &str,
    binary: &str,
    label: &str,
    errors: &StarPositionErrors,
    oracle: &StarPositionErrors,
    fwhm: f32,
) {
    let bright = errors.brightest(BRIGHT_FRACTION);
    let (my, mx) = errors.mean();
    println!(
        "{name:<7} {binary:<7} {label:<12} {:>6} {:>8.3} {:>16} {:>9.3} {:>8.3} {:>10.3} {:>8.3}",
        errors.stars(),
        errors.rms_px(),
        format!("({my:+.3}, {mx:+.3})"),
        errors.rms_around_mean_px(),
        bright.rms_px(),
        bright.minus(oracle).rms_px(),
        fwhm
    );
}

fn main() {
    let frames = env_usize("TLR_BENCH_FRAMES", 100);
    let size = env_usize("TLR_BENCH_SIZE", 1024);
    let scenes = std::env::var("TLR_BENCH_SCENES").unwrap_or_else(|_| "seeing,altaz,mixed".into());
    let mut binaries = vec![("tlr", PathBuf::from(env!("CARGO_BIN_EXE_tlr")))];
    if let Ok(before) = std::env::var("TLR_BENCH_BEFORE") {
        binaries.push(("before", PathBuf::from(before)));
    }
    println!(
        "{:<7} {:<7} {:<12} {:>6} {:>8} {:>16} {:>9} {:>8} {:>10} {:>8}",
        "scene",
        "binary",
        "registration",
        "stars",
        "rms px",
        "mean offset px",
        "rms-mean",
        "bright",
        "bright-orc",
        "FWHM px"
    );
    for name in scenes.split(',') {
        let cfg = scene(name, frames, size);
        let dir = dataset(name, &cfg);
        let sim = Simulation::new(cfg);
        let mut oracle: Option<(Vec<usize>, StarPositionErrors)> = None;
        for (binary, path) in &binaries {
            for global in [false, true] {
                let label = format!("{name}-{binary}-{global}");
                let (image, used) = run(path, &dir, &label, global);
                if oracle.as_ref().is_none_or(|(u, _)| *u != used) {
                    let stack = exact_motion_stack(&sim, &dir, &used);
                    let errors = sim.star_position_errors(stack.view(), &used);
                    let fwhm = tlr_core::stars::measure(stack.view()).median_fwhm;
                    report(name, "oracle", "exact motion", &errors, &errors, fwhm);
                    oracle = Some((used.clone(), errors));
                }
                let errors = sim.star_position_errors(image.view(), &used);
                let fwhm = tlr_core::stars::measure(image.view()).median_fwhm;
                let mode = if global { "global" } else { "tile-local" };
                report(
                    name,
                    binary,
                    mode,
                    &errors,
                    &oracle.as_ref().unwrap().1,
                    fwhm,
                );
            }
        }
    }
}

/// The exact-motion stack of the scene's frames on disk over `used`.
fn exact_motion_stack(sim: &Simulation, dir: &Path, used: &[usize]) -> ndarray::Array2<f32> {
    let frames: Vec<ndarray::Array2<f32>> = (0..sim.frames())
        .map(|i| {
            tlr_core::fits::read_image(&dir.join(frame_file_name(i)))
                .expect("the frame reads")
                .1
        })
        .collect();
    let views: Vec<_> = frames.iter().map(|f| f.view()).collect();
    sim.exact_motion_stack(&views, used)
        .expect("the oracle of the scene's own frames")
}
