//! The output's geometry: which linear geometry the stack is reconstructed in, and every frame's
//! linear motion relative to it.
//!
//! The global pass measures each frame's [`FrameTransform`] against the geometric reference (the first
//! frame with enough stars): its translation plus a small linear term (field rotation, differential
//! refraction, the large-scale part of the seeing). That reference frame is one instant of the
//! sequence; the sky's geometry is the time mean. [`mean_geometry`] is the robust, unweighted mean of
//! the frames' transforms (per parameter: the mean of the values within 3 robust sigma of the median),
//! so quality weights never move stars; [`FrameTransform::relative_to`] re-expresses a frame's motion
//! relative to a chosen base (the mean, or one frame's geometry for `--reference-frame`), and
//! [`output_to_reference`] states the output grid relative to the reference frame's pixels (for the
//! WCS).
//!
//! What it does not: measure anything (the global pass and [`super::match_stars`] do), or handle the
//! local (per-tile) part of the motion: the tile operator makes that zero-mean per tile around these
//! linear priors, so the local field averages out in the same mean geometry.

use super::FrameTransform;
use crate::fits::PixelMap;
use crate::geom::{Shift, TileBox};
use crate::stats::median_and_sigma;

/// `I + L` of a transform, in `f64`.
fn matrix(t: &FrameTransform) -> [[f64; 2]; 2] {
    let l = &t.linear;
    [
        [1.0 + f64::from(l[0][0]), f64::from(l[0][1])],
        [f64::from(l[1][0]), 1.0 + f64::from(l[1][1])],
    ]
}

fn mul(a: &[[f64; 2]; 2], b: &[[f64; 2]; 2]) -> [[f64; 2]; 2] {
    [
        [
            a[0][0] * b[0][0] + a[0][1] * b[1][0],
            a[0][0] * b[0][1] + a[0][1] * b[1][1],
        ],
        [
            a[1][0] * b[0][0] + a[1][1] * b[1][0],
            a[1][0] * b[0][1] + a[1][1] * b[1][1],
        ],
    ]
}

fn inverse(m: &[[f64; 2]; 2]) -> Option<[[f64; 2]; 2]> {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    (det.is_finite() && det.abs() > 1e-9).then(|| {
        [
            [m[1][1] / det, -m[0][1] / det],
            [-m[1][0] / det, m[0][0] / det],
        ]
    })
}

impl FrameTransform {
    /// This frame's motion relative to `base` instead of the reference frame: a feature at position `q`
    /// of `base`'s geometry appears in this frame at `q + relative.displacement_at(q)`. Both must share
    /// the same `centre` (the global pass expands every transform about the image centre); the result
    /// is expanded about it too. `None` when `base`'s linear part is singular.
    ///
    /// With `a(p) = p + s + L (p - c)` for this frame and `b` for the base, the relative map is
    /// `a(b⁻¹(q))`: shift `s_a - M_a M_b⁻¹ s_b` and linear part `M_a M_b⁻¹ - I` (`M = I + L`).
    pub fn relative_to(&self, base: &FrameTransform) -> Option<FrameTransform> {
        let mb_inv = inverse(&matrix(base))?;
        let m = mul(&matrix(self), &mb_inv);
        let (sb_y, sb_x) = (f64::from(base.shift.dy), f64::from(base.shift.dx));
        let shift = Shift::new(
            (f64::from(self.shift.dy) - (m[0][0] * sb_y + m[0][1] * sb_x)) as f32,
            (f64::from(self.shift.dx) - (m[1][0] * sb_y + m[1][1] * sb_x)) as f32,
        );
        Some(FrameTransform {
            shift,
            centre: self.centre,
            linear: [
                [(m[0][0] - 1.0) as f32, m[0][1] as f32],
                [m[1][0] as f32, (m[1][1] - 1.0) as f32],
            ],
        })
    }

    /// The operator's prior shift of `tile` for a frame with this motion (relative to the output
    /// geometry) whose cut-out of the tile is read at the whole-pixel `offset` `(rows, cols)`: the
    /// displacement at the tile centre (rotation and stretch give every tile its own prior) minus the
    /// offset. Batch tile jobs and live tiles both take their priors from here.
    pub fn tile_prior(&self, tile: &TileBox, offset: (isize, isize)) -> Shift {
        let centre_y = tile.y0 as f32 + 0.5 * (tile.h as f32 - 1.0);
        let centre_x = tile.x0 as f32 + 0.5 * (tile.w as f32 - 1.0);
        let d = self.displacement_at(centre_y, centre_x);
        Shift::new(d.dy - offset.0 as f32, d.dx - offset.1 as f32)
    }
}

/// The mean geometry of a sequence: the robust unweighted mean of the frames' transforms (all expanded
/// about the same centre), per parameter the mean of the values within 3 robust sigma (MAD) of their
/// median, so one badly matched frame cannot move it. `None` without transforms.
pub fn mean_geometry(transforms: &[FrameTransform]) -> Option<FrameTransform> {
    let first = transforms.first()?;
    let robust_mean = |get: &dyn Fn(&FrameTransform) -> f32| -> f32 {
        let values: Vec<f32> = transforms.iter().map(get).collect();
        let (centre, sigma) = median_and_sigma(&values);
        let limit = 3.0 * sigma;
        let kept: Vec<f64> = values
            .iter()
            .filter(|&&v| !(sigma > 0.0) || (v - centre).abs() <= limit)
            .map(|&v| f64::from(v))
            .collect();
        if kept.is_empty() {
            centre
        } else {
            (kept.iter().sum::<f64>() / kept.len() as f64) as f32
        }
    };
    Some(FrameTransform {
        shift: Shift::new(robust_mean(&|t| t.shift.dy), robust_mean(&|t| t.shift.dx)),
        centre: first.centre,
        linear: [
            [
                robust_mean(&|t| t.linear[0][0]),
                robust_mean(&|t| t.linear[0][1]),
            ],
            [
                robust_mean(&|t| t.linear[1][0]),
                robust_mean(&|t| t.linear[1][1]),
            ],
        ],
    })
}

/// The output grid relative to the reference frame as a [`PixelMap`] (output pixel -> reference
/// pixel, `(x, y)` order) when the output is in `base`'s geometry (a transform relative to the
/// reference frame): the reference pixel of output `q` is `b⁻¹(q) = c + M⁻¹ (q - c - s)`.
/// `cell` is the size in pixels of one grid step of the measured space (2 for colour runs, which
/// work in 2x2 cells whose cell `(i, j)` is the pixels `2i..2i+2`; 1 for mono). `None` when `base`
/// is singular.
pub fn output_to_reference(base: &FrameTransform, cell: f64) -> Option<PixelMap> {
    let inv = inverse(&matrix(base))?;
    // In the measured space, (y, x) order: p = c + inv (q - c - s).
    // Pixels: P = cell * p + (cell - 1) / 2 for both grids.
    let half = (cell - 1.0) / 2.0;
    let (cy, cx) = (f64::from(base.centre.0), f64::from(base.centre.1));
    let (sy, sx) = (f64::from(base.shift.dy), f64::from(base.shift.dx));
    // P = cell c + half + inv (Q - half - cell c - cell s)
    let ky = cell * cy + half;
    let kx = cell * cx + half;
    let (oy, ox) = (ky + cell * sy, kx + cell * sx);
    // (y, x) = (ky, kx) + inv ((Qy, Qx) - (oy, ox)); the offset is the value at Q = 0.
    let off_y = ky - (inv[0][0] * oy + inv[0][1] * ox);
    let off_x = kx - (inv[1][0] * oy + inv[1][1] * ox);
    Some(PixelMap {
        // Row-major [[dxr/dxo, dxr/dyo], [dyr/dxo, dyr/dyo]] from inv in (y, x) order.
        matrix: [[inv[1][1], inv[1][0]], [inv[0][1], inv[0][0]]],
        offset: [off_x, off_y],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform(dy: f32, dx: f32, angle_deg: f32) -> FrameTransform {
        let (s, c) = angle_deg.to_radians().sin_cos();
        FrameTransform {
            shift: Shift::new(dy, dx),
            centre: (50.0, 80.0),
            // A rotation turning +x towards +y, in (y, x) order: y' = c y + s x, x' = -s y + c x.
            linear: [[c - 1.0, s], [-s, c - 1.0]],
        }
    }

    #[test]
    fn a_frame_relative_to_itself_does_not_move_and_relative_maps_compose() {
        let a = transform(1.5, -2.0, 0.4);
        let b = transform(-0.7, 0.3, -0.2);
        let me = a.relative_to(&a).unwrap();
        for (y, x) in [(0.0f32, 0.0f32), (99.0, 159.0), (50.0, 80.0)] {
            assert!(me.displacement_at(y, x).norm() < 1e-4);
        }
        // a(p) = q_b + rel(q_b) where q_b = b(p).
        let rel = a.relative_to(&b).unwrap();
        for (y, x) in [(3.0f32, 7.0f32), (90.0, 150.0), (50.0, 80.0)] {
            let da = a.displacement_at(y, x);
            let db = b.displacement_at(y, x);
            let (qy, qx) = (y + db.dy, x + db.dx);
            let r = rel.displacement_at(qy, qx);
            assert!(((qy + r.dy) - (y + da.dy)).abs() < 1e-3);
            assert!(((qx + r.dx) - (x + da.dx)).abs() < 1e-3);
        }
    }

    #[test]
    fn the_mean_geometry_is_robust_and_unweighted() {
        let mut ts: Vec<FrameTransform> = (0..9)
            .map(|k| transform(0.1 * k as f32, -0.2 * k as f32, 0.05 * k as f32))
            .collect();
        let clean = mean_geometry(&ts).unwrap();
        assert!((clean.shift.dy - 0.4).abs() < 1e-5 && (clean.shift.dx + 0.8).abs() < 1e-5);
        // One wild frame does not move it.
        ts.push(transform(40.0, 40.0, 5.0));
        let with_outlier = mean_geometry(&ts).unwrap();
        assert!((with_outlier.shift.dy - 0.4).abs() < 1e-4);
        assert!((with_outlier.linear[0][1] - clean.linear[0][1]).abs() < 1e-6);
        // Relative to the mean, the frames' motions average to zero.
        ts.pop();
        let rel: Vec<FrameTransform> = ts.iter().map(|t| t.relative_to(&clean).unwrap()).collect();
        let sum = rel
            .iter()
            .fold(Shift::ZERO, |acc, t| acc + t.displacement_at(0.0, 0.0));
        assert!(sum.norm() / 9.0 < 1e-3, "{sum:?}");
        assert!(mean_geometry(&[]).is_none());
    }

    #[test]
    fn the_pixel_map_sends_output_pixels_back_to_the_reference_frame() {
        let base = transform(2.0, -3.0, 0.5);
        for cell in [1.0, 2.0] {
            let map = output_to_reference(&base, cell).unwrap();
            // A reference point p (measured space) lands on output b(p); in pixels both use
            // P = cell * p + (cell - 1) / 2.
            for (y, x) in [(10.0f32, 20.0f32), (70.0, 140.0)] {
                let d = base.displacement_at(y, x);
                let to_pix = |v: f32| cell * f64::from(v) + (cell - 1.0) / 2.0;
                let out = [to_pix(x + d.dx), to_pix(y + d.dy)];
                let [rx, ry] = map.apply(out);
                assert!(
                    (rx - to_pix(x)).abs() < 1e-3,
                    "{cell}: {rx} vs {}",
                    to_pix(x)
                );
                assert!(
                    (ry - to_pix(y)).abs() < 1e-3,
                    "{cell}: {ry} vs {}",
                    to_pix(y)
                );
            }
        }
        let identity = FrameTransform::translation(Shift::ZERO, (50.0, 80.0));
        assert_eq!(
            output_to_reference(&identity, 1.0),
            Some(PixelMap::IDENTITY)
        );
    }
}
