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
//! - **Geometry** (`geometry.rs`): the session stacks in the robust mean geometry of its bootstrap
//!   frames' linear transforms ([`crate::global::GlobalFrame::transform`]: translation, rotation,
//!   stretch), fixed for the session and kept by the checkpoint ([`LiveState::base`]); a batch run
//!   stacks in the mean of all frames, which a live session cannot know in advance. Every frame's
//!   motion is taken relative to it ([`FramePlan::transform`]), and each tile's prior is that motion at
//!   the tile centre ([`crate::global::FrameTransform::tile_prior`], the batch run's function).
//! - **Per frame and tile** ([`LiveTile::add_frame`]): despike the cut-out against the tile's reference
//!   (stars stay, hot pixels and cosmic rays go: [`crate::operator::despike_against`]), register it
//!   against the tile reference ([`crate::register::register`], prior = the frame's motion at the tile
//!   centre less the cut-out's whole-pixel offset), reject the frame
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
//!   (grid, the session's geometry, counters, shift histories, the names of the frames used and rejected, the bootstrap
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
//! pass (the caller feeds [`crate::global::GlobalPass`] and passes its [`GlobalFrame`]), smooth shifts
//! over future frames (a live stack cannot see them; the measured shift is used, which the batch
//! operator's noise-weighted smoothing also keeps for well-measured frames), iterate over old frames
//! (they are not kept), use threads.
//!
//! - **Colour** (Bayer sessions, [`LiveColour`]): the caller decides the route once (frames demosaiced
//!   one by one, or Bayer planes in cell space) and passes each frame's planes; the luminance (their
//!   mean) is registered and accumulated as above, and every plane is accumulated with its shift,
//!   weight and per-pixel rejection ([`PlaneSums`]; the bootstrap's planes come from the batch
//!   operator's [`crate::operator::reconstruct_planes`]); [`LiveState::snapshot_planes`] blends them.
//!
//! Memory: per tile six `(h, w)` f32 arrays (colour: plus one per plane and one weight) plus a short shift history; the list of frame names used
//! (a few bytes per frame) is the only part that grows with the number of frames. During bootstrap,
//! the bootstrap frames are held in memory once, as u16 when their values are camera counts
//! ([`CompactImage`]); [`BootstrapPlan`] lets a caller run the per-tile part on a worker pool.
//!
//! Files: `tile.rs` (one tile and its numerics per frame, the cut-out), `bootstrap.rs` (the first
//! frames, [`BootstrapPlan`], [`CompactImage`]), `geometry.rs` (the session's geometry and each
//! frame's motion relative to it), `colour.rs` (route, plane accumulators),
//! `checkpoint.rs` (save, load and the format),
//! `identity.rs` (what a checkpoint must match to be resumed); this file holds the session
//! ([`LiveState`]), its settings ([`LiveOptions`]) and errors.

use std::path::PathBuf;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::fits::FitsError;
use crate::global::{
    global_weights, photometric_scales, FrameQuality, FrameTransform, GlobalFrame,
};
use crate::mosaic::{psi, Mosaic};
use crate::operator::{FrameInput, FrameReport, OperatorParams};
use crate::select::{frame_rejection, most_common_reason, set_plane_scales, UsedFrame, MAX_PLANES};
use crate::tile::TileError;
use crate::{Shift, TileBox};

mod bootstrap;
mod checkpoint;
mod colour;
mod geometry;
mod identity;
mod tile;
pub use crate::select::{offset_of, prior_of};
pub use bootstrap::{BootstrapFrame, BootstrapPlan, ColourBootstrap, CompactImage};
pub use checkpoint::{CHECKPOINT_JSON, CHECKPOINT_VERSION, STATE_MAGIC};
pub use colour::{luminance, ColourRoute, LiveColour, PlaneSums};
pub use identity::{CheckpointSource, FrameFile, FrameKey, RawName};
pub use tile::{cutout, cutout_planes, cutout_window, CutoutWindow, LiveTile};

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
        "checkpoint `{path}`: format {found} is not supported (expected {CHECKPOINT_VERSION}: \
         since format 4 a session stacks in its bootstrap frames' mean geometry, which an older \
         checkpoint does not record); start a fresh session (`tlr watch --fresh`)"
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
    /// Global shift relative to the session's geometry (the bootstrap frames' mean): places the
    /// cut-outs.
    pub shift: Shift,
    /// The frame's linear motion relative to the session's geometry (`transform.shift == shift`): gives
    /// every tile its prior ([`FramePlan::input`]).
    pub transform: FrameTransform,
    /// Colour sessions: the photometric scale of each plane (per-channel background normalisation
    /// against the bootstrap frames, as a batch run's); `scale` for mono.
    pub plane_scales: [f32; MAX_PLANES],
}

impl FramePlan {
    /// The operator input of this frame in `tile` for a cut-out made by [`cutout`]: the prior is the
    /// frame's motion at the tile centre less the cut-out's whole-pixel offset
    /// ([`FrameTransform::tile_prior`], as in batch).
    pub fn input(&self, tile: &TileBox) -> FrameInput {
        FrameInput {
            index: self.index,
            weight: self.weight,
            scale: self.scale,
            prior_shift: self.transform.tile_prior(tile, offset_of(self.shift)),
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

/// The state of a live session over all tiles.
#[derive(Debug)]
pub struct LiveState {
    rows: usize,
    cols: usize,
    tile_px: usize,
    options: LiveOptions,
    tiles: Vec<LiveTile>,
    /// The output geometry relative to the global reference frame: the bootstrap frames' robust mean
    /// transform (fixed for the session, kept by a checkpoint).
    base: FrameTransform,
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
    /// Colour sessions: pattern and route (fixed at the bootstrap, kept by a checkpoint).
    colour: Option<LiveColour>,
    /// Colour sessions: the bootstrap frames' plane backgrounds (the basis of the plane scales).
    norm_planes: Vec<Option<[f32; MAX_PLANES]>>,
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

    /// Plans a new frame from what the global pass measured ([`crate::global::GlobalPass::add_frame_detailed`]):
    /// its weight and scale normalised against the bootstrap frames, its motion relative to the
    /// session's geometry. Counts the frame as seen.
    ///
    /// # Errors
    /// The reason (for a user) when the frame cannot be used at all (global registration failed,
    /// unusable weight or background); the frame is then recorded as rejected.
    pub fn plan(&mut self, name: &str, frame: &GlobalFrame) -> Result<FramePlan, String> {
        self.plan_planes(name, frame, None)
    }

    /// [`LiveState::plan`] of a colour session's frame whose planes have the backgrounds
    /// `backgrounds` (R, G1, G2, B or R, G, B): its plane scales are normalised against the bootstrap
    /// frames' as a batch run normalises them against all frames ([`set_plane_scales`]).
    ///
    /// # Errors
    /// As [`LiveState::plan`].
    pub fn plan_planes(
        &mut self,
        name: &str,
        frame: &GlobalFrame,
        backgrounds: Option<[f32; MAX_PLANES]>,
    ) -> Result<FramePlan, String> {
        let quality = &frame.quality;
        let index = self.frames_seen;
        self.frames_seen += 1;
        let mut q = self.norm.clone();
        q.push(*quality);
        let weight = global_weights(&q).last().copied().unwrap_or(f32::NAN);
        let scale = photometric_scales(&q).last().copied().unwrap_or(f32::NAN);
        if let Some(reason) = frame_rejection(quality, weight, scale) {
            self.frames_rejected.push(name.to_string());
            return Err(reason.to_string());
        }
        let plane_scales = if self.colour.is_some() {
            // The bootstrap frames and this one, each with its scale (the fallback of a plane
            // without a usable background).
            let mut frames: Vec<UsedFrame> = (0..=self.norm_planes.len())
                .map(|i| UsedFrame {
                    index: i,
                    weight,
                    scale,
                    shift: quality.shift,
                    plane_scales: [scale; MAX_PLANES],
                    // Only the scales are asked of these frames here.
                    levels: [None; MAX_PLANES],
                })
                .collect();
            let mut all = self.norm_planes.clone();
            all.push(backgrounds);
            set_plane_scales(&mut frames, &all);
            frames
                .last()
                .map_or([scale; MAX_PLANES], |f| f.plane_scales)
        } else {
            [scale; MAX_PLANES]
        };
        let transform = geometry::relative_motion(&self.base, quality, frame.transform.as_ref());
        Ok(FramePlan {
            name: name.to_string(),
            index,
            weight,
            scale,
            shift: transform.shift,
            transform,
            plane_scales,
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
            reason: most_common_reason(&reasons),
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
        frame: &GlobalFrame,
    ) -> Result<LiveFrameReport, String> {
        self.check_size(name, image.dim())
            .map_err(|e| e.to_string())?;
        let plan = self.plan(name, frame)?;
        let cuts = self.cutouts(image, &plan).map_err(|e| e.to_string())?;
        let options = self.options;
        let mut tiles = self.take_tiles();
        let reports: Vec<(FrameReport, usize)> = tiles
            .iter_mut()
            .zip(&cuts)
            .map(|(t, c)| {
                let input = plan.input(&t.tile);
                t.add_frame(c.view(), &input, &options)
            })
            .collect();
        Ok(self.put_tiles(tiles, &plan, &reports))
    }

    /// The blended current reconstruction, `(rows, cols)`; `NaN` where no tile has data.
    pub fn snapshot(&self) -> Array2<f32> {
        self.blend_tiles(|k| self.tiles[k].current())
    }

    /// The tiles' images `image(k)` (tile `k`, in tile order) blended with their warp variances.
    fn blend_tiles(&self, image: impl Fn(usize) -> Array2<f32>) -> Array2<f32> {
        let images: Vec<(TileBox, Array2<f32>, f32)> = self
            .tiles
            .iter()
            .enumerate()
            .map(|(k, t)| (t.tile, image(k), t.warp_variance()))
            .collect();
        blend(
            self.rows,
            self.cols,
            &images,
            self.options.params.variance_window_sigma,
        )
    }

    /// Colour sessions: the blended current planes `(planes, rows, cols)` (R, G1, G2, B in cell space
    /// or R, G, B; NaN where no tile has data), blended as [`LiveState::snapshot`]; `None` for mono.
    pub fn snapshot_planes(&self) -> Option<ndarray::Array3<f32>> {
        let planes = self.colour?.route.planes();
        let currents: Vec<Vec<Array2<f32>>> =
            self.tiles.iter().map(LiveTile::current_planes).collect();
        let blended: Vec<Array2<f32>> = (0..planes)
            .map(|p| {
                self.blend_tiles(|k| {
                    let t = &self.tiles[k].tile;
                    currents[k]
                        .get(p)
                        .cloned()
                        .unwrap_or_else(|| Array2::from_elem((t.h, t.w), f32::NAN))
                })
            })
            .collect();
        let views: Vec<ArrayView2<f32>> = blended.iter().map(|b| b.view()).collect();
        ndarray::stack(ndarray::Axis(0), &views).ok()
    }

    /// Colour sessions: the pattern and route; `None` for mono.
    pub fn colour(&self) -> Option<LiveColour> {
        self.colour
    }

    /// Session settings.
    pub fn options(&self) -> &LiveOptions {
        &self.options
    }

    /// Image size `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The output geometry relative to the global reference frame (the bootstrap frames' robust mean
    /// transform; see the module docs).
    pub fn base(&self) -> &FrameTransform {
        &self.base
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::global::GlobalPass;
    use crate::simulate::{Scenario, SimConfig, Simulation};

    pub(crate) fn sim(frames: usize) -> Simulation {
        Simulation::new(SimConfig {
            frames,
            width: 192,
            height: 192,
            seed: 7,
            scenario: Scenario::Seeing,
            ..SimConfig::default()
        })
    }

    pub(crate) fn options() -> LiveOptions {
        let mut o = LiveOptions::new(OperatorParams {
            min_valid_frames: 5,
            ..OperatorParams::default()
        });
        o.bootstrap_frames = 5;
        o.rebase_every = 4;
        o
    }

    /// The first `n` frames of `sim` as bootstrap frames, measured by `pass`.
    pub(crate) fn bootstrap_frames(
        sim: &Simulation,
        pass: &mut GlobalPass,
        n: usize,
    ) -> Vec<BootstrapFrame> {
        (0..n)
            .map(|i| {
                let image = sim.frame(i);
                let measured = pass.add_frame_detailed(image.view());
                BootstrapFrame {
                    name: format!("f{i:03}.fits"),
                    image: CompactImage::new(image),
                    quality: measured.quality,
                    transform: measured.transform,
                }
            })
            .collect()
    }

    pub(crate) fn start(
        sim: &Simulation,
        pass: &mut GlobalPass,
        n: usize,
    ) -> (LiveState, Vec<LiveFrameReport>) {
        let frames = bootstrap_frames(sim, pass, n);
        LiveState::bootstrap(&frames, options()).expect("bootstrap")
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
            let q = pass.add_frame_detailed(image.view());
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
            let q = pass.add_frame_detailed(image.view());
            state.add_frame("x", image.view(), &q).expect("ok");
        }
        let mut image = s.frame(9);
        // A satellite trail: one bright row.
        image.row_mut(100).fill(60000.0);
        let q = pass.add_frame_detailed(image.view());
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
    fn wrong_size_frame_is_rejected() {
        let s = sim(6);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let small = Array2::<f32>::zeros((10, 10));
        let q = pass.add_frame_detailed(s.frame(5).view());
        let err = state
            .add_frame("small", small.view(), &q)
            .expect_err("size");
        assert!(err.contains("small"), "{err}");
    }
}
