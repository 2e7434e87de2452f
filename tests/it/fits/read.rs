//! Reading good files: every BITPIX with BZERO/BSCALE (against the `fitsio` crate and raw bytes),
//! BLANK/NaN/Inf, region and padded reads, single- and multi-plane cubes, tile-compressed `.fz`
//! files, odd file names, and the header keywords a frame reports.

use std::fs;
use std::path::PathBuf;

use fitsio::images::{ImageDescription, ImageType};
use fitsio::FitsFile;
use ndarray::{s, Array2, Array3};
use tlr_core::fits::{
    read_cube, read_header, read_header_cards, read_image, write_cube_atomic, write_image_atomic,
    FitsError, FitsReader, OutputMeta, SampleFormat,
};

use super::{build, synthetic, tmp, write};

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
