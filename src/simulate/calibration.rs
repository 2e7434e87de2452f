//! A raw camera for calibration tests: the same sky as [`Simulation::frame`], seen through a sensor that
//! needs calibrating ([`Detector`]): a bias with a column pattern on top of the pedestal, dark current
//! with hot pixels (scaling with exposure), and a flat field with vignetting (35 % light loss at the
//! corners) and dust donuts; a colour camera's flats are brighter in green than in red and blue.
//! [`write_calibration_set`] writes the raw lights (with the truth files of
//! [`super::write_sequence`]) and bias, dark and flat frames into sub-folders, so that a test can
//! calibrate and score the result against the truth.
//!
//! What it does not: change [`Simulation::frame`] (a simulation without this module is the
//! never-corrupted camera), simulate amplifier glow, non-linearity or a flat light source's gradient.

use ndarray::Array2;
use std::path::{Path, PathBuf};

use super::scene::{normal, stream_rng};
use super::{SimConfig, SimError, Simulation};
use crate::fits::{write_image_atomic, CardValue, OutputMeta, SampleFormat};

/// Random stream of the detector's defects (its own, so the sky does not change).
const STREAM_DETECTOR: u64 = 11;
/// Random stream of the calibration frames' noise.
const STREAM_CALIBRATION_NOISE: u64 = 12;
/// Light lost at the corners by vignetting.
pub const VIGNETTING_AT_CORNERS: f32 = 0.35;
/// Flat frames' level, ADU above the bias (green pixels of a colour camera).
const FLAT_LEVEL_ADU: f32 = 20_000.0;
/// A colour camera's flats: red and blue pixels' level relative to green.
const FLAT_COLOUR_RED: f32 = 0.8;
/// See [`FLAT_COLOUR_RED`].
const FLAT_COLOUR_BLUE: f32 = 0.55;

/// What the sensor adds to and multiplies into every frame.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Bias above the pedestal per column, ADU.
    pub bias_columns: Vec<f32>,
    /// Dark current per pixel, e-/s (hot pixels are far above the rest).
    pub dark_rate: Array2<f32>,
    /// Relative sensitivity per pixel (vignetting times dust donuts), 1 at the centre.
    pub flat: Array2<f32>,
    /// Hot pixels `(row, col)`.
    pub hot: Vec<(usize, usize)>,
    /// Dust donut centres `(row, col)` and outer radius, px.
    pub donuts: Vec<(f32, f32, f32)>,
}

impl Detector {
    /// The detector of a simulation (from its seed and size).
    pub fn new(cfg: &SimConfig) -> Self {
        let (rows, cols) = (cfg.height, cfg.width);
        let mut rng = stream_rng(cfg.seed, STREAM_DETECTOR, 0);
        let bias_columns = (0..cols)
            .map(|c| 12.0 * (c as f32 * 0.11).sin() + 4.0 * normal(&mut rng))
            .collect();
        let mut dark_rate = Array2::from_elem((rows, cols), 0.2f32);
        let hot_count = 10 + rows * cols / 20_000;
        let mut hot = Vec::with_capacity(hot_count);
        for _ in 0..hot_count {
            let (r, c) = (
                rand::RngExt::random_range(&mut rng, 0..rows),
                rand::RngExt::random_range(&mut rng, 0..cols),
            );
            dark_rate[[r, c]] = rand::RngExt::random_range(&mut rng, 50.0..800.0);
            hot.push((r, c));
        }
        let donuts: Vec<(f32, f32, f32)> = (0..3)
            .map(|_| {
                (
                    rand::RngExt::random_range(&mut rng, 0.15..0.85) * rows as f32,
                    rand::RngExt::random_range(&mut rng, 0.15..0.85) * cols as f32,
                    rand::RngExt::random_range(&mut rng, 12.0..24.0),
                )
            })
            .collect();
        let (cy, cx) = ((rows as f32 - 1.0) / 2.0, (cols as f32 - 1.0) / 2.0);
        let corner2 = cy * cy + cx * cx;
        let flat = Array2::from_shape_fn((rows, cols), |(r, c)| {
            let (y, x) = (r as f32 - cy, c as f32 - cx);
            let mut v = 1.0 - VIGNETTING_AT_CORNERS * (y * y + x * x) / corner2.max(1.0);
            for &(dy, dx, radius) in &donuts {
                let d = ((r as f32 - dy).powi(2) + (c as f32 - dx).powi(2)).sqrt();
                // A ring of shadow (20 % deep) with a lighter centre, as an out-of-focus dust grain.
                let ring = (-((d - 0.7 * radius) / (0.25 * radius)).powi(2)).exp();
                v *= 1.0 - 0.2 * ring;
            }
            v
        });
        Self {
            bias_columns,
            dark_rate,
            flat,
            hot,
            donuts,
        }
    }

    /// A raw frame: `expected` (ADU with pedestal, before noise) seen through the flat, plus dark
    /// current for `exposure_s`, with Poisson and read noise, plus the pedestal and the bias pattern,
    /// quantised to 16 bits. `stream`/`index` choose the noise.
    fn expose(
        &self,
        cfg: &SimConfig,
        expected: &Array2<f32>,
        exposure_s: f32,
        stream: u64,
        index: u64,
    ) -> Array2<f32> {
        let gain = cfg.gain_e_per_adu;
        let mut rng = stream_rng(cfg.seed, stream, index);
        let mut out = expected.clone();
        for ((r, c), v) in out.indexed_iter_mut() {
            let signal_e = ((*v - cfg.pedestal_adu) * gain).max(0.0) * self.flat[[r, c]];
            let e = signal_e + self.dark_rate[[r, c]] * exposure_s;
            let noisy = e + (e + cfg.read_noise_e * cfg.read_noise_e).sqrt() * normal(&mut rng);
            *v = (noisy / gain + cfg.pedestal_adu + self.bias_columns[c])
                .round()
                .clamp(0.0, 65535.0);
        }
        out
    }

    /// Light `index` of `sim` as this detector records it.
    pub fn light(&self, sim: &Simulation, index: usize) -> Array2<f32> {
        let cfg = sim.config();
        self.expose(
            cfg,
            &sim.expected_frame(index),
            cfg.exposure_s,
            super::scene::STREAM_NOISE,
            index as u64,
        )
    }
}

/// Counts of calibration frames per kind.
#[derive(Debug, Clone, Copy)]
pub struct CalibrationFrames {
    /// Bias frames.
    pub bias: usize,
    /// Darks (of the lights' exposure).
    pub darks: usize,
    /// Flats.
    pub flats: usize,
}

impl Default for CalibrationFrames {
    fn default() -> Self {
        Self {
            bias: 16,
            darks: 16,
            flats: 16,
        }
    }
}

/// Writes a raw sequence of `cfg` into `dir/lights` (with `truth.fits` and the other files of
/// [`super::write_sequence`]) and `frames` bias, dark and flat frames into `dir/bias`, `dir/darks` and
/// `dir/flats`. Returns the lights' summary and the detector.
///
/// # Errors
/// As [`super::write_sequence`], and a calibration frame that cannot be written (naming it).
pub fn write_calibration_set(
    cfg: &SimConfig,
    dir: &Path,
    frames: CalibrationFrames,
) -> Result<(super::SimSummary, Detector), SimError> {
    let detector = Detector::new(cfg);
    let summary = super::write::write_sequence_with(cfg, &dir.join("lights"), &|sim, i| {
        detector.light(sim, i)
    })?;
    let (rows, cols) = (cfg.height, cfg.width);
    let pedestal = Array2::from_elem((rows, cols), cfg.pedestal_adu);
    // A colour camera's flats are not grey: the panel's light through each filter differs.
    let flat_light = Array2::from_shape_fn((rows, cols), |(r, c)| {
        let colour = cfg.color.map_or(1.0, |p| match p.color_at(r, c) {
            crate::bayer::Color::Red => FLAT_COLOUR_RED,
            crate::bayer::Color::Green => 1.0,
            crate::bayer::Color::Blue => FLAT_COLOUR_BLUE,
        });
        cfg.pedestal_adu + FLAT_LEVEL_ADU * colour
    });
    let kinds: [(&str, usize, &Array2<f32>, f32, &str); 3] = [
        ("bias", frames.bias, &pedestal, 0.0, "Bias Frame"),
        (
            "darks",
            frames.darks,
            &pedestal,
            cfg.exposure_s,
            "Dark Frame",
        ),
        ("flats", frames.flats, &flat_light, 0.0, "Flat Field"),
    ];
    for (k, (folder, count, expected, exposure, frame_type)) in kinds.into_iter().enumerate() {
        let sub = dir.join(folder);
        super::write::create_dir(&sub)?;
        for i in 0..count {
            let image = detector.expose(
                cfg,
                expected,
                exposure,
                STREAM_CALIBRATION_NOISE,
                (k * 100_000 + i) as u64,
            );
            let path: PathBuf = sub.join(format!("{folder}_{i:04}.fits"));
            let meta = OutputMeta::default()
                .with_card(
                    crate::fits::KEY_EXPTIME,
                    CardValue::Float(f64::from(exposure)),
                    "exposure time [s]",
                )
                .with_card(
                    crate::fits::KEY_OFFSET,
                    CardValue::Float(f64::from(cfg.pedestal_adu)),
                    "pedestal [ADU]",
                )
                .with_card("IMAGETYP", CardValue::Str(frame_type.to_string()), "");
            write_image_atomic(&path, image.view(), SampleFormat::U16, &meta)
                .map_err(super::write::fits_error(&path))?;
        }
    }
    Ok((summary, detector))
}
