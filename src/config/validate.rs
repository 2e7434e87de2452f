//! # Range checks of a typed configuration
//!
//! What it does: [`Config::validate`] checks every range and cross-field rule (`tile.min_size` <=
//! `tile.max_size`, `rss_warn_mb` <= `rss_abort_mb`, an odd smoothing window, the `v4.parallel_tiles`
//! rules of the Phase 6 parallelisation reference) and returns every problem, each naming its key path;
//! [`Config::effective_min_valid_frames`] lowers `registration.local_tiles.min_valid_frames` for a
//! short session (to two thirds of its frames), and [`few_frames_warning`] words the warning such a session gets.
//!
//! What it does not do: type errors and unknown keys (found while walking the YAML tree, `walk.rs`),
//! or change a value: a configuration is accepted as written or refused.

use super::schema::Config;

/// Hard upper limit for `v4.parallel_tiles`, whatever the machine (Phase 6 parallelisation reference: the
/// speed-up is I/O-bound beyond 8–16 workers).
pub const PARALLEL_TILES_HARD_MAX: usize = 16;

impl Config {
    /// Checks every range and cross-field rule; `physical_cores` is the machine's physical core count
    /// (see [`physical_cores`](super::physical_cores)), given as a parameter so that tests can inject it.
    ///
    /// # Errors
    /// Every problem found, one message each, naming the key path.
    pub fn validate(&self, physical_cores: usize) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        let v4 = &self.v4;
        if let Some(n) = v4.parallel_tiles {
            if n == 0 {
                p.push("`v4.parallel_tiles` must be at least 1 (or `auto`), got 0".to_string());
            } else if n > PARALLEL_TILES_HARD_MAX {
                p.push(format!(
                    "`v4.parallel_tiles` = {n} is above the hard limit of {PARALLEL_TILES_HARD_MAX} tile workers \
                     (more workers only saturate the disk); use `auto` or at most {PARALLEL_TILES_HARD_MAX}"
                ));
            } else if n > physical_cores {
                p.push(format!(
                    "`v4.parallel_tiles` = {n} exceeds the {physical_cores} physical CPU cores of this machine; \
                     use `auto` or at most {physical_cores}"
                ));
            }
        }
        range_usize(&mut p, "v4.iterations", v4.iterations, 1, 10);
        range_f64(
            &mut p,
            "v4.beta",
            v4.beta,
            Bound::Incl(0.0),
            Bound::Incl(20.0),
        );
        range_f64(
            &mut p,
            "v4.min_valid_tile_fraction",
            v4.min_valid_tile_fraction,
            Bound::Incl(0.0),
            Bound::Incl(1.0),
        );
        range_f64(
            &mut p,
            "v4.convergence.epsilon_rel",
            v4.convergence.epsilon_rel,
            Bound::Incl(1e-6),
            Bound::Incl(0.1),
        );
        let at = &v4.adaptive_tiles;
        range_usize(
            &mut p,
            "v4.adaptive_tiles.max_refine_passes",
            at.max_refine_passes,
            0,
            5,
        );
        range_f64(
            &mut p,
            "v4.adaptive_tiles.refine_variance_threshold",
            at.refine_variance_threshold,
            Bound::Excl(0.0),
            Bound::Incl(10.0),
        );
        range_usize(
            &mut p,
            "v4.adaptive_tiles.min_tile_size_px",
            at.min_tile_size_px,
            32,
            512,
        );
        let ml = &v4.memory_limits;
        if ml.rss_warn_mb < 512 {
            p.push(format!(
                "`v4.memory_limits.rss_warn_mb` must be at least 512, got {}",
                ml.rss_warn_mb
            ));
        }
        if ml.rss_abort_mb < 1024 {
            p.push(format!(
                "`v4.memory_limits.rss_abort_mb` must be at least 1024, got {}",
                ml.rss_abort_mb
            ));
        }
        if ml.rss_warn_mb > ml.rss_abort_mb {
            p.push(format!(
                "`v4.memory_limits.rss_warn_mb` ({}) must not exceed `v4.memory_limits.rss_abort_mb` ({})",
                ml.rss_warn_mb, ml.rss_abort_mb
            ));
        }

        range_f64(
            &mut p,
            "registration.global.keep_best_percent",
            self.registration.global.keep_best_percent,
            Bound::Excl(0.0),
            Bound::Incl(100.0),
        );
        let lt = &self.registration.local_tiles;
        const LT: &str = "registration.local_tiles";
        range_f64(
            &mut p,
            &format!("{LT}.ecc_cc_min"),
            lt.ecc_cc_min,
            Bound::Incl(0.0),
            Bound::Incl(1.0),
        );
        if lt.min_valid_frames < 1 {
            p.push(format!("`{LT}.min_valid_frames` must be at least 1, got 0"));
        }
        range_f64(
            &mut p,
            &format!("{LT}.max_warp_delta_px"),
            lt.max_warp_delta_px,
            Bound::Excl(0.0),
            Bound::Incl(10.0),
        );
        let w = lt.temporal_smoothing_window;
        if !(3..=51).contains(&w) {
            p.push(format!(
                "`{LT}.temporal_smoothing_window` must be an odd number between 3 and 51, got {w}"
            ));
        } else if w % 2 == 0 {
            p.push(format!(
                "`{LT}.temporal_smoothing_window` must be odd (the window is centred on a frame), got {w}"
            ));
        }
        range_f64(
            &mut p,
            &format!("{LT}.variance_window_sigma"),
            lt.variance_window_sigma,
            Bound::Incl(0.5),
            Bound::Incl(10.0),
        );
        range_f64(
            &mut p,
            &format!("{LT}.rejection_kappa"),
            lt.rejection_kappa,
            Bound::Incl(1.0),
            Bound::Incl(10.0),
        );
        range_f64(
            &mut p,
            &format!("{LT}.keep_best_percent"),
            lt.keep_best_percent,
            Bound::Excl(0.0),
            Bound::Incl(100.0),
        );

        range_usize(
            &mut p,
            "registration.reference_frame",
            self.registration.reference_frame,
            0,
            1_000_000,
        );

        let t = &self.tile;
        range_f64(
            &mut p,
            "tile.size_factor",
            t.size_factor,
            Bound::Incl(1.0),
            Bound::Incl(256.0),
        );
        range_usize(&mut p, "tile.min_size", t.min_size, 16, 4096);
        range_usize(&mut p, "tile.max_size", t.max_size, 16, 4096);
        if t.min_size > t.max_size {
            p.push(format!(
                "`tile.min_size` ({}) must not exceed `tile.max_size` ({})",
                t.min_size, t.max_size
            ));
        }
        range_f64(
            &mut p,
            "tile.overlap_fraction",
            t.overlap_fraction,
            Bound::Incl(0.0),
            Bound::Incl(0.5),
        );
        range_usize(&mut p, "tile.margin_px", t.margin_px, 2, 128);
        super::calibration::validate(&self.calibration, &mut p);

        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    /// The `min_valid_frames` a run with `frames` usable frames applies: the configured
    /// `registration.local_tiles.min_valid_frames`; for a shorter session, two thirds of its frames
    /// (rounded up, at least 1), so that a short session is reconstructed from all of its frames
    /// instead of giving no valid tile, and one frame that fails to register in a tile (of three or
    /// more) does not make the tile invalid. Batch and live runs both use it.
    pub fn effective_min_valid_frames(&self, frames: usize) -> usize {
        let configured = self.registration.local_tiles.min_valid_frames;
        if frames >= configured {
            configured
        } else {
            (2 * frames).div_ceil(3).max(1)
        }
    }

    /// `None` when `frames` usable frames reach `registration.local_tiles.min_valid_frames`; otherwise
    /// the warning for the user (see [`few_frames_warning`]).
    pub fn small_session_warning(&self, frames: usize) -> Option<String> {
        few_frames_warning(frames, self.registration.local_tiles.min_valid_frames)
    }
}

/// The warning of a session with fewer usable frames than `min_valid_frames` (`None` otherwise): it
/// runs with all of them, and says that outlier rejection is weaker and which key sets the minimum.
pub fn few_frames_warning(frames: usize, min_valid_frames: usize) -> Option<String> {
    (frames < min_valid_frames).then(|| {
        let head = format!(
            "only {frames} usable frame{}, fewer than registration.local_tiles.min_valid_frames \
             ({min_valid_frames})",
            if frames == 1 { "" } else { "s" }
        );
        if frames == 1 {
            format!(
                "{head}: the single frame passes through (hot pixels and cosmic rays replaced), \
                 without outlier rejection"
            )
        } else {
            format!(
                "{head}: running with all of them; outlier rejection (satellites, hot pixels, \
                 cosmic rays) is weaker than with {min_valid_frames} or more frames"
            )
        }
    })
}

enum Bound {
    Incl(f64),
    Excl(f64),
}

fn range_usize(p: &mut Vec<String>, path: &str, v: usize, lo: usize, hi: usize) {
    if v < lo || v > hi {
        p.push(format!("`{path}` must be between {lo} and {hi}, got {v}"));
    }
}

fn range_f64(p: &mut Vec<String>, path: &str, v: f64, lo: Bound, hi: Bound) {
    let ok_lo = match lo {
        Bound::Incl(l) => v >= l,
        Bound::Excl(l) => v > l,
    };
    let ok_hi = match hi {
        Bound::Incl(h) => v <= h,
        Bound::Excl(h) => v < h,
    };
    if !v.is_finite() || !ok_lo || !ok_hi {
        let range = match (lo, hi) {
            (Bound::Incl(l), Bound::Incl(h)) => format!("between {l} and {h}"),
            (Bound::Excl(l), Bound::Incl(h)) => format!("greater than {l} and at most {h}"),
            (Bound::Incl(l), Bound::Excl(h)) => format!("at least {l} and less than {h}"),
            (Bound::Excl(l), Bound::Excl(h)) => format!("greater than {l} and less than {h}"),
        };
        p.push(format!("`{path}` must be {range}, got {v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn a_short_session_runs_with_all_its_frames_and_says_so() {
        let cfg = Config::default();
        let min = cfg.registration.local_tiles.min_valid_frames;
        assert_eq!(min, 10);
        assert!(cfg.small_session_warning(min).is_none());
        assert_eq!(cfg.effective_min_valid_frames(40), 10);
        assert_eq!(cfg.effective_min_valid_frames(10), 10);
        // Two thirds of a short session's frames, rounded up: one failed frame in a tile of 3+ is fine.
        assert_eq!(cfg.effective_min_valid_frames(9), 6);
        assert_eq!(cfg.effective_min_valid_frames(6), 4);
        assert_eq!(cfg.effective_min_valid_frames(5), 4);
        assert_eq!(cfg.effective_min_valid_frames(3), 2);
        assert_eq!(cfg.effective_min_valid_frames(2), 2);
        assert_eq!(cfg.effective_min_valid_frames(1), 1);
        assert_eq!(cfg.effective_min_valid_frames(0), 1);
        let m = cfg.small_session_warning(6).expect("6 < 10");
        assert!(m.contains("only 6 usable frames"), "{m}");
        assert!(
            m.contains("registration.local_tiles.min_valid_frames (10)"),
            "{m}"
        );
        assert!(m.contains("outlier rejection"), "{m}");
        let one = cfg.small_session_warning(1).expect("1 < 10");
        assert!(one.contains("single frame passes through"), "{one}");
        assert!(one.contains("only 1 usable frame,"), "{one}");
        let mut lowered = parse("registration: {local_tiles: {min_valid_frames: 6}}", "t")
            .unwrap()
            .config;
        assert!(lowered.small_session_warning(6).is_none());
        lowered.registration.local_tiles.min_valid_frames = 3;
        assert_eq!(lowered.effective_min_valid_frames(6), 3);
    }
}
