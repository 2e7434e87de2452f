//! Saturation: the level at which a frame's samples clip, from its header or from its data, mapped into
//! the stack's units, and the stack's saturated pixels held at that level.
//!
//! What it does:
//! - [`detect_level`]: a pile-up of the maximum value. A sensor (or its driver) clips every over-exposed
//!   pixel at the same value, so a saturated frame holds several pixels at exactly its maximum, while an
//!   unsaturated frame's maximum is one star's peak, rarely tied. The rule: at least
//!   [`MIN_PILE_UP`] finite samples within [`PILE_UP_TOLERANCE`] (relative) of the maximum.
//! - [`frame_levels`]: one level per plane (a colour camera's driver may clip each CFA colour at its own
//!   value: the M27 frames clip red at 65534 and green and blue at 65504): the detected pile-up, or
//!   the header's `SATURATE`/`DATAMAX` when the plane has none; the lower of the two when both exist.
//! - [`stack_level`]: a frame's level in the stack's units is `level * scale` (the photometric scale
//!   the frame is normalised with); the stack's level is the lowest over the frames that have one, i.e.
//!   the value every saturated frame reaches: a pixel saturated in all frames combines to at least it.
//! - [`hold_at_level`]: values above the level are set to it (resampling and the spread of the frames'
//!   scaled levels otherwise leave a saturated core uneven and above the level), and counts the pixels at
//!   the level.
//! - [`mosaic_levels`], [`mosaic_mask`], [`clipped_mask`], [`demosaic_levels`]: the levels of a Bayer
//!   mosaic's colours, which of its samples count as clipped or bright for the demosaic (at or above a
//!   fraction of their colour's level), and the demosaic that keeps from undershooting next to them.
//!
//! What it does not: repair saturated stars (their flux above the level is lost), read files or headers
//! (the caller passes `SATURATE`/`DATAMAX`), or demosaic ([`crate::bayer::demosaic_clipped`] takes the
//! mask).

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, Axis};

use crate::bayer::{merge_planes, split_planes, BayerError, CfaPattern, PLANES};

/// Fraction of a plane's level from which a sample counts as bright for
/// [`crate::bayer::demosaic_clipped`] (its estimates next to it are kept from undershooting). Measured
/// on the M27 frames (6 frames, RGGB, stars about 1.6 px wide; level 65504-65534 ADU) on a
/// translation-only model of the frame-by-frame demosaic path: plain, 137 sigma below the sky in blue;
/// with 0.05, 9.3 sigma; with 0.02 or 0.01, 8.1 sigma. The whole run with 0.05 (and deringing of the
/// planes): 8.5 sigma, star FWHM 2.23 px against 2.22.
pub const BRIGHT_FRACTION: f32 = 0.05;

/// Fewest samples at a plane's maximum that make a pile-up (a saturation level).
pub const MIN_PILE_UP: usize = 3;

/// Relative distance to the maximum within which a sample counts as at the maximum (float rounding of
/// scaled integer data).
pub const PILE_UP_TOLERANCE: f32 = 1e-6;

/// The saturation level of a plane detected from its data (see the module docs); `None` without a
/// pile-up of the maximum or without a finite positive maximum.
pub fn detect_level(plane: ArrayView2<f32>) -> Option<f32> {
    let max = plane
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !(max.is_finite() && max > 0.0) {
        return None;
    }
    let floor = max - max * PILE_UP_TOLERANCE;
    let at_max = plane.iter().filter(|&&v| v >= floor).count();
    (at_max >= MIN_PILE_UP).then_some(max)
}

/// The saturation level of each plane of a frame `(planes, rows, cols)`: the detected pile-up
/// ([`detect_level`]) or `header` (`SATURATE`/`DATAMAX`, in the data's units), the lower of the two
/// when both exist; `None` for a plane with neither (or a header value that is not finite and positive).
pub fn frame_levels(planes: ArrayView3<f32>, header: Option<f64>) -> Vec<Option<f32>> {
    let header = header
        .map(|h| h as f32)
        .filter(|h| h.is_finite() && *h > 0.0);
    planes
        .axis_iter(Axis(0))
        .map(|plane| match (detect_level(plane), header) {
            (Some(d), Some(h)) => Some(d.min(h)),
            (d, h) => d.or(h),
        })
        .collect()
}

/// The stack's saturation level from the frames' `(level, scale)`: the lowest `level * scale` over the
/// frames with a level and a finite positive scale; `None` when no frame has one.
pub fn stack_level(frames: impl IntoIterator<Item = (Option<f32>, f32)>) -> Option<f32> {
    frames
        .into_iter()
        .filter_map(|(level, scale)| level.map(|l| l * scale))
        .filter(|l| l.is_finite() && *l > 0.0)
        .reduce(f32::min)
}

/// Sets every value above `level` to `level` and returns how many pixels are then at the level
/// (`NaN`s stay `NaN`).
pub fn hold_at_level(mut image: ArrayViewMut2<f32>, level: f32) -> usize {
    let mut at = 0;
    for v in image.iter_mut() {
        if *v >= level {
            *v = level;
            at += 1;
        }
    }
    at
}

/// The saturation levels of a Bayer mosaic's four colours R, G1, G2, B ([`frame_levels`] of its
/// planes; `header`: `SATURATE`/`DATAMAX` in the data's units).
pub fn mosaic_levels(cfa: ArrayView2<f32>, pattern: CfaPattern, header: Option<f64>) -> CfaLevels {
    let mut levels = [None; PLANES];
    let found = frame_levels(split_planes(cfa, pattern).view(), header);
    for (l, f) in levels.iter_mut().zip(found) {
        *l = f;
    }
    levels
}

/// The saturation level of each colour of a Bayer mosaic: R, G1 (the green in R's rows), G2, B.
pub type CfaLevels = [Option<f32>; PLANES];

/// Which samples of a Bayer mosaic (`pattern`) are at or above `fraction` of their colour's level
/// (`levels`: R, G1, G2, B; a colour without a level has none), for [`crate::bayer::demosaic_clipped`].
/// Each sample is judged on its own: a region of a mosaic gets the same mask as the same pixels of the
/// whole mosaic (with the region's pattern, [`CfaPattern::shifted`]).
pub fn mosaic_mask(
    cfa: ArrayView2<f32>,
    pattern: CfaPattern,
    levels: &CfaLevels,
    fraction: f32,
) -> Array2<bool> {
    let offsets = pattern.plane_offsets();
    let mut from = [f32::INFINITY; 4]; // by (row parity, column parity)
    for (p, &(dy, dx)) in offsets.iter().enumerate() {
        if let Some(level) = levels[p] {
            from[dy * 2 + dx] = level * fraction;
        }
    }
    Array2::from_shape_fn(cfa.dim(), |(y, x)| {
        cfa[[y, x]] >= from[(y & 1) * 2 + (x & 1)]
    })
}

/// The full-resolution mask of clipped samples of Bayer `planes` `(4, H/2, W/2)` (R, G1, G2, B in
/// cell space): [`mosaic_mask`] of their mosaic. A frame's own samples clip at the level itself
/// (`fraction` 1); a stack of undersampled cores may stay below it (each frame clipped a different
/// sub-pixel place), which a lower `fraction` catches.
///
/// # Errors
/// [`BayerError::BadShape`] when the planes are not four.
pub fn clipped_mask(
    planes: ArrayView3<f32>,
    levels: &CfaLevels,
    fraction: f32,
    pattern: CfaPattern,
) -> Result<Array2<bool>, BayerError> {
    let cfa = merge_planes(planes, pattern)?;
    Ok(mosaic_mask(cfa.view(), pattern, levels, fraction))
}

/// Demosaics a mosaic whose colours clip at `levels` (R, G1, G2, B): the plain Malvar-He-Cutler
/// ([`crate::bayer::demosaic`]) when no colour has a level, else [`crate::bayer::demosaic_clipped`]
/// with the samples at `clipped_fraction` of their level as clipped and those at [`BRIGHT_FRACTION`]
/// of it as bright. Bit for bit the plain demosaic where no kernel meets such a sample.
///
/// # Errors
/// As [`crate::bayer::demosaic`].
pub fn demosaic_levels(
    cfa: ArrayView2<f32>,
    pattern: CfaPattern,
    levels: &CfaLevels,
    clipped_fraction: f32,
) -> Result<Array3<f32>, BayerError> {
    if levels.iter().all(Option::is_none) {
        return crate::bayer::demosaic(cfa, pattern);
    }
    let clipped = mosaic_mask(cfa, pattern, levels, clipped_fraction);
    let bright = mosaic_mask(cfa, pattern, levels, BRIGHT_FRACTION);
    crate::bayer::demosaic_clipped(cfa, pattern, clipped.view(), bright.view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    #[test]
    fn a_pile_up_of_the_maximum_is_a_level_a_lone_peak_is_not() {
        let mut img = Array2::from_shape_fn((20, 20), |(y, x)| 100.0 + (y * 20 + x) as f32);
        assert_eq!(detect_level(img.view()), None, "a lone maximum");
        img[[3, 3]] = 4095.0;
        img[[3, 4]] = 4095.0;
        assert_eq!(detect_level(img.view()), None, "two ties are chance");
        img[[4, 3]] = 4095.0;
        assert_eq!(detect_level(img.view()), Some(4095.0));
        img[[0, 0]] = f32::NAN;
        assert_eq!(detect_level(img.view()), Some(4095.0), "NaN is ignored");
        assert_eq!(detect_level(Array2::<f32>::zeros((4, 4)).view()), None);
        assert_eq!(
            detect_level(Array2::from_elem((4, 4), f32::NAN).view()),
            None
        );
    }

    #[test]
    fn levels_per_plane_take_the_lower_of_header_and_data() {
        let mut planes = Array3::from_shape_fn((2, 8, 8), |(_, y, x)| (y * 8 + x) as f32);
        for x in 0..4 {
            planes[[1, 0, x]] = 65504.0;
        }
        assert_eq!(frame_levels(planes.view(), None), vec![None, Some(65504.0)]);
        assert_eq!(
            frame_levels(planes.view(), Some(65535.0)),
            vec![Some(65535.0), Some(65504.0)]
        );
        assert_eq!(
            frame_levels(planes.view(), Some(60000.0)),
            vec![Some(60000.0), Some(60000.0)]
        );
        assert_eq!(frame_levels(planes.view(), Some(f64::NAN))[0], None);
    }

    #[test]
    fn the_stack_level_is_the_lowest_scaled_level() {
        assert_eq!(
            stack_level([(Some(100.0), 1.1), (None, 1.0), (Some(100.0), 0.9)]),
            Some(90.0)
        );
        assert_eq!(stack_level([(None, 1.0)]), None);
        assert_eq!(stack_level([(Some(100.0), f32::NAN)]), None);
    }

    #[test]
    fn holding_caps_and_counts() {
        let mut img = Array2::from_shape_vec((1, 5), vec![1.0, 5.0, 7.0, f32::NAN, 4.9]).unwrap();
        assert_eq!(hold_at_level(img.view_mut(), 5.0), 2);
        assert_eq!(img[[0, 2]], 5.0);
        assert!(img[[0, 3]].is_nan());
        assert_eq!(img[[0, 4]], 4.9);
    }

    #[test]
    fn the_mask_marks_samples_at_the_fraction_of_their_planes_level() {
        let mut planes = Array3::from_elem((4, 3, 3), 100.0f32);
        planes[[0, 1, 1]] = 1000.0; // R at its level
        planes[[1, 0, 0]] = 600.0; // G1 at 60 % of its level
        planes[[3, 2, 2]] = 5000.0; // B: no level
        let levels = [Some(1000.0), Some(1000.0), Some(1000.0), None];
        let full = clipped_mask(planes.view(), &levels, 1.0, CfaPattern::Rggb).unwrap();
        assert_eq!(full.dim(), (6, 6));
        assert_eq!(full.iter().filter(|&&c| c).count(), 1);
        assert!(full[[2, 2]], "R of cell (1, 1) is at (2, 2) in RGGB");
        let half = clipped_mask(planes.view(), &levels, 0.5, CfaPattern::Rggb).unwrap();
        assert!(half[[0, 1]], "G1 of cell (0, 0) is at (0, 1) in RGGB");
        assert_eq!(half.iter().filter(|&&c| c).count(), 2);
        let three = Array3::<f32>::zeros((3, 3, 3));
        assert!(clipped_mask(three.view(), &levels, 1.0, CfaPattern::Rggb).is_err());
    }
}
