//! Writing a simulated surface sequence ([`write_surface_sequence`]): the frames as FITS files or as
//! one SER video, `truth.fits` and `surface.json` (the [`SurfaceConfig`]), each file written
//! atomically. Frames are rendered and written one at a time.
//!
//! What it does not: render (see [`super::surface`]) or write star scenes ([`super::write_sequence`]).

use std::path::{Path, PathBuf};

use super::surface::{SurfaceConfig, SurfaceSim};
use super::{frame_file_name, SimError, TRUTH_FILE};
use crate::fits::{write_image_atomic, CardValue, OutputMeta, SampleFormat};

/// File name of the configuration of a surface simulation.
pub const SURFACE_CONFIG_FILE: &str = "surface.json";
/// File name of the SER video of a surface simulation.
pub const SURFACE_SER_FILE: &str = "capture.ser";
/// Seconds between two simulated frames (a 100 fps capture).
pub const FRAME_INTERVAL_S: f64 = 0.01;
/// Time of the first simulated frame: 2026-11-27T12:00:00 UTC, in seconds since 1970.
const START_EPOCH_S: f64 = 1_795_780_800.0;

/// How the frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurfaceOutput {
    /// `frame_0000.fits`, ... (16-bit).
    Fits,
    /// One `capture.ser` (8 or 16 bit as the configuration's camera), with timestamps.
    Ser,
}

/// What [`write_surface_sequence`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SurfaceSummary {
    /// The frame files (one SER file, or one FITS file per frame).
    pub frames: Vec<PathBuf>,
    /// `truth.fits`.
    pub truth: PathBuf,
    /// Mean RMS length of the local distortion vectors over the frames, px.
    pub local_rms_px: f32,
}

/// Simulates `cfg` and writes it into `dir` (created if missing).
///
/// # Errors
/// [`SimError::InvalidConfig`] before anything is written; [`SimError::Io`] / [`SimError::Fits`] /
/// [`SimError::Json`] naming the file that failed.
pub fn write_surface_sequence(
    cfg: &SurfaceConfig,
    dir: &Path,
    output: SurfaceOutput,
) -> Result<SurfaceSummary, SimError> {
    let sim = SurfaceSim::new(cfg.clone())?;
    std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let fits_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimError::Fits { path, source }
    };
    let mut rms_sum = 0.0f64;
    let mut frames = Vec::new();
    match output {
        SurfaceOutput::Fits => {
            for frame in sim.frames() {
                rms_sum += f64::from(frame.local_rms_px);
                let path = dir.join(frame_file_name(frame.index));
                let time = START_EPOCH_S + frame.index as f64 * FRAME_INTERVAL_S;
                let meta = OutputMeta::default()
                    .with_card(
                        crate::fits::KEY_DATE_OBS,
                        CardValue::Str(crate::fits::format_utc(time).unwrap_or_default()),
                        "UTC start of exposure",
                    )
                    .with_card(
                        crate::fits::KEY_CREATOR,
                        CardValue::Str("synthetic camera (tlr-core simulate surface)".into()),
                        "simulated input frame",
                    )
                    .with_card(
                        "SIMFRAME",
                        CardValue::Int(frame.index as i64),
                        "frame index",
                    );
                write_image_atomic(&path, frame.image.view(), SampleFormat::U16, &meta)
                    .map_err(fits_err(&path))?;
                frames.push(path);
            }
        }
        SurfaceOutput::Ser => {
            let path = dir.join(SURFACE_SER_FILE);
            let times: Vec<f64> = (0..cfg.frames)
                .map(|i| START_EPOCH_S + i as f64 * FRAME_INTERVAL_S)
                .collect();
            let format = crate::ser::SerFrameFormat {
                color: crate::ser::SerColor::Mono,
                bits: cfg.bits,
            };
            let images = sim.frames().map(|f| {
                rms_sum += f64::from(f.local_rms_px);
                f.image
            });
            crate::ser::write_ser(&path, format, images, Some(&times)).map_err(|e| {
                SimError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(crate::report(&e)),
                }
            })?;
            frames.push(path);
        }
    }
    let truth = dir.join(TRUTH_FILE);
    let meta = OutputMeta::tlr_output("truth")
        .with_history("truth of a tlr surface simulation: no seeing, motion or noise");
    write_image_atomic(&truth, sim.truth().view(), SampleFormat::F32, &meta)
        .map_err(fits_err(&truth))?;
    super::write::write_json_atomic(&dir.join(SURFACE_CONFIG_FILE), cfg)?;
    Ok(SurfaceSummary {
        frames,
        truth,
        local_rms_px: (rms_sum / cfg.frames.max(1) as f64) as f32,
    })
}
