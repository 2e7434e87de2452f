//! Simulator: determinism, truth displacement against measurement, and the files it writes.

use tlr_core::fits;
use tlr_core::simulate::{
    frame_file_name, write_sequence, FrameKind, Scenario, SimConfig, SimError, Simulation,
    TruthDisplacement, TruthStar,
};
use tlr_core::Shift;

use ndarray::{s, Array2, ArrayView2};

#[test]
fn frames_are_bit_identical_per_seed_and_independent_of_order() {
    let cfg = SimConfig::new(Scenario::Altaz, 8, 160, 120, 42);
    let a = Simulation::new(cfg.clone());
    let b = Simulation::new(cfg.clone());
    // b renders in reverse order: frame(i) must not depend on what was rendered before.
    let later_first: Vec<Array2<f32>> = (0..8).rev().map(|i| b.frame(i)).collect();
    for i in 0..8 {
        let fa = a.frame(i);
        assert_eq!(fa, later_first[7 - i], "frame {i} differs");
    }
    assert_eq!(a.truth(), b.truth());

    let mut other = cfg.clone();
    other.seed = 43;
    let c = Simulation::new(other);
    assert_ne!(a.frame(3), c.frame(3));
    assert_ne!(a.truth(), c.truth());

    // Consecutive frames differ (noise, motion).
    assert_ne!(a.frame(1), a.frame(2));
}

#[test]
fn same_seed_gives_the_same_sky_in_every_scenario() {
    let truth = |s| Simulation::new(SimConfig::new(s, 5, 96, 96, 9)).truth();
    assert_eq!(truth(Scenario::Static), truth(Scenario::Seeing));
    assert_eq!(truth(Scenario::Seeing), truth(Scenario::Altaz));
}

/// Bright, unsaturated truth stars well inside the image with no comparable neighbour.
fn isolated_bright_stars(sim: &Simulation, border: f32, min_flux: f32) -> Vec<TruthStar> {
    let cfg = sim.config();
    let (w, h) = (cfg.width as f32, cfg.height as f32);
    let stars = sim.stars();
    stars
        .iter()
        .filter(|s| {
            s.flux >= min_flux
                && s.flux < 4.0e5
                && s.y > border
                && s.y < h - border
                && s.x > border
                && s.x < w - border
        })
        .filter(|s| {
            !stars.iter().any(|o| {
                !std::ptr::eq(*s, o)
                    && o.flux > 0.05 * s.flux
                    && (o.y - s.y).hypot(o.x - s.x) < 12.0
            })
        })
        .copied()
        .collect()
}

/// The frame with its (known) hot pixels replaced by the median of their 8 neighbours, as a
/// pipeline's cosmetic correction would do.
fn without_hot_pixels(sim: &Simulation, frame: usize) -> Array2<f32> {
    let mut image = sim.frame(frame);
    let (rows, cols) = image.dim();
    for hp in sim.hot_pixels() {
        let mut around = Vec::new();
        for r in hp.row.saturating_sub(1)..(hp.row + 2).min(rows) {
            for c in hp.col.saturating_sub(1)..(hp.col + 2).min(cols) {
                if (r, c) != (hp.row, hp.col) {
                    around.push(image[[r, c]]);
                }
            }
        }
        image[[hp.row, hp.col]] = tlr_core::stats::median(&around);
    }
    image
}

/// Plain (not phase-normalised) cross-correlation of `template` against `image` at integer offsets
/// within ±`search` of `guess`, refined by a parabola through the peak in each axis. Returns the
/// offset of `template`'s content in `image` relative to `(top, left)`.
fn cross_correlate(
    image: ArrayView2<f32>,
    template: ArrayView2<f32>,
    top: usize,
    left: usize,
    guess: (i64, i64),
    search: usize,
) -> Shift {
    let top = (top as i64 + guess.0) as usize;
    let left = (left as i64 + guess.1) as usize;
    let (th, tw) = template.dim();
    let tmean = template.mean().unwrap();
    let n = 2 * search + 1;
    let mut cc = Array2::<f64>::zeros((n, n));
    for oy in 0..n {
        for ox in 0..n {
            let region = image.slice(s![
                top + oy - search..top + oy - search + th,
                left + ox - search..left + ox - search + tw
            ]);
            let rmean = region.mean().unwrap();
            let mut sum = 0.0f64;
            for (a, b) in region.iter().zip(template.iter()) {
                sum += f64::from((a - rmean) * (b - tmean));
            }
            cc[[oy, ox]] = sum;
        }
    }
    let (mut by, mut bx) = (0, 0);
    for ((y, x), &v) in cc.indexed_iter() {
        if v > cc[[by, bx]] {
            by = y;
            bx = x;
        }
    }
    let refine = |m: f64, c: f64, p: f64| {
        let den = m - 2.0 * c + p;
        if den < 0.0 {
            (0.5 * (m - p) / den) as f32
        } else {
            0.0
        }
    };
    let fy = if by > 0 && by + 1 < n {
        refine(cc[[by - 1, bx]], cc[[by, bx]], cc[[by + 1, bx]])
    } else {
        0.0
    };
    let fx = if bx > 0 && bx + 1 < n {
        refine(cc[[by, bx - 1]], cc[[by, bx]], cc[[by, bx + 1]])
    } else {
        0.0
    };
    Shift::new(
        (by as i64 - search as i64 + guess.0) as f32 + fy,
        (bx as i64 - search as i64 + guess.1) as f32 + fx,
    )
}

#[test]
fn truth_displacement_matches_cross_correlation_of_frame_regions_against_truth() {
    let sim = Simulation::new(SimConfig::new(Scenario::Altaz, 30, 448, 448, 11));
    let truth = sim.truth();
    let stars = isolated_bright_stars(&sim, 40.0, 1.0e4);
    assert!(stars.len() >= 8, "only {} test stars", stars.len());
    let half = 12usize;
    for frame in [5usize, 17, 29] {
        let image = without_hot_pixels(&sim, frame);
        let global = sim.global_displacement(frame);
        let guess = (global.dy.round() as i64, global.dx.round() as i64);
        let (mut err_full, mut err_global, mut count) = (0.0f32, 0.0f32, 0usize);
        for star in &stars {
            let (cy, cx) = (star.y.round() as usize, star.x.round() as usize);
            let template = truth.slice(s![cy - half..=cy + half, cx - half..=cx + half]);
            let measured = cross_correlate(image.view(), template, cy - half, cx - half, guess, 6);
            let predicted = sim.displacement(frame, star.y, star.x);
            err_full += (measured - predicted).norm();
            err_global += (measured - global).norm();
            count += 1;
        }
        let (mean_full, mean_global) = (err_full / count as f32, err_global / count as f32);
        eprintln!("frame {frame}: {count} stars, mean error {mean_full:.3} px (global only {mean_global:.3} px)");
        assert!(
            mean_full < 0.3,
            "frame {frame}: mean error {mean_full} px against the truth displacement"
        );
        assert!(
            mean_full < 0.5 * mean_global,
            "frame {frame}: local field explains nothing ({mean_full} vs {mean_global} px)"
        );
    }
}

#[test]
fn write_sequence_writes_frames_truth_and_displacement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seq [1]");
    let cfg = SimConfig::new(Scenario::Seeing, 6, 72, 64, 5);
    let summary = write_sequence(&cfg, &out).unwrap();
    let sim = Simulation::new(cfg.clone());
    assert_eq!(summary.frames.len(), 6);
    assert_eq!(summary.cloud_frame, sim.cloud_frame());
    let mut last_date = f64::NEG_INFINITY;
    for (i, path) in summary.frames.iter().enumerate() {
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            frame_file_name(i)
        );
        let (header, image) = fits::read_image(path).unwrap();
        assert_eq!((header.rows, header.cols, header.bitpix), (64, 72, 16));
        assert_eq!(image, sim.frame(i), "frame {i} does not round-trip exactly");
        let creator = header.creator.clone().unwrap();
        assert!(!creator.starts_with("tlr"), "{creator}");
        assert!(!fits::is_own_output(&creator));
        assert_eq!(header.object.as_deref(), Some("tlr simulation"));
        assert_eq!(header.exposure_s, Some(10.0));
        assert!((header.gain.unwrap() - 0.8).abs() < 1e-6);
        let date = fits::parse_date_obs(header.date_obs.as_deref().unwrap()).unwrap();
        assert!(date > last_date, "DATE-OBS must increase");
        last_date = date;
    }
    let (truth_header, truth) = fits::read_image(&summary.truth).unwrap();
    assert!(fits::is_own_output(
        truth_header.creator.as_deref().unwrap()
    ));
    assert_eq!(truth_header.bitpix, -32);
    assert_eq!(truth, sim.truth());

    let td = TruthDisplacement::load(&summary.truth_displacement).unwrap();
    assert_eq!(td.frames.len(), 6);
    assert_eq!(td.frames[0].global, Shift::ZERO);
    assert_eq!(td.frames[2].kind, FrameKind::Cloud);
    assert_eq!(td.frames[4].file, "frame_0004.fits");
    for i in 0..6 {
        let d = td.displacement(i, 33.0, 40.0).unwrap();
        assert!((d - sim.displacement(i, 33.0, 40.0)).norm() < 0.02);
    }
    let text = std::fs::read_to_string(&summary.config).unwrap();
    let back: SimConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cfg);

    // Scans list the frames and skip the truth.
    let report = tlr_core::scan::scan_folder(&out, &Default::default()).unwrap();
    assert_eq!(report.frames.len(), 6, "{:?}", report.skipped);
}

#[test]
fn write_sequence_rejects_bad_configs_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let err = write_sequence(&SimConfig::new(Scenario::Static, 0, 64, 64, 1), &out).unwrap_err();
    assert!(matches!(err, SimError::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("frames"), "{err}");
    assert!(!out.exists());

    // A file where the folder should be: the error names the path.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = write_sequence(
        &SimConfig::new(Scenario::Static, 2, 32, 32, 1),
        &blocker.join("sub"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
}

/// `cargo test --release -p tlr-core --test it -- --ignored --nocapture simulate_timing`
#[test]
#[ignore = "benchmark: run in release by hand"]
fn simulate_timing_100_frames_1024() {
    let cfg = SimConfig::new(Scenario::Altaz, 100, 1024, 1024, 1);
    let start = std::time::Instant::now();
    let sim = Simulation::new(cfg.clone());
    let mut checksum = 0.0f64;
    for i in 0..sim.frames() {
        checksum += f64::from(sim.frame(i)[[512, 512]]);
    }
    let in_memory = start.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let summary = write_sequence(&cfg, dir.path()).unwrap();
    let written = start.elapsed();
    println!(
        "100 frames 1024x1024: in memory {:.2} s, written {:.2} s (local rms {:.3} px, checksum {checksum})",
        in_memory.as_secs_f64(),
        written.as_secs_f64(),
        summary.local_rms_px
    );
}
