//! Integration tests of `tlr_core::fits`: BITPIX/BZERO/BSCALE round trips, region reads, odd file
//! names, every bad-file class, atomic output, fitsverify.
//!
//! Files are made in temporary folders, either with the `fitsio` crate or byte by byte
//! ([`build`]), so that the reader is checked against an independent writer. One file per concern:
//! `read.rs` (good files), `bad_files.rs` (every bad-file class, damage, fuzz findings), `write.rs`
//! (atomic output, fitsverify); the byte-level builder in `build.rs` also serves `fits_native.rs`.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::Array2;

mod bad_files;
pub mod build;
mod read;
mod write;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    fs::write(path, bytes).expect("write test file");
    path.to_path_buf()
}

fn synthetic(rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| (r * 1000 + c) as f32 + 0.25)
}
