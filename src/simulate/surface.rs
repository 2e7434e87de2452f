//! Surface scenes with known truth: solar granulation, a lunar surface and a planet on black sky, seen
//! through anisoplanatic seeing ([`SurfaceSim`]), for tests and benches of star-less registration.
//!
//! Model, frame by frame (frames are produced in order by [`SurfaceSim::frames`]):
//! - truth ([`SurfaceSim::truth`]): granulation (bright cells about [`GRANULE_PX`] across with dark
//!   intergranular lanes), a lunar surface (maria as broad dark patches, craters with bright rims and
//!   dark floors in a power-law of sizes, fine regolith texture) or a planet (a limb-darkened banded disc
//!   of radius 0.3 × the smaller edge, on black sky);
//! - motion: a global drift (`drift_px` in total over the sequence, along a fixed direction) plus a
//!   global jitter, and an anisoplanatic distortion field: Gaussian random field with correlation length
//!   `correlation_length_px` (the sigma of its smoothing kernel is half of it), RMS `distortion_rms_px`
//!   per axis, AR(1) in time with per-frame correlation `time_correlation`. A feature at truth `p` is at
//!   `p + global_i + field_i(p)` in frame `i`; frames are rendered by sampling the truth (bilinear) at
//!   `q - global_i - field_i(q)`;
//! - seeing blur: a Gaussian whose FWHM is AR(1) around `fwhm_mean_px` (sd `fwhm_sd_px`). With
//!   `seeing_variation` > 0 the FWHM also varies across the field within a frame (anisoplanatic seeing,
//!   which lucky imaging's per-tile selection exploits): `FWHM_i(p) = FWHM_i · exp(v · z_i(p))`, `z_i` a
//!   unit-RMS Gaussian random field with correlation length `seeing_scale_px`, AR(1) in time with
//!   correlation [`SEEING_TIME_CORRELATION`] (so different frames are sharp in different places),
//!   clamped to `[0.3, 3] × fwhm_mean_px`. The variable blur is the per-pixel linear interpolation
//!   between Gaussian blurs at a few FWHM levels. Its random numbers come from a generator of their own:
//!   with `seeing_variation` 0 (the default) the frames are exactly those of a uniform blur;
//! - noise: Poisson (gain `gain_e_per_adu`) plus Gaussian read noise, then rounded and clamped to the
//!   camera's `bits`.
//!
//! What it does not: stars, rotation, limb motion of the Sun, colour. The star scenes ([`super`]) do
//! not use this file, so they stay as they were. Writing files is [`super::surface_write`].

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::SimError;

/// Typical granule diameter, px.
pub const GRANULE_PX: f32 = 14.0;

/// Which surface ([`SurfaceConfig::scene`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SurfaceScene {
    /// Solar granulation filling the frame.
    Granulation,
    /// A lunar surface filling the frame.
    Lunar,
    /// A banded, limb-darkened planet on black sky.
    Planet,
}

impl std::str::FromStr for SurfaceScene {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "granulation" => Ok(Self::Granulation),
            "lunar" | "moon" => Ok(Self::Lunar),
            "planet" => Ok(Self::Planet),
            other => Err(format!(
                "unknown scene `{other}` (expected granulation, lunar or planet)"
            )),
        }
    }
}

/// What to simulate. `SurfaceConfig::new` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurfaceConfig {
    /// The scene.
    pub scene: SurfaceScene,
    /// Frames.
    pub frames: usize,
    /// Frame width, px.
    pub width: usize,
    /// Frame height, px.
    pub height: usize,
    /// Random seed.
    pub seed: u64,
    /// RMS of the distortion field per axis, px (1.5).
    pub distortion_rms_px: f32,
    /// Correlation length of the distortion field, px (20).
    pub correlation_length_px: f32,
    /// Frame-to-frame correlation of the distortion field and the jitter (0.9).
    pub time_correlation: f32,
    /// Total global drift over the sequence, px (planet 30, others 0).
    pub drift_px: f32,
    /// RMS of the global jitter per axis, px (1.0).
    pub jitter_rms_px: f32,
    /// Mean seeing FWHM, px (2.5).
    pub fwhm_mean_px: f32,
    /// Standard deviation of the seeing FWHM, px (0.6).
    pub fwhm_sd_px: f32,
    /// Bits per sample of the camera: 8 or 16 (16).
    pub bits: u32,
    /// Gain, e-/ADU (8-bit: 4, 16-bit: 0.5).
    pub gain_e_per_adu: f32,
    /// Read noise, ADU (8-bit: 1, 16-bit: 10).
    pub read_noise_adu: f32,
    /// Spatial variation of the seeing within a frame: RMS of `ln FWHM` across the field (0 = uniform
    /// blur, the default; 0.3 makes the FWHM vary by about ±30 % from place to place).
    #[serde(default)]
    pub seeing_variation: f32,
    /// Correlation length of the spatial seeing variation, px (64).
    #[serde(default = "default_seeing_scale")]
    pub seeing_scale_px: f32,
}

/// Frame-to-frame correlation of the spatial seeing field ([`SurfaceConfig::seeing_variation`]).
pub const SEEING_TIME_CORRELATION: f32 = 0.5;

fn default_seeing_scale() -> f32 {
    64.0
}

impl SurfaceConfig {
    /// The defaults for `scene`: `frames` frames of `width x height`, seed `seed`.
    pub fn new(scene: SurfaceScene, frames: usize, width: usize, height: usize, seed: u64) -> Self {
        Self {
            scene,
            frames,
            width,
            height,
            seed,
            distortion_rms_px: 1.5,
            correlation_length_px: 20.0,
            time_correlation: 0.9,
            drift_px: if scene == SurfaceScene::Planet {
                30.0
            } else {
                0.0
            },
            jitter_rms_px: 1.0,
            fwhm_mean_px: 2.5,
            fwhm_sd_px: 0.6,
            bits: 16,
            gain_e_per_adu: 0.5,
            read_noise_adu: 10.0,
            seeing_variation: 0.0,
            seeing_scale_px: default_seeing_scale(),
        }
        .with_bits(16)
    }

    /// The camera's bit depth with its gain and read noise (8: 4 e-/ADU and 1 ADU; 16: 0.5 and 10).
    pub fn with_bits(mut self, bits: u32) -> Self {
        self.bits = bits;
        (self.gain_e_per_adu, self.read_noise_adu) =
            if bits == 8 { (4.0, 1.0) } else { (0.5, 10.0) };
        self
    }

    /// Every problem of the configuration, each naming the field.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`].
    pub fn validate(&self) -> Result<(), SimError> {
        let mut p = Vec::new();
        if self.frames == 0 || self.frames > 100_000 {
            p.push(format!("frames must be 1..=100000, got {}", self.frames));
        }
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if !(64..=8192).contains(&v) {
                p.push(format!("{name} must be 64..=8192 px, got {v}"));
            }
        }
        let finite_in = |v: f32, lo: f32, hi: f32| v.is_finite() && v >= lo && v <= hi;
        for (name, v, lo, hi) in [
            ("distortion_rms_px", self.distortion_rms_px, 0.0, 10.0),
            (
                "correlation_length_px",
                self.correlation_length_px,
                4.0,
                1000.0,
            ),
            ("time_correlation", self.time_correlation, 0.0, 0.999),
            ("drift_px", self.drift_px, 0.0, 1000.0),
            ("jitter_rms_px", self.jitter_rms_px, 0.0, 20.0),
            ("fwhm_mean_px", self.fwhm_mean_px, 0.5, 20.0),
            ("fwhm_sd_px", self.fwhm_sd_px, 0.0, 5.0),
            ("seeing_variation", self.seeing_variation, 0.0, 1.0),
            ("seeing_scale_px", self.seeing_scale_px, 8.0, 4096.0),
        ] {
            if !finite_in(v, lo, hi) {
                p.push(format!("{name} must be in {lo}..={hi}, got {v}"));
            }
        }
        if self.bits != 8 && self.bits != 16 {
            p.push(format!("bits must be 8 or 16, got {}", self.bits));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(SimError::InvalidConfig { problems: p })
        }
    }
}

/// One rendered frame and what moved it.
#[derive(Debug, Clone)]
pub struct SurfaceFrame {
    /// Frame index.
    pub index: usize,
    /// The noisy, quantised frame (ADU).
    pub image: Array2<f32>,
    /// Global displacement `(dy, dx)` of the frame, px.
    pub global: (f32, f32),
    /// Seeing FWHM, px (the frame's value before the spatial variation).
    pub fwhm_px: f32,
    /// RMS length of this frame's local distortion vectors, px.
    pub local_rms_px: f32,
}

/// A surface simulation (see the module docs).
#[derive(Debug, Clone)]
pub struct SurfaceSim {
    cfg: SurfaceConfig,
    truth: Array2<f32>,
}

impl SurfaceSim {
    /// Draws the truth of `cfg`.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] for an unusable configuration.
    pub fn new(cfg: SurfaceConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5u64.rotate_left(40));
        let truth = match cfg.scene {
            SurfaceScene::Granulation => granulation(cfg.height, cfg.width, &mut rng),
            SurfaceScene::Lunar => lunar(cfg.height, cfg.width, &mut rng),
            SurfaceScene::Planet => planet(cfg.height, cfg.width, &mut rng),
        };
        let full_scale = if cfg.bits == 8 { 200.0 } else { 30_000.0 };
        let pedestal = if cfg.bits == 8 { 4.0 } else { 500.0 };
        let truth = truth.mapv(|v| pedestal + full_scale * v);
        Ok(Self { cfg, truth })
    }

    /// The configuration.
    pub fn config(&self) -> &SurfaceConfig {
        &self.cfg
    }

    /// The truth (ADU, pedestal included; no seeing, motion or noise), in the geometry the distortion
    /// field averages to (the global drift of frame 0 is zero).
    pub fn truth(&self) -> &Array2<f32> {
        &self.truth
    }

    /// The frames, in order (each is rendered when the iterator reaches it).
    pub fn frames(&self) -> impl Iterator<Item = SurfaceFrame> + '_ {
        let cfg = &self.cfg;
        let mut motion = Motion::new(cfg);
        let mut seeing = SeeingField::new(cfg);
        (0..cfg.frames).map(move |i| {
            motion.advance(cfg, i);
            seeing.advance(i);
            let (dy, dx) = motion.field(cfg);
            let local_rms_px = (dy.iter().zip(&dx).map(|(a, b)| a * a + b * b).sum::<f32>()
                / dy.len().max(1) as f32)
                .sqrt();
            let (gy, gx) = motion.global;
            let warped = Array2::from_shape_fn((cfg.height, cfg.width), |(r, c)| {
                bilinear(
                    &self.truth,
                    r as f32 - gy - dy[[r, c]],
                    c as f32 - gx - dx[[r, c]],
                )
            });
            let blurred = match seeing.log_fwhm_offsets(cfg) {
                Some(offsets) => variable_blur(&warped, cfg, motion.fwhm, &offsets),
                None => gaussian_blur(&warped, motion.fwhm / 2.354_82),
            };
            let mut rng = StdRng::seed_from_u64(self.cfg.seed.wrapping_mul(1_000_003) ^ i as u64);
            let max = ((1u32 << cfg.bits) - 1) as f32;
            let image = blurred.mapv(|v| {
                let electrons = (v.max(0.0) * cfg.gain_e_per_adu).max(0.0);
                let shot: f32 = StandardNormal.sample(&mut rng);
                let read: f32 = StandardNormal.sample(&mut rng);
                let e = electrons + shot * electrons.sqrt();
                (e / cfg.gain_e_per_adu + read * cfg.read_noise_adu)
                    .round()
                    .clamp(0.0, max)
            });
            SurfaceFrame {
                index: i,
                image,
                global: motion.global,
                fwhm_px: motion.fwhm,
                local_rms_px,
            }
        })
    }
}

/// The motion state carried from frame to frame: coarse white-noise fields (AR(1)), jitter, FWHM.
struct Motion {
    rng: StdRng,
    step: usize,
    coarse: (usize, usize),
    noise: [Vec<f32>; 2],
    jitter: (f32, f32),
    global: (f32, f32),
    fwhm_z: f32,
    fwhm: f32,
    scale: f32,
}

impl Motion {
    fn new(cfg: &SurfaceConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
        // The field is drawn on a grid of a quarter correlation length and interpolated.
        let step = ((cfg.correlation_length_px / 4.0).round() as usize).max(1);
        let coarse = (cfg.height / step + 4, cfg.width / step + 4);
        let n = coarse.0 * coarse.1;
        let draw = |rng: &mut StdRng| (0..n).map(|_| StandardNormal.sample(rng)).collect();
        let noise = [draw(&mut rng), draw(&mut rng)];
        let mut m = Self {
            rng,
            step,
            coarse,
            noise,
            jitter: (0.0, 0.0),
            global: (0.0, 0.0),
            fwhm_z: 0.0,
            fwhm: cfg.fwhm_mean_px,
            scale: 1.0,
        };
        // Unit-variance white noise smoothed by a Gaussian of sigma s (grid cells) has variance
        // 1 / (4 pi s^2); the scale makes the field's RMS per axis `distortion_rms_px`.
        let s = cfg.correlation_length_px / 2.0 / step as f32;
        m.scale = cfg.distortion_rms_px * (4.0 * std::f32::consts::PI * s * s).sqrt();
        m
    }

    /// Moves the state to frame `i` (frame 0 keeps the initial draw and zero global motion).
    fn advance(&mut self, cfg: &SurfaceConfig, i: usize) {
        let rho = cfg.time_correlation;
        let innovation = (1.0 - rho * rho).sqrt();
        if i > 0 {
            for field in &mut self.noise {
                for v in field.iter_mut() {
                    let w: f32 = StandardNormal.sample(&mut self.rng);
                    *v = rho * *v + innovation * w;
                }
            }
            let mut normal = || -> f32 { StandardNormal.sample(&mut self.rng) };
            let (ny, nx, nf) = (normal(), normal(), normal());
            self.jitter = (
                rho * self.jitter.0 + innovation * cfg.jitter_rms_px * ny,
                rho * self.jitter.1 + innovation * cfg.jitter_rms_px * nx,
            );
            self.fwhm_z = 0.8 * self.fwhm_z + 0.6 * nf;
        }
        let t = if cfg.frames > 1 {
            i as f32 / (cfg.frames - 1) as f32
        } else {
            0.0
        };
        // Drift along a direction 30 degrees below the x axis.
        let (sin, cos) = (0.5f32, 0.866_025_4f32);
        self.global = (
            cfg.drift_px * t * sin + self.jitter.0,
            cfg.drift_px * t * cos + self.jitter.1,
        );
        self.fwhm = (cfg.fwhm_mean_px + cfg.fwhm_sd_px * self.fwhm_z)
            .clamp(0.5 * cfg.fwhm_mean_px, 2.0 * cfg.fwhm_mean_px);
    }

    /// The full-resolution distortion field `(dy, dx)` of the current frame.
    fn field(&self, cfg: &SurfaceConfig) -> (Array2<f32>, Array2<f32>) {
        let s = cfg.correlation_length_px / 2.0 / self.step as f32;
        let fields = self.noise.each_ref().map(|noise| {
            smooth_field(
                noise,
                (self.coarse, self.step),
                (s, self.scale),
                (cfg.height, cfg.width),
            )
        });
        let [dy, dx] = fields;
        (dy, dx)
    }
}

/// A smooth random field at full resolution: white noise on a coarse grid of `coarse` cells, `step` px
/// apart (two cells beyond the frame on the top and left), smoothed by a Gaussian of `sigma` cells,
/// scaled by `scale` and interpolated bilinearly to `(rows, cols)`.
fn smooth_field(
    noise: &[f32],
    (coarse, step): ((usize, usize), usize),
    (sigma, scale): (f32, f32),
    (rows, cols): (usize, usize),
) -> Array2<f32> {
    let grid =
        Array2::from_shape_vec(coarse, noise.to_vec()).unwrap_or_else(|_| Array2::zeros(coarse));
    let smooth = gaussian_blur(&grid, sigma).mapv(|v| v * scale);
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        bilinear(
            &smooth,
            2.0 + r as f32 / step as f32,
            2.0 + c as f32 / step as f32,
        )
    })
}

/// The spatial seeing field of [`SurfaceConfig::seeing_variation`]: coarse white noise, AR(1) in time
/// with [`SEEING_TIME_CORRELATION`], drawn from a generator of its own (none when the variation is 0).
struct SeeingField {
    rng: StdRng,
    step: usize,
    coarse: (usize, usize),
    noise: Vec<f32>,
    /// Makes the smoothed field unit-RMS.
    scale: f32,
}

impl SeeingField {
    fn new(cfg: &SurfaceConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(0x5ee1_26f1_e1d0_0001));
        let step = ((cfg.seeing_scale_px / 4.0).round() as usize).max(1);
        let coarse = (cfg.height / step + 4, cfg.width / step + 4);
        let noise = if cfg.seeing_variation > 0.0 {
            (0..coarse.0 * coarse.1)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect()
        } else {
            Vec::new()
        };
        let s = cfg.seeing_scale_px / 2.0 / step as f32;
        Self {
            rng,
            step,
            coarse,
            noise,
            scale: (4.0 * std::f32::consts::PI * s * s).sqrt(),
        }
    }

    /// Moves the field to frame `i` (frame 0 keeps the initial draw).
    fn advance(&mut self, i: usize) {
        let rho = SEEING_TIME_CORRELATION;
        let innovation = (1.0 - rho * rho).sqrt();
        if i > 0 {
            for v in &mut self.noise {
                let w: f32 = StandardNormal.sample(&mut self.rng);
                *v = rho * *v + innovation * w;
            }
        }
    }

    /// `v · z_i(p)`, the offset of `ln FWHM` at every pixel; `None` without spatial variation.
    fn log_fwhm_offsets(&self, cfg: &SurfaceConfig) -> Option<Array2<f32>> {
        if self.noise.is_empty() {
            return None;
        }
        let s = cfg.seeing_scale_px / 2.0 / self.step as f32;
        Some(smooth_field(
            &self.noise,
            (self.coarse, self.step),
            (s, self.scale * cfg.seeing_variation),
            (cfg.height, cfg.width),
        ))
    }
}

/// `image` blurred by a Gaussian whose FWHM at pixel `p` is `fwhm · exp(offsets[p])` (clamped to
/// `[0.3, 3] × fwhm_mean_px`): blurs at a few FWHM levels (about every 0.15 px of sigma, at most
/// eight), linearly interpolated per pixel.
fn variable_blur(
    image: &Array2<f32>,
    cfg: &SurfaceConfig,
    fwhm: f32,
    offsets: &Array2<f32>,
) -> Array2<f32> {
    let (lo, hi) = (0.3 * cfg.fwhm_mean_px, 3.0 * cfg.fwhm_mean_px);
    let sigmas = offsets.mapv(|o| (fwhm * o.exp()).clamp(lo, hi) / 2.354_82);
    let (min, max) = sigmas
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &s| (a.min(s), b.max(s)));
    let count = (((max - min) / 0.15).ceil() as usize + 1).clamp(2, 8);
    let levels: Vec<f32> = (0..count)
        .map(|k| min + (max - min) * k as f32 / (count - 1) as f32)
        .collect();
    let blurred: Vec<Array2<f32>> = levels.iter().map(|&s| gaussian_blur(image, s)).collect();
    let span = (max - min).max(1e-6);
    Array2::from_shape_fn(image.dim(), |(r, c)| {
        let t = ((sigmas[[r, c]] - min) / span * (count - 1) as f32).clamp(0.0, (count - 1) as f32);
        let k = (t.floor() as usize).min(count - 2);
        let f = t - k as f32;
        blurred[k][[r, c]] * (1.0 - f) + blurred[k + 1][[r, c]] * f
    })
}

/// Bilinear sample of `image` at `(y, x)`, edges repeated.
pub fn bilinear(image: &Array2<f32>, y: f32, x: f32) -> f32 {
    let (rows, cols) = image.dim();
    let y = y.clamp(0.0, rows as f32 - 1.0);
    let x = x.clamp(0.0, cols as f32 - 1.0);
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(rows - 1), (x0 + 1).min(cols - 1));
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let top = image[[y0, x0]] * (1.0 - fx) + image[[y0, x1]] * fx;
    let bottom = image[[y1, x0]] * (1.0 - fx) + image[[y1, x1]] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Separable Gaussian blur with standard deviation `sigma` (px), edges repeated; `sigma <= 0` copies.
pub fn gaussian_blur(image: &Array2<f32>, sigma: f32) -> Array2<f32> {
    if !(sigma > 0.0) {
        return image.clone();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|k| (-(k * k) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let (rows, cols) = image.dim();
    let pass = |src: &Array2<f32>, along_rows: bool| {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let mut acc = 0.0;
            for (j, w) in kernel.iter().enumerate() {
                let o = j as isize - radius;
                let v = if along_rows {
                    src[[r, (c as isize + o).clamp(0, cols as isize - 1) as usize]]
                } else {
                    src[[(r as isize + o).clamp(0, rows as isize - 1) as usize, c]]
                };
                acc += w * v;
            }
            acc
        })
    };
    pass(&pass(image, true), false)
}

/// Granulation on a 0..~1.2 scale: Voronoi cells (centres jittered on a grid of [`GRANULE_PX`]) whose
/// brightness falls towards the lanes, each cell with its own brightness, smoothed by 0.7 px.
fn granulation(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<f32> {
    let g = GRANULE_PX;
    let (gr, gc) = (
        (rows as f32 / g) as usize + 3,
        (cols as f32 / g) as usize + 3,
    );
    let seeds: Vec<(f32, f32, f32)> = (0..gr * gc)
        .map(|k| {
            let (i, j) = ((k / gc) as f32 - 1.0, (k % gc) as f32 - 1.0);
            (
                (i + rng.random::<f32>()) * g,
                (j + rng.random::<f32>()) * g,
                0.8 + 0.4 * rng.random::<f32>(),
            )
        })
        .collect();
    let image = Array2::from_shape_fn((rows, cols), |(r, c)| {
        let (y, x) = (r as f32, c as f32);
        let (ci, cj) = ((y / g) as isize + 1, (x / g) as isize + 1);
        let (mut d1, mut d2, mut b) = (f32::MAX, f32::MAX, 0.0);
        for i in (ci - 2).max(0)..=(ci + 2).min(gr as isize - 1) {
            for j in (cj - 2).max(0)..=(cj + 2).min(gc as isize - 1) {
                let (sy, sx, sb) = seeds[i as usize * gc + j as usize];
                let d = ((y - sy).powi(2) + (x - sx).powi(2)).sqrt();
                if d < d1 {
                    (d2, d1, b) = (d1, d, sb);
                } else if d < d2 {
                    d2 = d;
                }
            }
        }
        let lane = ((d2 - d1) / 3.0).min(1.0);
        0.45 + 0.55 * b * lane * (1.0 - 0.3 * (d1 / g).min(1.0))
    });
    gaussian_blur(&image, 0.7)
}

/// A lunar surface on a 0..~1 scale: maria (smoothed noise), craters (bright rims, darker floors,
/// radii 3-40 px, power law) and fine texture.
fn lunar(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<f32> {
    let noise = |rng: &mut StdRng, sigma: f32| {
        let white = Array2::from_shape_fn((rows, cols), |_| StandardNormal.sample(&mut *rng));
        gaussian_blur(&white, sigma)
    };
    let maria = noise(rng, 40.0);
    let maria_sd = maria.std(0.0).max(1e-6);
    let fine = noise(rng, 1.0);
    let fine_sd = fine.std(0.0).max(1e-6);
    let mut image = Array2::from_shape_fn((rows, cols), |(r, c)| {
        let m = (maria[[r, c]] / maria_sd).tanh();
        0.55 - 0.15 * m + 0.03 * fine[[r, c]] / fine_sd
    });
    let craters = (rows * cols) / 1500;
    for _ in 0..craters {
        let u: f32 = rng.random::<f32>().max(1e-3);
        let radius = (3.0 * u.powf(-1.0 / 1.6)).min(40.0);
        let (cy, cx) = (
            rng.random::<f32>() * rows as f32,
            rng.random::<f32>() * cols as f32,
        );
        let reach = (1.6 * radius).ceil() as isize;
        for r in (cy as isize - reach).max(0)..(cy as isize + reach).min(rows as isize) {
            for c in (cx as isize - reach).max(0)..(cx as isize + reach).min(cols as isize) {
                let d = ((r as f32 - cy).powi(2) + (c as f32 - cx).powi(2)).sqrt() / radius;
                let rim = 0.25 * (-((d - 1.0) / 0.12).powi(2)).exp();
                let floor = if d < 0.9 { -0.12 * (1.0 - d * d) } else { 0.0 };
                // Light from the left: the sunward inner wall darker, the far one brighter.
                let side = if d < 1.1 {
                    0.08 * (c as f32 - cx) / radius * (-((d - 0.8) / 0.3).powi(2)).exp()
                } else {
                    0.0
                };
                image[[r as usize, c as usize]] += rim + floor + side;
            }
        }
    }
    gaussian_blur(&image.mapv(|v| v.max(0.02)), 0.7)
}

/// A planet on a 0..1 scale: a limb-darkened disc of radius 0.3 x the smaller edge at the centre,
/// with latitude bands, a few ovals and turbulent band edges; black sky (0) around it.
fn planet(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<f32> {
    let radius = 0.3 * rows.min(cols) as f32;
    let (cy, cx) = ((rows as f32 - 1.0) / 2.0, (cols as f32 - 1.0) / 2.0);
    let phases: Vec<f32> = (0..4)
        .map(|_| rng.random::<f32>() * std::f32::consts::TAU)
        .collect();
    let ovals: Vec<(f32, f32, f32)> = (0..5)
        .map(|_| {
            (
                (rng.random::<f32>() - 0.5) * 1.2 * radius,
                (rng.random::<f32>() - 0.5) * 1.2 * radius,
                0.04 * radius + 0.06 * radius * rng.random::<f32>(),
            )
        })
        .collect();
    let image = Array2::from_shape_fn((rows, cols), |(r, c)| {
        let (y, x) = (r as f32 - cy, c as f32 - cx);
        let rho = (y * y + x * x).sqrt() / radius;
        if rho >= 1.0 {
            return 0.0;
        }
        let mu = (1.0 - rho * rho).sqrt();
        let limb = 1.0 - 0.6 * (1.0 - mu);
        let lat = y / radius;
        let wobble = 0.05 * (x / radius * 9.0 + phases[3]).sin();
        let bands = 0.18 * ((lat + wobble) * 14.0 + phases[0]).sin()
            + 0.08 * ((lat - wobble) * 31.0 + phases[1]).sin()
            + 0.04 * (x / radius * 23.0 + lat * 40.0 + phases[2]).sin();
        let spots: f32 = ovals
            .iter()
            .map(|&(oy, ox, s)| {
                -0.25 * (-((y - oy).powi(2) + (0.5 * (x - ox)).powi(2)) / (2.0 * s * s)).exp()
            })
            .sum();
        // Anti-aliased edge over about a pixel.
        let edge = ((1.0 - rho) * radius).clamp(0.0, 1.0);
        edge * limb * (0.8 + bands + spots).max(0.05)
    });
    gaussian_blur(&image, 0.5)
}

/// RMS difference between `result` and `truth` (ADU of the truth) over the interior (`border` px left
/// out on every side), after placing the result on the truth (whole-frame registration,
/// [`crate::global::SurfaceReference`], and Lanczos-3 resampling) and fitting its level linearly
/// (`a * result + b`), so that only the loss of detail counts, not the geometry or the photometric
/// scale of a stack. NaN when the result cannot be placed or has another shape.
pub fn rms_against_truth(result: &Array2<f32>, truth: &Array2<f32>, border: usize) -> f32 {
    let (rows, cols) = truth.dim();
    if result.dim() != (rows, cols) || rows <= 2 * border || cols <= 2 * border {
        return f32::NAN;
    }
    let filled = result.mapv(|v| if v.is_finite() { v } else { 0.0 });
    let Some(placed) = crate::global::SurfaceReference::new(truth.clone()).register(filled.view())
    else {
        return f32::NAN;
    };
    let mut aligned = Array2::<f32>::zeros((rows, cols));
    crate::resample::sample_shifted(
        filled.view(),
        placed.shift.dy,
        placed.shift.dx,
        aligned.view_mut(),
    );
    let pairs: Vec<(f64, f64)> = (border..rows - border)
        .flat_map(|r| (border..cols - border).map(move |c| (r, c)))
        .map(|(r, c)| (f64::from(aligned[[r, c]]), f64::from(truth[[r, c]])))
        .filter(|(a, t)| a.is_finite() && t.is_finite())
        .collect();
    let n = pairs.len() as f64;
    if n < 2.0 {
        return f32::NAN;
    }
    let (ma, mt) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut saa, mut sat) = (0.0, 0.0);
    for (a, t) in &pairs {
        saa += (a - ma) * (a - ma);
        sat += (a - ma) * (t - mt);
    }
    let gain = if saa > 0.0 { sat / saa } else { 0.0 };
    let sse: f64 = pairs
        .iter()
        .map(|(a, t)| (mt + gain * (a - ma) - t).powi(2))
        .sum();
    (sse / n).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_deterministic_and_move_as_configured() {
        let mut cfg = SurfaceConfig::new(SurfaceScene::Granulation, 6, 96, 80, 3);
        cfg.jitter_rms_px = 0.0;
        let sim = SurfaceSim::new(cfg.clone()).unwrap();
        let a: Vec<SurfaceFrame> = sim.frames().collect();
        let b: Vec<SurfaceFrame> = SurfaceSim::new(cfg).unwrap().frames().collect();
        assert_eq!(a.len(), 6);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.image, y.image);
            assert!(
                x.local_rms_px > 0.7 && x.local_rms_px < 4.0,
                "{}",
                x.local_rms_px
            );
        }
        assert_eq!(a[0].global, (0.0, 0.0));
        assert!(SurfaceConfig::new(SurfaceScene::Lunar, 0, 10, 10, 1)
            .validate()
            .is_err());
        // The truth scores 0 against itself, a blurred frame more, a shifted copy about 0.
        let truth = sim.truth();
        assert!(rms_against_truth(truth, truth, 8) < 1e-2);
        let shifted = Array2::from_shape_fn(truth.dim(), |(r, c)| {
            bilinear(truth, r as f32 - 2.0, c as f32 + 1.0)
        });
        assert!(
            rms_against_truth(&shifted, truth, 8) < 0.1 * rms_against_truth(&a[3].image, truth, 8)
        );
    }

    /// Per frame, `ln` of the sharpness of each quadrant relative to the whole frame's.
    fn quadrant_log_sharpness(cfg: SurfaceConfig) -> Vec<[f32; 4]> {
        let sim = SurfaceSim::new(cfg).unwrap();
        sim.frames()
            .map(|f| {
                let (h, w) = (f.image.nrows() / 2, f.image.ncols() / 2);
                let whole = crate::quality::sharpness(f.image.view());
                [(0, 0), (0, w), (h, 0), (h, w)].map(|(r, c)| {
                    let q = f.image.slice(ndarray::s![r..r + h, c..c + w]);
                    (crate::quality::sharpness(q) / whole).ln()
                })
            })
            .collect()
    }

    #[test]
    fn seeing_varies_across_the_field_when_asked() {
        let mut cfg = SurfaceConfig::new(SurfaceScene::Granulation, 8, 192, 192, 7);
        cfg.seeing_scale_px = 48.0;
        // How much a quadrant's sharpness, relative to its frame's, changes from frame to frame.
        let spread = |cfg: SurfaceConfig| {
            let q = quadrant_log_sharpness(cfg);
            let mut total = 0.0;
            for k in 0..4 {
                let v: Vec<f32> = q.iter().map(|f| f[k]).collect();
                let mean = v.iter().sum::<f32>() / v.len() as f32;
                total += v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
            }
            (total / 4.0).sqrt()
        };
        let uniform = spread(cfg.clone());
        cfg.seeing_variation = 0.4;
        let varying = spread(cfg.clone());
        eprintln!("quadrant sharpness spread: uniform {uniform:.3}, varying {varying:.3}");
        assert!(varying > 3.0 * uniform, "{varying} vs {uniform}");
        // The motion is the same: only the blur differs.
        let plain = SurfaceConfig::new(SurfaceScene::Granulation, 8, 192, 192, 7);
        let a: Vec<SurfaceFrame> = SurfaceSim::new(plain).unwrap().frames().collect();
        let b: Vec<SurfaceFrame> = SurfaceSim::new(cfg).unwrap().frames().collect();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.global, x.fwhm_px), (y.global, y.fwhm_px));
            assert_ne!(x.image, y.image);
        }
    }

    #[test]
    fn the_planet_sits_on_black_sky_and_drifts() {
        let mut cfg = SurfaceConfig::new(SurfaceScene::Planet, 3, 128, 128, 1).with_bits(8);
        cfg.jitter_rms_px = 0.0;
        let sim = SurfaceSim::new(cfg).unwrap();
        let truth = sim.truth();
        assert!(truth[[2, 2]] < 5.0 && truth[[64, 64]] > 100.0);
        let last = sim.frames().last().unwrap();
        assert!((last.global.1 - 30.0 * 0.866).abs() < 1e-3);
        assert!(last.image.iter().all(|&v| (0.0..=255.0).contains(&v)));
    }
}
