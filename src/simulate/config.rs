//! What a simulated sequence is made of: [`SimConfig`] (sizes, seed, scene, camera, seeing and motion
//! parameters) and its [`Scenario`] (static, seeing, altaz), with [`SimConfig::validate`] (every
//! problem at once) and [`SimConfig::sanitized`] (replace what validation rejects by defaults).
//!
//! What it does not: draw anything (that is [`super::scene`]) or read and write files (the configuration
//! is written as `simulation.json` by [`super::write`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SimError;
use crate::bayer::CfaPattern;

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
    /// Full-well clip: `Some(level)` clips every frame at `level` ADU (a sensor's saturation, below
    /// the 16-bit range) and writes it as `SATURATE` into the frames' headers; `None` (the default)
    /// clips at 65535 only, without the card. Must be above the pedestal and at most 65535.
    #[serde(default)]
    pub saturation_adu: Option<f32>,
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
            saturation_adu: None,
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

    /// This configuration with seeing of mean FWHM `px` and the default's spread around it in
    /// proportion (sd 9.4 %, range 78-125 % of the mean: 0.3, 2.5 and 4.0 px around 3.2 px). Small
    /// values simulate undersampled data, as from short-focal-length one-shot colour cameras.
    pub fn with_seeing_fwhm(self, px: f32) -> Self {
        let d = SimConfig::default();
        let ratio = px / d.fwhm_mean_px;
        SimConfig {
            fwhm_mean_px: px,
            fwhm_sd_px: d.fwhm_sd_px * ratio,
            fwhm_min_px: d.fwhm_min_px * ratio,
            fwhm_max_px: d.fwhm_max_px * ratio,
            ..self
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

    /// The level frames are clipped at: `saturation_adu`, else 65535 (the 16-bit range).
    pub fn clip_level_adu(&self) -> f32 {
        self.saturation_adu.unwrap_or(65_535.0)
    }

    fn saturation_problem(&self) -> Option<String> {
        let level = self.saturation_adu?;
        (!(level.is_finite() && level > self.pedestal_adu && level <= 65_535.0)).then(|| {
            format!(
                "saturation_adu = {level} must be above pedestal_adu ({}) and at most 65535",
                self.pedestal_adu
            )
        })
    }

    /// The effective number of hot pixels.
    pub fn effective_hot_pixels(&self) -> usize {
        self.hot_pixels
            .unwrap_or_else(|| 20 + (20.0 * self.area_mpx()).round() as usize)
    }

    pub(super) fn area_mpx(&self) -> f32 {
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
        if c.saturation_problem().is_some() {
            c.saturation_adu = None;
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
        if let Some(problem) = self.saturation_problem() {
            p.push(problem);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{small, Simulation};

    #[test]
    fn seeing_fwhm_scales_the_spread_and_keeps_the_default() {
        let d = SimConfig::default();
        let same = SimConfig::default().with_seeing_fwhm(d.fwhm_mean_px);
        assert_eq!(
            (same.fwhm_sd_px, same.fwhm_min_px, same.fwhm_max_px),
            (d.fwhm_sd_px, d.fwhm_min_px, d.fwhm_max_px)
        );
        let small = SimConfig::default().with_seeing_fwhm(1.6);
        assert_eq!(small.fwhm_mean_px, 1.6);
        assert!((small.fwhm_min_px - 1.25).abs() < 1e-6 && (small.fwhm_max_px - 2.0).abs() < 1e-6);
        assert!((small.fwhm_sd_px - 0.15).abs() < 1e-6);
        assert!(small.validate().is_ok());
        assert!(SimConfig::default()
            .with_seeing_fwhm(-1.0)
            .validate()
            .is_err());
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
}
