//! [`Calibration`]: everything a run needs to calibrate its lights, loaded once
//! ([`Calibration::prepare`]: masters from folders (built or read from the cache) or master files, checked
//! against the lights, the flat normalised, the bad-pixel map found, a dark chosen per light), and the
//! per-region correction the frame reader applies ([`Calibration::apply_region`]).
//!
//! What it does not: read lights (the frame reader does) or hold more than the masters, the bad-pixel
//! map and one plan per light.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::badpix::BadPixels;
use super::matching::{choose_dark, group_darks, DarkChoice, DarkConditions, MatchRule};
use super::{cache, masters, CalibrationError, Combine, MasterOrigin, MasterReport};
use crate::bayer::CfaPattern;
use crate::config::CalibrationConfig;
use crate::fits::{self, CardValue, FrameHeader};

/// The lights a calibration is prepared for.
#[derive(Debug, Clone, Copy)]
pub struct Lights<'a> {
    /// Their headers, in frame order (all of one size; the first one is named in mismatch errors).
    pub headers: &'a [FrameHeader],
    /// Their Bayer pattern (file row order); `None` for mono.
    pub pattern: Option<CfaPattern>,
}

/// What one light gets: the dark it uses and its scale.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FramePlan {
    /// The dark master and the scale of its thermal signal; `None` without darks.
    pub dark: Option<DarkChoice>,
}

/// One master dark: its thermal signal (`dark - bias` with a bias, else the dark) and conditions.
#[derive(Debug, Clone)]
struct Dark {
    thermal: Array2<f32>,
    conditions: DarkConditions,
    label: PathBuf,
}

/// Masters, bad pixels and matching rule of a run.
#[derive(Debug, Clone)]
pub struct Calibration {
    shape: (usize, usize),
    bias: Option<Array2<f32>>,
    darks: Vec<Dark>,
    flat: Option<Array2<f32>>,
    bad: Option<BadPixels>,
    rule: MatchRule,
    /// What was loaded, one report per master (built, reused from the cache or a master file), for the
    /// user.
    pub masters: Vec<MasterReport>,
}

/// A calibration input: a folder of frames or a master file.
#[derive(Debug, Clone)]
enum Source {
    Folder(PathBuf),
    Master(PathBuf),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Self::Folder(p) | Self::Master(p) => p,
        }
    }
}

/// The source of one kind from the tile_compile keys: `use_*` enables it, `*_use_master` picks the
/// master file over the folder (a setting without the path it needs is refused before, by
/// [`CalibrationConfig::setting_problems`]).
fn source(
    enabled: bool,
    use_master: bool,
    dir: &Option<PathBuf>,
    master: &Option<PathBuf>,
) -> Option<Source> {
    match (enabled, use_master) {
        (false, _) => None,
        (true, true) => master.clone().map(Source::Master),
        (true, false) => dir.clone().map(Source::Folder),
    }
}

/// Frames of a calibration folder: every file matching `pattern` (scanned like a light folder).
fn folder_frames(
    what: &str,
    dir: &Path,
    pattern: &str,
) -> Result<Vec<FrameHeader>, CalibrationError> {
    let folder_error = |reason: String| CalibrationError::Folder {
        what: what.to_string(),
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(folder_error(if dir.exists() {
            "not a folder".into()
        } else {
            "does not exist".into()
        }));
    }
    let options = crate::scan::ScanOptions {
        patterns: pattern
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
        exclude: Vec::new(),
    };
    // The scan's message names the folder as a "frame folder": say only what it found.
    let prefix = format!("frame folder `{}`: ", dir.display());
    let report = crate::scan::scan_folder(dir, &options).map_err(|e| {
        let text = crate::report(&e);
        folder_error(text.strip_prefix(&prefix).unwrap_or(&text).to_string())
    })?;
    if let Some(bad) = report.skipped.first() {
        return Err(folder_error(format!(
            "`{}` cannot be used: {}",
            bad.path.display(),
            bad.reason
        )));
    }
    if report.frames.is_empty() {
        return Err(folder_error(format!(
            "no calibration frame matches `{pattern}`"
        )));
    }
    Ok(report.frames)
}

/// Binning (`XBINNING`, `YBINNING`) of a file, when written.
fn binning(path: &Path) -> (Option<String>, Option<String>) {
    let cards = fits::read_header_cards(path).unwrap_or_default();
    let get = |key: &str| {
        cards
            .iter()
            .find(|c| c.key == key)
            .and_then(|c| c.value.clone())
            .map(|v| v.trim().trim_end_matches(".0").to_string())
    };
    (get("XBINNING"), get("YBINNING"))
}

/// Checks that a calibration file agrees with the first light: size, binning, Bayer pattern and (for
/// bias and darks) the camera offset.
fn check_against(
    cal: &FrameHeader,
    light: &FrameHeader,
    with_offset: bool,
) -> Result<(), CalibrationError> {
    let mismatch = |reason: String| CalibrationError::Mismatch {
        a: cal.path.clone(),
        b: light.path.clone(),
        reason,
    };
    if (cal.rows, cal.cols) != (light.rows, light.cols) {
        return Err(mismatch(format!(
            "{}x{} against {}x{} pixels",
            cal.cols, cal.rows, light.cols, light.rows
        )));
    }
    let (cb, lb) = (binning(&cal.path), binning(&light.path));
    if cb.0.is_some() && lb.0.is_some() && cb != lb {
        return Err(mismatch(format!(
            "binning {}x{} against {}x{}",
            cb.0.unwrap_or_default(),
            cb.1.unwrap_or_default(),
            lb.0.unwrap_or_default(),
            lb.1.unwrap_or_default()
        )));
    }
    let pattern = |h: &FrameHeader| CfaPattern::from_header(h).ok().flatten();
    if let (Some(c), Some(l)) = (pattern(cal), pattern(light)) {
        if c != l {
            return Err(mismatch(format!("Bayer pattern {c} against {l}")));
        }
    }
    if with_offset {
        if let (Some(c), Some(l)) = (cal.offset, light.offset) {
            if c != l {
                return Err(mismatch(format!("camera offset (OFFSET) {c} against {l}")));
            }
        }
    }
    Ok(())
}

/// Settings shared by every master of a run.
struct Builder<'a> {
    cache: Option<&'a Path>,
    combine: Combine,
    threads: usize,
    pattern: &'a str,
    light: &'a FrameHeader,
    reports: Vec<MasterReport>,
    /// The identity of each master so far (its cache key, or a master file's path, size and time).
    identities: BTreeMap<String, String>,
}

impl Builder<'_> {
    /// A master from frames of one folder: from the cache when its inputs are unchanged, else built
    /// (and cached). `flat`: the frames are flats, prepared as it says before the combine
    /// ([`masters::build_flat`]), with a description of that preparation (part of the cache key).
    fn build_from_frames(
        &mut self,
        kind: &str,
        frames: &[FrameHeader],
        with_offset: bool,
        flat: Option<(&masters::FlatFrames, &str)>,
    ) -> Result<Array2<f32>, CalibrationError> {
        for h in frames {
            check_against(h, self.light, with_offset)?;
        }
        let shape = (self.light.rows, self.light.cols);
        let keyed = match flat {
            Some((_, how)) => format!("{kind}\n{how}"),
            None => kind.to_string(),
        };
        let key = cache::key(&keyed, self.combine, frames)?;
        self.identities.insert(kind.to_string(), key.clone());
        let cached = self.cache.map(|dir| cache::path(dir, kind, &key));
        let report = |origin| MasterReport {
            kind: kind.to_string(),
            origin,
            frames: frames.len(),
            path: cached.clone(),
        };
        if let Some(image) = cached.as_deref().and_then(|p| cache::load(p, shape)) {
            self.reports.push(report(MasterOrigin::Reused));
            return Ok(image);
        }
        let budget = masters::BAND_BUDGET_BYTES;
        let master = match flat {
            Some((prep, _)) => {
                masters::build_flat(frames, prep, self.combine, budget, self.threads)?
            }
            None => masters::build_master(frames, self.combine, budget, self.threads)?,
        };
        let first = &frames[0];
        let mut cards = Vec::new();
        if let Some(t) = first.exposure_s {
            cards.push((fits::KEY_EXPTIME, CardValue::Float(t)));
        }
        if let Some(t) = first.ccd_temp {
            cards.push((fits::KEY_CCD_TEMP, CardValue::Float(t)));
        }
        if let Some(b) = &first.bayer {
            cards.push((fits::KEY_BAYERPAT, CardValue::Str(b.pattern.clone())));
        }
        if let Some(path) = &cached {
            cache::store(path, &master, kind, self.combine, frames, &cards)?;
        }
        self.reports.push(report(MasterOrigin::Built));
        Ok(master)
    }

    /// A master of one kind from its source (a folder, or a master file read as it is).
    fn master(
        &mut self,
        kind: &str,
        source: &Source,
        with_offset: bool,
    ) -> Result<(Array2<f32>, FrameHeader), CalibrationError> {
        match source {
            Source::Master(path) => {
                let (header, image) = fits::read_image(path)?;
                check_against(&header, self.light, with_offset)?;
                let identity = cache::key(kind, self.combine, std::slice::from_ref(&header))?;
                self.identities.insert(kind.to_string(), identity);
                self.reports.push(MasterReport {
                    kind: kind.to_string(),
                    origin: MasterOrigin::File,
                    frames: 0,
                    path: Some(path.clone()),
                });
                Ok((image, header))
            }
            Source::Folder(dir) => {
                let frames = folder_frames(&format!("{kind} folder"), dir, self.pattern)?;
                let image = self.build_from_frames(kind, &frames, with_offset, None)?;
                Ok((image, frames[0].clone()))
            }
        }
    }
}

impl Calibration {
    /// Loads the calibration `config` asks for, for `lights`: `None` when it asks for none. Masters
    /// built from folders are cached in `cache` (when given). Warnings (darks not matching, mixed
    /// exposures) go to `warnings`.
    ///
    /// # Errors
    /// A missing or empty folder, an unreadable file, a calibration file that does not match the
    /// lights (naming both), a flat with zero or negative pixels, an inconsistent setting.
    pub fn prepare(
        config: &CalibrationConfig,
        lights: Lights,
        cache: Option<&Path>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(Self, Vec<FramePlan>)>, CalibrationError> {
        let c = config;
        let problems = c.setting_problems();
        if !problems.is_empty() {
            return Err(CalibrationError::Setting(problems.join("; ")));
        }
        let bias_src = source(c.use_bias, c.bias_use_master, &c.bias_dir, &c.bias_master);
        let dark_src = source(c.use_dark, c.dark_use_master, &c.darks_dir, &c.dark_master);
        let flat_src = source(c.use_flat, c.flat_use_master, &c.flats_dir, &c.flat_master);
        if bias_src.is_none() && dark_src.is_none() && flat_src.is_none() {
            return Ok(None);
        }
        let light = lights.headers.first().ok_or_else(|| {
            CalibrationError::Setting("calibration: there is no light frame to calibrate".into())
        })?;
        let shape = (light.rows, light.cols);
        let rule = MatchRule {
            auto_select: c.dark_auto_select,
            exposure_tolerance_percent: c.dark_match_exposure_tolerance_percent,
            use_temp: c.dark_match_use_temp,
            temp_tolerance_c: c.dark_match_temp_tolerance_c,
        };
        let mut b = Builder {
            cache,
            combine: c.combine(),
            threads: num_cpus::get().clamp(1, 8),
            pattern: &c.pattern,
            light,
            reports: Vec::new(),
            identities: BTreeMap::new(),
        };
        let bias = bias_src
            .as_ref()
            .map(|s| b.master("bias", s, true).map(|(m, _)| m))
            .transpose()?;
        let darks = match &dark_src {
            None => Vec::new(),
            Some(src @ Source::Master(_)) => {
                let (image, header) = b.master("dark", src, true)?;
                vec![dark(image, &header, bias.as_ref())]
            }
            Some(Source::Folder(dir)) => {
                let frames = folder_frames("darks folder", dir, &c.pattern)?;
                let mut darks = Vec::new();
                for group in group_darks(frames, &rule) {
                    let kind = match group[0].exposure_s {
                        Some(t) => format!("dark-{t}s"),
                        None => "dark".to_string(),
                    };
                    let image = b.build_from_frames(&kind, &group, true, None)?;
                    darks.push(dark(image, &group[0], bias.as_ref()));
                }
                darks
            }
        };
        let cfa = lights.pattern.is_some();
        let flat = match &flat_src {
            None => None,
            Some(src) => {
                let mut flat = match src {
                    Source::Master(_) => b.master("flat", src, false)?.0,
                    Source::Folder(dir) => {
                        let dark_flat = match &c.dark_flats {
                            Some(p) if p.is_dir() => {
                                Some(b.master("dark-flat", &Source::Folder(p.clone()), false)?.0)
                            }
                            Some(p) => {
                                Some(b.master("dark-flat", &Source::Master(p.clone()), false)?.0)
                            }
                            None => None,
                        };
                        let under = match (&dark_flat, &bias) {
                            (Some(m), _) => Some(("dark-flat", m)),
                            (None, Some(m)) => Some(("bias", m)),
                            (None, None) => None,
                        };
                        let how = format!(
                            "each frame minus {}, divided by its level per {}",
                            under.map_or("nothing".to_string(), |(k, _)| format!(
                                "master {k} {}",
                                b.identities.get(k).map_or("", String::as_str)
                            )),
                            if cfa { "CFA colour" } else { "frame" }
                        );
                        let prep = masters::FlatFrames {
                            under: under.map(|(_, m)| m.view()),
                            cfa,
                        };
                        let frames = folder_frames("flat folder", dir, &c.pattern)?;
                        b.build_from_frames("flat", &frames, false, Some((&prep, &how)))?
                    }
                };
                normalise_flat(&mut flat, src.path(), cfa)?;
                Some(flat)
            }
        };
        let hot_source = darks
            .iter()
            .max_by(|a, b| {
                let t = |d: &&Dark| d.conditions.exposure_s.unwrap_or(0.0);
                t(a).partial_cmp(&t(b)).unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|d| d.thermal.view());
        let bad = BadPixels::find(
            hot_source,
            flat.as_ref().map(|f| f.view()),
            shape,
            lights.pattern.is_some(),
        );
        let calibration = Self {
            shape,
            bias,
            darks,
            flat,
            bad,
            rule,
            masters: b.reports,
        };
        let plans = calibration.plans(lights.headers, warnings);
        Ok(Some((calibration, plans)))
    }

    /// One plan per light, with the dark-matching warnings counted once each.
    fn plans(&self, headers: &[FrameHeader], warnings: &mut Vec<String>) -> Vec<FramePlan> {
        let mut counted: BTreeMap<String, usize> = BTreeMap::new();
        let plans = headers
            .iter()
            .map(|h| {
                let (plan, warning) = self.plan(h.exposure_s, h.ccd_temp);
                if let Some(w) = warning {
                    *counted.entry(w).or_default() += 1;
                }
                plan
            })
            .collect();
        let mut exposures: Vec<f64> = headers.iter().filter_map(|h| h.exposure_s).collect();
        exposures.sort_by(f64::total_cmp);
        exposures.dedup();
        if self.darks.len() == 1 && exposures.len() > 1 {
            warnings.push(format!(
                "the lights have {} different exposures ({} s) but there is one dark (`{}`): it cannot \
                 match them all",
                exposures.len(),
                exposures.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
                self.darks[0].label.display()
            ));
        }
        for (w, n) in counted {
            warnings.push(if n > 1 {
                format!("{w} ({n} lights)")
            } else {
                w
            });
        }
        plans
    }

    /// The plan for a light of `exposure_s` and sensor temperature `temp_c` (live frames come one at a
    /// time), with a warning when its dark is not an exact match.
    pub fn plan(
        &self,
        exposure_s: Option<f64>,
        temp_c: Option<f64>,
    ) -> (FramePlan, Option<String>) {
        let conditions: Vec<DarkConditions> = self.darks.iter().map(|d| d.conditions).collect();
        match choose_dark(
            &conditions,
            exposure_s,
            temp_c,
            &self.rule,
            self.bias.is_some(),
        ) {
            Some((choice, warning)) => (FramePlan { dark: Some(choice) }, warning),
            None => (FramePlan::default(), None),
        }
    }

    /// `(rows, cols)` of the lights and masters.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// How many pixels a region must be read larger on every side so that its bad pixels are repaired
    /// exactly as in the whole frame (0 without bad pixels).
    pub fn reach(&self) -> usize {
        self.bad.as_ref().map_or(0, BadPixels::reach)
    }

    /// The bad-pixel map, when there is one.
    pub fn bad_pixels(&self) -> Option<&BadPixels> {
        self.bad.as_ref()
    }

    /// Calibrates `region` of a light in place: the region's top-left pixel is frame pixel
    /// `(row0, col0)`. `(raw - bias - scale * thermal) / flat`, then bad pixels repaired. Each pixel
    /// depends only on its own value and the masters (and, for a bad pixel, its neighbours inside the
    /// region), so reading a region gives the same values as reading the whole frame.
    pub fn apply_region(
        &self,
        plan: &FramePlan,
        mut region: ArrayViewMut2<f32>,
        row0: usize,
        col0: usize,
    ) {
        let (rows, cols) = region.dim();
        if let Some(bias) = &self.bias {
            region -= &cut(bias, row0, col0, rows, cols);
        }
        if let Some(choice) = plan.dark {
            let thermal = cut(&self.darks[choice.index].thermal, row0, col0, rows, cols);
            let scale = choice.scale;
            if scale == 1.0 {
                region -= &thermal;
            } else {
                Zip::from(&mut region)
                    .and(&thermal)
                    .for_each(|v, &t| *v -= scale * t);
            }
        }
        if let Some(flat) = &self.flat {
            region /= &cut(flat, row0, col0, rows, cols);
        }
        if let Some(bad) = &self.bad {
            bad.repair(region, row0, col0);
        }
    }
}

/// The region of a master that a light's region covers.
fn cut(m: &Array2<f32>, row0: usize, col0: usize, rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    m.slice(ndarray::s![row0..row0 + rows, col0..col0 + cols])
}

/// A master dark with its thermal signal separated from the bias (when there is one).
fn dark(mut image: Array2<f32>, header: &FrameHeader, bias: Option<&Array2<f32>>) -> Dark {
    if let Some(bias) = bias {
        image -= bias;
    }
    Dark {
        thermal: image,
        conditions: DarkConditions {
            exposure_s: header.exposure_s,
            temp_c: header.ccd_temp,
        },
        label: header.path.clone(),
    }
}

/// Checks that `flat` is positive everywhere and divides it by its median (per 2x2 CFA site for Bayer
/// frames).
///
/// # Errors
/// [`CalibrationError::FlatNotPositive`], naming `path`.
pub fn normalise_flat(
    flat: &mut Array2<f32>,
    path: &Path,
    cfa: bool,
) -> Result<(), CalibrationError> {
    let mut first = None;
    let mut count = 0;
    for ((r, c), &v) in flat.indexed_iter() {
        if v.is_nan() || v <= 0.0 {
            count += 1;
            first.get_or_insert((r, c, v));
        }
    }
    if let Some((row, col, value)) = first {
        return Err(CalibrationError::FlatNotPositive {
            path: path.to_path_buf(),
            count,
            row,
            col,
            value,
        });
    }
    let step = if cfa { 2 } else { 1 };
    for dy in 0..step {
        for dx in 0..step {
            let mut site = flat.slice_mut(ndarray::s![dy..;step, dx..;step]);
            let median = crate::stats::median(&site.iter().copied().collect::<Vec<_>>());
            site.mapv_inplace(|v| v / median);
        }
    }
    Ok(())
}
