//! Saturated stars in a run's result: the frames' saturation levels (found by the global pass,
//! [`UsedFrame::levels`]) mapped into the stack's units, and the result's saturated pixels held at that
//! level.
//!
//! What it does not: detect the frames' levels ([`crate::source::FrameStore::saturation_levels`],
//! called by the global pass on every frame it reads whole), demosaic ([`super::ColourResult::rgb`]) or write the header cards ([`crate::output`]).

use ndarray::ArrayViewMut2;

use tlr_core::saturation::{hold_at_level, stack_level};

use super::global_pass::UsedFrame;

/// Fraction of a plane's level from which a sample of the stacked planes counts as clipped for the
/// final demosaic ([`super::ColourResult::rgb`]). An undersampled colour star core (under one plane
/// pixel wide) clips in one sample of each frame at a different sub-pixel place, so the stacked core
/// stays below the level although every frame clipped it, and Malvar-He-Cutler's gradient correction
/// still undershoots next to it.
pub const STACK_CLIPPED_FRACTION: f32 = 0.5;

/// The saturated pixels of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Saturation {
    /// The level of each plane in the result's units (mono: one plane; colour: R, G1, G2, B in cell
    /// space, or R, G, B for frames demosaiced one by one): the
    /// lowest `level * scale` over the combined frames ([`stack_level`]); `None` for a plane no frame
    /// gives a level for.
    pub levels: Vec<Option<f32>>,
    /// Pixels of the result held at their level (colour: samples of every plane).
    pub pixels: usize,
}

impl Saturation {
    /// The lowest level over the planes (what a `SATURATE` card says: a pixel at or above it may be
    /// saturated); `None` when no plane has one.
    pub fn level(&self) -> Option<f32> {
        self.levels.iter().flatten().copied().reduce(f32::min)
    }
}

/// Maps the combined frames' levels into the stack's units (mono: the frame's photometric scale; colour:
/// each plane's scale) and holds every pixel of `planes` (one image per plane) above its level at it.
/// `None` when no frame has a level.
pub(super) fn hold_saturated<'a>(
    combined: &[&UsedFrame],
    colour: bool,
    planes: impl IntoIterator<Item = ArrayViewMut2<'a, f32>>,
) -> Option<Saturation> {
    let mut levels = Vec::new();
    let mut pixels = 0;
    for (p, plane) in planes
        .into_iter()
        .enumerate()
        .take(tlr_core::select::MAX_PLANES)
    {
        let level = stack_level(combined.iter().map(|f| {
            let scale = if colour { f.plane_scales[p] } else { f.scale };
            (f.levels[p], scale)
        }));
        if let Some(level) = level {
            pixels += hold_at_level(plane, level);
        }
        levels.push(level);
    }
    levels
        .iter()
        .any(Option::is_some)
        .then_some(Saturation { levels, pixels })
}
