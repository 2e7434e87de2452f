//! The colour planes of a tile (the four Bayer planes in cell space, or R, G, B of frames demosaiced one
//! by one), reconstructed with the registration,
//! weights and frames of an already reconstructed proxy (the luminance), each with its own per-pixel
//! rejection. Planes of frames demosaiced from a mosaic that say which pixels are their own samples
//! ([`PlaneStack::own`]) are drizzled from those samples ([`super::drizzle`]).
//! What it does not: register (the proxy's shifts are used) or mix planes.

use ndarray::{Array2, Array3, ArrayView2};

use super::combine;
use super::despike::despike_plane;
use super::drizzle::{self, OwnSamples};
use super::{OperatorParams, TileResult, TileStack};
use crate::geom::Shift;
use crate::resample::Resampler;

/// One colour plane's cut-outs for a tile, in the stack's frame order, with its own photometric scales.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneStack {
    /// Cut-outs, shape `(frames, h + 2 margin, w + 2 margin)` like [`TileStack::cutouts`].
    pub cutouts: Array3<f32>,
    /// Per-frame photometric scale of this plane (`I' = I * scale`; per-channel background normalisation).
    pub scales: Vec<f32>,
    /// For a plane of frames demosaiced from a Bayer mosaic: per frame, which pixels of its cut-out are
    /// the plane's own samples (the rest were interpolated); the plane is then drizzled from them
    /// ([`super::drizzle`]). `None`: every pixel is a sample.
    pub own: Option<Vec<OwnSamples>>,
}

/// Reconstructs further planes of a tile (the four Bayer planes, or R, G, B) with the registration of an
/// already reconstructed proxy (`result`, from [`super::reconstruct_tile`] on `stack`, e.g. the luminance):
/// every plane is despiked ([`despike_plane`]: star cores, lit in the other colours too, are kept),
/// resampled at the SAME final per-frame shifts and combined with the SAME
/// weights and frames as the proxy, with per-pixel sigma clipping of its own (median start, then
/// `min(iterations, 2)` clipped means). Each plane is resampled on its own grid: planes are never mixed.
///
/// Returns one `(h, w)` image per plane; all `NaN` when the tile is invalid or a plane's shape or scale
/// list does not match the stack (never panics).
pub fn reconstruct_planes(
    result: &TileResult,
    stack: &TileStack,
    planes: &[PlaneStack],
    params: &OperatorParams,
) -> Vec<Array2<f32>> {
    let (h, w, m) = (stack.tile.h, stack.tile.w, stack.margin);
    let np = h * w;
    let blank = || Array2::from_elem((h, w), f32::NAN);
    let n = stack.frames.len();
    // Used frames in time order (the operator's accumulation order), with their final shift and weight.
    let mut used: Vec<(usize, Shift, f32)> = result
        .frames
        .iter()
        .enumerate()
        .filter(|(slot, r)| *slot < n && r.status.is_used() && r.weight > 0.0)
        .map(|(slot, r)| (slot, r.shift, r.weight))
        .collect();
    used.sort_by_key(|&(slot, _, _)| stack.frames[slot].index);
    if !result.valid || used.is_empty() || result.frames.len() != n {
        return planes.iter().map(|_| blank()).collect();
    }
    // Planes that match the stack take part (in the despike's cross-colour test too); others are NaN.
    let shaped: Vec<bool> = planes
        .iter()
        .map(|q| q.cutouts.dim() == stack.cutouts.dim())
        .collect();
    let fits: Vec<bool> = planes
        .iter()
        .zip(&shaped)
        .map(|(q, &ok)| ok && q.scales.len() == n)
        .collect();
    // Planes to drizzle, with their per-frame resampled own samples and coverage (frame-major).
    let own_of = |p: usize| {
        planes[p]
            .own
            .as_ref()
            .filter(|o| fits[p] && o.len() == n && o.iter().any(|c| c.contains(&false)))
    };
    let mut own_terms: Vec<(Vec<f32>, Vec<f32>)> = (0..planes.len())
        .map(|p| match own_of(p) {
            Some(_) => (vec![f32::NAN; n * np], vec![f32::NAN; n * np]),
            None => (Vec::new(), Vec::new()),
        })
        .collect();
    let mut aligned: Vec<Vec<f32>> = fits
        .iter()
        .map(|&ok| {
            if ok {
                vec![f32::NAN; n * np]
            } else {
                Vec::new()
            }
        })
        .collect();
    // With deringing, as the proxy: next to a star under two pixels wide (an undersampled colour
    // plane) plain Lanczos-3 undershoots below the sky (M27: -447 ADU two pixels from a 48000 ADU peak).
    let mut resampler = Resampler::new().with_deringing(true);
    // The drizzle's terms are linear in the samples: never deringed.
    let mut plain = Resampler::new();
    for &(slot, shift, _) in &used {
        let frame: Vec<ArrayView2<f32>> = planes
            .iter()
            .zip(&shaped)
            .filter(|(_, &ok)| ok)
            .map(|(q, _)| q.cutouts.index_axis(ndarray::Axis(0), slot))
            .collect();
        // Plane p's position among the frame's matching planes, and its despiked cut-out.
        let own = |p: usize| shaped[..p].iter().filter(|&&ok| ok).count();
        let cleaned: Vec<Option<Array2<f32>>> = (0..planes.len())
            .map(|p| {
                if fits[p] {
                    despike_plane(&frame, own(p))
                } else {
                    None
                }
            })
            .collect();
        let cut = |p: usize| cleaned[p].as_ref().map_or(frame[own(p)], |c| c.view());
        for p in (0..planes.len()).filter(|&p| fits[p]) {
            let origin = (m as f32 + shift.dy, m as f32 + shift.dx);
            let dst = &mut aligned[p][slot * np..(slot + 1) * np];
            if let Ok(view) = ndarray::ArrayViewMut2::from_shape((h, w), &mut dst[..]) {
                resampler.sample_shifted(cut(p), origin.0, origin.1, view);
            }
            let scale = planes[p].scales[slot];
            for v in dst.iter_mut() {
                *v *= scale;
            }
            if let Some(own) = own_of(p) {
                let (values, cover) = &mut own_terms[p];
                let (values, cover) = (
                    &mut values[slot * np..(slot + 1) * np],
                    &mut cover[slot * np..(slot + 1) * np],
                );
                if let (Ok(vv), Ok(cv)) = (
                    ndarray::ArrayViewMut2::from_shape((h, w), &mut values[..]),
                    ndarray::ArrayViewMut2::from_shape((h, w), &mut cover[..]),
                ) {
                    drizzle::resample_own_samples(&mut plain, cut(p), own[slot], origin, vv, cv);
                }
                for v in values.iter_mut() {
                    *v *= scale;
                }
            }
        }
    }
    let slots: Vec<usize> = used.iter().map(|&(s, _, _)| s).collect();
    let subset = combine::median_subset(&slots);
    let weights: Vec<(usize, f32)> = used.iter().map(|&(s, _, wt)| (s, wt)).collect();
    // All planes are drizzled or none: a luminance of drizzled green and demosaiced red and blue has
    // a colour-dependent profile (M27: FWHM 2.32 px against 2.23 px for all demosaiced).
    let with_own: Vec<&[OwnSamples]> = (0..planes.len())
        .filter_map(own_of)
        .map(|o| &o[..])
        .collect();
    let drizzle_all = !with_own.is_empty()
        && with_own
            .iter()
            .all(|own| drizzle::covers_the_period(&used, own, m));
    aligned
        .iter()
        .zip(&own_terms)
        .enumerate()
        .map(|(p, (aligned, (own_values, own_cover)))| {
            if aligned.is_empty() {
                return blank();
            }
            let (mut center, mut spread) = combine::median_and_scale(aligned, np, &subset);
            let mut image = center.clone();
            let mut bounds = (Vec::new(), Vec::new());
            for _ in 0..params.iterations.clamp(1, 2) {
                bounds = combine::clip_bounds(np, &center, &spread, params.rejection_kappa);
                let combined = combine::clipped_mean(
                    aligned,
                    np,
                    &weights,
                    &center,
                    &spread,
                    params.rejection_kappa,
                );
                center.clone_from(&combined.image);
                spread = combined.scale;
                image = combined.image;
            }
            let own = own_of(p).map_or(&[][..], |o| &o[..]);
            if !own_values.is_empty() && drizzle_all {
                let bounds = (&bounds.0[..], &bounds.1[..]);
                let terms = (&own_values[..], &own_cover[..], own);
                image = drizzle::combine(&used, aligned, terms, bounds, (&image, w));
            }
            Array2::from_shape_vec((h, w), image).unwrap_or_else(|_| blank())
        })
        .collect()
}
