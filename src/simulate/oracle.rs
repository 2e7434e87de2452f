//! The exact-motion stack ("oracle"): every used frame resampled through its *true* displacement
//! (rotation, global translation and local field, [`Simulation::displacement`]) into the sequence's
//! mean geometry, then a plain unweighted mean. [`Simulation::exact_motion_stack`].
//!
//! Why it exists: a star's measured position in any result carries photon noise, and for faint stars
//! that noise (0.2-0.3 px on a 40-frame scene) hides the geometric error a test or bench wants to see.
//! The oracle is built from the same frames, so it carries the same noise: per star, `result - oracle`
//! ([`super::StarPositionErrors::minus`]) is the geometric error alone, and the oracle's own error
//! against the truth is the floor of the measurement.
//!
//! What it does not: weight, clip or despike (a satellite trail in a used frame stays in), or run fast
//! (one Lanczos-3 point sample per frame and pixel: seconds for 100 frames of 1024²).

use ndarray::{Array2, ArrayView2};

use super::Simulation;
use crate::resample::sample_at;

impl Simulation {
    /// The exact-motion stack of `frames` (indexed by frame number, as written by the simulator)
    /// over the frames `used` (all when empty), in the mean geometry of `used`
    /// ([`Simulation::mean_geometry_position`]): output pixel `q` holds the mean over the used frames
    /// of frame `i` at `p + d_i(p)`, where `p` is the truth position with `p + mean d(p) = q`.
    /// `None` when `frames` is empty, a used index has no frame, or the frames' shapes differ.
    pub fn exact_motion_stack(
        &self,
        frames: &[ArrayView2<f32>],
        used: &[usize],
    ) -> Option<Array2<f32>> {
        let all: Vec<usize>;
        let used = if used.is_empty() {
            all = (0..frames.len()).collect();
            &all[..]
        } else {
            used
        };
        let shape = frames.first()?.dim();
        if used.is_empty()
            || used
                .iter()
                .any(|&i| i >= frames.len() || i >= self.frames())
            || frames.iter().any(|f| f.dim() != shape)
        {
            return None;
        }
        let n = used.len() as f32;
        let cy = (self.cfg.height as f32 - 1.0) * 0.5;
        let cx = (self.cfg.width as f32 - 1.0) * 0.5;
        // Per used frame: the rotation's (sin, cos), its global shift and its local amplitudes.
        let motion: Vec<((f32, f32), &super::scene::FrameState)> = used
            .iter()
            .map(|&i| (self.states[i].rotation_rad.sin_cos(), &self.states[i]))
            .collect();
        let modes = &self.modes;
        // The mean displacement is linear in the per-frame terms: average them once.
        let mut mean_rot = [[0.0f32; 2]; 2];
        let mut mean_global = (0.0f32, 0.0f32);
        let mut mean_amp = vec![[0.0f32; 4]; modes.len()];
        for ((s, c), st) in &motion {
            mean_rot[0][0] += (c - 1.0) / n;
            mean_rot[0][1] += s / n;
            mean_rot[1][0] += -s / n;
            mean_rot[1][1] += (c - 1.0) / n;
            mean_global.0 += st.global.dy / n;
            mean_global.1 += st.global.dx / n;
            for (m, a) in mean_amp.iter_mut().zip(&st.amplitudes) {
                for k in 0..4 {
                    m[k] += a[k] / n;
                }
            }
        }
        let mut phases = vec![(0.0f32, 0.0f32); modes.len()];
        let local = |amps: &[[f32; 4]], phases: &[(f32, f32)]| {
            let (mut dy, mut dx) = (0.0f32, 0.0f32);
            for (a, &(s, c)) in amps.iter().zip(phases) {
                dy += a[0] * c + a[1] * s;
                dx += a[2] * c + a[3] * s;
            }
            (dy, dx)
        };
        let set_phases = |phases: &mut [(f32, f32)], y: f32, x: f32| {
            for (p, m) in phases.iter_mut().zip(modes) {
                *p = (m.ky * y + m.kx * x + m.phase).sin_cos();
            }
        };
        let mut out = Array2::<f32>::zeros(shape);
        for ((qy, qx), value) in out.indexed_iter_mut() {
            let (qy, qx) = (qy as f32, qx as f32);
            // p + mean d(p) = q by fixed-point iteration (the mean motion is small and smooth).
            let (mut py, mut px) = (qy, qx);
            for _ in 0..4 {
                set_phases(&mut phases, py, px);
                let (ly, lx) = local(&mean_amp, &phases);
                let (ry, rx) = (py - cy, px - cx);
                let my = mean_rot[0][0] * ry + mean_rot[0][1] * rx + mean_global.0 + ly;
                let mx = mean_rot[1][0] * ry + mean_rot[1][1] * rx + mean_global.1 + lx;
                py = qy - my;
                px = qx - mx;
            }
            set_phases(&mut phases, py, px);
            let (ry, rx) = (py - cy, px - cx);
            let mut sum = 0.0f64;
            for (k, ((s, c), st)) in motion.iter().enumerate() {
                let (ly, lx) = local(&st.amplitudes, &phases);
                let dy = s * rx + c * ry - ry + st.global.dy + ly;
                let dx = c * rx - s * ry - rx + st.global.dx + lx;
                sum += f64::from(sample_at(frames[used[k]], py + dy, px + dx));
            }
            *value = (sum / f64::from(n)) as f32;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::simulate::{Scenario, SimConfig, Simulation};

    #[test]
    fn the_oracle_of_noise_free_frames_puts_stars_in_the_mean_geometry() {
        // Rotation, drift and a local field: each expected frame sits in its own geometry; the oracle
        // undoes every motion exactly, so its stars sit in the mean geometry to a small fraction of a
        // pixel, while a plain mean of the frames smears them.
        let mut cfg = SimConfig::new(Scenario::Altaz, 8, 160, 160, 3);
        cfg.star_density_per_mpx = 1500.0;
        cfg.rotation_deg = Some(1.0);
        let sim = Simulation::new(cfg);
        let frames: Vec<_> = (0..8).map(|i| sim.expected_frame(i)).collect();
        let views: Vec<_> = frames.iter().map(|f| f.view()).collect();
        let oracle = sim.exact_motion_stack(&views, &[]).expect("oracle");
        let errors = sim.star_position_errors(oracle.view(), &[]);
        assert!(errors.stars() >= 5, "{} stars", errors.stars());
        assert!(errors.rms_px() < 0.03, "oracle rms {}", errors.rms_px());
        // The first frame alone is in frame 0's geometry, not the mean one (NaN: no star within the
        // 2 px match radius at all).
        let first = sim.star_position_errors(frames[0].view(), &[]);
        assert!(
            !(first.rms_px() < 3.0 * errors.rms_px()),
            "{}",
            first.rms_px()
        );
        // Inconsistent input is refused, not a panic.
        assert!(sim.exact_motion_stack(&[], &[]).is_none());
        assert!(sim.exact_motion_stack(&views, &[8]).is_none());
    }
}
