//! `tlr simulate OUT_DIR`: writes a deterministic synthetic sequence with known truth (a star field, or
//! with `--scene` a surface: granulation, lunar or planet, as FITS frames or one SER video).
//!
//! What it does not: reconstruct (see `tlr run` / `tlr demo`).

use clap::Args;
use std::path::PathBuf;

use super::Failure;
use tlr_core::bayer::CfaPattern;
use tlr_core::simulate::{self, Scenario, SimConfig, SurfaceConfig, SurfaceOutput, SurfaceScene};

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
    /// Simulate a star-less surface instead of a star field: granulation, lunar or planet (textured
    /// truth in truth.fits, anisoplanatic distortion, seeing blur and noise; see surface.json).
    #[arg(long)]
    pub scene: Option<SurfaceScene>,
    /// With --scene: write one SER video (capture.ser, with timestamps) instead of FITS frames.
    #[arg(long, requires = "scene")]
    pub ser: bool,
    /// With --scene: camera bit depth, 8 or 16 [default: 16].
    #[arg(long, requires = "scene")]
    pub bits: Option<u32>,
    /// With --scene: RMS of the distortion field per axis, px [default: 1.5].
    #[arg(long, requires = "scene")]
    pub distortion_rms: Option<f32>,
    /// With --scene: correlation length of the distortion field, px [default: 20].
    #[arg(long, requires = "scene")]
    pub correlation_length: Option<f32>,
    /// With --scene: spatial variation of the seeing within a frame, the RMS of ln FWHM across the
    /// field (e.g. 0.3; correlation length 64 px) [default: 0, a uniform blur per frame].
    #[arg(long, requires = "scene")]
    pub seeing_variation: Option<f32>,
}

/// `tlr simulate --scene`: a surface sequence with truth.
fn simulate_surface(args: &SimulateArgs, scene: SurfaceScene) -> Result<(), Failure> {
    let mut cfg = SurfaceConfig::new(scene, args.frames, args.width, args.height, args.seed)
        .with_bits(args.bits.unwrap_or(16));
    cfg.distortion_rms_px = args.distortion_rms.unwrap_or(cfg.distortion_rms_px);
    cfg.correlation_length_px = args.correlation_length.unwrap_or(cfg.correlation_length_px);
    cfg.seeing_variation = args.seeing_variation.unwrap_or(cfg.seeing_variation);
    cfg.validate().map_err(Failure::usage)?;
    let output = if args.ser {
        SurfaceOutput::Ser
    } else {
        SurfaceOutput::Fits
    };
    let started = std::time::Instant::now();
    let summary =
        simulate::write_surface_sequence(&cfg, &args.output, output).map_err(Failure::failed)?;
    eprintln!(
        "wrote {} {scene:?} frames of {}x{} (local distortion {:.2} px rms) to {} in {:.1} s",
        args.frames,
        args.width,
        args.height,
        summary.local_rms_px,
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Parses a Bayer pattern name (`RGGB`, `BGGR`, `GRBG`, `GBRG`) for clap.
pub(super) fn parse_pattern(value: &str) -> Result<CfaPattern, String> {
    value.parse::<CfaPattern>().map_err(|e| e.to_string())
}

/// Runs `tlr simulate`.
pub fn simulate(args: SimulateArgs) -> Result<(), Failure> {
    if let Some(scene) = args.scene {
        return simulate_surface(&args, scene);
    }
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
