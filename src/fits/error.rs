//! [`FitsError`], the one error type of FITS input and output: every variant names the file (or the
//! output) and says what is wrong with it. Also the conversion from [`crate::atomic::AtomicError`]
//! for the atomic output step.
//!
//! What it does not: no error is raised here; the header walk, the backends and the writer build
//! these values.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

/// Errors of FITS input and output. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitsError {
    /// The file could not be opened or read by the operating system.
    #[error("frame `{path}`: cannot read the file")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file has no bytes at all.
    #[error("frame `{path}`: the file is empty (0 bytes; still being written?)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file does not start like a FITS file.
    #[error("frame `{path}`: not a FITS file ({reason})")]
    NotFits {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The header stops before its `END` card.
    #[error("frame `{path}`: header of HDU {hdu} is incomplete: {reason} (file truncated?)")]
    HeaderTruncated {
        /// The file.
        path: PathBuf,
        /// 0-based HDU index.
        hdu: usize,
        /// What is missing.
        reason: String,
    },
    /// The data is shorter than the header promises.
    #[error("frame `{path}`: data ends after {have} of {need} bytes (file truncated or still being written?)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Data bytes present in the file.
        have: u64,
        /// Data bytes the header promises.
        need: u64,
    },
    /// The path cannot be handed to cfitsio (too long, NUL byte).
    #[error("frame `{path}`: cannot pass this path to cfitsio: {reason}")]
    BadPath {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data is complete but the last 2880-byte block is not padded (cfitsio cannot read it).
    #[error("frame `{path}`: file has {have} data bytes; the header promises {data} plus padding to {need} (file truncated, still being written, or written without FITS padding?)")]
    Unpadded {
        /// The file.
        path: PathBuf,
        /// Data bytes present in the file.
        have: u64,
        /// Data bytes the header promises, without padding.
        data: u64,
        /// Data bytes including the padding of the last block.
        need: u64,
    },
    /// A structural header keyword is missing or malformed.
    #[error("frame `{path}`: HDU {hdu}: keyword {key}: {reason}")]
    BadKeyword {
        /// The file.
        path: PathBuf,
        /// 0-based HDU index.
        hdu: usize,
        /// The keyword.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data contradicts its own structure (e.g. a compressed tile that points outside the heap).
    #[error("frame `{path}`: corrupt data: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
    /// No HDU holds an image.
    #[error(
        "frame `{path}`: no image found (the primary HDU is empty and no image extension follows)"
    )]
    NoImage {
        /// The file.
        path: PathBuf,
    },
    /// The image has a shape or type this tool does not handle.
    #[error("frame `{path}`: {reason} is not supported")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported, e.g. "a 1-dimensional image of 5 pixels".
        reason: String,
    },
    /// The image is a cube of several planes (e.g. an RGB result) where a 2-D frame is needed.
    /// [`read_cube`](super::read_cube) reads such files.
    #[error(
        "frame `{path}`: cube with {planes} planes is not supported as a frame: frames must be 2-D \
         images (a 3-plane cube is an RGB result such as tlr's colour output; `tlr inspect` measures it)"
    )]
    Cube {
        /// The file.
        path: PathBuf,
        /// `NAXIS3`.
        planes: usize,
    },
    /// Every pixel is NaN, Inf or undefined.
    #[error("frame `{path}`: every pixel is NaN, Inf or undefined (BLANK): no usable data")]
    NoFiniteData {
        /// The file.
        path: PathBuf,
    },
    /// A region read asked for pixels outside the image.
    #[error("frame `{path}`: region rows {rows:?} x cols {cols:?} is empty or outside the {shape_rows}x{shape_cols} image")]
    RegionOutOfBounds {
        /// The file.
        path: PathBuf,
        /// Requested rows.
        rows: Range<usize>,
        /// Requested columns.
        cols: Range<usize>,
        /// Image rows.
        shape_rows: usize,
        /// Image columns.
        shape_cols: usize,
    },
    /// cfitsio reported an error.
    #[error("FITS file `{path}`: cfitsio failed while {action}: {message} (status {status})")]
    Cfitsio {
        /// The file.
        path: PathBuf,
        /// What was being done ("opening", "reading pixels", ...).
        action: &'static str,
        /// cfitsio status code.
        status: i32,
        /// cfitsio's status text and message stack.
        message: String,
    },
    /// An output file could not be written as asked.
    #[error("output `{path}`: {reason}")]
    Output {
        /// The destination file.
        path: PathBuf,
        /// What is wrong (bad card, empty image, ...).
        reason: String,
    },
    /// The operating system refused an output step (create, sync, rename).
    #[error("output `{path}`: {action} failed")]
    OutputIo {
        /// The destination (or temporary) file.
        path: PathBuf,
        /// The step that failed.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl From<crate::atomic::AtomicError> for FitsError {
    fn from(e: crate::atomic::AtomicError) -> Self {
        FitsError::OutputIo {
            path: e.path,
            action: e.action,
            source: e.source,
        }
    }
}
