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
//!
//! The parts, in the order a text goes through them: `guard.rs` (hostile-input bounds), `walk.rs` (the
//! YAML tree walked against the key table of `keys.rs`, leaves converted into the typed sections of
//! `schema.rs`), `validate.rs` (ranges and cross-field rules). This file holds the entry points and the
//! error type.

use std::io::Read as _;
use std::path::{Path, PathBuf};

mod calibration;
mod guard;
mod keys;
mod overrides;
mod schema;
mod validate;
mod walk;

pub use calibration::CalibrationConfig;
pub use guard::{MAX_BYTES, MAX_DEPTH, MAX_VALUES};
pub use keys::known_keys;
pub use overrides::Override;
pub use schema::{
    AdaptiveTilesConfig, ColorModeSetting, Config, ConvergenceConfig, DataConfig,
    DiagnosticsConfig, GlobalRegistrationConfig, LocalTilesConfig, MemoryLimitsConfig,
    RegistrationConfig, Smoothing, TileConfig, V4Config, PARALLEL_TILES_DEFAULT,
};
pub use validate::{few_frames_warning, PARALLEL_TILES_HARD_MAX};

use walk::Reader;

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
    parse(&read_text(path)?, &path.display().to_string())
}

/// The text of a configuration file; a file above [`MAX_BYTES`] is refused unread.
fn read_text(path: &Path) -> Result<String, ConfigError> {
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
    Ok(text)
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
    let value = to_value(text, source)?;
    finish(value, source, physical_cores)
}

/// Reads the configuration file at `path` (or starts from the defaults when `None`), then applies the
/// `--set` [`Override`]s in order, after the file; the result goes through every check a file does
/// (unknown keys with a suggestion, types, ranges; `v4.parallel_tiles` against this machine's
/// [`physical_cores`]). Messages name the file and the `--set` pairs.
///
/// # Errors
/// As [`load`]; an override whose value is not one YAML value is a [`ConfigError::Parse`] or
/// [`ConfigError::Invalid`] naming the pair.
///
/// # Examples
/// ```
/// use tlr_core::config::{load_with_overrides, ConfigError, Override};
///
/// let set: Override = "registration.local_tiles.min_valid_frames=6".parse().unwrap();
/// let loaded = load_with_overrides(None, &[set]).unwrap();
/// assert_eq!(loaded.config.registration.local_tiles.min_valid_frames, 6);
///
/// let typo: Override = "v4.iteratons=4".parse().unwrap();
/// let ConfigError::Invalid { problems, .. } = load_with_overrides(None, &[typo]).unwrap_err() else {
///     panic!()
/// };
/// assert_eq!(problems[0], "unknown key `v4.iteratons`, did you mean `v4.iterations`?");
/// ```
pub fn load_with_overrides(
    path: Option<&Path>,
    overrides: &[Override],
) -> Result<LoadedConfig, ConfigError> {
    let (text, file) = match path {
        Some(path) => (read_text(path)?, path.display().to_string()),
        None => (String::new(), "defaults".to_string()),
    };
    let mut source = file.clone();
    for o in overrides {
        source.push_str(" + ");
        source.push_str(&o.label());
    }
    let mut value = to_value(&text, &file)?;
    overrides::apply(&mut value, overrides)?;
    finish(value, &source, physical_cores())
}

/// Parses configuration text into a YAML value tree, after the hostile-input bounds.
fn to_value(text: &str, source: &str) -> Result<serde_norway::Value, ConfigError> {
    // The only place that parses YAML text (the guard streams the same parser's events first).
    guard::check(text).map_err(|r| rejected(source, r))?;
    serde_norway::from_str(text).map_err(|e| {
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
    })
}

/// Walks a YAML value tree into a validated configuration, collecting every problem.
fn finish(
    mut value: serde_norway::Value,
    source: &str,
    physical_cores: usize,
) -> Result<LoadedConfig, ConfigError> {
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
