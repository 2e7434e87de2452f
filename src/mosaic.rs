//! The serial, deterministic overlap-add that blends reconstructed tiles into the output image
//! (methodology v4, §2.7), without the seams of the published reference.
//!
//! What it does: `out(p) = sum_t w_t(p) * psi_t * I_t(p) / sum_t w_t(p) * psi_t` over the tiles `t` that
//! cover `p` and have a finite value there, accumulated in `f64` in the fixed tile order, so the result is
//! bit-identical for a given input whatever order the tiles were *computed* in.
//!
//! Window design (per tile, separable `w_t(y, x) = a_t(y) * b_t(x)`): along each axis the window is 1 in the
//! tile's interior and over any side that lies on the image border (never zero at the border), and a
//! raised-cosine ramp exactly over the overlap with the neighbouring tile on each other side. At a pixel
//! `j` of an overlap of length `L` the incoming ramp is `sin²(π/2 · (j + ½) / L)` and the outgoing one
//! `cos²(π/2 · (j + ½) / L)`, so the two sum to exactly 1 and are never 0. On the regular grids of
//! [`crate::tile::tile_grid`] (each pixel in at most two tiles per axis) the windows therefore form a
//! partition of unity. The division by the accumulated weight (explicit normalisation) keeps the result
//! correct where they do not: tile weights `psi` differ, refined (irregular) tiles, NaN pixels. For a
//! general tile set the ramp on a side spans the largest overlap with any tile reaching past that side
//! (capped at half the tile), which reproduces the regular-grid rule.
//!
//! What it does not: read or write files, run in parallel, or decide which tiles are valid (the caller
//! skips invalid tiles; pixels no valid tile covers come out NaN and are counted in
//! [`Mosaic::uncovered_pixels`] / shown by [`Mosaic::coverage`]).
//!
//! Memory: two `f64` accumulators, 16 bytes per output pixel, plus two small 1-D windows per tile.

use crate::geom::TileBox;
use ndarray::{Array2, ArrayView2};
use std::collections::BTreeMap;
use thiserror::Error;

/// Smallest tile weight [`psi`] returns, so that a pixel covered by one poorly registered tile only still
/// gets that tile's value instead of NaN (the normalisation makes the absolute scale irrelevant).
pub const PSI_FLOOR: f32 = 1e-20;

/// Tile weight from its warp variance: `psi(v) = exp(-v / (2 sigma²))`, floored at [`PSI_FLOOR`].
///
/// A non-finite or negative `warp_variance` (not measured) gives [`PSI_FLOOR`]; a `sigma` that is not a
/// positive finite number disables the weighting (returns 1).
pub fn psi(warp_variance: f32, sigma: f32) -> f32 {
    if !(sigma.is_finite() && sigma > 0.0) {
        return 1.0;
    }
    if !(warp_variance.is_finite() && warp_variance >= 0.0) {
        return PSI_FLOOR;
    }
    let v = f64::from(warp_variance) / (2.0 * f64::from(sigma) * f64::from(sigma));
    ((-v).exp() as f32).max(PSI_FLOOR)
}

/// Errors of [`Mosaic::try_add`].
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum MosaicError {
    /// The tile's index is not one of the tiles the mosaic was created with, or its box differs.
    #[error("tile {index}: not part of the tile grid this mosaic was created with (box {tile:?})")]
    UnknownTile {
        /// Index of the offending tile.
        index: usize,
        /// Its box.
        tile: TileBox,
    },
    /// Tiles must be added in increasing index order (determinism).
    #[error("tile {index}: added out of order (after tile {previous}); tiles must be blended in index order")]
    OutOfOrder {
        /// Index of the offending tile.
        index: usize,
        /// Index of the tile added before it.
        previous: usize,
    },
    /// The tile image does not have the tile's shape.
    #[error(
        "tile {index}: image is {got_rows} x {got_cols} pixels but the tile box is {rows} x {cols}"
    )]
    ShapeMismatch {
        /// Index of the offending tile.
        index: usize,
        /// Expected rows (box height).
        rows: usize,
        /// Expected columns (box width).
        cols: usize,
        /// Rows of the image given.
        got_rows: usize,
        /// Columns of the image given.
        got_cols: usize,
    },
    /// The tile weight is negative or not finite.
    #[error("tile {index}: blend weight psi = {psi} is not a finite number >= 0")]
    BadWeight {
        /// Index of the offending tile.
        index: usize,
        /// The weight given.
        psi: f32,
    },
}

/// Per-tile separable window: `rows[i] * cols[j]` for tile pixel `(i, j)`.
#[derive(Debug, Clone)]
struct Window {
    tile: TileBox,
    rows: Vec<f32>,
    cols: Vec<f32>,
}

/// Accumulates reconstructed tiles into the output image (see the module docs).
///
/// ```
/// use ndarray::{s, Array2};
/// use tlr_core::mosaic::{psi, Mosaic};
/// use tlr_core::tile::tile_grid;
///
/// let image = Array2::from_shape_fn((100, 120), |(y, x)| (y + 2 * x) as f32);
/// let tiles = tile_grid(100, 120, 48, 0.25).unwrap();
/// let mut mosaic = Mosaic::new(100, 120, &tiles);
/// for t in &tiles {
///     // In the pipeline this is the reconstructed tile; its warp variance gives the weight.
///     mosaic.add(t, image.slice(s![t.rows(), t.cols()]), psi(0.5, 2.0));
/// }
/// assert_eq!(mosaic.uncovered_pixels(), 0);
/// let out = mosaic.finish();
/// assert!((out[[50, 60]] - image[[50, 60]]).abs() < 1e-3);
/// ```
#[derive(Debug, Clone)]
pub struct Mosaic {
    rows: usize,
    cols: usize,
    windows: Vec<Window>,
    by_index: BTreeMap<usize, usize>,
    sum_wi: Array2<f64>,
    sum_w: Array2<f64>,
    last_index: Option<usize>,
    errors: Vec<MosaicError>,
    added: usize,
}

/// Raised-cosine ramp value for pixel `j` of an overlap of `len` pixels, rising from ~0 to ~1.
fn ramp_up(j: usize, len: usize) -> f32 {
    let t = (j as f64 + 0.5) / len as f64;
    let s = (std::f64::consts::FRAC_PI_2 * t).sin();
    (s * s) as f32
}

/// Raised-cosine ramp falling from ~1 to ~0; `ramp_up(j) + ramp_down(j) == 1` up to rounding.
fn ramp_down(j: usize, len: usize) -> f32 {
    let t = (j as f64 + 0.5) / len as f64;
    let c = (std::f64::consts::FRAC_PI_2 * t).cos();
    (c * c) as f32
}

/// 1-D window of length `n` with a rising ramp of `lead` and a falling ramp of `trail` pixels.
fn window_1d(n: usize, lead: usize, trail: usize) -> Vec<f32> {
    let mut w = vec![1.0f32; n];
    for (j, v) in w.iter_mut().take(lead).enumerate() {
        *v *= ramp_up(j, lead);
    }
    for j in 0..trail.min(n) {
        w[n - trail + j] *= ramp_down(j, trail);
    }
    w
}

/// Ramp lengths `(lead, trail)` of tile `t` along one axis: the largest overlap with a tile that reaches
/// past the side (and overlaps `t` on the other axis), capped at half the tile length.
fn ramps(t: &TileBox, tiles: &[TileBox], along_x: bool) -> (usize, usize) {
    let (a0, a1) = if along_x {
        (t.x0, t.x0 + t.w)
    } else {
        (t.y0, t.y0 + t.h)
    };
    let (b0, b1) = if along_x {
        (t.y0, t.y0 + t.h)
    } else {
        (t.x0, t.x0 + t.w)
    };
    let (mut lead, mut trail) = (0usize, 0usize);
    for u in tiles {
        if u == t {
            continue;
        }
        let (u0, u1, v0, v1) = if along_x {
            (u.x0, u.x0 + u.w, u.y0, u.y0 + u.h)
        } else {
            (u.y0, u.y0 + u.h, u.x0, u.x0 + u.w)
        };
        if v1 <= b0 || v0 >= b1 {
            continue; // no overlap on the other axis
        }
        if u0 < a0 && u1 > a0 {
            lead = lead.max(u1.min(a1) - a0);
        }
        if u1 > a1 && u0 < a1 {
            trail = trail.max(a1 - u0.max(a0));
        }
    }
    let half = (a1 - a0) / 2;
    (lead.min(half), trail.min(half))
}

impl Mosaic {
    /// An empty mosaic of `rows x cols` pixels for the given tiles (their windows are computed here).
    /// Tiles reaching outside the image are clipped when added; duplicate indexes keep the first box.
    pub fn new(rows: usize, cols: usize, tiles: &[TileBox]) -> Self {
        let mut by_index = BTreeMap::new();
        let mut windows = Vec::with_capacity(tiles.len());
        for t in tiles {
            if by_index.contains_key(&t.index) {
                continue;
            }
            let (top, bottom) = ramps(t, tiles, false);
            let (left, right) = ramps(t, tiles, true);
            by_index.insert(t.index, windows.len());
            windows.push(Window {
                tile: *t,
                rows: window_1d(t.h, top, bottom),
                cols: window_1d(t.w, left, right),
            });
        }
        Self {
            rows,
            cols,
            windows,
            by_index,
            sum_wi: Array2::zeros((rows, cols)),
            sum_w: Array2::zeros((rows, cols)),
            last_index: None,
            errors: Vec::new(),
            added: 0,
        }
    }

    /// Output shape `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The blending window of tile `index` (shape `(h, w)`, values in `(0, 1]`), or `None` for an unknown
    /// index. Useful for diagnostics and tests.
    pub fn window(&self, index: usize) -> Option<Array2<f32>> {
        let w = &self.windows[*self.by_index.get(&index)?];
        Some(Array2::from_shape_fn((w.tile.h, w.tile.w), |(i, j)| {
            w.rows[i] * w.cols[j]
        }))
    }

    /// Adds one reconstructed tile with weight `psi` (see [`psi`]); NaN pixels of `image` contribute nothing.
    ///
    /// Must be called in increasing tile index order (skipping tiles is fine); this is `debug_assert`ed.
    /// A tile that cannot be added (see [`Mosaic::try_add`]) is ignored and its error recorded in
    /// [`Mosaic::errors`], so a release build never panics here.
    pub fn add(&mut self, tile: &TileBox, image: ArrayView2<f32>, psi: f32) {
        if let Err(e) = self.try_add(tile, image, psi) {
            debug_assert!(!matches!(e, MosaicError::OutOfOrder { .. }), "{e}");
            self.errors.push(e);
        }
    }

    /// Like [`Mosaic::add`], returning the reason when the tile cannot be added (nothing is changed then).
    ///
    /// # Errors
    /// [`MosaicError::UnknownTile`], [`MosaicError::OutOfOrder`], [`MosaicError::ShapeMismatch`],
    /// [`MosaicError::BadWeight`].
    pub fn try_add(
        &mut self,
        tile: &TileBox,
        image: ArrayView2<f32>,
        psi: f32,
    ) -> Result<(), MosaicError> {
        let index = tile.index;
        let pos = match self.by_index.get(&index) {
            Some(&p) if self.windows[p].tile == *tile => p,
            _ => return Err(MosaicError::UnknownTile { index, tile: *tile }),
        };
        if let Some(previous) = self.last_index {
            if index <= previous {
                return Err(MosaicError::OutOfOrder { index, previous });
            }
        }
        if image.dim() != (tile.h, tile.w) {
            return Err(MosaicError::ShapeMismatch {
                index,
                rows: tile.h,
                cols: tile.w,
                got_rows: image.nrows(),
                got_cols: image.ncols(),
            });
        }
        if !(psi.is_finite() && psi >= 0.0) {
            return Err(MosaicError::BadWeight { index, psi });
        }
        self.last_index = Some(index);
        self.added += 1;
        let win = &self.windows[pos];
        let psi = f64::from(psi);
        let y_end = (tile.y0 + tile.h).min(self.rows);
        let x_end = (tile.x0 + tile.w).min(self.cols);
        for y in tile.y0..y_end {
            let i = y - tile.y0;
            let wy = f64::from(win.rows[i]) * psi;
            let src = image.row(i);
            let mut acc_wi = self.sum_wi.row_mut(y);
            let mut acc_w = self.sum_w.row_mut(y);
            for x in tile.x0..x_end {
                let j = x - tile.x0;
                let v = src[j];
                if v.is_finite() {
                    let w = wy * f64::from(win.cols[j]);
                    acc_wi[x] += w * f64::from(v);
                    acc_w[x] += w;
                }
            }
        }
        Ok(())
    }

    /// Number of tiles added so far.
    pub fn tiles_added(&self) -> usize {
        self.added
    }

    /// Tiles that [`Mosaic::add`] could not add, with the reason.
    pub fn errors(&self) -> &[MosaicError] {
        &self.errors
    }

    /// The coverage map for diagnostics: the accumulated blend weight `sum_t w_t(p) * psi_t` per pixel,
    /// 0 where no added tile contributed a finite value (those pixels come out NaN). Call it before
    /// [`Mosaic::finish`].
    pub fn coverage(&self) -> Array2<f32> {
        self.sum_w.mapv(|w| w as f32)
    }

    /// Pixels that no added tile covers with a finite value (they come out NaN).
    pub fn uncovered_pixels(&self) -> usize {
        self.sum_w.iter().filter(|&&w| w <= 0.0).count()
    }

    /// The normalised image of the tiles added so far (NaN where the weight sum is 0), without consuming.
    pub fn image(&self) -> Array2<f32> {
        let mut out = Array2::from_elem((self.rows, self.cols), f32::NAN);
        ndarray::Zip::from(&mut out)
            .and(&self.sum_wi)
            .and(&self.sum_w)
            .for_each(|o, &wi, &w| {
                if w > 0.0 {
                    *o = (wi / w) as f32;
                }
            });
        out
    }

    /// The blended image: `sum(w * I) / sum(w)` per pixel, NaN where the weight sum is 0.
    pub fn finish(self) -> Array2<f32> {
        self.image()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_are_complementary_and_positive() {
        for len in [1usize, 2, 7, 32] {
            for j in 0..len {
                let (u, d) = (ramp_up(j, len), ramp_down(j, len));
                assert!(u > 0.0 && d > 0.0);
                assert!((u + d - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn psi_values() {
        assert_eq!(psi(0.0, 2.0), 1.0);
        assert!((psi(8.0, 2.0) - (-1.0f32).exp()).abs() < 1e-6);
        assert_eq!(psi(1e9, 2.0), PSI_FLOOR);
        assert_eq!(psi(f32::NAN, 2.0), PSI_FLOOR);
        assert_eq!(psi(3.0, 0.0), 1.0);
    }

    #[test]
    fn errors_are_recorded_not_panicking() {
        let tiles = crate::tile::tile_grid(64, 64, 32, 0.25).unwrap();
        let mut m = Mosaic::new(64, 64, &tiles);
        let t = tiles[0];
        let bad = Array2::<f32>::zeros((3, 3));
        assert!(matches!(
            m.try_add(&t, bad.view(), 1.0),
            Err(MosaicError::ShapeMismatch { .. })
        ));
        let img = Array2::<f32>::ones((t.h, t.w));
        assert!(matches!(
            m.try_add(&t, img.view(), f32::NAN),
            Err(MosaicError::BadWeight { .. })
        ));
        let foreign = TileBox { w: 5, ..t };
        assert!(matches!(
            m.try_add(&foreign, img.view(), 1.0),
            Err(MosaicError::UnknownTile { .. })
        ));
        m.add(
            &tiles[1],
            Array2::ones((tiles[1].h, tiles[1].w)).view(),
            1.0,
        );
        assert!(matches!(
            m.try_add(&t, img.view(), 1.0),
            Err(MosaicError::OutOfOrder { .. })
        ));
        assert_eq!(m.tiles_added(), 1);
        assert!(m.uncovered_pixels() > 0);
        let out = m.finish();
        assert!(out[[63, 0]].is_nan());
        assert_eq!(out[[0, 40]], 1.0);
    }
}
