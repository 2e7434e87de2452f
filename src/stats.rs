//! Robust statistics shared by every stage of the method: medians, MAD, sigma-clipped
//! location and scale, and a fast background/noise estimate of a whole image.
//!
//! What it does: order statistics on `f32` samples, ignoring non-finite values.
//! What it does not: allocate per call beyond one scratch copy, or know about tiles, frames or FITS.

use ndarray::ArrayView2;

/// Scale factor that turns a median absolute deviation into a Gaussian sigma.
pub const MAD_TO_SIGMA: f32 = 1.482_602_2;

/// Location and scale of a sample after iterative sigma clipping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClippedStats {
    /// Median of the surviving samples.
    pub median: f32,
    /// Mean of the surviving samples.
    pub mean: f32,
    /// Robust standard deviation (MAD-based) of the surviving samples.
    pub sigma: f32,
    /// Number of samples that survived clipping.
    pub count: usize,
}

/// Median of `values` (reorders them). Non-finite values must have been removed by the caller.
/// Returns `NaN` for an empty slice. For an even count it is the mean of the two middle values.
pub fn median_in_place(values: &mut [f32]) -> f32 {
    let n = values.len();
    if n == 0 {
        return f32::NAN;
    }
    let mid = n / 2;
    let (lower, upper_mid, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    let upper = *upper_mid;
    if n % 2 == 1 {
        upper
    } else {
        let lower_max = lower.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        0.5 * (lower_max + upper)
    }
}

/// The finite values of `values`, in one allocation (collecting a filter would grow the vector step by
/// step, a reallocation each time: under a shared allocator lock, worker threads then wait for each
/// other).
fn finite(values: &[f32]) -> Vec<f32> {
    let mut kept = Vec::with_capacity(values.len());
    kept.extend(values.iter().copied().filter(|v| v.is_finite()));
    kept
}

/// Median of the finite values of `values`; `NaN` when there is none.
pub fn median(values: &[f32]) -> f32 {
    median_in_place(&mut finite(values))
}

/// Median and MAD-sigma of finite `values` (reorders a scratch copy, not the input).
/// Returns `(NaN, NaN)` when there is no finite value.
pub fn median_and_sigma(values: &[f32]) -> (f32, f32) {
    let mut scratch = finite(values);
    let med = median_in_place(&mut scratch);
    for v in scratch.iter_mut() {
        *v = (*v - med).abs();
    }
    let mad = median_in_place(&mut scratch);
    (med, mad * MAD_TO_SIGMA)
}

/// Iterative kappa-sigma clipping around the median.
///
/// Each round keeps the samples within `kappa * sigma` of the median, with sigma from the MAD,
/// until nothing changes or `max_rounds` is reached. Non-finite values are ignored.
/// Returns `None` when no finite value exists.
pub fn sigma_clipped(values: &[f32], kappa: f32, max_rounds: usize) -> Option<ClippedStats> {
    let mut kept = finite(values);
    if kept.is_empty() {
        return None;
    }
    let mut scratch = Vec::with_capacity(kept.len());
    let (mut med, mut sigma) = (f32::NAN, f32::NAN);
    for _ in 0..=max_rounds {
        scratch.clear();
        scratch.extend_from_slice(&kept);
        med = median_in_place(&mut scratch);
        for v in scratch.iter_mut() {
            *v = (*v - med).abs();
        }
        sigma = median_in_place(&mut scratch) * MAD_TO_SIGMA;
        if sigma <= 0.0 {
            break;
        }
        let limit = kappa * sigma;
        let before = kept.len();
        kept.retain(|v| (v - med).abs() <= limit);
        if kept.len() == before || kept.is_empty() {
            break;
        }
    }
    if kept.is_empty() {
        return None;
    }
    let mean = (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32;
    Some(ClippedStats {
        median: med,
        mean,
        sigma,
        count: kept.len(),
    })
}

/// Robust sky background and noise of an image: sigma-clipped (kappa 3) median and sigma of
/// a regular subsample of at most about `max_samples` pixels (stars are clipped away).
/// Returns `None` when the image has no finite pixel.
pub fn background_and_noise(image: ArrayView2<f32>, max_samples: usize) -> Option<ClippedStats> {
    let (rows, cols) = image.dim();
    let total = rows * cols;
    if total == 0 {
        return None;
    }
    let stride = ((total as f64 / max_samples.max(1) as f64).sqrt().floor() as usize).max(1);
    let mut samples = Vec::with_capacity(total / (stride * stride) + 1);
    for r in (0..rows).step_by(stride) {
        for c in (0..cols).step_by(stride) {
            samples.push(image[[r, c]]);
        }
    }
    sigma_clipped(&samples, 3.0, 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f32::NAN, 5.0, f32::INFINITY]), 5.0);
    }

    #[test]
    fn median_matches_sorting_reference() {
        let values: Vec<f32> = (0..101).map(|i| ((i * 37) % 101) as f32 * 0.5).collect();
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(median(&values), sorted[50]);
    }

    #[test]
    fn sigma_clipping_removes_outliers() {
        // A plateau of noise-like values plus a few bright "stars".
        let mut values: Vec<f32> = (0..1000)
            .map(|i| 100.0 + ((i % 21) as f32 - 10.0))
            .collect();
        values.extend([5000.0, 8000.0, 12000.0, -3000.0]);
        let stats = sigma_clipped(&values, 3.0, 10).unwrap();
        assert!((stats.median - 100.0).abs() < 1e-3, "{stats:?}");
        assert!(stats.count <= 1000);
        assert!(stats.sigma > 4.0 && stats.sigma < 12.0, "{stats:?}");
        assert!((stats.mean - 100.0).abs() < 0.5, "{stats:?}");
    }

    #[test]
    fn background_ignores_stars() {
        let mut img = Array2::from_elem((200, 300), 50.0f32);
        for ((r, c), v) in img.indexed_iter_mut() {
            *v += ((r * 7 + c * 13) % 11) as f32 - 5.0;
        }
        for k in 0..40 {
            img[[5 * k, 7 * k]] = 60000.0;
        }
        let stats = background_and_noise(img.view(), 10_000).unwrap();
        assert!((stats.median - 50.0).abs() <= 1.0, "{stats:?}");
    }

    #[test]
    fn all_nan_gives_none() {
        assert!(sigma_clipped(&[f32::NAN; 10], 3.0, 5).is_none());
        let img = Array2::from_elem((4, 4), f32::NAN);
        assert!(background_and_noise(img.view(), 100).is_none());
    }
}
