//! Isolated single-pixel spikes (hot pixels, cosmic-ray hits) replaced by the median of their
//! neighbours before registration, so that registration does not lock onto detector defects; in colour
//! mode without taking undersampled star cores for spikes ([`despike_plane`]).
//! What it does not: temporal rejection (the combination's sigma clipping does that) or any resampling.

use ndarray::{Array2, ArrayView2};

/// A pixel this many noise sigmas above the background can be a spike.
const SPIKE_SIGMA: f32 = 6.0;
/// A spike exceeds its brightest neighbour by more than this fraction of its own height above the
/// background (a sampled star with FWHM >= 1.9 px cannot: its brightest neighbour has >= 45 % of the peak).
const SPIKE_FRACTION: f32 = 0.55;

/// Sky samples for the spike threshold: a few hundred give the noise to about 5 %, i.e. the 6-sigma
/// threshold to 0.3 sigma, at a fifth of the cost of a thousand (this runs once per frame and tile).
const DESPIKE_SAMPLES: usize = 256;

/// Replace isolated single-pixel spikes (hot pixels, cosmic-ray hits) by the median of their eight
/// neighbours. Returns `None` when there is none (or the noise cannot be estimated). Registration would
/// otherwise lock onto hot pixels, which are fixed to the detector and move against the sky.
pub fn despike(cut: ArrayView2<f32>) -> Option<Array2<f32>> {
    despike_unless(cut, |_, _| false)
}

/// Another colour's sample this many noise sigmas above its background next to a spike candidate
/// marks the candidate as light from the sky. A hot pixel survives this test only when one of the 27
/// samples around it (3 planes x 3x3 cells) is a 4-sigma noise peak: about 0.1 % of them.
const CROSS_COLOUR_SIGMA: f32 = 4.0;

/// [`despike`] for colour plane `p` of a one-shot-colour frame split into cell space (`planes`: the
/// frame's planes, e.g. R, G1, G2, B, all of one shape), keeping undersampled star cores.
///
/// At plane resolution a star of an OSC camera is often under one cell wide, so within its own plane a
/// core looks exactly like a hot pixel. The two differ across colours: a hot pixel (or a cosmic-ray
/// hit) is one sensor pixel, so the other colours of its cell and of the cells around it show only sky;
/// a star lights the neighbouring pixels of every colour. A candidate is therefore replaced only when
/// no other plane has a sample above `background + 4 sigma` within one cell of it. Hot pixels that
/// share a cell with real signal are left to the temporal rejection (they stay on one sensor pixel while
/// the sky moves). With one plane this is [`despike`].
pub fn despike_plane(planes: &[ArrayView2<f32>], p: usize) -> Option<Array2<f32>> {
    let own = *planes.get(p)?;
    let mut others: Option<Vec<(ArrayView2<f32>, f32)>> = None;
    despike_unless(own, |r, c| {
        let others = others.get_or_insert_with(|| {
            planes
                .iter()
                .enumerate()
                .filter(|&(q, v)| q != p && v.dim() == own.dim())
                .filter_map(|(_, v)| {
                    let s = crate::stats::background_and_noise(*v, DESPIKE_SAMPLES)?;
                    (s.sigma > 0.0).then_some((*v, s.median + CROSS_COLOUR_SIGMA * s.sigma))
                })
                .collect()
        });
        let (rows, cols) = own.dim();
        others.iter().any(|(v, threshold)| {
            (r.saturating_sub(1)..(r + 2).min(rows)).any(|rr| {
                (c.saturating_sub(1)..(c + 2).min(cols)).any(|cc| v[[rr, cc]] > *threshold)
            })
        })
    })
}

/// [`despike`] that keeps a candidate at `(row, col)` when `is_signal(row, col)` says it is light.
fn despike_unless(
    cut: ArrayView2<f32>,
    mut is_signal: impl FnMut(usize, usize) -> bool,
) -> Option<Array2<f32>> {
    let stats = crate::stats::background_and_noise(cut, DESPIKE_SAMPLES)?;
    let (bg, sigma) = (stats.median, stats.sigma);
    if !(sigma > 0.0) {
        return None;
    }
    let (rows, cols) = cut.dim();
    let threshold = bg + SPIKE_SIGMA * sigma;
    let mut spikes = Vec::new();
    for r in 1..rows.saturating_sub(1) {
        for c in 1..cols.saturating_sub(1) {
            let v = cut[[r, c]];
            if !(v > threshold) {
                continue;
            }
            let mut max_n = f32::NEG_INFINITY;
            for (dr, dc) in NEIGHBOURS {
                let u = cut[[(r as i64 + dr) as usize, (c as i64 + dc) as usize]];
                if u.is_finite() {
                    max_n = max_n.max(u);
                }
            }
            if max_n.is_finite()
                && v - max_n > SPIKE_FRACTION * (v - bg)
                && v - max_n > SPIKE_SIGMA * sigma
                && !is_signal(r, c)
            {
                spikes.push((r, c));
            }
        }
    }
    if spikes.is_empty() {
        return None;
    }
    let mut out = cut.to_owned();
    let mut nb = Vec::with_capacity(8);
    for (r, c) in spikes {
        nb.clear();
        for (dr, dc) in NEIGHBOURS {
            let u = cut[[(r as i64 + dr) as usize, (c as i64 + dc) as usize]];
            if u.is_finite() {
                nb.push(u);
            }
        }
        out[[r, c]] = crate::stats::median_in_place(&mut nb);
    }
    Some(out)
}

const NEIGHBOURS: [(i64, i64); 8] = [
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];
