//! The global pass: every frame once, in order, before any tile is read. It measures each frame's
//! background, noise, stars and FWHM, and its global shift against the reference frame
//! ([`tlr_core::global::GlobalPass`]), then picks the frames that take part with their global weight
//! and photometric scale.
//!
//! Frame k+1 is read (and its sky level measured) while a pool of blocking threads, at most
//! `parallel_tiles`, detect the stars of frame k in horizontal strips ([`MeasurePlan`]: parallel over
//! regions of a frame, never over frames); the parts are merged and matched in frame order, so at most
//! [`FRAMES_IN_FLIGHT`] frames are being measured, plus the one being read. The strip queue is bounded
//! by the same rule. Only at the start are two frames read at once (with two or more workers): frame 0
//! alone would leave every worker waiting for it.
//! What it does not: read tiles ([`super::reader`]) or decide the tile grid ([`super::pipeline`]).

use ndarray::{Array2, Array3};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use tlr_core::global::mean_geometry;
use tlr_core::global::{
    detect_options, measure_part, measure_sky, merge_parts, FrameMeasurement, FrameQuality,
    FrameTransform, GlobalOptions, GlobalPass, MeasurePart, MeasurePlan,
};
pub use tlr_core::select::UsedFrame;
use tlr_core::select::{set_plane_scales, MAX_PLANES};
use tlr_core::stars::StarDetector;

use super::reader::FrameReader;
use crate::error::{Stage, StageError};
use crate::events::Event;

/// What the global pass found out about the frames.
#[derive(Debug, Clone)]
pub struct GlobalSummary {
    /// Per-frame measurements, index = frame index in the store (`None`: unreadable frame).
    pub qualities: Vec<Option<FrameQuality>>,
    /// Frames that take part, with their global weight, photometric scale and global shift (relative
    /// to the reference frame from the pass; to the output geometry after
    /// [`GlobalSummary::set_output_geometry`]).
    pub frames: Vec<UsedFrame>,
    /// Per-frame linear geometry against the reference frame, index = frame index in the store
    /// (`None`: unreadable or not matched).
    pub transforms: Vec<Option<FrameTransform>>,
    /// Per used frame (same order as `frames`), its linear motion relative to the output geometry:
    /// a feature at output position `q` appears in the frame at `q + geometry[k].displacement_at(q)`.
    /// Translations only (the reference frame's geometry) until
    /// [`GlobalSummary::set_output_geometry`] is called.
    pub geometry: Vec<FrameTransform>,
    /// The output geometry relative to the reference frame (identity until
    /// [`GlobalSummary::set_output_geometry`]).
    pub base: Option<FrameTransform>,
    /// Whether the frames were placed and weighted without stars (correlation and sharpness,
    /// [`super::surface_pass`]): their tiles are then weighted by their own sharpness.
    pub surface: bool,
}

impl GlobalSummary {
    /// Puts the output in its geometry (`registration.reference_frame`, `--reference-frame`): with
    /// `reference_frame` 0 the sequence's mean geometry ([`mean_geometry`] of the used frames' linear
    /// transforms, unweighted), with N >= 1 frame N's linear geometry (frames numbered from 1 in store
    /// order). Sets every used frame's `shift` and `geometry` relative to it and `base`.
    ///
    /// # Errors
    /// When frame N does not exist or its geometry was not measured (the message names the key).
    pub fn set_output_geometry(&mut self, reference_frame: usize) -> Result<(), StageError> {
        let of = |index: usize| self.transforms.get(index).copied().flatten();
        let used: Vec<FrameTransform> = self
            .frames
            .iter()
            .zip(&self.geometry)
            .map(|(f, g)| of(f.index).unwrap_or(*g))
            .collect();
        let base = if reference_frame == 0 {
            mean_geometry(&used)
        } else {
            let chosen = reference_frame - 1;
            if chosen >= self.transforms.len() {
                return Err(StageError::input(
                    Stage::Reader,
                    format!(
                        "registration.reference_frame (--reference-frame) is {reference_frame}, \
                         but the run has {} frames (numbered from 1)",
                        self.transforms.len()
                    ),
                ));
            }
            Some(of(chosen).ok_or_else(|| {
                StageError::input(
                    Stage::Reader,
                    format!(
                        "registration.reference_frame (--reference-frame) is {reference_frame}, \
                         but that frame's geometry could not be measured (unreadable, or too few \
                         stars matched): choose another frame, or 0 for the mean geometry"
                    ),
                )
            })?)
        };
        let Some(base) = base else {
            return Ok(());
        };
        let mut geometry = Vec::with_capacity(used.len());
        for (frame, t) in self.frames.iter_mut().zip(&used) {
            let relative = t.relative_to(&base).ok_or_else(|| {
                StageError::input(
                    Stage::Reader,
                    "the output geometry is degenerate (its linear part is singular)",
                )
            })?;
            frame.shift = relative.shift;
            geometry.push(relative);
        }
        self.geometry = geometry;
        self.base = Some(base);
        Ok(())
    }
}

/// Every used frame's global translation as a [`FrameTransform`] about the image centre (the
/// reference frame's geometry, before [`GlobalSummary::set_output_geometry`]).
fn translations(
    frames: &[UsedFrame],
    transforms: &[Option<FrameTransform>],
) -> Vec<FrameTransform> {
    let centre = transforms
        .iter()
        .flatten()
        .next()
        .map_or((0.0, 0.0), |t| t.centre);
    frames
        .iter()
        .map(|f| FrameTransform::translation(f.shift, centre))
        .collect()
}

impl FrameReader {
    /// The global pass: every frame once, in order. The reader reads frame `k + 1` (blocking I/O, one
    /// file at a time, but frames 0 and 1 together when `workers` > 1, so that the workers do not wait
    /// for frame 0 alone) while a pool of `workers` blocking threads measures the parts of frames `k - 1`
    /// and `k` (strips of the frame, [`MeasurePlan`]: the pass parallelises over regions of one frame,
    /// never over frames; the reader measures the sky part as it reads). Strips are taken first come,
    /// first served, so a worker that finishes the last strip of one frame starts on the next frame
    /// instead of waiting for its partner; the parts are merged and matched against the reference in
    /// frame order. At most [`FRAMES_IN_FLIGHT`] frames are being measured, plus the one being read.
    ///
    /// # Errors
    /// Cancellation, an unreadable frame with `strict`, or no usable frame at all.
    pub async fn global_pass(
        &self,
        cancel: &CancellationToken,
        workers: usize,
    ) -> Result<GlobalSummary, StageError> {
        let total = self.store.len();
        let mut pass = GlobalPass::new();
        let options = Arc::new(pass.options().clone());
        let strips = StripPool::new(workers.max(1), Arc::clone(&options), self.store.shape());
        let mut qualities = Vec::with_capacity(total);
        let mut transforms = Vec::with_capacity(total);
        let mut plane_backgrounds = Vec::with_capacity(total);
        let mut levels = vec![[None; MAX_PLANES]; total];
        let mut in_flight: VecDeque<Result<PendingFrame, StageError>> = VecDeque::new();
        // The first frames are read at once (one per worker, at most FRAMES_IN_FLIGHT): read one by
        // one, the workers would wait for all of frame 0 with nothing to do.
        let first = total.min(workers.clamp(1, FRAMES_IN_FLIGHT));
        let mut reads: VecDeque<_> = (0..first)
            .map(|index| self.spawn_read(index, Arc::clone(&options)))
            .collect();
        for index in 0..total {
            let read = match reads.pop_front() {
                Some(handle) => handle.await.map_err(|source| StageError::Join {
                    stage: Stage::Reader,
                    source,
                })?,
                None => break,
            };
            // Reading the next frame overlaps with measuring this one and the one before.
            if reads.is_empty() && index + 1 < total {
                reads.push_back(self.spawn_read(index + 1, Arc::clone(&options)));
            }
            in_flight.push_back(read.map(|(image, sky, backgrounds, frame_levels)| {
                if let Some(l) = levels.get_mut(index) {
                    *l = frame_levels;
                }
                strips.submit(image, sky, backgrounds)
            }));
            while in_flight.len() >= FRAMES_IN_FLIGHT
                || (index + 1 == total && !in_flight.is_empty())
            {
                if cancel.is_cancelled() {
                    return Err(StageError::Cancelled);
                }
                self.memory.check()?;
                let done = qualities.len();
                let outcome = match in_flight.pop_front() {
                    Some(Ok(pending)) => pending
                        .finish(&options)
                        .await
                        .map(|(m, backgrounds)| (pass.add_measurement(m), backgrounds)),
                    Some(Err(error)) => Err(error),
                    None => break,
                };
                match outcome {
                    Ok((frame, backgrounds)) => {
                        qualities.push(Some(frame.quality));
                        transforms.push(frame.transform);
                        plane_backgrounds.push(backgrounds);
                    }
                    Err(error @ StageError::Panicked { .. }) => return Err(error),
                    Err(error) if self.strict => return Err(error),
                    Err(error) => {
                        (self.events)(&Event::FrameSkipped {
                            path: self.store.meta(done).label,
                            reason: crate::error::report(&error),
                        });
                        qualities.push(None);
                        transforms.push(None);
                        plane_backgrounds.push(None);
                    }
                }
                (self.events)(&Event::GlobalFrame {
                    done: done + 1,
                    total,
                });
            }
        }
        // Frames without stars: placed by correlation instead (registration.global.method).
        let surfaces = self.surface_pass(cancel, &mut qualities, workers).await?;
        let mut frames = select_frames(&qualities, self.strict, |index, reason| {
            (self.events)(&Event::FrameSkipped {
                path: self.store.meta(index).label,
                reason,
            })
        })?;
        self.select_best(&mut frames, surfaces.as_deref());
        if self.store.planes() > 1 {
            set_plane_scales(&mut frames, &plane_backgrounds);
        }
        for frame in &mut frames {
            frame.levels = levels.get(frame.index).copied().unwrap_or_default();
        }
        let geometry = translations(&frames, &transforms);
        Ok(GlobalSummary {
            qualities,
            frames,
            transforms,
            geometry,
            base: None,
            surface: surfaces.is_some(),
        })
    }

    /// Reads frame `index` for the global pass on a blocking thread: the image to measure (mono as it
    /// is, colour as the luminance of its planes), in colour mode the background of each plane, and the
    /// saturation level of each plane.
    /// The frame's sky level and noise are measured here too (the sky part of its [`MeasurePlan`]): a
    /// sampled statistic that is cheap next to star detection, and the reader would otherwise wait for
    /// the workers; left to the pool it was a third job for two workers on every frame. The frame's top
    /// rows are kept for the first tile row when the reader was asked to ([`FrameReader::keep_top_rows`]).
    fn spawn_read(
        &self,
        index: usize,
        options: Arc<GlobalOptions>,
    ) -> tokio::task::JoinHandle<Result<ReadFrame, StageError>> {
        let store = Arc::clone(&self.store);
        let top_rows = self.top_rows.clone();
        tokio::task::spawn_blocking(move || {
            let planes = store.read_full_planes(index)?;
            if let Some(top) = top_rows {
                top.keep(index, &planes); // for the first tile row: not read twice
            }
            let mut levels = [None; MAX_PLANES];
            for (l, found) in levels
                .iter_mut()
                .zip(store.saturation_levels(index, planes.view()))
            {
                *l = found;
            }
            let (image, backgrounds) = measurable(planes)?;
            let sky = measure_sky(image.view(), &options);
            Ok((image, sky, backgrounds, levels))
        })
    }
}

/// A frame as the global pass measures it: the image (shared by the part jobs), its measured sky part,
/// in colour mode the background of each plane, and the saturation level of each plane
/// ([`crate::source::FrameStore::saturation_levels`], as [`UsedFrame::levels`]).
type ReadFrame = (
    Arc<Array2<f32>>,
    MeasurePart,
    Option<[f32; MAX_PLANES]>,
    [Option<f32>; MAX_PLANES],
);

/// The image to measure and, in colour mode, the background of each plane.
pub(crate) type Measurable = (Arc<Array2<f32>>, Option<[f32; MAX_PLANES]>);

/// The image the global pass measures: mono as it is; colour planes (the four Bayer planes in cell
/// space, or R, G, B of a demosaiced sequence) through their mean, plus the background of each plane
/// (NaN for a plane without one: its scale then falls back to the frame's, see `set_plane_scales`).
pub(crate) fn measurable(planes: Array3<f32>) -> Result<Measurable, StageError> {
    let n = planes.dim().0;
    if n == 1 {
        let image = planes.index_axis_move(ndarray::Axis(0), 0);
        return Ok((Arc::new(image), None));
    }
    if n > MAX_PLANES {
        return Err(StageError::input(
            Stage::Reader,
            format!("a frame of {n} planes (at most {MAX_PLANES})"),
        ));
    }
    let mut backgrounds = [f32::NAN; MAX_PLANES];
    for (p, b) in backgrounds.iter_mut().enumerate().take(n) {
        let plane = planes.index_axis(ndarray::Axis(0), p);
        *b = tlr_core::stats::background_and_noise(plane, tlr_core::bayer::BACKGROUND_SAMPLES)
            .map_or(f32::NAN, |st| st.median);
    }
    Ok((
        Arc::new(crate::source::mean_of_planes(&planes)),
        Some(backgrounds),
    ))
}

/// Frames whose strips may be queued or measured at once in the global pass (the frame being read comes
/// on top). Two: while the workers finish the last strips of one frame, the next frame's strips are
/// already waiting for them.
const FRAMES_IN_FLIGHT: usize = 2;

/// One strip of a frame for the [`StripPool`], with where its result goes.
struct StripJob {
    image: Arc<Array2<f32>>,
    plan: Arc<MeasurePlan>,
    part: usize,
    done: oneshot::Sender<std::thread::Result<MeasurePart>>,
}

/// The global pass's measuring pool: `workers` blocking threads taking strips from one queue in the
/// order they were submitted, each with its own star detector (scratch buffers kept across frames).
/// Dropping the pool closes the queue; the threads finish their strip and end. The queue holds at most
/// the strips of [`FRAMES_IN_FLIGHT`] frames, which is all the global pass ever submits before it
/// waits for the oldest frame, so a submit never waits.
struct StripPool {
    jobs: crossbeam_channel::Sender<StripJob>,
}

impl StripPool {
    fn new(workers: usize, options: Arc<GlobalOptions>, (rows, cols): (usize, usize)) -> Self {
        let per_frame = MeasurePlan::new(rows, cols).strips().len().max(1);
        let (jobs, queue) = crossbeam_channel::bounded::<StripJob>(FRAMES_IN_FLIGHT * per_frame);
        for _ in 0..workers {
            let (queue, options) = (queue.clone(), Arc::clone(&options));
            tokio::task::spawn_blocking(move || {
                let mut detector = StarDetector::new(detect_options());
                for job in queue {
                    let m = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        measure_part(
                            job.image.view(),
                            &job.plan,
                            job.part,
                            &options,
                            &mut detector,
                        )
                    }));
                    if m.is_err() {
                        // Its scratch buffers may be half-written: start afresh.
                        detector = StarDetector::new(detect_options());
                    }
                    // A closed receiver means the pass stopped; the strip is simply dropped.
                    let _ = job.done.send(m);
                }
            });
        }
        Self { jobs }
    }

    /// Queues the strips of `image` (a frame whose `sky` part the reader measured) and returns the frame
    /// waiting for them (the queue is bounded by [`FRAMES_IN_FLIGHT`] frames, as the pass is).
    fn submit(
        &self,
        image: Arc<Array2<f32>>,
        sky: MeasurePart,
        backgrounds: Option<[f32; 4]>,
    ) -> PendingFrame {
        let (rows, cols) = image.dim();
        let plan = Arc::new(MeasurePlan::new(rows, cols));
        let strips = (0..plan.strips().len())
            .map(|part| {
                let (done, result) = oneshot::channel();
                let job = StripJob {
                    image: Arc::clone(&image),
                    plan: Arc::clone(&plan),
                    part,
                    done,
                };
                // The threads only end once `jobs` is dropped, so sending cannot fail while `self` lives.
                let _ = self.jobs.send(job);
                result
            })
            .collect();
        PendingFrame {
            plan,
            strips,
            sky,
            backgrounds,
        }
    }
}

/// A frame whose strips are queued or being measured by the [`StripPool`].
struct PendingFrame {
    plan: Arc<MeasurePlan>,
    strips: Vec<oneshot::Receiver<std::thread::Result<MeasurePart>>>,
    sky: MeasurePart,
    backgrounds: Option<[f32; 4]>,
}

impl PendingFrame {
    /// Waits for every strip and merges them with the sky part in part order (the result does not depend
    /// on the number of workers or on which worker measured what), with the frame's plane backgrounds.
    async fn finish(
        self,
        options: &GlobalOptions,
    ) -> Result<(FrameMeasurement, Option<[f32; 4]>), StageError> {
        let mut measured = Vec::with_capacity(self.plan.parts());
        for strip in self.strips {
            let panicked = |message: String| StageError::Panicked {
                stage: Stage::Reader,
                what: "measuring a frame's stars",
                message,
            };
            match strip.await {
                Ok(Ok(part)) => measured.push(part),
                Ok(Err(panic)) => {
                    return Err(panicked(crate::error::panic_message(panic.as_ref())))
                }
                Err(_) => return Err(panicked("the measuring thread ended".into())),
            }
        }
        measured.push(self.sky);
        Ok((merge_parts(&self.plan, measured, options), self.backgrounds))
    }
}

/// Picks the frames that take part ([`tlr_core::select::select_frames`]): reports the others through
/// `skipped`, or with `strict` fails on the first of them.
fn select_frames(
    qualities: &[Option<FrameQuality>],
    strict: bool,
    mut skipped: impl FnMut(usize, String),
) -> Result<Vec<UsedFrame>, StageError> {
    let selection = tlr_core::select::select_frames(qualities);
    for rejected in selection.rejected {
        let (index, reason) = (rejected.index, rejected.reason.to_string());
        if strict {
            return Err(StageError::input(
                Stage::Reader,
                format!("frame {index}: {reason} (--strict)"),
            ));
        }
        skipped(index, reason);
    }
    let used = selection.used;
    if used.is_empty() {
        return Err(StageError::input(
            Stage::Reader,
            "no frame could be used: every frame failed to read or to register globally",
        ));
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starry_frame(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut image = Array2::from_shape_fn((rows, cols), |(r, _)| 100.0 + 0.01 * r as f32);
        for v in image.iter_mut() {
            *v += 3.0 * (next() + next() + next() - 1.5);
        }
        for _ in 0..60 {
            let (cy, cx) = (next() * rows as f32, next() * cols as f32);
            let peak = 200.0 + 2000.0 * next();
            for r in (cy as usize).saturating_sub(8)..(cy as usize + 9).min(rows) {
                for c in (cx as usize).saturating_sub(8)..(cx as usize + 9).min(cols) {
                    let d2 = (r as f32 - cy).powi(2) + (c as f32 - cx).powi(2);
                    image[[r, c]] += peak * (-d2 / (2.0 * 1.5 * 1.5)).exp();
                }
            }
        }
        image
    }

    #[test]
    fn strip_pool_measures_frames_as_the_sequential_measurement_does() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let options = Arc::new(GlobalPass::new().options().clone());
        // 1200 rows: two strips per frame, so strips of consecutive frames interleave in the queue.
        let frames: Vec<Arc<Array2<f32>>> = (0..3)
            .map(|seed| Arc::new(starry_frame(1200, 300, seed)))
            .collect();
        assert!(MeasurePlan::new(1200, 300).strips().len() > 1);
        let measured = runtime.block_on(async {
            let pool = StripPool::new(2, Arc::clone(&options), (1200, 300));
            let pending: Vec<PendingFrame> = frames
                .iter()
                .map(|image| {
                    let sky = measure_sky(image.view(), &options);
                    pool.submit(Arc::clone(image), sky, None)
                })
                .collect();
            let mut out = Vec::new();
            for frame in pending {
                out.push(frame.finish(&options).await.unwrap().0);
            }
            out
        });
        for (image, m) in frames.iter().zip(&measured) {
            assert!(m.stars > 10, "stars found: {}", m.stars);
            assert_eq!(*m, tlr_core::global::measure_frame(image.view(), &options));
        }
    }
}
