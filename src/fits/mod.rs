//! FITS input and output: frame headers, full and region reads, atomic output files.
//!
//! What it does:
//! - finds the image of a frame: the primary HDU, or the first image extension when the primary is
//!   empty (tile-compressed `.fz` files keep the image in HDU 1 as a compressed binary table);
//! - accepts BITPIX 8, 16, 32, 64, -32, -64 with BZERO/BSCALE applied,
//!   NAXIS 2, or NAXIS 3 with a single plane, as frames; cubes of several planes (tlr's RGB result)
//!   only through [`read_cube`] (a frame that is a cube is [`FitsError::Cube`]); anything else is a
//!   clear [`FitsError`];
//! - validates a file **before** reading pixels (and before cfitsio touches it), reading the header
//!   blocks itself with `std::fs`: the first card must be `SIMPLE = T`, every header up to the image must end with an `END` card,
//!   and the file must hold the header blocks plus the data its header promises, padded to a whole
//!   2880-byte block (a truncated file otherwise opens fine and even returns its first rows; cfitsio
//!   cannot read an unpadded last block, so that is rejected too, with its own message);
//! - opens files with `std::fs`, or with `fits_open_diskfile` where cfitsio reads them, and creates
//!   them with `fits_create_diskfile`, so that file names with `[`, `]`, `(`, `)` or spaces are taken literally (cfitsio's extended filename syntax is
//!   never parsed);
//! - reads rectangular regions (a tile plus its margin) without reading the whole frame, with one
//!   of two backends:
//!   - **native** for uncompressed images (primary HDU or `IMAGE` extension): positioned reads with
//!     `std::fs` from the data offset the header walk found (a full-width region is one read), and
//!     the big-endian samples converted to `f32` in one pass, replicating cfitsio's conversion rules
//!     bit for bit (integers cast straight to `f32` without scaling, else `raw * BSCALE + BZERO` in
//!     double; float zeros and subnormals become `+0.0`, or `BZERO` when scaled; BITPIX 64 with
//!     `BZERO = 2^63` as unsigned). cfitsio never opens these files;
//!   - **cfitsio** (`ffgsv`) for tile-compressed images, and for the rare uncompressed image whose
//!     `BSCALE`/`BZERO`/`BLANK`/`PCOUNT`/`GCOUNT` or axis cards are not plain (repeated, quoted,
//!     malformed or out-of-range numbers, `PCOUNT` other than 0): cfitsio keeps its own reading of those;
//! - converts pixels to `f32`; undefined pixels (integer `BLANK`, NaN) and ±Inf become `f32::NAN`,
//!   the crate's marker for missing data;
//! - writes `f32` images (BITPIX -32), camera-like `u16` images (BITPIX 16, BZERO 32768) and `f32`
//!   cubes atomically: a hidden temporary file in the destination folder, fsync, then rename.
//!
//! What it does not: no WCS evaluation (a WCS is only carried over), no Bayer demosaicing (the Bayer keywords are reported, pixels stay
//! raw), no flipping for `ROWORDER` (rows stay in file order, see [`crate::geom`]), no tables, no
//! writing of compressed files, no threads. A [`FitsReader`] may hold a cfitsio handle and is not
//! `Send`: open, read and drop it inside one thread.
//!
//! Shapes are `(rows, cols)` = `(NAXIS2, NAXIS1)`; cubes are `(planes, rows, cols)`.
//!
//! The files of this folder, in the order a read goes through them:
//! - `mod.rs` (this file): the front door ([`read_header`], [`read_header_cards`], [`read_image`],
//!   [`read_cube`]), the keyword names, [`FrameHeader`] and the interpretation of its keywords;
//! - `error.rs`: [`FitsError`];
//! - `card.rs`: one 80-byte card as a [`HeaderCard`], `CONTINUE` strings, lookups by key;
//! - `header.rs`: the header walk with `std::fs` (structure and completeness checks, the image
//!   HDU's layout and the choice of backend);
//! - `scaling.rs`: `BSCALE`/`BZERO`/`BLANK` as cfitsio reads them, or the reason to let cfitsio
//!   read;
//! - `reader.rs`: [`FitsReader`], region reads through one of the two backends,
//!   `native.rs` (`std::fs` and cfitsio's conversion rules) or `cfitsio.rs` (cfitsio's `ffgsv`, and
//!   the cfitsio plumbing the writer shares);
//! - `calendar.rs`: [`parse_date_obs`], [`format_utc`];
//! - `carry.rs`: the cards a result carries from its frames ([`StackHeader`]); `wcs.rs`: a frame's
//!   [`Wcs`] and its move to a result's grid ([`PixelMap`]);
//! - `write.rs`: [`write_image_atomic`], [`write_cube_atomic`] and their [`OutputMeta`].

mod calendar;
mod card;
mod carry;
mod cfitsio;
mod error;
mod header;
mod native;
mod reader;
mod scaling;
mod wcs;
mod write;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3, Axis};

pub use calendar::{format_utc, parse_date_obs};
pub use card::HeaderCard;
use card::{card_value, clean_string, number};
pub use carry::{carried_cards, StackHeader, CARRIED_KEYS};
pub use error::FitsError;
pub use header::not_a_regular_file;
use header::{read_layout, Layout};
pub use reader::FitsReader;
pub use wcs::{PixelMap, Wcs};
pub use write::{
    write_cube_as_atomic, write_cube_atomic, write_hdus_atomic, write_image_atomic, Card,
    CardValue, Hdu, HduData, OutputMeta, SampleFormat,
};

/// Prefix of the `CREATOR` card of every file `tlr` writes: `CREATOR = 'tlr <version> <kind>'`.
///
/// The frame scan ([`crate::scan`]) ignores files whose creator's first word is exactly this prefix
/// (see [`is_own_output`]).
pub const CREATOR_PREFIX: &str = "tlr";

/// Keyword of the exposure time in seconds (preferred).
pub const KEY_EXPTIME: &str = "EXPTIME";
/// Alternative keyword of the exposure time in seconds.
pub const KEY_EXPOSURE: &str = "EXPOSURE";
/// Keyword of the start of the observation (ISO 8601).
pub const KEY_DATE_OBS: &str = "DATE-OBS";
/// Keyword of the start time when `DATE-OBS` holds only a date (old convention).
pub const KEY_TIME_OBS: &str = "TIME-OBS";
/// Keyword of the camera gain setting.
pub const KEY_GAIN: &str = "GAIN";
/// Keyword of the camera offset (bias) setting.
pub const KEY_OFFSET: &str = "OFFSET";
/// Keyword of the Bayer colour filter pattern (e.g. `RGGB`).
pub const KEY_BAYERPAT: &str = "BAYERPAT";
/// Keyword of the Bayer pattern's column offset.
pub const KEY_XBAYROFF: &str = "XBAYROFF";
/// Keyword of the Bayer pattern's row offset.
pub const KEY_YBAYROFF: &str = "YBAYROFF";
/// Keyword of the row order (`TOP-DOWN` or `BOTTOM-UP`).
pub const KEY_ROWORDER: &str = "ROWORDER";
/// Keyword of the filter name.
pub const KEY_FILTER: &str = "FILTER";
/// Keyword of the target name.
pub const KEY_OBJECT: &str = "OBJECT";
/// Keyword of the sensor temperature in °C.
pub const KEY_CCD_TEMP: &str = "CCD-TEMP";
/// Keyword of the program that wrote the file.
pub const KEY_CREATOR: &str = "CREATOR";
/// Keyword of the saturation level of the data (SExtractor, MaxIm DL, many capture programs).
pub const KEY_SATURATE: &str = "SATURATE";
/// Keyword of the largest valid value (FITS standard); read as the saturation level without `SATURATE`.
pub const KEY_DATAMAX: &str = "DATAMAX";

/// Bayer colour filter description of a one-shot-colour frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BayerHeader {
    /// Pattern as written, trimmed and upper-cased, e.g. `RGGB`.
    pub pattern: String,
    /// `XBAYROFF` (0 when absent).
    pub x_offset: i64,
    /// `YBAYROFF` (0 when absent).
    pub y_offset: i64,
}

/// What a frame's header says: image geometry and the keywords capture programs write.
///
/// String values are trimmed; absent keywords are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameHeader {
    /// The file.
    pub path: PathBuf,
    /// 0-based index of the HDU holding the image (1 for `.fz` files).
    pub hdu: usize,
    /// Image rows (`NAXIS2`).
    pub rows: usize,
    /// Image columns (`NAXIS1`).
    pub cols: usize,
    /// BITPIX of the image (`ZBITPIX` for tile-compressed images).
    pub bitpix: i64,
    /// `EXPTIME`, else `EXPOSURE`, in seconds.
    pub exposure_s: Option<f64>,
    /// `DATE-OBS` as written (see [`parse_date_obs`] for ordering); a date-only `YYYY-MM-DD` value is
    /// completed with `TIME-OBS` when the header has one.
    pub date_obs: Option<String>,
    /// `GAIN`.
    pub gain: Option<f64>,
    /// `OFFSET`.
    pub offset: Option<f64>,
    /// `BAYERPAT` with `XBAYROFF`/`YBAYROFF`; `None` for mono frames.
    pub bayer: Option<BayerHeader>,
    /// `ROWORDER` (`TOP-DOWN`/`BOTTOM-UP`).
    pub row_order: Option<String>,
    /// `FILTER`.
    pub filter: Option<String>,
    /// `OBJECT`.
    pub object: Option<String>,
    /// `CCD-TEMP` in °C.
    pub ccd_temp: Option<f64>,
    /// `CREATOR`.
    pub creator: Option<String>,
    /// `SATURATE`, else `DATAMAX`: the saturation level in the data's units (after BSCALE/BZERO).
    pub saturation: Option<f64>,
    /// The cards a result may carry over ([`carried_cards`]: observation keywords, `DATE-END`, WCS).
    pub carried: Vec<HeaderCard>,
}

/// `DATE-OBS`; an old-style date without time is completed with `TIME-OBS` when present
/// (`'2001-02-03'` + `'04:05:06'` -> `'2001-02-03T04:05:06'`).
fn date_obs(cards: &[HeaderCard]) -> Option<String> {
    let date = clean_string(card_value(cards, KEY_DATE_OBS))?;
    if date.contains('T') {
        return Some(date);
    }
    match clean_string(card_value(cards, KEY_TIME_OBS)) {
        Some(time) if !date.contains('/') => Some(format!("{date}T{time}")),
        _ => Some(date),
    }
}

fn frame_header(path: &Path, layout: &Layout) -> FrameHeader {
    let cards = &layout.cards;
    let bayer = clean_string(card_value(cards, KEY_BAYERPAT)).map(|pattern| BayerHeader {
        pattern: pattern.to_ascii_uppercase(),
        x_offset: number(cards, KEY_XBAYROFF).map_or(0, |x| x.round() as i64),
        y_offset: number(cards, KEY_YBAYROFF).map_or(0, |x| x.round() as i64),
    });
    FrameHeader {
        path: path.to_path_buf(),
        hdu: layout.hdu,
        rows: layout.rows,
        cols: layout.cols,
        bitpix: layout.bitpix,
        exposure_s: number(cards, KEY_EXPTIME).or_else(|| number(cards, KEY_EXPOSURE)),
        date_obs: date_obs(cards),
        gain: number(cards, KEY_GAIN),
        offset: number(cards, KEY_OFFSET),
        bayer,
        row_order: clean_string(card_value(cards, KEY_ROWORDER)),
        filter: clean_string(card_value(cards, KEY_FILTER)),
        object: clean_string(card_value(cards, KEY_OBJECT)),
        ccd_temp: number(cards, KEY_CCD_TEMP),
        creator: clean_string(card_value(cards, KEY_CREATOR)),
        saturation: number(cards, KEY_SATURATE).or_else(|| number(cards, KEY_DATAMAX)),
        carried: carried_cards(cards),
    }
}

/// Reads and validates a frame's header without reading its pixels.
///
/// Validation: FITS signature, `END` cards, complete data (file length), supported image shape and
/// BITPIX (all by this module's own header walk); for images read through cfitsio (tile-compressed
/// ones, see the module docs) also that cfitsio opens the image HDU and agrees on its geometry.
/// Uncompressed images are read natively, so cfitsio does not see them here either.
///
/// # Errors
/// Every [`FitsError`] class of [`FitsReader::open`].
pub fn read_header(path: &Path) -> Result<FrameHeader, FitsError> {
    Ok(FitsReader::open(path)?.header)
}

/// The raw cards of a frame's image HDU (for display, e.g. `tlr inspect`), after the same completeness
/// checks as [`read_header`] except the cfitsio open of tile-compressed images.
///
/// # Errors
/// The [`FitsError`]s of the header and completeness checks.
pub fn read_header_cards(path: &Path) -> Result<Vec<HeaderCard>, FitsError> {
    Ok(read_layout(path)?.cards)
}

/// True when a `CREATOR` value marks a file written by this tool: its first word is exactly
/// [`CREATOR_PREFIX`] (`'tlr 0.1.0 mosaic'`). `'tlr-simulate ...'` or `'tlrx'` do not match, so
/// simulated input frames can say where they come from without being ignored by the scan.
pub fn is_own_output(creator: &str) -> bool {
    creator.split_whitespace().next() == Some(CREATOR_PREFIX)
}

/// Reads a whole frame: header and `(rows, cols)` pixels.
///
/// # Errors
/// Every [`FitsError`] of [`FitsReader::open`] and [`FitsReader::read_full`], including
/// [`FitsError::NoFiniteData`] when every pixel is NaN/Inf/undefined.
pub fn read_image(path: &Path) -> Result<(FrameHeader, Array2<f32>), FitsError> {
    let mut reader = FitsReader::open(path)?;
    let image = reader.read_full()?;
    Ok((reader.header, image))
}

/// Reads a whole image or cube: header and `(planes, rows, cols)` pixels. A 2-D image (or a cube with
/// `NAXIS3 = 1`) is one plane; tlr's colour result is 3 planes R, G, B. This is the reader for
/// *results* (e.g. `tlr inspect`); frames go through [`read_image`] / [`FitsReader`], which refuse
/// cubes. All validation is the same as [`read_image`]'s (the same header walk and backend choice).
///
/// ```
/// use ndarray::Array3;
/// use tlr_core::fits::{read_cube, read_image, write_cube_atomic, FitsError, OutputMeta};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("rgb.fits");
/// let rgb = Array3::from_shape_fn((3, 4, 5), |(p, r, c)| (p * 100 + r * 10 + c) as f32);
/// write_cube_atomic(&path, rgb.view(), &OutputMeta::default())?;
/// let (header, cube) = read_cube(&path)?;
/// assert_eq!(cube, rgb);
/// assert_eq!((header.rows, header.cols), (4, 5));
/// assert!(matches!(read_image(&path), Err(FitsError::Cube { planes: 3, .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Every [`FitsError`] of [`read_image`] except [`FitsError::Cube`]; [`FitsError::NoFiniteData`] when no
/// pixel of any plane is finite.
pub fn read_cube(path: &Path) -> Result<(FrameHeader, Array3<f32>), FitsError> {
    let mut reader = FitsReader::open_layout(path, true, false)?;
    let (rows, cols, planes) = (reader.header.rows, reader.header.cols, reader.planes);
    let mut cube = Array3::from_elem((planes, rows, cols), f32::NAN);
    for p in 0..planes {
        let plane = reader.read_plane_region(p, 0..rows, 0..cols)?;
        cube.index_axis_mut(Axis(0), p).assign(&plane);
    }
    if !cube.iter().any(|v| v.is_finite()) {
        return Err(FitsError::NoFiniteData {
            path: reader.header.path.clone(),
        });
    }
    Ok((reader.header, cube))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_output_marker() {
        assert!(is_own_output("tlr 0.1.0 mosaic"));
        assert!(is_own_output("tlr"));
        assert!(!is_own_output("tlr-simulate 0.1.0"));
        assert!(!is_own_output("MicroObservatory2014-05-23"));
    }
}
