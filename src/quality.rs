//! Frame quality without stars, for the Sun, the Moon and planets: a noise-corrected sharpness measure
//! ([`sharpness`]), global weights made from it ([`sharpness_weights`]) and best-N % selection
//! ([`keep_best`], which star runs use too, on their global weights).
//!
//! The sharpness is the normalised gradient energy `S = (mean(|∇I|²) - 4 σ²) / mean(I)²`: forward
//! differences along both axes, minus what noise of standard deviation σ adds to them on average
//! (`2 σ²` per axis), over the squared mean level so that transparency changes do not count as
//! sharpness. σ comes from [`noise_sigma`] (Immerkær's Laplacian-difference estimator, with a median
//! instead of a mean so that texture and edges barely bias it), which works on frames without any sky.
//!
//! Per tile ([`tile_selection`], called by the tile operator), for lucky imaging's "alignment points":
//! the same sharpness measured on each frame's cut-out of the tile (tile plus margin) gives star-less
//! tiles their local weight `L_f,t` and ranks the frames for per-tile best-N % selection
//! (`registration.local_tiles.keep_best_percent`), since the seeing, and so the sharpest frames, vary
//! across the field. With `q_f,t = clamp(SHARPNESS_Q_WEIGHT * z_t(S_f,t), -3, 3)`, `z_t` the robust
//! z-score among the tile's usable frames (as for [`sharpness_weights`]), the tile weight is
//! `W_f,t = G_f * L_f,t * R_f,t` with `L_f,t = exp(q_f,t) / G_f`: the tile's own sharpness replaces the
//! frame's whole-field sharpness (`G_f` of a star-less run is [`sharpness_weights`] of it).
//!
//! What it does not: star measurements ([`crate::stars`]; with stars `L_f,t = 1` and per-tile best-N
//! ranks by `G_f`), or decide which measure a run uses (the global pass does).

use ndarray::ArrayView2;

use crate::stats::{median, median_in_place};

/// Weight of the sharpness z-score in the quality score `Q_f` of a star-less run:
/// `G_f = exp(clamp(SHARPNESS_Q_WEIGHT * z(S), Q_MIN, Q_MAX))`.
pub const SHARPNESS_Q_WEIGHT: f32 = 0.5;

/// Noise standard deviation of `image` from its fine structure: the median absolute response to the
/// kernel `[1 -2 1; -2 4 -2; 1 -2 1]` (which removes planes and most of a smooth image; its response to
/// white noise has standard deviation 6 σ), scaled to σ. NaN pixels are skipped; NaN when fewer than 3x3
/// finite pixels.
pub fn noise_sigma(image: ArrayView2<f32>) -> f32 {
    let (rows, cols) = image.dim();
    if rows < 3 || cols < 3 {
        return f32::NAN;
    }
    // At most about 65 536 samples, on a regular subgrid.
    let step = (((rows - 2) * (cols - 2)) as f64 / 65_536.0)
        .sqrt()
        .ceil()
        .max(1.0) as usize;
    let mut responses = Vec::new();
    for r in (1..rows - 1).step_by(step) {
        for c in (1..cols - 1).step_by(step) {
            let p = |dr: usize, dc: usize| image[[r + dr - 1, c + dc - 1]];
            let v = p(0, 0) + p(0, 2) + p(2, 0) + p(2, 2)
                - 2.0 * (p(0, 1) + p(1, 0) + p(1, 2) + p(2, 1))
                + 4.0 * p(1, 1);
            if v.is_finite() {
                responses.push(v.abs());
            }
        }
    }
    // median |N(0, s)| = 0.6745 s, and s = 6 σ.
    median_in_place(&mut responses) / (0.674_5 * 6.0)
}

/// What [`surface_quality`] measures on a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceQuality {
    /// Noise-corrected normalised gradient energy ([`sharpness`]); NaN when not measurable.
    pub sharpness: f32,
    /// Mean level of the finite pixels (ADU); NaN without any.
    pub level: f32,
    /// Noise standard deviation ([`noise_sigma`], ADU).
    pub noise: f32,
}

/// The noise-corrected normalised gradient energy of `image` (see the module docs); larger is sharper.
/// NaN for an image without a finite positive mean level or smaller than 3x3.
pub fn sharpness(image: ArrayView2<f32>) -> f32 {
    surface_quality(image).sharpness
}

/// Sharpness, mean level and noise of `image` in one pass over it.
pub fn surface_quality(image: ArrayView2<f32>) -> SurfaceQuality {
    let sigma = noise_sigma(image);
    let (rows, cols) = image.dim();
    let mut out = SurfaceQuality {
        sharpness: f32::NAN,
        level: f32::NAN,
        noise: sigma,
    };
    if !sigma.is_finite() {
        return out;
    }
    let (mut energy, mut n, mut level, mut m) = (0.0f64, 0usize, 0.0f64, 0usize);
    for r in 0..rows - 1 {
        for c in 0..cols - 1 {
            let v = image[[r, c]];
            let (dx, dy) = (image[[r, c + 1]] - v, image[[r + 1, c]] - v);
            if v.is_finite() {
                level += f64::from(v);
                m += 1;
            }
            if dx.is_finite() && dy.is_finite() {
                energy += f64::from(dx * dx + dy * dy);
                n += 1;
            }
        }
    }
    let mean = level / m.max(1) as f64;
    if m > 0 {
        out.level = mean as f32;
    }
    if n == 0 || !(mean > 0.0) {
        return out;
    }
    let corrected = energy / n as f64 - 4.0 * f64::from(sigma).powi(2);
    out.sharpness = (corrected / (mean * mean)) as f32;
    out
}

/// Global weights from sharpness values: `exp(clamp(SHARPNESS_Q_WEIGHT * z, -3, 3))` with `z` the robust
/// z-score over the finite values (scale at least 3 % of the median, as for the star weights); a frame
/// without a finite sharpness gets `exp(-3)`.
pub fn sharpness_weights(values: &[f32]) -> Vec<f32> {
    use crate::select::{Q_MAX, Q_MIN, Z_SCALE_FLOOR};
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (med, sigma) = crate::stats::median_and_sigma(&finite);
    let scale = if sigma.is_finite() { sigma } else { 0.0 }
        .max(Z_SCALE_FLOOR * med.abs())
        .max(1e-12);
    values
        .iter()
        .map(|&v| {
            let q = if v.is_finite() {
                SHARPNESS_Q_WEIGHT * (v - med) / scale
            } else {
                Q_MIN
            };
            q.clamp(Q_MIN, Q_MAX).exp()
        })
        .collect()
}

/// Best-N % selection: which of `scores` (one per candidate, larger is better; NaN is worst) to keep
/// when only `percent` % of them may stay. Keeps `ceil(percent / 100 * n)` candidates, at least one;
/// ties are broken by position (the earlier stays). Returns a flag per candidate, in input order.
/// `percent` at or above 100 (or not finite) keeps everything.
pub fn keep_best(scores: &[f32], percent: f64) -> Vec<bool> {
    let n = scores.len();
    if !(percent < 100.0) || n == 0 {
        return vec![true; n];
    }
    let keep = ((percent.max(0.0) / 100.0 * n as f64).ceil() as usize).clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    let key = |i: usize| {
        if scores[i].is_finite() {
            scores[i]
        } else {
            f32::NEG_INFINITY
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let mut flags = vec![false; n];
    for &i in &order[..keep] {
        flags[i] = true;
    }
    flags
}

/// Start of the reason given to the frames that per-tile best-N % selection leaves out of a tile.
pub const NOT_KEPT_IN_TILE: &str = "not among the";

/// What [`tile_selection`] decides for one frame of a tile.
#[derive(Debug, Clone, PartialEq)]
pub struct TileChoice {
    /// Local weight factor `L_f,t` (1 when not measured).
    pub local: f32,
    /// Why the frame is left out of this tile by best-N % selection (`None`: kept).
    pub rejected: Option<String>,
}

/// Local weights and per-tile best-N % selection of one tile stack (see the module docs).
/// `usable[slot]` says which frames may take part (the others get `L = 1` and stay as they are);
/// `sharpness` asks for sharpness-based local weights and ranking (star-less runs), else frames are
/// ranked by their global weight; `percent` at or above 100 keeps every frame. Ties are broken by
/// frame index. Without sharpness and selection nothing is measured and every `L` is exactly 1.
pub fn tile_selection(
    stack: &crate::operator::TileStack,
    usable: &[bool],
    sharpness: bool,
    percent: f32,
) -> Vec<TileChoice> {
    let n = stack.frames.len();
    let mut out = vec![
        TileChoice {
            local: 1.0,
            rejected: None,
        };
        n
    ];
    let select = percent < 100.0;
    if !sharpness && !select {
        return out;
    }
    // Usable slots in frame-index order, so that ties go to the earlier frame.
    let mut slots: Vec<usize> = (0..n.min(usable.len())).filter(|&s| usable[s]).collect();
    slots.sort_by_key(|&s| stack.frames[s].index);
    let scores: Vec<f32> = slots
        .iter()
        .map(|&s| {
            if sharpness {
                let cut = stack.cutouts.index_axis(ndarray::Axis(0), s);
                surface_quality(cut).sharpness
            } else {
                stack.frames[s].weight
            }
        })
        .collect();
    if sharpness {
        for (&s, w) in slots.iter().zip(sharpness_weights(&scores)) {
            out[s].local = w / stack.frames[s].weight;
        }
    }
    if select {
        let what = if sharpness {
            "sharpest"
        } else {
            "best-weighted"
        };
        for (&s, kept) in slots.iter().zip(keep_best(&scores, f64::from(percent))) {
            if !kept {
                out[s].rejected = Some(format!(
                    "{NOT_KEPT_IN_TILE} {what} {percent} % in this tile \
                     (registration.local_tiles.keep_best_percent)"
                ));
            }
        }
    }
    out
}

/// The median of the finite values (NaN when none): the typical sharpness of a run, for reports.
pub fn typical(values: &[f32]) -> f32 {
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    median(&finite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};

    fn texture(rows: usize, cols: usize, blur: f32, noise: f32, seed: u64) -> Array2<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let image = Array2::from_shape_fn((rows, cols), |(r, c)| {
            let (y, x) = (r as f32, c as f32);
            let mut v = 1000.0;
            for k in 1..6 {
                let f = 0.08 * k as f32;
                v += 200.0 / k as f32
                    * (-(2.0 * std::f32::consts::PI * f * blur).powi(2) / 2.0).exp()
                    * ((f * x + 0.3 * k as f32).sin() + (0.7 * f * y + 0.6 * f * x).cos());
            }
            v
        });
        image.mapv(|v| v + noise * (rng.random::<f32>() - 0.5) * 12f32.sqrt())
    }

    #[test]
    fn noise_is_measured_on_texture() {
        let image = texture(200, 200, 1.0, 5.0, 1);
        let sigma = noise_sigma(image.view());
        assert!((sigma - 5.0).abs() < 0.6, "sigma {sigma}");
    }

    #[test]
    fn sharper_frames_score_higher_and_noise_is_removed() {
        let sharp = sharpness(texture(200, 200, 0.5, 5.0, 2).view());
        let blurred = sharpness(texture(200, 200, 1.5, 5.0, 3).view());
        assert!(sharp > 1.5 * blurred, "{sharp} vs {blurred}");
        // More noise on the same texture: almost the same score once corrected.
        let clean = sharpness(texture(200, 200, 1.0, 1.0, 4).view());
        let noisy = sharpness(texture(200, 200, 1.0, 10.0, 5).view());
        assert!((noisy - clean).abs() < 0.15 * clean, "{noisy} vs {clean}");
        // Brightness does not count.
        let bright = sharpness(texture(200, 200, 1.0, 1.0, 4).mapv(|v| 2.0 * v).view());
        assert!((bright - clean).abs() < 0.05 * clean, "{bright} vs {clean}");
        assert!(sharpness(Array2::<f32>::zeros((2, 2)).view()).is_nan());
    }

    #[test]
    fn keep_best_keeps_the_top_share() {
        let scores = [0.1, 0.9, f32::NAN, 0.5, 0.9, 0.2, 0.3, 0.8];
        assert_eq!(
            keep_best(&scores, 25.0),
            vec![false, true, false, false, true, false, false, false]
        );
        assert_eq!(keep_best(&scores, 100.0), vec![true; 8]);
        assert_eq!(keep_best(&scores, 0.0).iter().filter(|k| **k).count(), 1);
        let w = sharpness_weights(&[1.0, 1.0, 2.0, f32::NAN]);
        assert!(w[2] > w[0] && (w[0] - 1.0).abs() < 1e-6 && (w[3] - (-3f32).exp()).abs() < 1e-6);
    }

    /// A tile stack of 6 frames (slots in reverse frame order): frames 0-2 sharp where `sharp_first`,
    /// else blurred; frames 3-5 the other way round. Global weights all 1.
    fn two_kinds(sharp_first: bool, seed: u64) -> crate::operator::TileStack {
        let mut cutouts = ndarray::Array3::<f32>::zeros((6, 48, 48));
        let mut frames = Vec::new();
        for slot in 0..6 {
            let index = 5 - slot;
            let sharp = (index < 3) == sharp_first;
            let blur = if sharp { 0.6 } else { 1.4 };
            let image = texture(48, 48, blur, 4.0, seed + slot as u64);
            cutouts
                .index_axis_mut(ndarray::Axis(0), slot)
                .assign(&image);
            frames.push(crate::operator::FrameInput {
                index,
                weight: 1.0,
                scale: 1.0,
                prior_shift: crate::geom::Shift::ZERO,
            });
        }
        crate::operator::TileStack {
            tile: crate::geom::TileBox {
                index: 0,
                x0: 8,
                y0: 8,
                w: 32,
                h: 32,
            },
            margin: 8,
            cutouts,
            frames,
        }
    }

    #[test]
    fn each_tile_favours_its_own_sharpest_frames() {
        // Frames 0-2 are sharp in the left tile and blurred in the right one; 3-5 the other way.
        let usable = [true; 6];
        for (sharp_first, seed) in [(true, 10), (false, 20)] {
            let stack = two_kinds(sharp_first, seed);
            let choices = tile_selection(&stack, &usable, true, 100.0);
            let local = |index: usize| choices[5 - index].local;
            let (good, bad) = if sharp_first {
                (0..3, 3..6)
            } else {
                (3..6, 0..3)
            };
            let worst_good = good.clone().map(local).fold(f32::MAX, f32::min);
            let best_bad = bad.clone().map(local).fold(f32::MIN, f32::max);
            assert!(worst_good > 1.5 * best_bad, "{choices:?}");
            assert!(choices.iter().all(|c| c.rejected.is_none()));
            // Best half: exactly this tile's sharp frames stay.
            let choices = tile_selection(&stack, &usable, true, 50.0);
            for index in 0..6 {
                let kept = choices[5 - index].rejected.is_none();
                assert_eq!(kept, good.contains(&index), "frame {index}: {choices:?}");
            }
            let reason = choices[5 - bad.start].rejected.clone().unwrap();
            assert!(reason.starts_with(NOT_KEPT_IN_TILE), "{reason}");
            assert!(reason.contains("sharpest 50 %"), "{reason}");
        }
        // With stars: nothing measured, L exactly 1; best-N ranks by global weight, ties to the
        // earlier frame (slots are in reverse frame order here), unusable frames stay as they are.
        let stack = two_kinds(true, 30);
        let all = tile_selection(&stack, &usable, false, 100.0);
        assert!(all.iter().all(|c| c.local == 1.0 && c.rejected.is_none()));
        let usable = [true, true, true, true, true, false];
        let half = tile_selection(&stack, &usable, false, 50.0);
        let kept: Vec<usize> = (0..6)
            .filter(|&slot| usable[slot] && half[slot].rejected.is_none())
            .map(|slot| 5 - slot)
            .collect();
        assert_eq!(kept, vec![3, 2, 1], "{half:?}");
        assert!(half[5].rejected.is_none());
    }
}
