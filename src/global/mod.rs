//! The global pass: one streamed look at every frame (methodology v4, §2 items 1 and 2) that measures
//! its background, noise, sharpness and global translation. The global frame weights `G_f` and the
//! photometric scales made from these measurements afterwards belong to frame selection
//! ([`crate::select`]; [`global_weights`] and [`photometric_scales`] are re-exported here).
//!
//! What it does:
//! - [`GlobalPass::add_frame`]: for one frame (only that frame in memory) the sigma-clipped background `B_f`
//!   and noise ([`crate::stats::background_and_noise`]), the stars (a [`crate::stars::StarDetector`] whose
//!   working buffers the pass keeps from frame to frame, measuring the [`MAX_MEASURED_STARS`] brightest), their
//!   median FWHM, and the sub-pixel translation relative to the geometric reference, which is the first
//!   frame with at least [`GlobalOptions::min_reference_stars`] stars. The translation comes from star
//!   matching ([`match_stars`], in `matching.rs`): translation voting over all pairwise offsets between
//!   the brightest stars of both lists (works for any drift that leaves enough stars in common, tens to
//!   hundreds of pixels), then a clipped least-squares fit of translation plus a small linear term
//!   (rotation, large-scale seeing) over all mutually nearest star pairs; the reported shift is the
//!   model's displacement at the image centre (for rotation about the centre plus translation that is
//!   exactly the translation; for seeing it is the field-averaged motion), and the fitted model
//!   ([`FrameTransform`]) is available from [`GlobalPass::add_frame_detailed`] for per-tile priors.
//!   When too few stars agree, `shift_ok` is false (e.g. a cloudy frame) and the shift is zero.
//! - [`MeasurePlan`], [`measure_part`], [`merge_parts`]: the same measurement of one frame split into
//!   independent parts (horizontal strips with a halo, and the sky), so that a pool of workers can share
//!   a frame; [`measure_frame`] runs the parts one after the other, so every caller gets the same result.
//!
//! - [`correlation`]: the same translation for frames without stars (Sun, Moon, planets): whole-frame
//!   phase correlation against a reference of the sharpest frames (`registration.global.method`).
//!
//! What it does not: read files, keep frames, estimate rotation or local motion (the operator measures
//! the local residual per tile), weigh frames or decide which are used ([`crate::select`]).

use crate::geom::Shift;
use crate::stars::{DetectOptions, Star, StarDetector};
use crate::stats::{background_and_noise, median};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

pub mod correlation;
mod geometry;
mod matching;
pub use crate::select::{
    global_weights, photometric_scales, MIN_STAR_FRACTION, Q_MAX, Q_MIN, Q_WEIGHT_BACKGROUND,
    Q_WEIGHT_FWHM, Q_WEIGHT_NOISE, Z_SCALE_FLOOR,
};
pub use correlation::{use_correlation, GlobalMethod, SurfaceReference, SurfaceShift};
pub use geometry::{mean_geometry, output_to_reference};
pub use matching::{match_stars, FrameTransform, StarMatch, StarPoint};
use matching::{sort_brightest_first, to_reference_frame};

/// The global pass measures at most this many star candidates per frame (the brightest), so
/// [`FrameQuality::stars`] saturates here. 150 bright stars are plenty for the FWHM and the match, and
/// measuring them costs about 2 ms of the pass's roughly 12-18 ms (CPU, 1024 x 1024, release build;
/// `cargo bench --bench global`); measuring all of a crowded field's stars would double the cost.
pub const MAX_MEASURED_STARS: usize = 150;

/// Per-frame measurements of the global pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameQuality {
    /// Robust (sigma-clipped median) sky background `B_f` in ADU; NaN when the frame has no finite pixel.
    #[serde(deserialize_with = "crate::geom::f32_or_nan")]
    pub background: f32,
    /// Robust sky noise (MAD sigma of the clipped sky) in ADU; NaN as above.
    #[serde(deserialize_with = "crate::geom::f32_or_nan")]
    pub noise: f32,
    /// Median FWHM of the unsaturated, unblended stars in pixels; NaN without such stars.
    #[serde(deserialize_with = "crate::geom::f32_or_nan")]
    pub fwhm: f32,
    /// Number of stars detected (at most [`MAX_MEASURED_STARS`]).
    pub stars: usize,
    /// Global translation relative to the reference frame (convention of [`crate::geom`]); zero when
    /// `shift_ok` is false.
    pub shift: Shift,
    /// True when `shift` was measured (the reference frame itself included).
    pub shift_ok: bool,
}

/// Settings of the global pass. `Default` gives the values documented per field.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalOptions {
    /// Number of brightest stars of each list used for translation voting (50).
    pub vote_stars: usize,
    /// Number of brightest stars used for the least-squares refinement (400; at most
    /// [`MAX_MEASURED_STARS`] are measured).
    pub refine_stars: usize,
    /// Stars a frame needs to become the geometric reference (8).
    pub min_reference_stars: usize,
    /// Two offsets vote for each other when they agree within this many pixels per axis; also the radius
    /// within which a star pair is matched in the first refinement round, twice that later (4 px).
    pub match_radius_px: f32,
    /// Fewest matched stars for a valid shift (5).
    pub min_matches: usize,
    /// Pixels sampled (regular subgrid) for background and noise (16 384: a 128 x 128 grid on a
    /// 1024 x 1024 frame; the median's statistical error is then about 0.01 sigma, far below what the
    /// weights resolve (their z-scores are floored at 3 % of the median), and the clipping, which runs on
    /// the reader between two reads, takes about a millisecond).
    pub background_samples: usize,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        Self {
            vote_stars: 50,
            refine_stars: 400,
            min_reference_stars: 8,
            match_radius_px: 4.0,
            min_matches: 5,
            background_samples: 16_384,
        }
    }
}

/// Everything [`GlobalPass::add_frame_detailed`] measures about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalFrame {
    /// The per-frame measurements (as [`GlobalPass::add_frame`] returns them).
    pub quality: FrameQuality,
    /// The fitted geometry when `quality.shift_ok` (identity for the reference frame).
    pub transform: Option<FrameTransform>,
    /// Star pairs used (0 when not matched; the star count for the reference frame).
    pub matches: usize,
    /// RMS residual of the matched stars after the fit (px); NaN when not matched, 0 for the reference.
    pub rms_px: f32,
}

/// The streamed global pass (see the module docs). Feed frames in order with [`GlobalPass::add_frame`].
///
/// The geometry stays that of the reference frame, but its star list is upgraded when a later frame
/// has at least twice as many usable stars (e.g. the reference was taken through thin cloud) and matched
/// well: that frame's stars, mapped back into reference coordinates with its fitted transform, become the
/// list later frames are matched against.
///
/// The pass keeps the star detector's image-sized working buffers between frames (about 12 bytes per
/// pixel), so it allocates nothing large per frame.
#[derive(Debug, Clone)]
pub struct GlobalPass {
    options: GlobalOptions,
    detector: StarDetector,
    reference: Option<Vec<StarPoint>>,
    reference_index: Option<usize>,
    reference_upgrades: usize,
    frames: usize,
}

impl Default for GlobalPass {
    fn default() -> Self {
        Self::with_options(GlobalOptions::default())
    }
}

impl GlobalPass {
    /// A pass with [`GlobalOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A pass with explicit options.
    pub fn with_options(options: GlobalOptions) -> Self {
        Self {
            options,
            detector: StarDetector::new(detect_options()),
            reference: None,
            reference_index: None,
            reference_upgrades: 0,
            frames: 0,
        }
    }

    /// Position (0-based, in the order of `add_frame` calls) of the geometric reference frame, once found.
    pub fn reference_index(&self) -> Option<usize> {
        self.reference_index
    }

    /// Number of frames seen so far.
    pub fn frames_seen(&self) -> usize {
        self.frames
    }

    /// Measures one frame. Never fails: an empty, flat, NaN or starless frame gives NaN measurements and
    /// `shift_ok = false`. Frames seen before the reference frame also get `shift_ok = false`.
    pub fn add_frame(&mut self, image: ArrayView2<f32>) -> FrameQuality {
        self.add_frame_detailed(image).quality
    }

    /// The options of this pass (for measuring frames elsewhere, see [`GlobalPass::add_measurement`]).
    pub fn options(&self) -> &GlobalOptions {
        &self.options
    }

    /// Like [`GlobalPass::add_frame`], also returning the fitted geometry ([`FrameTransform`], which
    /// gives a better prior shift per tile than the single translation when the field rotates) and the
    /// quality of the star match.
    pub fn add_frame_detailed(&mut self, image: ArrayView2<f32>) -> GlobalFrame {
        let m = measure_frame_with(image, &self.options, &mut self.detector);
        self.add_measurement(m)
    }

    /// The sequential half of [`GlobalPass::add_frame_detailed`]: takes a [`measure_frame`] result (which
    /// may have been computed on another thread, e.g. several frames at once) and matches it against the
    /// reference. Measurements must be added in frame order; this step is cheap (about a millisecond).
    pub fn add_measurement(&mut self, m: FrameMeasurement) -> GlobalFrame {
        let position = self.frames;
        self.frames += 1;
        let mut out = GlobalFrame {
            quality: FrameQuality {
                background: m.background,
                noise: m.noise,
                fwhm: m.fwhm,
                stars: m.stars,
                shift: Shift::ZERO,
                shift_ok: false,
            },
            transform: None,
            matches: 0,
            rms_px: f32::NAN,
        };
        let q = &mut out.quality;
        match &self.reference {
            None => {
                if m.points.len() >= self.options.min_reference_stars {
                    out.matches = m.points.len();
                    self.reference = Some(m.points);
                    self.reference_index = Some(position);
                    q.shift_ok = true;
                    out.transform = Some(FrameTransform::translation(Shift::ZERO, m.centre));
                    out.rms_px = 0.0;
                }
            }
            Some(reference) => {
                if let Some(sm) = match_stars(reference, &m.points, m.centre, &self.options) {
                    q.shift = sm.transform.shift;
                    q.shift_ok = true;
                    out.transform = Some(sm.transform);
                    out.matches = sm.matches;
                    out.rms_px = sm.rms_px;
                    let upgrade = m.points.len() >= 2 * reference.len()
                        && sm.matches >= self.options.min_matches.max(reference.len() / 2);
                    if upgrade {
                        self.reference = Some(to_reference_frame(&m.points, &sm.transform));
                        self.reference_upgrades += 1;
                    }
                }
            }
        }
        out
    }

    /// Number of stars in the current reference star list.
    pub fn reference_stars(&self) -> usize {
        self.reference.as_ref().map_or(0, Vec::len)
    }

    /// How often the reference star list was replaced by a richer frame's stars (see [`GlobalPass`]).
    pub fn reference_upgrades(&self) -> usize {
        self.reference_upgrades
    }
}

/// What the global pass measures on one frame on its own (no reference needed): the parallelisable part.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMeasurement {
    /// Sigma-clipped sky background (ADU); NaN for a frame without finite pixels.
    pub background: f32,
    /// Sky noise (ADU); NaN as above.
    pub noise: f32,
    /// Median FWHM of the unsaturated, unblended stars (px); NaN without such stars.
    pub fwhm: f32,
    /// Stars detected (at most [`MAX_MEASURED_STARS`]).
    pub stars: usize,
    /// The brightest unblended stars (at most `refine_stars`), brightest first, for matching.
    pub points: Vec<StarPoint>,
    /// Image centre `(y, x)`, the expansion point of [`FrameTransform`].
    pub centre: (f32, f32),
}

/// Measures one frame: background, noise, stars, FWHM (see the module docs). Pure and thread-safe; never
/// fails (empty, flat or NaN frames give NaN values and no stars).
pub fn measure_frame(image: ArrayView2<f32>, options: &GlobalOptions) -> FrameMeasurement {
    measure_frame_with(image, options, &mut StarDetector::new(detect_options()))
}

/// [`measure_frame`] with a caller-owned detector (whose options are used), so that its working
/// buffers are reused from frame to frame; the results are the same. Runs the parts of a
/// [`MeasurePlan`] one after the other and merges them.
pub fn measure_frame_with(
    image: ArrayView2<f32>,
    options: &GlobalOptions,
    detector: &mut StarDetector,
) -> FrameMeasurement {
    let (rows, cols) = image.dim();
    let plan = MeasurePlan::new(rows, cols);
    let parts = (0..plan.parts())
        .map(|part| measure_part(image, &plan, part, options, detector))
        .collect();
    merge_parts(&plan, parts, options)
}

/// Fewest core rows of a strip of [`MeasurePlan`]: frames up to about this height are measured in one
/// piece, taller ones in strips of at least this many rows.
pub const MIN_STRIP_ROWS: usize = 512;
/// Most strips of a [`MeasurePlan`].
pub const MAX_STRIPS: usize = 8;
/// Rows of frame data read above and below a strip's core: one block of the detector's background
/// mesh (so strips see the same mesh blocks as the whole frame), and far more than a star's
/// measurement radius, so stars in the core are measured on complete data.
pub const STRIP_HALO_ROWS: usize = 64;

/// How a frame is measured in independent parts, so that a pool of workers can share one frame (the
/// global pass parallelises over regions of a frame, never over frames): horizontal strips whose
/// star lists are merged, plus one part for the sky background and noise of the whole frame.
///
/// The split depends only on the frame's size (never on the number of workers), so results are the
/// same however the parts are scheduled. Strip borders lie on multiples of [`STRIP_HALO_ROWS`];
/// each strip detects stars on its core plus [`STRIP_HALO_ROWS`] above and below and keeps the stars
/// whose centre lies in its core. Detection thresholds (noise of the smoothed image, saturation) are
/// estimated per strip, which on a frame with a strong noise gradient differs slightly from one
/// estimate for the whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurePlan {
    rows: usize,
    cols: usize,
    strips: Vec<std::ops::Range<usize>>,
}

impl MeasurePlan {
    /// The plan for a `rows` x `cols` frame: `clamp(rows / MIN_STRIP_ROWS, 1, MAX_STRIPS)` strips of
    /// about equal height.
    pub fn new(rows: usize, cols: usize) -> Self {
        let count = (rows / MIN_STRIP_ROWS).clamp(1, MAX_STRIPS);
        let blocks = rows.div_ceil(STRIP_HALO_ROWS);
        let edge = |k: usize| (blocks * k / count * STRIP_HALO_ROWS).min(rows);
        let strips = (0..count).map(|k| edge(k)..edge(k + 1)).collect();
        Self { rows, cols, strips }
    }

    /// Number of parts: the strips, then the sky.
    pub fn parts(&self) -> usize {
        self.strips.len() + 1
    }

    /// The core rows of each strip, top to bottom (they cover the frame once).
    pub fn strips(&self) -> &[std::ops::Range<usize>] {
        &self.strips
    }
}

/// The result of one part of a [`MeasurePlan`] ([`measure_part`]), to be merged by [`merge_parts`].
#[derive(Debug, Clone)]
pub struct MeasurePart(PartResult);

#[derive(Debug, Clone)]
enum PartResult {
    /// Stars of a strip's core, in frame coordinates.
    Stars(Vec<Star>),
    /// Background and noise of the whole frame (`None`: no finite pixel).
    Sky(Option<crate::stats::ClippedStats>),
    /// The image did not have the plan's shape.
    Mismatch,
}

/// Measures part `part` of `plan` on `image` (the whole frame): a strip's stars or the frame's sky.
/// Parts are independent; pure apart from the detector's scratch buffers. An image of another shape
/// than the plan's, or a part number out of range, gives a part that merges into "no measurement".
pub fn measure_part(
    image: ArrayView2<f32>,
    plan: &MeasurePlan,
    part: usize,
    options: &GlobalOptions,
    detector: &mut StarDetector,
) -> MeasurePart {
    if image.dim() != (plan.rows, plan.cols) || part >= plan.parts() {
        return MeasurePart(PartResult::Mismatch);
    }
    let Some(core) = plan.strips.get(part) else {
        return measure_sky(image, options);
    };
    let top = core.start.saturating_sub(STRIP_HALO_ROWS);
    let bottom = (core.end + STRIP_HALO_ROWS).min(plan.rows);
    let strip = image.slice(ndarray::s![top..bottom, ..]);
    let (lo, hi) = (core.start as f32 - 0.5, core.end as f32 - 0.5);
    let stars = detector
        .detect(strip)
        .into_iter()
        .map(|mut s| {
            s.y += top as f32;
            s
        })
        // Each star belongs to the strip whose core holds the pixel of its centre; a star without a
        // finite position cannot be placed and is left out.
        .filter(|s| s.x.is_finite() && s.y >= lo && s.y < hi)
        .collect();
    MeasurePart(PartResult::Stars(stars))
}

/// The sky part of a frame's [`MeasurePlan`] (background and noise of the whole frame, sampled); needs
/// no star detector, so a caller can measure it wherever it has the frame at hand.
pub fn measure_sky(image: ArrayView2<f32>, options: &GlobalOptions) -> MeasurePart {
    MeasurePart(PartResult::Sky(background_and_noise(
        image,
        options.background_samples,
    )))
}

/// Merges the parts of `plan` (in part order, as [`measure_part`] returned them) into the frame's
/// measurement: the sky part's background and noise, the strips' stars (the [`MAX_MEASURED_STARS`]
/// with the highest peaks), their median FWHM and the brightest as points for matching.
pub fn merge_parts(
    plan: &MeasurePlan,
    parts: Vec<MeasurePart>,
    options: &GlobalOptions,
) -> FrameMeasurement {
    let (rows, cols) = (plan.rows, plan.cols);
    let centre = (
        0.5 * (rows as f32 - 1.0).max(0.0),
        0.5 * (cols as f32 - 1.0).max(0.0),
    );
    let mut m = FrameMeasurement {
        background: f32::NAN,
        noise: f32::NAN,
        fwhm: f32::NAN,
        stars: 0,
        points: Vec::new(),
        centre,
    };
    let mut sky = None;
    let mut stars: Vec<Star> = Vec::new();
    for part in parts {
        match part.0 {
            PartResult::Stars(s) => stars.extend(s),
            PartResult::Sky(s) => sky = s,
            PartResult::Mismatch => return m,
        }
    }
    let Some(sky) = sky else {
        return m;
    };
    m.background = sky.median;
    m.noise = sky.sigma;
    stars.sort_by(|a, b| {
        b.peak
            .total_cmp(&a.peak)
            .then(a.y.total_cmp(&b.y))
            .then(a.x.total_cmp(&b.x))
    });
    stars.truncate(MAX_MEASURED_STARS);
    m.points = star_points(&stars, options.refine_stars);
    m.stars = stars.len();
    let fwhms: Vec<f32> = stars
        .iter()
        .filter(|s| !s.saturated && !s.blended)
        .map(|s| s.fwhm)
        .collect();
    m.fwhm = median(&fwhms);
    m
}

/// Star detection settings of the global pass: the defaults, measuring at most
/// [`MAX_MEASURED_STARS`] candidates (the brightest), which is plenty for FWHM and matching and keeps the
/// pass fast on crowded fields.
pub fn detect_options() -> DetectOptions {
    DetectOptions {
        max_stars: MAX_MEASURED_STARS,
        ..DetectOptions::default()
    }
}

/// The `limit` brightest unblended stars with finite positions as [`StarPoint`]s, brightest first (ties
/// by position). Blended stars are left out: a neighbour pulls their centroid.
fn star_points(stars: &[Star], limit: usize) -> Vec<StarPoint> {
    let mut p: Vec<StarPoint> = stars
        .iter()
        .filter(|s| s.x.is_finite() && s.y.is_finite() && !s.blended)
        .map(|s| StarPoint {
            y: s.y,
            x: s.x,
            flux: if s.flux.is_finite() { s.flux } else { 0.0 },
        })
        .collect();
    sort_brightest_first(&mut p);
    p.truncate(limit);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_plans_cover_every_row_once_on_halo_multiples() {
        for rows in [
            1, 63, 64, 500, 511, 1023, 1024, 1025, 2048, 3000, 4096, 9000,
        ] {
            let plan = MeasurePlan::new(rows, 100);
            let strips = plan.strips();
            assert_eq!(strips.len(), (rows / MIN_STRIP_ROWS).clamp(1, MAX_STRIPS));
            assert_eq!(plan.parts(), strips.len() + 1);
            assert_eq!(strips[0].start, 0);
            assert_eq!(strips.last().map(|s| s.end), Some(rows));
            for pair in strips.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{rows}: {strips:?}");
                assert_eq!(pair[0].end % STRIP_HALO_ROWS, 0);
                assert!(pair[0].end > pair[0].start);
            }
        }
    }

    #[test]
    fn strips_find_the_stars_of_the_whole_frame() {
        // 1100 rows: two strips, compared with the same frame measured in one piece.
        let mut cfg =
            crate::simulate::SimConfig::new(crate::simulate::Scenario::Static, 1, 600, 1100, 3);
        cfg.star_density_per_mpx = 400.0;
        let sim = crate::simulate::Simulation::new(cfg);
        let frame = sim.frame(0);
        let options = GlobalOptions::default();
        let plan = MeasurePlan::new(1100, 600);
        assert_eq!(plan.strips().len(), 2);
        let whole = {
            let one = MeasurePlan {
                rows: 1100,
                cols: 600,
                strips: std::iter::once(0..1100).collect(),
            };
            let mut d = StarDetector::new(detect_options());
            let parts = (0..one.parts())
                .map(|p| measure_part(frame.view(), &one, p, &options, &mut d))
                .collect();
            merge_parts(&one, parts, &options)
        };
        let split = measure_frame(frame.view(), &options);
        assert_eq!(split.background, whole.background);
        assert_eq!(split.noise, whole.noise);
        assert!(
            whole.points.len() >= 20,
            "{} points of {} stars",
            whole.points.len(),
            whole.stars
        );
        // The bright stars are found and measured identically: strips only change which faint
        // candidates fill the last places of the list.
        let brightest = &whole.points[..20];
        for p in brightest {
            assert!(
                split
                    .points
                    .iter()
                    .any(|q| (q.y - p.y).abs() < 1e-3 && (q.x - p.x).abs() < 1e-3),
                "star at ({}, {}) lost",
                p.y,
                p.x
            );
        }
        // Both median FWHMs are close to the simulated seeing.
        let truth = sim.fwhm_px(0);
        for m in [&whole, &split] {
            assert!(
                (m.fwhm - truth).abs() < 0.05 * truth,
                "{} vs {truth}",
                m.fwhm
            );
        }
        // Parts measured in another order (as parallel workers may finish) merge to the same result.
        let mut d = StarDetector::new(detect_options());
        let mut parts: Vec<(usize, MeasurePart)> = (0..plan.parts())
            .rev()
            .map(|p| (p, measure_part(frame.view(), &plan, p, &options, &mut d)))
            .collect();
        parts.sort_by_key(|(p, _)| *p);
        let again = merge_parts(&plan, parts.into_iter().map(|(_, m)| m).collect(), &options);
        assert_eq!(again, split);
        // A wrong-shaped image measures as nothing rather than panicking.
        let wrong = measure_part(frame.view(), &MeasurePlan::new(10, 10), 0, &options, &mut d);
        assert!(merge_parts(&plan, vec![wrong], &options)
            .background
            .is_nan());
    }
}
