//! PNG pictures: decodable, right size, stretched as documented, written atomically.

use crate::global::{render, sky};
use ndarray::Array2;
use std::path::Path;
use tlr_core::preview::{
    write_histogram_png, write_png_preview_atomic, write_tile_map_png, write_warp_field_png,
    PreviewError,
};
use tlr_core::tile::tile_grid;
use tlr_core::Shift;

/// Decodes a PNG: (width, height, channels, pixels).
fn decode(path: &Path) -> (usize, usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    (info.width as usize, info.height as usize, channels, buf)
}

fn only_file(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn star_image() -> Array2<f32> {
    let stars = sky(200, 300, 150, 7);
    let mut img = render(200, 300, &stars, Shift::ZERO, 3.0, 1.0, 1000.0, 10.0, 1);
    for x in 0..300 {
        img[[0, x]] = f32::NAN; // a missing row
    }
    img
}

#[test]
fn preview_is_stretched_grayscale_with_black_nan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.png");
    write_png_preview_atomic(&path, star_image().view()).unwrap();
    assert_eq!(only_file(dir.path()), vec!["result.png"]);
    let (w, h, ch, px) = decode(&path);
    assert_eq!((w, h, ch), (300, 200, 1));
    assert!(px[..300].iter().all(|&v| v == 0), "NaN row must be black");
    let mut sky: Vec<u8> = px[300..].to_vec();
    sky.sort_unstable();
    let median = sky[sky.len() / 2];
    assert!((55..=75).contains(&median), "background grey {median}");
    assert_eq!(*sky.last().unwrap(), 255, "brightest star is white");
    if std::env::var_os("TLR_KEEP_PNG").is_some() {
        std::fs::copy(&path, "/tmp/tlr_preview.png").unwrap();
    }
}

#[test]
fn preview_errors_name_the_file_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing_dir").join("x.png");
    let err = write_png_preview_atomic(&path, star_image().view()).unwrap_err();
    assert!(matches!(err, PreviewError::Io { .. }));
    assert!(err.to_string().contains("missing_dir"), "{err}");
    let empty = Array2::<f32>::zeros((0, 5));
    let err = write_png_preview_atomic(&dir.path().join("e.png"), empty.view()).unwrap_err();
    assert!(matches!(err, PreviewError::BadSize { .. }));
    assert!(only_file(dir.path()).is_empty());
    // All-NaN: a black picture, not an error.
    let nan = Array2::from_elem((8, 8), f32::NAN);
    let p = dir.path().join("nan.png");
    write_png_preview_atomic(&p, nan.view()).unwrap();
    assert!(decode(&p).3.iter().all(|&v| v == 0));
}

#[test]
fn diagnostics_pictures_are_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let img = star_image();
    let tiles = tile_grid(200, 300, 64, 0.25).unwrap();
    let shifts: Vec<Shift> = tiles
        .iter()
        .map(|t| {
            if t.index == 3 {
                Shift::new(f32::NAN, f32::NAN)
            } else {
                Shift::new(0.02 * t.y0 as f32 - 1.0, 1.0 - 0.01 * t.x0 as f32)
            }
        })
        .collect();
    let warp = dir.path().join("warp_field.png");
    write_warp_field_png(&warp, img.view(), &tiles, &shifts, 0.0).unwrap();
    let (w, h, ch, px) = decode(&warp);
    assert_eq!((w, h, ch), (300, 200, 3));
    let yellow = px
        .chunks(3)
        .filter(|p| p[0] > 200 && p[1] > 150 && p[2] < 50)
        .count();
    let red = px
        .chunks(3)
        .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
        .count();
    assert!(yellow > 100 && red > 5, "arrows {yellow}, crosses {red}");
    assert!(matches!(
        write_warp_field_png(&warp, img.view(), &tiles, &shifts[1..], 1.0),
        Err(PreviewError::LengthMismatch { .. })
    ));

    let valid: Vec<bool> = tiles.iter().map(|t| t.index != 5).collect();
    let map = dir.path().join("tile_invalid_map.png");
    write_tile_map_png(&map, 200, 300, &tiles, &valid).unwrap();
    let (w, h, _, px) = decode(&map);
    assert_eq!((w, h), (300, 200));
    let t5 = tiles[5];
    let (cy, cx) = (t5.y0 + t5.h / 2, t5.x0 + t5.w / 2);
    let p = &px[3 * (cy * 300 + cx)..3 * (cy * 300 + cx) + 3];
    assert!(p[0] > 100 && p[1] < 60, "invalid tile red: {p:?}");
    let p = &px[3 * (30 * 300 + 30)..3 * (30 * 300 + 30) + 3];
    assert!(p[1] > p[0], "valid tile green: {p:?}");

    let hist = dir.path().join("warp_variance_hist.png");
    let values: Vec<f32> = (0..500)
        .map(|i| ((i * 37) % 100) as f32 * 0.01)
        .chain([f32::NAN])
        .collect();
    write_histogram_png(&hist, &values, 20).unwrap();
    let (w, h, _, px) = decode(&hist);
    assert_eq!((w, h), (640, 360));
    assert!(px.chunks(3).any(|p| p == [40, 70, 160]));
    write_histogram_png(&hist, &[], 0).unwrap();
    if std::env::var_os("TLR_KEEP_PNG").is_some() {
        std::fs::copy(&warp, "/tmp/tlr_warp.png").unwrap();
        std::fs::copy(&map, "/tmp/tlr_map.png").unwrap();
        write_histogram_png(&hist, &values, 20).unwrap();
        std::fs::copy(&hist, "/tmp/tlr_hist.png").unwrap();
    }
    assert_eq!(
        only_file(dir.path()),
        vec![
            "tile_invalid_map.png",
            "warp_field.png",
            "warp_variance_hist.png"
        ]
    );
}
