//! Star matching for the global pass: the geometry of a frame relative to the reference from two
//! star lists ([`match_stars`]): translation voting over pairwise offsets of the brightest stars, then
//! rounds of mutually nearest pairs and a clipped least-squares fit of translation plus a small linear
//! part ([`FrameTransform`]); and star lists mapped back into reference coordinates.
//!
//! What it does not: detect or measure stars (the pass in `mod.rs` does, with [`crate::stars`]), or
//! decide which star list is the reference.

use serde::{Deserialize, Serialize};

use super::GlobalOptions;
use crate::geom::Shift;
use crate::stats::median_and_sigma;

/// A star position with its flux, the only thing the matcher needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StarPoint {
    /// Row coordinate (pixels).
    pub y: f32,
    /// Column coordinate (pixels).
    pub x: f32,
    /// Flux (any unit; only the order matters).
    pub flux: f32,
}

/// Linear model of a frame's geometry relative to the reference: a feature at reference position `p`
/// appears in the frame at `p + displacement_at(p)`, with `displacement_at(p) = shift + linear (p - centre)`.
/// `linear` captures field rotation (alt-az), differential refraction and the large-scale part of the
/// seeing; it is zero when too few stars were matched to fit it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameTransform {
    /// Displacement at `centre` (px); this is [`super::FrameQuality::shift`].
    pub shift: Shift,
    /// Point the model is expanded about, `(y, x)`: the image centre.
    pub centre: (f32, f32),
    /// Row-major 2 x 2 matrix `[[d dy/dy, d dy/dx], [d dx/dy, d dx/dx]]` (dimensionless).
    pub linear: [[f32; 2]; 2],
}

impl FrameTransform {
    /// A pure translation about `centre`.
    pub fn translation(shift: Shift, centre: (f32, f32)) -> Self {
        Self {
            shift,
            centre,
            linear: [[0.0; 2]; 2],
        }
    }

    /// Displacement of the frame at reference position `(y, x)`: the prior shift of a tile centred there.
    pub fn displacement_at(&self, y: f32, x: f32) -> Shift {
        let (ry, rx) = (y - self.centre.0, x - self.centre.1);
        let l = &self.linear;
        Shift::new(
            self.shift.dy + l[0][0] * ry + l[0][1] * rx,
            self.shift.dx + l[1][0] * ry + l[1][1] * rx,
        )
    }

    /// Field rotation in degrees implied by the linear part (positive turns +x towards +y).
    pub fn rotation_deg(&self) -> f32 {
        let l = &self.linear;
        // (I + L) ~ scaled rotation: angle = atan2(m_yx, m_xx) with m = I + L in (y, x) order.
        let (m_yx, m_xx) = (l[0][1], 1.0 + l[1][1]);
        let (m_xy, m_yy) = (l[1][0], 1.0 + l[0][0]);
        (0.5 * (m_yx.atan2(m_xx) - m_xy.atan2(m_yy))).to_degrees()
    }
}

/// Result of [`match_stars`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StarMatch {
    /// Mean displacement of the matched stars (the least-squares pure translation over the pairs kept by
    /// the clipped model fit). Under field rotation it depends on where the stars are; the global pass
    /// reports `transform.shift`, the model's displacement at the image centre, instead.
    pub mean_shift: Shift,
    /// The fitted geometry (translation at the image centre plus linear part).
    pub transform: FrameTransform,
    /// Number of star pairs used for the final fit.
    pub matches: usize,
    /// RMS residual of those pairs after the fit (px): local seeing motion plus centroid noise.
    pub rms_px: f32,
}

/// `points` (frame coordinates) mapped into reference coordinates: solves `p + d(p) = q` for `p` by
/// fixed-point iteration (the linear part is small, so three rounds are exact to float precision).
pub(super) fn to_reference_frame(points: &[StarPoint], t: &FrameTransform) -> Vec<StarPoint> {
    points
        .iter()
        .map(|q| {
            let (mut y, mut x) = (q.y - t.shift.dy, q.x - t.shift.dx);
            for _ in 0..3 {
                let d = t.displacement_at(y, x);
                (y, x) = (q.y - d.dy, q.x - d.dx);
            }
            StarPoint { y, x, flux: q.flux }
        })
        .collect()
}

pub(super) fn sort_brightest_first(p: &mut [StarPoint]) {
    p.sort_by(|a, b| {
        b.flux
            .total_cmp(&a.flux)
            .then(a.y.total_cmp(&b.y))
            .then(a.x.total_cmp(&b.x))
    });
}

/// Geometry of `frame` relative to `reference` from two star lists (any order; the brightest are used
/// for voting), expanded about `centre` `(y, x)` (normally the image centre). `None` when fewer than
/// `options.min_matches` stars agree on one translation.
///
/// Voting: every pair (reference star, frame star) among the `vote_stars` brightest proposes the offset
/// between them; the offset with the most other proposals within `match_radius_px` (per axis) wins.
/// Refinement (four rounds): reference stars (the `refine_stars` brightest) are paired with the mutually
/// nearest frame star within `match_radius_px` (first round) or twice that (later rounds) of their
/// position predicted by the current model; the
/// model `d(p) = shift + L (p - centre)` is fitted by least squares with 3-sigma clipping of the
/// residuals. `L` is fitted only from at least 12 pairs spread over the field and kept only when small
/// (|entries| <= 0.1, i.e. up to about 6 degrees of rotation); otherwise the model is a translation.
pub fn match_stars(
    reference: &[StarPoint],
    frame: &[StarPoint],
    centre: (f32, f32),
    options: &GlobalOptions,
) -> Option<StarMatch> {
    let clean = |s: &[StarPoint]| {
        let mut v: Vec<StarPoint> = s
            .iter()
            .copied()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .collect();
        sort_brightest_first(&mut v);
        v
    };
    let reference = clean(reference);
    let frame = clean(frame);
    let min_matches = options.min_matches.max(2);
    if reference.len() < min_matches || frame.len() < min_matches {
        return None;
    }
    let radius = if options.match_radius_px.is_finite() && options.match_radius_px > 0.0 {
        options.match_radius_px
    } else {
        GlobalOptions::default().match_radius_px
    };
    let n_vote = options.vote_stars.max(min_matches);
    let guess = vote(
        &reference[..reference.len().min(n_vote)],
        &frame[..frame.len().min(n_vote)],
        radius,
        min_matches,
    )?;
    let n_refine = options.refine_stars.max(min_matches);
    let reference = &reference[..reference.len().min(n_refine)];
    let frame = &frame[..frame.len().min(n_refine)];
    let mut model = FrameTransform::translation(guess, centre);
    let mut result = None;
    // The first round pairs stars near the voted translation; later rounds search twice as far around
    // the fitted model, so stars that local seeing moved further from the mean are paired as well (the
    // brightest `refine_stars` are sparse enough that this does not create false pairs).
    for round_radius in [radius, 2.0 * radius, 2.0 * radius, 2.0 * radius] {
        let pairs = mutual_pairs(reference, frame, &model, round_radius);
        if pairs.len() < min_matches {
            return None;
        }
        let (fitted, mean, used, rms) = fit_clipped(&pairs, centre)?;
        model = fitted;
        result = Some(StarMatch {
            mean_shift: mean,
            transform: model,
            matches: used,
            rms_px: rms,
        });
    }
    result
}

/// Offset `(dy, dx)` = frame - reference proposed by most pairs, averaged over its supporters.
fn vote(
    reference: &[StarPoint],
    frame: &[StarPoint],
    radius: f32,
    min_votes: usize,
) -> Option<Shift> {
    let mut offsets: Vec<(f32, f32)> = Vec::with_capacity(reference.len() * frame.len());
    for a in reference {
        for b in frame {
            offsets.push((b.x - a.x, b.y - a.y));
        }
    }
    offsets.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    let mut best: Option<(usize, usize)> = None; // (votes, position)
    let mut lo = 0usize;
    let mut hi = 0usize;
    for (k, &(dx, dy)) in offsets.iter().enumerate() {
        while offsets[lo].0 < dx - radius {
            lo += 1;
        }
        while hi < offsets.len() && offsets[hi].0 <= dx + radius {
            hi += 1;
        }
        let votes = offsets[lo..hi]
            .iter()
            .filter(|o| (o.1 - dy).abs() <= radius)
            .count();
        if best.is_none_or(|(v, _)| votes > v) {
            best = Some((votes, k));
        }
    }
    let (votes, k) = best?;
    if votes < min_votes {
        return None;
    }
    let (dx0, dy0) = offsets[k];
    let support: Vec<&(f32, f32)> = offsets
        .iter()
        .filter(|o| (o.0 - dx0).abs() <= radius && (o.1 - dy0).abs() <= radius)
        .collect();
    let n = support.len() as f64;
    let mdx = support.iter().map(|o| f64::from(o.0)).sum::<f64>() / n;
    let mdy = support.iter().map(|o| f64::from(o.1)).sum::<f64>() / n;
    Some(Shift::new(mdy as f32, mdx as f32))
}

/// Mutually nearest pairs `(reference star, frame star)`: the frame star nearest to the model's
/// prediction within `radius`, kept when no other reference star claims it more closely; reference order.
fn mutual_pairs(
    reference: &[StarPoint],
    frame: &[StarPoint],
    model: &FrameTransform,
    radius: f32,
) -> Vec<(StarPoint, StarPoint)> {
    // Frame stars sorted by x for a windowed search.
    let mut fx: Vec<(f32, usize)> = frame.iter().enumerate().map(|(i, p)| (p.x, i)).collect();
    fx.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let r2 = radius * radius;
    let nearest = |y: f32, x: f32| -> Option<(usize, f32)> {
        let start = fx.partition_point(|e| e.0 < x - radius);
        let mut best: Option<(usize, f32)> = None;
        for &(px, i) in &fx[start..] {
            if px > x + radius {
                break;
            }
            let d2 = (frame[i].y - y).powi(2) + (px - x).powi(2);
            if d2 <= r2 && best.is_none_or(|(_, b)| d2 < b) {
                best = Some((i, d2));
            }
        }
        best
    };
    let candidates: Vec<Option<(usize, f32)>> = reference
        .iter()
        .map(|a| {
            let d = model.displacement_at(a.y, a.x);
            nearest(a.y + d.dy, a.x + d.dx)
        })
        .collect();
    // Among reference stars claiming the same frame star keep the closest (first on ties).
    let mut owner: Vec<Option<(usize, f32)>> = vec![None; frame.len()];
    for (ri, c) in candidates.iter().enumerate() {
        if let Some((fi, d2)) = *c {
            if owner[fi].is_none_or(|(_, od)| d2 < od) {
                owner[fi] = Some((ri, d2));
            }
        }
    }
    candidates
        .iter()
        .enumerate()
        .filter_map(|(ri, c)| {
            let (fi, _) = (*c)?;
            (owner[fi].map(|(o, _)| o) == Some(ri)).then_some((reference[ri], frame[fi]))
        })
        .collect()
}

/// Least-squares fit of `d(p) = t + L (p - centre)` (or of `t` alone, see [`match_stars`]) with
/// iterative 3-sigma clipping of the per-axis residuals (sigma from the MAD, floored at 0.05 px).
/// Returns the model, the mean displacement of the kept pairs, their number and their RMS residual.
fn fit_clipped(
    pairs: &[(StarPoint, StarPoint)],
    centre: (f32, f32),
) -> Option<(FrameTransform, Shift, usize, f32)> {
    let mut keep = vec![true; pairs.len()];
    let mut model = fit_model(pairs, &keep, centre)?;
    for _ in 0..5 {
        let res: Vec<(f32, f32)> = pairs
            .iter()
            .map(|(a, b)| {
                let d = model.displacement_at(a.y, a.x);
                (b.y - a.y - d.dy, b.x - a.x - d.dx)
            })
            .collect();
        let kept_res = |axis: usize| -> Vec<f32> {
            res.iter()
                .zip(&keep)
                .filter(|(_, &k)| k)
                .map(|(r, _)| if axis == 0 { r.0 } else { r.1 })
                .collect()
        };
        let (my, sy) = median_and_sigma(&kept_res(0));
        let (mx, sx) = median_and_sigma(&kept_res(1));
        let (ly, lx) = (3.0 * sy.max(0.05), 3.0 * sx.max(0.05));
        let new_keep: Vec<bool> = res
            .iter()
            .map(|r| (r.0 - my).abs() <= ly && (r.1 - mx).abs() <= lx)
            .collect();
        if new_keep == keep {
            break;
        }
        keep = new_keep;
        model = fit_model(pairs, &keep, centre)?;
    }
    let (mut ss, mut n, mut sdy, mut sdx) = (0.0f64, 0usize, 0.0f64, 0.0f64);
    for ((a, b), &k) in pairs.iter().zip(&keep) {
        if k {
            let d = model.displacement_at(a.y, a.x);
            ss += f64::from((b.y - a.y - d.dy).powi(2) + (b.x - a.x - d.dx).powi(2));
            sdy += f64::from(b.y - a.y);
            sdx += f64::from(b.x - a.x);
            n += 1;
        }
    }
    let nf = n as f64;
    (n > 0).then(|| {
        let mean = Shift::new((sdy / nf) as f32, (sdx / nf) as f32);
        (model, mean, n, (ss / nf).sqrt() as f32)
    })
}

/// Pairs needed before the linear part of the model is fitted.
const MIN_PAIRS_LINEAR: usize = 12;
/// Largest accepted entry of the linear part (about 6 degrees of rotation).
const MAX_LINEAR: f64 = 0.1;

/// One unweighted least-squares fit over the pairs flagged in `keep`; `None` when none is flagged.
fn fit_model(
    pairs: &[(StarPoint, StarPoint)],
    keep: &[bool],
    centre: (f32, f32),
) -> Option<FrameTransform> {
    let used: Vec<&(StarPoint, StarPoint)> = pairs
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(p, _)| p)
        .collect();
    if used.is_empty() {
        return None;
    }
    let n = used.len() as f64;
    let (cy, cx) = (f64::from(centre.0), f64::from(centre.1));
    // Means of positions and displacements (centre the design for conditioning).
    let mut m = [0.0f64; 4]; // y, x, dy, dx
    for (a, b) in &used {
        m[0] += f64::from(a.y) - cy;
        m[1] += f64::from(a.x) - cx;
        m[2] += f64::from(b.y - a.y);
        m[3] += f64::from(b.x - a.x);
    }
    m.iter_mut().for_each(|v| *v /= n);
    let translation_only = FrameTransform {
        // Mean displacement; with L = 0 the value at the centre equals it.
        shift: Shift::new(m[2] as f32, m[3] as f32),
        centre,
        linear: [[0.0; 2]; 2],
    };
    if used.len() < MIN_PAIRS_LINEAR {
        return Some(translation_only);
    }
    // Covariances of the centred positions with each other and with the displacements.
    let (mut syy, mut sxx, mut syx) = (0.0f64, 0.0f64, 0.0f64);
    let (mut sy_dy, mut sx_dy, mut sy_dx, mut sx_dx) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (a, b) in &used {
        let y = f64::from(a.y) - cy - m[0];
        let x = f64::from(a.x) - cx - m[1];
        let dy = f64::from(b.y - a.y) - m[2];
        let dx = f64::from(b.x - a.x) - m[3];
        syy += y * y;
        sxx += x * x;
        syx += y * x;
        sy_dy += y * dy;
        sx_dy += x * dy;
        sy_dx += y * dx;
        sx_dx += x * dx;
    }
    let det = syy * sxx - syx * syx;
    // Require a real 2-D spread: the smaller principal variance at least (10 px)^2 per pair.
    let trace = syy + sxx;
    let small_eig = 0.5 * (trace - ((syy - sxx).powi(2) + 4.0 * syx * syx).sqrt());
    if det.is_nan() || det <= 0.0 || small_eig.is_nan() || small_eig < 100.0 * n {
        return Some(translation_only);
    }
    let solve = |sy_d: f64, sx_d: f64| -> (f64, f64) {
        (
            (sxx * sy_d - syx * sx_d) / det,
            (syy * sx_d - syx * sy_d) / det,
        )
    };
    let (l00, l01) = solve(sy_dy, sx_dy);
    let (l10, l11) = solve(sy_dx, sx_dx);
    if [l00, l01, l10, l11]
        .iter()
        .any(|v| !v.is_finite() || v.abs() > MAX_LINEAR)
    {
        return Some(translation_only);
    }
    // d(p) = mean_d + L (p - centre - mean_p)  =>  value at the centre: mean_d - L mean_p.
    let t_dy = m[2] - (l00 * m[0] + l01 * m[1]);
    let t_dx = m[3] - (l10 * m[0] + l11 * m[1]);
    Some(FrameTransform {
        shift: Shift::new(t_dy as f32, t_dx as f32),
        centre,
        linear: [[l00 as f32, l01 as f32], [l10 as f32, l11 as f32]],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn field(n: usize, seed: u64) -> Vec<StarPoint> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| StarPoint {
                y: rng.random_range(0.0..1000.0),
                x: rng.random_range(0.0..1000.0),
                flux: rng.random_range(10.0..1000.0f32).powi(2),
            })
            .collect()
    }

    /// The stars of `reference` seen in a 1000 x 1000 frame shifted by `s`, with position jitter.
    fn observe(reference: &[StarPoint], s: Shift, jitter: f32, seed: u64) -> Vec<StarPoint> {
        let mut rng = StdRng::seed_from_u64(seed);
        reference
            .iter()
            .map(|p| StarPoint {
                y: p.y + s.dy + rng.random_range(-jitter..=jitter),
                x: p.x + s.dx + rng.random_range(-jitter..=jitter),
                flux: p.flux * rng.random_range(0.8..1.2),
            })
            .filter(|p| (0.0..1000.0).contains(&p.y) && (0.0..1000.0).contains(&p.x))
            .collect()
    }

    #[test]
    fn matches_large_drifts_subpixel() {
        let reference = field(300, 1);
        let opts = GlobalOptions::default();
        for (k, s) in [
            Shift::new(0.3, -0.7),
            Shift::new(-41.25, 17.5),
            Shift::new(230.4, -245.9),
        ]
        .into_iter()
        .enumerate()
        {
            let mut frame = observe(&reference, s, 0.05, 10 + k as u64);
            frame.extend(field(40, 100 + k as u64)); // stars only in the frame (new field area, noise)
            let m = match_stars(&reference, &frame, C, &opts).expect("match");
            assert!((m.transform.shift - s).norm() < 0.02, "{s:?} -> {m:?}");
            assert!(m.matches > 100);
        }
    }

    const C: (f32, f32) = (499.5, 499.5);

    #[test]
    fn rotation_is_fitted_and_the_shift_is_taken_at_the_centre() {
        let reference = field(400, 4);
        let theta = 0.4f32.to_radians();
        let t = Shift::new(12.25, -7.5);
        let frame: Vec<StarPoint> = reference
            .iter()
            .map(|p| {
                let (y, x) = (p.y - C.0, p.x - C.1);
                StarPoint {
                    y: C.0 + theta.cos() * y + theta.sin() * x + t.dy,
                    x: C.1 - theta.sin() * y + theta.cos() * x + t.dx,
                    flux: p.flux,
                }
            })
            .collect();
        let m = match_stars(&reference, &frame, C, &GlobalOptions::default()).unwrap();
        assert!((m.transform.shift - t).norm() < 0.01, "{m:?}");
        assert!((m.transform.rotation_deg() - 0.4).abs() < 0.005, "{m:?}");
        assert!(m.matches > 350 && m.rms_px < 0.01, "{m:?}");
        let corner = m.transform.displacement_at(0.0, 0.0);
        let expect_y = theta.cos() * -C.0 + theta.sin() * -C.1 - -C.0 + t.dy;
        assert!(
            (corner.dy - expect_y).abs() < 0.02,
            "{corner:?} vs {expect_y}"
        );
    }

    #[test]
    fn unrelated_or_sparse_lists_do_not_match() {
        let opts = GlobalOptions::default();
        assert!(match_stars(&field(200, 1), &field(200, 2), C, &opts).is_none());
        let reference = field(200, 1);
        let few = observe(&reference[..3], Shift::new(5.0, 5.0), 0.0, 3);
        assert!(match_stars(&reference, &few, C, &opts).is_none());
        assert!(match_stars(&reference, &[], C, &opts).is_none());
    }
}
