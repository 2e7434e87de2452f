//! # Section `calibration`: tile_compile's calibration keys, with the same meanings
//!
//! What it does: declares [`CalibrationConfig`] (`use_bias`/`use_dark`/`use_flat` enable a kind;
//! `*_use_master` picks the master file `*_master` over the folder `*_dir`; dark matching by exposure
//! and optionally temperature; `pattern` for the files of a folder) plus tlr's own `dark_flats` (a
//! folder or master file of dark-flats) and `combine` (`mean`: sigma-clipped mean, or `median`); the key
//! table of the section, the extraction of its leaves and its range checks. tile_compile's defaults: no
//! kind enabled, exposure tolerance 5 %, temperature tolerance 2 °C, pattern `*.fit*`.
//!
//! What it does not: read calibration frames ([`crate::calibrate`] does).

use std::path::PathBuf;

use serde::Serialize;
use serde_norway::Value;

use super::keys::Spec::{self, Leaf};
use super::walk::Reader;
use crate::calibrate::Combine;

/// Section `calibration`. `Default` calibrates nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationConfig {
    /// `calibration.use_bias`: subtract a master bias.
    pub use_bias: bool,
    /// `calibration.use_dark`: subtract a master dark.
    pub use_dark: bool,
    /// `calibration.use_flat`: divide by a master flat.
    pub use_flat: bool,
    /// `calibration.bias_use_master`: take `bias_master` instead of building from `bias_dir`.
    pub bias_use_master: bool,
    /// `calibration.dark_use_master`: take `dark_master` instead of building from `darks_dir`.
    pub dark_use_master: bool,
    /// `calibration.flat_use_master`: take `flat_master` instead of building from `flats_dir`.
    pub flat_use_master: bool,
    /// `calibration.bias_dir`: folder of bias frames.
    pub bias_dir: Option<PathBuf>,
    /// `calibration.darks_dir`: folder of dark frames (of one or several exposures).
    pub darks_dir: Option<PathBuf>,
    /// `calibration.flats_dir`: folder of flat frames.
    pub flats_dir: Option<PathBuf>,
    /// `calibration.bias_master`: a master bias FITS.
    pub bias_master: Option<PathBuf>,
    /// `calibration.dark_master`: a master dark FITS (bias included).
    pub dark_master: Option<PathBuf>,
    /// `calibration.flat_master`: a master flat FITS (used as it is, then normalised).
    pub flat_master: Option<PathBuf>,
    /// `calibration.dark_auto_select`: one master per exposure (and temperature); each light takes the
    /// matching one. Default true.
    pub dark_auto_select: bool,
    /// `calibration.dark_match_exposure_tolerance_percent`: default 5, at least 0.
    pub dark_match_exposure_tolerance_percent: f64,
    /// `calibration.dark_match_use_temp`: match darks by `CCD-TEMP` too. Default false.
    pub dark_match_use_temp: bool,
    /// `calibration.dark_match_temp_tolerance_c`: default 2, at least 0.
    pub dark_match_temp_tolerance_c: f64,
    /// `calibration.pattern`: file patterns of a calibration folder (separated by `;` or spaces).
    pub pattern: String,
    /// `calibration.dark_flats` (tlr): a folder or master file of dark-flats, subtracted from the flats
    /// instead of the bias.
    pub dark_flats: Option<PathBuf>,
    /// `calibration.combine` (tlr): `mean` (sigma-clipped, kappa 3; default) or `median`.
    pub combine: String,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            use_bias: false,
            use_dark: false,
            use_flat: false,
            bias_use_master: false,
            dark_use_master: false,
            flat_use_master: false,
            bias_dir: None,
            darks_dir: None,
            flats_dir: None,
            bias_master: None,
            dark_master: None,
            flat_master: None,
            dark_auto_select: true,
            dark_match_exposure_tolerance_percent: 5.0,
            dark_match_use_temp: false,
            dark_match_temp_tolerance_c: 2.0,
            pattern: "*.fit*".to_string(),
            dark_flats: None,
            combine: "mean".to_string(),
        }
    }
}

impl CalibrationConfig {
    /// True when it is the default (no calibration); such a section is left out of the serialised
    /// configuration, so the digest of an uncalibrated run does not change.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// What makes these settings unusable whatever the files: a kind switched on (`use_*`) without
    /// the folder or master file it needs. [`crate::calibrate::Calibration::prepare`] refuses them. Not
    /// a range check of [`Config::validate`](super::Config::validate): the command line's
    /// `--darks DIR` and the like may complete a file's settings after it is loaded.
    pub fn setting_problems(&self) -> Vec<String> {
        let kinds = [
            (
                "bias",
                self.use_bias,
                self.bias_use_master,
                &self.bias_dir,
                &self.bias_master,
            ),
            (
                "dark",
                self.use_dark,
                self.dark_use_master,
                &self.darks_dir,
                &self.dark_master,
            ),
            (
                "flat",
                self.use_flat,
                self.flat_use_master,
                &self.flats_dir,
                &self.flat_master,
            ),
        ];
        let mut problems = Vec::new();
        for (kind, enabled, use_master, dir, master) in kinds {
            let dir_key = if kind == "bias" {
                "bias_dir".to_string()
            } else {
                format!("{kind}s_dir")
            };
            if enabled && use_master && master.is_none() {
                problems.push(format!(
                    "`calibration.use_{kind}` and `calibration.{kind}_use_master` are true but \
                     `calibration.{kind}_master` is empty"
                ));
            } else if enabled && !use_master && dir.is_none() {
                problems.push(format!(
                    "`calibration.use_{kind}` is true but `calibration.{dir_key}` is empty (or set \
                     `calibration.{kind}_master` and `calibration.{kind}_use_master`)"
                ));
            }
        }
        problems
    }

    /// The combination rule of masters.
    pub fn combine(&self) -> Combine {
        if self.combine == "median" {
            Combine::Median
        } else {
            Combine::default()
        }
    }
}

/// The keys of section `calibration`.
pub(super) const KEYS: &[(&str, Spec)] = &[
    ("use_bias", Leaf),
    ("use_dark", Leaf),
    ("use_flat", Leaf),
    ("bias_use_master", Leaf),
    ("dark_use_master", Leaf),
    ("flat_use_master", Leaf),
    ("bias_dir", Leaf),
    ("darks_dir", Leaf),
    ("flats_dir", Leaf),
    ("bias_master", Leaf),
    ("dark_master", Leaf),
    ("flat_master", Leaf),
    ("dark_auto_select", Leaf),
    ("dark_match_exposure_tolerance_percent", Leaf),
    ("dark_match_use_temp", Leaf),
    ("dark_match_temp_tolerance_c", Leaf),
    ("pattern", Leaf),
    ("dark_flats", Leaf),
    ("combine", Leaf),
];

/// Fills `c` from the collected leaves of section `calibration`.
pub(super) fn extract(r: &mut Reader, c: &mut CalibrationConfig) {
    let bools: [(&str, &mut bool); 8] = [
        ("use_bias", &mut c.use_bias),
        ("use_dark", &mut c.use_dark),
        ("use_flat", &mut c.use_flat),
        ("bias_use_master", &mut c.bias_use_master),
        ("dark_use_master", &mut c.dark_use_master),
        ("flat_use_master", &mut c.flat_use_master),
        ("dark_auto_select", &mut c.dark_auto_select),
        ("dark_match_use_temp", &mut c.dark_match_use_temp),
    ];
    for (key, slot) in bools {
        r.take(&format!("calibration.{key}"), slot, super::walk::to_bool);
    }
    let paths: [(&str, &mut Option<PathBuf>); 7] = [
        ("bias_dir", &mut c.bias_dir),
        ("darks_dir", &mut c.darks_dir),
        ("flats_dir", &mut c.flats_dir),
        ("bias_master", &mut c.bias_master),
        ("dark_master", &mut c.dark_master),
        ("flat_master", &mut c.flat_master),
        ("dark_flats", &mut c.dark_flats),
    ];
    for (key, slot) in paths {
        r.take(&format!("calibration.{key}"), slot, to_path);
    }
    r.take(
        "calibration.dark_match_exposure_tolerance_percent",
        &mut c.dark_match_exposure_tolerance_percent,
        super::walk::to_f64,
    );
    r.take(
        "calibration.dark_match_temp_tolerance_c",
        &mut c.dark_match_temp_tolerance_c,
        super::walk::to_f64,
    );
    r.take("calibration.pattern", &mut c.pattern, to_text);
    r.take("calibration.combine", &mut c.combine, to_combine);
}

/// Range checks of section `calibration`.
pub(super) fn validate(c: &CalibrationConfig, p: &mut Vec<String>) {
    for (key, v) in [
        (
            "dark_match_exposure_tolerance_percent",
            c.dark_match_exposure_tolerance_percent,
        ),
        ("dark_match_temp_tolerance_c", c.dark_match_temp_tolerance_c),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            p.push(format!("`calibration.{key}` must be 0 or more, got {v}"));
        }
    }
}

/// A path: a string; empty means none.
fn to_path(v: &Value) -> Result<Option<PathBuf>, String> {
    match v {
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(PathBuf::from(s))),
        _ => Err("a path (text)".to_string()),
    }
}

fn to_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err("file patterns (text, e.g. \"*.fit*\")".to_string()),
    }
}

fn to_combine(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if ["mean", "median"].contains(&s.trim()) => Ok(s.trim().to_string()),
        _ => Err("one of `mean`, `median`".to_string()),
    }
}
