//! The bad-pixel map: hot pixels from the master dark's thermal signal (more than [`HOT_KAPPA`] robust
//! sigmas above its median), dead and cold pixels from the normalised master flat (below
//! [`COLD_FLAT`]); and their repair: a bad pixel takes the median of its good neighbours of the same
//! colour (step 2 on CFA data, 1 on mono), in a 3x3 ring.
//!
//! What it does not: find pixels that are bad only in some frames (cosmic rays: the tile operator's
//! rejection does), or mark pixels for rejection instead of repairing them.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// A thermal-signal pixel this many robust sigmas above the median is hot.
pub const HOT_KAPPA: f32 = 8.0;
/// A pixel of the normalised flat below this is dead or cold.
pub const COLD_FLAT: f32 = 0.5;

/// Bad pixels of the sensor, as a sorted list of `(row, col)` and a mask.
#[derive(Debug, Clone)]
pub struct BadPixels {
    mask: Array2<bool>,
    /// Number of hot pixels found in the dark.
    pub hot: usize,
    /// Number of dead or cold pixels found in the flat.
    pub cold: usize,
    step: usize,
}

impl BadPixels {
    /// The map from the thermal signal (`dark - bias`, or the dark) and the normalised flat; `cfa`
    /// repairs from same-colour neighbours. `None` when no pixel is bad.
    pub fn find(
        thermal: Option<ArrayView2<f32>>,
        flat: Option<ArrayView2<f32>>,
        shape: (usize, usize),
        cfa: bool,
    ) -> Option<Self> {
        let mut mask = Array2::from_elem(shape, false);
        let mut hot = 0;
        if let Some(t) = thermal {
            let sample: Vec<f32> = t.iter().step_by(7).copied().collect();
            let (med, sigma) = crate::stats::median_and_sigma(&sample);
            let limit = med + HOT_KAPPA * sigma.max(1e-3);
            for (m, &v) in mask.iter_mut().zip(t.iter()) {
                if v > limit {
                    *m = true;
                    hot += 1;
                }
            }
        }
        let mut cold = 0;
        if let Some(f) = flat {
            for (m, &v) in mask.iter_mut().zip(f.iter()) {
                if v < COLD_FLAT && !*m {
                    *m = true;
                    cold += 1;
                }
            }
        }
        (hot + cold > 0).then_some(Self {
            mask,
            hot,
            cold,
            step: if cfa { 2 } else { 1 },
        })
    }

    /// How far a repair reaches (pixels): a region must be read this much larger on every side to
    /// be repaired as the whole frame would be.
    pub fn reach(&self) -> usize {
        self.step
    }

    /// Total bad pixels.
    pub fn count(&self) -> usize {
        self.hot + self.cold
    }

    /// Repairs the bad pixels of `region`, whose top-left pixel is frame pixel `(row0, col0)`: each
    /// takes the median of its good same-colour neighbours inside `region` (left as it is when there is
    /// none). Reads only unrepaired values, so the result does not depend on the order.
    pub fn repair(&self, mut region: ArrayViewMut2<f32>, row0: usize, col0: usize) {
        let (rows, cols) = region.dim();
        let d = self.step as isize;
        let mut fixes = Vec::new();
        let mut values = Vec::with_capacity(8);
        for r in 0..rows {
            for c in 0..cols {
                if !self.mask[[row0 + r, col0 + c]] {
                    continue;
                }
                values.clear();
                for (dr, dc) in [
                    (-d, -d),
                    (-d, 0),
                    (-d, d),
                    (0, -d),
                    (0, d),
                    (d, -d),
                    (d, 0),
                    (d, d),
                ] {
                    let (nr, nc) = (r as isize + dr, c as isize + dc);
                    if nr < 0 || nc < 0 || nr >= rows as isize || nc >= cols as isize {
                        continue;
                    }
                    let (nr, nc) = (nr as usize, nc as usize);
                    let v = region[[nr, nc]];
                    if !self.mask[[row0 + nr, col0 + nc]] && v.is_finite() {
                        values.push(v);
                    }
                }
                if !values.is_empty() {
                    fixes.push((r, c, crate::stats::median_in_place(&mut values)));
                }
            }
        }
        for (r, c, v) in fixes {
            region[[r, c]] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_pixel_is_found_and_repaired_from_its_colour() {
        let mut dark = Array2::from_shape_fn((8, 8), |(r, c)| ((r * 3 + c * 5) % 7) as f32 * 0.1);
        dark[[4, 4]] = 500.0;
        let bad = BadPixels::find(Some(dark.view()), None, (8, 8), true).unwrap();
        assert_eq!((bad.hot, bad.cold), (1, 0));
        // A CFA frame: pixels of the same colour as (4, 4) are 10, the others 100.
        let mut frame = Array2::from_shape_fn((8, 8), |(r, c)| {
            if r % 2 == 0 && c % 2 == 0 {
                10.0
            } else {
                100.0
            }
        });
        frame[[4, 4]] = 9000.0;
        bad.repair(frame.view_mut(), 0, 0);
        assert_eq!(frame[[4, 4]], 10.0);
    }
}
