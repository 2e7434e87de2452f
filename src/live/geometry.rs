//! The geometry a live session stacks in, and every frame's linear motion relative to it.
//!
//! A batch run stacks in the sequence's mean geometry ([`crate::global::mean_geometry`] of all frames'
//! [`FrameTransform`]s). A live session cannot know the frames still to come, so its output geometry is
//! the robust mean of its **bootstrap frames'** transforms ([`session_base`]): fixed for the session and
//! stored in the checkpoint, so a resumed session stacks in the same geometry. Every frame's motion is
//! then expressed relative to it ([`relative_motion`]): its translation places the cut-outs, and the
//! tile prior at each tile centre ([`FrameTransform::tile_prior`], the function batch tile jobs use)
//! follows the frame's rotation and stretch, as in batch.
//!
//! What it does not: measure transforms (the global pass does) or choose the batch run's geometry.

use crate::global::{mean_geometry, FrameQuality, FrameTransform};

/// A frame's transform relative to the global reference frame: the measured one, else its
/// translation about `centre` (frames measured with [`crate::global::GlobalPass::add_frame`] only).
pub(super) fn measured(
    quality: &FrameQuality,
    transform: Option<&FrameTransform>,
    centre: (f32, f32),
) -> FrameTransform {
    transform
        .copied()
        .unwrap_or_else(|| FrameTransform::translation(quality.shift, centre))
}

/// The session's output geometry relative to the global reference frame: the robust, unweighted mean
/// of the used bootstrap frames' transforms (`centre`: the image centre, for frames without one).
pub(super) fn session_base(
    frames: &[(FrameQuality, Option<FrameTransform>)],
    centre: (f32, f32),
) -> FrameTransform {
    let centre = frames
        .iter()
        .find_map(|(_, t)| t.map(|t| t.centre))
        .unwrap_or(centre);
    let transforms: Vec<FrameTransform> = frames
        .iter()
        .map(|(q, t)| measured(q, t.as_ref(), centre))
        .collect();
    mean_geometry(&transforms)
        .unwrap_or_else(|| FrameTransform::translation(crate::Shift::ZERO, centre))
}

/// A frame's motion relative to the session's geometry `base` (both relative to the global reference
/// frame). A singular `base` (never from [`session_base`] of real frames) leaves the translation
/// relative to it.
pub(super) fn relative_motion(
    base: &FrameTransform,
    quality: &FrameQuality,
    transform: Option<&FrameTransform>,
) -> FrameTransform {
    let own = measured(quality, transform, base.centre);
    own.relative_to(base)
        .unwrap_or_else(|| FrameTransform::translation(own.shift - base.shift, base.centre))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shift, TileBox};

    fn quality(dy: f32, dx: f32) -> FrameQuality {
        FrameQuality {
            background: 100.0,
            noise: 5.0,
            fwhm: 2.5,
            stars: 40,
            shift: Shift::new(dy, dx),
            shift_ok: true,
        }
    }

    fn rotated(dy: f32, dx: f32, angle_deg: f32) -> FrameTransform {
        let (s, c) = angle_deg.to_radians().sin_cos();
        FrameTransform {
            shift: Shift::new(dy, dx),
            centre: (64.0, 64.0),
            linear: [[c - 1.0, s], [-s, c - 1.0]],
        }
    }

    #[test]
    fn frames_are_placed_relative_to_the_bootstrap_mean_with_per_tile_priors() {
        let boot: Vec<(FrameQuality, Option<FrameTransform>)> = [(0.0, 0.0, 0.0), (2.0, -1.0, 0.2)]
            .iter()
            .map(|&(dy, dx, a)| (quality(dy, dx), Some(rotated(dy, dx, a))))
            .collect();
        let base = session_base(&boot, (0.0, 0.0));
        assert!((base.shift.dy - 1.0).abs() < 1e-5 && (base.shift.dx + 0.5).abs() < 1e-5);
        assert!(
            (base.rotation_deg() - 0.1).abs() < 1e-3,
            "{}",
            base.rotation_deg()
        );
        // The bootstrap frames move symmetrically about it.
        let a = relative_motion(&base, &boot[0].0, boot[0].1.as_ref());
        let b = relative_motion(&base, &boot[1].0, boot[1].1.as_ref());
        assert!((a.shift + b.shift).norm() < 1e-4);
        assert!((a.rotation_deg() + b.rotation_deg()).abs() < 1e-3);
        // A rotated frame's priors differ between opposite tiles; a translation's do not.
        let tile = |x0| TileBox {
            index: 0,
            x0,
            y0: 48,
            w: 32,
            h: 32,
        };
        let (left, right) = (
            b.tile_prior(&tile(0), (0, 0)),
            b.tile_prior(&tile(96), (0, 0)),
        );
        assert!((left.dy - right.dy).abs() > 0.1, "{left:?} {right:?}");
        let plain = relative_motion(&base, &quality(3.0, 3.0), None);
        let (l, r) = (
            plain.tile_prior(&tile(0), (2, 3)),
            plain.tile_prior(&tile(96), (2, 3)),
        );
        assert!((l.dy - r.dy).abs() > 0.1, "relative to a rotated base");
        assert!((l.dx - r.dx).abs() < 1e-3, "{l:?} {r:?}");
    }
}
