//! Progress events: how the pipeline tells its caller what it is doing, without printing anything.
//!
//! The library calls an [`EventSink`] (a plain callback) from its tasks; the binary turns events into
//! indicatif bars or JSON lines, an embedding application into whatever it likes.
//! What it does not: buffer, block or decide how progress is shown.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// A callback that receives every [`Event`]. It must return quickly: it runs on pipeline tasks.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// An event sink that drops everything.
pub fn no_events() -> EventSink {
    Arc::new(|_| {})
}

/// One step of progress, in the order a run produces them.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The input was listed: `frames` usable frames of `rows` x `cols`.
    Scanned {
        /// Usable frames.
        frames: usize,
        /// Files skipped by the scan (each also reported as [`Event::FrameSkipped`]).
        skipped: usize,
        /// Frame height.
        rows: usize,
        /// Frame width.
        cols: usize,
    },
    /// A file or frame was left out, and why.
    FrameSkipped {
        /// The file (or `memory:<index>` for in-memory frames). In JSON, a name that is not UTF-8 has
        /// its invalid bytes replaced by U+FFFD ([`lossy_path`]).
        #[serde(serialize_with = "lossy_path")]
        path: PathBuf,
        /// Why it was left out.
        reason: String,
    },
    /// The global pass measured one frame.
    GlobalFrame {
        /// Frames measured so far.
        done: usize,
        /// Frames to measure.
        total: usize,
    },
    /// The global pass is complete; the tile grid is fixed.
    GlobalDone {
        /// Frames that take part in the reconstruction.
        frames_used: usize,
        /// Median star FWHM over the frames, px.
        median_fwhm_px: f32,
        /// Tile size chosen from the FWHM, px.
        tile_size_px: usize,
        /// Number of tiles.
        tiles: usize,
    },
    /// A tile was reconstructed and applied to the output.
    TileDone {
        /// Tiles applied so far.
        done: usize,
        /// Tiles in the run.
        total: usize,
        /// Whether this tile was valid.
        valid: bool,
    },
    /// Something a user should know that does not stop the run.
    Warning {
        /// The message.
        message: String,
    },
    /// The run finished; the summary follows.
    Finished {
        /// The summary.
        summary: crate::pipeline::RunSummary,
    },
}

/// Serializes a path as a string, replacing bytes that are not UTF-8 with U+FFFD: a frame named
/// `bad\xff.fits` must not make its event (or the tile report) unserializable.
///
/// # Errors
/// Only the serializer's own.
pub fn lossy_path<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}
