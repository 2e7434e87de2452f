//! Integration tests of `tlr_core::fits`: BITPIX/BZERO/BSCALE round trips, region reads, odd file
//! names, every bad-file class, atomic output, fitsverify.
//!
//! Files are made in temporary folders, either with the `fitsio` crate or byte by byte
//! ([`build`]), so that the reader is checked against an independent writer.

use std::fs;
use std::path::{Path, PathBuf};

use fitsio::images::{ImageDescription, ImageType};
use fitsio::FitsFile;
use ndarray::{s, Array2, Array3};
use tlr_core::fits::{
    read_cube, read_header, read_header_cards, read_image, write_cube_atomic, write_image_atomic,
    CardValue, FitsError, FitsReader, OutputMeta, SampleFormat,
};

/// Byte-level FITS builder, independent of cfitsio.
pub mod build {
    /// One header card `KEY     = value`, `value` written as given (quote strings yourself).
    pub fn card(key: &str, value: &str) -> String {
        format!("{key:<8}= {value:>20}")
    }

    /// A header block sequence: the cards, END, blank padding to a multiple of 2880 bytes.
    pub fn header(cards: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cards {
            let mut c = c.clone();
            c.truncate(80);
            out.extend_from_slice(format!("{c:<80}").as_bytes());
        }
        out.extend_from_slice(format!("{:<80}", "END").as_bytes());
        while out.len() % 2880 != 0 {
            out.push(b' ');
        }
        out
    }

    /// Pads data to a multiple of 2880 bytes with zeros.
    pub fn pad(mut data: Vec<u8>) -> Vec<u8> {
        while data.len() % 2880 != 0 {
            data.push(0);
        }
        data
    }

    /// A complete single-HDU file: `dims` in FITS order (NAXIS1 = columns first), raw big-endian data.
    pub fn primary(bitpix: i64, dims: &[usize], extra: &[String], data: Vec<u8>) -> Vec<u8> {
        let mut cards = vec![
            card("SIMPLE", "T"),
            card("BITPIX", &bitpix.to_string()),
            card("NAXIS", &dims.len().to_string()),
        ];
        for (i, d) in dims.iter().enumerate() {
            cards.push(card(&format!("NAXIS{}", i + 1), &d.to_string()));
        }
        cards.extend_from_slice(extra);
        let mut out = header(&cards);
        out.extend(pad(data));
        out
    }

    /// Big-endian bytes of i16 values.
    pub fn be_i16(v: &[i16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    /// Big-endian bytes of f32 values.
    pub fn be_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    /// A `rows x cols` u16-camera-style frame (BITPIX 16, BZERO 32768) with `extra` cards; pixel values
    /// are `base + 7*r + c`.
    pub fn camera_frame(rows: usize, cols: usize, base: u16, extra: &[String]) -> Vec<u8> {
        let raw: Vec<i16> = (0..rows * cols)
            .map(|i| {
                let v = base as i32 + 7 * (i / cols) as i32 + (i % cols) as i32;
                (v.clamp(0, 65535) - 32768) as i16
            })
            .collect();
        let mut cards = vec![card("BZERO", "32768"), card("BSCALE", "1")];
        cards.extend_from_slice(extra);
        primary(16, &[cols, rows], &cards, be_i16(&raw))
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    fs::write(path, bytes).expect("write test file");
    path.to_path_buf()
}

/// Physical test values for a BITPIX (in range of the raw type after scaling).
fn pattern(rows: usize, cols: usize, bitpix: i64, bscale: f64, bzero: f64) -> Vec<f64> {
    let (lo, hi): (f64, f64) = match bitpix {
        8 => (0.0, 255.0),
        16 => (-32768.0, 32767.0),
        32 => (-2.0e6, 2.0e6),
        64 => (-2.0e6, 2.0e6),
        _ => (-1.0e4, 1.0e4),
    };
    (0..rows * cols)
        .map(|i| {
            let t = ((i * 7919) % 1000) as f64 / 999.0;
            let raw = lo + t * (hi - lo);
            let raw = if bitpix > 0 { raw.round() } else { raw };
            raw * bscale + bzero
        })
        .collect()
}

fn image_type(bitpix: i64) -> ImageType {
    match bitpix {
        8 => ImageType::UnsignedByte,
        16 => ImageType::Short,
        32 => ImageType::Long,
        64 => ImageType::LongLong,
        -32 => ImageType::Float,
        _ => ImageType::Double,
    }
}

#[test]
fn every_bitpix_with_bzero_bscale_round_trips_through_fitsio() {
    let dir = tmp();
    let (rows, cols) = (13, 17);
    for bitpix in [8i64, 16, 32, 64, -32, -64] {
        for (bscale, bzero) in [(1.0, 0.0), (0.5, 100.0), (2.0, -3.0), (1.0, 32768.0)] {
            let path = dir.path().join(format!("b{bitpix}_{bscale}_{bzero}.fits"));
            let values = pattern(rows, cols, bitpix, bscale, bzero);
            {
                let desc = ImageDescription {
                    data_type: image_type(bitpix),
                    dimensions: &[rows, cols],
                };
                let mut f = FitsFile::create(&path)
                    .with_custom_primary(&desc)
                    .open()
                    .expect("create");
                let hdu = f.primary_hdu().expect("hdu");
                if (bscale, bzero) != (1.0, 0.0) {
                    hdu.write_key(&mut f, "BSCALE", bscale).expect("bscale");
                    hdu.write_key(&mut f, "BZERO", bzero).expect("bzero");
                    // Make cfitsio re-read the header so that it scales on write (fitsio has no call for it).
                    let mut status = 0;
                    // SAFETY: a valid handle owned by `f`.
                    unsafe { fitsio_sys::ffrdef(f.as_raw(), &mut status) };
                    assert_eq!(status, 0);
                }
                // cfitsio applies the scaling on write: raw = (physical - BZERO) / BSCALE.
                hdu.write_image(&mut f, &values).expect("write");
            }
            let (header, image) = read_image(&path).expect("read");
            assert_eq!(
                (header.rows, header.cols, header.bitpix),
                (rows, cols, bitpix)
            );
            for (i, (&got, &want)) in image.iter().zip(&values).enumerate() {
                let tol = (want.abs() * 1e-6).max(1e-3);
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "BITPIX {bitpix} BSCALE {bscale} BZERO {bzero} pixel {i}: got {got}, want {want}"
                );
            }
        }
    }
}

#[test]
fn bzero_bscale_are_applied_on_read_of_raw_bytes() {
    // Raw integers written byte by byte: physical = raw * BSCALE + BZERO must come back.
    let dir = tmp();
    let raw: Vec<i16> = vec![-32768, -1, 0, 1, 1000, 32767];
    let extra = [build::card("BSCALE", "0.5"), build::card("BZERO", "1000.0")];
    let p = write(
        &dir.path().join("raw16.fits"),
        &build::primary(16, &[3, 2], &extra, build::be_i16(&raw)),
    );
    let (_, img) = read_image(&p).expect("read");
    let want: Vec<f32> = raw.iter().map(|&r| r as f32 * 0.5 + 1000.0).collect();
    assert_eq!(img.iter().copied().collect::<Vec<_>>(), want);

    // Unsigned 8 bit with BZERO -128 (signed bytes convention).
    let bytes: Vec<u8> = vec![0, 1, 127, 128, 200, 255];
    let p = write(
        &dir.path().join("raw8.fits"),
        &build::primary(8, &[6, 1], &[build::card("BZERO", "-128")], bytes.clone()),
    );
    let (_, img) = read_image(&p).expect("read");
    let want: Vec<f32> = bytes.iter().map(|&b| b as f32 - 128.0).collect();
    assert_eq!(img.iter().copied().collect::<Vec<_>>(), want);

    // 32 bit with BSCALE and BZERO.
    let raw32: Vec<i32> = vec![-5, 0, 7, 123_456];
    let data: Vec<u8> = raw32.iter().flat_map(|x| x.to_be_bytes()).collect();
    let extra = [build::card("BSCALE", "0.25"), build::card("BZERO", "10")];
    let p = write(
        &dir.path().join("raw32.fits"),
        &build::primary(32, &[2, 2], &extra, data),
    );
    let (_, img) = read_image(&p).expect("read");
    let want: Vec<f32> = raw32.iter().map(|&r| r as f32 * 0.25 + 10.0).collect();
    assert_eq!(img.iter().copied().collect::<Vec<_>>(), want);
    // Row order: first row in the file is row 0.
    assert_eq!(img[[0, 1]], want[1]);
    assert_eq!(img[[1, 0]], want[2]);
}

#[test]
fn blank_nan_and_inf_pixels_become_nan() {
    let dir = tmp();
    let raw: Vec<i16> = vec![5, -999, 7, 8];
    let p = write(
        &dir.path().join("blank.fits"),
        &build::primary(
            16,
            &[2, 2],
            &[build::card("BLANK", "-999")],
            build::be_i16(&raw),
        ),
    );
    let (_, img) = read_image(&p).expect("read");
    assert_eq!(img[[0, 0]], 5.0);
    assert!(img[[0, 1]].is_nan());
    let vals = [1.0f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let p = write(
        &dir.path().join("nan.fits"),
        &build::primary(-32, &[2, 2], &[], build::be_f32(&vals)),
    );
    let (_, img) = read_image(&p).expect("read");
    assert_eq!(img[[0, 0]], 1.0);
    assert!(img.iter().skip(1).all(|v| v.is_nan()), "{img:?}");
}

fn synthetic(rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| (r * 1000 + c) as f32 + 0.25)
}

#[test]
fn region_reads_equal_the_same_region_of_a_full_read() {
    let dir = tmp();
    let (rows, cols) = (37, 53);
    let image = synthetic(rows, cols);
    let p = dir.path().join("region.fits");
    write_image_atomic(&p, image.view(), SampleFormat::F32, &OutputMeta::default()).expect("write");
    let mut reader = FitsReader::open(&p).expect("open");
    let full = reader.read_full().expect("full");
    assert_eq!(full, image);
    for (r, c) in [
        (0..rows, 0..cols),
        (0..1, 0..1),
        (5..20, 30..53),
        (36..37, 0..53),
        (10..37, 52..53),
        (3..4, 7..40),
    ] {
        let region = reader.read_region(r.clone(), c.clone()).expect("region");
        assert_eq!(
            region,
            full.slice(s![r.clone(), c.clone()]),
            "rows {r:?} cols {c:?}"
        );
    }
    // Out of bounds and empty regions are errors naming the file, not panics.
    for (r, c) in [
        (0..rows + 1, 0..cols),
        (0..rows, 50..54),
        (4..4, 0..3),
        #[allow(clippy::reversed_empty_ranges)]
        (0..2, 9..3),
    ] {
        let err = reader.read_region(r, c).expect_err("out of bounds");
        assert!(matches!(err, FitsError::RegionOutOfBounds { .. }));
        assert!(err.to_string().contains("region.fits"), "{err}");
    }
    // Padded reads fill outside pixels with NaN.
    let padded = reader.read_region_padded(-2, 50, 5, 6).expect("padded");
    assert_eq!(padded.dim(), (5, 6));
    assert!(padded[[0, 0]].is_nan() && padded[[1, 5]].is_nan() && padded[[4, 3]].is_nan());
    assert_eq!(padded[[2, 0]], full[[0, 50]]);
    assert_eq!(padded[[4, 2]], full[[2, 52]]);
    let outside = reader.read_region_padded(100, 100, 3, 3).expect("outside");
    assert!(outside.iter().all(|v| v.is_nan()));
}

#[test]
fn single_plane_cube_reads_and_multi_plane_cube_is_rejected() {
    let dir = tmp();
    let (rows, cols) = (6, 9);
    let vals: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let p = write(
        &dir.path().join("plane.fits"),
        &build::primary(-32, &[cols, rows, 1], &[], build::be_f32(&vals)),
    );
    let mut reader = FitsReader::open(&p).expect("open");
    let full = reader.read_full().expect("full");
    assert_eq!(full.dim(), (rows, cols));
    assert_eq!(full[[2, 3]], (2 * cols + 3) as f32);
    assert_eq!(
        reader.read_region(1..3, 2..5).expect("region"),
        full.slice(s![1..3, 2..5])
    );

    let cube = Array3::from_shape_fn((3, 4, 5), |(p, r, c)| (p * 100 + r * 10 + c) as f32);
    let path = dir.path().join("cube3.fits");
    write_cube_atomic(&path, cube.view(), &OutputMeta::default()).expect("cube");
    let err = read_header(&path).expect_err("cube");
    let msg = err.to_string();
    assert!(
        msg.contains("cube with 3 planes is not supported") && msg.contains("cube3.fits"),
        "{msg}"
    );
    // The cube itself is written correctly: check with the fitsio crate.
    let mut f = FitsFile::open(&path).expect("open");
    let hdu = f.primary_hdu().expect("hdu");
    let data: Vec<f32> = hdu.read_image(&mut f).expect("read");
    assert_eq!(data, cube.iter().copied().collect::<Vec<_>>());
    // ... and `read_cube` (the reader for results, e.g. `tlr inspect`) reads every plane of it, and a
    // 2-D image as one plane; the cards of a cube are readable too.
    let (header, read) = read_cube(&path).expect("read_cube");
    assert_eq!((header.rows, header.cols), (4, 5));
    assert_eq!(read, cube);
    let (_, one) = read_cube(&p).expect("single plane");
    assert_eq!(one.dim(), (1, rows, cols));
    assert_eq!(one.index_axis(ndarray::Axis(0), 0), full);
    assert!(read_header_cards(&path).is_ok());
    let nan = Array3::from_elem((3, 2, 2), f32::NAN);
    let nan_path = dir.path().join("nan_cube.fits");
    write_cube_atomic(&nan_path, nan.view(), &OutputMeta::default()).expect("nan cube");
    assert!(matches!(
        read_cube(&nan_path),
        Err(FitsError::NoFiniteData { .. })
    ));
}

#[test]
fn tile_compressed_fz_image_is_found_in_hdu_1() {
    let dir = tmp();
    let (rows, cols) = (40, 30);
    let values: Vec<i16> = (0..rows * cols).map(|i| ((i * 37) % 3000) as i16).collect();
    let path = dir.path().join("frame.fits.fz");
    {
        // The `[compress]` suffix is cfitsio syntax for "write tile-compressed images".
        let spec = format!("{}[compress]", path.display());
        let mut f = FitsFile::create(&spec).open().expect("create fz");
        let desc = ImageDescription {
            data_type: ImageType::Short,
            dimensions: &[rows, cols],
        };
        let hdu = f.create_image("SCI".to_string(), &desc).expect("image");
        hdu.write_key(&mut f, "DATE-OBS", "2024-01-01T00:00:00".to_string())
            .expect("key");
        hdu.write_image(&mut f, &values).expect("write");
    }
    let header = read_header(&path).expect("header");
    assert_eq!(
        (header.hdu, header.rows, header.cols, header.bitpix),
        (1, rows, cols, 16)
    );
    assert_eq!(header.date_obs.as_deref(), Some("2024-01-01T00:00:00"));
    let mut reader = FitsReader::open(&path).expect("open");
    let full = reader.read_full().expect("full");
    let want = Array2::from_shape_vec((rows, cols), values.iter().map(|&v| v as f32).collect())
        .expect("shape");
    assert_eq!(full, want);
    assert_eq!(
        reader.read_region(10..20, 5..25).expect("region"),
        want.slice(s![10..20, 5..25])
    );
}

#[test]
fn odd_file_names_are_taken_literally() {
    let dir = tmp();
    let image = synthetic(8, 5);
    for name in [
        "Light [1] (2).fits",
        "M 27 frame(3).fit",
        "x[compress].fits",
        "weird[1:2,3:4].fits",
        "a+b#c$d.fits",
        " leading space.fits",
        "plus+[ext].fits.fz.fits",
    ] {
        let path = dir.path().join(name);
        write_image_atomic(
            &path,
            image.view(),
            SampleFormat::F32,
            &OutputMeta::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            path.exists(),
            "{name} was not created under its literal name"
        );
        let (h, img) = read_image(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img, image, "{name}");
        assert_eq!(h.path, path);
        // A file written by someone else (plain bytes) under an odd name reads too.
        let other = dir.path().join(format!("ext {name}"));
        write(&other, &build::camera_frame(3, 4, 100, &[]));
        assert_eq!(
            read_image(&other)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .1[[1, 1]],
            108.0
        );
    }
    // Relative paths work as well (cfitsio would strip a leading blank of a relative name).
    let cwd_file = PathBuf::from(format!("target/tlr-fits-test-{}.fits", std::process::id()));
    if fs::create_dir_all("target").is_ok() {
        write_image_atomic(
            &cwd_file,
            image.view(),
            SampleFormat::F32,
            &OutputMeta::default(),
        )
        .expect("relative");
        assert_eq!(read_image(&cwd_file).expect("relative read").1, image);
        let _ = fs::remove_file(&cwd_file);
    }
}

#[test]
fn header_keywords_are_reported() {
    let dir = tmp();
    let extra = [
        build::card("EXPTIME", "060.00"),
        build::card("DATE-OBS", "'2018-09-07T22:31:45.431'"),
        build::card("GAIN", "180."),
        build::card("OFFSET", "12"),
        build::card("BAYERPAT", "'rggb    '"),
        build::card("XBAYROFF", "1"),
        build::card("YBAYROFF", "0"),
        build::card("ROWORDER", "'TOP-DOWN'"),
        build::card("FILTER", "'Luminance'"),
        build::card("OBJECT", "'M 27'"),
        build::card("CCD-TEMP", "-10.5"),
        build::card("CREATOR", "'N.I.N.A. 3.0'"),
    ];
    let p = write(
        &dir.path().join("keys.fits"),
        &build::camera_frame(4, 6, 1000, &extra),
    );
    let h = read_header(&p).expect("header");
    assert_eq!((h.hdu, h.rows, h.cols, h.bitpix), (0, 4, 6, 16));
    assert_eq!(h.exposure_s, Some(60.0));
    assert_eq!(h.date_obs.as_deref(), Some("2018-09-07T22:31:45.431"));
    assert_eq!(h.gain, Some(180.0));
    assert_eq!(h.offset, Some(12.0));
    let bayer = h.bayer.expect("bayer");
    assert_eq!(
        (bayer.pattern.as_str(), bayer.x_offset, bayer.y_offset),
        ("RGGB", 1, 0)
    );
    assert_eq!(h.row_order.as_deref(), Some("TOP-DOWN"));
    assert_eq!(h.filter.as_deref(), Some("Luminance"));
    assert_eq!(h.object.as_deref(), Some("M 27"));
    assert_eq!(h.ccd_temp, Some(-10.5));
    assert_eq!(h.creator.as_deref(), Some("N.I.N.A. 3.0"));

    // EXPOSURE is the fallback; a mono frame has no Bayer description.
    let p = write(
        &dir.path().join("exposure.fits"),
        &build::camera_frame(2, 2, 0, &[build::card("EXPOSURE", "2.5")]),
    );
    let h = read_header(&p).expect("header");
    assert_eq!(h.exposure_s, Some(2.5));
    assert!(h.bayer.is_none() && h.date_obs.is_none() && h.gain.is_none());
    let cards = read_header_cards(&p).expect("cards");
    assert!(cards
        .iter()
        .any(|c| c.key == "EXPOSURE" && c.value.as_deref() == Some("2.5")));
}

/// Asserts that reading `path` fails with a message that names the file and contains `needle`.
fn assert_bad(path: &Path, needle: &str) -> FitsError {
    let err = read_image(path).expect_err(needle);
    let msg = err.to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(msg.contains(name), "message does not name the file: {msg}");
    assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
    // read_header agrees (except for pixel-level problems).
    err
}

#[test]
fn each_bad_file_class_has_a_clear_error() {
    let dir = tmp();
    let d = dir.path();
    let good = build::camera_frame(20, 30, 500, &[]);
    assert!(read_image(&write(&d.join("good.fits"), &good)).is_ok());

    assert!(matches!(
        assert_bad(&write(&d.join("empty.fits"), b""), "empty"),
        FitsError::Empty { .. }
    ));
    assert!(matches!(
        assert_bad(
            &write(&d.join("text.fits"), b"this is a text file, not an image\n"),
            "not a FITS file"
        ),
        FitsError::NotFits { .. }
    ));
    let mut png = vec![0x89, b'P', b'N', b'G'];
    png.resize(5000, 0);
    assert_bad(&write(&d.join("image.fits"), &png), "not a FITS file");
    // Data cut short (the header is complete): cfitsio would open this and return the first rows.
    let cut = &good[..2880 + 600];
    let err = assert_bad(
        &write(&d.join("cut.fits"), cut),
        "data ends after 600 of 1200 bytes",
    );
    assert!(matches!(
        err,
        FitsError::Truncated {
            have: 600,
            need: 1200,
            ..
        }
    ));
    assert!(matches!(
        read_header(&d.join("cut.fits")),
        Err(FitsError::Truncated { .. })
    ));
    // Header cut inside its first block, and a two-block header cut before its END card.
    let err = assert_bad(
        &write(&d.join("head.fits"), &good[..1000]),
        "shorter than one 2880-byte header block (file truncated?)",
    );
    assert!(matches!(err, FitsError::HeaderTruncated { .. }));
    let many: Vec<String> = (0..40)
        .map(|i| build::card(&format!("KEY{i}"), &i.to_string()))
        .collect();
    let long = build::camera_frame(2, 2, 0, &many);
    assert_bad(
        &write(&d.join("head2.fits"), &long[..2880 + 100]),
        "before its END card (file truncated?)",
    );
    // Complete data without the padding of the last block: cfitsio cannot read it, so it is
    // rejected up front with its own message.
    let err = assert_bad(
        &write(&d.join("unpadded.fits"), &good[..2880 + 1200]),
        "1200 data bytes",
    );
    assert!(matches!(
        err,
        FitsError::Unpadded {
            have: 1200,
            data: 1200,
            need: 2880,
            ..
        }
    ));
    // All NaN / Inf.
    let nan = build::primary(
        -32,
        &[3, 2],
        &[],
        build::be_f32(&[
            f32::NAN,
            f32::INFINITY,
            f32::NAN,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::NAN,
        ]),
    );
    assert!(matches!(
        assert_bad(&write(&d.join("nan.fits"), &nan), "every pixel is NaN"),
        FitsError::NoFiniteData { .. }
    ));
    // All BLANK.
    let blank = build::primary(
        16,
        &[2, 1],
        &[build::card("BLANK", "0")],
        build::be_i16(&[0, 0]),
    );
    assert_bad(&write(&d.join("blank.fits"), &blank), "every pixel");
    // Shapes.
    let cube = build::primary(16, &[2, 2, 3], &[], build::be_i16(&[0; 12]));
    assert!(matches!(
        assert_bad(
            &write(&d.join("cube.fits"), &cube),
            "cube with 3 planes is not supported"
        ),
        FitsError::Cube { planes: 3, .. }
    ));
    assert_bad(
        &write(
            &d.join("line.fits"),
            &build::primary(16, &[5], &[], build::be_i16(&[0; 5])),
        ),
        "1-dimensional",
    );
    assert_bad(
        &write(
            &d.join("four.fits"),
            &build::primary(16, &[2, 2, 1, 2], &[], build::be_i16(&[0; 8])),
        ),
        "NAXIS = 4",
    );
    let zero = build::primary(16, &[0, 5], &[], vec![]);
    assert_bad(&write(&d.join("zero.fits"), &zero), "empty 5x0 image");
    assert!(matches!(
        assert_bad(
            &write(
                &d.join("noimage.fits"),
                &build::primary(8, &[], &[], vec![])
            ),
            "no image"
        ),
        FitsError::NoImage { .. }
    ));
    assert_bad(
        &write(
            &d.join("bitpix.fits"),
            &build::primary(12, &[2, 2], &[], vec![0; 6]),
        ),
        "BITPIX",
    );
    let mut bad_naxis = build::header(&[
        build::card("SIMPLE", "T"),
        build::card("BITPIX", "16"),
        build::card("NAXIS", "2"),
        build::card("NAXIS1", "'ten'"),
        build::card("NAXIS2", "2"),
    ]);
    bad_naxis.extend(vec![0; 2880]);
    assert_bad(&write(&d.join("naxis.fits"), &bad_naxis), "NAXIS1");
    let simple_f = build::primary(16, &[2, 2], &[], vec![0; 8]);
    let simple_f: Vec<u8> = String::from_utf8_lossy(&simple_f)
        .replacen("                   T", "                   F", 1)
        .into_bytes();
    assert_bad(&write(&d.join("simplef.fits"), &simple_f), "SIMPLE = F");
    // A folder and a missing file.
    fs::create_dir(d.join("folder.fits")).expect("mkdir");
    assert_bad(&d.join("folder.fits"), "directory");
    assert!(matches!(
        assert_bad(&d.join("missing.fits"), "cannot read"),
        FitsError::Io { .. }
    ));
}

#[test]
fn damaged_files_never_panic() {
    // Every truncation length and a sweep of byte corruptions of a valid file: errors are fine,
    // panics are not. Successful reads must have the promised shape.
    let dir = tmp();
    let good = build::camera_frame(
        9,
        11,
        300,
        &[build::card("DATE-OBS", "'2020-01-01T00:00:00'")],
    );
    let path = dir.path().join("damaged.fits");
    let mut lengths: Vec<usize> = (0..good.len()).step_by(97).collect();
    lengths.extend([1, 79, 80, 2879, 2880, 2881, good.len() - 1]);
    for len in lengths {
        write(&path, &good[..len]);
        if let Ok((h, img)) = read_image(&path) {
            assert_eq!(img.dim(), (h.rows, h.cols));
        }
    }
    // The cards (8 x 80 bytes) are where corruption matters; the padding and data are covered by
    // the truncation sweep above.
    for pos in (0..720).step_by(11).chain([2879, 2880, 3000]) {
        for byte in [b'0', b'9', b'\'', b'=', 0u8, 0xff, b'-'] {
            let mut bytes = good.clone();
            bytes[pos] = byte;
            write(&path, &bytes);
            if let Ok((h, img)) = read_image(&path) {
                assert_eq!(img.dim(), (h.rows, h.cols));
            }
        }
    }
}

/// Fuzz finding (`fits_read`): rows 10-16 of a PLIO tile table hold blanks, i.e. descriptors of
/// 538 976 288 elements at offset 538 976 288; cfitsio trusted them, allocated 1 GB and read past the
/// end of the 8 KB file for 4 s. Every reader now refuses the file before cfitsio reads a tile.
#[test]
fn compressed_tile_outside_the_heap_is_corrupt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("tests/data/fuzz/fits/plio_blank_descriptors.fits");
    let errors = [
        read_image(&path).unwrap_err(),
        read_header(&path).unwrap_err(),
        read_header_cards(&path).unwrap_err(),
        FitsReader::open_with_cfitsio(&path).unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, FitsError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("plio_blank_descriptors.fits`: corrupt data: HDU 1, table row 10: an array of 538976288 elements at heap offset 538976288 does not fit the 736-byte heap"),
            "{msg}"
        );
    }
    // The intact file it was mutated from reads.
    let (_, image) = read_image(&root.join("fuzz/seeds/fits/plio_1.fits.fz")).unwrap();
    assert_eq!(image.dim(), (16, 16));
}

/// Fuzz finding (`fits_read`, this session's clean run): `ZTILE2 = 0` in a tile-compressed image made
/// cfitsio divide by zero while opening the HDU: the process died with SIGFPE (`tlr inspect` exit 136).
#[test]
fn zero_tile_size_of_a_compressed_image_is_an_error_not_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The second: `ZTILE1 = 16` then a repeated `ZTILE1 = 0`, which cfitsio reads (the last card).
    for (name, key) in [
        ("ztile_zero.fits", "ZTILE2"),
        ("ztile_repeated_zero.fits", "ZTILE1"),
    ] {
        let path = root.join("tests/data/fuzz/fits").join(name);
        for err in [
            read_image(&path).unwrap_err(),
            read_header(&path).unwrap_err(),
            FitsReader::open_with_cfitsio(&path).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(key), "{msg}");
        }
    }
}

/// Fuzz finding (`fits_read`): the `GCOUNT` card of a compressed image's table has non-ASCII bytes in
/// its keyword. cfitsio then sizes its column table from an unset count (a 21 PB `calloc`, which
/// AddressSanitizer reports as a crash; the system allocator returns NULL). The reader must give
/// cfitsio's clear error, naming the file and the keyword.
#[test]
fn illegal_keyword_bytes_in_a_compressed_table_are_a_clear_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("tests/data/fuzz/fits/gcount_illegal_keyword_bytes.fits");
    let msg = read_image(&path).unwrap_err().to_string();
    assert!(msg.contains("gcount_illegal_keyword_bytes.fits"), "{msg}");
    assert!(msg.contains("illegal character in keyword"), "{msg}");
}

/// The fuzz seeds (`fuzz/seeds/fits/`) and the minimised fuzz findings (`tests/data/fuzz/fits/`) go
/// through the calls of the `fits_header` and `fits_read` fuzz targets: errors are fine, panics are not.
#[test]
fn fuzz_seeds_and_findings_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tmp();
    // One name for all, as in the fuzz targets: the reader goes by content, not by extension.
    let path = dir.path().join("frame.fits");
    let mut files = 0;
    for folder in ["fuzz/seeds/fits", "tests/data/fuzz/fits"] {
        let Ok(entries) = fs::read_dir(root.join(folder)) else {
            continue;
        };
        for entry in entries {
            fs::copy(entry.expect("list fuzz inputs").path(), &path).expect("copy fuzz input");
            let _ = read_header(&path);
            let _ = read_header_cards(&path);
            if let Ok((h, img)) = read_image(&path) {
                assert_eq!(img.dim(), (h.rows, h.cols));
            }
            let _ = read_cube(&path);
            if let Ok(mut reader) = FitsReader::open_with_cfitsio(&path) {
                let _ = reader.read_full();
            }
            files += 1;
        }
    }
    assert!(files >= 20, "only {files} fuzz inputs found");
}

fn temp_files_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn atomic_write_f32_with_cards_and_history_and_no_temp_file() {
    let dir = tmp();
    let path = dir.path().join("out.fits");
    let mut image = synthetic(7, 9);
    image[[3, 4]] = f32::NAN;
    let meta = OutputMeta::tlr_output("mosaic")
        .with_card("NCOMBINE", CardValue::Int(40), "frames combined")
        .with_card("EXPTIME", CardValue::Float(2400.5), "total exposure (s)")
        .with_card(
            "DATE-OBS",
            CardValue::Str("2017-12-20T01:33:43.317".into()),
            "first frame",
        )
        .with_card("TLRLOCAL", CardValue::Bool(true), "tile-local registration")
        .with_card(
            "CFGDIGST",
            CardValue::Str("sha256:".to_string() + &"ab".repeat(40)),
            "long string",
        )
        .with_history("tlr 0.1.0: tile-local reconstruction")
        .with_history(&"x".repeat(150));
    write_image_atomic(&path, image.view(), SampleFormat::F32, &meta).expect("write");
    assert!(temp_files_in(dir.path()).is_empty());
    let (h, back) = read_image(&path).expect("read");
    assert_eq!(h.bitpix, -32);
    assert!(back[[3, 4]].is_nan());
    back.iter()
        .zip(image.iter())
        .filter(|(_, b)| !b.is_nan())
        .for_each(|(a, b)| assert_eq!(a, b));
    assert!(
        h.creator
            .as_deref()
            .is_some_and(|c| c.starts_with("tlr ") && c.ends_with(" mosaic")),
        "{:?}",
        h.creator
    );
    assert_eq!(h.exposure_s, Some(2400.5));
    let cards = read_header_cards(&path).expect("cards");
    let value = |k: &str| {
        cards
            .iter()
            .find(|c| c.key == k)
            .and_then(|c| c.value.clone())
    };
    assert_eq!(value("NCOMBINE").as_deref(), Some("40"));
    assert_eq!(value("TLRLOCAL").as_deref(), Some("T"));
    let history: Vec<&str> = cards
        .iter()
        .filter(|c| c.key == "HISTORY")
        .map(|c| c.comment.as_str())
        .collect();
    assert!(
        history
            .iter()
            .any(|l| l.contains("tile-local reconstruction")),
        "{history:?}"
    );
    // A long string keyword round-trips through the CONTINUE convention.
    assert_eq!(
        value("CFGDIGST"),
        Some("sha256:".to_string() + &"ab".repeat(40))
    );
    assert!(cards.iter().any(|c| c.key == "LONGSTRN"));

    // Overwriting an existing file replaces it.
    let other = Array2::from_elem((2, 3), 5.0f32);
    write_image_atomic(
        &path,
        other.view(),
        SampleFormat::F32,
        &OutputMeta::default(),
    )
    .expect("overwrite");
    assert_eq!(read_image(&path).expect("read").1, other);
    assert!(temp_files_in(dir.path()).is_empty());
}

#[test]
fn atomic_write_u16_is_camera_like() {
    let dir = tmp();
    let path = dir.path().join("cam.fits");
    let image = Array2::from_shape_vec(
        (2, 4),
        vec![-5.0, 0.0, 0.4, 0.6, 1234.5, 65535.0, 70000.0, 32768.0],
    )
    .expect("shape");
    write_image_atomic(
        &path,
        image.view(),
        SampleFormat::U16,
        &OutputMeta::default(),
    )
    .expect("write");
    let cards = read_header_cards(&path).expect("cards");
    let value = |k: &str| {
        cards
            .iter()
            .find(|c| c.key == k)
            .and_then(|c| c.value.clone())
    };
    assert_eq!(value("BITPIX").as_deref(), Some("16"));
    assert_eq!(value("BZERO").as_deref(), Some("32768"));
    assert_eq!(value("BLANK"), None);
    let (_, back) = read_image(&path).expect("read");
    assert_eq!(
        back.iter().copied().collect::<Vec<_>>(),
        vec![0.0, 0.0, 0.0, 1.0, 1235.0, 65535.0, 65535.0, 32768.0]
    );
    // Raw bytes: the first pixel is stored as -32768 (physical 0).
    let bytes = fs::read(&path).expect("bytes");
    assert_eq!(&bytes[2880..2882], &(-32768i16).to_be_bytes());

    // With NaN pixels: BLANK marks them, finite values are clamped to >= 1.
    let mut with_nan = image.clone();
    with_nan[[0, 2]] = f32::NAN;
    write_image_atomic(
        &path,
        with_nan.view(),
        SampleFormat::U16,
        &OutputMeta::default(),
    )
    .expect("write");
    let (_, back) = read_image(&path).expect("read");
    assert!(back[[0, 2]].is_nan());
    assert_eq!(back[[0, 0]], 1.0);
    assert_eq!(back[[1, 0]], 1235.0);
}

#[test]
fn invalid_output_requests_fail_cleanly_without_temp_files() {
    let dir = tmp();
    let image = synthetic(3, 3);
    let path = dir.path().join("bad.fits");
    let cases = [
        (
            OutputMeta::default().with_card("BZERO", CardValue::Int(1), ""),
            "set by the writer",
        ),
        (
            OutputMeta::default().with_card("NAXIS1", CardValue::Int(1), ""),
            "set by the writer",
        ),
        (
            OutputMeta::default().with_card("lower", CardValue::Int(1), ""),
            "not 1-8 characters",
        ),
        (
            OutputMeta::default().with_card("TOOLONGKEY", CardValue::Int(1), ""),
            "not 1-8 characters",
        ),
        (
            OutputMeta::default().with_card("X", CardValue::Float(f64::NAN), ""),
            "non-finite",
        ),
        (
            OutputMeta::default().with_card("X", CardValue::Str("ä".into()), ""),
            "printable ASCII",
        ),
        (
            OutputMeta::default().with_history("tab\there"),
            "printable ASCII",
        ),
    ];
    for (meta, needle) in cases {
        let err =
            write_image_atomic(&path, image.view(), SampleFormat::F32, &meta).expect_err(needle);
        let msg = err.to_string();
        assert!(msg.contains(needle) && msg.contains("bad.fits"), "{msg}");
    }
    let empty = Array2::<f32>::zeros((0, 4));
    assert!(write_image_atomic(
        &path,
        empty.view(),
        SampleFormat::F32,
        &OutputMeta::default()
    )
    .is_err());
    let missing = dir.path().join("no-such-folder").join("x.fits");
    let err = write_image_atomic(
        &missing,
        image.view(),
        SampleFormat::F32,
        &OutputMeta::default(),
    )
    .expect_err("missing folder");
    assert!(err.to_string().contains("x.fits"), "{err}");
    assert!(!path.exists());
    assert!(temp_files_in(dir.path()).is_empty());
}

#[test]
fn fitsverify_reports_no_errors() {
    let Ok(version) = std::process::Command::new("fitsverify").arg("-h").output() else {
        println!(
            "note: `fitsverify` is not installed (Debian package fitsverify); skipping this check"
        );
        return;
    };
    let _ = version;
    let dir = tmp();
    let image = synthetic(31, 47);
    let cube = Array3::from_shape_fn((2, 5, 6), |(p, r, c)| (p + r + c) as f32);
    let meta = OutputMeta::tlr_output("test")
        .with_card("NCOMBINE", CardValue::Int(3), "frames combined")
        .with_card("EXPTIME", CardValue::Float(180.0), "total exposure (s)")
        .with_card(
            "DATE-OBS",
            CardValue::Str("2024-01-01T00:00:00".into()),
            "first frame",
        )
        .with_card(
            "CFGDIGST",
            CardValue::Str("sha256:".to_string() + &"0123456789abcdef".repeat(4)),
            "config digest",
        )
        .with_history("tlr 0.1.0 test output");
    let files = [
        dir.path().join("f32.fits"),
        dir.path().join("u16.fits"),
        dir.path().join("cube.fits"),
    ];
    write_image_atomic(&files[0], image.view(), SampleFormat::F32, &meta).expect("f32");
    write_image_atomic(&files[1], image.view(), SampleFormat::U16, &meta).expect("u16");
    write_cube_atomic(&files[2], cube.view(), &meta).expect("cube");
    for f in &files {
        let out = std::process::Command::new("fitsverify")
            .arg(f)
            .output()
            .expect("run fitsverify");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("0 warning(s) and 0 error(s)"),
            "fitsverify on {}: {text}",
            f.display()
        );
    }
}

/// By hand: `TLR_SAMPLE_OUT=/tmp/x cargo test -p tlr-core --test it write_samples -- --ignored` writes
/// one file of each output kind there, for checks with external tools (astropy, ds9, Siril).
#[test]
#[ignore = "writes sample outputs for external tools; needs TLR_SAMPLE_OUT"]
fn write_samples_for_external_tools() {
    let Some(out) = std::env::var_os("TLR_SAMPLE_OUT") else {
        println!("note: TLR_SAMPLE_OUT is not set; nothing written");
        return;
    };
    let out = PathBuf::from(out);
    fs::create_dir_all(&out).expect("mkdir");
    let mut image = synthetic(31, 47);
    image[[0, 0]] = f32::NAN;
    let cube = Array3::from_shape_fn((2, 5, 6), |(p, r, c)| (p * 100 + r * 10 + c) as f32);
    let meta = OutputMeta::tlr_output("sample")
        .with_card("NCOMBINE", CardValue::Int(3), "frames combined")
        .with_card("EXPTIME", CardValue::Float(180.0), "total exposure (s)")
        .with_card(
            "DATE-OBS",
            CardValue::Str("2024-01-01T00:00:00".into()),
            "first frame",
        )
        .with_card(
            "CFGDIGST",
            CardValue::Str("sha256:".to_string() + &"0123456789abcdef".repeat(4)),
            "config digest",
        )
        .with_history("tlr 0.1.0 sample output");
    write_image_atomic(
        &out.join("f32.fits"),
        image.view(),
        SampleFormat::F32,
        &meta,
    )
    .expect("f32");
    write_image_atomic(
        &out.join("u16.fits"),
        image.view(),
        SampleFormat::U16,
        &meta,
    )
    .expect("u16");
    write_cube_atomic(&out.join("cube.fits"), cube.view(), &meta).expect("cube");
}
