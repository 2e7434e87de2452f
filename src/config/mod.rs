//! # Configuration: the YAML file that describes a reconstruction
//!
//! What it does:
//! - reads a YAML file ([`load`]) or text ([`parse`]) into a typed [`Config`] with the published defaults of
//!   the tile_compile methodology v4 (`v4.*`, `registration.local_tiles.*`, `tile.*`, and
//!   `data.color_mode` / `data.bayer_pattern` for colour frames) plus a few settings of our own
//!   (`tile.size_factor`, `tile.max_size`, `tile.margin_px`, `registration.local_tiles.smoothing`,
//!   `registration.local_tiles.rejection_kappa`); `config/default.yaml` documents every key;
//! - accepts a user's whole `tile_compile.yaml`: sections and keys that tile_compile knows but tlr does not use
//!   (`stacking.method`, `calibration.*`, `v4.adaptive_tiles.use_warp_probe`, ...) are ignored with one warning
//!   per key path;
//! - reports **every** problem at once, each with its key path: unknown keys (with a "did you mean" suggestion
//!   from edit distance), wrong types, out-of-range values, inconsistent pairs, and the `v4.parallel_tiles`
//!   rules of the Phase 6 parallelisation reference (default min(8, physical cores); never above the
//!   machine's physical cores; never above 16);
//! - prints the effective configuration ([`Config::to_yaml`]) and its SHA-256 digest ([`Config::digest`])
//!   for FITS `HISTORY` provenance.
//!
//! What it does not do: it holds no runtime settings (progress bars, log level, output paths: those are CLI
//! flags), it does not build the operator's runtime parameters (the operator and pipeline map [`Config`] onto
//! them), and it does not interpret the tile_compile keys it ignores.
//!
//! The YAML crate (`serde_norway`, the maintained fork of the archived `serde_yaml`) is used only inside
//! [`parse`]: no type of it appears in this module's public API, so swapping it touches one function.
//!
//! Hostile input is refused before the YAML is deserialised (`config/guard.rs`): more than [`MAX_BYTES`]
//! (1 MiB), sequences and mappings nested deeper than [`MAX_DEPTH`] (64), or more than [`MAX_VALUES`]
//! values once aliases are expanded; each check is one linear pass, so any file is refused in
//! milliseconds with [`ConfigError::Rejected`] naming the file, the bound and where it was crossed.
//!
//! How parsing works: the text is parsed into a generic YAML value tree, the tree is walked against a static
//! table of known keys (unknown and unused keys are found there, every problem is collected), each known leaf
//! is converted field by field (so several type errors are reported together), and finally
//! [`Config::validate`] checks ranges and the parallel_tiles rules. A key whose value is `null` (or empty)
//! keeps its default.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

mod guard;
pub use guard::{MAX_BYTES, MAX_DEPTH, MAX_VALUES};

/// Hard upper limit for `v4.parallel_tiles`, whatever the machine (Phase 6 parallelisation reference: the
/// speed-up is I/O-bound beyond 8–16 workers).
pub const PARALLEL_TILES_HARD_MAX: usize = 16;

/// Default number of tile workers on a machine with at least this many physical cores.
pub const PARALLEL_TILES_DEFAULT: usize = 8;

/// Version tag hashed together with the canonical serialization in [`Config::digest`]; bump it when the
/// meaning of a key changes so that old digests cannot collide with new ones.
const DIGEST_DOMAIN: &str = "tlr-config/1";

/// Errors of loading or parsing a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read configuration file `{}`", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML (syntax error, duplicate key, ...).
    #[error("configuration `{source_name}` is not valid YAML{}: {message}", location_suffix(*line, *column))]
    Parse {
        /// File name (or other label) of the text.
        source_name: String,
        /// 1-based line of the error, when the YAML parser knows it.
        line: Option<usize>,
        /// 1-based column of the error, when the YAML parser knows it.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The text crosses a hostile-input bound (checked before the YAML is deserialised): more than
    /// [`MAX_BYTES`] bytes, sequences and mappings nested deeper than [`MAX_DEPTH`], or more than
    /// [`MAX_VALUES`] values once aliases are expanded.
    #[error("configuration `{source_name}` is rejected{}: {reason}", location_suffix(*line, *column))]
    Rejected {
        /// File name (or other label) of the text.
        source_name: String,
        /// 1-based line where the bound was crossed (none for the size bound).
        line: Option<usize>,
        /// 1-based column where the bound was crossed (none for the size bound).
        column: Option<usize>,
        /// Which bound, e.g. "nesting deeper than 64 levels".
        reason: String,
    },
    /// The YAML is well-formed but has problems: unknown keys, wrong types, out-of-range values.
    /// Every problem is listed, each naming its key path.
    #[error("configuration `{source_name}` has {}:\n{}", plural(problems.len(), "problem"), bullet_list(problems))]
    Invalid {
        /// File name (or other label) of the text.
        source_name: String,
        /// One message per problem, each naming its key path (e.g. "`v4.iterations` must be ...").
        problems: Vec<String>,
    },
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn bullet_list(items: &[String]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str("  - ");
        out.push_str(item);
    }
    out
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RegistrationConfig {
    /// `registration.local_tiles`: tile-local registration (TLR).
    pub local_tiles: LocalTilesConfig,
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

/// A parsed and validated configuration plus the warnings (ignored tile_compile keys, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    /// One message per ignored key or questionable setting, each naming its key path.
    pub warnings: Vec<String>,
}

/// The number of physical CPU cores of this machine (at least 1).
pub fn physical_cores() -> usize {
    num_cpus::get_physical().max(1)
}

/// Reads, parses and validates a configuration file, checking `v4.parallel_tiles` against this machine's
/// [`physical_cores`].
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Rejected`] above the hostile-input
/// bounds (a file over [`MAX_BYTES`] is refused unread), [`ConfigError::Parse`] for YAML syntax errors,
/// [`ConfigError::Invalid`] listing every problem otherwise.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let name = path.display().to_string();
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // A file above the size bound is refused unread (its length may also be unknown: a pipe).
    let length = file.metadata().map_err(read_error)?.len();
    if length > MAX_BYTES as u64 {
        return Err(rejected(&name, guard::too_large(length)));
    }
    let mut text = String::new();
    file.take(MAX_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    parse(&text, &name)
}

fn rejected(source: &str, r: guard::Rejection) -> ConfigError {
    ConfigError::Rejected {
        source_name: source.to_string(),
        line: r.line,
        column: r.column,
        reason: r.reason,
    }
}

/// Parses and validates configuration text; `source` names it in messages (usually the file name).
/// `v4.parallel_tiles` is checked against this machine's [`physical_cores`].
///
/// # Errors
/// [`ConfigError::Rejected`] for a text above the hostile-input bounds ([`MAX_BYTES`], [`MAX_DEPTH`],
/// [`MAX_VALUES`]), [`ConfigError::Parse`] for YAML syntax errors, [`ConfigError::Invalid`] listing every
/// problem otherwise.
pub fn parse(text: &str, source: &str) -> Result<LoadedConfig, ConfigError> {
    parse_with_cores(text, source, physical_cores())
}

/// Like [`parse`], with the machine's physical core count given (for tests and for checking a
/// configuration meant for another machine).
///
/// # Errors
/// As [`parse`].
///
/// # Examples
/// ```
/// use tlr_core::config::{parse_with_cores, ConfigError};
///
/// let text = "v4:\n  iterations: 4\nstacking:\n  method: rej\n";
/// let loaded = parse_with_cores(text, "tile_compile.yaml", 8).unwrap();
/// assert_eq!(loaded.config.v4.iterations, 4);
/// assert_eq!(loaded.config.parallel_tiles(8), 8); // `auto`: min(8, physical cores)
/// assert_eq!(loaded.warnings, ["`stacking.method` is not used by tlr and is ignored"]);
///
/// let err = parse_with_cores("v4:\n  iteratons: 4\n  parallel_tiles: 3\n", "my.yaml", 2).unwrap_err();
/// let ConfigError::Invalid { problems, .. } = err else { panic!() };
/// assert_eq!(problems[0], "unknown key `v4.iteratons`, did you mean `v4.iterations`?");
/// assert!(problems[1].contains("exceeds the 2 physical CPU cores"));
/// ```
pub fn parse_with_cores(
    text: &str,
    source: &str,
    physical_cores: usize,
) -> Result<LoadedConfig, ConfigError> {
    // The only place that touches the YAML crate (the guard streams the same parser's events first).
    guard::check(text).map_err(|r| rejected(source, r))?;
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let location = e.location();
        let mut message = e.to_string();
        if let Some(l) = &location {
            // The location is shown separately; drop the parser's own copy of it.
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        ConfigError::Parse {
            source_name: source.to_string(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    })?;
    let mut problems = Vec::new();
    if let Err(e) = value.apply_merge() {
        problems.push(format!("YAML merge key (`<<`) cannot be applied: {e}"));
    }
    let mut reader = Reader::default();
    reader.walk_root(&value);
    let config = reader.extract();
    let warnings = reader.warnings;
    problems.extend(reader.problems);
    if let Err(range_problems) = config.validate(physical_cores) {
        problems.extend(range_problems);
    }
    if problems.is_empty() {
        Ok(LoadedConfig { config, warnings })
    } else {
        Err(ConfigError::Invalid {
            source_name: source.to_string(),
            problems,
        })
    }
}

/// Every key path tlr uses, in table order (e.g. `v4.iterations`, `tile.margin_px`).
pub fn known_keys() -> Vec<String> {
    let mut out = Vec::new();
    collect_used(ROOT, "", &mut out);
    out
}

impl Config {
    /// Checks every range and cross-field rule; `physical_cores` is the machine's physical core count
    /// (see [`physical_cores`]), given as a parameter so that tests can inject it.
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

        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    /// `None` when `frames` usable frames can give valid tiles; otherwise the message for the user.
    ///
    /// Methodology v4 makes a tile invalid when fewer than `registration.local_tiles.min_valid_frames`
    /// frames survive in it, so a run with fewer usable frames than that cannot reconstruct a single
    /// tile. Checking this right after the scan (and again after the global pass, which may reject
    /// frames) turns a long run ending in "0 of N tiles valid" into an immediate, actionable error.
    /// `what` says which count this is (e.g. "frames in `dir`"). The message names the key, both numbers
    /// and the value to set; it does not lower the minimum by itself: that is the user's choice, because
    /// it weakens the per-pixel outlier rejection the minimum protects.
    pub fn too_few_frames(&self, frames: usize, what: &str) -> Option<String> {
        let min = self.registration.local_tiles.min_valid_frames;
        (frames < min).then(|| {
            let suggest = frames.max(1);
            format!(
                "only {frames} usable {what}, but registration.local_tiles.min_valid_frames is {min}: \
                 every tile needs at least {min} frames, so no tile could be reconstructed. Add frames, \
                 or set registration.local_tiles.min_valid_frames to {suggest} or less in the \
                 configuration (YAML: `registration: {{local_tiles: {{min_valid_frames: {suggest}}}}}`); \
                 with so few frames, outlier rejection (satellites, hot pixels) is weak"
            )
        })
    }

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

// ---------------------------------------------------------------------------------------------------
// The key table.

/// What a key of the table is.
enum Spec {
    /// A section with known children.
    Section(&'static [(&'static str, Spec)]),
    /// A value tlr reads.
    Leaf,
    /// A key (or whole section) tile_compile knows but tlr does not use; the text is an optional reason.
    Unused(&'static str),
}

use Spec::{Leaf, Section, Unused};

const NO_REASON: &str = "";

const ROOT: &[(&str, Spec)] = &[
    ("v4", Section(V4)),
    ("registration", Section(REGISTRATION)),
    ("tile", Section(TILE)),
    // Top-level sections and keys of tile_compile.yaml (Python v4 and C++ versions) that tlr does not use.
    ("schema_version", Unused(NO_REASON)),
    (
        "run_dir",
        Unused("tlr takes its output path on the command line"),
    ),
    (
        "log_level",
        Unused("tlr takes its verbosity on the command line"),
    ),
    ("pipeline", Unused(NO_REASON)),
    (
        "input",
        Unused("tlr takes its input folder on the command line"),
    ),
    (
        "output",
        Unused("tlr takes its output path on the command line"),
    ),
    ("data", Section(DATA)),
    ("linearity", Unused(NO_REASON)),
    ("calibration", Unused("tlr expects calibrated frames")),
    ("assumptions", Unused(NO_REASON)),
    (
        "normalization",
        Unused("tlr always normalises each frame by its robust background"),
    ),
    ("wiener_denoise", Unused(NO_REASON)),
    ("global_metrics", Unused(NO_REASON)),
    ("local_metrics", Unused(NO_REASON)),
    ("synthetic", Unused(NO_REASON)),
    ("reconstruction", Unused(NO_REASON)),
    ("debayer", Unused(NO_REASON)),
    ("stacking", Unused(NO_REASON)),
    ("validation", Unused(NO_REASON)),
    ("runtime_limits", Unused(NO_REASON)),
];

const DATA: &[(&str, Spec)] = &[
    ("color_mode", Leaf),
    ("bayer_pattern", Leaf),
    (
        "image_width",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    (
        "image_height",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    (
        "frames_min",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    (
        "frames_target",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    ("linear_required", Unused("tlr expects linear frames")),
];

const V4: &[(&str, Spec)] = &[
    ("parallel_tiles", Leaf),
    ("iterations", Leaf),
    ("beta", Leaf),
    ("min_valid_tile_fraction", Leaf),
    ("convergence", Section(CONVERGENCE)),
    ("adaptive_tiles", Section(ADAPTIVE_TILES)),
    ("memory_limits", Section(MEMORY_LIMITS)),
    ("diagnostics", Section(DIAGNOSTICS)),
    ("debug_tile_registration", Unused(NO_REASON)),
];

const CONVERGENCE: &[(&str, Spec)] = &[("enabled", Leaf), ("epsilon_rel", Leaf)];

const ADAPTIVE_TILES: &[(&str, Spec)] = &[
    ("enabled", Leaf),
    ("max_refine_passes", Leaf),
    ("refine_variance_threshold", Leaf),
    ("min_tile_size_px", Leaf),
    ("use_warp_probe", Unused(NO_REASON)),
    ("use_hierarchical", Unused(NO_REASON)),
    ("initial_tile_size", Unused(NO_REASON)),
    ("probe_window", Unused(NO_REASON)),
    ("num_probe_frames", Unused(NO_REASON)),
    ("gradient_sensitivity", Unused(NO_REASON)),
    ("split_gradient_threshold", Unused(NO_REASON)),
    ("hierarchical_max_depth", Unused(NO_REASON)),
];

const MEMORY_LIMITS: &[(&str, Spec)] = &[("rss_warn_mb", Leaf), ("rss_abort_mb", Leaf)];

const DIAGNOSTICS: &[(&str, Spec)] = &[
    ("enabled", Leaf),
    ("warp_field", Leaf),
    ("tile_invalid_map", Leaf),
    ("warp_variance_hist", Leaf),
];

const REGISTRATION: &[(&str, Spec)] = &[
    ("local_tiles", Section(LOCAL_TILES)),
    ("mode", Unused("tlr always registers tile-locally")),
    ("enabled", Unused("tlr always registers tile-locally")),
    (
        "engine",
        Unused("tlr registers tiles by cross-correlation and ECC refinement"),
    ),
    (
        "allow_rotation",
        Unused("it belongs to tile_compile's global registration"),
    ),
    ("min_score", Unused(NO_REASON)),
    ("fallback_to_identity", Unused(NO_REASON)),
    ("star_topk", Unused(NO_REASON)),
    ("star_min_inliers", Unused(NO_REASON)),
    ("star_inlier_tol_px", Unused(NO_REASON)),
    ("star_dist_bin_px", Unused(NO_REASON)),
];

const LOCAL_TILES: &[(&str, Spec)] = &[
    ("ecc_cc_min", Leaf),
    ("min_valid_frames", Leaf),
    ("max_warp_delta_px", Leaf),
    ("temporal_smoothing_window", Leaf),
    ("variance_window_sigma", Leaf),
    ("allow_rotation", Leaf),
    ("smoothing", Leaf),
    ("rejection_kappa", Leaf),
];

const TILE: &[(&str, Spec)] = &[
    ("size_factor", Leaf),
    ("min_size", Leaf),
    ("max_size", Leaf),
    ("overlap_fraction", Leaf),
    ("margin_px", Leaf),
    (
        "max_divisor",
        Unused("tlr bounds the tile size by `tile.max_size`"),
    ),
    ("star_min_count", Unused(NO_REASON)),
];

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn collect_used(table: &[(&str, Spec)], prefix: &str, out: &mut Vec<String>) {
    for (name, spec) in table {
        match spec {
            Section(children) => collect_used(children, &join(prefix, name), out),
            Leaf => out.push(join(prefix, name)),
            Unused(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Walking the YAML tree against the table.

use serde_norway::Value;

#[derive(Default)]
struct Reader {
    /// Known leaves found in the document, by key path.
    leaves: BTreeMap<String, Value>,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Reader {
    fn walk_root(&mut self, value: &Value) {
        match value {
            Value::Null => {}
            Value::Mapping(_) => self.walk_section(value, ROOT, ""),
            other => self.problems.push(format!(
                "the configuration must be a mapping of sections (`v4`, `registration`, `tile`), got {}",
                describe(other)
            )),
        }
    }

    fn walk_section(
        &mut self,
        value: &Value,
        table: &'static [(&'static str, Spec)],
        prefix: &str,
    ) {
        let map = match value {
            Value::Null => return,
            Value::Mapping(map) => map,
            other => {
                self.problems.push(format!(
                    "`{prefix}` must be a section (a mapping of keys), got {}",
                    describe(other)
                ));
                return;
            }
        };
        for (key, child) in map {
            let Some(name) = key_name(key) else {
                let place = if prefix.is_empty() {
                    "the top level".to_string()
                } else {
                    format!("`{prefix}`")
                };
                self.problems.push(format!(
                    "{place} has a key that is not a name: {}",
                    describe(key)
                ));
                continue;
            };
            let path = join(prefix, &name);
            match table.iter().find(|(n, _)| *n == name) {
                Some((_, Section(children))) => self.walk_section(child, children, &path),
                Some((_, Leaf)) => {
                    self.leaves.insert(path, child.clone());
                }
                Some((_, Unused(reason))) => self.warn_unused(child, &path, reason),
                None => self
                    .problems
                    .push(unknown_key_message(&name, prefix, table)),
            }
        }
    }

    fn warn_unused(&mut self, value: &Value, path: &str, reason: &str) {
        match value {
            Value::Mapping(map) if !map.is_empty() => {
                for (key, child) in map {
                    let name = key_name(key).unwrap_or_else(|| format!("{key:?}"));
                    self.warn_unused(child, &join(path, &name), reason);
                }
            }
            _ => {
                let mut msg = format!("`{path}` is not used by tlr and is ignored");
                if !reason.is_empty() {
                    let _ = write!(msg, " ({reason})");
                }
                self.warnings.push(msg);
            }
        }
    }

    /// Builds the configuration from the collected leaves, field by field, collecting type problems.
    fn extract(&mut self) -> Config {
        let mut c = Config::default();
        let v4 = &mut c.v4;
        if let Some(v) = self.get("v4.parallel_tiles") {
            match &v {
                Value::Null => v4.parallel_tiles = None,
                Value::String(s) if s.trim().eq_ignore_ascii_case("auto") => {
                    v4.parallel_tiles = None
                }
                other => match to_usize(other) {
                    Ok(n) => v4.parallel_tiles = Some(n),
                    Err(_) => self.problems.push(format!(
                        "`v4.parallel_tiles` must be a whole number of workers or `auto`, got {}",
                        describe(other)
                    )),
                },
            }
        }
        self.take("v4.iterations", &mut v4.iterations, to_usize);
        self.take("v4.beta", &mut v4.beta, to_f64);
        self.take(
            "v4.min_valid_tile_fraction",
            &mut v4.min_valid_tile_fraction,
            to_f64,
        );
        self.take(
            "v4.convergence.enabled",
            &mut v4.convergence.enabled,
            to_bool,
        );
        self.take(
            "v4.convergence.epsilon_rel",
            &mut v4.convergence.epsilon_rel,
            to_f64,
        );
        let at = &mut v4.adaptive_tiles;
        self.take("v4.adaptive_tiles.enabled", &mut at.enabled, to_bool);
        self.take(
            "v4.adaptive_tiles.max_refine_passes",
            &mut at.max_refine_passes,
            to_usize,
        );
        self.take(
            "v4.adaptive_tiles.refine_variance_threshold",
            &mut at.refine_variance_threshold,
            to_f64,
        );
        self.take(
            "v4.adaptive_tiles.min_tile_size_px",
            &mut at.min_tile_size_px,
            to_usize,
        );
        let ml = &mut v4.memory_limits;
        self.take("v4.memory_limits.rss_warn_mb", &mut ml.rss_warn_mb, to_u64);
        self.take(
            "v4.memory_limits.rss_abort_mb",
            &mut ml.rss_abort_mb,
            to_u64,
        );
        let d = &mut v4.diagnostics;
        self.take("v4.diagnostics.enabled", &mut d.enabled, to_bool);
        self.take("v4.diagnostics.warp_field", &mut d.warp_field, to_bool);
        self.take(
            "v4.diagnostics.tile_invalid_map",
            &mut d.tile_invalid_map,
            to_bool,
        );
        self.take(
            "v4.diagnostics.warp_variance_hist",
            &mut d.warp_variance_hist,
            to_bool,
        );

        let lt = &mut c.registration.local_tiles;
        self.take(
            "registration.local_tiles.ecc_cc_min",
            &mut lt.ecc_cc_min,
            to_f64,
        );
        self.take(
            "registration.local_tiles.min_valid_frames",
            &mut lt.min_valid_frames,
            to_usize,
        );
        self.take(
            "registration.local_tiles.max_warp_delta_px",
            &mut lt.max_warp_delta_px,
            to_f64,
        );
        self.take(
            "registration.local_tiles.temporal_smoothing_window",
            &mut lt.temporal_smoothing_window,
            to_usize,
        );
        self.take(
            "registration.local_tiles.variance_window_sigma",
            &mut lt.variance_window_sigma,
            to_f64,
        );
        self.take(
            "registration.local_tiles.allow_rotation",
            &mut lt.allow_rotation,
            to_bool,
        );
        self.take(
            "registration.local_tiles.smoothing",
            &mut lt.smoothing,
            to_smoothing,
        );
        self.take(
            "registration.local_tiles.rejection_kappa",
            &mut lt.rejection_kappa,
            to_f64,
        );
        if lt.allow_rotation {
            self.warnings.push(
                "`registration.local_tiles.allow_rotation: true`: tlr registers every tile by translation \
                 only; field rotation is followed through the tile-dependent shifts"
                    .to_string(),
            );
        }

        let t = &mut c.tile;
        self.take("tile.size_factor", &mut t.size_factor, to_f64);
        self.take("tile.min_size", &mut t.min_size, to_usize);
        self.take("tile.max_size", &mut t.max_size, to_usize);
        self.take("tile.overlap_fraction", &mut t.overlap_fraction, to_f64);
        self.take("tile.margin_px", &mut t.margin_px, to_usize);
        let d = &mut c.data;
        self.take("data.color_mode", &mut d.color_mode, to_color_mode);
        self.take("data.bayer_pattern", &mut d.bayer_pattern, to_bayer_pattern);
        debug_assert!(
            self.leaves.is_empty(),
            "leaves in the key table without extraction: {:?}",
            self.leaves.keys().collect::<Vec<_>>()
        );
        c
    }

    fn get(&mut self, path: &str) -> Option<Value> {
        self.leaves.remove(path)
    }

    /// Converts the value at `path` (if present and not null) into `slot`, or records a problem.
    fn take<T>(&mut self, path: &str, slot: &mut T, convert: fn(&Value) -> Result<T, String>) {
        match self.get(path) {
            None | Some(Value::Null) => {}
            Some(v) => match convert(&v) {
                Ok(x) => *slot = x,
                Err(expected) => self
                    .problems
                    .push(format!("`{path}` must be {expected}, got {}", describe(&v))),
            },
        }
    }
}

fn key_name(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A short description of a YAML value for messages: `string "high"`, `-3`, `a list`, ...
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            let ellipsis = if s.chars().count() > 40 { "..." } else { "" };
            format!("the text \"{shown}{ellipsis}\"")
        }
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged `{}`", t.tag),
    }
}

fn to_u64(v: &Value) -> Result<u64, String> {
    const EXPECTED: &str = "a whole number (0 or more)";
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if let Some(f) = n.as_f64() {
                // `3.0` is accepted as 3; `3.5`, negative numbers, NaN and infinities are not.
                if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 {
                    Ok(f as u64)
                } else {
                    Err(EXPECTED.to_string())
                }
            } else {
                Err(EXPECTED.to_string())
            }
        }
        _ => Err(EXPECTED.to_string()),
    }
}

fn to_usize(v: &Value) -> Result<usize, String> {
    to_u64(v).and_then(|u| usize::try_from(u).map_err(|_| "a smaller whole number".to_string()))
}

fn to_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "a number".to_string()),
        _ => Err("a number".to_string()),
    }
}

fn to_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err("`true` or `false`".to_string()),
    }
}

fn to_color_mode(v: &Value) -> Result<ColorModeSetting, String> {
    const EXPECTED: &str = "one of `auto`, `mono`, `osc`";
    match v {
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(ColorModeSetting::Auto),
            "mono" => Ok(ColorModeSetting::Mono),
            "osc" | "color" | "colour" | "bayer" => Ok(ColorModeSetting::Osc),
            _ => Err(EXPECTED.to_string()),
        },
        _ => Err(EXPECTED.to_string()),
    }
}

fn to_bayer_pattern(v: &Value) -> Result<Option<crate::bayer::CfaPattern>, String> {
    const EXPECTED: &str = "one of `RGGB`, `BGGR`, `GRBG`, `GBRG`, `auto`";
    match v {
        Value::String(s) if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("auto") => {
            Ok(None)
        }
        Value::String(s) => s.parse().map(Some).map_err(|_| EXPECTED.to_string()),
        _ => Err(EXPECTED.to_string()),
    }
}

fn to_smoothing(v: &Value) -> Result<Smoothing, String> {
    const EXPECTED: &str = "one of `savgol`, `median`, `none`";
    match v {
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "savgol" | "savitzky-golay" | "savitzky_golay" => Ok(Smoothing::Savgol),
            "median" => Ok(Smoothing::Median),
            "none" | "off" => Ok(Smoothing::None),
            _ => Err(EXPECTED.to_string()),
        },
        // YAML 1.1 habits: `smoothing: off` / `false` parse as a boolean in some writers.
        Value::Bool(false) => Ok(Smoothing::None),
        _ => Err(EXPECTED.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------
// Suggestions for unknown keys.

fn unknown_key_message(name: &str, prefix: &str, table: &[(&str, Spec)]) -> String {
    let path = join(prefix, name);
    let needle = name.to_ascii_lowercase();
    // 1. A near sibling (typo at the right place).
    let best = table
        .iter()
        .map(|(n, _)| (edit_distance(&needle, &n.to_ascii_lowercase()), *n))
        .min_by_key(|(d, _)| *d);
    if let Some((d, n)) = best {
        if d <= typo_budget(name) {
            return format!("unknown key `{path}`, did you mean `{}`?", join(prefix, n));
        }
    }
    // 2. The same (or a near) key elsewhere in the table (right name, wrong section).
    let mut used = Vec::new();
    collect_used(ROOT, "", &mut used);
    let elsewhere = used
        .iter()
        .map(|full| {
            let last = full.rsplit('.').next().unwrap_or(full);
            (edit_distance(&needle, &last.to_ascii_lowercase()), full)
        })
        .min_by_key(|(d, _)| *d);
    if let Some((d, full)) = elsewhere {
        if d <= typo_budget(name) {
            return format!("unknown key `{path}`, did you mean `{full}`?");
        }
    }
    // 3. No good guess: list what this section accepts.
    let names: Vec<String> = table
        .iter()
        .filter(|(_, s)| !matches!(s, Unused(_)))
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let place = if prefix.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in `{prefix}`")
    };
    format!(
        "unknown key `{path}`; tlr knows {place}: {}",
        names.join(", ")
    )
}

/// How many edits a name may be away from a known key to count as a typo of it.
fn typo_budget(name: &str) -> usize {
    (name.chars().count() / 4).clamp(1, 3)
}

/// Optimal-string-alignment distance: Levenshtein plus transposition of two neighbouring characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_frames_names_the_key_and_a_yaml_fix_that_works() {
        let cfg = Config::default();
        let min = cfg.registration.local_tiles.min_valid_frames;
        assert!(cfg.too_few_frames(min, "frames").is_none());
        assert!(cfg.too_few_frames(min + 5, "frames").is_none());
        let m = cfg
            .too_few_frames(6, "frames in `m27`")
            .expect("6 < default minimum");
        assert!(
            m.contains("registration.local_tiles.min_valid_frames is 10"),
            "{m}"
        );
        assert!(m.contains("only 6 usable frames in `m27`"), "{m}");
        // The suggested YAML is a configuration tlr accepts, and it resolves the problem.
        let yaml = m
            .split('`')
            .find(|s| s.starts_with("registration:"))
            .expect("yaml");
        let fixed = parse(yaml, "suggestion")
            .expect("the suggestion parses")
            .config;
        assert_eq!(fixed.registration.local_tiles.min_valid_frames, 6);
        assert!(fixed.validate(4).is_ok());
        assert!(fixed.too_few_frames(6, "frames").is_none());
        // No frames at all still suggests a valid minimum (>= 1).
        assert!(cfg
            .too_few_frames(0, "frames")
            .is_some_and(|m| m.contains("min_valid_frames: 1")));
    }

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("iterations", "iterations"), 0);
        assert_eq!(edit_distance("iteratons", "iterations"), 1);
        assert_eq!(edit_distance("itreations", "iterations"), 1); // transposition
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("beta", "bteaa"), 2);
    }

    #[test]
    fn suggestions_prefer_siblings_then_other_sections() {
        let m = unknown_key_message("iteratons", "v4", V4);
        assert_eq!(
            m,
            "unknown key `v4.iteratons`, did you mean `v4.iterations`?"
        );
        let m = unknown_key_message("ecc_cc_min", "v4", V4);
        assert_eq!(
            m,
            "unknown key `v4.ecc_cc_min`, did you mean `registration.local_tiles.ecc_cc_min`?"
        );
        let m = unknown_key_message("zzzzzzzz", "tile", TILE);
        assert!(m.contains("tlr knows in `tile`"), "{m}");
        assert!(m.contains("`margin_px`"), "{m}");
        assert!(
            !m.contains("max_divisor"),
            "unused keys are not advertised: {m}"
        );
    }

    #[test]
    fn every_table_leaf_is_extracted() {
        // extract() debug_asserts that no collected leaf is left over; feed it every leaf.
        let mut r = Reader::default();
        for key in known_keys() {
            r.leaves.insert(key, Value::Null);
        }
        let c = r.extract();
        assert_eq!(c, Config::default());
        assert!(r.problems.is_empty());
    }

    #[test]
    fn describe_is_short_and_clear() {
        assert_eq!(describe(&Value::String("high".into())), "the text \"high\"");
        assert_eq!(describe(&Value::Bool(true)), "`true`");
        assert!(describe(&Value::String("x".repeat(100))).ends_with("...\""));
    }
}
