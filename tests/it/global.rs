//! Global pass: shift recovery on synthetic star fields, weights of bad frames, robustness.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tlr_core::Shift;

/// A star of the synthetic sky: position in reference coordinates and total flux (ADU).
#[derive(Debug, Clone, Copy)]
pub struct SkyStar {
    pub y: f32,
    pub x: f32,
    pub flux: f32,
}

/// `n` random stars over a `rows x cols` field (power-law-ish fluxes), deterministic in `seed`.
pub fn sky(rows: usize, cols: usize, n: usize, seed: u64) -> Vec<SkyStar> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| SkyStar {
            y: rng.gen_range(-40.0..rows as f32 + 40.0),
            x: rng.gen_range(-40.0..cols as f32 + 40.0),
            flux: 20_000.0 * rng.gen_range(0.05f32..1.0).powi(3) + 800.0,
        })
        .collect()
}

/// Renders the stars shifted by `shift` (frame = reference + shift) as Gaussians of `fwhm` px, times
/// `transparency`, on a flat `background` with Gaussian noise of `noise` ADU.
#[allow(clippy::too_many_arguments)]
pub fn render(
    rows: usize,
    cols: usize,
    stars: &[SkyStar],
    shift: Shift,
    fwhm: f32,
    transparency: f32,
    background: f32,
    noise: f32,
    seed: u64,
) -> Array2<f32> {
    let mut img = Array2::from_elem((rows, cols), background);
    let sigma = fwhm / 2.354_82;
    let r = (4.0 * sigma).ceil() as i64 + 1;
    let norm = 1.0 / (2.0 * std::f32::consts::PI * sigma * sigma);
    for s in stars {
        let (cy, cx) = (s.y + shift.dy, s.x + shift.dx);
        let (iy, ix) = (cy.round() as i64, cx.round() as i64);
        for y in iy - r..=iy + r {
            for x in ix - r..=ix + r {
                if y < 0 || x < 0 || y >= rows as i64 || x >= cols as i64 {
                    continue;
                }
                let d2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                img[[y as usize, x as usize]] +=
                    transparency * s.flux * norm * (-d2 / (2.0 * sigma * sigma)).exp();
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = Normal::new(0.0f32, noise).unwrap();
    img.mapv_inplace(|v| v + n.sample(&mut rng));
    img
}
