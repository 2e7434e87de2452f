//! The per-tile reconstruction operator (methodology v4, Phase 6, DESIGN.md §2), pure and synchronous.
//!
//! What it does, for one tile stack (every frame's cut-out with a margin, in time order):
//! 1. photometric normalisation `I' = I * scale`;
//! 2. initial reference: per-pixel median of the cut-outs' cores resampled at their prior shifts
//!    (at most [`MEDIAN_FRAMES`] frames, evenly spaced in time), with a per-pixel MAD scale for rejection;
//! 3. `iterations` rounds of
//!    - registration of every frame against the current reference ([`crate::register`]; the start is the
//!      previous round's shift, the prior in round 1), giving a sub-pixel shift, `cc` and an uncertainty;
//!    - rejection of frames with `cc < ecc_cc_min`, failed registrations and shifts far from the tile's
//!      temporally smoothed shift track (see [`smooth`] for the track and the rule);
//!    - temporal smoothing of the shift track ([`Smoothing`]); by default the shift used is the
//!      inverse-variance combination of the measured shift and the track (see [`OperatorParams`]);
//!    - weights `W = G * L * R`, `R = exp(beta * (cc - 1))`, `L` the local weight of star-less tiles
//!      (1 otherwise; see [`crate::quality::tile_selection`], which also does per-tile best-N %);
//!    - Lanczos-3 resampling of every used frame at its shift ([`crate::resample`]);
//!    - robust weighted mean with per-pixel sigma clipping (see [`combine`]): hot pixels, trails and cosmic
//!      rays are rejected;
//!    - early stop when the reference changes by less than `epsilon_rel` (relative, background removed);
//!    - the tile is invalid when fewer than `min_valid_frames` frames (or no weight) remain in round 1; when
//!      that happens in a later round (the sharper reference pushed frames below `ecc_cc_min`), the last
//!      valid round's result stands instead, as an early stop, and `fallback` says so.
//! 4. a report: per-frame shift, cc, weight and status (used, or rejected and why), warp variance, mean cc,
//!    mean shift, iterations, the fallback used, validity and the reason when invalid.
//!
//! [`Mode::GlobalOnly`] is the baseline: shifts are the priors (no local registration), everything else
//! (weights from `cc` at the prior, rejection, resampling, robust combination, iterations) is identical.
//! Tiles with too little structure (empty sky) fall back to the same behaviour and say so in `fallback`.
//!
//! What it does not: I/O, threads, blending of tiles (see `mosaic`), global weights (see `global`),
//! rotation within a tile. It never panics on bad input: inconsistent stacks, all-NaN frames and
//! degenerate parameters give an invalid tile or rejected frames with a reason in words.

// Numerical kernels: comparisons are written so that NaN fails them (`!(x > 0.0)` is true for NaN),
// and index loops over several arrays at once read more clearly than zipped iterators.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

pub mod combine;
mod despike;
pub mod drizzle;
pub mod neutral;
mod planes;
pub mod smooth;

use ndarray::{Array2, Array3, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::geom::{Shift, TileBox};
use crate::register::{register, Reference};
use crate::resample::Resampler;

pub use despike::{despike, despike_against, despike_plane, despike_stack};
pub use planes::{reconstruct_planes, PlaneStack};
pub use smooth::Smoothing;

/// At most this many frames (evenly spaced in time) form the per-pixel median of the initial reference.
pub const MEDIAN_FRAMES: usize = 21;
/// A tile whose weight sum is at or below this is invalid.
pub const MIN_WEIGHT_SUM: f32 = 1e-12;
/// When at least this fraction of the registrations of a round report `low_structure`, the tile falls
/// back to the prior (global) shifts.
pub const LOW_STRUCTURE_FRACTION: f32 = 0.5;

/// One frame of a tile stack.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameInput {
    /// Index of the frame in the sequence (time order).
    pub index: usize,
    /// Global frame weight `G_f` (times an optional local weight `L_f,t`); must be finite and > 0.
    pub weight: f32,
    /// Photometric scale: the operator uses `I' = I * scale`.
    pub scale: f32,
    /// Expected shift of this frame's cut-out relative to the centred placement (the residual of the
    /// global motion that the integer cut-out position did not remove).
    pub prior_shift: Shift,
}

/// One tile's input: every frame's cut-out with a margin.
#[derive(Debug, Clone, PartialEq)]
pub struct TileStack {
    /// The tile (output box).
    pub tile: TileBox,
    /// Margin in pixels on every side of the cut-outs.
    pub margin: usize,
    /// Cut-outs, shape `(frames, h + 2 margin, w + 2 margin)`, `NaN` where a frame has no data.
    pub cutouts: Array3<f32>,
    /// One entry per cut-out, same order (time order).
    pub frames: Vec<FrameInput>,
}

/// Registration mode of the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    /// Tile-local registration (the method).
    #[default]
    Local,
    /// Baseline: the prior shifts only (global registration), same weights, rejection and resampling.
    GlobalOnly,
}

/// Settings of the operator. `Default` gives the tested defaults (see each field).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatorParams {
    /// Rounds of register + combine (`v4.iterations`). Default 3; 0 is treated as 1.
    pub iterations: usize,
    /// `R = exp(beta * (cc - 1))` (`v4.beta`). Default 5.
    pub beta: f32,
    /// Frames with a correlation below this are rejected (`registration.local_tiles.ecc_cc_min`). Default 0.2.
    pub ecc_cc_min: f32,
    /// The tile is invalid when fewer frames survive (`registration.local_tiles.min_valid_frames`). Default 10.
    pub min_valid_frames: usize,
    /// A frame whose shift deviates from the tile's smoothed shift track by more than
    /// `max(max_warp_delta_px, outlier_kappa * scatter)` is rejected, `scatter` being the robust per-axis
    /// scatter of all frames around the track (so a drifting or wobbling field is not rejected wholesale,
    /// unlike the published fixed distance to the median shift). Default 2.0 px.
    pub max_warp_delta_px: f32,
    /// Multiple of the robust scatter around the track beyond which a shift is an outlier. Default 5.
    pub outlier_kappa: f32,
    /// Frames in the temporal smoothing window (`temporal_smoothing_window`, odd). Default 11.
    pub temporal_smoothing_window: usize,
    /// How the shift track is smoothed over time. Default [`Smoothing::SavitzkyGolay`].
    pub smoothing: Smoothing,
    /// When true (default), the shift used for resampling is the inverse-variance combination of the
    /// measured shift (variance from the registration) and the smoothed track (variance = the true
    /// frame-to-frame scatter around the track, estimated from the data): precise registrations keep their
    /// own shift, noisy ones are pulled to the track. When false, the smoothed track replaces the measured
    /// shifts (the published behaviour, which blurs real per-frame motion; see the module tests).
    pub noise_weighted_smoothing: bool,
    /// Relative change of the reference below which iterations stop (`v4.convergence.epsilon_rel`). Default 1e-3.
    pub epsilon_rel: f32,
    /// Whether the early stop is enabled (`v4.convergence.enabled`). Default true.
    pub convergence_enabled: bool,
    /// Per-pixel sigma-clipping threshold of the combination (`rejection_kappa`). Default 3.
    pub rejection_kappa: f32,
    /// `sigma` of the tile blend weight `psi(v) = exp(-v / (2 sigma^2))` (`variance_window_sigma`); not
    /// used by the operator itself, carried here for the blend. Default 2.
    pub variance_window_sigma: f32,
    /// Local registration or the global-only baseline. Default [`Mode::Local`].
    pub mode: Mode,
    /// Re-place the weighted result on the geometry of the same frames stacked without weights
    /// (`registration.unweighted_geometry`, see [`neutral`]), so that quality weights do not move stars.
    /// Default true (absent from a serialised form: false, as live sessions run).
    #[serde(default)]
    pub unweighted_geometry: bool,
    /// Star-less runs: each frame's weight in a tile comes from the sharpness of its cut-out (local
    /// weight `L_f,t`, [`crate::quality::tile_selection`]). Default false (`L = 1`).
    #[serde(default)]
    pub tile_sharpness: bool,
    /// Per-tile best-N %: only this share of a tile's frames (the sharpest with `tile_sharpness`, else
    /// the highest global weights) take part in it (`registration.local_tiles.keep_best_percent`).
    /// Default 100 (all).
    #[serde(default = "all_percent")]
    pub keep_best_percent: f32,
}

fn all_percent() -> f32 {
    100.0
}

impl Default for OperatorParams {
    fn default() -> Self {
        OperatorParams {
            iterations: 3,
            beta: 5.0,
            ecc_cc_min: 0.2,
            min_valid_frames: 10,
            max_warp_delta_px: 2.0,
            outlier_kappa: 5.0,
            temporal_smoothing_window: 11,
            smoothing: Smoothing::SavitzkyGolay,
            noise_weighted_smoothing: true,
            epsilon_rel: 1e-3,
            convergence_enabled: true,
            rejection_kappa: 3.0,
            variance_window_sigma: 2.0,
            mode: Mode::Local,
            unweighted_geometry: true,
            tile_sharpness: false,
            keep_best_percent: 100.0,
        }
    }
}

impl OperatorParams {
    /// Every problem with these settings, one message per field (empty when usable).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let finite_nonneg = |v: f32| v.is_finite() && v >= 0.0;
        if !finite_nonneg(self.beta) {
            p.push(format!(
                "beta must be a finite number >= 0, got {}",
                self.beta
            ));
        }
        if !(self.ecc_cc_min.is_finite() && self.ecc_cc_min <= 1.0) {
            p.push(format!(
                "ecc_cc_min must be a number <= 1, got {}",
                self.ecc_cc_min
            ));
        }
        if !finite_nonneg(self.max_warp_delta_px) {
            p.push(format!(
                "max_warp_delta_px must be >= 0, got {}",
                self.max_warp_delta_px
            ));
        }
        if !(self.outlier_kappa.is_finite() && self.outlier_kappa > 0.0) {
            p.push(format!(
                "outlier_kappa must be > 0, got {}",
                self.outlier_kappa
            ));
        }
        if !(self.rejection_kappa.is_finite() && self.rejection_kappa > 0.0) {
            p.push(format!(
                "rejection_kappa must be > 0, got {}",
                self.rejection_kappa
            ));
        }
        if !(self.keep_best_percent > 0.0 && self.keep_best_percent <= 100.0) {
            p.push(format!(
                "keep_best_percent must be in (0, 100], got {}",
                self.keep_best_percent
            ));
        }
        if !finite_nonneg(self.epsilon_rel) {
            p.push(format!(
                "epsilon_rel must be >= 0, got {}",
                self.epsilon_rel
            ));
        }
        p
    }
}

/// Why a frame was or was not used in a tile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FrameStatus {
    /// The frame contributed to the tile.
    Used,
    /// The frame was left out; the reason in words.
    Rejected(String),
}

impl FrameStatus {
    /// True for [`FrameStatus::Used`].
    pub fn is_used(&self) -> bool {
        matches!(self, FrameStatus::Used)
    }

    /// The rejection reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            FrameStatus::Used => None,
            FrameStatus::Rejected(r) => Some(r),
        }
    }
}

/// What happened to one frame in one tile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameReport {
    /// Index of the frame in the sequence.
    pub index: usize,
    /// Shift used for resampling, relative to the centred cut-out placement (prior included).
    pub shift: Shift,
    /// Shift measured by the last registration (equal to the prior in global-only mode or fallback).
    pub measured: Shift,
    /// Correlation in `[0, 1]` at the last registration (0 when unknown).
    pub cc: f32,
    /// Final weight `W = G * L * R` (0 when rejected).
    pub weight: f32,
    /// Used or rejected (with the reason).
    pub status: FrameStatus,
}

/// The reconstructed tile and its diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct TileResult {
    /// The tile box (copied from the stack).
    pub tile: TileBox,
    /// Reconstructed tile, shape `(h, w)`; `NaN` where no frame had data, all `NaN` when invalid.
    pub image: Array2<f32>,
    /// False when the tile could not be reconstructed (see `invalid_reason`).
    pub valid: bool,
    /// Why the tile is invalid, in words.
    pub invalid_reason: Option<String>,
    /// One report per input frame, in input order.
    pub frames: Vec<FrameReport>,
    /// Frames that contributed.
    pub frames_used: usize,
    /// `Var(dx) + Var(dy)` of the local part (`shift - prior`) of the used frames' shifts, px².
    pub warp_variance: f32,
    /// Mean `cc` of the used frames.
    pub mean_cc: f32,
    /// Mean local shift (`shift - prior`) of the used frames.
    pub mean_shift: Shift,
    /// Rounds run (registration + combination).
    pub iterations: usize,
    /// When the operator did not run as configured, what it did instead and why: "little structure:
    /// used global motion" (no local shifts), or "round 3 failed (…): kept round 2" (a later round lost
    /// too many frames, so the last valid round's result stands, as an early stop).
    pub fallback: Option<String>,
    /// Sum of the used frames' weights.
    pub weight_sum: f32,
    /// The field that re-placed `image` on the unweighted stack's geometry ([`neutral`]); the colour
    /// planes of the tile take the same field ([`neutral::Correction::apply`]). `None` when not applied.
    pub correction: Option<neutral::Correction>,
}

impl TileResult {
    fn invalid(
        stack: &TileStack,
        reason: String,
        frames: Vec<FrameReport>,
        iterations: usize,
    ) -> Self {
        TileResult {
            tile: stack.tile,
            image: Array2::from_elem((stack.tile.h, stack.tile.w), f32::NAN),
            valid: false,
            invalid_reason: Some(reason),
            frames,
            frames_used: 0,
            warp_variance: f32::NAN,
            mean_cc: f32::NAN,
            mean_shift: Shift::ZERO,
            iterations,
            fallback: None,
            weight_sum: 0.0,
            correction: None,
        }
    }
}

/// Per-frame working state.
#[derive(Clone)]
struct FrameState {
    /// Position in the stack.
    slot: usize,
    /// None while usable, else why not.
    rejected: Option<String>,
    prior: Shift,
    measured: Shift,
    sigma_px: f32,
    used_shift: Shift,
    /// Shift at which `aligned` currently holds this frame (NaN = not yet resampled).
    aligned_at: Shift,
    cc: f32,
    weight: f32,
    /// Local weight factor `L_f,t` ([`crate::quality::tile_selection`]).
    local: f32,
}

/// Reconstruct one tile (see the module docs). Never panics; problems give an invalid result.
pub fn reconstruct_tile(stack: &TileStack, params: &OperatorParams) -> TileResult {
    let (n, ch, cw) = stack.cutouts.dim();
    let (h, w, m) = (stack.tile.h, stack.tile.w, stack.margin);
    let blank_reports = || -> Vec<FrameReport> {
        stack
            .frames
            .iter()
            .map(|f| FrameReport {
                index: f.index,
                shift: f.prior_shift,
                measured: f.prior_shift,
                cc: 0.0,
                weight: 0.0,
                status: FrameStatus::Rejected("tile not processed".into()),
            })
            .collect()
    };
    if n != stack.frames.len() {
        let reason = format!(
            "tile {}: the stack has {n} cut-outs but {} frame descriptions",
            stack.tile.index,
            stack.frames.len()
        );
        return TileResult::invalid(stack, reason, blank_reports(), 0);
    }
    if h == 0 || w == 0 || ch != h + 2 * m || cw != w + 2 * m {
        let reason = format!(
            "tile {}: cut-outs are {ch}x{cw} but the tile {h}x{w} with margin {m} needs {}x{}",
            stack.tile.index,
            h + 2 * m,
            w + 2 * m
        );
        return TileResult::invalid(stack, reason, blank_reports(), 0);
    }
    let problems = params.problems();
    if !problems.is_empty() {
        let reason = format!(
            "tile {}: unusable operator settings: {}",
            stack.tile.index,
            problems.join("; ")
        );
        return TileResult::invalid(stack, reason, blank_reports(), 0);
    }
    Operator::new(stack, params).run()
}

struct Operator<'a> {
    stack: &'a TileStack,
    params: &'a OperatorParams,
    h: usize,
    w: usize,
    frames: Vec<FrameState>,
    /// Slots in time order (sorted by frame index, stable).
    order: Vec<usize>,
    /// Resampled, scaled frames, frame-major `(n, h * w)`.
    aligned: Vec<f32>,
    /// Cut-outs with single-pixel spikes replaced (only for frames that had any).
    cleaned: Vec<Option<Array2<f32>>>,
    resampler: Resampler,
}

impl<'a> Operator<'a> {
    fn new(stack: &'a TileStack, params: &'a OperatorParams) -> Self {
        let (h, w) = (stack.tile.h, stack.tile.w);
        let n = stack.frames.len();
        let mut frames = Vec::with_capacity(n);
        for (slot, f) in stack.frames.iter().enumerate() {
            let cut = stack.cutouts.index_axis(ndarray::Axis(0), slot);
            let mut rejected = None;
            let prior_ok = f.prior_shift.dy.is_finite() && f.prior_shift.dx.is_finite();
            if !(f.weight.is_finite() && f.weight > 0.0) {
                rejected = Some(format!(
                    "global weight {} is not a positive number",
                    f.weight
                ));
            } else if !(f.scale.is_finite() && f.scale > 0.0) {
                rejected = Some(format!(
                    "photometric scale {} is not a positive number",
                    f.scale
                ));
            } else if !prior_ok {
                rejected = Some("prior shift is not finite".to_string());
            } else if !cut.iter().any(|v| v.is_finite()) {
                rejected = Some("no valid pixels in this tile".to_string());
            }
            let prior = if prior_ok { f.prior_shift } else { Shift::ZERO };
            frames.push(FrameState {
                slot,
                rejected,
                prior,
                measured: prior,
                sigma_px: f32::INFINITY,
                used_shift: prior,
                aligned_at: Shift::new(f32::NAN, f32::NAN),
                cc: 0.0,
                weight: 0.0,
                local: 1.0,
            });
        }
        let usable: Vec<bool> = frames.iter().map(|f| f.rejected.is_none()).collect();
        let choices = crate::quality::tile_selection(
            stack,
            &usable,
            params.tile_sharpness,
            params.keep_best_percent,
        );
        for (fs, choice) in frames.iter_mut().zip(choices) {
            fs.local = choice.local;
            fs.rejected = fs.rejected.take().or(choice.rejected);
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&s| stack.frames[s].index);
        let usable: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&slot| frames[slot].rejected.is_none())
            .collect();
        let cleaned = despike_stack(stack.cutouts.view(), &usable);
        Operator {
            stack,
            params,
            h,
            w,
            frames,
            order,
            aligned: vec![f32::NAN; n * h * w],
            cleaned,
            resampler: Resampler::new().with_deringing(true),
        }
    }

    fn cutout(&self, slot: usize) -> ArrayView2<'_, f32> {
        match &self.cleaned[slot] {
            Some(c) => c.view(),
            None => self.stack.cutouts.index_axis(ndarray::Axis(0), slot),
        }
    }

    /// Resample frame `slot` at its `used_shift` into `aligned` (skipped when already there).
    fn align(&mut self, slot: usize) {
        let fs = &self.frames[slot];
        let s = fs.used_shift;
        if fs.aligned_at == s {
            return;
        }
        let np = self.h * self.w;
        let m = self.stack.margin as f32;
        let scale = self.stack.frames[slot].scale;
        let cut = match &self.cleaned[slot] {
            Some(c) => c.view(),
            None => self.stack.cutouts.index_axis(ndarray::Axis(0), slot),
        };
        let dst = &mut self.aligned[slot * np..(slot + 1) * np];
        let view = ndarray::ArrayViewMut2::from_shape((self.h, self.w), dst);
        if let Ok(view) = view {
            self.resampler.sample_shifted(cut, m + s.dy, m + s.dx, view);
        }
        for v in dst.iter_mut() {
            *v *= scale;
        }
        self.frames[slot].aligned_at = s;
    }

    /// Correlation of frame `slot` at its prior shift with the prepared reference (resampled only when the
    /// aligned buffer does not already hold it there).
    fn cc_at_prior(&mut self, prepared: &Reference, slot: usize) -> f32 {
        self.frames[slot].used_shift = self.frames[slot].prior;
        self.align(slot);
        let np = self.h * self.w;
        let view =
            ArrayView2::from_shape((self.h, self.w), &self.aligned[slot * np..(slot + 1) * np]);
        view.map_or(0.0, |v| {
            crate::register::correlation_of_aligned(prepared, v)
        })
    }

    fn live_slots(&self) -> Vec<usize> {
        self.order
            .iter()
            .copied()
            .filter(|&s| self.frames[s].rejected.is_none())
            .collect()
    }

    fn run(mut self) -> TileResult {
        let (h, w) = (self.h, self.w);
        let np = h * w;
        let params = *self.params;
        let live = self.live_slots();
        if live.is_empty() {
            return self.finish_invalid("no frame has usable data in this tile".into(), 0);
        }
        // Initial reference: median of the cores at the prior shifts.
        for &s in &live {
            self.align(s);
        }
        let subset = combine::median_subset(&live);
        let (mut center, mut spread) = combine::median_and_scale(&self.aligned, np, &subset);
        let mut reference = center.clone();
        let mut fallback: Option<String> = None;
        let mut local = params.mode == Mode::Local;
        let rounds = params.iterations.max(1);
        let mut iterations = 0;
        let mut last: Option<combine::Combined> = None;
        // The frame states that produced `last` (restored when a later round fails).
        let mut last_frames: Vec<FrameState> = Vec::new();
        for round in 0..rounds {
            iterations = round + 1;
            let ref_view = ArrayView2::from_shape((h, w), &reference[..]);
            let Ok(ref_view) = ref_view else {
                return self.finish_invalid("internal shape error".into(), iterations);
            };
            let prepared = Reference::new(ref_view);
            if local && !prepared.has_structure() {
                local = false;
                fallback = Some("little structure: used global motion".into());
            }
            // Registration (or correlation at the prior).
            let live = self.live_slots();
            let mut low = 0usize;
            for &s in &live {
                let cut = self.cutout(s);
                let fs = &self.frames[s];
                if local {
                    let start = if round == 0 { fs.prior } else { fs.measured };
                    let r = register(&prepared, cut, Some(start));
                    let fs = &mut self.frames[s];
                    fs.cc = r.cc;
                    if r.low_structure {
                        low += 1;
                    }
                    if r.converged && !r.low_structure {
                        fs.measured = r.shift;
                        fs.sigma_px = r.sigma_px;
                    } else {
                        fs.measured = fs.prior;
                        fs.sigma_px = f32::INFINITY;
                    }
                } else {
                    let cc = self.cc_at_prior(&prepared, s);
                    let fs = &mut self.frames[s];
                    fs.cc = cc;
                    fs.measured = fs.prior;
                    fs.sigma_px = 0.0;
                }
            }
            if local && (low as f32) >= LOW_STRUCTURE_FRACTION * live.len() as f32 {
                // Most frames could not be registered: the tile is (nearly) empty sky.
                local = false;
                fallback = Some(format!(
                    "little structure ({low} of {} registrations unreliable): used global motion",
                    live.len()
                ));
                for &s in &live {
                    let cc = self.cc_at_prior(&prepared, s);
                    let fs = &mut self.frames[s];
                    fs.cc = cc;
                    fs.measured = fs.prior;
                    fs.sigma_px = 0.0;
                }
            }
            self.judge_and_smooth(&live, local);
            // Weights.
            let used = self.live_slots();
            for &s in &used {
                let g = self.stack.frames[s].weight;
                let fs = &mut self.frames[s];
                fs.weight = g * fs.local * (params.beta * (fs.cc - 1.0)).exp();
            }
            let weight_sum: f32 = used.iter().map(|&s| self.frames[s].weight).sum();
            let failure = if used.len() < params.min_valid_frames.max(1) {
                Some(format!(
                    "only {} of {} frames usable (min_valid_frames {}){}",
                    used.len(),
                    self.frames.len(),
                    params.min_valid_frames,
                    self.rejection_summary()
                ))
            } else if !(weight_sum > MIN_WEIGHT_SUM) {
                Some(format!(
                    "sum of frame weights is {weight_sum:e} (~0): no frame carries weight"
                ))
            } else {
                None
            };
            if let Some(reason) = failure {
                // A later round that loses too many frames (their correlation with the sharper
                // reference fell below ecc_cc_min) does not undo the rounds before it: keep the
                // last valid round's result, as an early stop, and say so.
                return match last.take() {
                    Some(previous) => {
                        // Restore the kept round's frame states; the aligned buffers keep what they
                        // hold now (a fallback to the prior may have re-aligned some), and the used
                        // frames are re-aligned where that differs, so that the geometry correction
                        // sees exactly the kept round's frames.
                        let held: Vec<Shift> = self.frames.iter().map(|f| f.aligned_at).collect();
                        self.frames = std::mem::take(&mut last_frames);
                        for (f, at) in self.frames.iter_mut().zip(held) {
                            f.aligned_at = at;
                        }
                        for s in self.live_slots() {
                            self.align(s);
                        }
                        let note = format!(
                            "round {iterations} failed ({reason}): kept round {}",
                            iterations - 1
                        );
                        let fallback = Some(match fallback {
                            Some(f) => format!("{f}; {note}"),
                            None => note,
                        });
                        self.finish(previous, iterations - 1, fallback)
                    }
                    None => self.finish_invalid(reason, iterations),
                };
            }
            for &s in &used {
                self.align(s);
            }
            let weights: Vec<(usize, f32)> =
                used.iter().map(|&s| (s, self.frames[s].weight)).collect();
            let combined = combine::clipped_mean(
                &self.aligned,
                np,
                &weights,
                &center,
                &spread,
                params.rejection_kappa,
            );
            let change = combine::relative_change(&combined.image, &reference);
            reference.clone_from(&combined.image);
            center.clone_from(&combined.image);
            spread.clone_from(&combined.scale);
            last = Some(combined);
            last_frames.clone_from(&self.frames);
            if params.convergence_enabled && round > 0 && change < params.epsilon_rel {
                break;
            }
        }
        let Some(combined) = last else {
            return self.finish_invalid("no iteration ran".into(), iterations);
        };
        self.finish(combined, iterations, fallback)
    }

    /// Reject outliers against the temporally smoothed track and set the shifts used for resampling.
    fn judge_and_smooth(&mut self, live: &[usize], local: bool) {
        let params = self.params;
        // cc and registration failures first.
        for &s in live {
            let fs = &mut self.frames[s];
            if fs.cc < params.ecc_cc_min {
                fs.rejected = Some(format!(
                    "cc {:.3} below ecc_cc_min {:.3}",
                    fs.cc, params.ecc_cc_min
                ));
            }
        }
        if !local {
            for &s in live {
                let fs = &mut self.frames[s];
                fs.used_shift = fs.prior;
            }
            return;
        }
        let cand: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&s| self.frames[s].rejected.is_none())
            .collect();
        if cand.is_empty() {
            return;
        }
        // Local parts (shift - prior) in time order; unmeasured frames (sigma inf) do not define the track.
        let times: Vec<f32> = cand
            .iter()
            .map(|&s| self.stack.frames[s].index as f32)
            .collect();
        let local_y: Vec<f32> = cand
            .iter()
            .map(|&s| self.frames[s].measured.dy - self.frames[s].prior.dy)
            .collect();
        let local_x: Vec<f32> = cand
            .iter()
            .map(|&s| self.frames[s].measured.dx - self.frames[s].prior.dx)
            .collect();
        let sigmas: Vec<f32> = cand.iter().map(|&s| self.frames[s].sigma_px).collect();
        let plan = smooth::plan(
            &times,
            &local_y,
            &local_x,
            &sigmas,
            &smooth::TrackParams {
                window: params.temporal_smoothing_window,
                smoothing: params.smoothing,
                noise_weighted: params.noise_weighted_smoothing,
                min_delta_px: params.max_warp_delta_px,
                outlier_kappa: params.outlier_kappa,
            },
        );
        let (mut sy, mut sx, mut k_used) = (0.0f64, 0.0f64, 0usize);
        for (k, &s) in cand.iter().enumerate() {
            let fs = &mut self.frames[s];
            match &plan[k] {
                smooth::Decision::Use(d) => {
                    fs.used_shift = fs.prior + *d;
                    sy += f64::from(d.dy);
                    sx += f64::from(d.dx);
                    k_used += 1;
                }
                smooth::Decision::Outlier { deviation, limit } => {
                    fs.rejected = Some(format!(
                        "shift deviates {deviation:.2} px from the tile's smoothed shift track (limit {limit:.2} px)"
                    ));
                }
            }
        }
        // Anchor the tile's geometry: the local (atmospheric) motion averages out over time, so the used
        // local shifts are made zero-mean. Without this the reference can wander from round to round
        // (each round re-registers against the previous result) and neighbouring tiles would disagree.
        if k_used > 0 {
            let mean = Shift::new((sy / k_used as f64) as f32, (sx / k_used as f64) as f32);
            for &s in live {
                let fs = &mut self.frames[s];
                fs.used_shift = fs.used_shift - mean;
                if fs.sigma_px.is_finite() {
                    fs.measured = fs.measured - mean;
                }
            }
        }
    }

    fn rejection_summary(&self) -> String {
        let mut reasons: std::collections::BTreeMap<String, usize> =
            std::collections::BTreeMap::new();
        for f in &self.frames {
            if let Some(r) = &f.rejected {
                // Group by the reason's leading words (numbers differ per frame).
                let key: String = r
                    .split(|c: char| c.is_ascii_digit())
                    .next()
                    .unwrap_or(r)
                    .trim()
                    .to_string();
                *reasons.entry(key).or_default() += 1;
            }
        }
        if reasons.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = reasons
            .into_iter()
            .map(|(r, n)| format!("{n} x {r}"))
            .collect();
        format!("; rejected: {}", parts.join(", "))
    }

    fn reports(&self) -> Vec<FrameReport> {
        self.frames
            .iter()
            .map(|f| FrameReport {
                index: self.stack.frames[f.slot].index,
                shift: f.used_shift,
                measured: f.measured,
                cc: f.cc,
                weight: if f.rejected.is_none() { f.weight } else { 0.0 },
                status: match &f.rejected {
                    None => FrameStatus::Used,
                    Some(r) => FrameStatus::Rejected(r.clone()),
                },
            })
            .collect()
    }

    fn finish_invalid(&mut self, reason: String, iterations: usize) -> TileResult {
        for f in self.frames.iter_mut() {
            if f.rejected.is_none() {
                f.rejected = Some(format!("tile invalid: {reason}"));
            }
        }
        let reason = format!("tile {}: {reason}", self.stack.tile.index);
        TileResult::invalid(self.stack, reason, self.reports(), iterations)
    }

    /// The field that re-places `weighted` on the unweighted stack's geometry ([`neutral`]): `None` when
    /// switched off, when the used frames' weights are all equal (the two stacks are the same), or when
    /// no field can be estimated.
    fn unweighted_correction(
        &self,
        image: &Array2<f32>,
        scale: &[f32],
    ) -> Option<neutral::Correction> {
        let used: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&s| self.frames[s].rejected.is_none())
            .collect();
        let (lo, hi) = used
            .iter()
            .map(|&s| self.frames[s].weight)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), w| {
                (lo.min(w), hi.max(w))
            });
        if !self.params.unweighted_geometry || used.len() < 2 || !(hi - lo > 1e-6 * hi) {
            return None;
        }
        let np = self.h * self.w;
        let uniform: Vec<(usize, f32)> = used.iter().map(|&s| (s, 1.0)).collect();
        // Clipped around the weighted result with its scale (the same bounds the next round would use).
        let unweighted = combine::clipped_mean(
            &self.aligned,
            np,
            &uniform,
            image.as_slice()?,
            scale,
            self.params.rejection_kappa,
        );
        let unweighted = ArrayView2::from_shape((self.h, self.w), &unweighted.image).ok()?;
        neutral::correction(image.view(), unweighted)
    }

    fn finish(
        &self,
        combined: combine::Combined,
        iterations: usize,
        fallback: Option<String>,
    ) -> TileResult {
        let used: Vec<&FrameState> = self
            .frames
            .iter()
            .filter(|f| f.rejected.is_none())
            .collect();
        let k = used.len().max(1) as f64;
        let mean =
            |g: &dyn Fn(&FrameState) -> f32| used.iter().map(|f| f64::from(g(f))).sum::<f64>() / k;
        let my = mean(&|f| f.used_shift.dy - f.prior.dy);
        let mx = mean(&|f| f.used_shift.dx - f.prior.dx);
        let var = |g: &dyn Fn(&FrameState) -> f32, mu: f64| {
            used.iter()
                .map(|f| (f64::from(g(f)) - mu).powi(2))
                .sum::<f64>()
                / k
        };
        let warp_variance = (var(&|f| f.used_shift.dy - f.prior.dy, my)
            + var(&|f| f.used_shift.dx - f.prior.dx, mx)) as f32;
        let mean_cc = mean(&|f| f.cc) as f32;
        let weight_sum: f32 = used.iter().map(|f| f.weight).sum();
        let image = Array2::from_shape_vec((self.h, self.w), combined.image)
            .unwrap_or_else(|_| Array2::from_elem((self.h, self.w), f32::NAN));
        let correction = self.unweighted_correction(&image, &combined.scale);
        let image = match &correction {
            Some(c) => c.apply(image.view()),
            None => image,
        };
        TileResult {
            correction,
            tile: self.stack.tile,
            image,
            valid: true,
            invalid_reason: None,
            frames: self.reports(),
            frames_used: used.len(),
            warp_variance,
            mean_cc,
            mean_shift: Shift::new(my as f32, mx as f32),
            iterations,
            fallback,
            weight_sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::tests::{render, star_list};
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Distribution, Normal};

    const T: usize = 64;
    const M: usize = 16;

    /// A synthetic stack: `n` noisy star-field cut-outs with known priors and local shifts.
    fn synthetic(n: usize, stars: usize, seed: u64) -> (TileStack, Vec<Shift>) {
        let field = star_list(T + 2 * M, T + 2 * M, stars, seed);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1);
        let mut cutouts = Array3::from_elem((n, T + 2 * M, T + 2 * M), f32::NAN);
        let mut frames = Vec::new();
        let mut locals = Vec::new();
        let mut state = (0.0f64, 0.0f64);
        for f in 0..n {
            // AR(1) local motion, correlation 0.9, 1 px RMS per axis.
            state.0 = 0.9 * state.0 + 0.436 * rng.random_range(-1.7..1.7);
            state.1 = 0.9 * state.1 + 0.436 * rng.random_range(-1.7..1.7);
            let prior = Shift::new(rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5));
            let (dy, dx) = (f64::from(prior.dy) + state.0, f64::from(prior.dx) + state.1);
            let img = render(
                &field,
                T + 2 * M,
                T + 2 * M,
                0.0,
                0.0,
                dy,
                dx,
                3.0,
                Some(seed * 1000 + f as u64),
            );
            cutouts.index_axis_mut(ndarray::Axis(0), f).assign(&img);
            frames.push(FrameInput {
                index: f,
                weight: 1.0,
                scale: 1.0,
                prior_shift: prior,
            });
            locals.push(Shift::new(state.0 as f32, state.1 as f32));
        }
        let tile = TileBox {
            index: 0,
            x0: 0,
            y0: 0,
            w: T,
            h: T,
        };
        (
            TileStack {
                tile,
                margin: M,
                cutouts,
                frames,
            },
            locals,
        )
    }

    #[test]
    fn recovers_known_local_shifts_up_to_the_common_mean() {
        let (stack, locals) = synthetic(30, 12, 3);
        let params = OperatorParams {
            smoothing: Smoothing::None,
            ..OperatorParams::default()
        };
        let r = reconstruct_tile(&stack, &params);
        assert!(r.valid && r.fallback.is_none(), "{r:?}");
        let n = locals.len() as f32;
        let mean = Shift::new(
            locals.iter().map(|s| s.dy).sum::<f32>() / n,
            locals.iter().map(|s| s.dx).sum::<f32>() / n,
        );
        let mut se = 0.0f32;
        for (f, rep) in r.frames.iter().enumerate() {
            assert!(rep.status.is_used(), "{rep:?}");
            let got = rep.shift - stack.frames[f].prior_shift;
            let want = locals[f] - mean;
            se += (got - want).norm().powi(2);
        }
        let rms = (se / (2.0 * n)).sqrt();
        assert!(rms < 0.05, "rms error of the local shifts {rms} px");
        assert!(r.warp_variance > 0.3, "{}", r.warp_variance);
        assert!(
            r.mean_shift.norm() < 1e-3,
            "local shifts are anchored to zero mean: {:?}",
            r.mean_shift
        );
    }

    #[test]
    fn global_only_uses_the_priors() {
        let (stack, _) = synthetic(12, 12, 4);
        let params = OperatorParams {
            mode: Mode::GlobalOnly,
            ..OperatorParams::default()
        };
        let r = reconstruct_tile(&stack, &params);
        assert!(r.valid);
        for (rep, f) in r.frames.iter().zip(&stack.frames) {
            assert_eq!(rep.shift, f.prior_shift);
        }
        assert_eq!(r.warp_variance, 0.0);
    }

    #[test]
    fn empty_sky_falls_back_to_global_motion_and_says_so() {
        let n = 15;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let noise = Normal::new(300.0f32, 12.0).unwrap();
        let cutouts = Array3::from_shape_fn((n, T + 2 * M, T + 2 * M), |_| noise.sample(&mut rng));
        let frames = (0..n)
            .map(|i| FrameInput {
                index: i,
                weight: 1.0,
                scale: 1.0,
                prior_shift: Shift::new(0.1 * i as f32 - 0.7, 0.3),
            })
            .collect();
        let stack = TileStack {
            tile: TileBox {
                index: 7,
                x0: 0,
                y0: 0,
                w: T,
                h: T,
            },
            margin: M,
            cutouts,
            frames,
        };
        let r = reconstruct_tile(&stack, &OperatorParams::default());
        assert!(r.valid, "{:?}", r.invalid_reason);
        assert!(
            r.fallback
                .as_deref()
                .is_some_and(|s| s.contains("little structure")),
            "{:?}",
            r.fallback
        );
        for (rep, f) in r.frames.iter().zip(&stack.frames) {
            if rep.status.is_used() {
                assert_eq!(rep.shift, f.prior_shift, "no wild shift on empty sky");
            }
        }
        let bg = crate::stats::median(r.image.as_slice().unwrap());
        assert!((bg - 300.0).abs() < 2.0, "{bg}");
    }

    #[test]
    fn despike_removes_single_pixel_spikes_but_not_stars() {
        let field = vec![(20.0, 20.0, 20_000.0)];
        let mut img = render(&field, 40, 40, 0.0, 0.0, 0.0, 0.0, 2.2, Some(5));
        let star_peak = img[[20, 20]];
        img[[8, 30]] += 5000.0;
        let cleaned = despike(img.view()).expect("one spike");
        assert!(
            (cleaned[[8, 30]] - 200.0).abs() < 60.0,
            "{}",
            cleaned[[8, 30]]
        );
        assert_eq!(
            cleaned[[20, 20]],
            star_peak,
            "a star (FWHM 2.2 px) is not a spike"
        );
        let clean = render(&field, 40, 40, 0.0, 0.0, 0.0, 0.0, 2.2, Some(6));
        assert!(despike(clean.view()).is_none());
    }

    #[test]
    fn colour_planes_keep_undersampled_star_cores_and_lose_hot_pixels() {
        // Four planes of one OSC frame in cell space: a star of 0.8 cells FWHM (undersampled: its core
        // is a lone bright sample in every plane), and a hot pixel in the red plane only.
        let field = vec![(20.0, 20.0, 6_000.0)];
        let planes: Vec<Array2<f32>> = (0..4)
            .map(|p| render(&field, 40, 40, 0.0, 0.0, 0.0, 0.0, 0.8, Some(40 + p)))
            .collect();
        let mut red = planes[0].clone();
        red[[8, 30]] += 5000.0;
        let star_peak = red[[20, 20]];
        assert!(
            despike(red.view()).is_some_and(|d| d[[20, 20]] < 0.5 * star_peak),
            "the single-plane rule takes this core for a spike (the defect this guards against)"
        );
        let mut views: Vec<ArrayView2<f32>> = planes.iter().map(|p| p.view()).collect();
        views[0] = red.view();
        let cleaned = despike_plane(&views, 0).expect("the hot pixel is a spike");
        assert_eq!(
            cleaned[[20, 20]],
            star_peak,
            "the star is lit in the other colours"
        );
        assert!(
            (cleaned[[8, 30]] - 200.0).abs() < 60.0,
            "{}",
            cleaned[[8, 30]]
        );
        // The same hot pixel in a plane of its own is still removed.
        let alone = despike_plane(&views[..1], 0).expect("one plane: plain despike");
        assert!((alone[[8, 30]] - 200.0).abs() < 60.0);
    }

    #[test]
    fn degenerate_parameters_and_empty_stacks_do_not_panic() {
        let (stack, _) = synthetic(3, 5, 5);
        let bad = OperatorParams {
            beta: f32::NAN,
            rejection_kappa: 0.0,
            ..OperatorParams::default()
        };
        let r = reconstruct_tile(&stack, &bad);
        assert!(
            !r.valid
                && r.invalid_reason
                    .as_deref()
                    .is_some_and(|s| s.contains("beta"))
        );
        let empty = TileStack {
            tile: stack.tile,
            margin: M,
            cutouts: Array3::zeros((0, T + 2 * M, T + 2 * M)),
            frames: Vec::new(),
        };
        let r = reconstruct_tile(&empty, &OperatorParams::default());
        assert!(!r.valid && r.invalid_reason.is_some());
        let zero_iter = OperatorParams {
            iterations: 0,
            min_valid_frames: 2,
            ..OperatorParams::default()
        };
        let r = reconstruct_tile(&stack, &zero_iter);
        assert!(r.valid && r.iterations == 1, "{r:?}");
    }

    /// Largest `|a - b| / max(|b|, 1)` over pixels; both NaN counts as equal, one NaN as infinitely far.
    fn max_rel_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        assert_eq!(a.dim(), b.dim());
        a.iter()
            .zip(b.iter())
            .map(|(&x, &y)| match (x.is_nan(), y.is_nan()) {
                (true, true) => 0.0,
                (false, false) => (x - y).abs() / y.abs().max(1.0),
                _ => f32::INFINITY,
            })
            .fold(0.0, f32::max)
    }

    /// Slow, obvious reference of one plane: every used frame's cut-out resampled at the shift the proxy
    /// reported, times the plane's own scale, then `sum(w v) / sum(w)` over the finite values with the
    /// proxy's reported weights (no clipping: the tests use a huge kappa).
    fn plane_reference(result: &TileResult, stack: &TileStack, plane: &PlaneStack) -> Array2<f32> {
        let (h, w, m) = (stack.tile.h, stack.tile.w, stack.margin as f32);
        let mut num = Array2::<f64>::zeros((h, w));
        let mut den = Array2::<f64>::zeros((h, w));
        for (slot, rep) in result.frames.iter().enumerate() {
            if !rep.status.is_used() {
                continue;
            }
            let mut aligned = Array2::from_elem((h, w), f32::NAN);
            // The planes are resampled with deringing, as the proxy.
            Resampler::new().with_deringing(true).sample_shifted(
                plane.cutouts.index_axis(ndarray::Axis(0), slot),
                m + rep.shift.dy,
                m + rep.shift.dx,
                aligned.view_mut(),
            );
            for ((p, &v), n) in aligned.indexed_iter().zip(num.iter_mut()) {
                if v.is_finite() {
                    *n += f64::from(rep.weight) * f64::from(v * plane.scales[slot]);
                    den[p] += f64::from(rep.weight);
                }
            }
        }
        Array2::from_shape_fn((h, w), |p| {
            if den[p] > 0.0 {
                (num[p] / den[p]) as f32
            } else {
                f32::NAN
            }
        })
    }

    #[test]
    fn planes_with_zero_shifts_and_equal_weights_are_the_mean_of_each_plane() {
        let (n, h, w, m) = (8, 24, 20, 4);
        let (ch, cw) = (h + 2 * m, w + 2 * m);
        let base = render(
            &star_list(ch, cw, 6, 11),
            ch,
            cw,
            0.0,
            0.0,
            0.0,
            0.0,
            3.0,
            None,
        );
        let mut cutouts = Array3::zeros((n, ch, cw));
        for f in 0..n {
            cutouts
                .index_axis_mut(ndarray::Axis(0), f)
                .assign(&(&base * (1.0 + 0.02 * f as f32)));
        }
        let stack = TileStack {
            tile: TileBox {
                index: 3,
                x0: 0,
                y0: 0,
                w,
                h,
            },
            margin: m,
            cutouts: cutouts.clone(),
            frames: (0..n)
                .map(|f| FrameInput {
                    index: f,
                    weight: 1.0,
                    scale: 1.0,
                    prior_shift: Shift::ZERO,
                })
                .collect(),
        };
        // Global-only at zero priors, beta 0 (every weight is G = 1), no clipping in practice.
        let params = OperatorParams {
            mode: Mode::GlobalOnly,
            beta: 0.0,
            rejection_kappa: 1e6,
            min_valid_frames: 2,
            ..OperatorParams::default()
        };
        let result = reconstruct_tile(&stack, &params);
        assert!(result.valid, "{:?}", result.invalid_reason);
        assert!(result
            .frames
            .iter()
            .all(|r| r.status.is_used() && r.weight == 1.0 && r.shift == Shift::ZERO));

        // Two planes with their own content and their own scales; one missing pixel in frame 2 of plane 1.
        let value = |p: usize, f: usize, r: usize, c: usize| {
            100.0 * (p + 1) as f32 + 3.0 * f as f32 + 0.5 * r as f32 + 0.25 * c as f32
        };
        let scales = [
            (0..n).map(|f| 1.0 + 0.1 * f as f32).collect::<Vec<_>>(),
            (0..n).map(|f| 2.0 - 0.05 * f as f32).collect::<Vec<_>>(),
        ];
        let mut planes: Vec<PlaneStack> = (0..2)
            .map(|p| PlaneStack {
                cutouts: Array3::from_shape_fn((n, ch, cw), |(f, r, c)| value(p, f, r, c)),
                scales: scales[p].clone(),
                own: None,
            })
            .collect();
        let (hole_r, hole_c) = (m + 5, m + 7);
        planes[1].cutouts[[2, hole_r, hole_c]] = f32::NAN;
        // The proxy itself as a plane must give the proxy's own reconstruction.
        planes.push(PlaneStack {
            cutouts,
            scales: vec![1.0; n],
            own: None,
        });
        let out = reconstruct_planes(&result, &stack, &planes, &params);
        assert_eq!(out.len(), 3);
        for p in 0..2 {
            // Obvious reference: the per-pixel mean over frames of scale * value (finite values only).
            let expected = Array2::from_shape_fn((h, w), |(r, c)| {
                let vals: Vec<f32> = (0..n)
                    .map(|f| scales[p][f] * planes[p].cutouts[[f, r + m, c + m]])
                    .filter(|v| v.is_finite())
                    .collect();
                vals.iter().sum::<f32>() / vals.len() as f32
            });
            let d = max_rel_diff(&out[p], &expected);
            assert!(d < 1e-5, "plane {p}: max relative difference {d}");
        }
        // The hole is filled from the other seven frames of that plane only.
        let (r, c) = (hole_r - m, hole_c - m);
        let seven: f32 = (0..n)
            .filter(|&f| f != 2)
            .map(|f| scales[1][f] * value(1, f, hole_r, hole_c))
            .sum::<f32>()
            / 7.0;
        assert!((out[1][[r, c]] - seven).abs() < 1e-3 * seven);
        let d = max_rel_diff(&out[2], &result.image);
        assert!(
            d < 1e-5,
            "the proxy as a plane: max relative difference {d}"
        );
    }

    #[test]
    fn planes_use_the_proxys_shifts_and_weights() {
        let (mut stack, _) = synthetic(16, 12, 21);
        // Distinct global weights G, so that the weights the planes must reuse really differ.
        for (f, frame) in stack.frames.iter_mut().enumerate() {
            frame.weight = 0.5 + 0.1 * f as f32;
        }
        let params = OperatorParams {
            smoothing: Smoothing::None,
            rejection_kappa: 1e6,
            ..OperatorParams::default()
        };
        let result = reconstruct_tile(&stack, &params);
        assert!(result.valid, "{:?}", result.invalid_reason);
        let used: Vec<&FrameReport> = result
            .frames
            .iter()
            .filter(|r| r.status.is_used())
            .collect();
        assert!(used.len() >= 12, "{} frames used", used.len());
        // The check is only meaningful when shifts and weights really differ between frames.
        let (wmin, wmax) = used.iter().fold((f32::INFINITY, 0.0f32), |(a, b), r| {
            (a.min(r.weight), b.max(r.weight))
        });
        assert!(wmax > 1.01 * wmin, "weights {wmin}..{wmax}");
        assert!(used.iter().any(|r| (r.shift - used[0].shift).norm() > 0.3));

        let (n, ch, cw) = stack.cutouts.dim();
        let base = render(
            &star_list(ch, cw, 8, 77),
            ch,
            cw,
            0.0,
            0.0,
            0.0,
            0.0,
            3.5,
            None,
        );
        let mut a = Array3::zeros((n, ch, cw));
        for f in 0..n {
            a.index_axis_mut(ndarray::Axis(0), f)
                .assign(&(&base * (1.0 + 0.03 * f as f32)));
        }
        // A block of missing data in one frame.
        a.slice_mut(ndarray::s![1, 30..34, 40..44]).fill(f32::NAN);
        let b = a.mapv(|v| 2.0 * v + 100.0);
        let planes = vec![
            PlaneStack {
                cutouts: a.clone(),
                scales: (0..n).map(|f| 1.0 + 0.05 * f as f32).collect(),
                own: None,
            },
            PlaneStack {
                cutouts: b,
                scales: (0..n).map(|f| 0.8 + 0.02 * f as f32).collect(),
                own: None,
            },
            PlaneStack {
                cutouts: a,
                scales: (0..n).map(|f| 1.0 + 0.05 * f as f32).collect(),
                own: None,
            },
        ];
        let out = reconstruct_planes(&result, &stack, &planes, &params);
        for (p, plane) in planes.iter().enumerate().take(2) {
            let expected = plane_reference(&result, &stack, plane);
            let d = max_rel_diff(&out[p], &expected);
            assert!(d < 1e-4, "plane {p}: max relative difference {d}");
        }
        assert_eq!(out[0], out[2], "equal planes give equal results");

        // Mismatched planes and an invalid proxy give NaN planes, never a panic.
        let short = PlaneStack {
            cutouts: Array3::zeros((n, ch, cw)),
            scales: vec![1.0; n - 1],
            own: None,
        };
        let out = reconstruct_planes(&result, &stack, &[short], &params);
        assert!(out[0].iter().all(|v| v.is_nan()));
        let mut invalid = result.clone();
        invalid.valid = false;
        let out = reconstruct_planes(&invalid, &stack, &planes[..1], &params);
        assert!(out[0].iter().all(|v| v.is_nan()));
    }
}
