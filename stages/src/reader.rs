//! The frame reader: the one actor that touches frame data. It makes the global pass over all frames,
//! then reads every tile's stack (the tile plus a search margin, from every frame) and sends the stacks
//! downstream in a fixed order.
//!
//! Reading is sequential and block-wise: the tiles are grouped into blocks (whole tile rows when they fit
//! the memory budget, otherwise runs of tiles within a row); each frame is opened once per block and the
//! block's bounding region is read in one call, then cut into tile stacks one at a time, just before each is
//! sent. Every pixel region is therefore read once per run (not once per iteration), and memory is bounded by
//! the block budget plus the channel capacity, whatever the number of frames or tiles.
//! What it does not: any reconstruction (workers do that) or any blending (the accumulator does that).

use ndarray::{s, Array2, Array3};
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tlr_core::global::{FrameQuality, GlobalPass};
use tlr_core::operator::{FrameInput, TileStack};
use tlr_core::{Shift, TileBox};

use crate::error::StageError;
use crate::events::{Event, EventSink};
use crate::memory::MemoryGuard;
use crate::source::FrameStore;

/// One tile stack on its way to the workers, with its position in the application order.
#[derive(Debug)]
pub struct TileJob {
    /// Position in the order the accumulator applies results (0, 1, 2, …).
    pub seq: usize,
    /// The stack to reconstruct.
    pub stack: TileStack,
}

/// What the global pass found out about the frames.
#[derive(Debug, Clone)]
pub struct GlobalSummary {
    /// Per-frame measurements, index = frame index in the store (`None`: unreadable frame).
    pub qualities: Vec<Option<FrameQuality>>,
    /// Frames that take part, with their global weight, photometric scale and global shift.
    pub frames: Vec<UsedFrame>,
}

/// A frame that takes part in the reconstruction.
#[derive(Debug, Clone, Copy)]
pub struct UsedFrame {
    /// Index in the frame store.
    pub index: usize,
    /// Global weight G_f.
    pub weight: f32,
    /// Photometric scale (I' = I * scale).
    pub scale: f32,
    /// Global shift relative to the geometric reference frame.
    pub shift: Shift,
}

impl UsedFrame {
    /// The whole-pixel part of the global shift (applied by offsetting the read window).
    pub fn offset(&self) -> (isize, isize) {
        (self.shift.dy.round() as isize, self.shift.dx.round() as isize)
    }

    /// The sub-pixel rest of the global shift (left to the operator as its prior).
    pub fn prior(&self) -> Shift {
        let (oy, ox) = self.offset();
        Shift::new(self.shift.dy - oy as f32, self.shift.dx - ox as f32)
    }
}

/// How the reader groups tiles and how much it may hold at once.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// Tiles in application order.
    pub tiles: Vec<TileBox>,
    /// Search margin read around each tile, px.
    pub margin: usize,
    /// Groups of consecutive tiles (ranges into `tiles`) read together.
    pub blocks: Vec<Range<usize>>,
}

impl ReadPlan {
    /// Groups `tiles` (row-major order) into blocks whose bounding region, for all `frames`, stays within
    /// `budget_bytes` (f32 samples) where possible; a single tile is always allowed.
    pub fn new(
        tiles: Vec<TileBox>,
        margin: usize,
        frames: usize,
        drift_px: usize,
        budget_bytes: usize,
    ) -> Self {
        let bytes_of = |range: &Range<usize>| -> usize {
            let (mut y0, mut y1, mut x0, mut x1) = (usize::MAX, 0, usize::MAX, 0);
            for t in &tiles[range.clone()] {
                y0 = y0.min(t.y0);
                y1 = y1.max(t.y0 + t.h);
                x0 = x0.min(t.x0);
                x1 = x1.max(t.x0 + t.w);
            }
            let pad = 2 * (margin + drift_px);
            (y1 - y0 + pad) * (x1 - x0 + pad) * frames * std::mem::size_of::<f32>()
        };
        let mut blocks = Vec::new();
        let mut start = 0;
        for end in 1..=tiles.len() {
            let candidate = start..end;
            if end - start > 1 && bytes_of(&candidate) > budget_bytes {
                blocks.push(start..end - 1);
                start = end - 1;
            }
        }
        if start < tiles.len() {
            blocks.push(start..tiles.len());
        }
        Self {
            tiles,
            margin,
            blocks,
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

    /// The global pass: every frame once, one at a time (one frame in memory), on a blocking thread.
    ///
    /// # Errors
    /// Cancellation, an unreadable frame with `strict`, or no usable frame at all.
    pub async fn global_pass(
        &self,
        cancel: &CancellationToken,
    ) -> Result<GlobalSummary, StageError> {
        let total = self.store.len();
        let mut pass = Some(GlobalPass::new());
        let mut qualities = Vec::with_capacity(total);
        for index in 0..total {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled);
            }
            self.memory.check()?;
            let store = Arc::clone(&self.store);
            let mut state = pass.take().expect("global pass state is put back every round");
            // cfitsio and the measurement are blocking work: keep them off the async threads.
            let (state, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = store.read_full(index).map(|image| state.add_frame(image.view()));
                (state, outcome)
            })
            .await
            .map_err(|source| StageError::Join {
                stage: "reader",
                source,
            })?;
            pass = Some(state);
            match outcome {
                Ok(quality) => qualities.push(Some(quality)),
                Err(error) if self.strict => return Err(error),
                Err(error) => {
                    (self.events)(&Event::FrameSkipped {
                        path: self.store.meta(index).label,
                        reason: error.to_string(),
                    });
                    qualities.push(None);
                }
            }
            (self.events)(&Event::GlobalFrame {
                done: index + 1,
                total,
            });
        }
        let frames = select_frames(&qualities, self.strict, |index, reason| {
            (self.events)(&Event::FrameSkipped {
                path: self.store.meta(index).label,
                reason,
            })
        })?;
        Ok(GlobalSummary { qualities, frames })
    }

    /// Reads every tile stack of `plan` in order and sends it to `tile_tx`.
    ///
    /// Returns the number of stacks sent. A closed `tile_tx` means downstream stopped (it reports why), so
    /// the reader then returns quietly.
    ///
    /// # Errors
    /// Cancellation, the memory limit, or an unreadable frame with `strict`.
    pub async fn run(
        self,
        plan: ReadPlan,
        frames: Vec<UsedFrame>,
        tile_tx: mpsc::Sender<TileJob>,
        cancel: CancellationToken,
    ) -> Result<usize, StageError> {
        let frames = Arc::new(frames);
        let (rows, cols) = self.store.shape();
        let mut failed = vec![false; frames.len()];
        let mut sent = 0usize;
        for block in &plan.blocks {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled);
            }
            self.memory.check()?;
            let tiles = plan.tiles[block.clone()].to_vec();
            let store = Arc::clone(&self.store);
            let block_frames = Arc::clone(&frames);
            let margin = plan.margin;
            let failed_before = failed.clone();
            let read = tokio::task::spawn_blocking(move || {
                BlockData::read(
                    store.as_ref(),
                    &tiles,
                    &block_frames,
                    margin,
                    (rows, cols),
                    &failed_before,
                )
            })
            .await
            .map_err(|source| StageError::Join {
                stage: "reader",
                source,
            })?;
            let (data, errors) = read;
            for (slot, error) in errors {
                if self.strict {
                    return Err(error);
                }
                failed[slot] = true;
                (self.events)(&Event::Warning {
                    message: format!(
                        "{error}; the frame is left out of this and all later tiles"
                    ),
                });
            }
            for tile in &plan.tiles[block.clone()] {
                let stack = data.cut(tile, &frames, plan.margin);
                let job = TileJob { seq: sent, stack };
                // The send is the back-pressure: it waits while the workers are busy. Only the reader
                // watches the token; downstream stages stop when this channel closes.
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(StageError::Cancelled),
                    result = tile_tx.send(job) => {
                        if result.is_err() {
                            return Ok(sent);
                        }
                    }
                }
                sent += 1;
            }
        }
        // Dropping `tile_tx` here closes the channel: that is the workers' signal to finish.
        Ok(sent)
    }
}

/// Picks the frames that take part: readable, globally registered, with a finite weight.
fn select_frames(
    qualities: &[Option<FrameQuality>],
    strict: bool,
    mut skipped: impl FnMut(usize, String),
) -> Result<Vec<UsedFrame>, StageError> {
    let measured: Vec<(usize, FrameQuality)> = qualities
        .iter()
        .enumerate()
        .filter_map(|(i, q)| q.clone().map(|q| (i, q)))
        .collect();
    let only: Vec<FrameQuality> = measured.iter().map(|(_, q)| q.clone()).collect();
    let weights = tlr_core::global::global_weights(&only);
    let scales = tlr_core::global::photometric_scales(&only);
    let mut used = Vec::with_capacity(measured.len());
    for (k, (index, quality)) in measured.iter().enumerate() {
        let reason = if !quality.shift_ok {
            Some("global registration failed (too few matching stars)".to_string())
        } else if !(weights[k].is_finite() && weights[k] > 0.0) {
            Some("no usable global weight".to_string())
        } else if !(scales[k].is_finite() && scales[k] > 0.0) {
            Some("background level unusable for normalisation".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) if strict => {
                return Err(StageError::input(
                    "reader",
                    format!("frame {index}: {reason} (--strict)"),
                ))
            }
            Some(reason) => skipped(*index, reason),
            None => used.push(UsedFrame {
                index: *index,
                weight: weights[k],
                scale: scales[k],
                shift: quality.shift,
            }),
        }
    }
    if used.is_empty() {
        return Err(StageError::input(
            "reader",
            "no frame could be used: every frame failed to read or to register globally",
        ));
    }
    Ok(used)
}

/// One block's pixels: per used frame, the bounding region of the block's tiles (offset by the frame's
/// whole-pixel global shift) and where that region starts in frame coordinates.
struct BlockData {
    regions: Vec<Option<(Array2<f32>, isize, isize)>>,
}

impl BlockData {
    /// Reads the block from every used frame, sequentially. Frames already failed, or failing now, get no
    /// data (their cut-outs stay NaN); the new failures are returned with their slot in `frames`.
    fn read(
        store: &dyn FrameStore,
        tiles: &[TileBox],
        frames: &[UsedFrame],
        margin: usize,
        (rows, cols): (usize, usize),
        failed: &[bool],
    ) -> (Self, Vec<(usize, StageError)>) {
        let m = margin as isize;
        let y0 = tiles.iter().map(|t| t.y0).min().unwrap_or(0) as isize - m;
        let y1 = tiles.iter().map(|t| t.y0 + t.h).max().unwrap_or(0) as isize + m;
        let x0 = tiles.iter().map(|t| t.x0).min().unwrap_or(0) as isize - m;
        let x1 = tiles.iter().map(|t| t.x0 + t.w).max().unwrap_or(0) as isize + m;
        let mut regions = Vec::with_capacity(frames.len());
        let mut errors = Vec::new();
        for (slot, frame) in frames.iter().enumerate() {
            if failed[slot] {
                regions.push(None);
                continue;
            }
            let (oy, ox) = frame.offset();
            let ry = clip(y0 + oy, y1 + oy, rows);
            let rx = clip(x0 + ox, x1 + ox, cols);
            if ry.is_empty() || rx.is_empty() {
                regions.push(None);
                continue;
            }
            let (start_y, start_x) = (ry.start as isize, rx.start as isize);
            match store.read_regions(frame.index, &[(ry, rx)]) {
                Ok(mut parts) => regions.push(parts.pop().map(|a| (a, start_y, start_x))),
                Err(error) => {
                    errors.push((slot, error));
                    regions.push(None);
                }
            }
        }
        (Self { regions }, errors)
    }

    /// The tile stack of `tile`: each frame's cut-out of the tile plus margin, shifted by the frame's
    /// whole-pixel offset; pixels outside the frame are NaN.
    fn cut(&self, tile: &TileBox, frames: &[UsedFrame], margin: usize) -> TileStack {
        let (h, w) = (tile.h + 2 * margin, tile.w + 2 * margin);
        let mut cutouts = Array3::from_elem((frames.len(), h, w), f32::NAN);
        for (slot, frame) in frames.iter().enumerate() {
            let Some((region, ry0, rx0)) = &self.regions[slot] else {
                continue;
            };
            let (oy, ox) = frame.offset();
            // Cut-out origin in frame coordinates.
            let cy0 = tile.y0 as isize - margin as isize + oy;
            let cx0 = tile.x0 as isize - margin as isize + ox;
            // Intersect the cut-out with the region that was read.
            let (rh, rw) = region.dim();
            let ys = cy0.max(*ry0)..(cy0 + h as isize).min(ry0 + rh as isize);
            let xs = cx0.max(*rx0)..(cx0 + w as isize).min(rx0 + rw as isize);
            if ys.is_empty() || xs.is_empty() {
                continue;
            }
            let src = region.slice(s![
                (ys.start - ry0) as usize..(ys.end - ry0) as usize,
                (xs.start - rx0) as usize..(xs.end - rx0) as usize
            ]);
            cutouts
                .slice_mut(s![
                    slot,
                    (ys.start - cy0) as usize..(ys.end - cy0) as usize,
                    (xs.start - cx0) as usize..(xs.end - cx0) as usize
                ])
                .assign(&src);
        }
        let inputs = frames
            .iter()
            .map(|f| FrameInput {
                index: f.index,
                weight: f.weight,
                scale: f.scale,
                prior_shift: f.prior(),
            })
            .collect();
        TileStack {
            tile: *tile,
            margin,
            cutouts,
            frames: inputs,
        }
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
    fn blocks_cover_all_tiles_in_order_within_budget() {
        let plan = ReadPlan::new(tiles(16), 8, 10, 0, 400_000);
        let flat: Vec<usize> = plan.blocks.iter().flat_map(|b| b.clone()).collect();
        assert_eq!(flat, (0..16).collect::<Vec<_>>());
        assert!(plan.blocks.len() > 1);
    }

    #[test]
    fn a_single_tile_is_always_a_block() {
        let plan = ReadPlan::new(tiles(3), 8, 1000, 0, 1);
        assert_eq!(plan.blocks, vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn clip_handles_outside_ranges() {
        assert_eq!(clip(-5, 10, 8), 0..8);
        assert_eq!(clip(20, 30, 8), 8..8);
        assert_eq!(clip(-9, -1, 8), 0..0);
    }
}
