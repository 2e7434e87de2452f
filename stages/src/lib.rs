//! # tlr: the staged pipeline of tile-local registration and reconstruction
//!
//! Methodology v4, phase 6 (TILE_RECONSTRUCTION_TLR), as an async streaming dataflow of staged actors
//! connected by bounded, back-pressured channels:
//!
//! ```text
//!  FrameStore      FrameReader              Workers                        Accumulator
//! (files in a ─▶ global pass, then ─TileJob─▶ ≤ parallel_tiles blocking ─TileDone─▶ one task: reorder
//!  folder, or    tile stacks block   bounded  jobs running the per-tile   bounded   buffer, overlap-add in
//!  memory)       by block (all I/O)           operator (tiles only)                 tile order ─▶ image
//! ```
//!
//! - I/O is sequential and lives in the reader; compute fans out over tiles only; blending happens in one
//!   place, in a fixed order, so the output is bit-identical for any worker count.
//! - Memory is bounded by configuration (reader block budget, channel capacities, reorder window), not by
//!   the number of frames.
//! - Only the reader watches the cancellation token; the other stages stop when their input closes.
//!
//! The folders follow the data: [`source`] (where frames come from: a folder, memory, a followed
//! folder), [`batch`] (the stages of a run over a known sequence), [`live`] (the same worker pool and
//! ordered accumulator, fed frame by frame), [`output`] (files), [`events`] (progress).
//!
//! Use [`run`] (async) or [`run_blocking`] to embed the whole job; progress arrives as [`Event`]s through a
//! callback; [`output`] writes the FITS result, preview and diagnostics. [`live::LiveSession`] keeps an
//! up-to-date result while frames arrive. The numerical core is the `tlr_core` crate (re-exported as
//! [`core`]).
#![warn(missing_docs)]

pub mod batch;
pub mod error;
pub mod events;
pub mod live;
pub mod memory;
pub mod output;
pub mod report;
pub mod settings;
pub mod source;

pub use tlr_core as core;
pub use tokio_util::sync::CancellationToken;

pub use batch::{
    build_runtime, run, run_blocking, ColourResult, FrameSummary, Input, PipelineOptions,
    Registration, RunOutput, RunSummary, TileSummary, UsedFrame,
};
pub use error::StageError;
pub use events::{Event, EventSink};
pub use source::{FileFrames, FrameStore, MemoryFrames};
