//! # tlr-core: tile-local registration and reconstruction, the synchronous core
//!
//! Everything numerical and every file format lives here, with no async runtime, channels or terminal
//! output: the staged pipeline in the `tlr` crate (folder `stages/`) drives these functions.
//!
//! Data flow of one run, module by module:
//!
//! ```text
//! scan (list + check frames) ─▶ global (per-frame background, noise, FWHM, global shift)
//!     ─▶ select (weights G_f, photometric scales, which frames are used and why not)
//!     ─▶ tile (grid of overlapping boxes) ─▶ [reader cuts tile stacks from fits]
//!     ─▶ operator (register ▸ resample ▸ combine, iterated per tile) ─▶ mosaic (window overlap-add)
//!     ─▶ fits (atomic output) + preview (PNG)
//! ```
//!
//! Shared conventions (shapes, shift sign) are stated once in [`geom`].
#![warn(missing_docs)]

pub mod atomic;
pub mod bayer;
pub mod calibrate;
pub mod config;
pub mod export;
pub mod fits;
pub mod geom;
pub mod global;
pub mod live;
pub mod mosaic;
pub mod operator;
pub mod preview;
pub mod quality;
pub mod register;
pub mod resample;
pub mod saturation;
pub mod scan;
pub mod select;
pub mod sensor_border;
pub mod ser;
pub mod simulate;
pub mod stars;
pub mod stats;
pub mod tile;

pub use geom::{Shift, TileBox};

/// `error` followed by each of its causes, joined by `: ` (what anyhow's `{:#}` prints), for messages
/// that must be one string (skip reasons, events, warnings). tlr's errors expose a wrapped error as
/// [`std::error::Error::source`] and never repeat it in their own message, so each cause appears once.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
