//! The tile-worker pool: runs the per-tile operator on at most `parallel_tiles` blocking threads at once.
//!
//! Parallelism is over tiles only (methodology v4). Each stack is reconstructed by one blocking job;
//! results leave in completion order, tagged with their sequence number, and the accumulator restores the
//! order. A semaphore shared with the accumulator bounds how far work may run ahead of the oldest tile not
//! yet applied (the reorder window), so one slow tile causes back-pressure, not unbounded buffering.
//! In colour mode a job also carries the Bayer planes: the same blocking job reconstructs them after the
//! luminance, with the luminance's shifts and weights ([`tlr_core::operator::reconstruct_planes`]).
//! What it does not: read files, touch the output, or parallelise inside a tile.

use std::num::NonZeroUsize;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use tlr_core::operator::{OperatorParams, TileResult, TileStack};

use crate::error::StageError;
use crate::reader::TileJob;

/// The per-tile computation. The pipeline uses the core operator; tests wrap it (e.g. to add delays).
pub type TileProcessor = Arc<dyn Fn(&TileStack) -> TileResult + Send + Sync>;

/// One reconstructed tile on its way to the accumulator.
pub struct TileDone {
    /// The tile's sequence number (application order).
    pub seq: usize,
    /// The operator's result.
    pub result: TileResult,
    /// Colour mode: the reconstructed planes (R, G1, G2, B), each `(h, w)`; empty for mono.
    pub planes: Vec<ndarray::Array2<f32>>,
    /// Holds one place of the reorder window until the accumulator has applied the tile.
    pub permit: OwnedSemaphorePermit,
}

/// The worker pool stage.
pub struct Workers {
    parallel_tiles: NonZeroUsize,
    processor: TileProcessor,
    window: Arc<Semaphore>,
    plane_params: Arc<OperatorParams>,
}

impl Workers {
    /// A pool of `parallel_tiles` workers running `processor`; `window` bounds tiles in flight plus tiles
    /// waiting in the accumulator's reorder buffer.
    pub fn new(
        parallel_tiles: NonZeroUsize,
        processor: TileProcessor,
        window: Arc<Semaphore>,
    ) -> Self {
        Self {
            parallel_tiles,
            processor,
            window,
            plane_params: Arc::new(OperatorParams::default()),
        }
    }

    /// The operator settings used to combine colour planes (rejection threshold, rounds).
    pub fn with_plane_params(mut self, params: OperatorParams) -> Self {
        self.plane_params = Arc::new(params);
        self
    }

    /// Takes stacks from `tile_rx` until it closes, sends results to `result_tx`.
    ///
    /// Returns the number of tiles processed.
    ///
    /// # Errors
    /// A worker that panicked ([`StageError::Join`]); the remaining jobs are then aborted.
    pub async fn run(
        self,
        mut tile_rx: mpsc::Receiver<TileJob>,
        result_tx: mpsc::Sender<TileDone>,
    ) -> Result<usize, StageError> {
        let mut running: JoinSet<TileDone> = JoinSet::new();
        let mut processed = 0usize;
        loop {
            // Keep at most `parallel_tiles` jobs running: wait for one to finish before taking more input.
            while running.len() >= self.parallel_tiles.get() {
                if !self.forward(&mut running, &result_tx).await? {
                    return Ok(processed);
                }
                processed += 1;
            }
            let Some(job) = tile_rx.recv().await else {
                break; // the reader closed the channel: drain what is in flight, then stop
            };
            // A place in the reorder window; waits while the accumulator is stuck behind a slow tile.
            let permit = Arc::clone(&self.window)
                .acquire_owned()
                .await
                .map_err(|_| StageError::input("workers", "reorder window closed"))?;
            let processor = Arc::clone(&self.processor);
            let plane_params = Arc::clone(&self.plane_params);
            // CPU work runs on blocking threads; the bound above keeps their number at parallel_tiles.
            running.spawn_blocking(move || {
                let result = processor(&job.stack);
                let planes = if job.planes.is_empty() {
                    Vec::new()
                } else {
                    tlr_core::operator::reconstruct_planes(
                        &result,
                        &job.stack,
                        &job.planes,
                        &plane_params,
                    )
                };
                TileDone {
                    seq: job.seq,
                    result,
                    planes,
                    permit,
                }
            });
        }
        while !running.is_empty() {
            if !self.forward(&mut running, &result_tx).await? {
                return Ok(processed);
            }
            processed += 1;
        }
        // Dropping `result_tx` closes the channel: the accumulator then finishes.
        Ok(processed)
    }

    /// Waits for one finished job and sends it on. `Ok(false)` when the accumulator is gone.
    async fn forward(
        &self,
        running: &mut JoinSet<TileDone>,
        result_tx: &mpsc::Sender<TileDone>,
    ) -> Result<bool, StageError> {
        let Some(joined) = running.join_next().await else {
            return Ok(true);
        };
        let done = joined.map_err(|source| StageError::Join {
            stage: "workers",
            source,
        })?;
        // A failed send means the accumulator stopped; it reports why.
        Ok(result_tx.send(done).await.is_ok())
    }
}
