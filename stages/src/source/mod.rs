//! Where frames come from: files on disk after a folder scan ([`FileFrames`]), arrays held in memory
//! ([`MemoryFrames`]), a Bayer sequence seen in cell space ([`ColourFrames`]) or demosaiced frame by
//! frame ([`DebayeredFrames`]), and a folder that capture
//! software is still writing into ([`follow::Follower`]) or frames an application hands over from its
//! capture loop ([`feed::FrameFeed`]), both for live sessions; the frames of a SER video ([`SerFrames`]).
//!
//! A [`FrameStore`] gives random access to whole frames and to rectangular regions. It is synchronous on
//! purpose: the reader stage calls it from blocking threads only (cfitsio handles are not `Send`, so a
//! file is opened, read and closed inside one call).
//! What it does not: decide the reading order (the reader does) or cache anything.

use ndarray::{Array2, Array3, ArrayView3, Axis};
use std::ops::Range;
use std::path::PathBuf;

use crate::error::StageError;

mod border;
mod calibrated;
mod colour;
mod debayered;
pub mod feed;
mod folder;
pub mod follow;
mod memory;
mod ser;

pub use border::{leave_out_sensor_border, BorderlessFrames, PROBE_FRAMES};
pub use calibrated::{calibrate, master_cache_for, CalibratedFrames, FrameCalibrator};
pub use colour::{decide_sequence, ColourFrames, SequenceColour, SessionColour};
pub(crate) use debayered::mean_of_planes;
pub use debayered::{DebayeredFrames, RGB_PLANES};
pub use folder::FileFrames;
pub use memory::MemoryFrames;
pub use ser::{ser_colour, SerFrames};

/// What the pipeline knows about one frame besides its pixels.
#[derive(Debug, Clone, Default)]
pub struct FrameMeta {
    /// The file, or `memory:<index>`.
    pub label: PathBuf,
    /// Exposure time in seconds, when known.
    pub exposure_s: Option<f64>,
    /// DATE-OBS, when known.
    pub date_obs: Option<String>,
    /// Saturation level from the header (`SATURATE`, else `DATAMAX`), in the data's units.
    pub saturation: Option<f64>,
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
    /// For planes demosaiced from a Bayer mosaic (R, G, B): the pattern at frame pixel (0, 0), which
    /// tells where each plane holds its own samples (elsewhere it was interpolated). `None` (the
    /// default): every pixel of every plane is a sample.
    fn mosaic(&self) -> Option<tlr_core::bayer::CfaPattern> {
        None
    }
    /// The whole frame `index` as planes `(planes, rows, cols)`.
    ///
    /// # Errors
    /// As [`FrameStore::read_full`].
    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        Ok(self.read_full(index)?.insert_axis(Axis(0)))
    }
    /// The saturation level of each plane of frame `index` (`None`: unknown), given the planes
    /// [`FrameStore::read_full_planes`] gave for it: by default a pile-up of each plane's maximum, else
    /// the header's `SATURATE`/`DATAMAX` ([`tlr_core::saturation::frame_levels`]).
    fn saturation_levels(&self, index: usize, planes: ArrayView3<f32>) -> Vec<Option<f32>> {
        tlr_core::saturation::frame_levels(planes, self.meta(index).saturation)
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
