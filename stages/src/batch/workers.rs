//! The tile-worker pool: runs the per-tile operator on at most `parallel_tiles` blocking threads at once.
//!
//! Parallelism is over tiles only (methodology v4). Each tile is cut from its row's frame windows and
//! reconstructed by one blocking job (stack buffers of finished tiles are reused for the next cuts);
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

use super::job::TileJob;
use crate::error::StageError;

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
    /// Stack buffers of finished tiles, to cut the next stacks into.
    buffers: (
        crossbeam_channel::Sender<ndarray::Array3<f32>>,
        crossbeam_channel::Receiver<ndarray::Array3<f32>>,
    ),
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
            // At most what the running jobs hold (a colour job holds five: luminance and planes).
            buffers: crossbeam_channel::bounded(5 * parallel_tiles.get()),
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
        let mut input_open = true;
        loop {
            let can_start = input_open && running.len() < self.parallel_tiles.get();
            // Finished jobs are forwarded as soon as they finish, also while waiting for input or for a
            // place in the reorder window: the accumulator may be waiting for exactly that tile, and the
            // places it holds are only given back once it has it.
            tokio::select! {
                biased;
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    let done = joined.map_err(|source| StageError::Join {
                        stage: "workers",
                        source,
                    })?;
                    // A failed send means the accumulator stopped; it reports why.
                    if result_tx.send(done).await.is_err() {
                        return Ok(processed);
                    }
                    processed += 1;
                }
                next = self.next_job(&mut tile_rx), if can_start => match next? {
                    Some((job, permit)) => self.start(&mut running, job, permit),
                    // The reader closed the channel: drain what is in flight, then stop.
                    None => input_open = false,
                },
                else => break,
            }
        }
        // Dropping `result_tx` closes the channel: the accumulator then finishes.
        Ok(processed)
    }

    /// A place in the reorder window (waits while the accumulator is stuck behind a slow tile), then the
    /// next job. `None` when the input is closed. Cancel-safe: dropping it loses neither.
    async fn next_job(
        &self,
        tile_rx: &mut mpsc::Receiver<TileJob>,
    ) -> Result<Option<(TileJob, OwnedSemaphorePermit)>, StageError> {
        let permit = Arc::clone(&self.window)
            .acquire_owned()
            .await
            .map_err(|_| StageError::input("workers", "reorder window closed"))?;
        Ok(tile_rx.recv().await.map(|job| (job, permit)))
    }

    /// Starts `job` on a blocking thread (CPU work never runs on the async threads; the caller keeps their
    /// number at `parallel_tiles`).
    fn start(&self, running: &mut JoinSet<TileDone>, job: TileJob, permit: OwnedSemaphorePermit) {
        let processor = Arc::clone(&self.processor);
        let plane_params = Arc::clone(&self.plane_params);
        let (give_back, spare) = (self.buffers.0.clone(), self.buffers.1.clone());
        running.spawn_blocking(move || {
            // Cut the stack here, on the worker: copying fans out with the compute. Buffers of
            // finished stacks are reused: a fresh stack of several MB is page-faulted in by the
            // kernel, which costs about as much as copying the pixels.
            let seq = job.seq;
            let reuse = spare.try_iter().take(job.buffers()).collect();
            let (stack, plane_stacks) = job.cut(reuse);
            let result = processor(&stack);
            let planes = if plane_stacks.is_empty() {
                Vec::new()
            } else {
                tlr_core::operator::reconstruct_planes(
                    &result,
                    &stack,
                    &plane_stacks,
                    &plane_params,
                )
            };
            // A full channel drops the buffer.
            let _ = give_back.try_send(stack.cutouts);
            for plane in plane_stacks {
                let _ = give_back.try_send(plane.cutouts);
            }
            TileDone {
                seq,
                result,
                planes,
                permit,
            }
        });
    }
}
