//! Frame selection: from the global pass's measurements of every frame ([`FrameQuality`]) to the
//! frames that take part, with what weight and scale, and why the others do not. The batch reader
//! and live sessions both decide here, so one rule with one wording applies to both.
//!
//! What it does:
//! - [`global_weights`]: `G_f = exp(clamp(Q_f, -3, 3))` with `Q_f = -0.4 z(B) - 0.3 z(noise) - 0.3 z(FWHM)`,
//!   `z` the robust z-score `(v - median) / (1.4826 MAD)` over the usable frames (tile_compile's weighting;
//!   our addition: the scale is at least 3 % of the median, so that a very homogeneous night does not
//!   turn measurement noise into weights between e^-3 and e^3).
//!   Unusable frames (no shift, no stars, fewer than a quarter of the median star count, non-finite
//!   measurements) get the lowest weight `exp(-3)` instead of an error.
//! - [`photometric_scales`]: `scale_f = median(B) / B_f`, so that `I' = I * scale_f` is the methodology's
//!   `I / B_f` expressed in the ADU units of a typical frame; [`set_plane_scales`] does the same per
//!   colour plane.
//! - [`frame_rejection`]: the rule. A frame takes part when its global registration succeeded and its
//!   weight and scale are finite and positive; otherwise the [`Rejection`] says why, in words for a user.
//! - [`select_frames`]: the rule over the frames of a run: the [`UsedFrame`]s and the rejected frames,
//!   both in frame order.
//! - [`offset_of`] / [`prior_of`]: how a used frame's global shift enters the tiles: its whole-pixel
//!   part offsets the cut-out, the sub-pixel rest is the operator's prior.
//! - [`most_common_reason`]: the one reason to show for a frame that tiles rejected for several.
//!
//! What it does not: measure frames ([`crate::global`]), read files, apply `--strict` or report the
//! rejected frames (the callers do), or drop frames for low quality (their weights make them count
//! less).

use std::collections::BTreeMap;
use std::fmt;

use crate::geom::Shift;
use crate::global::FrameQuality;
use crate::operator::FrameInput;
use crate::stats::{median, median_and_sigma};

/// Lowest quality score of the methodology's clamp; unusable frames get `G_f = exp(Q_MIN)`.
pub const Q_MIN: f32 = -3.0;
/// Highest quality score of the methodology's clamp.
pub const Q_MAX: f32 = 3.0;
/// Weight of the background z-score in `Q_f`.
pub const Q_WEIGHT_BACKGROUND: f32 = 0.4;
/// Weight of the noise z-score in `Q_f`.
pub const Q_WEIGHT_NOISE: f32 = 0.3;
/// Weight of the FWHM z-score in `Q_f`.
pub const Q_WEIGHT_FWHM: f32 = 0.3;
/// Smallest scale of the robust z-scores, relative to the median (see [`global_weights`]): differences
/// below about 3 % of the typical background, noise or FWHM count as noise, not as quality.
pub const Z_SCALE_FLOOR: f32 = 0.03;
/// A frame with fewer stars than this fraction of the median star count is treated as unusable
/// (cloud, heavy trailing): its weight is `exp(Q_MIN)`.
pub const MIN_STAR_FRACTION: f32 = 0.25;

/// Robust z-scores of `values` over the entries flagged in `use_it`: `(v - median) / scale` with
/// `scale = max(1.4826 MAD, Z_SCALE_FLOOR * |median|, 1e-12)`. The floor keeps variations too small to
/// matter (a homogeneous set of frames has a tiny MAD) from swinging the weights over the whole clamp
/// range; every z is clamped to `[-10, 10]` so a single odd frame cannot produce infinities.
fn robust_z(values: &[f32], use_it: &[bool]) -> Vec<f32> {
    let sample: Vec<f32> = values
        .iter()
        .zip(use_it)
        .filter(|(_, &u)| u)
        .map(|(&v, _)| v)
        .collect();
    let (med, sigma) = median_and_sigma(&sample);
    let scale = if sigma.is_finite() { sigma } else { 0.0 }
        .max(Z_SCALE_FLOOR * med.abs())
        .max(1e-12);
    values
        .iter()
        .map(|&v| ((v - med) / scale).clamp(-10.0, 10.0))
        .collect()
}

/// Global frame weights `G_f = exp(clamp(Q_f, -3, 3))`, one per entry of `q` (see the module docs).
///
/// A frame is usable when its shift was measured, background, noise and FWHM are finite, and it has at
/// least [`MIN_STAR_FRACTION`] of the median star count of the frames with a measured shift; the
/// median/MAD normalisation uses the usable frames only, with the scale floored at [`Z_SCALE_FLOOR`]
/// times the median. Unusable frames get `exp(-3)` (about 0.05).
/// When every frame is alike, all weights are 1.
pub fn global_weights(q: &[FrameQuality]) -> Vec<f32> {
    let counts: Vec<f32> = q
        .iter()
        .filter(|f| f.shift_ok)
        .map(|f| f.stars as f32)
        .collect();
    let median_stars = median(&counts);
    let min_stars = if median_stars.is_finite() {
        (MIN_STAR_FRACTION * median_stars).max(1.0)
    } else {
        1.0
    };
    let usable: Vec<bool> = q
        .iter()
        .map(|f| {
            f.shift_ok
                && f.background.is_finite()
                && f.noise.is_finite()
                && f.fwhm.is_finite()
                && f.stars as f32 >= min_stars
        })
        .collect();
    let zb = robust_z(&q.iter().map(|f| f.background).collect::<Vec<_>>(), &usable);
    let zn = robust_z(&q.iter().map(|f| f.noise).collect::<Vec<_>>(), &usable);
    let zf = robust_z(&q.iter().map(|f| f.fwhm).collect::<Vec<_>>(), &usable);
    (0..q.len())
        .map(|i| {
            let score = if usable[i] {
                -Q_WEIGHT_BACKGROUND * zb[i] - Q_WEIGHT_NOISE * zn[i] - Q_WEIGHT_FWHM * zf[i]
            } else {
                Q_MIN
            };
            score.clamp(Q_MIN, Q_MAX).exp()
        })
        .collect()
}

/// Photometric scale per frame, `scale_f = median(B) / B_f` (median over frames with a finite positive
/// background), so that `I * scale_f` is the normalised frame `I / B_f` in ADU of a typical frame. Frames
/// whose background is not finite and positive get 1.0 (no normalisation), as do all frames when no
/// background is usable.
pub fn photometric_scales(q: &[FrameQuality]) -> Vec<f32> {
    let good: Vec<f32> = q
        .iter()
        .map(|f| f.background)
        .filter(|b| b.is_finite() && *b > 0.0)
        .collect();
    let med = median(&good);
    q.iter()
        .map(|f| {
            let b = f.background;
            if med.is_finite() && med > 0.0 && b.is_finite() && b > 0.0 {
                med / b
            } else {
                1.0
            }
        })
        .collect()
}

/// Most colour planes of a frame: the four Bayer planes (R, G1, G2, B) in cell space; a demosaiced
/// sequence has three (R, G, B).
pub const MAX_PLANES: usize = 4;

/// Per-channel background normalisation: `plane_scales[p] = median over used frames of B_p / B_f,p`
/// (a plane keeps its mean level, so colours are preserved). A frame or plane without a usable
/// background falls back to the frame's luminance scale. `backgrounds` is indexed by
/// [`UsedFrame::index`] (R, G1, G2, B, or R, G, B and NaN for a demosaiced sequence; `None`: not
/// measured).
pub fn set_plane_scales(frames: &mut [UsedFrame], backgrounds: &[Option<[f32; MAX_PLANES]>]) {
    let usable = |b: f32| b.is_finite() && b > 0.0;
    for p in 0..MAX_PLANES {
        let values: Vec<f32> = frames
            .iter()
            .filter_map(|f| backgrounds.get(f.index).copied().flatten().map(|b| b[p]))
            .filter(|&b| usable(b))
            .collect();
        let med = median(&values);
        for f in frames.iter_mut() {
            let b = backgrounds.get(f.index).copied().flatten().map(|b| b[p]);
            f.plane_scales[p] = match b {
                Some(b) if usable(b) && usable(med) => med / b,
                _ => f.scale,
            };
        }
    }
}

/// Why a frame takes no part. Its `Display` is the reason as users read it (events, reports, errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The global pass could not place the frame (too few stars matched the reference).
    GlobalRegistration,
    /// The global weight is not a finite positive number.
    NoWeight,
    /// The photometric scale is not a finite positive number (unusable background).
    Background,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GlobalRegistration => "global registration failed (too few matching stars)",
            Self::NoWeight => "no usable global weight",
            Self::Background => "background level unusable for normalisation",
        })
    }
}

/// The rule: `None` when a frame with this quality, global `weight` and photometric `scale` takes
/// part, else why not (the first failing check, in the order of [`Rejection`]'s variants).
pub fn frame_rejection(quality: &FrameQuality, weight: f32, scale: f32) -> Option<Rejection> {
    if !quality.shift_ok {
        Some(Rejection::GlobalRegistration)
    } else if !(weight.is_finite() && weight > 0.0) {
        Some(Rejection::NoWeight)
    } else if !(scale.is_finite() && scale > 0.0) {
        Some(Rejection::Background)
    } else {
        None
    }
}

/// A frame that takes part in the reconstruction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsedFrame {
    /// Index in the run's frames.
    pub index: usize,
    /// Global weight G_f.
    pub weight: f32,
    /// Photometric scale (I' = I * scale).
    pub scale: f32,
    /// Global shift relative to the geometric reference frame.
    pub shift: Shift,
    /// Colour mode: photometric scale per plane (R, G1, G2, B; or R, G, B), `median_f(B_f,p) / B_f,p`
    /// (per-channel background normalisation, [`set_plane_scales`]); equal to `scale` for mono.
    pub plane_scales: [f32; MAX_PLANES],
    /// Saturation level of each plane (as `plane_scales`; mono: the first) in the frame's own units,
    /// before the scale ([`crate::saturation`]); `None` where unknown.
    pub levels: [Option<f32>; MAX_PLANES],
}

impl UsedFrame {
    /// The whole-pixel part of the global shift (applied by offsetting the read window).
    pub fn offset(&self) -> (isize, isize) {
        offset_of(self.shift)
    }

    /// The sub-pixel rest of the global shift (left to the operator as its prior).
    pub fn prior(&self) -> Shift {
        prior_of(self.shift)
    }

    /// The operator's input for this frame: its weight, scale and prior, for a cut-out offset by
    /// [`UsedFrame::offset`].
    pub fn input(&self) -> FrameInput {
        FrameInput {
            index: self.index,
            weight: self.weight,
            scale: self.scale,
            prior_shift: self.prior(),
        }
    }
}

/// A frame that takes no part, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedFrame {
    /// Index in the run's frames.
    pub index: usize,
    /// Why.
    pub reason: Rejection,
}

/// The outcome of [`select_frames`]: every measured frame is in exactly one list, in frame order.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The frames that take part.
    pub used: Vec<UsedFrame>,
    /// The measured frames that do not.
    pub rejected: Vec<RejectedFrame>,
}

/// Applies [`frame_rejection`] to every measured frame of a run (`None`: not measured, e.g.
/// unreadable; such frames are in neither list), with weights and scales normalised over the measured
/// frames. `plane_scales` of the used frames are their luminance scale (see [`set_plane_scales`]).
pub fn select_frames(qualities: &[Option<FrameQuality>]) -> Selection {
    let measured: Vec<(usize, FrameQuality)> = qualities
        .iter()
        .enumerate()
        .filter_map(|(i, q)| q.map(|q| (i, q)))
        .collect();
    let only: Vec<FrameQuality> = measured.iter().map(|(_, q)| *q).collect();
    let weights = global_weights(&only);
    let scales = photometric_scales(&only);
    let mut selection = Selection {
        used: Vec::with_capacity(measured.len()),
        rejected: Vec::new(),
    };
    for (k, (index, quality)) in measured.iter().enumerate() {
        match frame_rejection(quality, weights[k], scales[k]) {
            Some(reason) => selection.rejected.push(RejectedFrame {
                index: *index,
                reason,
            }),
            None => selection.used.push(UsedFrame {
                index: *index,
                weight: weights[k],
                scale: scales[k],
                shift: quality.shift,
                plane_scales: [scales[k]; 4],
                levels: [None; 4],
            }),
        }
    }
    selection
}

/// Whole-pixel part of a global shift (applied by offsetting the cut-out or read window).
pub fn offset_of(shift: Shift) -> (isize, isize) {
    (shift.dy.round() as isize, shift.dx.round() as isize)
}

/// Sub-pixel rest of a global shift (the operator's prior).
pub fn prior_of(shift: Shift) -> Shift {
    let (oy, ox) = offset_of(shift);
    Shift::new(shift.dy - oy as f32, shift.dx - ox as f32)
}

/// The most frequent kind among `items` (`kind` maps an item to its kind): the first item of that
/// kind and how many items are of it; `None` for no items. On a tie the kind that sorts last wins.
pub fn most_common_by<'a>(
    items: impl IntoIterator<Item = &'a str>,
    kind: impl Fn(&'a str) -> &'a str,
) -> Option<(&'a str, usize)> {
    let mut counts: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for item in items {
        counts.entry(kind(item)).or_insert((item, 0)).1 += 1;
    }
    counts.into_values().max_by_key(|(_, n)| *n)
}

/// The most common kind of tile reason, in full (the first tile's text of that kind, numbers
/// included), with the number of tiles that gave that kind. Numbers differ per tile, so the kind is
/// the words before the first digit.
pub fn most_common_reason(reasons: &[String]) -> Option<String> {
    fn kind(r: &str) -> &str {
        r.split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or(r)
            .trim_end()
    }
    most_common_by(reasons.iter().map(String::as_str), kind).map(|(r, n)| match n {
        1 => format!("{r} (1 tile)"),
        _ => format!("{r} (and {} more tiles of this kind)", n - 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fq(background: f32, noise: f32, fwhm: f32, stars: usize, ok: bool) -> FrameQuality {
        FrameQuality {
            background,
            noise,
            fwhm,
            stars,
            shift: Shift::ZERO,
            shift_ok: ok,
        }
    }

    #[test]
    fn weights_rank_frames_and_tolerate_bad_ones() {
        let mut q: Vec<FrameQuality> = (0..10)
            .map(|i| {
                fq(
                    1000.0 + i as f32,
                    10.0 + 0.1 * i as f32,
                    3.0 + 0.01 * i as f32,
                    200,
                    true,
                )
            })
            .collect();
        q.push(fq(1500.0, 14.0, 3.0, 150, true)); // bright sky (cloud, moon)
        q.push(fq(1004.0, 10.4, 5.0, 120, true)); // blurred
        q.push(fq(1004.0, 10.4, 3.0, 20, true)); // almost no stars
        q.push(fq(f32::NAN, f32::NAN, f32::NAN, 0, false)); // empty frame
        let w = global_weights(&q);
        let typical = w[4];
        assert!(w.iter().all(|v| v.is_finite() && *v > 0.0));
        assert!(w[10] < 0.5 * typical && w[11] < 0.5 * typical, "{w:?}");
        assert_eq!(w[12], Q_MIN.exp());
        assert_eq!(w[13], Q_MIN.exp());
        assert!(w.iter().all(|&v| v <= Q_MAX.exp()));
        // Identical frames: weight 1.
        let same = vec![fq(100.0, 5.0, 2.5, 50, true); 4];
        assert_eq!(global_weights(&same), vec![1.0; 4]);
        assert!(global_weights(&[]).is_empty());
    }

    #[test]
    fn scales_normalise_background() {
        let q = vec![
            fq(100.0, 1.0, 2.0, 9, true),
            fq(200.0, 1.0, 2.0, 9, true),
            fq(400.0, 1.0, 2.0, 9, true),
            fq(f32::NAN, 1.0, 2.0, 9, true),
            fq(-5.0, 1.0, 2.0, 9, true),
        ];
        assert_eq!(photometric_scales(&q), vec![2.0, 1.0, 0.5, 1.0, 1.0]);
    }

    fn q(shift_ok: bool, background: f32, stars: usize, fwhm: f32) -> FrameQuality {
        FrameQuality {
            background,
            noise: 10.0,
            fwhm,
            stars,
            shift: Shift::new(0.3 * stars as f32, -1.7),
            shift_ok,
        }
    }

    /// The code this module replaced, kept verbatim (apart from its error type) as the reference the
    /// new code must reproduce: the batch reader's `select_frames`, live's `frame_problem` and
    /// `most_common`.
    mod old {
        use super::super::{global_weights, photometric_scales};
        use crate::global::FrameQuality;

        /// `stages/src/reader.rs`: (index, weight, scale, shift) of the used frames, (index, reason)
        /// of the skipped ones.
        #[allow(clippy::type_complexity)]
        pub fn reader_select(
            qualities: &[Option<FrameQuality>],
        ) -> (Vec<(usize, f32, f32, crate::Shift)>, Vec<(usize, String)>) {
            let measured: Vec<(usize, FrameQuality)> = qualities
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.map(|q| (i, q)))
                .collect();
            let only: Vec<FrameQuality> = measured.iter().map(|(_, q)| *q).collect();
            let weights = global_weights(&only);
            let scales = photometric_scales(&only);
            let (mut used, mut skipped) = (Vec::new(), Vec::new());
            for (k, (index, quality)) in measured.iter().enumerate() {
                let reason = if !quality.shift_ok {
                    Some("global registration failed (too few matching stars)".to_string())
                } else if !(weights[k].is_finite() && weights[k] > 0.0) {
                    Some("no usable global weight".to_string())
                } else if !(scales[k].is_finite() && scales[k] > 0.0) {
                    Some("background level unusable for normalisation".to_string())
                } else {
                    None
                };
                match reason {
                    Some(reason) => skipped.push((*index, reason)),
                    None => used.push((*index, weights[k], scales[k], quality.shift)),
                }
            }
            (used, skipped)
        }

        /// `src/live.rs`.
        pub fn frame_problem(q: &FrameQuality, weight: f32, scale: f32) -> Option<String> {
            if !q.shift_ok {
                Some("global registration failed (too few matching stars)".to_string())
            } else if !(weight.is_finite() && weight > 0.0) {
                Some("no usable global weight".to_string())
            } else if !(scale.is_finite() && scale > 0.0) {
                Some("background level unusable for normalisation".to_string())
            } else {
                None
            }
        }

        /// `src/live.rs`.
        pub fn most_common(reasons: &[String]) -> Option<String> {
            let mut counts: std::collections::BTreeMap<&str, (&str, usize)> =
                std::collections::BTreeMap::new();
            for r in reasons {
                let key = r.split(|c: char| c.is_ascii_digit()).next().unwrap_or(r);
                counts.entry(key.trim_end()).or_insert((r, 0)).1 += 1;
            }
            counts
                .into_values()
                .max_by_key(|(_, n)| *n)
                .map(|(r, n)| match n {
                    1 => format!("{r} (1 tile)"),
                    _ => format!("{r} (and {} more tiles of this kind)", n - 1),
                })
        }
    }

    /// Hand-made runs: all good; unreadable and unregistered frames; a background so small that its
    /// scale overflows; nothing usable.
    fn runs() -> Vec<Vec<Option<FrameQuality>>> {
        vec![
            (0..6)
                .map(|i| Some(q(true, 1000.0 + 10.0 * i as f32, 50 + i, 3.0)))
                .collect(),
            vec![
                None,
                Some(q(true, 1000.0, 40, 3.1)),
                Some(q(false, 1010.0, 3, f32::NAN)),
                Some(q(true, 1e-45, 42, 2.9)),
                None,
                Some(q(true, f32::NAN, 0, f32::NAN)),
                Some(q(true, 990.0, 41, 3.0)),
                Some(q(false, 1000.0, 40, 3.0)),
            ],
            vec![None, Some(q(false, 1000.0, 2, 3.0)), None],
            vec![],
        ]
    }

    #[test]
    fn selection_chooses_and_words_as_the_batch_reader_did() {
        for (k, run) in runs().iter().enumerate() {
            let (old_used, old_skipped) = old::reader_select(run);
            let new = select_frames(run);
            let used: Vec<_> = new
                .used
                .iter()
                .map(|f| (f.index, f.weight, f.scale, f.shift))
                .collect();
            let skipped: Vec<_> = new
                .rejected
                .iter()
                .map(|r| (r.index, r.reason.to_string()))
                .collect();
            assert_eq!(used, old_used, "run {k}");
            assert_eq!(skipped, old_skipped, "run {k}");
            assert!(new.used.iter().all(|f| f.plane_scales == [f.scale; 4]));
        }
        // The second run exercises two of the three reasons; the overflowing scale is frame 3.
        let new = select_frames(&runs()[1]);
        let reasons: Vec<_> = new.rejected.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(
            reasons,
            [
                (2, Rejection::GlobalRegistration),
                (3, Rejection::Background),
                (7, Rejection::GlobalRegistration)
            ]
        );
        assert_eq!(
            new.used.iter().map(|f| f.index).collect::<Vec<_>>(),
            [1, 5, 6]
        );
    }

    #[test]
    fn the_rule_matches_live_frame_problem_for_every_reason() {
        let values = [1.0, 0.0, -1.0, f32::NAN, f32::INFINITY];
        for ok in [true, false] {
            let quality = q(ok, 1000.0, 40, 3.0);
            for weight in values {
                for scale in values {
                    assert_eq!(
                        frame_rejection(&quality, weight, scale).map(|r| r.to_string()),
                        old::frame_problem(&quality, weight, scale),
                        "{ok} {weight} {scale}"
                    );
                }
            }
        }
        assert_eq!(
            frame_rejection(&q(true, 1.0, 1, 1.0), f32::NAN, 1.0),
            Some(Rejection::NoWeight)
        );
    }

    #[test]
    fn most_common_reason_matches_live() {
        let s = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<String>>();
        let cases = [
            s(&[]),
            s(&["no reference"]),
            s(&[
                "correlation 0.41 below ecc_cc_min 0.50",
                "local shift deviates (3.10, 0.20) px from the recent track (limit 2.00, 2.00 px)",
                "correlation 0.12 below ecc_cc_min 0.50",
            ]),
            // A tie: the kind that sorts last wins.
            s(&["weight not usable", "no usable global weight"]),
            s(&["b 1", "a 2", "b 3", "a 4"]),
        ];
        for reasons in &cases {
            assert_eq!(most_common_reason(reasons), old::most_common(reasons));
        }
        assert_eq!(
            most_common_reason(&cases[2]).as_deref(),
            Some("correlation 0.41 below ecc_cc_min 0.50 (and 1 more tiles of this kind)")
        );
    }

    #[test]
    fn plane_scales_normalise_each_plane_and_fall_back_to_the_frame_scale() {
        let mut frames: Vec<UsedFrame> = select_frames(&[
            Some(q(true, 1000.0, 40, 3.0)),
            None,
            Some(q(true, 1000.0, 40, 3.0)),
            Some(q(true, 1000.0, 40, 3.0)),
        ])
        .used;
        let backgrounds = [
            Some([100.0, 200.0, 200.0, 50.0]),
            None,
            Some([200.0, 200.0, f32::NAN, 50.0]),
            None,
        ];
        set_plane_scales(&mut frames, &backgrounds);
        assert_eq!(frames[0].plane_scales, [1.5, 1.0, 1.0, 1.0]);
        assert_eq!(frames[1].plane_scales, [0.75, 1.0, 1.0, 1.0]);
        assert_eq!(
            frames[2].plane_scales, [1.0; 4],
            "no background: frame scale"
        );
    }

    #[test]
    fn a_global_shift_splits_into_offset_and_prior() {
        let shift = Shift::new(1.6, -2.5);
        assert_eq!(offset_of(shift), (2, -3));
        let prior = prior_of(shift);
        assert!((prior.dy + 0.4).abs() < 1e-6 && (prior.dx - 0.5).abs() < 1e-6);
    }
}
