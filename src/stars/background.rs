//! # Background and noise of an image, on a mesh of blocks (step 1 of the star detection)
//!
//! What it does: per block of `background_mesh_px` px, a sigma-clipped median and MAD sigma of a
//! subsample (computed by sorting once, bit-identical to [`stats::sigma_clipped`]); a block lying more
//! than 3 sigma above the least-squares plane through its neighbours (a bright star or galaxy fills it)
//! takes the plane's value; the mesh is interpolated bilinearly between block centres and extrapolated
//! linearly to the edges when it is subtracted from the image, so sky gradients and nebulae do not move
//! the detection threshold.
//!
//! What it does not do: find or measure stars (`detect.rs`, `measurement.rs`), or model the sky beyond
//! the mesh (no higher-order surface, no masking of detected sources).

use ndarray::{Array2, ArrayView2};

use super::resize_buffer;
use crate::stats;

/// Background map and noise of an image.
pub(super) struct Background {
    /// Per-block background, ADU.
    mesh: Array2<f32>,
    /// Row coordinates of the block centres.
    cy: Vec<f32>,
    /// Column coordinates of the block centres.
    cx: Vec<f32>,
    /// Median of the mesh values.
    pub(super) level: f32,
    /// Median of the per-block noise.
    pub(super) noise: f32,
}

/// Background and noise on a mesh of `block` px blocks; `None` when no block has enough finite pixels.
pub(super) fn background_mesh(image: ArrayView2<f32>, block: usize) -> Option<Background> {
    let (rows, cols) = image.dim();
    let block = block.clamp(8, rows.max(cols).max(8));
    let (nby, nbx) = (rows.div_ceil(block), cols.div_ceil(block));
    let mut level = Array2::<f32>::from_elem((nby, nbx), f32::NAN);
    let mut sigma = Array2::<f32>::from_elem((nby, nbx), f32::NAN);
    let mut samples = Vec::with_capacity(block * block);
    for by in 0..nby {
        for bx in 0..nbx {
            let (r0, r1) = (by * block, ((by + 1) * block).min(rows));
            let (c0, c1) = (bx * block, ((bx + 1) * block).min(cols));
            // About 400-1000 samples per block are plenty for a median and a MAD.
            let stride = (((r1 - r0) * (c1 - c0)) as f32 / 400.0)
                .sqrt()
                .floor()
                .max(1.0) as usize;
            samples.clear();
            for r in (r0..r1).step_by(stride) {
                for c in (c0..c1).step_by(stride) {
                    let v = image[[r, c]];
                    if v.is_finite() {
                        samples.push(v);
                    }
                }
            }
            if samples.len() < 16 {
                continue;
            }
            if let Some((median, sd)) = sigma_clipped_sorting(&mut samples, 3.0, 3) {
                level[[by, bx]] = median;
                sigma[[by, bx]] = sd;
            }
        }
    }
    let valid: Vec<f32> = level.iter().copied().filter(|v| v.is_finite()).collect();
    if valid.is_empty() {
        return None;
    }
    let global_level = stats::median(&valid);
    let noise = stats::median(sigma.as_slice().unwrap_or(&[]));
    level.mapv_inplace(|v| if v.is_finite() { v } else { global_level });
    // A block that lies above the plane through its neighbours by more than 3 sigma (a bright star or
    // galaxy fills it) takes the plane's value; blocks on a smooth gradient, corners included, stay.
    if nby * nbx >= 4 {
        let src = level.clone();
        let tolerance = 3.0 * if noise.is_finite() { noise } else { 0.0 };
        for by in 0..nby {
            for bx in 0..nbx {
                let mut pts = Vec::with_capacity(8);
                for y in by.saturating_sub(1)..(by + 2).min(nby) {
                    for x in bx.saturating_sub(1)..(bx + 2).min(nbx) {
                        if (y, x) != (by, bx) {
                            let dy = y as f64 - by as f64;
                            let dx = x as f64 - bx as f64;
                            pts.push((dy, dx, f64::from(src[[y, x]])));
                        }
                    }
                }
                if let Some(plane) = plane_at_origin(&pts) {
                    let v = src[[by, bx]];
                    if f64::from(v) > plane + f64::from(tolerance) {
                        level[[by, bx]] = plane as f32;
                    }
                }
            }
        }
    }
    // Bilinear between block centres, extrapolated linearly beyond the outer centres (half a block at
    // most), so that a sky gradient is followed up to the image edge.
    let centre = |i: usize, len: usize| -> f32 {
        let lo = i * block;
        let hi = ((i + 1) * block).min(len);
        0.5 * (lo + hi) as f32 - 0.5
    };
    let cy: Vec<f32> = (0..nby).map(|i| centre(i, rows)).collect();
    let cx: Vec<f32> = (0..nbx).map(|i| centre(i, cols)).collect();
    Some(Background {
        mesh: level,
        cy,
        cx,
        level: global_level,
        noise,
    })
}

/// The median and sigma of [`stats::sigma_clipped`]`(samples, kappa, max_rounds)` (bit-identical),
/// computed by sorting `samples` (finite values) once: each round keeps a contiguous run of the sorted
/// values, whose median is its middle and whose MAD a merge of the deviations on both sides of the
/// median, so no round needs a selection. About twice as fast for the few hundred samples of a block.
fn sigma_clipped_sorting(samples: &mut [f32], kappa: f32, max_rounds: usize) -> Option<(f32, f32)> {
    samples.sort_unstable_by(f32::total_cmp);
    let (mut lo, mut hi) = (0, samples.len());
    let (mut med, mut sigma) = (f32::NAN, f32::NAN);
    for _ in 0..=max_rounds {
        let kept = &samples[lo..hi];
        med = sorted_median(kept);
        sigma = sorted_mad(kept, med) * stats::MAD_TO_SIGMA;
        if sigma <= 0.0 {
            break;
        }
        let limit = kappa * sigma;
        // |v - med| is monotone on either side of the median, so the kept values stay contiguous.
        let new_lo = lo + kept.partition_point(|&v| v <= med && !((v - med).abs() <= limit));
        let new_hi = lo + kept.partition_point(|&v| v < med || (v - med).abs() <= limit);
        if (new_lo, new_hi) == (lo, hi) || new_lo >= new_hi {
            (lo, hi) = (new_lo, new_hi.max(new_lo));
            break;
        }
        (lo, hi) = (new_lo, new_hi);
    }
    (lo < hi).then_some((med, sigma))
}

/// Median of sorted values, as [`stats::median_in_place`] computes it; NaN when empty.
fn sorted_median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    match n {
        0 => f32::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// Median of `|v - med|` over sorted values, as [`stats::median_in_place`] computes it on the
/// deviations: the deviations below and above `med` are each sorted, so merging them finds the middle.
fn sorted_mad(sorted: &[f32], med: f32) -> f32 {
    let n = sorted.len();
    if n == 0 {
        return f32::NAN;
    }
    let split = sorted.partition_point(|&v| v < med);
    let (mut left, mut right) = (split, split); // next candidates: sorted[left - 1], sorted[right]
    let mut next = || {
        let dl = (left > 0).then(|| (sorted[left - 1] - med).abs());
        let dr = (right < n).then(|| (sorted[right] - med).abs());
        match (dl, dr) {
            (Some(a), Some(b)) if b.total_cmp(&a).is_lt() => {
                right += 1;
                b
            }
            (Some(a), _) => {
                left -= 1;
                a
            }
            (None, Some(b)) => {
                right += 1;
                b
            }
            (None, None) => f32::NAN,
        }
    };
    let mut previous = f32::NAN;
    for _ in 0..n / 2 {
        previous = next();
    }
    let upper = next();
    if n % 2 == 1 {
        upper
    } else {
        0.5 * (previous + upper)
    }
}

/// Index pair and fraction for linear interpolation in `coords` (extrapolating beyond the ends).
fn lerp_weights(coords: &[f32], p: f32) -> (usize, usize, f32) {
    let n = coords.len();
    if n == 1 {
        return (0, 0, 0.0);
    }
    let i = coords.partition_point(|&c| c <= p).clamp(1, n - 1) - 1;
    let t = (p - coords[i]) / (coords[i + 1] - coords[i]);
    (i, i + 1, t)
}
impl Background {
    /// Writes `image - background` (NaN stays NaN) into `work` (row-major, `rows * cols`) and returns
    /// the largest pixel of `image` (NaN ignored). `lines` is scratch: the mesh rows interpolated along
    /// x, so that a row of the background is one blend of two of them.
    pub(super) fn subtract_into(
        &self,
        image: ArrayView2<f32>,
        work: &mut Vec<f32>,
        lines: &mut Vec<f32>,
    ) -> f32 {
        let (rows, cols) = image.dim();
        let nby = self.cy.len();
        lines.clear();
        lines.resize(nby * cols, 0.0);
        let xw: Vec<(usize, usize, f32)> = (0..cols)
            .map(|c| lerp_weights(&self.cx, c as f32))
            .collect();
        for (by, line) in lines.chunks_exact_mut(cols).enumerate() {
            for (l, &(x0, x1, tx)) in line.iter_mut().zip(&xw) {
                *l = self.mesh[[by, x0]] * (1.0 - tx) + self.mesh[[by, x1]] * tx;
            }
        }
        resize_buffer(work, rows * cols, 0.0);
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut gathered = Vec::new(); // a row of a view that is not in standard layout
        for (r, (row, out)) in image
            .rows()
            .into_iter()
            .zip(work.chunks_exact_mut(cols))
            .enumerate()
        {
            let src: &[f32] = match row.to_slice() {
                Some(s) => s,
                None => {
                    gathered.clear();
                    gathered.extend(row.iter().copied());
                    &gathered
                }
            };
            let (y0, y1, ty) = lerp_weights(&self.cy, r as f32);
            let (l0, l1) = (&lines[y0 * cols..][..cols], &lines[y1 * cols..][..cols]);
            let (w0, w1) = (1.0 - ty, ty);
            for (((o, &v), &a), &b) in out.iter_mut().zip(src).zip(l0).zip(l1) {
                *o = v - (a * w0 + b * w1);
            }
            // Eight independent running maxima (`>` skips NaN), so the loop vectorises.
            let chunks = src.chunks_exact(8);
            for &v in chunks.remainder() {
                if v > lanes[0] {
                    lanes[0] = v;
                }
            }
            for chunk in chunks {
                for (m, &v) in lanes.iter_mut().zip(chunk) {
                    if v > *m {
                        *m = v;
                    }
                }
            }
        }
        lanes
            .into_iter()
            .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
    }
}
/// Value at (0, 0) of the least-squares plane `a + b dy + c dx` through `pts`; the mean when the
/// points do not determine a plane (e.g. all in one row).
fn plane_at_origin(pts: &[(f64, f64, f64)]) -> Option<f64> {
    if pts.is_empty() {
        return None;
    }
    let n = pts.len() as f64;
    let (mut sy, mut sx, mut sv) = (0.0, 0.0, 0.0);
    for &(y, x, v) in pts {
        sy += y;
        sx += x;
        sv += v;
    }
    let (my, mx, mv) = (sy / n, sx / n, sv / n);
    let (mut syy, mut sxx, mut sxy, mut syv, mut sxv) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(y, x, v) in pts {
        let (y, x, v) = (y - my, x - mx, v - mv);
        syy += y * y;
        sxx += x * x;
        sxy += x * y;
        syv += y * v;
        sxv += x * v;
    }
    let det = syy * sxx - sxy * sxy;
    if det.abs() < 1e-9 {
        // Degenerate (collinear) neighbours: fit along the one axis that varies, if any.
        let slope_y = if syy > 1e-9 { syv / syy } else { 0.0 };
        let slope_x = if sxx > 1e-9 { sxv / sxx } else { 0.0 };
        if syy > 1e-9 && sxx > 1e-9 {
            return Some(mv);
        }
        return Some(mv - slope_y * my - slope_x * mx);
    }
    let b = (syv * sxx - sxv * sxy) / det;
    let c = (sxv * syy - syv * sxy) / det;
    Some(mv - b * my - c * mx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::StandardNormal;

    #[test]
    fn sorting_clip_equals_the_selecting_one_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(21);
        for n in [1usize, 2, 3, 16, 17, 400, 401, 484, 1000] {
            for outliers in [0usize, 3, 40] {
                let mut v: Vec<f32> = (0..n)
                    .map(|_| (100.0 + 7.0 * rng.sample::<f32, _>(StandardNormal)).round())
                    .collect();
                for x in v.iter_mut().take(outliers.min(n)) {
                    *x += rng.random_range(50.0..5000.0f32);
                }
                let reference = stats::sigma_clipped(&v, 3.0, 3).map(|st| (st.median, st.sigma));
                let fast = sigma_clipped_sorting(&mut v.clone(), 3.0, 3);
                assert_eq!(fast, reference, "n {n}, outliers {outliers}");
            }
        }
        let mut flat = vec![5.0f32; 20];
        assert_eq!(sigma_clipped_sorting(&mut flat, 3.0, 3), Some((5.0, 0.0)));
        assert_eq!(sigma_clipped_sorting(&mut [], 3.0, 3), None);
    }
}
