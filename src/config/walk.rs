//! # Walking the YAML tree against the key table, and converting each known leaf
//!
//! What it does: [`Reader`] walks the generic YAML value tree section by section against the key table
//! (`keys.rs`): a known leaf is collected by its key path, a key tile_compile knows but tlr does not use
//! gives one warning per key path, an unknown key or a value of the wrong shape gives a problem; then
//! [`Reader::extract`] converts the collected leaves field by field into a [`Config`] that starts from the
//! defaults, so that several type errors are reported together. A leaf whose value is `null` keeps its
//! default.
//!
//! What it does not do: parse the YAML text or check the hostile-input bounds (`mod.rs`, `guard.rs`),
//! or check ranges (`validate.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_norway::Value;

use super::keys::{join, unknown_key_message, Spec, ROOT};
use super::schema::{ColorModeSetting, Config, Smoothing};
use Spec::{Leaf, Section, Unused};

#[derive(Default)]
pub(super) struct Reader {
    /// Known leaves found in the document, by key path.
    leaves: BTreeMap<String, Value>,
    pub(super) problems: Vec<String>,
    pub(super) warnings: Vec<String>,
}

impl Reader {
    pub(super) fn walk_root(&mut self, value: &Value) {
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
    pub(super) fn extract(&mut self) -> Config {
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

        self.take(
            "registration.reference_frame",
            &mut c.registration.reference_frame,
            to_usize,
        );
        self.take(
            "registration.unweighted_geometry",
            &mut c.registration.unweighted_geometry,
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
        self.take(
            "registration.local_tiles.keep_best_percent",
            &mut lt.keep_best_percent,
            to_f64,
        );
        if lt.allow_rotation {
            self.warnings.push(
                "`registration.local_tiles.allow_rotation: true`: tlr registers every tile by translation \
                 only; field rotation is followed through the tile-dependent shifts"
                    .to_string(),
            );
        }

        let g = &mut c.registration.global;
        self.take("registration.global.method", &mut g.method, |v| match v {
            Value::String(s) => crate::global::GlobalMethod::parse(s)
                .map_err(|_| format!("one of {}", crate::global::GlobalMethod::CHOICES)),
            _ => Err(format!("one of {}", crate::global::GlobalMethod::CHOICES)),
        });
        self.take(
            "registration.global.keep_best_percent",
            &mut g.keep_best_percent,
            to_f64,
        );

        let t = &mut c.tile;
        self.take("tile.size_factor", &mut t.size_factor, to_f64);
        self.take("tile.min_size", &mut t.min_size, to_usize);
        self.take("tile.max_size", &mut t.max_size, to_usize);
        self.take("tile.overlap_fraction", &mut t.overlap_fraction, to_f64);
        self.take("tile.margin_px", &mut t.margin_px, to_usize);
        let d = &mut c.data;
        self.take("data.color_mode", &mut d.color_mode, to_color_mode);
        self.take("data.bayer_pattern", &mut d.bayer_pattern, to_bayer_pattern);
        super::calibration::extract(self, &mut c.calibration);
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
    pub(super) fn take<T>(
        &mut self,
        path: &str,
        slot: &mut T,
        convert: fn(&Value) -> Result<T, String>,
    ) {
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

pub(super) fn to_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "a number".to_string()),
        _ => Err("a number".to_string()),
    }
}

pub(super) fn to_bool(v: &Value) -> Result<bool, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::known_keys;

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
