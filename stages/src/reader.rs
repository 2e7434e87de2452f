//! The frame reader: the one actor that reads frames (owns all frame I/O). It makes the global pass over
//! all frames, then reads every tile row's frame windows (the tiles plus a search margin, from every
//! frame) and sends one job per tile downstream, in a fixed order.
//!
//! Global pass: frame k+1 is read (and its sky level measured) while blocking jobs, at most
//! `parallel_tiles` at once, detect the stars of frame k in horizontal strips
//! ([`tlr_core::global::MeasurePlan`]: parallel over regions of a frame, never over frames); the parts
//! are merged and matched in frame order, so at most two frames are in memory.
//!
//! Tile phase: reading is sequential and row-wise: tiles are read in column bands (one band when the
//! budget allows), tile row by tile row from the top. Each frame keeps a rolling window of the frame rows
//! the current tile row needs (tile height plus margins), held as chunks of rows as they were read;
//! the next tile row's window shares the chunks it still needs and reads only the new rows, in one file
//! visit per frame. So every frame row is read once per band (not once per tile, nor per iteration),
//! and no row is ever copied to move a window on. The reader does I/O only: a job carries its tile row's
//! windows (shared), and the worker cuts its own stack from them ([`TileJob::cut`]), so copying fans out
//! with the compute. The reader builds the next row's windows while workers still cut from the current
//! ones, which go once their last stack has been cut, so memory is bounded by the window budget, one
//! row's new rows and the channel capacity.
//! In colour mode (a store with 4 planes, see [`crate::source::ColourFrames`]) everything is in cell
//! space: windows hold the four planes of every frame, a stack's cut-outs are the luminance and each
//! job also yields the four plane cut-outs with their per-channel photometric scales.
//! What it does not: any reconstruction (workers do that) or any blending (the accumulator does that).

use ndarray::{s, Array2, Array3};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use tlr_core::global::{
    detect_options, measure_part, measure_sky, merge_parts, FrameMeasurement, FrameQuality,
    GlobalOptions, GlobalPass, MeasurePart, MeasurePlan,
};
use tlr_core::operator::{PlaneStack, TileStack};
use tlr_core::select::set_plane_scales;
pub use tlr_core::select::UsedFrame;
use tlr_core::stars::StarDetector;
use tlr_core::TileBox;

use crate::error::StageError;
use crate::events::{Event, EventSink};
use crate::memory::MemoryGuard;
use crate::source::FrameStore;

/// One tile on its way to the workers, with its position in the application order. It carries the
/// frame windows of its tile row (shared with the other tiles of the row), not a stack: the worker cuts
/// its own stack ([`TileJob::cut`]), so the reader does I/O only and copying fans out with the compute.
pub struct TileJob {
    /// Position in the order the accumulator applies results (0, 1, 2, …).
    pub seq: usize,
    /// The tile.
    pub tile: TileBox,
    windows: Arc<Windows>,
    frames: Arc<Vec<UsedFrame>>,
    margin: usize,
    planes: usize,
}

impl std::fmt::Debug for TileJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileJob")
            .field("seq", &self.seq)
            .field("tile", &self.tile)
            .field("frames", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl TileJob {
    /// The tile's stack (the luminance in colour mode) and, in colour mode, the cut-outs of each plane
    /// (R, G1, G2, B; empty for mono). Cuts into buffers from `spare` whose shape fits, else allocates.
    /// Releases the job's hold on the shared windows.
    pub fn cut(self, spare: Vec<Array3<f32>>) -> (TileStack, Vec<PlaneStack>) {
        self.windows
            .cut(&self.tile, &self.frames, self.margin, self.planes, spare)
    }

    /// How many stack buffers [`TileJob::cut`] fills (1 for mono, the planes for colour).
    pub fn buffers(&self) -> usize {
        self.planes.max(1)
    }
}

/// What the global pass found out about the frames.
#[derive(Debug, Clone)]
pub struct GlobalSummary {
    /// Per-frame measurements, index = frame index in the store (`None`: unreadable frame).
    pub qualities: Vec<Option<FrameQuality>>,
    /// Colour mode: per-frame background of each plane (R, G1, G2, B), index = frame index.
    pub plane_backgrounds: Vec<Option<[f32; 4]>>,
    /// Frames that take part, with their global weight, photometric scale and global shift.
    pub frames: Vec<UsedFrame>,
}

/// The order in which tiles are read and how: column bands of tile rows, read top to bottom with a rolling
/// window of frame rows per frame, so that every frame row of a band is read once.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// Tiles in reading (= application) order; `TileBox::index` equals the position in this list.
    pub tiles: Vec<TileBox>,
    /// Search margin read around each tile, px.
    pub margin: usize,
    /// Bands, left to right; each is a list of tile rows (ranges into `tiles`), top to bottom.
    pub bands: Vec<Vec<Range<usize>>>,
}

impl ReadPlan {
    /// Plans reading `grid` (row-major tiles) for `frames` frames: the fewest column bands whose rolling
    /// window (one tile row plus margins, for all frames, as f32) fits in `budget_bytes`; a band is at
    /// least one tile column wide. Tiles are re-indexed in band order.
    /// In colour mode pass frames x planes as `frames` (each plane is a quarter of a frame's pixels in
    /// cell space, so the bytes equal those of the full-resolution frames).
    pub fn new(grid: &[TileBox], margin: usize, frames: usize, budget_bytes: usize) -> Self {
        let mut xs: Vec<usize> = grid.iter().map(|t| t.x0).collect();
        xs.sort_unstable();
        xs.dedup();
        let tile_h = grid.iter().map(|t| t.h).max().unwrap_or(0);
        let pad = 2 * margin;
        let bytes = |columns: &[usize]| -> usize {
            let x0 = columns.first().copied().unwrap_or(0);
            let x1 = grid
                .iter()
                .filter(|t| columns.contains(&t.x0))
                .map(|t| t.x0 + t.w)
                .max()
                .unwrap_or(x0);
            (tile_h + pad) * (x1 - x0 + pad) * frames.max(1) * std::mem::size_of::<f32>()
        };
        let mut band_count = 1;
        while band_count < xs.len() {
            let per_band = xs.len().div_ceil(band_count);
            if xs.chunks(per_band).all(|c| bytes(c) <= budget_bytes) {
                break;
            }
            band_count += 1;
        }
        let per_band = xs.len().div_ceil(band_count).max(1);
        let mut tiles = Vec::with_capacity(grid.len());
        let mut bands = Vec::new();
        for columns in xs.chunks(per_band) {
            let mut rows: Vec<Range<usize>> = Vec::new();
            let mut ys: Vec<usize> = grid
                .iter()
                .filter(|t| columns.contains(&t.x0))
                .map(|t| t.y0)
                .collect();
            ys.sort_unstable();
            ys.dedup();
            for y0 in ys {
                let start = tiles.len();
                for t in grid
                    .iter()
                    .filter(|t| t.y0 == y0 && columns.contains(&t.x0))
                {
                    tiles.push(TileBox {
                        index: tiles.len(),
                        ..*t
                    });
                }
                rows.push(start..tiles.len());
            }
            bands.push(rows);
        }
        Self {
            tiles,
            margin,
            bands,
        }
    }
}

/// The reader actor. Owns the frame store; the only stage that watches the cancellation token.
pub struct FrameReader {
    store: Arc<dyn FrameStore>,
    events: EventSink,
    strict: bool,
    memory: MemoryGuard,
}

impl FrameReader {
    /// A reader over `store`. With `strict`, a frame that cannot be read stops the run; otherwise it is
    /// reported and left out.
    pub fn new(
        store: Arc<dyn FrameStore>,
        events: EventSink,
        strict: bool,
        memory: MemoryGuard,
    ) -> Self {
        Self {
            store,
            events,
            strict,
            memory,
        }
    }

    /// The global pass: every frame once, in order. The reader reads frame `k + 1` (blocking I/O, one
    /// file at a time) while a pool of `workers` blocking threads measures the parts of frames `k - 1`
    /// and `k` (strips of the frame, [`MeasurePlan`]: the pass parallelises over regions of one frame,
    /// never over frames; the reader measures the sky part as it reads). Strips are taken first come,
    /// first served, so a worker that finishes the last strip of one frame starts on the next frame
    /// instead of waiting for its partner; the parts are merged and matched against the reference in
    /// frame order. At most [`FRAMES_IN_FLIGHT`] frames are being measured, plus the one being read.
    ///
    /// # Errors
    /// Cancellation, an unreadable frame with `strict`, or no usable frame at all.
    pub async fn global_pass(
        &self,
        cancel: &CancellationToken,
        workers: usize,
    ) -> Result<GlobalSummary, StageError> {
        let total = self.store.len();
        let mut pass = GlobalPass::new();
        let options = Arc::new(pass.options().clone());
        let strips = StripPool::new(workers.max(1), Arc::clone(&options));
        let mut qualities = Vec::with_capacity(total);
        let mut plane_backgrounds = Vec::with_capacity(total);
        let mut in_flight: VecDeque<Result<PendingFrame, StageError>> = VecDeque::new();
        let mut next = (total > 0).then(|| self.spawn_read(0, Arc::clone(&options)));
        for index in 0..total {
            let read = match next.take() {
                Some(handle) => handle.await.map_err(|source| StageError::Join {
                    stage: "reader",
                    source,
                })?,
                None => break,
            };
            // Reading the next frame overlaps with measuring this one and the one before.
            if index + 1 < total {
                next = Some(self.spawn_read(index + 1, Arc::clone(&options)));
            }
            in_flight.push_back(
                read.map(|(image, sky, backgrounds)| strips.submit(image, sky, backgrounds)),
            );
            while in_flight.len() >= FRAMES_IN_FLIGHT
                || (index + 1 == total && !in_flight.is_empty())
            {
                if cancel.is_cancelled() {
                    return Err(StageError::Cancelled);
                }
                self.memory.check()?;
                let done = qualities.len();
                let outcome = match in_flight.pop_front() {
                    Some(Ok(pending)) => pending
                        .finish(&options)
                        .await
                        .map(|(m, backgrounds)| (pass.add_measurement(m).quality, backgrounds)),
                    Some(Err(error)) => Err(error),
                    None => break,
                };
                match outcome {
                    Ok((quality, backgrounds)) => {
                        qualities.push(Some(quality));
                        plane_backgrounds.push(backgrounds);
                    }
                    Err(error @ StageError::Panicked { .. }) => return Err(error),
                    Err(error) if self.strict => return Err(error),
                    Err(error) => {
                        (self.events)(&Event::FrameSkipped {
                            path: self.store.meta(done).label,
                            reason: crate::error::report(&error),
                        });
                        qualities.push(None);
                        plane_backgrounds.push(None);
                    }
                }
                (self.events)(&Event::GlobalFrame {
                    done: done + 1,
                    total,
                });
            }
        }
        let mut frames = select_frames(&qualities, self.strict, |index, reason| {
            (self.events)(&Event::FrameSkipped {
                path: self.store.meta(index).label,
                reason,
            })
        })?;
        if self.store.planes() > 1 {
            set_plane_scales(&mut frames, &plane_backgrounds);
        }
        Ok(GlobalSummary {
            qualities,
            plane_backgrounds,
            frames,
        })
    }

    /// Reads frame `index` for the global pass on a blocking thread: the image to measure (mono as it
    /// is, colour as the luminance of its planes) and, in colour mode, the background of each plane.
    /// The frame's sky level and noise are measured here too (the sky part of its [`MeasurePlan`]): a
    /// sampled statistic that is cheap next to star detection, and the reader would otherwise wait for
    /// the workers; left to the pool it was a third job for two workers on every frame.
    fn spawn_read(
        &self,
        index: usize,
        options: Arc<GlobalOptions>,
    ) -> tokio::task::JoinHandle<Result<ReadFrame, StageError>> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let planes = store.read_full_planes(index)?;
            let (image, backgrounds) = measurable(planes)?;
            let sky = measure_sky(image.view(), &options);
            Ok((image, sky, backgrounds))
        })
    }

    /// Reads every tile stack of `plan` in order and sends it to `tile_tx`.
    ///
    /// Returns what was sent and which frames failed on the way ([`TilePhase`]). A closed `tile_tx`
    /// means downstream stopped (it reports why), so the reader then returns quietly.
    ///
    /// # Errors
    /// Cancellation, the memory limit, or an unreadable frame with `strict`.
    pub async fn run(
        self,
        plan: ReadPlan,
        frames: Vec<UsedFrame>,
        tile_tx: mpsc::Sender<TileJob>,
        cancel: CancellationToken,
    ) -> Result<TilePhase, StageError> {
        let frames = Arc::new(frames);
        let shape = self.store.shape();
        let planes = self.store.planes();
        let mut failed = vec![false; frames.len()];
        let mut sent = 0usize;
        for band in &plan.bands {
            // One chain of windows per band. While workers cut the current row's stacks from its
            // windows, the reader builds the next row's: the chunks both need are shared, only the rows
            // the next tile row adds are read. A row's windows go once its last stack has been cut.
            let mut windows = Arc::new(Windows::new(frames.len()));
            for tile_row in band {
                if cancel.is_cancelled() {
                    return Err(StageError::Cancelled);
                }
                self.memory.check()?;
                let tiles = &plan.tiles[tile_row.clone()];
                let need = Need::of(tiles, plan.margin);
                let (store, row_frames, held) = (
                    Arc::clone(&self.store),
                    Arc::clone(&frames),
                    Arc::clone(&windows),
                );
                let skip = failed.clone();
                // Reading is blocking I/O: one sequential pass over the frames, new rows only.
                let (next, errors) = tokio::task::spawn_blocking(move || {
                    held.next(store.as_ref(), &row_frames, &need, shape, &skip)
                })
                .await
                .map_err(|source| StageError::Join {
                    stage: "reader",
                    source,
                })?;
                windows = Arc::new(next);
                for (slot, error) in errors {
                    if self.strict {
                        return Err(error);
                    }
                    failed[slot] = true;
                    (self.events)(&Event::Warning {
                        message: format!(
                            "{}; the frame is left out of this and all later tiles",
                            crate::error::report(&error)
                        ),
                    });
                }
                for tile in tiles {
                    let job = TileJob {
                        seq: sent,
                        tile: *tile,
                        windows: Arc::clone(&windows),
                        frames: Arc::clone(&frames),
                        margin: plan.margin,
                        planes,
                    };
                    // The send is the back-pressure: it waits while the workers are busy. Only the
                    // reader watches the token; downstream stages stop when this channel closes.
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Err(StageError::Cancelled),
                        result = tile_tx.send(job) => {
                            if result.is_err() {
                                return Ok(TilePhase::new(sent, &frames, &failed));
                            }
                        }
                    }
                    sent += 1;
                }
            }
        }
        // Dropping `tile_tx` here closes the channel: that is the workers' signal to finish.
        Ok(TilePhase::new(sent, &frames, &failed))
    }
}

/// What the reader's tile phase did: stacks sent, and the frames that failed to read on the way.
#[derive(Debug, Clone, Default)]
pub struct TilePhase {
    /// Tile stacks sent to the workers.
    pub sent: usize,
    /// Store indices of the frames that failed during the tile phase. They are left out of every tile
    /// read after the failure and are counted as unused (NCOMBINE, EXPTIME, summary, report).
    pub failed: Vec<usize>,
}

impl TilePhase {
    fn new(sent: usize, frames: &[UsedFrame], failed: &[bool]) -> Self {
        Self {
            sent,
            failed: frames
                .iter()
                .zip(failed)
                .filter(|(_, &f)| f)
                .map(|(frame, _)| frame.index)
                .collect(),
        }
    }
}

/// A frame as the global pass measures it: the image (shared by the part jobs), its measured sky part
/// and, in colour mode, the background of each plane.
type ReadFrame = (Arc<Array2<f32>>, MeasurePart, Option<[f32; 4]>);

/// The image to measure and, in colour mode, the background of each plane.
type Measurable = (Arc<Array2<f32>>, Option<[f32; 4]>);

/// The image the global pass measures: mono as it is; colour planes through their luminance, plus the
/// background of each plane.
fn measurable(planes: Array3<f32>) -> Result<Measurable, StageError> {
    if planes.dim().0 == 1 {
        let image = planes.index_axis_move(ndarray::Axis(0), 0);
        return Ok((Arc::new(image), None));
    }
    let lum = tlr_core::bayer::luminance(planes.view())
        .map_err(|e| StageError::input("reader", e.to_string()))?;
    let backgrounds = tlr_core::bayer::plane_backgrounds(planes.view())
        .ok()
        .map(|st| st.map(|s| s.median));
    Ok((Arc::new(lum), backgrounds))
}

/// Frames whose strips may be queued or measured at once in the global pass (the frame being read comes
/// on top). Two: while the workers finish the last strips of one frame, the next frame's strips are
/// already waiting for them.
const FRAMES_IN_FLIGHT: usize = 2;

/// One strip of a frame for the [`StripPool`], with where its result goes.
struct StripJob {
    image: Arc<Array2<f32>>,
    plan: Arc<MeasurePlan>,
    part: usize,
    done: oneshot::Sender<std::thread::Result<MeasurePart>>,
}

/// The global pass's measuring pool: `workers` blocking threads taking strips from one queue in the
/// order they were submitted, each with its own star detector (scratch buffers kept across frames).
/// Dropping the pool closes the queue; the threads finish their strip and end.
struct StripPool {
    jobs: crossbeam_channel::Sender<StripJob>,
}

impl StripPool {
    fn new(workers: usize, options: Arc<GlobalOptions>) -> Self {
        let (jobs, queue) = crossbeam_channel::unbounded::<StripJob>();
        for _ in 0..workers {
            let (queue, options) = (queue.clone(), Arc::clone(&options));
            tokio::task::spawn_blocking(move || {
                let mut detector = StarDetector::new(detect_options());
                for job in queue {
                    let m = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        measure_part(
                            job.image.view(),
                            &job.plan,
                            job.part,
                            &options,
                            &mut detector,
                        )
                    }));
                    if m.is_err() {
                        // Its scratch buffers may be half-written: start afresh.
                        detector = StarDetector::new(detect_options());
                    }
                    // A closed receiver means the pass stopped; the strip is simply dropped.
                    let _ = job.done.send(m);
                }
            });
        }
        Self { jobs }
    }

    /// Queues the strips of `image` (a frame whose `sky` part the reader measured) and returns the frame
    /// waiting for them. The queue is unbounded; the global pass bounds it by [`FRAMES_IN_FLIGHT`].
    fn submit(
        &self,
        image: Arc<Array2<f32>>,
        sky: MeasurePart,
        backgrounds: Option<[f32; 4]>,
    ) -> PendingFrame {
        let (rows, cols) = image.dim();
        let plan = Arc::new(MeasurePlan::new(rows, cols));
        let strips = (0..plan.strips().len())
            .map(|part| {
                let (done, result) = oneshot::channel();
                let job = StripJob {
                    image: Arc::clone(&image),
                    plan: Arc::clone(&plan),
                    part,
                    done,
                };
                // The threads only end once `jobs` is dropped, so sending cannot fail while `self` lives.
                let _ = self.jobs.send(job);
                result
            })
            .collect();
        PendingFrame {
            plan,
            strips,
            sky,
            backgrounds,
        }
    }
}

/// A frame whose strips are queued or being measured by the [`StripPool`].
struct PendingFrame {
    plan: Arc<MeasurePlan>,
    strips: Vec<oneshot::Receiver<std::thread::Result<MeasurePart>>>,
    sky: MeasurePart,
    backgrounds: Option<[f32; 4]>,
}

impl PendingFrame {
    /// Waits for every strip and merges them with the sky part in part order (the result does not depend
    /// on the number of workers or on which worker measured what), with the frame's plane backgrounds.
    async fn finish(
        self,
        options: &GlobalOptions,
    ) -> Result<(FrameMeasurement, Option<[f32; 4]>), StageError> {
        let mut measured = Vec::with_capacity(self.plan.parts());
        for strip in self.strips {
            let panicked = |message: String| StageError::Panicked {
                stage: "reader",
                what: "measuring a frame's stars",
                message,
            };
            match strip.await {
                Ok(Ok(part)) => measured.push(part),
                Ok(Err(panic)) => {
                    return Err(panicked(crate::error::panic_message(panic.as_ref())))
                }
                Err(_) => return Err(panicked("the measuring thread ended".into())),
            }
        }
        measured.push(self.sky);
        Ok((merge_parts(&self.plan, measured, options), self.backgrounds))
    }
}

/// Picks the frames that take part ([`tlr_core::select::select_frames`]): reports the others through
/// `skipped`, or with `strict` fails on the first of them.
fn select_frames(
    qualities: &[Option<FrameQuality>],
    strict: bool,
    mut skipped: impl FnMut(usize, String),
) -> Result<Vec<UsedFrame>, StageError> {
    let selection = tlr_core::select::select_frames(qualities);
    for rejected in selection.rejected {
        let (index, reason) = (rejected.index, rejected.reason.to_string());
        if strict {
            return Err(StageError::input(
                "reader",
                format!("frame {index}: {reason} (--strict)"),
            ));
        }
        skipped(index, reason);
    }
    let used = selection.used;
    if used.is_empty() {
        return Err(StageError::input(
            "reader",
            "no frame could be used: every frame failed to read or to register globally",
        ));
    }
    Ok(used)
}

/// The reference-frame rectangle a tile row needs (tiles plus margin), before frame offsets.
struct Need {
    rows: Range<isize>,
    cols: Range<isize>,
}

impl Need {
    fn of(tiles: &[TileBox], margin: usize) -> Self {
        let m = margin as isize;
        let y0 = tiles.iter().map(|t| t.y0).min().unwrap_or(0) as isize - m;
        let y1 = tiles.iter().map(|t| t.y0 + t.h).max().unwrap_or(0) as isize + m;
        let x0 = tiles.iter().map(|t| t.x0).min().unwrap_or(0) as isize - m;
        let x1 = tiles.iter().map(|t| t.x0 + t.w).max().unwrap_or(0) as isize + m;
        Self {
            rows: y0..y1,
            cols: x0..x1,
        }
    }
}

/// Frame rows `row0..row0 + data.dim().1` of one frame, all planes, the band's columns: what one read
/// brought in. Windows of consecutive tile rows share the chunks they both need.
struct Chunk {
    /// `(planes, rows, cols)`.
    data: Array3<f32>,
    row0: usize,
}

impl Chunk {
    fn rows(&self) -> Range<usize> {
        self.row0..self.row0 + self.data.dim().1
    }
}

/// Per used frame, the rows of the current tile row held in memory: frame rows `rows`, columns
/// `cols`, in contiguous chunks top to bottom (shared with the windows of the tile row before).
struct Window {
    chunks: Vec<Arc<Chunk>>,
    rows: Range<usize>,
    cols: Range<usize>,
}

/// The rolling windows of all used frames for one tile row of a band.
struct Windows {
    frames: Vec<Option<Window>>,
}

impl Windows {
    fn new(frames: usize) -> Self {
        Self {
            frames: (0..frames).map(|_| None).collect(),
        }
    }

    /// The windows of the next tile row, for what `need` asks for: every frame keeps the chunks it still
    /// needs (shared, no copy) and reads the rows it does not hold yet (one file visit per frame). It
    /// only reads `self`, so workers may go on cutting from it meanwhile, and no rows are ever moved.
    /// Returns the new windows and the frames that failed now, by slot (their window is gone).
    fn next(
        &self,
        store: &dyn FrameStore,
        frames: &[UsedFrame],
        need: &Need,
        (rows, cols): (usize, usize),
        skip: &[bool],
    ) -> (Windows, Vec<(usize, StageError)>) {
        let mut errors = Vec::new();
        let mut next = Windows::new(frames.len());
        for (slot, frame) in frames.iter().enumerate() {
            let (oy, ox) = frame.offset();
            let want_rows = clip(need.rows.start + oy, need.rows.end + oy, rows);
            let want_cols = clip(need.cols.start + ox, need.cols.end + ox, cols);
            if skip[slot] || want_rows.is_empty() || want_cols.is_empty() {
                continue;
            }
            // Held chunks still wanted: same columns (a band's columns are fixed) and rows from the
            // top of what is wanted on (frames move down, tile row by tile row).
            let mut chunks: Vec<Arc<Chunk>> = match &self.frames[slot] {
                Some(w) if w.cols == want_cols && w.rows.start <= want_rows.start => w
                    .chunks
                    .iter()
                    .filter(|c| c.rows().end > want_rows.start && c.row0 < want_rows.end)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            let held_end = chunks.last().map_or(want_rows.start, |c| c.rows().end);
            if held_end < want_rows.end {
                match store.read_plane_regions(
                    frame.index,
                    &[(held_end..want_rows.end, want_cols.clone())],
                ) {
                    Ok(mut parts) => {
                        if let Some(data) = parts.pop() {
                            chunks.push(Arc::new(Chunk {
                                data,
                                row0: held_end,
                            }));
                        }
                    }
                    Err(error) => {
                        errors.push((slot, error));
                        continue;
                    }
                }
            }
            next.frames[slot] = Some(Window {
                chunks,
                rows: want_rows,
                cols: want_cols,
            });
        }
        (next, errors)
    }

    /// The tile stack of `tile`: each frame's cut-out of the tile plus margin, shifted by the frame's
    /// whole-pixel offset; pixels outside the frame (or of failed frames) are NaN.
    ///
    /// With more than one plane (colour) the stack's cut-outs are the luminance of the planes and the
    /// planes' cut-outs are returned beside it; with one plane the list is empty.
    fn cut(
        &self,
        tile: &TileBox,
        frames: &[UsedFrame],
        margin: usize,
        planes: usize,
        mut spare: Vec<Array3<f32>>,
    ) -> (TileStack, Vec<PlaneStack>) {
        let (h, w) = (tile.h + 2 * margin, tile.w + 2 * margin);
        let shape = (frames.len(), h, w);
        let mut cuts: Vec<Array3<f32>> = (0..planes.max(1))
            .map(|_| match spare.iter().position(|b| b.dim() == shape) {
                Some(k) => {
                    let mut buffer = spare.swap_remove(k);
                    buffer.fill(f32::NAN);
                    buffer
                }
                None => Array3::from_elem(shape, f32::NAN),
            })
            .collect();
        for (slot, frame) in frames.iter().enumerate() {
            let Some(window) = &self.frames[slot] else {
                continue;
            };
            let (oy, ox) = frame.offset();
            // Cut-out origin in frame coordinates.
            let cy0 = tile.y0 as isize - margin as isize + oy;
            let cx0 = tile.x0 as isize - margin as isize + ox;
            let xs = cx0.max(window.cols.start as isize)
                ..(cx0 + w as isize).min(window.cols.end as isize);
            if xs.is_empty() {
                continue;
            }
            let band_xs = (xs.start - window.cols.start as isize) as usize
                ..(xs.end - window.cols.start as isize) as usize;
            let cut_xs = (xs.start - cx0) as usize..(xs.end - cx0) as usize;
            for chunk in &window.chunks {
                let held = chunk.rows();
                let (from, to) = (
                    cy0.max(held.start.max(window.rows.start) as isize),
                    (cy0 + h as isize).min(held.end.min(window.rows.end) as isize),
                );
                if from >= to {
                    continue;
                }
                let chunk_ys =
                    (from - chunk.row0 as isize) as usize..(to - chunk.row0 as isize) as usize;
                let cut_ys = (from - cy0) as usize..(to - cy0) as usize;
                for (p, cutouts) in cuts.iter_mut().enumerate().take(chunk.data.dim().0) {
                    cutouts
                        .slice_mut(s![slot, cut_ys.clone(), cut_xs.clone()])
                        .assign(&chunk.data.slice(s![p, chunk_ys.clone(), band_xs.clone()]));
                }
            }
        }
        let (cutouts, plane_stacks) = if cuts.len() == 1 {
            (cuts.pop().unwrap_or_default(), Vec::new())
        } else {
            // Luminance per 2x2 cell: the mean of the planes (NaN where any plane is NaN).
            let mut lum = cuts[0].clone();
            for plane in &cuts[1..] {
                lum += plane;
            }
            lum.mapv_inplace(|v| v / cuts.len() as f32);
            let stacks = cuts
                .into_iter()
                .enumerate()
                .map(|(p, cutouts)| PlaneStack {
                    cutouts,
                    scales: frames
                        .iter()
                        .map(|f| f.plane_scales.get(p).copied().unwrap_or(f.scale))
                        .collect(),
                })
                .collect();
            (lum, stacks)
        };
        let inputs = frames.iter().map(UsedFrame::input).collect();
        (
            TileStack {
                tile: *tile,
                margin,
                cutouts,
                frames: inputs,
            },
            plane_stacks,
        )
    }
}

/// `start..end` clipped to `0..len`.
fn clip(start: isize, end: isize, len: usize) -> Range<usize> {
    let s = start.clamp(0, len as isize) as usize;
    let e = end.clamp(0, len as isize) as usize;
    s..e.max(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use tlr_core::Shift;

    fn tiles(n: usize) -> Vec<TileBox> {
        (0..n)
            .map(|i| TileBox {
                index: i,
                x0: (i % 4) * 48,
                y0: (i / 4) * 48,
                w: 64,
                h: 64,
            })
            .collect()
    }

    #[test]
    fn one_band_when_the_window_fits() {
        let plan = ReadPlan::new(&tiles(16), 8, 10, 1 << 30);
        assert_eq!(plan.bands.len(), 1);
        let order: Vec<usize> = plan.tiles.iter().map(|t| t.index).collect();
        assert_eq!(order, (0..16).collect::<Vec<_>>());
        assert_eq!(plan.bands[0].len(), 4, "four tile rows");
    }

    #[test]
    fn bands_split_columns_and_reindex_in_band_order() {
        let plan = ReadPlan::new(&tiles(16), 8, 10, 400_000);
        assert!(plan.bands.len() > 1);
        // Every tile exactly once, indices equal positions, rows within a band top to bottom.
        assert_eq!(plan.tiles.len(), 16);
        for (i, t) in plan.tiles.iter().enumerate() {
            assert_eq!(t.index, i);
        }
        let mut boxes: Vec<(usize, usize)> = plan.tiles.iter().map(|t| (t.y0, t.x0)).collect();
        boxes.sort_unstable();
        boxes.dedup();
        assert_eq!(boxes.len(), 16);
        for band in &plan.bands {
            let ys: Vec<usize> = band.iter().map(|r| plan.tiles[r.start].y0).collect();
            assert!(ys.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_single_column_is_always_a_band() {
        let plan = ReadPlan::new(&tiles(4), 8, 1000, 1);
        assert_eq!(plan.bands.len(), 4);
    }

    #[test]
    fn rolling_windows_reproduce_direct_cut_outs() {
        use crate::source::MemoryFrames;
        // Tall enough for several full-height windows in a row (they share chunks).
        const ROWS: usize = 190;
        let frames: Vec<Array2<f32>> = (0..3)
            .map(|f| {
                Array2::from_shape_fn((ROWS, 120), |(r, c)| (f * 100_000 + r * 1000 + c) as f32)
            })
            .collect();
        let store = MemoryFrames::new(frames.clone()).unwrap();
        let used: Vec<UsedFrame> = (0..3)
            .map(|i| UsedFrame {
                index: i,
                weight: 1.0,
                scale: 1.0,
                shift: Shift::new(i as f32 * 3.4 - 2.0, 5.0 - i as f32 * 4.6),
                plane_scales: [1.0; 4],
            })
            .collect();
        let grid = tlr_core::tile::tile_grid(ROWS, 120, 40, 0.25).unwrap();
        let plan = ReadPlan::new(&grid, 6, 3, 40_000);
        let margin = plan.margin;
        for band in &plan.bands {
            let mut windows = Windows::new(3);
            for row in band {
                let tiles = &plan.tiles[row.clone()];
                let (next, errors) = windows.next(
                    &store,
                    &used,
                    &Need::of(tiles, margin),
                    (ROWS, 120),
                    &[false; 3],
                );
                assert!(errors.is_empty());
                // Consecutive rows share chunks instead of reading them again.
                let shared = next.frames.iter().zip(&windows.frames).any(|(new, old)| {
                    let (Some(new), Some(old)) = (new, old) else {
                        return false;
                    };
                    new.chunks
                        .iter()
                        .any(|c| old.chunks.iter().any(|o| Arc::ptr_eq(c, o)))
                });
                assert!(windows.frames.iter().all(Option::is_none) || shared);
                windows = next;
                for tile in tiles {
                    let (stack, _) = windows.cut(tile, &used, margin, 1, Vec::new());
                    for (slot, f) in used.iter().enumerate() {
                        let (oy, ox) = f.offset();
                        for ((r, c), v) in stack.cutouts.slice(s![slot, .., ..]).indexed_iter() {
                            let fy = tile.y0 as isize - margin as isize + oy + r as isize;
                            let fx = tile.x0 as isize - margin as isize + ox + c as isize;
                            let inside = (0..ROWS as isize).contains(&fy) && (0..120).contains(&fx);
                            if inside {
                                assert_eq!(*v, frames[slot][[fy as usize, fx as usize]]);
                            } else {
                                assert!(v.is_nan());
                            }
                        }
                    }
                }
            }
        }
    }

    /// A frame of `rows` x `cols` with a sky gradient, noise and Gaussian stars (deterministic).
    fn starry_frame(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut image = Array2::from_shape_fn((rows, cols), |(r, _)| 100.0 + 0.01 * r as f32);
        for v in image.iter_mut() {
            *v += 3.0 * (next() + next() + next() - 1.5);
        }
        for _ in 0..60 {
            let (cy, cx) = (next() * rows as f32, next() * cols as f32);
            let peak = 200.0 + 2000.0 * next();
            for r in (cy as usize).saturating_sub(8)..(cy as usize + 9).min(rows) {
                for c in (cx as usize).saturating_sub(8)..(cx as usize + 9).min(cols) {
                    let d2 = (r as f32 - cy).powi(2) + (c as f32 - cx).powi(2);
                    image[[r, c]] += peak * (-d2 / (2.0 * 1.5 * 1.5)).exp();
                }
            }
        }
        image
    }

    #[test]
    fn strip_pool_measures_frames_as_the_sequential_measurement_does() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let options = Arc::new(GlobalPass::new().options().clone());
        // 1200 rows: two strips per frame, so strips of consecutive frames interleave in the queue.
        let frames: Vec<Arc<Array2<f32>>> = (0..3)
            .map(|seed| Arc::new(starry_frame(1200, 300, seed)))
            .collect();
        assert!(MeasurePlan::new(1200, 300).strips().len() > 1);
        let measured = runtime.block_on(async {
            let pool = StripPool::new(2, Arc::clone(&options));
            let pending: Vec<PendingFrame> = frames
                .iter()
                .map(|image| {
                    let sky = measure_sky(image.view(), &options);
                    pool.submit(Arc::clone(image), sky, None)
                })
                .collect();
            let mut out = Vec::new();
            for frame in pending {
                out.push(frame.finish(&options).await.unwrap().0);
            }
            out
        });
        for (image, m) in frames.iter().zip(&measured) {
            assert!(m.stars > 10, "stars found: {}", m.stars);
            assert_eq!(*m, tlr_core::global::measure_frame(image.view(), &options));
        }
    }

    #[test]
    fn clip_handles_outside_ranges() {
        assert_eq!(clip(-5, 10, 8), 0..8);
        assert_eq!(clip(20, 30, 8), 8..8);
        assert_eq!(clip(-9, -1, 8), 0..0);
    }
}
