//! Calibrated frames: a [`FrameStore`] that reads raw frames from the store it wraps and calibrates
//! every region on the way out ([`tlr_core::calibrate::Calibration::apply_region`]: bias, dark, flat,
//! bad pixels). Everything that reads frames (the global pass, the tile windows, a colour run's cell
//! planes) reads through it, so no pixel reaches the method uncalibrated. A region is read as much
//! larger as a bad-pixel repair reaches, so a region and the whole frame give the same pixels.
//! What it does not: load the masters (the pipeline does, once per run) or keep pixels.

use ndarray::{s, Array2};
use std::ops::Range;
use std::sync::Arc;

use tlr_core::calibrate::{Calibration, FramePlan, Lights};
use tlr_core::config::CalibrationConfig;

use super::{FileFrames, FrameMeta, FrameStore};
use crate::error::StageError;
use crate::events::{Event, EventSink};

/// The frames of `files` as the run reads them: calibrated when `config` asks for it (masters loaded
/// once, cached in `cache`), else `files` itself. Warnings go to `events`. Blocking (it may build
/// masters).
///
/// # Errors
/// [`StageError::Calibration`], naming the files.
pub fn calibrate(
    files: std::sync::Arc<FileFrames>,
    pattern: Option<tlr_core::bayer::CfaPattern>,
    config: &CalibrationConfig,
    cache: Option<&std::path::Path>,
    events: &EventSink,
) -> Result<Arc<dyn FrameStore>, StageError> {
    let mut warnings = Vec::new();
    let lights = Lights {
        headers: files.headers(),
        pattern,
    };
    let prepared = Calibration::prepare(config, lights, cache, &mut warnings);
    for message in warnings {
        events(&Event::Warning { message });
    }
    Ok(match prepared? {
        Some((calibration, plans)) => {
            report(&calibration, events);
            Arc::new(CalibratedFrames::new(files, Arc::new(calibration), plans))
        }
        None => files,
    })
}

/// Tells `events` what `calibration` loaded: an [`Event::Master`] per master, then
/// [`Event::BadPixels`] when it found any.
fn report(calibration: &Calibration, events: &EventSink) {
    for m in &calibration.masters {
        events(&Event::Master {
            kind: m.kind.clone(),
            origin: m.origin,
            frames: m.frames,
            path: m.path.clone(),
        });
    }
    if let Some(bad) = calibration.bad_pixels() {
        events(&Event::BadPixels {
            hot: bad.hot,
            cold: bad.cold,
        });
    }
}

/// Raw frames of `inner`, calibrated region by region.
pub struct CalibratedFrames {
    inner: Arc<dyn FrameStore>,
    calibration: Arc<Calibration>,
    plans: Vec<FramePlan>,
}

impl CalibratedFrames {
    /// Calibrates the frames of `inner` (raw, full resolution) with `calibration`; `plans` has one
    /// entry per frame (which dark, scaled how).
    pub fn new(
        inner: Arc<dyn FrameStore>,
        calibration: Arc<Calibration>,
        plans: Vec<FramePlan>,
    ) -> Self {
        Self {
            inner,
            calibration,
            plans,
        }
    }
}

impl FrameStore for CalibratedFrames {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }

    fn meta(&self, index: usize) -> FrameMeta {
        self.inner.meta(index)
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        // The whole frame: no neighbour lies outside it, and the inner store checks its pixels.
        let mut frame = self.inner.read_full(index)?;
        let plan = self.plans.get(index).copied().unwrap_or_default();
        self.calibration.apply_region(&plan, frame.view_mut(), 0, 0);
        Ok(frame)
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        let (rows, cols) = self.shape();
        let reach = self.calibration.reach();
        let grown: Vec<(Range<usize>, Range<usize>)> = regions
            .iter()
            .map(|(r, c)| {
                (
                    r.start.saturating_sub(reach)..(r.end + reach).min(rows),
                    c.start.saturating_sub(reach)..(c.end + reach).min(cols),
                )
            })
            .collect();
        let plan = self.plans.get(index).copied().unwrap_or_default();
        let raw = self.inner.read_regions(index, &grown)?;
        Ok(raw
            .into_iter()
            .zip(grown.iter().zip(regions))
            .map(|(mut region, ((gr, gc), (r, c)))| {
                self.calibration
                    .apply_region(&plan, region.view_mut(), gr.start, gc.start);
                let (dr, dc) = (r.start - gr.start, c.start - gc.start);
                if (dr, dc) == (0, 0) && region.dim() == (r.len(), c.len()) {
                    region
                } else {
                    region
                        .slice(s![dr..dr + r.len(), dc..dc + c.len()])
                        .to_owned()
                }
            })
            .collect())
    }
}

/// Where the masters of a run or session writing `output` are cached: `tlr-masters/` in the output's
/// folder.
pub fn master_cache_for(output: &std::path::Path) -> std::path::PathBuf {
    output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .join("tlr-masters")
}

/// Calibration of a live session's frames, which arrive one at a time: the masters are loaded once,
/// when the first frame is there to check them against, and every frame then gets its dark by its
/// own exposure.
pub struct FrameCalibrator {
    config: CalibrationConfig,
    cache: Option<std::path::PathBuf>,
    loaded: Option<Option<Calibration>>,
}

impl FrameCalibrator {
    /// A calibrator for `config` (nothing is read yet); `None` when it asks for no calibration.
    pub fn new(config: &CalibrationConfig, cache: Option<std::path::PathBuf>) -> Option<Self> {
        (!config.is_default()).then(|| Self {
            config: config.clone(),
            cache,
            loaded: None,
        })
    }

    /// Calibrates the whole frame `image` of `header` in place (the first call loads the masters).
    ///
    /// # Errors
    /// The masters cannot be loaded or do not match the first frame ([`StageError::Calibration`]).
    pub fn calibrate(
        &mut self,
        header: &tlr_core::fits::FrameHeader,
        image: &mut Array2<f32>,
        events: &EventSink,
    ) -> Result<(), StageError> {
        if self.loaded.is_none() {
            let mut warnings = Vec::new();
            let lights = Lights {
                headers: std::slice::from_ref(header),
                pattern: tlr_core::bayer::CfaPattern::from_header(header)
                    .ok()
                    .flatten(),
            };
            let prepared =
                Calibration::prepare(&self.config, lights, self.cache.as_deref(), &mut warnings);
            for message in warnings {
                events(&Event::Warning { message });
            }
            let calibration = prepared?.map(|(calibration, _)| calibration);
            if let Some(c) = &calibration {
                report(c, events);
            }
            self.loaded = Some(calibration);
        }
        if let Some(Some(calibration)) = &self.loaded {
            let (plan, warning) = calibration.plan(header.exposure_s, header.ccd_temp);
            if let Some(message) = warning {
                events(&Event::Warning {
                    message: format!("`{}`: {message}", header.path.display()),
                });
            }
            calibration.apply_region(&plan, image.view_mut(), 0, 0);
        }
        Ok(())
    }
}
