//! # The typed configuration: sections, keys and their published defaults
//!
//! What it does: declares [`Config`] and its sections (`v4`, `registration.local_tiles`, `tile`, `data`)
//! with one documented field per key and `Default` giving the published defaults of the tile_compile
//! methodology v4 (plus tlr's own keys); resolves the effective worker count
//! ([`Config::parallel_tiles`]); serialises the effective configuration ([`Config::to_yaml`]) and its
//! SHA-256 digest for FITS `HISTORY` ([`Config::digest`]).
//!
//! What it does not do: read YAML (`walk.rs` fills these structs from the parsed tree), know which
//! tile_compile keys are ignored (`keys.rs`), or check ranges (`validate.rs`).

use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Default number of tile workers on a machine with at least this many physical cores.
pub const PARALLEL_TILES_DEFAULT: usize = 8;

/// Version tag hashed together with the canonical serialization in [`Config::digest`]; bump it when the
/// meaning of a key changes so that old digests cannot collide with new ones.
const DIGEST_DOMAIN: &str = "tlr-config/1";

/// How the per-tile shift series is smoothed over time (`registration.local_tiles.smoothing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Smoothing {
    /// Savitzky–Golay filter (quadratic) over `temporal_smoothing_window` frames: keeps slow trends (drift,
    /// rotation) and removes jitter. The published default.
    Savgol,
    /// Running median over `temporal_smoothing_window` frames: robust to single bad registrations.
    Median,
    /// No smoothing: every frame is resampled with its own measured shift.
    None,
}

impl Smoothing {
    /// The YAML spelling of this choice.
    pub fn as_str(self) -> &'static str {
        match self {
            Smoothing::Savgol => "savgol",
            Smoothing::Median => "median",
            Smoothing::None => "none",
        }
    }
}

/// The whole configuration of a reconstruction. `Default` gives the published defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Config {
    /// Section `v4`: methodology v4 parameters of Phase 6 (TILE_RECONSTRUCTION_TLR).
    pub v4: V4Config,
    /// Section `registration`: tile-local registration.
    pub registration: RegistrationConfig,
    /// Section `tile`: tile geometry.
    pub tile: TileConfig,
    /// Section `data`: colour handling of the frames (`data.color_mode`, `data.bayer_pattern`).
    pub data: DataConfig,
    /// Section `calibration`: bias, darks, flats (left out of the serialisation when unused).
    #[serde(skip_serializing_if = "super::CalibrationConfig::is_default")]
    pub calibration: super::CalibrationConfig,
}

/// `data.color_mode`: how the colour of the frames is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColorModeSetting {
    /// From each frame's header: Bayer when it has `BAYERPAT`, mono otherwise.
    #[default]
    Auto,
    /// Every frame is mono, whatever the header says.
    Mono,
    /// One-shot colour (Bayer); the pattern comes from `data.bayer_pattern` or the header.
    Osc,
}

/// Section `data` (tile_compile's section of the same name; tlr reads only the colour keys).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DataConfig {
    /// `data.color_mode`: `auto` (default), `mono` or `osc` (tile_compile writes `OSC`/`MONO`).
    pub color_mode: ColorModeSetting,
    /// `data.bayer_pattern`: `RGGB`, `BGGR`, `GRBG` or `GBRG` in file row order, overriding the header
    /// (a disagreement is reported as a warning per frame); `null`/`auto` (default) = from the header.
    pub bayer_pattern: Option<crate::bayer::CfaPattern>,
}

impl DataConfig {
    /// The colour mode these settings describe (see [`crate::bayer::resolve_pattern`]): a pattern
    /// makes `auto`/`osc` a fixed [`crate::bayer::ColorMode::Bayer`]; `mono` ignores it.
    pub fn color_mode(&self) -> crate::bayer::ColorMode {
        use crate::bayer::ColorMode;
        match (self.color_mode, self.bayer_pattern) {
            (ColorModeSetting::Mono, _) => ColorMode::Mono,
            (_, Some(p)) => ColorMode::Bayer(p),
            (ColorModeSetting::Osc, None) => ColorMode::Osc,
            (ColorModeSetting::Auto, None) => ColorMode::Auto,
        }
    }
}

/// Section `v4`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V4Config {
    /// `v4.parallel_tiles`: number of tile workers; `None` (`auto`, or the key absent) means
    /// min(8, physical cores). Range 1..=min(16, physical cores). Use [`Config::parallel_tiles`].
    #[serde(serialize_with = "serialize_parallel_tiles")]
    pub parallel_tiles: Option<usize>,
    /// `v4.iterations`: reference refinement rounds per tile. Default 3, range 1..=10.
    pub iterations: usize,
    /// `v4.beta`: registration-quality weight R = exp(beta * (cc - 1)). Default 5.0, range 0..=20.
    pub beta: f64,
    /// `v4.min_valid_tile_fraction`: the run aborts when fewer tiles are valid. Default 0.3, range 0..=1.
    pub min_valid_tile_fraction: f64,
    /// `v4.convergence`: early stop of the iterations.
    pub convergence: ConvergenceConfig,
    /// `v4.adaptive_tiles`: optional splitting of tiles with high warp variance.
    pub adaptive_tiles: AdaptiveTilesConfig,
    /// `v4.memory_limits`: resident-memory guard of the run.
    pub memory_limits: MemoryLimitsConfig,
    /// `v4.diagnostics`: which diagnostic files a run writes.
    pub diagnostics: DiagnosticsConfig,
}

impl Default for V4Config {
    fn default() -> Self {
        Self {
            parallel_tiles: None,
            iterations: 3,
            beta: 5.0,
            min_valid_tile_fraction: 0.3,
            convergence: ConvergenceConfig::default(),
            adaptive_tiles: AdaptiveTilesConfig::default(),
            memory_limits: MemoryLimitsConfig::default(),
            diagnostics: DiagnosticsConfig::default(),
        }
    }
}

fn serialize_parallel_tiles<S: serde::Serializer>(
    value: &Option<usize>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(n) => s.serialize_u64(*n as u64),
        None => s.serialize_str("auto"),
    }
}

/// Section `v4.convergence`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvergenceConfig {
    /// `v4.convergence.enabled`: stop iterating when the reference changes little. Default true.
    pub enabled: bool,
    /// `v4.convergence.epsilon_rel`: stop when ||R_k - R_(k-1)|| / ||R_k|| < epsilon_rel.
    /// Default 1e-3, range 1e-6..=0.1.
    pub epsilon_rel: f64,
}

impl Default for ConvergenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            epsilon_rel: 1e-3,
        }
    }
}

/// Section `v4.adaptive_tiles`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdaptiveTilesConfig {
    /// `v4.adaptive_tiles.enabled`: split tiles whose warp variance is high. Default false.
    pub enabled: bool,
    /// `v4.adaptive_tiles.max_refine_passes`: refinement passes. Default 2, range 0..=5.
    pub max_refine_passes: usize,
    /// `v4.adaptive_tiles.refine_variance_threshold`: split when Var(dx) + Var(dy) exceeds this (px²).
    /// Default 0.25, range (0, 10].
    pub refine_variance_threshold: f64,
    /// `v4.adaptive_tiles.min_tile_size_px`: no split below this size. Default 64, range 32..=512.
    pub min_tile_size_px: usize,
}

impl Default for AdaptiveTilesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_refine_passes: 2,
            refine_variance_threshold: 0.25,
            min_tile_size_px: 64,
        }
    }
}

/// Section `v4.memory_limits`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryLimitsConfig {
    /// `v4.memory_limits.rss_warn_mb`: warn above this resident memory (MB). Default 4096, at least 512.
    pub rss_warn_mb: u64,
    /// `v4.memory_limits.rss_abort_mb`: abort cleanly above this (MB). Default 8192, at least 1024 and
    /// at least `rss_warn_mb`.
    pub rss_abort_mb: u64,
}

impl Default for MemoryLimitsConfig {
    fn default() -> Self {
        Self {
            rss_warn_mb: 4096,
            rss_abort_mb: 8192,
        }
    }
}

/// Section `v4.diagnostics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiagnosticsConfig {
    /// `v4.diagnostics.enabled`: master switch; when false none of the files below is written. Default true.
    pub enabled: bool,
    /// `v4.diagnostics.warp_field`: per-tile shift maps (`warp_dx.fits`, `warp_dy.fits`). Default true.
    pub warp_field: bool,
    /// `v4.diagnostics.tile_invalid_map`: map of invalid tiles. Default true.
    pub tile_invalid_map: bool,
    /// `v4.diagnostics.warp_variance_hist`: warp-variance statistics per tile. Default true.
    pub warp_variance_hist: bool,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            warp_field: true,
            tile_invalid_map: true,
            warp_variance_hist: true,
        }
    }
}

/// Section `registration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistrationConfig {
    /// `registration.local_tiles`: tile-local registration (TLR).
    pub local_tiles: LocalTilesConfig,
    /// `registration.reference_frame` (tlr): the output's geometry. 0 (default): the sequence's mean
    /// geometry (the robust unweighted time mean of every frame's motion); N >= 1: frame N's linear
    /// geometry (its translation, rotation and stretch; frames numbered from 1 in run order), to match
    /// an existing image. Range 0..=1000000.
    pub reference_frame: usize,
    /// `registration.global` (tlr): how whole frames are placed and which are kept. Left out of the
    /// serialisation (and so of the digest) while it has its defaults, so configurations without it keep
    /// their digest.
    #[serde(skip_serializing_if = "GlobalRegistrationConfig::is_default")]
    pub global: GlobalRegistrationConfig,
    /// `registration.unweighted_geometry` (tlr): re-place each tile's weighted result on the geometry
    /// of the same frames stacked without weights, so that quality weights do not move stars (batch
    /// runs; see `tlr_core::operator::neutral`). Default true. Left out of the serialisation while
    /// true, so configurations without it keep their digest.
    #[serde(skip_serializing_if = "is_true")]
    pub unweighted_geometry: bool,
}

fn is_true(v: &bool) -> bool {
    *v
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            local_tiles: LocalTilesConfig::default(),
            reference_frame: 0,
            global: GlobalRegistrationConfig::default(),
            unweighted_geometry: true,
        }
    }
}

/// Section `registration.global` (tlr).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalRegistrationConfig {
    /// `method`: `auto` (stars when the star pass placed at least half of the frames, else
    /// correlation), `stars` or `correlation` (whole-frame phase correlation, for the Sun, the Moon and
    /// planets). Default `auto`.
    pub method: crate::global::GlobalMethod,
    /// `keep_best_percent`: only the best this many percent of the frames take part (the sharpest
    /// without stars, the highest global weight with stars). Default 100, range (0, 100].
    pub keep_best_percent: f64,
}

impl Default for GlobalRegistrationConfig {
    fn default() -> Self {
        Self {
            method: crate::global::GlobalMethod::Auto,
            keep_best_percent: 100.0,
        }
    }
}

impl GlobalRegistrationConfig {
    /// True when every key has its default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Section `registration.local_tiles`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalTilesConfig {
    /// `ecc_cc_min`: frames whose correlation with the tile reference is lower are dropped for that tile.
    /// Default 0.2, range 0..=1.
    pub ecc_cc_min: f64,
    /// `min_valid_frames`: a tile with fewer surviving frames is invalid. Default 10, at least 1.
    pub min_valid_frames: usize,
    /// `max_warp_delta_px`: a frame whose tile shift lies farther than this from the tile's temporally
    /// smoothed shift track is dropped for that tile. Default 2.0 (tile_compile ships 0.3 measured
    /// against the plain median shift, which rejects every frame once the field drifts), range (0, 10].
    pub max_warp_delta_px: f64,
    /// `temporal_smoothing_window`: frames in the shift smoothing window. Default 11, odd, range 3..=51.
    pub temporal_smoothing_window: usize,
    /// `variance_window_sigma`: sigma of the blend weight psi(v) = exp(-v / (2 sigma²)) (px).
    /// Default 2.0, range 0.5..=10.
    pub variance_window_sigma: f64,
    /// `allow_rotation`: accepted for tile_compile compatibility. tlr registers each tile by translation
    /// only (field rotation appears as tile-dependent translations); `true` gives a warning. Default false.
    pub allow_rotation: bool,
    /// `smoothing` (tlr): `savgol` | `median` | `none`. Default `savgol`.
    pub smoothing: Smoothing,
    /// `rejection_kappa` (tlr): per-pixel sigma-clipping threshold of the weighted combination (removes
    /// hot pixels, satellite trails, cosmic rays). Default 3.0, range 1..=10.
    pub rejection_kappa: f64,
    /// `keep_best_percent` (tlr): per-tile best-N, only the best this many percent of the frames take
    /// part in each tile (the sharpest in the tile without stars, the highest global weight with
    /// stars). Default 100 (all), range (0, 100].
    pub keep_best_percent: f64,
}

impl Default for LocalTilesConfig {
    fn default() -> Self {
        Self {
            ecc_cc_min: 0.2,
            min_valid_frames: 10,
            max_warp_delta_px: 2.0,
            temporal_smoothing_window: 11,
            variance_window_sigma: 2.0,
            allow_rotation: false,
            smoothing: Smoothing::Savgol,
            rejection_kappa: 3.0,
            keep_best_percent: 100.0,
        }
    }
}

/// Section `tile`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TileConfig {
    /// `tile.size_factor`: T0 = clip(size_factor * median FWHM, min_size, max_size). Default 32,
    /// range 1..=256.
    pub size_factor: f64,
    /// `tile.min_size`: smallest tile edge (px). Default 64, range 16..=4096.
    pub min_size: usize,
    /// `tile.max_size` (tlr): largest tile edge (px). Default 256, range 16..=4096, at least `min_size`.
    pub max_size: usize,
    /// `tile.overlap_fraction`: overlap between neighbouring tiles. Default 0.25, range 0..=0.5.
    pub overlap_fraction: f64,
    /// `tile.margin_px` (tlr): extra pixels read around a tile on every side, so shifted pixels are real
    /// data; bounds the largest tile-local shift found. Default 16, range 2..=128.
    pub margin_px: usize,
}

impl Default for TileConfig {
    fn default() -> Self {
        Self {
            size_factor: 32.0,
            min_size: 64,
            max_size: 256,
            overlap_fraction: 0.25,
            margin_px: 16,
        }
    }
}

impl Config {
    /// The number of tile workers to run: the configured `v4.parallel_tiles`, or min(8, `physical_cores`)
    /// when it is `auto`; at least 1. It does not check the rules: call [`Config::validate`] first.
    pub fn parallel_tiles(&self, physical_cores: usize) -> usize {
        self.v4
            .parallel_tiles
            .unwrap_or_else(|| PARALLEL_TILES_DEFAULT.min(physical_cores))
            .max(1)
    }

    /// SHA-256 (lowercase hex, 64 characters) of a canonical serialization of the settings that shape the
    /// result, for FITS `HISTORY`. Settings that only say how a run is executed and cannot change the
    /// image (`v4.parallel_tiles`, `v4.memory_limits`, `v4.diagnostics`) are left out, so that the same
    /// data and settings give a bit-identical output file whatever the worker count.
    pub fn digest(&self) -> String {
        let mut shaping = self.clone();
        shaping.v4.parallel_tiles = None;
        shaping.v4.memory_limits = MemoryLimitsConfig::default();
        shaping.v4.diagnostics = DiagnosticsConfig::default();
        // serde_json writes struct fields in declaration order and floats in their shortest round-trip
        // form, so this text is canonical for a given Config.
        let json = serde_json::to_string(&shaping).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN.as_bytes());
        hasher.update(b"\n");
        hasher.update(json.as_bytes());
        let hash = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in hash {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    /// The effective configuration as YAML (every key, defaults filled in); parsing it gives this
    /// configuration back.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_default()
    }
}
