//! `tlr simulate OUT_DIR`: writes a deterministic synthetic sequence with known truth.
//!
//! What it does not: reconstruct (see `tlr run` / `tlr demo`).

use clap::Args;
use std::path::PathBuf;

use super::Failure;
use tlr_core::bayer::CfaPattern;
use tlr_core::simulate::{self, Scenario, SimConfig};

/// Arguments of `tlr simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    /// Folder to write the frames into (created if needed).
    pub output: PathBuf,
    /// Number of frames.
    #[arg(long, default_value_t = 100)]
    pub frames: usize,
    /// Frame width, px.
    #[arg(long, default_value_t = 1024)]
    pub width: usize,
    /// Frame height, px.
    #[arg(long, default_value_t = 1024)]
    pub height: usize,
    /// Random seed (the same seed gives the same files).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Motion model: static, seeing (local tip/tilt) or altaz (plus field rotation).
    #[arg(long, default_value = "seeing")]
    pub scenario: Scenario,
    /// Simulate a one-shot colour camera with this Bayer pattern (RGGB, BGGR, GRBG or GBRG).
    #[arg(long, value_parser = parse_pattern)]
    pub color: Option<CfaPattern>,
    /// Mean seeing FWHM of the stars, px (the per-frame spread scales with it); values below 2 give
    /// undersampled data, as from short-focal-length colour cameras.
    #[arg(long, default_value_t = SimConfig::default().fwhm_mean_px)]
    pub fwhm: f32,
    /// Raw frames that need calibrating (bias column pattern, dark current with hot pixels,
    /// vignetting and dust donuts) into OUT_DIR/lights, with 16 bias, dark and flat frames each in
    /// OUT_DIR/bias, OUT_DIR/darks and OUT_DIR/flats.
    #[arg(long)]
    pub calibration: bool,
}

/// Parses a Bayer pattern name (`RGGB`, `BGGR`, `GRBG`, `GBRG`) for clap.
pub(super) fn parse_pattern(value: &str) -> Result<CfaPattern, String> {
    value.parse::<CfaPattern>().map_err(|e| e.to_string())
}

/// Runs `tlr simulate`.
pub fn simulate(args: SimulateArgs) -> Result<(), Failure> {
    let cfg = SimConfig {
        frames: args.frames,
        width: args.width,
        height: args.height,
        seed: args.seed,
        scenario: args.scenario,
        color: args.color,
        ..SimConfig::default()
    }
    .with_seeing_fwhm(args.fwhm);
    // An impossible size or count is a command-line mistake (exit 2), not a failed write.
    cfg.validate().map_err(Failure::usage)?;
    let started = std::time::Instant::now();
    let summary = if args.calibration {
        let frames = simulate::calibration::CalibrationFrames::default();
        simulate::calibration::write_calibration_set(&cfg, &args.output, frames)
            .map_err(Failure::failed)?
            .0
    } else {
        simulate::write_sequence(&cfg, &args.output).map_err(Failure::failed)?
    };
    eprintln!(
        "wrote {} frames of {}x{} ({:?}) to {} in {:.1} s",
        args.frames,
        args.width,
        args.height,
        args.scenario,
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    let _ = summary;
    Ok(())
}
