//! The native reader of uncompressed FITS images against cfitsio: every BITPIX, BZERO/BSCALE
//! variants, BLANK, NaN/Inf/zero/subnormal samples, regions of every shape, cube planes and image
//! extensions must read **bit for bit** as cfitsio's `ffgsv` (TFLOAT, null value NaN) reads them, with
//! every non-finite value as `f32::NAN` (the reader's rule for both backends).

use std::ops::Range;
use std::path::{Path, PathBuf};

use fitsio::FitsFile;
use tlr_core::fits::{read_cube, read_image, FitsError, FitsReader};

use crate::fits::build;

/// cfitsio's `TFLOAT` type code.
const TFLOAT: i32 = 42;

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// cfitsio's reading of a region (0-based, end-exclusive) of plane `plane` in HDU `hdu` (0-based),
/// opened through the `fitsio` crate and read with `ffgsv` directly; non-finite values become NaN.
fn cfitsio_region(
    path: &Path,
    hdu: usize,
    plane: Option<usize>,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Vec<f32> {
    let mut file = FitsFile::open(path).expect("cfitsio opens the test file");
    let mut status = 0;
    let mut hdutype = 0;
    // SAFETY (both calls): `file` owns a valid handle; blc/trc/inc have one entry per axis and `out`
    // holds exactly the region.
    let raw = unsafe { file.as_raw() };
    unsafe { fitsio_sys::ffmahd(raw, hdu as i32 + 1, &mut hdutype, &mut status) };
    assert_eq!(status, 0, "ffmahd");
    let mut blc = vec![cols.start as i64 + 1, rows.start as i64 + 1];
    let mut trc = vec![cols.end as i64, rows.end as i64];
    let mut inc = vec![1i64, 1];
    if let Some(p) = plane {
        blc.push(p as i64 + 1);
        trc.push(p as i64 + 1);
        inc.push(1);
    }
    let mut out = vec![0f32; rows.len() * cols.len()];
    let mut nulval = f32::NAN;
    let mut anynul = 0;
    unsafe {
        fitsio_sys::ffgsv(
            raw,
            TFLOAT,
            blc.as_mut_ptr() as *mut _,
            trc.as_mut_ptr() as *mut _,
            inc.as_mut_ptr() as *mut _,
            &mut nulval as *mut f32 as *mut _,
            out.as_mut_ptr() as *mut _,
            &mut anynul,
            &mut status,
        )
    };
    assert_eq!(status, 0, "ffgsv");
    for v in &mut out {
        if !v.is_finite() {
            *v = f32::NAN;
        }
    }
    out
}

/// Bitwise equality; every NaN must be the canonical `f32::NAN`.
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: pixel {i}: got {g:e} ({:#010x}), cfitsio {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
        if g.is_nan() {
            assert_eq!(
                g.to_bits(),
                f32::NAN.to_bits(),
                "{what}: pixel {i}: NaN bits"
            );
        }
    }
}

/// Regions at the edges, single rows and columns, full width, full height, interior boxes.
fn regions(h: usize, w: usize) -> Vec<(Range<usize>, Range<usize>)> {
    vec![
        (0..h, 0..w),
        (0..1, 0..1),
        (h - 1..h, w - 1..w),
        (0..1, 0..w),
        (h - 1..h, 0..w),
        (0..h, 0..1),
        (0..h, w - 1..w),
        (3..h - 2, 0..w),
        (2..5, 1..w - 1),
        (1..h, 4..9),
        (h / 2..h / 2 + 1, w / 3..w),
        (0..h, w / 2..w),
    ]
}

fn backend_of(reader: &FitsReader) -> String {
    let debug = format!("{reader:?}");
    if debug.contains("\"native\"") {
        "native".into()
    } else {
        assert!(debug.contains("\"cfitsio\""), "{debug}");
        "cfitsio".into()
    }
}

/// Compares every region (and the full and padded reads) of the 2-D image in `hdu` with cfitsio, for
/// the reader `FitsReader::open` picks (`backend`) and the reader forced onto cfitsio.
fn check_file(path: &Path, hdu: usize, backend: &str) {
    let mut native = FitsReader::open(path).expect("open");
    assert_eq!(backend_of(&native), backend, "{}", path.display());
    let mut forced = FitsReader::open_with_cfitsio(path).expect("open with cfitsio");
    assert_eq!(backend_of(&forced), "cfitsio");
    let (h, w) = (native.header().rows, native.header().cols);
    for (r, c) in regions(h, w) {
        let want = cfitsio_region(path, hdu, None, r.clone(), c.clone());
        let what = format!("{} rows {r:?} cols {c:?}", path.display());
        let got = native.read_region(r.clone(), c.clone()).expect("region");
        assert_eq!(got.dim(), (r.len(), c.len()));
        assert_bits(got.as_slice().expect("standard layout"), &want, &what);
        let old = forced.read_region(r.clone(), c.clone()).expect("region");
        assert_bits(old.as_slice().expect("standard layout"), &want, &what);
    }
    let want = cfitsio_region(path, hdu, None, 0..h, 0..w);
    match (native.read_full(), forced.read_full()) {
        (Ok(a), Ok(b)) => {
            assert_bits(a.as_slice().expect("layout"), &want, "read_full");
            assert_bits(b.as_slice().expect("layout"), &want, "read_full (cfitsio)");
        }
        (Err(FitsError::NoFiniteData { .. }), Err(FitsError::NoFiniteData { .. })) => {
            assert!(want.iter().all(|v| v.is_nan()));
        }
        (a, b) => panic!("read_full disagrees: {a:?} vs {b:?}"),
    }
    // Padded reads reaching over every edge.
    let padded = native
        .read_region_padded(-2, -3, h + 4, w + 6)
        .expect("padded");
    let inner: Vec<f32> = padded
        .slice(ndarray::s![2..h + 2, 3..w + 3])
        .iter()
        .copied()
        .collect();
    assert_bits(&inner, &want, "padded");
    assert!(padded.row(0).iter().all(|v| v.is_nan()));
    assert!(padded.column(w + 5).iter().all(|v| v.is_nan()));
}

/// Raw big-endian samples of `n` pixels of `bitpix`: random bytes with the type's special values
/// (extremes, zero, -1, `blank`; NaN, ±Inf, ±0, subnormals, huge values) spliced in.
fn samples(rng: &mut Rng, bitpix: i64, n: usize, blank: Option<i64>) -> Vec<u8> {
    let width = (bitpix.unsigned_abs() / 8) as usize;
    let mut out = Vec::with_capacity(n * width);
    for i in 0..n {
        let r = rng.next();
        let special: Option<Vec<u8>> = match (bitpix, i % 7) {
            (_, 1..=6) => None,
            (8, _) => Some(vec![[0u8, 255, 1, 128][(i / 7) % 4]]),
            (16, _) => Some(
                [i16::MIN, i16::MAX, 0, -1, 1][(i / 7) % 5]
                    .to_be_bytes()
                    .to_vec(),
            ),
            (32, _) => Some(
                [i32::MIN, i32::MAX, 0, -1, 16_777_217, 1_234_554_321][(i / 7) % 6]
                    .to_be_bytes()
                    .to_vec(),
            ),
            (64, _) => Some(
                [
                    i64::MIN,
                    i64::MAX,
                    0,
                    -1,
                    (1 << 53) + 1,
                    (1 << 24) + 1,
                    i64::MIN + 1,
                    // Just above a tie between two f32 values: a direct cast rounds up, a cast via
                    // f64 lands exactly on the tie first and rounds to even (down). As unsigned
                    // (sign bit flipped) the same for `BZERO = 2^63`.
                    (1 << 60) + (1 << 36) + 1,
                    -((1 << 60) + (1 << 36) + 1),
                    ((1u64 << 63) | (1 << 60) | (1 << 36) | 1) as i64,
                ][(i / 7) % 10]
                    .to_be_bytes()
                    .to_vec(),
            ),
            (-32, _) => Some(
                [
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    0.0,
                    -0.0,
                    f32::from_bits(1),
                    f32::from_bits(0x8000_0001),
                    f32::MAX,
                    f32::MIN_POSITIVE,
                    -1.5,
                    f32::from_bits(0xffc0_1234), // a NaN with a payload
                ][(i / 7) % 11]
                    .to_be_bytes()
                    .to_vec(),
            ),
            (_, _) => Some(
                [
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    0.0,
                    -0.0,
                    f64::from_bits(1),
                    1e300,
                    -1e-300,
                    1e-40,
                    3.0e38,
                    0.1,
                ][(i / 7) % 11]
                    .to_be_bytes()
                    .to_vec(),
            ),
        };
        let bytes = match (special, blank) {
            // Every 5th pixel is BLANK (when it fits the type), to be sure null pixels occur.
            (_, Some(b)) if bitpix > 0 && i % 5 == 2 => {
                let full = b.to_be_bytes();
                full[8 - width..].to_vec()
            }
            (Some(s), _) => s,
            (None, _) => {
                let mut v = r.to_be_bytes()[..width].to_vec();
                // Floats: keep most random samples in a sane range (random exponents are mostly
                // huge or tiny), but let some through unchanged.
                if bitpix < 0 && i % 3 != 0 {
                    v[0] = (v[0] & 0x80) | 0x40;
                    v[1] &= if width == 4 { 0x7f } else { 0x0f };
                }
                v
            }
        };
        out.extend(bytes);
    }
    out
}

fn write(path: PathBuf, bytes: &[u8]) -> PathBuf {
    std::fs::write(&path, bytes).expect("write test file");
    path
}

#[test]
fn native_reads_match_cfitsio_bit_for_bit_for_every_bitpix_scaling_and_blank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (rows, cols) = (11, 19);
    let scalings: &[&[(&str, &str)]] = &[
        &[],
        &[("BSCALE", "1"), ("BZERO", "0")],
        &[("BZERO", "32768"), ("BSCALE", "1")],
        &[("BZERO", "-128")],
        &[("BZERO", "2147483648")],
        &[("BZERO", "9223372036854775808")],
        &[("BSCALE", "1.0"), ("BZERO", "9.223372036854775808E18")],
        &[("BSCALE", "0.5"), ("BZERO", "100")],
        &[("BSCALE", "2.0"), ("BZERO", "-3.0")],
        &[("BSCALE", "1.0000001"), ("BZERO", "0.1")],
        &[("BSCALE", "-1")],
        &[("BSCALE", "0")],
        &[("BSCALE", "1D0"), ("BZERO", "1.5E2")],
        &[("BZERO", "3000000000")],
        &[("BZERO", "1073741825")],
        &[("BSCALE", "1e38")],
        &[("BSCALE", "3"), ("BZERO", "9223372036854775808")],
    ];
    let mut files = 0;
    for bitpix in [8i64, 16, 32, 64, -32, -64] {
        let blanks: &[Option<i64>] = match bitpix {
            8 => &[None, Some(7), Some(300)],
            16 => &[None, Some(-999), Some(40_000)],
            32 => &[None, Some(-5), Some((1 << 32) + 5), Some(1_234_554_321)],
            64 => &[None, Some(i64::MIN), Some(123)],
            _ => &[None, Some(0)],
        };
        for (si, scaling) in scalings.iter().enumerate() {
            for &blank in blanks {
                let mut cards: Vec<String> =
                    scaling.iter().map(|(k, v)| build::card(k, v)).collect();
                if let Some(b) = blank {
                    cards.push(build::card("BLANK", &b.to_string()));
                }
                let data = samples(&mut rng, bitpix, rows * cols, blank);
                let path = write(
                    dir.path().join(format!("b{bitpix}_s{si}_{blank:?}.fits")),
                    &build::primary(bitpix, &[cols, rows], &cards, data),
                );
                check_file(&path, 0, "native");
                files += 1;
            }
        }
    }
    assert_eq!(files, 17 * (3 + 3 + 4 + 3 + 2 + 2));
}

#[test]
fn cube_planes_and_image_extensions_match_cfitsio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(42);
    let (planes, rows, cols) = (3, 9, 14);
    for (bitpix, cards) in [
        (
            16,
            vec![
                build::card("BZERO", "32768"),
                build::card("BLANK", "-32768"),
            ],
        ),
        (-32, vec![]),
        (-64, vec![build::card("BSCALE", "0.25")]),
    ] {
        let data = samples(&mut rng, bitpix, planes * rows * cols, Some(-32768));
        let path = write(
            dir.path().join(format!("cube{bitpix}.fits")),
            &build::primary(bitpix, &[cols, rows, planes], &cards, data),
        );
        let (header, cube) = match read_cube(&path) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((header.rows, header.cols), (rows, cols));
        for p in 0..planes {
            let want = cfitsio_region(&path, 0, Some(p), 0..rows, 0..cols);
            let got: Vec<f32> = cube
                .index_axis(ndarray::Axis(0), p)
                .iter()
                .copied()
                .collect();
            assert_bits(&got, &want, &format!("cube BITPIX {bitpix} plane {p}"));
        }
    }

    // An empty primary HDU followed by an IMAGE extension (with a BLANK and scaling).
    for (bitpix, extra) in [
        (
            16,
            vec![build::card("BZERO", "32768"), build::card("BLANK", "7")],
        ),
        (-32, vec![build::card("BZERO", "1.5")]),
        (8, vec![]),
    ] {
        let mut bytes = build::header(&[
            build::card("SIMPLE", "T"),
            build::card("BITPIX", "8"),
            build::card("NAXIS", "0"),
            build::card("EXTEND", "T"),
        ]);
        let mut cards = vec![
            build::card("XTENSION", "'IMAGE   '"),
            build::card("BITPIX", &bitpix.to_string()),
            build::card("NAXIS", "2"),
            build::card("NAXIS1", &cols.to_string()),
            build::card("NAXIS2", &rows.to_string()),
            build::card("PCOUNT", "0"),
            build::card("GCOUNT", "1"),
        ];
        cards.extend(extra);
        bytes.extend(build::header(&cards));
        bytes.extend(build::pad(samples(&mut rng, bitpix, rows * cols, Some(7))));
        let path = write(dir.path().join(format!("ext{bitpix}.fits")), &bytes);
        let reader = FitsReader::open(&path).expect("open");
        assert_eq!(reader.header().hdu, 1);
        check_file(&path, 1, "native");
    }
}

#[test]
fn scaling_cards_cfitsio_might_read_differently_are_left_to_cfitsio() {
    // cfitsio takes the last of repeated cards, ignores quoted or malformed numbers (BSCALE 1.0
    // instead), reads an empty value as 0 and skips `PCOUNT` samples: rather than replicating each
    // rule, such files go to the cfitsio backend, which is still compared with cfitsio here.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(7);
    let (rows, cols) = (6, 10);
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("repeated", &[("BSCALE", "2"), ("BSCALE", "3")]),
        ("lower_d", &[("BZERO", "1.5d2")]),
        ("underflow", &[("BSCALE", "1E-400")]),
        ("blank_float", &[("BLANK", "5.0")]),
        ("blank_huge", &[("BLANK", "99999999999999999999")]),
        ("naxis_twice", &[("NAXIS1", "10")]),
    ];
    for (name, cards) in cases {
        let cards: Vec<String> = cards.iter().map(|(k, v)| build::card(k, v)).collect();
        let data = samples(&mut rng, 16, rows * cols, Some(5));
        let path = write(
            dir.path().join(format!("{name}.fits")),
            &build::primary(16, &[cols, rows], &cards, data),
        );
        check_file(&path, 0, "cfitsio");
    }
    // Values cfitsio would silently read as 1.0 or 0.0 are errors naming the file and keyword.
    let refused: &[(&str, (&str, &str))] = &[
        ("quoted", ("BSCALE", "'2.0'")),
        ("empty", ("BSCALE", "")),
        ("text", ("BSCALE", "abc")),
        ("hex", ("BZERO", "0x10")),
        ("overflow", ("BZERO", "1E400")),
    ];
    for (name, (key, value)) in refused {
        let data = samples(&mut rng, 16, rows * cols, None);
        let path = write(
            dir.path().join(format!("refused_{name}.fits")),
            &build::primary(16, &[cols, rows], &[build::card(key, value)], data),
        );
        let error = read_image(&path).expect_err(name).to_string();
        assert!(
            error.contains(&format!("refused_{name}.fits")) && error.contains(key),
            "{name}: {error}"
        );
    }
    // Plain cards stay native, including a harmless keyword that shares a prefix.
    let cards = [
        build::card("BLANKS", "'none'"),
        build::card("BSCALE", "+1.0E+00"),
        build::card("BZERO", "32768."),
        build::card("PCOUNT", "0"),
        build::card("GCOUNT", "1"),
    ];
    let data = samples(&mut rng, 16, rows * cols, None);
    let path = write(
        dir.path().join("plain.fits"),
        &build::primary(16, &[cols, rows], &cards, data),
    );
    check_file(&path, 0, "native");
}

#[test]
fn camera_frames_read_natively_in_one_pass_and_bands_agree_with_the_full_read() {
    // The benchmark's shape of work: a u16 camera frame read whole, then in row bands and tiles.
    let dir = tempfile::tempdir().expect("tempdir");
    let (rows, cols) = (300, 257);
    let path = write(
        dir.path().join("camera.fits"),
        &build::camera_frame(rows, cols, 1200, &[]),
    );
    let (_, full) = read_image(&path).expect("read");
    let want = cfitsio_region(&path, 0, None, 0..rows, 0..cols);
    assert_bits(full.as_slice().expect("layout"), &want, "full");
    let mut reader = FitsReader::open(&path).expect("open");
    assert_eq!(backend_of(&reader), "native");
    for start in (0..rows).step_by(17) {
        let end = (start + 23).min(rows);
        let band = reader.read_region(start..end, 0..cols).expect("band");
        assert_eq!(band, full.slice(ndarray::s![start..end, ..]));
        let tile = reader
            .read_region(start..end, start % 200..start % 200 + 57)
            .expect("tile");
        assert_eq!(
            tile,
            full.slice(ndarray::s![start..end, start % 200..start % 200 + 57])
        );
    }
}

#[test]
fn a_file_that_shrinks_after_open_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path().join("shrinks.fits"),
        &build::camera_frame(40, 30, 100, &[]),
    );
    let mut reader = FitsReader::open(&path).expect("open");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("reopen");
    file.set_len(2880 + 600).expect("truncate");
    let err = reader.read_region(0..40, 0..30).expect_err("shrunk");
    assert!(matches!(err, FitsError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("shrinks.fits"), "{err}");
    // The first rows are still there.
    assert!(reader.read_region(0..5, 0..30).is_ok());
}
