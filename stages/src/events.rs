//! Progress events: how the pipeline tells its caller what it is doing, without printing anything.
//!
//! The library calls an [`EventSink`] (a plain callback) from its tasks; the binary turns events into
//! indicatif bars or JSON lines, an embedding application into whatever it likes. An application that
//! prefers to `.next().await` takes the sink and [`EventStream`] of [`channel`].
//! What it does not: block or decide how progress is shown.

use serde::Serialize;

use crate::report::{lossy_opt_path, lossy_path, LiveSummary, RunSummary};
use std::path::PathBuf;
use std::sync::Arc;

/// Version of the JSON event schema: the `"schema"` field of every JSON line ([`Event::to_json_line`]; the
/// CLI's `--json`). It goes up when a field changes meaning or goes away; new events and new fields
/// do not change it, so readers should ignore what they do not know. The events and their fields are
/// listed in the README ("JSON events").
pub const EVENT_SCHEMA: u32 = 1;

/// A callback that receives every [`Event`]. It must return quickly: it runs on pipeline tasks.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

impl Event {
    /// The event as one line of JSON with the schema version first:
    /// `{"schema":1,"event":"tile_done","done":3,"total":40,"valid":true}`.
    ///
    /// # Errors
    /// When serde cannot write the event (not expected: paths are written lossily).
    pub fn to_json_line(&self) -> serde_json::Result<String> {
        serde_json::to_string(self).map(|json| with_schema(&json))
    }

    /// The [`Event::Failed`] of `error`: its message, and each cause once.
    pub fn failed(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut next = error.source();
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        Event::Failed {
            message: error.to_string(),
            causes,
        }
    }
}

/// `json` (the text of one JSON object) with `"schema": EVENT_SCHEMA` as its first field; other text
/// is returned as it is.
pub fn with_schema(json: &str) -> String {
    match json.strip_prefix('{') {
        Some("}") => format!("{{\"schema\":{EVENT_SCHEMA}}}"),
        Some(rest) => format!("{{\"schema\":{EVENT_SCHEMA},{rest}"),
        None => json.to_string(),
    }
}

/// The events of a run or session as a [`Stream`](futures_util::Stream), from [`channel`].
pub type EventStream = tokio_stream::wrappers::UnboundedReceiverStream<Event>;

/// A sink that forwards every event into a stream, for `while let Some(e) = stream.next().await`.
///
/// The channel is unbounded on purpose: a sink runs on pipeline tasks and must never wait for the
/// application, and a run sends a bounded number of small events (a few per frame and per tile). The
/// stream ends when the run or session has ended and dropped its sink.
///
/// ```
/// use futures_util::StreamExt;
///
/// # async fn demo(frames: Vec<ndarray::Array2<f32>>) -> Result<(), tlr::StageError> {
/// let (events, mut stream) = tlr::events::channel();
/// let input = tlr::Input::Memory(tlr::MemoryFrames::new(frames)?);
/// let run = tokio::spawn(tlr::run(input, tlr::PipelineOptions::default(), events, Default::default()));
/// while let Some(event) = stream.next().await {
///     if let tlr::Event::TileDone { done, total, .. } = event {
///         println!("{done}/{total} tiles");
///     }
/// }
/// let output = run.await.expect("the run task")?;
/// # Ok(())
/// # }
/// ```
pub fn channel() -> (EventSink, EventStream) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink: EventSink = Arc::new(move |event: &Event| {
        // A closed stream means the application stopped listening; the run goes on.
        let _ = tx.send(event.clone());
    });
    (sink, EventStream::new(rx))
}

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
    // Live sessions ([`crate::live::LiveSession`]).
    /// A checkpoint was loaded: the session continues from it.
    Resumed {
        /// The checkpoint folder.
        #[serde(serialize_with = "lossy_path")]
        checkpoint: PathBuf,
        /// Frames already used.
        frames_used: usize,
        /// Frames already rejected.
        frames_rejected: usize,
    },
    /// A new frame was read (bootstrap included).
    FrameSeen {
        /// File name or `memory:<n>`.
        name: String,
        /// Frames seen by this session so far.
        seen: usize,
    },
    /// The bootstrap ran: the grid is fixed.
    Bootstrapped {
        /// Bootstrap frames.
        frames: usize,
        /// Tile size, px.
        tile_size_px: usize,
        /// Tiles.
        tiles: usize,
    },
    /// A frame was added (used by at least one tile).
    FrameUsed {
        /// The frame.
        name: String,
        /// Tiles that used it.
        tiles_used: usize,
        /// Tiles that rejected it.
        tiles_rejected: usize,
        /// Pixels rejected as outliers.
        pixels_rejected: usize,
        /// The most common tile rejection reason, if any.
        reason: Option<String>,
    },
    /// A frame or file was not used, and why.
    FrameRejected {
        /// The frame or file.
        name: String,
        /// Why.
        reason: String,
    },
    /// A snapshot was published.
    Snapshot {
        /// The FITS file (None for in-memory sessions without output).
        #[serde(serialize_with = "lossy_opt_path")]
        path: Option<PathBuf>,
        /// Frames in it.
        frames_used: usize,
        /// Latency of the newest frame in it (handed out -> published), s.
        latency_s: f64,
        /// Largest latency among the frames it newly includes, s.
        max_latency_s: f64,
        /// Resident memory of the process when it was published, MiB.
        resident_mib: Option<u64>,
    },
    /// The checkpoint was written.
    Checkpoint {
        /// The folder.
        #[serde(serialize_with = "lossy_path")]
        dir: PathBuf,
        /// Frames used in it.
        frames_used: usize,
    },
    // Calibration ([`crate::source::calibrate`]), before the frames are read.
    /// A calibration master is ready (one event per master): built from its frames now, reused from
    /// the master cache (its frames unchanged), or read from a master file.
    Master {
        /// `bias`, `dark` (`dark-30s` per exposure when built from a folder), `flat` or `dark-flat`.
        kind: String,
        /// `built`, `reused` or `file`.
        origin: tlr_core::calibrate::MasterOrigin,
        /// Frames it was combined from (0 for a master file).
        frames: usize,
        /// The file written, reused or given; `None` when built without a cache (library runs
        /// without [`crate::PipelineOptions::calibration_cache`]).
        #[serde(serialize_with = "lossy_opt_path")]
        path: Option<PathBuf>,
    },
    /// Calibration found bad pixels in the masters; they are repaired in every frame.
    BadPixels {
        /// Hot pixels (from the dark).
        hot: usize,
        /// Dead or cold pixels (from the flat).
        cold: usize,
    },
    /// Something a user should know that does not stop the run or session.
    Warning {
        /// The message.
        message: String,
    },
    /// The run or session stopped with an error. The library returns errors as values; this event is
    /// for front ends that report everything as events (the CLI with `--json` prints it, with the exit
    /// code, before it exits).
    Failed {
        /// The error's own message.
        message: String,
        /// Its causes, outermost first, each once.
        causes: Vec<String>,
    },
    /// The run finished; the summary follows.
    Finished {
        /// The summary.
        summary: RunSummary,
    },
    /// A live session ended; its summary follows (`"event": "finished"` in JSON, like a run's).
    #[serde(rename = "finished")]
    SessionFinished {
        /// The summary.
        summary: LiveSummary,
    },
}
