//! Star measurement on simulated frames: the simulator's stars are found where the truth
//! displacement puts them, with the simulated FWHM, and hot pixels are not stars.

use tlr_core::simulate::{Scenario, SimConfig, Simulation};
use tlr_core::stars::{detect_stars, measure, DetectOptions, Star};

/// Peak (ADU above the sky) of a simulated star in frame `i`: Moffat peak of its flux.
fn peak_in_frame(sim: &Simulation, i: usize, flux: f32) -> f32 {
    let beta = sim.config().moffat_beta;
    let fwhm = sim.fwhm_px(i);
    let alpha = fwhm / (2.0 * (2f32.powf(1.0 / beta) - 1.0).sqrt());
    flux * sim.transparency(i) * (beta - 1.0) / (std::f32::consts::PI * alpha * alpha)
}

fn nearest(stars: &[Star], y: f32, x: f32) -> Option<(f32, &Star)> {
    stars
        .iter()
        .map(|s| ((s.y - y).hypot(s.x - x), s))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

#[test]
fn measure_finds_the_simulated_stars_with_the_simulated_fwhm() {
    let sim = Simulation::new(SimConfig::new(Scenario::Seeing, 12, 512, 384, 21));
    let (w, h) = (512.0f32, 384.0f32);
    for i in [0usize, 3, 8, 11] {
        let frame = sim.frame(i);
        let q = measure(frame.view());
        let truth_fwhm = sim.fwhm_px(i);
        let err = q.median_fwhm / truth_fwhm - 1.0;
        eprintln!(
            "frame {i}: {} stars ({} for FWHM), FWHM {:.3} vs {truth_fwhm:.3} px ({:+.1} %), e {:.3}",
            q.stars,
            q.fwhm_stars,
            q.median_fwhm,
            100.0 * err,
            q.median_ellipticity
        );
        assert!(
            err.abs() < 0.10,
            "frame {i}: median FWHM {} vs simulated {truth_fwhm}",
            q.median_fwhm
        );
        assert!(q.fwhm_stars >= 20, "{q:?}");
        assert!(q.median_ellipticity < 0.1, "{q:?}");
        assert!((q.background - 1400.0).abs() < 80.0, "{q:?}");
        // Sky 400 ADU, gain 0.8, read noise 4 e-: sqrt(320 + 16) / 0.8 = 22.9 ADU.
        assert!((q.noise - 22.9).abs() < 3.0, "{q:?}");

        let stars = detect_stars(frame.view(), &DetectOptions::default());
        assert_eq!(stars.len(), q.stars);
        let inside = |y: f32, x: f32| y > 6.0 && y < h - 7.0 && x > 6.0 && x < w - 7.0;
        let mut bright = 0usize;
        let mut found = 0usize;
        let mut possible = 0usize;
        for s in sim.stars() {
            let d = sim.displacement(i, s.y, s.x);
            let (y, x) = (s.y + d.dy, s.x + d.dx);
            if !inside(y, x) {
                continue;
            }
            let peak = peak_in_frame(&sim, i, s.flux);
            if peak > 1.0 * q.noise {
                possible += 1;
            }
            if peak > 10.0 * q.noise {
                bright += 1;
                if nearest(&stars, y, x).is_some_and(|(dist, _)| dist < 2.0) {
                    found += 1;
                }
            }
        }
        assert!(
            found as f32 >= 0.9 * bright as f32,
            "frame {i}: found {found} of {bright} bright stars"
        );
        // Not more detections than stars that could possibly show (plus galaxies and the nebula).
        assert!(
            stars.len() <= possible + 12,
            "frame {i}: {} detections, {possible} stars above 1 sigma",
            stars.len()
        );
        assert!(
            stars.len() >= bright,
            "frame {i}: {} < {bright}",
            stars.len()
        );
    }
}

#[test]
fn centroids_match_truth_positions_mapped_through_the_displacement() {
    let sim = Simulation::new(SimConfig::new(Scenario::Altaz, 20, 448, 448, 5));
    for i in [0usize, 10, 19] {
        let frame = sim.frame(i);
        let stars = detect_stars(frame.view(), &DetectOptions::default());
        let truth = sim.stars();
        let (mut err, mut err_global, mut n) = (0.0f32, 0.0f32, 0usize);
        for s in truth.iter().filter(|s| s.flux > 1.5e4 && s.flux < 4.0e5) {
            // isolated: no other star of 5 % of its flux within 10 px
            let crowded = truth.iter().any(|o| {
                !std::ptr::eq(s, o) && o.flux > 0.05 * s.flux && (o.y - s.y).hypot(o.x - s.x) < 10.0
            });
            let d = sim.displacement(i, s.y, s.x);
            let (y, x) = (s.y + d.dy, s.x + d.dx);
            if crowded || !(10.0..438.0).contains(&y) || !(10.0..438.0).contains(&x) {
                continue;
            }
            let Some((dist, star)) = nearest(&stars, y, x) else {
                continue;
            };
            if dist > 3.0 || star.blended || star.saturated {
                continue;
            }
            err += dist;
            let g = sim.global_displacement(i);
            err_global += (star.y - s.y - g.dy).hypot(star.x - s.x - g.dx);
            n += 1;
        }
        assert!(n >= 10, "frame {i}: only {n} stars matched");
        let (mean, mean_global) = (err / n as f32, err_global / n as f32);
        eprintln!(
            "frame {i}: {n} stars, centroid error {mean:.3} px (global only {mean_global:.3} px)"
        );
        assert!(mean < 0.3, "frame {i}: mean centroid error {mean} px");
        assert!(
            mean < 0.5 * mean_global,
            "frame {i}: {mean} vs {mean_global}"
        );
    }
}

#[test]
fn hot_pixels_are_not_counted_as_stars() {
    let mut cfg = SimConfig::new(Scenario::Static, 3, 320, 320, 8);
    cfg.hot_pixels = Some(120);
    let sim = Simulation::new(cfg);
    let frame = sim.frame(1);
    let stars = detect_stars(frame.view(), &DetectOptions::default());
    let mut on_hot = 0;
    for hp in sim.hot_pixels() {
        let (y, x) = (hp.row as f32, hp.col as f32);
        let real_star_there = sim.stars().iter().any(|s| {
            let d = sim.displacement(1, s.y, s.x);
            (s.y + d.dy - y).hypot(s.x + d.dx - x) < 4.0 && peak_in_frame(&sim, 1, s.flux) > 30.0
        });
        if !real_star_there && nearest(&stars, y, x).is_some_and(|(d, _)| d < 1.5) {
            on_hot += 1;
        }
    }
    assert_eq!(on_hot, 0, "{on_hot} hot pixels detected as stars");
    // All detections are star-like, not single pixels.
    assert!(stars.iter().all(|s| s.fwhm >= 1.0));
}

#[test]
fn flat_and_missing_data_give_no_stars() {
    let flat = ndarray::Array2::from_elem((256, 256), 1000.0f32);
    assert_eq!(measure(flat.view()).stars, 0);
    let mut frame = Simulation::new(SimConfig::new(Scenario::Seeing, 2, 256, 256, 2)).frame(1);
    for r in 0..256 {
        for c in 0..128 {
            frame[[r, c]] = f32::NAN;
        }
    }
    let q = measure(frame.view());
    assert!(q.stars > 0 && q.median_fwhm.is_finite(), "{q:?}");
}

/// `cargo test --release -p tlr-core --test it -- --ignored --nocapture measure_timing`
#[test]
#[ignore = "benchmark: run in release by hand"]
fn measure_timing_1024() {
    let sim = Simulation::new(SimConfig::new(Scenario::Seeing, 10, 1024, 1024, 1));
    let mut errors = Vec::new();
    let mut times = Vec::new();
    for i in 0..10 {
        let frame = sim.frame(i);
        let start = thread_cpu_ms();
        let q = measure(frame.view());
        times.push(thread_cpu_ms() - start);
        errors.push(q.median_fwhm / sim.fwhm_px(i) - 1.0);
        println!(
            "frame {i}: {} stars ({} for FWHM), FWHM {:.3} vs {:.3} px ({:+.1} %), {:.1} ms CPU",
            q.stars,
            q.fwhm_stars,
            q.median_fwhm,
            sim.fwhm_px(i),
            100.0 * errors[i],
            times[i]
        );
    }
    times.sort_by(f64::total_cmp);
    println!("median measure time {:.1} ms CPU", times[5]);
}

/// CPU time of the calling thread, ms (wall time is meaningless on a shared machine).
pub fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
}
