//! The true displacement of every frame on a grid, as `truth_displacement.json` holds it:
//! [`Simulation::truth_displacement`] samples the motion model, [`TruthDisplacement`] is the file format
//! (with [`TruthDisplacement::load`]) and interpolates it bicubically for tests that only have the files.
//!
//! What it does not: the truth *image* (that is [`Simulation::truth`] in [`super::render`]), or write
//! the file (that is [`super::write`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::scene::FrameKind;
use super::{frame_file_name, SimError, Simulation};
use crate::geom::Shift;

impl Simulation {
    /// The true displacement of every frame sampled on a uniform grid of step `step_px` (at least 1)
    /// that reaches one step beyond the image on every side (so bicubic interpolation is valid
    /// everywhere inside), for tests that only have the files.
    pub fn truth_displacement(&self, step_px: usize) -> TruthDisplacement {
        let step = step_px.max(1);
        let axis = |n: usize| -> Vec<f32> {
            let last = n.saturating_sub(1).div_ceil(step) as i64 + 1;
            (-1..=last).map(|k| (k * step as i64) as f32).collect()
        };
        let ys = axis(self.cfg.height);
        let xs = axis(self.cfg.width);
        let frames = (0..self.frames())
            .map(|i| {
                let st = &self.states[i];
                let mut dy = Vec::with_capacity(ys.len() * xs.len());
                let mut dx = Vec::with_capacity(ys.len() * xs.len());
                for &y in &ys {
                    for &x in &xs {
                        let d = self.displacement(i, y, x);
                        dy.push(round4(d.dy));
                        dx.push(round4(d.dx));
                    }
                }
                FrameTruth {
                    index: i,
                    file: frame_file_name(i),
                    kind: st.kind,
                    global: Shift::new(round4(st.global.dy), round4(st.global.dx)),
                    rotation_deg: st.rotation_rad.to_degrees(),
                    fwhm_px: st.fwhm,
                    transparency: st.transparency,
                    dy,
                    dx,
                }
            })
            .collect();
        TruthDisplacement {
            convention: "a feature at truth (y, x) appears in frame i at (y + dy, x + dx); \
                         dy/dx are the total displacement (rotation + global + local) sampled at \
                         grid points (ys[r], xs[c]), row-major, a uniform grid reaching one step beyond the image (interpolate bicubically); frame 0 has zero global shift and \
                         rotation; the local field averages to zero over the sequence"
                .to_string(),
            width: self.cfg.width,
            height: self.cfg.height,
            rotation_centre: [
                (self.cfg.height as f32 - 1.0) * 0.5,
                (self.cfg.width as f32 - 1.0) * 0.5,
            ],
            local_rms_px: self.local_rms,
            step_px: step,
            ys,
            xs,
            frames,
        }
    }
}

fn round4(v: f32) -> f32 {
    (v * 1.0e4).round() / 1.0e4
}

/// The true displacement of every frame on a coarse grid, as written to `truth_displacement.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthDisplacement {
    /// The sign convention, in words.
    pub convention: String,
    /// Image width, px.
    pub width: usize,
    /// Image height, px.
    pub height: usize,
    /// Centre of the field rotation `[y, x]`.
    pub rotation_centre: [f32; 2],
    /// Realised RMS length of the local displacement vector, px.
    pub local_rms_px: f32,
    /// Grid step, px.
    pub step_px: usize,
    /// Row coordinates of the grid points.
    pub ys: Vec<f32>,
    /// Column coordinates of the grid points.
    pub xs: Vec<f32>,
    /// One entry per frame.
    pub frames: Vec<FrameTruth>,
}

/// The truth of one frame in [`TruthDisplacement`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    /// Frame index.
    pub index: usize,
    /// File name written by [`write_sequence`].
    ///
    /// [`write_sequence`]: super::write_sequence
    pub file: String,
    /// Normal, cloud or satellite trail.
    pub kind: FrameKind,
    /// Global translation.
    pub global: Shift,
    /// Field rotation about `rotation_centre`, degrees.
    pub rotation_deg: f32,
    /// Moffat FWHM, px.
    pub fwhm_px: f32,
    /// Transparency (1 = clear).
    pub transparency: f32,
    /// Total row displacement at the grid points, row-major `(ys.len(), xs.len())`.
    pub dy: Vec<f32>,
    /// Total column displacement at the grid points, row-major.
    pub dx: Vec<f32>,
}

impl TruthDisplacement {
    /// Reads `truth_displacement.json`.
    ///
    /// # Errors
    /// [`SimError::Io`] or [`SimError::Json`] naming the file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SimError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Total displacement of frame `index` at `(y, x)`, interpolated bicubically (Catmull-Rom) on the
    /// grid (clamped at its border). `None` when the frame does not exist or the grid is malformed.
    pub fn displacement(&self, index: usize, y: f32, x: f32) -> Option<Shift> {
        let f = self.frames.get(index)?;
        let (ny, nx) = (self.ys.len(), self.xs.len());
        if ny < 2 || nx < 2 || f.dy.len() != ny * nx || f.dx.len() != ny * nx {
            return None;
        }
        let (iy, ty) = locate(&self.ys, y);
        let (ix, tx) = locate(&self.xs, x);
        let wy = catmull_rom(ty);
        let wx = catmull_rom(tx);
        let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
        let interp = |v: &[f32]| {
            let mut sum = 0.0f32;
            for (a, wa) in wy.iter().enumerate() {
                let r = clamp(iy as i64 + a as i64 - 1, ny);
                for (b, wb) in wx.iter().enumerate() {
                    let c = clamp(ix as i64 + b as i64 - 1, nx);
                    sum += wa * wb * v[r * nx + c];
                }
            }
            sum
        };
        Some(Shift::new(interp(&f.dy), interp(&f.dx)))
    }
}

/// Catmull-Rom weights of the points `i-1, i, i+1, i+2` at fraction `t` between `i` and `i+1`.
fn catmull_rom(t: f32) -> [f32; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Index of the grid cell containing `v` and the fraction within it (clamped to the grid).
fn locate(axis: &[f32], v: f32) -> (usize, f32) {
    let n = axis.len();
    if n < 2 || !(v > axis[0]) {
        return (0, 0.0);
    }
    if v >= axis[n - 1] {
        return (n - 1, 0.0);
    }
    let i = axis
        .partition_point(|&a| a <= v)
        .saturating_sub(1)
        .min(n - 2);
    let span = axis[i + 1] - axis[i];
    let t = if span > 0.0 {
        (v - axis[i]) / span
    } else {
        0.0
    };
    (i, t.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use crate::simulate::{small, Scenario, Simulation};

    #[test]
    fn truth_displacement_grid_interpolates_the_model() {
        let sim = Simulation::new(small(Scenario::Altaz, 5));
        let td = sim.truth_displacement(8);
        assert_eq!(td.ys.first().copied(), Some(-8.0));
        assert_eq!(td.ys.last().copied(), Some(104.0));
        assert_eq!(td.xs.last().copied(), Some(136.0));
        let exact = sim.displacement(3, 40.0, 64.0);
        let grid = td.displacement(3, 40.0, 64.0).unwrap();
        assert!((exact - grid).norm() < 1e-3);
        let between = td.displacement(3, 43.3, 61.7).unwrap();
        assert!((sim.displacement(3, 43.3, 61.7) - between).norm() < 0.002);
        let coarse = sim.truth_displacement(32);
        for &(y, x) in &[(0.0f32, 0.0f32), (17.3, 101.9), (95.0, 127.0), (50.5, 3.2)] {
            let err = (sim.displacement(3, y, x) - coarse.displacement(3, y, x).unwrap()).norm();
            assert!(err < 0.01, "bicubic error {err} px at ({y}, {x})");
        }
        assert!(td.displacement(5, 0.0, 0.0).is_none());
    }
}
