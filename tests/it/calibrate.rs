//! Calibration masters against an outside reference, the master cache, and the error cases of
//! `tlr_core::calibrate`.

use ndarray::{Array2, Array3, Axis};
use std::path::{Path, PathBuf};
use tlr_core::calibrate::{
    build_master, Calibration, CalibrationError, Combine, Lights, MasterOrigin,
};
use tlr_core::config::CalibrationConfig;
use tlr_core::fits::{self, write_image_atomic, CardValue, OutputMeta, SampleFormat};

/// `tests/data/calibration_golden.json`: 15 frames of 6x8 (a column pattern, cosmic rays, low values)
/// with astropy's `sigma_clip(sigma=3, maxiters=5, cenfunc='median', stdfunc='std')` mean and numpy's
/// median, made by `/work/exp/calib/golden.py`.
fn golden() -> (Array3<f32>, Array2<f64>, Array2<f64>) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/calibration_golden.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let frames = Array3::from_shape_vec(
        (15, 6, 8),
        list("frames").into_iter().map(|x| x as f32).collect(),
    )
    .unwrap();
    let mean = Array2::from_shape_vec((6, 8), list("clipped_mean")).unwrap();
    let median = Array2::from_shape_vec((6, 8), list("median")).unwrap();
    (frames, mean, median)
}

fn write_frame(path: &Path, image: &Array2<f32>, cards: &[(&str, CardValue)]) {
    let mut meta = OutputMeta::default();
    for (k, v) in cards {
        meta = meta.with_card(k, v.clone(), "");
    }
    write_image_atomic(path, image.view(), SampleFormat::F32, &meta).unwrap();
}

fn write_set(dir: &Path, frames: &Array3<f32>, exposure: f64) -> Vec<fits::FrameHeader> {
    std::fs::create_dir_all(dir).unwrap();
    frames
        .axis_iter(Axis(0))
        .enumerate()
        .map(|(i, f)| {
            let path = dir.join(format!("f{i:03}.fits"));
            write_frame(
                &path,
                &f.to_owned(),
                &[("EXPTIME", CardValue::Float(exposure))],
            );
            fits::read_header(&path).unwrap()
        })
        .collect()
}

#[test]
fn masters_equal_astropy_sigma_clipping_and_numpy_median_in_any_band_split() {
    let (frames, mean, median) = golden();
    let dir = tempfile::tempdir().unwrap();
    let headers = write_set(dir.path(), &frames, 1.0);
    let row_bytes = 15 * 8 * 4;
    // One band, bands of 1 and 4 rows; 1 and 3 threads: all the same.
    for (budget, threads) in [(1 << 20, 1), (row_bytes, 3), (4 * row_bytes, 2)] {
        let got = build_master(&headers, Combine::default(), budget, threads).unwrap();
        for ((r, c), &g) in got.indexed_iter() {
            let want = mean[[r, c]];
            assert!(
                (f64::from(g) - want).abs() <= 1e-5 * want.abs(),
                "clipped mean at ({r}, {c}): {g} against astropy {want}"
            );
        }
        let got = build_master(&headers, Combine::Median, budget, threads).unwrap();
        for ((r, c), &g) in got.indexed_iter() {
            assert!((f64::from(g) - median[[r, c]]).abs() <= 1e-5 * median[[r, c]].abs());
        }
    }
}

/// Lights, bias, darks and flats of 16x12 in a temporary folder.
struct Setup {
    dir: tempfile::TempDir,
    lights: Vec<fits::FrameHeader>,
}

fn setup(light_exposures: &[f64]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let shape = (12, 16);
    let lights = light_exposures
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let path = dir.path().join(format!("light{i}.fits"));
            write_frame(
                &path,
                &Array2::from_elem(shape, 1000.0),
                &[("EXPTIME", CardValue::Float(t))],
            );
            fits::read_header(&path).unwrap()
        })
        .collect();
    let stack =
        |v: f32| Array3::from_shape_fn((5, 12, 16), |(k, r, c)| v + ((k + r + c) % 3) as f32);
    write_set(&dir.path().join("bias"), &stack(100.0), 0.0);
    write_set(&dir.path().join("darks"), &stack(110.0), 10.0);
    write_set(&dir.path().join("flats"), &stack(5000.0), 1.0);
    Setup { dir, lights }
}

fn config(s: &Setup) -> CalibrationConfig {
    CalibrationConfig {
        use_bias: true,
        use_dark: true,
        use_flat: true,
        bias_dir: Some(s.dir.path().join("bias")),
        darks_dir: Some(s.dir.path().join("darks")),
        flats_dir: Some(s.dir.path().join("flats")),
        ..CalibrationConfig::default()
    }
}

fn prepare(
    cfg: &CalibrationConfig,
    s: &Setup,
    cache: Option<&Path>,
) -> Result<(Calibration, Vec<String>), CalibrationError> {
    let mut warnings = Vec::new();
    let lights = Lights {
        headers: &s.lights,
        pattern: None,
    };
    let (cal, _) = Calibration::prepare(cfg, lights, cache, &mut warnings)?.expect("calibration");
    Ok((cal, warnings))
}

#[test]
fn masters_are_cached_with_provenance_and_rebuilt_when_an_input_changes() {
    let s = setup(&[10.0, 10.0]);
    let cache = s.dir.path().join("cache");
    let (first, _) = prepare(&config(&s), &s, Some(&cache)).unwrap();
    // Three masters built and written, each from its 5 frames; the line a user reads says so.
    assert_eq!(first.masters.len(), 3, "{:?}", first.masters);
    for m in &first.masters {
        assert_eq!((m.origin, m.frames), (MasterOrigin::Built, 5), "{m:?}");
        assert!(m.path.as_ref().is_some_and(|p| p.is_file()), "{m:?}");
        assert!(
            m.to_string().contains("built from 5 frames, written to"),
            "{m}"
        );
    }
    let masters: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(masters.len(), 3, "{masters:?}");
    let cards = fits::read_header_cards(&masters[0]).unwrap();
    assert!(cards
        .iter()
        .any(|c| c.key == "HISTORY" && c.comment.contains("sigma-clipped")));
    let (second, _) = prepare(&config(&s), &s, Some(&cache)).unwrap();
    assert!(
        second
            .masters
            .iter()
            .all(|m| m.origin == MasterOrigin::Reused),
        "{:?}",
        second.masters
    );
    assert_eq!(
        second.masters.iter().map(|m| &m.path).collect::<Vec<_>>(),
        first.masters.iter().map(|m| &m.path).collect::<Vec<_>>()
    );
    // A bias frame rewritten (new size and time): the bias is built again, and the cache has a new file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let bias0 = s.dir.path().join("bias/f000.fits");
    write_frame(
        &bias0,
        &Array2::from_elem((12, 16), 101.0),
        &[("OBSERVER", CardValue::Str("x".into()))],
    );
    let (third, _) = prepare(&config(&s), &s, Some(&cache)).unwrap();
    let origins: Vec<_> = third
        .masters
        .iter()
        .map(|m| (m.kind.as_str(), m.origin))
        .collect();
    assert!(
        origins.contains(&("bias", MasterOrigin::Built)),
        "{origins:?}"
    );
    assert!(
        origins.contains(&("dark-10s", MasterOrigin::Reused)),
        "{origins:?}"
    );
}

#[test]
fn calibration_subtracts_bias_and_dark_and_divides_by_the_flat() {
    let s = setup(&[10.0]);
    let (cal, warnings) = prepare(&config(&s), &s, None).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (plan, _) = cal.plan(Some(10.0), None);
    let mut light = Array2::from_elem((12, 16), 1000.0f32);
    cal.apply_region(&plan, light.view_mut(), 0, 0);
    // Bias 101 (the mean of 100..=102 patterns), dark 111: 1000 - 111 = 889 where the flat is 1.
    let median = tlr_core::stats::median(light.as_slice().unwrap());
    assert!((median - 889.0).abs() < 2.0, "{median}");
}

#[test]
fn errors_name_the_files_and_the_reason() {
    let s = setup(&[10.0]);
    // A missing folder.
    let mut cfg = config(&s);
    cfg.darks_dir = Some(s.dir.path().join("nope"));
    let e = prepare(&cfg, &s, None).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    // An empty folder.
    std::fs::create_dir_all(s.dir.path().join("empty")).unwrap();
    cfg.darks_dir = Some(s.dir.path().join("empty"));
    let e = prepare(&cfg, &s, None).unwrap_err().to_string();
    assert!(e.contains("empty") && e.contains("no file matches"), "{e}");
    // A dark of another size.
    write_set(
        &s.dir.path().join("small"),
        &Array3::from_elem((2, 10, 16), 5.0),
        10.0,
    );
    cfg.darks_dir = Some(s.dir.path().join("small"));
    let e = prepare(&cfg, &s, None).unwrap_err().to_string();
    assert!(
        e.contains("small") && e.contains("light0.fits") && e.contains("16x10"),
        "{e}"
    );
    // A flat with zeros.
    let mut flats = Array3::from_elem((3, 12, 16), 100.0f32);
    flats.slice_mut(ndarray::s![.., 3, 4]).fill(0.0);
    write_set(&s.dir.path().join("zeroflat"), &flats, 1.0);
    let mut cfg = config(&s);
    cfg.use_bias = false;
    cfg.flats_dir = Some(s.dir.path().join("zeroflat"));
    let e = prepare(&cfg, &s, None).unwrap_err().to_string();
    assert!(
        e.contains("zeroflat") && e.contains("zero or negative") && e.contains("row 3"),
        "{e}"
    );
    // Flats no brighter than the bias: their level is zero.
    write_set(
        &s.dir.path().join("dimflat"),
        &Array3::from_shape_fn((5, 12, 16), |(k, r, c)| 100.0 + ((k + r + c) % 3) as f32),
        1.0,
    );
    let mut cfg = config(&s);
    cfg.flats_dir = Some(s.dir.path().join("dimflat"));
    let e = prepare(&cfg, &s, None).unwrap_err().to_string();
    assert!(
        e.contains("dimflat") && e.contains("f000.fits") && e.contains("level"),
        "{e}"
    );
    // `use_dark` without a folder.
    let cfg = CalibrationConfig {
        use_dark: true,
        ..CalibrationConfig::default()
    };
    let e = prepare(&cfg, &s, None).unwrap_err().to_string();
    assert!(e.contains("calibration.darks_dir"), "{e}");
}

#[test]
fn mixed_exposures_with_one_dark_warn() {
    let s = setup(&[10.0, 30.0]);
    let (_, warnings) = prepare(&config(&s), &s, None).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("2 different exposures")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("scaled by 3")),
        "{warnings:?}"
    );
}

/// Median as numpy computes it (the mean of the two middle values for an even count).
fn np_median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// astropy's `sigma_clip(sigma=3, maxiters=5, cenfunc='median', stdfunc='std')` then the mean, written
/// out plainly (stopping, as tlr does, when fewer than 3 values are left).
fn np_clipped_mean(values: &[f64]) -> f64 {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut kept = values.to_vec();
    for _ in 0..5 {
        if kept.len() < 3 {
            break;
        }
        let m = mean(&kept);
        let std = (kept.iter().map(|x| (x - m).powi(2)).sum::<f64>() / kept.len() as f64).sqrt();
        let med = np_median(&kept);
        let next: Vec<f64> = kept
            .iter()
            .copied()
            .filter(|x| (x - med).abs() <= 3.0 * std)
            .collect();
        if next.len() == kept.len() || next.is_empty() {
            break;
        }
        kept = next;
    }
    mean(&kept)
}

/// Sky flats over dusk: 9 Bayer flats at 3 levels (3 000, 9 000 and 24 000 ADU, colours 0.7 / 1 / 1 /
/// 0.5), with a bias and a cosmic ray. The master flat must equal a plain reference (each frame minus
/// the bias, divided by its median per CFA colour, then the clipped mean), whatever the band split and
/// thread count, and through `Calibration::prepare` (the cached master). Without the per-frame levels
/// the ray survives (the levels' spread hides it from the clipping).
#[test]
fn flats_of_different_levels_are_normalised_per_cfa_colour_before_the_combine() {
    let (rows, cols, n) = (12usize, 16usize, 9usize);
    let colour = [0.7f64, 1.0, 1.0, 0.5];
    let bias = Array2::from_shape_fn((rows, cols), |(_, c)| 100.0 + (c % 4) as f32 * 3.0);
    let frames = Array3::from_shape_fn((n, rows, cols), |(k, r, c)| {
        let level = [3000.0, 9000.0, 24000.0][k / 3];
        let shape = 1.0 - 0.01 * (r + c) as f64;
        let noise = ((k * 7919 + r * 104_729 + c * 1_299_709) % 1000) as f64 / 1000.0 - 0.5;
        let v = level * colour[(r % 2) * 2 + c % 2] * shape * (1.0 + 0.01 * noise);
        let ray = if (k, r, c) == (1, 5, 6) {
            40_000.0
        } else {
            0.0
        };
        (v + ray).round() as f32 + bias[[r, c]]
    });
    // The reference, in f64 from the same f32 values.
    let mut corrected = frames.mapv(f64::from);
    for (k, mut f) in corrected.axis_iter_mut(Axis(0)).enumerate() {
        f -= &bias.mapv(f64::from);
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let mut site = f.slice_mut(ndarray::s![dy..;2, dx..;2]);
            let level = np_median(&site.iter().copied().collect::<Vec<_>>());
            assert!(level > 0.0, "frame {k}");
            site.mapv_inplace(|v| v / level);
        }
    }
    let reference = Array2::from_shape_fn((rows, cols), |(r, c)| {
        np_clipped_mean(&corrected.slice(ndarray::s![.., r, c]).to_vec())
    });
    let close = |got: &Array2<f32>, what: &str| {
        for ((r, c), &g) in got.indexed_iter() {
            let want = reference[[r, c]];
            assert!(
                (f64::from(g) - want).abs() <= 1e-5 * want.abs(),
                "{what} at ({r}, {c}): {g} against the reference {want}"
            );
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let headers = write_set(&dir.path().join("flats"), &frames, 1.0);
    let prep = tlr_core::calibrate::FlatFrames {
        under: Some(bias.view()),
        cfa: true,
    };
    let row_bytes = n * cols * 4;
    for (budget, threads) in [(1 << 20, 1), (row_bytes, 3), (3 * row_bytes, 2)] {
        let got =
            tlr_core::calibrate::build_flat(&headers, &prep, Combine::default(), budget, threads)
                .unwrap();
        close(&got, &format!("bands of {budget} bytes, {threads} threads"));
    }
    // Without the levels: the ray is kept.
    let mut plain = build_master(&headers, Combine::default(), 1 << 20, 1).unwrap();
    plain -= &bias;
    tlr_core::calibrate::apply::normalise_flat(&mut plain, dir.path(), true).unwrap();
    let ray = f64::from(plain[[5, 6]]) / reference[[5, 6]] / plain_level(&reference, 5, 6);
    assert!(
        ray > 1.05,
        "the unnormalised combine should keep the ray: {ray}"
    );

    // Through prepare: the bias master file, the flats folder, a Bayer light.
    let light = dir.path().join("light.fits");
    write_frame(&light, &Array2::from_elem((rows, cols), 500.0), &[]);
    let bias_file = dir.path().join("bias.fits");
    write_frame(&bias_file, &bias, &[]);
    let cfg = CalibrationConfig {
        use_bias: true,
        bias_use_master: true,
        bias_master: Some(bias_file),
        use_flat: true,
        flats_dir: Some(dir.path().join("flats")),
        ..CalibrationConfig::default()
    };
    let lights = [fits::read_header(&light).unwrap()];
    let cache = dir.path().join("cache");
    let lights = Lights {
        headers: &lights,
        pattern: Some("RGGB".parse().unwrap()),
    };
    let (cal, _) = Calibration::prepare(&cfg, lights, Some(&cache), &mut Vec::new())
        .unwrap()
        .unwrap();
    let flat = cal.masters.iter().find(|m| m.kind == "flat").unwrap();
    close(
        &fits::read_image(flat.path.as_ref().unwrap()).unwrap().1,
        "cached master flat",
    );
}

/// The normalised reference's value at `(r, c)` relative to its CFA colour's median (1 for a master
/// normalised per colour, as the unnormalised combine is at the end).
fn plain_level(reference: &Array2<f64>, r: usize, c: usize) -> f64 {
    let site: Vec<f64> = reference
        .slice(ndarray::s![r % 2..;2, c % 2..;2])
        .iter()
        .copied()
        .collect();
    1.0 / np_median(&site)
}
