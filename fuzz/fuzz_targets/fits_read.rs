//! Fuzzes the FITS pixel readers on arbitrary file contents: `read_image` (native reader for plain
//! images, cfitsio for tile-compressed ones), `read_cube`, the forced cfitsio backend, and a
//! padded region read that crosses the image border.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlr_core::fits::{read_cube, read_image, FitsReader};

fuzz_target!(|data: &[u8]| {
    let path = tlr_fuzz::scratch_file("frame.fits", data);
    let _ = read_image(&path);
    let _ = read_cube(&path);
    if let Ok(mut reader) = FitsReader::open_with_cfitsio(&path) {
        let _ = reader.read_full();
    }
    if let Ok(mut reader) = FitsReader::open(&path) {
        let (rows, cols) = (reader.header().rows, reader.header().cols);
        let _ = reader.read_region_padded(-1, -1, rows.min(8) + 2, cols.min(8) + 2);
    }
});
