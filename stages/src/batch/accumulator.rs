//! The ordered accumulator: the one task that owns the output image. It receives tile results in any
//! order, keeps them in a reorder buffer, and applies them to the mosaic strictly in sequence order, so the
//! floating-point sums — and the output bytes — are the same for any worker count and completion order.
//!
//! The reorder buffer is bounded by the window semaphore shared with the workers: a result's permit is
//! released only when the tile has been applied. In colour mode each Bayer plane is blended by a mosaic
//! of its own (same tiles, same weights). What it does not: reconstruct, read or write files.

use std::collections::BTreeMap;
use tokio::sync::mpsc;

use tlr_core::mosaic::{psi, Mosaic};
use tlr_core::operator::TileResult;
use tlr_core::TileBox;

use super::workers::TileDone;
use crate::error::StageError;
use crate::events::{Event, EventSink};
use crate::report::TileSummary;

/// What the accumulator hands back.
pub struct Accumulated {
    /// The blended image (NaN where no valid tile reached).
    pub image: ndarray::Array2<f32>,
    /// Colour mode: the blended planes `(4, rows, cols)` (R, G1, G2, B); `None` for mono.
    pub planes: Option<ndarray::Array3<f32>>,
    /// One summary per tile, in tile order.
    pub tiles: Vec<TileSummary>,
}

/// The accumulator stage.
pub struct Accumulator {
    mosaic: Mosaic,
    planes: Vec<Mosaic>,
    total: usize,
    variance_sigma: f32,
    events: EventSink,
}

impl Accumulator {
    /// An accumulator for `tiles` of an image of `rows` x `cols`; `variance_sigma` is
    /// `registration.local_tiles.variance_window_sigma` (psi's sigma).
    pub fn new(
        rows: usize,
        cols: usize,
        tiles: &[TileBox],
        variance_sigma: f32,
        events: EventSink,
    ) -> Self {
        Self {
            mosaic: Mosaic::new(rows, cols, tiles),
            planes: Vec::new(),
            total: tiles.len(),
            variance_sigma,
            events,
        }
    }

    /// Blends `planes` colour planes too (one mosaic each, same tiles and weights as the image).
    pub fn with_planes(
        mut self,
        planes: usize,
        rows: usize,
        cols: usize,
        tiles: &[TileBox],
    ) -> Self {
        self.planes = (0..planes)
            .map(|_| Mosaic::new(rows, cols, tiles))
            .collect();
        self
    }

    /// Applies results from `result_rx` in sequence order until the channel closes.
    ///
    /// # Errors
    /// When results are missing at the end (a stage stopped early) or a sequence number repeats.
    pub async fn run(
        mut self,
        mut result_rx: mpsc::Receiver<TileDone>,
    ) -> Result<Accumulated, StageError> {
        let mut pending: BTreeMap<usize, TileDone> = BTreeMap::new();
        let mut next = 0usize;
        let mut tiles = Vec::with_capacity(self.total);
        while let Some(done) = result_rx.recv().await {
            if done.seq < next || pending.contains_key(&done.seq) {
                return Err(StageError::input(
                    "accumulator",
                    format!("tile sequence number {} arrived twice", done.seq),
                ));
            }
            pending.insert(done.seq, done);
            while let Some(ready) = pending.remove(&next) {
                tiles.push(self.apply(ready.result, &ready.planes));
                // Releasing the permit frees a place in the reorder window for the workers.
                drop(ready.permit);
                next += 1;
                (self.events)(&Event::TileDone {
                    done: next,
                    total: self.total,
                    valid: tiles.last().is_some_and(|t: &TileSummary| t.valid),
                });
            }
        }
        if next != self.total || !pending.is_empty() {
            return Err(StageError::input(
                "accumulator",
                format!(
                    "only {next} of {} tiles arrived (the run stopped early)",
                    self.total
                ),
            ));
        }
        let planes = if self.planes.is_empty() {
            None
        } else {
            let finished: Vec<ndarray::Array2<f32>> =
                self.planes.into_iter().map(Mosaic::finish).collect();
            let views: Vec<ndarray::ArrayView2<f32>> = finished.iter().map(|p| p.view()).collect();
            Some(
                ndarray::stack(ndarray::Axis(0), &views)
                    .map_err(|e| StageError::input("accumulator", format!("colour planes: {e}")))?,
            )
        };
        Ok(Accumulated {
            image: self.mosaic.finish(),
            planes,
            tiles,
        })
    }

    /// Adds one result to the mosaic (valid tiles only) and returns its summary.
    fn apply(&mut self, result: TileResult, planes: &[ndarray::Array2<f32>]) -> TileSummary {
        let weight = psi(result.warp_variance, self.variance_sigma);
        if result.valid {
            self.mosaic.add(&result.tile, result.image.view(), weight);
            for (mosaic, plane) in self.planes.iter_mut().zip(planes) {
                mosaic.add(&result.tile, plane.view(), weight);
            }
        }
        TileSummary {
            tile: result.tile,
            valid: result.valid,
            invalid_reason: result.invalid_reason,
            frames_used: result.frames_used,
            mean_cc: result.mean_cc,
            warp_variance: result.warp_variance,
            mean_shift: result.mean_shift,
            iterations: result.iterations,
            fallback: result.fallback,
            psi: weight,
            frames: result.frames,
        }
    }
}
