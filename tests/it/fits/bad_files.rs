//! Bad files: every class of broken input has its own clear error naming the file, damaged and
//! truncated files never panic, and the fuzz findings and seeds stay fixed.

use std::fs;
use std::path::Path;

use tlr_core::fits::{
    read_cube, read_header, read_header_cards, read_image, FitsError, FitsReader,
};

use super::{build, tmp, write};

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
