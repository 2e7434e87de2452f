//! PNG pictures for people: the auto-stretched preview of a result.
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
//! - [`stretch_to_u8`] and [`write_rgb8_png_atomic`]: the stretch and the atomic PNG writer on their
//!   own, for pictures drawn elsewhere (the diagnostics pictures of the `tlr` package).
//!
//! Every file is written to a temporary file in the target directory and renamed into place, so a reader
//! never sees half a PNG. Images keep the file row order (row 0 at the top of the picture).
//!
//! What it does not: write FITS, or draw plots, arrows or text (the `tlr` package draws the diagnostics
//! pictures with a plotting crate).

use crate::stats::median_and_sigma;
use ndarray::{Array2, ArrayView2, ArrayView3, Axis};
use std::path::{Path, PathBuf};
use thiserror::Error;

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
    write_png_atomic(
        path,
        cols,
        rows,
        png::ColorType::Grayscale,
        &stretch_to_u8(image),
    )
}

/// The grey levels (`0..=255`, row-major) of `image` under the auto-stretch of
/// [`write_png_preview_atomic`]: NaN pixels, and every pixel of an image without a finite one, are 0.
pub fn stretch_to_u8(image: ArrayView2<f32>) -> Vec<u8> {
    match Stretch::from_image(image) {
        Some(s) => image.iter().map(|&v| to_u8(s.level(v))).collect(),
        None => vec![0; image.len()],
    }
}

/// Writes an 8-bit RGB picture (`rgb`: `width * height` pixels, row-major, 3 bytes each) as a PNG at
/// `path`, atomically (temporary file in the same directory, then rename), with the fast settings of
/// the preview.
///
/// # Errors
/// [`PreviewError::BadSize`] for an empty picture or a buffer of another length,
/// [`PreviewError::Encode`] / [`PreviewError::Io`] when encoding or writing fails.
pub fn write_rgb8_png_atomic(
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
) -> Result<(), PreviewError> {
    if Some(rgb.len()) != width.checked_mul(height).and_then(|n| n.checked_mul(3)) {
        return Err(PreviewError::BadSize {
            path: path.to_path_buf(),
            rows: height,
            cols: width,
        });
    }
    write_png_atomic(path, width, height, png::ColorType::Rgb, rgb)
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
}
