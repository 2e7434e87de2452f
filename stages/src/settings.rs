//! What a run or live session is asked to do, resolved in one place: the registration mode, the number
//! of tile workers ([`worker_count`]: the configuration's `v4.parallel_tiles` rules) and the operator
//! settings built from the configuration ([`operator_params`]). Batch ([`crate::batch`]) and live
//! ([`crate::live`]) both take them from here.
//! What it does not: read or validate the configuration file (`tlr_core::config` does).

use std::num::NonZeroUsize;

use serde::Serialize;

use tlr_core::config::Config;
use tlr_core::operator::{self, OperatorParams};

/// How tiles are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Tile-local registration and reconstruction (the method).
    TileLocal,
    /// Whole-frame translation only, with the same weights, resampling, rejection and blending: the
    /// baseline a tile-local result is compared with.
    GlobalOnly,
}

/// The number of tile workers a run or live session uses: `v4.parallel_tiles` when set (the library
/// does not second-guess an explicit value; the CLI's configuration check enforces the core-count
/// rules), else the seed document's default for this machine's physical cores. The one place this
/// setting is resolved.
pub fn worker_count(config: &Config) -> NonZeroUsize {
    let n = config.parallel_tiles(tlr_core::config::physical_cores());
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// The operator settings for `mode` from the configuration (the runtime struct the config builds).
pub fn operator_params(cfg: &Config, mode: Registration) -> OperatorParams {
    let local = &cfg.registration.local_tiles;
    OperatorParams {
        iterations: cfg.v4.iterations,
        beta: cfg.v4.beta as f32,
        ecc_cc_min: local.ecc_cc_min as f32,
        min_valid_frames: local.min_valid_frames,
        max_warp_delta_px: local.max_warp_delta_px as f32,
        temporal_smoothing_window: local.temporal_smoothing_window,
        smoothing: match local.smoothing {
            tlr_core::config::Smoothing::Savgol => operator::Smoothing::SavitzkyGolay,
            tlr_core::config::Smoothing::Median => operator::Smoothing::Median,
            tlr_core::config::Smoothing::None => operator::Smoothing::None,
        },
        epsilon_rel: cfg.v4.convergence.epsilon_rel as f32,
        convergence_enabled: cfg.v4.convergence.enabled,
        rejection_kappa: local.rejection_kappa as f32,
        variance_window_sigma: local.variance_window_sigma as f32,
        mode: match mode {
            Registration::TileLocal => operator::Mode::Local,
            Registration::GlobalOnly => operator::Mode::GlobalOnly,
        },
        unweighted_geometry: cfg.registration.unweighted_geometry,
        ..OperatorParams::default()
    }
}
