//! Errors of the staged pipeline. Every error names the stage it came from and, through the core
//! error it wraps, the file, tile or key and the reason.
//!
//! Convention (the Rust API guidelines, C-GOOD-ERR): an error that wraps another exposes it as
//! [`std::error::Error::source`] and does not repeat it in its own message, so a printer that walks the
//! chain (anyhow's `{:#}`, [`report`]) shows every cause exactly once. Where an error must become a
//! string (an event, a warning), [`report`] keeps the whole chain.
//!
//! What it does not: print anything; the binary turns these into messages and exit codes.

use std::fmt;
use std::path::PathBuf;

/// The stage an error came from, as it appears at the start of the message (`reader: …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Listing and checking the input folder.
    Scan,
    /// Reading frames (global pass and tile phase; the live reader).
    Reader,
    /// Cutting the image into tiles.
    Tiles,
    /// The tile-worker pool.
    Workers,
    /// The ordered accumulator.
    Accumulator,
    /// Writing results.
    Output,
    /// Loading or saving a live checkpoint.
    Checkpoint,
    /// The live publisher.
    Publisher,
    /// A live session as a whole.
    Live,
    /// Starting the pipeline (runtime).
    Pipeline,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Scan => "scan",
            Stage::Reader => "reader",
            Stage::Tiles => "tiles",
            Stage::Workers => "workers",
            Stage::Accumulator => "accumulator",
            Stage::Output => "output",
            Stage::Checkpoint => "checkpoint",
            Stage::Publisher => "publisher",
            Stage::Live => "live",
            Stage::Pipeline => "pipeline",
        })
    }
}

/// An error that stopped a pipeline run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// A stage hit a problem with the input that no lower-level error describes (frames of different
    /// sizes, no usable frame, a frame refused under `--strict`).
    #[error("{stage}: {message}")]
    Input {
        /// The stage that failed.
        stage: Stage,
        /// What went wrong, for a user.
        message: String,
    },
    /// The tile grid could not be made for this image and tile size.
    #[error("tiles")]
    Grid(#[from] tlr_core::tile::TileError),
    /// A Bayer (colour) operation failed: an unknown pattern, frames too small.
    #[error("{stage}")]
    Bayer {
        /// The stage that failed.
        stage: Stage,
        /// The underlying error.
        #[source]
        source: tlr_core::bayer::BayerError,
    },
    /// The live state failed: the bootstrap, or loading or saving a checkpoint.
    #[error("{stage}")]
    Live {
        /// The stage that failed (`tiles` for the bootstrap, `checkpoint`).
        stage: Stage,
        /// The underlying error, which names the file or the reason.
        #[source]
        source: tlr_core::live::LiveError,
    },
    /// The followed folder cannot be watched or resolved.
    #[error("reader: cannot follow the folder")]
    Follow(#[from] crate::source::follow::FollowError),
    /// The folder of a live session cannot be resolved.
    #[error("reader: cannot resolve the folder `{}`", dir.display())]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not be started.
    #[error("pipeline: cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    /// A FITS read or write failed.
    #[error("{stage}")]
    Fits {
        /// The stage that failed.
        stage: Stage,
        /// The underlying error, which names the file.
        #[source]
        source: tlr_core::fits::FitsError,
    },
    /// Calibration (masters, bad pixels) could not be prepared; the error names the files.
    #[error("calibration")]
    Calibration(#[from] tlr_core::calibrate::CalibrationError),
    /// A SER video file cannot be opened or read.
    #[error("{stage}")]
    Ser {
        /// The stage that failed.
        stage: Stage,
        /// The underlying error, which names the file (and the frame).
        #[source]
        source: tlr_core::ser::SerError,
    },
    /// Scanning the input folder failed.
    #[error("scan")]
    Scan(#[from] tlr_core::scan::ScanError),
    /// The configuration is invalid.
    #[error("config")]
    Config(#[from] tlr_core::config::ConfigError),
    /// Too few usable frames for the run. Since a session shorter than
    /// `registration.local_tiles.min_valid_frames` runs with all its frames (and a warning event),
    /// the pipeline no longer returns it; kept so that embedders' matches stay valid.
    #[error("config: {0}")]
    TooFewFrames(String),
    /// A blocking task panicked or was aborted.
    #[error("{stage}: task failed")]
    Join {
        /// The stage whose task failed.
        stage: Stage,
        /// The join error (a panic shows up here instead of a hang).
        #[source]
        source: tokio::task::JoinError,
    },
    /// A job on a thread of a stage's own pool panicked (the pool caught it and goes on; the run stops).
    #[error("{stage}: {what} panicked: {message}")]
    Panicked {
        /// The stage whose job panicked.
        stage: Stage,
        /// What the job was doing.
        what: &'static str,
        /// The panic's message.
        message: String,
    },
    /// Too few tiles could be reconstructed (methodology v4: `v4.min_valid_tile_fraction`).
    #[error(
        "accumulator: only {valid} of {total} tiles could be reconstructed ({fraction:.0} %), below \
         v4.min_valid_tile_fraction = {min_fraction}; most common reason: {reason}"
    )]
    TooFewValidTiles {
        /// Valid tiles.
        valid: usize,
        /// All tiles.
        total: usize,
        /// Percentage of valid tiles.
        fraction: f64,
        /// The configured minimum fraction.
        min_fraction: f64,
        /// The most frequent invalid reason.
        reason: String,
    },
    /// The process exceeded `v4.memory_limits.rss_abort_mb`.
    #[error(
        "reader: memory use {rss_mb} MB exceeds v4.memory_limits.rss_abort_mb = {limit_mb} MB; \
         lower v4.parallel_tiles or tlr's reader block size"
    )]
    Memory {
        /// Resident set size in MB when the limit was hit.
        rss_mb: u64,
        /// The configured limit.
        limit_mb: u64,
    },
    /// The run was cancelled (Ctrl-C or the caller's token) before it finished.
    #[error("cancelled: the run was stopped before it finished; no output was written")]
    Cancelled,
    /// An output path would replace an input frame, a file the scan matched, another output, a folder
    /// or a special file (device, FIFO, socket); nothing was read or written.
    #[error("output `{}`: {reason}", path.display())]
    UnsafeOutput {
        /// The output path as given.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// A checkpoint that must not be continued: made from another folder, with other settings or an
    /// older format, or a frame it used has changed. Nothing was started.
    #[error(
        "checkpoint `{}` cannot be continued: {reason}; start over with `tlr watch --fresh` \
         (or write to another output)",
        checkpoint.display()
    )]
    CheckpointRefused {
        /// The checkpoint folder.
        checkpoint: PathBuf,
        /// Why, naming the folder, setting or frame.
        reason: String,
    },
    /// Writing an output file failed.
    #[error("output: {path}: {message}")]
    Output {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl StageError {
    /// Wraps a Bayer error from `stage`.
    pub fn bayer(stage: Stage, source: tlr_core::bayer::BayerError) -> Self {
        StageError::Bayer { stage, source }
    }

    /// Wraps a live-state error from `stage`.
    pub fn live(stage: Stage, source: tlr_core::live::LiveError) -> Self {
        StageError::Live { stage, source }
    }

    /// Wraps a FITS error from `stage`.
    pub fn fits(stage: Stage, source: tlr_core::fits::FitsError) -> Self {
        StageError::Fits { stage, source }
    }

    /// Wraps a SER error from `stage`.
    pub fn ser(stage: Stage, source: tlr_core::ser::SerError) -> Self {
        StageError::Ser { stage, source }
    }

    /// An input problem in `stage`.
    pub fn input(stage: Stage, message: impl Into<String>) -> Self {
        StageError::Input {
            stage,
            message: message.into(),
        }
    }
}

pub use tlr_core::report;

/// The text of a panic's payload (a `&str` or `String` message), or a placeholder for other payloads.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
