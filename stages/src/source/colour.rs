//! A colour (Bayer) sequence presented in cell space: four planes (R, G1, G2, B) of `H/2 x W/2` per
//! frame, whose luminance is what the global pass and the registration see.
//! What it does not: demosaic (the output does, from the reconstructed planes) or read files itself.

use ndarray::{Array2, Array3};
use std::ops::Range;

use super::{FrameMeta, FrameStore};
use crate::error::{Stage, StageError};

/// A Bayer (one-shot colour) sequence seen in cell space: frame `(H, W)` of the inner store becomes four
/// planes of `(H/2, W/2)` (an odd last row/column is dropped); [`FrameStore::read_full`] and
/// [`FrameStore::read_regions`] give the luminance (mean of the four planes) per 2x2 cell.
pub struct ColourFrames {
    inner: std::sync::Arc<dyn FrameStore>,
    pattern: tlr_core::bayer::CfaPattern,
}

impl ColourFrames {
    /// Wraps the full-resolution mosaic frames of `inner`, whose pattern (in file row order) is `pattern`.
    ///
    /// # Errors
    /// When the frames are smaller than 2x2.
    pub fn new(
        inner: std::sync::Arc<dyn FrameStore>,
        pattern: tlr_core::bayer::CfaPattern,
    ) -> Result<Self, StageError> {
        let (rows, cols) = inner.shape();
        if rows < 2 || cols < 2 {
            return Err(StageError::input(
                Stage::Reader,
                format!("Bayer frames of {cols}x{rows} are too small (at least 2x2)"),
            ));
        }
        Ok(Self { inner, pattern })
    }

    /// The Bayer pattern (file row order).
    pub fn pattern(&self) -> tlr_core::bayer::CfaPattern {
        self.pattern
    }

    fn luminance(&self, planes: &Array3<f32>) -> Result<Array2<f32>, StageError> {
        tlr_core::bayer::luminance(planes.view()).map_err(|e| StageError::bayer(Stage::Reader, e))
    }
}

impl FrameStore for ColourFrames {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> (usize, usize) {
        let (rows, cols) = self.inner.shape();
        (rows / 2, cols / 2)
    }

    fn meta(&self, index: usize) -> FrameMeta {
        self.inner.meta(index)
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        self.luminance(&self.read_full_planes(index)?)
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        self.read_plane_regions(index, regions)?
            .iter()
            .map(|p| self.luminance(p))
            .collect()
    }

    fn planes(&self) -> usize {
        tlr_core::bayer::PLANES
    }

    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        let full = self.inner.read_full(index)?;
        Ok(tlr_core::bayer::split_planes(full.view(), self.pattern))
    }

    fn read_plane_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array3<f32>>, StageError> {
        // Cell (r, c) covers full-resolution rows 2r..2r+2 and columns 2c..2c+2: the region starts on a
        // cell boundary, so the frame's own pattern applies to it unchanged.
        let full: Vec<(Range<usize>, Range<usize>)> = regions
            .iter()
            .map(|(r, c)| (2 * r.start..2 * r.end, 2 * c.start..2 * c.end))
            .collect();
        Ok(self
            .inner
            .read_regions(index, &full)?
            .iter()
            .map(|cfa| tlr_core::bayer::split_planes(cfa.view(), self.pattern))
            .collect())
    }
}
