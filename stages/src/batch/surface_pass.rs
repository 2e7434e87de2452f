//! The star-less half of the global pass (`registration.global.method`, [`tlr_core::global::correlation`]):
//! when the star pass placed too few frames (or correlation is asked for), every frame is placed by
//! whole-frame correlation against a reference of the sharpest frames, and weighted by its sharpness
//! ([`tlr_core::quality`]). Then best-N % selection (`registration.global.keep_best_percent`) for
//! every run.
//!
//! Three reads of the frames, each with at most `workers` frames in memory (plus the reference
//! frames, at most [`REFERENCE_FRAMES`] and [`REFERENCE_BUDGET_BYTES`]): sharpness and level of every
//! frame; the sharpest frames, aligned and averaged into the reference; every frame placed against it.
//! Each frame's result depends on that frame and the reference only, and they are collected in frame
//! order, so the outcome does not depend on the worker count.
//!
//! What it does not: star measurements (the star pass before it), per-tile weights and per-tile best-N
//! (the tile operator, [`tlr_core::quality::tile_selection`]).

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use tlr_core::geom::Shift;
use tlr_core::global::{use_correlation, FrameQuality, SurfaceReference};
use tlr_core::quality::{keep_best, sharpness_weights, surface_quality, SurfaceQuality};
use tlr_core::select::UsedFrame;

use super::reader::FrameReader;
use crate::error::{Stage, StageError};
use crate::events::Event;

/// At most this many of the sharpest frames are averaged into the reference.
pub const REFERENCE_FRAMES: usize = 16;
/// ... and at most this many bytes of them are held at once.
pub const REFERENCE_BUDGET_BYTES: usize = 256 << 20;

/// What the surface pass measured per frame (index = frame index; NaN for frames not measured).
pub(super) type Surfaces = Vec<SurfaceQuality>;

impl FrameReader {
    /// After the star pass: when `registration.global.method` is `correlation`, or `auto` and the stars
    /// placed fewer than half of the frames, places every measured frame by correlation (its shift and
    /// `shift_ok` in `qualities` are replaced) and returns each frame's [`SurfaceQuality`]; `None` when
    /// the star pass stands.
    ///
    /// # Errors
    /// Cancellation, a frame that fails to read in `strict` mode, a panicked measurement.
    pub(super) async fn surface_pass(
        &self,
        cancel: &CancellationToken,
        qualities: &mut [Option<FrameQuality>],
        workers: usize,
    ) -> Result<Option<Surfaces>, StageError> {
        if !use_correlation(self.global.method, qualities) {
            return Ok(None);
        }
        let measured: Vec<usize> = (0..qualities.len())
            .filter(|&i| qualities[i].is_some())
            .collect();
        // 1. Sharpness and level of every frame.
        let measures = self
            .per_frame(cancel, &measured, workers, |image| {
                surface_quality(image.view())
            })
            .await?;
        let nan = SurfaceQuality {
            sharpness: f32::NAN,
            level: f32::NAN,
            noise: f32::NAN,
        };
        let mut surfaces = vec![nan; qualities.len()];
        for (&i, m) in measured.iter().zip(&measures) {
            match m {
                Some(m) => surfaces[i] = *m,
                None => qualities[i] = None,
            }
        }
        // 2. The reference: the sharpest frames, aligned to the sharpest and averaged.
        let (rows, cols) = self.store.shape();
        let budget = (REFERENCE_BUDGET_BYTES / (rows * cols * 4).max(1)).max(1);
        let count = REFERENCE_FRAMES
            .min(budget)
            .min(measured.len().div_ceil(10).max(1));
        let mut best: Vec<usize> = measured.clone();
        best.sort_by(|&a, &b| {
            let key = |i: usize| surfaces[i].sharpness;
            key(b).total_cmp(&key(a)).then(a.cmp(&b))
        });
        best.truncate(count);
        let mut images = Vec::with_capacity(best.len());
        for &i in &best {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled);
            }
            if let Some(image) = self.read_blocking(i).await? {
                images.push(image);
            }
        }
        let reference = tokio::task::spawn_blocking(move || {
            tlr_core::global::correlation::build_reference(&images).map(SurfaceReference::new)
        })
        .await
        .map_err(|source| StageError::Join {
            stage: Stage::Reader,
            source,
        })?
        .ok_or_else(|| {
            StageError::input(
                Stage::Reader,
                "correlation registration: none of the sharpest frames could be read",
            )
        })?;
        // 3. Every frame placed against the reference.
        let reference = Arc::new(reference);
        let placed = {
            let reference = Arc::clone(&reference);
            self.per_frame(cancel, &measured, workers, move |image| {
                reference.register(image.view())
            })
            .await?
        };
        for (&i, p) in measured.iter().zip(placed) {
            if let Some(q) = qualities[i].as_mut() {
                let p = p.flatten();
                q.shift = p.map_or(Shift::ZERO, |p| p.shift);
                q.shift_ok = p.is_some();
            }
        }
        Ok(Some(surfaces))
    }

    /// Weights and best-N % selection of the frames that take part: without stars (`surfaces` given)
    /// the weights come from the sharpness and the photometric scales from the frames' mean levels;
    /// then only the best `registration.global.keep_best_percent` % stay (sharpest, or highest
    /// weight), the others are reported as skipped.
    pub(super) fn select_best(
        &self,
        frames: &mut Vec<UsedFrame>,
        surfaces: Option<&[SurfaceQuality]>,
    ) {
        if let Some(surfaces) = surfaces {
            let sharp: Vec<f32> = frames.iter().map(|f| surfaces[f.index].sharpness).collect();
            let levels: Vec<f32> = frames
                .iter()
                .map(|f| surfaces[f.index].level)
                .filter(|l| l.is_finite() && *l > 0.0)
                .collect();
            let typical = tlr_core::stats::median(&levels);
            for (f, w) in frames.iter_mut().zip(sharpness_weights(&sharp)) {
                f.weight = w;
                let level = surfaces[f.index].level;
                if typical.is_finite() && level.is_finite() && level > 0.0 {
                    f.scale = typical / level;
                    f.plane_scales = [f.scale; 4];
                }
            }
        }
        let percent = self.global.keep_best_percent;
        if percent >= 100.0 {
            return;
        }
        let scores: Vec<f32> = frames
            .iter()
            .map(|f| surfaces.map_or(f.weight, |s| s[f.index].sharpness))
            .collect();
        let keep = keep_best(&scores, percent);
        let what = if surfaces.is_some() {
            "sharpest"
        } else {
            "best-weighted"
        };
        let mut flags = keep.into_iter();
        frames.retain(|f| {
            let kept = flags.next().unwrap_or(true);
            if !kept {
                (self.events)(&Event::FrameSkipped {
                    path: self.store.meta(f.index).label,
                    reason: format!(
                        "not among the {what} {percent} % (registration.global.keep_best_percent)"
                    ),
                });
            }
            kept
        });
    }

    /// Runs `measure` on every frame of `indices` (read whole, mono or the luminance of colour), at most
    /// `workers` at once, and returns the results in the order of `indices`; `None` for a frame that
    /// failed to read (reported, or an error with `strict`).
    async fn per_frame<T: Send + 'static>(
        &self,
        cancel: &CancellationToken,
        indices: &[usize],
        workers: usize,
        measure: impl Fn(ndarray::Array2<f32>) -> T + Send + Sync + 'static,
    ) -> Result<Vec<Option<T>>, StageError> {
        let measure = Arc::new(measure);
        let mut out = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(workers.max(1)) {
            if cancel.is_cancelled() {
                return Err(StageError::Cancelled);
            }
            self.memory.check()?;
            let jobs: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (store, measure) = (Arc::clone(&self.store), Arc::clone(&measure));
                    tokio::task::spawn_blocking(move || store.read_full(i).map(|im| measure(im)))
                })
                .collect();
            for (&i, job) in chunk.iter().zip(jobs) {
                let result = job.await.map_err(|source| StageError::Join {
                    stage: Stage::Reader,
                    source,
                })?;
                out.push(self.keep_or_report(i, result)?);
            }
        }
        Ok(out)
    }

    /// Frame `index` read whole on a blocking thread; a read error is reported (or returned with `strict`).
    async fn read_blocking(
        &self,
        index: usize,
    ) -> Result<Option<ndarray::Array2<f32>>, StageError> {
        let store = Arc::clone(&self.store);
        let result = tokio::task::spawn_blocking(move || store.read_full(index))
            .await
            .map_err(|source| StageError::Join {
                stage: Stage::Reader,
                source,
            })?;
        self.keep_or_report(index, result)
    }

    /// `Some(value)`, or `None` after reporting a frame that failed to read (the error with `strict`).
    fn keep_or_report<T>(
        &self,
        index: usize,
        result: Result<T, StageError>,
    ) -> Result<Option<T>, StageError> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(error) if self.strict => Err(error),
            Err(error) => {
                (self.events)(&Event::FrameSkipped {
                    path: self.store.meta(index).label,
                    reason: crate::error::report(&error),
                });
                Ok(None)
            }
        }
    }
}
