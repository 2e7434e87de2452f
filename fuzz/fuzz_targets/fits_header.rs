//! Fuzzes the FITS header walk: `read_header` (layout checks, then the cfitsio open of a
//! tile-compressed image) and `read_header_cards` (the raw cards), on arbitrary file contents.
//! It never reads pixels; `fits_read` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlr_core::fits::{read_header, read_header_cards};

fuzz_target!(|data: &[u8]| {
    let path = tlr_fuzz::scratch_file("frame.fits", data);
    let _ = read_header(&path);
    let _ = read_header_cards(&path);
});
