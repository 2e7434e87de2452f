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
//! What it does not: no WCS, no Bayer demosaicing (the Bayer keywords are reported, pixels stay
//! raw), no flipping for `ROWORDER` (rows stay in file order, see [`crate::geom`]), no tables, no
//! writing of compressed files, no threads. A [`FitsReader`] may hold a cfitsio handle and is not
//! `Send`: open, read and drop it inside one thread.
//!
//! Shapes are `(rows, cols)` = `(NAXIS2, NAXIS1)`; cubes are `(planes, rows, cols)`.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use fitsio::FitsFile;
use fitsio_sys as sys;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

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

/// Size of one FITS block (header or data) in bytes.
const BLOCK: u64 = 2880;
/// Size of one header card in bytes.
const CARD: usize = 80;
/// Longest header accepted (blocks); protects against scanning garbage forever.
const MAX_HEADER_BLOCKS: u64 = 2000;
/// Most HDUs walked while looking for the image.
const MAX_HDUS: usize = 64;
/// Largest image accepted (pixels): 2^31, i.e. 8 GiB as f32.
const MAX_PIXELS: usize = 1 << 31;
/// cfitsio's longest file name (FLEN_FILENAME - 1).
const MAX_PATH_BYTES: usize = 1024;

// cfitsio data type codes (fitsio.h).
const TFLOAT: c_int = 42;
const TUSHORT: c_int = 20;
const FLOAT_IMG: c_int = -32;
const USHORT_IMG: c_int = 20;

/// Errors of FITS input and output. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitsError {
    /// The file could not be opened or read by the operating system.
    #[error("frame `{path}`: cannot read the file")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file has no bytes at all.
    #[error("frame `{path}`: the file is empty (0 bytes; still being written?)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file does not start like a FITS file.
    #[error("frame `{path}`: not a FITS file ({reason})")]
    NotFits {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The header stops before its `END` card.
    #[error("frame `{path}`: header of HDU {hdu} is incomplete: {reason} (file truncated?)")]
    HeaderTruncated {
        /// The file.
        path: PathBuf,
        /// 0-based HDU index.
        hdu: usize,
        /// What is missing.
        reason: String,
    },
    /// The data is shorter than the header promises.
    #[error("frame `{path}`: data ends after {have} of {need} bytes (file truncated or still being written?)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Data bytes present in the file.
        have: u64,
        /// Data bytes the header promises.
        need: u64,
    },
    /// The path cannot be handed to cfitsio (too long, NUL byte).
    #[error("frame `{path}`: cannot pass this path to cfitsio: {reason}")]
    BadPath {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data is complete but the last 2880-byte block is not padded (cfitsio cannot read it).
    #[error("frame `{path}`: file has {have} data bytes; the header promises {data} plus padding to {need} (file truncated, still being written, or written without FITS padding?)")]
    Unpadded {
        /// The file.
        path: PathBuf,
        /// Data bytes present in the file.
        have: u64,
        /// Data bytes the header promises, without padding.
        data: u64,
        /// Data bytes including the padding of the last block.
        need: u64,
    },
    /// A structural header keyword is missing or malformed.
    #[error("frame `{path}`: HDU {hdu}: keyword {key}: {reason}")]
    BadKeyword {
        /// The file.
        path: PathBuf,
        /// 0-based HDU index.
        hdu: usize,
        /// The keyword.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data contradicts its own structure (e.g. a compressed tile that points outside the heap).
    #[error("frame `{path}`: corrupt data: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
    /// No HDU holds an image.
    #[error(
        "frame `{path}`: no image found (the primary HDU is empty and no image extension follows)"
    )]
    NoImage {
        /// The file.
        path: PathBuf,
    },
    /// The image has a shape or type this tool does not handle.
    #[error("frame `{path}`: {reason} is not supported")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported, e.g. "a 1-dimensional image of 5 pixels".
        reason: String,
    },
    /// The image is a cube of several planes (e.g. an RGB result) where a 2-D frame is needed.
    /// [`read_cube`] reads such files.
    #[error(
        "frame `{path}`: cube with {planes} planes is not supported as a frame: frames must be 2-D \
         images (a 3-plane cube is an RGB result such as tlr's colour output; `tlr inspect` measures it)"
    )]
    Cube {
        /// The file.
        path: PathBuf,
        /// `NAXIS3`.
        planes: usize,
    },
    /// Every pixel is NaN, Inf or undefined.
    #[error("frame `{path}`: every pixel is NaN, Inf or undefined (BLANK): no usable data")]
    NoFiniteData {
        /// The file.
        path: PathBuf,
    },
    /// A region read asked for pixels outside the image.
    #[error("frame `{path}`: region rows {rows:?} x cols {cols:?} is empty or outside the {shape_rows}x{shape_cols} image")]
    RegionOutOfBounds {
        /// The file.
        path: PathBuf,
        /// Requested rows.
        rows: Range<usize>,
        /// Requested columns.
        cols: Range<usize>,
        /// Image rows.
        shape_rows: usize,
        /// Image columns.
        shape_cols: usize,
    },
    /// cfitsio reported an error.
    #[error("FITS file `{path}`: cfitsio failed while {action}: {message} (status {status})")]
    Cfitsio {
        /// The file.
        path: PathBuf,
        /// What was being done ("opening", "reading pixels", ...).
        action: &'static str,
        /// cfitsio status code.
        status: i32,
        /// cfitsio's status text and message stack.
        message: String,
    },
    /// An output file could not be written as asked.
    #[error("output `{path}`: {reason}")]
    Output {
        /// The destination file.
        path: PathBuf,
        /// What is wrong (bad card, empty image, ...).
        reason: String,
    },
    /// The operating system refused an output step (create, sync, rename).
    #[error("output `{path}`: {action} failed")]
    OutputIo {
        /// The destination (or temporary) file.
        path: PathBuf,
        /// The step that failed.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl From<crate::atomic::AtomicError> for FitsError {
    fn from(e: crate::atomic::AtomicError) -> Self {
        FitsError::OutputIo {
            path: e.path,
            action: e.action,
            source: e.source,
        }
    }
}

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
}

/// One raw header card of the image HDU, as [`read_header_cards`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCard {
    /// Keyword, trimmed (e.g. `DATE-OBS`, `HISTORY`).
    pub key: String,
    /// Value text for `KEY = value` cards: strings unquoted and trimmed, others as written; `None`
    /// for commentary cards.
    pub value: Option<String>,
    /// Comment after `/`, or the text of a commentary card, trimmed.
    pub comment: String,
}

// ---------------------------------------------------------------------------------------------
// Header parsing with std::fs (completeness checks happen here, before cfitsio sees the file)
// ---------------------------------------------------------------------------------------------

/// The HDU structure found by walking the file's headers.
#[derive(Debug)]
struct Layout {
    /// 0-based index of the image HDU.
    hdu: usize,
    /// Cards of that HDU's header.
    cards: Vec<HeaderCard>,
    rows: usize,
    cols: usize,
    bitpix: i64,
    /// NAXIS of the image (2 or 3).
    naxis: usize,
    /// `NAXIS3` (1 for a 2-D image).
    planes: usize,
    /// Byte offset of the image HDU's data (the block after its `END` card).
    data_start: u64,
    /// How the pixels are read: natively (with the scaling to apply) or through cfitsio.
    storage: Storage,
}

/// How an image HDU's pixels are stored, i.e. which backend reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    /// Plain big-endian samples right at `data_start`, read natively with this scaling.
    Plain(Scaling),
    /// Tile-compressed (a `ZIMAGE` binary table), or an uncompressed image whose structural or
    /// scaling keywords cfitsio might read differently from a plain parse (duplicates, quoted or
    /// malformed numbers, `PCOUNT`/`GCOUNT` other than 0/1): cfitsio reads these, so that they keep
    /// exactly cfitsio's interpretation.
    Cfitsio,
}

/// `BSCALE`, `BZERO` and `BLANK` of an uncompressed image, as cfitsio's `ffgphd` reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scaling {
    bscale: f64,
    bzero: f64,
    /// Raw value of undefined integer pixels; `None` without a `BLANK` card (or with cfitsio's own
    /// "undefined" marker value 1234554321).
    blank: Option<i64>,
}

/// Keywords whose raw cards [`read_header_at`] keeps for [`plain_scaling`] (prefixes of the 8-byte
/// keyword field; `NAXIS` covers `NAXISn`).
const RAW_KEYS: &[&[u8]] = &[
    b"BSCALE", b"BZERO", b"BLANK", b"PCOUNT", b"GCOUNT", b"BITPIX", b"NAXIS",
];

/// cfitsio's marker for "no null value defined" (`NULL_UNDEFINED` in fitsio2.h): a `BLANK` with this
/// value disables its null check.
const CFITSIO_NULL_UNDEFINED: i64 = 1_234_554_321;

/// The value text of a raw `KEY     = value / comment` card when it is a plain (unquoted) value;
/// `None` for anything else (no `= ` value indicator, quoted string, non-ASCII).
fn raw_value(raw: &[u8]) -> Option<&str> {
    if raw.len() < 10 || &raw[8..10] != b"= " {
        return None;
    }
    let text = std::str::from_utf8(&raw[10..]).ok()?;
    if text.contains('\'') {
        return None;
    }
    let value = text.split_once('/').map_or(text, |(v, _)| v);
    Some(value.trim_matches(' '))
}

/// What a file system entry is when it is not a regular file (`"a directory"`, `"a FIFO (named pipe)"`,
/// ...), for messages; `None` for a regular file. Symbolic links are described as links: pass the
/// type of the followed entry (`fs::metadata`) to describe their target.
pub fn not_a_regular_file(file_type: &fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// A number in the form both Rust's parser and C's `strtod` (as cfitsio's `ffc2dd` calls it) read
/// the same: `[+-]digits[.digits][(E|e|D)[+-]digits]`. `None` for anything else, and for values
/// `strtod` reports as out of range (overflow, underflow to 0, subnormal): cfitsio then ignores the
/// keyword, which only cfitsio itself should decide.
fn plain_float(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let mantissa_start = i;
    let mut n = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return None;
    }
    let mantissa_nonzero = b[mantissa_start..i]
        .iter()
        .any(|c| (b'1'..=b'9').contains(c));
    if i < b.len() && matches!(b[i], b'E' | b'e' | b'D') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    let v: f64 = text.replace('D', "E").parse().ok()?;
    let out_of_range = !v.is_finite() || v.is_subnormal() || (v == 0.0 && mantissa_nonzero);
    (!out_of_range).then_some(v)
}

/// An integer `[+-]digits` within `i64` (what `strtoll` reads without error).
fn plain_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Refuses `BSCALE`/`BZERO` cards whose value is not a finite number (a quoted string, nothing, `abc`,
/// hex, `1E400`). cfitsio reads such a card as 1.0 (or 0.0) without a word, which scales every pixel
/// wrongly and silently; a frame with one is an error naming the file and the keyword instead.
fn check_scaling_cards(path: &Path, hdu: usize, raw_cards: &[[u8; CARD]]) -> Result<(), FitsError> {
    for raw in raw_cards {
        let key = raw[..8].trim_ascii_end();
        if key != b"BSCALE" && key != b"BZERO" || &raw[8..10] != b"= " {
            continue;
        }
        let text = String::from_utf8_lossy(&raw[10..]);
        let text = text.trim_start();
        let value = if text.starts_with('\'') {
            None
        } else {
            let number = text.split('/').next().unwrap_or_default().trim();
            number
                .replace(['D', 'd'], "E")
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
        };
        if value.is_none() {
            return Err(FitsError::BadKeyword {
                path: path.to_path_buf(),
                hdu,
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!("`{}` is not a finite number", text.trim_end()),
            });
        }
    }
    Ok(())
}

/// The scaling of an uncompressed image from its raw structural cards, when a plain parse is sure to
/// read them as cfitsio does: each keyword at most once, plain numbers, `PCOUNT` 0 and `GCOUNT` 1
/// when present. `None` sends the image to the cfitsio backend.
fn plain_scaling(raw_cards: &[[u8; CARD]]) -> Option<Scaling> {
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut scaling = Scaling {
        bscale: 1.0,
        bzero: 0.0,
        blank: None,
    };
    for raw in raw_cards {
        let key = raw[..8].trim_ascii_end();
        if seen.contains(&key) {
            return None;
        }
        seen.push(key);
        match key {
            b"BSCALE" => scaling.bscale = plain_float(raw_value(raw)?)?,
            b"BZERO" => scaling.bzero = plain_float(raw_value(raw)?)?,
            b"BLANK" => {
                let blank = plain_int(raw_value(raw)?)?;
                scaling.blank = (blank != CFITSIO_NULL_UNDEFINED).then_some(blank);
            }
            b"PCOUNT" if plain_int(raw_value(raw)?)? != 0 => return None,
            b"GCOUNT" if plain_int(raw_value(raw)?)? != 1 => return None,
            b"PCOUNT" | b"GCOUNT" | b"BITPIX" | b"NAXIS" => {}
            k if k.len() > 5
                && k.starts_with(b"NAXIS")
                && k[5..].iter().all(u8::is_ascii_digit) => {}
            // Another keyword sharing a prefix (e.g. `BLANKS`): cfitsio ignores it, and so do we.
            _ => {}
        }
    }
    Some(scaling)
}

fn card_value(cards: &[HeaderCard], key: &str) -> Option<String> {
    cards
        .iter()
        .find(|c| c.key == key && c.value.is_some())
        .and_then(|c| c.value.clone())
}

/// Parses a quoted FITS string starting after its opening quote: `''` is an escaped quote; trailing
/// blanks are not significant. Returns the value and the text after the closing quote.
fn parse_quoted(stripped: &str) -> (String, String) {
    let mut value = String::new();
    let mut chars = stripped.chars().peekable();
    let mut after = String::new();
    while let Some(ch) = chars.next() {
        if ch == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                value.push('\'');
            } else {
                after = chars.collect();
                break;
            }
        } else {
            value.push(ch);
        }
    }
    (value.trim_end().to_string(), after)
}

fn comment_of(after: &str) -> String {
    after
        .split_once('/')
        .map(|(_, c)| c.trim().to_string())
        .unwrap_or_default()
}

/// Parses one 80-byte card.
fn parse_card(raw: &[u8]) -> HeaderCard {
    let text = String::from_utf8_lossy(raw);
    let text: &str = &text;
    let key = text
        .get(..8.min(text.len()))
        .unwrap_or("")
        .trim()
        .to_string();
    let rest = text.get(8..).unwrap_or("");
    if key == "CONTINUE" {
        // Long-string continuation: `CONTINUE  'more text&' / comment`.
        if let Some(stripped) = rest.trim_start().strip_prefix('\'') {
            let (value, after) = parse_quoted(stripped);
            return HeaderCard {
                key,
                value: Some(value),
                comment: comment_of(&after),
            };
        }
    }
    if !rest.starts_with("= ") || key == "HISTORY" || key == "COMMENT" || key.is_empty() {
        return HeaderCard {
            key,
            value: None,
            comment: rest.trim().to_string(),
        };
    }
    let body = rest[2..].trim_start();
    if let Some(stripped) = body.strip_prefix('\'') {
        let (value, after) = parse_quoted(stripped);
        HeaderCard {
            key,
            value: Some(value),
            comment: comment_of(&after),
        }
    } else {
        let (value, comment) = match body.split_once('/') {
            Some((v, c)) => (v.trim(), c.trim()),
            None => (body.trim(), ""),
        };
        HeaderCard {
            key,
            value: Some(value.to_string()),
            comment: comment.to_string(),
        }
    }
}

/// Appends a card, merging `CONTINUE` cards into a preceding string ending with `&` (the OGIP
/// long-string convention).
fn push_card(cards: &mut Vec<HeaderCard>, card: HeaderCard) {
    if card.key == "CONTINUE" {
        if let (Some(prev), Some(more)) = (cards.last_mut(), card.value.as_deref()) {
            if let Some(head) = prev.value.as_deref().and_then(|v| v.strip_suffix('&')) {
                prev.value = Some(format!("{head}{more}"));
                if !card.comment.is_empty() {
                    prev.comment = card.comment;
                }
                return;
            }
        }
    }
    cards.push(card);
}

fn parse_int(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    key: &str,
) -> Result<Option<i64>, FitsError> {
    match card_value(cards, key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| FitsError::BadKeyword {
                path: path.to_path_buf(),
                hdu,
                key: key.to_string(),
                reason: format!("`{v}` is not an integer"),
            }),
    }
}

fn require_int(path: &Path, hdu: usize, cards: &[HeaderCard], key: &str) -> Result<i64, FitsError> {
    parse_int(path, hdu, cards, key)?.ok_or_else(|| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason: "missing".to_string(),
    })
}

fn is_true(cards: &[HeaderCard], key: &str) -> bool {
    card_value(cards, key).is_some_and(|v| v.trim() == "T")
}

/// One header as [`read_header_at`] returns it.
struct RawHeader {
    cards: Vec<HeaderCard>,
    /// Offset of the first byte after the header (where the HDU's data starts).
    end: u64,
    /// The raw cards whose keyword starts with one of [`RAW_KEYS`], in order.
    raw_keys: Vec<[u8; CARD]>,
}

/// Reads one header starting at `start`.
fn read_header_at(
    path: &Path,
    file: &mut fs::File,
    start: u64,
    file_len: u64,
    hdu: usize,
) -> Result<RawHeader, FitsError> {
    let io_err = |source| FitsError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(start)).map_err(io_err)?;
    let mut cards = Vec::new();
    let mut raw_keys = Vec::new();
    let mut block = vec![0u8; BLOCK as usize];
    let mut offset = start;
    for _ in 0..MAX_HEADER_BLOCKS {
        if offset + BLOCK > file_len {
            if hdu == 0 && cards.is_empty() {
                // Short first block: decide between "not FITS" and "truncated" by the first bytes.
                let mut head = Vec::new();
                file.take(BLOCK).read_to_end(&mut head).map_err(io_err)?;
                check_signature(path, &head)?;
                let found_end = head.chunks(CARD).any(|c| {
                    c.len() >= 3 && &c[..3] == b"END" && c[3..].iter().all(|&b| b == b' ')
                });
                if found_end {
                    return Err(FitsError::HeaderTruncated {
                        path: path.to_path_buf(),
                        hdu,
                        reason: format!(
                            "the file is {} bytes, shorter than one 2880-byte header block",
                            head.len()
                        ),
                    });
                }
            }
            return Err(FitsError::HeaderTruncated {
                path: path.to_path_buf(),
                hdu,
                reason: format!(
                    "the file ends {} bytes into the header, before its END card",
                    file_len.saturating_sub(start)
                ),
            });
        }
        file.read_exact(&mut block).map_err(io_err)?;
        if hdu == 0 && offset == 0 {
            check_signature(path, &block)?;
        }
        offset += BLOCK;
        for raw in block.chunks_exact(CARD) {
            let card = parse_card(raw);
            if card.key == "END" && raw[8..].iter().all(|&b| b == b' ') {
                return Ok(RawHeader {
                    cards,
                    end: offset,
                    raw_keys,
                });
            }
            if RAW_KEYS.iter().any(|k| raw.starts_with(k)) {
                let mut copy = [b' '; CARD];
                copy.copy_from_slice(raw);
                raw_keys.push(copy);
            }
            push_card(&mut cards, card);
        }
    }
    Err(FitsError::NotFits {
        path: path.to_path_buf(),
        reason: format!("HDU {hdu}: no END card within {MAX_HEADER_BLOCKS} header blocks"),
    })
}

fn check_signature(path: &Path, head: &[u8]) -> Result<(), FitsError> {
    if head.len() < 30 || &head[..10] != b"SIMPLE  = " {
        let shown: String = head
            .iter()
            .take(16)
            .map(|&b| {
                if (32..127).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!("it does not start with `SIMPLE  =` but with `{shown}`"),
        });
    }
    let value = String::from_utf8_lossy(&head[10..30]);
    if value.trim() != "T" {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!("SIMPLE = {} (not a standard FITS file)", value.trim()),
        });
    }
    Ok(())
}

/// Data bytes of an HDU (unpadded): |BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1*...*NAXISn).
fn data_bytes(path: &Path, hdu: usize, cards: &[HeaderCard]) -> Result<u64, FitsError> {
    let bad = |key: &str, reason: String| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason,
    };
    let bitpix = require_int(path, hdu, cards, "BITPIX")?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(bad(
            "BITPIX",
            format!("{bitpix} is not a valid FITS BITPIX"),
        ));
    }
    let naxis = require_int(path, hdu, cards, "NAXIS")?;
    if !(0..=999).contains(&naxis) {
        return Err(bad("NAXIS", format!("{naxis} is out of range")));
    }
    if naxis == 0 {
        return Ok(0);
    }
    let mut elements: u64 = 1;
    for i in 1..=naxis {
        let key = format!("NAXIS{i}");
        let n = require_int(path, hdu, cards, &key)?;
        let n = u64::try_from(n).map_err(|_| bad(&key, format!("{n} is negative")))?;
        elements = elements
            .checked_mul(n)
            .ok_or_else(|| bad(&key, "image size overflows".to_string()))?;
    }
    let pcount = parse_int(path, hdu, cards, "PCOUNT")?.unwrap_or(0);
    let gcount = parse_int(path, hdu, cards, "GCOUNT")?.unwrap_or(1);
    let pcount =
        u64::try_from(pcount).map_err(|_| bad("PCOUNT", format!("{pcount} is negative")))?;
    let gcount =
        u64::try_from(gcount).map_err(|_| bad("GCOUNT", format!("{gcount} is negative")))?;
    elements
        .checked_add(pcount)
        .and_then(|e| e.checked_mul(gcount))
        .and_then(|e| e.checked_mul(bitpix.unsigned_abs() / 8))
        .ok_or_else(|| bad("NAXIS", "data size overflows".to_string()))
}

/// Bytes of one element of a binary-table column type (`TFORMn` letter), bits (`X`) counted as bytes
/// of 8; `None` for a letter that is not a FITS type.
fn element_bytes(code: u8) -> Option<u64> {
    match code {
        b'L' | b'X' | b'B' | b'A' => Some(1),
        b'I' => Some(2),
        b'J' | b'E' => Some(4),
        b'K' | b'D' | b'C' | b'P' => Some(8),
        b'M' | b'Q' => Some(16),
        _ => None,
    }
}

/// Checks that every variable-length array of a tile-compressed image's table (columns `rPt` /
/// `rQt`: one (count, offset) descriptor per row) lies inside the heap. cfitsio trusts the
/// descriptors: one of garbage (e.g. blanks, 538 976 288 elements) made it allocate a gigabyte and
/// read past the end of an 8 KB file for seconds (found by the `fits_read` fuzz target).
fn check_heap(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    file: &mut fs::File,
    data_start: u64,
) -> Result<(), FitsError> {
    let bad = |key: &str, reason: String| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason,
    };
    // data_bytes has checked these are non-negative and that the data is in the file.
    let count = |key: &str| -> Result<u64, FitsError> {
        Ok(parse_int(path, hdu, cards, key)?.unwrap_or(0).max(0) as u64)
    };
    let (row_bytes, rows) = (count("NAXIS1")?, count("NAXIS2")?);
    let (table, pcount) = (row_bytes * rows, count("PCOUNT")?);
    let heap_start = match parse_int(path, hdu, cards, "THEAP")? {
        None => table,
        Some(t) => u64::try_from(t)
            .ok()
            .filter(|&t| t >= table && t <= table + pcount)
            .ok_or_else(|| bad("THEAP", format!("{t} is outside the data")))?,
    };
    let heap_len = table + pcount - heap_start;
    // (byte offset in the row, descriptor type P or Q, bytes per array element) of each array column.
    let mut arrays = Vec::new();
    let mut offset = 0u64;
    for n in 1..=count("TFIELDS")?.min(999) {
        let key = format!("TFORM{n}");
        let form = card_value(cards, &key)
            .ok_or_else(|| bad(&key, "missing".to_string()))?
            .trim()
            .to_ascii_uppercase();
        let digits = form.bytes().take_while(u8::is_ascii_digit).count();
        let repeat = if digits == 0 {
            1
        } else {
            form[..digits]
                .parse::<u64>()
                .map_err(|_| bad(&key, format!("`{form}` has no valid repeat count")))?
        };
        let mut letters = form[digits..].bytes();
        let not_a_type = || bad(&key, format!("`{form}` is not a binary-table column type"));
        let code = letters.next().ok_or_else(not_a_type)?;
        let width = element_bytes(code).ok_or_else(not_a_type)?;
        if matches!(code, b'P' | b'Q') {
            let element = letters
                .next()
                .and_then(element_bytes)
                .ok_or_else(not_a_type)?;
            for k in 0..repeat.min(row_bytes) {
                arrays.push((offset + k * width, code, element));
            }
        }
        let bytes = if code == b'X' {
            repeat.div_ceil(8)
        } else {
            repeat.saturating_mul(width)
        };
        offset = offset.saturating_add(bytes);
    }
    if offset > row_bytes {
        return Err(bad(
            "NAXIS1",
            format!("rows of {row_bytes} bytes, but the TFORMn columns need {offset}"),
        ));
    }
    if arrays.is_empty() {
        return Ok(());
    }
    let mut data = vec![0u8; table as usize];
    file.seek(SeekFrom::Start(data_start))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(|source| FitsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    for (row, bytes) in data.chunks_exact(row_bytes.max(1) as usize).enumerate() {
        for &(at, code, element) in &arrays {
            let at = at as usize;
            // Big-endian signed integers of 4 (P) or 8 (Q) bytes, read into an i64.
            let size = if code == b'P' { 4 } else { 8 };
            let word = |i: usize| {
                let b = &bytes[i..i + size];
                let first = if b[0] & 0x80 != 0 { -1i64 } else { 0 };
                b.iter().fold(first, |v, &x| (v << 8) | i64::from(x))
            };
            let (n, start) = (word(at), word(at + size));
            let end = u64::try_from(n)
                .ok()
                .zip(u64::try_from(start).ok())
                .and_then(|(n, start)| n.checked_mul(element)?.checked_add(start));
            if end.is_none_or(|end| end > heap_len) {
                return Err(FitsError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "HDU {hdu}, table row {}: an array of {n} elements at heap offset {start} \
                         does not fit the {heap_len}-byte heap",
                        row + 1
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Geometry of an image HDU.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    bitpix: i64,
    naxis: usize,
    rows: usize,
    cols: usize,
    /// `NAXIS3`, 1 for a 2-D image.
    planes: usize,
}

/// Image geometry of an image HDU. `prefix` is "" or "Z" (compressed). Cubes (`NAXIS = 3`) are
/// accepted here with their plane count; whether a cube is acceptable is the caller's decision
/// ([`FitsReader::open`] refuses them, [`read_cube`] reads them).
fn image_geometry(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    prefix: &str,
) -> Result<Geometry, FitsError> {
    let bad = |key: &str, reason: String| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason,
    };
    let bitpix = require_int(path, hdu, cards, &format!("{prefix}BITPIX"))?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(FitsError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("BITPIX {bitpix}"),
        });
    }
    let naxis = require_int(path, hdu, cards, &format!("{prefix}NAXIS"))?;
    let mut dims = Vec::new();
    for i in 1..=naxis.clamp(0, 999) {
        if prefix == "Z" {
            // cfitsio divides by the tile size when it opens the HDU: 0 would kill the process
            // (SIGFPE; a fuzz finding), a negative size would misread it.
            // Every card of that name: cfitsio reads the last of repeated cards, this scan the first.
            let key = format!("ZTILE{i}");
            for card in cards.iter().filter(|c| c.key == key) {
                let value = card.value.as_deref().unwrap_or_default().trim();
                if !value.parse::<i64>().is_ok_and(|n| n >= 1) {
                    return Err(bad(
                        &key,
                        format!("`{value}` is not a tile size (at least 1)"),
                    ));
                }
            }
        }
        let key = format!("{prefix}NAXIS{i}");
        let n = require_int(path, hdu, cards, &key)?;
        dims.push(usize::try_from(n).map_err(|_| bad(&key, format!("{n} is negative")))?);
    }
    match dims.as_slice() {
        [cols, rows] | [cols, rows, _] => {
            let planes = dims.get(2).copied().unwrap_or(1);
            if *rows == 0 || *cols == 0 || planes == 0 {
                return Err(FitsError::Unsupported {
                    path: path.to_path_buf(),
                    reason: if planes == 0 {
                        format!("an empty cube of 0 planes of {rows}x{cols}")
                    } else {
                        format!("an empty {rows}x{cols} image")
                    },
                });
            }
            // A tile-compressed header can promise any size; refuse what cannot be a camera frame
            // (or a cube of a few such planes) before anything allocates it.
            if rows.saturating_mul(*cols).saturating_mul(planes) > MAX_PIXELS {
                return Err(FitsError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!(
                        "a {planes}x{rows}x{cols} image (more than {MAX_PIXELS} pixels)"
                    ),
                });
            }
            Ok(Geometry {
                bitpix,
                naxis: dims.len(),
                rows: *rows,
                cols: *cols,
                planes,
            })
        }
        [n] => Err(FitsError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("a 1-dimensional image of {n} pixels"),
        }),
        other => Err(FitsError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("an image with NAXIS = {} ({:?})", other.len(), other),
        }),
    }
}

/// Walks the file's HDUs with `std::fs` until the image HDU and checks that the file is complete.
fn read_layout(path: &Path) -> Result<Layout, FitsError> {
    read_layout_file(path).map(|(layout, _)| layout)
}

/// [`read_layout`], also handing back the open file (the native backend reads its pixels from it).
fn read_layout_file(path: &Path) -> Result<(Layout, fs::File), FitsError> {
    let io_err = |source| FitsError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Look before opening: opening a FIFO blocks until a writer appears, a device never ends.
    if let Some(kind) = not_a_regular_file(&fs::metadata(path).map_err(io_err)?.file_type()) {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!("it is {kind}, not a regular file"),
        });
    }
    let mut file = fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let file_len = meta.len();
    if file_len == 0 {
        return Err(FitsError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut start = 0u64;
    for hdu in 0..MAX_HDUS {
        if hdu > 0 && start >= file_len {
            break;
        }
        let RawHeader {
            cards,
            end: data_start,
            raw_keys,
        } = read_header_at(path, &mut file, start, file_len, hdu)?;
        if hdu > 0 {
            let xt = card_value(&cards, "XTENSION");
            if xt.is_none() {
                // Not an extension header (e.g. trailing garbage after the last HDU): stop looking.
                break;
            }
        }
        let need = data_bytes(path, hdu, &cards)?;
        let have = file_len - data_start;
        let xtension = card_value(&cards, "XTENSION").map(|s| s.trim().to_ascii_uppercase());
        let naxis = parse_int(path, hdu, &cards, "NAXIS")?.unwrap_or(0);
        let plain = || -> Result<Storage, FitsError> {
            check_scaling_cards(path, hdu, &raw_keys)?;
            Ok(plain_scaling(&raw_keys).map_or(Storage::Cfitsio, Storage::Plain))
        };
        let image = match (hdu, xtension.as_deref()) {
            (0, _) if naxis > 0 => {
                if is_true(&cards, "GROUPS") {
                    return Err(FitsError::Unsupported {
                        path: path.to_path_buf(),
                        reason: "random-groups data".to_string(),
                    });
                }
                Some((image_geometry(path, hdu, &cards, "")?, plain()?))
            }
            (_, Some("IMAGE")) if naxis > 0 => {
                Some((image_geometry(path, hdu, &cards, "")?, plain()?))
            }
            (_, Some("BINTABLE")) if is_true(&cards, "ZIMAGE") => {
                Some((image_geometry(path, hdu, &cards, "Z")?, Storage::Cfitsio))
            }
            _ => None,
        };
        let padded = need.div_ceil(BLOCK) * BLOCK;
        if let Some((geometry, storage)) = image {
            if have < need {
                return Err(FitsError::Truncated {
                    path: path.to_path_buf(),
                    have,
                    need,
                });
            }
            if have < padded {
                return Err(FitsError::Unpadded {
                    path: path.to_path_buf(),
                    have,
                    data: need,
                    need: padded,
                });
            }
            if xtension.as_deref() == Some("BINTABLE") {
                check_heap(path, hdu, &cards, &mut file, data_start)?;
            }
            let layout = Layout {
                hdu,
                cards,
                rows: geometry.rows,
                cols: geometry.cols,
                bitpix: geometry.bitpix,
                naxis: geometry.naxis,
                planes: geometry.planes,
                data_start,
                storage,
            };
            return Ok((layout, file));
        }
        if have < padded {
            if have < need {
                return Err(FitsError::Truncated {
                    path: path.to_path_buf(),
                    have,
                    need,
                });
            }
            break; // last HDU without padding and no image in it
        }
        start = data_start + padded;
    }
    Err(FitsError::NoImage {
        path: path.to_path_buf(),
    })
}

fn clean_string(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Numeric keyword value; accepts numbers written as quoted strings and Fortran `D` exponents.
fn number(cards: &[HeaderCard], key: &str) -> Option<f64> {
    let v = card_value(cards, key)?;
    let v = v.trim().replace(['D', 'd'], "E");
    v.parse::<f64>().ok().filter(|x| x.is_finite())
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

// ---------------------------------------------------------------------------------------------
// DATE-OBS
// ---------------------------------------------------------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a `DATE-OBS` value to seconds since 1970-01-01T00:00:00 UTC.
///
/// Accepted: `YYYY-MM-DD`, `YYYY-MM-DDThh:mm[:ss[.fff]]` (a space instead of `T` too) with an
/// optional zone suffix `Z`, `±hh`, `±hhmm` or `±hh:mm` (MicroObservatory writes local time with
/// `-0700`), and the old FITS form `DD/MM/YY` (19YY). Without a zone the time is taken as UTC.
/// Returns `None` for anything else, or for out-of-range fields.
pub fn parse_date_obs(text: &str) -> Option<f64> {
    let s = text.trim();
    if let Some((d, rest)) = s.split_once('/') {
        // Old FITS form DD/MM/YY.
        let (m, y) = rest.split_once('/')?;
        let (d, m, y): (i64, i64, i64) = (d.parse().ok()?, m.parse().ok()?, y.trim().parse().ok()?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(0..=99).contains(&y) {
            return None;
        }
        return Some(days_from_civil(1900 + y, m, d) as f64 * 86_400.0);
    }
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim())),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut seconds = days_from_civil(y, m, d) as f64 * 86_400.0;
    if let Some(time) = time.filter(|t| !t.is_empty()) {
        // Split off a zone suffix.
        let (clock, zone) = if let Some(c) = time.strip_suffix('Z') {
            (c, 0.0)
        } else if let Some(i) = time.rfind(['+', '-']) {
            let z = &time[i + 1..];
            let digits: String = z.chars().filter(|c| *c != ':').collect();
            if digits.is_empty()
                || !digits.chars().all(|c| c.is_ascii_digit())
                || !(digits.len() == 2 || digits.len() == 4)
            {
                return None;
            }
            let hh: f64 = digits[..2].parse().ok()?;
            let mm: f64 = if digits.len() == 4 {
                digits[2..].parse().ok()?
            } else {
                0.0
            };
            let sign = if time.as_bytes()[i] == b'-' {
                -1.0
            } else {
                1.0
            };
            (&time[..i], sign * (hh * 3600.0 + mm * 60.0))
        } else {
            (time, 0.0)
        };
        let mut f = clock.split(':');
        let h: f64 = f.next()?.parse().ok()?;
        let mi: f64 = f.next()?.parse().ok()?;
        let sec: f64 = match f.next() {
            Some(x) => x.parse().ok()?,
            None => 0.0,
        };
        if f.next().is_some()
            || !(0.0..24.0).contains(&h)
            || !(0.0..60.0).contains(&mi)
            || !(0.0..61.0).contains(&sec)
        {
            return None;
        }
        // Local time = UTC + zone, so UTC = local - zone.
        seconds += h * 3600.0 + mi * 60.0 + sec - zone;
    }
    Some(seconds)
}

// ---------------------------------------------------------------------------------------------
// cfitsio plumbing
// ---------------------------------------------------------------------------------------------

/// Path as a C string cfitsio takes literally (absolute or `./`-prefixed: cfitsio strips leading
/// blanks).
fn c_path(path: &Path) -> Result<CString, String> {
    let mut p = PathBuf::new();
    if path.is_relative() {
        p.push(".");
    }
    p.push(path);
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = p
        .to_str()
        .ok_or_else(|| "the path is not valid Unicode".to_string())?
        .as_bytes()
        .to_vec();
    if bytes.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long; cfitsio accepts at most {MAX_PATH_BYTES}",
            bytes.len()
        ));
    }
    CString::new(bytes).map_err(|_| "the path contains a NUL byte".to_string())
}

/// cfitsio's status text plus its error message stack (which is cleared).
fn cfitsio_message(status: c_int) -> String {
    let mut text = [0 as c_char; 32];
    // SAFETY: ffgerr writes at most FLEN_STATUS (31) bytes including the NUL.
    unsafe { sys::ffgerr(status, text.as_mut_ptr()) };
    // SAFETY: NUL-terminated by ffgerr.
    let mut message = unsafe { CStr::from_ptr(text.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut buf = [0 as c_char; 96];
    for _ in 0..8 {
        // SAFETY: ffgmsg writes at most FLEN_ERRMSG (81) bytes including the NUL.
        let more = unsafe { sys::ffgmsg(buf.as_mut_ptr()) };
        if more == 0 {
            break;
        }
        // SAFETY: NUL-terminated by ffgmsg.
        let line = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .trim()
            .to_string();
        if !line.is_empty() && !message.contains(&line) {
            message.push_str("; ");
            message.push_str(&line);
        }
    }
    // SAFETY: clears cfitsio's (thread-local with reentrant builds) message stack.
    unsafe { sys::ffcmsg() };
    message
}

fn cfitsio_error(path: &Path, action: &'static str, status: c_int) -> FitsError {
    FitsError::Cfitsio {
        path: path.to_path_buf(),
        action,
        status,
        message: cfitsio_message(status),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Regions whose rows are at most this many bytes apart on disk (beyond the region's own columns)
/// are read in chunks spanning several rows, gaps included; wider gaps are skipped with one read per
/// row. One read call costs about as much as copying a few KiB.
const MAX_GAP_BYTES: usize = 16 * 1024;
/// Largest single read of the native backend when a region is read in row-spanning chunks.
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// How raw integer samples become `f32` (after the `BLANK` check).
#[derive(Debug, Clone, Copy, PartialEq)]
enum IntMap {
    /// `BSCALE = 1`, `BZERO = 0`: the integer cast straight to `f32`.
    Cast,
    /// `BSCALE = 1` and an integral `BZERO` small enough that `raw + BZERO` is exact in `i32`: the
    /// same value (and so the same single rounding to `f32`) as cfitsio's `raw * 1.0 + BZERO` in
    /// double, without the round trip through `f64`.
    Offset(i32),
    /// `(raw as f64 * BSCALE + BZERO) as f32`, cfitsio's general rule.
    Linear(f64, f64),
}

/// Conversion of big-endian samples of one BITPIX to `f32`, replicating cfitsio's `fffXXr4` routines
/// as `ffgsv` calls them with `TFLOAT` and a NaN null value, followed by this module's rule that
/// every non-finite result is `f32::NAN`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Conversion {
    /// BITPIX 8 (`fffi1r4`); `BLANK` counts only within 0..=255.
    U8 { blank: Option<u8>, map: IntMap },
    /// BITPIX 16 (`fffi2r4`); `BLANK` counts only within the `i16` range.
    I16 { blank: Option<i16>, map: IntMap },
    /// BITPIX 32 (`fffi4r4`); cfitsio casts `BLANK` to 32 bits without a range check.
    I32 { blank: Option<i32>, map: IntMap },
    /// BITPIX 64 (`fffi8r4`): `BSCALE = 1, BZERO = 2^63` flips the sign bit and casts the `u64`
    /// straight to `f32`; no scaling casts the `i64` straight to `f32`; otherwise via `f64`.
    I64 {
        blank: Option<i64>,
        unsigned: bool,
        scale: Option<(f64, f64)>,
    },
    /// BITPIX -32 (`fffr4r4`): NaN/Inf are null; zero and subnormal samples (exponent bits 0) become
    /// `+0.0`, or `BZERO` when scaled; others `v` or `(v as f64 * BSCALE + BZERO) as f32`.
    F32 { scale: Option<(f64, f64)> },
    /// BITPIX -64 (`fffr8r4`), the same rules for doubles.
    F64 { scale: Option<(f64, f64)> },
}

impl Conversion {
    fn new(bitpix: i64, s: Scaling) -> Self {
        let unscaled = s.bscale == 1.0 && s.bzero == 0.0;
        let scale = (!unscaled).then_some((s.bscale, s.bzero));
        let small_map = || {
            if unscaled {
                IntMap::Cast
            } else if s.bscale == 1.0 && s.bzero.fract() == 0.0 && s.bzero.abs() <= (1 << 30) as f64
            {
                IntMap::Offset(s.bzero as i32)
            } else {
                IntMap::Linear(s.bscale, s.bzero)
            }
        };
        let linear = if unscaled {
            IntMap::Cast
        } else {
            IntMap::Linear(s.bscale, s.bzero)
        };
        match bitpix {
            8 => Self::U8 {
                blank: s.blank.and_then(|b| u8::try_from(b).ok()),
                map: small_map(),
            },
            16 => Self::I16 {
                blank: s.blank.and_then(|b| i16::try_from(b).ok()),
                map: small_map(),
            },
            // `(INT32BIT) tnull` in cfitsio: the low 32 bits.
            32 => Self::I32 {
                blank: s.blank.map(|b| b as i32),
                map: linear,
            },
            64 => Self::I64 {
                blank: s.blank,
                unsigned: s.bscale == 1.0 && s.bzero == 9_223_372_036_854_775_808.0,
                scale,
            },
            -32 => Self::F32 { scale },
            _ => Self::F64 { scale },
        }
    }

    /// Bytes per sample.
    fn width(self) -> usize {
        match self {
            Self::U8 { .. } => 1,
            Self::I16 { .. } => 2,
            Self::I32 { .. } | Self::F32 { .. } => 4,
            Self::I64 { .. } | Self::F64 { .. } => 8,
        }
    }

    /// Appends the converted samples of `bytes` (a whole number of samples) to `out`.
    fn extend(self, bytes: &[u8], out: &mut Vec<f32>) {
        fn each<const N: usize>(bytes: &[u8], out: &mut Vec<f32>, f: impl Fn([u8; N]) -> f32) {
            out.extend(bytes.chunks_exact(N).map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            }));
        }
        fn finite(v: f32) -> f32 {
            if v.is_finite() {
                v
            } else {
                f32::NAN
            }
        }
        fn linear(v: f64, bscale: f64, bzero: f64) -> f32 {
            finite((v * bscale + bzero) as f32)
        }
        // One loop per case, so that none tests the case per pixel.
        macro_rules! int {
            ($n:literal, $t:ty, $blank:expr, $map:expr) => {
                match ($blank, $map) {
                    (None, IntMap::Cast) => {
                        each::<$n>(bytes, out, |a| <$t>::from_be_bytes(a) as f32)
                    }
                    (None, IntMap::Offset(z)) => each::<$n>(bytes, out, |a| {
                        (i32::from(<$t>::from_be_bytes(a)) + z) as f32
                    }),
                    (None, IntMap::Linear(m, z)) => each::<$n>(bytes, out, |a| {
                        linear(f64::from(<$t>::from_be_bytes(a)), m, z)
                    }),
                    (Some(b), IntMap::Cast) => each::<$n>(bytes, out, |a| {
                        let r = <$t>::from_be_bytes(a);
                        if r == b {
                            f32::NAN
                        } else {
                            r as f32
                        }
                    }),
                    (Some(b), IntMap::Offset(z)) => each::<$n>(bytes, out, |a| {
                        let r = <$t>::from_be_bytes(a);
                        if r == b {
                            f32::NAN
                        } else {
                            (i32::from(r) + z) as f32
                        }
                    }),
                    (Some(b), IntMap::Linear(m, z)) => each::<$n>(bytes, out, |a| {
                        let r = <$t>::from_be_bytes(a);
                        if r == b {
                            f32::NAN
                        } else {
                            linear(f64::from(r), m, z)
                        }
                    }),
                }
            };
        }
        match self {
            Self::U8 { blank, map } => int!(1, u8, blank, map),
            Self::I16 { blank, map } => int!(2, i16, blank, map),
            Self::I32 { blank, map } => match (blank, map) {
                (None, IntMap::Linear(m, z)) => each::<4>(bytes, out, |a| {
                    linear(f64::from(i32::from_be_bytes(a)), m, z)
                }),
                (None, _) => each::<4>(bytes, out, |a| i32::from_be_bytes(a) as f32),
                (Some(b), IntMap::Linear(m, z)) => each::<4>(bytes, out, |a| {
                    let r = i32::from_be_bytes(a);
                    if r == b {
                        f32::NAN
                    } else {
                        linear(f64::from(r), m, z)
                    }
                }),
                (Some(b), _) => each::<4>(bytes, out, |a| {
                    let r = i32::from_be_bytes(a);
                    if r == b {
                        f32::NAN
                    } else {
                        r as f32
                    }
                }),
            },
            Self::I64 {
                blank,
                unsigned,
                scale,
            } => {
                let blank_or = |r: i64, v: f32| if Some(r) == blank { f32::NAN } else { v };
                if unsigned {
                    each::<8>(bytes, out, |a| {
                        let r = i64::from_be_bytes(a);
                        blank_or(r, ((r as u64) ^ (1 << 63)) as f32)
                    })
                } else if let Some((m, z)) = scale {
                    each::<8>(bytes, out, |a| {
                        let r = i64::from_be_bytes(a);
                        blank_or(r, linear(r as f64, m, z))
                    })
                } else {
                    each::<8>(bytes, out, |a| {
                        let r = i64::from_be_bytes(a);
                        blank_or(r, r as f32)
                    })
                }
            }
            Self::F32 { scale } => {
                const EXP: u32 = 0x7f80_0000;
                match scale {
                    None => each::<4>(bytes, out, |a| {
                        let bits = u32::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => 0.0,
                            _ => f32::from_bits(bits),
                        }
                    }),
                    Some((m, z)) => each::<4>(bytes, out, |a| {
                        let bits = u32::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => finite(z as f32),
                            _ => linear(f64::from(f32::from_bits(bits)), m, z),
                        }
                    }),
                }
            }
            Self::F64 { scale } => {
                const EXP: u64 = 0x7ff0_0000_0000_0000;
                match scale {
                    None => each::<8>(bytes, out, |a| {
                        let bits = u64::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => 0.0,
                            _ => finite(f64::from_bits(bits) as f32),
                        }
                    }),
                    Some((m, z)) => each::<8>(bytes, out, |a| {
                        let bits = u64::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => finite(z as f32),
                            _ => linear(f64::from_bits(bits), m, z),
                        }
                    }),
                }
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
fn read_exact_at(file: &mut fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}

/// The native backend: an uncompressed image read with `std::fs`.
struct NativeImage {
    file: fs::File,
    /// Byte offset of the first sample.
    data_start: u64,
    conversion: Conversion,
    /// Read buffer, kept from one region to the next.
    bytes: Vec<u8>,
}

impl NativeImage {
    /// Reads plane `plane`, rows `rows`, columns `cols` (checked by the caller) of a `h x w` image.
    fn read(
        &mut self,
        (h, w): (usize, usize),
        plane: usize,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> io::Result<Vec<f32>> {
        let bpp = self.conversion.width();
        let (nr, nc) = (rows.len(), cols.len());
        let mut out = Vec::with_capacity(nr * nc);
        // Sample index of (plane, row, col) in the data unit; all fit in u64 (the layout checked
        // that the file holds every sample).
        let index = |row: usize, col: usize| ((plane * h + row) * w + col) as u64;
        let offset = |row: usize, col: usize| self.data_start + index(row, col) * bpp as u64;
        let stride = w * bpp;
        let (seg, gap) = (nc * bpp, (w - nc) * bpp);
        if nc == w || gap <= MAX_GAP_BYTES {
            // Chunks of whole rows: from the region's first column in the chunk's first row to its
            // last column in the chunk's last row (for full-width regions, contiguous samples).
            let per_chunk = (MAX_CHUNK_BYTES / stride).max(1);
            let mut r = rows.start;
            while r < rows.end {
                let n = per_chunk.min(rows.end - r);
                let len = (n - 1) * stride + seg;
                self.bytes.resize(len, 0);
                read_exact_at(&mut self.file, &mut self.bytes, offset(r, cols.start))?;
                if nc == w {
                    self.conversion.extend(&self.bytes, &mut out);
                } else {
                    for i in 0..n {
                        let start = i * stride;
                        self.conversion
                            .extend(&self.bytes[start..start + seg], &mut out);
                    }
                }
                r += n;
            }
        } else {
            self.bytes.resize(seg, 0);
            for r in rows {
                read_exact_at(&mut self.file, &mut self.bytes, offset(r, cols.start))?;
                self.conversion.extend(&self.bytes, &mut out);
            }
        }
        Ok(out)
    }
}

/// Where a [`FitsReader`] gets its pixels.
enum Backend {
    /// Uncompressed image: positioned reads with `std::fs`, conversion in this module.
    Native(NativeImage),
    /// Tile-compressed image (or unusual scaling keywords): cfitsio's `ffgsv`.
    Cfitsio(FitsFile),
}

/// An open frame for repeated region reads. Not `Send` (it may hold a cfitsio handle): open, read and
/// drop it inside one thread. The file is closed when the reader is dropped.
///
/// Uncompressed images are read natively (one positioned read per region, or per chunk of rows),
/// tile-compressed ones through cfitsio; both give the same `f32` values, bit for bit.
///
/// ```
/// use ndarray::{s, Array2};
/// use tlr_core::fits::{write_image_atomic, FitsReader, OutputMeta, SampleFormat};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("Light [001] (M 27).fits"); // taken literally, no cfitsio syntax
/// let image = Array2::from_shape_fn((40, 60), |(r, c)| (r * 100 + c) as f32);
/// write_image_atomic(&path, image.view(), SampleFormat::U16, &OutputMeta::default())?;
///
/// let mut reader = FitsReader::open(&path)?;
/// assert_eq!((reader.header().rows, reader.header().cols), (40, 60));
/// let tile = reader.read_region(10..20, 30..45)?; // rows, then columns
/// assert_eq!(tile, image.slice(s![10..20, 30..45]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FitsReader {
    header: FrameHeader,
    naxis: usize,
    /// `NAXIS3`; more than 1 only for a reader opened by [`read_cube`].
    planes: usize,
    /// Not `Send` (its cfitsio variant is not), whichever backend it holds.
    backend: Backend,
}

impl std::fmt::Debug for FitsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Native(_) => "native",
            Backend::Cfitsio(_) => "cfitsio",
        };
        f.debug_struct("FitsReader")
            .field("header", &self.header)
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl FitsReader {
    /// Validates the file (see [`read_header`]) and opens its image HDU, taking the file name
    /// literally: an uncompressed image with `std::fs` (cfitsio is not involved), a tile-compressed
    /// one with cfitsio.
    ///
    /// # Errors
    /// [`FitsError::Io`], [`FitsError::Empty`], [`FitsError::NotFits`], [`FitsError::HeaderTruncated`],
    /// [`FitsError::Truncated`], [`FitsError::Unpadded`], [`FitsError::BadKeyword`], [`FitsError::NoImage`],
    /// [`FitsError::Unsupported`], [`FitsError::Cube`] (a frame must be 2-D; see [`read_cube`]),
    /// [`FitsError::BadPath`], [`FitsError::Cfitsio`]; each names the file.
    pub fn open(path: &Path) -> Result<Self, FitsError> {
        Self::open_layout(path, false, false)
    }

    /// [`FitsReader::open`], but always reading the pixels through cfitsio, as the reader did before
    /// it had a native backend. For comparisons in tests and benchmarks only.
    ///
    /// # Errors
    /// As [`FitsReader::open`].
    #[doc(hidden)]
    pub fn open_with_cfitsio(path: &Path) -> Result<Self, FitsError> {
        Self::open_layout(path, false, true)
    }

    /// [`FitsReader::open`], optionally accepting a cube of several planes (only [`read_cube`] does)
    /// and optionally forcing the cfitsio backend.
    fn open_layout(path: &Path, allow_cube: bool, force_cfitsio: bool) -> Result<Self, FitsError> {
        let (layout, file) = read_layout_file(path)?;
        if layout.planes > 1 && !allow_cube {
            return Err(FitsError::Cube {
                path: path.to_path_buf(),
                planes: layout.planes,
            });
        }
        let header = frame_header(path, &layout);
        let backend = match layout.storage {
            Storage::Plain(scaling) if !force_cfitsio => Backend::Native(NativeImage {
                file,
                data_start: layout.data_start,
                conversion: Conversion::new(layout.bitpix, scaling),
                bytes: Vec::new(),
            }),
            _ => {
                drop(file);
                Backend::Cfitsio(open_cfitsio(path, &layout)?)
            }
        };
        Ok(Self {
            header,
            naxis: layout.naxis,
            planes: layout.planes,
            backend,
        })
    }

    /// The frame's header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// Reads the whole image as `(rows, cols)`.
    ///
    /// # Errors
    /// [`FitsError::Io`] or [`FitsError::Cfitsio`] when reading fails, [`FitsError::NoFiniteData`]
    /// when no pixel is finite.
    pub fn read_full(&mut self) -> Result<Array2<f32>, FitsError> {
        let image = self.read_region(0..self.header.rows, 0..self.header.cols)?;
        if !image.iter().any(|v| v.is_finite()) {
            return Err(FitsError::NoFiniteData {
                path: self.header.path.clone(),
            });
        }
        Ok(image)
    }

    /// Reads rows `rows` and columns `cols` (0-based, end-exclusive) as `(rows.len(), cols.len())`,
    /// without reading the rest of the frame. Undefined pixels and ±Inf come back as NaN.
    ///
    /// # Errors
    /// [`FitsError::RegionOutOfBounds`] for an empty region or one reaching outside the image,
    /// [`FitsError::Io`] or [`FitsError::Cfitsio`] when reading fails (e.g. the file shrank since it
    /// was opened).
    pub fn read_region(
        &mut self,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Array2<f32>, FitsError> {
        self.read_plane_region(0, rows, cols)
    }

    /// [`FitsReader::read_region`] of plane `plane` (0-based) of a cube; plane 0 of a 2-D image.
    fn read_plane_region(
        &mut self,
        plane: usize,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Array2<f32>, FitsError> {
        let (h, w) = (self.header.rows, self.header.cols);
        if rows.start >= rows.end || cols.start >= cols.end || rows.end > h || cols.end > w {
            return Err(FitsError::RegionOutOfBounds {
                path: self.header.path.clone(),
                rows,
                cols,
                shape_rows: h,
                shape_cols: w,
            });
        }
        let (nr, nc) = (rows.len(), cols.len());
        let plane = plane.min(self.planes.saturating_sub(1));
        let data = match &mut self.backend {
            Backend::Native(image) => {
                image
                    .read((h, w), plane, rows, cols)
                    .map_err(|source| FitsError::Io {
                        path: self.header.path.clone(),
                        source,
                    })?
            }
            Backend::Cfitsio(file) => {
                cfitsio_region(file, &self.header.path, self.naxis, plane, rows, cols)?
            }
        };
        Array2::from_shape_vec((nr, nc), data).map_err(|e| FitsError::Cfitsio {
            path: self.header.path.clone(),
            action: "reshaping pixels",
            status: -1,
            message: e.to_string(),
        })
    }

    /// Reads the `h x w` box whose top-left pixel is `(y0, x0)`; the box may reach outside the image
    /// (e.g. a tile plus margin at the border): those pixels are NaN.
    ///
    /// # Errors
    /// [`FitsError::Io`] or [`FitsError::Cfitsio`] when reading fails.
    pub fn read_region_padded(
        &mut self,
        y0: i64,
        x0: i64,
        h: usize,
        w: usize,
    ) -> Result<Array2<f32>, FitsError> {
        let mut out = Array2::from_elem((h, w), f32::NAN);
        let clip = |start: i64, len: usize, limit: usize| -> Option<(Range<usize>, usize)> {
            let lo = start.max(0);
            let hi = (start + len as i64).min(limit as i64);
            (lo < hi).then(|| (lo as usize..hi as usize, (lo - start) as usize))
        };
        if let (Some((rr, oy)), Some((cr, ox))) =
            (clip(y0, h, self.header.rows), clip(x0, w, self.header.cols))
        {
            let (nr, nc) = (rr.len(), cr.len());
            let part = self.read_region(rr, cr)?;
            out.slice_mut(ndarray::s![oy..oy + nr, ox..ox + nc])
                .assign(&part);
        }
        Ok(out)
    }
}

/// Opens the image HDU of a validated file with cfitsio and checks that cfitsio agrees with
/// `layout` on its geometry.
fn open_cfitsio(path: &Path, layout: &Layout) -> Result<FitsFile, FitsError> {
    let c_name = c_path(path).map_err(|reason| FitsError::NotFits {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut fptr: *mut sys::fitsfile = ptr::null_mut();
    let mut status: c_int = 0;
    // SAFETY: valid NUL-terminated name, out-pointer to a local; READONLY = 0.
    unsafe { sys::ffdkopn(&mut fptr, c_name.as_ptr(), 0, &mut status) };
    if status != 0 || fptr.is_null() {
        if !fptr.is_null() {
            let mut s2 = 0;
            // SAFETY: fptr came from ffdkopn.
            unsafe { sys::ffclos(fptr, &mut s2) };
        }
        return Err(cfitsio_error(path, "opening the file", status));
    }
    // SAFETY: fptr is a valid open handle; FitsFile takes ownership and closes it on drop.
    let mut file =
        unsafe { FitsFile::from_raw(fptr, fitsio::FileOpenMode::READONLY) }.map_err(|e| {
            FitsError::Cfitsio {
                path: path.to_path_buf(),
                action: "opening the file",
                status: -1,
                message: e.to_string(),
            }
        })?;
    // SAFETY: the handle is valid while `file` lives.
    let raw = unsafe { file.as_raw() };
    let mut hdutype: c_int = 0;
    // SAFETY: valid handle; cfitsio HDU numbers are 1-based.
    unsafe { sys::ffmahd(raw, layout.hdu as c_int + 1, &mut hdutype, &mut status) };
    if status != 0 {
        return Err(cfitsio_error(path, "moving to the image HDU", status));
    }
    let mut bitpix: c_int = 0;
    let mut naxis: c_int = 0;
    let mut naxes = [0 as sys::LONGLONG; 9];
    // SAFETY: valid handle; naxes holds maxaxis entries.
    unsafe {
        sys::ffgiprll(
            raw,
            9,
            &mut bitpix,
            &mut naxis,
            naxes.as_mut_ptr(),
            &mut status,
        )
    };
    if status != 0 {
        return Err(cfitsio_error(path, "reading the image geometry", status));
    }
    let agrees = naxis as usize == layout.naxis
        && naxes[0] == layout.cols as sys::LONGLONG
        && naxes[1] == layout.rows as sys::LONGLONG
        && (layout.naxis < 3 || naxes[2] == layout.planes as sys::LONGLONG)
        && i64::from(bitpix) == layout.bitpix;
    if !agrees {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!(
                "cfitsio sees BITPIX {bitpix}, NAXIS {naxis} {:?} where the header says BITPIX {}, {}x{}",
                &naxes[..naxis.clamp(0, 9) as usize],
                layout.bitpix,
                layout.rows,
                layout.cols
            ),
        });
    }
    Ok(file)
}

/// Reads a checked region of plane `plane` with cfitsio's `ffgsv` (`TFLOAT`, null value NaN) and
/// turns every non-finite value into `f32::NAN`.
fn cfitsio_region(
    file: &mut FitsFile,
    path: &Path,
    naxis: usize,
    plane: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Result<Vec<f32>, FitsError> {
    // cfitsio pixel coordinates are 1-based, inclusive, in FITS axis order (x first).
    let mut blc: Vec<c_long> = vec![cols.start as c_long + 1, rows.start as c_long + 1];
    let mut trc: Vec<c_long> = vec![cols.end as c_long, rows.end as c_long];
    let mut inc: Vec<c_long> = vec![1, 1];
    if naxis == 3 {
        let p = plane as c_long + 1;
        blc.push(p);
        trc.push(p);
        inc.push(1);
    }
    let mut data = vec![0f32; rows.len() * cols.len()];
    let mut nulval = f32::NAN;
    let mut anynul: c_int = 0;
    let mut status: c_int = 0;
    // SAFETY: valid handle; blc/trc/inc have NAXIS entries; data holds exactly the region.
    unsafe {
        sys::ffgsv(
            file.as_raw(),
            TFLOAT,
            blc.as_mut_ptr(),
            trc.as_mut_ptr(),
            inc.as_mut_ptr(),
            &mut nulval as *mut f32 as *mut c_void,
            data.as_mut_ptr() as *mut c_void,
            &mut anynul,
            &mut status,
        )
    };
    if status != 0 {
        return Err(cfitsio_error(path, "reading pixels", status));
    }
    for v in &mut data {
        if !v.is_finite() {
            *v = f32::NAN;
        }
    }
    Ok(data)
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

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Sample format of an output image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Unsigned 16 bit as cameras write it: BITPIX 16 with BZERO 32768. Values are rounded and
    /// clamped to 0..=65535. When the image has NaN pixels, `BLANK = -32768` (physical 0) marks them
    /// and finite values are clamped to 1..=65535 instead, so they stay distinguishable.
    U16,
    /// 32-bit IEEE float (BITPIX -32); NaN is written as NaN.
    F32,
}

/// Value of an output header card.
#[derive(Debug, Clone, PartialEq)]
pub enum CardValue {
    /// Integer.
    Int(i64),
    /// Floating point (must be finite).
    Float(f64),
    /// Printable ASCII string (long strings use the CONTINUE convention).
    Str(String),
    /// Logical.
    Bool(bool),
}

/// One output header card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// Keyword: 1 to 8 characters of `A-Z 0-9 - _`.
    pub key: String,
    /// Value.
    pub value: CardValue,
    /// Comment (printable ASCII; may be empty).
    pub comment: String,
}

impl Card {
    /// A card from its parts.
    pub fn new(key: &str, value: CardValue, comment: &str) -> Self {
        Self {
            key: key.to_string(),
            value,
            comment: comment.to_string(),
        }
    }
}

/// Header content of an output file: cards (in order) and HISTORY lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutputMeta {
    /// Keyword cards, written in this order after the structural keywords.
    pub cards: Vec<Card>,
    /// HISTORY lines (printable ASCII; long lines are wrapped by cfitsio).
    pub history: Vec<String>,
}

impl OutputMeta {
    /// Metadata with `CREATOR = 'tlr <crate version> <kind>'`, the mark [`is_own_output`] recognises.
    pub fn tlr_output(kind: &str) -> Self {
        Self {
            cards: vec![Card::new(
                KEY_CREATOR,
                CardValue::Str(format!(
                    "{CREATOR_PREFIX} {} {kind}",
                    env!("CARGO_PKG_VERSION")
                )),
                "program that wrote this file",
            )],
            history: Vec::new(),
        }
    }

    /// Appends a card (builder style).
    pub fn with_card(mut self, key: &str, value: CardValue, comment: &str) -> Self {
        self.cards.push(Card::new(key, value, comment));
        self
    }

    /// Appends a HISTORY line (builder style).
    pub fn with_history(mut self, line: &str) -> Self {
        self.history.push(line.to_string());
        self
    }
}

/// Keywords that the writer sets itself and that `OutputMeta` must not contain.
const RESERVED_KEYS: &[&str] = &[
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "BZERO", "BSCALE", "BLANK", "END", "HISTORY", "COMMENT",
    "XTENSION", "PCOUNT", "GCOUNT",
];

fn check_text(out: &Path, what: &str, text: &str) -> Result<CString, FitsError> {
    if !text.bytes().all(|b| (32..127).contains(&b)) {
        return Err(FitsError::Output {
            path: out.to_path_buf(),
            reason: format!("{what} `{text}` is not printable ASCII"),
        });
    }
    CString::new(text).map_err(|_| FitsError::Output {
        path: out.to_path_buf(),
        reason: format!("{what} contains NUL"),
    })
}

fn validate_meta(out: &Path, meta: &OutputMeta) -> Result<(), FitsError> {
    for card in &meta.cards {
        let k = &card.key;
        let valid = !k.is_empty()
            && k.len() <= 8
            && k.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(FitsError::Output {
                path: out.to_path_buf(),
                reason: format!("card key `{k}` is not 1-8 characters of A-Z 0-9 - _"),
            });
        }
        let structural = RESERVED_KEYS.contains(&k.as_str())
            || (k.starts_with("NAXIS") && k[5..].bytes().all(|b| b.is_ascii_digit()));
        if structural {
            return Err(FitsError::Output {
                path: out.to_path_buf(),
                reason: format!("card key `{k}` is set by the writer itself"),
            });
        }
        match &card.value {
            CardValue::Float(x) if !x.is_finite() => {
                return Err(FitsError::Output {
                    path: out.to_path_buf(),
                    reason: format!("card {k} has the non-finite value {x}"),
                });
            }
            CardValue::Str(s) => {
                check_text(out, &format!("value of {k}"), s)?;
            }
            _ => {}
        }
        check_text(out, &format!("comment of {k}"), &card.comment)?;
    }
    for line in &meta.history {
        check_text(out, "HISTORY line", line)?;
    }
    Ok(())
}

/// Pixels prepared for cfitsio.
enum Pixels {
    F32(Vec<f32>),
    U16 { data: Vec<u16>, blank: bool },
}

/// Writes header + data with cfitsio into `tmp` (which must not exist).
fn write_with_cfitsio(
    out: &Path,
    tmp: &Path,
    dims: &[usize],
    pixels: &Pixels,
    meta: &OutputMeta,
) -> Result<(), FitsError> {
    let c_name = c_path(tmp).map_err(|reason| FitsError::Output {
        path: out.to_path_buf(),
        reason,
    })?;
    let fail = |action: &'static str, status: c_int| {
        let mut e = cfitsio_error(out, action, status);
        if let FitsError::Cfitsio { message, .. } = &mut e {
            message.push_str(&format!(" (temporary file `{}`)", tmp.display()));
        }
        e
    };
    let mut fptr: *mut sys::fitsfile = ptr::null_mut();
    let mut status: c_int = 0;
    // SAFETY: valid name; ffdkinit takes the name literally and fails if the file exists.
    unsafe { sys::ffdkinit(&mut fptr, c_name.as_ptr(), &mut status) };
    if status != 0 || fptr.is_null() {
        return Err(fail("creating the file", status));
    }
    // SAFETY: a valid handle from ffdkinit; FitsFile closes it on drop (also on early return).
    let mut file =
        unsafe { FitsFile::from_raw(fptr, fitsio::FileOpenMode::READWRITE) }.map_err(|e| {
            FitsError::Output {
                path: out.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
    // SAFETY (for every call below): `raw` stays valid while `file` lives; all strings are
    // NUL-terminated CStrings that outlive the call.
    let raw = unsafe { file.as_raw() };
    let mut naxes: Vec<sys::LONGLONG> = dims.iter().rev().map(|&d| d as sys::LONGLONG).collect();
    let img_type = match pixels {
        Pixels::F32(_) => FLOAT_IMG,
        Pixels::U16 { .. } => USHORT_IMG,
    };
    unsafe {
        sys::ffcrimll(
            raw,
            img_type,
            naxes.len() as c_int,
            naxes.as_mut_ptr(),
            &mut status,
        )
    };
    if status != 0 {
        return Err(fail("creating the image", status));
    }
    if let Pixels::U16 { blank: true, .. } = pixels {
        let key = CString::new("BLANK").unwrap_or_default();
        let comment =
            CString::new("raw value of undefined pixels (physical 0)").unwrap_or_default();
        unsafe { sys::ffpkyj(raw, key.as_ptr(), -32768, comment.as_ptr(), &mut status) };
        if status != 0 {
            return Err(fail("writing BLANK", status));
        }
    }
    if meta
        .cards
        .iter()
        .any(|c| matches!(&c.value, CardValue::Str(v) if v.len() > 68))
    {
        // Declares the OGIP long-string (CONTINUE) convention, as fitsverify recommends.
        unsafe { sys::ffplsw(raw, &mut status) };
        if status != 0 {
            return Err(fail("writing LONGSTRN", status));
        }
    }
    for card in &meta.cards {
        let key = check_text(out, "card key", &card.key)?;
        let comment = check_text(out, "card comment", &card.comment)?;
        match &card.value {
            CardValue::Int(v) => unsafe {
                sys::ffpkyj(raw, key.as_ptr(), *v, comment.as_ptr(), &mut status)
            },
            CardValue::Float(v) => unsafe {
                sys::ffpkyd(raw, key.as_ptr(), *v, -15, comment.as_ptr(), &mut status)
            },
            CardValue::Bool(v) => unsafe {
                sys::ffpkyl(
                    raw,
                    key.as_ptr(),
                    c_int::from(*v),
                    comment.as_ptr(),
                    &mut status,
                )
            },
            CardValue::Str(s) => {
                let value = check_text(out, "card value", s)?;
                if s.len() <= 68 {
                    unsafe {
                        sys::ffpkys(
                            raw,
                            key.as_ptr(),
                            value.as_ptr(),
                            comment.as_ptr(),
                            &mut status,
                        )
                    }
                } else {
                    unsafe {
                        sys::ffpkls(
                            raw,
                            key.as_ptr(),
                            value.as_ptr(),
                            comment.as_ptr(),
                            &mut status,
                        )
                    }
                }
            }
        };
        if status != 0 {
            return Err(fail("writing header cards", status));
        }
    }
    for line in &meta.history {
        let text = check_text(out, "HISTORY line", line)?;
        unsafe { sys::ffphis(raw, text.as_ptr(), &mut status) };
        if status != 0 {
            return Err(fail("writing HISTORY", status));
        }
    }
    let mut first: Vec<c_long> = vec![1; dims.len()];
    match pixels {
        Pixels::F32(data) => unsafe {
            sys::ffppx(
                raw,
                TFLOAT,
                first.as_mut_ptr(),
                data.len() as sys::LONGLONG,
                data.as_ptr() as *mut c_void,
                &mut status,
            )
        },
        Pixels::U16 { data, .. } => unsafe {
            sys::ffppx(
                raw,
                TUSHORT,
                first.as_mut_ptr(),
                data.len() as sys::LONGLONG,
                data.as_ptr() as *mut c_void,
                &mut status,
            )
        },
    };
    if status != 0 {
        return Err(fail("writing pixels", status));
    }
    unsafe { sys::ffflus(raw, &mut status) };
    if status != 0 {
        return Err(fail("flushing", status));
    }
    drop(file); // closes; cfitsio already flushed, so a close error cannot lose data silently
    Ok(())
}

fn write_atomic(
    path: &Path,
    dims: &[usize],
    pixels: Pixels,
    meta: &OutputMeta,
) -> Result<(), FitsError> {
    validate_meta(path, meta)?;
    if dims.contains(&0) {
        return Err(FitsError::Output {
            path: path.to_path_buf(),
            reason: format!("cannot write an empty image of shape {dims:?}"),
        });
    }
    crate::atomic::write_file(path, |tmp| {
        write_with_cfitsio(path, tmp, dims, &pixels, meta)
    })
}

fn f32_pixels<'a>(it: impl Iterator<Item = &'a f32>) -> Pixels {
    Pixels::F32(it.copied().collect())
}

fn u16_pixels<'a>(it: impl Iterator<Item = &'a f32> + Clone) -> Pixels {
    let blank = it.clone().any(|v| v.is_nan());
    let lo = if blank { 1.0 } else { 0.0 };
    let data = it
        .map(|&v| {
            if v.is_nan() {
                0
            } else {
                v.round().clamp(lo, 65535.0) as u16
            }
        })
        .collect();
    Pixels::U16 { data, blank }
}

/// Writes a `(rows, cols)` image atomically: a hidden temporary file in the destination folder,
/// fsync, then rename over `path` (an existing file is replaced). The header holds the structural
/// keywords, then `meta.cards` in order, then `meta.history`.
///
/// # Errors
/// [`FitsError::Output`] for an empty image or invalid cards (bad key, reserved key such as BITPIX
/// or BZERO, non-finite float, non-ASCII text), [`FitsError::Cfitsio`] or [`FitsError::OutputIo`] when
/// writing, syncing or renaming fails (the temporary file is removed).
pub fn write_image_atomic(
    path: &Path,
    image: ArrayView2<f32>,
    format: SampleFormat,
    meta: &OutputMeta,
) -> Result<(), FitsError> {
    let (r, c) = image.dim();
    let pixels = match format {
        SampleFormat::F32 => f32_pixels(image.iter()),
        SampleFormat::U16 => u16_pixels(image.iter()),
    };
    write_atomic(path, &[r, c], pixels, meta)
}

/// Writes a `(planes, rows, cols)` cube as BITPIX -32 (NAXIS3 = planes), atomically like
/// [`write_image_atomic`].
///
/// # Errors
/// As [`write_image_atomic`].
pub fn write_cube_atomic(
    path: &Path,
    planes: ArrayView3<f32>,
    meta: &OutputMeta,
) -> Result<(), FitsError> {
    let (p, r, c) = planes.dim();
    write_atomic(path, &[p, r, c], f32_pixels(planes.iter()), meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cards() {
        let mut raw = format!("{:<80}", "DATE-OBS= '2018-09-07T22:31:45.431' / UTC start");
        let c = parse_card(raw.as_bytes());
        assert_eq!(c.key, "DATE-OBS");
        assert_eq!(c.value.as_deref(), Some("2018-09-07T22:31:45.431"));
        assert_eq!(c.comment, "UTC start");
        raw = format!("{:<80}", "OBJECT  = 'O''Neil  '");
        assert_eq!(parse_card(raw.as_bytes()).value.as_deref(), Some("O'Neil"));
        raw = format!("{:<80}", "EXPTIME = 060.00 / Exposure");
        assert_eq!(parse_card(raw.as_bytes()).value.as_deref(), Some("060.00"));
        raw = format!("{:<80}", "HISTORY = not a value");
        assert_eq!(parse_card(raw.as_bytes()).value, None);
    }

    #[test]
    fn parses_dates() {
        let utc = parse_date_obs("2017-12-20T01:33:43.317").unwrap();
        let local = parse_date_obs("2017-12-19T18:33:43.317-0700").unwrap();
        assert!((utc - local).abs() < 1e-6, "{utc} vs {local}");
        assert_eq!(parse_date_obs("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_date_obs("1970-01-02"), Some(86_400.0));
        assert_eq!(parse_date_obs("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_date_obs("02/01/70"), Some(86_400.0));
        assert_eq!(parse_date_obs("yesterday"), None);
        assert_eq!(parse_date_obs("2020-13-01"), None);
        assert_eq!(parse_date_obs("2020-01-01T25:00:00"), None);
    }

    #[test]
    fn own_output_marker() {
        assert!(is_own_output("tlr 0.1.0 mosaic"));
        assert!(is_own_output("tlr"));
        assert!(!is_own_output("tlr-simulate 0.1.0"));
        assert!(!is_own_output("MicroObservatory2014-05-23"));
    }
}
