//! Pixels of a [`Simulation`]: the truth image ([`Simulation::truth`], [`Simulation::truth_rgb`]), the
//! expected frame without noise ([`Simulation::expected_frame`], [`Simulation::expected_rgb`]) and the
//! frame a camera delivers ([`Simulation::frame`]: Poisson and read noise, hot pixels, 16-bit
//! quantisation). Sky with its gradient, the cloud patch, Moffat stars, Gaussian extended objects and the
//! satellite trail are drawn here; in colour mode each channel is rendered and the Bayer mosaic sampled.
//!
//! What it does not: decide where anything is or how it moves (that is [`super::scene`]), or write files.

use std::f32::consts::PI;

use ndarray::{Array2, Array3, Axis};
use rand_distr::{Distribution, Poisson};

use super::scene::{normal, stream_rng, Component, FrameKind, STREAM_NOISE};
use super::Simulation;
use crate::bayer::CfaPattern;

/// FWHM in pixels of the narrow Gaussian used to render point sources in [`Simulation::truth`].
pub const TRUTH_FWHM_PX: f32 = 1.5;
/// Peak of a satellite trail above the sky, ADU.
const TRAIL_PEAK_ADU: f32 = 2500.0;
/// Gaussian sigma of the satellite trail profile, px.
const TRAIL_SIGMA_PX: f32 = 1.0;
/// Poisson counts at or above this many electrons use the Gaussian approximation.
const POISSON_GAUSS_LIMIT_E: f32 = 20.0;

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
        self.rgb_of(|ch| self.truth_channel(ch))
    }

    /// Stacks the renderings of R, G and B given by `render` into `(3, rows, cols)`; in mono mode each
    /// plane is the mono rendering (`render(None)`).
    fn rgb_of(&self, render: impl Fn(Option<usize>) -> Array2<f32>) -> Array3<f32> {
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let mut out = Array3::<f32>::zeros((3, rows, cols));
        for c in 0..3 {
            let ch = if self.cfg.color.is_some() {
                Some(c)
            } else {
                None
            };
            out.index_axis_mut(Axis(0), c).assign(&render(ch));
        }
        out
    }

    /// Builds the Bayer mosaic from the three channel renderings given by `render`.
    fn mosaic_of(&self, render: impl Fn(usize) -> Array2<f32>, pattern: CfaPattern) -> Array2<f32> {
        let (rows, cols) = (self.cfg.height, self.cfg.width);
        let mut rgb = ndarray::Array3::<f32>::zeros((3, rows, cols));
        for c in 0..3 {
            rgb.index_axis_mut(ndarray::Axis(0), c).assign(&render(c));
        }
        crate::bayer::mosaic(rgb.view(), pattern).expect("three channels")
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
        self.rgb_of(|ch| self.expected_channel(index, ch))
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
    /// rounded and clamped to 0..=65535, or to the sensor's full well `saturation_adu` when set
    /// (ADU, as f32). Deterministic per `(seed, index)`.
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
        let level = self.cfg.clip_level_adu();
        for v in buf.iter_mut() {
            *v = v.round().clamp(0.0, level);
        }
        img
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{small, Scenario, SimConfig};

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
    fn a_full_well_clips_bright_stars_flat_at_the_level() {
        let mut cfg = small(Scenario::Seeing, 2);
        cfg.flux_max_adu = 4.0e6;
        cfg.flux_power_index = 0.5;
        let unclipped = Simulation::new(cfg.clone()).frame(0);
        cfg.saturation_adu = Some(20_000.0);
        let sim = Simulation::new(cfg.clone());
        let frame = sim.frame(0);
        let at_level = frame.iter().filter(|&&v| v == 20_000.0).count();
        assert!(at_level >= 3, "{at_level} pixels at the level: a pile-up");
        assert!(frame.iter().all(|&v| v <= 20_000.0));
        // Below the level the frame is the unclipped one.
        for (a, b) in frame.iter().zip(unclipped.iter()) {
            assert_eq!(*a, b.min(20_000.0));
        }
        assert_eq!(
            crate::saturation::detect_level(frame.view()),
            Some(20_000.0)
        );
        for bad in [f32::NAN, 70_000.0, 10.0] {
            cfg.saturation_adu = Some(bad);
            let problems = cfg.validate().unwrap_err().to_string();
            assert!(problems.contains("saturation_adu"), "{problems}");
            assert_eq!(cfg.sanitized().saturation_adu, None);
        }
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
    fn erf_matches_tables() {
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6);
        assert!((erf(-1.0) + 0.842_700_8).abs() < 1e-6);
    }
}
