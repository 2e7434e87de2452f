//! Colour fidelity of a reconstruction against the truth (colour mode): [`Simulation::star_colour_errors`]
//! measures, on the brightest isolated stars, how far the colour ratios of a demosaiced result are from
//! the simulated stars' colours, and returns [`StarColourErrors`] (used by the colour tests and
//! `tlr demo --color`).
//!
//! What it does not: measure sharpness, position or flux accuracy, or detect stars itself (it looks
//! where the simulation put them, after finding the result's common offset).

use ndarray::{Array3, ArrayView3, Axis};

use super::Simulation;

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
