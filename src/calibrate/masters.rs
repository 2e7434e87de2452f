//! Master frames: the per-pixel combination of a set of calibration frames (bias, darks, flats,
//! dark-flats), a sigma-clipped mean ([`Combine::SigmaClippedMean`], the default) or a median.
//!
//! What it does: [`build_master`] reads the frames in bands of rows, every frame's band at a time, so
//! memory is bounded by the band budget plus the master itself, whatever the number of frames; each
//! band's rows are combined on a few threads (pixels are independent, so the result does not depend on
//! the thread count). [`combine_values`] is the per-pixel rule, documented there. [`build_flat`] does
//! the same for flats, each frame first corrected by the master dark-flat or bias and divided by its
//! own level (per CFA colour for Bayer frames), so that flats of different brightness combine.
//! What it does not: subtract bias or darks from lights, normalise the master flat to 1
//! ([`super::apply`] does), or cache ([`super::cache`]).

use ndarray::{s, Array2, ArrayView2};
use std::path::PathBuf;

use super::CalibrationError;
use crate::fits::{FitsReader, FrameHeader};

/// How the frames of a master are combined per pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// Iterative sigma clipping, then the mean of the kept values (see [`combine_values`]).
    SigmaClippedMean {
        /// Values farther than `kappa` standard deviations from the median are dropped.
        kappa: f32,
        /// At most this many clipping rounds.
        rounds: usize,
    },
    /// The median (the mean of the two middle values for an even count).
    Median,
}

impl Default for Combine {
    fn default() -> Self {
        Self::SigmaClippedMean {
            kappa: 3.0,
            rounds: 5,
        }
    }
}

impl Combine {
    /// A short description for HISTORY lines and the cache key.
    pub fn describe(&self) -> String {
        match self {
            Self::SigmaClippedMean { kappa, rounds } => {
                format!("sigma-clipped mean (kappa {kappa}, at most {rounds} rounds)")
            }
            Self::Median => "median".to_string(),
        }
    }
}

/// Combines one pixel's values (reordered in place). Non-finite values are left out; none finite
/// gives NaN.
///
/// Sigma-clipped mean: each round takes the median `m` and the standard deviation `s` (population,
/// about the mean, in f64) of the kept values and keeps those with `|v - m| <= kappa * s`; it stops
/// when nothing was dropped, fewer than 3 values are left, or after `rounds` rounds; the result is the
/// mean (f64 sum) of the kept values.
pub fn combine_values(values: &mut Vec<f32>, method: Combine) -> f32 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f32::NAN;
    }
    match method {
        Combine::Median => crate::stats::median_in_place(values),
        Combine::SigmaClippedMean { kappa, rounds } => {
            let mut n = values.len();
            for _ in 0..rounds {
                if n < 3 {
                    break;
                }
                let (mean, std) = mean_std(&values[..n]);
                let med = f64::from(crate::stats::median_in_place(&mut values[..n]));
                let limit = f64::from(kappa) * std;
                let mut kept = 0;
                for i in 0..n {
                    if (f64::from(values[i]) - med).abs() <= limit {
                        values.swap(kept, i);
                        kept += 1;
                    }
                }
                if kept == n {
                    return mean as f32; // nothing dropped: the mean of these values
                }
                if kept == 0 {
                    break;
                }
                n = kept;
            }
            mean_std(&values[..n]).0 as f32
        }
    }
}

/// Mean and population standard deviation, in f64.
fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Default memory for the frames' bands while a master is built (the master itself comes on top):
/// 96 MiB, so that 50 frames of 24 MP stay under 200 MiB with their 96 MiB master.
pub const BAND_BUDGET_BYTES: usize = 96 << 20;

/// Combines `frames` (all of one size) into a master, reading `budget_bytes` of frame rows at a time
/// (at least one row of every frame) and combining each band on up to `threads` threads.
///
/// # Errors
/// No frame; frames of different sizes (naming both files); a frame that cannot be read.
pub fn build_master(
    frames: &[FrameHeader],
    method: Combine,
    budget_bytes: usize,
    threads: usize,
) -> Result<Array2<f32>, CalibrationError> {
    build_with(frames, method, budget_bytes, threads, &|_, _, _| {})
}

/// How the frames of a master flat are prepared before they are combined.
#[derive(Debug, Clone, Copy)]
pub struct FlatFrames<'a> {
    /// Subtracted from every frame first: the master dark-flat, else the master bias.
    pub under: Option<ArrayView2<'a, f32>>,
    /// Bayer frames: each frame's level is taken per CFA colour (2x2 site), else over all pixels.
    pub cfa: bool,
}

/// At most about this many pixels of a flat are sampled for its level: every pixel of frames up to
/// 4 MP, beyond that the pixels of every `s`-th 2x2 cell (`s` the smallest that fits) in both
/// directions.
pub const LEVEL_SAMPLE: usize = 1 << 22;

/// Each flat's level: the median of the frame after `prep.under` is subtracted, per 2x2 site
/// `[(0,0), (0,1), (1,0), (1,1)]` (frame rows and columns, even or odd) for CFA frames, else one
/// median repeated. Every frame is read in bands of `budget_bytes`.
///
/// # Errors
/// A frame that cannot be read; a level that is not positive ([`CalibrationError::FlatLevel`], naming
/// the frame).
pub fn flat_levels(
    frames: &[FrameHeader],
    prep: &FlatFrames,
    budget_bytes: usize,
) -> Result<Vec<[f32; 4]>, CalibrationError> {
    let mut levels = Vec::with_capacity(frames.len());
    for h in frames {
        let (rows, cols) = (h.rows, h.cols);
        let cell = if prep.cfa { 2 } else { 1 };
        let stride = ((rows * cols) as f64 / LEVEL_SAMPLE as f64)
            .sqrt()
            .ceil()
            .max(1.0) as usize;
        let band_rows = (budget_bytes / (cols * std::mem::size_of::<f32>()).max(1)).clamp(1, rows);
        let mut sites: [Vec<f32>; 4] = Default::default();
        let mut reader = FitsReader::open(&h.path)?;
        let mut start = 0;
        while start < rows {
            let end = (start + band_rows).min(rows);
            let mut band = reader.read_region(start..end, 0..cols)?;
            subtract_under(&mut band, prep.under, start);
            for (i, row) in band.outer_iter().enumerate() {
                let r = start + i;
                if (r / cell) % stride != 0 {
                    continue;
                }
                for (c, &v) in row.iter().enumerate() {
                    if (c / cell) % stride == 0 {
                        sites[site(r, c, prep.cfa)].push(v);
                    }
                }
            }
            start = end;
        }
        let mut level = [0f32; 4];
        for (k, values) in sites.iter_mut().enumerate() {
            level[k] = if prep.cfa || k == 0 {
                crate::stats::median_in_place(values)
            } else {
                level[0]
            };
        }
        if let Some(&bad) = level.iter().find(|l| !(**l > 0.0 && l.is_finite())) {
            return Err(CalibrationError::FlatLevel {
                path: h.path.clone(),
                level: bad,
            });
        }
        levels.push(level);
    }
    Ok(levels)
}

/// A master flat: every frame has `prep.under` subtracted and is divided by its own level
/// ([`flat_levels`], per CFA colour for Bayer frames), so that flats of different brightness (sky
/// flats over dusk, a panel dimmed between sessions) are brought to a common level of 1, then the
/// frames are combined with `method` as in [`build_master`]. Each frame is read twice (its level, then
/// its bands).
///
/// # Errors
/// As [`build_master`] and [`flat_levels`].
pub fn build_flat(
    frames: &[FrameHeader],
    prep: &FlatFrames,
    method: Combine,
    budget_bytes: usize,
    threads: usize,
) -> Result<Array2<f32>, CalibrationError> {
    let levels = flat_levels(frames, prep, budget_bytes)?;
    let scale: Vec<[f32; 4]> = levels.iter().map(|l| l.map(|v| 1.0 / v)).collect();
    build_with(frames, method, budget_bytes, threads, &|k, start, band| {
        subtract_under(band, prep.under, start);
        for (i, mut row) in band.outer_iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v *= scale[k][site(start + i, c, prep.cfa)];
            }
        }
    })
}

/// Index of the 2x2 site of frame pixel `(r, c)` (0 for mono).
fn site(r: usize, c: usize, cfa: bool) -> usize {
    if cfa {
        ((r & 1) << 1) | (c & 1)
    } else {
        0
    }
}

/// `band` (frame rows from `start`) minus the same rows of `under`.
fn subtract_under(band: &mut Array2<f32>, under: Option<ArrayView2<f32>>, start: usize) {
    if let Some(under) = under {
        *band -= &under.slice(s![start..start + band.nrows(), ..]);
    }
}

/// [`build_master`] with `adjust(frame index, first row, band)` applied to every frame's band as it
/// is read.
fn build_with(
    frames: &[FrameHeader],
    method: Combine,
    budget_bytes: usize,
    threads: usize,
    adjust: &dyn Fn(usize, usize, &mut Array2<f32>),
) -> Result<Array2<f32>, CalibrationError> {
    let first = frames.first().ok_or_else(|| CalibrationError::Empty {
        what: "master".into(),
        path: PathBuf::new(),
    })?;
    let (rows, cols) = (first.rows, first.cols);
    if let Some(odd) = frames.iter().find(|h| (h.rows, h.cols) != (rows, cols)) {
        return Err(CalibrationError::Mismatch {
            a: first.path.clone(),
            b: odd.path.clone(),
            reason: format!("{}x{} against {}x{} pixels", cols, rows, odd.cols, odd.rows),
        });
    }
    let row_bytes = frames.len() * cols * std::mem::size_of::<f32>();
    let band_rows = (budget_bytes / row_bytes.max(1)).clamp(1, rows);
    let mut master = Array2::<f32>::zeros((rows, cols));
    let mut start = 0;
    while start < rows {
        let end = (start + band_rows).min(rows);
        let bands = frames
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let mut band = FitsReader::open(&h.path)
                    .and_then(|mut r| r.read_region(start..end, 0..cols))?;
                adjust(k, start, &mut band);
                Ok(band)
            })
            .collect::<Result<Vec<_>, CalibrationError>>()?;
        let views: Vec<ArrayView2<f32>> = bands.iter().map(|b| b.view()).collect();
        combine_band(
            &views,
            master.slice_mut(s![start..end, ..]),
            method,
            threads,
        );
        start = end;
    }
    Ok(master)
}

/// Combines equally shaped `bands` pixel by pixel into `out`, splitting the rows over `threads`
/// threads (the result does not depend on the split).
pub fn combine_band(
    bands: &[ArrayView2<f32>],
    mut out: ndarray::ArrayViewMut2<f32>,
    method: Combine,
    threads: usize,
) {
    let rows = out.nrows();
    let per = rows.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let mut rest = out.view_mut();
        let mut row0 = 0;
        while row0 < rows {
            let take = per.min(rows - row0);
            let (mut part, tail) = rest.split_at(ndarray::Axis(0), take);
            rest = tail;
            let first = row0;
            scope.spawn(move || {
                let mut values = Vec::with_capacity(bands.len());
                for (r, mut row) in part.outer_iter_mut().enumerate() {
                    let rows: Vec<_> = bands.iter().map(|b| b.row(first + r)).collect();
                    for (c, px) in row.iter_mut().enumerate() {
                        values.clear();
                        values.extend(rows.iter().map(|b| b[c]));
                        *px = combine_values(&mut values, method);
                    }
                }
            });
            row0 += take;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(
            combine_values(&mut vec![3.0, 1.0, 2.0], Combine::Median),
            2.0
        );
        assert_eq!(
            combine_values(&mut vec![4.0, 1.0, 2.0, 3.0], Combine::Median),
            2.5
        );
        assert!(combine_values(&mut vec![f32::NAN], Combine::Median).is_nan());
    }

    #[test]
    fn clipping_drops_an_outlier() {
        let mut v: Vec<f32> = (0..20).map(|i| 100.0 + (i % 5) as f32).collect();
        v.push(10_000.0);
        let got = combine_values(&mut v, Combine::default());
        assert!((got - 102.0).abs() < 1e-4, "{got}");
    }
}
