//! PNG pictures: decodable, right size, stretched as documented, written atomically.

use crate::global::{render, sky};
use ndarray::Array2;
use std::path::Path;
use tlr_core::preview::{
    stretch_to_u8, write_png_preview_atomic, write_rgb8_png_atomic, PreviewError,
};
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
fn rgb_pictures_are_written_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.png");
    let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
    write_rgb8_png_atomic(&path, 4, 3, &rgb).unwrap();
    let (w, h, ch, px) = decode(&path);
    assert_eq!((w, h, ch), (4, 3, 3));
    assert_eq!(px, rgb);
    // A buffer of another length, or an empty picture, is refused and names the file.
    for (w, h, len) in [(4, 3, 35), (0, 3, 0), (usize::MAX, 2, 6)] {
        let err = write_rgb8_png_atomic(&dir.path().join("bad.png"), w, h, &vec![0; len]);
        let err = err.unwrap_err();
        assert!(matches!(err, PreviewError::BadSize { .. }), "{err}");
        assert!(err.to_string().contains("bad.png"), "{err}");
    }
    assert_eq!(only_file(dir.path()), vec!["rgb.png"]);
    // The stretch on its own is the preview's.
    let img = star_image();
    let levels = stretch_to_u8(img.view());
    write_png_preview_atomic(&dir.path().join("p.png"), img.view()).unwrap();
    assert_eq!(decode(&dir.path().join("p.png")).3, levels);
}
