//! Colour (Bayer) runs of the whole pipeline on simulated one-shot-colour sequences: star colours match
//! the truth (no fringes), the result is sharper than a global stack, the four patterns and ROWORDER are
//! read correctly from the header, and `--keep-cfa`-style CFA output round-trips.

use ndarray::{s, Array2, Array3, Axis};
use std::num::NonZeroUsize;
use std::path::Path;
use tokio_util::sync::CancellationToken;

use tlr::events::no_events;
use tlr::{Input, MemoryFrames, PipelineOptions, Registration, RunOutput};
use tlr_core::bayer::CfaPattern;
use tlr_core::fits::{self, CardValue, OutputMeta, SampleFormat};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn sim(
    pattern: CfaPattern,
    scenario: Scenario,
    frames: usize,
    size: usize,
    seed: u64,
) -> Simulation {
    Simulation::new(SimConfig {
        frames,
        width: size,
        height: size,
        seed,
        scenario,
        color: Some(pattern),
        ..SimConfig::default()
    })
}

fn options(registration: Registration) -> PipelineOptions {
    let mut o = PipelineOptions {
        parallel_tiles: NonZeroUsize::new(2),
        registration,
        ..PipelineOptions::default()
    };
    o.config.registration.local_tiles.min_valid_frames = 4;
    o
}

/// Background-subtracted sums of R, G, B between radii `r0..r1` around `(y, x)`; the background is the
/// median of the annulus `r_bg..r_bg + 4` per plane.
fn ring_rgb(rgb: &Array3<f32>, y: f32, x: f32, r0: f32, r1: f32, r_bg: f32) -> [f64; 3] {
    let (_, rows, cols) = rgb.dim();
    let mut out = [0.0f64; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let plane = rgb.index_axis(Axis(0), c);
        let mut bg = Vec::new();
        let mut pix = Vec::new();
        let reach = (r_bg + 5.0).ceil() as isize;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (py, px) = (y.round() as isize + dy, x.round() as isize + dx);
                if py < 0 || px < 0 || py >= rows as isize || px >= cols as isize {
                    continue;
                }
                let v = plane[[py as usize, px as usize]];
                if !v.is_finite() {
                    continue;
                }
                let r = ((py as f32 - y).powi(2) + (px as f32 - x).powi(2)).sqrt();
                if r >= r_bg && r < r_bg + 4.0 {
                    bg.push(v);
                } else if r >= r0 && r < r1 {
                    pix.push(v);
                }
            }
        }
        let b = tlr_core::stats::median(&bg);
        *o = pix.iter().map(|&v| f64::from(v - b)).sum();
    }
    out
}

/// The brightest isolated truth stars well inside the image.
fn bright_isolated(sim: &Simulation, size: usize, count: usize) -> Vec<usize> {
    let stars = sim.stars();
    let mut idx: Vec<usize> = (0..stars.len()).collect();
    idx.sort_by(|&a, &b| stars[b].flux.total_cmp(&stars[a].flux));
    let margin = 32.0;
    idx.into_iter()
        .filter(|&i| {
            let s = stars[i];
            s.x > margin && s.y > margin && s.x < size as f32 - margin && s.y < size as f32 - margin
        })
        .filter(|&i| {
            let s = stars[i];
            stars.iter().enumerate().all(|(j, o)| {
                j == i
                    || o.flux < 0.05 * s.flux
                    || ((o.x - s.x).powi(2) + (o.y - s.y).powi(2)).sqrt() > 14.0
            })
        })
        .take(count)
        .collect()
}

/// Position of the peak of `sum(rgb)` within `radius` of `(y, x)` (3x3 box-smoothed), refined by a
/// centroid.
fn locate(rgb: &Array3<f32>, y: f32, x: f32, radius: isize) -> Option<(f32, f32)> {
    let lum = rgb.sum_axis(Axis(0));
    let (rows, cols) = lum.dim();
    let at = |r: isize, c: isize| -> f32 {
        if r < 0 || c < 0 || r >= rows as isize || c >= cols as isize {
            return f32::NAN;
        }
        lum[[r as usize, c as usize]]
    };
    let mut best = (f32::NEG_INFINITY, 0isize, 0isize);
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            let (r, c) = (y.round() as isize + dy, x.round() as isize + dx);
            let mut v = 0.0;
            for (a, b) in [
                (-1, -1),
                (-1, 0),
                (-1, 1),
                (0, -1),
                (0, 0),
                (0, 1),
                (1, -1),
                (1, 0),
                (1, 1),
            ] {
                v += at(r + a, c + b);
            }
            if v > best.0 {
                best = (v, r, c);
            }
        }
    }
    best.0.is_finite().then_some((best.1 as f32, best.2 as f32))
}

/// Per star (cell space): |ln| of the result's R/G and B/G over the truth's, in an aperture (r < 4 cells)
/// and in the ring 1.5..4 cells outside the core, where colour fringes of mis-registered planes show.
struct ColourErrors {
    core: Vec<f64>,
    ring: Vec<f64>,
    truth_red: Vec<f64>,
}

fn colour_errors(result: &Array3<f32>, sim: &Simulation, size: usize) -> ColourErrors {
    let stars = bright_isolated(sim, size, 12);
    assert!(stars.len() >= 5, "the test needs bright isolated stars");
    let at = |k: usize| (0.5 * sim.stars()[k].y, 0.5 * sim.stars()[k].x);
    // The result is in the reference frame's geometry: find the common offset from the brightest stars.
    let mut oy = Vec::new();
    let mut ox = Vec::new();
    for &k in stars.iter().take(5) {
        let (y, x) = at(k);
        if let Some((ry, rx)) = locate(result, y, x, 10) {
            oy.push(ry - y);
            ox.push(rx - x);
        }
    }
    let (oy, ox) = (tlr_core::stats::median(&oy), tlr_core::stats::median(&ox));
    let mut errors = ColourErrors {
        core: Vec::new(),
        ring: Vec::new(),
        truth_red: Vec::new(),
    };
    for &k in &stars {
        let (y, x) = at(k);
        let Some((ry, rx)) = locate(result, y + oy, x + ox, 2) else {
            continue;
        };
        let c = sim.star_colors()[k];
        let truth = [f64::from(c[0]), f64::from(c[1]), f64::from(c[2])];
        let ratios = |v: [f64; 3]| [v[0] / v[1], v[2] / v[1]];
        let log_err = |a: [f64; 3], b: [f64; 3]| {
            let (ra, rb) = (ratios(a), ratios(b));
            ((ra[0] / rb[0]).ln().abs()).max((ra[1] / rb[1]).ln().abs())
        };
        let r_core = ring_rgb(result, ry, rx, 0.0, 4.0, 7.0);
        let r_ring = ring_rgb(result, ry, rx, 1.5, 4.0, 7.0);
        if std::env::var("COLOUR_DEBUG").is_ok() {
            eprintln!(
                "star {k}: result {:?} truth {:?}",
                ratios(r_core),
                ratios(truth)
            );
        }
        errors.core.push(log_err(r_core, truth));
        errors.ring.push(log_err(r_ring, truth));
        errors.truth_red.push(
            (truth[0] / truth[1])
                .ln()
                .abs()
                .max((truth[2] / truth[1]).ln().abs()),
        );
    }
    errors
}

fn median64(v: &[f64]) -> f64 {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    f64::from(tlr_core::stats::median(&f))
}

/// The demosaiced result `(3, H, W)` binned 2x2 into cell space (mean), optionally with its rows
/// reversed first (the run saw bottom-up frames): colours co-sited at cell centres, as the user sees them.
fn binned(rgb: &Array3<f32>, flip: bool) -> Array3<f32> {
    let rgb = if flip {
        rgb.slice(s![.., ..;-1, ..]).to_owned()
    } else {
        rgb.clone()
    };
    let (_, rows, cols) = rgb.dim();
    Array3::from_shape_fn((3, rows / 2, cols / 2), |(c, r, k)| {
        0.25 * (rgb[[c, 2 * r, 2 * k]]
            + rgb[[c, 2 * r + 1, 2 * k]]
            + rgb[[c, 2 * r, 2 * k + 1]]
            + rgb[[c, 2 * r + 1, 2 * k + 1]])
    })
}

fn rgb_of(run: &RunOutput) -> Array3<f32> {
    run.colour
        .as_ref()
        .expect("a colour run has colour planes")
        .rgb()
        .expect("demosaic")
}

async fn run_memory(
    sim: &Simulation,
    pattern: CfaPattern,
    registration: Registration,
) -> RunOutput {
    let frames: Vec<Array2<f32>> = (0..sim.frames()).map(|i| sim.frame(i)).collect();
    let mut opts = options(registration);
    opts.config.data.bayer_pattern = Some(pattern);
    let input = Input::Memory(MemoryFrames::new(frames).unwrap());
    tlr::run(input, opts, no_events(), CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_seeing_sequence_keeps_star_colours_and_beats_a_global_stack() {
    let size = 384;
    let sim = sim(CfaPattern::Rggb, Scenario::Seeing, 30, size, 5);
    let local = run_memory(&sim, CfaPattern::Rggb, Registration::TileLocal).await;
    let colour = local.colour.as_ref().unwrap();
    assert_eq!(colour.planes.dim(), (4, size / 2, size / 2));
    assert_eq!(
        local.image.dim(),
        (size / 2, size / 2),
        "luminance in cell space"
    );
    let rgb = rgb_of(&local);
    assert_eq!(rgb.dim(), (3, size, size));

    let errors = colour_errors(&binned(&rgb_of(&local), false), &sim, size);
    let (core, ring) = (median64(&errors.core), median64(&errors.ring));
    eprintln!(
        "colour errors |ln ratio| core median {core:.3} max {:.3}; ring median {ring:.3}; truth colour \
         spread median {:.3}",
        errors.core.iter().copied().fold(0.0, f64::max),
        median64(&errors.truth_red)
    );
    // Stars really are coloured (the test can tell a swap of R and G or B).
    assert!(median64(&errors.truth_red) > 0.1);
    // Aperture R/G and B/G within 6 % of the truth (median over stars); in the ring 3..8 px outside
    // the core (low flux, so noisier) within 25 %: planes resampled apart would give colour fringes there.
    assert!(core < 0.06, "star colours differ from the truth: {core:.3}");
    assert!(ring < 0.25, "colour fringes around stars: {ring:.3}");

    let global = run_memory(&sim, CfaPattern::Rggb, Registration::GlobalOnly).await;
    let fwhm = |run: &RunOutput| {
        tlr_core::stars::measure(rgb_of(run).sum_axis(Axis(0)).view()).median_fwhm
    };
    let (f_local, f_global) = (fwhm(&local), fwhm(&global));
    eprintln!("FWHM tile-local {f_local:.3} px, global stack {f_global:.3} px");
    assert!(f_local.is_finite() && f_global.is_finite());
    assert!(
        f_local < 0.97 * f_global,
        "tile-local FWHM {f_local:.3} not better than global {f_global:.3}"
    );
}

/// Writes `frames` as float FITS with `BAYERPAT = pattern` and `ROWORDER = row_order`.
fn write_frames(dir: &Path, frames: &[Array2<f32>], pattern: CfaPattern, row_order: &str) {
    for (i, f) in frames.iter().enumerate() {
        let meta = OutputMeta::default()
            .with_card(
                "BAYERPAT",
                CardValue::Str(pattern.name().to_string()),
                "Bayer pattern",
            )
            .with_card(
                "ROWORDER",
                CardValue::Str(row_order.to_string()),
                "row order",
            )
            .with_card("EXPTIME", CardValue::Float(10.0), "s");
        fits::write_image_atomic(
            &dir.join(format!("frame_{i:03}.fits")),
            f.view(),
            SampleFormat::F32,
            &meta,
        )
        .unwrap();
    }
}

async fn run_folder(dir: &Path) -> RunOutput {
    let input = Input::Folder {
        dir: dir.to_path_buf(),
        scan: tlr_core::scan::ScanOptions::default(),
    };
    tlr::run(
        input,
        options(Registration::TileLocal),
        no_events(),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_patterns_and_bottom_up_row_order_are_read_from_the_header() {
    let size = 256;
    for (k, pattern) in [
        CfaPattern::Rggb,
        CfaPattern::Bggr,
        CfaPattern::Grbg,
        CfaPattern::Gbrg,
    ]
    .into_iter()
    .enumerate()
    {
        let sim = sim(pattern, Scenario::Static, 10, size, 20);
        let frames: Vec<Array2<f32>> = (0..sim.frames()).map(|i| sim.frame(i)).collect();

        // Top-down, as written by most capture programs.
        let dir = tempfile::tempdir().unwrap();
        write_frames(dir.path(), &frames, pattern, "TOP-DOWN");
        let run = run_folder(dir.path()).await;
        assert_eq!(run.colour.as_ref().map(|c| c.pattern), Some(pattern));
        let e = colour_errors(&binned(&rgb_of(&run), false), &sim, size);
        let err = median64(&e.core);
        eprintln!(
            "{pattern} top-down: colour error {err:.3} (truth spread {:.3})",
            median64(&e.truth_red)
        );
        assert!(err < 0.08, "{pattern} top-down: colour error {err:.3}");

        // The same frames stored bottom-up (rows reversed), BAYERPAT referring to the bottom-up origin.
        let flipped: Vec<Array2<f32>> = frames
            .iter()
            .map(|f| f.slice(s![..;-1, ..]).to_owned())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write_frames(dir.path(), &flipped, pattern, "BOTTOM-UP");
        let run = run_folder(dir.path()).await;
        let e = colour_errors(&binned(&rgb_of(&run), true), &sim, size);
        let err = median64(&e.core);
        eprintln!("{pattern} bottom-up: colour error {err:.3}");
        assert!(err < 0.08, "{pattern} bottom-up: colour error {err:.3}");

        if k == 0 {
            // Control: the flipped frames read as if top-down get the wrong colours (the check can fail).
            let dir = tempfile::tempdir().unwrap();
            write_frames(dir.path(), &flipped, pattern, "TOP-DOWN");
            let run = run_folder(dir.path()).await;
            let err = median64(&colour_errors(&binned(&rgb_of(&run), true), &sim, size).core);
            eprintln!("{pattern} bottom-up read as top-down: colour error {err:.3}");
            assert!(
                err > 0.1,
                "ignoring ROWORDER should spoil the colours ({err:.3})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cfa_output_keeps_the_pattern_and_mono_config_overrides_the_header() {
    let size = 192;
    let sim = sim(CfaPattern::Grbg, Scenario::Static, 12, size, 3);
    let frames: Vec<Array2<f32>> = (0..sim.frames()).map(|i| sim.frame(i)).collect();
    let dir = tempfile::tempdir().unwrap();
    write_frames(dir.path(), &frames, CfaPattern::Grbg, "TOP-DOWN");
    let run = run_folder(dir.path()).await;
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("result.fits");
    tlr::output::write_image(&run, &path).unwrap();
    let cfa_path = tlr::output::cfa_path(&path);
    assert!(tlr::output::write_cfa(&run, &cfa_path).unwrap());
    // The RGB cube: three float planes of the full size (the frame reader refuses cubes by design).
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        bytes >= (3 * size * size * 4) as u64,
        "RGB cube too small: {bytes} bytes"
    );
    let (cfa_header, cfa) = fits::read_image(&cfa_path).unwrap();
    assert_eq!(
        cfa_header.bayer.map(|b| b.pattern),
        Some("GRBG".to_string())
    );
    assert_eq!(cfa.dim(), (size, size));
    assert!(path.with_extension("png").exists());

    // data.color_mode: mono processes the same frames as mono, at full resolution, with a warning.
    let mut opts = options(Registration::TileLocal);
    opts.config.data.color_mode = tlr_core::config::ColorModeSetting::Mono;
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_warnings = std::sync::Arc::clone(&warnings);
    let events: tlr::EventSink = std::sync::Arc::new(move |e: &tlr::Event| {
        if let tlr::Event::Warning { message } = e {
            sink_warnings.lock().unwrap().push(message.clone());
        }
    });
    let input = Input::Folder {
        dir: dir.path().to_path_buf(),
        scan: tlr_core::scan::ScanOptions::default(),
    };
    let mono = tlr::run(input, opts, events, CancellationToken::new())
        .await
        .unwrap();
    assert!(mono.colour.is_none());
    assert_eq!(mono.image.dim(), (size, size));
    assert!(warnings.lock().unwrap().iter().any(|w| w.contains("mono")));
}
