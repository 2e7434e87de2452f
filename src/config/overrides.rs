//! # One-off settings from the command line: `--set KEY=VALUE`
//!
//! What it does: [`Override`] is one `KEY=VALUE` pair (`KEY` a dotted key path such as
//! `registration.local_tiles.min_valid_frames`, `VALUE` one YAML scalar: `6`, `0.5`, `true`, `auto`,
//! `RGGB`; an empty value restores the default). [`apply`] writes the pairs into the YAML tree of a
//! file (or of an empty document) before it is walked, in the order given, after the file: the result
//! goes through exactly the checks a file does (unknown keys with "did you mean", tile_compile keys
//! tlr ignores, types, ranges), so `--set` accepts any key a file accepts.
//!
//! What it does not do: check keys or values itself (the walk and `validate.rs` do), or hold runtime
//! settings (worker count, output paths: those are CLI flags of their own).

use std::str::FromStr;

use serde_norway::{Mapping, Value};

use super::{guard, rejected, ConfigError};

/// One `--set KEY=VALUE` override of a configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The dotted key path, e.g. `v4.iterations`.
    pub key: String,
    /// The value as written (parsed as one YAML scalar when applied).
    pub value: String,
}

impl Override {
    /// How the pair is named in messages: `--set KEY=VALUE`.
    pub fn label(&self) -> String {
        format!("--set {}={}", self.key, self.value)
    }
}

impl FromStr for Override {
    type Err = String;

    /// Splits `KEY=VALUE` at the first `=`; the key must be a dotted path of non-empty names.
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((key, value)) = s.split_once('=') else {
            return Err(format!(
                "`{s}` is not KEY=VALUE (e.g. `registration.local_tiles.min_valid_frames=6`)"
            ));
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
            return Err(format!(
                "`{s}`: the key `{key}` must be a dotted path of names (e.g. `v4.iterations`)"
            ));
        }
        Ok(Self {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// Writes every override into `doc` (a parsed configuration file, or `Null` for none), in order.
///
/// # Errors
/// [`ConfigError::Rejected`] / [`ConfigError::Parse`] naming the `--set` pair whose value is not one
/// YAML value within the hostile-input bounds; [`ConfigError::Invalid`] when a value is a list or a
/// mapping instead of a single value.
pub(super) fn apply(doc: &mut Value, overrides: &[Override]) -> Result<(), ConfigError> {
    for o in overrides {
        let label = o.label();
        guard::check(&o.value).map_err(|r| rejected(&label, r))?;
        let value: Value = serde_norway::from_str(&o.value).map_err(|e| ConfigError::Parse {
            source_name: label.clone(),
            line: None,
            column: None,
            message: e.to_string(),
        })?;
        if matches!(value, Value::Sequence(_) | Value::Mapping(_)) {
            return Err(ConfigError::Invalid {
                source_name: label,
                problems: vec![format!(
                    "`{}` must be given one value (a number, a word, true or false), not a list \
                     or a mapping",
                    o.key
                )],
            });
        }
        set_path(doc, &o.key, value);
    }
    Ok(())
}

/// Sets `doc[a][b]...[z] = value` for the key path `a.b...z`, creating (or replacing anything that is
/// not a mapping by) the sections on the way.
fn set_path(doc: &mut Value, key: &str, value: Value) {
    let mut node = doc;
    for part in key.split('.').map(str::trim) {
        if !matches!(node, Value::Mapping(_)) {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            unreachable!("made a mapping above")
        };
        node = map
            .entry(Value::String(part.to_string()))
            .or_insert(Value::Null);
    }
    *node = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_equals_sign_and_need_a_key() {
        let o: Override = "data.bayer_pattern=RGGB".parse().unwrap();
        assert_eq!(
            (o.key.as_str(), o.value.as_str()),
            ("data.bayer_pattern", "RGGB")
        );
        let o: Override = "a.b=x=y".parse().unwrap();
        assert_eq!(o.value, "x=y");
        assert!("v4.iterations"
            .parse::<Override>()
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!("=3".parse::<Override>().is_err());
        assert!("v4..iterations=3".parse::<Override>().is_err());
    }

    #[test]
    fn a_value_replaces_the_file_value_and_creates_missing_sections() {
        let mut doc: Value = serde_norway::from_str("v4:\n  iterations: 4\n").unwrap();
        let set = |s: &str| s.parse::<Override>().unwrap();
        apply(
            &mut doc,
            &[
                set("v4.iterations=2"),
                set("registration.local_tiles.min_valid_frames=6"),
            ],
        )
        .unwrap();
        assert_eq!(doc["v4"]["iterations"], Value::from(2));
        assert_eq!(
            doc["registration"]["local_tiles"]["min_valid_frames"],
            Value::from(6)
        );
        let mut empty = Value::Null;
        apply(&mut empty, &[set("v4.beta=")]).unwrap();
        assert_eq!(empty["v4"]["beta"], Value::Null);
        let err = apply(&mut empty, &[set("v4.beta=[1, 2]")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`v4.beta` must be given one value"),
            "{err}"
        );
    }
}
