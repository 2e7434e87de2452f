//! Blending: partition of unity, exact reproduction of constant and smooth images, no seams.

use ndarray::{s, Array2};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use tlr_core::mosaic::{psi, Mosaic};
use tlr_core::tile::{refine_tiles, tile_grid, RefineOptions};
use tlr_core::TileBox;

fn cut(image: &Array2<f32>, t: &TileBox) -> Array2<f32> {
    image.slice(s![t.rows(), t.cols()]).to_owned()
}

fn blend(image: &Array2<f32>, tiles: &[TileBox], psis: &[f32]) -> (Array2<f32>, Mosaic) {
    let (rows, cols) = image.dim();
    let mut m = Mosaic::new(rows, cols, tiles);
    for (t, &p) in tiles.iter().zip(psis) {
        m.try_add(t, cut(image, t).view(), p).unwrap();
    }
    let copy = m.clone();
    (m.finish(), copy)
}

#[test]
fn windows_form_a_partition_of_unity_on_regular_grids() {
    for &(rows, cols, tile, f) in &[
        (256usize, 256usize, 64usize, 0.25f32),
        (300, 517, 96, 0.25),
        (1000, 333, 128, 0.3),
        (241, 240, 128, 0.25), // awkward sizes (tile length adapted)
        (100, 90, 128, 0.25),  // one tile
        (500, 400, 64, 0.5),
        (500, 400, 64, 0.0),
    ] {
        let tiles = tile_grid(rows, cols, tile, f).unwrap();
        let m = Mosaic::new(rows, cols, &tiles);
        let mut sum = Array2::<f64>::zeros((rows, cols));
        for t in &tiles {
            let w = m.window(t.index).unwrap();
            assert!(w.iter().all(|&v| v > 0.0 && v <= 1.0));
            let mut dst = sum.slice_mut(s![t.rows(), t.cols()]);
            dst.zip_mut_with(&w, |a, &b| *a += f64::from(b));
        }
        let (lo, hi) = sum
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(
            (lo - 1.0).abs() < 1e-6 && (hi - 1.0).abs() < 1e-6,
            "{rows}x{cols} tile {tile} f {f}: window sum in [{lo}, {hi}]"
        );
    }
}

#[test]
fn constant_image_is_reproduced_everywhere_including_borders() {
    let (rows, cols) = (333, 410);
    let image = Array2::from_elem((rows, cols), 1234.5f32);
    let tiles = tile_grid(rows, cols, 64, 0.25).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let psis: Vec<f32> = tiles
        .iter()
        .map(|_| psi(rng.random_range(0.0..20.0), 2.0))
        .collect();
    let (out, m) = blend(&image, &tiles, &psis);
    assert_eq!(m.uncovered_pixels(), 0);
    assert!(m.coverage().iter().all(|&w| w > 0.0));
    let max_err = out
        .iter()
        .map(|&v| (v - 1234.5).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err <= 1234.5 * 1e-6, "max error {max_err}");
}

fn gradient(rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(y, x)| {
        let (y, x) = (y as f32, x as f32);
        200.0 + 0.37 * x - 0.21 * y + 5.0 * (x / 37.0).sin() * (y / 53.0).cos()
    })
}

#[test]
fn smooth_gradient_is_reproduced_with_psi_variations_and_refined_tiles() {
    let (rows, cols) = (300, 380);
    let image = gradient(rows, cols);
    let tiles = tile_grid(rows, cols, 80, 0.25).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let psis: Vec<f32> = tiles.iter().map(|_| rng.random_range(0.01..1.0)).collect();
    let (out, _) = blend(&image, &tiles, &psis);
    let err = (&out - &image)
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-3, "regular grid: max error {err}");

    // Irregular tiles after refinement: no partition of unity, the normalisation still makes it exact.
    let var: Vec<f32> = tiles.iter().map(|t| (t.index % 3) as f32).collect();
    let opts = RefineOptions {
        variance_threshold: 1.5,
        min_tile_size_px: 24,
        overlap_fraction: 0.25,
    };
    let refined = refine_tiles(&tiles, &var, &opts).unwrap().tiles;
    assert!(refined.len() > tiles.len());
    let psis: Vec<f32> = refined
        .iter()
        .map(|_| rng.random_range(0.01..1.0))
        .collect();
    let (out, m) = blend(&image, &refined, &psis);
    assert_eq!(m.uncovered_pixels(), 0);
    let err = (&out - &image)
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-3, "refined grid: max error {err}");
}

#[test]
fn nan_pixels_are_filled_by_neighbours_or_left_nan() {
    let (rows, cols) = (200, 200);
    let image = gradient(rows, cols);
    let tiles = tile_grid(rows, cols, 64, 0.25).unwrap();
    let mut m = Mosaic::new(rows, cols, &tiles);
    for t in &tiles {
        let mut c = cut(&image, t);
        if t.index == 0 {
            c.fill(f32::NAN); // the whole corner tile is missing
        }
        m.add(t, c.view(), 1.0);
    }
    assert!(m.errors().is_empty());
    let out = m.finish();
    let t0 = tiles[0];
    let t1 = tiles[1];
    // Pixels of tile 0 also covered by tile 1 come from tile 1; the rest are NaN (never 0).
    for y in t0.rows() {
        for x in t0.cols() {
            let covered = tiles[1..].iter().any(|t| t.contains(y, x));
            if covered {
                assert!((out[[y, x]] - image[[y, x]]).abs() < 1e-3);
            } else {
                assert!(out[[y, x]].is_nan());
            }
        }
    }
    assert!(t1.x0 < t0.w);
}

/// Mean |difference| of neighbouring pixels of `r` over the pairs that straddle a tile edge (a position
/// where some tile starts or ends) outside the overlaps of the other axis, and over the pairs whose two pixels lie in exactly one tile (away from
/// every edge and overlap, so with the same noise as the edge pairs, which are dominated by one tile too).
fn edge_vs_interior_gradient(r: &Array2<f32>, tiles: &[TileBox]) -> (f64, f64) {
    let (rows, cols) = r.dim();
    let mut count = Array2::<u8>::zeros((rows, cols));
    let mut xcount = vec![0u8; cols];
    let mut ycount = vec![0u8; rows];
    let mut xedge = vec![false; cols];
    let mut yedge = vec![false; rows];
    for t in tiles {
        count
            .slice_mut(s![t.rows(), t.cols()])
            .mapv_inplace(|c| c + 1);
        if t.y0 == 0 {
            t.cols().for_each(|x| xcount[x] += 1);
        }
        if t.x0 == 0 {
            t.rows().for_each(|y| ycount[y] += 1);
        }
        if t.x0 > 0 {
            xedge[t.x0 - 1] = true;
        }
        if t.x0 + t.w < cols {
            xedge[t.x0 + t.w - 1] = true;
        }
        if t.y0 > 0 {
            yedge[t.y0 - 1] = true;
        }
        if t.y0 + t.h < rows {
            yedge[t.y0 + t.h - 1] = true;
        }
    }
    let (mut se, mut ne, mut si, mut ni) = (0.0f64, 0usize, 0.0f64, 0usize);
    let mut tally = |edge: bool, single: bool, d: f32| {
        if edge {
            se += f64::from(d.abs());
            ne += 1;
        } else if single {
            si += f64::from(d.abs());
            ni += 1;
        }
    };
    for y in 0..rows {
        for x in 0..cols - 1 {
            let single = count[[y, x]] == 1 && count[[y, x + 1]] == 1;
            tally(
                xedge[x] && ycount[y] == 1,
                single,
                r[[y, x + 1]] - r[[y, x]],
            );
        }
    }
    for y in 0..rows - 1 {
        for x in 0..cols {
            let single = count[[y, x]] == 1 && count[[y + 1, x]] == 1;
            tally(
                yedge[y] && xcount[x] == 1,
                single,
                r[[y + 1, x]] - r[[y, x]],
            );
        }
    }
    (se / ne as f64, si / ni as f64)
}

#[test]
fn no_seams_when_tiles_disagree_slightly() {
    // Each reconstructed tile carries its own small offset error plus noise, as independent tile
    // reconstructions do. Hard-edged pasting shows steps at tile edges; the ramped blend must not.
    let (rows, cols) = (384, 384);
    let truth = gradient(rows, cols);
    let tiles = tile_grid(rows, cols, 96, 0.25).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let noise = Normal::new(0.0f32, 0.3).unwrap();
    let tile_images: Vec<Array2<f32>> = tiles
        .iter()
        .map(|t| {
            let offset: f32 = rng.random_range(-1.0..1.0);
            cut(&truth, t).mapv(|v| v + offset + noise.sample(&mut rng))
        })
        .collect();
    let mut m = Mosaic::new(rows, cols, &tiles);
    let mut pasted = Array2::<f32>::zeros((rows, cols));
    for (t, img) in tiles.iter().zip(&tile_images) {
        m.add(t, img.view(), psi(rng.random_range(0.0..4.0), 2.0));
        pasted.slice_mut(s![t.rows(), t.cols()]).assign(img);
    }
    let blended = m.finish();
    let (edge, interior) = edge_vs_interior_gradient(&(&blended - &truth), &tiles);
    let ratio = edge / interior;
    assert!(
        (ratio - 1.0).abs() < 0.05,
        "blend: edge/interior gradient ratio {ratio:.3}"
    );
    // The same measure detects the seams of naive pasting (so the test can fail).
    let (edge, interior) = edge_vs_interior_gradient(&(&pasted - &truth), &tiles);
    assert!(edge / interior > 1.3, "paste: ratio {:.3}", edge / interior);
}

#[test]
fn blending_is_deterministic() {
    let (rows, cols) = (150, 170);
    let image = gradient(rows, cols);
    let tiles = tile_grid(rows, cols, 48, 0.3).unwrap();
    let psis: Vec<f32> = tiles.iter().map(|t| 1.0 / (1.0 + t.index as f32)).collect();
    let (a, _) = blend(&image, &tiles, &psis);
    let (b, _) = blend(&image, &tiles, &psis);
    assert!(a
        .iter()
        .zip(b.iter())
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
#[ignore = "timing; run with --ignored --nocapture (release or the test profile)"]
fn timing_mosaic_1024() {
    let image = gradient(1024, 1024);
    let tiles = tile_grid(1024, 1024, 96, 0.25).unwrap();
    let cuts: Vec<Array2<f32>> = tiles.iter().map(|t| cut(&image, t)).collect();
    let t = std::time::Instant::now();
    let mut m = Mosaic::new(1024, 1024, &tiles);
    let t_new = t.elapsed();
    for (tile, c) in tiles.iter().zip(&cuts) {
        m.add(tile, c.view(), 0.9);
    }
    let t_add = t.elapsed();
    let out = m.finish();
    eprintln!(
        "mosaic 1024x1024, {} tiles: new {:.1} ms, + add {:.1} ms, + finish {:.1} ms",
        tiles.len(),
        t_new.as_secs_f64() * 1e3,
        t_add.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(out[[0, 0]].is_finite());
    let tiles = tile_grid(4000, 6000, 64, 0.25).unwrap();
    let t = std::time::Instant::now();
    let m = Mosaic::new(4000, 6000, &tiles);
    eprintln!(
        "mosaic 6000x4000, {} tiles: new {:.1} ms",
        tiles.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(m.dim(), (4000, 6000));
}
