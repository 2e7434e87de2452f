//! The start of a live session: the first frames, held compactly ([`CompactImage`]), fix the weight
//! and scale normalisation, the tile size and the grid ([`BootstrapPlan::new`]); each tile then runs
//! through the batch operator on its own ([`BootstrapPlan::bootstrap_tile`], any thread) and the session
//! state is assembled in tile order ([`BootstrapPlan::finish`]).
//!
//! What it does not: the per-tile numerics (`tile.rs`), frames after the bootstrap (the session in
//! `mod.rs`), or reading files.

use std::ops::Range;

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis};

use crate::global::{FrameQuality, FrameTransform};
use crate::operator::{FrameInput, FrameReport, FrameStatus, PlaneStack, TileStack};
use crate::select::{
    most_common_reason, offset_of, select_frames, set_plane_scales, UsedFrame, MAX_PLANES,
};
use crate::tile::{tile_grid, tile_size_px};
use crate::{Shift, TileBox};

use super::colour::{luminance, LiveColour};
use super::geometry::{relative_motion, session_base};
use super::tile::{cut_into, LiveTile};
use super::{CheckpointSource, LiveError, LiveFrameReport, LiveOptions, LiveState};

/// The colour of a Bayer session's bootstrap: its pattern and route, and each bootstrap frame's
/// background per plane (R, G1, G2, B or R, G, B; `None` where not measured), from which the planes'
/// photometric scales are normalised as in a batch run.
#[derive(Debug, Clone)]
pub struct ColourBootstrap {
    /// Pattern and route.
    pub colour: LiveColour,
    /// Per bootstrap frame, in order.
    pub backgrounds: Vec<Option<[f32; MAX_PLANES]>>,
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
        Self::counts(image.view()).unwrap_or(Self::F32(image))
    }

    /// Like [`CompactImage::new`] from a borrowed image (copies the pixels once, compactly).
    pub fn from_view(image: ArrayView2<f32>) -> Self {
        Self::counts(image).unwrap_or_else(|| Self::F32(image.to_owned()))
    }

    /// `image` as u16 when every value is a whole number in 0..=65535.
    fn counts(image: ArrayView2<f32>) -> Option<Self> {
        image
            .iter()
            .all(|&v| (0.0..=65535.0).contains(&v) && v.fract() == 0.0)
            .then(|| Self::U16(image.mapv(|v| v as u16)))
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

    /// The pixels of `rows` x `cols` as f32 (a copy of the region; ranges are clipped to the image).
    pub fn region(&self, rows: Range<usize>, cols: Range<usize>) -> Array2<f32> {
        let (r, c) = self.dim();
        let (rows, cols) = (
            rows.start.min(r)..rows.end.min(r),
            cols.start.min(c)..cols.end.min(c),
        );
        match self {
            Self::U16(a) => a.slice(ndarray::s![rows, cols]).mapv(f32::from),
            Self::F32(a) => a.slice(ndarray::s![rows, cols]).to_owned(),
        }
    }

    /// Writes the cut-out of [`super::cutout`] into `out` (shape `(h + 2 margin, w + 2 margin)`; other
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
    /// The fitted linear geometry against the global reference frame
    /// ([`crate::global::GlobalFrame::transform`]); `None` stands for the translation `quality.shift`.
    pub transform: Option<FrameTransform>,
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
    /// The session's output geometry relative to the global reference frame ([`session_base`]).
    base: FrameTransform,
    /// Per used frame (in `used` order), its motion relative to `base`.
    motions: Vec<FrameTransform>,
    norm: Vec<FrameQuality>,
    reports: Vec<LiveFrameReport>,
    /// Colour sessions: the colour, and the used frames' plane scales (in `used` order).
    colour: Option<(ColourBootstrap, Vec<[f32; MAX_PLANES]>)>,
}

impl BootstrapPlan {
    /// Checks the frames, normalises weights and scales, picks the tile size and grid.
    ///
    /// # Errors
    /// As [`LiveState::bootstrap`].
    pub fn new(frames: &[BootstrapFrame], options: LiveOptions) -> Result<Self, LiveError> {
        Self::new_colour(frames, options, None)
    }

    /// [`BootstrapPlan::new`] of a session that is colour when `colour` is given: the frames' images
    /// are then the raw mosaics, the grid is the route's ([`super::ColourRoute::shape`]), the frames'
    /// qualities were measured on its luminance, and each tile's cut-outs come from the caller
    /// ([`BootstrapPlan::bootstrap_tile_planes`]).
    ///
    /// # Errors
    /// As [`LiveState::bootstrap`]; also when `colour` has no background list per frame.
    pub fn new_colour(
        frames: &[BootstrapFrame],
        options: LiveOptions,
        colour: Option<ColourBootstrap>,
    ) -> Result<Self, LiveError> {
        let first = frames.first().ok_or_else(|| LiveError::Bootstrap {
            reason: "no frame to start from".to_string(),
        })?;
        if colour
            .as_ref()
            .is_some_and(|c| c.backgrounds.len() != frames.len())
        {
            return Err(LiveError::Bootstrap {
                reason: "one plane background list per bootstrap frame is needed".to_string(),
            });
        }
        let (rows, cols) = colour.as_ref().map_or(first.image.dim(), |c| {
            c.colour.route.shape(first.image.dim())
        });
        for f in frames {
            let (r, c) = f.image.dim();
            if (r, c) != first.image.dim() {
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
        // Every bootstrap frame is measured, so weights and scales are normalised over all of them.
        let selection = select_frames(&frames.iter().map(|f| Some(f.quality)).collect::<Vec<_>>());
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
        for rejected in &selection.rejected {
            reports[rejected.index].reason = Some(rejected.reason.to_string());
        }
        let used: Vec<usize> = selection.used.iter().map(|f| f.index).collect();
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
        let inputs: Vec<FrameInput> = selection.used.iter().map(UsedFrame::input).collect();
        let centre = (0.5 * (rows as f32 - 1.0), 0.5 * (cols as f32 - 1.0));
        let measured: Vec<(FrameQuality, Option<FrameTransform>)> = used
            .iter()
            .map(|&i| (frames[i].quality, frames[i].transform))
            .collect();
        let base = session_base(&measured, centre);
        let motions = measured
            .iter()
            .map(|(q, t)| relative_motion(&base, q, t.as_ref()))
            .collect();
        let colour = colour.map(|c| {
            let mut used_frames = selection.used.clone();
            set_plane_scales(&mut used_frames, &c.backgrounds);
            let scales = used_frames.iter().map(|f| f.plane_scales).collect();
            (c, scales)
        });
        Ok(Self {
            rows,
            cols,
            tile_px,
            options,
            grid,
            used,
            inputs,
            base,
            motions,
            norm,
            reports,
            colour,
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
                    self.motions[slot].shift,
                    cutouts.index_axis_mut(ndarray::Axis(0), slot),
                );
            }
        }
        let stack = TileStack {
            tile: *tile,
            margin,
            cutouts,
            frames: self.inputs_for(tile),
        };
        LiveTile::bootstrap(&stack, &self.options)
    }

    /// Bootstraps tile `k` of a colour session ([`BootstrapPlan::new_colour`]): `cut` fills the
    /// planes' cut-outs `(planes, h + 2 margin, w + 2 margin)` (NaN-filled when called) of bootstrap
    /// frame `i` for the tile at the whole-pixel part of `shift` (as [`super::cutout_planes`] cuts
    /// them from the frame's planes); the luminance is their mean, and the tile goes through
    /// [`LiveTile::bootstrap_planes`]. For a mono plan this is [`BootstrapPlan::bootstrap_tile`].
    pub fn bootstrap_tile_planes(
        &self,
        k: usize,
        frames: &[BootstrapFrame],
        mut cut: impl FnMut(usize, &TileBox, Shift, ArrayViewMut3<f32>),
    ) -> (LiveTile, Vec<FrameReport>) {
        let (Some((colour, scales)), Some(tile)) = (&self.colour, self.grid.get(k)) else {
            return self.bootstrap_tile(k, frames);
        };
        let margin = self.options.margin_px;
        let (ch, cw) = (tile.h + 2 * margin, tile.w + 2 * margin);
        let planes = colour.colour.route.planes();
        let mut cutouts: Vec<Array3<f32>> = (0..planes)
            .map(|_| Array3::from_elem((self.used.len(), ch, cw), f32::NAN))
            .collect();
        let mut lum = Array3::from_elem((self.used.len(), ch, cw), f32::NAN);
        for (slot, &i) in self.used.iter().enumerate() {
            if frames.get(i).is_none() {
                continue;
            }
            let mut frame = Array3::from_elem((planes, ch, cw), f32::NAN);
            cut(i, tile, self.motions[slot].shift, frame.view_mut());
            lum.index_axis_mut(Axis(0), slot)
                .assign(&luminance(frame.view()));
            for (p, plane) in frame.axis_iter(Axis(0)).enumerate() {
                cutouts[p].index_axis_mut(Axis(0), slot).assign(&plane);
            }
        }
        let plane_stacks: Vec<PlaneStack> = cutouts
            .into_iter()
            .enumerate()
            .map(|(p, cutouts)| PlaneStack {
                cutouts,
                scales: scales.iter().map(|s| s[p]).collect(),
                // Live adds frames one by one; the Bayer drizzle needs all of them (batch only).
                own: None,
            })
            .collect();
        let stack = TileStack {
            tile: *tile,
            margin,
            cutouts: lum,
            frames: self.inputs_for(tile),
        };
        LiveTile::bootstrap_planes(&stack, &plane_stacks, &self.options)
    }

    /// The used frames' operator inputs in `tile`: each prior is the frame's motion relative to the
    /// session's geometry at the tile centre, minus the whole-pixel offset its cut-out is read at.
    fn inputs_for(&self, tile: &TileBox) -> Vec<FrameInput> {
        self.inputs
            .iter()
            .zip(&self.motions)
            .map(|(input, motion)| FrameInput {
                prior_shift: motion.tile_prior(tile, offset_of(motion.shift)),
                ..*input
            })
            .collect()
    }

    /// The session's output geometry relative to the global reference frame.
    pub fn base(&self) -> &FrameTransform {
        &self.base
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
            base: self.base,
            norm: self.norm.clone(),
            frames_seen: reports.len(),
            frames_used: Vec::new(),
            frames_rejected: Vec::new(),
            generation: 0,
            reference_file: None,
            source: CheckpointSource::default(),
            colour: self.colour.as_ref().map(|(c, _)| c.colour),
            norm_planes: self
                .colour
                .as_ref()
                .map(|(c, _)| c.backgrounds.clone())
                .unwrap_or_default(),
        };
        for (i, r) in reports.iter_mut().enumerate() {
            if r.reason.is_none() {
                r.reason = most_common_reason(&reasons[i]);
            }
            state.record(r);
        }
        (state, reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::global::GlobalPass;
    use crate::live::tests::{bootstrap_frames, options, sim};

    #[test]
    fn bootstrap_plan_in_any_tile_order_equals_serial_bootstrap() {
        let s = sim(6);
        let mut pass = GlobalPass::new();
        let frames = bootstrap_frames(&s, &mut pass, 5);
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
}
