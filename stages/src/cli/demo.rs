//! `tlr demo`: the README's first command. Simulates a sequence with local seeing motion into a temporary
//! folder, reconstructs it tile-locally and with a global-registration stack (same weights, resampling
//! and rejection), and prints the star sharpness of both beside the truth.
//!
//! What it does not: need any data or network; it keeps only the results (in `--out`).

use clap::Args;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

use super::progress::{self, Display};
use super::{block_on_cancellable, load_config, Failure};
use tlr::output::{self, DiagnosticsSelection};
use tlr::{Input, PipelineOptions, Registration};
use tlr_core::simulate::{self, Scenario, SimConfig};

/// Arguments of `tlr demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the results (tile-local and global FITS + PNG, diagnostics).
    #[arg(long, default_value = "tlr-demo")]
    pub out: PathBuf,
    /// Number of simulated frames.
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Width and height of the simulated frames, px.
    #[arg(long, default_value_t = 768)]
    pub size: usize,
    /// Random seed of the simulation.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Number of tile workers.
    #[arg(long)]
    pub parallel_tiles: Option<usize>,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `tlr demo`.
pub fn demo(args: DemoArgs) -> Result<(), Failure> {
    let config = load_config(None, args.parallel_tiles, args.quiet)?;
    let frames_dir = tempfile::Builder::new()
        .prefix("tlr-demo-frames-")
        .tempdir()
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot create a temporary folder: {e}")))?;
    let sim = SimConfig {
        frames: args.frames,
        width: args.size,
        height: args.size,
        seed: args.seed,
        scenario: Scenario::Seeing,
        ..SimConfig::default()
    };
    if !args.quiet {
        eprintln!(
            "simulating {} frames of {}x{} with local seeing motion into {}",
            sim.frames,
            sim.width,
            sim.height,
            frames_dir.path().display()
        );
    }
    simulate::write_sequence(&sim, frames_dir.path()).map_err(Failure::failed)?;
    std::fs::create_dir_all(&args.out).map_err(|e| {
        Failure::failed(anyhow::anyhow!("cannot create `{}`: {e}", args.out.display()))
    })?;

    let display = Display::from_flags(false, args.quiet);
    let mut results = Vec::new();
    for (mode, name) in [
        (Registration::TileLocal, "tile-local"),
        (Registration::GlobalOnly, "global"),
    ] {
        let options = PipelineOptions {
            config: config.clone(),
            registration: mode,
            ..PipelineOptions::default()
        };
        let workers = tlr::pipeline::worker_count(&options).get();
        let cancel = CancellationToken::new();
        let input = Input::Folder {
            dir: frames_dir.path().to_path_buf(),
            scan: tlr_core::scan::ScanOptions::default(),
        };
        let run = block_on_cancellable(
            workers,
            cancel.clone(),
            tlr::run(input, options, progress::sink(display, name), cancel),
        )??;
        let path = args.out.join(format!("{name}.fits"));
        output::write_image(&run, &path)?;
        if mode == Registration::TileLocal {
            output::write_diagnostics(&run, &args.out.join("diagnostics"), DiagnosticsSelection::ALL)?;
        }
        let quality = tlr_core::stars::measure(run.image.view());
        results.push((name, quality, run.summary.elapsed_s, path));
    }
    let first = tlr_core::fits::read_image(&frames_dir.path().join("frame_0000.fits"))
        .map(|(_, image)| tlr_core::stars::measure(image.view()))
        .map_err(Failure::failed)?;
    println!();
    println!("{:<28} {:>8} {:>9} {:>8}", "image", "stars", "FWHM px", "time s");
    println!(
        "{:<28} {:>8} {:>9.2} {:>8}",
        "single frame (frame 0)", first.stars, first.median_fwhm, "-"
    );
    for (name, q, elapsed, _) in &results {
        println!(
            "{:<28} {:>8} {:>9.2} {:>8.1}",
            format!("{name} stack"),
            q.stars,
            q.median_fwhm,
            elapsed
        );
    }
    if let [(_, local, ..), (_, global, ..)] = results.as_slice() {
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
    println!("results in {}", args.out.display());
    Ok(())
}
