//! # Finding star candidates (steps 2 and 3 of the star detection) and their cells
//!
//! What it does, on the background-subtracted image: replaces single-pixel spikes (hot pixels, cosmic
//! rays: the 4-neighbours carry < 15 % of the peak) by their neighbours' median; smooths with a separable
//! Gaussian; lists the strict 5 x 5 local maxima above the threshold; paints each candidate's Voronoi
//! cell (the pixels nearer to it than to any other candidate, within [`OWNER_RADIUS_PX`]) so that each
//! star is measured on its own pixels. Each full-image step is one pass over row slices that skips sky
//! pixels sixteen at a time.
//!
//! What it does not do: choose the threshold (the detector in `mod.rs` measures the noise of the
//! smoothed image), or measure a candidate (`measurement.rs`).

use super::resize_buffer;
use crate::stats;

/// True when `v` is a single-pixel spike: its 4-neighbours carry less than 15 % of it.
pub(super) fn is_spike(v: f32, neighbours: [f32; 4]) -> bool {
    let (mut sum, mut n) = (0.0f32, 0usize);
    for x in neighbours {
        if x.is_finite() {
            sum += x;
            n += 1;
        }
    }
    n > 0 && v > 0.0 && sum / (n as f32) < 0.15 * v
}

/// Replaces single-pixel spikes above `min_excess` (hot pixels, cosmic ray hits) in the
/// background-subtracted images by the median of their 8 neighbours, so that they neither hide a star
/// nearby from detection nor distort its moments.
pub(super) fn remove_spikes(work: &mut [f32], rows: usize, cols: usize, min_excess: f32) {
    let mut spikes = Vec::new();
    if cols >= 3 {
        for r in 1..rows.saturating_sub(1) {
            let (above, rest) = work[(r - 1) * cols..].split_at(cols);
            let (row, below) = rest.split_at(cols);
            // Most pixels are sky: skip runs of 16 without any pixel above `min_excess` (a
            // branch-free test that vectorises).
            for (k, chunk) in row[1..cols - 1].chunks(16).enumerate() {
                if !chunk.iter().fold(false, |any, &v| any | (v > min_excess)) {
                    continue;
                }
                for (j, &v) in chunk.iter().enumerate() {
                    let c = 1 + 16 * k + j;
                    if v > min_excess && is_spike(v, [above[c], below[c], row[c - 1], row[c + 1]]) {
                        spikes.push(r * cols + c);
                    }
                }
            }
        }
    }
    let mut around = Vec::with_capacity(8);
    for &i in &spikes {
        around.clear();
        for centre in [i - cols, i, i + cols] {
            for (j, &v) in work[centre - 1..=centre + 1].iter().enumerate() {
                if centre - 1 + j != i && v.is_finite() {
                    around.push(v);
                }
            }
        }
        work[i] = stats::median_in_place(&mut around);
    }
}
/// Separable Gaussian smoothing of `work` (`rows x cols`, row-major) into `out`, with clamped edges;
/// NaN counts as 0 (the background). Returns `sum(w_i^2)` of the 1-D kernel (white noise of sigma `s`
/// becomes `s * sum(w_i^2)`). Rows are smoothed horizontally into a ring of `2 radius + 1` rows
/// (`ring`, `padded`: scratch) that the vertical pass combines, so no image-sized temporary is needed.
pub(super) fn smooth_into(
    work: &[f32],
    rows: usize,
    cols: usize,
    sigma: f32,
    out: &mut Vec<f32>,
    ring: &mut Vec<f32>,
    padded: &mut Vec<f32>,
) -> f32 {
    let clean = |v: f32| if v.is_finite() { v } else { 0.0 };
    resize_buffer(out, rows * cols, 0.0);
    if !(sigma > 0.05) || rows == 0 || cols == 0 {
        for (o, &v) in out.iter_mut().zip(work) {
            *o = clean(v);
        }
        return 1.0;
    }
    let radius = (3.0 * sigma).ceil() as usize;
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-0.5 * d * d / (sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let k2: f32 = kernel.iter().map(|k| k * k).sum();
    let taps = 2 * radius + 1;
    resize_buffer(ring, taps * cols, 0.0);
    resize_buffer(padded, cols + 2 * radius, 0.0);
    let mut next = 0; // next row to smooth horizontally into the ring
    for (r, out_row) in out.chunks_exact_mut(cols).enumerate() {
        while next <= (r + radius).min(rows - 1) {
            // Horizontal pass of row `next`: padded by `radius` replicated edge pixels; the kernel is
            // symmetric, so each pair of taps costs one multiplication.
            let src = &work[next * cols..][..cols];
            padded[..radius].fill(clean(src[0]));
            padded[radius + cols..].fill(clean(src[cols - 1]));
            for (p, &v) in padded[radius..radius + cols].iter_mut().zip(src) {
                *p = clean(v);
            }
            let slot = &mut ring[(next % taps) * cols..][..cols];
            let k_mid = kernel[radius];
            for (o, &p) in slot.iter_mut().zip(&padded[radius..radius + cols]) {
                *o = k_mid * p;
            }
            for (i, &k) in kernel[..radius].iter().enumerate() {
                let left = &padded[i..i + cols];
                let right = &padded[2 * radius - i..2 * radius - i + cols];
                for ((o, &a), &b) in slot.iter_mut().zip(left).zip(right) {
                    *o += k * (a + b);
                }
            }
            next += 1;
        }
        // Vertical pass: rows r - radius ..= r + radius (clamped) of the ring, paired by symmetry.
        let ring_row = |d: isize| {
            let rr = (r as isize + d).clamp(0, rows as isize - 1) as usize;
            &ring[(rr % taps) * cols..][..cols]
        };
        let k_mid = kernel[radius];
        for (o, &v) in out_row.iter_mut().zip(ring_row(0)) {
            *o = k_mid * v;
        }
        for (i, &k) in kernel[..radius].iter().enumerate() {
            let d = (radius - i) as isize;
            for ((o, &a), &b) in out_row.iter_mut().zip(ring_row(-d)).zip(ring_row(d)) {
                *o += k * (a + b);
            }
        }
    }
    k2
}
/// Candidates: strict 5 x 5 local maxima of `smoothed` above `threshold` (ties go to the first in scan
/// order) at least `border` (>= 2) px from the edges, where `work` is finite; `(value, row, col)`.
pub(super) fn find_candidates(
    smoothed: &[f32],
    work: &[f32],
    rows: usize,
    cols: usize,
    border: usize,
    threshold: f32,
) -> Vec<(f32, usize, usize)> {
    let mut candidates = Vec::new();
    for r in border..rows - border {
        let row = &smoothed[r * cols..][..cols];
        for (k, chunk) in row[border..cols - border].chunks(16).enumerate() {
            // Most pixels are sky: skip runs of 16 below the threshold with one branch-free test.
            if !chunk.iter().fold(false, |any, &v| any | (v > threshold)) {
                continue;
            }
            for (j, &v) in chunk.iter().enumerate() {
                let c = border + 16 * k + j;
                if !(v > threshold) || !work[r * cols + c].is_finite() {
                    continue;
                }
                // Most pixels above the threshold lie on the flank of a star: the 4-neighbours
                // reject them cheaply (earlier pixels win ties, as below).
                let (up, down) = (smoothed[(r - 1) * cols + c], smoothed[(r + 1) * cols + c]);
                if row[c - 1] >= v || up >= v || row[c + 1] > v || down > v {
                    continue;
                }
                // The centre compares neither greater nor "earlier and equal" to itself.
                let is_max = (r - 2..=r + 2).all(|rr| {
                    smoothed[rr * cols + c - 2..rr * cols + c + 3]
                        .iter()
                        .enumerate()
                        .all(|(k, &o)| !(o > v || ((rr, k) < (r, 2) && o == v)))
                });
                if is_max {
                    candidates.push((v, r, c));
                }
            }
        }
    }
    candidates
}
/// Owner value of a pixel that belongs to no candidate.
pub(super) const NO_OWNER: u32 = u32::MAX;
/// Pixels farther than this from every candidate belong to none, px.
const OWNER_RADIUS_PX: usize = 12;

/// Paints into `owners` (`rows x cols`, row-major, all [`NO_OWNER`] on entry) which candidate each
/// pixel belongs to: the nearest one within [`OWNER_RADIUS_PX`] (Voronoi cells of the candidates; ties
/// go to the brighter, earlier one), or [`NO_OWNER`]. Measuring a star on its own cell keeps neighbours
/// from dragging its centroid or widening its profile. [`clear_owners`] restores the entry state, so
/// the buffer is reused without an image-sized reset.
pub(super) fn paint_owners(
    owners: &mut [u32],
    rows: usize,
    cols: usize,
    candidates: &[(f32, usize, usize)],
) {
    let reach = OWNER_RADIUS_PX;
    let reach2 = (reach * reach) as i64;
    for (k, &(_, r, c)) in candidates.iter().enumerate() {
        for rr in r.saturating_sub(reach)..(r + reach + 1).min(rows) {
            let dy = rr as i64 - r as i64;
            let row = &mut owners[rr * cols..][..cols];
            for (cc, o) in row
                .iter_mut()
                .enumerate()
                .take((c + reach + 1).min(cols))
                .skip(c.saturating_sub(reach))
            {
                let dx = cc as i64 - c as i64;
                let d2 = dy * dy + dx * dx;
                if d2 > reach2 {
                    continue;
                }
                let take = *o == NO_OWNER || {
                    let (_, orow, ocol) = candidates[*o as usize];
                    let (oy, ox) = (rr as i64 - orow as i64, cc as i64 - ocol as i64);
                    d2 < oy * oy + ox * ox
                };
                if take {
                    *o = k as u32;
                }
            }
        }
    }
}

/// Resets the pixels [`paint_owners`] may have painted for `candidates` to [`NO_OWNER`].
pub(super) fn clear_owners(
    owners: &mut [u32],
    rows: usize,
    cols: usize,
    candidates: &[(f32, usize, usize)],
) {
    let reach = OWNER_RADIUS_PX;
    for &(_, r, c) in candidates {
        for rr in r.saturating_sub(reach)..(r + reach + 1).min(rows) {
            owners[rr * cols + c.saturating_sub(reach)..rr * cols + (c + reach + 1).min(cols)]
                .fill(NO_OWNER);
        }
    }
}
