//! Frames held in memory by an embedding application (shared, never copied as a whole).
//! What it does not: check frames beyond their size (the global pass measures them).

use ndarray::{s, Array2};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::{FrameMeta, FrameStore};
use crate::error::{Stage, StageError};

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
            .ok_or_else(|| StageError::input(Stage::Reader, "no frames were given"))?
            .dim();
        if let Some((i, f)) = frames.iter().enumerate().find(|(_, f)| f.dim() != shape) {
            return Err(StageError::input(
                Stage::Reader,
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
