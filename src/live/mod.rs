//! Incremental (live) tile-local reconstruction: one state per tile that takes frames one at a time,
//! with memory constant in the number of frames. Tail mode (`tlr watch`) and the embeddable live
//! session of the `tlr` crate are built on it.
//!
//! What it does:
//! - **Bootstrap** ([`LiveState::bootstrap`]): the first `bootstrap_frames` frames (default
//!   `min_valid_frames`) fix the tile grid (from their median FWHM, as batch mode does), the
//!   normalisation of global weights and photometric scales, and run through the batch operator
//!   ([`crate::operator::reconstruct_tile`]) exactly as a batch run of those frames would. The
//!   operator's per-tile image becomes the first reference; its per-frame shifts and weights fill the
//!   accumulators.
//! - **Per frame and tile** ([`LiveTile::add_frame`]): register the cut-out against the tile reference
//!   ([`crate::register::register`], prior = the sub-pixel rest of the global shift), reject the frame
//!   for this tile when the correlation is below `ecc_cc_min` or its local shift deviates from the
//!   median of the recent shift history (last `temporal_smoothing_window` shifts) by more than
//!   `max_warp_delta_px`, resample (Lanczos-3, [`crate::resample`]), reject single pixels beyond
//!   `rejection_kappa` sigma of the running per-pixel mean (Welford statistics of accepted values,
//!   active once a pixel has [`LiveOptions::min_rejection_frames`] values), and add
//!   `W = G * exp(beta (cc - 1))` weighted values to per-pixel sums.
//! - **Re-basing**: every [`LiveOptions::rebase_every`] frames used by a tile, its registration
//!   reference is replaced by its current reconstruction (where finite), so registration follows the
//!   sharpening stack as the batch operator's iterations do.
//! - **Snapshot** ([`LiveState::snapshot`]): the tiles' current images blended with [`Mosaic`] (Hann
//!   windows, `psi` of each tile's recent warp variance).
//! - **Checkpoint** ([`LiveState::save`] / [`LiveState::load`]): a folder with `checkpoint.json`
//!   (grid, counters, shift histories, the names of the frames used and rejected, the bootstrap
//!   qualities, the names, length and SHA-256 of the files below, and the [`CheckpointSource`]: the
//!   followed folder, the configuration digest and registration mode, and every frame file's exact
//!   name, size, time and header hash, which a resuming session compares), `state-<generation>.bin` (all
//!   per-tile arrays as little-endian f32, streamed from the tiles without a copy) and
//!   `global_reference-<generation>.fits` (the frame the global pass matched against, so that a
//!   restarted session measures global shifts in the same geometry). Every file is written under a
//!   new name (temporary file, fsync, rename) and the JSON last: it is the commit point, so a save
//!   interrupted at any moment (SIGKILL, power cut) leaves the previous checkpoint complete, and
//!   the frame list and the accumulators of a checkpoint are always from the same moment. A hard
//!   kill can lose the work since the last checkpoint, never correctness: the frames it had
//!   processed are not in the checkpoint's list and are processed again.
//!
//! What it does not: read files or follow folders (the `tlr` crate's live stages do), run the global
//! pass (the caller feeds [`crate::global::GlobalPass`] and passes its [`FrameQuality`]), smooth shifts
//! over future frames (a live stack cannot see them; the measured shift is used, which the batch
//! operator's noise-weighted smoothing also keeps for well-measured frames), iterate over old frames
//! (they are not kept), use threads.
//!
//! Memory: per tile six `(h, w)` f32 arrays plus a short shift history; the list of frame names used
//! (a few bytes per frame) is the only part that grows with the number of frames. During bootstrap,
//! the bootstrap frames are held in memory once, as u16 when their values are camera counts
//! ([`CompactImage`]); [`BootstrapPlan`] lets a caller run the per-tile part on a worker pool.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use ndarray::{s, Array2, Array3, ArrayView2, ArrayViewMut2, Zip};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::fits::{self, FitsError, OutputMeta, SampleFormat};
use crate::global::{global_weights, photometric_scales, FrameQuality};
use crate::mosaic::{psi, Mosaic};
use crate::operator::{
    reconstruct_tile, FrameInput, FrameReport, FrameStatus, Mode, OperatorParams, TileStack,
};
use crate::register::{correlation_at, register, Reference};
use crate::resample::Resampler;
use crate::tile::{tile_grid, tile_size_px, TileError};
use crate::{Shift, TileBox};

mod identity;
pub use identity::{CheckpointSource, FrameFile, FrameKey, RawName};

/// Version of the checkpoint format written by [`LiveState::save`].
pub const CHECKPOINT_VERSION: u32 = 3;
/// Name of the checkpoint's JSON file (the commit point).
pub const CHECKPOINT_JSON: &str = "checkpoint.json";
/// Per-tile arrays stored in a checkpoint, in plane order.
const PLANES: usize = 6;

/// Errors of live reconstruction. Each names the frame or checkpoint file and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The bootstrap frames cannot start a session.
    #[error("live bootstrap: {reason}")]
    Bootstrap {
        /// Why, for a user.
        reason: String,
    },
    /// The tile grid could not be built.
    #[error("live bootstrap: tile grid")]
    Grid {
        /// The grid error.
        #[source]
        source: TileError,
    },
    /// A frame does not have the session's size.
    #[error(
        "frame `{frame}`: size {got_rows}x{got_cols} differs from the session's {rows}x{cols}"
    )]
    FrameSize {
        /// The frame's name.
        frame: String,
        /// Rows of the frame.
        got_rows: usize,
        /// Columns of the frame.
        got_cols: usize,
        /// Rows of the session.
        rows: usize,
        /// Columns of the session.
        cols: usize,
    },
    /// A checkpoint file could not be read or written.
    #[error("checkpoint `{path}`: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The checkpoint was written by another version of the format.
    #[error(
        "checkpoint `{path}`: format {found} is not supported (expected {CHECKPOINT_VERSION}); \
         start a fresh session (`tlr watch --fresh`)"
    )]
    CheckpointVersion {
        /// The checkpoint's JSON file.
        path: PathBuf,
        /// The version it records (as written).
        found: String,
    },
    /// A checkpoint FITS file could not be read or written.
    #[error("checkpoint `{path}`")]
    CheckpointFits {
        /// The file.
        path: PathBuf,
        /// The FITS error.
        #[source]
        source: FitsError,
    },
    /// A checkpoint folder or file could not be created, read or removed.
    #[error("checkpoint `{path}`")]
    CheckpointIo {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::atomic::AtomicError> for LiveError {
    fn from(e: crate::atomic::AtomicError) -> Self {
        LiveError::CheckpointIo {
            path: e.path,
            source: e.source,
        }
    }
}

/// Settings of a live session. Build with [`LiveOptions::from_config`] or [`LiveOptions::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LiveOptions {
    /// Operator settings (the batch operator's, used for bootstrap and per-frame rules).
    pub params: OperatorParams,
    /// Frames collected before the first reconstruction (default `params.min_valid_frames`, at least 1).
    pub bootstrap_frames: usize,
    /// A tile's registration reference is replaced by its current reconstruction after every this many
    /// frames it used (default 10; 0 = never).
    pub rebase_every: usize,
    /// Pixel rejection starts once a pixel has this many accepted values (default 8: with fewer, the
    /// sample sigma is so uncertain that a 3-sigma cut rejects several per cent of good values).
    pub min_rejection_frames: usize,
    /// Tile size factor times FWHM (`tile.size_factor`).
    pub tile_size_factor: f32,
    /// Smallest tile, px (`tile.min_size`).
    pub tile_min_px: usize,
    /// Largest tile, px (`tile.max_size`).
    pub tile_max_px: usize,
    /// Tile overlap fraction (`tile.overlap_fraction`).
    pub overlap_fraction: f32,
    /// Search margin around each tile, px (`tile.margin_px`).
    pub margin_px: usize,
}

impl LiveOptions {
    /// Options with `params` and the batch defaults for everything else.
    pub fn new(params: OperatorParams) -> Self {
        let tile = crate::config::Config::default().tile;
        Self {
            params,
            bootstrap_frames: params.min_valid_frames.max(1),
            rebase_every: 10,
            min_rejection_frames: 8,
            tile_size_factor: tile.size_factor as f32,
            tile_min_px: tile.min_size,
            tile_max_px: tile.max_size,
            overlap_fraction: tile.overlap_fraction as f32,
            margin_px: tile.margin_px,
        }
    }

    /// Options from a configuration's `tile` section and the operator settings built from it.
    pub fn from_config(cfg: &Config, params: OperatorParams) -> Self {
        Self {
            tile_size_factor: cfg.tile.size_factor as f32,
            tile_min_px: cfg.tile.min_size,
            tile_max_px: cfg.tile.max_size,
            overlap_fraction: cfg.tile.overlap_fraction as f32,
            margin_px: cfg.tile.margin_px,
            ..Self::new(params)
        }
    }
}

/// A frame's pixels held compactly: as u16 when every value is a whole number in 0..=65535 (camera
/// counts, as cameras write them), else as f32. Bootstrap frames are kept this way.
#[derive(Debug, Clone)]
pub enum CompactImage {
    /// Whole camera counts, `(rows, cols)`.
    U16(Array2<u16>),
    /// Any other values (`NaN` = missing), `(rows, cols)`.
    F32(Array2<f32>),
}

impl CompactImage {
    /// Stores `image` as u16 when that loses nothing, else keeps it as f32.
    pub fn new(image: Array2<f32>) -> Self {
        let counts = image
            .iter()
            .all(|&v| (0.0..=65535.0).contains(&v) && v.fract() == 0.0);
        if counts {
            Self::U16(image.mapv(|v| v as u16))
        } else {
            Self::F32(image)
        }
    }

    /// Like [`CompactImage::new`] from a borrowed image (copies the pixels once, compactly).
    pub fn from_view(image: ArrayView2<f32>) -> Self {
        let counts = image
            .iter()
            .all(|&v| (0.0..=65535.0).contains(&v) && v.fract() == 0.0);
        if counts {
            Self::U16(image.mapv(|v| v as u16))
        } else {
            Self::F32(image.to_owned())
        }
    }

    /// `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            Self::U16(a) => a.dim(),
            Self::F32(a) => a.dim(),
        }
    }

    /// Bytes of pixel data held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::U16(a) => a.len() * 2,
            Self::F32(a) => a.len() * 4,
        }
    }

    /// The pixels as f32 (a copy).
    pub fn to_f32(&self) -> Array2<f32> {
        match self {
            Self::U16(a) => a.mapv(f32::from),
            Self::F32(a) => a.clone(),
        }
    }

    /// Writes the cut-out of [`cutout`] into `out` (shape `(h + 2 margin, w + 2 margin)`; other
    /// shapes are left as they are).
    pub fn cutout_into(
        &self,
        tile: &TileBox,
        margin: usize,
        shift: Shift,
        out: ArrayViewMut2<f32>,
    ) {
        match self {
            Self::U16(a) => cut_into(a.view(), tile, margin, shift, f32::from, out),
            Self::F32(a) => cut_into(a.view(), tile, margin, shift, |v| v, out),
        }
    }
}

impl From<Array2<f32>> for CompactImage {
    fn from(image: Array2<f32>) -> Self {
        Self::new(image)
    }
}

/// A frame of the bootstrap: its name, pixels and global-pass measurements.
#[derive(Debug, Clone)]
pub struct BootstrapFrame {
    /// File name (or `memory:<n>`), recorded in the checkpoint.
    pub name: String,
    /// The pixels, `(rows, cols)` (see [`CompactImage::new`]).
    pub image: CompactImage,
    /// What the global pass measured.
    pub quality: FrameQuality,
}

/// How a new frame enters the tiles: its global weight, photometric scale and global shift.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePlan {
    /// The frame's name.
    pub name: String,
    /// Position in the session (0-based over all frames seen).
    pub index: usize,
    /// Global weight G_f, normalised against the bootstrap frames.
    pub weight: f32,
    /// Photometric scale (I' = I * scale), against the bootstrap frames' median background.
    pub scale: f32,
    /// Global shift relative to the global reference frame.
    pub shift: Shift,
}

impl FramePlan {
    /// The operator input of this frame for a cut-out made by [`cutout`] (prior = sub-pixel rest).
    pub fn input(&self) -> FrameInput {
        FrameInput {
            index: self.index,
            weight: self.weight,
            scale: self.scale,
            prior_shift: prior_of(self.shift),
        }
    }
}

/// What happened to one frame over all tiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveFrameReport {
    /// The frame's name.
    pub name: String,
    /// Tiles that used it.
    pub tiles_used: usize,
    /// Tiles that rejected it.
    pub tiles_rejected: usize,
    /// The most common rejection reason, if any tile rejected it.
    pub reason: Option<String>,
    /// Pixels rejected as outliers over all tiles.
    pub pixels_rejected: usize,
}

/// Whole-pixel part of a global shift (applied by offsetting the cut-out).
pub fn offset_of(shift: Shift) -> (isize, isize) {
    (shift.dy.round() as isize, shift.dx.round() as isize)
}

/// Sub-pixel rest of a global shift (the operator's prior).
pub fn prior_of(shift: Shift) -> Shift {
    let (oy, ox) = offset_of(shift);
    Shift::new(shift.dy - oy as f32, shift.dx - ox as f32)
}

/// Cuts `tile` plus `margin` on every side out of `image`, offset by the whole-pixel part of the global
/// `shift` (as batch mode's reader does); `NaN` where the cut-out leaves the frame.
pub fn cutout(image: ArrayView2<f32>, tile: &TileBox, margin: usize, shift: Shift) -> Array2<f32> {
    let mut out = Array2::from_elem((tile.h + 2 * margin, tile.w + 2 * margin), f32::NAN);
    cut_into(image, tile, margin, shift, |v| v, out.view_mut());
    out
}

/// [`cutout`] into `out` (which must have the cut-out's shape; else nothing is written), converting
/// pixels with `value`.
fn cut_into<T: Copy>(
    image: ArrayView2<T>,
    tile: &TileBox,
    margin: usize,
    shift: Shift,
    value: impl Fn(T) -> f32,
    mut out: ArrayViewMut2<f32>,
) {
    let (rows, cols) = image.dim();
    let (oy, ox) = offset_of(shift);
    let (h, w) = (tile.h + 2 * margin, tile.w + 2 * margin);
    if out.dim() != (h, w) {
        return;
    }
    out.fill(f32::NAN);
    let y0 = tile.y0 as isize - margin as isize + oy;
    let x0 = tile.x0 as isize - margin as isize + ox;
    let ys = y0.max(0)..(y0 + h as isize).min(rows as isize);
    let xs = x0.max(0)..(x0 + w as isize).min(cols as isize);
    if ys.is_empty() || xs.is_empty() {
        return;
    }
    let (oy0, ox0) = ((ys.start - y0) as usize, (xs.start - x0) as usize);
    Zip::from(out.slice_mut(s![oy0..oy0 + ys.len(), ox0..ox0 + xs.len()]))
        .and(image.slice(s![
            ys.start as usize..ys.end as usize,
            xs.start as usize..xs.end as usize
        ]))
        .for_each(|o, &v| *o = value(v));
}

/// Incremental state of one tile.
#[derive(Debug)]
pub struct LiveTile {
    tile: TileBox,
    margin: usize,
    /// Registration reference, `(h, w)`.
    reference: Array2<f32>,
    /// Precomputed registration data of `reference`; rebuilt lazily.
    prepared: Option<Reference>,
    sum_wi: Array2<f32>,
    sum_w: Array2<f32>,
    /// Welford statistics of accepted values per pixel.
    count: Array2<f32>,
    mean: Array2<f32>,
    m2: Array2<f32>,
    /// Local shifts (shift - prior) of the last frames used, oldest first.
    history: Vec<Shift>,
    frames_used: usize,
    frames_rejected: usize,
    since_rebase: usize,
    rebases: usize,
}

/// The small part of a tile's state kept in the checkpoint JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TileMeta {
    tile: TileBox,
    history: Vec<Shift>,
    frames_used: usize,
    frames_rejected: usize,
    since_rebase: usize,
    rebases: usize,
}

impl LiveTile {
    fn empty(tile: TileBox, margin: usize) -> Self {
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
        }
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
        for (slot, report) in result.frames.iter().enumerate() {
            if !report.status.is_used() || slot >= stack.frames.len() {
                continue;
            }
            let input = &stack.frames[slot];
            let cut = despike(stack.cutouts.index_axis(ndarray::Axis(0), slot));
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
        let scaled = despike(cut).mapv(|v| v * input.scale);
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
        Zip::from(&aligned)
            .and(&mut self.count)
            .and(&mut self.mean)
            .and(&mut self.m2)
            .and(&mut self.sum_wi)
            .and(&mut self.sum_w)
            .for_each(|&v, n, mean, m2, swi, sw| {
                if !v.is_finite() {
                    return;
                }
                if is_outlier(v, *n, *mean, *m2, kappa, min_n) {
                    rejected_px += 1;
                    return;
                }
                welford(v, n, mean, m2);
                *swi += weight * v;
                *sw += weight;
            });
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

    fn meta(&self) -> TileMeta {
        TileMeta {
            tile: self.tile,
            history: self.history.clone(),
            frames_used: self.frames_used,
            frames_rejected: self.frames_rejected,
            since_rebase: self.since_rebase,
            rebases: self.rebases,
        }
    }

    fn planes(&self) -> [&Array2<f32>; PLANES] {
        [
            &self.reference,
            &self.sum_wi,
            &self.sum_w,
            &self.count,
            &self.mean,
            &self.m2,
        ]
    }
}

/// The cut-out with isolated spikes (hot pixels, cosmic rays) replaced, as the batch operator does.
pub fn despike(cut: ArrayView2<f32>) -> Array2<f32> {
    crate::operator::despike(cut).unwrap_or_else(|| cut.to_owned())
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

/// The checkpoint JSON.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    generation: u64,
    rows: usize,
    cols: usize,
    tile_px: usize,
    options: LiveOptions,
    norm: Vec<FrameQuality>,
    frames_seen: usize,
    frames_used: Vec<String>,
    frames_rejected: Vec<String>,
    tiles: Vec<TileMeta>,
    /// The state file (`state-<generation>.bin`) holding the tiles' planes.
    state_file: String,
    /// Its length after the magic, bytes.
    state_bytes: u64,
    /// SHA-256 of those bytes, hex.
    state_sha256: String,
    /// The global reference frame's file, if the session has one.
    global_reference: Option<String>,
    /// The folder, settings and frame files the state came from.
    source: CheckpointSource,
}

/// The frame-level half of a bootstrap (weights, scales, grid), from which every tile is bootstrapped
/// on its own ([`BootstrapPlan::bootstrap_tile`], pure, any thread) and the state assembled in tile
/// order ([`BootstrapPlan::finish`]). [`LiveState::bootstrap`] is the serial composition.
#[derive(Debug, Clone)]
pub struct BootstrapPlan {
    rows: usize,
    cols: usize,
    tile_px: usize,
    options: LiveOptions,
    grid: Vec<TileBox>,
    /// Indices (into the bootstrap frames) of the frames that enter the tiles.
    used: Vec<usize>,
    inputs: Vec<FrameInput>,
    norm: Vec<FrameQuality>,
    reports: Vec<LiveFrameReport>,
}

impl BootstrapPlan {
    /// Checks the frames, normalises weights and scales, picks the tile size and grid.
    ///
    /// # Errors
    /// As [`LiveState::bootstrap`].
    pub fn new(frames: &[BootstrapFrame], options: LiveOptions) -> Result<Self, LiveError> {
        let first = frames.first().ok_or_else(|| LiveError::Bootstrap {
            reason: "no frame to start from".to_string(),
        })?;
        let (rows, cols) = first.image.dim();
        for f in frames {
            let (r, c) = f.image.dim();
            if (r, c) != (rows, cols) {
                return Err(LiveError::FrameSize {
                    frame: f.name.clone(),
                    got_rows: r,
                    got_cols: c,
                    rows,
                    cols,
                });
            }
        }
        let norm: Vec<FrameQuality> = frames.iter().map(|f| f.quality).collect();
        let weights = global_weights(&norm);
        let scales = photometric_scales(&norm);
        let mut reports: Vec<LiveFrameReport> = frames
            .iter()
            .map(|f| LiveFrameReport {
                name: f.name.clone(),
                tiles_used: 0,
                tiles_rejected: 0,
                reason: None,
                pixels_rejected: 0,
            })
            .collect();
        let mut used: Vec<usize> = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            match frame_problem(&f.quality, weights[i], scales[i]) {
                Some(reason) => reports[i].reason = Some(reason),
                None => used.push(i),
            }
        }
        if used.is_empty() {
            return Err(LiveError::Bootstrap {
                reason: format!(
                    "none of the first {} frames could be registered globally (too few stars?)",
                    frames.len()
                ),
            });
        }
        let fwhm: Vec<f32> = used
            .iter()
            .map(|&i| frames[i].quality.fwhm)
            .filter(|v| v.is_finite())
            .collect();
        let median_fwhm = crate::stats::median(&fwhm);
        let tile_px = tile_size_px(
            median_fwhm,
            options.tile_size_factor,
            options.tile_min_px,
            options.tile_max_px,
        );
        let grid = tile_grid(rows, cols, tile_px, options.overlap_fraction)
            .map_err(|source| LiveError::Grid { source })?;
        let inputs: Vec<FrameInput> = used
            .iter()
            .map(|&i| FrameInput {
                index: i,
                weight: weights[i],
                scale: scales[i],
                prior_shift: prior_of(frames[i].quality.shift),
            })
            .collect();
        Ok(Self {
            rows,
            cols,
            tile_px,
            options,
            grid,
            used,
            inputs,
            norm,
            reports,
        })
    }

    /// The tile grid, in tile order.
    pub fn tiles(&self) -> &[TileBox] {
        &self.grid
    }

    /// Tile size, px.
    pub fn tile_px(&self) -> usize {
        self.tile_px
    }

    /// Bootstraps tile `k` of [`BootstrapPlan::tiles`] from `frames` (the frames given to
    /// [`BootstrapPlan::new`]) through the batch operator ([`LiveTile::bootstrap`]). Only this
    /// tile's cut-outs are made. An index beyond the grid gives an empty tile without reports.
    pub fn bootstrap_tile(
        &self,
        k: usize,
        frames: &[BootstrapFrame],
    ) -> (LiveTile, Vec<FrameReport>) {
        let margin = self.options.margin_px;
        let Some(tile) = self.grid.get(k) else {
            let empty = TileBox {
                index: k,
                x0: 0,
                y0: 0,
                w: 0,
                h: 0,
            };
            return (LiveTile::empty(empty, margin), Vec::new());
        };
        let (ch, cw) = (tile.h + 2 * margin, tile.w + 2 * margin);
        let mut cutouts = Array3::from_elem((self.used.len(), ch, cw), f32::NAN);
        for (slot, &i) in self.used.iter().enumerate() {
            if let Some(f) = frames.get(i) {
                f.image.cutout_into(
                    tile,
                    margin,
                    f.quality.shift,
                    cutouts.index_axis_mut(ndarray::Axis(0), slot),
                );
            }
        }
        let stack = TileStack {
            tile: *tile,
            margin,
            cutouts,
            frames: self.inputs.clone(),
        };
        LiveTile::bootstrap(&stack, &self.options)
    }

    /// Assembles the state from the bootstrapped tiles, in tile order; returns it with one report
    /// per bootstrap frame.
    pub fn finish(
        &self,
        tiles: Vec<(LiveTile, Vec<FrameReport>)>,
    ) -> (LiveState, Vec<LiveFrameReport>) {
        let mut reports = self.reports.clone();
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); reports.len()];
        let mut states = Vec::with_capacity(tiles.len());
        for (state, frame_reports) in tiles {
            for (slot, r) in frame_reports.iter().enumerate() {
                let Some(&i) = self.used.get(slot) else {
                    continue;
                };
                match &r.status {
                    FrameStatus::Used => reports[i].tiles_used += 1,
                    FrameStatus::Rejected(reason) => {
                        reports[i].tiles_rejected += 1;
                        reasons[i].push(reason.clone());
                    }
                }
            }
            states.push(state);
        }
        let mut state = LiveState {
            rows: self.rows,
            cols: self.cols,
            tile_px: self.tile_px,
            options: self.options,
            tiles: states,
            norm: self.norm.clone(),
            frames_seen: reports.len(),
            frames_used: Vec::new(),
            frames_rejected: Vec::new(),
            generation: 0,
            reference_file: None,
            source: CheckpointSource::default(),
        };
        for (i, r) in reports.iter_mut().enumerate() {
            if r.reason.is_none() {
                r.reason = most_common(&reasons[i]);
            }
            state.record(r);
        }
        (state, reports)
    }
}

/// The state of a live session over all tiles.
#[derive(Debug)]
pub struct LiveState {
    rows: usize,
    cols: usize,
    tile_px: usize,
    options: LiveOptions,
    tiles: Vec<LiveTile>,
    /// Bootstrap qualities: the basis of weight and scale normalisation.
    norm: Vec<FrameQuality>,
    frames_seen: usize,
    frames_used: Vec<String>,
    frames_rejected: Vec<String>,
    generation: u64,
    /// The checkpoint file of the global reference frame, once saved.
    reference_file: Option<String>,
    /// Where the state came from (saved with it; the caller fills it in).
    source: CheckpointSource,
}

impl LiveState {
    /// Starts a session from the first frames (see the module docs). Returns the state and one report
    /// per bootstrap frame. Serial; [`BootstrapPlan`] runs the same steps with the per-tile part
    /// anywhere (the results are identical).
    ///
    /// # Errors
    /// [`LiveError::Bootstrap`] when no frame is given, none registered globally, or sizes differ;
    /// [`LiveError::Grid`] when the grid cannot be built.
    pub fn bootstrap(
        frames: &[BootstrapFrame],
        options: LiveOptions,
    ) -> Result<(Self, Vec<LiveFrameReport>), LiveError> {
        let plan = BootstrapPlan::new(frames, options)?;
        let tiles = (0..plan.tiles().len())
            .map(|k| plan.bootstrap_tile(k, frames))
            .collect();
        Ok(plan.finish(tiles))
    }

    /// Records a frame's outcome (used when at least one tile used it).
    fn record(&mut self, report: &LiveFrameReport) {
        if report.tiles_used > 0 {
            self.frames_used.push(report.name.clone());
        } else {
            self.frames_rejected.push(report.name.clone());
        }
    }

    /// Plans a new frame from its global-pass quality: its weight and scale normalised against the
    /// bootstrap frames. Counts the frame as seen.
    ///
    /// # Errors
    /// The reason (for a user) when the frame cannot be used at all (global registration failed,
    /// unusable weight or background); the frame is then recorded as rejected.
    pub fn plan(&mut self, name: &str, quality: &FrameQuality) -> Result<FramePlan, String> {
        let index = self.frames_seen;
        self.frames_seen += 1;
        let mut q = self.norm.clone();
        q.push(*quality);
        let weight = global_weights(&q).last().copied().unwrap_or(f32::NAN);
        let scale = photometric_scales(&q).last().copied().unwrap_or(f32::NAN);
        if let Some(reason) = frame_problem(quality, weight, scale) {
            self.frames_rejected.push(name.to_string());
            return Err(reason);
        }
        Ok(FramePlan {
            name: name.to_string(),
            index,
            weight,
            scale,
            shift: quality.shift,
        })
    }

    /// Cuts every tile's cut-out of `image` for `plan`, in tile order.
    ///
    /// # Errors
    /// [`LiveError::FrameSize`] when the frame's size differs from the session's.
    pub fn cutouts(
        &self,
        image: ArrayView2<f32>,
        plan: &FramePlan,
    ) -> Result<Vec<Array2<f32>>, LiveError> {
        self.check_size(&plan.name, image.dim())?;
        Ok(self
            .tiles
            .iter()
            .map(|t| cutout(image, &t.tile, self.options.margin_px, plan.shift))
            .collect())
    }

    fn check_size(&self, name: &str, (r, c): (usize, usize)) -> Result<(), LiveError> {
        if (r, c) != (self.rows, self.cols) {
            return Err(LiveError::FrameSize {
                frame: name.to_string(),
                got_rows: r,
                got_cols: c,
                rows: self.rows,
                cols: self.cols,
            });
        }
        Ok(())
    }

    /// Takes the tile states out (to update them on worker threads); put them back with
    /// [`LiveState::put_tiles`] in the same order.
    pub fn take_tiles(&mut self) -> Vec<LiveTile> {
        std::mem::take(&mut self.tiles)
    }

    /// Puts back the tiles taken with [`LiveState::take_tiles`] and records the frame's outcome from
    /// the per-tile reports.
    pub fn put_tiles(
        &mut self,
        tiles: Vec<LiveTile>,
        plan: &FramePlan,
        reports: &[(FrameReport, usize)],
    ) -> LiveFrameReport {
        self.tiles = tiles;
        let used = reports.iter().filter(|(r, _)| r.status.is_used()).count();
        let reasons: Vec<String> = reports
            .iter()
            .filter_map(|(r, _)| r.status.reason().map(str::to_string))
            .collect();
        let report = LiveFrameReport {
            name: plan.name.clone(),
            tiles_used: used,
            tiles_rejected: reports.len() - used,
            reason: most_common(&reasons),
            pixels_rejected: reports.iter().map(|(_, p)| p).sum(),
        };
        self.record(&report);
        report
    }

    /// Adds one frame serially over all tiles (the async stages do the same over a worker pool).
    ///
    /// # Errors
    /// The reason when the frame cannot be used at all (see [`LiveState::plan`]) or has the wrong size.
    pub fn add_frame(
        &mut self,
        name: &str,
        image: ArrayView2<f32>,
        quality: &FrameQuality,
    ) -> Result<LiveFrameReport, String> {
        self.check_size(name, image.dim())
            .map_err(|e| e.to_string())?;
        let plan = self.plan(name, quality)?;
        let cuts = self.cutouts(image, &plan).map_err(|e| e.to_string())?;
        let input = plan.input();
        let options = self.options;
        let mut tiles = self.take_tiles();
        let reports: Vec<(FrameReport, usize)> = tiles
            .iter_mut()
            .zip(&cuts)
            .map(|(t, c)| t.add_frame(c.view(), &input, &options))
            .collect();
        Ok(self.put_tiles(tiles, &plan, &reports))
    }

    /// The blended current reconstruction, `(rows, cols)`; `NaN` where no tile has data.
    pub fn snapshot(&self) -> Array2<f32> {
        let images: Vec<(TileBox, Array2<f32>, f32)> = self
            .tiles
            .iter()
            .map(|t| (t.tile, t.current(), t.warp_variance()))
            .collect();
        blend(
            self.rows,
            self.cols,
            &images,
            self.options.params.variance_window_sigma,
        )
    }

    /// Session settings.
    pub fn options(&self) -> &LiveOptions {
        &self.options
    }

    /// Image size `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Tile size chosen at bootstrap, px.
    pub fn tile_px(&self) -> usize {
        self.tile_px
    }

    /// The tile boxes in order.
    pub fn tiles(&self) -> Vec<TileBox> {
        self.tiles.iter().map(|t| t.tile).collect()
    }

    /// The tile states (empty while taken).
    pub fn tile_states(&self) -> &[LiveTile] {
        &self.tiles
    }

    /// Frames seen (bootstrap included).
    pub fn frames_seen(&self) -> usize {
        self.frames_seen
    }

    /// Names of the frames used, in order.
    pub fn frames_used(&self) -> &[String] {
        &self.frames_used
    }

    /// Names of the frames no tile used.
    pub fn frames_rejected(&self) -> &[String] {
        &self.frames_rejected
    }

    /// Where the state came from: saved in the checkpoint, compared when a session resumes it.
    pub fn source(&self) -> &CheckpointSource {
        &self.source
    }

    /// The source, for the caller to fill in (folder, settings, each frame file as it is consumed).
    pub fn source_mut(&mut self) -> &mut CheckpointSource {
        &mut self.source
    }

    /// Saves the state into `dir` (created if needed). `global_reference`, when given, is written as
    /// this generation's global reference frame (pass it once, when the global pass has fixed it;
    /// later saves keep pointing at it).
    ///
    /// Atomic and crash-safe: the state file and the reference are written under new names
    /// (temporary file, fsync, rename), then the JSON, which names them and holds the state file's
    /// length and SHA-256, replaces the previous JSON (fsync, rename, fsync of the folder). The JSON is
    /// the commit point: a save interrupted at any moment (also by SIGKILL or a power cut) leaves the
    /// previous checkpoint complete and loadable, and the frames list and accumulators a JSON points
    /// at are always from the same moment. Files no JSON points at any more are removed afterwards.
    ///
    /// # Errors
    /// [`LiveError::CheckpointIo`] / [`LiveError::CheckpointFits`] / [`LiveError::Checkpoint`] naming
    /// the file.
    pub fn save(
        &mut self,
        dir: &Path,
        global_reference: Option<ArrayView2<f32>>,
    ) -> Result<(), LiveError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        crate::atomic::remove_stale_temporaries(dir, None);
        let generation = self.generation + 1;
        let mut reference_file = self.reference_file.clone();
        if let Some(image) = global_reference {
            let name = format!("global_reference-{generation}.fits");
            let path = dir.join(&name);
            fits::write_image_atomic(
                &path,
                image,
                SampleFormat::F32,
                &OutputMeta::tlr_output("live-checkpoint"),
            )
            .map_err(|source| LiveError::CheckpointFits { path, source })?;
            reference_file = Some(name);
        }
        let state_file = format!("state-{generation}.bin");
        let (state_bytes, state_sha256) = self.write_state(&dir.join(&state_file))?;
        let file = CheckpointFile {
            version: CHECKPOINT_VERSION,
            generation,
            rows: self.rows,
            cols: self.cols,
            tile_px: self.tile_px,
            options: self.options,
            norm: self.norm.clone(),
            frames_seen: self.frames_seen,
            frames_used: self.frames_used.clone(),
            frames_rejected: self.frames_rejected.clone(),
            tiles: self.tiles.iter().map(LiveTile::meta).collect(),
            state_file: state_file.clone(),
            state_bytes,
            state_sha256,
            global_reference: reference_file.clone(),
            source: self.source.clone(),
        };
        let json_path = dir.join(CHECKPOINT_JSON);
        let text = serde_json::to_string(&file).map_err(|e| LiveError::Checkpoint {
            path: json_path.clone(),
            reason: e.to_string(),
        })?;
        // The JSON is the commit point; the atomic writer also syncs the folder entry, so a power cut
        // cannot bring back the previous JSON after newer frames were reported as checkpointed.
        crate::atomic::write_bytes(&json_path, text.as_bytes())?;
        self.generation = generation;
        self.reference_file = reference_file;
        // The JSON now points at the new files: the others are garbage.
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let ours = (name.starts_with("state-")
                    && (name.ends_with(".bin") || name.ends_with(".fits")))
                    || (name.starts_with("global_reference") && name.ends_with(".fits"));
                let kept = name == state_file || Some(&name) == self.reference_file.as_ref();
                if ours && !kept {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Writes every tile's planes, in tile order, as little-endian f32 after [`STATE_MAGIC`], streamed
    /// (no copy of the state is made), atomically. Returns the data length and its SHA-256 (hex).
    fn write_state(&self, path: &Path) -> Result<(u64, String), LiveError> {
        let mut digest = (0u64, String::new());
        crate::atomic::write_file(path, |tmp| {
            let file = crate::atomic::create_new(tmp)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            out.write_all(STATE_MAGIC).map_err(io_error(tmp))?;
            let mut hasher = Sha256::new();
            let mut bytes = 0u64;
            let mut buf: Vec<u8> = Vec::new();
            for tile in &self.tiles {
                for plane in tile.planes() {
                    for row in plane.rows() {
                        buf.clear();
                        for v in row {
                            buf.extend_from_slice(&v.to_le_bytes());
                        }
                        hasher.update(&buf);
                        out.write_all(&buf).map_err(io_error(tmp))?;
                        bytes += buf.len() as u64;
                    }
                }
            }
            let file = out.into_inner().map_err(|e| LiveError::CheckpointIo {
                path: tmp.to_path_buf(),
                source: e.into_error(),
            })?;
            drop(file); // the atomic writer syncs and renames it
            digest = (bytes, hex(&hasher.finalize()));
            Ok::<(), LiveError>(())
        })?;
        Ok(digest)
    }

    /// Loads a checkpoint folder written by [`LiveState::save`]; also returns the global reference
    /// frame when the checkpoint has one.
    ///
    /// # Errors
    /// [`LiveError::Checkpoint`] for a missing, unreadable or inconsistent checkpoint (naming the
    /// file: e.g. a state file whose length or checksum differs from what the JSON recorded),
    /// [`LiveError::CheckpointFits`] for an unreadable reference frame.
    pub fn load(dir: &Path) -> Result<(Self, Option<Array2<f32>>), LiveError> {
        let json_path = dir.join(CHECKPOINT_JSON);
        let bad = |path: &Path, reason: String| LiveError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let text = fs::read_to_string(&json_path).map_err(io_error(&json_path))?;
        let version: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(&json_path, format!("not a tlr live checkpoint: {e}")))?;
        if version["version"].as_u64() != Some(u64::from(CHECKPOINT_VERSION)) {
            return Err(LiveError::CheckpointVersion {
                path: json_path,
                found: version["version"].to_string(),
            });
        }
        let file: CheckpointFile = serde_json::from_value(version)
            .map_err(|e| bad(&json_path, format!("not a tlr live checkpoint: {e}")))?;
        let plain = |name: &str| {
            !name.is_empty() && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name))
        };
        if !plain(&file.state_file)
            || !file.global_reference.as_deref().is_none_or(plain)
            || !file.source.frames.iter().all(|f| f.name.is_plain())
        {
            return Err(bad(
                &json_path,
                "file names must be plain names".to_string(),
            ));
        }
        let mut tiles = Vec::with_capacity(file.tiles.len());
        let mut expected = 0u64;
        for (k, meta) in file.tiles.iter().enumerate() {
            let t = meta.tile;
            let inside = |start: usize, len: usize, end: usize| {
                len > 0 && start.checked_add(len).is_some_and(|e| e <= end)
            };
            // Checked: any number may be in a damaged or crafted file.
            let bytes = (PLANES * 4)
                .checked_mul(t.h)
                .and_then(|b| b.checked_mul(t.w))
                .and_then(|b| u64::try_from(b).ok())
                .and_then(|b| expected.checked_add(b));
            match bytes {
                Some(total) if inside(t.y0, t.h, file.rows) && inside(t.x0, t.w, file.cols) => {
                    expected = total;
                }
                _ => return Err(bad(&json_path, format!("tile {k} does not fit the image"))),
            }
        }
        let state_path = dir.join(&file.state_file);
        if expected != file.state_bytes {
            return Err(bad(
                &json_path,
                format!(
                    "the tiles need {expected} bytes of state, the JSON records {}",
                    file.state_bytes
                ),
            ));
        }
        let len = fs::metadata(&state_path)
            .map_err(io_error(&state_path))?
            .len();
        if len.checked_sub(STATE_MAGIC.len() as u64) != Some(expected) {
            return Err(bad(
                &state_path,
                format!(
                    "state file has {len} bytes, {CHECKPOINT_JSON} expects {} (not from the same save?)",
                    STATE_MAGIC.len() as u64 + expected
                ),
            ));
        }
        let mut input = std::io::BufReader::with_capacity(
            1 << 20,
            fs::File::open(&state_path).map_err(io_error(&state_path))?,
        );
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(io_error(&state_path))?;
        if &magic != STATE_MAGIC {
            return Err(bad(&state_path, "not a tlr live state file".to_string()));
        }
        let mut hasher = Sha256::new();
        let mut buf: Vec<u8> = Vec::new();
        for meta in &file.tiles {
            let t = meta.tile;
            let mut plane = || -> Result<Array2<f32>, LiveError> {
                buf.resize(t.h * t.w * 4, 0);
                input.read_exact(&mut buf).map_err(io_error(&state_path))?;
                hasher.update(&buf);
                let values = buf
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Array2::from_shape_vec((t.h, t.w), values)
                    .map_err(|e| bad(&state_path, e.to_string()))
            };
            tiles.push(LiveTile {
                tile: t,
                margin: file.options.margin_px,
                reference: plane()?,
                prepared: None,
                sum_wi: plane()?,
                sum_w: plane()?,
                count: plane()?,
                mean: plane()?,
                m2: plane()?,
                history: meta.history.clone(),
                frames_used: meta.frames_used,
                frames_rejected: meta.frames_rejected,
                since_rebase: meta.since_rebase,
                rebases: meta.rebases,
            });
        }
        if hex(&hasher.finalize()) != file.state_sha256 {
            return Err(bad(
                &state_path,
                format!("checksum differs from the one in {CHECKPOINT_JSON} (file damaged?)"),
            ));
        }
        let reference = match &file.global_reference {
            Some(name) => {
                let path = dir.join(name);
                Some(
                    fits::read_image(&path)
                        .map_err(|source| LiveError::CheckpointFits { path, source })?
                        .1,
                )
            }
            None => None,
        };
        Ok((
            Self {
                rows: file.rows,
                cols: file.cols,
                tile_px: file.tile_px,
                options: file.options,
                tiles,
                norm: file.norm,
                frames_seen: file.frames_seen,
                frames_used: file.frames_used,
                frames_rejected: file.frames_rejected,
                generation: file.generation,
                reference_file: file.global_reference,
                source: file.source,
            },
            reference,
        ))
    }
}

/// First bytes of a checkpoint state file.
pub const STATE_MAGIC: &[u8; 8] = b"TLRLIVE2";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LiveError {
    let path = path.to_path_buf();
    move |source| LiveError::CheckpointIo { path, source }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Blends tile images with [`Mosaic`] in the given (tile index) order: each entry is the tile, its
/// image and its warp variance (for `psi` with `sigma`).
pub fn blend(
    rows: usize,
    cols: usize,
    images: &[(TileBox, Array2<f32>, f32)],
    sigma: f32,
) -> Array2<f32> {
    let boxes: Vec<TileBox> = images.iter().map(|(t, _, _)| *t).collect();
    let mut mosaic = Mosaic::new(rows, cols, &boxes);
    for (tile, image, var) in images {
        mosaic.add(tile, image.view(), psi(*var, sigma));
    }
    mosaic.finish()
}

fn frame_problem(q: &FrameQuality, weight: f32, scale: f32) -> Option<String> {
    if !q.shift_ok {
        Some("global registration failed (too few matching stars)".to_string())
    } else if !(weight.is_finite() && weight > 0.0) {
        Some("no usable global weight".to_string())
    } else if !(scale.is_finite() && scale > 0.0) {
        Some("background level unusable for normalisation".to_string())
    } else {
        None
    }
}

/// The most common kind of tile reason, in full (the first tile's text of that kind, numbers
/// included), with the number of tiles that gave that kind.
fn most_common(reasons: &[String]) -> Option<String> {
    // (first full text, count) per kind; numbers differ per tile, so the kind is the words before
    // the first digit.
    let mut counts: std::collections::BTreeMap<&str, (&str, usize)> =
        std::collections::BTreeMap::new();
    for r in reasons {
        let key = r.split(|c: char| c.is_ascii_digit()).next().unwrap_or(r);
        counts.entry(key.trim_end()).or_insert((r, 0)).1 += 1;
    }
    counts
        .into_values()
        .max_by_key(|(_, n)| *n)
        .map(|(r, n)| match n {
            1 => format!("{r} (1 tile)"),
            _ => format!("{r} (and {} more tiles of this kind)", n - 1),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::global::GlobalPass;
    use crate::simulate::{Scenario, SimConfig, Simulation};

    fn sim(frames: usize) -> Simulation {
        Simulation::new(SimConfig {
            frames,
            width: 192,
            height: 192,
            seed: 7,
            scenario: Scenario::Seeing,
            ..SimConfig::default()
        })
    }

    fn options() -> LiveOptions {
        let mut o = LiveOptions::new(OperatorParams {
            min_valid_frames: 5,
            ..OperatorParams::default()
        });
        o.bootstrap_frames = 5;
        o.rebase_every = 4;
        o
    }

    fn start(
        sim: &Simulation,
        pass: &mut GlobalPass,
        n: usize,
    ) -> (LiveState, Vec<LiveFrameReport>) {
        let frames: Vec<BootstrapFrame> = (0..n)
            .map(|i| {
                let image = sim.frame(i);
                let quality = pass.add_frame(image.view());
                BootstrapFrame {
                    name: format!("f{i:03}.fits"),
                    image: CompactImage::new(image),
                    quality,
                }
            })
            .collect();
        LiveState::bootstrap(&frames, options()).expect("bootstrap")
    }

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
        assert!((prior_of(Shift::new(1.2, -0.4)).dy - 0.2).abs() < 1e-6);
    }

    #[test]
    fn frames_accumulate_and_snapshot_is_finite() {
        let s = sim(12);
        let mut pass = GlobalPass::new();
        let (mut state, reports) = start(&s, &mut pass, 5);
        assert_eq!(reports.len(), 5);
        assert_eq!(state.frames_used().len(), 5, "{reports:?}");
        let before: usize = state.tile_states().iter().map(LiveTile::frames_used).sum();
        for i in 5..12 {
            let image = s.frame(i);
            let q = pass.add_frame(image.view());
            let r = state
                .add_frame(&format!("f{i:03}.fits"), image.view(), &q)
                .expect("usable frame");
            assert!(r.tiles_used > 0, "{r:?}");
        }
        assert_eq!(state.frames_used().len(), 12);
        assert_eq!(state.frames_seen(), 12);
        let after: usize = state.tile_states().iter().map(LiveTile::frames_used).sum();
        assert!(after > before);
        assert!(state.tile_states().iter().any(|t| t.rebases() > 0));
        let snap = state.snapshot();
        assert_eq!(snap.dim(), (192, 192));
        let finite = snap.iter().filter(|v| v.is_finite()).count();
        assert!(finite > 95 * 192 * 192 / 100, "finite pixels {finite}");
    }

    #[test]
    fn outlier_pixels_are_rejected() {
        let s = sim(10);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        for i in 5..9 {
            let image = s.frame(i);
            let q = pass.add_frame(image.view());
            state.add_frame("x", image.view(), &q).expect("ok");
        }
        let mut image = s.frame(9);
        // A satellite trail: one bright row.
        image.row_mut(100).fill(60000.0);
        let q = pass.add_frame(image.view());
        let r = state.add_frame("trail", image.view(), &q).expect("ok");
        assert!(r.pixels_rejected >= 150, "{r:?}");
        let snap = state.snapshot();
        let bg = crate::stats::median(&snap.row(60).to_vec());
        assert!(
            snap[[100, 96]] < bg + 2000.0,
            "trail leaked: {}",
            snap[[100, 96]]
        );
    }

    #[test]
    fn checkpoint_round_trip_is_exact() {
        let s = sim(8);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let image = s.frame(5);
        let q = pass.add_frame(image.view());
        state.add_frame("f005.fits", image.view(), &q).expect("ok");
        let dir = tempfile::tempdir().expect("tmp");
        let reference = s.frame(0);
        state
            .save(dir.path(), Some(reference.view()))
            .expect("save");
        state
            .save(dir.path(), Some(reference.view()))
            .expect("save twice");
        let (mut loaded, gref) = LiveState::load(dir.path()).expect("load");
        assert_eq!(gref.expect("reference").dim(), (192, 192));
        assert_eq!(loaded.frames_used(), state.frames_used());
        let a = state.snapshot();
        let b = loaded.snapshot();
        assert!(a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        // Both continue identically.
        let image = s.frame(6);
        let q = pass.add_frame(image.view());
        let ra = state.add_frame("f006.fits", image.view(), &q).expect("ok");
        let rb = loaded.add_frame("f006.fits", image.view(), &q).expect("ok");
        assert_eq!(ra, rb);
        let states = fs::read_dir(dir.path())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().starts_with("state-"))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(states, 1, "old state images are removed");
    }

    #[test]
    fn interrupted_save_leaves_the_previous_checkpoint_and_damage_is_detected() {
        let s = sim(8);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let dir = tempfile::tempdir().expect("tmp");
        state
            .save(dir.path(), Some(s.frame(0).view()))
            .expect("save");
        let committed = state.snapshot();
        // What a save killed before its commit point leaves behind: a newer state file, a newer
        // reference and temporary files. The JSON still names the old ones.
        let image = s.frame(5);
        let q = pass.add_frame(image.view());
        state.add_frame("f005.fits", image.view(), &q).expect("ok");
        fs::write(dir.path().join("state-2.bin"), b"TLRLIVE2 half").expect("write");
        fs::write(dir.path().join(".checkpoint.json.tmp-99999999-0"), b"{").expect("write");
        fs::write(dir.path().join(".state-2.bin.tmp-99999999"), b"x").expect("write");
        let (loaded, reference) = LiveState::load(dir.path()).expect("previous checkpoint");
        assert_eq!(loaded.frames_used().len(), 5);
        assert!(reference.is_some());
        let again = loaded.snapshot();
        assert!(committed
            .iter()
            .zip(again.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        // The next save cleans up and commits generation 2.
        state.save(dir.path(), None).expect("save 2");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["checkpoint.json", "global_reference-1.fits", "state-2.bin"]
        );
        let (loaded, reference) = LiveState::load(dir.path()).expect("load 2");
        assert_eq!(loaded.frames_used().len(), 6);
        assert!(reference.is_some(), "the reference is kept across saves");
        // A damaged state file is an error naming it, never a silently wrong state.
        let path = dir.path().join("state-2.bin");
        let mut bytes = fs::read(&path).expect("read");
        let k = bytes.len() / 2;
        bytes[k] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        let err = LiveState::load(dir.path()).expect_err("damaged");
        assert!(
            err.to_string().contains("state-2.bin") && err.to_string().contains("checksum"),
            "{err}"
        );
        bytes.truncate(k);
        fs::write(&path, &bytes).expect("write");
        let err = LiveState::load(dir.path()).expect_err("truncated");
        assert!(err.to_string().contains("state-2.bin"), "{err}");
    }

    #[test]
    fn bootstrap_plan_in_any_tile_order_equals_serial_bootstrap() {
        let s = sim(6);
        let mut pass = GlobalPass::new();
        let frames: Vec<BootstrapFrame> = (0..5)
            .map(|i| {
                let image = s.frame(i);
                let quality = pass.add_frame(image.view());
                BootstrapFrame {
                    name: format!("f{i:03}.fits"),
                    image: CompactImage::new(image),
                    quality,
                }
            })
            .collect();
        assert!(
            frames
                .iter()
                .all(|f| matches!(f.image, CompactImage::U16(_))),
            "simulated camera frames are held as u16"
        );
        let (serial, serial_reports) = LiveState::bootstrap(&frames, options()).expect("serial");
        let plan = BootstrapPlan::new(&frames, options()).expect("plan");
        let n = plan.tiles().len();
        let mut tiles: Vec<_> = (0..n)
            .rev()
            .map(|k| plan.bootstrap_tile(k, &frames))
            .collect();
        tiles.reverse();
        let (planned, planned_reports) = plan.finish(tiles);
        assert_eq!(serial_reports, planned_reports);
        let (a, b) = (serial.snapshot(), planned.snapshot());
        assert!(a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        // Compact and f32 frames give the same cut-outs.
        let f32_frame = CompactImage::F32(frames[1].image.to_f32());
        let tile = plan.tiles()[0];
        let mut x = Array2::zeros((tile.h + 8, tile.w + 8));
        let mut y = Array2::zeros((tile.h + 8, tile.w + 8));
        let shift = Shift::new(-2.6, 1.4);
        frames[1].image.cutout_into(&tile, 4, shift, x.view_mut());
        f32_frame.cutout_into(&tile, 4, shift, y.view_mut());
        assert!(x
            .iter()
            .zip(y.iter())
            .all(|(p, q)| p == q || (p.is_nan() && q.is_nan())));
        assert_eq!(frames[1].image.bytes() * 2, f32_frame.bytes());
        let mut noninteger = s.frame(0);
        noninteger[[3, 3]] = 0.5;
        assert!(matches!(
            CompactImage::new(noninteger),
            CompactImage::F32(_)
        ));
    }

    #[test]
    fn bad_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join(CHECKPOINT_JSON), "{nope").expect("write");
        let err = LiveState::load(dir.path()).expect_err("must fail");
        assert!(err.to_string().contains(CHECKPOINT_JSON), "{err}");
    }

    #[test]
    fn wrong_size_frame_is_rejected() {
        let s = sim(6);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let small = Array2::<f32>::zeros((10, 10));
        let q = pass.add_frame(s.frame(5).view());
        let err = state
            .add_frame("small", small.view(), &q)
            .expect_err("size");
        assert!(err.contains("small"), "{err}");
    }
}
