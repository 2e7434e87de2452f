//! A tile job and the rolling frame windows it is cut from.
//!
//! The reader ([`super::reader`]) holds, per used frame, the frame rows the current tile row needs (the
//! tiles plus a search margin, shifted by the frame's whole-pixel offset) as chunks of rows as they were
//! read; the next tile row's windows share the chunks they still need and read only the new rows
//! ([`Windows::next`]). A [`TileJob`] carries its row's windows (shared) to a worker, which cuts its own
//! stack from them ([`TileJob::cut`]), so copying fans out with the compute and the reader does I/O only.
//! In colour mode windows hold the four planes of every frame; a stack's cut-outs are the luminance and
//! the job also yields the four plane cut-outs with their per-channel photometric scales.
//! What it does not: decide the reading order ([`super::reader::ReadPlan`]) or reconstruct anything.

use ndarray::{s, Array3};
use std::ops::Range;
use std::sync::Arc;

use tlr_core::bayer::{CfaPattern, Color};
use tlr_core::global::FrameTransform;
use tlr_core::operator::{FrameInput, OperatorParams, PlaneStack, TileStack};
use tlr_core::TileBox;

use super::global_pass::UsedFrame;
use crate::error::StageError;
use crate::source::FrameStore;

/// One tile on its way to the workers, with its position in the application order. It carries the
/// frame windows of its tile row (shared with the other tiles of the row), not a stack: the worker cuts
/// its own stack ([`TileJob::cut`]), so the reader does I/O only and copying fans out with the compute.
pub struct TileJob {
    /// Position in the order the accumulator applies results (0, 1, 2, …).
    pub seq: usize,
    /// The tile.
    pub tile: TileBox,
    pub(super) windows: Arc<Windows>,
    pub(super) frames: Arc<Vec<UsedFrame>>,
    /// Per frame (same order), its linear motion relative to the output geometry: the tile's prior is
    /// its value at the tile centre (empty: the frames' translations).
    pub(super) geometry: Arc<Vec<FrameTransform>>,
    pub(super) margin: usize,
    pub(super) planes: usize,
    /// The pattern at frame pixel (0, 0) when the planes were demosaiced from a mosaic (R, G, B): the
    /// planes' own samples are drizzled ([`tlr_core::operator::drizzle`]).
    pub(super) mosaic: Option<CfaPattern>,
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
        self.windows.cut(
            &self.tile,
            &self.frames,
            &self.geometry,
            self.margin,
            (self.planes, self.mosaic),
            spare,
        )
    }

    /// How many stack buffers [`TileJob::cut`] fills (1 for mono, the planes for colour).
    pub fn buffers(&self) -> usize {
        self.planes.max(1)
    }
}

/// The reference-frame rectangle a tile row needs (tiles plus margin), before frame offsets.
pub(super) struct Need {
    rows: Range<isize>,
    cols: Range<isize>,
}

impl Need {
    pub(super) fn of(tiles: &[TileBox], margin: usize) -> Self {
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
pub(super) struct Windows {
    frames: Vec<Option<Window>>,
}

impl Windows {
    pub(super) fn new(frames: usize) -> Self {
        Self {
            frames: (0..frames).map(|_| None).collect(),
        }
    }

    /// The windows of the next tile row, for what `need` asks for: every frame keeps the chunks it still
    /// needs (shared, no copy) and reads the rows it does not hold yet (one file visit per frame). It
    /// only reads `self`, so workers may go on cutting from it meanwhile, and no rows are ever moved.
    /// Returns the new windows and the frames that failed now, by slot (their window is gone).
    pub(super) fn next(
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
        geometry: &[FrameTransform],
        margin: usize,
        (planes, mosaic): (usize, Option<CfaPattern>),
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
        // Per frame, the mosaic's pattern at its cut-out's first pixel.
        let mut patterns = Vec::with_capacity(frames.len());
        for (slot, frame) in frames.iter().enumerate() {
            let (oy, ox) = frame.offset();
            // Cut-out origin in frame coordinates.
            let cy0 = tile.y0 as isize - margin as isize + oy;
            let cx0 = tile.x0 as isize - margin as isize + ox;
            patterns.extend(
                mosaic.map(|p| p.shifted(cy0.rem_euclid(2) as usize, cx0.rem_euclid(2) as usize)),
            );
            let Some(window) = &self.frames[slot] else {
                continue;
            };
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
                    own: (patterns.len() == frames.len())
                        .then(|| [Color::Red, Color::Green, Color::Blue].get(p).copied())
                        .flatten()
                        .map(|colour| patterns.iter().map(|q| q.own_samples(colour)).collect()),
                })
                .collect();
            (lum, stacks)
        };
        let inputs = frames
            .iter()
            .enumerate()
            .map(|(slot, f)| tile_input(f, geometry.get(slot), tile))
            .collect();
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

/// The operator's input for `frame` in `tile`: its prior is the frame's linear motion relative to the
/// output geometry at the tile centre (rotation and stretch give every tile its own prior), minus the
/// whole-pixel offset its windows are read at; without a geometry, the frame's translation.
fn tile_input(frame: &UsedFrame, geometry: Option<&FrameTransform>, tile: &TileBox) -> FrameInput {
    let mut input = frame.input();
    if let Some(g) = geometry {
        input.prior_shift = g.tile_prior(tile, frame.offset());
    }
    input
}

/// The operator settings for the tiles of a run of `frames` used frames: `base`, with star-less tiles
/// (`surface`) weighted by their own sharpness, per-tile best-N `percent` %
/// (`registration.local_tiles.keep_best_percent`), and `min_valid_frames` lowered to the frames
/// best-N keeps, so that asking for the best few does not invalidate every tile.
pub(super) fn tile_params(
    base: OperatorParams,
    surface: bool,
    percent: f64,
    frames: usize,
) -> OperatorParams {
    let mut params = OperatorParams {
        tile_sharpness: surface,
        keep_best_percent: percent as f32,
        ..base
    };
    if percent < 100.0 {
        let keep = tlr_core::quality::keep_best(&vec![0.0; frames], percent);
        let kept = keep.iter().filter(|k| **k).count();
        params.min_valid_frames = params.min_valid_frames.min(kept.max(1));
    }
    params
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
    use crate::batch::reader::ReadPlan;
    use ndarray::Array2;
    use tlr_core::Shift;

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
                levels: [None; 4],
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
                    let (stack, _) = windows.cut(tile, &used, &[], margin, (1, None), Vec::new());
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
    #[test]
    fn clip_handles_outside_ranges() {
        assert_eq!(clip(-5, 10, 8), 0..8);
        assert_eq!(clip(20, 30, 8), 8..8);
        assert_eq!(clip(-9, -1, 8), 0..0);
    }
}
