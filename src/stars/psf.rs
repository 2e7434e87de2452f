//! # The size and shape of one star: adaptive moments and a radial Moffat fit (step 4's estimators)
//!
//! What it does: [`adaptive_moments`] finds the centroid and the covariance of a star from
//! Gaussian-weighted moments, iterated with the weight matched to the star and then deconvolved, using
//! only the pixels of the star's own cell; [`fit_moffat`] fits `b + A (1 + r^2/alpha^2)^-beta` (beta
//! free) to a radial profile by Levenberg-Marquardt and returns the FWHM and the background offset.
//!
//! What it does not do: pick the pixels or the bins, decide which estimate to trust, or measure flux
//! (`measurement.rs` does, per candidate).

use ndarray::ArrayView2;

use super::detect::NO_OWNER;

/// Result of the adaptive moments of one star.
pub(super) struct Moments {
    pub(super) y: f32,
    pub(super) x: f32,
    /// Deconvolved covariance (yy, xy, xx), px^2.
    pub(super) cov: (f32, f32, f32),
}

/// The pixels within `radius` of `(y, x)` on every axis, clipped to a `rows x cols` image: rows
/// `r0..r1` and columns `c0..c1`, returned as `(r0, r1, c0, c1)`.
pub(super) fn window_around(
    y: f32,
    x: f32,
    radius: f32,
    rows: usize,
    cols: usize,
) -> (usize, usize, usize, usize) {
    let r0 = (y - radius).floor().max(0.0) as usize;
    let r1 = ((y + radius).ceil() + 1.0).min(rows as f32) as usize;
    let c0 = (x - radius).floor().max(0.0) as usize;
    let c1 = ((x + radius).ceil() + 1.0).min(cols as f32) as usize;
    (r0, r1, c0, c1)
}

/// Adaptive (Gaussian-weighted, iterated) moments on the background-subtracted `work` image starting at
/// `(y, x)`. `None` when they do not converge to a positive size.
///
/// Only pixels of candidate `me` (or of none) in `owners` are used, so a neighbour does not drag the
/// centroid or widen the size.
pub(super) fn adaptive_moments(
    work: ArrayView2<f32>,
    y: f32,
    x: f32,
    owners: ArrayView2<u32>,
    me: u32,
) -> Option<Moments> {
    let (rows, cols) = work.dim();
    let work = work.as_slice().expect("standard layout");
    let owners = owners.as_slice().expect("standard layout");
    let (mut yc, mut xc) = (y, x);
    let mut sw2 = 1.5f32 * 1.5;
    let mut cov = (sw2, 0.0, sw2);
    let mut ex: Vec<f32> = Vec::new();
    for _ in 0..MOMENT_ITERATIONS {
        let sw = sw2.sqrt();
        let radius = (3.5 * sw).ceil().clamp(3.0, 40.0);
        // (the neighbour search reaches 48 px, beyond this window)
        let (r0, r1, c0, c1) = window_around(yc, xc, radius, rows, cols);
        let inv = 0.5 / sw2;
        // The round Gaussian weight is separable: exp(-(dx^2 + dy^2) inv) = ex(c) * ey(r).
        ex.clear();
        ex.extend((c0..c1).map(|c| {
            let dx = c as f32 - xc;
            (-dx * dx * inv).exp()
        }));
        let (mut s0, mut sy, mut sx, mut syy, mut sxy, mut sxx) = (0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0);
        for r in r0..r1 {
            let dy = r as f32 - yc;
            let ey = (-dy * dy * inv).exp();
            let row = &work[r * cols + c0..r * cols + c1];
            let own = &owners[r * cols + c0..r * cols + c1];
            let (mut r0s, mut r1x, mut r2x) = (0.0f32, 0.0f32, 0.0f32);
            for (((c, &e), &v), &o) in (c0..c1).zip(&ex).zip(row).zip(own) {
                if !v.is_finite() {
                    continue;
                }
                if o != me && o != NO_OWNER {
                    continue;
                }
                let dx = c as f32 - xc;
                let w = e * v;
                r0s += w;
                r1x += w * dx;
                r2x += w * dx * dx;
            }
            let (r0s, r1x, r2x) = (r0s * ey, r1x * ey, r2x * ey);
            s0 += r0s;
            sy += r0s * dy;
            sx += r1x;
            syy += r0s * dy * dy;
            sxy += r1x * dy;
            sxx += r2x;
        }
        let (s0, sy, sx, syy, sxy, sxx) = (
            f64::from(s0),
            f64::from(sy),
            f64::from(sx),
            f64::from(syy),
            f64::from(sxy),
            f64::from(sxx),
        );
        if !(s0 > 0.0) {
            return None;
        }
        let (my, mx) = ((sy / s0) as f32, (sx / s0) as f32);
        // Second moments about the weighted mean.
        let myy = (syy / s0) as f32 - my * my;
        let mxy = (sxy / s0) as f32 - my * mx;
        let mxx = (sxx / s0) as f32 - mx * mx;
        // Deconvolve the round Gaussian weight: C^-1 = M^-1 - I / sw2.
        let det_m = myy * mxx - mxy * mxy;
        let step_y = (2.0 * my).clamp(-1.0, 1.0);
        let step_x = (2.0 * mx).clamp(-1.0, 1.0);
        yc += step_y;
        xc += step_x;
        if !(det_m > 0.0 && myy > 0.0) {
            sw2 *= 2.0;
            if sw2 > 400.0 {
                return None;
            }
            continue;
        }
        let (iyy, ixy, ixx) = (
            mxx / det_m - 1.0 / sw2,
            -mxy / det_m,
            myy / det_m - 1.0 / sw2,
        );
        let det_i = iyy * ixx - ixy * ixy;
        if !(det_i > 0.0 && iyy > 0.0) {
            // The source is at least as broad as the weight: widen it.
            sw2 *= 2.0;
            if sw2 > 400.0 {
                return None;
            }
            continue;
        }
        cov = (ixx / det_i, -ixy / det_i, iyy / det_i);
        let new_sw2 = (0.5 * (cov.0 + cov.2)).clamp(0.04, 400.0);
        let change = (new_sw2 - sw2).abs() / sw2;
        sw2 = new_sw2;
        if change < 2e-3 && step_y.abs() < 2e-3 && step_x.abs() < 2e-3 {
            break;
        }
    }
    if !(yc.is_finite() && xc.is_finite() && cov.0 > 0.0 && cov.2 > 0.0) {
        return None;
    }
    Some(Moments { y: yc, x: xc, cov })
}
/// Most iterations of the adaptive moments.
const MOMENT_ITERATIONS: usize = 15;
/// Most Levenberg-Marquardt iterations of the radial Moffat fit.
const FIT_ITERATIONS: usize = 20;
/// Solves the 4 x 4 system `a x = b` by Gaussian elimination with partial pivoting.
fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for col in 0..4 {
        let pivot = (col..4).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..4 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (dst, src) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *dst -= f * src;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 4];
    for row in (0..4).rev() {
        let mut s = b[row];
        for k in row + 1..4 {
            s -= a[row][k] * x[k];
        }
        x[row] = s / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Least-squares fit of `b + A (1 + r^2/alpha^2)^-beta` to radial bins `(r, mean value, count)`
/// (Levenberg-Marquardt, beta in [1.1, 20]). Returns `(fwhm, background offset)`.
pub(super) fn fit_moffat(bins: &[(f64, f64, f64)], amp0: f64, fwhm0: f64) -> Option<(f32, f32)> {
    if bins.len() < 5 || !(amp0 > 0.0) || !(fwhm0 > 0.0) {
        return None;
    }
    let fwhm_of = |alpha: f64, beta: f64| 2.0 * alpha * (2f64.powf(1.0 / beta) - 1.0).sqrt();
    // params: b, A, alpha, beta
    let mut p = [0.0, amp0, fwhm0 / fwhm_of(1.0, 3.0), 3.0];
    let residual = |p: &[f64; 4]| -> f64 {
        bins.iter()
            .map(|&(r, v, n)| {
                let u = 1.0 + r * r / (p[2] * p[2]);
                let m = p[0] + p[1] * u.powf(-p[3]);
                n * (v - m) * (v - m)
            })
            .sum()
    };
    let mut cost = residual(&p);
    let mut lambda = 1e-3;
    for _ in 0..FIT_ITERATIONS {
        let mut jtj = [[0.0f64; 4]; 4];
        let mut jtr = [0.0f64; 4];
        for &(r, v, n) in bins {
            let a2 = p[2] * p[2];
            let u = 1.0 + r * r / a2;
            let ln_u = u.ln();
            let pw = (-p[3] * ln_u).exp();
            let m = p[0] + p[1] * pw;
            let j = [
                1.0,
                pw,
                p[1] * p[3] * pw / u * 2.0 * r * r / (a2 * p[2]),
                -p[1] * pw * ln_u,
            ];
            for a in 0..4 {
                jtr[a] += n * j[a] * (v - m);
                for b in 0..4 {
                    jtj[a][b] += n * j[a] * j[b];
                }
            }
        }
        let mut improved = false;
        for _ in 0..8 {
            let mut a = jtj;
            for (k, row) in a.iter_mut().enumerate() {
                row[k] += lambda * jtj[k][k].max(1e-12);
            }
            let Some(step) = solve4(a, jtr) else {
                lambda *= 10.0;
                continue;
            };
            let trial = [
                p[0] + step[0],
                p[1] + step[1],
                (p[2] + step[2]).clamp(0.05, 100.0),
                (p[3] + step[3]).clamp(1.1, 20.0),
            ];
            let c = residual(&trial);
            if c.is_finite() && c <= cost {
                let rel = (cost - c) / cost.max(1e-300);
                p = trial;
                cost = c;
                lambda = (lambda * 0.3).max(1e-9);
                improved = rel > 1e-4;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    let fwhm = fwhm_of(p[2], p[3]);
    (p[1] > 0.0 && fwhm.is_finite() && fwhm > 0.0).then_some((fwhm as f32, p[0] as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_around_is_clipped_to_the_image() {
        assert_eq!(window_around(1.2, 98.7, 3.0, 100, 100), (0, 6, 95, 100));
        assert_eq!(window_around(50.0, 50.0, 2.0, 100, 100), (48, 53, 48, 53));
        // A centre outside the image gives an empty window, not a panic.
        let (r0, r1, c0, c1) = window_around(-10.0, 200.0, 2.0, 100, 100);
        assert!(r0 >= r1 && c0 >= c1);
    }
}
