//! PNG pictures for people: the auto-stretched preview of a result and the diagnostics pictures of a
//! run (warp field arrows, tile validity map, histogram).
//!
//! What it does:
//! - [`write_png_preview_atomic`]: 8-bit grayscale, stretched like Siril's autostretch: shadows clipped at
//!   `median - 2.8 * sigma` (sigma = 1.4826 MAD), white at the maximum, then the midtone transfer
//!   function chosen so that the sky background lands at 25 % grey. NaN pixels are black.
//! - [`write_rgb_png_preview_atomic`]: the same for an RGB image `(3, rows, cols)`, after a simple auto
//!   white balance: each channel's sky background is subtracted (a neutral sky) and the channels are
//!   scaled so that the bright unsaturated pixels (mostly stars) are white on average, or, when there
//!   are too few of them, so that the background noise is equal. One stretch, computed on the mean of
//!   the balanced channels, is then applied to all three (linked stretch).
//! - [`write_warp_field_png`]: one arrow per tile over the dimmed, stretched image.
//! - [`write_tile_map_png`]: valid tiles green, invalid tiles red, tile outlines grey.
//! - [`write_histogram_png`]: a bar chart with the value range and the highest count written under it.
//!
//! Every file is written to a temporary file in the target directory and renamed into place, so a reader
//! never sees half a PNG. Images keep the file row order (row 0 at the top of the picture); pictures of
//! images larger than [`MAX_DIAGNOSTIC_EDGE_PX`] are binned down (the preview itself is not).
//!
//! What it does not: write FITS, decide what to draw (the pipeline passes the tiles and values), or
//! render general text (a 3x5 pixel font for numbers only).

use crate::geom::{Shift, TileBox};
use crate::stats::median_and_sigma;
use ndarray::{Array2, ArrayView2, ArrayView3, Axis};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Diagnostics pictures are binned so that their longer edge is at most this many pixels.
pub const MAX_DIAGNOSTIC_EDGE_PX: usize = 2048;

/// Grey level (0..1) the sky background is mapped to by the auto-stretch.
pub const TARGET_BACKGROUND: f32 = 0.25;

/// Shadows are clipped this many sigma below the median (Siril's default).
pub const SHADOWS_CLIP_SIGMA: f32 = 2.8;

/// Errors of the PNG writers; each names the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PreviewError {
    /// Creating, writing, syncing or renaming a file failed.
    #[error("PNG `{path}`: {action} failed")]
    Io {
        /// The file concerned (the temporary file for writes, the target for the rename).
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The PNG encoder failed.
    #[error("PNG `{path}`: encoding failed")]
    Encode {
        /// The target file.
        path: PathBuf,
        /// The encoder error.
        #[source]
        source: png::EncodingError,
    },
    /// The image has no pixels or is larger than PNG allows.
    #[error("PNG `{path}`: cannot write an image of {rows} x {cols} pixels")]
    BadSize {
        /// The target file.
        path: PathBuf,
        /// Rows requested.
        rows: usize,
        /// Columns requested.
        cols: usize,
    },
    /// An RGB image that does not have 3 planes.
    #[error("PNG `{path}`: an RGB preview needs 3 planes (R, G, B), got {planes}")]
    BadPlanes {
        /// The target file.
        path: PathBuf,
        /// Planes given.
        planes: usize,
    },
    /// Two inputs that must correspond have different lengths.
    #[error("PNG `{path}`: got {got} {what} for {expected} tiles")]
    LengthMismatch {
        /// The target file.
        path: PathBuf,
        /// What was counted.
        what: &'static str,
        /// Number of tiles.
        expected: usize,
        /// Number of entries given.
        got: usize,
    },
}

/// Midtone transfer function: maps `x` in `[0, 1]` to `[0, 1]` with `mtf(m, m) = 0.5`.
fn mtf(x: f32, m: f32) -> f32 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    ((m - 1.0) * x) / ((2.0 * m - 1.0) * x - m)
}

/// The auto-stretch of an image: maps ADU to `0..=255` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stretch {
    low: f32,
    high: f32,
    midtone: f32,
}

impl Stretch {
    /// Stretch parameters from (a subsample of) the finite pixels; `None` when there is none.
    fn from_image(image: ArrayView2<f32>) -> Option<Self> {
        let (rows, cols) = image.dim();
        let stride = ((rows * cols) as f64 / 500_000.0).sqrt().ceil().max(1.0) as usize;
        let mut sample = Vec::new();
        let mut high = f32::NEG_INFINITY;
        let mut min = f32::INFINITY;
        for (r, row) in image.outer_iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                if v.is_finite() {
                    high = high.max(v);
                    min = min.min(v);
                    if r % stride == 0 && c % stride == 0 {
                        sample.push(v);
                    }
                }
            }
        }
        if !high.is_finite() {
            return None;
        }
        let (med, sigma) = median_and_sigma(&sample);
        let med = if med.is_finite() { med } else { min };
        let sigma = if sigma.is_finite() { sigma } else { 0.0 };
        let low = (med - SHADOWS_CLIP_SIGMA * sigma).max(min);
        let range = high - low;
        let midtone = if range > 0.0 {
            let m = ((med - low) / range).clamp(0.0, 1.0);
            // mtf(m, b) = TARGET  <=>  b = mtf(m, TARGET)
            mtf(m, TARGET_BACKGROUND).clamp(1e-6, 1.0 - 1e-6)
        } else {
            0.5
        };
        Some(Self { low, high, midtone })
    }

    /// Grey level in `0..=1` of a value (NaN -> 0).
    fn level(&self, v: f32) -> f32 {
        if !v.is_finite() {
            return 0.0;
        }
        let range = self.high - self.low;
        if range <= 0.0 {
            return if v >= self.low {
                TARGET_BACKGROUND
            } else {
                0.0
            };
        }
        mtf(((v - self.low) / range).clamp(0.0, 1.0), self.midtone)
    }
}

fn to_u8(level: f32) -> u8 {
    (level.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Encodes `data` (8-bit samples, `channels` per pixel) and publishes it at `path` via temp file + rename.
fn write_png_atomic(
    path: &Path,
    width: usize,
    height: usize,
    color: png::ColorType,
    data: &[u8],
) -> Result<(), PreviewError> {
    let bad_size = || PreviewError::BadSize {
        path: path.to_path_buf(),
        rows: height,
        cols: width,
    };
    if width == 0 || height == 0 || width > i32::MAX as usize || height > i32::MAX as usize {
        return Err(bad_size());
    }
    let mut encoded = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut encoded, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        // One fixed row filter: png 0.18's default (adaptive: every filter tried on every row) made
        // writing the 1 MP preview 0.25 s slower, on the serial tail of every run.
        enc.set_filter(png::Filter::Sub);
        enc.set_compression(png::Compression::Fast);
        let encode_err = |source| PreviewError::Encode {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = enc.write_header().map_err(encode_err)?;
        writer.write_image_data(data).map_err(encode_err)?;
        writer.finish().map_err(encode_err)?;
    }
    crate::atomic::write_bytes(path, &encoded).map_err(|e| PreviewError::Io {
        path: e.path,
        action: e.action,
        source: e.source,
    })
}

/// Writes `image` as an auto-stretched 8-bit grayscale PNG (Siril-like autostretch, NaN black) at `path`,
/// atomically (temporary file in the same directory, then rename). An image without any finite pixel
/// gives a black picture.
///
/// # Errors
/// [`PreviewError::BadSize`] for an empty image, [`PreviewError::Encode`] / [`PreviewError::Io`] when
/// encoding or writing fails (the temporary file is removed).
pub fn write_png_preview_atomic(path: &Path, image: ArrayView2<f32>) -> Result<(), PreviewError> {
    let (rows, cols) = image.dim();
    let data: Vec<u8> = match Stretch::from_image(image) {
        Some(s) => image.iter().map(|&v| to_u8(s.level(v))).collect(),
        None => vec![0; rows * cols],
    };
    write_png_atomic(path, cols, rows, png::ColorType::Grayscale, &data)
}

/// Fewest bright unsaturated pixels for a white balance on the objects; below it the noise balance is used.
const MIN_WHITE_PIXELS: usize = 30;

/// White-balance gains and backgrounds of an RGB image: `balanced_c = (x_c - background_c) * gain_c`
/// (mean gain 1). The background (sigma-clipped median) of every channel is removed, which makes the
/// sky neutral. The gains make the summed signal of the bright, unsaturated pixels (mean excess over
/// 10 sigma, or over 1 % of the brightest excess, and below 95 % of every channel's maximum; mostly
/// stars) equal in the three channels, i.e. the average star is white. With fewer than
/// [`MIN_WHITE_PIXELS`] such pixels the gains equalise the background noise instead, and with
/// unusable noise (no finite pixel, noise-free images) they are 1.
fn white_balance(rgb: &ArrayView3<f32>) -> ([f32; 3], [f32; 3]) {
    let mut background = [0.0f32; 3];
    let mut noise = [f32::NAN; 3];
    let mut max = [f32::NEG_INFINITY; 3];
    for c in 0..3 {
        let ch = rgb.index_axis(Axis(0), c);
        if let Some(st) = crate::stats::background_and_noise(ch, 200_000) {
            background[c] = st.median;
            noise[c] = st.sigma;
        }
        max[c] = ch
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
    }
    let background = background.map(|b| if b.is_finite() { b } else { 0.0 });
    let normalise = |g: [f32; 3]| {
        let mean = (g[0] + g[1] + g[2]) / 3.0;
        g.map(|v| v / mean)
    };
    // objects: bright, unsaturated pixels
    let finite_noise: Vec<f32> = noise.iter().copied().filter(|n| n.is_finite()).collect();
    let mean_noise = if finite_noise.is_empty() {
        0.0
    } else {
        finite_noise.iter().sum::<f32>() / finite_noise.len() as f32
    };
    let peak_excess = (0..3).map(|c| max[c] - background[c]).fold(0.0f32, |m, v| {
        if v.is_finite() {
            m.max(v)
        } else {
            m
        }
    });
    let threshold = (10.0 * mean_noise).max(0.01 * peak_excess);
    let (r, g, b) = (
        rgb.index_axis(Axis(0), 0),
        rgb.index_axis(Axis(0), 1),
        rgb.index_axis(Axis(0), 2),
    );
    let mut sums = [0.0f64; 3];
    let mut count = 0usize;
    for ((&vr, &vg), &vb) in r.iter().zip(g.iter()).zip(b.iter()) {
        let v = [vr, vg, vb];
        if !v.iter().all(|x| x.is_finite()) {
            continue;
        }
        let excess = [
            v[0] - background[0],
            v[1] - background[1],
            v[2] - background[2],
        ];
        let mean = (excess[0] + excess[1] + excess[2]) / 3.0;
        let unsaturated = (0..3).all(|c| v[c] < background[c] + 0.95 * (max[c] - background[c]));
        if threshold > 0.0 && mean > threshold && unsaturated {
            for c in 0..3 {
                sums[c] += f64::from(excess[c]);
            }
            count += 1;
        }
    }
    if count >= MIN_WHITE_PIXELS && sums.iter().all(|&s| s > 0.0) {
        return (background, normalise(sums.map(|s| (1.0 / s) as f32)));
    }
    if noise.iter().all(|&n| n.is_finite() && n > 0.0) {
        return (background, normalise(noise.map(|n| 1.0 / n)));
    }
    (background, [1.0; 3])
}

/// Writes an RGB image `(3, rows, cols)` (planes R, G, B) as an auto-balanced, auto-stretched 8-bit
/// colour PNG at `path`, atomically (see the module docs for the white balance and the linked stretch).
/// NaN samples are black.
///
/// # Errors
/// [`PreviewError::BadPlanes`] unless there are 3 planes, [`PreviewError::BadSize`] for an empty image,
/// [`PreviewError::Encode`] / [`PreviewError::Io`] when encoding or writing fails.
pub fn write_rgb_png_preview_atomic(path: &Path, rgb: ArrayView3<f32>) -> Result<(), PreviewError> {
    let (planes, rows, cols) = rgb.dim();
    if planes != 3 {
        return Err(PreviewError::BadPlanes {
            path: path.to_path_buf(),
            planes,
        });
    }
    let (background, gains) = white_balance(&rgb);
    let balanced: Vec<Array2<f32>> = (0..3)
        .map(|c| {
            let (b, g) = (background[c], gains[c]);
            rgb.index_axis(Axis(0), c).mapv(|v| (v - b) * g)
        })
        .collect();
    let mut mean = balanced[0].clone();
    mean.zip_mut_with(&balanced[1], |a, &b| *a += b);
    mean.zip_mut_with(&balanced[2], |a, &b| *a = (*a + b) / 3.0);
    let stretch = Stretch::from_image(mean.view()).map(|mut s| {
        // white at the brightest sample of any channel, so that no colour clips before the others
        let high = balanced
            .iter()
            .flat_map(|ch| ch.iter().copied())
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        if high > s.high {
            let m_old = s.midtone;
            let (low, old_high) = (s.low, s.high);
            s.high = high;
            // keep the background at the same grey: the background's position moves with the range
            let med_frac_old = mtf(TARGET_BACKGROUND, 1.0 - m_old); // inverse mtf: x with mtf(x, m_old) = T
            let med = low + med_frac_old * (old_high - low);
            let m = ((med - low) / (high - low)).clamp(0.0, 1.0);
            s.midtone = mtf(m, TARGET_BACKGROUND).clamp(1e-6, 1.0 - 1e-6);
        }
        s
    });
    let mut data = vec![0u8; rows * cols * 3];
    if let Some(s) = stretch {
        for (c, ch) in balanced.iter().enumerate() {
            for (i, &v) in ch.iter().enumerate() {
                data[3 * i + c] = to_u8(s.level(v));
            }
        }
    }
    write_png_atomic(path, cols, rows, png::ColorType::Rgb, &data)
}

/// An RGB drawing surface (row-major, 3 bytes per pixel).
struct Canvas {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

type Rgb = [u8; 3];

impl Canvas {
    fn new(width: usize, height: usize, fill: Rgb) -> Self {
        Self {
            width,
            height,
            data: fill.repeat(width * height),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = 3 * (y as usize * self.width + x as usize);
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Blends `c` with opacity `alpha` over the pixel.
    fn blend(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            for (dst, &src) in self.data[i..i + 3].iter_mut().zip(&c) {
                let old = f32::from(*dst);
                *dst = (old + alpha * (f32::from(src) - old)).round() as u8;
            }
        }
    }

    /// A straight line from `(x0, y0)` to `(x1, y1)` (Bresenham), `thick` pixels wide.
    fn line(&mut self, (x0, y0): (f32, f32), (x1, y1): (f32, f32), c: Rgb, thick: i64) {
        if !(x0.is_finite() && y0.is_finite() && x1.is_finite() && y1.is_finite()) {
            return;
        }
        let clampi = |v: f32| v.round().clamp(-1e6, 1e6) as i64;
        let (mut x, mut y, x1, y1) = (clampi(x0), clampi(y0), clampi(x1), clampi(y1));
        let dx = (x1 - x).abs();
        let dy = -(y1 - y).abs();
        let sx = if x < x1 { 1 } else { -1 };
        let sy = if y < y1 { 1 } else { -1 };
        let mut err = dx + dy;
        let half = (thick - 1) / 2;
        loop {
            for oy in -half..=(thick - 1 - half) {
                for ox in -half..=(thick - 1 - half) {
                    self.set(x + ox, y + oy, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// An arrow from `from` to `to` with a head of `head` pixels.
    fn arrow(&mut self, from: (f32, f32), to: (f32, f32), head: f32, c: Rgb) {
        self.line(from, to, c, 2);
        let (vx, vy) = (to.0 - from.0, to.1 - from.1);
        let len = vx.hypot(vy);
        if len < 1.0 {
            return;
        }
        let (ux, uy) = (vx / len, vy / len);
        let h = head.min(0.5 * len).max(2.0);
        for sign in [-1.0f32, 1.0] {
            // 30 degrees either side of the reversed direction.
            let (c30, s30) = (0.866_025_4f32, 0.5f32 * sign);
            let bx = -(ux * c30 - uy * s30);
            let by = -(ux * s30 + uy * c30);
            self.line(to, (to.0 + h * bx, to.1 + h * by), c, 2);
        }
    }

    fn rect_outline(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: Rgb) {
        let (x0, y0, x1, y1) = (x0 as f32, y0 as f32, x1 as f32, y1 as f32);
        self.line((x0, y0), (x1, y0), c, 1);
        self.line((x1, y0), (x1, y1), c, 1);
        self.line((x1, y1), (x0, y1), c, 1);
        self.line((x0, y1), (x0, y0), c, 1);
    }

    /// Draws `text` (digits, `.`, `-`, `+`, `e`, space) at `(x, y)` (top left), each font pixel `scale` wide.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: Rgb) {
        for (k, ch) in text.chars().enumerate() {
            let glyph = glyph(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                self.set(
                                    (x + (4 * k + col) * scale + sx) as i64,
                                    (y + row * scale + sy) as i64,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn write(&self, path: &Path) -> Result<(), PreviewError> {
        write_png_atomic(
            path,
            self.width,
            self.height,
            png::ColorType::Rgb,
            &self.data,
        )
    }
}

/// 3x5 bitmap of a character (unknown characters are blank).
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        'e' => [0b000, 0b111, 0b111, 0b100, 0b111],
        _ => [0; 5],
    }
}

/// Short human-readable number for the histogram labels.
fn format_number(v: f32) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Integer binning factor that brings the longer edge to at most [`MAX_DIAGNOSTIC_EDGE_PX`].
fn bin_factor(rows: usize, cols: usize) -> usize {
    rows.max(cols).div_ceil(MAX_DIAGNOSTIC_EDGE_PX).max(1)
}

/// Draws the tile warp field: for each tile an arrow from its centre along `scale * shift` (x to the right,
/// y down = increasing row), over the stretched `image_background` dimmed to half brightness. Tiles whose
/// shift is not finite get a red cross. `scale` is the arrow length in image pixels per pixel of shift; a
/// `scale` that is not positive and finite is chosen so that the longest arrow is 45 % of the median tile
/// edge.
///
/// # Errors
/// [`PreviewError::LengthMismatch`] when `shifts` and `tiles` differ in length, [`PreviewError::BadSize`] for
/// an empty image, I/O and encoding errors as for [`write_png_preview_atomic`].
pub fn write_warp_field_png(
    path: &Path,
    image_background: ArrayView2<f32>,
    tiles: &[TileBox],
    shifts: &[Shift],
    scale: f32,
) -> Result<(), PreviewError> {
    if shifts.len() != tiles.len() {
        return Err(PreviewError::LengthMismatch {
            path: path.to_path_buf(),
            what: "shifts",
            expected: tiles.len(),
            got: shifts.len(),
        });
    }
    let (rows, cols) = image_background.dim();
    if rows == 0 || cols == 0 {
        return Err(PreviewError::BadSize {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    let f = bin_factor(rows, cols);
    let (h, w) = (rows.div_ceil(f), cols.div_ceil(f));
    let mut canvas = Canvas::new(w, h, [0, 0, 0]);
    if let Some(stretch) = Stretch::from_image(image_background) {
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0.0f32, 0u32);
                for yy in y * f..((y + 1) * f).min(rows) {
                    for xx in x * f..((x + 1) * f).min(cols) {
                        let v = image_background[[yy, xx]];
                        if v.is_finite() {
                            s += stretch.level(v);
                            n += 1;
                        }
                    }
                }
                let g = if n > 0 { to_u8(0.5 * s / n as f32) } else { 0 };
                canvas.set(x as i64, y as i64, [g, g, g]);
            }
        }
    }
    let scale = if scale.is_finite() && scale > 0.0 {
        scale
    } else {
        let longest = shifts
            .iter()
            .filter(|s| s.dx.is_finite() && s.dy.is_finite())
            .map(|s| s.norm())
            .fold(0.0f32, f32::max);
        let edges: Vec<f32> = tiles.iter().map(|t| t.w.min(t.h) as f32).collect();
        let edge = crate::stats::median(&edges);
        if longest > 0.0 && edge.is_finite() {
            0.45 * edge / longest
        } else {
            1.0
        }
    };
    let ff = f as f32;
    for (t, s) in tiles.iter().zip(shifts) {
        let cx = (t.x0 as f32 + 0.5 * t.w as f32) / ff;
        let cy = (t.y0 as f32 + 0.5 * t.h as f32) / ff;
        if s.dx.is_finite() && s.dy.is_finite() {
            let to = (cx + scale * s.dx / ff, cy + scale * s.dy / ff);
            let head = 0.12 * t.w.min(t.h) as f32 / ff;
            canvas.arrow((cx, cy), to, head, [255, 200, 0]);
            canvas.line((cx, cy), (cx, cy), [0, 160, 255], 3);
        } else {
            let d = 0.15 * t.w.min(t.h) as f32 / ff;
            canvas.line((cx - d, cy - d), (cx + d, cy + d), [230, 40, 40], 2);
            canvas.line((cx - d, cy + d), (cx + d, cy - d), [230, 40, 40], 2);
        }
    }
    canvas.write(path)
}

/// Draws the tile map of a `rows x cols` image: valid tiles dark green, invalid tiles red (drawn on top,
/// so an invalid tile stays visible under its overlapping neighbours), every tile outlined in grey.
///
/// # Errors
/// [`PreviewError::LengthMismatch`] when `valid` and `tiles` differ in length, [`PreviewError::BadSize`] for
/// an empty image, I/O and encoding errors as for [`write_png_preview_atomic`].
pub fn write_tile_map_png(
    path: &Path,
    rows: usize,
    cols: usize,
    tiles: &[TileBox],
    valid: &[bool],
) -> Result<(), PreviewError> {
    if valid.len() != tiles.len() {
        return Err(PreviewError::LengthMismatch {
            path: path.to_path_buf(),
            what: "validity flags",
            expected: tiles.len(),
            got: valid.len(),
        });
    }
    if rows == 0 || cols == 0 {
        return Err(PreviewError::BadSize {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    let f = bin_factor(rows, cols);
    let (h, w) = (rows.div_ceil(f), cols.div_ceil(f));
    let mut canvas = Canvas::new(w, h, [25, 25, 25]);
    let span = |a: usize, len: usize, max: usize| (a / f, (a + len).div_ceil(f).min(max));
    for pass_invalid in [false, true] {
        for (t, &ok) in tiles.iter().zip(valid) {
            if ok == pass_invalid {
                continue;
            }
            let colour = if ok { [30, 140, 60] } else { [210, 40, 40] };
            let (x0, x1) = span(t.x0, t.w, w);
            let (y0, y1) = span(t.y0, t.h, h);
            for y in y0..y1 {
                for x in x0..x1 {
                    canvas.blend(x, y, colour, 0.6);
                }
            }
        }
    }
    for t in tiles {
        let (x0, x1) = span(t.x0, t.w, w);
        let (y0, y1) = span(t.y0, t.h, h);
        if x1 > x0 && y1 > y0 {
            canvas.rect_outline(x0, y0, x1 - 1, y1 - 1, [170, 170, 170]);
        }
    }
    canvas.write(path)
}

/// Draws a histogram of the finite `values` in `bins` bins (at least 1) as a 640 x 360 bar chart: dark blue
/// bars on white, the minimum and maximum value under the left and right end of the axis and the highest
/// count at the top left (no title). Without finite values only the axes are drawn.
///
/// # Errors
/// I/O and encoding errors as for [`write_png_preview_atomic`].
pub fn write_histogram_png(path: &Path, values: &[f32], bins: usize) -> Result<(), PreviewError> {
    const W: usize = 640;
    const H: usize = 360;
    const LEFT: usize = 40;
    const RIGHT: usize = 20;
    const TOP: usize = 30;
    const BOTTOM: usize = 40;
    let bins = bins.clamp(1, W - LEFT - RIGHT);
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mut canvas = Canvas::new(W, H, [255, 255, 255]);
    let axis = [60, 60, 60];
    let (x_axis_y, plot_w, plot_h) = (H - BOTTOM, W - LEFT - RIGHT, H - TOP - BOTTOM);
    if !finite.is_empty() {
        let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut counts = vec![0usize; bins];
        let width = f64::from(hi) - f64::from(lo);
        for &v in &finite {
            let b = if width > 0.0 {
                (((f64::from(v) - f64::from(lo)) / width * bins as f64) as usize).min(bins - 1)
            } else {
                bins / 2
            };
            counts[b] += 1;
        }
        let max_count = counts.iter().copied().max().unwrap_or(0).max(1);
        for (b, &n) in counts.iter().enumerate() {
            let x0 = LEFT + b * plot_w / bins;
            let x1 = (LEFT + (b + 1) * plot_w / bins).max(x0 + 1);
            let bar = (n * plot_h).div_ceil(max_count);
            for y in x_axis_y - bar..x_axis_y {
                for x in x0..x1.saturating_sub(usize::from(x1 - x0 > 2)) {
                    canvas.set(x as i64, y as i64, [40, 70, 160]);
                }
            }
        }
        canvas.text(LEFT, x_axis_y + 8, &format_number(lo), 2, axis);
        let hi_label = format_number(hi);
        let hi_x = (W - RIGHT).saturating_sub(8 * hi_label.len());
        canvas.text(hi_x, x_axis_y + 8, &hi_label, 2, axis);
        canvas.text(4, 6, &max_count.to_string(), 2, axis);
    }
    let (l, r) = (LEFT as f32 - 1.0, (W - RIGHT) as f32);
    canvas.line((l, x_axis_y as f32), (r, x_axis_y as f32), axis, 1);
    canvas.line((l, TOP as f32), (l, x_axis_y as f32), axis, 1);
    canvas.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn mtf_properties() {
        assert_eq!(mtf(0.0, 0.3), 0.0);
        assert_eq!(mtf(1.0, 0.3), 1.0);
        assert!((mtf(0.3, 0.3) - 0.5).abs() < 1e-6);
        let m = 0.02;
        let b = mtf(m, TARGET_BACKGROUND);
        assert!((mtf(m, b) - TARGET_BACKGROUND).abs() < 1e-5);
    }

    #[test]
    fn stretch_puts_background_at_quarter_grey() {
        let mut img = Array2::from_shape_fn((100, 100), |(r, c)| {
            1000.0 + ((r * 31 + c * 17) % 13) as f32 - 6.0
        });
        img[[50, 50]] = 60000.0;
        img[[10, 10]] = f32::NAN;
        let s = Stretch::from_image(img.view()).unwrap();
        let bg = s.level(1000.0);
        assert!((bg - TARGET_BACKGROUND).abs() < 0.01, "{bg}");
        assert_eq!(s.level(f32::NAN), 0.0);
        assert_eq!(to_u8(s.level(60000.0)), 255);
        assert!(s.level(990.0) < bg);
        // Flat and empty images.
        let flat = Array2::from_elem((4, 4), 7.0f32);
        let s = Stretch::from_image(flat.view()).unwrap();
        assert_eq!(s.level(7.0), TARGET_BACKGROUND);
        assert!(Stretch::from_image(Array2::from_elem((3, 3), f32::NAN).view()).is_none());
    }

    #[test]
    fn number_labels() {
        assert_eq!(format_number(0.0), "0.000");
        assert_eq!(format_number(0.25), "0.250");
        assert_eq!(format_number(12.345), "12.35");
        assert_eq!(format_number(1234.0), "1234");
        assert_eq!(format_number(1.5e7), "1.50e7");
        assert!(format_number(-3.0e-5).starts_with('-'));
    }
}
