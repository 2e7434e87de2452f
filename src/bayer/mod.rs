//! Colour cameras: Bayer (CFA) mosaics handled in "cell space", and their demosaicing.
//!
//! What it does:
//! - [`CfaPattern`]: the four 2x2 colour filter arrangements (`RGGB`, `BGGR`, `GRBG`, `GBRG`), read from a
//!   frame header ([`CfaPattern::from_header`], applying `XBAYROFF`/`YBAYROFF` and `ROWORDER`) or chosen by
//!   configuration ([`ColorMode`], [`resolve_pattern`], which reports a header/override conflict as a
//!   warning).
//! - Cell space: a mosaic of `H x W` is split into four planes `(R, G1, G2, B)` of `H/2 x W/2`, one sample
//!   per 2x2 cell each ([`split_planes`], exact inverse [`merge_planes`]). `G1` is the green on the red
//!   rows, `G2` the green on the blue rows. A feature shifted by `(dy, dx)` full-resolution pixels is
//!   shifted by `(dy/2, dx/2)` in every plane ([`shift_to_cells`]), so one registration per tile and frame
//!   (on [`luminance`] or [`green`] of the planes) serves all four planes, and each plane is resampled on
//!   its own grid ([`sample_planes_shifted`]) without ever mixing colours. Tiles cut in cell space are
//!   aligned to the 2x2 cell by construction ([`cell_box_to_full`] maps them back).
//! - Per-plane background and normalisation ([`plane_backgrounds`], [`normalize_planes`]), as the published
//!   method does for one-shot-colour data.
//! - Demosaicing of a full-resolution mosaic into RGB ([`demosaic`]): bilinear or Malvar–He–Cutler
//!   (gradient-corrected linear 5x5, the default), NaN-aware.
//!
//! What it does not: read or write files, colour-calibrate (no colour matrix, no white balance: see
//! [`crate::preview::write_rgb_png_preview_atomic`] for the preview's balance), handle X-Trans or other
//! non-2x2 arrays, or flip rows (rows stay in file order, see [`crate::geom`]).
//!
//! # Pattern rule (offsets and `ROWORDER`)
//!
//! `BAYERPAT` names the colours of the 2x2 cell at the sensor's top-left pixel in read-out (top-down)
//! order, as ASCOM/N.I.N.A./INDI define it. `XBAYROFF`/`YBAYROFF` say that the image starts that many
//! columns/rows into the pattern: the colour of image pixel `(y, x)` is the pattern's colour at
//! `((y + YBAYROFF) mod 2, (x + XBAYROFF) mod 2)`. `ROWORDER = 'BOTTOM-UP'` means the program wrote the
//! sensor's last row first: file row `r` is sensor row `H - 1 - r`, so the row phase becomes
//! `(H - 1 - r + YBAYROFF) mod 2 = (r + H - 1 + YBAYROFF) mod 2`. tlr keeps rows in file order, so for
//! BOTTOM-UP the row phase is advanced by `H - 1`: the pattern is flipped vertically (`RGGB` -> `GBRG`)
//! when `H` is even, the usual case (Siril does the same), and unchanged when `H` is odd. `TOP-DOWN`, an
//! absent `ROWORDER` or any other value leave the phase alone (an unknown value is an error).
//! An odd image size drops the last row/column in cell space ([`even_size`]); the first row and column
//! are kept, so the pattern (defined at the file's first pixel) is unaffected.

use std::fmt;
use std::str::FromStr;

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut3, Axis};

use crate::fits::FrameHeader;
use crate::geom::{Shift, TileBox};
use crate::stats::{background_and_noise, ClippedStats};

mod demosaic;
pub use demosaic::{demosaic, demosaic_clipped, demosaic_with, Demosaic, DEMOSAIC_REACH};

/// Number of colour planes in cell space (R, G1, G2, B).
pub const PLANES: usize = 4;

/// Index of the red plane in [`split_planes`] output.
pub const PLANE_R: usize = 0;
/// Index of the green plane on red rows.
pub const PLANE_G1: usize = 1;
/// Index of the green plane on blue rows.
pub const PLANE_G2: usize = 2;
/// Index of the blue plane.
pub const PLANE_B: usize = 3;

/// Samples used to estimate a plane's background (see [`crate::stats::background_and_noise`]).
pub const BACKGROUND_SAMPLES: usize = 200_000;

/// Errors of the colour module; each names what was wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BayerError {
    /// A pattern name that is not one of the four 2x2 Bayer patterns.
    #[error("{source_name}: unknown Bayer pattern `{value}` (expected RGGB, BGGR, GRBG or GBRG)")]
    UnknownPattern {
        /// Where the value came from, e.g. "frame `/x/a.fits`, key BAYERPAT".
        source_name: String,
        /// The value as given.
        value: String,
    },
    /// An unknown colour mode in the configuration.
    #[error("{source_name}: unknown colour mode `{value}` (expected auto, mono, osc or a Bayer pattern)")]
    UnknownColorMode {
        /// Where the value came from, e.g. "configuration key data.color_mode".
        source_name: String,
        /// The value as given.
        value: String,
    },
    /// An unknown `ROWORDER` value.
    #[error(
        "frame `{path}`: key ROWORDER has unknown value `{value}` (expected TOP-DOWN or BOTTOM-UP)"
    )]
    UnknownRowOrder {
        /// The frame.
        path: std::path::PathBuf,
        /// The value as written.
        value: String,
    },
    /// The image is too small for a 2x2 colour cell or for demosaicing.
    #[error("{what}: image of {rows} x {cols} pixels is too small (need at least 2 x 2)")]
    TooSmall {
        /// What was being processed.
        what: &'static str,
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// Planes of the wrong count or shape.
    #[error("{what}: expected {expected}, got an array of shape {got:?}")]
    BadShape {
        /// What was being processed.
        what: &'static str,
        /// What was expected.
        expected: String,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A plane has no usable background (no finite pixel, or a background that is not positive).
    #[error("colour plane {plane}: no usable background ({reason})")]
    NoBackground {
        /// Plane name (R, G1, G2, B).
        plane: &'static str,
        /// Why.
        reason: String,
    },
}

/// A colour of the filter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Color {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
}

impl Color {
    /// Index in an RGB array: red 0, green 1, blue 2.
    pub fn rgb_index(self) -> usize {
        match self {
            Color::Red => 0,
            Color::Green => 1,
            Color::Blue => 2,
        }
    }
}

/// One of the four 2x2 Bayer arrangements, named by the colours of the top-left cell read row by row
/// (`RGGB`: red at (0, 0), green at (0, 1) and (1, 0), blue at (1, 1)).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum CfaPattern {
    /// `R G / G B`.
    Rggb,
    /// `B G / G R`.
    Bggr,
    /// `G R / B G`.
    Grbg,
    /// `G B / R G`.
    Gbrg,
}

impl CfaPattern {
    /// All four patterns.
    pub const ALL: [CfaPattern; 4] = [
        CfaPattern::Rggb,
        CfaPattern::Bggr,
        CfaPattern::Grbg,
        CfaPattern::Gbrg,
    ];

    /// The pattern's name as written in `BAYERPAT` (`RGGB`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CfaPattern::Rggb => "RGGB",
            CfaPattern::Bggr => "BGGR",
            CfaPattern::Grbg => "GRBG",
            CfaPattern::Gbrg => "GBRG",
        }
    }

    /// Row and column (0 or 1) of the red pixel in the 2x2 cell.
    fn red_at(self) -> (usize, usize) {
        match self {
            CfaPattern::Rggb => (0, 0),
            CfaPattern::Bggr => (1, 1),
            CfaPattern::Grbg => (0, 1),
            CfaPattern::Gbrg => (1, 0),
        }
    }

    fn from_red_at(ry: usize, rx: usize) -> Self {
        match (ry & 1, rx & 1) {
            (0, 0) => CfaPattern::Rggb,
            (1, 1) => CfaPattern::Bggr,
            (0, 1) => CfaPattern::Grbg,
            _ => CfaPattern::Gbrg,
        }
    }

    /// Colour of the mosaic pixel at `(row, col)` (only the parities matter).
    pub fn color_at(self, row: usize, col: usize) -> Color {
        let (ry, rx) = self.red_at();
        let (py, px) = ((row + ry) & 1, (col + rx) & 1);
        match (py, px) {
            (0, 0) => Color::Red,
            (1, 1) => Color::Blue,
            _ => Color::Green,
        }
    }

    /// Where `color` has its samples in the 2x2 cell, indexed `2 * row + col` (rows and columns 0 or 1).
    pub fn own_samples(self, color: Color) -> [bool; 4] {
        std::array::from_fn(|k| self.color_at(k / 2, k % 2) == color)
    }

    /// Position `(row, col)` inside the 2x2 cell of each plane, in plane order R, G1, G2, B
    /// (G1 shares its row with R, G2 with B).
    pub fn plane_offsets(self) -> [(usize, usize); PLANES] {
        let (ry, rx) = self.red_at();
        let (by, bx) = (1 - ry, 1 - rx);
        [(ry, rx), (ry, bx), (by, rx), (by, bx)]
    }

    /// The pattern seen by an image whose first pixel is at `(dy, dx)` of this pattern's grid (a crop
    /// or a Bayer offset). Only the parities matter.
    pub fn shifted(self, dy: usize, dx: usize) -> Self {
        let (ry, rx) = self.red_at();
        // red at (ry, rx) of the old grid is at (ry - dy, rx - dx) of the new one (mod 2)
        Self::from_red_at((ry + dy) & 1, (rx + dx) & 1)
    }

    /// The pattern after flipping the image upside down (for an even number of rows).
    pub fn flipped_rows(self) -> Self {
        self.shifted(1, 0)
    }

    /// The pattern after mirroring the image left-right (for an even number of columns).
    pub fn flipped_cols(self) -> Self {
        self.shifted(0, 1)
    }

    /// Effective pattern of a frame in file row order, from `BAYERPAT`, `XBAYROFF`, `YBAYROFF` and
    /// `ROWORDER` (rule in the module docs). `Ok(None)` for a frame without `BAYERPAT` (mono).
    ///
    /// # Errors
    /// [`BayerError::UnknownPattern`] for a `BAYERPAT` that is not a 2x2 Bayer pattern,
    /// [`BayerError::UnknownRowOrder`] for a `ROWORDER` other than TOP-DOWN / BOTTOM-UP.
    pub fn from_header(header: &FrameHeader) -> Result<Option<Self>, BayerError> {
        let Some(bayer) = &header.bayer else {
            return Ok(None);
        };
        let base: CfaPattern = bayer
            .pattern
            .parse()
            .map_err(|_| BayerError::UnknownPattern {
                source_name: format!("frame `{}`, key BAYERPAT", header.path.display()),
                value: bayer.pattern.clone(),
            })?;
        let bottom_up = match header
            .row_order
            .as_deref()
            .map(|s| s.trim().to_ascii_uppercase())
        {
            None => false,
            Some(v) if v.is_empty() || v == "TOP-DOWN" => false,
            Some(v) if v == "BOTTOM-UP" => true,
            Some(_) => {
                return Err(BayerError::UnknownRowOrder {
                    path: header.path.clone(),
                    value: header.row_order.clone().unwrap_or_default(),
                })
            }
        };
        Ok(Some(base.effective(
            bayer.x_offset,
            bayer.y_offset,
            bottom_up,
            header.rows,
        )))
    }

    /// Effective pattern in file row order for the given Bayer offsets, row order and image height
    /// (the rule of the module docs, without a header).
    pub fn effective(self, x_offset: i64, y_offset: i64, bottom_up: bool, rows: usize) -> Self {
        let flip = if bottom_up { (rows as i64 - 1) & 1 } else { 0 };
        let dy = ((y_offset + flip) & 1) as usize;
        let dx = (x_offset & 1) as usize;
        self.shifted(dy, dx)
    }
}

impl fmt::Display for CfaPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CfaPattern {
    type Err = BayerError;
    /// Case-insensitive, surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self, BayerError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RGGB" => Ok(CfaPattern::Rggb),
            "BGGR" => Ok(CfaPattern::Bggr),
            "GRBG" => Ok(CfaPattern::Grbg),
            "GBRG" => Ok(CfaPattern::Gbrg),
            _ => Err(BayerError::UnknownPattern {
                source_name: "Bayer pattern".to_string(),
                value: s.to_string(),
            }),
        }
    }
}

/// How to treat the colour of the frames (configuration `data.color_mode` / `data.bayer_pattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// Use the frame header: Bayer when it has `BAYERPAT`, mono otherwise.
    #[default]
    Auto,
    /// Treat every frame as mono, whatever the header says.
    Mono,
    /// One-shot colour, pattern from the header (error-free only when the header has one).
    Osc,
    /// One-shot colour with this pattern (in file row order), overriding the header.
    Bayer(CfaPattern),
}

impl ColorMode {
    /// Builds the mode from the two configuration keys: `color_mode` (`auto`, `mono`, `osc`/`color`/
    /// `colour`, or a pattern name) and `bayer_pattern` (a pattern name, `auto` or empty). A pattern in
    /// `bayer_pattern` turns `auto`/`osc` into [`ColorMode::Bayer`]; with `mono` it is ignored.
    ///
    /// # Errors
    /// [`BayerError::UnknownColorMode`] / [`BayerError::UnknownPattern`] naming the key.
    pub fn from_config(
        color_mode: Option<&str>,
        bayer_pattern: Option<&str>,
    ) -> Result<Self, BayerError> {
        let mode = match color_mode.map(|s| s.trim().to_ascii_lowercase()) {
            None => ColorMode::Auto,
            Some(v) if v.is_empty() || v == "auto" => ColorMode::Auto,
            Some(v) if v == "mono" || v == "gray" || v == "grey" => ColorMode::Mono,
            Some(v) if v == "osc" || v == "color" || v == "colour" || v == "bayer" => {
                ColorMode::Osc
            }
            Some(v) => match v.parse::<CfaPattern>() {
                Ok(p) => ColorMode::Bayer(p),
                Err(_) => {
                    return Err(BayerError::UnknownColorMode {
                        source_name: "configuration key data.color_mode".to_string(),
                        value: color_mode.unwrap_or_default().to_string(),
                    })
                }
            },
        };
        let pattern = match bayer_pattern.map(str::trim) {
            None => None,
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("auto") => None,
            Some(v) => Some(
                v.parse::<CfaPattern>()
                    .map_err(|_| BayerError::UnknownPattern {
                        source_name: "configuration key data.bayer_pattern".to_string(),
                        value: v.to_string(),
                    })?,
            ),
        };
        Ok(match (mode, pattern) {
            (ColorMode::Auto | ColorMode::Osc, Some(p)) => ColorMode::Bayer(p),
            (m, _) => m,
        })
    }
}

/// What [`resolve_pattern`] decided for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColorDecision {
    /// The pattern to use in file row order; `None` = process as mono.
    pub pattern: Option<CfaPattern>,
    /// What the header alone says (after offsets and ROWORDER).
    pub header_pattern: Option<CfaPattern>,
    /// Conflicts between header and configuration, one sentence each, naming the file.
    pub warnings: Vec<String>,
}

/// Decides the pattern of a frame from its header and the configured [`ColorMode`]. The configuration
/// wins; a disagreement with the header is reported in `warnings`.
///
/// # Errors
/// As [`CfaPattern::from_header`]; [`BayerError::UnknownPattern`] when the mode is
/// [`ColorMode::Osc`] and the header has no `BAYERPAT`.
pub fn resolve_pattern(header: &FrameHeader, mode: ColorMode) -> Result<ColorDecision, BayerError> {
    let header_pattern = CfaPattern::from_header(header)?;
    let path = header.path.display();
    let mut warnings = Vec::new();
    let pattern = match mode {
        ColorMode::Auto => header_pattern,
        ColorMode::Mono => {
            if let Some(p) = header_pattern {
                warnings.push(format!(
                    "frame `{path}`: header says Bayer pattern {p} but data.color_mode is mono: \
                     processing as mono"
                ));
            }
            None
        }
        ColorMode::Osc => match header_pattern {
            Some(p) => Some(p),
            None => {
                return Err(BayerError::UnknownPattern {
                    source_name: format!(
                        "frame `{path}` has no BAYERPAT and data.bayer_pattern is not set, \
                         but data.color_mode is osc; key BAYERPAT"
                    ),
                    value: String::new(),
                })
            }
        },
        ColorMode::Bayer(p) => {
            match header_pattern {
                Some(h) if h != p => warnings.push(format!(
                    "frame `{path}`: header gives Bayer pattern {h} (BAYERPAT, offsets, ROWORDER) but \
                     the configuration says {p}: using {p}"
                )),
                None => warnings.push(format!(
                    "frame `{path}`: header has no BAYERPAT but the configuration says {p}: using {p}"
                )),
                _ => {}
            }
            Some(p)
        }
    };
    Ok(ColorDecision {
        pattern,
        header_pattern,
        warnings,
    })
}

/// The even size `(rows, cols)` used in cell space and a warning when the last row and/or column is
/// dropped (an odd size).
pub fn even_size(rows: usize, cols: usize) -> ((usize, usize), Option<String>) {
    let (er, ec) = (rows & !1, cols & !1);
    let warning = match (er != rows, ec != cols) {
        (false, false) => None,
        (true, false) => Some(format!(
            "Bayer image of {rows} x {cols}: odd number of rows, the last row is dropped"
        )),
        (false, true) => Some(format!(
            "Bayer image of {rows} x {cols}: odd number of columns, the last column is dropped"
        )),
        (true, true) => Some(format!(
            "Bayer image of {rows} x {cols}: odd size, the last row and column are dropped"
        )),
    };
    ((er, ec), warning)
}

/// Splits a mosaic into its four planes `(4, H/2, W/2)` in order R, G1, G2, B. An odd last row or
/// column is dropped (see [`even_size`]); an image smaller than 2x2 gives empty planes.
pub fn split_planes(cfa: ArrayView2<f32>, pattern: CfaPattern) -> Array3<f32> {
    let (rows, cols) = cfa.dim();
    let (h, w) = (rows / 2, cols / 2);
    let mut planes = Array3::<f32>::zeros((PLANES, h, w));
    for (p, &(oy, ox)) in pattern.plane_offsets().iter().enumerate() {
        if h > 0 && w > 0 {
            let src = cfa.slice(s![oy..2 * h; 2, ox..2 * w; 2]);
            planes.index_axis_mut(Axis(0), p).assign(&src);
        }
    }
    planes
}

/// Interleaves four planes `(4, h, w)` (R, G1, G2, B) back into a mosaic of `2h x 2w`: the exact
/// inverse of [`split_planes`].
///
/// # Errors
/// [`BayerError::BadShape`] when the first axis is not 4.
pub fn merge_planes(
    planes: ArrayView3<f32>,
    pattern: CfaPattern,
) -> Result<Array2<f32>, BayerError> {
    let (n, h, w) = planes.dim();
    if n != PLANES {
        return Err(BayerError::BadShape {
            what: "merging colour planes",
            expected: "4 planes (R, G1, G2, B)".to_string(),
            got: planes.shape().to_vec(),
        });
    }
    let mut cfa = Array2::<f32>::zeros((2 * h, 2 * w));
    for (p, &(oy, ox)) in pattern.plane_offsets().iter().enumerate() {
        if h > 0 && w > 0 {
            cfa.slice_mut(s![oy..2 * h; 2, ox..2 * w; 2])
                .assign(&planes.index_axis(Axis(0), p));
        }
    }
    Ok(cfa)
}

fn check_planes(planes: &ArrayView3<f32>, what: &'static str) -> Result<(), BayerError> {
    if planes.dim().0 != PLANES {
        return Err(BayerError::BadShape {
            what,
            expected: "4 planes (R, G1, G2, B)".to_string(),
            got: planes.shape().to_vec(),
        });
    }
    Ok(())
}

/// The Bayer mosaic of an RGB image `(3, H, W)`: each pixel takes the channel its `pattern` colour
/// names (the inverse of sampling a scene with a one-shot-colour camera).
///
/// # Errors
/// [`BayerError::BadShape`] when the first axis is not 3.
pub fn mosaic(rgb: ArrayView3<f32>, pattern: CfaPattern) -> Result<Array2<f32>, BayerError> {
    let (channels, rows, cols) = rgb.dim();
    if channels != 3 {
        return Err(BayerError::BadShape {
            what: "mosaicking an RGB image",
            expected: "3 channels (R, G, B)".to_string(),
            got: vec![channels, rows, cols],
        });
    }
    Ok(Array2::from_shape_fn((rows, cols), |(r, c)| {
        rgb[[pattern.color_at(r, c).rgb_index(), r, c]]
    }))
}

/// Luminance proxy per 2x2 cell: the mean of the four planes (NaN where any plane is NaN).
///
/// # Errors
/// [`BayerError::BadShape`] when the first axis is not 4.
pub fn luminance(planes: ArrayView3<f32>) -> Result<Array2<f32>, BayerError> {
    check_planes(&planes, "luminance of colour planes")?;
    let mut out = planes.index_axis(Axis(0), 0).to_owned();
    for p in 1..PLANES {
        out += &planes.index_axis(Axis(0), p);
    }
    out.mapv_inplace(|v| 0.25 * v);
    Ok(out)
}

/// Green proxy per 2x2 cell: the mean of the two green planes (NaN where either is NaN).
///
/// # Errors
/// [`BayerError::BadShape`] when the first axis is not 4.
pub fn green(planes: ArrayView3<f32>) -> Result<Array2<f32>, BayerError> {
    check_planes(&planes, "green of colour planes")?;
    let g2 = planes.index_axis(Axis(0), PLANE_G2);
    let mut out = planes.index_axis(Axis(0), PLANE_G1).to_owned();
    out.zip_mut_with(&g2, |a, &b| *a = 0.5 * (*a + b));
    Ok(out)
}

/// A full-resolution shift expressed in cell units (half of it).
pub fn shift_to_cells(full_res: Shift) -> Shift {
    Shift::new(0.5 * full_res.dy, 0.5 * full_res.dx)
}

/// A cell-space shift expressed in full-resolution pixels (twice it).
pub fn shift_to_full(cells: Shift) -> Shift {
    Shift::new(2.0 * cells.dy, 2.0 * cells.dx)
}

/// The full-resolution box covered by a box in cell space (every coordinate doubled, so the box starts
/// on a 2x2 cell boundary and every tile sees the same pattern phase). A reader can therefore read this
/// region of a frame (e.g. with `FitsReader::read_region`) and [`split_planes`] it with the frame's own
/// pattern to get the tile's cut-out of each plane.
pub fn cell_box_to_full(cell_box: &TileBox) -> TileBox {
    TileBox {
        index: cell_box.index,
        x0: 2 * cell_box.x0,
        y0: 2 * cell_box.y0,
        w: 2 * cell_box.w,
        h: 2 * cell_box.h,
    }
}

/// Resamples each of the four planes with the same origin (cell units):
/// `out[p, i, j] = src[p](origin_y + i, origin_x + j)`, with [`crate::resample::sample_shifted`]'s
/// kernel and NaN rules, plane by plane (colours are never mixed).
///
/// # Errors
/// [`BayerError::BadShape`] when `src` and `out` do not both have 4 planes.
pub fn sample_planes_shifted(
    src: ArrayView3<f32>,
    origin_y: f32,
    origin_x: f32,
    mut out: ArrayViewMut3<f32>,
) -> Result<(), BayerError> {
    check_planes(&src, "resampling colour planes (source)")?;
    if out.dim().0 != PLANES {
        return Err(BayerError::BadShape {
            what: "resampling colour planes (output)",
            expected: "4 planes (R, G1, G2, B)".to_string(),
            got: out.shape().to_vec(),
        });
    }
    let mut resampler = crate::resample::Resampler::new();
    for p in 0..PLANES {
        resampler.sample_shifted(
            src.index_axis(Axis(0), p),
            origin_y,
            origin_x,
            out.index_axis_mut(Axis(0), p),
        );
    }
    Ok(())
}

/// Name of plane `p` (R, G1, G2, B).
pub fn plane_name(p: usize) -> &'static str {
    match p {
        PLANE_R => "R",
        PLANE_G1 => "G1",
        PLANE_G2 => "G2",
        PLANE_B => "B",
        _ => "?",
    }
}

/// Robust background and noise of each plane (sigma-clipped, see
/// [`crate::stats::background_and_noise`]), in plane order.
///
/// # Errors
/// [`BayerError::BadShape`] for other than 4 planes; [`BayerError::NoBackground`] for a plane without
/// a finite pixel.
pub fn plane_backgrounds(planes: ArrayView3<f32>) -> Result<[ClippedStats; PLANES], BayerError> {
    check_planes(&planes, "background of colour planes")?;
    let mut out = Vec::with_capacity(PLANES);
    for p in 0..PLANES {
        let st = background_and_noise(planes.index_axis(Axis(0), p), BACKGROUND_SAMPLES).ok_or(
            BayerError::NoBackground {
                plane: plane_name(p),
                reason: "no finite pixel".to_string(),
            },
        )?;
        out.push(st);
    }
    Ok([out[0], out[1], out[2], out[3]])
}

/// Per-channel background normalisation (the published method's `I' = I / B` for OSC data): divides
/// each plane by its own robust background, in place, and returns the four backgrounds.
///
/// # Errors
/// As [`plane_backgrounds`]; [`BayerError::NoBackground`] when a background is not positive (the
/// planes are then left unchanged).
pub fn normalize_planes(mut planes: ArrayViewMut3<f32>) -> Result<[f32; PLANES], BayerError> {
    let stats = plane_backgrounds(planes.view())?;
    let bg = stats.map(|s| s.median);
    for (p, &b) in bg.iter().enumerate() {
        if !(b.is_finite() && b > 0.0) {
            return Err(BayerError::NoBackground {
                plane: plane_name(p),
                reason: format!("background {b} is not positive"),
            });
        }
    }
    for (p, &b) in bg.iter().enumerate() {
        let inv = 1.0 / b;
        planes.index_axis_mut(Axis(0), p).mapv_inplace(|v| v * inv);
    }
    Ok(bg)
}

/// Splits a whole frame into its planes (cropped to an even size), returning the planes and the
/// cropping warning of [`even_size`] for an odd size; convenience for frame readers.
///
/// # Errors
/// [`BayerError::TooSmall`] for an image smaller than 2x2.
pub fn frame_to_planes(
    cfa: ArrayView2<f32>,
    pattern: CfaPattern,
) -> Result<(Array3<f32>, Option<String>), BayerError> {
    let (rows, cols) = cfa.dim();
    if rows < 2 || cols < 2 {
        return Err(BayerError::TooSmall {
            what: "splitting a Bayer frame",
            rows,
            cols,
        });
    }
    let (_, warning) = even_size(rows, cols);
    Ok((split_planes(cfa, pattern), warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fits::BayerHeader;
    use std::path::PathBuf;

    fn header(
        pattern: Option<&str>,
        xo: i64,
        yo: i64,
        row_order: Option<&str>,
        rows: usize,
    ) -> FrameHeader {
        FrameHeader {
            path: PathBuf::from("/x/a.fits"),
            hdu: 0,
            rows,
            cols: 8,
            bitpix: 16,
            exposure_s: None,
            date_obs: None,
            gain: None,
            offset: None,
            bayer: pattern.map(|p| BayerHeader {
                pattern: p.to_string(),
                x_offset: xo,
                y_offset: yo,
            }),
            row_order: row_order.map(str::to_string),
            filter: None,
            object: None,
            ccd_temp: None,
            creator: None,
            saturation: None,
            carried: Vec::new(),
        }
    }

    #[test]
    fn names_round_trip_and_colors() {
        for p in CfaPattern::ALL {
            assert_eq!(p.to_string().parse::<CfaPattern>().unwrap(), p);
            let name: String = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .iter()
                .map(|&(y, x)| match p.color_at(y, x) {
                    Color::Red => 'R',
                    Color::Green => 'G',
                    Color::Blue => 'B',
                })
                .collect();
            assert_eq!(name, p.name());
            // plane offsets: R, G1 (red row), G2 (blue row), B
            let off = p.plane_offsets();
            assert_eq!(p.color_at(off[0].0, off[0].1), Color::Red);
            assert_eq!(p.color_at(off[1].0, off[1].1), Color::Green);
            assert_eq!(off[1].0, off[0].0);
            assert_eq!(p.color_at(off[2].0, off[2].1), Color::Green);
            assert_eq!(off[2].0, off[3].0);
            assert_eq!(p.color_at(off[3].0, off[3].1), Color::Blue);
        }
        assert!(" rggb ".parse::<CfaPattern>().is_ok());
        assert!("RGBG".parse::<CfaPattern>().is_err());
        assert!("".parse::<CfaPattern>().is_err());
    }

    #[test]
    fn shifted_matches_cropping() {
        for p in CfaPattern::ALL {
            for dy in 0..2 {
                for dx in 0..2 {
                    let q = p.shifted(dy, dx);
                    for y in 0..4 {
                        for x in 0..4 {
                            assert_eq!(q.color_at(y, x), p.color_at(y + dy, x + dx));
                        }
                    }
                }
            }
            assert_eq!(p.flipped_rows().flipped_rows(), p);
        }
        assert_eq!(CfaPattern::Rggb.flipped_rows(), CfaPattern::Gbrg);
        assert_eq!(CfaPattern::Rggb.flipped_cols(), CfaPattern::Grbg);
        assert_eq!(CfaPattern::Rggb.shifted(1, 1), CfaPattern::Bggr);
    }

    /// Brute force the rule: the colour of file pixel (r, c) is the header pattern's colour at sensor
    /// position (sensor_row(r) + yoff, c + xoff), with sensor_row(r) = r (TOP-DOWN) or H-1-r (BOTTOM-UP).
    #[test]
    fn from_header_all_patterns_offsets_and_row_orders() {
        for p in CfaPattern::ALL {
            for xo in [0i64, 1, 2, 3] {
                for yo in [0i64, 1, 2] {
                    for ro in [
                        None,
                        Some("TOP-DOWN"),
                        Some("BOTTOM-UP"),
                        Some(" bottom-up "),
                    ] {
                        for rows in [6usize, 7] {
                            let h = header(Some(p.name()), xo, yo, ro, rows);
                            let eff = CfaPattern::from_header(&h).unwrap().unwrap();
                            let bottom_up =
                                ro.is_some_and(|s| s.trim().eq_ignore_ascii_case("bottom-up"));
                            for r in 0..rows {
                                for c in 0..4usize {
                                    let sensor_r = if bottom_up { rows - 1 - r } else { r };
                                    let want = p.color_at(sensor_r + yo as usize, c + xo as usize);
                                    assert_eq!(
                                        eff.color_at(r, c),
                                        want,
                                        "{p} xo {xo} yo {yo} {ro:?} rows {rows} at ({r},{c})"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        // the even-height BOTTOM-UP case flips RGGB into GBRG (what Siril does)
        let h = header(Some("RGGB"), 0, 0, Some("BOTTOM-UP"), 976);
        assert_eq!(CfaPattern::from_header(&h).unwrap(), Some(CfaPattern::Gbrg));
        assert_eq!(
            CfaPattern::from_header(&header(None, 0, 0, None, 4)).unwrap(),
            None
        );
    }

    #[test]
    fn from_header_errors_name_file_and_key() {
        let e = CfaPattern::from_header(&header(Some("CYGM"), 0, 0, None, 4)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/x/a.fits") && msg.contains("BAYERPAT") && msg.contains("CYGM"),
            "{msg}"
        );
        let e =
            CfaPattern::from_header(&header(Some("RGGB"), 0, 0, Some("SIDEWAYS"), 4)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("ROWORDER") && msg.contains("SIDEWAYS"),
            "{msg}"
        );
    }

    #[test]
    fn color_mode_and_conflicts() {
        assert_eq!(ColorMode::from_config(None, None).unwrap(), ColorMode::Auto);
        assert_eq!(
            ColorMode::from_config(Some("MONO"), Some("rggb")).unwrap(),
            ColorMode::Mono
        );
        assert_eq!(
            ColorMode::from_config(Some("osc"), Some("GBRG")).unwrap(),
            ColorMode::Bayer(CfaPattern::Gbrg)
        );
        assert_eq!(
            ColorMode::from_config(Some("bggr"), None).unwrap(),
            ColorMode::Bayer(CfaPattern::Bggr)
        );
        let e = ColorMode::from_config(Some("rainbow"), None).unwrap_err();
        assert!(e.to_string().contains("data.color_mode"));
        let e = ColorMode::from_config(None, Some("XXXX")).unwrap_err();
        assert!(e.to_string().contains("data.bayer_pattern"));

        let h = header(Some("RGGB"), 0, 0, None, 4);
        let d = resolve_pattern(&h, ColorMode::Auto).unwrap();
        assert_eq!(d.pattern, Some(CfaPattern::Rggb));
        assert!(d.warnings.is_empty());
        let d = resolve_pattern(&h, ColorMode::Bayer(CfaPattern::Bggr)).unwrap();
        assert_eq!(d.pattern, Some(CfaPattern::Bggr));
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("/x/a.fits") && d.warnings[0].contains("RGGB"));
        let d = resolve_pattern(&h, ColorMode::Bayer(CfaPattern::Rggb)).unwrap();
        assert!(d.warnings.is_empty());
        let d = resolve_pattern(&h, ColorMode::Mono).unwrap();
        assert_eq!(d.pattern, None);
        assert_eq!(d.warnings.len(), 1);
        let mono = header(None, 0, 0, None, 4);
        assert!(resolve_pattern(&mono, ColorMode::Osc).is_err());
        let d = resolve_pattern(&mono, ColorMode::Bayer(CfaPattern::Grbg)).unwrap();
        assert_eq!(d.pattern, Some(CfaPattern::Grbg));
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn split_merge_round_trip_and_odd_sizes() {
        let cfa = Array2::from_shape_fn((6, 8), |(r, c)| (r * 8 + c) as f32);
        for p in CfaPattern::ALL {
            let planes = split_planes(cfa.view(), p);
            assert_eq!(planes.dim(), (4, 3, 4));
            for (i, &(oy, ox)) in p.plane_offsets().iter().enumerate() {
                assert_eq!(planes[[i, 1, 2]], cfa[[2 + oy, 4 + ox]]);
            }
            assert_eq!(planes[[PLANE_R, 0, 0]], {
                let (y, x) = p.plane_offsets()[0];
                cfa[[y, x]]
            });
            assert_eq!(merge_planes(planes.view(), p).unwrap(), cfa);
        }
        let odd = Array2::from_shape_fn((7, 5), |(r, c)| (r * 5 + c) as f32);
        let (planes, warning) = frame_to_planes(odd.view(), CfaPattern::Rggb).unwrap();
        assert_eq!(planes.dim(), (4, 3, 2));
        assert!(warning.unwrap().contains("last row and column"));
        let back = merge_planes(planes.view(), CfaPattern::Rggb).unwrap();
        assert_eq!(back, odd.slice(s![..6, ..4]));
        assert!(merge_planes(Array3::<f32>::zeros((3, 2, 2)).view(), CfaPattern::Rggb).is_err());
        assert!(frame_to_planes(Array2::<f32>::zeros((1, 9)).view(), CfaPattern::Rggb).is_err());
        assert_eq!(even_size(4, 6), ((4, 6), None));
    }

    #[test]
    fn luminance_green_and_normalisation() {
        let mut planes = Array3::<f32>::zeros((4, 5, 5));
        for p in 0..4 {
            planes
                .index_axis_mut(Axis(0), p)
                .fill((p + 1) as f32 * 10.0);
        }
        let l = luminance(planes.view()).unwrap();
        assert!(l.iter().all(|&v| (v - 25.0).abs() < 1e-6));
        let g = green(planes.view()).unwrap();
        assert!(g.iter().all(|&v| (v - 25.0).abs() < 1e-6));
        let bg = normalize_planes(planes.view_mut()).unwrap();
        assert_eq!(bg, [10.0, 20.0, 30.0, 40.0]);
        assert!(planes.iter().all(|&v| (v - 1.0).abs() < 1e-6));
        planes.index_axis_mut(Axis(0), 2).fill(f32::NAN);
        assert!(matches!(
            normalize_planes(planes.view_mut()),
            Err(BayerError::NoBackground { plane: "G2", .. })
        ));
        assert!(luminance(Array3::<f32>::zeros((2, 2, 2)).view()).is_err());
    }

    #[test]
    fn demosaic_constant_colour_is_exact_and_nan_is_local() {
        for p in CfaPattern::ALL {
            let rgb = [300.0f32, 200.0, 100.0];
            let cfa = Array2::from_shape_fn((10, 12), |(r, c)| rgb[p.color_at(r, c).rgb_index()]);
            for method in [Demosaic::Bilinear, Demosaic::MalvarHeCutler] {
                let out = demosaic_with(cfa.view(), p, method).unwrap();
                for (ch, want) in rgb.iter().enumerate() {
                    assert!(out
                        .index_axis(Axis(0), ch)
                        .iter()
                        .all(|&v| (v - want).abs() < 1e-3));
                }
            }
            let mut holed = cfa.clone();
            holed[[5, 5]] = f32::NAN;
            let out = demosaic(holed.view(), p).unwrap();
            assert!(out[[0, 5, 5]].is_nan() && out[[1, 5, 5]].is_nan());
            // neighbours fall back to finite bilinear values
            for (y, x) in [(4, 5), (5, 6), (6, 6), (3, 5)] {
                for ch in 0..3 {
                    assert!(
                        (out[[ch, y, x]] - rgb[ch]).abs() < 1e-3,
                        "{p} ({y},{x}) ch {ch}"
                    );
                }
            }
        }
        assert!(demosaic(Array2::<f32>::zeros((1, 4)).view(), CfaPattern::Rggb).is_err());
    }
}
