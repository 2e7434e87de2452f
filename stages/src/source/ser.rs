//! Frames of a SER video file ([`SerFrames`]): a [`FrameStore`] over [`tlr_core::ser::SerFile`], so a
//! capture runs like a folder of frames. Frames are read by index and regions as the rows they span,
//! so memory stays that of the reader's window, whatever the file's size. Frame times come from the
//! SER timestamp trailer when it has one.
//!
//! What it does not: decide mono or colour (the pipeline takes the Bayer pattern from
//! [`SerFrames::pattern`] unless the configuration overrides it) or demosaic; RGB/BGR files are read as
//! their luminance (see [`tlr_core::ser`]).

use ndarray::Array2;
use std::ops::Range;
use std::path::{Path, PathBuf};

use tlr_core::ser::{SerColor, SerFile};

use super::{FrameMeta, FrameStore};
use crate::error::{Stage, StageError};

/// The complete frames of one SER file, in file order.
#[derive(Debug)]
pub struct SerFrames {
    file: SerFile,
}

impl SerFrames {
    /// Opens `path` (header and timestamp trailer only).
    ///
    /// # Errors
    /// [`StageError::Ser`] naming the file: unreadable, not SER, an impossible header, no complete frame.
    pub fn open(path: &Path) -> Result<Self, StageError> {
        let file = SerFile::open(path).map_err(|e| StageError::ser(Stage::Scan, e))?;
        Ok(Self { file })
    }

    /// The open file (header, truncation, timestamps).
    pub fn file(&self) -> &SerFile {
        &self.file
    }

    /// The Bayer pattern of a Bayer file (file row order); `None` for mono and RGB/BGR.
    pub fn pattern(&self) -> Option<tlr_core::bayer::CfaPattern> {
        match self.file.header().color {
            SerColor::Bayer(p) => Some(p),
            _ => None,
        }
    }

    /// Warnings a user should see about this file: truncation (how many frames are used), colour
    /// reduced to luminance.
    pub fn warnings(&self) -> Vec<String> {
        let name = self.file.path().display();
        let mut out = Vec::new();
        if let Some((complete, declared)) = self.file.truncation() {
            out.push(format!(
                "SER file `{name}` is truncated: it declares {declared} frames but holds {complete} \
                 complete ones; using those {complete}"
            ));
        }
        if self.file.header().color.samples() > 1 {
            out.push(format!(
                "SER file `{name}` holds RGB frames: tlr reconstructs their luminance (R + G + B) / 3"
            ));
        }
        out
    }

    fn label(&self, index: usize) -> PathBuf {
        let mut label = self.file.path().as_os_str().to_owned();
        label.push(format!("#{index}"));
        PathBuf::from(label)
    }
}

impl FrameStore for SerFrames {
    fn len(&self) -> usize {
        self.file.frames()
    }

    fn shape(&self) -> (usize, usize) {
        self.file.shape()
    }

    fn meta(&self, index: usize) -> FrameMeta {
        FrameMeta {
            label: self.label(index),
            exposure_s: None,
            date_obs: self
                .file
                .timestamp_utc(index)
                .and_then(tlr_core::fits::format_utc),
            saturation: None,
        }
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        self.file
            .read_frame(index)
            .map_err(|e| StageError::ser(Stage::Reader, e))
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        regions
            .iter()
            .map(|(rows, cols)| {
                let band = self
                    .file
                    .read_rows(index, rows.clone())
                    .map_err(|e| StageError::ser(Stage::Reader, e))?;
                Ok(band.slice(ndarray::s![.., cols.clone()]).to_owned())
            })
            .collect()
    }
}

/// The colour mode of a SER run: the configuration's when it names one (`mono`, or a Bayer pattern),
/// else the file's ColorID (`auto`, `osc`).
///
/// # Errors
/// `osc` for a file that is not a Bayer mosaic.
pub fn ser_colour(
    pattern: Option<tlr_core::bayer::CfaPattern>,
    mode: tlr_core::bayer::ColorMode,
) -> Result<Option<tlr_core::bayer::CfaPattern>, StageError> {
    use tlr_core::bayer::ColorMode;
    match mode {
        ColorMode::Mono => Ok(None),
        ColorMode::Bayer(p) => Ok(Some(p)),
        ColorMode::Auto => Ok(pattern),
        ColorMode::Osc => pattern.map(Some).ok_or_else(|| {
            StageError::input(
                Stage::Scan,
                "data.color_mode is osc but the SER file's ColorID is not a Bayer pattern: set \
                 data.bayer_pattern",
            )
        }),
    }
}
