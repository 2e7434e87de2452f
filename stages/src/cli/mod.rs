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
            tlr::StageError::Config(_) | tlr::StageError::TooFewFrames(_) => EXIT_USAGE,
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

/// Runs the pipeline on `input` like [`tlr::run`], on a runtime with Ctrl-C handling. A run with fewer
/// frames than `registration.local_tiles.min_valid_frames` stops at once with a configuration error
/// (exit 2; the pipeline checks after the scan and again after the global pass); the message then also
/// says how to give a configuration file.
pub fn run_pipeline(
    input: tlr::Input,
    options: tlr::PipelineOptions,
    events: tlr::EventSink,
) -> Result<tlr::RunOutput, Failure> {
    let workers = tlr::pipeline::worker_count(&options).get();
    let cancel = tokio_util::sync::CancellationToken::new();
    let result = block_on_cancellable(
        workers,
        cancel.clone(),
        tlr::run(input, options, events, cancel),
    )?;
    result.map_err(|error| match error {
        tlr::StageError::TooFewFrames(message) => Failure::usage(anyhow::anyhow!(
            "{message} (a configuration file is given with `tlr run -c FILE`)"
        )),
        other => Failure::from(other),
    })
}
