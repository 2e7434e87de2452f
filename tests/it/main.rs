//! Integration tests of tlr-core, one module per area (a single test binary, as matklad recommends).

mod bayer;
mod calibrate;
mod config;
mod examples;
mod export;
mod fits;
mod fits_native;
mod global;
mod live;
mod mosaic;
mod operator;
mod preview;
mod scan;
mod simulate;
mod stars;
mod tile;
