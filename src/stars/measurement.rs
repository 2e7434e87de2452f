//! # Measuring the star candidates (steps 4 and 5 of the star detection)
//!
//! What it does, per candidate on its own cell: the brightest raw pixel near the smoothed maximum, the
//! saturation flag, the spike test, the adaptive moments (centroid, ellipticity, a first FWHM), for stars
//! of at least [`FIT_MIN_PEAK_SIGMA`] sigma the radial Moffat fit (kept when it agrees with the moments
//! within a factor of two), the `min_fwhm_px` cut and the aperture flux; then drops duplicates (two
//! candidates converging on one star) and flags blends.
//!
//! What it does not do: the numerics of the moments and of the fit (`psf.rs`), find candidates
//! (`detect.rs`), or summarise an image (`mod.rs`).

use ndarray::ArrayView2;

use super::detect::{is_spike, NO_OWNER};
use super::psf::{adaptive_moments, fit_moffat, window_around};
use super::{DetectOptions, Star};

/// Stars with a peak of at least this many noise sigmas get the Moffat fit; fainter ones keep the
/// adaptive-moments FWHM (their fit would be noise-dominated anyway).
const FIT_MIN_PEAK_SIGMA: f32 = 8.0;

/// Measures each candidate (see the `stars` module docs, step 4): brightest raw pixel, spike test, adaptive
/// moments, Moffat fit of the radial profile, aperture flux. Candidates that fail are left out.
pub(super) fn measure_candidates(
    image: ArrayView2<f32>,
    work: ArrayView2<f32>,
    owners: ArrayView2<u32>,
    candidates: &[(f32, usize, usize)],
    options: &DetectOptions,
    image_max: f32,
    noise: f32,
) -> Vec<Star> {
    let (rows, cols) = work.dim();
    let saturation = options.saturation_adu.unwrap_or(image_max);
    let explicit_saturation = options.saturation_adu.is_some();
    let mut stars = Vec::with_capacity(candidates.len());
    for (k, &(_, r, c)) in candidates.iter().enumerate() {
        let me = k as u32;
        let mine = |rr: usize, cc: usize| {
            let o = owners[[rr, cc]];
            o == me || o == NO_OWNER
        };
        // Brightest raw pixel of the 3 x 3 around the smoothed maximum; NaN in the core: skip.
        let (mut pr, mut pc, mut peak) = (r, c, f32::NEG_INFINITY);
        let mut nan_core = false;
        let mut at_saturation = 0;
        for rr in r - 1..=r + 1 {
            for cc in c - 1..=c + 1 {
                let v = work[[rr, cc]];
                if !v.is_finite() {
                    nan_core = true;
                } else if v > peak {
                    peak = v;
                    pr = rr;
                    pc = cc;
                }
                if image[[rr, cc]] >= saturation * 0.999 {
                    at_saturation += 1;
                }
            }
        }
        if nan_core || !(peak > 0.0) {
            continue;
        }
        let saturated = if explicit_saturation {
            at_saturation >= 1
        } else {
            at_saturation >= 2
        };
        // Single-pixel spike: the 4-neighbours carry almost nothing of the peak.
        if !saturated && pr > 0 && pc > 0 && pr + 1 < rows && pc + 1 < cols {
            let n4 = [
                work[[pr - 1, pc]],
                work[[pr + 1, pc]],
                work[[pr, pc - 1]],
                work[[pr, pc + 1]],
            ];
            if is_spike(peak, n4) {
                continue;
            }
        }
        let Some(mom) = adaptive_moments(work, pr as f32, pc as f32, owners, me) else {
            continue;
        };
        if (mom.y - pr as f32).abs() > 2.5 || (mom.x - pc as f32).abs() > 2.5 {
            continue;
        }
        let (cyy, cxy, cxx) = mom.cov;
        let tr = cyy + cxx;
        let disc = ((cyy - cxx) * (cyy - cxx) + 4.0 * cxy * cxy).sqrt();
        let (l1, l2) = (0.5 * (tr + disc), (0.5 * (tr - disc)).max(0.0));
        let ellipticity = if l1 > 0.0 {
            1.0 - (l2 / l1).sqrt()
        } else {
            0.0
        };
        let fwhm_moments = 2.354_82 * (0.5 * tr).sqrt();
        // Radial profile in 0.25 px bins within 2 FWHM + 2 px.
        let radius = (2.0 * fwhm_moments + 2.0).clamp(4.0, 24.0);
        let mut fwhm = fwhm_moments;
        let mut offset = 0.0f32;
        if !saturated && peak >= FIT_MIN_PEAK_SIGMA * noise {
            let nb = (radius / 0.25).ceil() as usize + 1;
            let mut acc = vec![(0.0f64, 0.0f64, 0.0f64); nb];
            let (r0, r1, c0, c1) = window_around(mom.y, mom.x, radius, rows, cols);
            for rr in r0..r1 {
                for cc in c0..c1 {
                    let v = work[[rr, cc]];
                    if !v.is_finite() {
                        continue;
                    }
                    let (dy, dx) = (rr as f32 - mom.y, cc as f32 - mom.x);
                    let d2 = dy * dy + dx * dx;
                    if d2 > radius * radius || !mine(rr, cc) {
                        continue;
                    }
                    let d = d2.sqrt();
                    let b = &mut acc[(d / 0.25) as usize];
                    b.0 += f64::from(d);
                    b.1 += f64::from(v);
                    b.2 += 1.0;
                }
            }
            let bins: Vec<(f64, f64, f64)> = acc
                .into_iter()
                .filter(|b| b.2 > 0.0)
                .map(|b| (b.0 / b.2, b.1 / b.2, b.2))
                .collect();
            if let Some((f, b)) = fit_moffat(&bins, f64::from(peak), f64::from(fwhm_moments)) {
                // A fit far from the moments' size means a noisy or odd profile: trust the moments.
                if f > 0.5 * fwhm_moments && f < 2.0 * fwhm_moments {
                    fwhm = f;
                    offset = b;
                }
            }
        }
        if !(fwhm >= options.min_fwhm_px) {
            continue;
        }
        let ap = (2.0 * fwhm).clamp(3.0, 24.0);
        let mut flux = 0.0f64;
        let (r0, r1, c0, c1) = window_around(mom.y, mom.x, ap, rows, cols);
        for rr in r0..r1 {
            for cc in c0..c1 {
                let v = work[[rr, cc]];
                let (dy, dx) = (rr as f32 - mom.y, cc as f32 - mom.x);
                let d2 = dy * dy + dx * dx;
                if v.is_finite() && d2 <= ap * ap && mine(rr, cc) {
                    flux += f64::from(v - offset);
                }
            }
        }
        stars.push(Star {
            x: mom.x,
            y: mom.y,
            flux: flux as f32,
            peak: peak - offset,
            fwhm,
            ellipticity,
            saturated,
            blended: false,
        });
    }
    stars
}

/// Drops duplicates (two candidates converging on one star) and flags blends, using a sweep over
/// the stars sorted by row.
pub(super) fn flag_blends(stars: &mut Vec<Star>) {
    let n = stars.len();
    if n < 2 {
        return;
    }
    let max_fwhm = stars.iter().map(|s| s.fwhm).fold(0.0f32, f32::max);
    let reach = 2.0 * max_fwhm + 1.0;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| stars[a].y.total_cmp(&stars[b].y).then(a.cmp(&b)));
    let mut duplicate = vec![false; n];
    let mut blended = vec![false; n];
    for (k, &i) in order.iter().enumerate() {
        for &j in &order[k + 1..] {
            if stars[j].y - stars[i].y > reach {
                break;
            }
            let (a, b) = (&stars[i], &stars[j]);
            let d = (a.y - b.y).hypot(a.x - b.x);
            if d < 1.5 {
                // Keep the brighter (lower index: candidates are sorted brightest first).
                duplicate[i.max(j)] = true;
                continue;
            }
            let limit = 2.0 * a.fwhm.max(b.fwhm) + 1.0;
            if d < limit {
                if b.peak > 0.1 * a.peak {
                    blended[i] = true;
                }
                if a.peak > 0.1 * b.peak {
                    blended[j] = true;
                }
            }
        }
    }
    let all = std::mem::take(stars);
    *stars = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !duplicate[*i])
        .map(|(i, mut star)| {
            star.blended = blended[i];
            star
        })
        .collect();
}
