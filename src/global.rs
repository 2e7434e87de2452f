//! The global pass: one streamed look at every frame (methodology v4, §2 items 1 and 2) that measures
//! its background, noise, sharpness and global translation, and afterwards turns those into the global
//! frame weights `G_f` and the photometric scales.
//!
//! What it does:
//! - [`GlobalPass::add_frame`]: for one frame (only that frame in memory) the sigma-clipped background `B_f`
//!   and noise ([`crate::stats::background_and_noise`]), the stars (a [`crate::stars::StarDetector`] whose
//!   working buffers the pass keeps from frame to frame, measuring the [`MAX_MEASURED_STARS`] brightest), their
//!   median FWHM, and the sub-pixel translation relative to the geometric reference, which is the first
//!   frame with at least [`GlobalOptions::min_reference_stars`] stars. The translation comes from star
//!   matching ([`match_stars`]): translation voting over all pairwise offsets between the brightest stars
//!   of both lists (works for any drift that leaves enough stars in common, tens to hundreds of pixels),
//!   then a clipped least-squares fit of translation plus a small linear term (rotation, large-scale
//!   seeing) over all mutually nearest star pairs; the reported shift is the model's displacement at the
//!   image centre (for rotation about the centre plus translation that is exactly the translation; for
//!   seeing it is the field-averaged motion), and the fitted model ([`FrameTransform`]) is available from
//!   [`GlobalPass::add_frame_detailed`] for per-tile priors. When too few stars agree, `shift_ok` is
//!   false (e.g. a cloudy frame) and the shift is zero.
//! - [`MeasurePlan`], [`measure_part`], [`merge_parts`]: the same measurement of one frame split into
//!   independent parts (horizontal strips with a halo, and the sky), so that a pool of workers can share
//!   a frame; [`measure_frame`] runs the parts one after the other, so every caller gets the same result.
//! - [`global_weights`]: `G_f = exp(clamp(Q_f, -3, 3))` with `Q_f = -0.4 z(B) - 0.3 z(noise) - 0.3 z(FWHM)`,
//!   `z` the robust z-score `(v - median) / (1.4826 MAD)` over the usable frames (tile_compile's weighting;
//!   our addition: the scale is at least 3 % of the median, so that a very homogeneous night does not
//!   turn measurement noise into weights between e^-3 and e^3).
//!   Unusable frames (no shift, no stars, fewer than a quarter of the median star count, non-finite
//!   measurements) get the lowest weight `exp(-3)` instead of an error.
//! - [`photometric_scales`]: `scale_f = median(B) / B_f`, so that `I' = I * scale_f` is the methodology's
//!   `I / B_f` expressed in the ADU units of a typical frame.
//!
//! What it does not: read files, keep frames, estimate rotation or local motion (the operator measures
//! the local residual per tile), or decide to drop frames (the weights only make them count less).

use crate::geom::Shift;
use crate::stars::{DetectOptions, Star, StarDetector};
use crate::stats::{background_and_noise, median, median_and_sigma};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

/// Lowest quality score of the methodology's clamp; unusable frames get `G_f = exp(Q_MIN)`.
pub const Q_MIN: f32 = -3.0;
/// Highest quality score of the methodology's clamp.
pub const Q_MAX: f32 = 3.0;
/// Weight of the background z-score in `Q_f`.
pub const Q_WEIGHT_BACKGROUND: f32 = 0.4;
/// Weight of the noise z-score in `Q_f`.
pub const Q_WEIGHT_NOISE: f32 = 0.3;
/// Weight of the FWHM z-score in `Q_f`.
pub const Q_WEIGHT_FWHM: f32 = 0.3;
/// Smallest scale of the robust z-scores, relative to the median (see [`global_weights`]): differences
/// below about 3 % of the typical background, noise or FWHM count as noise, not as quality.
pub const Z_SCALE_FLOOR: f32 = 0.03;
/// A frame with fewer stars than this fraction of the median star count is treated as unusable
/// (cloud, heavy trailing): its weight is `exp(Q_MIN)`.
pub const MIN_STAR_FRACTION: f32 = 0.25;

/// The global pass measures at most this many star candidates per frame (the brightest), so
/// [`FrameQuality::stars`] saturates here. 150 bright stars are plenty for the FWHM and the match, and
/// measuring them costs about 2 ms of the pass's roughly 12-18 ms (CPU, 1024 x 1024, release build;
/// `cargo bench --bench global`); measuring all of a crowded field's stars would double the cost.
pub const MAX_MEASURED_STARS: usize = 150;

/// Per-frame measurements of the global pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameQuality {
    /// Robust (sigma-clipped median) sky background `B_f` in ADU; NaN when the frame has no finite pixel.
    pub background: f32,
    /// Robust sky noise (MAD sigma of the clipped sky) in ADU; NaN as above.
    pub noise: f32,
    /// Median FWHM of the unsaturated, unblended stars in pixels; NaN without such stars.
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

/// A star position with its flux, the only thing the matcher needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StarPoint {
    /// Row coordinate (pixels).
    pub y: f32,
    /// Column coordinate (pixels).
    pub x: f32,
    /// Flux (any unit; only the order matters).
    pub flux: f32,
}

/// Linear model of a frame's geometry relative to the reference: a feature at reference position `p`
/// appears in the frame at `p + displacement_at(p)`, with `displacement_at(p) = shift + linear (p - centre)`.
/// `linear` captures field rotation (alt-az), differential refraction and the large-scale part of the
/// seeing; it is zero when too few stars were matched to fit it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameTransform {
    /// Displacement at `centre` (px); this is [`FrameQuality::shift`].
    pub shift: Shift,
    /// Point the model is expanded about, `(y, x)`: the image centre.
    pub centre: (f32, f32),
    /// Row-major 2 x 2 matrix `[[d dy/dy, d dy/dx], [d dx/dy, d dx/dx]]` (dimensionless).
    pub linear: [[f32; 2]; 2],
}

impl FrameTransform {
    /// A pure translation about `centre`.
    pub fn translation(shift: Shift, centre: (f32, f32)) -> Self {
        Self {
            shift,
            centre,
            linear: [[0.0; 2]; 2],
        }
    }

    /// Displacement of the frame at reference position `(y, x)`: the prior shift of a tile centred there.
    pub fn displacement_at(&self, y: f32, x: f32) -> Shift {
        let (ry, rx) = (y - self.centre.0, x - self.centre.1);
        let l = &self.linear;
        Shift::new(
            self.shift.dy + l[0][0] * ry + l[0][1] * rx,
            self.shift.dx + l[1][0] * ry + l[1][1] * rx,
        )
    }

    /// Field rotation in degrees implied by the linear part (positive turns +x towards +y).
    pub fn rotation_deg(&self) -> f32 {
        let l = &self.linear;
        // (I + L) ~ scaled rotation: angle = atan2(m_yx, m_xx) with m = I + L in (y, x) order.
        let (m_yx, m_xx) = (l[0][1], 1.0 + l[1][1]);
        let (m_xy, m_yy) = (l[1][0], 1.0 + l[0][0]);
        (0.5 * (m_yx.atan2(m_xx) - m_xy.atan2(m_yy))).to_degrees()
    }
}

/// Result of [`match_stars`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StarMatch {
    /// Mean displacement of the matched stars (the least-squares pure translation over the pairs kept by
    /// the clipped model fit). Under field rotation it depends on where the stars are; the global pass
    /// reports `transform.shift`, the model's displacement at the image centre, instead.
    pub mean_shift: Shift,
    /// The fitted geometry (translation at the image centre plus linear part).
    pub transform: FrameTransform,
    /// Number of star pairs used for the final fit.
    pub matches: usize,
    /// RMS residual of those pairs after the fit (px): local seeing motion plus centroid noise.
    pub rms_px: f32,
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

/// `points` (frame coordinates) mapped into reference coordinates: solves `p + d(p) = q` for `p` by
/// fixed-point iteration (the linear part is small, so three rounds are exact to float precision).
fn to_reference_frame(points: &[StarPoint], t: &FrameTransform) -> Vec<StarPoint> {
    points
        .iter()
        .map(|q| {
            let (mut y, mut x) = (q.y - t.shift.dy, q.x - t.shift.dx);
            for _ in 0..3 {
                let d = t.displacement_at(y, x);
                (y, x) = (q.y - d.dy, q.x - d.dx);
            }
            StarPoint { y, x, flux: q.flux }
        })
        .collect()
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

fn sort_brightest_first(p: &mut [StarPoint]) {
    p.sort_by(|a, b| {
        b.flux
            .total_cmp(&a.flux)
            .then(a.y.total_cmp(&b.y))
            .then(a.x.total_cmp(&b.x))
    });
}

/// Geometry of `frame` relative to `reference` from two star lists (any order; the brightest are used
/// for voting), expanded about `centre` `(y, x)` (normally the image centre). `None` when fewer than
/// `options.min_matches` stars agree on one translation.
///
/// Voting: every pair (reference star, frame star) among the `vote_stars` brightest proposes the offset
/// between them; the offset with the most other proposals within `match_radius_px` (per axis) wins.
/// Refinement (four rounds): reference stars (the `refine_stars` brightest) are paired with the mutually
/// nearest frame star within `match_radius_px` (first round) or twice that (later rounds) of their
/// position predicted by the current model; the
/// model `d(p) = shift + L (p - centre)` is fitted by least squares with 3-sigma clipping of the
/// residuals. `L` is fitted only from at least 12 pairs spread over the field and kept only when small
/// (|entries| <= 0.1, i.e. up to about 6 degrees of rotation); otherwise the model is a translation.
pub fn match_stars(
    reference: &[StarPoint],
    frame: &[StarPoint],
    centre: (f32, f32),
    options: &GlobalOptions,
) -> Option<StarMatch> {
    let clean = |s: &[StarPoint]| {
        let mut v: Vec<StarPoint> = s
            .iter()
            .copied()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .collect();
        sort_brightest_first(&mut v);
        v
    };
    let reference = clean(reference);
    let frame = clean(frame);
    let min_matches = options.min_matches.max(2);
    if reference.len() < min_matches || frame.len() < min_matches {
        return None;
    }
    let radius = if options.match_radius_px.is_finite() && options.match_radius_px > 0.0 {
        options.match_radius_px
    } else {
        GlobalOptions::default().match_radius_px
    };
    let n_vote = options.vote_stars.max(min_matches);
    let guess = vote(
        &reference[..reference.len().min(n_vote)],
        &frame[..frame.len().min(n_vote)],
        radius,
        min_matches,
    )?;
    let n_refine = options.refine_stars.max(min_matches);
    let reference = &reference[..reference.len().min(n_refine)];
    let frame = &frame[..frame.len().min(n_refine)];
    let mut model = FrameTransform::translation(guess, centre);
    let mut result = None;
    // The first round pairs stars near the voted translation; later rounds search twice as far around
    // the fitted model, so stars that local seeing moved further from the mean are paired as well (the
    // brightest `refine_stars` are sparse enough that this does not create false pairs).
    for round_radius in [radius, 2.0 * radius, 2.0 * radius, 2.0 * radius] {
        let pairs = mutual_pairs(reference, frame, &model, round_radius);
        if pairs.len() < min_matches {
            return None;
        }
        let (fitted, mean, used, rms) = fit_clipped(&pairs, centre)?;
        model = fitted;
        result = Some(StarMatch {
            mean_shift: mean,
            transform: model,
            matches: used,
            rms_px: rms,
        });
    }
    result
}

/// Offset `(dy, dx)` = frame - reference proposed by most pairs, averaged over its supporters.
fn vote(
    reference: &[StarPoint],
    frame: &[StarPoint],
    radius: f32,
    min_votes: usize,
) -> Option<Shift> {
    let mut offsets: Vec<(f32, f32)> = Vec::with_capacity(reference.len() * frame.len());
    for a in reference {
        for b in frame {
            offsets.push((b.x - a.x, b.y - a.y));
        }
    }
    offsets.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    let mut best: Option<(usize, usize)> = None; // (votes, position)
    let mut lo = 0usize;
    let mut hi = 0usize;
    for (k, &(dx, dy)) in offsets.iter().enumerate() {
        while offsets[lo].0 < dx - radius {
            lo += 1;
        }
        while hi < offsets.len() && offsets[hi].0 <= dx + radius {
            hi += 1;
        }
        let votes = offsets[lo..hi]
            .iter()
            .filter(|o| (o.1 - dy).abs() <= radius)
            .count();
        if best.is_none_or(|(v, _)| votes > v) {
            best = Some((votes, k));
        }
    }
    let (votes, k) = best?;
    if votes < min_votes {
        return None;
    }
    let (dx0, dy0) = offsets[k];
    let support: Vec<&(f32, f32)> = offsets
        .iter()
        .filter(|o| (o.0 - dx0).abs() <= radius && (o.1 - dy0).abs() <= radius)
        .collect();
    let n = support.len() as f64;
    let mdx = support.iter().map(|o| f64::from(o.0)).sum::<f64>() / n;
    let mdy = support.iter().map(|o| f64::from(o.1)).sum::<f64>() / n;
    Some(Shift::new(mdy as f32, mdx as f32))
}

/// Mutually nearest pairs `(reference star, frame star)`: the frame star nearest to the model's
/// prediction within `radius`, kept when no other reference star claims it more closely; reference order.
fn mutual_pairs(
    reference: &[StarPoint],
    frame: &[StarPoint],
    model: &FrameTransform,
    radius: f32,
) -> Vec<(StarPoint, StarPoint)> {
    // Frame stars sorted by x for a windowed search.
    let mut fx: Vec<(f32, usize)> = frame.iter().enumerate().map(|(i, p)| (p.x, i)).collect();
    fx.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let r2 = radius * radius;
    let nearest = |y: f32, x: f32| -> Option<(usize, f32)> {
        let start = fx.partition_point(|e| e.0 < x - radius);
        let mut best: Option<(usize, f32)> = None;
        for &(px, i) in &fx[start..] {
            if px > x + radius {
                break;
            }
            let d2 = (frame[i].y - y).powi(2) + (px - x).powi(2);
            if d2 <= r2 && best.is_none_or(|(_, b)| d2 < b) {
                best = Some((i, d2));
            }
        }
        best
    };
    let candidates: Vec<Option<(usize, f32)>> = reference
        .iter()
        .map(|a| {
            let d = model.displacement_at(a.y, a.x);
            nearest(a.y + d.dy, a.x + d.dx)
        })
        .collect();
    // Among reference stars claiming the same frame star keep the closest (first on ties).
    let mut owner: Vec<Option<(usize, f32)>> = vec![None; frame.len()];
    for (ri, c) in candidates.iter().enumerate() {
        if let Some((fi, d2)) = *c {
            if owner[fi].is_none_or(|(_, od)| d2 < od) {
                owner[fi] = Some((ri, d2));
            }
        }
    }
    candidates
        .iter()
        .enumerate()
        .filter_map(|(ri, c)| {
            let (fi, _) = (*c)?;
            (owner[fi].map(|(o, _)| o) == Some(ri)).then_some((reference[ri], frame[fi]))
        })
        .collect()
}

/// Least-squares fit of `d(p) = t + L (p - centre)` (or of `t` alone, see [`match_stars`]) with
/// iterative 3-sigma clipping of the per-axis residuals (sigma from the MAD, floored at 0.05 px).
/// Returns the model, the mean displacement of the kept pairs, their number and their RMS residual.
fn fit_clipped(
    pairs: &[(StarPoint, StarPoint)],
    centre: (f32, f32),
) -> Option<(FrameTransform, Shift, usize, f32)> {
    let mut keep = vec![true; pairs.len()];
    let mut model = fit_model(pairs, &keep, centre)?;
    for _ in 0..5 {
        let res: Vec<(f32, f32)> = pairs
            .iter()
            .map(|(a, b)| {
                let d = model.displacement_at(a.y, a.x);
                (b.y - a.y - d.dy, b.x - a.x - d.dx)
            })
            .collect();
        let kept_res = |axis: usize| -> Vec<f32> {
            res.iter()
                .zip(&keep)
                .filter(|(_, &k)| k)
                .map(|(r, _)| if axis == 0 { r.0 } else { r.1 })
                .collect()
        };
        let (my, sy) = median_and_sigma(&kept_res(0));
        let (mx, sx) = median_and_sigma(&kept_res(1));
        let (ly, lx) = (3.0 * sy.max(0.05), 3.0 * sx.max(0.05));
        let new_keep: Vec<bool> = res
            .iter()
            .map(|r| (r.0 - my).abs() <= ly && (r.1 - mx).abs() <= lx)
            .collect();
        if new_keep == keep {
            break;
        }
        keep = new_keep;
        model = fit_model(pairs, &keep, centre)?;
    }
    let (mut ss, mut n, mut sdy, mut sdx) = (0.0f64, 0usize, 0.0f64, 0.0f64);
    for ((a, b), &k) in pairs.iter().zip(&keep) {
        if k {
            let d = model.displacement_at(a.y, a.x);
            ss += f64::from((b.y - a.y - d.dy).powi(2) + (b.x - a.x - d.dx).powi(2));
            sdy += f64::from(b.y - a.y);
            sdx += f64::from(b.x - a.x);
            n += 1;
        }
    }
    let nf = n as f64;
    (n > 0).then(|| {
        let mean = Shift::new((sdy / nf) as f32, (sdx / nf) as f32);
        (model, mean, n, (ss / nf).sqrt() as f32)
    })
}

/// Pairs needed before the linear part of the model is fitted.
const MIN_PAIRS_LINEAR: usize = 12;
/// Largest accepted entry of the linear part (about 6 degrees of rotation).
const MAX_LINEAR: f64 = 0.1;

/// One unweighted least-squares fit over the pairs flagged in `keep`; `None` when none is flagged.
fn fit_model(
    pairs: &[(StarPoint, StarPoint)],
    keep: &[bool],
    centre: (f32, f32),
) -> Option<FrameTransform> {
    let used: Vec<&(StarPoint, StarPoint)> = pairs
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(p, _)| p)
        .collect();
    if used.is_empty() {
        return None;
    }
    let n = used.len() as f64;
    let (cy, cx) = (f64::from(centre.0), f64::from(centre.1));
    // Means of positions and displacements (centre the design for conditioning).
    let mut m = [0.0f64; 4]; // y, x, dy, dx
    for (a, b) in &used {
        m[0] += f64::from(a.y) - cy;
        m[1] += f64::from(a.x) - cx;
        m[2] += f64::from(b.y - a.y);
        m[3] += f64::from(b.x - a.x);
    }
    m.iter_mut().for_each(|v| *v /= n);
    let translation_only = FrameTransform {
        // Mean displacement; with L = 0 the value at the centre equals it.
        shift: Shift::new(m[2] as f32, m[3] as f32),
        centre,
        linear: [[0.0; 2]; 2],
    };
    if used.len() < MIN_PAIRS_LINEAR {
        return Some(translation_only);
    }
    // Covariances of the centred positions with each other and with the displacements.
    let (mut syy, mut sxx, mut syx) = (0.0f64, 0.0f64, 0.0f64);
    let (mut sy_dy, mut sx_dy, mut sy_dx, mut sx_dx) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (a, b) in &used {
        let y = f64::from(a.y) - cy - m[0];
        let x = f64::from(a.x) - cx - m[1];
        let dy = f64::from(b.y - a.y) - m[2];
        let dx = f64::from(b.x - a.x) - m[3];
        syy += y * y;
        sxx += x * x;
        syx += y * x;
        sy_dy += y * dy;
        sx_dy += x * dy;
        sy_dx += y * dx;
        sx_dx += x * dx;
    }
    let det = syy * sxx - syx * syx;
    // Require a real 2-D spread: the smaller principal variance at least (10 px)^2 per pair.
    let trace = syy + sxx;
    let small_eig = 0.5 * (trace - ((syy - sxx).powi(2) + 4.0 * syx * syx).sqrt());
    if det.is_nan() || det <= 0.0 || small_eig.is_nan() || small_eig < 100.0 * n {
        return Some(translation_only);
    }
    let solve = |sy_d: f64, sx_d: f64| -> (f64, f64) {
        (
            (sxx * sy_d - syx * sx_d) / det,
            (syy * sx_d - syx * sy_d) / det,
        )
    };
    let (l00, l01) = solve(sy_dy, sx_dy);
    let (l10, l11) = solve(sy_dx, sx_dx);
    if [l00, l01, l10, l11]
        .iter()
        .any(|v| !v.is_finite() || v.abs() > MAX_LINEAR)
    {
        return Some(translation_only);
    }
    // d(p) = mean_d + L (p - centre - mean_p)  =>  value at the centre: mean_d - L mean_p.
    let t_dy = m[2] - (l00 * m[0] + l01 * m[1]);
    let t_dx = m[3] - (l10 * m[0] + l11 * m[1]);
    Some(FrameTransform {
        shift: Shift::new(t_dy as f32, t_dx as f32),
        centre,
        linear: [[l00 as f32, l01 as f32], [l10 as f32, l11 as f32]],
    })
}

/// Robust z-scores of `values` over the entries flagged in `use_it`: `(v - median) / scale` with
/// `scale = max(1.4826 MAD, Z_SCALE_FLOOR * |median|, 1e-12)`. The floor keeps variations too small to
/// matter (a homogeneous set of frames has a tiny MAD) from swinging the weights over the whole clamp
/// range; every z is clamped to `[-10, 10]` so a single odd frame cannot produce infinities.
fn robust_z(values: &[f32], use_it: &[bool]) -> Vec<f32> {
    let sample: Vec<f32> = values
        .iter()
        .zip(use_it)
        .filter(|(_, &u)| u)
        .map(|(&v, _)| v)
        .collect();
    let (med, sigma) = median_and_sigma(&sample);
    let scale = if sigma.is_finite() { sigma } else { 0.0 }
        .max(Z_SCALE_FLOOR * med.abs())
        .max(1e-12);
    values
        .iter()
        .map(|&v| ((v - med) / scale).clamp(-10.0, 10.0))
        .collect()
}

/// Global frame weights `G_f = exp(clamp(Q_f, -3, 3))`, one per entry of `q` (see the module docs).
///
/// A frame is usable when its shift was measured, background, noise and FWHM are finite, and it has at
/// least [`MIN_STAR_FRACTION`] of the median star count of the frames with a measured shift; the
/// median/MAD normalisation uses the usable frames only, with the scale floored at [`Z_SCALE_FLOOR`]
/// times the median. Unusable frames get `exp(-3)` (about 0.05).
/// When every frame is alike, all weights are 1.
pub fn global_weights(q: &[FrameQuality]) -> Vec<f32> {
    let counts: Vec<f32> = q
        .iter()
        .filter(|f| f.shift_ok)
        .map(|f| f.stars as f32)
        .collect();
    let median_stars = median(&counts);
    let min_stars = if median_stars.is_finite() {
        (MIN_STAR_FRACTION * median_stars).max(1.0)
    } else {
        1.0
    };
    let usable: Vec<bool> = q
        .iter()
        .map(|f| {
            f.shift_ok
                && f.background.is_finite()
                && f.noise.is_finite()
                && f.fwhm.is_finite()
                && f.stars as f32 >= min_stars
        })
        .collect();
    let zb = robust_z(&q.iter().map(|f| f.background).collect::<Vec<_>>(), &usable);
    let zn = robust_z(&q.iter().map(|f| f.noise).collect::<Vec<_>>(), &usable);
    let zf = robust_z(&q.iter().map(|f| f.fwhm).collect::<Vec<_>>(), &usable);
    (0..q.len())
        .map(|i| {
            let score = if usable[i] {
                -Q_WEIGHT_BACKGROUND * zb[i] - Q_WEIGHT_NOISE * zn[i] - Q_WEIGHT_FWHM * zf[i]
            } else {
                Q_MIN
            };
            score.clamp(Q_MIN, Q_MAX).exp()
        })
        .collect()
}

/// Photometric scale per frame, `scale_f = median(B) / B_f` (median over frames with a finite positive
/// background), so that `I * scale_f` is the normalised frame `I / B_f` in ADU of a typical frame. Frames
/// whose background is not finite and positive get 1.0 (no normalisation), as do all frames when no
/// background is usable.
pub fn photometric_scales(q: &[FrameQuality]) -> Vec<f32> {
    let good: Vec<f32> = q
        .iter()
        .map(|f| f.background)
        .filter(|b| b.is_finite() && *b > 0.0)
        .collect();
    let med = median(&good);
    q.iter()
        .map(|f| {
            let b = f.background;
            if med.is_finite() && med > 0.0 && b.is_finite() && b > 0.0 {
                med / b
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn field(n: usize, seed: u64) -> Vec<StarPoint> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| StarPoint {
                y: rng.gen_range(0.0..1000.0),
                x: rng.gen_range(0.0..1000.0),
                flux: rng.gen_range(10.0..1000.0f32).powi(2),
            })
            .collect()
    }

    /// The stars of `reference` seen in a 1000 x 1000 frame shifted by `s`, with position jitter.
    fn observe(reference: &[StarPoint], s: Shift, jitter: f32, seed: u64) -> Vec<StarPoint> {
        let mut rng = StdRng::seed_from_u64(seed);
        reference
            .iter()
            .map(|p| StarPoint {
                y: p.y + s.dy + rng.gen_range(-jitter..=jitter),
                x: p.x + s.dx + rng.gen_range(-jitter..=jitter),
                flux: p.flux * rng.gen_range(0.8..1.2),
            })
            .filter(|p| (0.0..1000.0).contains(&p.y) && (0.0..1000.0).contains(&p.x))
            .collect()
    }

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

    #[test]
    fn matches_large_drifts_subpixel() {
        let reference = field(300, 1);
        let opts = GlobalOptions::default();
        for (k, s) in [
            Shift::new(0.3, -0.7),
            Shift::new(-41.25, 17.5),
            Shift::new(230.4, -245.9),
        ]
        .into_iter()
        .enumerate()
        {
            let mut frame = observe(&reference, s, 0.05, 10 + k as u64);
            frame.extend(field(40, 100 + k as u64)); // stars only in the frame (new field area, noise)
            let m = match_stars(&reference, &frame, C, &opts).expect("match");
            assert!((m.transform.shift - s).norm() < 0.02, "{s:?} -> {m:?}");
            assert!(m.matches > 100);
        }
    }

    const C: (f32, f32) = (499.5, 499.5);

    #[test]
    fn rotation_is_fitted_and_the_shift_is_taken_at_the_centre() {
        let reference = field(400, 4);
        let theta = 0.4f32.to_radians();
        let t = Shift::new(12.25, -7.5);
        let frame: Vec<StarPoint> = reference
            .iter()
            .map(|p| {
                let (y, x) = (p.y - C.0, p.x - C.1);
                StarPoint {
                    y: C.0 + theta.cos() * y + theta.sin() * x + t.dy,
                    x: C.1 - theta.sin() * y + theta.cos() * x + t.dx,
                    flux: p.flux,
                }
            })
            .collect();
        let m = match_stars(&reference, &frame, C, &GlobalOptions::default()).unwrap();
        assert!((m.transform.shift - t).norm() < 0.01, "{m:?}");
        assert!((m.transform.rotation_deg() - 0.4).abs() < 0.005, "{m:?}");
        assert!(m.matches > 350 && m.rms_px < 0.01, "{m:?}");
        let corner = m.transform.displacement_at(0.0, 0.0);
        let expect_y = theta.cos() * -C.0 + theta.sin() * -C.1 - -C.0 + t.dy;
        assert!(
            (corner.dy - expect_y).abs() < 0.02,
            "{corner:?} vs {expect_y}"
        );
    }

    #[test]
    fn unrelated_or_sparse_lists_do_not_match() {
        let opts = GlobalOptions::default();
        assert!(match_stars(&field(200, 1), &field(200, 2), C, &opts).is_none());
        let reference = field(200, 1);
        let few = observe(&reference[..3], Shift::new(5.0, 5.0), 0.0, 3);
        assert!(match_stars(&reference, &few, C, &opts).is_none());
        assert!(match_stars(&reference, &[], C, &opts).is_none());
    }

    fn fq(background: f32, noise: f32, fwhm: f32, stars: usize, ok: bool) -> FrameQuality {
        FrameQuality {
            background,
            noise,
            fwhm,
            stars,
            shift: Shift::ZERO,
            shift_ok: ok,
        }
    }

    #[test]
    fn weights_rank_frames_and_tolerate_bad_ones() {
        let mut q: Vec<FrameQuality> = (0..10)
            .map(|i| {
                fq(
                    1000.0 + i as f32,
                    10.0 + 0.1 * i as f32,
                    3.0 + 0.01 * i as f32,
                    200,
                    true,
                )
            })
            .collect();
        q.push(fq(1500.0, 14.0, 3.0, 150, true)); // bright sky (cloud, moon)
        q.push(fq(1004.0, 10.4, 5.0, 120, true)); // blurred
        q.push(fq(1004.0, 10.4, 3.0, 20, true)); // almost no stars
        q.push(fq(f32::NAN, f32::NAN, f32::NAN, 0, false)); // empty frame
        let w = global_weights(&q);
        let typical = w[4];
        assert!(w.iter().all(|v| v.is_finite() && *v > 0.0));
        assert!(w[10] < 0.5 * typical && w[11] < 0.5 * typical, "{w:?}");
        assert_eq!(w[12], Q_MIN.exp());
        assert_eq!(w[13], Q_MIN.exp());
        assert!(w.iter().all(|&v| v <= Q_MAX.exp()));
        // Identical frames: weight 1.
        let same = vec![fq(100.0, 5.0, 2.5, 50, true); 4];
        assert_eq!(global_weights(&same), vec![1.0; 4]);
        assert!(global_weights(&[]).is_empty());
    }

    #[test]
    fn scales_normalise_background() {
        let q = vec![
            fq(100.0, 1.0, 2.0, 9, true),
            fq(200.0, 1.0, 2.0, 9, true),
            fq(400.0, 1.0, 2.0, 9, true),
            fq(f32::NAN, 1.0, 2.0, 9, true),
            fq(-5.0, 1.0, 2.0, 9, true),
        ];
        assert_eq!(photometric_scales(&q), vec![2.0, 1.0, 0.5, 1.0, 1.0]);
    }
}
