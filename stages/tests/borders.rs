//! Results that other tools read: no NaN (pixels without data are 0, the COVERAGE extension counts
//! the frames per pixel), `--crop common`, and the header carried from the frames (observation keys,
//! STACKCNT/LIVETIME, DATE-OBS/DATE-END in UTC, the reference frame's WCS moved to the output grid).
//! The frames are rendered here: a drifting star field with a WCS and capture-program keywords.

mod common;

use std::path::Path;

use ndarray::Array2;
use tlr_core::fits::{self, CardValue, HeaderCard, OutputMeta, SampleFormat};

use common::run_ok;

const FRAMES: usize = 10;
const SIZE: usize = 128;
/// Field drift per frame along x, px: frame k sees a star of the reference (frame 0) at `x + k*DRIFT`.
const DRIFT: f64 = -0.8;
/// Columns every frame is blind in (a sensor's masked border, stored as NaN).
const DEAD_COLUMNS: usize = 3;

/// Star positions `(y, x, peak)` in the reference frame's pixels.
fn stars() -> Vec<(f64, f64, f64)> {
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..45)
        .map(|i| {
            let peak = if i < 6 {
                3000.0
            } else {
                300.0 + 900.0 * next()
            };
            (8.0 + 112.0 * next(), 14.0 + 106.0 * next(), peak)
        })
        .collect()
}

fn render(k: usize) -> Array2<f32> {
    let dx = DRIFT * k as f64;
    let sigma2 = 2.0 * 1.3f64.powi(2);
    let mut noise = 99u64 + k as u64;
    let stars = stars();
    Array2::from_shape_fn((SIZE, SIZE), |(r, c)| {
        if c < DEAD_COLUMNS {
            return f32::NAN;
        }
        noise = noise
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let n = ((noise >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 6.0;
        let signal: f64 = stars
            .iter()
            .map(|&(y, x, peak)| {
                let d2 = (r as f64 - y).powi(2) + (c as f64 - (x + dx)).powi(2);
                peak * (-d2 / sigma2).exp()
            })
            .sum();
        (200.0 + signal + n) as f32
    })
}

fn card(key: &str, value: CardValue) -> fits::Card {
    fits::Card::new(key, value, "")
}

/// Writes the frames with a plate-solved WCS each (the same sky point at the frame's own pixel) and
/// the keywords a capture program writes; CCD-TEMP drifts and one frame has another FILTER.
fn write_frames(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..FRAMES {
        let minute = 33 + k;
        let meta = OutputMeta {
            cards: vec![
                card("OBJECT", CardValue::Str("Test field".into())),
                card("TELESCOP", CardValue::Str("Scope 80".into())),
                card("INSTRUME", CardValue::Str("Cam".into())),
                card(
                    "FILTER",
                    CardValue::Str(if k == 5 { "R" } else { "L" }.into()),
                ),
                card("GAIN", CardValue::Int(120)),
                card("CCD-TEMP", CardValue::Float(-10.0 - 0.2 * k as f64)),
                card("EXPTIME", CardValue::Float(30.0)),
                card(
                    "DATE-OBS",
                    CardValue::Str(format!("2017-12-19T18:{minute}:00.000-0700")),
                ),
                card("CTYPE1", CardValue::Str("RA---TAN".into())),
                card("CTYPE2", CardValue::Str("DEC--TAN".into())),
                card("CRVAL1", CardValue::Float(299.9)),
                card("CRVAL2", CardValue::Float(22.7)),
                card("CRPIX1", CardValue::Float(64.5 + DRIFT * k as f64)),
                card("CRPIX2", CardValue::Float(64.5)),
                card("CDELT1", CardValue::Float(-4e-4)),
                card("CDELT2", CardValue::Float(4e-4)),
                card("CROTA2", CardValue::Float(30.0)),
            ],
            history: Vec::new(),
        };
        let path = dir.join(format!("frame_{k:02}.fits"));
        fits::write_image_atomic(&path, render(k).view(), SampleFormat::F32, &meta).unwrap();
    }
}

fn value<'a>(cards: &'a [HeaderCard], key: &str) -> Option<&'a str> {
    cards
        .iter()
        .find(|c| c.key == key)
        .and_then(|c| c.value.as_deref())
}

fn number(cards: &[HeaderCard], key: &str) -> f64 {
    value(cards, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing or not a number"))
}

fn coverage(path: &Path) -> Array2<f32> {
    let mut file = fitsio::FitsFile::open(path).unwrap();
    let hdu = file.hdu("COVERAGE").expect("a COVERAGE extension");
    let values: Vec<f32> = hdu.read_image(&mut file).unwrap();
    let (_, image) = fits::read_image(path).unwrap();
    Array2::from_shape_vec(image.dim(), values).unwrap()
}

/// Intensity-weighted centroid `(y, x)` in a 7x7 box around `(y, x)`, background removed.
fn centroid(image: &Array2<f32>, y: f64, x: f64) -> (f64, f64) {
    let (cy, cx) = (y.round() as usize, x.round() as usize);
    let (mut sw, mut sy, mut sx) = (0.0, 0.0, 0.0);
    for r in cy - 3..=cy + 3 {
        for c in cx - 3..=cx + 3 {
            let w = (f64::from(image[[r, c]]) - 200.0).max(0.0);
            sw += w;
            sy += w * r as f64;
            sx += w * c as f64;
        }
    }
    (sy / sw, sx / sw)
}

#[test]
fn results_have_no_nan_a_coverage_map_the_frames_keys_and_a_wcs_on_the_output_grid() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    write_frames(&frames);
    let full = dir.path().join("full.fits");
    // Frame 1's geometry (the reference frame's pixel grid): the columns and CRPIX below are counted
    // in it. (The default, the mean geometry, is tested in geometry.rs.)
    run_ok(&frames, &full, &["--reference-frame", "1"]);

    // Borders: no NaN; the blind columns are 0 with coverage 0; the centre saw every frame, a
    // column the drift left is counted only for the frames that reach it.
    let (_, image) = fits::read_image(&full).unwrap();
    assert!(image.iter().all(|v| v.is_finite()), "NaN in the result");
    let cov = coverage(&full);
    for r in 0..SIZE {
        assert_eq!(image[[r, 0]], 0.0, "row {r}");
        assert_eq!(cov[[r, 0]], 0.0, "row {r}");
        assert!(image[[r, 64]] > 100.0);
        assert_eq!(cov[[r, 64]], FRAMES as f32);
        // Column 5: frame k samples 5 + k*DRIFT, within half a pixel of the data for k <= 6.
        assert_eq!(cov[[r, 5]], 7.0, "row {r}");
    }

    // Header: carried keys, summaries with their HISTORY lines, stack keys, dates in UTC.
    let cards = fits::read_header_cards(&full).unwrap();
    assert_eq!(value(&cards, "OBJECT"), Some("Test field"));
    assert_eq!(value(&cards, "TELESCOP"), Some("Scope 80"));
    assert_eq!(value(&cards, "INSTRUME"), Some("Cam"));
    assert_eq!(number(&cards, "GAIN"), 120.0);
    assert!((number(&cards, "CCD-TEMP") + 10.9).abs() < 1e-9);
    assert_eq!(value(&cards, "FILTER"), None);
    assert_eq!(number(&cards, "STACKCNT"), FRAMES as f64);
    assert_eq!(number(&cards, "NCOMBINE"), FRAMES as f64);
    assert_eq!(number(&cards, "LIVETIME"), 300.0);
    assert_eq!(value(&cards, "DATE-OBS"), Some("2017-12-20T01:33:00.000"));
    assert_eq!(value(&cards, "DATE-END"), Some("2017-12-20T01:42:30.000"));
    let history: Vec<&str> = cards
        .iter()
        .filter(|c| c.key == "HISTORY")
        .map(|c| c.comment.as_str())
        .collect();
    let history = history.join("\n");
    assert!(
        history.contains("CCD-TEMP differs between the 10 frames"),
        "{history}"
    );
    assert!(
        history.contains("FILTER dropped: differs between the 10 frames"),
        "{history}"
    );

    // WCS: the reference frame's (frame 0), as a CD matrix, on the output's own pixels.
    let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
    let want = [[-4e-4 * c, -4e-4 * s], [-4e-4 * s, 4e-4 * c]];
    for (i, row) in want.iter().enumerate() {
        for (j, w) in row.iter().enumerate() {
            let got = number(&cards, &format!("CD{}_{}", i + 1, j + 1));
            assert!(
                (got - w).abs() < 1e-15,
                "CD{}_{}: {got} vs {w}",
                i + 1,
                j + 1
            );
        }
    }
    assert_eq!(
        (number(&cards, "CRPIX1"), number(&cards, "CRPIX2")),
        (64.5, 64.5)
    );
    // ...and the output grid is the reference frame's: its bright stars sit where frame 0 has them.
    for &(y, x, _) in stars().iter().take(6) {
        let (cy, cx) = centroid(&image, y, x);
        assert!(
            (cy - y).abs() < 0.2 && (cx - x).abs() < 0.2,
            "star ({y}, {x}) at ({cy}, {cx})"
        );
    }

    // --crop common: the area every frame covers, the same pixels bit for bit, the WCS moved with it.
    let cropped = dir.path().join("common.fits");
    run_ok(
        &frames,
        &cropped,
        &["--crop", "common", "--reference-frame", "1"],
    );
    let (_, small) = fits::read_image(&cropped).unwrap();
    // The last frame reaches x >= 7.2 - 0.5, so the common area starts at column 7.
    let x0 = 7;
    assert_eq!(small.dim(), (SIZE, SIZE - x0));
    let same = image.slice(ndarray::s![.., x0..]);
    assert!(small
        .iter()
        .zip(same.iter())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(coverage(&cropped).iter().all(|&n| n == FRAMES as f32));
    let small_cards = fits::read_header_cards(&cropped).unwrap();
    assert_eq!(number(&small_cards, "CRPIX1"), 64.5 - x0 as f64);
    assert_eq!(number(&small_cards, "CRPIX2"), 64.5);
}

/// Frames without a WCS give a result without one: nothing is invented.
#[test]
fn frames_without_a_wcs_give_none() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    common::simulate(&frames, 12, 256);
    let result = dir.path().join("r.fits");
    run_ok(&frames, &result, &[]);
    let cards = fits::read_header_cards(&result).unwrap();
    for key in ["CTYPE1", "CRPIX1", "CD1_1", "CDELT1", "CRVAL1"] {
        assert_eq!(value(&cards, key), None, "{key}");
    }
    assert_eq!(number(&cards, "STACKCNT"), 12.0);
}
