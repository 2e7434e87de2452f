//! Export formats of a result. The output file's extension chooses the format
//! ([`FileFormat::from_path`]): `.fits`/`.fit`/`.fts` FITS, `.tif`/`.tiff` TIFF, `.png` PNG; the user
//! chooses the samples ([`BitDepth`]: 16-bit integers or 32-bit floats) and whether float values are
//! scaled to [0, 1] ([`ExportOptions::normalize`]). [`write_atomic`] writes a mono image or an RGB cube
//! in the resolved [`Export`], atomically ([`crate::atomic`]).
//!
//! One scaling rule for every format ([`LinearMap`]): integer outputs (16-bit FITS, TIFF, PNG) and
//! normalised float outputs map the values linearly, 0 at the smaller of 0 and the image's minimum,
//! 65535 (or 1.0) at the image's maximum: no stretch, no clipping, the same map for all three colours
//! (so the colour balance is kept). Float outputs without `normalize` keep the values as they are (the
//! FITS float output is exactly what [`crate::fits::write_image_atomic`] writes). A NaN pixel stays NaN
//! in float outputs, is `BLANK` in 16-bit FITS and 0 in TIFF and PNG.
//!
//! TIFF (`tiff_file`): baseline, uncompressed, one strip per ~1 MB; mono is one grey channel, colour is
//! RGB, interleaved (chunky); 16-bit unsigned or 32-bit IEEE float samples. PNG (`png_file`): 16-bit grey
//! or RGB. Both keep the image's row order (first row at the top, as in the preview) and carry the tool
//! and the scaling in their metadata (TIFF `Software`/`ImageDescription`, PNG `tEXt`).
//!
//! What it does not: choose file names or previews, build FITS headers (callers pass the cards; scaled
//! FITS outputs get `TLRBLACK`/`TLRWHITE` and the value cards rescaled), stretch for display
//! ([`crate::preview`] does), compress, or read any of these formats.

mod png_file;
mod tiff_file;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use ndarray::{ArrayView3, Axis};

use crate::atomic::AtomicError;
use crate::fits::{self, CardValue, FitsError, OutputMeta, SampleFormat};

/// The largest 16-bit sample: white in integer outputs.
pub const U16_WHITE: f64 = 65535.0;

/// Cards of a FITS header whose values are pixel values (rescaled with the pixels).
const VALUE_CARDS: &[&str] = &["DATAMED", "DATAMIN", "DATAMAX", "SATURATE"];
/// Cards whose values are pixel-value differences (scaled, not shifted).
const SPREAD_CARDS: &[&str] = &["DATASIG"];

/// The container, chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.fits`, `.fit`, `.fts`.
    Fits,
    /// `.tif`, `.tiff`.
    Tiff,
    /// `.png`.
    Png,
}

impl FileFormat {
    /// The extensions accepted, for messages.
    pub const CHOICES: &'static str =
        ".fits, .fit or .fts (FITS), .tif or .tiff (TIFF), .png (PNG)";

    /// The format `path`'s extension names (case-insensitive).
    ///
    /// # Errors
    /// [`ExportError::UnknownFormat`] for any other extension or none.
    pub fn from_path(path: &Path) -> Result<Self, ExportError> {
        let extension = path.extension().and_then(OsStr::to_str);
        match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("fits" | "fit" | "fts") => Ok(Self::Fits),
            Some("tif" | "tiff") => Ok(Self::Tiff),
            Some("png") => Ok(Self::Png),
            _ => Err(ExportError::UnknownFormat {
                path: path.to_path_buf(),
                extension: path.extension().map(|e| e.to_string_lossy().into_owned()),
            }),
        }
    }

    /// The samples written when the user chooses none: 32-bit float for FITS (tlr's result as it is),
    /// 16-bit for TIFF and PNG (what image editors open).
    pub fn default_depth(self) -> BitDepth {
        match self {
            Self::Fits => BitDepth::Float32,
            Self::Tiff | Self::Png => BitDepth::Int16,
        }
    }

    /// The format's name: `FITS`, `TIFF`, `PNG`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fits => "FITS",
            Self::Tiff => "TIFF",
            Self::Png => "PNG",
        }
    }
}

/// The samples of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitDepth {
    /// Unsigned 16-bit integers, the image mapped onto 0..65535 ([`LinearMap`]).
    Int16,
    /// 32-bit IEEE floats: the values as they are, or in [0, 1] when normalised.
    Float32,
}

/// What the user chose; the format comes from the file name ([`Export::for_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportOptions {
    /// The samples; `None`: the format's default ([`FileFormat::default_depth`]).
    pub bit_depth: Option<BitDepth>,
    /// Float outputs: write the values mapped onto [0, 1] ([`LinearMap`]) for tools that expect it.
    /// Integer outputs are always mapped.
    pub normalize: bool,
}

/// A resolved output: format, samples, scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// The container.
    pub format: FileFormat,
    /// The samples.
    pub depth: BitDepth,
    /// Float values mapped onto [0, 1].
    pub normalize: bool,
}

impl Export {
    /// The export of `path` with `options`: the format from the extension, the depth chosen or the
    /// format's default.
    ///
    /// # Errors
    /// [`ExportError::UnknownFormat`] for an extension of no format, [`ExportError::Unsupported`] for
    /// 32-bit PNG.
    pub fn for_path(path: &Path, options: &ExportOptions) -> Result<Self, ExportError> {
        let format = FileFormat::from_path(path)?;
        let depth = options.bit_depth.unwrap_or(format.default_depth());
        if format == FileFormat::Png && depth == BitDepth::Float32 {
            return Err(ExportError::Unsupported {
                path: path.to_path_buf(),
                reason:
                    "PNG holds integers only: 16-bit PNG, or 32-bit float in a .fits or .tif file"
                        .into(),
            });
        }
        Ok(Self {
            format,
            depth,
            normalize: options.normalize,
        })
    }

    /// The value white is written as when the pixels are mapped ([`Self::scales`]): 65535 or 1.
    pub fn white_level(&self) -> f64 {
        match self.depth {
            BitDepth::Int16 => U16_WHITE,
            BitDepth::Float32 => 1.0,
        }
    }

    /// Whether the pixels are mapped by a [`LinearMap`]: integer outputs always, floats when normalised.
    pub fn scales(&self) -> bool {
        self.depth == BitDepth::Int16 || self.normalize
    }

    /// One line saying what the samples are, for the file's metadata.
    pub fn describe(&self, map: Option<&LinearMap>) -> String {
        let samples = match self.depth {
            BitDepth::Int16 => "16-bit unsigned",
            BitDepth::Float32 => "32-bit float",
        };
        match map {
            Some(map) => format!(
                "{samples}, linear: {} -> 0, {} -> {} (black at min(0, minimum), white at the maximum)",
                map.black,
                map.white,
                self.white_level()
            ),
            None => format!("{samples}, the reconstructed values"),
        }
    }
}

/// The linear map of an image's values onto [0, 1]: `(v - black) / (white - black)`, with black the
/// smaller of 0 and the image's smallest finite value and white its largest. Data that start at 0 keep
/// their ratios (twice the flux, twice the value); negative values are not clipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearMap {
    /// The value mapped to 0.
    pub black: f32,
    /// The value mapped to 1 (65535).
    pub white: f32,
}

impl LinearMap {
    /// The map of `values` (NaN and infinities ignored). Without finite values, or when they are all
    /// equal to black, every value maps to 0.
    pub fn of<'a>(values: impl Iterator<Item = &'a f32>) -> Self {
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((0.0f32, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        Self {
            black: lo,
            white: if hi.is_finite() { hi } else { lo },
        }
    }

    /// `v` mapped onto [0, 1] (clamped; NaN stays NaN).
    pub fn unit(&self, v: f32) -> f64 {
        let span = f64::from(self.white) - f64::from(self.black);
        if v.is_nan() {
            return f64::NAN;
        }
        if !(span > 0.0) {
            return 0.0;
        }
        ((f64::from(v) - f64::from(self.black)) / span).clamp(0.0, 1.0)
    }

    /// `v` as a 16-bit sample: `round(unit(v) * 65535)`, NaN as 0.
    pub fn to_u16(&self, v: f32) -> u16 {
        let unit = self.unit(v);
        if unit.is_nan() {
            0
        } else {
            (unit * U16_WHITE).round() as u16
        }
    }
}

/// A failed export; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The file name's extension names no format tlr writes.
    #[error(
        "`{}`: {}; the extension chooses it: {}",
        path.display(),
        match extension {
            Some(e) => format!("unknown output format `.{e}`"),
            None => "no extension to tell the output format".to_string(),
        },
        FileFormat::CHOICES
    )]
    UnknownFormat {
        /// The output path.
        path: PathBuf,
        /// Its extension, if any.
        extension: Option<String>,
    },
    /// A combination the format cannot hold (32-bit PNG).
    #[error("`{}`: {reason}", path.display())]
    Unsupported {
        /// The output path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TIFF and PNG hold 1 (grey) or 3 (RGB) planes of 1 to 2^31 - 1 rows and columns.
    #[error(
        "`{}`: cannot write {planes} planes of {rows} x {cols} pixels (1 or 3 planes, at least one pixel)",
        path.display()
    )]
    BadShape {
        /// The output path.
        path: PathBuf,
        /// Planes given.
        planes: usize,
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// The TIFF encoder failed.
    #[error("TIFF `{}`: encoding failed", path.display())]
    Tiff {
        /// The output path.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: ::tiff::TiffError,
    },
    /// The PNG encoder failed.
    #[error("PNG `{}`: encoding failed", path.display())]
    Png {
        /// The output path.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: ::png::EncodingError,
    },
    /// Writing, syncing or renaming the file failed.
    #[error(transparent)]
    Atomic(#[from] AtomicError),
    /// The FITS writer failed.
    #[error(transparent)]
    Fits(#[from] FitsError),
}

/// Writes `planes` (`(1, rows, cols)` mono or `(3, rows, cols)` R, G, B) to `path` as `export` says,
/// atomically. FITS files get `meta` (scaled ones also `TLRBLACK`, `TLRWHITE`, a HISTORY line, and
/// the value cards `DATAMED`, `DATASIG`, … in the new units); TIFF and PNG files name the tool and the
/// scaling in their metadata.
///
/// # Errors
/// [`ExportError`] naming the file; the destination is untouched then.
pub fn write_atomic(
    path: &Path,
    planes: ArrayView3<f32>,
    export: &Export,
    meta: &OutputMeta,
) -> Result<(), ExportError> {
    let map = export.scales().then(|| LinearMap::of(planes.iter()));
    match export.format {
        FileFormat::Fits => write_fits(path, planes, export, map.as_ref(), meta),
        FileFormat::Tiff => tiff_file::write(path, planes, export, map.as_ref()),
        FileFormat::Png => {
            let map = map.unwrap_or_else(|| LinearMap::of(planes.iter()));
            png_file::write(path, planes, export, &map)
        }
    }
}

/// FITS: the float writer as it is, or the mapped values as 16-bit or normalised float.
fn write_fits(
    path: &Path,
    planes: ArrayView3<f32>,
    export: &Export,
    map: Option<&LinearMap>,
    meta: &OutputMeta,
) -> Result<(), ExportError> {
    let Some(map) = map else {
        return Ok(write_fits_planes(path, planes, SampleFormat::F32, meta)?);
    };
    let (format, scaled) = match export.depth {
        // Rounded here (in f64), so the writer's own rounding keeps these integers as they are.
        BitDepth::Int16 => (
            SampleFormat::U16,
            planes.mapv(|v| {
                if v.is_nan() {
                    v
                } else {
                    f32::from(map.to_u16(v))
                }
            }),
        ),
        BitDepth::Float32 => (SampleFormat::F32, planes.mapv(|v| map.unit(v) as f32)),
    };
    let meta = rescaled_meta(meta, map, export);
    Ok(write_fits_planes(path, scaled.view(), format, &meta)?)
}

/// One plane as a 2-D image (NAXIS 2), more as a cube.
fn write_fits_planes(
    path: &Path,
    planes: ArrayView3<f32>,
    format: SampleFormat,
    meta: &OutputMeta,
) -> Result<(), FitsError> {
    if planes.dim().0 == 1 {
        fits::write_image_atomic(path, planes.index_axis(Axis(0), 0), format, meta)
    } else {
        fits::write_cube_as_atomic(path, planes, format, meta)
    }
}

/// `meta` for mapped pixels: the value cards in the new units, `TLRBLACK`/`TLRWHITE`, a HISTORY line.
fn rescaled_meta(meta: &OutputMeta, map: &LinearMap, export: &Export) -> OutputMeta {
    let full = export.white_level();
    let span = f64::from(map.white) - f64::from(map.black);
    let gain = if span > 0.0 { full / span } else { 0.0 };
    let mut meta = meta.clone();
    for card in &mut meta.cards {
        let value = match card.value {
            CardValue::Float(v) => v,
            CardValue::Int(v) => v as f64,
            _ => continue,
        };
        if VALUE_CARDS.contains(&card.key.as_str()) {
            card.value = CardValue::Float((value - f64::from(map.black)) * gain);
        } else if SPREAD_CARDS.contains(&card.key.as_str()) {
            card.value = CardValue::Float(value * gain);
        }
    }
    meta.cards.push(fits::Card::new(
        "TLRBLACK",
        CardValue::Float(f64::from(map.black)),
        "reconstructed value written as 0",
    ));
    meta.cards.push(fits::Card::new(
        "TLRWHITE",
        CardValue::Float(f64::from(map.white)),
        &format!("reconstructed value written as {full}"),
    ));
    meta.history.push(export.describe(Some(map)));
    meta
}

/// Width and height of `planes` for TIFF and PNG: 1 or 3 planes, 1 to `i32::MAX` rows and columns.
fn checked_size(path: &Path, planes: &ArrayView3<f32>) -> Result<(u32, u32), ExportError> {
    let (n, rows, cols) = planes.dim();
    let fits = |x: usize| x > 0 && x <= i32::MAX as usize;
    if !(n == 1 || n == 3) || !fits(rows) || !fits(cols) {
        return Err(ExportError::BadShape {
            path: path.to_path_buf(),
            planes: n,
            rows,
            cols,
        });
    }
    Ok((cols as u32, rows as u32))
}

/// The samples of `planes` pixel by pixel, row by row, the planes of a pixel side by side (chunky).
fn interleaved<T>(planes: &ArrayView3<f32>, sample: impl Fn(f32) -> T) -> Vec<T> {
    planes
        .view()
        .permuted_axes([1, 2, 0])
        .iter()
        .map(|&v| sample(v))
        .collect()
}

/// `tlr <version>`, for the files' metadata.
fn software() -> String {
    format!("{} {}", fits::CREATOR_PREFIX, env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_choose_the_format_case_insensitively() {
        for (name, format) in [
            ("a.fits", FileFormat::Fits),
            ("a.FIT", FileFormat::Fits),
            ("a.fts", FileFormat::Fits),
            ("d/a.b.TIFF", FileFormat::Tiff),
            ("a.tif", FileFormat::Tiff),
            ("a.Png", FileFormat::Png),
        ] {
            assert_eq!(FileFormat::from_path(Path::new(name)).unwrap(), format);
        }
        for bad in ["a.jpg", "a", "a.fits.fz", "a."] {
            let e = FileFormat::from_path(Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad) && e.contains(".tif or .tiff"), "{e}");
        }
        let e = FileFormat::from_path(Path::new("x.jpg"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown output format `.jpg`"), "{e}");
    }

    #[test]
    fn depth_defaults_per_format_and_png_refuses_floats() {
        let resolve = |name: &str, bit_depth| {
            Export::for_path(
                Path::new(name),
                &ExportOptions {
                    bit_depth,
                    normalize: false,
                },
            )
        };
        assert_eq!(resolve("a.fits", None).unwrap().depth, BitDepth::Float32);
        assert_eq!(resolve("a.tif", None).unwrap().depth, BitDepth::Int16);
        assert_eq!(resolve("a.png", None).unwrap().depth, BitDepth::Int16);
        assert!(!resolve("a.fits", None).unwrap().scales());
        assert!(resolve("a.fits", Some(BitDepth::Int16)).unwrap().scales());
        let e = resolve("a.png", Some(BitDepth::Float32)).unwrap_err();
        assert!(e.to_string().contains("PNG holds integers only"), "{e}");
    }

    #[test]
    fn the_map_puts_black_at_zero_or_the_minimum_and_white_at_the_maximum() {
        let positive = LinearMap::of([100.0f32, 400.0, f32::NAN, f32::INFINITY].iter());
        assert_eq!((positive.black, positive.white), (0.0, 400.0));
        assert_eq!(positive.to_u16(400.0), 65535);
        assert_eq!(positive.to_u16(200.0), 32768); // 32767.5 rounds up
        assert_eq!(positive.to_u16(0.0), 0);
        assert_eq!(positive.to_u16(f32::NAN), 0);
        assert!(positive.unit(f32::NAN).is_nan());
        assert_eq!(positive.unit(100.0), 0.25);
        let negative = LinearMap::of([-50.0f32, 150.0].iter());
        assert_eq!((negative.black, negative.white), (-50.0, 150.0));
        assert_eq!(negative.unit(0.0), 0.25);
        for flat in [vec![0.0f32; 4], vec![f32::NAN; 2], vec![-3.0; 2]] {
            let map = LinearMap::of(flat.iter());
            assert_eq!(map.to_u16(flat[0]), 0, "{map:?}");
        }
        assert_eq!(LinearMap::of([7.0f32; 3].iter()).to_u16(7.0), 65535);
    }
}
