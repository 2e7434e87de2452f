//! Calibration of raw frames: master bias, darks, flat and dark-flat from folders of frames or master
//! files, a bad-pixel map, and the per-region correction the frame reader applies to every pixel it
//! reads.
//!
//! - [`masters`]: combining a folder's frames into a master (sigma-clipped mean or median), in row bands
//!   of bounded memory.
//! - [`cache`]: masters written as FITS (with HISTORY provenance) and reused while their input files'
//!   identities (path, size, modification time) are unchanged.
//! - [`matching`]: which dark a light uses (exposure, optionally sensor temperature) and how it is scaled.
//! - [`badpix`]: hot pixels from the master dark, dead and cold pixels from the master flat, repaired from
//!   same-colour neighbours.
//! - [`apply`]: [`Calibration`], loading everything for a run ([`Calibration::prepare`]; what it built
//!   or reused is in [`Calibration::masters`], one [`MasterReport`] each) and correcting a region of a
//!   light ([`Calibration::apply_region`]).
//!
//! The rule for bias and darks: darks are taken as shot (they contain the bias). With a bias, the
//! dark's thermal signal is `dark - bias`, and a light of exposure `t` has `bias + (dark - bias) * t /
//! t_dark` subtracted (exactly the master dark when the exposures match). Without a bias, the dark is
//! subtracted as it is and cannot be scaled (a warning says so when the exposures differ). A flat built
//! from frames has the master dark-flat, else the master bias, subtracted from each frame, and each
//! frame divided by its own median (per CFA colour for Bayer frames) before the combine, so that flats
//! of different brightness combine; a flat given as a master file is used as it is. Either is then
//! normalised to a median of 1 (per CFA colour for Bayer frames).
//!
//! What it does not: read lights (the frame reader does, through [`Calibration::apply_region`]), decide
//! the colour mode of the lights, or correct anything else (no linearity, no cosmic rays).

use std::path::PathBuf;

pub mod apply;
pub mod badpix;
pub mod cache;
pub mod masters;
pub mod matching;

pub use apply::{Calibration, FramePlan, Lights};
pub use badpix::BadPixels;
pub use masters::{build_flat, build_master, combine_values, Combine, FlatFrames};

/// How a run got one of its masters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterOrigin {
    /// Combined from a folder's frames now (and written to the cache, when there is one).
    Built,
    /// Read from the cache: its frames are unchanged since it was built.
    Reused,
    /// A master file given by the user, read as it is.
    File,
}

/// One master of a run, for the user: what it is, where it came from, from how many frames, and the
/// file it was written to or read from.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterReport {
    /// `bias`, `dark` (`dark-30s` per exposure when built from a folder), `flat` or `dark-flat`.
    pub kind: String,
    /// Built, reused from the cache, or a master file.
    pub origin: MasterOrigin,
    /// Frames it was combined from (0 for a master file).
    pub frames: usize,
    /// The file written (built with a cache), read (reused) or given (a master file); `None` when it was
    /// built without a cache.
    pub path: Option<PathBuf>,
}

impl std::fmt::Display for MasterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, n) = (&self.kind, self.frames);
        match (self.origin, &self.path) {
            (MasterOrigin::Built, Some(p)) => {
                write!(
                    f,
                    "master {kind}: built from {n} frames, written to `{}`",
                    p.display()
                )
            }
            (MasterOrigin::Built, None) => write!(f, "master {kind}: built from {n} frames"),
            (MasterOrigin::Reused, p) => write!(
                f,
                "master {kind}: reused `{}` ({n} frames, unchanged)",
                p.as_deref().unwrap_or(std::path::Path::new("")).display()
            ),
            (MasterOrigin::File, p) => write!(
                f,
                "master {kind}: `{}`",
                p.as_deref().unwrap_or(std::path::Path::new("")).display()
            ),
        }
    }
}

/// Errors of calibration. Every variant names the file or folder concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// A folder of calibration frames is missing, unreadable or holds no usable frame.
    #[error("{what} `{path}`: {reason}")]
    Folder {
        /// What the folder is for (e.g. `darks folder`).
        what: String,
        /// The folder.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// No frames where frames were needed.
    #[error("{what} `{path}`: no calibration frame")]
    Empty {
        /// What was empty.
        what: String,
        /// The folder or file.
        path: PathBuf,
    },
    /// Two files that must agree do not (size, binning, Bayer pattern, offsets).
    #[error("`{a}` and `{b}` do not match: {reason}")]
    Mismatch {
        /// One file.
        a: PathBuf,
        /// The other file.
        b: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A master flat with pixels at or below zero.
    #[error("flat `{path}`: {count} pixel(s) are zero or negative after bias/dark-flat subtraction (first at row {row}, column {col}: {value}); a flat must be positive everywhere")]
    FlatNotPositive {
        /// The flat folder or file.
        path: PathBuf,
        /// How many pixels.
        count: usize,
        /// Row of the first one.
        row: usize,
        /// Column of the first one.
        col: usize,
        /// Its value.
        value: f32,
    },
    /// A flat frame whose level (its median after bias/dark-flat subtraction, per CFA colour for
    /// Bayer frames) is zero, negative or not a number.
    #[error("flat frame `{path}`: its level (median after bias/dark-flat subtraction, per colour for Bayer frames) is {level}; a flat must be exposed above the bias")]
    FlatLevel {
        /// The flat frame.
        path: PathBuf,
        /// Its level.
        level: f32,
    },
    /// A setting that cannot work (e.g. `calibration.use_dark` without a folder or master).
    #[error("{0}")]
    Setting(String),
    /// A FITS file could not be read or written.
    #[error(transparent)]
    Fits(#[from] crate::fits::FitsError),
}
