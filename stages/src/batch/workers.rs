//! The tile-worker pool, shared by batch runs and live sessions: runs one job per tile on at most
//! `parallel_tiles` blocking threads at once and hands the results on **in job order**.
//!
//! Parallelism is over tiles only (methodology v4). [`Pool::ordered`] turns a stream of jobs into a
//! stream of results: at most `window` jobs are taken ahead of the oldest result not yet consumed (the
//! reorder window), and of those at most `parallel_tiles` run at once. A finished job waits in the
//! window until every earlier one has been consumed, so its consumer — the ordered accumulator — sees
//! the same order for any worker count and completion order, and one slow tile causes back-pressure
//! up to the reader, not unbounded buffering.
//!
//! - Batch ([`super::pipeline`]): the jobs are the reader's [`TileJob`]s; [`batch_work`] cuts each
//!   stack from its tile row's windows on the worker (stack buffers of finished tiles are reused),
//!   runs the per-tile operator and, in colour mode, reconstructs the colour planes with the
//!   luminance's shifts and weights ([`tlr_core::operator::reconstruct_planes`]).
//! - Live ([`crate::live`]): per frame, one job per tile (cut-out, register, accumulate), and the
//!   bootstrap's tiles.
//!
//! What it does not: read files, touch the output, or parallelise inside a tile.

use std::num::NonZeroUsize;
use std::sync::Arc;

use futures_util::stream::{Stream, StreamExt};
use tokio::sync::Semaphore;

use tlr_core::operator::{OperatorParams, TileResult, TileStack};

use super::job::TileJob;
use crate::error::{Stage, StageError};

/// The per-tile computation of a batch run. The pipeline uses the core operator; tests wrap it (e.g.
/// to add delays). Not part of the supported API.
pub type TileProcessor = Arc<dyn Fn(&TileStack) -> TileResult + Send + Sync>;

/// A bounded pool of blocking tile workers whose results leave in job order.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    running: Arc<Semaphore>,
    window: usize,
}

impl Pool {
    /// A pool of `parallel_tiles` workers that takes at most `window` jobs ahead of the consumer
    /// (at least `parallel_tiles`, so that every worker can be busy).
    pub(crate) fn new(parallel_tiles: NonZeroUsize, window: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(parallel_tiles.get())),
            window: window.max(parallel_tiles.get()),
        }
    }

    /// Runs `work` on every job of `jobs` on a blocking thread (CPU work never runs on the async
    /// threads) and yields the results in the order of `jobs`. The stream ends when `jobs` ends.
    ///
    /// A job whose `work` panicked yields [`StageError::Join`]; the consumer stops there (dropping the
    /// stream lets jobs already running finish, and starts no new ones).
    pub(crate) fn ordered<J, R, S, F>(
        &self,
        jobs: S,
        work: F,
    ) -> impl Stream<Item = Result<R, StageError>> + Send + 'static
    where
        S: Stream<Item = J> + Send + 'static,
        J: Send + 'static,
        R: Send + 'static,
        F: Fn(J) -> R + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        let running = Arc::clone(&self.running);
        jobs.map(move |job| {
            let (work, running) = (Arc::clone(&work), Arc::clone(&running));
            async move {
                // Jobs wait for a worker in the order they were taken (the semaphore is fair).
                let _worker = running
                    .acquire_owned()
                    .await
                    .map_err(|_| StageError::input(Stage::Workers, "the worker pool was closed"))?;
                tokio::task::spawn_blocking(move || work(job))
                    .await
                    .map_err(|source| StageError::Join {
                        stage: Stage::Workers,
                        source,
                    })
            }
        })
        .buffered(self.window)
    }
}

/// One reconstructed tile of a batch run on its way to the accumulator.
pub(crate) struct ReconstructedTile {
    /// The operator's result.
    pub result: TileResult,
    /// Colour mode: the reconstructed planes (R, G1, G2, B), each `(h, w)`; empty for mono.
    pub planes: Vec<ndarray::Array2<f32>>,
}

/// The work of one batch tile: cut the stack (and the colour planes' stacks) from the job's windows,
/// run `processor`, reconstruct the planes with its shifts and weights. Stack buffers of finished tiles
/// are reused for the next cuts: a fresh stack of several MB is page-faulted in by the kernel, which
/// costs about as much as copying the pixels.
pub(crate) fn batch_work(
    processor: TileProcessor,
    plane_params: OperatorParams,
    parallel_tiles: NonZeroUsize,
) -> impl Fn(TileJob) -> ReconstructedTile + Send + Sync + 'static {
    // At most what the running jobs hold (a colour job holds five: luminance and planes).
    let (give_back, spare) = crossbeam_channel::bounded(5 * parallel_tiles.get());
    move |job: TileJob| {
        let reuse = spare.try_iter().take(job.buffers()).collect();
        let (stack, plane_stacks) = job.cut(reuse);
        let result = processor(&stack);
        let planes = if plane_stacks.is_empty() {
            Vec::new()
        } else {
            let planes = tlr_core::operator::reconstruct_planes(
                &result,
                &stack,
                &plane_stacks,
                &plane_params,
            );
            // The luminance's geometry correction moves every plane the same way.
            match &result.correction {
                Some(c) => planes.iter().map(|p| c.apply(p.view())).collect(),
                None => planes,
            }
        };
        // A full channel drops the buffer.
        let _ = give_back.try_send(stack.cutouts);
        for plane in plane_stacks {
            let _ = give_back.try_send(plane.cutouts);
        }
        ReconstructedTile { result, planes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_leave_in_job_order_and_at_most_parallel_tiles_run() {
        let pool = Pool::new(NonZeroUsize::new(3).unwrap(), 8);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
        let out: Vec<usize> = pool
            .ordered(futures_util::stream::iter(0..40usize), move |k| {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // Later jobs finish first.
                std::thread::sleep(Duration::from_millis(((40 - k) % 7) as u64));
                r.fetch_sub(1, Ordering::SeqCst);
                k * 2
            })
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(out, (0..40).map(|k| k * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3, "{peak:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_is_an_error_in_its_place() {
        let pool = Pool::new(NonZeroUsize::new(2).unwrap(), 4);
        let out: Vec<Result<usize, StageError>> = pool
            .ordered(futures_util::stream::iter(0..5usize), |k| {
                assert!(k != 3, "job 3 fails");
                k
            })
            .collect()
            .await;
        assert!(out[..3].iter().all(Result::is_ok));
        assert!(matches!(out[3], Err(StageError::Join { .. })));
    }
}
