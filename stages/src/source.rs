//! Where frames come from: files on disk (after a folder scan) or arrays held in memory.
//!
//! A [`FrameStore`] gives random access to whole frames and to rectangular regions. It is synchronous on
//! purpose: the reader stage calls it from blocking threads only (cfitsio handles are not `Send`, so a
//! file is opened, read and closed inside one call).
//! A colour (Bayer) sequence is presented in cell space by [`ColourFrames`]: four planes (R, G1, G2, B)
//! of `H/2 x W/2` per frame, whose luminance is what the global pass and the registration see.
//! What it does not: decide the reading order (the reader does) or cache anything.

use ndarray::{s, Array2, Array3, Axis};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use tlr_core::fits::{self, FrameHeader};

use crate::error::StageError;

/// What the pipeline knows about one frame besides its pixels.
#[derive(Debug, Clone, Default)]
pub struct FrameMeta {
    /// The file, or `memory:<index>`.
    pub label: PathBuf,
    /// Exposure time in seconds, when known.
    pub exposure_s: Option<f64>,
    /// DATE-OBS, when known.
    pub date_obs: Option<String>,
}

/// Random access to a fixed, time-ordered list of equally sized frames.
pub trait FrameStore: Send + Sync {
    /// Number of frames.
    fn len(&self) -> usize;
    /// True when there is no frame.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `(rows, cols)` of every frame.
    fn shape(&self) -> (usize, usize);
    /// Metadata of frame `index`.
    fn meta(&self, index: usize) -> FrameMeta;
    /// The whole frame `index`.
    ///
    /// # Errors
    /// When the frame cannot be read; the error names the file.
    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError>;
    /// Regions of frame `index`, read in one visit (one file open). Ranges lie inside the frame.
    ///
    /// # Errors
    /// When the frame cannot be read; the error names the file.
    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError>;
    /// Planes per frame: 1 for mono, 4 (R, G1, G2, B) for a Bayer sequence in cell space.
    fn planes(&self) -> usize {
        1
    }
    /// The whole frame `index` as planes `(planes, rows, cols)`.
    ///
    /// # Errors
    /// As [`FrameStore::read_full`].
    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        Ok(self.read_full(index)?.insert_axis(Axis(0)))
    }
    /// Regions of frame `index` as planes `(planes, rows, cols)`, read in one visit.
    ///
    /// # Errors
    /// As [`FrameStore::read_regions`].
    fn read_plane_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array3<f32>>, StageError> {
        Ok(self
            .read_regions(index, regions)?
            .into_iter()
            .map(|r| r.insert_axis(Axis(0)))
            .collect())
    }
}

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
                "reader",
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
        tlr_core::bayer::luminance(planes.view())
            .map_err(|e| StageError::input("reader", e.to_string()))
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
            .ok_or_else(|| StageError::input("scan", "no frames to process"))?;
        let shape = (first.rows, first.cols);
        if let Some(odd) = headers.iter().find(|h| (h.rows, h.cols) != shape) {
            return Err(StageError::input(
                "scan",
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
        }
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        let mut reader = fits::FitsReader::open(&self.headers[index].path)
            .map_err(|e| StageError::fits("reader", e))?;
        reader
            .read_full()
            .map_err(|e| StageError::fits("reader", e))
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        let mut reader = fits::FitsReader::open(&self.headers[index].path)
            .map_err(|e| StageError::fits("reader", e))?;
        regions
            .iter()
            .map(|(rows, cols)| {
                reader
                    .read_region(rows.clone(), cols.clone())
                    .map_err(|e| StageError::fits("reader", e))
            })
            .collect()
    }
}

/// Frames held in memory by an embedding application (shared, never copied as a whole).
#[derive(Clone)]
pub struct MemoryFrames {
    frames: Arc<Vec<Array2<f32>>>,
    meta: Vec<FrameMeta>,
    shape: (usize, usize),
}

impl MemoryFrames {
    /// Frames in time order; all must share one shape. Exposure times are optional.
    ///
    /// # Errors
    /// When the list is empty or the shapes differ.
    pub fn new(frames: Vec<Array2<f32>>) -> Result<Self, StageError> {
        let shape = frames
            .first()
            .ok_or_else(|| StageError::input("reader", "no frames were given"))?
            .dim();
        if let Some((i, f)) = frames.iter().enumerate().find(|(_, f)| f.dim() != shape) {
            return Err(StageError::input(
                "reader",
                format!(
                    "frame memory:{i} is {}x{} but frame memory:0 is {}x{}",
                    f.dim().1,
                    f.dim().0,
                    shape.1,
                    shape.0
                ),
            ));
        }
        let meta = (0..frames.len())
            .map(|i| FrameMeta {
                label: PathBuf::from(format!("memory:{i}")),
                ..FrameMeta::default()
            })
            .collect();
        Ok(Self {
            frames: Arc::new(frames),
            meta,
            shape,
        })
    }

    /// Sets the exposure time of every frame (for the output header).
    pub fn with_exposure_s(mut self, exposure_s: f64) -> Self {
        for m in &mut self.meta {
            m.exposure_s = Some(exposure_s);
        }
        self
    }
}

impl FrameStore for MemoryFrames {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn shape(&self) -> (usize, usize) {
        self.shape
    }

    fn meta(&self, index: usize) -> FrameMeta {
        self.meta[index].clone()
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        Ok(self.frames[index].clone())
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        let frame = &self.frames[index];
        Ok(regions
            .iter()
            .map(|(rows, cols)| frame.slice(s![rows.clone(), cols.clone()]).to_owned())
            .collect())
    }
}
