//! Live (tail-mode) sessions: frames arrive one by one, from a folder that capture software writes
//! into or pushed from memory by an application, and an up-to-date tile-local reconstruction is
//! published as they come.
//!
//! ```text
//!  source/           reader.rs              tiles.rs                                  publisher.rs
//! (Follower or ─▶ one blocking thread: ─Frame─▶ owns the LiveState; per frame, one ─Update─▶ one task: snapshot
//!  pushed frames)  reads each frame once, bounded job per tile on the batch worker   bounded  schedule, FITS + PNG
//!                  global pass (weights,          Pool (cut-out, register, add),              atomically, events
//!                  shift)                         results blended in tile order by
//!                                                 the batch Blend (incremental accumulator)
//! ```
//!
//! Live is the batch stages fed frame by frame: the same worker pool (`batch::workers`), the
//! same ordered blending (`batch::accumulator`), the same events ([`crate::Event`]) and
//! settings resolution ([`crate::settings::worker_count`] rules); what differs is the accumulator, which
//! keeps per-tile state across frames ([`tlr_core::live`]) instead of the frames themselves.
//!
//! - The reader owns the frame source and all FITS reads of frames: it asks the
//!   [`crate::source::follow::Follower`] for the next complete frame only when it can send one, so frames
//!   that arrive faster than they are processed wait on disk (none is dropped; the follower hands
//!   each out once). Pushed frames wait in a bounded channel ([`LiveSession::push`] waits).
//! - The tile stage bootstraps the first `bootstrap_frames` frames (held as u16 camera counts) through
//!   the batch operator, one blocking job per tile on the same bounded pool
//!   ([`tlr_core::live::BootstrapPlan`]), then moves each tile's state into a blocking job per frame
//!   (parallelism over tiles only) and takes it back in tile order, adding each tile's new image to
//!   the frame's mosaic as its turn comes (the ordered accumulator: no per-tile copies are kept, and
//!   results do not depend on the worker count). It writes the checkpoint after the bootstrap, every
//!   `checkpoint_every` frames and at the end; a resumed session first publishes the checkpoint's
//!   state. A hard kill loses at most the frames since the last checkpoint, which the next session
//!   processes again ([`tlr_core::live::LiveState::save`] is crash-safe).
//! - A checkpoint records its [`tlr_core::live::CheckpointSource`]: the followed folder (canonical),
//!   the configuration digest and registration mode, and each frame file's identity (exact name,
//!   size, time, header hash). A session resumes only a checkpoint of its own folder and settings
//!   whose frames have not changed; otherwise it does not start ([`StageError::CheckpointRefused`]).
//!   The reader skips a frame whose identity it has seen under another name (renamed or copied), in
//!   this session or a checkpointed one. [`OutputLock`] keeps a second session off the same output.
//! - The publisher owns the snapshot schedule and writes FITS + PNG atomically; the latest snapshot is
//!   also readable in memory ([`LiveSession::snapshot`]). Latency is measured from the moment a frame
//!   was handed out (complete on disk, or pushed) to the publication of the first snapshot that
//!   includes it.
//! - Shutdown: the reader stops on the cancellation token, on `until_idle`, or when the push side is
//!   closed; the other stages drain and stop when their input closes; the final snapshot and the
//!   checkpoint are written then (a stop is not a failure in tail mode).
//!
//! - Bayer frames (`colour.rs`): the reader holds the first `bootstrap_frames` frames until the
//!   route is decided by the batch run's rule (or takes it from the checkpoint), then sends each frame
//!   as its planes (the batch stores demosaic or split it) with their luminance measured; the tile
//!   stage stacks the planes with the luminance's shifts and weights and blends them with the same
//!   `Blend` (the batch accumulator's); the publisher writes RGB ([`crate::ColourResult::rgb`]).
//!   A checkpoint of another colour mode than its frames is refused.
//!
//! What it does not: print (events go to the caller's sink), parse the command line (`tlr watch`),
//! keep old frames (only per-tile accumulators; memory does not grow with the number of frames,
//! apart from the list of used frame names).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::Array2;
use tlr_core::operator::OperatorParams;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::source::follow::{FollowOptions, Follower};
use tlr_core::config::Config;
use tlr_core::live::{
    self as core_live, CheckpointSource, FrameKey, LiveError, LiveOptions, LiveState, RawName,
};

use crate::error::{Stage, StageError};
use crate::events::{Event, EventSink};
use crate::memory::{peak_rss_bytes, rss_bytes};
use crate::report::LiveSummary;
use crate::settings::{operator_params, Registration};

mod colour;
mod lock;
mod publisher;
mod reader;
mod tiles;

use crate::source::feed::{FedFrame, FrameFeed, PushedFrames};
use lock::remove_stale_temporaries;
pub use lock::{checkpoint_dir_for, lock_path_for, OutputLock};
use publisher::publish;
pub use publisher::write_snapshot;
use reader::{read_frames, Feed, FrameMsg, ReaderColour};
use tiles::{run_tiles, Update};

/// When snapshots are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// After every N used frames.
    Frames(NonZeroUsize),
    /// At most every this long (when a new frame was used since the last one).
    Every(Duration),
}

/// Settings of a live session.
#[derive(Clone)]
pub struct LiveSettings {
    /// The reconstruction configuration.
    pub config: Config,
    /// Tile-local (default) or the global-registration baseline.
    pub registration: Registration,
    /// Snapshot schedule (default: every frame).
    pub schedule: Schedule,
    /// Snapshot path: FITS, TIFF or PNG as its extension says (the preview goes next to it,
    /// [`crate::output::preview_path`]); `None` = in memory only.
    pub output: Option<PathBuf>,
    /// Samples and scaling of the snapshot file (default: float32 FITS, 16-bit TIFF and PNG).
    pub export: crate::output::ExportOptions,
    /// Checkpoint folder: loaded at start when present, written every `checkpoint_every` frames and
    /// at the end. `None` = no checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// Frames between checkpoints (default 10).
    pub checkpoint_every: NonZeroUsize,
    /// Capacity of each channel between stages (default 2).
    pub channel_capacity: NonZeroUsize,
    /// Bootstrap frames (default: `registration.local_tiles.min_valid_frames`).
    pub bootstrap_frames: Option<usize>,
    /// Stop after this long without a new frame (folder sessions; `None` = until cancelled).
    pub until_idle: Option<Duration>,
}

impl LiveSettings {
    /// Settings for `config` with the defaults above.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            registration: Registration::TileLocal,
            schedule: Schedule::Frames(NonZeroUsize::MIN),
            output: None,
            export: crate::output::ExportOptions::default(),
            checkpoint: None,
            checkpoint_every: NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN),
            channel_capacity: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            bootstrap_frames: None,
            until_idle: None,
        }
    }

    /// Tile jobs in flight (parallelism over tiles): [`crate::settings::worker_count`] of the
    /// configuration, as in a batch run.
    pub fn parallel_tiles(&self) -> NonZeroUsize {
        crate::settings::worker_count(&self.config)
    }

    /// The folder and settings a checkpoint of this session records and a resumed checkpoint must
    /// match (the frame files are added as they are consumed).
    fn source(&self, folder: Option<&Path>) -> Result<CheckpointSource, StageError> {
        let folder = match folder {
            Some(dir) => Some(RawName::new(
                std::fs::canonicalize(dir)
                    .map_err(|source| StageError::Folder {
                        dir: dir.to_path_buf(),
                        source,
                    })?
                    .as_os_str(),
            )),
            None => None,
        };
        let registration = serde_json::to_value(self.registration)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(CheckpointSource {
            folder,
            config_digest: self.config.digest(),
            config: serde_json::to_value(&self.config).unwrap_or_default(),
            registration,
            frames: Vec::new(),
        })
    }

    fn live_options(&self) -> LiveOptions {
        let params = OperatorParams {
            // Live tiles keep no aligned frames to compare weighted and unweighted stacks after the
            // bootstrap: the unweighted geometry is a batch feature, and the bootstrap stays as before.
            unweighted_geometry: false,
            ..operator_params(&self.config, self.registration)
        };
        let mut options = LiveOptions::from_config(&self.config, params);
        if let Some(n) = self.bootstrap_frames {
            options.bootstrap_frames = n.max(1);
        }
        options
    }
}

/// A published snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The reconstruction, `(rows, cols)`; for a Bayer session its luminance (the mean of the planes;
    /// in cell space, `(H/2, W/2)`, for well-sampled frames).
    pub image: Arc<Array2<f32>>,
    /// Frames in it.
    pub frames_used: usize,
    /// Bayer sessions: the RGB image `(3, H, W)` (the even part of the frames' size), as a batch run's
    /// [`crate::ColourResult::rgb`]; `None` for mono.
    pub rgb: Option<Arc<ndarray::Array3<f32>>>,
}

/// A running live session. Create it inside a tokio runtime.
pub struct LiveSession {
    push_tx: Option<mpsc::Sender<FedFrame>>,
    snapshots: watch::Receiver<Option<Snapshot>>,
    cancel: CancellationToken,
    handle: JoinHandle<Result<LiveSummary, StageError>>,
}

impl LiveSession {
    /// Starts a session fed by [`LiveSession::push`].
    ///
    /// # Errors
    /// An unreadable checkpoint.
    pub fn start_memory(settings: LiveSettings, events: EventSink) -> Result<Self, StageError> {
        let (tx, rx) = mpsc::channel(settings.channel_capacity.get());
        let mut session = Self::start_feed(Box::new(PushedFrames(rx)), settings, events)?;
        session.push_tx = Some(tx);
        Ok(session)
    }

    /// Starts a session on an application's own frame source (its capture loop): the session awaits
    /// [`FrameFeed::next_frame`] whenever it can take a frame and finishes when the feed ends.
    ///
    /// # Errors
    /// An unreadable checkpoint.
    pub fn start_feed(
        feed: Box<dyn FrameFeed>,
        settings: LiveSettings,
        events: EventSink,
    ) -> Result<Self, StageError> {
        let runtime = tokio::runtime::Handle::current();
        Self::start(Feed::App { feed, runtime }, settings, events)
    }

    /// Starts a session following `dir` (frames present first, then new ones).
    ///
    /// # Errors
    /// The folder cannot be followed, or an unreadable checkpoint.
    pub fn start_folder(
        dir: &Path,
        mut follow: FollowOptions,
        settings: LiveSettings,
        events: EventSink,
    ) -> Result<Self, StageError> {
        follow.exclude.extend(settings.output.iter().cloned());
        if let Some(out) = &settings.output {
            follow.exclude.push(crate::output::preview_path(out));
        }
        let follower = Follower::new(dir, follow)?;
        Self::start(Feed::Folder(Box::new(follower)), settings, events)
    }

    fn start(
        mut feed: Feed,
        settings: LiveSettings,
        events: EventSink,
    ) -> Result<Self, StageError> {
        let started = Instant::now();
        let options = settings.live_options();
        if let Some(out) = &settings.output {
            remove_stale_temporaries(out);
            remove_stale_temporaries(&crate::output::preview_path(out));
        }
        let folder = match &feed {
            Feed::Folder(f) => Some(f.dir().to_path_buf()),
            Feed::App { .. } => None,
        };
        let source = settings.source(folder.as_deref())?;
        // Frames already consumed (by a checkpointed session or this one), by identity: a renamed
        // frame is not used twice.
        let mut known: HashMap<FrameKey, String> = HashMap::new();
        // Resume from the checkpoint when there is one and it is this session's.
        let mut resumed: Option<(LiveState, Option<Array2<f32>>)> = None;
        if let Some(dir) = &settings.checkpoint {
            if dir.join(core_live::CHECKPOINT_JSON).exists() {
                let (mut state, reference) = resume(dir, &source, folder.as_deref())?;
                events(&Event::Resumed {
                    checkpoint: dir.clone(),
                    frames_used: state.frames_used().len(),
                    frames_rejected: state.frames_rejected().len(),
                });
                let frames = std::mem::take(&mut state.source_mut().frames);
                if let Feed::Folder(f) = &mut feed {
                    f.mark_seen(frames.iter().map(|f| PathBuf::from(f.name.to_os_string())));
                }
                known.extend(frames.iter().map(|f| (f.key(), f.name.to_string())));
                // The settings match (checked); the runtime ones are this session's.
                *state.source_mut() = CheckpointSource {
                    frames,
                    ..source.clone()
                };
                resumed = Some((state, reference));
            }
        }
        let mode = settings.config.data.color_mode();
        let configured = match mode {
            tlr_core::bayer::ColorMode::Bayer(p) => Some(p),
            _ => None,
        };
        if matches!(feed, Feed::App { .. }) && mode == tlr_core::bayer::ColorMode::Osc {
            return Err(StageError::input(
                Stage::Reader,
                "data.color_mode is osc but frames from memory carry no BAYERPAT: set \
                 data.bayer_pattern",
            ));
        }
        let mut session = crate::source::SessionColour::new(mode);
        if let (Some((state, _)), Some(dir)) = (&resumed, &settings.checkpoint) {
            let checkpoint = state.colour().map(|c| c.pattern);
            // The frames' mode: the configuration's for frames without headers, else the first
            // frame of the checkpoint still in the folder.
            let frames = match (&feed, folder.as_deref()) {
                (Feed::App { .. }, _) => Some((configured, "the configuration".to_string())),
                (Feed::Folder(_), Some(dir)) => state.source().frames.iter().find_map(|f| {
                    let path = dir.join(f.name.to_os_string());
                    let header = tlr_core::fits::read_header(&path).ok()?;
                    let pattern = session.clone().admit(&header).ok()?;
                    Some((pattern, format!("`{}`", path.display())))
                }),
                (Feed::Folder(_), None) => None,
            };
            if let Some((pattern, from)) = frames.filter(|(p, _)| *p != checkpoint) {
                return Err(StageError::CheckpointRefused {
                    checkpoint: dir.clone(),
                    reason: colour_mismatch(state.colour(), pattern, &from),
                });
            }
            let first = state.source().frames.first().map_or_else(
                || PathBuf::from("the checkpoint"),
                |f| PathBuf::from(f.name.to_os_string()),
            );
            session = session.resumed(checkpoint, first);
        }
        let colour = ReaderColour {
            session,
            configured,
            colour: resumed.as_ref().and_then(|(state, _)| state.colour()),
            bootstrap_frames: options.bootstrap_frames,
        };
        let (state, reference) = match resumed {
            Some((s, r)) => (Some(s), r),
            None => (None, None),
        };
        let cap = settings.channel_capacity.get();
        let (frame_tx, frame_rx) = mpsc::channel::<FrameMsg>(cap);
        let (update_tx, update_rx) = mpsc::channel::<Update>(cap);
        let (snap_tx, snap_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let skipped = Arc::new(std::sync::Mutex::new(Vec::new()));

        let reader = {
            let events = Arc::clone(&events);
            let cancel = cancel.clone();
            let until_idle = settings.until_idle;
            let skipped = Arc::clone(&skipped);
            let calibrator = crate::source::FrameCalibrator::new(
                &settings.config.calibration,
                settings
                    .output
                    .as_deref()
                    .map(crate::source::master_cache_for),
            );
            // The reader blocks on the follower and on cfitsio: a blocking thread of its own.
            tokio::task::spawn_blocking(move || {
                read_frames(
                    feed, reference, known, frame_tx, events, cancel, until_idle, skipped,
                    calibrator, colour,
                )
            })
        };
        let tiles = tokio::spawn(run_tiles(
            state,
            source,
            options,
            settings.clone(),
            frame_rx,
            update_tx,
            Arc::clone(&events),
        ));
        let publisher = tokio::spawn(publish(
            settings.clone(),
            update_rx,
            snap_tx,
            Arc::clone(&events),
        ));
        let handle = tokio::spawn(async move {
            let seen = reader.await.map_err(|source| StageError::Join {
                stage: Stage::Reader,
                source,
            })?;
            let tiles = tiles.await.map_err(|source| StageError::Join {
                stage: Stage::Tiles,
                source,
            })?;
            let published = publisher.await.map_err(|source| StageError::Join {
                stage: Stage::Publisher,
                source,
            })?;
            let seen = seen?;
            let tiles = tiles?;
            let published = published?;
            let summary = LiveSummary {
                frames_seen: seen,
                frames_used: tiles.used,
                frames_rejected: tiles.rejected,
                files_skipped: skipped.lock().map(|s| s.clone()).unwrap_or_default(),
                snapshots: published.snapshots,
                max_latency_s: published.max_latency_s,
                mean_latency_s: published.mean_latency_s,
                frames_per_s: if tiles.busy_s > 0.0 {
                    tiles.processed as f64 / tiles.busy_s
                } else {
                    0.0
                },
                elapsed_s: started.elapsed().as_secs_f64(),
                peak_rss_mib: peak_rss_bytes().map(|b| b >> 20),
                rss_mib: rss_bytes().map(|b| b >> 20),
            };
            events(&Event::SessionFinished {
                summary: summary.clone(),
            });
            Ok(summary)
        });
        Ok(Self {
            push_tx: None,
            snapshots: snap_rx,
            cancel,
            handle,
        })
    }

    /// Pushes a frame (in time order); waits while the session is busy (bounded queue).
    ///
    /// # Errors
    /// When the session was not started with [`LiveSession::start_memory`] or has stopped.
    pub async fn push(&self, image: Array2<f32>) -> Result<(), StageError> {
        let tx = self
            .push_tx
            .as_ref()
            .ok_or_else(|| StageError::input(Stage::Reader, "this session follows a folder"))?;
        tx.send(FedFrame::new(image))
            .await
            .map_err(|_| StageError::input(Stage::Reader, "the live session has stopped"))
    }

    /// The latest published snapshot, if any.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// The published snapshots as a [`Stream`](futures_util::Stream): the latest one at once (if any),
    /// then each new one. A consumer slower than the session sees the latest snapshot, not every one
    /// (snapshots replace each other). The stream ends when the session has ended.
    pub fn snapshots(&self) -> impl futures_util::Stream<Item = Snapshot> + Send + 'static {
        use futures_util::StreamExt;
        tokio_stream::wrappers::WatchStream::new(self.snapshots.clone())
            .filter_map(std::future::ready)
    }

    /// A receiver of published snapshots (stays readable after the session ended).
    pub fn subscribe(&self) -> watch::Receiver<Option<Snapshot>> {
        self.snapshots.clone()
    }

    /// Waits until a snapshot with at least `frames` frames is published (or the session ends).
    pub async fn wait_for_frames(&mut self, frames: usize) -> Option<Snapshot> {
        let found = self
            .snapshots
            .wait_for(|s| s.as_ref().is_some_and(|s| s.frames_used >= frames))
            .await
            .map(|s| s.clone());
        match found {
            Ok(s) => s,
            Err(_) => self.snapshot(),
        }
    }

    /// A token that stops the session when cancelled (like Ctrl-C): the reader stops, the rest drains,
    /// the final snapshot and checkpoint are written.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Ends the input and waits for the final snapshot and checkpoint: a pushed session takes the frames
    /// already pushed and then stops; a folder session and a [`FrameFeed`] session stop reading at once
    /// (frames the feed has not handed over yet are not used; to use every frame of a feed, let it end
    /// and call [`LiveSession::wait`]).
    ///
    /// # Errors
    /// The first stage error.
    pub async fn finish(mut self) -> Result<LiveSummary, StageError> {
        // Dropping the sender closes the push channel: the reader's signal to stop. Folder and feed
        // sessions have none and are stopped through the token.
        if self.push_tx.take().is_none() {
            self.cancel.cancel();
        }
        self.wait().await
    }

    /// Waits for the session to end by itself (cancellation or `until_idle`).
    ///
    /// # Errors
    /// The first stage error.
    pub async fn wait(self) -> Result<LiveSummary, StageError> {
        self.handle.await.map_err(|source| StageError::Join {
            stage: Stage::Live,
            source,
        })?
    }
}

/// Runs a live session on `dir` on a runtime of its own, for callers without one: follows the folder
/// (frames present first, then new ones) until `cancel` is cancelled or, with
/// [`LiveSettings::until_idle`], until no new frame came for that long; then writes the final snapshot
/// and checkpoint and returns the summary. Blocks until then.
///
/// ```no_run
/// use std::time::Duration;
/// use tlr::live::{run_blocking, LiveSettings};
///
/// # fn main() -> Result<(), tlr::StageError> {
/// let mut settings = LiveSettings::new(tlr::core::config::Config::default());
/// settings.output = Some("live.fits".into());
/// settings.until_idle = Some(Duration::from_secs(600)); // the night is over
/// let summary = run_blocking(
///     std::path::Path::new("/data/tonight"),
///     Default::default(),
///     settings,
///     tlr::events::no_events(),
///     tlr::CancellationToken::new(),
/// )?;
/// println!("{} frames used", summary.frames_used.len());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// As [`LiveSession::start_folder`] and [`LiveSession::wait`]; also when the runtime cannot be built.
pub fn run_blocking(
    dir: &Path,
    follow: FollowOptions,
    settings: LiveSettings,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<LiveSummary, StageError> {
    let runtime = crate::batch::build_runtime(settings.parallel_tiles().get())
        .map_err(StageError::Runtime)?;
    runtime.block_on(async {
        let session = LiveSession::start_folder(dir, follow, settings, events)?;
        let stop = session.cancel_token();
        // The caller's token stops the session like Ctrl-C: final snapshot and checkpoint are written.
        let link = tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        });
        let summary = session.wait().await;
        link.abort();
        summary
    })
}

/// Why a checkpoint of `checkpoint`'s colour (`None`: mono) cannot continue with frames of `frames`'
/// pattern (`None`: mono), which `from` decided.
fn colour_mismatch(
    checkpoint: Option<tlr_core::live::LiveColour>,
    frames: Option<tlr_core::bayer::CfaPattern>,
    from: &str,
) -> String {
    let frames_are = frames.map_or_else(|| "mono".to_string(), |p| format!("Bayer {p}"));
    match checkpoint {
        None => format!(
            "it holds a mono reconstruction, but the frames are {frames_are} (by {from}); a \
             checkpoint of a version of tlr that stacked Bayer frames as raw mosaics cannot be \
             continued in colour"
        ),
        Some(c) => format!(
            "it holds a colour reconstruction of Bayer {} frames ({}), but the frames are \
             {frames_are} (by {from})",
            c.pattern,
            c.route.name()
        ),
    }
}

/// Loads the checkpoint in `dir` and checks that this session may continue it: the same folder,
/// configuration and registration mode, the same checkpoint format, and no frame it used changed.
///
/// # Errors
/// [`StageError::CheckpointRefused`] saying why, or an unreadable checkpoint.
fn resume(
    dir: &Path,
    current: &CheckpointSource,
    folder: Option<&Path>,
) -> Result<(LiveState, Option<Array2<f32>>), StageError> {
    let refused = |reason: String| StageError::CheckpointRefused {
        checkpoint: dir.to_path_buf(),
        reason,
    };
    let (state, reference) = LiveState::load(dir).map_err(|e| match e {
        LiveError::CheckpointVersion { found, .. } => refused(format!(
            "it has format {found}, this version of tlr reads format {} (since format 4 a \
             session stacks in its bootstrap frames' mean geometry, which older checkpoints do \
             not record)",
            core_live::CHECKPOINT_VERSION
        )),
        other => StageError::live(Stage::Checkpoint, other),
    })?;
    let refusal = state
        .source()
        .mismatch(current)
        .or_else(|| folder.and_then(|f| state.source().changed_frame(f)));
    match refusal {
        Some(reason) => Err(refused(reason)),
        None => Ok((state, reference)),
    }
}
