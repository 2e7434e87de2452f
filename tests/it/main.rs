//! Integration tests of tlr-core, one module per area.

mod global;
mod mosaic;
mod preview;
mod simulate;
mod stars;
mod tile;
