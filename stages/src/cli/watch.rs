//! `tlr watch DIR -o OUT.fits`: tail mode. Processes the frames already in DIR, then each new one as
//! it completes, and keeps OUT.fits (+ OUT.png) up to date; Ctrl-C or `--until-idle` writes the final
//! result and the checkpoint `OUT.fits.checkpoint/`, from which a restarted `tlr watch` continues.
//!
//! Output: a status line per snapshot on stderr, JSON lines on stdout with `--json` (one per
//! [`tlr::live::Event`], the last one `{"event":"finished","summary":{…}}`), nothing with `--quiet`.
//! `--stable-ms MS` sets how long a file must stay unchanged before it is examined (default 500 ms with
//! file events, 1000 ms with `--poll`; most of the latency from a frame's completion to its snapshot). Hidden test knob:
//! `--checkpoint-every N` sets the frames between checkpoints (default 10).
//!
//! Every duration and count is range-checked (exit 2 naming the flag and its range). Only one watcher
//! writes an output: `OUT.fits.lock` ([`tlr::live::OutputLock`]) stops a second one at start. A
//! checkpoint of another folder, with other settings or with changed frames is refused (exit 2).
//! Stopped by a signal, the final result and checkpoint are written and the exit code is 128 + the
//! signal number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
//!
//! Colour: the session's first frame decides mono or Bayer (BAYERPAT); a later frame of the other
//! kind is rejected with the reason (frames already used cannot be outvoted, unlike `tlr run`, where
//! the majority decides). A Bayer session is reconstructed in colour as `tlr run` does it (frames
//! demosaiced one by one when undersampled, else Bayer planes in cell space, decided once from the
//! bootstrap frames and kept by the checkpoint) and its snapshots are RGB.
//! `--set KEY=VALUE` changes one configuration key after the file, as for `tlr run`.
//!
//! What it does not: reconstruct anything itself (the `tlr::live` stages do).

use clap::Args;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{block_on_cancellable, load_config, Failure};
use tlr::live::{checkpoint_dir_for, LiveSession, LiveSettings, OutputLock, Schedule};
use tlr::source::follow::FollowOptions;
use tlr::{Event, EventSink, Registration, StageError};

/// Arguments of `tlr watch`.
#[derive(Args)]
pub struct WatchArgs {
    /// Folder the capture program writes frames into.
    pub dir: PathBuf,
    /// Output file, rewritten atomically at every snapshot: .fits/.fit/.fts, .tif/.tiff or .png, as
    /// for `tlr run` (the preview goes next to it as OUT.png, OUT.preview.png for a PNG output).
    /// Bayer (one-shot colour) frames give RGB snapshots, reconstructed in colour as `tlr run` does
    /// (the route, per-frame demosaic or cell space, is chosen from the first `--bootstrap` frames
    /// and kept by the checkpoint).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format flags.
    /// Calibration frames (--bias, --darks, --flats, --dark-flats); masters are loaded once, with
    /// the first frame.
    #[command(flatten)]
    pub calibration: super::calibration::CalibrationArgs,
    #[command(flatten)]
    pub export: super::export::ExportArgs,
    /// Configuration file (YAML; tile_compile files are accepted).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Set one configuration key after the file (repeatable; any key a file accepts, value as in
    /// YAML; an empty value restores the default), e.g.
    /// `--set registration.local_tiles.min_valid_frames=6`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<tlr_core::config::Override>,
    /// Publish a snapshot after every N used frames (default 1) [1 to 1000000].
    #[arg(long, conflicts_with = "every_secs")]
    pub every: Option<usize>,
    /// Publish a snapshot at most every S seconds instead [0.001 to 86400].
    #[arg(long)]
    pub every_secs: Option<f64>,
    /// Stop (writing the result and the checkpoint) after this many seconds without a new frame
    /// [0 to 604800, a week].
    #[arg(long)]
    pub until_idle: Option<f64>,
    /// Poll the folder instead of using file events (network shares).
    #[arg(long)]
    pub poll: bool,
    /// Number of tile workers (overrides v4.parallel_tiles).
    #[arg(long)]
    pub parallel_tiles: Option<usize>,
    /// Register whole frames only (the global-stack baseline).
    #[arg(long)]
    pub global_only: bool,
    /// Frames collected before the first reconstruction (default: min_valid_frames) [1 to 1000].
    #[arg(long)]
    pub bootstrap: Option<usize>,
    /// Ignore (and overwrite) an existing checkpoint. Without it, a checkpoint of another folder, with
    /// other settings or with changed frames is refused (exit 2).
    #[arg(long)]
    pub fresh: bool,
    /// Events as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// No status output.
    #[arg(short, long)]
    pub quiet: bool,
    /// How long a frame file must stay unchanged (size, modification time) before it is examined, ms
    /// [default: 500 with file events, 1000 with --poll]. The header and data length are checked as
    /// well; raise it for capture programs that pause while writing a file [0 to 600000].
    #[arg(long, value_name = "MS")]
    pub stable_ms: Option<u64>,
    /// Frames between checkpoints (default 10; the bootstrap and the end are always checkpointed)
    /// [1 to 1000000].
    #[arg(long, hide = true)]
    pub checkpoint_every: Option<usize>,
}

/// Default `--stable-ms` when following a local folder through file events.
const STABLE_MS_WITH_EVENTS: u64 = 500;
/// Longest `--until-idle`, s (a week): longer makes no sense for a night's capture, and the range keeps
/// every deadline computed from it representable.
const MAX_IDLE_S: f64 = 604_800.0;
/// Longest `--every-secs`, s (a day).
const MAX_EVERY_S: f64 = 86_400.0;
/// Shortest `--every-secs`, s.
const MIN_EVERY_S: f64 = 0.001;
/// Longest `--stable-ms` (10 minutes): the follower gives a quiet incomplete file up after ten times it.
const MAX_STABLE_MS: u64 = 600_000;
/// Largest `--every` and `--checkpoint-every`.
const MAX_FRAMES: usize = 1_000_000;
/// Largest `--bootstrap`: the bootstrap frames are held in memory.
const MAX_BOOTSTRAP: usize = 1000;

/// `value` (if given) when it lies in `lo..=hi` (NaN does not), else a usage error naming `flag` and
/// the range.
fn in_range<T: PartialOrd + std::fmt::Display + std::fmt::Debug + Copy>(
    flag: &str,
    value: Option<T>,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<Option<T>, Failure> {
    match value {
        None => Ok(None),
        Some(v) if lo <= v && v <= hi => Ok(Some(v)),
        Some(value) => Err(Failure::usage(anyhow::anyhow!(
            // Debug: a huge float prints as `1e300`, not as 301 digits.
            "{flag} must be between {lo} and {hi}{unit}, got {value:?}"
        ))),
    }
}

/// Runs `tlr watch`.
pub fn watch(args: WatchArgs) -> Result<(), Failure> {
    if args.json {
        super::progress::json_errors();
    }
    // Ranges and the output format first: nothing is started with a value that cannot be honoured.
    let export = args.export.resolve(&args.output)?;
    let every_secs = in_range(
        "--every-secs",
        args.every_secs,
        MIN_EVERY_S,
        MAX_EVERY_S,
        " s",
    )?;
    let every = in_range("--every", args.every, 1, MAX_FRAMES, " frames")?;
    let until_idle = in_range("--until-idle", args.until_idle, 0.0, MAX_IDLE_S, " s")?;
    let stable_ms = in_range("--stable-ms", args.stable_ms, 0, MAX_STABLE_MS, " ms")?;
    let bootstrap = in_range("--bootstrap", args.bootstrap, 1, MAX_BOOTSTRAP, " frames")?;
    let checkpoint_every = in_range(
        "--checkpoint-every",
        args.checkpoint_every,
        1,
        MAX_FRAMES,
        " frames",
    )?;
    // Output-path safety, shared with `tlr run`: OUT.fits and OUT.png must not replace an input
    // frame, a folder or a special file (exit 2).
    tlr::output::check_output_paths(
        &args.dir,
        &FollowOptions::default().patterns,
        &tlr::output::planned_files(&tlr::output::OutputRequest {
            image: &args.output,
            export,
            keep_cfa: false,
            diagnostics: None,
        }),
    )?;
    let mut config = load_config(
        args.config.as_deref(),
        &args.set,
        args.parallel_tiles,
        args.quiet || args.json,
    )?;
    args.calibration.apply(&mut config);
    let mut settings = LiveSettings::new(config);
    settings.registration = if args.global_only {
        Registration::GlobalOnly
    } else {
        Registration::TileLocal
    };
    // The ranges were checked above: these conversions cannot fail or overflow.
    settings.schedule = match (every, every_secs) {
        (_, Some(s)) => Schedule::Every(Duration::from_secs_f64(s)),
        (n, None) => Schedule::Frames(n.and_then(NonZeroUsize::new).unwrap_or(NonZeroUsize::MIN)),
    };
    settings.until_idle = until_idle.map(Duration::from_secs_f64);
    settings.bootstrap_frames = bootstrap;
    settings.output = Some(args.output.clone());
    settings.export = export;
    // One watcher per output: taken before anything is removed or written, held until the end.
    let _lock = OutputLock::acquire(&args.output)?;
    let checkpoint = checkpoint_dir_for(&args.output);
    if args.fresh && checkpoint.exists() {
        std::fs::remove_dir_all(&checkpoint).map_err(|e| {
            Failure::failed(anyhow::anyhow!(
                "cannot remove the old checkpoint `{}`: {e}",
                checkpoint.display()
            ))
        })?;
    }
    settings.checkpoint = Some(checkpoint);
    if let Some(n) = checkpoint_every.and_then(NonZeroUsize::new) {
        settings.checkpoint_every = n;
    }
    let mut follow = FollowOptions {
        poll: args.poll,
        ..FollowOptions::default()
    };
    match stable_ms {
        Some(ms) => {
            follow.stable_for = Duration::from_millis(ms);
            follow.give_up_after = Duration::from_millis(ms.saturating_mul(10).max(500));
        }
        // With file events the close after writing is seen, and the header and data length are
        // checked too: half a second of stability is plenty and keeps a frame's latency under 2 s.
        None if !args.poll => follow.stable_for = Duration::from_millis(STABLE_MS_WITH_EVENTS),
        None => {}
    }
    let events = sink(args.json, args.quiet);
    let cancel = tokio_util::sync::CancellationToken::new();
    let token = cancel.clone();
    // Only a signal cancels this token (the session's own stops use the session's token).
    let signalled = cancel.clone();
    let dir = args.dir.clone();
    let workers = settings.parallel_tiles().get();
    let outcome = block_on_cancellable(workers, cancel, async move {
        let session = LiveSession::start_folder(&dir, follow, settings, events)?;
        let stop = session.cancel_token();
        // Ctrl-C cancels `token`; the session then stops reading and writes its final result.
        tokio::spawn(async move {
            token.cancelled().await;
            stop.cancel();
        });
        session.wait().await
    })?;
    let summary = outcome.map_err(|e| match e {
        // Another folder, other settings, a changed frame: a usage problem, nothing was started.
        StageError::CheckpointRefused { .. } => Failure::usage(e),
        other => Failure::from(other),
    })?;
    if !args.quiet && !args.json {
        let line = format!(
            "tlr watch: {} frames used, {} rejected, {} files skipped, {} snapshots; result {}",
            summary.frames_used.len(),
            summary.frames_rejected.len(),
            summary.files_skipped.len(),
            summary.snapshots,
            args.output.display()
        );
        eprintln!("{}", super::progress::fit(&line, 2));
    }
    if signalled.is_cancelled() {
        return Err(Failure {
            error: anyhow::anyhow!(
                "interrupted; the result ({} frames) and the checkpoint were written",
                summary.frames_used.len()
            ),
            code: super::interrupted_exit_code(),
        });
    }
    Ok(())
}

/// Event printing of `tlr watch`: JSON lines, a status line per event of interest, or nothing.
fn sink(json: bool, quiet: bool) -> EventSink {
    if json {
        return Arc::new(super::progress::print_event);
    }
    if quiet {
        return Arc::new(|_| {});
    }
    Arc::new(|event: &Event| match event {
        Event::Resumed {
            checkpoint,
            frames_used,
            ..
        } => eprintln!(
            "resumed from {} ({frames_used} frames already used)",
            checkpoint.display()
        ),
        Event::Bootstrapped {
            frames,
            tile_size_px,
            tiles,
        } => eprintln!("bootstrap: {frames} frames, {tiles} tiles of {tile_size_px} px"),
        Event::FrameRejected { name, reason } => {
            eprintln!(
                "{}",
                super::progress::fit(&format!("skipped {name}: {reason}"), 2)
            );
        }
        Event::Snapshot {
            frames_used,
            latency_s,
            ..
        } => eprintln!("snapshot: {frames_used} frames, latency {latency_s:.2} s"),
        Event::Warning { message } => {
            eprintln!(
                "{}",
                super::progress::fit(&format!("warning: {message}"), 2)
            );
        }
        Event::Master { .. } | Event::BadPixels { .. } => {
            if let Some(line) = super::progress::calibration_line(event) {
                eprintln!("{}", super::progress::fit(&line, 2));
            }
        }
        _ => {}
    })
}
