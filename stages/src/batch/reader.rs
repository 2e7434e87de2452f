//! The frame reader: the one actor that reads frames (owns all frame I/O). After the global pass
//! ([`super::global_pass`], also a method of [`FrameReader`]), it reads every tile row's frame windows (the
//! tiles plus a search margin, from every frame) and sends one job per tile downstream, in a fixed order.
//!
//! Reading is sequential and row-wise ([`ReadPlan`]): tiles are read in column bands (one band when the
//! budget allows), tile row by tile row from the top. Each frame keeps a rolling window of the frame rows
//! the current tile row needs ([`super::job`]), so every frame row is read once per band (not once per
//! tile, nor per iteration), and no row is ever copied to move a window on. A job carries its tile row's
//! windows (shared), and the worker cuts its own stack from them. The reader builds the next row's
//! windows while workers still cut from the current ones, which go once their last stack has been cut,
//! so memory is bounded by the window budget, one row's new rows and the channel capacity.
//!
//! The first tile row is read while both workers wait (nothing else can run yet), so its rows are not
//! read twice: the global pass, which reads every frame whole anyway, keeps each frame's top rows
//! ([`TopRows`], within the window budget), and the first tile row's windows are cut from them; the
//! kept rows go as soon as that row is read. A region outside them is read from the file as usual.
//! What it does not: any reconstruction (workers do that) or any blending (the accumulator does that).

use ndarray::{s, Array3};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tlr_core::global::FrameTransform;
use tlr_core::TileBox;

use super::global_pass::UsedFrame;
use super::job::{Need, TileJob, Windows};
use crate::error::{Stage, StageError};
use crate::events::{Event, EventSink};
use crate::memory::MemoryGuard;
use crate::source::{FrameMeta, FrameStore};

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
    pub(super) store: Arc<dyn FrameStore>,
    pub(super) events: EventSink,
    pub(super) strict: bool,
    pub(super) memory: MemoryGuard,
    /// Top rows of every frame kept by the global pass for the first tile row (`None`: keep none).
    pub(super) top_rows: Option<Arc<TopRows>>,
    /// `registration.global`: star matching or correlation, and best-N % selection.
    pub(super) global: tlr_core::config::GlobalRegistrationConfig,
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
            top_rows: None,
            global: Default::default(),
        }
    }

    /// Sets how the global pass places frames and which it keeps (`registration.global`).
    pub fn with_global(mut self, global: tlr_core::config::GlobalRegistrationConfig) -> Self {
        self.global = global;
        self
    }

    /// Makes the global pass keep the top `rows` rows of every frame (all planes, all columns) for the
    /// first tile row ([`TopRows`]); 0 keeps none.
    pub fn keep_top_rows(mut self, rows: usize) -> Self {
        self.top_rows = (rows > 0).then(|| Arc::new(TopRows::new(self.store.len(), rows)));
        self
    }

    /// Reads every tile stack of `plan` in order and sends it to `tile_tx`.
    ///
    /// Returns which frames failed on the way ([`TilePhase`]). A closed `tile_tx`
    /// means downstream stopped (it reports why), so the reader then returns quietly.
    ///
    /// # Errors
    /// Cancellation, the memory limit, or an unreadable frame with `strict`.
    pub async fn run(
        self,
        plan: ReadPlan,
        frames: Vec<UsedFrame>,
        geometry: Vec<FrameTransform>,
        tile_tx: mpsc::Sender<TileJob>,
        cancel: CancellationToken,
    ) -> Result<TilePhase, StageError> {
        let frames = Arc::new(frames);
        let geometry = Arc::new(geometry);
        // The first tile row is cut from the rows the global pass kept, where they suffice.
        let store: Arc<dyn FrameStore> = match &self.top_rows {
            Some(top) => Arc::new(WithTopRows {
                store: Arc::clone(&self.store),
                top: Arc::clone(top),
            }),
            None => Arc::clone(&self.store),
        };
        let shape = self.store.shape();
        let planes = self.store.planes();
        let mosaic = self.store.mosaic();
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
                    Arc::clone(&store),
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
                    stage: Stage::Reader,
                    source,
                })?;
                windows = Arc::new(next);
                if let Some(top) = &self.top_rows {
                    top.clear(); // only the first tile row is read while no worker has anything to do
                }
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
                        geometry: Arc::clone(&geometry),
                        margin: plan.margin,
                        planes,
                        mosaic,
                    };
                    // The send is the back-pressure: it waits while the workers are busy. Only the
                    // reader watches the token; downstream stages stop when this channel closes.
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Err(StageError::Cancelled),
                        result = tile_tx.send(job) => {
                            if result.is_err() {
                                return Ok(TilePhase::new(&frames, &failed));
                            }
                        }
                    }
                    sent += 1;
                }
            }
        }
        // Dropping `tile_tx` here closes the channel: that is the workers' signal to finish.
        Ok(TilePhase::new(&frames, &failed))
    }
}

/// The top rows of every frame, kept from the global pass's whole-frame read for the first tile row,
/// by store index: `(planes, rows, cols)` (fewer rows for a shorter frame). Each frame's rows go once
/// the first tile row took them, the rest when that row is read ([`TopRows::clear`]).
pub struct TopRows {
    rows: usize,
    frames: Mutex<Vec<Option<Array3<f32>>>>,
}

impl TopRows {
    fn new(frames: usize, rows: usize) -> Self {
        Self {
            rows,
            frames: Mutex::new((0..frames).map(|_| None).collect()),
        }
    }

    /// Keeps (a copy of) the top rows of frame `index`, whose planes the global pass read.
    pub(super) fn keep(&self, index: usize, planes: &Array3<f32>) {
        let rows = self.rows.min(planes.dim().1);
        let top = planes.slice(s![.., ..rows, ..]).to_owned();
        if let Some(slot) = self.lock().get_mut(index) {
            *slot = Some(top);
        }
    }

    /// The region `rows` x `cols` of frame `index` when the kept rows hold all of it; the frame's kept
    /// rows go either way (the first tile row asks each frame once).
    fn take(&self, index: usize, rows: &Range<usize>, cols: &Range<usize>) -> Option<Array3<f32>> {
        let top = self.lock().get_mut(index)?.take()?;
        let (_, held_rows, held_cols) = top.dim();
        (rows.end <= held_rows && cols.end <= held_cols)
            .then(|| top.slice(s![.., rows.clone(), cols.clone()]).to_owned())
    }

    /// Drops every kept row.
    fn clear(&self) {
        self.lock().iter_mut().for_each(|slot| *slot = None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Array3<f32>>>> {
        // A panic while holding the lock cannot leave the list half-changed: recover it.
        self.frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A frame store that answers a one-region read from [`TopRows`] when they hold it (the same pixels the
/// file gives: they were read from it by the global pass), and from the store otherwise.
struct WithTopRows {
    store: Arc<dyn FrameStore>,
    top: Arc<TopRows>,
}

impl FrameStore for WithTopRows {
    fn len(&self) -> usize {
        self.store.len()
    }
    fn shape(&self) -> (usize, usize) {
        self.store.shape()
    }
    fn meta(&self, index: usize) -> FrameMeta {
        self.store.meta(index)
    }
    fn read_full(&self, index: usize) -> Result<ndarray::Array2<f32>, StageError> {
        self.store.read_full(index)
    }
    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<ndarray::Array2<f32>>, StageError> {
        self.store.read_regions(index, regions)
    }
    fn planes(&self) -> usize {
        self.store.planes()
    }
    fn mosaic(&self) -> Option<tlr_core::bayer::CfaPattern> {
        self.store.mosaic()
    }
    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        self.store.read_full_planes(index)
    }
    fn saturation_levels(
        &self,
        index: usize,
        planes: ndarray::ArrayView3<f32>,
    ) -> Vec<Option<f32>> {
        self.store.saturation_levels(index, planes)
    }
    fn read_plane_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array3<f32>>, StageError> {
        if let [(rows, cols)] = regions {
            if let Some(region) = self.top.take(index, rows, cols) {
                return Ok(vec![region]);
            }
        }
        self.store.read_plane_regions(index, regions)
    }
}

/// What the reader's tile phase found: the frames that failed to read on the way.
#[derive(Debug, Clone, Default)]
pub struct TilePhase {
    /// Store indices of the frames that failed during the tile phase. They are left out of every tile
    /// read after the failure and are counted as unused (NCOMBINE, EXPTIME, summary, report).
    pub failed: Vec<usize>,
}

impl TilePhase {
    fn new(frames: &[UsedFrame], failed: &[bool]) -> Self {
        Self {
            failed: frames
                .iter()
                .zip(failed)
                .filter(|(_, &f)| f)
                .map(|(frame, _)| frame.index)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn frames(n: usize, rows: usize, cols: usize) -> Arc<dyn FrameStore> {
        let frames = (0..n)
            .map(|k| {
                ndarray::Array2::from_shape_fn((rows, cols), |(r, c)| {
                    (k * 10_000 + r * 100 + c) as f32
                })
            })
            .collect();
        Arc::new(crate::source::MemoryFrames::new(frames).unwrap())
    }

    #[test]
    fn top_rows_give_the_pixels_the_store_gives_and_go_once_taken() {
        let store = frames(3, 40, 30);
        let top = Arc::new(TopRows::new(store.len(), 12));
        for index in 0..store.len() {
            top.keep(index, &store.read_full_planes(index).unwrap());
        }
        let with_top = WithTopRows {
            store: Arc::clone(&store),
            top: Arc::clone(&top),
        };
        // Inside the kept rows (served from them), then reaching past them (read from the store).
        for (index, region) in [
            (0, (2..12, 5..25)),
            (1, (0..13, 0..30)),
            (2, (3..4, 29..30)),
        ] {
            let expected = store
                .read_plane_regions(index, std::slice::from_ref(&region))
                .unwrap();
            let got = with_top.read_plane_regions(index, &[region]).unwrap();
            assert_eq!(got, expected, "frame {index}");
        }
        // Each frame's kept rows went with its first read, whether they served it or not.
        assert!(top.lock().iter().all(Option::is_none));
        let again = with_top.read_plane_regions(0, &[(2..12, 5..25)]).unwrap();
        assert_eq!(
            again,
            store.read_plane_regions(0, &[(2..12, 5..25)]).unwrap()
        );
    }

    #[test]
    fn top_rows_of_a_short_frame_are_the_whole_frame() {
        let store = frames(1, 8, 6);
        let top = TopRows::new(1, 100);
        top.keep(0, &store.read_full_planes(0).unwrap());
        assert_eq!(
            top.take(0, &(0..8), &(0..6)),
            Some(store.read_full_planes(0).unwrap())
        );
    }

    #[test]
    fn a_single_column_is_always_a_band() {
        let plan = ReadPlan::new(&tiles(4), 8, 1000, 1);
        assert_eq!(plan.bands.len(), 4);
    }
}
