//! Subcommands of the binary and what they share: argument parsing, configuration loading, progress
//! display (indicatif bars on a terminal, JSON lines with `--json`, nothing with `--quiet`), exit codes.
//!
//! What it does not: any processing; every subcommand calls the `tlr` / `tlr_core` libraries.

mod calibration;
mod config;
mod demo;
mod export;
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
/// Exit code: interrupted by Ctrl-C (SIGINT), nothing published. SIGTERM and SIGHUP give 128 + their
/// number (143, 129), as a shell reports a process those signals killed ([`interrupted_exit_code`]).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The signal that cancelled the run (0: none yet). Set by [`block_on_cancellable`].
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal (SIGINT, SIGTERM or SIGHUP) that asked this process to stop, if one arrived while
/// [`block_on_cancellable`] was running (for `tlr watch`, which maps it to its own exit).
pub fn received_signal() -> Option<i32> {
    match SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The exit code of a cancelled run: 128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP);
/// 130 when the run was cancelled otherwise.
pub fn interrupted_exit_code() -> u8 {
    received_signal()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(EXIT_INTERRUPTED)
}

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
            progress::report_failure(&failure.error, failure.code);
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
            tlr::StageError::Cancelled => interrupted_exit_code(),
            tlr::StageError::Config(_)
            | tlr::StageError::TooFewFrames(_)
            | tlr::StageError::UnsafeOutput { .. } => EXIT_USAGE,
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

/// Loads `--config FILE` (or the defaults) with the `--set KEY=VALUE` overrides applied after it (the
/// same checks as the file: unknown keys with a suggestion, types, ranges), applies the seed
/// document's parallel_tiles rules for this machine, and prints the configuration's warnings to stderr.
pub fn load_config(
    path: Option<&std::path::Path>,
    overrides: &[tlr_core::config::Override],
    parallel_tiles: Option<usize>,
    quiet: bool,
) -> Result<tlr_core::config::Config, Failure> {
    let mut config = if path.is_none() && overrides.is_empty() {
        tlr_core::config::Config::default()
    } else {
        let loaded =
            tlr_core::config::load_with_overrides(path, overrides).map_err(Failure::usage)?;
        if !quiet {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
        }
        loaded.config
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

/// Runs `future` on a runtime sized for `parallel_tiles`, with Ctrl-C (SIGINT), SIGTERM and SIGHUP
/// wired to `cancel`: the reader stops, tiles in flight finish, nothing is published (the writers only
/// run after a complete run, and write by temporary file + rename). [`received_signal`] then says which
/// signal it was. The handlers stay installed afterwards, so a signal that arrives while a finished
/// run's outputs are written no longer kills the process half-way: those writes complete.
pub fn block_on_cancellable<T>(
    parallel_tiles: usize,
    cancel: tokio_util::sync::CancellationToken,
    future: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    let runtime = tlr::build_runtime(parallel_tiles)
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot start the runtime: {e}")))?;
    Ok(runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Registered here, before the run starts, so no signal falls between the start and the handler.
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hangup = signal(SignalKind::hangup()).ok();
        let token = cancel.clone();
        tokio::spawn(async move {
            let received = tokio::select! {
                Ok(()) = tokio::signal::ctrl_c() => libc::SIGINT,
                Some(()) = next_signal(term.as_mut()) => libc::SIGTERM,
                Some(()) = next_signal(hangup.as_mut()) => libc::SIGHUP,
                else => return,
            };
            SIGNAL.store(received, std::sync::atomic::Ordering::SeqCst);
            // Cancelling stops the reader; in-flight tiles finish; no output is published.
            token.cancel();
        });
        future.await
    }))
}

/// The next delivery of a registered signal; never, when it could not be registered.
async fn next_signal(stream: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match stream {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the pipeline on `input` like [`tlr::run`], on a runtime with Ctrl-C handling. A session with
/// fewer usable frames than `registration.local_tiles.min_valid_frames` runs with all of them (the
/// pipeline sends a warning event).
pub fn run_pipeline(
    input: tlr::Input,
    options: tlr::PipelineOptions,
    events: tlr::EventSink,
) -> Result<tlr::RunOutput, Failure> {
    let workers = tlr::batch::worker_count(&options.config).get();
    let cancel = tokio_util::sync::CancellationToken::new();
    let result = block_on_cancellable(
        workers,
        cancel.clone(),
        tlr::run(input, options, events, cancel),
    )?;
    result.map_err(Failure::from)
}
