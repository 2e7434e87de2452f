//! The simulated scene and its motion, drawn from the seed: [`Simulation::new`] places the stars,
//! galaxies, nebula and hot pixels, draws every frame's conditions (global drift and jitter, rotation,
//! FWHM, transparency, sky level, cloud and trail frames) and the local field's Fourier modes and
//! amplitudes, and, in colour mode, every object's colour. [`Simulation::displacement`] evaluates the
//! motion at a truth position; the accessors expose the per-frame conditions.
//!
//! What it does not: render pixels (that is [`super::render`]), write files, or use the noise stream
//! (drawn per frame by [`Simulation::frame`]).

use std::f32::consts::PI;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::{SimConfig, SimError};
use crate::bayer::CfaPattern;
use crate::geom::Shift;

/// Margin in pixels around the image inside which stars are placed too (they may drift in).
const STAR_MARGIN_PX: f32 = 24.0;
/// Per-frame correlation of the FWHM process.
const FWHM_CORRELATION: f32 = 0.8;

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
pub(super) struct Component {
    pub(super) oy: f32,
    pub(super) ox: f32,
    pub(super) flux: f32,
    pub(super) cyy: f32,
    pub(super) cxy: f32,
    pub(super) cxx: f32,
}

/// An extended object: a set of Gaussian components moved rigidly.
#[derive(Debug, Clone)]
pub(super) struct Extended {
    pub(super) y: f32,
    pub(super) x: f32,
    pub(super) components: Vec<Component>,
}

/// A spatial Fourier mode of the local field.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode {
    pub(super) ky: f32,
    pub(super) kx: f32,
    pub(super) phase: f32,
}

/// Per-frame state drawn in [`Simulation::new`].
#[derive(Debug, Clone)]
pub(super) struct FrameState {
    pub(super) global: Shift,
    pub(super) rotation_rad: f32,
    pub(super) fwhm: f32,
    pub(super) transparency: f32,
    pub(super) sky_factor: f32,
    pub(super) kind: FrameKind,
    /// Per mode: amplitudes of (dy cos, dy sin, dx cos, dx sin), px.
    pub(super) amplitudes: Vec<[f32; 4]>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Trail {
    pub(super) y0: f32,
    pub(super) x0: f32,
    /// Unit direction (dy, dx).
    pub(super) uy: f32,
    pub(super) ux: f32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CloudPatch {
    pub(super) y: f32,
    pub(super) x: f32,
    pub(super) sigma: f32,
}

/// A simulated sequence: the scene, the per-frame conditions and the renderer.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub(super) cfg: SimConfig,
    pub(super) stars: Vec<TruthStar>,
    pub(super) extended: Vec<Extended>,
    pub(super) hot: Vec<HotPixel>,
    pub(super) gradient: (f32, f32),
    pub(super) modes: Vec<Mode>,
    pub(super) states: Vec<FrameState>,
    pub(super) trail: Trail,
    pub(super) cloud: CloudPatch,
    pub(super) local_rms: f32,
    /// Colour of each star (R, G, B factors, `(R + 2G + B) / 4 = 1`), parallel to `stars`.
    pub(super) star_colors: Vec<[f32; 3]>,
    /// Colour of each component of each extended object, parallel to `extended`.
    pub(super) extended_colors: Vec<Vec<[f32; 3]>>,
}

/// SplitMix64 finaliser: decorrelates seeds derived from `(seed, stream, index)`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn stream_rng(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ mix(stream)) ^ index))
}

const STREAM_SCENE: u64 = 1;
const STREAM_TIME: u64 = 2;
pub(super) const STREAM_NOISE: u64 = 3;
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

pub(super) fn normal(rng: &mut StdRng) -> f32 {
    rng.sample::<f32, _>(StandardNormal)
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
            let y = rng.random::<f32>() * (h + 2.0 * STAR_MARGIN_PX) - STAR_MARGIN_PX;
            let x = rng.random::<f32>() * (w + 2.0 * STAR_MARGIN_PX) - STAR_MARGIN_PX;
            let u: f32 = rng.random_range(1e-9f32..1.0);
            let flux = (cfg.flux_min_adu * u.powf(-inv_a)).min(cfg.flux_max_adu);
            stars.push(TruthStar { y, x, flux });
        }
        let mut extended = Vec::new();
        if cfg.galaxies_per_mpx > 0.0 {
            let n = ((cfg.galaxies_per_mpx * area).round() as usize).clamp(1, 100_000);
            for _ in 0..n {
                let y = rng.random::<f32>() * h;
                let x = rng.random::<f32>() * w;
                let flux = 10f32.powf(rng.random_range(4.3..5.5));
                let sigma = rng.random_range(2.5f32..10.0);
                let q = rng.random_range(0.35f32..0.95);
                let angle = rng.random_range(0.0..PI);
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
            let y = h * rng.random_range(0.25f32..0.75);
            let x = w * rng.random_range(0.25f32..0.75);
            let mut components = Vec::new();
            for _ in 0..4 {
                let oy = rng.random_range(-0.12f32..0.12) * s_min;
                let ox = rng.random_range(-0.12f32..0.12) * s_min;
                let sigma = rng.random_range(0.04f32..0.09) * s_min;
                let q = rng.random_range(0.5f32..1.0);
                let angle = rng.random_range(0.0..PI);
                let peak = rng.random_range(40.0f32..150.0);
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
            let row = rng.random_range(0..cfg.height.max(1));
            let col = rng.random_range(0..cfg.width.max(1));
            let excess_adu = 10f32.powf(rng.random_range(3.0..4.7)).round() as u32;
            if hot_set.insert((row, col)) {
                hot.push(HotPixel {
                    row,
                    col,
                    excess_adu,
                });
            }
        }
        let g_angle = rng.random_range(0.0..2.0 * PI);
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
                let lambda = rng.random_range(
                    cfg.local_wavelength_min_px
                        ..=cfg.local_wavelength_max_px.max(cfg.local_wavelength_min_px),
                );
                let dir = rng.random_range(0.0..2.0 * PI);
                let k = 2.0 * PI / lambda.max(1e-3);
                Mode {
                    ky: k * dir.sin(),
                    kx: k * dir.cos(),
                    phase: rng.random_range(0.0..2.0 * PI),
                }
            })
            .collect();
        let drift_dir = rng.random_range(0.0..2.0 * PI);
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
        let trail_angle = rng.random_range(0.0..PI);
        let trail = Trail {
            y0: h * rng.random_range(0.2f32..0.8),
            x0: w * rng.random_range(0.2f32..0.8),
            uy: trail_angle.sin(),
            ux: trail_angle.cos(),
        };
        let cloud = CloudPatch {
            y: h * rng.random_range(0.0f32..1.0),
            x: w * rng.random_range(0.0f32..1.0),
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
                let t = 3000.0 * 4f32.powf(rng.random::<f32>());
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
    pub(super) fn star_factor(&self, k: usize, channel: Option<usize>) -> f32 {
        match channel {
            Some(c) => self.star_colors.get(k).map_or(1.0, |col| col[c]),
            None => 1.0,
        }
    }

    /// The colour factor of component `j` of extended object `k` for `channel` (1 for mono).
    pub(super) fn extended_factor(&self, k: usize, j: usize, channel: Option<usize>) -> f32 {
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
    pub(super) fn sky_factor_of(channel: Option<usize>) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{small, Scenario};

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
}
