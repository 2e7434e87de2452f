//! Colour (Bayer) runs of the whole pipeline on simulated one-shot-colour sequences: star colours match
//! the truth (no fringes), the result is sharper than a global stack, the four patterns and ROWORDER are
//! read correctly from the header, and `--keep-cfa`-style CFA output round-trips.

use ndarray::{s, Array2, Array3, Axis};
use std::path::Path;
use tokio_util::sync::CancellationToken;

use tlr::events::no_events;
use tlr::{Input, MemoryFrames, PipelineOptions, Registration, RunOutput};
use tlr_core::bayer::CfaPattern;
use tlr_core::fits::{self, CardValue, OutputMeta, SampleFormat};
use tlr_core::simulate::{Scenario, SimConfig, Simulation, StarColourErrors};

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
        registration,
        ..PipelineOptions::default()
    };
    o.config.v4.parallel_tiles = Some(2);
    o.config.registration.local_tiles.min_valid_frames = 4;
    o
}

/// The median of `v` (test shorthand; `None` is a failure: no star was measured).
fn median(v: Option<f64>) -> f64 {
    v.expect("at least one bright isolated star was measured")
}

/// Colour errors of a run's RGB result against the truth (see `Simulation::star_colour_errors`).
fn colour_errors(run: &RunOutput, sim: &Simulation, bottom_up: bool) -> StarColourErrors {
    let e = sim.star_colour_errors(rgb_of(run).view(), bottom_up);
    assert!(
        e.stars() >= 5,
        "the test needs bright isolated stars: {e:?}"
    );
    e
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

    let errors = colour_errors(&local, &sim, false);
    let (core, ring) = (median(errors.median_core()), median(errors.median_ring()));
    eprintln!(
        "colour errors |ln ratio| core median {core:.3} max {:.3}; ring median {ring:.3}; truth colour \
         spread median {:.3}",
        errors.core.iter().copied().fold(0.0, f64::max),
        median(errors.median_truth_spread())
    );
    // Stars really are coloured (the test can tell a swap of R and G or B).
    assert!(median(errors.median_truth_spread()) > 0.1);
    // Aperture R/G and B/G within 6 % of the truth (median over stars; measured 0.036).
    assert!(core < 0.06, "star colours differ from the truth: {core:.3}");
    // Colour fringes: the R/G and B/G ratios in the ring 1.5..4 cells (3..8 px) outside the core.
    // Measured (this seed, 384 px, 30 frames, 12 stars): ring median 0.178 for the tile-local result and
    // 0.167 for the global stack of the same frames (printed below), so tile-local registration adds no
    // fringe of its own beyond ~0.01; the common baseline comes from the sparser R and B sampling and the
    // demosaic, plus noise (the ring holds little flux). Bound: 0.20, 12 % above the measured figure (the
    // run is deterministic; the margin covers floating-point differences between machines).
    // Control below: a plane stacked with wrong per-frame shifts is a widened plane (a radial colour
    // halo); the R plane blurred by a Gaussian of sigma 1 px (about the RMS of the local seeing motion)
    // measures 0.348 and must fail this bound (sigma 0.7 px measures 0.197, at the bound).
    const RING_BOUND: f64 = 0.20;
    assert!(ring < RING_BOUND, "colour fringes around stars: {ring:.3}");
    let mut halo = rgb.clone();
    let blurred_r = gaussian_blur(&halo.index_axis(Axis(0), 0).to_owned(), 1.0);
    halo.index_axis_mut(Axis(0), 0).assign(&blurred_r);
    let halo_ring = median(sim.star_colour_errors(halo.view(), false).median_ring());
    assert!(
        halo_ring > RING_BOUND,
        "the fringe check cannot see a 1 px colour halo: {halo_ring:.3}"
    );

    let global = run_memory(&sim, CfaPattern::Rggb, Registration::GlobalOnly).await;
    let g = colour_errors(&global, &sim, false);
    eprintln!(
        "global stack: colour errors core median {:.3}, ring median {:.3}",
        median(g.median_core()),
        median(g.median_ring())
    );
    let fwhm = |run: &RunOutput| {
        tlr_core::stars::measure(rgb_of(run).sum_axis(Axis(0)).view()).median_fwhm
    };
    let (f_local, f_global) = (fwhm(&local), fwhm(&global));
    eprintln!("FWHM tile-local {f_local:.3} px, global stack {f_global:.3} px");
    assert!(f_local.is_finite() && f_global.is_finite());
    // 0.98: since the global stack follows every frame's linear motion per tile (issue 10) it is
    // sharper (3.778 -> 3.625 px here; tile-local 3.557 -> 3.543 px).
    assert!(
        f_local < 0.98 * f_global,
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
        let e = colour_errors(&run, &sim, false);
        let err = median(e.median_core());
        eprintln!(
            "{pattern} top-down: colour error {err:.3} (truth spread {:.3})",
            median(e.median_truth_spread())
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
        let err = median(colour_errors(&run, &sim, true).median_core());
        eprintln!("{pattern} bottom-up: colour error {err:.3}");
        assert!(err < 0.08, "{pattern} bottom-up: colour error {err:.3}");

        if k == 0 {
            // Control: the flipped frames read as if top-down get the wrong colours (the check can fail).
            let dir = tempfile::tempdir().unwrap();
            write_frames(dir.path(), &flipped, pattern, "TOP-DOWN");
            let run = run_folder(dir.path()).await;
            let err = median(colour_errors(&run, &sim, true).median_core());
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

/// `image` convolved with a normalised Gaussian of `sigma` px (separable, truncated at 4 sigma, edges
/// renormalised).
fn gaussian_blur(image: &Array2<f32>, sigma: f32) -> Array2<f32> {
    let reach = (4.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-reach..=reach)
        .map(|k| (-0.5 * (k as f32 / sigma).powi(2)).exp())
        .collect();
    let (rows, cols) = image.dim();
    let pass = |src: &Array2<f32>, along_rows: bool| {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let (mut sum, mut norm) = (0.0f32, 0.0f32);
            for (i, w) in kernel.iter().enumerate() {
                let k = i as isize - reach;
                let (rr, cc) = if along_rows {
                    (r as isize + k, c as isize)
                } else {
                    (r as isize, c as isize + k)
                };
                if rr >= 0 && cc >= 0 && (rr as usize) < rows && (cc as usize) < cols {
                    let v = src[[rr as usize, cc as usize]];
                    if v.is_finite() {
                        sum += w * v;
                        norm += w;
                    }
                }
            }
            if norm > 0.0 {
                sum / norm
            } else {
                f32::NAN
            }
        })
    };
    pass(&pass(image, true), false)
}

/// The median star FWHM (px) of an image, by tlr's star measurement.
fn fwhm_of(image: ndarray::ArrayView2<f32>) -> f32 {
    let q = tlr_core::stars::measure(image);
    assert!(q.fwhm_stars >= 10, "too few stars measured: {q:?}");
    q.median_fwhm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undersampled_colour_keeps_its_star_cores_close_to_the_mono_result() {
    // Stars of 1.4 px FWHM, as from a short-focal-length OSC camera: under one cell wide in each Bayer
    // plane. The same scene and motion, once mono and once through an RGGB mosaic.
    let cfg = |color| {
        SimConfig {
            frames: 12,
            width: 256,
            height: 256,
            seed: 7,
            scenario: Scenario::Seeing,
            color,
            ..SimConfig::default()
        }
        .with_seeing_fwhm(1.4)
    };
    let mono = Simulation::new(cfg(None));
    let colour = Simulation::new(cfg(Some(CfaPattern::Rggb)));
    let run = |sim: &Simulation, pattern: Option<CfaPattern>, workers: usize| {
        let frames: Vec<Array2<f32>> = (0..sim.frames()).map(|i| sim.frame(i)).collect();
        let mut opts = options(Registration::TileLocal);
        opts.config.data.bayer_pattern = pattern;
        opts.config.v4.parallel_tiles = Some(workers);
        tlr::run(
            Input::Memory(MemoryFrames::new(frames).unwrap()),
            opts,
            no_events(),
            CancellationToken::new(),
        )
    };
    let mono_fwhm = fwhm_of(run(&mono, None, 2).await.unwrap().image.view());
    let result = run(&colour, Some(CfaPattern::Rggb), 2).await.unwrap();
    // Undersampled: the frames were demosaiced one by one, the result is R, G, B at full resolution.
    let planes = &result.colour.as_ref().unwrap().planes;
    assert_eq!(planes.dim(), (3, 256, 256));
    assert_eq!(result.image.dim(), (256, 256));
    let cfa = result.colour.as_ref().unwrap().cfa().unwrap();
    assert_eq!(cfa[[0, 0]], planes[[0, 0, 0]]); // RGGB: red at (0, 0), blue at (1, 1)
    assert_eq!(cfa[[1, 1]], planes[[2, 1, 1]]);
    let one_worker = run(&colour, Some(CfaPattern::Rggb), 1).await.unwrap();
    let same = |a: &Array3<f32>, b: &Array3<f32>| {
        a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
    };
    assert!(
        same(planes, &one_worker.colour.unwrap().planes),
        "1 and 2 workers differ"
    );
    let rgb = rgb_of(&result);
    let luminance = rgb.mean_axis(Axis(0)).unwrap();
    let colour_fwhm = fwhm_of(luminance.view());
    eprintln!("undersampled scene: mono {mono_fwhm:.3} px, colour luminance {colour_fwhm:.3} px");
    // Here 2.017 vs 1.930 px (+4.5 %) with the frames demosaiced one by one; 2.57 px (+33 %) with
    // each Bayer plane shifted on its own. With fwhm_real.py on 30 frames of 768 px at 1.2 / 1.6 /
    // 2.0 px: +2 / +4 / +3 % (per plane +48 / +42 / +32 %). Bound: +10 %.
    assert!(
        colour_fwhm < 1.10 * mono_fwhm,
        "colour stars are {:.0} % wider than mono",
        100.0 * (colour_fwhm / mono_fwhm - 1.0)
    );
}
