//! Temporal smoothing of a tile's shift track and the outlier rule for frames (part of [`crate::operator`]).
//!
//! What it does: given the local shifts (`shift - prior`) measured for the frames of one tile in time
//! order, with each measurement's 1-sigma uncertainty,
//! 1. judges outliers against a running median of the measurements (window `window`, kept symmetric near
//!    the ends so that a linear drift is followed exactly): a frame whose
//!    shift lies farther from that track than `max(min_delta_px, outlier_kappa * scatter)` is an outlier,
//!    `scatter` being the robust per-axis scatter of all frames around the track (median distance /
//!    1.1774, the median of a 2-D Gaussian's radius). A fixed distance alone (the published 0.3 px to the
//!    tile's median shift) would reject whole sequences as soon as the field drifts or wobbles;
//! 2. smooths the inliers over time ([`Smoothing`]: running median or quadratic Savitzky-Golay over
//!    `window` inliers, or nothing);
//! 3. decides the shift used for resampling: either the smoothed track itself (published behaviour), or
//!    (`noise_weighted`) the inverse-variance combination of the frame's own measurement (variance from the
//!    registration) and the track predicted from its neighbours (leave-one-out; variance = the true
//!    scatter around the track, measured scatter minus measurement noise). Frames without a measurement
//!    (failed registration: infinite uncertainty) get the track.
//!
//! Why noise weighting: the atmosphere's local motion is correlated in time (AR(1), ~0.9 per frame) but
//! still changes by ~0.45 of its amplitude from one frame to the next; a track over 11 frames cannot follow
//! that, so replacing measurements that are good to ~0.02 px by the track throws away real per-frame motion
//! and blurs the result (measured in the operator's tests). The track is still the right judge of
//! outliers and the right fallback for frames whose registration is unreliable.
//!
//! What it does not: look at images; know about frames' weights.

// Numerical kernels: comparisons are written so that NaN fails them (`!(x > 0.0)` is true for NaN),
// and index loops over several arrays at once read more clearly than zipped iterators.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use crate::geom::Shift;

/// How a tile's shift series is smoothed over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Smoothing {
    /// No smoothing: the measured shifts are used (outliers are still judged against a running median).
    None,
    /// Running median over the window.
    Median,
    /// Quadratic Savitzky-Golay (local least-squares parabola) over the window.
    #[default]
    SavitzkyGolay,
}

/// Settings of [`plan`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackParams {
    /// Frames in the window (odd; even values are rounded up, values below 3 mean 3).
    pub window: usize,
    /// The smoother.
    pub smoothing: Smoothing,
    /// Inverse-variance combination of measurement and track (see the module docs).
    pub noise_weighted: bool,
    /// Smallest outlier distance, px (`max_warp_delta_px`).
    pub min_delta_px: f32,
    /// Outlier distance in units of the robust scatter around the track.
    pub outlier_kappa: f32,
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Use this local shift (to be added to the prior).
    Use(Shift),
    /// The frame's shift is an outlier.
    Outlier {
        /// Distance from the judging track, px.
        deviation: f32,
        /// The distance allowed, px.
        limit: f32,
    },
}

/// Median of the 2-D Gaussian radius in units of the per-axis sigma: sqrt(2 ln 2).
const RAYLEIGH_MEDIAN: f32 = 1.177_410_1;

/// Decide, for every frame (arrays in time order, `times` non-decreasing), the local shift to use or
/// that it is an outlier. `sigmas` are the measurement uncertainties (`INFINITY` = no measurement).
/// All slices must have the same length; shorter ones are treated as missing measurements.
pub fn plan(
    times: &[f32],
    ys: &[f32],
    xs: &[f32],
    sigmas: &[f32],
    p: &TrackParams,
) -> Vec<Decision> {
    let n = times.len();
    let half = (p.window.max(3) / 2).max(1);
    let mut fitter = Fitter::default();
    let measured = |i: usize| -> bool {
        i < ys.len()
            && i < xs.len()
            && i < sigmas.len()
            && sigmas[i].is_finite()
            && ys[i].is_finite()
            && xs[i].is_finite()
    };
    let m_idx: Vec<usize> = (0..n).filter(|&i| measured(i)).collect();
    if m_idx.is_empty() {
        return vec![Decision::Use(Shift::ZERO); n];
    }
    // 1. Judge: running median over all measurements.
    let mt: Vec<f32> = m_idx.iter().map(|&i| times[i]).collect();
    let my: Vec<f32> = m_idx.iter().map(|&i| ys[i]).collect();
    let mx: Vec<f32> = m_idx.iter().map(|&i| xs[i]).collect();
    let mut devs = Vec::with_capacity(m_idx.len());
    for k in 0..m_idx.len() {
        let r = window_symmetric(k, mt.len(), half);
        let jy = fitter.fit(&mt, &my, r.clone(), None, mt[k], Smoothing::Median);
        let jx = fitter.fit(&mt, &mx, r, None, mt[k], Smoothing::Median);
        devs.push((my[k] - jy).hypot(mx[k] - jx));
    }
    let scatter = crate::stats::median(&devs) / RAYLEIGH_MEDIAN;
    let limit = p.min_delta_px.max(p.outlier_kappa * scatter);
    let mut outlier = vec![None; n];
    for (k, &i) in m_idx.iter().enumerate() {
        if devs[k] > limit && m_idx.len() >= 3 {
            outlier[i] = Some(devs[k]);
        }
    }
    // 2. Inliers define the smoothed track.
    let in_idx: Vec<usize> = m_idx
        .iter()
        .copied()
        .filter(|&i| outlier[i].is_none())
        .collect();
    if in_idx.is_empty() {
        return (0..n)
            .map(|i| match outlier[i] {
                Some(d) => Decision::Outlier {
                    deviation: d,
                    limit,
                },
                None => Decision::Use(Shift::ZERO),
            })
            .collect();
    }
    let it: Vec<f32> = in_idx.iter().map(|&i| times[i]).collect();
    let iy: Vec<f32> = in_idx.iter().map(|&i| ys[i]).collect();
    let ix: Vec<f32> = in_idx.iter().map(|&i| xs[i]).collect();
    let track_mode = match p.smoothing {
        Smoothing::None => Smoothing::Median, // only for frames without a measurement
        s => s,
    };
    // Leave-one-out predictions for inliers (for the noise-weighted combination) and the scatter.
    let mut loo = Vec::with_capacity(in_idx.len());
    let mut resid2 = Vec::with_capacity(in_idx.len());
    let mut noise2 = Vec::with_capacity(in_idx.len());
    for k in 0..in_idx.len() {
        let r = window_around(k, true, it.len(), half);
        let ty = fitter.fit(&it, &iy, r.clone(), Some(k), it[k], track_mode);
        let tx = fitter.fit(&it, &ix, r, Some(k), it[k], track_mode);
        loo.push((ty, tx));
        if ty.is_finite() && tx.is_finite() {
            resid2.push(0.5 * ((iy[k] - ty).powi(2) + (ix[k] - tx).powi(2)));
            let s = sigmas[in_idx[k]];
            noise2.push(s * s);
        }
    }
    // True per-axis variance of the motion around the track (robust: median of squared residuals
    // scaled to a mean for a chi-square with 2 degrees of freedom: median = 2 ln 2 * mean / 2 ... per axis
    // the mean of 0.5 * (ry^2 + rx^2) is sigma^2 and its median is ln 2 * sigma^2).
    let tau2 = if resid2.is_empty() {
        f32::INFINITY
    } else {
        let med = crate::stats::median(&resid2) / std::f32::consts::LN_2;
        let noise = crate::stats::median(&noise2);
        (med - noise).max(1e-4)
    };
    let mut pos_in = vec![usize::MAX; n];
    for (k, &i) in in_idx.iter().enumerate() {
        pos_in[i] = k;
    }
    (0..n)
        .map(|i| {
            if let Some(d) = outlier[i] {
                return Decision::Outlier {
                    deviation: d,
                    limit,
                };
            }
            let k = pos_in[i];
            if k == usize::MAX {
                // No measurement: the track at this time.
                let ins = it.partition_point(|&t| t <= times[i]);
                let r = window_insert(ins, it.len(), half);
                let ty = fitter.fit(&it, &iy, r.clone(), None, times[i], track_mode);
                let tx = fitter.fit(&it, &ix, r, None, times[i], track_mode);
                return Decision::Use(finite_or_zero(ty, tx));
            }
            let (vy, vx) = (iy[k], ix[k]);
            match p.smoothing {
                Smoothing::None => Decision::Use(Shift::new(vy, vx)),
                s if p.noise_weighted => {
                    let _ = s;
                    let (ty, tx) = loo[k];
                    if !(ty.is_finite() && tx.is_finite() && tau2.is_finite()) {
                        return Decision::Use(Shift::new(vy, vx));
                    }
                    let s2 = sigmas[i] * sigmas[i];
                    // Weight of the measurement: tau^2 / (tau^2 + sigma^2).
                    let a = tau2 / (tau2 + s2);
                    Decision::Use(Shift::new(a * vy + (1.0 - a) * ty, a * vx + (1.0 - a) * tx))
                }
                s => {
                    let r = window_around(k, true, it.len(), half);
                    let ty = fitter.fit(&it, &iy, r.clone(), None, it[k], s);
                    let tx = fitter.fit(&it, &ix, r, None, it[k], s);
                    Decision::Use(finite_or_zero(ty, tx))
                }
            }
        })
        .collect()
}

fn finite_or_zero(y: f32, x: f32) -> Shift {
    Shift::new(
        if y.is_finite() { y } else { 0.0 },
        if x.is_finite() { x } else { 0.0 },
    )
}

/// Window centred on `k` with the same number of points on both sides (at least three points when
/// available), so that the median of a linear trend is exact also near the ends.
fn window_symmetric(k: usize, len: usize, half: usize) -> std::ops::Range<usize> {
    let j = half.min(k).min(len.saturating_sub(1 + k)).max(1);
    let mut start = k.saturating_sub(j);
    let mut end = (k + j + 1).min(len);
    if end - start < 3 && len >= 3 {
        start = start.min(len - 3);
        end = start + 3;
    }
    start..end
}

/// Window of up to `2 half + 1` positions centred on `k` within `0..len`, shifted at the ends.
fn window_around(k: usize, _include: bool, len: usize, half: usize) -> std::ops::Range<usize> {
    let size = (2 * half + 1).min(len);
    let start = k.saturating_sub(half).min(len - size);
    start..start + size
}

/// Window of up to `2 half` positions around an insertion point `ins` (between `ins - 1` and `ins`).
fn window_insert(ins: usize, len: usize, half: usize) -> std::ops::Range<usize> {
    let size = (2 * half).min(len);
    let start = ins.saturating_sub(half).min(len - size);
    start..start + size
}

/// Fits the track through a window of points; keeps its scratch buffers from one fit to the next (a
/// plan makes several fits per frame, for every tile).
#[derive(Default)]
struct Fitter {
    pts: Vec<(f64, f64)>,
    vals: Vec<f32>,
}

impl Fitter {
    /// Value of the track at time `t` from the points in `range` (excluding position `skip`): median,
    /// or the least-squares parabola (line or mean when there are too few points).
    fn fit(
        &mut self,
        ts: &[f32],
        vs: &[f32],
        range: std::ops::Range<usize>,
        skip: Option<usize>,
        t: f32,
        mode: Smoothing,
    ) -> f32 {
        let pts = &mut self.pts;
        pts.clear();
        pts.extend(
            range
                .filter(|&j| Some(j) != skip)
                .map(|j| (f64::from(ts[j]) - f64::from(t), f64::from(vs[j]))),
        );
        if pts.is_empty() {
            return f32::NAN;
        }
        match mode {
            Smoothing::SavitzkyGolay => {
                let degree = if pts.len() >= 5 {
                    2
                } else if pts.len() >= 3 {
                    1
                } else {
                    0
                };
                poly_at_zero(pts, degree) as f32
            }
            _ => {
                self.vals.clear();
                self.vals
                    .extend(pts.iter().map(|p| p.1 as f32).filter(|v| v.is_finite()));
                crate::stats::median_in_place(&mut self.vals)
            }
        }
    }
}

/// Least-squares polynomial of `degree` (0..=2) through `pts` (x centred on the evaluation point),
/// evaluated at x = 0. Falls back to lower degrees when the normal equations are singular.
fn poly_at_zero(pts: &[(f64, f64)], degree: usize) -> f64 {
    let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
    if degree == 0 {
        return mean;
    }
    // Scale x for conditioning.
    let sx = pts
        .iter()
        .map(|p| p.0.abs())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let d = degree + 1;
    let mut a = [[0.0f64; 3]; 3];
    let mut b = [0.0f64; 3];
    for &(x, y) in pts {
        let x = x / sx;
        let pw = [1.0, x, x * x];
        for r in 0..d {
            b[r] += pw[r] * y;
            for c in 0..d {
                a[r][c] += pw[r] * pw[c];
            }
        }
    }
    match solve(&mut a, &mut b, d) {
        Some(c) => c[0],
        None => poly_at_zero(pts, degree - 1),
    }
}

fn solve(a: &mut [[f64; 3]; 3], b: &mut [f64; 3], d: usize) -> Option<[f64; 3]> {
    for col in 0..d {
        let piv = (col..d).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for r in 0..d {
            if r != col {
                let f = a[r][col] / a[col][col];
                for c in col..d {
                    a[r][c] -= f * a[col][c];
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut out = [0.0; 3];
    for r in 0..d {
        out[r] = b[r] / a[r][r];
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(smoothing: Smoothing, noise_weighted: bool) -> TrackParams {
        TrackParams {
            window: 11,
            smoothing,
            noise_weighted,
            min_delta_px: 0.3,
            outlier_kappa: 5.0,
        }
    }

    #[test]
    fn savgol_reproduces_a_parabola_and_median_a_constant() {
        let t: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let y: Vec<f32> = t.iter().map(|&t| 0.01 * t * t - 0.2 * t + 1.0).collect();
        let x = vec![0.5f32; 30];
        let s = vec![0.05f32; 30];
        let p = TrackParams {
            min_delta_px: 2.0,
            ..params(Smoothing::SavitzkyGolay, false)
        };
        let out = plan(&t, &y, &x, &s, &p);
        for (k, d) in out.iter().enumerate() {
            let Decision::Use(v) = d else { panic!("{d:?}") };
            assert!(
                (v.dy - y[k]).abs() < 1e-3 && (v.dx - 0.5).abs() < 1e-5,
                "{k}: {v:?}"
            );
        }
        let out = plan(&t, &x, &x, &s, &params(Smoothing::Median, false));
        assert!(out
            .iter()
            .all(|d| *d == Decision::Use(Shift::new(0.5, 0.5))));
    }

    #[test]
    fn a_drifting_track_is_not_rejected_but_a_jump_is() {
        // Drift of 5 px over the sequence (0.1 px per frame) with small wobble, one bad registration.
        let n = 50;
        let t: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut y: Vec<f32> = t
            .iter()
            .map(|&t| 0.1 * t + 0.05 * (t * 0.7).sin())
            .collect();
        let x: Vec<f32> = t.iter().map(|&t| -0.05 * t).collect();
        y[20] += 3.0;
        let s = vec![0.02f32; n];
        let out = plan(&t, &y, &x, &s, &params(Smoothing::SavitzkyGolay, true));
        for (k, d) in out.iter().enumerate() {
            if k == 20 {
                assert!(
                    matches!(d, Decision::Outlier { deviation, .. } if *deviation > 2.5),
                    "{d:?}"
                );
            } else {
                assert!(matches!(d, Decision::Use(_)), "{k}: {d:?}");
            }
        }
    }

    #[test]
    fn noise_weighting_keeps_precise_and_smooths_noisy_measurements() {
        let n = 40;
        let t: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let truth: Vec<f32> = t.iter().map(|&t| (t * 0.5).sin()).collect();
        // Precise measurements: kept nearly as measured.
        let s = vec![0.01f32; n];
        let out = plan(
            &t,
            &truth,
            &truth,
            &s,
            &params(Smoothing::SavitzkyGolay, true),
        );
        for (k, d) in out.iter().enumerate() {
            let Decision::Use(v) = d else { panic!() };
            assert!((v.dy - truth[k]).abs() < 0.01, "{k}: {v:?} vs {}", truth[k]);
        }
        // A frame without a measurement gets the track.
        let mut s2 = s.clone();
        s2[10] = f32::INFINITY;
        let out = plan(
            &t,
            &truth,
            &truth,
            &s2,
            &params(Smoothing::SavitzkyGolay, true),
        );
        let Decision::Use(v) = out[10] else { panic!() };
        assert!((v.dy - truth[10]).abs() < 0.2, "{v:?} vs {}", truth[10]);
    }

    #[test]
    fn degenerate_inputs() {
        assert!(plan(&[], &[], &[], &[], &params(Smoothing::Median, true)).is_empty());
        let out = plan(
            &[0.0],
            &[1.0],
            &[2.0],
            &[0.1],
            &params(Smoothing::SavitzkyGolay, true),
        );
        assert_eq!(out, vec![Decision::Use(Shift::new(1.0, 2.0))]);
        let out = plan(
            &[0.0, 1.0],
            &[f32::NAN, 1.0],
            &[0.0, 1.0],
            &[0.1, f32::INFINITY],
            &params(Smoothing::None, false),
        );
        assert_eq!(out.len(), 2);
    }
}
