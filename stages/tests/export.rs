//! Export formats through the `tlr` binary: `-o`'s extension chooses FITS, TIFF or PNG; `--bit-depth`
//! and `--normalize`; the files read back with the `tiff` and `png` decoders and compared with the
//! float FITS result of the same frames (mono and colour); the preview next to a PNG output; `tlr watch`
//! with the same formats; an unknown extension refused before anything is read.

mod common;

use std::path::{Path, PathBuf};

use common::images::{pixel_order, read_png, read_tiff, rule_u16, rule_unit};
use common::{run_ok, simulate, simulate_with, text, tlr};
use ndarray::{Array3, Axis};

/// The float FITS result as `(planes, rows, cols)`.
fn fits_result(path: &Path) -> Array3<f32> {
    tlr_core::fits::read_cube(path).unwrap().1
}

/// Asserts that `samples` are the rule's [0, 1] values of `reference` (to float rounding).
fn assert_normalised(samples: &[f32], reference: &Array3<f32>) {
    let units = rule_unit(&reference.view());
    assert_eq!(samples.len(), units.len());
    for (s, u) in samples.iter().zip(units) {
        match u {
            Some(u) => assert!((f64::from(*s) - u).abs() < 1e-6, "{s} vs {u}"),
            None => assert!(s.is_nan(), "NaN stays NaN in float outputs"),
        }
    }
}

#[test]
fn mono_run_writes_tiff_png_and_16_bit_fits_that_other_decoders_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 12, 160);
    let reference = dir.path().join("ref.fits");
    run_ok(&frames, &reference, &[]);
    let image = fits_result(&reference);
    assert_eq!(image.dim(), (1, 160, 160));

    // TIFF, 16-bit by default: the rule's integers of the float result.
    let tif = dir.path().join("out.tif");
    run_ok(&frames, &tif, &[]);
    let read = read_tiff(&tif);
    assert_eq!((read.width, read.height, read.channels), (160, 160, 1));
    assert_eq!(read.samples.u16(), rule_u16(&image.view()));
    assert!(tif.with_extension("png").exists(), "the preview of a TIFF");

    // TIFF, 32-bit float: the FITS result's values bit for bit; normalised: the rule's [0, 1].
    let float = dir.path().join("float.tiff");
    run_ok(&frames, &float, &["--bit-depth", "32"]);
    let read = read_tiff(&float);
    let want = pixel_order(&image.view());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(read.samples.f32()) == bits(&want));
    let normalised = dir.path().join("norm.tif");
    run_ok(&frames, &normalised, &["--bit-depth", "32", "--normalize"]);
    assert_normalised(read_tiff(&normalised).samples.f32(), &image);

    // PNG: 16-bit; the stretched preview goes to OUT.preview.png, not over the output.
    let png = dir.path().join("out.png");
    let output = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let read = read_png(&png);
    assert_eq!((read.width, read.height, read.channels), (160, 160, 1));
    assert_eq!(read.samples.u16(), rule_u16(&image.view()));
    let preview = dir.path().join("out.preview.png");
    let written: serde_json::Value = text(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "written")
        .unwrap();
    assert_eq!(written["files"][0], png.to_str().unwrap());
    assert_eq!(written["files"][1], preview.to_str().unwrap());
    let stretched = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&preview).unwrap(),
    ))
    .read_info()
    .unwrap()
    .info()
    .bit_depth;
    assert_eq!(
        stretched,
        png::BitDepth::Eight,
        "the preview is the 8-bit stretch"
    );

    // FITS, 16-bit: BITPIX 16, the rule's integers, the mapping in the header.
    let fits16 = dir.path().join("out16.fits");
    run_ok(&frames, &fits16, &["--bit-depth", "16"]);
    let (header, read) = tlr_core::fits::read_image(&fits16).unwrap();
    assert_eq!(header.bitpix, 16);
    let read: Vec<u16> = read.iter().map(|&v| v as u16).collect();
    assert_eq!(read, rule_u16(&image.view()));
    let cards = tlr_core::fits::read_header_cards(&fits16).unwrap();
    assert!(cards.iter().any(|c| c.key == "TLRWHITE"), "{cards:?}");
}

#[test]
fn colour_run_writes_rgb_tiff_and_png_interleaved() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate_with(&frames, 12, 192, 4, &["--color", "RGGB"]);
    let reference = dir.path().join("rgb.fits");
    run_ok(&frames, &reference, &[]);
    let rgb = fits_result(&reference);
    assert_eq!(rgb.dim(), (3, 192, 192));
    // The planes differ (the test of interleaving can fail).
    assert!(rgb.index_axis(Axis(0), 0) != rgb.index_axis(Axis(0), 2));

    let tif = dir.path().join("rgb.tif");
    run_ok(&frames, &tif, &[]);
    let read = read_tiff(&tif);
    assert_eq!((read.width, read.height, read.channels), (192, 192, 3));
    assert_eq!(read.samples.u16(), rule_u16(&rgb.view()));

    let float = dir.path().join("rgbf.tif");
    run_ok(&frames, &float, &["--bit-depth", "32", "--normalize"]);
    let read = read_tiff(&float);
    assert_eq!(read.channels, 3);
    assert_normalised(read.samples.f32(), &rgb);

    let png = dir.path().join("rgb.png");
    run_ok(&frames, &png, &[]);
    let read = read_png(&png);
    assert_eq!(read.channels, 3);
    assert_eq!(read.samples.u16(), rule_u16(&rgb.view()));
    assert!(dir.path().join("rgb.preview.png").exists());
}

#[test]
fn unknown_extensions_and_32_bit_png_are_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // The input folder does not exist: the format is checked first.
    let missing = dir.path().join("no-such-folder");
    for (command, out, extra, expected) in [
        ("run", "out.jpg", None, "unknown output format `.jpg`"),
        ("run", "out", None, "no extension to tell the output format"),
        ("run", "out.fits.fz", None, "unknown output format `.fz`"),
        ("run", "out.png", Some("32"), "PNG holds integers only"),
        ("watch", "live.jpeg", None, "unknown output format `.jpeg`"),
        ("watch", "live.png", Some("32"), "PNG holds integers only"),
    ] {
        let out: PathBuf = dir.path().join(out);
        let mut args = vec![
            command,
            missing.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        if let Some(bits) = extra {
            args.extend(["--bit-depth", bits]);
        }
        let output = tlr(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected)
                && stderr.contains(out.to_str().unwrap())
                && (extra.is_some() || stderr.contains(".tif or .tiff (TIFF)")),
            "{args:?}: {stderr}"
        );
    }
    // A value of --bit-depth other than 16 and 32 is clap's usage error.
    let out = dir.path().join("x.tif");
    let output = tlr(&[
        "run",
        missing.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--bit-depth",
        "8",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written, no folder created"
    );
}

#[test]
fn watch_publishes_tiff_and_png_snapshots_with_their_previews() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 12, 160);
    for (name, preview, bits) in [
        ("live.tif", "live.png", "32"),
        ("live.png", "live.preview.png", "16"),
    ] {
        let out = dir.path().join(name);
        let output = tlr(&[
            "watch",
            frames.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--until-idle",
            "1",
            "--stable-ms",
            "100",
            "--quiet",
            "--bit-depth",
            bits,
            "--normalize",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(dir.path().join(preview).exists(), "no {preview}");
        let read = if name.ends_with(".tif") {
            read_tiff(&out)
        } else {
            read_png(&out)
        };
        assert_eq!((read.width, read.height, read.channels), (160, 160, 1));
        match bits {
            "32" => {
                let max = read.samples.f32().iter().copied().fold(0.0f32, f32::max);
                assert_eq!(max, 1.0, "normalised");
            }
            _ => assert_eq!(read.samples.u16().iter().max(), Some(&65535)),
        }
    }
}
