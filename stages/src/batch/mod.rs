//! Batch mode: every frame of a sequence is known up front, and one image comes out.
//!
//! ```text
//!  FrameStore ─▶ global pass ─▶ FrameReader ──TileJob──▶ Workers ──TileDone──▶ Accumulator ─▶ image
//!  (source/)     (global_pass)  (reader; job           (workers:   bounded     (accumulator:
//!                 frame by       cuts, windows)          ≤ parallel  reorder     tile order,
//!                 frame                                  _tiles)     window      mosaic)
//! ```
//!
//! A tile goes from disk to the output through four files: [`reader`](self) reads the rows every tile
//! of a tile row needs (`reader.rs`), a job carries them to a worker which cuts its stack (`job.rs`),
//! the worker runs the per-tile operator (`workers.rs`), and the accumulator blends the results in
//! tile order (`accumulator.rs`). `pipeline.rs` wires them, `global_pass.rs` measures every frame
//! first, `saturation.rs` holds the result's saturated pixels at the stack's level. Live mode ([`crate::live`]) reuses the worker pool and the ordered accumulator.
//!
//! What it does not: write files ([`crate::output`]) or print (events go to the caller's sink).

pub(crate) mod accumulator;
pub(crate) mod global_pass;
pub(crate) mod job;
mod pipeline;
pub(crate) mod reader;
mod saturation;
mod surface_pass;
pub(crate) mod workers;

pub use crate::report::{FrameSummary, RunSummary, TileSummary};
pub use crate::settings::{operator_params, worker_count, Registration};
pub use global_pass::UsedFrame;
pub use pipeline::{
    build_runtime, run, run_blocking, ColourResult, Input, PipelineOptions, RunOutput,
};
pub(crate) use pipeline::{sampling_fwhm_cells, DEBAYER_BELOW_FWHM_CELLS};
pub use saturation::{Saturation, STACK_CLIPPED_FRACTION};
#[doc(hidden)]
pub use workers::TileProcessor;
