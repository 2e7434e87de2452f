//! The same picture whatever the data's units: frames stored as camera counts, as 32-bit integers
//! scaled by 65536, or as floats scaled by 1e5 or 1e-8 must give the same result, scaled alike.
//! Registration, rejection and weights must not depend on the units (they once did: a normal matrix
//! mixing data units with a column of ones failed its singularity test outside about 1e-4..1e3).
//!
//! Scaling by anything but a power of two rounds every pixel differently (1 part in 1e7), and a few
//! decisions are discontinuous in the data: a kappa-clip at one pixel, or the Moffat fit's stop rule
//! (an iteration improving the cost by just over or under 1e-4) for one star. When that star is a
//! frame's median star, its FWHM moves by about 0.1 % and its weight by up to 1 %. The test admits
//! that, and nothing more: the same frames and tiles used, the same shifts, weights within 1 %, every
//! pixel within 1 % of the image's spread and all but 1 % of them within 1e-4 of it.

use ndarray::Array2;
use tokio_util::sync::CancellationToken;

use tlr::events::no_events;
use tlr::{Input, MemoryFrames, PipelineOptions};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn run(frames: Vec<Array2<f32>>) -> tlr::RunOutput {
    let input = Input::Memory(MemoryFrames::new(frames).expect("frames"));
    tlr::run_blocking(
        input,
        PipelineOptions::default(),
        no_events(),
        CancellationToken::new(),
    )
    .expect("the run succeeds")
}

#[test]
fn the_result_does_not_depend_on_the_data_units() {
    let sim = Simulation::new(SimConfig {
        frames: 20,
        width: 256,
        height: 256,
        seed: 3,
        scenario: Scenario::Seeing,
        ..SimConfig::default()
    });
    let frames: Vec<Array2<f32>> = (0..20).map(|i| sim.frame(i)).collect();
    let reference = run(frames.clone());
    let sd = {
        let v: Vec<f64> = reference.image.iter().map(|&x| f64::from(x)).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    for scale in [65536.0f32, 1e5, 1e-8] {
        let scaled = frames.iter().map(|f| f.mapv(|v| v * scale)).collect();
        let out = run(scaled);
        assert_eq!(
            out.summary.tiles_valid, out.summary.tiles_total,
            "scale {scale}: every tile is valid"
        );
        for (f, g) in out.frames.iter().zip(&reference.frames) {
            assert_eq!(f.used, g.used, "scale {scale}: {:?} used", f.label);
            assert!(
                (f.weight / g.weight - 1.0).abs() < 0.01,
                "scale {scale}: {:?} weight {} vs {}",
                f.label,
                f.weight,
                g.weight
            );
        }
        for (t, r) in out.tiles.iter().zip(&reference.tiles) {
            assert_eq!(t.fallback, r.fallback, "scale {scale}: tile {:?}", t.tile);
            for (a, b) in t.frames.iter().zip(&r.frames) {
                assert_eq!(a.status, b.status, "scale {scale}: tile {:?}", t.tile);
                let moved = (a.shift.dy - b.shift.dy).hypot(a.shift.dx - b.shift.dx);
                assert!(
                    moved < 0.01,
                    "scale {scale}: tile {:?} shift moved {moved} px",
                    t.tile
                );
            }
        }
        let mut off = 0;
        for (&a, &b) in out.image.iter().zip(reference.image.iter()) {
            let d = (f64::from(a) / f64::from(scale) - f64::from(b)).abs();
            if scale == 65536.0 {
                // A power of two changes no rounding: the same bits, scaled.
                assert_eq!(a, b * scale, "scale {scale}");
            } else if !(d <= 1e-4 * sd) {
                assert!(
                    d <= 1e-2 * sd,
                    "scale {scale}: a pixel differs by {} of the spread",
                    d / sd
                );
                off += 1;
            }
        }
        assert!(
            off * 100 <= reference.image.len(),
            "scale {scale}: {off} pixels differ by more than 1e-4 of the image's spread"
        );
    }
}
