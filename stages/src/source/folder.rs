//! Frames in FITS files, as listed and checked by the folder scan ([`tlr_core::scan`]).
//! What it does not: scan the folder (the pipeline does, before it builds the store) or keep pixels.

use ndarray::Array2;
use std::ops::Range;
use tlr_core::fits::{self, FrameHeader};

use super::{FrameMeta, FrameStore};
use crate::error::{Stage, StageError};

/// Frames in FITS files, as listed (and checked) by the scan.
#[derive(Debug, Clone)]
pub struct FileFrames {
    headers: Vec<FrameHeader>,
    shape: (usize, usize),
}

impl FileFrames {
    /// Frames from scanned headers, in the given (time) order; all must share one shape.
    ///
    /// # Errors
    /// When the list is empty or the sizes differ.
    pub fn new(headers: Vec<FrameHeader>) -> Result<Self, StageError> {
        let first = headers
            .first()
            .ok_or_else(|| StageError::input(Stage::Scan, "no frames to process"))?;
        let shape = (first.rows, first.cols);
        if let Some(odd) = headers.iter().find(|h| (h.rows, h.cols) != shape) {
            return Err(StageError::input(
                Stage::Scan,
                format!(
                    "frame `{}` is {}x{} but the first frame is {}x{}",
                    odd.path.display(),
                    odd.cols,
                    odd.rows,
                    shape.1,
                    shape.0
                ),
            ));
        }
        Ok(Self { headers, shape })
    }

    /// The headers, in frame order.
    pub fn headers(&self) -> &[FrameHeader] {
        &self.headers
    }
}

impl FrameStore for FileFrames {
    fn len(&self) -> usize {
        self.headers.len()
    }

    fn shape(&self) -> (usize, usize) {
        self.shape
    }

    fn meta(&self, index: usize) -> FrameMeta {
        let h = &self.headers[index];
        FrameMeta {
            label: h.path.clone(),
            exposure_s: h.exposure_s,
            date_obs: h.date_obs.clone(),
            saturation: h.saturation,
        }
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        let mut reader = fits::FitsReader::open(&self.headers[index].path)
            .map_err(|e| StageError::fits(Stage::Reader, e))?;
        reader
            .read_full()
            .map_err(|e| StageError::fits(Stage::Reader, e))
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        let mut reader = fits::FitsReader::open(&self.headers[index].path)
            .map_err(|e| StageError::fits(Stage::Reader, e))?;
        regions
            .iter()
            .map(|(rows, cols)| {
                reader
                    .read_region(rows.clone(), cols.clone())
                    .map_err(|e| StageError::fits(Stage::Reader, e))
            })
            .collect()
    }
}
