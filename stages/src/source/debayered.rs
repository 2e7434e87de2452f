//! A Bayer (one-shot colour) sequence presented as full-resolution colour: every frame demosaiced once
//! (Malvar-He-Cutler, [`tlr_core::bayer::demosaic`]) into three planes R, G, B of `H x W`, whose mean
//! is the luminance the global pass and the registration see. Regions are demosaiced with an apron of
//! [`tlr_core::bayer::DEMOSAIC_REACH`] px read around them, so a region's pixels equal the same pixels of
//! the whole frame demosaiced, to the bit.
//!
//! Why: undersampled one-shot-colour data (stars of 1.2-2 px FWHM, about one cell wide in a Bayer
//! plane) loses its star cores when each Bayer plane is shifted on its own 2-px grid; demosaicing each
//! frame first and registering and stacking at full resolution keeps them, as Siril's debayer ->
//! register -> stack does. The pipeline chooses this store for undersampled sequences only (see
//! `batch::pipeline`); well-sampled ones stay in cell space ([`super::ColourFrames`]), which keeps the
//! demosaic's colour fringes out of the wings of their coloured stars.
//! Saturated and bright stars: each frame's colours clip at their own level
//! ([`tlr_core::saturation::mosaic_levels`]: a pile-up of each colour's maximum, else the header's
//! `SATURATE`/`DATAMAX`), found on the frame's first whole read (the global pass) and remembered per
//! frame, so every region of it is demosaiced with the same levels; the demosaic keeps from
//! undershooting next to clipped and bright samples ([`tlr_core::saturation::demosaic_levels`]), and is
//! Malvar-He-Cutler to the bit elsewhere. Measured on the M27 frames: the plain demosaic's correction
//! terms put pixels 130 sigma below the sky next to bright (also unsaturated) stars under two pixels
//! wide; the resampling and the combination add little to it.
//! What it does not: decide the colour mode (see [`super::decide_sequence`]) or read files itself.

use ndarray::{s, Array2, Array3, Axis};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tlr_core::bayer::{CfaPattern, DEMOSAIC_REACH};
use tlr_core::saturation::{demosaic_levels, mosaic_levels, CfaLevels};

use super::{FrameMeta, FrameStore};
use crate::error::{Stage, StageError};

/// Colour planes of a [`DebayeredFrames`] frame: R, G, B.
pub const RGB_PLANES: usize = 3;

/// A Bayer sequence demosaiced frame by frame: frame `(H, W)` of the inner store (its mosaic) becomes
/// three full-resolution planes R, G, B of `(H, W)` (an odd last row/column is dropped, as in cell
/// space); [`FrameStore::read_full`] and [`FrameStore::read_regions`] give their mean.
pub struct DebayeredFrames {
    inner: Arc<dyn FrameStore>,
    pattern: CfaPattern,
    /// Per frame, the levels of its colours once found (see the module docs).
    levels: Mutex<Vec<Option<CfaLevels>>>,
}

impl DebayeredFrames {
    /// Wraps the full-resolution mosaic frames of `inner`, whose pattern (in file row order) is `pattern`.
    ///
    /// # Errors
    /// When the frames are smaller than 2x2.
    pub fn new(inner: Arc<dyn FrameStore>, pattern: CfaPattern) -> Result<Self, StageError> {
        super::colour::check_mosaic_size(inner.as_ref())?;
        let levels = Mutex::new(vec![None; inner.len()]);
        Ok(Self {
            inner,
            pattern,
            levels,
        })
    }

    /// The Bayer pattern (file row order).
    pub fn pattern(&self) -> CfaPattern {
        self.pattern
    }

    fn demosaic(
        &self,
        mosaic: ndarray::ArrayView2<f32>,
        pattern: CfaPattern,
        levels: &CfaLevels,
    ) -> Result<Array3<f32>, StageError> {
        // A frame's own samples clip at the level itself.
        demosaic_levels(mosaic, pattern, levels, 1.0)
            .map_err(|e| StageError::bayer(Stage::Reader, e))
    }

    /// The levels of frame `index`'s colours (R, G1, G2, B): found on `whole` (the frame's even-sized
    /// mosaic) and remembered, or remembered from an earlier whole read, or found on a whole read now.
    fn levels(
        &self,
        index: usize,
        whole: Option<ndarray::ArrayView2<f32>>,
    ) -> Result<CfaLevels, StageError> {
        let known = self
            .levels
            .lock()
            .ok()
            .and_then(|l| l.get(index).copied().flatten());
        let levels = match (whole, known) {
            (None, Some(levels)) => return Ok(levels),
            (Some(mosaic), _) => {
                mosaic_levels(mosaic, self.pattern, self.inner.meta(index).saturation)
            }
            (None, None) => {
                let (h, w) = self.shape();
                let full = self.inner.read_full(index)?;
                mosaic_levels(
                    full.slice(s![..h, ..w]),
                    self.pattern,
                    self.inner.meta(index).saturation,
                )
            }
        };
        if let Some(slot) = self
            .levels
            .lock()
            .ok()
            .as_mut()
            .and_then(|l| l.get_mut(index))
        {
            *slot = Some(levels);
        }
        Ok(levels)
    }

    /// `region` grown by the demosaic's reach on every side, within the (even) frame.
    fn with_apron(
        &self,
        (rows, cols): &(Range<usize>, Range<usize>),
    ) -> (Range<usize>, Range<usize>) {
        let (h, w) = self.shape();
        (
            rows.start.saturating_sub(DEMOSAIC_REACH)..(rows.end + DEMOSAIC_REACH).min(h),
            cols.start.saturating_sub(DEMOSAIC_REACH)..(cols.end + DEMOSAIC_REACH).min(w),
        )
    }
}

/// The mean of the planes `(planes, rows, cols)`, summed in plane order (NaN where any plane is NaN).
/// The same luminance the tile phase cuts from its windows.
pub(crate) fn mean_of_planes(planes: &Array3<f32>) -> Array2<f32> {
    let n = planes.dim().0.max(1);
    let mut out = planes.index_axis(Axis(0), 0).to_owned();
    for p in 1..planes.dim().0 {
        out += &planes.index_axis(Axis(0), p);
    }
    out.mapv_inplace(|v| v / n as f32);
    out
}

impl FrameStore for DebayeredFrames {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> (usize, usize) {
        let (rows, cols) = self.inner.shape();
        (rows & !1, cols & !1)
    }

    fn meta(&self, index: usize) -> FrameMeta {
        self.inner.meta(index)
    }

    fn mosaic(&self) -> Option<CfaPattern> {
        Some(self.pattern)
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        Ok(mean_of_planes(&self.read_full_planes(index)?))
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        Ok(self
            .read_plane_regions(index, regions)?
            .iter()
            .map(mean_of_planes)
            .collect())
    }

    fn planes(&self) -> usize {
        RGB_PLANES
    }

    /// R, G, B: the frame's own colour levels (found on its mosaic), green the lower of the two greens.
    fn saturation_levels(
        &self,
        index: usize,
        _planes: ndarray::ArrayView3<f32>,
    ) -> Vec<Option<f32>> {
        let Ok([r, g1, g2, b]) = self.levels(index, None) else {
            return vec![None; RGB_PLANES];
        };
        let g = match (g1, g2) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        vec![r, g, b]
    }

    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        let (h, w) = self.shape();
        let full = self.inner.read_full(index)?;
        let mosaic = full.slice(s![..h, ..w]);
        let levels = self.levels(index, Some(mosaic))?;
        self.demosaic(mosaic, self.pattern, &levels)
    }

    fn read_plane_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array3<f32>>, StageError> {
        let grown: Vec<(Range<usize>, Range<usize>)> =
            regions.iter().map(|r| self.with_apron(r)).collect();
        let mosaics = self.inner.read_regions(index, &grown)?;
        let levels = self.levels(index, None)?;
        regions
            .iter()
            .zip(&grown)
            .zip(&mosaics)
            .map(|(((rows, cols), (grown_rows, grown_cols)), mosaic)| {
                // The grown region's first pixel sits at (grown_rows.start, grown_cols.start) of the
                // frame's pattern grid.
                let pattern = self.pattern.shifted(grown_rows.start, grown_cols.start);
                let rgb = self.demosaic(mosaic.view(), pattern, &levels)?;
                let (y0, x0) = (rows.start - grown_rows.start, cols.start - grown_cols.start);
                Ok(rgb
                    .slice(s![.., y0..y0 + rows.len(), x0..x0 + cols.len()])
                    .to_owned())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemoryFrames;

    fn mosaic_store(rows: usize, cols: usize) -> Arc<dyn FrameStore> {
        // Smooth sky plus a few sharp, coloured points: the demosaic's 5x5 kernels see real structure.
        let frame = Array2::from_shape_fn((rows, cols), |(y, x)| {
            let base = 100.0 + 0.3 * y as f32 + 0.2 * x as f32 + ((y * 7 + x * 3) % 11) as f32;
            if (y * 31 + x * 17) % 97 == 0 {
                base + 900.0
            } else {
                base
            }
        });
        Arc::new(MemoryFrames::new(vec![frame.clone(), frame * 1.5]).unwrap())
    }

    #[test]
    fn regions_equal_the_whole_frame_demosaiced_to_the_bit() {
        // Odd sizes too: the last row and column are dropped as in cell space.
        for (rows, cols) in [(40, 52), (41, 37)] {
            let store = DebayeredFrames::new(mosaic_store(rows, cols), CfaPattern::Grbg).unwrap();
            assert_eq!(store.shape(), (rows & !1, cols & !1));
            let whole = store.read_full_planes(1).unwrap();
            assert_eq!(whole.dim(), (3, rows & !1, cols & !1));
            let (h, w) = store.shape();
            // Regions at every parity, at the frame's edges and inside, of sizes 1 to most of the frame.
            let regions = vec![
                (0..h, 0..w),
                (0..5, 0..7),
                (1..2, 3..4),
                (3..20, 5..30),
                (h - 6..h, w - 9..w),
                (10..h - 1, 1..w - 2),
            ];
            let parts = store.read_plane_regions(1, &regions).unwrap();
            for ((r, c), part) in regions.iter().zip(&parts) {
                let expected = whole.slice(s![.., r.clone(), c.clone()]);
                assert!(
                    part.iter()
                        .zip(expected.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "region {r:?} x {c:?} of {rows}x{cols} differs from the whole frame"
                );
            }
            let lum = store.read_regions(1, &regions[2..3]).unwrap();
            assert_eq!(lum[0], mean_of_planes(&parts[2]));
        }
    }

    #[test]
    fn the_planes_are_the_demosaic_and_the_luminance_their_mean() {
        let inner = mosaic_store(20, 24);
        let store = DebayeredFrames::new(Arc::clone(&inner), CfaPattern::Rggb).unwrap();
        let mosaic = inner.read_full(0).unwrap();
        let rgb = tlr_core::bayer::demosaic(mosaic.view(), CfaPattern::Rggb).unwrap();
        assert_eq!(store.read_full_planes(0).unwrap(), rgb);
        let lum = store.read_full(0).unwrap();
        let (y, x) = (7, 9);
        let mean = (rgb[[0, y, x]] + rgb[[1, y, x]] + rgb[[2, y, x]]) / 3.0;
        assert_eq!(lum[[y, x]], mean);
        assert_eq!(store.planes(), 3);
    }

    /// A 40x52 mosaic on a 50 ADU sky with a star clipped flat at 4000 (a pile-up in every colour: the
    /// level) and a bright unclipped one, both about two pixels wide.
    fn saturated_store() -> Arc<dyn FrameStore> {
        let frame = Array2::from_shape_fn((40, 52), |(y, x)| {
            let star = |cy: f32, cx: f32, peak: f32| {
                let d2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                peak * (-d2 / 1.2).exp()
            };
            (50.0 + star(12.3, 14.6, 200_000.0) + star(27.7, 36.2, 2_500.0) + (y * 3 % 7) as f32)
                .min(4000.0)
        });
        Arc::new(MemoryFrames::new(vec![frame]).unwrap())
    }

    #[test]
    fn saturated_frames_keep_above_the_sky_and_their_regions_equal_the_whole_frame() {
        let inner = saturated_store();
        let mosaic = inner.read_full(0).unwrap();
        let plain = tlr_core::bayer::demosaic(mosaic.view(), CfaPattern::Rggb).unwrap();
        let min = |a: &Array3<f32>| a.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(
            min(&plain) < 0.0,
            "the plain demosaic undershoots: {}",
            min(&plain)
        );
        // Regions first (the levels are found on a whole read), then the whole frame.
        let store = DebayeredFrames::new(Arc::clone(&inner), CfaPattern::Rggb).unwrap();
        let regions = vec![(0..13, 0..15), (5..30, 11..40), (27..40, 33..52)];
        let parts = store.read_plane_regions(0, &regions).unwrap();
        let whole = store.read_full_planes(0).unwrap();
        assert!(
            min(&whole) >= 0.0,
            "{} below zero on a 50 ADU sky",
            min(&whole)
        );
        assert!(whole.iter().all(|&v| v <= 4000.0));
        for ((r, c), part) in regions.iter().zip(&parts) {
            let expected = whole.slice(s![.., r.clone(), c.clone()]);
            assert!(part
                .iter()
                .zip(expected.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // Far from both stars (no kernel meets a bright sample) it is the plain demosaic, to the bit.
        for (y, x) in [(2, 40), (38, 2), (30, 10)] {
            for c in 0..3 {
                assert_eq!(whole[[c, y, x]].to_bits(), plain[[c, y, x]].to_bits());
            }
        }
        assert_eq!(
            store.saturation_levels(0, whole.view()),
            vec![Some(4000.0); 3],
            "R, G, B levels from the mosaic's pile-ups"
        );
    }

    #[test]
    fn tiny_frames_are_refused_with_a_reason() {
        let one = Arc::new(MemoryFrames::new(vec![Array2::zeros((1, 5))]).unwrap());
        let err = DebayeredFrames::new(one, CfaPattern::Rggb).err().unwrap();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}
