//! The ordered accumulator: the one task that owns the output image. It takes tile results in tile
//! order from the worker pool ([`super::workers::Pool::ordered`] restores the order within its bounded
//! reorder window) and adds them to the mosaic one after the other, so the floating-point sums — and the
//! output bytes — are the same for any worker count and completion order.
//!
//! The blending itself is [`Blend`]: Hann-window overlap-add with each tile weighted by psi of its warp
//! variance; in colour mode each Bayer plane is blended by a mosaic of its own (same tiles, same
//! weights). Live sessions blend every frame's tiles with the same [`Blend`] (the incremental
//! accumulator of [`crate::live`]). What it does not: reconstruct, read or write files.

use futures_util::stream::{Stream, StreamExt};
use ndarray::{Array2, Array3, ArrayView2};

use tlr_core::mosaic::{psi, Mosaic};
use tlr_core::operator::TileResult;
use tlr_core::TileBox;

use super::workers::ReconstructedTile;
use crate::error::{Stage, StageError};
use crate::events::{Event, EventSink};
use crate::report::TileSummary;

/// The overlap-add of tiles into one image (and, in colour mode, into one image per Bayer plane).
/// Tiles must be added in tile order for bit-identical sums.
pub(crate) struct Blend {
    mosaic: Mosaic,
    planes: Vec<Mosaic>,
    variance_sigma: f32,
}

impl Blend {
    /// A blend of `tiles` into an image of `rows` x `cols` with `planes` colour planes (0 for mono);
    /// `variance_sigma` is `registration.local_tiles.variance_window_sigma` (psi's sigma).
    pub(crate) fn new(
        rows: usize,
        cols: usize,
        tiles: &[TileBox],
        planes: usize,
        variance_sigma: f32,
    ) -> Self {
        Self {
            mosaic: Mosaic::new(rows, cols, tiles),
            planes: (0..planes)
                .map(|_| Mosaic::new(rows, cols, tiles))
                .collect(),
            variance_sigma,
        }
    }

    /// The blend weight factor of a tile with this warp variance.
    pub(crate) fn psi(&self, warp_variance: f32) -> f32 {
        psi(warp_variance, self.variance_sigma)
    }

    /// Adds `image` (and its colour `planes`) of `tile` with the blend weight factor `weight`.
    pub(crate) fn add(
        &mut self,
        tile: &TileBox,
        image: ArrayView2<f32>,
        planes: &[Array2<f32>],
        weight: f32,
    ) {
        self.mosaic.add(tile, image, weight);
        for (mosaic, plane) in self.planes.iter_mut().zip(planes) {
            mosaic.add(tile, plane.view(), weight);
        }
    }

    /// The blended image (NaN where no tile reached) and, in colour mode, the planes `(planes, rows,
    /// cols)`.
    ///
    /// # Errors
    /// Colour planes of different shapes (cannot happen: they share the tiles).
    pub(crate) fn finish(self) -> Result<(Array2<f32>, Option<Array3<f32>>), StageError> {
        let planes = if self.planes.is_empty() {
            None
        } else {
            let finished: Vec<Array2<f32>> = self.planes.into_iter().map(Mosaic::finish).collect();
            let views: Vec<ArrayView2<f32>> = finished.iter().map(|p| p.view()).collect();
            Some(ndarray::stack(ndarray::Axis(0), &views).map_err(|e| {
                StageError::input(Stage::Accumulator, format!("colour planes: {e}"))
            })?)
        };
        Ok((self.mosaic.finish(), planes))
    }
}

/// What the accumulator hands back.
pub(crate) struct Accumulated {
    /// The blended image (NaN where no valid tile reached).
    pub image: Array2<f32>,
    /// Colour mode: the blended planes `(4, rows, cols)` (R, G1, G2, B); `None` for mono.
    pub planes: Option<Array3<f32>>,
    /// One summary per tile, in tile order.
    pub tiles: Vec<TileSummary>,
}

/// The accumulator stage.
pub(crate) struct Accumulator {
    blend: Blend,
    total: usize,
    events: EventSink,
}

impl Accumulator {
    /// An accumulator of `total` tiles into `blend`.
    pub(crate) fn new(blend: Blend, total: usize, events: EventSink) -> Self {
        Self {
            blend,
            total,
            events,
        }
    }

    /// Applies the results of `results` (in tile order) until the stream ends.
    ///
    /// # Errors
    /// The first error in `results` (a worker that panicked), or results missing at the end (a stage
    /// stopped early).
    pub(crate) async fn run(
        mut self,
        results: impl Stream<Item = Result<ReconstructedTile, StageError>>,
    ) -> Result<Accumulated, StageError> {
        let mut results = std::pin::pin!(results);
        let mut tiles = Vec::with_capacity(self.total);
        while let Some(done) = results.next().await {
            let done = done?;
            tiles.push(self.apply(done.result, &done.planes));
            (self.events)(&Event::TileDone {
                done: tiles.len(),
                total: self.total,
                valid: tiles.last().is_some_and(|t: &TileSummary| t.valid),
            });
        }
        if tiles.len() != self.total {
            return Err(StageError::input(
                Stage::Accumulator,
                format!(
                    "only {} of {} tiles arrived (the run stopped early)",
                    tiles.len(),
                    self.total
                ),
            ));
        }
        let (image, planes) = self.blend.finish()?;
        Ok(Accumulated {
            image,
            planes,
            tiles,
        })
    }

    /// Adds one result to the mosaic (valid tiles only) and returns its summary.
    fn apply(&mut self, result: TileResult, planes: &[Array2<f32>]) -> TileSummary {
        let weight = self.blend.psi(result.warp_variance);
        if result.valid {
            self.blend
                .add(&result.tile, result.image.view(), planes, weight);
        }
        TileSummary {
            tile: result.tile,
            valid: result.valid,
            invalid_reason: result.invalid_reason,
            frames_used: result.frames_used,
            mean_cc: result.mean_cc,
            warp_variance: result.warp_variance,
            mean_shift: result.mean_shift,
            iterations: result.iterations,
            fallback: result.fallback,
            psi: weight,
            not_kept: crate::report::NotKept::of(&result.frames),
            frames: result.frames,
        }
    }
}
