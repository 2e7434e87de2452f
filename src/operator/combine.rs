//! Robust per-pixel combination of aligned frames (part of [`crate::operator`]).
//!
//! What it does: on frames stored frame-major (`aligned[f * np + p]`),
//! - [`median_and_scale`]: per-pixel median and MAD-sigma over a subset of frames (the initial reference
//!   and the initial rejection scale);
//! - [`clipped_mean`]: weighted mean per pixel of the values within `kappa * scale` of a robust centre
//!   (sigma clipping against the previous round's reference, so one pass over the frames suffices and
//!   the loop streams through memory), plus the new per-pixel scale (standard deviation of the accepted
//!   values, corrected for the truncation at `kappa`) for the next round. The first round's centre is the
//!   median and its scale the MAD, so satellite trails, hot pixels and cosmic rays never enter a mean;
//! - [`relative_change`]: `||new - old|| / ||new - background||` for the convergence test.
//!
//! `NaN` values are ignored; a pixel without any finite value is `NaN` (never 0). A pixel whose values
//! were all rejected (only possible with a degenerate scale) falls back to the weighted mean of all.
//!
//! What it does not: registration, weights (given), or winsorising (values are either in or out).

// Numerical kernels: comparisons are written so that NaN fails them (`!(x > 0.0)` is true for NaN),
// and index loops over several arrays at once read more clearly than zipped iterators.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

/// Result of one combination round.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// Weighted clipped mean per pixel (`NaN` where no frame has data).
    pub image: Vec<f32>,
    /// Robust per-pixel scale for the next round's clipping.
    pub scale: Vec<f32>,
    /// Values rejected by the clipping.
    pub rejected: usize,
}

/// The frames a per-pixel median is taken over: all of `slots` (time order) when they are at most
/// [`super::MEDIAN_FRAMES`], else that many evenly spaced in time.
pub(crate) fn median_subset(slots: &[usize]) -> Vec<usize> {
    const K: usize = super::MEDIAN_FRAMES;
    if slots.len() <= K {
        return slots.to_vec();
    }
    (0..K)
        .map(|k| slots[(k * (slots.len() - 1) + (K - 1) / 2) / (K - 1)])
        .collect()
}

/// Per-pixel median and MAD-sigma of the frames in `subset` (slots). A pixel with no finite value gets
/// `NaN` for both; the scale is floored at a quarter of the tile's median scale (so a pixel whose frames
/// agree exactly, e.g. saturated, does not reject everything).
pub fn median_and_scale(aligned: &[f32], np: usize, subset: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut center = vec![f32::NAN; np];
    let mut scale = vec![f32::NAN; np];
    let mut buf = Vec::with_capacity(subset.len());
    for p in 0..np {
        buf.clear();
        for &s in subset {
            if let Some(&v) = aligned.get(s * np + p) {
                if v.is_finite() {
                    buf.push(v);
                }
            }
        }
        if buf.is_empty() {
            continue;
        }
        let med = crate::stats::median_in_place(&mut buf);
        for v in buf.iter_mut() {
            *v = (*v - med).abs();
        }
        let mad = crate::stats::median_in_place(&mut buf) * crate::stats::MAD_TO_SIGMA;
        center[p] = med;
        scale[p] = if buf.len() >= 3 { mad } else { f32::INFINITY };
    }
    floor_scale(&mut scale);
    (center, scale)
}

/// Floor every finite scale at a quarter of the median finite scale.
fn floor_scale(scale: &mut [f32]) {
    let med = crate::stats::median(scale);
    if med.is_finite() && med > 0.0 {
        let floor = 0.25 * med;
        for s in scale.iter_mut() {
            if s.is_finite() && *s < floor {
                *s = floor;
            }
        }
    }
}

/// Standard deviation of a normal distribution truncated at ±kappa sigma, in units of sigma.
fn truncated_sd(kappa: f32) -> f32 {
    let k = f64::from(kappa);
    if !(k > 0.0) || k > 8.0 {
        return 1.0;
    }
    let pdf = (-0.5 * k * k).exp() / (2.0 * std::f64::consts::PI).sqrt();
    // 2 Phi(k) - 1 = erf(k / sqrt 2); erf by a series good to ~1e-7 for k <= 8.
    let mass = erf(k / std::f64::consts::SQRT_2);
    let var = 1.0 - 2.0 * k * pdf / mass;
    (var.max(1e-6)).sqrt() as f32
}

fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 is too coarse near 1; use the series / continued fraction split.
    if x < 2.5 {
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        let mut n = 0.0;
        while term.abs() > 1e-16 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
            if n > 200.0 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc continued fraction (Lentz), good for x >= 2.5.
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for k in 1..200 {
            let a = k as f64 * 0.5;
            d = x + a * d;
            d = if d == 0.0 { 1e-300 } else { 1.0 / d };
            c = x + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        1.0 - (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
    }
}

/// The clipping rule of [`clipped_mean`] per pixel: a value `v` is accepted when
/// `|v - centre| <= bound` (so `NaN` never is). Returns `(centre, bound)`: a pixel without a finite centre
/// clips against 0 with an infinite bound, one without a finite scale has an infinite bound.
pub(crate) fn clip_bounds(
    np: usize,
    center: &[f32],
    scale: &[f32],
    kappa: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut c = vec![0.0f32; np];
    let mut thr = vec![f32::INFINITY; np];
    for p in 0..np {
        let (cp, sp) = (
            center.get(p).copied().unwrap_or(f32::NAN),
            scale.get(p).copied().unwrap_or(f32::NAN),
        );
        if cp.is_finite() {
            c[p] = cp;
            if sp.is_finite() {
                thr[p] = kappa * sp;
            }
        }
    }
    (c, thr)
}

/// Weighted mean with sigma clipping against `center` (see the module docs). `weights` are
/// `(slot, weight)` pairs in the order of accumulation (fixed, so the result is deterministic).
pub fn clipped_mean(
    aligned: &[f32],
    np: usize,
    weights: &[(usize, f32)],
    center: &[f32],
    scale: &[f32],
    kappa: f32,
) -> Combined {
    let (c, thr) = clip_bounds(np, center, scale, kappa);
    let mut num = vec![0.0f32; np];
    let mut den = vec![0.0f32; np];
    let mut cnt = vec![0.0f32; np];
    let mut s1 = vec![0.0f32; np];
    let mut s2 = vec![0.0f32; np];
    let mut finite = vec![0.0f32; np];
    // Pixel blocks outside, frames inside: the accumulators of a block stay in L1. The inner loop is
    // branch-free (selects), so it vectorises.
    const BLOCK: usize = 1024;
    let mut b0 = 0;
    while b0 < np {
        let b1 = (b0 + BLOCK).min(np);
        let cb = &c[b0..b1];
        let tb = &thr[b0..b1];
        let numb = &mut num[b0..b1];
        let denb = &mut den[b0..b1];
        let cntb = &mut cnt[b0..b1];
        let s1b = &mut s1[b0..b1];
        let s2b = &mut s2[b0..b1];
        let finb = &mut finite[b0..b1];
        let acc = Accumulators {
            num: numb,
            den: denb,
            cnt: cntb,
            s1: s1b,
            s2: s2b,
            finite: finb,
        };
        accumulate_block(acc, aligned, np, b0, b1, weights, cb, tb);
        b0 = b1;
    }
    let correction = truncated_sd(kappa);
    let mut image = vec![f32::NAN; np];
    let mut new_scale = vec![f32::NAN; np];
    let mut fallback_pixels = Vec::new();
    let mut rejected = 0usize;
    for p in 0..np {
        rejected += (finite[p] - cnt[p]).max(0.0) as usize;
        if den[p] > 0.0 {
            image[p] = c[p] + num[p] / den[p];
            if cnt[p] >= 3.0 {
                let m1 = s1[p] / cnt[p];
                let var = (s2[p] / cnt[p] - m1 * m1).max(0.0);
                let sd = var.sqrt() / correction;
                // Unbiased-ish for small counts.
                new_scale[p] = sd * (cnt[p] / (cnt[p] - 1.0)).sqrt();
            } else {
                new_scale[p] = scale.get(p).copied().unwrap_or(f32::INFINITY);
            }
        } else if finite[p] > 0.0 {
            fallback_pixels.push(p);
        }
    }
    if !fallback_pixels.is_empty() {
        let mut fnum = vec![0.0f64; fallback_pixels.len()];
        let mut fden = vec![0.0f64; fallback_pixels.len()];
        for &(slot, wt) in weights {
            let Some(frame) = aligned.get(slot * np..(slot + 1) * np) else {
                continue;
            };
            for (k, &p) in fallback_pixels.iter().enumerate() {
                let v = frame[p];
                if v.is_finite() && wt > 0.0 {
                    fnum[k] += f64::from(wt) * f64::from(v);
                    fden[k] += f64::from(wt);
                }
            }
        }
        for (k, &p) in fallback_pixels.iter().enumerate() {
            if fden[k] > 0.0 {
                image[p] = (fnum[k] / fden[k]) as f32;
                new_scale[p] = f32::INFINITY;
            }
        }
    }
    floor_scale(&mut new_scale);
    Combined {
        image,
        scale: new_scale,
        rejected,
    }
}

/// Per-pixel accumulators of one block.
struct Accumulators<'a> {
    num: &'a mut [f32],
    den: &'a mut [f32],
    cnt: &'a mut [f32],
    s1: &'a mut [f32],
    s2: &'a mut [f32],
    finite: &'a mut [f32],
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn accumulate_block(
    acc: Accumulators<'_>,
    aligned: &[f32],
    np: usize,
    b0: usize,
    b1: usize,
    weights: &[(usize, f32)],
    cb: &[f32],
    tb: &[f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::resample::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time just above).
        unsafe { accumulate_block_avx2(acc, aligned, np, b0, b1, weights, cb, tb) };
        return;
    }
    accumulate_block_body(acc, aligned, np, b0, b1, weights, cb, tb);
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
fn accumulate_block_avx2(
    acc: Accumulators<'_>,
    aligned: &[f32],
    np: usize,
    b0: usize,
    b1: usize,
    weights: &[(usize, f32)],
    cb: &[f32],
    tb: &[f32],
) {
    accumulate_block_body(acc, aligned, np, b0, b1, weights, cb, tb);
}

/// Branch-free accumulation of every frame's values of pixels `b0..b1` (see [`clipped_mean`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate_block_body(
    acc: Accumulators<'_>,
    aligned: &[f32],
    np: usize,
    b0: usize,
    b1: usize,
    weights: &[(usize, f32)],
    cb: &[f32],
    tb: &[f32],
) {
    let len = b1 - b0;
    let (numb, denb, cntb, s1b, s2b, finb) = (
        &mut acc.num[..len],
        &mut acc.den[..len],
        &mut acc.cnt[..len],
        &mut acc.s1[..len],
        &mut acc.s2[..len],
        &mut acc.finite[..len],
    );
    let (cb, tb) = (&cb[..len], &tb[..len]);
    for &(slot, wt) in weights {
        let Some(frame) = aligned.get(slot * np + b0..slot * np + b1) else {
            continue;
        };
        for p in 0..len {
            let d = frame[p] - cb[p];
            // NaN compares false: missing values are neither accepted nor counted.
            let ok = d.abs() <= tb[p];
            let dd = if ok { d } else { 0.0 };
            let w = if ok { wt } else { 0.0 };
            numb[p] += w * dd;
            denb[p] += w;
            cntb[p] += if ok { 1.0 } else { 0.0 };
            s1b[p] += dd;
            s2b[p] += dd * dd;
            finb[p] += if d.is_nan() { 0.0 } else { 1.0 };
        }
    }
}

/// `sqrt(sum (new - old)^2 / sum (new - median(new))^2)` over pixels finite in both; 0 for identical
/// images, `INFINITY` when the new image is flat but changed.
pub fn relative_change(new: &[f32], old: &[f32]) -> f32 {
    let bg = crate::stats::median(new);
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in new.iter().zip(old.iter()) {
        if a.is_finite() && b.is_finite() {
            num += f64::from(a - b).powi(2);
            den += f64::from(a - bg).powi(2);
        }
    }
    if num == 0.0 {
        0.0
    } else if den > 0.0 {
        (num / den).sqrt() as f32
    } else {
        f32::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_correction() {
        assert!(
            (truncated_sd(3.0) - 0.9866).abs() < 1e-3,
            "{}",
            truncated_sd(3.0)
        );
        assert!(
            (truncated_sd(1.0) - 0.5396).abs() < 1e-3,
            "{}",
            truncated_sd(1.0)
        );
        assert!((erf(3.0) - 0.999_977_909_5).abs() < 1e-9);
        assert!((erf(0.5) - 0.520_499_877_8).abs() < 1e-9);
    }

    #[test]
    fn outliers_are_clipped_and_nan_ignored() {
        // 20 frames of 4 pixels: pixel 0 noise around 100, pixel 1 with one hot value, pixel 2 all NaN,
        // pixel 3 with half NaN.
        let np = 4;
        let mut aligned = vec![0.0f32; 20 * np];
        for f in 0..20 {
            let noise = ((f * 7) % 5) as f32 - 2.0;
            aligned[f * np] = 100.0 + noise;
            aligned[f * np + 1] = if f == 7 { 50_000.0 } else { 200.0 + noise };
            aligned[f * np + 2] = f32::NAN;
            aligned[f * np + 3] = if f % 2 == 0 { f32::NAN } else { 300.0 + noise };
        }
        let subset: Vec<usize> = (0..20).collect();
        let (center, scale) = median_and_scale(&aligned, np, &subset);
        assert!(center[2].is_nan() && (center[1] - 200.0).abs() <= 2.0);
        let weights: Vec<(usize, f32)> = (0..20).map(|f| (f, 1.0 + f as f32 * 0.1)).collect();
        let out = clipped_mean(&aligned, np, &weights, &center, &scale, 3.0);
        assert!((out.image[0] - 100.0).abs() < 1.5, "{:?}", out.image);
        assert!((out.image[1] - 200.0).abs() < 1.5, "{:?}", out.image);
        assert!(out.image[2].is_nan());
        assert!((out.image[3] - 300.0).abs() < 2.5);
        assert!(out.rejected >= 1);
        // Slow reference for pixel 0: weighted mean of all values (none is an outlier).
        let (mut a, mut b) = (0.0f64, 0.0f64);
        for &(f, wt) in &weights {
            a += f64::from(wt) * f64::from(aligned[f * np]);
            b += f64::from(wt);
        }
        approx::assert_abs_diff_eq!(out.image[0], (a / b) as f32, epsilon = 1e-3);
    }

    #[test]
    fn relative_change_values() {
        let a = vec![1.0f32, 2.0, 3.0, f32::NAN];
        assert_eq!(relative_change(&a, &a), 0.0);
        let b = vec![1.0f32, 2.0, 3.5, 7.0];
        assert!(relative_change(&a, &b) > 0.1);
        assert_eq!(relative_change(&[1.0, 1.0], &[1.0, 2.0]), f32::INFINITY);
    }
}
