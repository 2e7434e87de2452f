//! Astrometric fidelity of a reconstruction against the truth: [`Simulation::star_position_errors`]
//! finds the simulated stars in a result and measures how far they sit from where the sequence's mean
//! geometry puts them ([`Simulation::mean_geometry_position`]), as [`StarPositionErrors`] (used by the
//! geometry tests and the geometry bench).
//!
//! The mean geometry of a sequence is the time mean of every frame's total displacement (rotation,
//! global translation and local field, [`Simulation::displacement`]): a star at truth position `p`
//! belongs at `p + mean_i d_i(p)`. The local field averages to zero, so this is the truth geometry
//! moved by the mean drift and rotated by the mean rotation of the frames.
//!
//! What it does not: measure sharpness or colour ([`super::metrics`]), or fit away any offset: the
//! errors are absolute (their mean is reported beside them).

use ndarray::ArrayView2;

use super::Simulation;
use crate::geom::Shift;
use crate::stars::{DetectOptions, StarDetector};

/// Where a result's stars are relative to the mean geometry, per measured star; see
/// [`Simulation::star_position_errors`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StarPositionErrors {
    /// Result position minus expected position, px, one per matched star.
    pub errors: Vec<Shift>,
    /// Per error (same order): the index of the truth star ([`Simulation::stars`]).
    pub truth: Vec<usize>,
    /// Per error (same order): the truth star's flux, ADU.
    pub flux: Vec<f32>,
}

impl StarPositionErrors {
    /// Number of stars matched.
    pub fn stars(&self) -> usize {
        self.errors.len()
    }

    /// Root mean square length of the errors, px (NaN without stars).
    pub fn rms_px(&self) -> f64 {
        let n = self.errors.len() as f64;
        let sum: f64 = self
            .errors
            .iter()
            .map(|e| f64::from(e.dy).powi(2) + f64::from(e.dx).powi(2))
            .sum();
        (sum / n).sqrt()
    }

    /// Mean error `(dy, dx)`, px: the common offset (NaN without stars).
    pub fn mean(&self) -> (f64, f64) {
        let n = self.errors.len() as f64;
        let sy: f64 = self.errors.iter().map(|e| f64::from(e.dy)).sum();
        let sx: f64 = self.errors.iter().map(|e| f64::from(e.dx)).sum();
        (sy / n, sx / n)
    }

    /// The errors of the brightest `fraction` (0..=1) of the matched stars (by truth flux; at least one
    /// star when any matched). Faint stars' positions carry photon noise of a few tenths of a pixel;
    /// the bright ones show the geometry.
    pub fn brightest(&self, fraction: f64) -> StarPositionErrors {
        let mut order: Vec<usize> = (0..self.errors.len()).collect();
        order.sort_by(|&a, &b| self.flux[b].total_cmp(&self.flux[a]).then(a.cmp(&b)));
        let keep = ((self.errors.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize)
            .max(1)
            .min(self.errors.len());
        let mut kept: Vec<usize> = order[..keep].to_vec();
        kept.sort_unstable();
        self.select(&kept)
    }

    /// Per star matched in both, `self - other`: with `other` the exact-motion stack of the same frames
    /// ([`Simulation::exact_motion_stack`]), the photon noise both share cancels and the geometric
    /// error is left.
    pub fn minus(&self, other: &StarPositionErrors) -> StarPositionErrors {
        let mut out = StarPositionErrors::default();
        for (k, &t) in self.truth.iter().enumerate() {
            if let Some(j) = other.truth.iter().position(|&o| o == t) {
                out.errors.push(self.errors[k] - other.errors[j]);
                out.truth.push(t);
                out.flux.push(self.flux[k]);
            }
        }
        out
    }

    fn select(&self, keep: &[usize]) -> StarPositionErrors {
        StarPositionErrors {
            errors: keep.iter().map(|&k| self.errors[k]).collect(),
            truth: keep.iter().map(|&k| self.truth[k]).collect(),
            flux: keep.iter().map(|&k| self.flux[k]).collect(),
        }
    }

    /// RMS length of the errors around their mean, px: what is left once the common offset is removed.
    pub fn rms_around_mean_px(&self) -> f64 {
        let (my, mx) = self.mean();
        let n = self.errors.len() as f64;
        let sum: f64 = self
            .errors
            .iter()
            .map(|e| (f64::from(e.dy) - my).powi(2) + (f64::from(e.dx) - mx).powi(2))
            .sum();
        (sum / n).sqrt()
    }
}

/// A star is matched when the result has a star centre within this distance of the expected position.
const MATCH_RADIUS_PX: f32 = 2.0;
/// Stars closer than this to a brighter neighbour (more than 5 % of its flux) are not measured.
const ISOLATION_PX: f32 = 12.0;

impl Simulation {
    /// Where truth position `(y, x)` lies in the mean geometry of `frames` (all frames when empty):
    /// `(y, x) + mean d_i(y, x)`.
    pub fn mean_geometry_position(&self, frames: &[usize], y: f32, x: f32) -> (f32, f32) {
        let all: Vec<usize>;
        let frames = if frames.is_empty() {
            all = (0..self.frames()).collect();
            &all[..]
        } else {
            frames
        };
        let (mut sy, mut sx) = (0.0f64, 0.0f64);
        for &i in frames {
            let d = self.displacement(i, y, x);
            sy += f64::from(d.dy);
            sx += f64::from(d.dx);
        }
        let n = frames.len().max(1) as f64;
        (y + (sy / n) as f32, x + (sx / n) as f32)
    }

    /// Finds the simulated stars in `image` (a mono result in the frames' pixel grid) and returns how
    /// far each sits from its position in the mean geometry of `frames` (all frames when empty). Stars
    /// measured: unsaturated stars detected in the result, at least 24 px inside the image, whose truth
    /// star has no neighbour brighter than 5 % of it within 12 px, matched to the nearest expected
    /// position within 2 px.
    pub fn star_position_errors(
        &self,
        image: ArrayView2<f32>,
        frames: &[usize],
    ) -> StarPositionErrors {
        self.star_position_errors_in(image, &|y, x| self.mean_geometry_position(frames, y, x))
    }

    /// [`Simulation::star_position_errors`] against any geometry: `expected` maps a truth position
    /// `(y, x)` to where the star belongs in `image`.
    pub fn star_position_errors_in(
        &self,
        image: ArrayView2<f32>,
        expected: &dyn Fn(f32, f32) -> (f32, f32),
    ) -> StarPositionErrors {
        let (rows, cols) = image.dim();
        let found = StarDetector::new(DetectOptions {
            max_stars: 2000,
            ..DetectOptions::default()
        })
        .detect(image);
        let margin = 24.0;
        let inside = |y: f32, x: f32| {
            y > margin && x > margin && y < rows as f32 - margin && x < cols as f32 - margin
        };
        let stars = self.stars();
        let isolated = |k: usize| {
            let s = stars[k];
            stars.iter().enumerate().all(|(j, o)| {
                j == k || o.flux < 0.05 * s.flux || (o.x - s.x).hypot(o.y - s.y) > ISOLATION_PX
            })
        };
        let expected: Vec<(usize, (f32, f32))> = (0..stars.len())
            .filter(|&k| isolated(k))
            .map(|k| (k, expected(stars[k].y, stars[k].x)))
            .filter(|&(_, (y, x))| inside(y, x))
            .collect();
        let mut errors = StarPositionErrors::default();
        for s in found
            .iter()
            .filter(|s| !s.saturated && !s.blended && s.x.is_finite() && s.y.is_finite())
        {
            let nearest = expected
                .iter()
                .map(|&(k, (y, x))| (k, s.y - y, s.x - x))
                .min_by(|a, b| a.1.hypot(a.2).total_cmp(&b.1.hypot(b.2)));
            if let Some((k, dy, dx)) = nearest {
                if dy.hypot(dx) <= MATCH_RADIUS_PX && inside(s.y, s.x) {
                    errors.errors.push(Shift::new(dy, dx));
                    errors.truth.push(k);
                    errors.flux.push(stars[k].flux);
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::StarPositionErrors;
    use crate::geom::Shift;
    use crate::simulate::{Scenario, SimConfig, Simulation};

    #[test]
    fn brightest_and_minus_pick_stars_by_truth_index() {
        let a = StarPositionErrors {
            errors: vec![
                Shift::new(0.5, 0.0),
                Shift::new(0.0, 0.1),
                Shift::new(0.2, 0.2),
            ],
            truth: vec![4, 7, 9],
            flux: vec![100.0, 5000.0, 900.0],
        };
        let top = a.brightest(0.5);
        assert_eq!(top.truth, vec![7, 9]);
        assert_eq!(a.brightest(0.0).truth, vec![7]);
        let b = StarPositionErrors {
            errors: vec![Shift::new(0.2, 0.1), Shift::new(0.4, 0.0)],
            truth: vec![9, 4],
            flux: vec![900.0, 100.0],
        };
        let d = a.minus(&b);
        assert_eq!(d.truth, vec![4, 9]);
        assert!((d.errors[0].dy - 0.1).abs() < 1e-6 && (d.errors[1].dx - 0.1).abs() < 1e-6);
    }

    #[test]
    fn the_truth_image_moved_to_the_mean_geometry_has_no_position_error() {
        // Static scene: the mean geometry is the truth moved by the mean global shift. Frame 0's
        // expected image (no noise) sits at its own displacement: the errors are that offset.
        let mut cfg = SimConfig::new(Scenario::Static, 6, 256, 256, 4);
        cfg.drift_px = 1.5;
        cfg.jitter_px = 0.1;
        // Sparse stars: blended neighbours move a centroid, which is crowding, not geometry (rand
        // 0.10's draw of the default density gave 0.15 px rms from a few blends).
        cfg.star_density_per_mpx = 800.0;
        let sim = Simulation::new(cfg);
        let frame = sim.expected_frame(0);
        let at_zero = sim.star_position_errors(frame.view(), &[0]);
        assert!(at_zero.stars() >= 10, "{} stars", at_zero.stars());
        assert!(at_zero.rms_px() < 0.05, "{}", at_zero.rms_px());
        let against_last = sim.star_position_errors(frame.view(), &[5]);
        let g = sim.global_displacement(5);
        let (my, mx) = against_last.mean();
        assert!((my + f64::from(g.dy)).abs() < 0.05, "{my} vs {g:?}");
        assert!((mx + f64::from(g.dx)).abs() < 0.05, "{mx} vs {g:?}");
        assert!(against_last.rms_around_mean_px() < 0.05);
    }
}
