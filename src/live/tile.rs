//! One tile of a live session ([`LiveTile`]) and its numerics per frame: the bootstrap from the batch
//! operator's result for the first frames, then for every new cut-out a stack-aware despike (a spike
//! is replaced unless the tile's reference shows light there: [`crate::operator::despike_against`];
//! the bootstrap frames are despiked over their stack, as batch does), registration against the tile's
//! reference, the tile's frame rejection rules (correlation below `ecc_cc_min`, deviation from the
//! recent shift track), Lanczos-3 resampling, per-pixel Welford statistics with kappa-sigma pixel
//! rejection, the weighted sums and re-basing of the reference; and how a tile is cut out of a frame at
//! the whole-pixel part of its global shift ([`cutout`]; the split of the shift is
//! [`crate::select::offset_of`]).
//!
//! What it does not: decide whether a frame enters the session at all ([`crate::select`]), blend tiles
//! (the session's snapshot does), or save anything (`checkpoint.rs` stores the planes of a tile).

use std::ops::Range;

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, Axis, Zip};

use crate::operator::{
    despike_against, despike_stack, reconstruct_planes, reconstruct_tile, FrameInput, FrameReport,
    FrameStatus, Mode, OperatorParams, PlaneStack, TileStack,
};
use crate::register::{correlation_at, register, Reference};
use crate::resample::Resampler;
use crate::select::offset_of;
use crate::{Shift, TileBox};

use super::colour::{luminance, PlaneSums};
use super::LiveOptions;

/// Cuts `tile` plus `margin` on every side out of `image`, offset by the whole-pixel part of the global
/// `shift` (as batch mode's reader does); `NaN` where the cut-out leaves the frame.
pub fn cutout(image: ArrayView2<f32>, tile: &TileBox, margin: usize, shift: Shift) -> Array2<f32> {
    let mut out = Array2::from_elem((tile.h + 2 * margin, tile.w + 2 * margin), f32::NAN);
    cut_into(image, tile, margin, shift, |v| v, out.view_mut());
    out
}

/// [`cutout`] of every plane of `planes` `(planes, rows, cols)`: `(planes, h + 2 margin, w + 2 margin)`.
pub fn cutout_planes(
    planes: ArrayView3<f32>,
    tile: &TileBox,
    margin: usize,
    shift: Shift,
) -> Array3<f32> {
    let (h, w) = (tile.h + 2 * margin, tile.w + 2 * margin);
    let mut out = Array3::from_elem((planes.dim().0, h, w), f32::NAN);
    for (plane, cut) in planes.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))) {
        cut_into(plane, tile, margin, shift, |v| v, cut);
    }
    out
}

/// Where a cut-out meets a frame: the frame's rows and columns, and where they start in the cut-out
/// `(row, col)`.
pub type CutoutWindow = (Range<usize>, Range<usize>, (usize, usize));

/// Where the cut-out of `tile` plus `margin`, offset by the whole-pixel part of `shift`, meets a frame
/// of `dim` `(rows, cols)`; `None` when the cut-out lies outside the frame.
pub fn cutout_window(
    dim: (usize, usize),
    tile: &TileBox,
    margin: usize,
    shift: Shift,
) -> Option<CutoutWindow> {
    let (rows, cols) = dim;
    let (oy, ox) = offset_of(shift);
    let (h, w) = (tile.h + 2 * margin, tile.w + 2 * margin);
    let y0 = tile.y0 as isize - margin as isize + oy;
    let x0 = tile.x0 as isize - margin as isize + ox;
    let ys = y0.max(0)..(y0 + h as isize).min(rows as isize);
    let xs = x0.max(0)..(x0 + w as isize).min(cols as isize);
    if ys.is_empty() || xs.is_empty() {
        return None;
    }
    let at = ((ys.start - y0) as usize, (xs.start - x0) as usize);
    Some((
        ys.start as usize..ys.end as usize,
        xs.start as usize..xs.end as usize,
        at,
    ))
}

/// [`cutout`] into `out` (which must have the cut-out's shape; else nothing is written), converting
/// pixels with `value`.
pub(super) fn cut_into<T: Copy>(
    image: ArrayView2<T>,
    tile: &TileBox,
    margin: usize,
    shift: Shift,
    value: impl Fn(T) -> f32,
    mut out: ArrayViewMut2<f32>,
) {
    if out.dim() != (tile.h + 2 * margin, tile.w + 2 * margin) {
        return;
    }
    out.fill(f32::NAN);
    let Some((ys, xs, (oy0, ox0))) = cutout_window(image.dim(), tile, margin, shift) else {
        return;
    };
    Zip::from(out.slice_mut(s![oy0..oy0 + ys.len(), ox0..ox0 + xs.len()]))
        .and(image.slice(s![ys, xs]))
        .for_each(|o, &v| *o = value(v));
}

/// Incremental state of one tile.
#[derive(Debug)]
pub struct LiveTile {
    pub(super) tile: TileBox,
    pub(super) margin: usize,
    /// Registration reference, `(h, w)`.
    pub(super) reference: Array2<f32>,
    /// Precomputed registration data of `reference`; rebuilt lazily.
    pub(super) prepared: Option<Reference>,
    pub(super) sum_wi: Array2<f32>,
    pub(super) sum_w: Array2<f32>,
    /// Welford statistics of accepted values per pixel.
    pub(super) count: Array2<f32>,
    pub(super) mean: Array2<f32>,
    pub(super) m2: Array2<f32>,
    /// Local shifts (shift - prior) of the last frames used, oldest first.
    pub(super) history: Vec<Shift>,
    pub(super) frames_used: usize,
    pub(super) frames_rejected: usize,
    pub(super) since_rebase: usize,
    pub(super) rebases: usize,
    /// Colour sessions: the planes' accumulators (none for mono).
    pub(super) planes: PlaneSums,
}

impl LiveTile {
    pub(super) fn empty(tile: TileBox, margin: usize) -> Self {
        let z = || Array2::zeros((tile.h, tile.w));
        Self {
            tile,
            margin,
            reference: Array2::from_elem((tile.h, tile.w), f32::NAN),
            prepared: None,
            sum_wi: z(),
            sum_w: z(),
            count: z(),
            mean: z(),
            m2: z(),
            history: Vec::new(),
            frames_used: 0,
            frames_rejected: 0,
            since_rebase: 0,
            rebases: 0,
            planes: PlaneSums::default(),
        }
    }

    /// Colour sessions: the current planes (as [`LiveTile::current`]), each `(h, w)`; empty for mono.
    pub fn current_planes(&self) -> Vec<Array2<f32>> {
        self.planes.current()
    }

    /// The tile box.
    pub fn tile(&self) -> &TileBox {
        &self.tile
    }

    /// Frames this tile used so far.
    pub fn frames_used(&self) -> usize {
        self.frames_used
    }

    /// Frames this tile rejected so far.
    pub fn frames_rejected(&self) -> usize {
        self.frames_rejected
    }

    /// How often the reference was re-based on the current reconstruction.
    pub fn rebases(&self) -> usize {
        self.rebases
    }

    /// The current registration reference, `(h, w)`.
    pub fn reference(&self) -> ArrayView2<'_, f32> {
        self.reference.view()
    }

    /// `Var(dy) + Var(dx)` of the recent local shifts, px² (NaN with fewer than 2).
    pub fn warp_variance(&self) -> f32 {
        let n = self.history.len();
        if n < 2 {
            return f32::NAN;
        }
        let var = |f: fn(&Shift) -> f32| {
            let m = self.history.iter().map(f).sum::<f32>() / n as f32;
            self.history.iter().map(|s| (f(s) - m).powi(2)).sum::<f32>() / (n - 1) as f32
        };
        var(|s| s.dy) + var(|s| s.dx)
    }

    /// The current reconstruction `sum(W I) / sum(W)`, `(h, w)`; `NaN` where no frame contributed.
    pub fn current(&self) -> Array2<f32> {
        Zip::from(&self.sum_wi)
            .and(&self.sum_w)
            .map_collect(|&a, &w| if w > 0.0 { a / w } else { f32::NAN })
    }

    /// Bootstrap from the batch operator: `stack` is the first frames' stack and `params` the operator
    /// settings; the operator's image becomes the reference, its used frames fill the accumulators
    /// (two passes: per-pixel statistics of all used frames, then accumulation with rejection).
    pub fn bootstrap(stack: &TileStack, options: &LiveOptions) -> (Self, Vec<FrameReport>) {
        Self::bootstrap_planes(stack, &[], options)
    }

    /// [`LiveTile::bootstrap`] of a colour tile: `stack` holds the luminance and `planes` the colour
    /// planes' cut-outs with their scales; after the luminance, the planes are reconstructed with its
    /// shifts and weights by the batch run's [`reconstruct_planes`], and their accumulators start from
    /// those images with the luminance's per-pixel weight (where the tile is invalid, the planes start
    /// empty and fill with the next frames).
    pub fn bootstrap_planes(
        stack: &TileStack,
        planes: &[PlaneStack],
        options: &LiveOptions,
    ) -> (Self, Vec<FrameReport>) {
        // A bootstrap shorter than min_valid_frames would make every tile invalid: the batch operator
        // runs with min_valid_frames capped at the frames in the stack (the bootstrap frames that
        // registered globally; capping at `bootstrap_frames` alone made every tile invalid, and
        // every bootstrap frame rejected, as soon as one bootstrap frame failed the global pass).
        let mut bootstrap_params = options.params;
        bootstrap_params.min_valid_frames = bootstrap_params
            .min_valid_frames
            .min(options.bootstrap_frames.max(1))
            .min(stack.frames.len().max(1));
        let params = &bootstrap_params;
        let result = reconstruct_tile(stack, params);
        let mut state = Self::empty(stack.tile, stack.margin);
        let (h, w, m) = (stack.tile.h, stack.tile.w, stack.margin);
        let mut resampler = Resampler::new();
        let mut aligned: Vec<(Array2<f32>, f32)> = Vec::new();
        // The used frames despiked over the stack (stars stay, as in the operator itself).
        let mut used: Vec<usize> = (0..result.frames.len().min(stack.frames.len()))
            .filter(|&s| result.frames[s].status.is_used())
            .collect();
        used.sort_by_key(|&s| stack.frames[s].index);
        let mut cleaned = despike_stack(stack.cutouts.view(), &used);
        for (slot, report) in result.frames.iter().enumerate() {
            if !report.status.is_used() || slot >= stack.frames.len() {
                continue;
            }
            let input = &stack.frames[slot];
            let cut = cleaned[slot]
                .take()
                .unwrap_or_else(|| stack.cutouts.index_axis(Axis(0), slot).to_owned());
            let scaled = cut.mapv(|v| v * input.scale);
            let mut out = Array2::from_elem((h, w), f32::NAN);
            resampler.sample_shifted(
                scaled.view(),
                m as f32 + report.shift.dy,
                m as f32 + report.shift.dx,
                out.view_mut(),
            );
            state.push_history(report.shift - input.prior_shift, params);
            aligned.push((out, report.weight));
        }
        // Pass 1: statistics of all used frames; pass 2: accumulate with rejection against them.
        for (img, _) in &aligned {
            Zip::from(img)
                .and(&mut state.count)
                .and(&mut state.mean)
                .and(&mut state.m2)
                .for_each(|&v, n, mean, m2| welford(v, n, mean, m2));
        }
        let kappa = params.rejection_kappa;
        let min_n = options.min_rejection_frames as f32;
        for (img, weight) in &aligned {
            Zip::from(img)
                .and(&state.count)
                .and(&state.mean)
                .and(&state.m2)
                .and(&mut state.sum_wi)
                .and(&mut state.sum_w)
                .for_each(|&v, &n, &mean, &m2, swi, sw| {
                    if v.is_finite() && !is_outlier(v, n, mean, m2, kappa, min_n) {
                        *swi += weight * v;
                        *sw += weight;
                    }
                });
        }
        state.frames_used = aligned.len();
        state.frames_rejected = result.frames.len() - aligned.len();
        state.reference = if result.valid {
            result.image.clone()
        } else {
            state.current()
        };
        if !planes.is_empty() {
            state.planes = PlaneSums::zeros(planes.len(), (h, w));
            let images = reconstruct_planes(&result, stack, planes, params);
            state.planes.seed(&images, &state.sum_w);
        }
        (state, result.frames)
    }

    fn push_history(&mut self, local: Shift, params: &OperatorParams) {
        self.history.push(local);
        let keep = params.temporal_smoothing_window.max(3);
        if self.history.len() > keep {
            let extra = self.history.len() - keep;
            self.history.drain(..extra);
        }
    }

    /// Adds one frame's cut-out (`(h + 2 margin, w + 2 margin)`, as [`cutout`] makes it) to the tile.
    /// Never panics; a frame the tile cannot use is reported as rejected with the reason.
    pub fn add_frame(
        &mut self,
        cut: ArrayView2<f32>,
        input: &FrameInput,
        options: &LiveOptions,
    ) -> (FrameReport, usize) {
        self.add(cut, None, input, options)
    }

    /// Adds one frame of a colour session: `planes` are its planes' cut-outs `(planes, h + 2 margin,
    /// w + 2 margin)` ([`cutout_planes`]) and `scales` their photometric scales. The luminance (their
    /// mean) is registered and accumulated as [`LiveTile::add_frame`] does; the planes follow with its
    /// shift, weight and per-pixel rejection.
    pub fn add_frame_planes(
        &mut self,
        planes: ArrayView3<f32>,
        scales: &[f32],
        input: &FrameInput,
        options: &LiveOptions,
    ) -> (FrameReport, usize) {
        let lum = luminance(planes);
        self.add(lum.view(), Some((planes, scales)), input, options)
    }

    fn add(
        &mut self,
        cut: ArrayView2<f32>,
        planes: Option<(ArrayView3<f32>, &[f32])>,
        input: &FrameInput,
        options: &LiveOptions,
    ) -> (FrameReport, usize) {
        let params = &options.params;
        let (h, w, m) = (self.tile.h, self.tile.w, self.margin);
        let mut report = FrameReport {
            index: input.index,
            shift: input.prior_shift,
            measured: input.prior_shift,
            cc: 0.0,
            weight: 0.0,
            status: FrameStatus::Used,
        };
        let reject = |mut report: FrameReport, reason: String, tile: &mut Self| {
            report.status = FrameStatus::Rejected(reason);
            report.weight = 0.0;
            tile.frames_rejected += 1;
            (report, 0)
        };
        if cut.dim() != (h + 2 * m, w + 2 * m) {
            return reject(
                report,
                format!(
                    "cut-out is {:?}, expected {:?}",
                    cut.dim(),
                    (h + 2 * m, w + 2 * m)
                ),
                self,
            );
        }
        if !(input.weight.is_finite() && input.weight > 0.0 && input.scale.is_finite()) {
            return reject(report, "no usable global weight".to_string(), self);
        }
        // Spikes are told from star cores by the tile's reference (its stack so far), placed at the
        // prior: a candidate where the stack shows light within a pixel is kept, as batch keeps it.
        let (oy, ox) = offset_of(input.prior_shift);
        let origin = (m as isize + oy, m as isize + ox);
        let scaled = despike_against(cut, self.reference.view(), origin)
            .unwrap_or_else(|| cut.to_owned())
            .mapv(|v| v * input.scale);
        if self.prepared.is_none() {
            self.prepared = Some(Reference::new(self.reference.view()));
        }
        let Some(reference) = self.prepared.as_ref() else {
            return reject(report, "no reference".to_string(), self);
        };
        let prior = input.prior_shift;
        // A tile without structure (empty sky) has a noise-dominated correlation: it is used with the
        // prior (global) shift and not rejected for a low cc (in batch mode the frame is part of its
        // own reference, which lifts such correlations; a live frame is not).
        let mut structured = reference.has_structure();
        let (shift, cc) = match params.mode {
            Mode::GlobalOnly => (prior, correlation_at(reference, scaled.view(), prior)),
            Mode::Local => {
                let reg = register(reference, scaled.view(), Some(prior));
                report.measured = reg.shift;
                if reg.low_structure {
                    structured = false;
                }
                if reg.low_structure || !reg.converged || !reg.shift.norm().is_finite() {
                    (prior, correlation_at(reference, scaled.view(), prior))
                } else {
                    (reg.shift, reg.cc)
                }
            }
        };
        report.shift = shift;
        report.cc = cc;
        if structured && cc < params.ecc_cc_min {
            return reject(
                report,
                format!(
                    "correlation {cc:.2} below ecc_cc_min {:.2}",
                    params.ecc_cc_min
                ),
                self,
            );
        }
        let local = shift - prior;
        if self.history.len() >= 3 {
            // As the batch operator: a shift is an outlier beyond max(max_warp_delta_px,
            // outlier_kappa * robust scatter) from the track (here: the median of recent shifts).
            let dys: Vec<f32> = self.history.iter().map(|s| s.dy).collect();
            let dxs: Vec<f32> = self.history.iter().map(|s| s.dx).collect();
            let (my, sy) = crate::stats::median_and_sigma(&dys);
            let (mx, sx) = crate::stats::median_and_sigma(&dxs);
            let limit = |sigma: f32| {
                let scatter = if sigma.is_finite() { sigma } else { 0.0 };
                params.max_warp_delta_px.max(params.outlier_kappa * scatter)
            };
            let (ey, ex) = ((local.dy - my).abs(), (local.dx - mx).abs());
            if ey > limit(sy) || ex > limit(sx) {
                return reject(
                    report,
                    format!(
                        "local shift deviates ({ey:.2}, {ex:.2}) px from the recent track (limit {:.2}, {:.2} px)",
                        limit(sy),
                        limit(sx)
                    ),
                    self,
                );
            }
        }
        let weight = input.weight * (params.beta * (cc - 1.0)).exp();
        if !(weight.is_finite() && weight > 0.0) {
            return reject(report, "weight not usable".to_string(), self);
        }
        report.weight = weight;
        let mut aligned = Array2::from_elem((h, w), f32::NAN);
        Resampler::new().sample_shifted(
            scaled.view(),
            m as f32 + shift.dy,
            m as f32 + shift.dx,
            aligned.view_mut(),
        );
        let kappa = params.rejection_kappa;
        let min_n = options.min_rejection_frames as f32;
        let mut rejected_px = 0usize;
        let mut taken = Array2::from_elem((h, w), false);
        Zip::from(&mut taken)
            .and(&aligned)
            .and(&mut self.count)
            .and(&mut self.mean)
            .and(&mut self.m2)
            .for_each(|t, &v, n, mean, m2| {
                if !v.is_finite() {
                    return;
                }
                if is_outlier(v, *n, *mean, *m2, kappa, min_n) {
                    rejected_px += 1;
                    return;
                }
                welford(v, n, mean, m2);
                *t = true;
            });
        Zip::from(&taken)
            .and(&aligned)
            .and(&mut self.sum_wi)
            .and(&mut self.sum_w)
            .for_each(|&t, &v, swi, sw| {
                if t {
                    *swi += weight * v;
                    *sw += weight;
                }
            });
        if let Some((cuts, scales)) = planes {
            self.planes.add(cuts, scales, (m, shift, weight), &taken);
        }
        self.push_history(local, params);
        self.frames_used += 1;
        self.since_rebase += 1;
        if options.rebase_every > 0 && self.since_rebase >= options.rebase_every {
            self.rebase();
        }
        (report, rejected_px)
    }

    /// Replaces the registration reference by the current reconstruction where it is finite.
    fn rebase(&mut self) {
        let current = self.current();
        Zip::from(&mut self.reference)
            .and(&current)
            .for_each(|r, &c| {
                if c.is_finite() {
                    *r = c;
                }
            });
        self.prepared = None;
        self.since_rebase = 0;
        self.rebases += 1;
    }
}

fn welford(v: f32, n: &mut f32, mean: &mut f32, m2: &mut f32) {
    if !v.is_finite() {
        return;
    }
    *n += 1.0;
    let d = v - *mean;
    *mean += d / *n;
    *m2 += d * (v - *mean);
}

fn is_outlier(v: f32, n: f32, mean: f32, m2: f32, kappa: f32, min_n: f32) -> bool {
    if n < min_n.max(2.0) {
        return false;
    }
    let sigma = (m2 / (n - 1.0)).max(0.0).sqrt();
    sigma > 0.0 && (v - mean).abs() > kappa * sigma
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutout_pads_with_nan_and_offsets() {
        let img = Array2::from_shape_fn((10, 10), |(r, c)| (r * 10 + c) as f32);
        let tile = TileBox {
            index: 0,
            x0: 0,
            y0: 0,
            w: 4,
            h: 4,
        };
        let cut = cutout(img.view(), &tile, 2, Shift::new(1.2, -0.4));
        assert_eq!(cut.dim(), (8, 8));
        // offset (1, 0): cut (r, c) = img(r - 2 + 1, c - 2)
        assert!(cut[[0, 0]].is_nan());
        assert_eq!(cut[[2, 2]], img[[1, 0]]);
        assert!((crate::select::prior_of(Shift::new(1.2, -0.4)).dy - 0.2).abs() < 1e-6);
    }

    /// A live frame is despiked against its tile's stack: an undersampled star core (a spike by its
    /// shape alone) that the stack shows is kept, a hot pixel on dark sky is replaced.
    #[test]
    fn stack_aware_despike_keeps_star_cores_and_removes_hot_pixels() {
        let noise = |r: usize, c: usize| ((r * 7 + c * 13) % 5) as f32 - 2.0;
        let mut cut = Array2::from_shape_fn((24, 24), |(r, c)| 100.0 + noise(r, c));
        // A 1-px star core at cut (10, 10) and a hot pixel at cut (18, 5).
        cut[[10, 10]] = 900.0;
        cut[[18, 5]] = 900.0;
        // The stack (tile reference, 16x16, placed at cut offset (4, 4)) shows the star at (6, 6).
        let mut stacked = Array2::from_shape_fn((16, 16), |(r, c)| 100.0 + 0.5 * noise(r, c));
        stacked[[6, 6]] = 500.0;
        stacked[[6, 7]] = 220.0;
        let per_frame = crate::operator::despike(cut.view()).expect("both look like spikes");
        assert!(
            per_frame[[10, 10]] < 200.0,
            "a per-frame despike takes the core"
        );
        let cleaned = despike_against(cut.view(), stacked.view(), (4, 4)).expect("one spike");
        assert_eq!(cleaned[[10, 10]], 900.0, "the star core is kept");
        assert!(cleaned[[18, 5]] < 200.0, "the hot pixel is replaced");
    }
}
