//! Which dark a light uses: darks are grouped by exposure (and sensor temperature when asked), one master
//! per group; a light takes the group whose exposure is within the tolerance of its own (the nearest
//! one), else the nearest exposure scaled by the exposure ratio (only with a bias: a dark that still
//! holds the bias cannot be scaled), with a warning either way.
//!
//! What it does not: read pixels or headers (it works on [`FrameHeader`]s and exposure times).

use crate::fits::FrameHeader;

/// How darks are matched (tile_compile's `calibration.dark_*` keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchRule {
    /// `dark_auto_select`: group darks by exposure (and temperature); otherwise all make one master.
    pub auto_select: bool,
    /// `dark_match_exposure_tolerance_percent`.
    pub exposure_tolerance_percent: f64,
    /// `dark_match_use_temp`.
    pub use_temp: bool,
    /// `dark_match_temp_tolerance_c`.
    pub temp_tolerance_c: f64,
}

impl Default for MatchRule {
    fn default() -> Self {
        Self {
            auto_select: true,
            exposure_tolerance_percent: 5.0,
            use_temp: false,
            temp_tolerance_c: 2.0,
        }
    }
}

impl MatchRule {
    fn same_exposure(&self, a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => {
                (a - b).abs() <= self.exposure_tolerance_percent / 100.0 * b.abs()
            }
            (None, None) => true,
            _ => false,
        }
    }

    fn same_temp(&self, a: Option<f64>, b: Option<f64>) -> bool {
        if !self.use_temp {
            return true;
        }
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= self.temp_tolerance_c,
            _ => true,
        }
    }
}

/// Splits dark frames into groups that each make one master (in order of exposure, then temperature);
/// one group when `auto_select` is off.
pub fn group_darks(mut frames: Vec<FrameHeader>, rule: &MatchRule) -> Vec<Vec<FrameHeader>> {
    if !rule.auto_select {
        return vec![frames];
    }
    let order = |h: &FrameHeader| (h.exposure_s.unwrap_or(-1.0), h.ccd_temp.unwrap_or(0.0));
    frames.sort_by(|a, b| {
        order(a)
            .partial_cmp(&order(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut groups: Vec<Vec<FrameHeader>> = Vec::new();
    for h in frames {
        let fits = groups.iter_mut().find(|g| {
            rule.same_exposure(h.exposure_s, g[0].exposure_s)
                && rule.same_temp(h.ccd_temp, g[0].ccd_temp)
        });
        match fits {
            Some(g) => g.push(h),
            None => groups.push(vec![h]),
        }
    }
    groups
}

/// One master dark's conditions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DarkConditions {
    /// Exposure, s.
    pub exposure_s: Option<f64>,
    /// Sensor temperature, °C.
    pub temp_c: Option<f64>,
}

/// The dark a light uses and the factor its thermal signal is scaled by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DarkChoice {
    /// Index into the masters.
    pub index: usize,
    /// Scale of the thermal signal (1 when the exposures match).
    pub scale: f32,
}

/// Chooses the dark for a light of `exposure_s` / `temp_c` among `darks`; `can_scale` says whether a
/// bias is there to separate the thermal signal. Returns the choice and a warning when it is not an
/// exact match.
pub fn choose_dark(
    darks: &[DarkConditions],
    exposure_s: Option<f64>,
    temp_c: Option<f64>,
    rule: &MatchRule,
    can_scale: bool,
) -> Option<(DarkChoice, Option<String>)> {
    let distance = |d: &DarkConditions| match (exposure_s, d.exposure_s) {
        (Some(a), Some(b)) => (a - b).abs(),
        _ => f64::INFINITY,
    };
    let nearest = |candidates: &mut dyn Iterator<Item = (usize, &DarkConditions)>| {
        candidates
            .min_by(|a, b| {
                distance(a.1)
                    .partial_cmp(&distance(b.1))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(i, _)| i)
    };
    let matching = nearest(&mut darks.iter().enumerate().filter(|(_, d)| {
        rule.same_exposure(exposure_s, d.exposure_s) && rule.same_temp(temp_c, d.temp_c)
    }));
    if let Some(index) = matching {
        return Some((DarkChoice { index, scale: 1.0 }, None));
    }
    let index = nearest(&mut darks.iter().enumerate()).or((!darks.is_empty()).then_some(0))?;
    let d = darks[index];
    let shown = |t: Option<f64>| t.map_or("unknown".to_string(), |t| format!("{t} s"));
    let temp_note = if rule.use_temp && !rule.same_temp(temp_c, d.temp_c) {
        format!(
            " (sensor {} °C, dark {} °C)",
            temp_c.map_or("?".into(), |t| t.to_string()),
            d.temp_c.map_or("?".into(), |t| t.to_string())
        )
    } else {
        String::new()
    };
    match (exposure_s, d.exposure_s, can_scale) {
        (Some(t), Some(td), true) if td > 0.0 => {
            let scale = (t / td) as f32;
            Some((
                DarkChoice { index, scale },
                Some(format!(
                    "no dark matches the exposure of {}{temp_note}: the dark of {} is scaled by {scale:.4}",
                    shown(exposure_s),
                    shown(d.exposure_s)
                )),
            ))
        }
        _ => Some((
            DarkChoice { index, scale: 1.0 },
            Some(format!(
                "no dark matches the exposure of {}{temp_note}: the dark of {} is used unscaled \
                 (scaling needs a bias and known exposures)",
                shown(exposure_s),
                shown(d.exposure_s)
            )),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dark(t: f64) -> DarkConditions {
        DarkConditions {
            exposure_s: Some(t),
            temp_c: None,
        }
    }

    #[test]
    fn exact_match_within_tolerance_else_scaled() {
        let darks = [dark(10.0), dark(60.0)];
        let rule = MatchRule::default();
        let (c, w) = choose_dark(&darks, Some(61.0), None, &rule, true).unwrap();
        assert_eq!((c.index, c.scale, w), (1, 1.0, None));
        let (c, w) = choose_dark(&darks, Some(30.0), None, &rule, true).unwrap();
        assert_eq!((c.index, c.scale), (0, 3.0));
        assert!(w.unwrap().contains("scaled"));
        let (c, w) = choose_dark(&darks, Some(30.0), None, &rule, false).unwrap();
        assert_eq!(c.scale, 1.0);
        assert!(w.unwrap().contains("unscaled"));
    }
}
