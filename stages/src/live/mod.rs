//! Live (tail-mode) sessions: frames arrive one by one, from a folder that capture software writes
//! into or pushed from memory by an application, and an up-to-date tile-local reconstruction is
//! published as they come.
//!
//! ```text
//!  FrameFeed            Reader                 Tiles                                  Publisher
//! (Follower or  ─▶ one blocking thread:  ─Frame─▶ owns the LiveState; per frame,  ─Update─▶ one task: snapshot
//!  pushed frames)  reads each frame once,  bounded  ≤ parallel_tiles blocking jobs   bounded  schedule (every N frames
//!                  global pass (weights,           (cut-out + register + accumulate          / S s), FITS + PNG
//!                  shift)                          one tile each), blend in tile order       atomically, events
//! ```
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
//! What it does not: print (events go to the caller's sink), parse the command line (`tlr watch`),
//! keep old frames (only per-tile accumulators; memory does not grow with the number of frames,
//! apart from the list of used frame names).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ndarray::Array2;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::source::follow::{FollowEvent, FollowOptions, Follower};
use tlr_core::config::Config;
use tlr_core::fits::{self, OutputMeta, SampleFormat};
use tlr_core::global::{FrameQuality, GlobalPass};
use tlr_core::live::{
    self as core_live, BootstrapFrame, BootstrapPlan, CheckpointSource, CompactImage, FrameFile,
    FrameKey, LiveError, LiveOptions, LiveState, LiveTile, RawName,
};
use tlr_core::mosaic::{psi, Mosaic};
use tlr_core::operator::FrameReport;
use tlr_core::TileBox;

use crate::batch::{operator_params, Registration};
use crate::error::StageError;
use crate::events::{Event, EventSink};
use crate::memory::{peak_rss_bytes, rss_bytes};
use crate::report::LiveSummary;

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
    /// Tile jobs in flight (parallelism over tiles).
    pub parallel_tiles: NonZeroUsize,
    /// Snapshot schedule (default: every frame).
    pub schedule: Schedule,
    /// Snapshot FITS path (a PNG preview goes next to it); `None` = in memory only.
    pub output: Option<PathBuf>,
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
        let workers = config.parallel_tiles(tlr_core::config::physical_cores());
        Self {
            config,
            registration: Registration::TileLocal,
            parallel_tiles: NonZeroUsize::new(workers).unwrap_or(NonZeroUsize::MIN),
            schedule: Schedule::Frames(NonZeroUsize::MIN),
            output: None,
            checkpoint: None,
            checkpoint_every: NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN),
            channel_capacity: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            bootstrap_frames: None,
            until_idle: None,
        }
    }

    /// The folder and settings a checkpoint of this session records and a resumed checkpoint must
    /// match (the frame files are added as they are consumed).
    fn source(&self, folder: Option<&Path>) -> Result<CheckpointSource, StageError> {
        let folder = match folder {
            Some(dir) => Some(RawName::new(
                std::fs::canonicalize(dir)
                    .map_err(|e| {
                        StageError::input(
                            "reader",
                            format!("cannot resolve the folder `{}`: {e}", dir.display()),
                        )
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
        let params = operator_params(&self.config, self.registration);
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
    /// The reconstruction, `(rows, cols)`.
    pub image: Arc<Array2<f32>>,
    /// Frames in it.
    pub frames_used: usize,
}

/// Where frames come from.
enum Feed {
    Folder(Box<Follower>),
    Memory(mpsc::Receiver<Pushed>),
}

struct Pushed {
    image: Array2<f32>,
    arrival: Instant,
}

/// A frame on its way from the reader to the tile stage.
struct FrameMsg {
    name: String,
    /// The frame file's identity (folder sessions), recorded in the checkpoint.
    file: Option<FrameFile>,
    image: Arc<Array2<f32>>,
    quality: FrameQuality,
    /// This frame is the global pass's reference frame.
    is_reference: bool,
    arrival: Instant,
}

/// A frame's outcome on its way to the publisher, with the blended reconstruction.
struct Update {
    used: bool,
    /// Publish at once, whatever the schedule (the state loaded from a checkpoint).
    force: bool,
    frames_used: usize,
    arrival: Instant,
    image: Option<Arc<Array2<f32>>>,
}

/// A running live session. Create it inside a tokio runtime.
pub struct LiveSession {
    push_tx: Option<mpsc::Sender<Pushed>>,
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
        let mut session = Self::start(Feed::Memory(rx), settings, events)?;
        session.push_tx = Some(tx);
        Ok(session)
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
            follow.exclude.push(out.with_extension("png"));
        }
        let follower = Follower::new(dir, follow)
            .map_err(|e| StageError::input("reader", format!("cannot follow the folder: {e}")))?;
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
            remove_stale_temporaries(&out.with_extension("png"));
        }
        let folder = match &feed {
            Feed::Folder(f) => Some(f.dir().to_path_buf()),
            Feed::Memory(_) => None,
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
            // The reader blocks on the follower and on cfitsio: a blocking thread of its own.
            tokio::task::spawn_blocking(move || {
                read_frames(
                    feed, reference, known, frame_tx, events, cancel, until_idle, skipped,
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
                stage: "reader",
                source,
            })?;
            let tiles = tiles.await.map_err(|source| StageError::Join {
                stage: "tiles",
                source,
            })?;
            let published = publisher.await.map_err(|source| StageError::Join {
                stage: "publisher",
                source,
            })?;
            let seen = seen?;
            let (used, rejected, busy_s, processed) = tiles?;
            let (snapshots, max_latency_s, mean_latency_s) = published?;
            let summary = LiveSummary {
                frames_seen: seen,
                frames_used: used,
                frames_rejected: rejected,
                files_skipped: skipped.lock().map(|s| s.clone()).unwrap_or_default(),
                snapshots,
                max_latency_s,
                mean_latency_s,
                frames_per_s: if busy_s > 0.0 {
                    processed as f64 / busy_s
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
            .ok_or_else(|| StageError::input("reader", "this session follows a folder"))?;
        tx.send(Pushed {
            image,
            arrival: Instant::now(),
        })
        .await
        .map_err(|_| StageError::input("reader", "the live session has stopped"))
    }

    /// The latest published snapshot, if any.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.snapshots.borrow().clone()
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

    /// Ends the input (no more pushes; a folder session stops reading) and waits for the final
    /// snapshot and checkpoint.
    ///
    /// # Errors
    /// The first stage error.
    pub async fn finish(mut self) -> Result<LiveSummary, StageError> {
        // Dropping the sender closes the push channel: the reader's signal to stop. A folder session
        // has none and is stopped through the token.
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
            stage: "live",
            source,
        })?
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
            "it has format {found}, this version of tlr reads format {}",
            core_live::CHECKPOINT_VERSION
        )),
        other => StageError::input("checkpoint", tlr_core::report(&other)),
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

/// The reader: the frame source, FITS reads, the global pass. Returns the frames seen.
#[allow(clippy::too_many_arguments)]
fn read_frames(
    mut feed: Feed,
    reference: Option<Array2<f32>>,
    mut known: HashMap<FrameKey, String>,
    frame_tx: mpsc::Sender<FrameMsg>,
    events: EventSink,
    cancel: CancellationToken,
    until_idle: Option<Duration>,
    skipped: Arc<std::sync::Mutex<Vec<(PathBuf, String)>>>,
) -> Result<usize, StageError> {
    let mut pass = GlobalPass::new();
    if let Some(image) = &reference {
        // A resumed session measures shifts against the same reference frame as before.
        let q = pass.add_frame(image.view());
        if !q.shift_ok {
            events(&Event::Warning {
                message: "the checkpoint's global reference frame has too few stars; \
                          the next good frame becomes the reference"
                    .to_string(),
            });
        }
    }
    let mut seen = 0usize;
    let mut pushed = 0usize;
    let mut last_activity = Instant::now();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let next: Option<(String, Array2<f32>, Instant, Option<FrameFile>)> = match &mut feed {
            Feed::Folder(follower) => match follower.next(Duration::from_millis(200)) {
                Ok(Some(FollowEvent::Ready(header))) => {
                    let arrival = Instant::now();
                    let name = header
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_else(|| header.path.display().to_string());
                    last_activity = Instant::now();
                    let file = match FrameFile::of(&header.path) {
                        Ok(file) => file,
                        Err(e) => {
                            events(&Event::FrameRejected {
                                name,
                                reason: format!(
                                    "cannot read `{}`: {}",
                                    header.path.display(),
                                    tlr_core::report(&e)
                                ),
                            });
                            continue;
                        }
                    };
                    // The follower hands out each name once; a renamed frame comes under a new one.
                    if let Some(first) = known.get(&file.key()) {
                        events(&Event::FrameRejected {
                            name,
                            reason: format!(
                                "same frame as `{first}` (same size, time and header: renamed or \
                                 copied), which was used already"
                            ),
                        });
                        continue;
                    }
                    match fits::read_image(&header.path) {
                        Ok((_, image)) => {
                            known.insert(file.key(), name.clone());
                            Some((name, image, arrival, Some(file)))
                        }
                        Err(e) => {
                            events(&Event::FrameRejected {
                                name,
                                reason: tlr_core::report(&e),
                            });
                            last_activity = Instant::now();
                            continue;
                        }
                    }
                }
                Ok(Some(FollowEvent::Skipped { path, reason })) => {
                    events(&Event::FrameRejected {
                        name: path.display().to_string(),
                        reason: reason.clone(),
                    });
                    if let Ok(mut s) = skipped.lock() {
                        s.push((path, reason));
                    }
                    continue;
                }
                Ok(None) => None,
                Err(e) => {
                    events(&Event::Warning {
                        message: tlr_core::report(&e),
                    });
                    None
                }
            },
            Feed::Memory(rx) => match rx.blocking_recv() {
                Some(p) => {
                    pushed += 1;
                    Some((format!("memory:{pushed}"), p.image, p.arrival, None))
                }
                // Every sender dropped: the application finished pushing.
                None => break,
            },
        };
        let Some((name, image, arrival, file)) = next else {
            if let (Some(idle), Feed::Folder(f)) = (until_idle, &feed) {
                if last_activity.elapsed() >= idle && f.backlog() == 0 {
                    break;
                }
            }
            continue;
        };
        last_activity = Instant::now();
        seen += 1;
        events(&Event::FrameSeen {
            name: name.clone(),
            seen,
        });
        let before = pass.reference_index();
        let quality = pass.add_frame(image.view());
        let is_reference = before.is_none() && pass.reference_index().is_some();
        let msg = FrameMsg {
            name,
            file,
            image: Arc::new(image),
            quality,
            is_reference,
            arrival,
        };
        // The blocking send is the back-pressure: while the tiles are busy, new frames stay on disk.
        if frame_tx.blocking_send(msg).is_err() {
            break;
        }
    }
    // Dropping `frame_tx` closes the channel: the tile stage drains and finishes.
    Ok(seen)
}

type TileOutcome = (LiveTile, (FrameReport, usize), Array2<f32>, f32);

/// The tile stage (incremental state + ordered accumulator): bootstrap, then every frame through all
/// tiles, each tile's new image blended in tile order as it comes back. Returns (used, rejected
/// names, busy seconds, frames processed after bootstrap).
async fn run_tiles(
    mut state: Option<LiveState>,
    source: CheckpointSource,
    options: LiveOptions,
    settings: LiveSettings,
    mut frame_rx: mpsc::Receiver<FrameMsg>,
    update_tx: mpsc::Sender<Update>,
    events: EventSink,
) -> Result<(Vec<String>, Vec<String>, f64, usize), StageError> {
    let mut boot: Vec<BootstrapFrame> = Vec::new();
    let mut boot_arrivals: Vec<Instant> = Vec::new();
    let mut boot_files: Vec<FrameFile> = Vec::new();
    // The global pass's reference frame, kept only until a checkpoint has saved it.
    let mut global_reference: Option<Arc<Array2<f32>>> = None;
    let mut since_checkpoint = 0usize;
    let mut busy = Duration::ZERO;
    let mut processed = 0usize;
    let workers = settings.parallel_tiles.get();
    let sigma = options.params.variance_window_sigma;
    if let Some(st) = state.take() {
        // A resumed session publishes the checkpoint's state at once, so the published result is
        // never older than the checkpoint (a hard kill may have happened between the two).
        let (st, update) = full_update(st, Instant::now(), true).await?;
        state = Some(st);
        if update_tx.send(update).await.is_err() {
            return Ok((Vec::new(), Vec::new(), 0.0, 0));
        }
    }
    while let Some(mut msg) = frame_rx.recv().await {
        if msg.is_reference && settings.checkpoint.is_some() {
            global_reference = Some(Arc::clone(&msg.image));
        }
        let Some(mut st) = state.take() else {
            boot_files.extend(msg.file.take());
            boot.push(BootstrapFrame {
                name: msg.name,
                // Compact (u16 for camera counts): bootstrap frames are the only frames kept.
                image: match Arc::try_unwrap(msg.image) {
                    Ok(image) => CompactImage::new(image),
                    // Shared with `global_reference`: converted without an f32 copy.
                    Err(shared) => CompactImage::from_view(shared.view()),
                },
                quality: msg.quality,
            });
            boot_arrivals.push(msg.arrival);
            if boot.len() >= options.bootstrap_frames {
                let frames = std::mem::take(&mut boot);
                let (mut st, reports) = bootstrap(frames, options, workers).await?;
                adopt(&mut st, &source, &mut boot_files);
                for r in &reports {
                    report_event(&events, r);
                }
                events(&Event::Bootstrapped {
                    frames: reports.len(),
                    tile_size_px: st.tile_px(),
                    tiles: st.tiles().len(),
                });
                let arrival = boot_arrivals.drain(..).min().unwrap_or_else(Instant::now);
                let (st, update) = full_update(st, arrival, false).await?;
                if update_tx.send(update).await.is_err() {
                    state = Some(st);
                    break;
                }
                // The bootstrap is the most expensive step: checkpoint it at once.
                since_checkpoint = 0;
                state = Some(checkpoint(st, &settings, &mut global_reference, &events).await?);
            }
            continue;
        };
        // Recorded before the frame is processed: checkpoints are written between frames only.
        st.source_mut().frames.extend(msg.file.take());
        let t0 = Instant::now();
        let plan = match st.plan(&msg.name, &msg.quality) {
            Ok(plan) => plan,
            Err(reason) => {
                events(&Event::FrameRejected {
                    name: msg.name.clone(),
                    reason,
                });
                state = Some(st);
                continue;
            }
        };
        if msg.image.dim() != st.dim() {
            events(&Event::FrameRejected {
                name: msg.name.clone(),
                reason: format!(
                    "size {:?} differs from the session's {:?}",
                    msg.image.dim(),
                    st.dim()
                ),
            });
            state = Some(st);
            continue;
        }
        let input = plan.input();
        let margin = options.margin_px;
        let tiles = st.take_tiles();
        let boxes: Vec<TileBox> = tiles.iter().map(|t| *t.tile()).collect();
        let image = Arc::clone(&msg.image);
        drop(msg.image);
        let shift = plan.shift;
        // One blocking job per tile, at most `workers` at once; `buffered` returns them in tile order,
        // and each tile's image goes into the mosaic as soon as it is its turn (no copies are kept).
        let mut outcomes = stream::iter(tiles.into_iter().map(move |mut tile| {
            let image = Arc::clone(&image);
            tokio::task::spawn_blocking(move || {
                let cut = core_live::cutout(image.view(), tile.tile(), margin, shift);
                let r = tile.add_frame(cut.view(), &input, &options);
                let current = tile.current();
                let var = tile.warp_variance();
                (tile, r, current, var)
            })
        }))
        .buffered(workers);
        let (rows, cols) = st.dim();
        let mut mosaic = Mosaic::new(rows, cols, &boxes);
        let mut tiles = Vec::with_capacity(boxes.len());
        let mut reports = Vec::with_capacity(boxes.len());
        while let Some(outcome) = outcomes.next().await {
            let (tile, r, current, var): TileOutcome =
                outcome.map_err(|source| StageError::Join {
                    stage: "tiles",
                    source,
                })?;
            mosaic.add(tile.tile(), current.view(), psi(var, sigma));
            tiles.push(tile);
            reports.push(r);
        }
        drop(outcomes);
        let report = st.put_tiles(tiles, &plan, &reports);
        report_event(&events, &report);
        let blended = tokio::task::spawn_blocking(move || mosaic.finish())
            .await
            .map_err(|source| StageError::Join {
                stage: "tiles",
                source,
            })?;
        busy += t0.elapsed();
        processed += 1;
        let update = Update {
            used: report.tiles_used > 0,
            force: false,
            frames_used: st.frames_used().len(),
            arrival: msg.arrival,
            image: Some(Arc::new(blended)),
        };
        if update_tx.send(update).await.is_err() {
            state = Some(st);
            break;
        }
        since_checkpoint += 1;
        if since_checkpoint >= settings.checkpoint_every.get() {
            since_checkpoint = 0;
            st = checkpoint(st, &settings, &mut global_reference, &events).await?;
        }
        state = Some(st);
    }
    // Input closed: bootstrap with what there is (a short session), then the final checkpoint.
    if state.is_none() && !boot.is_empty() {
        let frames = std::mem::take(&mut boot);
        match bootstrap(frames, options, workers).await {
            Ok((mut st, reports)) => {
                adopt(&mut st, &source, &mut boot_files);
                for r in &reports {
                    report_event(&events, r);
                }
                let arrival = boot_arrivals.drain(..).min().unwrap_or_else(Instant::now);
                let (st, update) = full_update(st, arrival, false).await?;
                state = Some(st);
                let _ = update_tx.send(update).await;
            }
            Err(e) => events(&Event::Warning {
                message: format!("{}; nothing was reconstructed", tlr_core::report(&e)),
            }),
        }
    }
    let Some(mut st) = state else {
        return Ok((Vec::new(), Vec::new(), busy.as_secs_f64(), processed));
    };
    if settings.checkpoint.is_some() {
        st = checkpoint(st, &settings, &mut global_reference, &events).await?;
    }
    // Dropping `update_tx` closes the channel: the publisher writes the final snapshot.
    Ok((
        st.frames_used().to_vec(),
        st.frames_rejected().to_vec(),
        busy.as_secs_f64(),
        processed,
    ))
}

/// Gives a freshly bootstrapped state this session's source and the bootstrap frames' files.
fn adopt(st: &mut LiveState, source: &CheckpointSource, files: &mut Vec<FrameFile>) {
    *st.source_mut() = CheckpointSource {
        frames: std::mem::take(files),
        ..source.clone()
    };
}

/// Bootstraps on the worker pool: the frame-level plan, then one blocking job per tile (at most
/// `workers` at once), assembled in tile order (identical to the serial [`LiveState::bootstrap`]).
async fn bootstrap(
    frames: Vec<BootstrapFrame>,
    options: LiveOptions,
    workers: usize,
) -> Result<(LiveState, Vec<core_live::LiveFrameReport>), StageError> {
    let join = |source| StageError::Join {
        stage: "tiles",
        source,
    };
    let frames = Arc::new(frames);
    let plan = BootstrapPlan::new(&frames, options)
        .map_err(|e| StageError::input("tiles", tlr_core::report(&e)))?;
    let plan = Arc::new(plan);
    let results: Vec<Result<(LiveTile, Vec<FrameReport>), tokio::task::JoinError>> =
        stream::iter((0..plan.tiles().len()).map(|k| {
            let plan = Arc::clone(&plan);
            let frames = Arc::clone(&frames);
            tokio::task::spawn_blocking(move || plan.bootstrap_tile(k, &frames))
        }))
        .buffered(workers)
        .collect()
        .await;
    // The bootstrap frames are not needed any more.
    drop(frames);
    let tiles = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(join)?;
    tokio::task::spawn_blocking(move || plan.finish(tiles))
        .await
        .map_err(join)
}

/// Blends the state's tiles (on a blocking thread) into an update for the publisher.
async fn full_update(
    st: LiveState,
    arrival: Instant,
    force: bool,
) -> Result<(LiveState, Update), StageError> {
    let (st, image) = tokio::task::spawn_blocking(move || {
        let image = st.snapshot();
        (st, image)
    })
    .await
    .map_err(|source| StageError::Join {
        stage: "tiles",
        source,
    })?;
    let update = Update {
        used: true,
        force,
        frames_used: st.frames_used().len(),
        arrival,
        image: Some(Arc::new(image)),
    };
    Ok((st, update))
}

/// Writes the checkpoint (when the session has one) on a blocking thread; the global reference frame
/// is handed over once and dropped after it was saved.
async fn checkpoint(
    mut st: LiveState,
    settings: &LiveSettings,
    reference: &mut Option<Arc<Array2<f32>>>,
    events: &EventSink,
) -> Result<LiveState, StageError> {
    let Some(dir) = settings.checkpoint.clone() else {
        return Ok(st);
    };
    let d = dir.clone();
    let image = reference.take();
    // Writing the checkpoint is blocking I/O.
    let (st, image, result) = tokio::task::spawn_blocking(move || {
        let r = st.save(&d, image.as_ref().map(|a| a.view()));
        (st, image, r)
    })
    .await
    .map_err(|source| StageError::Join {
        stage: "checkpoint",
        source,
    })?;
    if result.is_err() {
        // Not saved: keep it for the next attempt.
        *reference = image;
    }
    result.map_err(|e| StageError::input("checkpoint", tlr_core::report(&e)))?;
    events(&Event::Checkpoint {
        dir,
        frames_used: st.frames_used().len(),
    });
    Ok(st)
}

fn report_event(events: &EventSink, r: &core_live::LiveFrameReport) {
    if r.tiles_used > 0 {
        events(&Event::FrameUsed {
            name: r.name.clone(),
            tiles_used: r.tiles_used,
            tiles_rejected: r.tiles_rejected,
            pixels_rejected: r.pixels_rejected,
            reason: r.reason.clone(),
        });
    } else {
        events(&Event::FrameRejected {
            name: r.name.clone(),
            reason: r
                .reason
                .clone()
                .unwrap_or_else(|| "no tile used it".to_string()),
        });
    }
}

/// The publisher: snapshot schedule, blend, atomic FITS + PNG, latency. Returns (snapshots, max and
/// mean latency).
async fn publish(
    settings: LiveSettings,
    mut update_rx: mpsc::Receiver<Update>,
    snap_tx: watch::Sender<Option<Snapshot>>,
    events: EventSink,
) -> Result<(usize, f64, f64), StageError> {
    let mut latest: Option<Update> = None;
    // Arrival times of frames not yet in a published snapshot (bounded by the schedule).
    let mut pending: Vec<Instant> = Vec::new();
    let mut last_publish = Instant::now();
    let mut frames_since = 0usize;
    let mut snapshots = 0usize;
    let mut max_latency = 0.0f64;
    let mut latency_sum = 0.0f64;
    let mut latency_n = 0usize;
    let mut published_frames = usize::MAX;
    loop {
        let tick = match settings.schedule {
            Schedule::Every(d) => d.saturating_sub(last_publish.elapsed()),
            Schedule::Frames(_) => Duration::from_secs(3600),
        };
        let received = tokio::select! {
            u = update_rx.recv() => Some(u),
            () = tokio::time::sleep(tick) => None,
        };
        let closed = matches!(received, Some(None));
        let mut force = false;
        if let Some(Some(update)) = received {
            if update.used && !update.force {
                pending.push(update.arrival);
                frames_since += 1;
            }
            force = update.force;
            latest = Some(update);
        }
        let due = force
            || match settings.schedule {
                Schedule::Frames(n) => frames_since >= n.get(),
                Schedule::Every(d) => frames_since > 0 && last_publish.elapsed() >= d,
            };
        if (due || closed) && latest.is_some() {
            let Some(update) = latest.as_ref() else {
                continue;
            };
            if update.frames_used != published_frames {
                published_frames = update.frames_used;
                let path = publish_one(&settings, update, &snap_tx).await?;
                let now = Instant::now();
                let lat: Vec<f64> = pending
                    .iter()
                    .map(|a| now.duration_since(*a).as_secs_f64())
                    .collect();
                let newest = lat.iter().copied().fold(f64::INFINITY, f64::min);
                let oldest = lat.iter().copied().fold(0.0f64, f64::max);
                latency_sum += lat.iter().sum::<f64>();
                latency_n += lat.len();
                max_latency = max_latency.max(oldest);
                snapshots += 1;
                events(&Event::Snapshot {
                    path,
                    frames_used: update.frames_used,
                    latency_s: if newest.is_finite() { newest } else { 0.0 },
                    max_latency_s: oldest,
                    resident_mib: rss_bytes().map(|b| b >> 20),
                });
            }
            pending.clear();
            frames_since = 0;
            last_publish = Instant::now();
        }
        if closed {
            break;
        }
    }
    let mean = if latency_n > 0 {
        latency_sum / latency_n as f64
    } else {
        0.0
    };
    Ok((snapshots, max_latency, mean))
}

async fn publish_one(
    settings: &LiveSettings,
    update: &Update,
    snap_tx: &watch::Sender<Option<Snapshot>>,
) -> Result<Option<PathBuf>, StageError> {
    let Some(image) = update.image.clone() else {
        return Ok(None);
    };
    let output = settings.output.clone();
    let frames_used = update.frames_used;
    let digest = settings.config.digest();
    // Writing is blocking I/O (and PNG encoding CPU work).
    let (image, written) = tokio::task::spawn_blocking(move || {
        let written = match &output {
            Some(path) => {
                write_snapshot(path, &image, frames_used, &digest).map(|()| Some(path.clone()))
            }
            None => Ok(None),
        };
        (image, written)
    })
    .await
    .map_err(|source| StageError::Join {
        stage: "publisher",
        source,
    })?;
    let written = written?;
    snap_tx.send_replace(Some(Snapshot { image, frames_used }));
    Ok(written)
}

/// Writes the snapshot FITS and its PNG preview, each atomically (temporary file + rename).
///
/// # Errors
/// [`StageError::Output`] naming the file.
pub fn write_snapshot(
    path: &Path,
    image: &Array2<f32>,
    frames_used: usize,
    config_digest: &str,
) -> Result<(), StageError> {
    let meta = OutputMeta::tlr_output("live")
        .with_card(
            "NCOMBINE",
            fits::CardValue::Int(frames_used as i64),
            "frames in this live snapshot",
        )
        .with_history(&format!("tlr live snapshot, config digest {config_digest}"));
    fits::write_image_atomic(path, image.view(), SampleFormat::F32, &meta).map_err(|e| {
        StageError::Output {
            path: path.to_path_buf(),
            message: tlr_core::report(&e),
        }
    })?;
    let png = path.with_extension("png");
    tlr_core::preview::write_png_preview_atomic(&png, image.view()).map_err(|e| {
        StageError::Output {
            path: png.clone(),
            message: tlr_core::report(&e),
        }
    })
}

/// The checkpoint folder used for an output file: `OUT.checkpoint` next to it.
pub fn checkpoint_dir_for(output: &Path) -> PathBuf {
    sibling(output, ".checkpoint")
}

/// The lock file of an output file: `OUT.lock` next to it (see [`OutputLock`]).
pub fn lock_path_for(output: &Path) -> PathBuf {
    sibling(output, ".lock")
}

/// `output`'s name with `suffix` appended, in the same folder.
fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    output.with_file_name(name)
}

/// An exclusive lock on an output file, held while the value lives: `OUT.lock` next to the output
/// ([`lock_path_for`]), locked with `flock(2)`, holding the owner's pid for the message another
/// session prints.
///
/// Why `flock` and not a file created with `O_EXCL` plus a pid check: the kernel releases the lock
/// when its process ends in any way (SIGKILL and crashes included), so a lock left by a dead process
/// never stops anyone and taking it over has no race between checking the pid and replacing the
/// file. The file itself stays after the session (removing it while another process opens it would
/// let two sessions lock two different files).
#[derive(Debug)]
pub struct OutputLock {
    _file: std::fs::File,
}

impl OutputLock {
    /// Takes the lock of `output`, or fails at once when another process holds it.
    ///
    /// # Errors
    /// [`StageError::Output`] naming the lock file: held by another process (its pid when known), or
    /// the file cannot be created or locked.
    pub fn acquire(output: &Path) -> Result<Self, StageError> {
        use std::io::{Read as _, Write as _};
        use std::os::fd::AsRawFd as _;
        let path = lock_path_for(output);
        let fail = |message: String| StageError::Output {
            path: path.clone(),
            message,
        };
        // The output's folder is created here, first: the lock is the session's first file in it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create the output folder: {e}")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(format!("cannot open the lock file: {e}")))?;
        // SAFETY: flock(2) on a descriptor owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let os = std::io::Error::last_os_error();
            if os.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(fail(format!("cannot lock the lock file: {os}")));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let owner = text.trim().parse::<u32>().map_or_else(
                |_| "another process".to_string(),
                |pid| format!("process {pid}"),
            );
            return Err(fail(format!(
                "locked by {owner}: another `tlr watch` is writing this output; stop it first or \
                 choose another output"
            )));
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| fail(format!("cannot write the lock file: {e}")))?;
        Ok(Self { _file: file })
    }
}

/// Removes the hidden temporary files (`.NAME.tmp-<pid>…`) that a killed earlier session left next to
/// `path` while writing it; files of live processes (another writer) are left alone.
fn remove_stale_temporaries(path: &Path) {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        tlr_core::atomic::remove_stale_temporaries(dir, Some(name));
    }
}
