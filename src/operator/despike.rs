//! Isolated single-pixel spikes (hot pixels, cosmic-ray hits) replaced by the median of their
//! neighbours before registration, so that registration does not lock onto detector defects, without
//! taking undersampled star cores for spikes: a star is in every frame of the stack
//! ([`despike_stack`]) and lights the other colours ([`despike_plane`]).
//! What it does not: temporal rejection (the combination's sigma clipping does that) or any resampling.

use ndarray::{Array2, ArrayView2, ArrayView3, Axis};

use super::combine;

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

/// [`despike`] for the frames of a tile's stack (`cutouts`: `(frames, rows, cols)`; `slots`: the
/// frames to clean, in time order), keeping undersampled star cores. Returns one entry per frame of
/// `cutouts` (`None`: unchanged, or not in `slots`).
///
/// A star of 1.2-1.6 px FWHM has a core pixel that exceeds its neighbours like a spike, so a width
/// test alone takes it for one (on a simulated sequence at 1.2 px the mono stack kept 68 % of the stars'
/// flux). A star differs by being there in every frame, at nearly the same place of the cut-outs (the
/// cut removes the whole-pixel part of the global motion); a hot pixel moves with the sensor against
/// the sky, a cosmic ray is in one frame only. A candidate is therefore replaced only when the median
/// of the frames (at most `MEDIAN_FRAMES`, evenly spaced in time) shows no light within one pixel of
/// it (nothing above `background + 4 sigma` of that median image). With one frame nothing can be told apart and nothing
/// is replaced; hot pixels that do not move against the sky are left to calibration.
pub fn despike_stack(cutouts: ArrayView3<f32>, slots: &[usize]) -> Vec<Option<Array2<f32>>> {
    let (n, rows, cols) = cutouts.dim();
    let mut out: Vec<Option<Array2<f32>>> = vec![None; n];
    let slots: Vec<usize> = slots.iter().copied().filter(|&s| s < n).collect();
    let np = rows * cols;
    let (Some(flat), true) = (cutouts.as_slice(), slots.len() > 1) else {
        return out;
    };
    let (median, _) = combine::median_and_scale(flat, np, &combine::median_subset(&slots));
    let Ok(median) = Array2::from_shape_vec((rows, cols), median) else {
        return out;
    };
    let Some(stats) = crate::stats::background_and_noise(median.view(), DESPIKE_SAMPLES) else {
        return out;
    };
    let lit_at = stats.median + CROSS_COLOUR_SIGMA * stats.sigma;
    let lit = |r: usize, c: usize| {
        (r.saturating_sub(1)..(r + 2).min(rows))
            .any(|rr| (c.saturating_sub(1)..(c + 2).min(cols)).any(|cc| median[[rr, cc]] > lit_at))
    };
    for s in slots {
        out[s] = despike_unless(cutouts.index_axis(Axis(0), s), lit);
    }
    out
}

/// [`despike`] of one frame's cut-out that keeps a candidate where `stacked`, an image of the stack
/// the frame joins (a live tile's reference), shows light within one pixel (above its background + 4
/// sigma): the rule of [`despike_stack`] for a caller that holds the stack's image instead of its
/// frames. `stacked` pixel `(r, c)` lies at cut-out pixel `(r + origin.0, c + origin.1)`; where the
/// cut-out reaches beyond it, candidates are replaced as by [`despike`].
pub fn despike_against(
    cut: ArrayView2<f32>,
    stacked: ArrayView2<f32>,
    origin: (isize, isize),
) -> Option<Array2<f32>> {
    let Some(stats) = crate::stats::background_and_noise(stacked, DESPIKE_SAMPLES) else {
        return despike(cut);
    };
    let lit_at = stats.median + CROSS_COLOUR_SIGMA * stats.sigma;
    let (rows, cols) = (stacked.dim().0 as isize, stacked.dim().1 as isize);
    despike_unless(cut, |r, c| {
        let (y, x) = (r as isize - origin.0, c as isize - origin.1);
        (y - 1..=y + 1).any(|yy| {
            (x - 1..=x + 1).any(|xx| {
                (0..rows).contains(&yy)
                    && (0..cols).contains(&xx)
                    && stacked[[yy as usize, xx as usize]] > lit_at
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// Noise-like sky (deterministic), an undersampled star at the same place in every frame, a hot
    /// pixel that moves against the sky (fixed on the sensor, the sky dithered) and a cosmic ray in one
    /// frame.
    struct Scene {
        cut: Array3<f32>,
        star: (usize, usize),
        hot: Vec<(usize, usize)>,
        ray: (usize, usize),
    }

    fn stack() -> Scene {
        let (n, rows, cols) = (8, 24, 24);
        let star = (12, 12);
        let hot: Vec<(usize, usize)> = (0..n).map(|f| (4 + f, 5 + (f % 3))).collect();
        let ray = (18, 6);
        let mut cut = Array3::from_shape_fn((n, rows, cols), |(f, r, c)| {
            100.0 + ((r * 7 + c * 13 + f * 5) % 9) as f32 - 4.0
        });
        for f in 0..n {
            // 1.2 px FWHM sampled on the pixel grid: the core pixel holds most of the light.
            cut[[f, star.0, star.1]] += 400.0;
            for (dr, dc) in NEIGHBOURS {
                let w = if dr == 0 || dc == 0 { 60.0 } else { 15.0 };
                let (r, c) = ((star.0 as i64 + dr) as usize, (star.1 as i64 + dc) as usize);
                cut[[f, r, c]] += w;
            }
            cut[[f, hot[f].0, hot[f].1]] += 500.0;
        }
        cut[[3, ray.0, ray.1]] += 800.0;
        Scene {
            cut,
            star,
            hot,
            ray,
        }
    }

    #[test]
    fn stack_keeps_undersampled_star_cores_and_replaces_hot_pixels_and_rays() {
        let Scene {
            cut,
            star,
            hot,
            ray,
        } = stack();
        let n = cut.dim().0;
        // The width test alone takes the core for a spike.
        let alone = despike(cut.index_axis(Axis(0), 0)).expect("spikes in frame 0");
        assert!(
            alone[[star.0, star.1]] < 200.0,
            "premise: the core looks like a spike"
        );
        let slots: Vec<usize> = (0..n).collect();
        let cleaned = despike_stack(cut.view(), &slots);
        for f in 0..n {
            let c = cleaned[f].as_ref().expect("every frame has a hot pixel");
            assert_eq!(
                c[[star.0, star.1]],
                cut[[f, star.0, star.1]],
                "frame {f}: core kept"
            );
            assert!(
                c[[hot[f].0, hot[f].1]] < 120.0,
                "frame {f}: hot pixel replaced"
            );
        }
        assert!(
            cleaned[3].as_ref().unwrap()[[ray.0, ray.1]] < 120.0,
            "cosmic ray replaced"
        );
        // Only the frames asked for (three: the median of two is their mean, which a hot pixel of
        // either lights); one frame alone cannot tell a star from a spike.
        let some = despike_stack(cut.view(), &[0, 2, 4]);
        assert!(some[1].is_none() && some[0].is_some() && some[4].is_some());
        assert!(despike_stack(cut.view(), &[5]).iter().all(Option::is_none));
    }
}
