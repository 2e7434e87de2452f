//! Deterministic synthetic frame sequences with known truth, for tests, benchmarks and the demo.
//!
//! What it does: renders a star field (power-law fluxes, a few elliptical galaxies and a nebula blob) on a
//! sky with a gradient, as seen through a moving, blurring atmosphere by a camera, frame by frame:
//! global drift + jitter, field rotation (`altaz`), a smooth anisoplanatic local displacement field that
//! is correlated in time, a Moffat PSF whose width varies per frame, transparency changes, Poisson and
//! read noise, fixed hot pixels, one cloudy frame and one frame with a satellite trail. Frames are
//! quantised like a 16-bit camera (ADU in 0..=65535 with a pedestal). [`write_sequence`] writes them as
//! FITS plus `truth.fits`, `truth_displacement.json` and `simulation.json`.
//!
//! Colour mode ([`SimConfig::color`] = a [`CfaPattern`]): the same scene and motion, but every object
//! has a colour (stars: a black-body temperature of 3000–12000 K seen through broad R/G/B bands at
//! 610/535/465 nm; galaxies yellowish; the nebula's components alternately H-alpha red and O-III teal;
//! the sky a light-polluted orange), normalised so that `(R + 2G + B) / 4` equals the mono flux. The
//! camera sees the Bayer mosaic of the three colour renderings (noise, hot pixels and quantisation are
//! applied to the mosaic); [`Simulation::truth_rgb`] is the colour truth and [`Simulation::truth`] its
//! mosaic. [`write_sequence`] then writes `BAYERPAT`, `XBAYROFF` = `YBAYROFF` = 0 and `ROWORDER` =
//! 'TOP-DOWN'. Colours are drawn from their own random stream, so mono sequences are unchanged.
//! [`Simulation::star_colour_errors`] measures how well a demosaiced reconstruction keeps the colours of
//! bright stars (used by the colour tests and `tlr demo --color`).
//!
//! What it does not: optics beyond a circular Moffat PSF (no coma, no diffraction spikes), colour
//! calibration of a real camera (no colour matrix, no per-channel QE), cosmic rays, flat-field
//! vignetting, or sub-stamp warping (see "Model" below).
//!
//! # Geometry and truth (binding for tests)
//!
//! - Truth coordinates are the reference geometry. [`Simulation::displacement`] maps a truth position to
//!   its position in frame `i` with the crate's [`Shift`] convention: a feature at truth `(y, x)` appears
//!   in frame `i` at `(y + dy, x + dx)`.
//! - The displacement of frame `i` at truth position `p = (y, x)` is
//!   `R(θ_i)(p - c) + c - p + g_i + l_i(p)`: rotation by `θ_i` about the image centre
//!   `c = ((height-1)/2, (width-1)/2)` (positive θ turns +x towards +y), then the global translation `g_i`
//!   ([`Simulation::global_displacement`]), plus the local field `l_i` evaluated at the truth position.
//! - Frame 0 has exactly zero global translation and zero rotation (`g_0 = 0`, `θ_0 = 0`).
//! - The local field has exactly zero mean over the sequence at every point (the sample mean of its
//!   amplitude processes is removed), so a stack that averages local motion out lands on truth geometry,
//!   and a reconstruction aligned globally to frame 0 shares the truth geometry. Frame 0 itself differs
//!   from the truth by its own local field `l_0(p)`.
//! - [`Simulation::truth`] is the sky without seeing, motion, transparency loss, noise or detector defects:
//!   pedestal + sky (with its gradient) + every object rendered with a narrow, pixel-integrated Gaussian of
//!   FWHM [`TRUTH_FWHM_PX`] (1.5 px) at its truth position; float ADU, not clipped at 65535.
//!
//! # Model
//!
//! - Stars: positions uniform over the image plus a 24 px margin; total flux `F = F_min u^(-1/a)`
//!   (cumulative counts `N(>F) ∝ F^-a`, `a` = `flux_power_index`), capped at `flux_max_adu`. Each star is
//!   a Moffat stamp (sampled at pixel centres, so the measured FWHM equals [`Simulation::fwhm_px`])
//!   placed at its displaced position; the displacement is evaluated at the star only (stamps are not
//!   warped). Bright stars saturate at 65535.
//! - Extended objects: galaxies (core + disk elliptical Gaussians) and a nebula (four broad Gaussians),
//!   convolved with a Gaussian of the frame's FWHM (an approximation of the Moffat) and shifted rigidly by
//!   the displacement at their centre.
//! - Sky: `sky_adu * (1 + gradient)` fixed to the detector (it does not move with the field), times a
//!   per-frame factor of 1 ± 1 %.
//! - Local field: `local_modes` random spatial Fourier modes, wavelengths uniform in
//!   [`local_wavelength_min_px`, `local_wavelength_max_px`] (150–500 px) and random directions, each with
//!   four AR(1) amplitude processes (cos/sin × dy/dx) of per-frame correlation `local_correlation` (0.9:
//!   seeing cells drift slowly across the field between consecutive short exposures; the frame-to-frame
//!   change is then `sqrt(2 (1 - 0.9)) ≈ 0.45` of the amplitude). After removing the time mean, the
//!   amplitudes are scaled so that the RMS length of the local displacement vector over a 16 x 16 grid and
//!   all frames equals `local_rms_px` exactly (needs at least two frames; one frame has no local motion).
//! - FWHM: AR(1) process (correlation 0.8) around `fwhm_mean_px` with sd `fwhm_sd_px`, clamped to
//!   [`fwhm_min_px`, `fwhm_max_px`]; Moffat β = `moffat_beta`.
//! - Transparency: 1 + N(0, `transparency_sd`) per frame (clamped to ±4 sd).
//! - Noise: photo-electrons `e = gain * signal`; Poisson noise (exact below 20 e-, its Gaussian
//!   approximation above) and Gaussian read noise; then ADU = e / gain + pedestal, plus hot pixels,
//!   rounded and clamped to 0..=65535.
//! - Hot pixels: fixed positions and values (1000–50000 ADU above the pedestal) in every frame.
//! - Bad frames (when `bad_frames` and at least 5 frames): frame `round(0.37 (N-1))` is cloudy
//!   (transparency 0.5, sky x1.5 plus a broad bright patch), frame `round(0.61 (N-1))` carries a satellite
//!   trail (a 2500 ADU line of Gaussian profile, sigma 1 px, across the whole frame).
//!
//! # Randomness
//!
//! The scene (stars, objects, hot pixels, sky gradient) depends only on `seed`, so every scenario of one
//! seed shows the same sky. Per-frame parameters are drawn once in [`Simulation::new`]; the noise of frame
//! `i` comes from its own `StdRng` seeded from `(seed, i)`, so `frame(i)` does not depend on call order.

// `!(x > t)` is used on purpose throughout: unlike `x <= t` it is also true for NaN, which must be
// rejected as well.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::f32::consts::PI;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::{Array2, Array3, ArrayView3, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::bayer::CfaPattern;
use crate::geom::Shift;

/// FWHM in pixels of the narrow Gaussian used to render point sources in [`Simulation::truth`].
pub const TRUTH_FWHM_PX: f32 = 1.5;

/// File name of the true per-frame displacements written by [`write_sequence`].
pub const TRUTH_DISPLACEMENT_FILE: &str = "truth_displacement.json";
/// File name of the truth image written by [`write_sequence`].
pub const TRUTH_FILE: &str = "truth.fits";
/// File name of the colour truth `(3, rows, cols)` written by [`write_sequence`] in colour mode.
pub const TRUTH_RGB_FILE: &str = "truth_rgb.fits";
/// File name of the simulation configuration written by [`write_sequence`].
pub const CONFIG_FILE: &str = "simulation.json";
/// Margin in pixels around the image inside which stars are placed too (they may drift in).
const STAR_MARGIN_PX: f32 = 24.0;
/// Per-frame correlation of the FWHM process.
const FWHM_CORRELATION: f32 = 0.8;
/// Peak of a satellite trail above the sky, ADU.
const TRAIL_PEAK_ADU: f32 = 2500.0;
/// Gaussian sigma of the satellite trail profile, px.
const TRAIL_SIGMA_PX: f32 = 1.0;
/// Poisson counts at or above this many electrons use the Gaussian approximation.
const POISSON_GAUSS_LIMIT_E: f32 = 20.0;

/// Errors of the simulator. Every variant names what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is unusable; every problem is listed.
    #[error("invalid simulation configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// One message per problem, each naming the field.
        problems: Vec<String>,
    },
    /// An unknown scenario name.
    #[error("unknown scenario `{value}` (expected static, seeing or altaz)")]
    UnknownScenario {
        /// The name given.
        value: String,
    },
    /// A file or folder could not be created, written or read.
    #[error("simulation file `{path}`")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be written or parsed.
    #[error("simulation file `{path}`")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A FITS file could not be written.
    #[error("simulation file `{path}`")]
    Fits {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::fits::FitsError,
    },
}

/// Which kind of motion the simulated sequence has (see [`SimConfig`] for the numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Global drift and jitter only: no local displacement, no rotation.
    Static,
    /// Global drift and jitter plus an anisoplanatic local field of 1.5 px RMS.
    #[default]
    Seeing,
    /// Like `Seeing` plus a field rotation of 0.5° over the run (alt-az mount).
    Altaz,
}

impl Scenario {
    /// The scenario's name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Static => "static",
            Scenario::Seeing => "seeing",
            Scenario::Altaz => "altaz",
        }
    }

    /// Default RMS length of the local displacement vector, px.
    pub fn default_local_rms_px(self) -> f32 {
        match self {
            Scenario::Static => 0.0,
            Scenario::Seeing | Scenario::Altaz => 1.5,
        }
    }

    /// Default field rotation from the first to the last frame, degrees.
    pub fn default_rotation_deg(self) -> f32 {
        match self {
            Scenario::Static | Scenario::Seeing => 0.0,
            Scenario::Altaz => 0.5,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "static" => Ok(Scenario::Static),
            "seeing" => Ok(Scenario::Seeing),
            "altaz" | "alt-az" => Ok(Scenario::Altaz),
            _ => Err(SimError::UnknownScenario {
                value: s.to_string(),
            }),
        }
    }
}

/// Everything that defines a simulated sequence. `Default` is the `seeing` scenario, 100 frames of
/// 1024 x 1024, seed 1; use [`SimConfig::new`] for another scenario/size and change fields as needed.
/// Scenario-dependent values are `Option`s: `None` means "the scenario's default".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Number of frames (at least 1).
    pub frames: usize,
    /// Image width (columns, NAXIS1).
    pub width: usize,
    /// Image height (rows, NAXIS2).
    pub height: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Kind of motion.
    pub scenario: Scenario,
    /// Stars per megapixel (including the many too faint to detect).
    pub star_density_per_mpx: f32,
    /// Smallest total star flux, ADU.
    pub flux_min_adu: f32,
    /// Largest total star flux, ADU.
    pub flux_max_adu: f32,
    /// Power-law index `a` of the cumulative flux distribution `N(>F) ∝ F^-a`.
    pub flux_power_index: f32,
    /// Galaxies per megapixel (at least one when positive).
    pub galaxies_per_mpx: f32,
    /// Whether to add a nebula blob.
    pub nebula: bool,
    /// Camera pedestal (offset), ADU.
    pub pedestal_adu: f32,
    /// Mean sky level above the pedestal, ADU.
    pub sky_adu: f32,
    /// Relative change of the sky level across the frame (linear gradient).
    pub sky_gradient: f32,
    /// Gain, electrons per ADU.
    pub gain_e_per_adu: f32,
    /// Read noise, electrons RMS.
    pub read_noise_e: f32,
    /// Exposure time per frame, seconds (header EXPTIME; frames start every exposure + 2 s).
    pub exposure_s: f32,
    /// Mean Moffat FWHM, px.
    pub fwhm_mean_px: f32,
    /// Standard deviation of the per-frame FWHM, px.
    pub fwhm_sd_px: f32,
    /// Smallest per-frame FWHM, px.
    pub fwhm_min_px: f32,
    /// Largest per-frame FWHM, px.
    pub fwhm_max_px: f32,
    /// Moffat beta (> 1).
    pub moffat_beta: f32,
    /// Standard deviation of the per-frame transparency (relative).
    pub transparency_sd: f32,
    /// Length of the linear global drift from the first to the last frame, px (random direction).
    pub drift_px: f32,
    /// Per-axis RMS of the per-frame global jitter, px (frame 0 has none).
    pub jitter_px: f32,
    /// Field rotation from the first to the last frame, degrees; `None` = scenario default.
    pub rotation_deg: Option<f32>,
    /// RMS length of the local displacement vector, px; `None` = scenario default.
    pub local_rms_px: Option<f32>,
    /// Number of spatial Fourier modes of the local field.
    pub local_modes: usize,
    /// Shortest wavelength of the local field, px.
    pub local_wavelength_min_px: f32,
    /// Longest wavelength of the local field, px.
    pub local_wavelength_max_px: f32,
    /// Per-frame correlation of the local field's amplitudes (AR(1) coefficient, in [0, 1)).
    pub local_correlation: f32,
    /// Number of hot pixels; `None` = 20 + 20 per megapixel.
    pub hot_pixels: Option<usize>,
    /// Whether to include one cloudy frame and one frame with a satellite trail (needs >= 5 frames).
    pub bad_frames: bool,
    /// Colour mode: `Some(pattern)` renders a coloured sky seen through this Bayer mosaic (see the
    /// module docs); `None` (the default) is a mono camera.
    #[serde(default)]
    pub color: Option<CfaPattern>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            frames: 100,
            width: 1024,
            height: 1024,
            seed: 1,
            scenario: Scenario::Seeing,
            star_density_per_mpx: 2500.0,
            flux_min_adu: 200.0,
            flux_max_adu: 3.0e6,
            flux_power_index: 0.75,
            galaxies_per_mpx: 8.0,
            nebula: true,
            pedestal_adu: 1000.0,
            sky_adu: 400.0,
            sky_gradient: 0.15,
            gain_e_per_adu: 0.8,
            read_noise_e: 4.0,
            exposure_s: 10.0,
            fwhm_mean_px: 3.2,
            fwhm_sd_px: 0.3,
            fwhm_min_px: 2.5,
            fwhm_max_px: 4.0,
            moffat_beta: 3.0,
            transparency_sd: 0.02,
            drift_px: 4.0,
            jitter_px: 0.25,
            rotation_deg: None,
            local_rms_px: None,
            local_modes: 6,
            local_wavelength_min_px: 150.0,
            local_wavelength_max_px: 500.0,
            local_correlation: 0.9,
            hot_pixels: None,
            bad_frames: true,
            color: None,
        }
    }
}

impl SimConfig {
    /// Defaults (see [`Default`]) for the given scenario, size and seed.
    pub fn new(scenario: Scenario, frames: usize, width: usize, height: usize, seed: u64) -> Self {
        SimConfig {
            frames,
            width,
            height,
            seed,
            scenario,
            ..SimConfig::default()
        }
    }

    /// The effective RMS length of the local displacement vector, px.
    pub fn effective_local_rms_px(&self) -> f32 {
        self.local_rms_px
            .unwrap_or_else(|| self.scenario.default_local_rms_px())
    }

    /// The effective field rotation from the first to the last frame, degrees.
    pub fn effective_rotation_deg(&self) -> f32 {
        self.rotation_deg
            .unwrap_or_else(|| self.scenario.default_rotation_deg())
    }

    /// The effective number of hot pixels.
    pub fn effective_hot_pixels(&self) -> usize {
        self.hot_pixels
            .unwrap_or_else(|| 20 + (20.0 * self.area_mpx()).round() as usize)
    }

    fn area_mpx(&self) -> f32 {
        (self.width as f64 * self.height as f64 / 1.0e6) as f32
    }

    /// A copy in which every field that [`SimConfig::validate`] would reject is replaced by its
    /// default: frames clamped to 0..=100000, width and height to 0..=16384, out-of-range numbers and
    /// inconsistent groups (FWHM min/mean/max, flux min/max, wavelengths) reset to the defaults.
    /// A valid configuration is returned unchanged.
    pub fn sanitized(&self) -> SimConfig {
        let d = SimConfig::default();
        let mut c = self.clone();
        c.frames = c.frames.min(100_000);
        c.width = c.width.min(16_384);
        c.height = c.height.min(16_384);
        let fix = |v: &mut f32, default: f32, ok: &dyn Fn(f32) -> bool| {
            if !(v.is_finite() && ok(*v)) {
                *v = default;
            }
        };
        fix(&mut c.star_density_per_mpx, d.star_density_per_mpx, &|v| {
            (0.0..=200_000.0).contains(&v)
        });
        fix(&mut c.flux_power_index, d.flux_power_index, &|v| v > 0.0);
        fix(&mut c.galaxies_per_mpx, d.galaxies_per_mpx, &|v| {
            (0.0..=1000.0).contains(&v)
        });
        fix(&mut c.pedestal_adu, d.pedestal_adu, &|v| {
            (0.0..=60_000.0).contains(&v)
        });
        fix(&mut c.sky_adu, d.sky_adu, &|v| v >= 0.0);
        fix(&mut c.sky_gradient, d.sky_gradient, &|v| {
            (0.0..1.0).contains(&v)
        });
        fix(&mut c.gain_e_per_adu, d.gain_e_per_adu, &|v| v > 0.0);
        fix(&mut c.read_noise_e, d.read_noise_e, &|v| v >= 0.0);
        fix(&mut c.exposure_s, d.exposure_s, &|v| v >= 0.0);
        fix(&mut c.fwhm_sd_px, d.fwhm_sd_px, &|v| v >= 0.0);
        fix(&mut c.moffat_beta, d.moffat_beta, &|v| v > 1.0 && v <= 50.0);
        fix(&mut c.transparency_sd, d.transparency_sd, &|v| {
            (0.0..=0.2).contains(&v)
        });
        fix(&mut c.drift_px, d.drift_px, &|v| {
            (0.0..=1000.0).contains(&v)
        });
        fix(&mut c.jitter_px, d.jitter_px, &|v| {
            (0.0..=100.0).contains(&v)
        });
        fix(&mut c.local_correlation, d.local_correlation, &|v| {
            (0.0..1.0).contains(&v)
        });
        let fwhm_ok = [c.fwhm_min_px, c.fwhm_mean_px, c.fwhm_max_px]
            .iter()
            .all(|v| v.is_finite())
            && c.fwhm_min_px > 0.0
            && c.fwhm_min_px <= c.fwhm_mean_px
            && c.fwhm_mean_px <= c.fwhm_max_px
            && c.fwhm_max_px <= 64.0;
        if !fwhm_ok {
            (c.fwhm_min_px, c.fwhm_mean_px, c.fwhm_max_px) =
                (d.fwhm_min_px, d.fwhm_mean_px, d.fwhm_max_px);
        }
        let flux_ok = c.flux_min_adu.is_finite()
            && c.flux_max_adu.is_finite()
            && c.flux_min_adu > 0.0
            && c.flux_max_adu >= c.flux_min_adu;
        if !flux_ok {
            (c.flux_min_adu, c.flux_max_adu) = (d.flux_min_adu, d.flux_max_adu);
        }
        let wave_ok = c.local_wavelength_min_px.is_finite()
            && c.local_wavelength_max_px.is_finite()
            && c.local_wavelength_min_px > 0.0
            && c.local_wavelength_min_px <= c.local_wavelength_max_px;
        if !wave_ok {
            (c.local_wavelength_min_px, c.local_wavelength_max_px) =
                (d.local_wavelength_min_px, d.local_wavelength_max_px);
        }
        if let Some(r) = c.rotation_deg {
            if !(r.is_finite() && r.abs() <= 45.0) {
                c.rotation_deg = None;
            }
        }
        if let Some(r) = c.local_rms_px {
            if !(r.is_finite() && (0.0..=50.0).contains(&r)) {
                c.local_rms_px = None;
            }
        }
        c.local_modes = c.local_modes.min(64);
        if c.effective_local_rms_px() > 0.0 && c.local_modes == 0 {
            c.local_modes = d.local_modes;
        }
        if c.effective_hot_pixels() > c.width * c.height / 10 {
            c.hot_pixels = Some(c.width * c.height / 10);
        }
        c
    }

    /// Checks every field; returns all problems at once.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] listing each offending field and why.
    pub fn validate(&self) -> Result<(), SimError> {
        let mut p = Vec::new();
        if self.frames == 0 {
            p.push("frames must be at least 1".to_string());
        }
        if self.frames > 100_000 {
            p.push(format!("frames = {} exceeds 100000", self.frames));
        }
        for (key, v) in [("width", self.width), ("height", self.height)] {
            if !(8..=16_384).contains(&v) {
                p.push(format!("{key} = {v} must be within 8..=16384 px"));
            }
        }
        let finite = [
            ("star_density_per_mpx", self.star_density_per_mpx),
            ("flux_min_adu", self.flux_min_adu),
            ("flux_max_adu", self.flux_max_adu),
            ("flux_power_index", self.flux_power_index),
            ("galaxies_per_mpx", self.galaxies_per_mpx),
            ("pedestal_adu", self.pedestal_adu),
            ("sky_adu", self.sky_adu),
            ("sky_gradient", self.sky_gradient),
            ("gain_e_per_adu", self.gain_e_per_adu),
            ("read_noise_e", self.read_noise_e),
            ("exposure_s", self.exposure_s),
            ("fwhm_mean_px", self.fwhm_mean_px),
            ("fwhm_sd_px", self.fwhm_sd_px),
            ("fwhm_min_px", self.fwhm_min_px),
            ("fwhm_max_px", self.fwhm_max_px),
            ("moffat_beta", self.moffat_beta),
            ("transparency_sd", self.transparency_sd),
            ("drift_px", self.drift_px),
            ("jitter_px", self.jitter_px),
            ("rotation_deg", self.effective_rotation_deg()),
            ("local_rms_px", self.effective_local_rms_px()),
            ("local_wavelength_min_px", self.local_wavelength_min_px),
            ("local_wavelength_max_px", self.local_wavelength_max_px),
            ("local_correlation", self.local_correlation),
        ];
        let mut all_finite = true;
        for (key, v) in finite {
            if !v.is_finite() {
                p.push(format!("{key} = {v} is not a finite number"));
                all_finite = false;
            }
        }
        if all_finite {
            let non_negative = [
                ("star_density_per_mpx", self.star_density_per_mpx),
                ("galaxies_per_mpx", self.galaxies_per_mpx),
                ("sky_adu", self.sky_adu),
                ("sky_gradient", self.sky_gradient),
                ("read_noise_e", self.read_noise_e),
                ("exposure_s", self.exposure_s),
                ("fwhm_sd_px", self.fwhm_sd_px),
                ("transparency_sd", self.transparency_sd),
                ("drift_px", self.drift_px),
                ("jitter_px", self.jitter_px),
                ("local_rms_px", self.effective_local_rms_px()),
            ];
            for (key, v) in non_negative {
                if v < 0.0 {
                    p.push(format!("{key} = {v} must not be negative"));
                }
            }
            if self.star_density_per_mpx > 200_000.0 {
                p.push("star_density_per_mpx must be at most 200000".to_string());
            }
            if self.galaxies_per_mpx > 1000.0 {
                p.push("galaxies_per_mpx must be at most 1000".to_string());
            }
            if self.flux_min_adu <= 0.0 || self.flux_max_adu < self.flux_min_adu {
                p.push(format!(
                    "flux_min_adu = {} and flux_max_adu = {} need 0 < min <= max",
                    self.flux_min_adu, self.flux_max_adu
                ));
            }
            if self.flux_power_index <= 0.0 {
                p.push("flux_power_index must be positive".to_string());
            }
            if !(0.0..=60_000.0).contains(&self.pedestal_adu) {
                p.push(format!(
                    "pedestal_adu = {} must be within 0..=60000",
                    self.pedestal_adu
                ));
            }
            if self.sky_gradient >= 1.0 {
                p.push("sky_gradient must be below 1 (the sky would turn negative)".to_string());
            }
            if self.gain_e_per_adu <= 0.0 {
                p.push("gain_e_per_adu must be positive".to_string());
            }
            if !(self.fwhm_min_px > 0.0
                && self.fwhm_min_px <= self.fwhm_mean_px
                && self.fwhm_mean_px <= self.fwhm_max_px
                && self.fwhm_max_px <= 64.0)
            {
                p.push(format!(
                    "FWHM needs 0 < fwhm_min_px ({}) <= fwhm_mean_px ({}) <= fwhm_max_px ({}) <= 64",
                    self.fwhm_min_px, self.fwhm_mean_px, self.fwhm_max_px
                ));
            }
            if !(self.moffat_beta > 1.0 && self.moffat_beta <= 50.0) {
                p.push(format!(
                    "moffat_beta = {} must be within (1, 50]",
                    self.moffat_beta
                ));
            }
            if self.transparency_sd > 0.2 {
                p.push("transparency_sd must be at most 0.2".to_string());
            }
            if self.effective_rotation_deg().abs() > 45.0 {
                p.push("rotation_deg must be within ±45".to_string());
            }
            if self.effective_local_rms_px() > 50.0 {
                p.push("local_rms_px must be at most 50".to_string());
            }
            if self.drift_px > 1000.0 || self.jitter_px > 100.0 {
                p.push("drift_px must be at most 1000 and jitter_px at most 100".to_string());
            }
            if !(self.local_wavelength_min_px > 0.0
                && self.local_wavelength_min_px <= self.local_wavelength_max_px)
            {
                p.push(format!(
                    "local wavelengths need 0 < local_wavelength_min_px ({}) <= local_wavelength_max_px ({})",
                    self.local_wavelength_min_px, self.local_wavelength_max_px
                ));
            }
            if !(0.0..1.0).contains(&self.local_correlation) {
                p.push(format!(
                    "local_correlation = {} must be within [0, 1)",
                    self.local_correlation
                ));
            }
        }
        if self.local_modes == 0 && self.effective_local_rms_px() > 0.0 {
            p.push("local_modes must be at least 1 when local_rms_px > 0".to_string());
        }
        if self.local_modes > 64 {
            p.push("local_modes must be at most 64".to_string());
        }
        if self.effective_hot_pixels() > self.width.saturating_mul(self.height) / 10 {
            p.push("hot_pixels must be at most a tenth of the pixels".to_string());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(SimError::InvalidConfig { problems: p })
        }
    }
}

/// A star of the simulated sky at its truth position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruthStar {
    /// Row of the centre in truth coordinates.
    pub y: f32,
    /// Column of the centre in truth coordinates.
    pub x: f32,
    /// Total flux at transparency 1, ADU.
    pub flux: f32,
}

/// A hot pixel: same position and excess in every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotPixel {
    /// Row.
    pub row: usize,
    /// Column.
    pub col: usize,
    /// Excess above the pedestal and sky, ADU.
    pub excess_adu: u32,
}

/// What is special about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// An ordinary frame.
    Normal,
    /// A cloud: transparency 0.5, brighter and patchy background.
    Cloud,
    /// A satellite trail crosses the frame.
    SatelliteTrail,
}

/// One elliptical Gaussian component, relative to its object's centre.
#[derive(Debug, Clone, Copy)]
struct Component {
    oy: f32,
    ox: f32,
    flux: f32,
    cyy: f32,
    cxy: f32,
    cxx: f32,
}

/// An extended object: a set of Gaussian components moved rigidly.
#[derive(Debug, Clone)]
struct Extended {
    y: f32,
    x: f32,
    components: Vec<Component>,
}

/// A spatial Fourier mode of the local field.
#[derive(Debug, Clone, Copy)]
struct Mode {
    ky: f32,
    kx: f32,
    phase: f32,
}

/// Per-frame state drawn in [`Simulation::new`].
#[derive(Debug, Clone)]
struct FrameState {
    global: Shift,
    rotation_rad: f32,
    fwhm: f32,
    transparency: f32,
    sky_factor: f32,
    kind: FrameKind,
    /// Per mode: amplitudes of (dy cos, dy sin, dx cos, dx sin), px.
    amplitudes: Vec<[f32; 4]>,
}

#[derive(Debug, Clone, Copy)]
struct Trail {
    y0: f32,
    x0: f32,
    /// Unit direction (dy, dx).
    uy: f32,
    ux: f32,
}

#[derive(Debug, Clone, Copy)]
struct CloudPatch {
    y: f32,
    x: f32,
    sigma: f32,
}

/// A simulated sequence: the scene, the per-frame conditions and the renderer.
#[derive(Debug, Clone)]
pub struct Simulation {
    cfg: SimConfig,
    stars: Vec<TruthStar>,
    extended: Vec<Extended>,
    hot: Vec<HotPixel>,
    gradient: (f32, f32),
    modes: Vec<Mode>,
    states: Vec<FrameState>,
    trail: Trail,
    cloud: CloudPatch,
    local_rms: f32,
    /// Colour of each star (R, G, B factors, `(R + 2G + B) / 4 = 1`), parallel to `stars`.
    star_colors: Vec<[f32; 3]>,
    /// Colour of each component of each extended object, parallel to `extended`.
    extended_colors: Vec<Vec<[f32; 3]>>,
}

/// SplitMix64 finaliser: decorrelates seeds derived from `(seed, stream, index)`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stream_rng(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ mix(stream)) ^ index))
}

const STREAM_SCENE: u64 = 1;
const STREAM_TIME: u64 = 2;
const STREAM_NOISE: u64 = 3;
const STREAM_COLOR: u64 = 4;

/// Colour of the sky background (light pollution), before normalisation.
const SKY_COLOR: [f32; 3] = [1.15, 1.0, 0.75];
/// Colour of galaxies, before normalisation.
const GALAXY_COLOR: [f32; 3] = [1.2, 1.0, 0.7];
/// Colours of the nebula components (H-alpha red, O-III teal), before normalisation.
const NEBULA_COLORS: [[f32; 3]; 2] = [[1.0, 0.22, 0.18], [0.15, 0.9, 0.85]];
/// Effective wavelengths of the broad R, G, B bands, micrometres.
const BAND_UM: [f32; 3] = [0.610, 0.535, 0.465];

/// Scales an RGB triple so that `(R + 2G + B) / 4 = 1`.
fn normalise_color(c: [f32; 3]) -> [f32; 3] {
    let l = 0.25 * (c[0] + 2.0 * c[1] + c[2]);
    if l > 0.0 {
        [c[0] / l, c[1] / l, c[2] / l]
    } else {
        [1.0; 3]
    }
}

/// Black-body colour of temperature `t_k` in the R, G, B bands, normalised.
pub fn blackbody_color(t_k: f32) -> [f32; 3] {
    let planck = |um: f32| -> f32 {
        let x = (14_387.77 / (um * t_k.max(500.0))).min(80.0);
        um.powi(-5) / x.exp_m1()
    };
    normalise_color([planck(BAND_UM[0]), planck(BAND_UM[1]), planck(BAND_UM[2])])
}

fn normal(rng: &mut StdRng) -> f32 {
    rng.sample::<f32, _>(StandardNormal)
}

/// Error function, Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
fn erf(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = f64::from(x.abs());
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp()) as f32
}

impl Simulation {
    /// Builds the scene and every frame's conditions. Never panics: fields that fail
    /// [`SimConfig::validate`] are replaced by their defaults (see [`SimConfig::sanitized`]); use
    /// [`Simulation::try_new`] to reject such a configuration instead.
    pub fn new(cfg: SimConfig) -> Self {
        let cfg = cfg.sanitized();
        let (w, h) = (cfg.width as f32, cfg.height as f32);
        let area = cfg.area_mpx();
        let s_min = (w.min(h)).max(1.0);

        // --- scene: depends on the seed only ---
        let mut rng = stream_rng(cfg.seed, STREAM_SCENE, 0);
        let ext_area = (f64::from(w + 2.0 * STAR_MARGIN_PX) * f64::from(h + 2.0 * STAR_MARGIN_PX)
            / 1.0e6) as f32;
        let n_stars = (cfg.star_density_per_mpx.max(0.0) * ext_area).round() as usize;
        let n_stars = n_stars.min(50_000_000);
        let inv_a = 1.0 / cfg.flux_power_index.max(1e-3);
        let mut stars = Vec::with_capacity(n_stars);
        for _ in 0..n_stars {
            let y = rng.gen::<f32>() * (h + 2.0 * STAR_MARGIN_PX) - STAR_MARGIN_PX;
            let x = rng.gen::<f32>() * (w + 2.0 * STAR_MARGIN_PX) - STAR_MARGIN_PX;
            let u: f32 = rng.gen_range(1e-9f32..1.0);
            let flux = (cfg.flux_min_adu * u.powf(-inv_a)).min(cfg.flux_max_adu);
            stars.push(TruthStar { y, x, flux });
        }
        let mut extended = Vec::new();
        if cfg.galaxies_per_mpx > 0.0 {
            let n = ((cfg.galaxies_per_mpx * area).round() as usize).clamp(1, 100_000);
            for _ in 0..n {
                let y = rng.gen::<f32>() * h;
                let x = rng.gen::<f32>() * w;
                let flux = 10f32.powf(rng.gen_range(4.3..5.5));
                let sigma = rng.gen_range(2.5f32..10.0);
                let q = rng.gen_range(0.35f32..0.95);
                let angle = rng.gen_range(0.0..PI);
                let core = gaussian_component(0.0, 0.0, 0.35 * flux, 0.35 * sigma, q, angle);
                let disk = gaussian_component(0.0, 0.0, 0.65 * flux, sigma, q, angle);
                extended.push(Extended {
                    y,
                    x,
                    components: vec![core, disk],
                });
            }
        }
        if cfg.nebula {
            let y = h * rng.gen_range(0.25f32..0.75);
            let x = w * rng.gen_range(0.25f32..0.75);
            let mut components = Vec::new();
            for _ in 0..4 {
                let oy = rng.gen_range(-0.12f32..0.12) * s_min;
                let ox = rng.gen_range(-0.12f32..0.12) * s_min;
                let sigma = rng.gen_range(0.04f32..0.09) * s_min;
                let q = rng.gen_range(0.5f32..1.0);
                let angle = rng.gen_range(0.0..PI);
                let peak = rng.gen_range(40.0f32..150.0);
                let flux = peak * 2.0 * PI * sigma * sigma * q;
                components.push(gaussian_component(oy, ox, flux, sigma, q, angle));
            }
            extended.push(Extended { y, x, components });
        }
        let n_hot = cfg
            .effective_hot_pixels()
            .min(cfg.width.saturating_mul(cfg.height) / 10);
        let mut hot_set = std::collections::BTreeSet::new();
        let mut hot = Vec::with_capacity(n_hot);
        while hot.len() < n_hot {
            let row = rng.gen_range(0..cfg.height.max(1));
            let col = rng.gen_range(0..cfg.width.max(1));
            let excess_adu = 10f32.powf(rng.gen_range(3.0..4.7)).round() as u32;
            if hot_set.insert((row, col)) {
                hot.push(HotPixel {
                    row,
                    col,
                    excess_adu,
                });
            }
        }
        let g_angle = rng.gen_range(0.0..2.0 * PI);
        let gradient = (
            cfg.sky_gradient * g_angle.sin(),
            cfg.sky_gradient * g_angle.cos(),
        );

        // --- time: per-frame conditions ---
        let mut rng = stream_rng(cfg.seed, STREAM_TIME, cfg.frames as u64);
        let n = cfg.frames;
        let m = if cfg.effective_local_rms_px() > 0.0 {
            cfg.local_modes.min(64)
        } else {
            0
        };
        let modes: Vec<Mode> = (0..m)
            .map(|_| {
                let lambda = rng.gen_range(
                    cfg.local_wavelength_min_px
                        ..=cfg.local_wavelength_max_px.max(cfg.local_wavelength_min_px),
                );
                let dir = rng.gen_range(0.0..2.0 * PI);
                let k = 2.0 * PI / lambda.max(1e-3);
                Mode {
                    ky: k * dir.sin(),
                    kx: k * dir.cos(),
                    phase: rng.gen_range(0.0..2.0 * PI),
                }
            })
            .collect();
        let drift_dir = rng.gen_range(0.0..2.0 * PI);
        let rho = cfg.local_correlation.clamp(0.0, 0.999);
        let innov = (1.0 - rho * rho).sqrt();
        let rho_f = FWHM_CORRELATION;
        let innov_f = (1.0 - rho_f * rho_f).sqrt();
        let mut amp: Vec<[f32; 4]> = (0..m)
            .map(|_| std::array::from_fn(|_| normal(&mut rng)))
            .collect();
        let mut fwhm_z = normal(&mut rng);
        let (cloud_frame, trail_frame) = bad_frame_indices(&cfg);
        let mut states = Vec::with_capacity(n);
        let mut jitter0 = Shift::ZERO;
        let rot_total = cfg.effective_rotation_deg().to_radians();
        for i in 0..n {
            if i > 0 {
                for a in amp.iter_mut() {
                    for v in a.iter_mut() {
                        *v = rho * *v + innov * normal(&mut rng);
                    }
                }
                fwhm_z = rho_f * fwhm_z + innov_f * normal(&mut rng);
            }
            let jitter = Shift::new(
                cfg.jitter_px * normal(&mut rng),
                cfg.jitter_px * normal(&mut rng),
            );
            if i == 0 {
                jitter0 = jitter;
            }
            let frac = if n > 1 {
                i as f32 / (n - 1) as f32
            } else {
                0.0
            };
            let global = Shift::new(
                cfg.drift_px * frac * drift_dir.sin(),
                cfg.drift_px * frac * drift_dir.cos(),
            ) + jitter
                - jitter0;
            let fwhm = (cfg.fwhm_mean_px + cfg.fwhm_sd_px * fwhm_z)
                .clamp(cfg.fwhm_min_px, cfg.fwhm_max_px.max(cfg.fwhm_min_px));
            let sd = cfg.transparency_sd;
            let mut transparency =
                (1.0 + sd * normal(&mut rng)).clamp(1.0 - 4.0 * sd, 1.0 + 4.0 * sd);
            let mut sky_factor = (1.0 + 0.01 * normal(&mut rng)).clamp(0.96, 1.04);
            let kind = if Some(i) == cloud_frame {
                transparency = 0.5;
                sky_factor = 1.5;
                FrameKind::Cloud
            } else if Some(i) == trail_frame {
                FrameKind::SatelliteTrail
            } else {
                FrameKind::Normal
            };
            states.push(FrameState {
                global,
                rotation_rad: rot_total * frac,
                fwhm,
                transparency,
                sky_factor,
                kind,
                amplitudes: amp.clone(),
            });
        }
        let trail_angle = rng.gen_range(0.0..PI);
        let trail = Trail {
            y0: h * rng.gen_range(0.2f32..0.8),
            x0: w * rng.gen_range(0.2f32..0.8),
            uy: trail_angle.sin(),
            ux: trail_angle.cos(),
        };
        let cloud = CloudPatch {
            y: h * rng.gen_range(0.0f32..1.0),
            x: w * rng.gen_range(0.0f32..1.0),
            sigma: 0.5 * s_min,
        };

        let mut sim = Simulation {
            cfg,
            stars,
            extended,
            hot,
            gradient,
            modes,
            states,
            trail,
            cloud,
            local_rms: 0.0,
            star_colors: Vec::new(),
            extended_colors: Vec::new(),
        };
        sim.draw_colors();
        sim.normalise_local_field();
        sim
    }

    /// Draws the colours of every object from their own random stream (so the mono scene is unchanged).
    fn draw_colors(&mut self) {
        let mut rng = stream_rng(self.cfg.seed, STREAM_COLOR, 0);
        self.star_colors = self
            .stars
            .iter()
            .map(|_| {
                // log-uniform temperature between 3000 K and 12000 K
                let t = 3000.0 * 4f32.powf(rng.gen::<f32>());
                blackbody_color(t)
            })
            .collect();
        let nebula_index = if self.cfg.nebula {
            self.extended.len().checked_sub(1)
        } else {
            None
        };
        self.extended_colors = self
            .extended
            .iter()
            .enumerate()
            .map(|(k, obj)| {
                obj.components
                    .iter()
                    .enumerate()
                    .map(|(j, _)| {
                        if Some(k) == nebula_index {
                            normalise_color(NEBULA_COLORS[j % 2])
                        } else {
                            normalise_color(GALAXY_COLOR)
                        }
                    })
                    .collect()
            })
            .collect();
    }

    /// The colour factor of star `k` for `channel` (1 for mono).
    fn star_factor(&self, k: usize, channel: Option<usize>) -> f32 {
        match channel {
            Some(c) => self.star_colors.get(k).map_or(1.0, |col| col[c]),
            None => 1.0,
        }
    }

    /// The colour factor of component `j` of extended object `k` for `channel` (1 for mono).
    fn extended_factor(&self, k: usize, j: usize, channel: Option<usize>) -> f32 {
        match channel {
            Some(c) => self
                .extended_colors
                .get(k)
                .and_then(|v| v.get(j))
                .map_or(1.0, |col| col[c]),
            None => 1.0,
        }
    }

    /// The sky's colour factor for `channel` (1 for mono).
    fn sky_factor_of(channel: Option<usize>) -> f32 {
        match channel {
            Some(c) => normalise_color(SKY_COLOR)[c],
            None => 1.0,
        }
    }

    /// The colour factor of every star (R, G, B; `(R + 2G + B) / 4 = 1`), parallel to [`Simulation::stars`].
    /// Used only in colour mode.
    pub fn star_colors(&self) -> &[[f32; 3]] {
        &self.star_colors
    }

    /// The Bayer pattern of colour mode, `None` for mono.
    pub fn color(&self) -> Option<CfaPattern> {
        self.cfg.color
    }

    /// Like [`Simulation::new`], after checking the configuration.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] listing every problem.
    pub fn try_new(cfg: SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        Ok(Simulation::new(cfg))
    }

    /// Removes the time mean of every amplitude process and scales the field to the requested RMS.
    fn normalise_local_field(&mut self) {
        let n = self.states.len();
        let m = self.modes.len();
        let target = self.cfg.effective_local_rms_px();
        if m == 0 || n < 2 || !(target > 0.0) {
            for s in self.states.iter_mut() {
                s.amplitudes.iter_mut().for_each(|a| *a = [0.0; 4]);
            }
            self.local_rms = 0.0;
            return;
        }
        for k in 0..m {
            for c in 0..4 {
                let mean = self
                    .states
                    .iter()
                    .map(|s| f64::from(s.amplitudes[k][c]))
                    .sum::<f64>()
                    / n as f64;
                for s in self.states.iter_mut() {
                    s.amplitudes[k][c] -= mean as f32;
                }
            }
        }
        let rms = self.sample_local_rms();
        let scale = if rms > 0.0 { target / rms } else { 0.0 };
        for s in self.states.iter_mut() {
            for a in s.amplitudes.iter_mut() {
                for v in a.iter_mut() {
                    *v *= scale;
                }
            }
        }
        self.local_rms = self.sample_local_rms();
    }

    /// RMS length of the local displacement over a 16 x 16 grid and all frames.
    fn sample_local_rms(&self) -> f32 {
        let (h, w) = (self.cfg.height as f32, self.cfg.width as f32);
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for i in 0..self.states.len() {
            for gy in 0..16 {
                for gx in 0..16 {
                    let y = (gy as f32 + 0.5) * h / 16.0;
                    let x = (gx as f32 + 0.5) * w / 16.0;
                    let d = self.local_displacement(i, y, x);
                    sum += f64::from(d.dy * d.dy + d.dx * d.dx);
                    count += 1;
                }
            }
        }
        if count == 0 {
            0.0
        } else {
            (sum / count as f64).sqrt() as f32
        }
    }

    /// The configuration in effect (after [`SimConfig::sanitized`]).
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.states.len()
    }

    /// The stars at their truth positions (including those in the margin outside the image).
    pub fn stars(&self) -> &[TruthStar] {
        &self.stars
    }

    /// The hot pixels (same in every frame).
    pub fn hot_pixels(&self) -> &[HotPixel] {
        &self.hot
    }

    /// The realised RMS length of the local displacement vector over a 16 x 16 grid and all frames, px.
    pub fn local_rms_px(&self) -> f32 {
        self.local_rms
    }

    /// The kind of frame `index` (normal, cloud, satellite trail).
    ///
    /// # Panics
    /// When `index >= frames()` (as slice indexing does).
    pub fn frame_kind(&self, index: usize) -> FrameKind {
        self.states[index].kind
    }

    /// Index of the cloudy frame, if any.
    pub fn cloud_frame(&self) -> Option<usize> {
        self.states.iter().position(|s| s.kind == FrameKind::Cloud)
    }

    /// Index of the frame with a satellite trail, if any.
    pub fn trail_frame(&self) -> Option<usize> {
        self.states
            .iter()
            .position(|s| s.kind == FrameKind::SatelliteTrail)
    }

    /// Moffat FWHM of frame `index`, px.
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn fwhm_px(&self, index: usize) -> f32 {
        self.states[index].fwhm
    }

    /// Transparency of frame `index` (1 = clear).
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn transparency(&self, index: usize) -> f32 {
        self.states[index].transparency
    }

    /// Field rotation of frame `index` about the image centre, radians (positive turns +x towards +y).
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn rotation_rad(&self, index: usize) -> f32 {
        self.states[index].rotation_rad
    }

    /// The global translation of frame `index` (no rotation, no local part). Zero for frame 0.
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn global_displacement(&self, index: usize) -> Shift {
        self.states[index].global
    }

    /// The local (anisoplanatic) part of the displacement of frame `index` at truth position `(y, x)`.
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn local_displacement(&self, index: usize, y: f32, x: f32) -> Shift {
        let st = &self.states[index];
        let (mut dy, mut dx) = (0.0f32, 0.0f32);
        for (mode, a) in self.modes.iter().zip(&st.amplitudes) {
            let (s, c) = (mode.ky * y + mode.kx * x + mode.phase).sin_cos();
            dy += a[0] * c + a[1] * s;
            dx += a[2] * c + a[3] * s;
        }
        Shift::new(dy, dx)
    }

    /// Total displacement of frame `index` at truth position `(y, x)`: rotation + global + local (see
    /// the module docs). A feature at truth `(y, x)` appears in frame `index` at `(y + dy, x + dx)`.
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn displacement(&self, index: usize, y: f32, x: f32) -> Shift {
        let st = &self.states[index];
        let cy = (self.cfg.height as f32 - 1.0) * 0.5;
        let cx = (self.cfg.width as f32 - 1.0) * 0.5;
        let (s, c) = st.rotation_rad.sin_cos();
        let (ry, rx) = (y - cy, x - cx);
        let rot = Shift::new(s * rx + c * ry - ry, c * rx - s * ry - rx);
        rot + st.global + self.local_displacement(index, y, x)
    }

    /// Sky level above the pedestal at detector pixel `(r, c)` for frame conditions `sky_factor`.
    fn sky_row(&self, r: usize, sky_factor: f32, out: &mut [f32]) {
        let (h, w) = (self.cfg.height as f32, self.cfg.width as f32);
        let fy = self.gradient.0 * ((r as f32 - 0.5 * (h - 1.0)) / h.max(1.0));
        for (c, v) in out.iter_mut().enumerate() {
            let fx = self.gradient.1 * ((c as f32 - 0.5 * (w - 1.0)) / w.max(1.0));
            *v = self.cfg.sky_adu * sky_factor * (1.0 + fy + fx);
        }
    }

    /// The sky without seeing, motion, transparency loss, noise or detector defects, in truth
    /// geometry (see the module docs): pedestal + sky + objects with a narrow Gaussian PSF of FWHM
    /// [`TRUTH_FWHM_PX`]. ADU, float, not clipped.
    ///
    /// In colour mode it is the Bayer mosaic of [`Simulation::truth_rgb`].
    pub fn truth(&self) -> Array2<f32> {
        match self.cfg.color {
            None => self.truth_channel(None),
            Some(p) => self.mosaic_of(|c| self.truth_channel(Some(c)), p),
        }
    }

    /// The colour truth `(3, rows, cols)` (R, G, B), as [`Simulation::truth`] per channel (each channel
    /// includes the pedestal). In mono mode all three channels equal the mono truth.
    pub fn truth_rgb(&self) -> Array3<f32> {
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let mut out = Array3::<f32>::zeros((3, rows, cols));
        for c in 0..3 {
            let ch = if self.cfg.color.is_some() {
                Some(c)
            } else {
                None
            };
            out.index_axis_mut(Axis(0), c)
                .assign(&self.truth_channel(ch));
        }
        out
    }

    /// Builds the Bayer mosaic from the three channel renderings given by `render`.
    fn mosaic_of(&self, render: impl Fn(usize) -> Array2<f32>, pattern: CfaPattern) -> Array2<f32> {
        let channels = [render(0), render(1), render(2)];
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            channels[pattern.color_at(r, c).rgb_index()][[r, c]]
        })
    }

    /// The truth of one colour channel (`None` = mono).
    fn truth_channel(&self, channel: Option<usize>) -> Array2<f32> {
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let sky = Self::sky_factor_of(channel);
        let mut img = Array2::<f32>::zeros((rows, cols));
        {
            let buf = img.as_slice_mut().expect("standard layout");
            if cols > 0 {
                for (r, row) in buf.chunks_mut(cols).enumerate() {
                    self.sky_row(r, sky, row);
                    for v in row.iter_mut() {
                        *v += self.cfg.pedestal_adu;
                    }
                }
            }
            let sigma = TRUTH_FWHM_PX / 2.354_82;
            let inv = 1.0 / (std::f32::consts::SQRT_2 * sigma);
            let radius = (5.0 * sigma + 1.0).ceil() as i64;
            let mut wy = Vec::new();
            let mut wx = Vec::new();
            for (k, star) in self.stars.iter().enumerate() {
                let (r0, r1) = clip_range(star.y, radius as f32, rows);
                let (c0, c1) = clip_range(star.x, radius as f32, cols);
                if r0 >= r1 || c0 >= c1 {
                    continue;
                }
                wy.clear();
                wy.extend((r0..r1).map(|r| {
                    let d = r as f32 - star.y;
                    0.5 * (erf((d + 0.5) * inv) - erf((d - 0.5) * inv))
                }));
                wx.clear();
                wx.extend((c0..c1).map(|c| {
                    let d = c as f32 - star.x;
                    0.5 * (erf((d + 0.5) * inv) - erf((d - 0.5) * inv))
                }));
                for (r, &fy) in (r0..r1).zip(&wy) {
                    let row = &mut buf[r * cols..(r + 1) * cols];
                    let f = star.flux * self.star_factor(k, channel) * fy;
                    for (v, &fx) in row[c0..c1].iter_mut().zip(&wx) {
                        *v += f * fx;
                    }
                }
            }
            for (k, obj) in self.extended.iter().enumerate() {
                for (j, comp) in obj.components.iter().enumerate() {
                    let f = self.extended_factor(k, j, channel);
                    render_gaussian(buf, rows, cols, obj.y, obj.x, comp, sigma, f);
                }
            }
        }
        img
    }

    /// Frame `index` without noise, hot pixels or quantisation: the expected ADU including the pedestal
    /// (not clipped at 65535).
    ///
    /// # Panics
    /// When `index >= frames()`.
    ///
    /// In colour mode it is the Bayer mosaic of the three colour renderings.
    pub fn expected_frame(&self, index: usize) -> Array2<f32> {
        match self.cfg.color {
            None => self.expected_channel(index, None),
            Some(p) => self.mosaic_of(|c| self.expected_channel(index, Some(c)), p),
        }
    }

    /// Frame `index` in colour `(3, rows, cols)` (R, G, B) without noise, hot pixels or quantisation,
    /// with the pedestal: what the camera's colour filters sample (colour mode); in mono mode all three
    /// planes equal [`Simulation::expected_frame`].
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn expected_rgb(&self, index: usize) -> Array3<f32> {
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let mut out = Array3::<f32>::zeros((3, rows, cols));
        for c in 0..3 {
            let ch = if self.cfg.color.is_some() {
                Some(c)
            } else {
                None
            };
            out.index_axis_mut(Axis(0), c)
                .assign(&self.expected_channel(index, ch));
        }
        out
    }

    /// Frame `index` of one colour channel (`None` = mono) without noise, with pedestal.
    fn expected_channel(&self, index: usize, channel: Option<usize>) -> Array2<f32> {
        let st = &self.states[index];
        let sky = Self::sky_factor_of(channel);
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let mut img = Array2::<f32>::zeros((rows, cols));
        let buf = img.as_slice_mut().expect("standard layout");
        if cols > 0 {
            for (r, row) in buf.chunks_mut(cols).enumerate() {
                self.sky_row(r, st.sky_factor * sky, row);
            }
        }
        if st.kind == FrameKind::Cloud {
            let patch = Component {
                oy: 0.0,
                ox: 0.0,
                flux: 0.8 * self.cfg.sky_adu * 2.0 * PI * self.cloud.sigma * self.cloud.sigma,
                cyy: self.cloud.sigma * self.cloud.sigma,
                cxy: 0.0,
                cxx: self.cloud.sigma * self.cloud.sigma,
            };
            render_gaussian(
                buf,
                rows,
                cols,
                self.cloud.y,
                self.cloud.x,
                &patch,
                0.0,
                sky,
            );
        }
        self.render_stars(index, buf, channel);
        let psf_sigma = st.fwhm / 2.354_82;
        for (k, obj) in self.extended.iter().enumerate() {
            let d = self.displacement(index, obj.y, obj.x);
            for (j, comp) in obj.components.iter().enumerate() {
                render_gaussian(
                    buf,
                    rows,
                    cols,
                    obj.y + d.dy,
                    obj.x + d.dx,
                    comp,
                    psf_sigma,
                    st.transparency * self.extended_factor(k, j, channel),
                );
            }
        }
        if st.kind == FrameKind::SatelliteTrail {
            let cut = 6.0 * TRAIL_SIGMA_PX;
            let inv2s2 = 1.0 / (2.0 * TRAIL_SIGMA_PX * TRAIL_SIGMA_PX);
            for r in 0..rows {
                let row = &mut buf[r * cols..(r + 1) * cols];
                let ry = r as f32 - self.trail.y0;
                for (c, v) in row.iter_mut().enumerate() {
                    let d = (c as f32 - self.trail.x0) * self.trail.uy - ry * self.trail.ux;
                    if d.abs() < cut {
                        *v += TRAIL_PEAK_ADU * (-d * d * inv2s2).exp();
                    }
                }
            }
        }
        for v in buf.iter_mut() {
            *v += self.cfg.pedestal_adu;
        }
        img
    }

    fn render_stars(&self, index: usize, buf: &mut [f32], channel: Option<usize>) {
        let st = &self.states[index];
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let beta = self.cfg.moffat_beta;
        let alpha = st.fwhm / (2.0 * (2f32.powf(1.0 / beta) - 1.0).sqrt());
        let inv_a2 = 1.0 / (alpha * alpha);
        let norm = (beta - 1.0) / (PI * alpha * alpha);
        let beta_is_3 = (beta - 3.0).abs() < 1e-6;
        let r_min = (1.5 * st.fwhm).max(2.0);
        for (k, star) in self.stars.iter().enumerate() {
            let d = self.displacement(index, star.y, star.x);
            let (py, px) = (star.y + d.dy, star.x + d.dx);
            let peak = star.flux * self.star_factor(k, channel) * st.transparency * norm;
            // radius where the profile falls to 0.25 ADU
            let reach = ((peak / 0.25).max(1.0).powf(1.0 / beta) - 1.0)
                .max(0.0)
                .sqrt()
                * alpha;
            let radius = reach.clamp(r_min, 64.0);
            let (r0, r1) = clip_range(py, radius, rows);
            let (c0, c1) = clip_range(px, radius, cols);
            let r2max = radius * radius;
            for r in r0..r1 {
                let dy = r as f32 - py;
                let dy2 = dy * dy;
                let row = &mut buf[r * cols..(r + 1) * cols];
                for (c, v) in (c0..c1).zip(row[c0..c1].iter_mut()) {
                    let dx = c as f32 - px;
                    let d2 = dx * dx + dy2;
                    if d2 > r2max {
                        continue;
                    }
                    let u = 1.0 + d2 * inv_a2;
                    *v += if beta_is_3 {
                        peak / (u * u * u)
                    } else {
                        peak * u.powf(-beta)
                    };
                }
            }
        }
    }

    /// Frame `index` as a camera delivers it: expected signal + Poisson and read noise + hot pixels,
    /// rounded and clamped to 0..=65535 (ADU, as f32). Deterministic per `(seed, index)`.
    ///
    /// # Panics
    /// When `index >= frames()`.
    pub fn frame(&self, index: usize) -> Array2<f32> {
        let mut img = self.expected_frame(index);
        let gain = self.cfg.gain_e_per_adu;
        let rn2 = self.cfg.read_noise_e * self.cfg.read_noise_e;
        let pedestal = self.cfg.pedestal_adu;
        let mut rng = stream_rng(self.cfg.seed, STREAM_NOISE, index as u64);
        for v in img.iter_mut() {
            let e = ((*v - pedestal) * gain).max(0.0);
            let noisy_e = if e >= POISSON_GAUSS_LIMIT_E {
                e + (e + rn2).sqrt() * normal(&mut rng)
            } else {
                let p = if e > 0.0 {
                    Poisson::new(f64::from(e))
                        .map(|d| d.sample(&mut rng) as f32)
                        .unwrap_or(e)
                } else {
                    0.0
                };
                p + self.cfg.read_noise_e * normal(&mut rng)
            };
            *v = noisy_e / gain + pedestal;
        }
        let cols = self.cfg.width;
        let buf = img.as_slice_mut().expect("standard layout");
        for hp in &self.hot {
            if hp.row < self.cfg.height && hp.col < cols {
                buf[hp.row * cols + hp.col] += hp.excess_adu as f32;
            }
        }
        for v in buf.iter_mut() {
            *v = v.round().clamp(0.0, 65535.0);
        }
        img
    }

    /// The true displacement of every frame sampled on a uniform grid of step `step_px` (at least 1)
    /// that reaches one step beyond the image on every side (so bicubic interpolation is valid
    /// everywhere inside), for tests that only have the files.
    pub fn truth_displacement(&self, step_px: usize) -> TruthDisplacement {
        let step = step_px.max(1);
        let axis = |n: usize| -> Vec<f32> {
            let last = n.saturating_sub(1).div_ceil(step) as i64 + 1;
            (-1..=last).map(|k| (k * step as i64) as f32).collect()
        };
        let ys = axis(self.cfg.height);
        let xs = axis(self.cfg.width);
        let frames = (0..self.frames())
            .map(|i| {
                let st = &self.states[i];
                let mut dy = Vec::with_capacity(ys.len() * xs.len());
                let mut dx = Vec::with_capacity(ys.len() * xs.len());
                for &y in &ys {
                    for &x in &xs {
                        let d = self.displacement(i, y, x);
                        dy.push(round4(d.dy));
                        dx.push(round4(d.dx));
                    }
                }
                FrameTruth {
                    index: i,
                    file: frame_file_name(i),
                    kind: st.kind,
                    global: Shift::new(round4(st.global.dy), round4(st.global.dx)),
                    rotation_deg: st.rotation_rad.to_degrees(),
                    fwhm_px: st.fwhm,
                    transparency: st.transparency,
                    dy,
                    dx,
                }
            })
            .collect();
        TruthDisplacement {
            convention: "a feature at truth (y, x) appears in frame i at (y + dy, x + dx); \
                         dy/dx are the total displacement (rotation + global + local) sampled at \
                         grid points (ys[r], xs[c]), row-major, a uniform grid reaching one step beyond the image (interpolate bicubically); frame 0 has zero global shift and \
                         rotation; the local field averages to zero over the sequence"
                .to_string(),
            width: self.cfg.width,
            height: self.cfg.height,
            rotation_centre: [
                (self.cfg.height as f32 - 1.0) * 0.5,
                (self.cfg.width as f32 - 1.0) * 0.5,
            ],
            local_rms_px: self.local_rms,
            step_px: step,
            ys,
            xs,
            frames,
        }
    }
}

fn round4(v: f32) -> f32 {
    (v * 1.0e4).round() / 1.0e4
}

/// The conventional file name of frame `index`: `frame_0000.fits`, ...
pub fn frame_file_name(index: usize) -> String {
    format!("frame_{index:04}.fits")
}

fn bad_frame_indices(cfg: &SimConfig) -> (Option<usize>, Option<usize>) {
    if !cfg.bad_frames || cfg.frames < 5 {
        return (None, None);
    }
    let last = (cfg.frames - 1) as f32;
    let cloud = ((0.37 * last).round() as usize).max(1);
    let mut trail = ((0.61 * last).round() as usize).max(1);
    if trail == cloud {
        trail += 1;
    }
    (Some(cloud), Some(trail.min(cfg.frames - 1)))
}

/// Pixel range `[lo, hi)` within `0..n` covering `centre ± radius`.
fn clip_range(centre: f32, radius: f32, n: usize) -> (usize, usize) {
    let lo = (centre - radius).floor();
    let hi = (centre + radius).ceil() + 1.0;
    if !(hi > 0.0) || !(lo < n as f32) {
        return (0, 0);
    }
    (lo.max(0.0) as usize, (hi.min(n as f32)) as usize)
}

fn gaussian_component(oy: f32, ox: f32, flux: f32, sigma: f32, q: f32, angle: f32) -> Component {
    let (s, c) = angle.sin_cos();
    let a2 = sigma * sigma;
    let b2 = (sigma * q) * (sigma * q);
    // major axis along (dy, dx) = (s, c)
    Component {
        oy,
        ox,
        flux,
        cyy: a2 * s * s + b2 * c * c,
        cxy: (a2 - b2) * s * c,
        cxx: a2 * c * c + b2 * s * s,
    }
}

/// Adds an elliptical Gaussian component (convolved with a round Gaussian of `psf_sigma`) centred at
/// `(y + comp.oy, x + comp.ox)`, scaled by `scale`.
#[allow(clippy::too_many_arguments)]
fn render_gaussian(
    buf: &mut [f32],
    rows: usize,
    cols: usize,
    y: f32,
    x: f32,
    comp: &Component,
    psf_sigma: f32,
    scale: f32,
) {
    let p2 = psf_sigma * psf_sigma;
    let (cyy, cxy, cxx) = (comp.cyy + p2, comp.cxy, comp.cxx + p2);
    let det = cyy * cxx - cxy * cxy;
    if !(det > 0.0) || !(comp.flux * scale > 0.0) {
        return;
    }
    let peak = comp.flux * scale / (2.0 * PI * det.sqrt());
    let (iyy, ixy, ixx) = (cxx / det, -cxy / det, cyy / det);
    let (cy, cx) = (y + comp.oy, x + comp.ox);
    let (r0, r1) = clip_range(cy, 4.5 * cyy.sqrt(), rows);
    let (c0, c1) = clip_range(cx, 4.5 * cxx.sqrt(), cols);
    for r in r0..r1 {
        let dy = r as f32 - cy;
        let row = &mut buf[r * cols..(r + 1) * cols];
        for (c, v) in (c0..c1).zip(row[c0..c1].iter_mut()) {
            let dx = c as f32 - cx;
            let q = iyy * dy * dy + 2.0 * ixy * dy * dx + ixx * dx * dx;
            if q < 20.0 {
                *v += peak * (-0.5 * q).exp();
            }
        }
    }
}

/// The true displacement of every frame on a coarse grid, as written to `truth_displacement.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthDisplacement {
    /// The sign convention, in words.
    pub convention: String,
    /// Image width, px.
    pub width: usize,
    /// Image height, px.
    pub height: usize,
    /// Centre of the field rotation `[y, x]`.
    pub rotation_centre: [f32; 2],
    /// Realised RMS length of the local displacement vector, px.
    pub local_rms_px: f32,
    /// Grid step, px.
    pub step_px: usize,
    /// Row coordinates of the grid points.
    pub ys: Vec<f32>,
    /// Column coordinates of the grid points.
    pub xs: Vec<f32>,
    /// One entry per frame.
    pub frames: Vec<FrameTruth>,
}

/// The truth of one frame in [`TruthDisplacement`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    /// Frame index.
    pub index: usize,
    /// File name written by [`write_sequence`].
    pub file: String,
    /// Normal, cloud or satellite trail.
    pub kind: FrameKind,
    /// Global translation.
    pub global: Shift,
    /// Field rotation about `rotation_centre`, degrees.
    pub rotation_deg: f32,
    /// Moffat FWHM, px.
    pub fwhm_px: f32,
    /// Transparency (1 = clear).
    pub transparency: f32,
    /// Total row displacement at the grid points, row-major `(ys.len(), xs.len())`.
    pub dy: Vec<f32>,
    /// Total column displacement at the grid points, row-major.
    pub dx: Vec<f32>,
}

impl TruthDisplacement {
    /// Reads `truth_displacement.json`.
    ///
    /// # Errors
    /// [`SimError::Io`] or [`SimError::Json`] naming the file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SimError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Total displacement of frame `index` at `(y, x)`, interpolated bicubically (Catmull-Rom) on the
    /// grid (clamped at its border). `None` when the frame does not exist or the grid is malformed.
    pub fn displacement(&self, index: usize, y: f32, x: f32) -> Option<Shift> {
        let f = self.frames.get(index)?;
        let (ny, nx) = (self.ys.len(), self.xs.len());
        if ny < 2 || nx < 2 || f.dy.len() != ny * nx || f.dx.len() != ny * nx {
            return None;
        }
        let (iy, ty) = locate(&self.ys, y);
        let (ix, tx) = locate(&self.xs, x);
        let wy = catmull_rom(ty);
        let wx = catmull_rom(tx);
        let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
        let interp = |v: &[f32]| {
            let mut sum = 0.0f32;
            for (a, wa) in wy.iter().enumerate() {
                let r = clamp(iy as i64 + a as i64 - 1, ny);
                for (b, wb) in wx.iter().enumerate() {
                    let c = clamp(ix as i64 + b as i64 - 1, nx);
                    sum += wa * wb * v[r * nx + c];
                }
            }
            sum
        };
        Some(Shift::new(interp(&f.dy), interp(&f.dx)))
    }
}

/// Catmull-Rom weights of the points `i-1, i, i+1, i+2` at fraction `t` between `i` and `i+1`.
fn catmull_rom(t: f32) -> [f32; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Index of the grid cell containing `v` and the fraction within it (clamped to the grid).
fn locate(axis: &[f32], v: f32) -> (usize, f32) {
    let n = axis.len();
    if n < 2 || !(v > axis[0]) {
        return (0, 0.0);
    }
    if v >= axis[n - 1] {
        return (n - 1, 0.0);
    }
    let i = axis
        .partition_point(|&a| a <= v)
        .saturating_sub(1)
        .min(n - 2);
    let span = axis[i + 1] - axis[i];
    let t = if span > 0.0 {
        (v - axis[i]) / span
    } else {
        0.0
    };
    (i, t.clamp(0.0, 1.0))
}

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
pub fn write_sequence(cfg: &SimConfig, dir: &Path) -> Result<SimSummary, SimError> {
    use crate::fits::{write_image_atomic, CardValue, OutputMeta, SampleFormat};
    let sim = Simulation::try_new(cfg.clone())?;
    std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let fits_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimError::Fits { path, source }
    };
    let cadence_ms = (f64::from(cfg.exposure_s) * 1000.0).round() as i64 + 2000;
    let mut frames = Vec::with_capacity(sim.frames());
    for i in 0..sim.frames() {
        let path = dir.join(frame_file_name(i));
        let image = sim.frame(i);
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
        write_image_atomic(&path, image.view(), SampleFormat::U16, &meta)
            .map_err(fits_err(&path))?;
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
        .map_err(fits_err(&truth_path))?;
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
            .map_err(fits_err(&rgb_path))?;
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
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), SimError> {
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
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Colour fidelity of a reconstruction against the truth (colour mode)
// ---------------------------------------------------------------------------------------------

/// How well a colour reconstruction keeps the colours of bright, isolated stars, per measured star; see
/// [`Simulation::star_colour_errors`]. An error is `max(|ln(r_R/G / t_R/G)|, |ln(r_B/G / t_B/G)|)` of
/// the result's (`r`) and the truth's (`t`) flux ratios, so 0.05 means about 5 %.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StarColourErrors {
    /// Error of the aperture colour (radius 4 cells around the star).
    pub core: Vec<f64>,
    /// Error of the colour in the ring 1.5..4 cells from the centre, outside the core: planes resampled
    /// apart (colour fringes) show here first. Less flux, so noisier than `core`.
    pub ring: Vec<f64>,
    /// How coloured the star itself is: `max(|ln t_R/G|, |ln t_B/G|)` (a check that the stars can tell a
    /// swap of planes).
    pub truth_spread: Vec<f64>,
}

fn median_f64(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

impl StarColourErrors {
    /// Number of stars measured.
    pub fn stars(&self) -> usize {
        self.core.len()
    }
    /// Median of [`StarColourErrors::core`]; `None` without stars.
    pub fn median_core(&self) -> Option<f64> {
        median_f64(&self.core)
    }
    /// Median of [`StarColourErrors::ring`]; `None` without stars.
    pub fn median_ring(&self) -> Option<f64> {
        median_f64(&self.ring)
    }
    /// Median of [`StarColourErrors::truth_spread`]; `None` without stars.
    pub fn median_truth_spread(&self) -> Option<f64> {
        median_f64(&self.truth_spread)
    }
}

/// Stars measured by [`Simulation::star_colour_errors`].
const COLOUR_CHECK_STARS: usize = 12;

impl Simulation {
    /// Compares the colours of the brightest isolated stars (up to 12, at least 32 px inside the image, no
    /// neighbour within 14 px brighter than 5 % of them) in a demosaiced full-resolution result
    /// `rgb = (3, H, W)` with the truth ([`Simulation::star_colors`]). The result is binned 2x2 into cell
    /// space first (colours co-sited at cell centres, as a viewer sees them), after reversing its rows when
    /// `bottom_up` (the run read bottom-up frames). The result may be offset from the truth geometry (it
    /// is in its reference frame's): the common offset is found from the five brightest stars. Fluxes are
    /// background-subtracted with the median of the annulus 7..11 cells per plane.
    ///
    /// Returns empty lists for a mono simulation, a result that is not `(3, H, W)`, or when no star is found.
    pub fn star_colour_errors(&self, rgb: ArrayView3<f32>, bottom_up: bool) -> StarColourErrors {
        let mut errors = StarColourErrors::default();
        let (planes, rows, cols) = rgb.dim();
        if self.cfg.color.is_none() || planes != 3 || rows < 2 || cols < 2 {
            return errors;
        }
        let rgb = if bottom_up {
            rgb.slice(ndarray::s![.., ..;-1, ..])
        } else {
            rgb.view()
        };
        let cells = Array3::from_shape_fn((3, rows / 2, cols / 2), |(c, r, k)| {
            0.25 * (rgb[[c, 2 * r, 2 * k]]
                + rgb[[c, 2 * r + 1, 2 * k]]
                + rgb[[c, 2 * r, 2 * k + 1]]
                + rgb[[c, 2 * r + 1, 2 * k + 1]])
        });
        let stars = self.bright_isolated_stars(COLOUR_CHECK_STARS);
        let at = |k: usize| (0.5 * self.stars[k].y, 0.5 * self.stars[k].x);
        let (mut oy, mut ox) = (Vec::new(), Vec::new());
        for &k in stars.iter().take(5) {
            let (y, x) = at(k);
            if let Some((ry, rx)) = locate_peak(&cells, y, x, 10) {
                oy.push(f64::from(ry - y));
                ox.push(f64::from(rx - x));
            }
        }
        let (Some(oy), Some(ox)) = (median_f64(&oy), median_f64(&ox)) else {
            return errors;
        };
        let ratios = |v: [f64; 3]| [v[0] / v[1], v[2] / v[1]];
        let log_err = |a: [f64; 3], b: [f64; 3]| {
            let (ra, rb) = (ratios(a), ratios(b));
            ((ra[0] / rb[0]).ln().abs()).max((ra[1] / rb[1]).ln().abs())
        };
        for &k in &stars {
            let (y, x) = at(k);
            let Some((ry, rx)) = locate_peak(&cells, y + oy as f32, x + ox as f32, 2) else {
                continue;
            };
            let c = self.star_colors[k];
            let truth = [f64::from(c[0]), f64::from(c[1]), f64::from(c[2])];
            errors
                .core
                .push(log_err(ring_rgb(&cells, ry, rx, 0.0, 4.0, 7.0), truth));
            errors
                .ring
                .push(log_err(ring_rgb(&cells, ry, rx, 1.5, 4.0, 7.0), truth));
            let t = ratios(truth);
            errors
                .truth_spread
                .push(t[0].ln().abs().max(t[1].ln().abs()));
        }
        errors
    }

    /// Indices of the brightest isolated stars well inside the image, brightest first.
    fn bright_isolated_stars(&self, count: usize) -> Vec<usize> {
        let stars = &self.stars;
        let mut idx: Vec<usize> = (0..stars.len()).collect();
        idx.sort_by(|&a, &b| stars[b].flux.total_cmp(&stars[a].flux));
        let margin = 32.0;
        let (h, w) = (self.cfg.height as f32, self.cfg.width as f32);
        idx.into_iter()
            .filter(|&i| {
                let s = stars[i];
                s.x > margin && s.y > margin && s.x < w - margin && s.y < h - margin
            })
            .filter(|&i| {
                let s = stars[i];
                stars.iter().enumerate().all(|(j, o)| {
                    j == i
                        || o.flux < 0.05 * s.flux
                        || ((o.x - s.x).powi(2) + (o.y - s.y).powi(2)).sqrt() > 14.0
                })
            })
            .take(count)
            .collect()
    }
}

/// Position of the peak of `sum(rgb)` (3x3 box-smoothed) within `radius` of `(y, x)`; `None` when nothing
/// finite is there.
fn locate_peak(rgb: &Array3<f32>, y: f32, x: f32, radius: isize) -> Option<(f32, f32)> {
    let lum = rgb.sum_axis(Axis(0));
    let (rows, cols) = lum.dim();
    let at = |r: isize, c: isize| -> f32 {
        if r < 0 || c < 0 || r >= rows as isize || c >= cols as isize {
            return f32::NAN;
        }
        lum[[r as usize, c as usize]]
    };
    let mut best = (f32::NEG_INFINITY, 0isize, 0isize);
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            let (r, c) = (y.round() as isize + dy, x.round() as isize + dx);
            let mut v = 0.0;
            for a in -1..=1 {
                for b in -1..=1 {
                    v += at(r + a, c + b);
                }
            }
            if v > best.0 {
                best = (v, r, c);
            }
        }
    }
    best.0.is_finite().then_some((best.1 as f32, best.2 as f32))
}

/// Background-subtracted sums of R, G, B between radii `r0..r1` around `(y, x)`; the background is the
/// median of the annulus `r_bg..r_bg + 4` per plane.
fn ring_rgb(rgb: &Array3<f32>, y: f32, x: f32, r0: f32, r1: f32, r_bg: f32) -> [f64; 3] {
    let (_, rows, cols) = rgb.dim();
    let mut out = [0.0f64; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let plane = rgb.index_axis(Axis(0), c);
        let mut bg = Vec::new();
        let mut pix = Vec::new();
        let reach = (r_bg + 5.0).ceil() as isize;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (py, px) = (y.round() as isize + dy, x.round() as isize + dx);
                if py < 0 || px < 0 || py >= rows as isize || px >= cols as isize {
                    continue;
                }
                let v = plane[[py as usize, px as usize]];
                if !v.is_finite() {
                    continue;
                }
                let r = ((py as f32 - y).powi(2) + (px as f32 - x).powi(2)).sqrt();
                if r >= r_bg && r < r_bg + 4.0 {
                    bg.push(v);
                } else if r >= r0 && r < r1 {
                    pix.push(v);
                }
            }
        }
        let b = crate::stats::median(&bg);
        *o = pix.iter().map(|&v| f64::from(v - b)).sum();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(scenario: Scenario, frames: usize) -> SimConfig {
        SimConfig::new(scenario, frames, 128, 96, 7)
    }

    #[test]
    fn scenario_parses_and_prints() {
        for s in [Scenario::Static, Scenario::Seeing, Scenario::Altaz] {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(" AltAz ".parse::<Scenario>().unwrap(), Scenario::Altaz);
        let err = "wobbly".parse::<Scenario>().unwrap_err();
        assert!(err.to_string().contains("`wobbly`"), "{err}");
    }

    #[test]
    fn validate_lists_every_problem() {
        let mut cfg = small(Scenario::Seeing, 0);
        cfg.width = 3;
        cfg.moffat_beta = 1.0;
        cfg.gain_e_per_adu = f32::NAN;
        let err = cfg.validate().unwrap_err();
        let text = err.to_string();
        for key in ["frames", "width", "gain_e_per_adu"] {
            assert!(text.contains(key), "{text}");
        }
        cfg.gain_e_per_adu = 1.0;
        let text = cfg.validate().unwrap_err().to_string();
        assert!(text.contains("moffat_beta"), "{text}");
        assert!(small(Scenario::Altaz, 3).validate().is_ok());
        assert!(Simulation::try_new(small(Scenario::Seeing, 0)).is_err());
        assert!(SimConfig::default().validate().is_ok());
    }

    #[test]
    fn frame_zero_has_no_global_motion_and_local_field_averages_out() {
        let sim = Simulation::new(small(Scenario::Altaz, 40));
        assert_eq!(sim.global_displacement(0), Shift::ZERO);
        assert_eq!(sim.rotation_rad(0), 0.0);
        let last = sim.rotation_rad(39).to_degrees();
        assert!((last - 0.5).abs() < 1e-4, "{last}");
        for &(y, x) in &[(10.0f32, 20.0f32), (50.0, 100.0), (90.0, 5.0)] {
            let mut mean = Shift::ZERO;
            for i in 0..40 {
                mean = mean + sim.local_displacement(i, y, x);
            }
            assert!(mean.norm() / 40.0 < 1e-4, "{mean:?}");
        }
        assert!(
            (sim.local_rms_px() - 1.5).abs() < 1e-3,
            "{}",
            sim.local_rms_px()
        );
    }

    #[test]
    fn static_scenario_has_no_local_motion_or_rotation() {
        let sim = Simulation::new(small(Scenario::Static, 10));
        for i in 0..10 {
            let d = sim.displacement(i, 40.0, 70.0);
            assert_eq!(d, sim.global_displacement(i));
        }
        assert_eq!(sim.local_rms_px(), 0.0);
    }

    #[test]
    fn displacement_composes_rotation_global_and_local() {
        let sim = Simulation::new(small(Scenario::Altaz, 12));
        let i = 11;
        let (y, x) = (80.0f32, 120.0f32);
        let th = sim.rotation_rad(i);
        let (cy, cx) = (47.5f32, 63.5f32);
        let ry = cy + th.sin() * (x - cx) + th.cos() * (y - cy);
        let rx = cx + th.cos() * (x - cx) - th.sin() * (y - cy);
        let g = sim.global_displacement(i);
        let l = sim.local_displacement(i, y, x);
        let d = sim.displacement(i, y, x);
        assert!((d.dy - (ry - y + g.dy + l.dy)).abs() < 1e-4);
        assert!((d.dx - (rx - x + g.dx + l.dx)).abs() < 1e-4);
    }

    #[test]
    fn local_field_is_correlated_in_time() {
        let sim = Simulation::new(SimConfig::new(Scenario::Seeing, 200, 256, 256, 3));
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in 1..200 {
            let a = sim.local_displacement(i - 1, 100.0, 50.0);
            let b = sim.local_displacement(i, 100.0, 50.0);
            num += f64::from(a.dx * b.dx + a.dy * b.dy);
            den += f64::from(a.dx * a.dx + a.dy * a.dy);
        }
        let rho = num / den;
        assert!(rho > 0.75 && rho < 0.97, "lag-1 correlation {rho}");
    }

    #[test]
    fn frames_are_quantised_u16_with_fixed_hot_pixels() {
        let sim = Simulation::new(small(Scenario::Seeing, 6));
        let a = sim.frame(1);
        let b = sim.frame(4);
        assert!(a
            .iter()
            .all(|&v| v.fract() == 0.0 && (0.0..=65535.0).contains(&v)));
        for hp in sim.hot_pixels() {
            for img in [&a, &b] {
                assert!(img[[hp.row, hp.col]] > 1000.0 + 0.5 * hp.excess_adu as f32);
            }
        }
        assert_eq!(sim.frame(1), a);
    }

    #[test]
    fn bad_frames_are_placed_and_visible() {
        let sim = Simulation::new(SimConfig::new(Scenario::Seeing, 20, 128, 128, 5));
        let cloud = sim.cloud_frame().unwrap();
        let trail = sim.trail_frame().unwrap();
        assert!(cloud > 0 && trail > 0 && cloud != trail);
        assert!(sim.transparency(cloud) < 0.6);
        let sky = |i: usize| crate::stats::median(sim.expected_frame(i).as_slice().unwrap());
        assert!(sky(cloud) > sky(0) + 150.0);
        let diff = &sim.expected_frame(trail) - &sim.expected_frame(0);
        let bright = diff.iter().filter(|&&v| v > 1500.0).count();
        assert!(bright > 100, "{bright} trail pixels");
        assert_eq!(
            Simulation::new(small(Scenario::Seeing, 4)).cloud_frame(),
            None
        );
    }

    #[test]
    fn truth_displacement_grid_interpolates_the_model() {
        let sim = Simulation::new(small(Scenario::Altaz, 5));
        let td = sim.truth_displacement(8);
        assert_eq!(td.ys.first().copied(), Some(-8.0));
        assert_eq!(td.ys.last().copied(), Some(104.0));
        assert_eq!(td.xs.last().copied(), Some(136.0));
        let exact = sim.displacement(3, 40.0, 64.0);
        let grid = td.displacement(3, 40.0, 64.0).unwrap();
        assert!((exact - grid).norm() < 1e-3);
        let between = td.displacement(3, 43.3, 61.7).unwrap();
        assert!((sim.displacement(3, 43.3, 61.7) - between).norm() < 0.002);
        let coarse = sim.truth_displacement(32);
        for &(y, x) in &[(0.0f32, 0.0f32), (17.3, 101.9), (95.0, 127.0), (50.5, 3.2)] {
            let err = (sim.displacement(3, y, x) - coarse.displacement(3, y, x).unwrap()).norm();
            assert!(err < 0.01, "bicubic error {err} px at ({y}, {x})");
        }
        assert!(td.displacement(5, 0.0, 0.0).is_none());
    }

    #[test]
    fn truth_conserves_star_flux() {
        let mut cfg = small(Scenario::Static, 1);
        cfg.galaxies_per_mpx = 0.0;
        cfg.nebula = false;
        let sim = Simulation::new(cfg.clone());
        let truth = sim.truth();
        let mut sky_only = cfg;
        sky_only.star_density_per_mpx = 0.0;
        let sky = Simulation::new(sky_only).truth();
        let total: f64 = (&truth - &sky).iter().map(|&v| f64::from(v)).sum();
        let expected: f64 = sim
            .stars()
            .iter()
            .filter(|s| s.y > 5.0 && s.y < 90.0 && s.x > 5.0 && s.x < 122.0)
            .map(|s| f64::from(s.flux))
            .sum();
        assert!(total >= expected * 0.999, "{total} vs {expected}");
    }

    #[test]
    fn invalid_configs_are_sanitised_not_panicking() {
        let mut cfg = small(Scenario::Altaz, 6);
        assert_eq!(cfg.sanitized(), cfg);
        cfg.fwhm_min_px = f32::NAN;
        cfg.transparency_sd = -1.0;
        cfg.local_wavelength_min_px = 900.0;
        cfg.moffat_beta = 0.5;
        cfg.gain_e_per_adu = 0.0;
        cfg.local_rms_px = Some(f32::INFINITY);
        cfg.hot_pixels = Some(1_000_000);
        assert!(cfg.validate().is_err());
        let fixed = cfg.sanitized();
        assert!(fixed.validate().is_ok(), "{:?}", fixed.validate());
        let sim = Simulation::new(cfg);
        let img = sim.frame(5);
        assert!(img.iter().all(|v| v.is_finite()));
        for (w, h, n) in [(0, 0, 0), (0, 10, 3), (9, 0, 1)] {
            let sim = Simulation::new(SimConfig::new(Scenario::Seeing, n, w, h, 1));
            assert_eq!(sim.truth().dim(), (h, w));
            if n > 0 {
                assert_eq!(sim.frame(n - 1).dim(), (h, w));
            }
        }
    }

    #[test]
    fn erf_and_dates() {
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6);
        assert!((erf(-1.0) + 0.842_700_8).abs() < 1e-6);
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
