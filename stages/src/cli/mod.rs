//! Subcommands of the binary and what they share: argument parsing, configuration loading, progress
//! display (indicatif bars on a terminal, JSON lines with `--json`, nothing with `--quiet`), exit codes.
//!
//! What it does not: any processing; every subcommand calls the `tlr` / `tlr_core` libraries.

mod config;
mod demo;
mod inspect;
mod progress;
mod run;
mod simulate;
mod watch;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code: the run failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid command line or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: interrupted, nothing published.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Tile-local registration and reconstruction of astronomical image sequences.
#[derive(Parser)]
#[command(name = "tlr", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a sequence with local seeing motion, reconstruct it, and compare with a global stack.
    Demo(demo::DemoArgs),
    /// Reconstruct the frames of a folder into one image.
    Run(run::RunArgs),
    /// Write a synthetic sequence with known truth (frames, truth.fits, truth_displacement.json).
    Simulate(simulate::SimulateArgs),
    /// Measure stars, FWHM, background and noise of FITS images.
    Inspect(inspect::InspectArgs),
    /// Check a configuration file and print the effective configuration with its digest.
    Config(config::ConfigArgs),
    /// Follow a folder that capture software writes into and keep an up-to-date reconstruction.
    Watch(watch::WatchArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Run(args) => run::run(args),
        Command::Simulate(args) => simulate::simulate(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Config(args) => config::config(args),
        Command::Watch(args) => watch::watch(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// An error with the exit code it maps to.
pub struct Failure {
    error: anyhow::Error,
    code: u8,
}

impl Failure {
    /// A failed run (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            error: error.into(),
            code: EXIT_FAILED,
        }
    }

    /// A usage or configuration problem (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            error: error.into(),
            code: EXIT_USAGE,
        }
    }
}

impl From<tlr::StageError> for Failure {
    fn from(error: tlr::StageError) -> Self {
        let code = match error {
            tlr::StageError::Cancelled => EXIT_INTERRUPTED,
            tlr::StageError::Config(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        Self {
            error: error.into(),
            code,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::failed(error)
    }
}

/// Loads `--config FILE` (or the defaults), applies the seed document's parallel_tiles rules for this
/// machine, and prints the configuration's warnings to stderr.
pub fn load_config(
    path: Option<&std::path::Path>,
    parallel_tiles: Option<usize>,
    quiet: bool,
) -> Result<tlr_core::config::Config, Failure> {
    let mut config = match path {
        Some(path) => {
            let loaded = tlr_core::config::load(path).map_err(Failure::usage)?;
            if !quiet {
                for warning in &loaded.warnings {
                    eprintln!("warning: {warning}");
                }
            }
            loaded.config
        }
        None => tlr_core::config::Config::default(),
    };
    if let Some(n) = parallel_tiles {
        config.v4.parallel_tiles = Some(n);
    }
    config
        .validate(tlr_core::config::physical_cores())
        .map_err(|problems| {
            Failure::usage(anyhow::anyhow!(
                "invalid configuration:\n  {}",
                problems.join("\n  ")
            ))
        })?;
    Ok(config)
}

/// Runs `future` on a runtime sized for `parallel_tiles`, with Ctrl-C wired to `cancel`.
pub fn block_on_cancellable<T>(
    parallel_tiles: usize,
    cancel: tokio_util::sync::CancellationToken,
    future: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    let runtime = tlr::pipeline::build_runtime(parallel_tiles)
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot start the runtime: {e}")))?;
    Ok(runtime.block_on(async {
        let token = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                // Cancelling stops the reader; in-flight tiles finish; no output is published.
                token.cancel();
            }
        });
        future.await
    }))
}

/// Runs the pipeline on `input` like [`tlr::run`] (runtime, Ctrl-C), and stops it early when it cannot
/// give a single valid tile: as soon as the scan, or the global pass (which may reject frames), leaves
/// fewer frames than `registration.local_tiles.min_valid_frames`, the run is cancelled and the result is a
/// configuration error (exit 2) that names the key, the frame count and the value to set
/// ([`tlr_core::config::Config::too_few_frames`]), instead of a long run ending in "0 of N tiles".
pub fn run_pipeline(
    input: tlr::Input,
    options: tlr::PipelineOptions,
    events: tlr::EventSink,
) -> Result<tlr::RunOutput, Failure> {
    use std::sync::{Arc, Mutex};
    let workers = tlr::pipeline::worker_count(&options).get();
    let cancel = tokio_util::sync::CancellationToken::new();
    let source = match &input {
        tlr::Input::Folder { dir, .. } => format!("frames in `{}`", dir.display()),
        _ => "frames".to_string(),
    };
    let problem: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let guard: tlr::EventSink = {
        let config = options.config.clone();
        let problem = Arc::clone(&problem);
        let cancel = cancel.clone();
        Arc::new(move |event: &tlr::Event| {
            events(event);
            let found = match event {
                tlr::Event::Scanned { frames, .. } => config.too_few_frames(*frames, &source),
                tlr::Event::GlobalDone { frames_used, .. } => {
                    config.too_few_frames(*frames_used, "frames after the global pass")
                }
                _ => None,
            };
            if let Some(message) = found {
                if let Ok(mut slot) = problem.lock() {
                    slot.get_or_insert(message);
                }
                // Cancelling stops the reader before any tile is read; the run returns `Cancelled`.
                cancel.cancel();
            }
        })
    };
    let result = block_on_cancellable(
        workers,
        cancel.clone(),
        tlr::run(input, options, guard, cancel),
    )?;
    match result {
        Err(tlr::StageError::Cancelled) => {
            match problem.lock().ok().and_then(|mut slot| slot.take()) {
                Some(message) => Err(Failure::usage(anyhow::anyhow!(
                    "{message} (a configuration file is given with `tlr run -c FILE`)"
                ))),
                None => Err(tlr::StageError::Cancelled.into()),
            }
        }
        other => other.map_err(Failure::from),
    }
}
