//! Saturated stars through the whole pipeline (mono, undersampled colour demosaiced frame by frame,
//! well-sampled colour in cell space; simulated frames whose bright stars clip flat at a full well of
//! 30000 ADU, with sub-pixel shifts between frames): no pixel far below the sky, no dark ring, nothing
//! above the stack's saturation level, the cores held at it, and the level and count reported.

use ndarray::{s, Array2, ArrayView2};
use tokio_util::sync::CancellationToken;

use tlr::events::no_events;
use tlr::{Input, MemoryFrames, PipelineOptions, RunOutput};
use tlr_core::bayer::CfaPattern;
use tlr_core::simulate::{Scenario, SimConfig, Simulation};
use tlr_core::stats::background_and_noise;

/// The full well of the simulated sensor (ADU).
const FULL_WELL: f32 = 30_000.0;

/// 12 frames of 320x320 with many bright stars clipped at [`FULL_WELL`], seeing of `fwhm` px.
fn simulation(color: Option<CfaPattern>, fwhm: f32) -> Simulation {
    Simulation::new(
        SimConfig {
            frames: 12,
            width: 320,
            height: 320,
            seed: 21,
            scenario: Scenario::Seeing,
            flux_max_adu: 4.0e6,
            flux_power_index: 0.5,
            color,
            saturation_adu: Some(FULL_WELL),
            // No cloudy frame: its photometric scale would set the stack's level (the lowest).
            bad_frames: false,
            ..SimConfig::default()
        }
        .with_seeing_fwhm(fwhm),
    )
}

fn run(sim: &Simulation, pattern: Option<CfaPattern>) -> RunOutput {
    let frames: Vec<Array2<f32>> = (0..sim.frames()).map(|i| sim.frame(i)).collect();
    let mut opts = PipelineOptions::default();
    opts.config.v4.parallel_tiles = Some(2);
    opts.config.registration.local_tiles.min_valid_frames = 6;
    opts.config.data.bayer_pattern = pattern;
    let input = Input::Memory(MemoryFrames::new(frames).expect("frames"));
    tlr::run_blocking(input, opts, no_events(), CancellationToken::new()).expect("the run succeeds")
}

/// Sky and noise of an image (sampled, clipped).
fn sky(image: ArrayView2<f32>) -> (f32, f32) {
    let st = background_and_noise(image, 1 << 18).expect("a finite background");
    (st.median, st.sigma)
}

/// Centres of the saturated cores (connected pixels at `level` or above) at least 14 px from the
/// border and from every other core.
fn isolated_cores(image: ArrayView2<f32>, level: f32) -> Vec<(f32, f32)> {
    let (rows, cols) = image.dim();
    let mut seen = Array2::from_elem((rows, cols), false);
    let mut cores = Vec::new();
    for y in 0..rows {
        for x in 0..cols {
            if seen[[y, x]] || !(image[[y, x]] >= level) {
                continue;
            }
            let (mut stack, mut sum, mut n) = (vec![(y, x)], (0.0, 0.0), 0.0);
            seen[[y, x]] = true;
            while let Some((cy, cx)) = stack.pop() {
                sum = (sum.0 + cy as f32, sum.1 + cx as f32);
                n += 1.0;
                for (ny, nx) in [
                    (cy + 1, cx),
                    (cy.wrapping_sub(1), cx),
                    (cy, cx + 1),
                    (cy, cx.wrapping_sub(1)),
                ] {
                    if ny < rows && nx < cols && !seen[[ny, nx]] && image[[ny, nx]] >= level {
                        seen[[ny, nx]] = true;
                        stack.push((ny, nx));
                    }
                }
            }
            cores.push((sum.0 / n, sum.1 / n));
        }
    }
    let far = |a: &(f32, f32), b: &(f32, f32)| (a.0 - b.0).hypot(a.1 - b.1) > 14.0;
    cores
        .iter()
        .filter(|c| {
            c.0 > 14.0 && c.1 > 14.0 && c.0 < rows as f32 - 15.0 && c.1 < cols as f32 - 15.0
        })
        .filter(|c| cores.iter().all(|o| std::ptr::eq(*c, o) || far(c, o)))
        .copied()
        .collect()
}

/// Median of each 1-px ring `k..k+1` around `(cy, cx)`, `k < 12`.
fn ring_profile(image: ArrayView2<f32>, (cy, cx): (f32, f32)) -> Vec<f32> {
    let mut rings = vec![Vec::new(); 12];
    let (y0, x0) = (cy as usize - 12, cx as usize - 12);
    for ((y, x), &v) in image.slice(s![y0..y0 + 25, x0..x0 + 25]).indexed_iter() {
        let r = ((y0 + y) as f32 - cy).hypot((x0 + x) as f32 - cx);
        if (r as usize) < 12 && v.is_finite() {
            rings[r as usize].push(v);
        }
    }
    rings
        .into_iter()
        .map(|mut v| {
            v.sort_by(f32::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f32::NAN)
        })
        .collect()
}

/// The largest outward rise of the ring profile (a dark ring shows as a rise after it), in `sigma`s.
fn worst_rise(image: ArrayView2<f32>, cores: &[(f32, f32)], sigma: f32) -> f32 {
    cores
        .iter()
        .map(|&c| {
            let p = ring_profile(image, c);
            p.windows(2)
                .map(|w| (w[1] - w[0]) / sigma)
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Lowest finite pixel in sigmas below the sky.
fn depth(image: ArrayView2<f32>) -> f32 {
    let (sky, sigma) = sky(image);
    let min = image
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::INFINITY, f32::min);
    (sky - min) / sigma
}

#[test]
fn saturated_mono_stars_keep_their_level_without_rings_or_holes() {
    let sim = simulation(None, 3.2);
    let out = run(&sim, None);
    let sat = out.saturation.as_ref().expect("the frames saturate");
    let level = sat.level().expect("a level");
    assert!(
        (0.8 * FULL_WELL..1.25 * FULL_WELL).contains(&level),
        "level {level} (the full well times a scale near 1)"
    );
    let image = out.image.view();
    let max = image
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max);
    assert_eq!(
        max, level,
        "the cores are held at the level, nothing above it"
    );
    assert!(sat.pixels > 0);
    let at = image.iter().filter(|&&v| v == level).count();
    assert_eq!(at, sat.pixels, "the count is the pixels at the level");
    let (_, sigma) = sky(image);
    let cores = isolated_cores(image, level);
    assert!(cores.len() >= 3, "{} isolated saturated cores", cores.len());
    let d = depth(image);
    let rise = worst_rise(image, &cores, sigma);
    eprintln!("mono: level {level}, {} px, {} cores, min {d:.1} sigma below sky, worst ring rise {rise:.1} sigma", sat.pixels, cores.len());
    assert!(d < 10.0, "a pixel {d} sigma below the sky");
    assert!(rise < 3.0, "a dark ring: the profile rises by {rise} sigma");
}

/// A colour run's output, RGB image, R, G, B levels and green saturated cores.
type ColourRun = (
    RunOutput,
    ndarray::Array3<f32>,
    Vec<Option<f32>>,
    Vec<(f32, f32)>,
);

/// A colour run of saturated stars at seeing `fwhm`: the result's levels, its RGB image, and the
/// isolated saturated cores of its green channel.
fn colour_run(fwhm: f32) -> ColourRun {
    let pattern = CfaPattern::Rggb;
    let sim = simulation(Some(pattern), fwhm);
    let out = run(&sim, Some(pattern));
    let sat = out.saturation.clone().expect("the frames saturate");
    let colour = out.colour.as_ref().expect("colour");
    let rgb = colour.rgb().expect("demosaic");
    // R, G, B levels: the planes' own (frames demosaiced one by one), or the lower green of the four.
    let levels = if colour.is_rgb() {
        sat.levels.clone()
    } else {
        let green = match (sat.levels[1], sat.levels[2]) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        vec![sat.levels[0], green, sat.levels[3]]
    };
    let g_level = levels[1].expect("a green level");
    let cores = isolated_cores(rgb.index_axis(ndarray::Axis(0), 1), 0.999 * g_level);
    assert!(cores.len() >= 2, "{} isolated saturated cores", cores.len());
    (out, rgb, levels, cores)
}

/// Every channel of `rgb`: nothing above the highest level, no pixel 10 sigma below the sky, no dark
/// ring around the cores; returns the worst depth (sigmas below the sky).
fn assert_clean_channels(
    rgb: &ndarray::Array3<f32>,
    levels: &[Option<f32>],
    cores: &[(f32, f32)],
) -> f32 {
    let top = levels.iter().flatten().copied().fold(0.0, f32::max);
    let mut worst = 0.0f32;
    for (c, ch) in rgb.axis_iter(ndarray::Axis(0)).enumerate() {
        let max = ch
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f32::max);
        assert!(max <= top, "channel {c}: {max} above every level {top}");
        let d = depth(ch);
        let (_, sigma) = sky(ch);
        let rise = worst_rise(ch, cores, sigma);
        eprintln!("channel {c}: min {d:.1} sigma below sky, worst ring rise {rise:.1} sigma");
        assert!(d < 10.0, "channel {c}: a pixel {d} sigma below the sky");
        assert!(
            rise < 3.0,
            "channel {c}: a dark ring, the profile rises by {rise} sigma"
        );
        worst = worst.max(d);
    }
    worst
}

#[test]
fn saturated_undersampled_colour_stars_keep_their_level_without_rings_or_holes() {
    // Undersampled, as one-shot-colour cameras are: every frame demosaiced as it is read.
    let (out, rgb, levels, cores) = colour_run(1.6);
    let colour = out.colour.as_ref().unwrap();
    assert!(
        colour.is_rgb(),
        "an undersampled sequence is demosaiced frame by frame"
    );
    assert_eq!(levels.len(), 3, "one level per R, G, B plane");
    assert_clean_channels(&rgb, &levels, &cores);
    // The green cores are held at the level (green has half the samples: every frame clips them).
    let g = rgb.index_axis(ndarray::Axis(0), 1);
    for &(cy, cx) in &cores {
        let v = g[[cy.round() as usize, cx.round() as usize]];
        assert_eq!(Some(v), levels[1], "green core at ({cy}, {cx})");
    }
    let sat = out.saturation.as_ref().unwrap();
    assert_eq!(
        sat.pixels,
        rgb.iter()
            .zip(levels.iter().flat_map(|l| std::iter::repeat_n(*l, g.len())))
            .filter(|(v, l)| Some(**v) == *l)
            .count(),
        "the count is the pixels at their plane's level"
    );
}

#[test]
fn saturated_well_sampled_colour_stars_keep_their_level_without_rings_or_holes() {
    let pattern = CfaPattern::Rggb;
    // Well sampled: the four Bayer planes in cell space, demosaiced once at the end.
    let (out, rgb, levels, cores) = colour_run(3.2);
    let colour = out.colour.as_ref().unwrap();
    assert!(
        !colour.is_rgb(),
        "a well-sampled sequence stays in cell space"
    );
    assert_eq!(out.saturation.as_ref().unwrap().levels.len(), 4);
    let ours = assert_clean_channels(&rgb, &levels, &cores);
    let plain = tlr_core::bayer::demosaic(colour.cfa().unwrap().view(), pattern).unwrap();
    let plain_depth = plain
        .axis_iter(ndarray::Axis(0))
        .map(depth)
        .fold(0.0, f32::max);
    eprintln!("well sampled: {ours:.1} sigma below the sky, plain demosaic {plain_depth:.1}");
    assert!(
        plain_depth > ours,
        "the plain demosaic of the same planes is no worse"
    );
}
