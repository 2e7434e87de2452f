//! Export formats read back with other decoders (the `tiff` and `png` crates' decoders, the FITS
//! reader): mono and colour, 16-bit and float, normalised, against values computed from the documented
//! rule written out in the test helpers (0 at min(0, minimum), 65535 or 1 at the maximum, linear); the
//! float FITS output unchanged, byte for byte.

#[path = "../../stages/tests/common/images.rs"]
mod images;

use std::path::Path;

use images::{pixel_order, read_png, read_tiff, rule_u16, rule_unit};
use ndarray::{Array3, Axis};
use tlr_core::export::{write_atomic, BitDepth, Export, ExportOptions, FileFormat};
use tlr_core::fits::{self, CardValue, OutputMeta, SampleFormat};

/// A `(planes, 5, 7)` image with negative values, a NaN and different ranges per plane.
fn image(planes: usize) -> Array3<f32> {
    let mut a = Array3::from_shape_fn((planes, 5, 7), |(p, r, c)| {
        (p as f32 + 1.0) * 37.5 * (r * 7 + c) as f32 - 120.0
    });
    a[[0, 1, 2]] = f32::NAN;
    a
}

fn export(path: &Path, bit_depth: Option<BitDepth>, normalize: bool) -> Export {
    Export::for_path(
        path,
        &ExportOptions {
            bit_depth,
            normalize,
        },
    )
    .unwrap()
}

#[test]
fn tiff_mono_and_colour_16_bit_and_float_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let meta = OutputMeta::default();
    for planes in [1, 3] {
        let a = image(planes);
        // 16-bit (the TIFF default): the rule's integers.
        let path = dir.path().join(format!("i{planes}.tif"));
        write_atomic(&path, a.view(), &export(&path, None, false), &meta).unwrap();
        let read = read_tiff(&path);
        assert_eq!((read.width, read.height, read.channels), (7, 5, planes));
        assert_eq!(read.samples.u16(), rule_u16(&a.view()));
        assert!(read.text("Software").starts_with("tlr "), "{read:?}");
        assert!(read.text("Description").contains("-> 65535"), "{read:?}");

        // 32-bit float: the values as they are (NaN included).
        let path = dir.path().join(format!("f{planes}.tiff"));
        let float = export(&path, Some(BitDepth::Float32), false);
        write_atomic(&path, a.view(), &float, &meta).unwrap();
        let read = read_tiff(&path);
        assert_eq!(read.channels, planes);
        let want = pixel_order(&a.view());
        assert_eq!(read.samples.f32().len(), want.len());
        assert!(read
            .samples
            .f32()
            .iter()
            .zip(&want)
            .all(|(s, w)| s.to_bits() == w.to_bits()));

        // Normalised float: the rule's [0, 1] values, NaN kept.
        let path = dir.path().join(format!("n{planes}.TIF"));
        let normalised = export(&path, Some(BitDepth::Float32), true);
        write_atomic(&path, a.view(), &normalised, &meta).unwrap();
        let read = read_tiff(&path);
        for (s, u) in read.samples.f32().iter().zip(rule_unit(&a.view())) {
            match u {
                Some(u) => assert!((f64::from(*s) - u).abs() < 1e-6, "{s} vs {u}"),
                None => assert!(s.is_nan()),
            }
        }
        assert_eq!(
            read.samples.f32().iter().copied().fold(0.0f32, f32::max),
            1.0
        );
    }
}

#[test]
fn png_mono_and_colour_are_16_bit_with_the_rule_and_its_text() {
    let dir = tempfile::tempdir().unwrap();
    for planes in [1, 3] {
        let a = image(planes);
        let path = dir.path().join(format!("p{planes}.png"));
        // `normalize` changes nothing for integers.
        for normalize in [false, true] {
            let options = export(&path, None, normalize);
            write_atomic(&path, a.view(), &options, &OutputMeta::default()).unwrap();
            let read = read_png(&path);
            assert_eq!((read.width, read.height, read.channels), (7, 5, planes));
            assert_eq!(read.samples.u16(), rule_u16(&a.view()));
            assert!(read.text("Software").starts_with("tlr "), "{read:?}");
            assert!(read.text("Description").contains("linear"), "{read:?}");
        }
    }
}

#[test]
fn fits_float_by_default_is_the_writers_output_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let meta =
        OutputMeta::tlr_output("result").with_card("DATAMED", CardValue::Float(5.0), "median");
    let a = image(1);
    let direct = dir.path().join("direct.fits");
    let plane = a.index_axis(Axis(0), 0);
    fits::write_image_atomic(&direct, plane, SampleFormat::F32, &meta).unwrap();
    let exported = dir.path().join("exported.fits");
    write_atomic(&exported, a.view(), &export(&exported, None, false), &meta).unwrap();
    assert!(std::fs::read(&direct).unwrap() == std::fs::read(&exported).unwrap());

    let rgb = image(3);
    let direct = dir.path().join("direct_rgb.fit");
    fits::write_cube_atomic(&direct, rgb.view(), &meta).unwrap();
    let exported = dir.path().join("exported_rgb.fts");
    write_atomic(
        &exported,
        rgb.view(),
        &export(&exported, None, false),
        &meta,
    )
    .unwrap();
    assert!(std::fs::read(&direct).unwrap() == std::fs::read(&exported).unwrap());
}

#[test]
fn fits_16_bit_and_normalised_follow_the_rule_and_say_so_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let meta = OutputMeta::tlr_output("result")
        .with_card("DATAMED", CardValue::Float(1000.0), "median")
        .with_card("DATASIG", CardValue::Float(10.0), "sigma")
        .with_card("NCOMBINE", CardValue::Int(3), "frames");
    for planes in [1, 3] {
        let a = image(planes);
        let white = a
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::MIN, f32::max);
        let span = f64::from(white) + 120.0; // black is the minimum, -120
        for (depth, full) in [(BitDepth::Int16, 65535.0), (BitDepth::Float32, 1.0)] {
            let path = dir.path().join(format!("s{planes}{full}.fits"));
            write_atomic(&path, a.view(), &export(&path, Some(depth), true), &meta).unwrap();
            let (_, read) = fits::read_cube(&path).unwrap();
            assert_eq!(read.dim(), a.dim());
            let units = rule_unit(&a.view());
            for (got, u) in pixel_order(&read.view()).iter().zip(units) {
                match (u, depth) {
                    (None, _) => assert!(got.is_nan(), "NaN is BLANK (16-bit) or NaN"),
                    // With a NaN present, finite 16-bit values are kept off BLANK's 0.
                    (Some(u), BitDepth::Int16) => {
                        assert_eq!(f64::from(*got), (u * full).round().max(1.0))
                    }
                    (Some(u), BitDepth::Float32) => assert!((f64::from(*got) - u).abs() < 1e-6),
                }
            }
            let cards = fits::read_header_cards(&path).unwrap();
            let number = |key: &str| -> f64 {
                let card = cards.iter().find(|c| c.key == key).unwrap();
                card.value.as_deref().unwrap().trim().parse().unwrap()
            };
            assert_eq!(number("TLRBLACK"), -120.0);
            assert_eq!(number("TLRWHITE"), f64::from(white));
            assert_eq!(number("NCOMBINE"), 3.0);
            let rel = |a: f64, b: f64| ((a - b) / b).abs() < 1e-9;
            assert!(rel(number("DATAMED"), 1120.0 / span * full));
            assert!(rel(number("DATASIG"), 10.0 / span * full));
            let bitpix = if depth == BitDepth::Int16 {
                16.0
            } else {
                -32.0
            };
            assert_eq!(number("BITPIX"), bitpix);
            assert!(cards
                .iter()
                .any(|c| c.key == "HISTORY" && c.comment.contains("linear: -120 -> 0")));
        }
    }
}

#[test]
fn unknown_extensions_and_bad_shapes_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Export::for_path(Path::new("out.jpg"), &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("out.jpg") && e.to_string().contains(FileFormat::CHOICES));
    let path = dir.path().join("two.tif");
    let e = write_atomic(
        &path,
        Array3::<f32>::zeros((2, 3, 3)).view(),
        &export(&path, None, false),
        &OutputMeta::default(),
    )
    .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("two.tif") && message.contains("2 planes"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
