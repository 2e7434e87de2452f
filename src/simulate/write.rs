//! Writing a simulated folder: [`write_sequence`] simulates a configuration and writes the frames
//! (16-bit FITS with DATE-OBS, EXPTIME, GAIN, … and, in colour mode, the Bayer cards), `truth.fits`,
//! `truth_rgb.fits` (colour mode), `truth_displacement.json` and `simulation.json`. Every file goes
//! through [`crate::atomic`] (the FITS files via [`crate::fits::write_image_atomic`] /
//! [`crate::fits::write_cube_atomic`], the JSON files via [`crate::atomic::write_bytes`]), so a reader
//! never sees a half-written file.
//!
//! What it does not: render (that is [`super::render`]), remove temporary files left by a killed
//! earlier run, or refuse to replace files of the same names (it replaces them).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    frame_file_name, SimConfig, SimError, Simulation, CONFIG_FILE, TRUTH_DISPLACEMENT_FILE,
    TRUTH_FILE, TRUTH_FWHM_PX, TRUTH_RGB_FILE,
};
use crate::bayer::CfaPattern;

/// What [`write_sequence`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSummary {
    /// The output folder.
    pub dir: PathBuf,
    /// The frame files, in order.
    pub frames: Vec<PathBuf>,
    /// `truth.fits`.
    pub truth: PathBuf,
    /// `truth_displacement.json`.
    pub truth_displacement: PathBuf,
    /// `simulation.json` (the configuration).
    pub config: PathBuf,
    /// Realised RMS length of the local displacement vector, px.
    pub local_rms_px: f32,
    /// Median of the per-frame Moffat FWHM, px.
    pub median_fwhm_px: f32,
    /// Index of the cloudy frame, if any.
    pub cloud_frame: Option<usize>,
    /// Index of the frame with a satellite trail, if any.
    pub trail_frame: Option<usize>,
}

/// Grid step of the local field in `truth_displacement.json`, px.
pub const TRUTH_GRID_STEP_PX: usize = 32;
/// First DATE-OBS of a simulated sequence: 2026-11-27T20:00:00 UTC, in seconds since 1970.
const START_EPOCH_S: i64 = 1_795_809_600;

/// Simulates `cfg` and writes, into `dir` (created if missing): `frame_0000.fits` ... (U16 with BZERO
/// 32768, headers DATE-OBS, EXPTIME, GAIN, OFFSET, OBJECT = 'tlr simulation' and a CREATOR that does
/// not start with `tlr`, so scans treat them as input), `truth.fits` (F32, CREATOR `tlr <version>
/// truth`, so scans skip it), `truth_displacement.json` ([`TruthDisplacement`], grid step
/// [`TRUTH_GRID_STEP_PX`]) and `simulation.json` (the [`SimConfig`]). Existing files of these names
/// are replaced (atomically). In colour mode the frames and `truth.fits` (the truth's mosaic) carry
/// `BAYERPAT`, `XBAYROFF` = `YBAYROFF` = 0 and `ROWORDER` = 'TOP-DOWN', and the colour truth is
/// written to `truth_rgb.fits` (F32 cube, planes R, G, B).
///
/// # Errors
/// [`SimError::InvalidConfig`] before anything is written; [`SimError::Io`], [`SimError::Fits`] or
/// [`SimError::Json`] naming the file that failed.
///
/// [`TruthDisplacement`]: super::TruthDisplacement
pub fn write_sequence(cfg: &SimConfig, dir: &Path) -> Result<SimSummary, SimError> {
    write_sequence_with(cfg, dir, &|sim, i| sim.frame(i))
}

/// [`write_sequence`] with the frames `frame(sim, i)` gives (e.g. a raw camera's,
/// [`super::calibration::Detector::light`]).
///
/// # Errors
/// As [`write_sequence`].
pub fn write_sequence_with(
    cfg: &SimConfig,
    dir: &Path,
    frame: &dyn Fn(&Simulation, usize) -> ndarray::Array2<f32>,
) -> Result<SimSummary, SimError> {
    use crate::fits::{write_image_atomic, CardValue, OutputMeta, SampleFormat};
    let sim = Simulation::try_new(cfg.clone())?;
    create_dir(dir)?;
    let cadence_ms = (f64::from(cfg.exposure_s) * 1000.0).round() as i64 + 2000;
    let mut frames = Vec::with_capacity(sim.frames());
    for i in 0..sim.frames() {
        let path = dir.join(frame_file_name(i));
        let image = frame(&sim, i);
        let meta = OutputMeta::default()
            .with_card(
                crate::fits::KEY_DATE_OBS,
                CardValue::Str(format_date_ms(START_EPOCH_S * 1000 + i as i64 * cadence_ms)),
                "UTC start of exposure",
            )
            .with_card(
                crate::fits::KEY_EXPTIME,
                CardValue::Float(f64::from(cfg.exposure_s)),
                "exposure time [s]",
            )
            .with_card(
                crate::fits::KEY_GAIN,
                CardValue::Float(f64::from(cfg.gain_e_per_adu)),
                "gain [e-/ADU]",
            )
            .with_card(
                crate::fits::KEY_OFFSET,
                CardValue::Float(f64::from(cfg.pedestal_adu)),
                "pedestal [ADU]",
            )
            .with_card(
                crate::fits::KEY_OBJECT,
                CardValue::Str("tlr simulation".to_string()),
                "",
            )
            .with_card(
                crate::fits::KEY_CREATOR,
                CardValue::Str(format!(
                    "synthetic camera (tlr-core {} simulate)",
                    env!("CARGO_PKG_VERSION")
                )),
                "simulated input frame",
            )
            .with_card(
                "SIMSCEN",
                CardValue::Str(cfg.scenario.name().to_string()),
                "simulation scenario",
            )
            .with_card(
                "SIMSEED",
                CardValue::Int(cfg.seed as i64),
                "simulation seed",
            )
            .with_card("SIMFRAME", CardValue::Int(i as i64), "frame index")
            .with_card(
                "SIMFWHM",
                CardValue::Float(f64::from(sim.fwhm_px(i))),
                "true Moffat FWHM [px]",
            );
        let meta = with_bayer_cards(meta, cfg.color);
        let meta = match cfg.saturation_adu {
            Some(level) => meta.with_card(
                crate::fits::KEY_SATURATE,
                CardValue::Float(f64::from(level)),
                "full well: pixels clip at this level [ADU]",
            ),
            None => meta,
        };
        write_image_atomic(&path, image.view(), SampleFormat::U16, &meta)
            .map_err(fits_error(&path))?;
        frames.push(path);
    }
    let truth_path = dir.join(TRUTH_FILE);
    let meta = OutputMeta::tlr_output("truth")
        .with_card(
            crate::fits::KEY_OBJECT,
            CardValue::Str("tlr simulation".to_string()),
            "",
        )
        .with_card(
            "TRUEFWHM",
            CardValue::Float(f64::from(TRUTH_FWHM_PX)),
            "Gaussian FWHM of point sources [px]",
        )
        .with_history("truth of a tlr simulation: no seeing, motion or noise; geometry of frame 0");
    let meta = with_bayer_cards(meta, cfg.color);
    write_image_atomic(&truth_path, sim.truth().view(), SampleFormat::F32, &meta)
        .map_err(fits_error(&truth_path))?;
    if cfg.color.is_some() {
        let rgb_path = dir.join(TRUTH_RGB_FILE);
        let meta = OutputMeta::tlr_output("truth")
            .with_card(
                crate::fits::KEY_OBJECT,
                CardValue::Str("tlr simulation".to_string()),
                "",
            )
            .with_history("colour truth of a tlr simulation: planes R, G, B");
        crate::fits::write_cube_atomic(&rgb_path, sim.truth_rgb().view(), &meta)
            .map_err(fits_error(&rgb_path))?;
    }

    let disp_path = dir.join(TRUTH_DISPLACEMENT_FILE);
    write_json_atomic(&disp_path, &sim.truth_displacement(TRUTH_GRID_STEP_PX))?;
    let cfg_path = dir.join(CONFIG_FILE);
    write_json_atomic(&cfg_path, cfg)?;

    let mut fwhms: Vec<f32> = (0..sim.frames()).map(|i| sim.fwhm_px(i)).collect();
    Ok(SimSummary {
        dir: dir.to_path_buf(),
        frames,
        truth: truth_path,
        truth_displacement: disp_path,
        config: cfg_path,
        local_rms_px: sim.local_rms_px(),
        median_fwhm_px: crate::stats::median_in_place(&mut fwhms),
        cloud_frame: sim.cloud_frame(),
        trail_frame: sim.trail_frame(),
    })
}

/// Adds `BAYERPAT`, `XBAYROFF`, `YBAYROFF` and `ROWORDER` for a colour simulation.
fn with_bayer_cards(
    meta: crate::fits::OutputMeta,
    color: Option<CfaPattern>,
) -> crate::fits::OutputMeta {
    use crate::fits::CardValue;
    match color {
        None => meta,
        Some(p) => meta
            .with_card(
                crate::fits::KEY_BAYERPAT,
                CardValue::Str(p.name().to_string()),
                "Bayer colour pattern",
            )
            .with_card(
                crate::fits::KEY_XBAYROFF,
                CardValue::Int(0),
                "X offset of Bayer array",
            )
            .with_card(
                crate::fits::KEY_YBAYROFF,
                CardValue::Int(0),
                "Y offset of Bayer array",
            )
            .with_card(
                crate::fits::KEY_ROWORDER,
                CardValue::Str("TOP-DOWN".to_string()),
                "order of the rows",
            ),
    }
}

/// Writes pretty JSON through a temporary file in the same folder, then renames it.
pub(super) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), SimError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| SimError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    crate::atomic::write_bytes(path, text.as_bytes()).map_err(|e| SimError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Formats milliseconds since 1970-01-01 UTC as `YYYY-MM-DDThh:mm:ss.sss`.
fn format_date_ms(ms: i64) -> String {
    crate::fits::format_utc(ms as f64 / 1000.0).unwrap_or_default()
}

/// Creates `dir` (and its parents); the error names it.
pub(super) fn create_dir(dir: &Path) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// A FITS error writing `path`, as the simulator reports it.
pub(super) fn fits_error(path: &Path) -> impl FnOnce(crate::fits::FitsError) -> SimError {
    let path = path.to_path_buf();
    move |source| SimError::Fits { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            format_date_ms(START_EPOCH_S * 1000),
            "2026-11-27T20:00:00.000"
        );
        assert_eq!(
            format_date_ms(START_EPOCH_S * 1000 + 4 * 3_600_000 + 1_234),
            "2026-11-28T00:00:01.234"
        );
        assert_eq!(format_date_ms(951_782_400_000), "2000-02-29T00:00:00.000");
    }
}
