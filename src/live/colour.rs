//! Colour in a live session: which colour route a Bayer session takes ([`ColourRoute`], decided once
//! by the caller from the bootstrap frames, as a batch run decides it, and kept in the checkpoint),
//! the shape of the colour planes, and the per-tile colour accumulators ([`PlaneSums`]): the planes
//! are stacked with the luminance's shifts, weights and per-pixel rejection, so one tile state holds
//! the luminance's accumulators plus one weighted sum per plane and the weight that entered them.
//!
//! What it does not: demosaic or split frames into planes (the `tlr` crate's frame stores do, the
//! same code as a batch run), register planes (the luminance is registered), or write RGB files.

use ndarray::{Array2, ArrayView2, ArrayView3, Axis, Zip};
use serde::{Deserialize, Serialize};

use crate::bayer::CfaPattern;
use crate::operator::despike_plane;
use crate::resample::Resampler;
use crate::Shift;

/// How a Bayer session is reconstructed (the two routes of a batch run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColourRoute {
    /// Undersampled frames: each frame is demosaiced as it is read; R, G, B at full resolution.
    Debayered,
    /// Well-sampled frames: the four Bayer planes R, G1, G2, B in cell space (half resolution),
    /// demosaiced once, when a snapshot is made.
    CellSpace,
}

impl ColourRoute {
    /// Planes per frame: 3 (R, G, B) or 4 (R, G1, G2, B).
    pub fn planes(self) -> usize {
        match self {
            Self::Debayered => 3,
            Self::CellSpace => crate::bayer::PLANES,
        }
    }

    /// The session's working grid `(rows, cols)` for mosaic frames of `(rows, cols)`: the even part
    /// at full resolution, or the 2x2 cells.
    pub fn shape(self, (rows, cols): (usize, usize)) -> (usize, usize) {
        match self {
            Self::Debayered => (rows & !1, cols & !1),
            Self::CellSpace => (rows / 2, cols / 2),
        }
    }

    /// The name a message or a header uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Debayered => "frames demosaiced one by one",
            Self::CellSpace => "Bayer planes in cell space",
        }
    }
}

/// The colour of a Bayer session: its pattern (file row order) and route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveColour {
    /// The frames' Bayer pattern.
    pub pattern: CfaPattern,
    /// How the session reconstructs it.
    pub route: ColourRoute,
}

/// The luminance of colour planes `(planes, h, w)`: their mean, summed in plane order (NaN where any
/// plane is NaN), as a batch run's tiles see it.
pub fn luminance(planes: ArrayView3<f32>) -> Array2<f32> {
    let n = planes.dim().0.max(1) as f32;
    let mut sum = planes.index_axis(Axis(0), 0).to_owned();
    planes
        .axis_iter(Axis(0))
        .skip(1)
        .for_each(|plane| sum += &plane);
    sum.mapv(|v| v / n)
}

/// A tile's colour accumulators: one weighted sum per plane and the weight that entered them.
#[derive(Debug, Clone, Default)]
pub struct PlaneSums {
    /// `sum(W * plane)` per plane, each `(h, w)`.
    pub(super) sums: Vec<Array2<f32>>,
    /// `sum(W)` of the values in `sums`, `(h, w)` (empty for mono).
    pub(super) weight: Array2<f32>,
}

impl PlaneSums {
    /// Accumulators of `planes` planes of `(h, w)`, all zero (none for 0 planes).
    pub(super) fn zeros(planes: usize, (h, w): (usize, usize)) -> Self {
        if planes == 0 {
            return Self::default();
        }
        Self {
            sums: (0..planes).map(|_| Array2::zeros((h, w))).collect(),
            weight: Array2::zeros((h, w)),
        }
    }

    /// Planes held (0 for mono).
    pub fn planes(&self) -> usize {
        self.sums.len()
    }

    /// Seeds the sums from reconstructed plane images (the batch operator's, for the bootstrap
    /// frames) carrying `weight` per pixel: `sum = image * weight` where every plane is finite.
    pub(super) fn seed(&mut self, images: &[Array2<f32>], weight: &Array2<f32>) {
        for (r, c) in ndarray::indices(weight.dim()) {
            let w = weight[[r, c]];
            if w > 0.0 && images.iter().all(|p| p[[r, c]].is_finite()) {
                for (sum, image) in self.sums.iter_mut().zip(images) {
                    sum[[r, c]] = image[[r, c]] * w;
                }
                self.weight[[r, c]] = w;
            }
        }
    }

    /// Adds one frame's plane cut-outs `(planes, h + 2m, w + 2m)` with the luminance's final `shift`
    /// and `weight`, at the pixels `taken` (the luminance accepted them): every plane is despiked
    /// across colours (as the batch run's planes are), resampled at `shift` and scaled by its own
    /// photometric scale; a pixel enters only where every plane is finite.
    pub(super) fn add(
        &mut self,
        cuts: ArrayView3<f32>,
        scales: &[f32],
        (margin, shift, weight): (usize, Shift, f32),
        taken: &Array2<bool>,
    ) {
        let (h, w) = taken.dim();
        let views: Vec<ArrayView2<f32>> = cuts.axis_iter(Axis(0)).collect();
        let mut resampler = Resampler::new();
        let aligned: Vec<Array2<f32>> = (0..self.planes().min(views.len()))
            .map(|p| {
                let cleaned = despike_plane(&views, p);
                let cut = cleaned.as_ref().map_or(views[p], |c| c.view());
                let mut out = Array2::from_elem((h, w), f32::NAN);
                resampler.sample_shifted(
                    cut,
                    margin as f32 + shift.dy,
                    margin as f32 + shift.dx,
                    out.view_mut(),
                );
                let scale = scales.get(p).copied().unwrap_or(1.0);
                out.mapv_inplace(|v| v * scale);
                out
            })
            .collect();
        if aligned.len() != self.planes() {
            return;
        }
        for (r, c) in ndarray::indices((h, w)) {
            if taken[[r, c]] && aligned.iter().all(|p| p[[r, c]].is_finite()) {
                for (sum, plane) in self.sums.iter_mut().zip(&aligned) {
                    sum[[r, c]] += weight * plane[[r, c]];
                }
                self.weight[[r, c]] += weight;
            }
        }
    }

    /// The current planes `sum / weight`, each `(h, w)`; NaN where nothing entered.
    pub fn current(&self) -> Vec<Array2<f32>> {
        self.sums
            .iter()
            .map(|sum| {
                Zip::from(sum)
                    .and(&self.weight)
                    .map_collect(|&s, &w| if w > 0.0 { s / w } else { f32::NAN })
            })
            .collect()
    }

    /// The arrays a checkpoint stores, in order: the sums, then the weight (none for mono).
    pub(super) fn arrays(&self) -> Vec<&Array2<f32>> {
        if self.sums.is_empty() {
            return Vec::new();
        }
        self.sums
            .iter()
            .chain(std::iter::once(&self.weight))
            .collect()
    }

    /// The accumulators from the arrays of [`PlaneSums::arrays`] (sums, then the weight).
    pub(super) fn from_arrays(mut arrays: Vec<Array2<f32>>) -> Self {
        match arrays.pop() {
            Some(weight) => Self {
                sums: arrays,
                weight,
            },
            None => Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn routes_have_their_planes_and_grids() {
        assert_eq!(ColourRoute::Debayered.planes(), 3);
        assert_eq!(ColourRoute::CellSpace.planes(), 4);
        assert_eq!(ColourRoute::Debayered.shape((101, 64)), (100, 64));
        assert_eq!(ColourRoute::CellSpace.shape((101, 64)), (50, 32));
        let json = serde_json::to_string(&LiveColour {
            pattern: CfaPattern::Grbg,
            route: ColourRoute::CellSpace,
        })
        .unwrap();
        assert_eq!(json, r#"{"pattern":"GRBG","route":"cell_space"}"#);
    }

    #[test]
    fn planes_enter_where_the_luminance_took_the_pixel() {
        let mut sums = PlaneSums::zeros(3, (4, 4));
        let cuts = Array3::from_shape_fn((3, 8, 8), |(p, _, _)| 10.0 * (p + 1) as f32);
        let mut taken = Array2::from_elem((4, 4), true);
        taken[[1, 2]] = false;
        sums.add(
            cuts.view(),
            &[1.0, 2.0, 0.5],
            (2, Shift::new(0.0, 0.0), 3.0),
            &taken,
        );
        sums.add(
            cuts.view(),
            &[1.0, 2.0, 0.5],
            (2, Shift::new(0.0, 0.0), 1.0),
            &taken,
        );
        let planes = sums.current();
        assert!((planes[0][[0, 0]] - 10.0).abs() < 1e-4);
        assert!((planes[1][[3, 3]] - 40.0).abs() < 1e-3);
        assert!((planes[2][[2, 1]] - 15.0).abs() < 1e-4);
        assert!(planes.iter().all(|p| p[[1, 2]].is_nan()));
        assert_eq!(sums.weight[[0, 0]], 4.0);
        let back = PlaneSums::from_arrays(sums.arrays().into_iter().cloned().collect());
        let bits = |v: Vec<Array2<f32>>| -> Vec<u32> {
            v.iter()
                .flat_map(|p| p.iter().map(|x| x.to_bits()))
                .collect()
        };
        assert_eq!(bits(back.current()), bits(planes));
        assert_eq!(PlaneSums::zeros(0, (4, 4)).arrays().len(), 0);
    }
}
