//! `tlr demo`: the README's first command. Simulates a sequence with local seeing motion into a temporary
//! folder, reconstructs it tile-locally and with a global-registration stack (same weights, resampling
//! and rejection), and prints the star sharpness of both beside a single frame.
//!
//! `tlr demo --color [PATTERN]` does the same with a one-shot-colour camera (a Bayer mosaic, RGGB by
//! default) at a smaller default size: the results are RGB cubes with colour previews, the sharpness is
//! measured on the luminance (mean of R, G, B), and the colours of bright stars are compared with the
//! simulation's truth.
//!
//! What it does not: need any data or network; it keeps only the results (in `--out`).

use clap::Args;
use ndarray::Array2;
use std::path::PathBuf;

use super::progress::{self, Display};
use super::{load_config, run_pipeline, Failure};
use tlr::output::{self, DiagnosticsSelection};
use tlr::{Input, PipelineOptions, Registration, RunOutput};
use tlr_core::bayer::CfaPattern;
use tlr_core::simulate::{self, Scenario, SimConfig, Simulation};
use tlr_core::stars::ImageQuality;

/// Default frame size of the mono demo, px.
const MONO_SIZE: usize = 768;
/// Default frame size of the colour demo, px: four Bayer planes are reconstructed per tile, so a
/// smaller field keeps the run about as long as the mono one.
const COLOUR_SIZE: usize = 512;

/// Arguments of `tlr demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the results (tile-local and global FITS + PNG, diagnostics).
    #[arg(long, default_value = "tlr-demo")]
    pub out: PathBuf,
    /// Number of simulated frames.
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Width and height of the simulated frames, px [default: 768, 512 with --color].
    #[arg(long)]
    pub size: Option<usize>,
    /// Random seed of the simulation.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Simulate a one-shot-colour camera with this Bayer pattern (RGGB, BGGR, GRBG, GBRG; RGGB when
    /// given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "RGGB",
          value_parser = super::simulate::parse_pattern)]
    pub color: Option<CfaPattern>,
    /// Number of tile workers.
    #[arg(long)]
    pub parallel_tiles: Option<usize>,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The image whose stars are measured: the result itself (mono), or the luminance (mean of R, G, B) of
/// the demosaiced result at full resolution (colour).
fn measured_image(run: &RunOutput) -> Result<Array2<f32>, Failure> {
    match &run.colour {
        Some(colour) => {
            let rgb = colour.rgb().map_err(Failure::failed)?;
            Ok(super::inspect::luminance(&rgb))
        }
        None => Ok(run.image.clone()),
    }
}

/// What the demo prints for one stack.
struct StackFigures {
    name: &'static str,
    quality: ImageQuality,
    elapsed_s: f64,
    /// Median star colour error against the truth and the number of stars measured (colour only).
    colour_error: Option<(f64, usize)>,
}

/// Runs `tlr demo`.
pub fn demo(args: DemoArgs) -> Result<(), Failure> {
    let config = load_config(None, &[], args.parallel_tiles, args.quiet)?;
    let frames_dir = tempfile::Builder::new()
        .prefix("tlr-demo-frames-")
        .tempdir()
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot create a temporary folder: {e}")))?;
    let size = args.size.unwrap_or(if args.color.is_some() {
        COLOUR_SIZE
    } else {
        MONO_SIZE
    });
    let sim = SimConfig {
        frames: args.frames,
        width: size,
        height: size,
        seed: args.seed,
        scenario: Scenario::Seeing,
        color: args.color,
        ..SimConfig::default()
    };
    if !args.quiet {
        eprintln!(
            "simulating {} {} frames of {}x{} with local seeing motion into {}",
            sim.frames,
            args.color
                .map_or("mono".to_string(), |p| format!("colour ({p})")),
            sim.width,
            sim.height,
            frames_dir.path().display()
        );
    }
    simulate::write_sequence(&sim, frames_dir.path()).map_err(Failure::failed)?;
    std::fs::create_dir_all(&args.out).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "cannot create `{}`: {e}",
            args.out.display()
        ))
    })?;

    let display = Display::from_flags(false, args.quiet);
    let mut results: Vec<StackFigures> = Vec::new();
    let truth = args
        .color
        .map(|_| Simulation::try_new(sim.clone()))
        .transpose()
        .map_err(Failure::failed)?;
    for (mode, name) in [
        (Registration::TileLocal, "tile-local"),
        (Registration::GlobalOnly, "global"),
    ] {
        let options = PipelineOptions {
            config: config.clone(),
            registration: mode,
            ..PipelineOptions::default()
        };
        let scan = tlr_core::scan::ScanOptions::default();
        let path = args.out.join(format!("{name}.fits"));
        let diagnostics = args.out.join("diagnostics");
        let request = output::OutputRequest {
            image: &path,
            export: output::ExportOptions::default(),
            keep_cfa: false,
            diagnostics: (mode == Registration::TileLocal)
                .then_some((diagnostics.as_path(), DiagnosticsSelection::ALL)),
        };
        // The frames are in a fresh temporary folder; an output can still be a folder or a device.
        output::check_output_paths(
            frames_dir.path(),
            &scan.patterns,
            &output::planned_files(&request),
        )?;
        output::remove_stale_temporaries(&request);
        let input = Input::Folder {
            dir: frames_dir.path().to_path_buf(),
            scan,
        };
        let run = run_pipeline(input, options, progress::sink(display, name))?;
        output::write_outputs(&run, &request)?;
        let quality = tlr_core::stars::measure(measured_image(&run)?.view());
        let colour_error = match (&truth, &run.colour) {
            (Some(truth), Some(colour)) => {
                let rgb = colour.rgb().map_err(Failure::failed)?;
                let errors = truth.star_colour_errors(rgb.view(), false);
                errors.median_core().map(|e| (e, errors.stars()))
            }
            _ => None,
        };
        results.push(StackFigures {
            name,
            quality,
            elapsed_s: run.summary.elapsed_s,
            colour_error,
        });
    }
    let (_, frame0) = tlr_core::fits::read_image(&frames_dir.path().join("frame_0000.fits"))
        .map_err(Failure::failed)?;
    let first = match args.color {
        Some(pattern) => {
            let rgb = tlr_core::bayer::demosaic(frame0.view(), pattern).map_err(Failure::failed)?;
            tlr_core::stars::measure(super::inspect::luminance(&rgb).view())
        }
        None => tlr_core::stars::measure(frame0.view()),
    };
    println!();
    if args.color.is_some() {
        println!("star sizes on the luminance (mean of R, G, B) of the demosaiced images");
    }
    println!(
        "{:<28} {:>8} {:>9} {:>8}{}",
        "image",
        "stars",
        "FWHM px",
        "time s",
        if args.color.is_some() {
            "  star colour error"
        } else {
            ""
        }
    );
    println!(
        "{:<28} {:>8} {:>9.2} {:>8}",
        "single frame (frame 0)", first.stars, first.median_fwhm, "-"
    );
    for StackFigures {
        name,
        quality: q,
        elapsed_s: elapsed,
        colour_error,
    } in &results
    {
        let colour = match (args.color, colour_error) {
            (Some(_), Some((e, stars))) => format!("  {:>6.1} % ({stars} stars)", 100.0 * e),
            (Some(_), None) => "  (no bright isolated stars)".to_string(),
            (None, _) => String::new(),
        };
        println!(
            "{:<28} {:>8} {:>9.2} {:>8.1}{colour}",
            format!("{name} stack"),
            q.stars,
            q.median_fwhm,
            elapsed
        );
    }
    if let [StackFigures { quality: local, .. }, StackFigures {
        quality: global, ..
    }] = results.as_slice()
    {
        println!(
            "\ntile-local FWHM is {:.1} % {} than the global stack's",
            100.0 * (1.0 - local.median_fwhm / global.median_fwhm).abs(),
            if local.median_fwhm <= global.median_fwhm {
                "smaller"
            } else {
                "larger"
            }
        );
    }
    if args.color.is_some() {
        println!(
            "star colour error: median over bright isolated stars of |ln| of the R/G and B/G flux \
             ratios against the truth (0.05 = 5 %)"
        );
    }
    println!("results in {}", args.out.display());
    Ok(())
}
