//! Properties of the tile grid: coverage, overlap bounds, boxes inside the image, order.

use proptest::prelude::*;
use tlr_core::tile::{refine_tiles, tile_grid, RefineOptions};
use tlr_core::TileBox;

/// Distinct start positions and lengths of the tiles along one axis (sorted).
fn axis(tiles: &[TileBox], along_x: bool) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = tiles
        .iter()
        .map(|t| if along_x { (t.x0, t.w) } else { (t.y0, t.h) })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn check_axis(segs: &[(usize, usize)], n: usize, f: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(segs[0].0, 0, "first tile flush with the border");
    let last = segs[segs.len() - 1];
    prop_assert_eq!(last.0 + last.1, n, "last tile flush with the border");
    for w in segs.windows(2) {
        let (a, b) = (w[0], w[1]);
        prop_assert!(b.0 < a.0 + a.1, "gap between {:?} and {:?}", a, b);
        let overlap = (a.0 + a.1 - b.0) as f32;
        let len = a.1.min(b.1) as f32;
        prop_assert!(
            overlap + 1e-3 >= f * len,
            "overlap {} < {} * {}",
            overlap,
            f,
            len
        );
        prop_assert!(
            overlap <= 0.5 * len,
            "overlap {} > half of {}",
            overlap,
            len
        );
    }
    // Each coordinate in at most two tiles.
    for w in segs.windows(3) {
        prop_assert!(w[2].0 >= w[0].0 + w[0].1, "three tiles overlap: {:?}", w);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn grid_covers_every_pixel_with_bounded_overlap(
        rows in 1usize..700,
        cols in 1usize..700,
        tile_px in 2usize..300,
        f in 0.0f32..=0.5,
    ) {
        let tiles = tile_grid(rows, cols, tile_px, f).unwrap();
        let mut cover = vec![0u8; rows * cols];
        for (i, t) in tiles.iter().enumerate() {
            prop_assert_eq!(t.index, i);
            prop_assert!(t.w > 0 && t.h > 0);
            prop_assert!(t.x0 + t.w <= cols && t.y0 + t.h <= rows, "box {:?} outside", t);
            for y in t.rows() {
                for x in t.cols() {
                    cover[y * cols + x] += 1;
                }
            }
        }
        prop_assert!(cover.iter().all(|&c| (1..=4).contains(&c)));
        check_axis(&axis(&tiles, true), cols, f)?;
        check_axis(&axis(&tiles, false), rows, f)?;
        // Row-major order.
        for w in tiles.windows(2) {
            prop_assert!((w[0].y0, w[0].x0) < (w[1].y0, w[1].x0));
        }
        // Tiles keep the nominal size unless the axis is shorter, and are never far from it.
        for t in &tiles {
            for (len, n) in [(t.w, cols), (t.h, rows)] {
                if n <= tile_px {
                    prop_assert_eq!(len, n);
                } else if f <= 0.4 && tile_px >= 16 {
                    // Near f = 0.5 only few lengths work; elsewhere the gaps are small.
                    prop_assert!(len as f32 >= 0.7 * tile_px as f32 - 2.0 && len as f32 <= 1.3 * tile_px as f32 + 2.0,
                        "len {} for nominal {} on axis {}", len, tile_px, n);
                }
            }
        }
    }

    #[test]
    fn refined_tiles_still_cover_and_stay_inside(
        rows in 64usize..400,
        cols in 64usize..400,
        seed in 0u64..1000,
    ) {
        let tiles = tile_grid(rows, cols, 96, 0.25).unwrap();
        let var: Vec<f32> = tiles.iter().map(|t| ((t.index as u64 * 7 + seed) % 5) as f32).collect();
        let opts = RefineOptions { variance_threshold: 2.5, min_tile_size_px: 32, overlap_fraction: 0.25 };
        let r = refine_tiles(&tiles, &var, &opts).unwrap();
        let mut cover = vec![false; rows * cols];
        for (i, t) in r.tiles.iter().enumerate() {
            prop_assert_eq!(t.index, i);
            prop_assert!(t.x0 + t.w <= cols && t.y0 + t.h <= rows);
            prop_assert!(t.w >= 32.min(cols) && t.h >= 32.min(rows));
            for y in t.rows() { for x in t.cols() { cover[y * cols + x] = true; } }
        }
        prop_assert!(cover.iter().all(|&c| c));
        // Deterministic.
        prop_assert_eq!(refine_tiles(&tiles, &var, &opts).unwrap(), r);
    }
}

#[test]
fn typical_frame_grid() {
    // 1024 x 1024 frame, FWHM 3 px -> 96 px tiles.
    let t = tlr_core::tile::tile_size_px(3.0, 32.0, 64, 512);
    let tiles = tile_grid(1024, 1024, t, 0.25).unwrap();
    assert!(tiles.iter().all(|b| b.w == 96 && b.h == 96));
    assert_eq!(tiles.len(), 14 * 14);
}
