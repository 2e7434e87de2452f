//! Export formats read back with other decoders (the `tiff` and `png` crates' decoders, the FITS
//! reader): mono and colour, 16-bit and float, normalised, against values computed here from the
//! documented rule (0 at min(0, minimum), 65535 or 1 at the maximum, linear); the float FITS output
//! unchanged, byte for byte.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{Array3, ArrayView3};
use tlr_core::export::{write_atomic, BitDepth, Export, ExportOptions};
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

/// The rule, written out: black = min(0, minimum), white = maximum; `None` for NaN.
fn expected_unit(a: &ArrayView3<f32>) -> Vec<Option<f64>> {
    let finite = a.iter().copied().filter(|v| v.is_finite());
    let black = f64::from(finite.clone().fold(0.0f32, f32::min));
    let white = f64::from(finite.fold(f32::MIN, f32::max));
    pixel_order(a)
        .into_iter()
        .map(|v| (!v.is_nan()).then(|| (f64::from(v) - black) / (white - black)))
        .collect()
}

/// The samples in file order: rows top to bottom, pixels left to right, R G B per pixel.
fn pixel_order(a: &ArrayView3<f32>) -> Vec<f32> {
    let (planes, rows, cols) = a.dim();
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            for p in 0..planes {
                out.push(a[[p, r, c]]);
            }
        }
    }
    out
}

fn expected_u16(a: &ArrayView3<f32>) -> Vec<u16> {
    expected_unit(a)
        .into_iter()
        .map(|u| u.map_or(0, |u| (u * 65535.0).round() as u16))
        .collect()
}

fn read_tiff(
    path: &Path,
) -> (
    tiff::ColorType,
    (u32, u32),
    tiff::decoder::DecodingResult,
    String,
) {
    let mut decoder =
        tiff::decoder::Decoder::new(BufReader::new(File::open(path).unwrap())).unwrap();
    let colour = decoder.colortype().unwrap();
    let size = decoder.dimensions().unwrap();
    let description = decoder
        .get_tag_ascii_string(tiff::tags::Tag::ImageDescription)
        .unwrap();
    let software = decoder
        .get_tag_ascii_string(tiff::tags::Tag::Software)
        .unwrap();
    assert!(software.starts_with("tlr "), "{software}");
    (colour, size, decoder.read_image().unwrap(), description)
}

#[test]
fn tiff_mono_and_colour_16_bit_and_float_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let meta = OutputMeta::default();
    for planes in [1, 3] {
        let a = image(planes);
        let (grey, colour) = if planes == 1 {
            (tiff::ColorType::Gray(16), tiff::ColorType::Gray(32))
        } else {
            (tiff::ColorType::RGB(16), tiff::ColorType::RGB(32))
        };
        // 16-bit (the TIFF default): the rule's integers.
        let path = dir.path().join(format!("i{planes}.tif"));
        write_atomic(&path, a.view(), &export(&path, None, false), &meta).unwrap();
        let (kind, size, data, description) = read_tiff(&path);
        assert_eq!((kind, size), (grey, (7, 5)));
        let tiff::decoder::DecodingResult::U16(samples) = data else {
            panic!("not 16-bit");
        };
        assert_eq!(samples, expected_u16(&a.view()));
        assert!(description.contains("-> 65535"), "{description}");

        // 32-bit float: the values as they are (NaN included).
        let path = dir.path().join(format!("f{planes}.tiff"));
        let float = export(&path, Some(BitDepth::Float32), false);
        write_atomic(&path, a.view(), &float, &meta).unwrap();
        let (kind, _, data, _) = read_tiff(&path);
        assert_eq!(kind, colour);
        let tiff::decoder::DecodingResult::F32(samples) = data else {
            panic!("not float");
        };
        let want = pixel_order(&a.view());
        assert_eq!(samples.len(), want.len());
        assert!(samples
            .iter()
            .zip(&want)
            .all(|(s, w)| s.to_bits() == w.to_bits()));

        // Normalised float: the rule's [0, 1] values, NaN kept.
        let path = dir.path().join(format!("n{planes}.TIF"));
        let normalised = export(&path, Some(BitDepth::Float32), true);
        write_atomic(&path, a.view(), &normalised, &meta).unwrap();
        let (_, _, data, _) = read_tiff(&path);
        let tiff::decoder::DecodingResult::F32(samples) = data else {
            panic!("not float");
        };
        for (s, u) in samples.iter().zip(expected_unit(&a.view())) {
            match u {
                Some(u) => assert!((f64::from(*s) - u).abs() < 1e-6, "{s} vs {u}"),
                None => assert!(s.is_nan()),
            }
        }
        assert_eq!(samples.iter().copied().fold(0.0f32, f32::max), 1.0);
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
            write_atomic(
                &path,
                a.view(),
                &export(&path, None, normalize),
                &OutputMeta::default(),
            )
            .unwrap();
            let mut decoder = png::Decoder::new(BufReader::new(File::open(&path).unwrap()));
            decoder.set_transformations(png::Transformations::IDENTITY);
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let frame = reader.next_frame(&mut buf).unwrap();
            let want_colour = if planes == 1 {
                png::ColorType::Grayscale
            } else {
                png::ColorType::Rgb
            };
            assert_eq!(
                (frame.width, frame.height, frame.color_type, frame.bit_depth),
                (7, 5, want_colour, png::BitDepth::Sixteen)
            );
            let samples: Vec<u16> = buf[..frame.buffer_size()]
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            assert_eq!(samples, expected_u16(&a.view()));
            let texts: Vec<(String, String)> = reader
                .info()
                .uncompressed_latin1_text
                .iter()
                .map(|t| (t.keyword.clone(), t.text.clone()))
                .collect();
            assert!(
                texts
                    .iter()
                    .any(|(k, v)| k == "Software" && v.starts_with("tlr "))
                    && texts
                        .iter()
                        .any(|(k, v)| k == "Description" && v.contains("linear")),
                "{texts:?}"
            );
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
    fits::write_image_atomic(
        &direct,
        a.index_axis(ndarray::Axis(0), 0),
        SampleFormat::F32,
        &meta,
    )
    .unwrap();
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
            let units = expected_unit(&a.view());
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
            assert_eq!(
                number("BITPIX"),
                if depth == BitDepth::Int16 {
                    16.0
                } else {
                    -32.0
                }
            );
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
    assert!(e.to_string().contains("out.jpg") && e.to_string().contains(".png (PNG)"));
    let path = dir.path().join("two.tif");
    let e = write_atomic(
        &path,
        Array3::<f32>::zeros((2, 3, 3)).view(),
        &export(&path, None, false),
        &OutputMeta::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("two.tif") && e.to_string().contains("2 planes"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
