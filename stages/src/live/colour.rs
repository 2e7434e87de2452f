//! Colour in a live session, on the batch run's colour code: the route (frames demosaiced one by one
//! or Bayer planes in cell space) is decided once from the bootstrap frames with the batch run's rule
//! ([`crate::batch::sampling_fwhm_cells`] against [`crate::batch::DEBAYER_BELOW_FWHM_CELLS`]); a
//! frame becomes its planes through the batch stores ([`DebayeredFrames`] or [`ColourFrames`]) and is
//! measured through their luminance with the per-plane backgrounds (`global_pass::measurable`); the
//! bootstrap's cut-outs are read from the same stores over the bootstrap frames, held compactly as raw
//! mosaics (`CompactFrames`).
//!
//! What it does not: stack (the tile stage does, with [`tlr_core::live`]'s colour accumulators), decide
//! whether a frame is Bayer at all (the reader does, from its header or the configuration), or write
//! the RGB snapshot (the publisher does).

use std::ops::Range;
use std::sync::Arc;

use ndarray::{s, Array2, Array3, ArrayViewMut3};

use tlr_core::bayer::CfaPattern;
use tlr_core::live::{cutout_window, ColourRoute, CompactImage, LiveColour};
use tlr_core::select::MAX_PLANES;
use tlr_core::{Shift, TileBox};

use crate::error::StageError;
use crate::source::{ColourFrames, DebayeredFrames, FrameMeta, FrameStore, MemoryFrames};

/// A colour frame on its way to the tile stage.
pub(super) struct ColourFrame {
    /// The session's colour.
    pub(super) colour: LiveColour,
    /// The raw mosaic as read, for a bootstrap frame (kept by the bootstrap, compactly); `None` after.
    pub(super) mosaic: Option<Arc<Array2<f32>>>,
    /// Its planes on the session's grid, `(planes, rows, cols)`.
    pub(super) planes: Arc<Array3<f32>>,
    /// The background of each plane (R, G1, G2, B or R, G, B, then NaN).
    pub(super) backgrounds: [f32; MAX_PLANES],
}

/// Raw mosaics held compactly (the bootstrap frames, or the frames that decide the route) as a frame
/// store: `image` finds a frame's pixels in `T`; regions are converted as they are read.
pub(super) struct CompactFrames<T> {
    frames: Arc<Vec<T>>,
    image: fn(&T) -> &CompactImage,
}

impl<T> CompactFrames<T> {
    pub(super) fn new(frames: Arc<Vec<T>>, image: fn(&T) -> &CompactImage) -> Self {
        Self { frames, image }
    }

    fn frame(&self, index: usize) -> Result<&CompactImage, StageError> {
        self.frames.get(index).map(self.image).ok_or_else(|| {
            StageError::input(
                crate::error::Stage::Tiles,
                format!("held frame {index} does not exist"),
            )
        })
    }
}

impl<T: Send + Sync> FrameStore for CompactFrames<T> {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn shape(&self) -> (usize, usize) {
        self.frames
            .first()
            .map_or((0, 0), |f| (self.image)(f).dim())
    }

    fn meta(&self, _index: usize) -> FrameMeta {
        FrameMeta::default()
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        Ok(self.frame(index)?.to_f32())
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        let image = self.frame(index)?;
        Ok(regions
            .iter()
            .map(|(rows, cols)| image.region(rows.clone(), cols.clone()))
            .collect())
    }
}

/// `mosaics` seen through the batch store of `colour`'s route: planes R, G, B demosaiced frame by
/// frame, or R, G1, G2, B in cell space.
///
/// # Errors
/// Frames smaller than 2x2.
pub(super) fn route_store(
    mosaics: Arc<dyn FrameStore>,
    colour: LiveColour,
) -> Result<Arc<dyn FrameStore>, StageError> {
    Ok(match colour.route {
        ColourRoute::Debayered => Arc::new(DebayeredFrames::new(mosaics, colour.pattern)?),
        ColourRoute::CellSpace => Arc::new(ColourFrames::new(mosaics, colour.pattern)?),
    })
}

/// The route of a session whose first frames are `mosaics`, by the batch run's rule: demosaiced one by
/// one when their stars are narrower than [`crate::batch::DEBAYER_BELOW_FWHM_CELLS`] cells.
///
/// # Errors
/// Frames smaller than 2x2.
pub(super) fn decide(
    mosaics: Arc<dyn FrameStore>,
    pattern: CfaPattern,
) -> Result<LiveColour, StageError> {
    let cells = ColourFrames::new(mosaics, pattern)?;
    let route =
        if crate::batch::sampling_fwhm_cells(&cells) < crate::batch::DEBAYER_BELOW_FWHM_CELLS {
            ColourRoute::Debayered
        } else {
            ColourRoute::CellSpace
        };
    Ok(LiveColour { pattern, route })
}

/// One frame's planes on the session's grid and what the global pass measures: their luminance; the
/// mosaic is passed on only when `keep_mosaic` (a bootstrap frame).
///
/// # Errors
/// Frames smaller than 2x2, or a failed demosaic.
pub(super) fn frame_planes(
    mosaic: Array2<f32>,
    colour: LiveColour,
    keep_mosaic: bool,
) -> Result<(Arc<Array2<f32>>, ColourFrame), StageError> {
    let one: Arc<dyn FrameStore> = Arc::new(MemoryFrames::new(vec![mosaic])?);
    let planes = route_store(Arc::clone(&one), colour)?.read_full_planes(0)?;
    let (luminance, backgrounds) = crate::batch::global_pass::measurable(planes.clone())?;
    let mosaic = if keep_mosaic {
        Some(Arc::new(one.read_full(0)?))
    } else {
        None
    };
    let frame = ColourFrame {
        colour,
        mosaic,
        planes: Arc::new(planes),
        backgrounds: backgrounds.unwrap_or([f32::NAN; MAX_PLANES]),
    };
    Ok((luminance, frame))
}

/// Fills `out` `(planes, h + 2 margin, w + 2 margin)` with bootstrap frame `index`'s planes for `tile`
/// at the whole-pixel part of `shift`, read through `store` (a [`route_store`] over
/// `CompactFrames`: only the region is demosaiced or split, to the bit as the whole frame). Pixels
/// outside the frame stay as they are (NaN); a frame that cannot be read leaves them all so.
pub(super) fn cut_bootstrap_planes(
    store: &dyn FrameStore,
    index: usize,
    (tile, margin, shift): (&TileBox, usize, Shift),
    mut out: ArrayViewMut3<f32>,
) {
    let Some((ys, xs, (y0, x0))) = cutout_window(store.shape(), tile, margin, shift) else {
        return;
    };
    let (h, w) = (ys.len(), xs.len());
    if let Ok(Some(region)) = store
        .read_plane_regions(index, &[(ys, xs)])
        .map(|mut r| r.pop())
    {
        if region.dim().0 == out.dim().0 {
            out.slice_mut(s![.., y0..y0 + h, x0..x0 + w])
                .assign(&region);
        }
    }
}
