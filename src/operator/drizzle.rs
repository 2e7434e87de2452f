//! Bayer drizzle of demosaiced colour planes (part of [`crate::operator`]).
//!
//! A frame demosaiced from a Bayer mosaic measured each plane at only some of its pixels (red and blue
//! at one in four, green at two); the demosaic interpolated the rest, and on undersampled stars that
//! interpolation aliases: a stack of demosaiced frames is as soft as one demosaiced frame, however well
//! the frames are registered. Frames dithered against each other sample the sky at other sub-pixel
//! phases, so the stack can recover what one frame cannot: each frame's own samples are placed at their
//! registered sub-pixel positions and combined by normalised convolution with the resampling kernel,
//!
//! `out = (N + (d - D) A) / d`, `N = Σ_f w_f s_f K_f(M_f · v_f)`, `D = Σ_f w_f K_f(M_f)`,
//! `d = max(D, c Σ_f w_f ρ_f)`,
//!
//! where `K_f` is the frame's Lanczos-3 resampling at its shift (the same as [`crate::resample`] gives
//! the demosaiced planes), `M_f` its mask of own samples, `ρ_f` their share of the pixels (1/4 for red
//! and blue, 1/2 for green), `v_f` its (despiked) plane, `w_f` and `s_f` its weight and photometric
//! scale, and `A` the clipped mean of the demosaiced frames. A frame takes part at a pixel only where its
//! demosaiced value passed that pixel's final sigma clip (`combine::clip_bounds`), so hot
//! pixels, rays and trails stay out exactly as in the demosaiced combination.
//!
//! The coverage `D` of a pixel is what the frames' own samples say about it; a sequence that dithers over
//! the Bayer period gives about `Σ w ρ`. Where it does, the own samples alone decide. Where few frames or
//! few phases reach a pixel (`D` below the share `c` = [`MIN_COVERAGE`] of that), the demosaiced value
//! makes up the deficit, so thin coverage never amplifies noise: one frame, or frames that never move,
//! give exactly their demosaic.
//!
//! The own samples must reach every phase of the Bayer period: frames that sit at nearly the same
//! sub-pixel phase (a guided sequence without dithering) sample the sky in clusters, and normalised
//! convolution between clusters is worse than the demosaic (a test with phases within 0.9 px: rms
//! error 40.6 against the demosaic's 22.4). A plane is drizzled only when every point of the 2 x 2 px
//! period lies within [`MAX_COVERING_RADIUS`] of some frame's own sample (`covers_the_period`);
//! otherwise its demosaiced combination stands.
//!
//! Measured with the true motion on a simulated 1.2-px RGGB sequence (`/work/exp/drizzle/`, 28 frames):
//! luminance FWHM 1.63 px for the demosaiced stack against 1.43 px for this drizzle and 1.44 px for the
//! mono frames of the same scene.
//!
//! What it does not: demosaic (the frames come demosaiced), register or weight frames, or handle
//! planes without a mosaic (cell-space Bayer planes are all own samples and never come here).

// Index loops over several arrays at once read more clearly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::geom::Shift;
use crate::resample::Resampler;

/// Which pixels of each 2x2 cell of a cut-out are the plane's own samples, indexed `2 * (y % 2) + x % 2`
/// in cut-out coordinates (`[true; 4]`: every pixel, nothing to drizzle).
pub type OwnSamples = [bool; 4];

/// Below this share of the coverage that a sequence dithered over the Bayer period gives, the demosaiced
/// value makes up the deficit (`c` in the module docs). On the 28-frame 1.2-px oracle (module docs) the
/// FWHM was 1.435 px at 0.5 and 0.75 and 1.449 px at 1.0.
pub const MIN_COVERAGE: f64 = 0.75;

/// Largest distance in pixels from any point of the Bayer period to the nearest own sample of some used
/// frame for a plane to be drizzled. Measured covering radii (red; green lies on a denser lattice): 30
/// simulated frames drifting 4 px with 0.25-px jitter 0.51 (green 0.43), their first six 0.94, M27's six
/// frames 0.84 (green 0.44), 16 frames dithered over the period in half-pixel steps 0.32, 16 frames within
/// 0.9 px 0.84.
pub const MAX_COVERING_RADIUS: f32 = 0.6;

/// Whether the used frames' own samples of a plane cover the 2 x 2 px Bayer period (see the module docs):
/// frame `slot`'s own sample at cut-out pixel `(y, x)` lands at `(y - margin - dy, x - margin - dx)` of the
/// output. Tested on a 16 x 16 grid of points of the period, with distances taken around the period.
pub(super) fn covers_the_period(
    used: &[(usize, Shift, f32)],
    own: &[OwnSamples],
    margin: usize,
) -> bool {
    let phase = |v: f32| (v.rem_euclid(2.0) + 2.0) % 2.0;
    let mut points = Vec::new();
    for &(slot, shift, _) in used {
        let Some(cells) = own.get(slot) else { continue };
        for (k, _) in cells.iter().enumerate().filter(|(_, &is_own)| is_own) {
            let (cy, cx) = ((k / 2 + margin) as f32, (k % 2 + margin) as f32);
            points.push((phase(cy - shift.dy), phase(cx - shift.dx)));
        }
    }
    let around = |a: f32, b: f32| {
        let d = (a - b).abs();
        d.min(2.0 - d)
    };
    (0..16 * 16).all(|t| {
        let (ty, tx) = (
            (t / 16) as f32 / 8.0 + 1.0 / 16.0,
            (t % 16) as f32 / 8.0 + 1.0 / 16.0,
        );
        points
            .iter()
            .any(|&(py, px)| around(ty, py).hypot(around(tx, px)) <= MAX_COVERING_RADIUS)
    })
}

/// One frame's drizzle terms for one plane, resampled like its demosaiced plane: the own samples
/// (`K(M · v)`, into `values`) and their coverage (`K(M)`, into `cover`), both `(h, w)`. Pixels of `cut`
/// that are `NaN` are missing in both, so the resampler treats both alike at frame edges.
pub(super) fn resample_own_samples(
    resampler: &mut Resampler,
    cut: ArrayView2<f32>,
    own: OwnSamples,
    origin: (f32, f32),
    values: ArrayViewMut2<f32>,
    cover: ArrayViewMut2<f32>,
) {
    let masked = |keep_value: bool| {
        Array2::from_shape_fn(cut.dim(), |(y, x)| {
            let v = cut[[y, x]];
            if v.is_nan() {
                f32::NAN
            } else if own[2 * (y & 1) + (x & 1)] {
                if keep_value {
                    v
                } else {
                    1.0
                }
            } else {
                0.0
            }
        })
    };
    resampler.sample_shifted(masked(true).view(), origin.0, origin.1, values);
    resampler.sample_shifted(masked(false).view(), origin.0, origin.1, cover);
}

/// The drizzled plane (see the module docs), from per-frame terms stored frame-major like `aligned`
/// (`values[slot * np + p]`, already multiplied by the frame's photometric scale; `cover` unscaled).
/// `used` is `(slot, shift, weight)` in accumulation order, `own` the frames' own samples by slot;
/// `(centre, bound)` is the final clipping rule,
/// `demosaiced` the clipped mean of the demosaiced frames (rows of `width`), which also floors the
/// result (its lowest value in the pixel's 3 x 3 neighbourhood). A pixel without accepted frames keeps
/// the demosaiced value.
pub(super) fn combine(
    used: &[(usize, Shift, f32)],
    aligned: &[f32],
    (values, cover, own): (&[f32], &[f32], &[OwnSamples]),
    (centre, bound): (&[f32], &[f32]),
    (demosaiced, width): (&[f32], usize),
) -> Vec<f32> {
    let np = demosaiced.len();
    let mut num = vec![0.0f64; np];
    let mut den = vec![0.0f64; np];
    let mut expected = vec![0.0f64; np];
    for &(slot, _, wt) in used {
        let range = slot * np..(slot + 1) * np;
        let (Some(a), Some(v), Some(c)) = (
            aligned.get(range.clone()),
            values.get(range.clone()),
            cover.get(range),
        ) else {
            continue;
        };
        let wt = f64::from(wt);
        let share = own
            .get(slot)
            .map_or(0.0, |o| o.iter().filter(|&&b| b).count() as f64 / 4.0);
        for p in 0..np {
            let ok = (a[p] - centre[p]).abs() <= bound[p] && v[p].is_finite() && c[p].is_finite();
            if ok {
                num[p] += wt * f64::from(v[p]);
                den[p] += wt * f64::from(c[p]);
                expected[p] += wt * share;
            }
        }
    }
    // The drizzle never goes below the demosaiced combination's lowest value around the pixel: the
    // kernel's negative lobes over a few sparse samples next to a bright undersampled star would
    // otherwise dig a hole (M27, green: -1548 ADU, 30 sigma below the sky, before this floor).
    let rows = np / width.max(1);
    let floor = |p: usize| {
        let (y, x) = (p / width, p % width);
        let mut lo = f32::INFINITY;
        for yy in y.saturating_sub(1)..(y + 2).min(rows) {
            for xx in x.saturating_sub(1)..(x + 2).min(width) {
                lo = lo.min(demosaiced[yy * width + xx]);
            }
        }
        lo
    };
    (0..np)
        .map(|p| {
            let a = demosaiced[p];
            let d = den[p].max(MIN_COVERAGE * expected[p]);
            if !(d > 0.0) || !a.is_finite() {
                return a;
            }
            let v = ((num[p] + (d - den[p]) * f64::from(a)) / d) as f32;
            v.max(floor(p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bayer::{demosaic, mosaic, CfaPattern, Color};
    use crate::geom::TileBox;
    use crate::operator::{
        reconstruct_planes, reconstruct_tile, FrameInput, Mode, OperatorParams, PlaneStack,
        TileStack,
    };
    use ndarray::{s, Array3, Axis};

    const COLOURS: [Color; 3] = [Color::Red, Color::Green, Color::Blue];

    /// An undersampled, coloured star field (FWHM 1.2 px) on a sky, as a function of position.
    fn truth(c: usize, y: f64, x: f64) -> f32 {
        let stars = [
            (12.3, 14.6, [900.0, 1200.0, 500.0]),
            (25.8, 30.1, [400.0, 700.0, 1100.0]),
            (31.2, 11.7, [1500.0, 900.0, 300.0]),
            (17.9, 35.4, [600.0, 600.0, 600.0]),
        ];
        let sigma2 = (1.2f64 / 2.3548).powi(2);
        let mut v = 100.0 + 20.0 * c as f64;
        for (sy, sx, amp) in stars {
            v += amp[c] * (-((y - sy).powi(2) + (x - sx).powi(2)) / (2.0 * sigma2)).exp();
        }
        v as f32
    }

    /// `n` frames dithered in steps of `step` px (4 x 4, plus a tenth of a pixel per row and column), each mosaicked (RGGB at the cut-out's first pixel) and
    /// demosaiced; the tile's stack (luminance) and planes, with or without their own samples.
    fn scene(n: usize, step: f32, own: bool) -> (TileStack, Vec<PlaneStack>, (usize, usize)) {
        let (h, w, m) = (44usize, 44usize, 4usize);
        let (ch, cw) = (h + 2 * m, w + 2 * m);
        let shifts: Vec<(f32, f32)> = (0..n)
            .map(|f| step * (f % 4) as f32 + 0.1 * (f / 4) as f32)
            .zip((0..n).map(|f| step * ((f / 4) % 4) as f32 + 0.1 * (f % 4) as f32))
            .collect();
        let mut planes = vec![Array3::<f32>::zeros((n, ch, cw)); 3];
        for (f, &(dy, dx)) in shifts.iter().enumerate() {
            // aligned(i, j) = frame(i + m + dy, j + m + dx) must be the truth at (i, j).
            let rgb = Array3::from_shape_fn((3, ch, cw), |(c, y, x)| {
                truth(
                    c,
                    y as f64 - m as f64 - f64::from(dy),
                    x as f64 - m as f64 - f64::from(dx),
                )
            });
            let cfa = mosaic(rgb.view(), CfaPattern::Rggb).unwrap();
            let rgb = demosaic(cfa.view(), CfaPattern::Rggb).unwrap();
            for (c, plane) in planes.iter_mut().enumerate() {
                plane
                    .index_axis_mut(Axis(0), f)
                    .assign(&rgb.index_axis(Axis(0), c));
            }
        }
        let lum = (&planes[0] + &planes[1] + &planes[2]) / 3.0;
        let stack = TileStack {
            tile: TileBox {
                index: 0,
                x0: 0,
                y0: 0,
                w,
                h,
            },
            margin: m,
            cutouts: lum,
            frames: shifts
                .iter()
                .enumerate()
                .map(|(index, &(dy, dx))| FrameInput {
                    index,
                    weight: 1.0,
                    scale: 1.0,
                    prior_shift: Shift::new(dy, dx),
                })
                .collect(),
        };
        let stacks = planes
            .into_iter()
            .zip(COLOURS)
            .map(|(cutouts, colour)| PlaneStack {
                cutouts,
                scales: vec![1.0; n],
                own: own.then(|| vec![CfaPattern::Rggb.own_samples(colour); n]),
            })
            .collect();
        (stack, stacks, (h, w))
    }

    fn params() -> OperatorParams {
        OperatorParams {
            mode: Mode::GlobalOnly,
            beta: 0.0,
            min_valid_frames: 1,
            ..OperatorParams::default()
        }
    }

    fn rms_error(planes: &[Array2<f32>], (h, w): (usize, usize)) -> f64 {
        let mut sum = 0.0;
        let mut count = 0.0;
        for (c, plane) in planes.iter().enumerate() {
            // Stars only (away from the tile's edges).
            for ((i, j), &v) in plane.slice(s![4..h - 4, 4..w - 4]).indexed_iter() {
                let t = truth(c, (i + 4) as f64, (j + 4) as f64);
                sum += f64::from(v - t).powi(2);
                count += 1.0;
            }
        }
        (sum / count).sqrt()
    }

    /// RMS error against the truth of the demosaiced and the drizzled stack of `n` frames.
    fn errors(n: usize, step: f32) -> (f64, f64) {
        let (stack, demosaiced, size) = scene(n, step, false);
        let (_, drizzled, _) = scene(n, step, true);
        let result = reconstruct_tile(&stack, &params());
        assert!(result.valid, "{:?}", result.invalid_reason);
        let plain = rms_error(
            &reconstruct_planes(&result, &stack, &demosaiced, &params()),
            size,
        );
        let drizzle = rms_error(
            &reconstruct_planes(&result, &stack, &drizzled, &params()),
            size,
        );
        eprintln!("{n} frames, steps of {step} px: rms error against the truth: demosaiced {plain:.2}, drizzled {drizzle:.2}");
        (plain, drizzle)
    }

    #[test]
    fn frames_dithered_over_the_bayer_period_recover_undersampled_stars() {
        let (plain, drizzle) = errors(16, 0.5);
        assert!(
            drizzle < 0.5 * plain,
            "demosaiced {plain}, drizzled {drizzle}"
        );
    }

    #[test]
    fn frames_at_nearly_one_phase_keep_the_demosaic() {
        // Sub-pixel dithers only: the samples of each colour cluster within 0.9 px of the 2-px period.
        let (plain, drizzle) = errors(16, 0.2);
        assert_eq!(plain, drizzle);
    }

    #[test]
    fn one_frame_is_its_demosaic() {
        let (stack, demosaiced, _) = scene(1, 0.5, false);
        let (_, drizzled, _) = scene(1, 0.5, true);
        let result = reconstruct_tile(&stack, &params());
        assert!(result.valid, "{:?}", result.invalid_reason);
        let plain = reconstruct_planes(&result, &stack, &demosaiced, &params());
        let drizzle = reconstruct_planes(&result, &stack, &drizzled, &params());
        assert_eq!(plain, drizzle);
    }
}
