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
//! Use [`pipeline::run`] (async) or [`pipeline::run_blocking`] to embed the whole job; progress arrives as
//! [`events::Event`]s through a callback; [`output`] writes the FITS result, preview and diagnostics.
//! The numerical core is the `tlr_core` crate (re-exported as [`core`]).
#![warn(missing_docs)]

pub mod accumulator;
pub mod error;
pub mod events;
pub mod live;
pub mod memory;
pub mod output;
pub mod pipeline;
pub mod reader;
pub mod source;
pub mod workers;

pub use tlr_core as core;

pub use error::StageError;
pub use events::{Event, EventSink};
pub use pipeline::{
    run, run_blocking, Input, PipelineOptions, Registration, RunOutput, RunSummary,
};
pub use source::{FileFrames, FrameStore, MemoryFrames};
