//! The diagnostics pictures of a run, drawn with `plotters` into an RGB buffer and written as PNG
//! through [`tlr_core::preview::write_rgb8_png_atomic`] (temporary file, then rename):
//! - `warp_field.png` ([`warp_field`]): the local warp of one frame as arrows over the image, with the
//!   arrow scale, the frame's number and file;
//! - `invalid_tile_map.png` ([`tile_map`]): the invalid tiles over the image, with a legend;
//! - `warp_variance_hist.png` ([`warp_variance_histogram`]): the warp variance of the valid tiles;
//! - `frame_quality.png` ([`frame_quality`]): FWHM, weight and use of every frame over the frame number.
//!
//! One colour code in all of them: green = valid or used, red = invalid or left out, grey = no
//! measurement (a valid tile in which the frame shown was rejected), yellow = the warp arrows. Text uses
//! DejaVu Sans, compiled into the binary (`DejaVuSans.ttf`, licence in `LICENSE-DejaVu.txt` next to it):
//! no system font and no fontconfig are needed. Pictures of images are sized from the image (small
//! images are enlarged by a whole factor, large ones binned) so that text and arrows stay readable
//! from 256² to 4k images; the drawing is deterministic (the same bytes on any thread).
//!
//! What it does not: decide what to show (`diagnostics.rs` picks the frame and computes the shifts),
//! or write FITS.

mod frames;
mod histogram;
mod panel;
mod tiles;
mod warp;

pub(crate) use frames::frame_quality;
pub(crate) use histogram::warp_variance_histogram;
pub(crate) use tiles::tile_map;
pub(crate) use warp::{warp_field, WarpFrame};

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::StageError;

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core), Bitstream Vera licence: `LICENSE-DejaVu.txt`.
const FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
/// The family every text of the pictures uses (plotters' default family for axis labels too).
const FAMILY: &str = "sans-serif";

/// Valid tile, used frame.
pub(crate) const VALID: RGBColor = RGBColor(40, 170, 70);
/// Invalid tile, frame left out.
pub(crate) const INVALID: RGBColor = RGBColor(225, 40, 40);
/// No measurement.
pub(crate) const NO_DATA: RGBColor = RGBColor(150, 150, 150);
/// The warp arrows.
pub(crate) const ARROW: RGBColor = RGBColor(255, 205, 0);
/// Text and axes.
pub(crate) const INK: RGBColor = RGBColor(30, 30, 30);

/// Text sizes, px.
pub(crate) const TITLE_PX: u32 = 20;
pub(crate) const TEXT_PX: u32 = 15;

/// A drawing result of the bitmap backend.
pub(crate) type Drawn = DrawResult<(), BitMapBackend<'static>>;

/// An 8-bit RGB picture, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Picture {
    /// A white picture of `width x height` (at least 1 x 1) on which `draw` draws; its error, in words.
    pub fn draw(
        width: u32,
        height: u32,
        draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Drawn,
    ) -> Result<Self, String> {
        register_embedded_font()?;
        let (width, height) = (width.max(1), height.max(1));
        let mut rgb = vec![255u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            draw(&root).map_err(|e| format!("drawing failed: {e}"))?;
            root.present().map_err(|e| format!("drawing failed: {e}"))?;
        }
        Ok(Self { width, height, rgb })
    }

    /// Writes the picture as a PNG at `path`, atomically.
    ///
    /// # Errors
    /// When encoding or writing fails (the error names the file).
    pub fn save(&self, path: &Path) -> Result<(), StageError> {
        tlr_core::preview::write_rgb8_png_atomic(
            path,
            self.width as usize,
            self.height as usize,
            &self.rgb,
        )
        .map_err(|e| StageError::Output {
            path: path.to_path_buf(),
            message: crate::error::report(&e),
        })
    }
}

/// Registers the embedded font under [`FAMILY`], once per process.
fn register_embedded_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded font DejaVuSans.ttf cannot be read".to_string())
    }
}

/// The text style of the pictures: [`FAMILY`] at `px` pixels in `colour`.
pub(crate) fn text(px: u32, colour: RGBColor) -> TextStyle<'static> {
    (FAMILY, px).into_font().color(&colour)
}

/// Draws `body` at `(x, y)` (top left, pixels of `area`) in the default text style.
pub(crate) fn label<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    body: &str,
    (x, y): (i32, i32),
    style: &TextStyle,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    area.draw(&Text::new(body.to_string(), (x, y), style.clone()))
}

/// A short number for labels: 3 significant digits, exponent notation outside `1e-3..1e5`.
pub(crate) fn short_number(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".to_string()
    } else if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Labels for an axis from `lo` to `hi` with about 6 ticks: as many decimals as the tick step needs.
pub(crate) fn axis_label(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    let step = (hi - lo).abs() / 6.0;
    let decimals = if step.is_finite() && step > 0.0 {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    };
    move |v: &f64| {
        if v.abs() >= 1e5 || (v.abs() < 1e-6 && *v != 0.0) {
            format!("{v:.1e}")
        } else {
            format!("{v:.decimals$}")
        }
    }
}

/// The largest of 1, 2 and 5 times a power of ten that is at most `v` (`v` positive and finite;
/// otherwise 1).
pub(crate) fn nice_floor(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&n| n <= v * (1.0 + 1e-9))
        .unwrap_or(p)
}

/// A range around finite `values` with 5 % room on both sides; `fallback` when there is none, and a
/// width of at least 1e-6 times the value (or `1`) when all are equal.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, fallback: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return fallback;
    }
    let width = hi - lo;
    if width > 1e-9 * lo.abs().max(hi.abs()) {
        (lo - 0.05 * width, hi + 0.05 * width)
    } else {
        let half = if lo == 0.0 { 0.5 } else { 0.1 * lo.abs() };
        (lo - half, hi + half)
    }
}

/// The file name of a frame's label, for titles.
pub(crate) fn frame_name(label: &Path) -> String {
    label
        .file_name()
        .unwrap_or(label.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(0.0123), "0.0123");
        assert_eq!(short_number(12.345), "12.3");
        assert_eq!(short_number(1234.0), "1234");
        assert_eq!(short_number(1.5e7), "1.50e7");
        assert_eq!(short_number(f64::NAN), "n/a");
        assert_eq!(axis_label(1.6, 2.3)(&1.8), "1.8");
        assert_eq!(axis_label(0.0, 105.0)(&40.0), "40");
        assert_eq!(axis_label(0.0, 0.06)(&0.02), "0.02");
        assert_eq!(nice_floor(0.7), 0.5);
        assert_eq!(nice_floor(3.0), 2.0);
        assert_eq!(nice_floor(10.0), 10.0);
        assert_eq!(nice_floor(f64::NAN), 1.0);
        assert_eq!(padded_range([1.0, 3.0].into_iter(), (0.0, 1.0)), (0.9, 3.1));
        assert_eq!(padded_range([f64::NAN].into_iter(), (0.0, 1.0)), (0.0, 1.0));
        assert_eq!(
            padded_range([0.0, 0.0].into_iter(), (5.0, 6.0)),
            (-0.5, 0.5)
        );
        let (lo, hi) = padded_range([2.0].into_iter(), (0.0, 1.0));
        assert!(lo < 2.0 && hi > 2.0);
    }

    #[test]
    fn pictures_draw_text_with_the_embedded_font() {
        let picture = Picture::draw(120, 40, |root| {
            label(root, "FWHM 1.9 px²", (4, 10), &text(TEXT_PX, INK))
        })
        .unwrap();
        assert_eq!(picture.rgb.len(), 120 * 40 * 3);
        assert!(picture.rgb.iter().any(|&v| v < 100), "no text drawn");
        // A degenerate size is at least one pixel.
        let tiny = Picture::draw(0, 0, |_| Ok(())).unwrap();
        assert_eq!((tiny.width, tiny.height), (1, 1));
    }
}
