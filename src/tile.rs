//! The tile grid: how large a tile is, where the overlapping tiles of an image sit, and the optional
//! adaptive refinement that splits tiles whose local motion is too irregular (`v4.adaptive_tiles`).
//!
//! What it does:
//! - [`tile_size_px`]: the nominal tile edge `T0 = clip(size_factor * FWHM, min, max)` (methodology v4, §2.6).
//! - [`tile_grid`]: a row-major grid of [`TileBox`]es that covers every pixel, with edge tiles flush with the
//!   image border, every overlap at least the requested fraction and at most 50 % of the tile (so each pixel
//!   lies in at most two tiles per axis, which the blending window of [`crate::mosaic`] relies on).
//! - [`refine_tiles`]: one refinement pass that replaces each tile whose warp variance exceeds a threshold
//!   by its four overlapping quarters, in a deterministic order.
//!
//! What it does not: read pixels, compute warp variances (the operator does) or loop over refinement passes
//! (the pipeline calls [`refine_tiles`] up to `v4.adaptive_tiles.max_refine_passes` times, re-running the
//! operator on the new tiles in between).
//!
//! Placement rule per axis (length `n`, nominal tile length `t`, overlap fraction `f`): if `n <= t` there is
//! one segment of length `n`. Otherwise `k` segments of one common length `L` start at
//! `round(i * (n - L) / (k - 1))`, `k` the smallest count whose steps are all `<= L - ceil(f * L)`
//! (overlap >= requested). The placement is accepted when every step is also `>= L / 2` (overlap <= 50 %).
//! `L = t` whenever that is possible; otherwise (for some `n` between `t` and about `2.5 t`) the nearest
//! length that works is used, trying `t + d` before `t - d` for `d = 1, 2, …`, so tiles are never far from
//! the nominal size.

use crate::geom::TileBox;
use thiserror::Error;

/// FWHM in pixels assumed by [`tile_size_px`] when the measured median FWHM is not a positive finite
/// number (no stars found): a typical sampling of amateur set-ups.
pub const DEFAULT_FWHM_PX: f32 = 3.0;

/// Factor used by [`tile_size_px`] when `size_factor` is not a positive finite number (methodology v4: 32).
pub const DEFAULT_SIZE_FACTOR: f32 = 32.0;

/// Largest overlap fraction [`tile_grid`] accepts: beyond 50 % a pixel would lie in three tiles per axis.
pub const MAX_OVERLAP_FRACTION: f32 = 0.5;

/// Errors of the tile grid.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TileError {
    /// The image has no pixels along at least one axis.
    #[error("cannot lay tiles over an empty image of {rows} x {cols} pixels (rows x cols)")]
    EmptyImage {
        /// Image rows.
        rows: usize,
        /// Image columns.
        cols: usize,
    },
    /// The requested tile size is zero.
    #[error("tile size must be at least 1 pixel, got 0")]
    ZeroTileSize,
    /// The overlap fraction is not a number in `[0, 0.5]`.
    #[error("tile overlap fraction must lie in [0, 0.5] (tile.overlap_fraction), got {value}")]
    BadOverlap {
        /// The rejected value.
        value: f32,
    },
    /// [`refine_tiles`] got a different number of warp variances than tiles.
    #[error("adaptive tile refinement got {variances} warp variances for {tiles} tiles")]
    LengthMismatch {
        /// Number of tiles.
        tiles: usize,
        /// Number of warp variances.
        variances: usize,
    },
    /// The refinement threshold is not a finite non-negative number.
    #[error(
        "adaptive tile refinement threshold must be a finite number >= 0 \
         (v4.adaptive_tiles.refine_variance_threshold), got {value}"
    )]
    BadThreshold {
        /// The rejected value.
        value: f32,
    },
}

/// Nominal tile edge in pixels: `clip(round(size_factor * median_fwhm), min_px, max_px)`.
///
/// A `median_fwhm` that is NaN, infinite or `<= 0` (no stars measured) is replaced by
/// [`DEFAULT_FWHM_PX`]; a `size_factor` that is not positive and finite by [`DEFAULT_SIZE_FACTOR`].
/// When `max_px < min_px` the result is `min_px`; the result is never 0.
pub fn tile_size_px(median_fwhm: f32, size_factor: f32, min_px: usize, max_px: usize) -> usize {
    let fwhm = if median_fwhm.is_finite() && median_fwhm > 0.0 {
        median_fwhm
    } else {
        DEFAULT_FWHM_PX
    };
    let factor = if size_factor.is_finite() && size_factor > 0.0 {
        size_factor
    } else {
        DEFAULT_SIZE_FACTOR
    };
    let raw = f64::from(fwhm) * f64::from(factor);
    // Saturating conversion: huge products clip to max_px below.
    let raw = if raw >= usize::MAX as f64 {
        usize::MAX
    } else {
        raw.round() as usize
    };
    let min_px = min_px.max(1);
    raw.clamp(min_px, max_px.max(min_px))
}

/// One axis segment: start and length in pixels.
type Segment = (usize, usize);

/// Required overlap in pixels for a tile of `len` pixels: `ceil(f * len)` (tolerant to rounding noise).
fn required_overlap(len: usize, f: f32) -> usize {
    let o = f64::from(f) * len as f64;
    (o - 1e-9).ceil().max(0.0) as usize
}

/// Segments of `k` equal tiles of length `len` over `0..n`, or `None` when the overlap rules fail.
fn try_segments(n: usize, len: usize, f: f32) -> Option<Vec<Segment>> {
    if len == 0 || len > n {
        return None;
    }
    if len == n {
        return Some(vec![(0, n)]);
    }
    let max_step = len - required_overlap(len, f);
    if max_step == 0 {
        return None;
    }
    let span = n - len;
    let steps = span.div_ceil(max_step); // k - 1 >= 1
                                         // Steps are floor(span/steps) or ceil(span/steps); ceil <= max_step by construction.
    let min_step = span / steps;
    if 2 * min_step < len {
        return None; // overlap would exceed 50 %
    }
    let segments = (0..=steps)
        .map(|i| ((i * span + steps / 2) / steps, len))
        .collect();
    Some(segments)
}

/// Overlapping segments covering `0..n` with nominal length `t` (see the module docs).
fn axis_segments(n: usize, t: usize, f: f32) -> Vec<Segment> {
    if n <= t {
        return vec![(0, n)];
    }
    if let Some(s) = try_segments(n, t, f) {
        return s;
    }
    for d in 1..n {
        if t + d <= n {
            if let Some(s) = try_segments(n, t + d, f) {
                return s;
            }
        }
        if d < t {
            if let Some(s) = try_segments(n, t - d, f) {
                return s;
            }
        }
    }
    vec![(0, n)] // unreachable in practice: length n always works
}

fn check_overlap(overlap_fraction: f32) -> Result<(), TileError> {
    if overlap_fraction.is_finite() && (0.0..=MAX_OVERLAP_FRACTION).contains(&overlap_fraction) {
        Ok(())
    } else {
        Err(TileError::BadOverlap {
            value: overlap_fraction,
        })
    }
}

/// The tile grid of a `rows x cols` image with nominal tile edge `tile_px` and minimum overlap
/// `overlap_fraction` (of the tile length) between neighbours.
///
/// Tiles come in row-major order (top row first, left to right) with `TileBox::index` = position.
/// Guarantees: every pixel is covered; all boxes lie inside the image; the first and last tile of each
/// row/column touch the border; neighbouring tiles overlap by at least `ceil(overlap_fraction * L)` and at
/// most `L / 2` pixels (`L` the tile length on that axis), so a pixel lies in at most two tiles per axis.
/// An axis shorter than `tile_px` gets one tile of the full axis length. Tile lengths differ from
/// `tile_px` only where no placement with exactly `tile_px` exists (module docs).
///
/// ```
/// use tlr_core::tile::{tile_grid, tile_size_px};
///
/// let t0 = tile_size_px(3.0, 32.0, 64, 512); // FWHM 3 px -> 96 px tiles
/// let tiles = tile_grid(1024, 1024, t0, 0.25).unwrap();
/// assert_eq!(tiles.len(), 14 * 14);
/// assert_eq!((tiles[1].x0, tiles[1].w), (71, 96)); // 25 px overlap >= 24 px requested
/// ```
///
/// # Errors
/// [`TileError::EmptyImage`] when `rows` or `cols` is 0, [`TileError::ZeroTileSize`] when `tile_px` is 0,
/// [`TileError::BadOverlap`] when `overlap_fraction` is not in `[0, 0.5]`.
pub fn tile_grid(
    rows: usize,
    cols: usize,
    tile_px: usize,
    overlap_fraction: f32,
) -> Result<Vec<TileBox>, TileError> {
    if rows == 0 || cols == 0 {
        return Err(TileError::EmptyImage { rows, cols });
    }
    if tile_px == 0 {
        return Err(TileError::ZeroTileSize);
    }
    check_overlap(overlap_fraction)?;
    let ys = axis_segments(rows, tile_px, overlap_fraction);
    let xs = axis_segments(cols, tile_px, overlap_fraction);
    let mut tiles = Vec::with_capacity(ys.len() * xs.len());
    for &(y0, h) in &ys {
        for &(x0, w) in &xs {
            tiles.push(TileBox {
                index: tiles.len(),
                x0,
                y0,
                w,
                h,
            });
        }
    }
    Ok(tiles)
}

/// Settings of one adaptive refinement pass (`v4.adaptive_tiles`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefineOptions {
    /// Split a tile when its warp variance `Var(dx) + Var(dy)` (px²) is strictly above this.
    pub variance_threshold: f32,
    /// Never create tiles with an edge shorter than this (`v4.adaptive_tiles.min_tile_size_px`).
    pub min_tile_size_px: usize,
    /// Overlap fraction between the quarters of a split tile (normally `tile.overlap_fraction`).
    pub overlap_fraction: f32,
}

/// Result of one refinement pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Refinement {
    /// The new tile list, re-indexed `0..len` in order.
    pub tiles: Vec<TileBox>,
    /// For every new tile, the index (in the input list) of the tile it came from.
    pub parent: Vec<usize>,
    /// Number of input tiles that were split.
    pub split: usize,
}

/// One pass of adaptive refinement: every tile whose warp variance exceeds the threshold is replaced by its
/// four overlapping quarters (2 x 2, row-major, overlap as in [`tile_grid`]), provided both quarter edges
/// are at least `min_tile_size_px`; other tiles stay. The order is deterministic: the input order with
/// each split tile replaced in place by its quarters; indexes are renumbered from 0.
///
/// A NaN variance (tile not measured, e.g. invalid) never triggers a split. The pipeline runs at most
/// `max_refine_passes` passes and stops early when [`Refinement::split`] is 0.
///
/// # Errors
/// [`TileError::LengthMismatch`] when `warp_variance.len() != tiles.len()`, [`TileError::BadThreshold`] for a
/// negative or non-finite threshold, [`TileError::BadOverlap`] for an overlap outside `[0, 0.5]`.
pub fn refine_tiles(
    tiles: &[TileBox],
    warp_variance: &[f32],
    options: &RefineOptions,
) -> Result<Refinement, TileError> {
    if tiles.len() != warp_variance.len() {
        return Err(TileError::LengthMismatch {
            tiles: tiles.len(),
            variances: warp_variance.len(),
        });
    }
    if !(options.variance_threshold.is_finite() && options.variance_threshold >= 0.0) {
        return Err(TileError::BadThreshold {
            value: options.variance_threshold,
        });
    }
    check_overlap(options.overlap_fraction)?;
    let min_px = options.min_tile_size_px.max(1);
    let mut out = Refinement {
        tiles: Vec::with_capacity(tiles.len()),
        parent: Vec::with_capacity(tiles.len()),
        split: 0,
    };
    for (parent, (tile, &var)) in tiles.iter().zip(warp_variance).enumerate() {
        let quarters = if var > options.variance_threshold {
            split_in_four(tile, min_px, options.overlap_fraction)
        } else {
            None
        };
        match quarters {
            Some(q) => {
                out.split += 1;
                for b in q {
                    out.tiles.push(TileBox {
                        index: out.tiles.len(),
                        ..b
                    });
                    out.parent.push(parent);
                }
            }
            None => {
                out.tiles.push(TileBox {
                    index: out.tiles.len(),
                    ..*tile
                });
                out.parent.push(parent);
            }
        }
    }
    Ok(out)
}

/// The 2 x 2 overlapping quarters of `tile`, or `None` when a quarter would be smaller than `min_px`.
fn split_in_four(tile: &TileBox, min_px: usize, f: f32) -> Option<[TileBox; 4]> {
    let halves = |n: usize| -> Option<[Segment; 2]> {
        // Two segments of equal length L with overlap >= f*L and <= L/2: L in [n/(2-f), 2n/3].
        let lo = (n as f64 / (2.0 - f64::from(f))).ceil() as usize;
        let hi = 2 * n / 3;
        (lo.max(1)..=hi)
            .find(|&len| {
                len >= min_px && 2 * len > n && {
                    let overlap = 2 * len - n;
                    overlap >= required_overlap(len, f) && 2 * overlap <= len
                }
            })
            .map(|len| [(0, len), (n - len, len)])
    };
    let ys = halves(tile.h)?;
    let xs = halves(tile.w)?;
    let mk = |(y, h): Segment, (x, w): Segment| TileBox {
        index: 0,
        x0: tile.x0 + x,
        y0: tile.y0 + y,
        w,
        h,
    };
    Some([
        mk(ys[0], xs[0]),
        mk(ys[0], xs[1]),
        mk(ys[1], xs[0]),
        mk(ys[1], xs[1]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_size_clips_and_defaults() {
        assert_eq!(tile_size_px(3.0, 32.0, 64, 512), 96);
        assert_eq!(tile_size_px(1.0, 32.0, 64, 512), 64);
        assert_eq!(tile_size_px(40.0, 32.0, 64, 512), 512);
        assert_eq!(tile_size_px(f32::NAN, 32.0, 64, 512), 96);
        assert_eq!(tile_size_px(-2.0, 32.0, 64, 512), 96);
        assert_eq!(tile_size_px(3.0, f32::NAN, 64, 512), 96);
        assert_eq!(tile_size_px(3.0, 32.0, 200, 100), 200);
        assert_eq!(tile_size_px(f32::INFINITY, 1e30, 0, 0), 1);
        assert_eq!(tile_size_px(1e30, 1e30, 64, 512), 512);
    }

    #[test]
    fn regular_axis_uses_nominal_size() {
        // 1024 px with 128 px tiles and 25 % overlap: step <= 96 -> 10 tiles.
        let s = axis_segments(1024, 128, 0.25);
        assert!(s.iter().all(|&(_, l)| l == 128));
        assert_eq!(s.first().unwrap().0, 0);
        assert_eq!(s.last().unwrap().0 + 128, 1024);
        assert_eq!(s.len(), 11); // span 896 px in steps of <= 96 px: 10 steps
    }

    #[test]
    fn awkward_length_stays_below_half_overlap() {
        // n = 1.875 t: three tiles of t would overlap by 56 %; two tiles of t would overlap < 25 %.
        let s = axis_segments(240, 128, 0.25);
        assert!(s.len() >= 2);
        for w in s.windows(2) {
            let overlap = w[0].0 + w[0].1 - w[1].0;
            assert!(2 * overlap <= w[0].1, "{s:?}");
            assert!(overlap >= required_overlap(w[0].1, 0.25), "{s:?}");
        }
    }

    #[test]
    fn small_image_is_one_tile_and_errors_are_reported() {
        let t = tile_grid(50, 70, 128, 0.25).unwrap();
        assert_eq!(
            t,
            vec![TileBox {
                index: 0,
                x0: 0,
                y0: 0,
                w: 70,
                h: 50
            }]
        );
        assert!(matches!(
            tile_grid(0, 10, 64, 0.25),
            Err(TileError::EmptyImage { .. })
        ));
        assert!(matches!(
            tile_grid(10, 10, 0, 0.25),
            Err(TileError::ZeroTileSize)
        ));
        for bad in [-0.1, 0.51, f32::NAN] {
            assert!(matches!(
                tile_grid(10, 10, 4, bad),
                Err(TileError::BadOverlap { .. })
            ));
        }
        // Tiny tiles still work (1 px tiles cannot overlap, so 2 px are used).
        let t = tile_grid(5, 5, 1, 0.25).unwrap();
        assert!(t.iter().all(|b| b.w == 2 && b.h == 2));
    }

    #[test]
    fn refine_splits_only_high_variance_tiles() {
        let tiles = tile_grid(256, 256, 128, 0.25).unwrap();
        let n = tiles.len();
        let mut var = vec![0.1; n];
        var[1] = 5.0;
        var[2] = f32::NAN;
        let opts = RefineOptions {
            variance_threshold: 1.0,
            min_tile_size_px: 32,
            overlap_fraction: 0.25,
        };
        let r = refine_tiles(&tiles, &var, &opts).unwrap();
        assert_eq!(r.split, 1);
        assert_eq!(r.tiles.len(), n + 3);
        assert_eq!(r.parent, {
            let mut p = vec![0, 1, 1, 1, 1];
            p.extend(2..n);
            p
        });
        for (i, t) in r.tiles.iter().enumerate() {
            assert_eq!(t.index, i);
        }
        // The quarters cover the parent exactly.
        let parent = tiles[1];
        for y in parent.rows() {
            for x in parent.cols() {
                assert!(r.tiles[1..5].iter().any(|q| q.contains(y, x)));
            }
        }
        for q in &r.tiles[1..5] {
            assert!(q.w >= 32 && q.h >= 32 && q.w < parent.w);
        }
        // Respect the minimum size.
        let opts_big = RefineOptions {
            min_tile_size_px: 100,
            ..opts
        };
        assert_eq!(refine_tiles(&tiles, &var, &opts_big).unwrap().split, 0);
        assert!(matches!(
            refine_tiles(&tiles, &var[1..], &opts),
            Err(TileError::LengthMismatch { .. })
        ));
    }
}
