//! The writer: `f32` images (BITPIX -32), camera-like `u16` images (BITPIX 16, BZERO 32768, `BLANK`
//! for NaN) and `f32` cubes, with the caller's cards ([`OutputMeta`]) checked first, written by
//! cfitsio into a hidden temporary file in the destination folder, then synced and renamed over the
//! destination ([`crate::atomic`]).
//!
//! Several HDUs go into one file with [`write_hdus_atomic`] (a result's coverage map is an IMAGE
//! extension after the image).
//!
//! What it does not: no reading, no compressed output, no tables, no appending to an existing
//! file; structural keywords (BITPIX, NAXISn, BZERO, ...) are the writer's own and refused
//! in `OutputMeta`.

use std::ffi::CString;
use std::os::raw::{c_int, c_long, c_void};
use std::path::Path;
use std::ptr;

use fitsio::FitsFile;
use fitsio_sys as sys;
use ndarray::{ArrayView2, ArrayView3};

use super::cfitsio::{c_path, cfitsio_error, FLOAT_IMG, TFLOAT, TUSHORT, USHORT_IMG};
use super::{FitsError, CREATOR_PREFIX, KEY_CREATOR};

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
    /// Metadata with `CREATOR = 'tlr <crate version> <kind>'`, the mark
    /// [`is_own_output`](super::is_own_output) recognises.
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

/// One HDU ready for cfitsio: shape (slowest axis first), pixels and header content.
struct PreparedHdu<'a> {
    dims: Vec<usize>,
    pixels: Pixels,
    meta: &'a OutputMeta,
}

/// Writes the HDUs (the first as the primary, the others as IMAGE extensions) with cfitsio into
/// `tmp` (which must not exist).
fn write_with_cfitsio(out: &Path, tmp: &Path, hdus: &[PreparedHdu]) -> Result<(), FitsError> {
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
    for hdu in hdus {
        write_hdu(out, raw, hdu, &fail)?;
    }
    unsafe { sys::ffflus(raw, &mut status) };
    if status != 0 {
        return Err(fail("flushing", status));
    }
    drop(file); // closes; cfitsio already flushed, so a close error cannot lose data silently
    Ok(())
}

/// Appends one image HDU (cfitsio creates the primary first, then IMAGE extensions) with its cards
/// and pixels.
fn write_hdu(
    out: &Path,
    raw: *mut sys::fitsfile,
    hdu: &PreparedHdu,
    fail: &dyn Fn(&'static str, c_int) -> FitsError,
) -> Result<(), FitsError> {
    let (dims, pixels, meta) = (&hdu.dims, &hdu.pixels, hdu.meta);
    let mut status: c_int = 0;
    // SAFETY (for every call below): `raw` is the open handle of the caller's `FitsFile`; all strings
    // are NUL-terminated CStrings that outlive the call; pixel buffers hold `len` values.
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
    let (datatype, len, data) = match pixels {
        Pixels::F32(data) => (TFLOAT, data.len(), data.as_ptr() as *mut c_void),
        Pixels::U16 { data, .. } => (TUSHORT, data.len(), data.as_ptr() as *mut c_void),
    };
    unsafe {
        sys::ffppx(
            raw,
            datatype,
            first.as_mut_ptr(),
            len as sys::LONGLONG,
            data,
            &mut status,
        )
    };
    if status != 0 {
        return Err(fail("writing pixels", status));
    }
    Ok(())
}

fn write_atomic(path: &Path, hdus: &[PreparedHdu]) -> Result<(), FitsError> {
    for hdu in hdus {
        validate_meta(path, hdu.meta)?;
        if hdu.dims.contains(&0) {
            return Err(FitsError::Output {
                path: path.to_path_buf(),
                reason: format!("cannot write an empty image of shape {:?}", hdu.dims),
            });
        }
    }
    crate::atomic::write_file(path, |tmp| write_with_cfitsio(path, tmp, hdus))
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

/// Writes a `(planes, rows, cols)` cube (NAXIS3 = planes) in `format`, atomically like
/// [`write_image_atomic`]; [`write_cube_atomic`] is the float case.
///
/// # Errors
/// As [`write_image_atomic`].
pub fn write_cube_as_atomic(
    path: &Path,
    planes: ArrayView3<f32>,
    format: SampleFormat,
    meta: &OutputMeta,
) -> Result<(), FitsError> {
    write_hdus_atomic(
        path,
        &[Hdu {
            data: HduData::Cube(planes, format),
            meta,
        }],
    )
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
    write_hdus_atomic(path, &[Hdu::image(image, format, meta)])
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
    write_hdus_atomic(path, &[Hdu::cube(planes, meta)])
}

/// The pixels of one HDU of [`write_hdus_atomic`].
#[derive(Debug, Clone, Copy)]
pub enum HduData<'a> {
    /// A `(rows, cols)` image in this sample format.
    Image(ArrayView2<'a, f32>, SampleFormat),
    /// A `(planes, rows, cols)` cube in this sample format.
    Cube(ArrayView3<'a, f32>, SampleFormat),
}

/// One HDU of [`write_hdus_atomic`]: pixels and header content (an extension names itself with an
/// `EXTNAME` card in `meta`).
#[derive(Debug, Clone, Copy)]
pub struct Hdu<'a> {
    /// The pixels.
    pub data: HduData<'a>,
    /// Cards and HISTORY lines.
    pub meta: &'a OutputMeta,
}

impl<'a> Hdu<'a> {
    /// An image HDU.
    pub fn image(image: ArrayView2<'a, f32>, format: SampleFormat, meta: &'a OutputMeta) -> Self {
        Self {
            data: HduData::Image(image, format),
            meta,
        }
    }

    /// A float32 cube HDU.
    pub fn cube(planes: ArrayView3<'a, f32>, meta: &'a OutputMeta) -> Self {
        Self {
            data: HduData::Cube(planes, SampleFormat::F32),
            meta,
        }
    }

    fn prepare(&self) -> PreparedHdu<'a> {
        let (dims, pixels) = match self.data {
            HduData::Image(image, SampleFormat::F32) => {
                (vec![image.nrows(), image.ncols()], f32_pixels(image.iter()))
            }
            HduData::Image(image, SampleFormat::U16) => {
                (vec![image.nrows(), image.ncols()], u16_pixels(image.iter()))
            }
            HduData::Cube(cube, format) => {
                let (p, r, c) = cube.dim();
                let pixels = match format {
                    SampleFormat::F32 => f32_pixels(cube.iter()),
                    SampleFormat::U16 => u16_pixels(cube.iter()),
                };
                (vec![p, r, c], pixels)
            }
        };
        PreparedHdu {
            dims,
            pixels,
            meta: self.meta,
        }
    }
}

/// Writes `hdus` into one file atomically like [`write_image_atomic`]: the first as the primary HDU,
/// the others as IMAGE extensions after it (tools that read the first image, Siril among them, see
/// the primary only).
///
/// # Errors
/// As [`write_image_atomic`], for any of the HDUs; an empty list is [`FitsError::Output`].
pub fn write_hdus_atomic(path: &Path, hdus: &[Hdu]) -> Result<(), FitsError> {
    if hdus.is_empty() {
        return Err(FitsError::Output {
            path: path.to_path_buf(),
            reason: "no image to write".into(),
        });
    }
    let prepared: Vec<PreparedHdu> = hdus.iter().map(Hdu::prepare).collect();
    write_atomic(path, &prepared)
}
