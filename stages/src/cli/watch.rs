//! `tlr watch DIR -o OUT.fits`: tail mode. Processes the frames already in DIR, then each new one as
//! it completes, and keeps OUT.fits (+ OUT.png) up to date; Ctrl-C or `--until-idle` writes the final
//! result and the checkpoint `OUT.fits.checkpoint/`, from which a restarted `tlr watch` continues.
//!
//! Output: a status line per snapshot on stderr, JSON lines on stdout with `--json` (one per
//! [`tlr::live::LiveEvent`], the last one `{"event":"finished","summary":{…}}`), nothing with `--quiet`.
//! `--stable-ms MS` sets how long a file must stay unchanged before it is examined (default 500 ms with
//! file events, 1000 ms with `--poll`; most of the latency from a frame's completion to its snapshot). Hidden test knob:
//! `--checkpoint-every N` sets the frames between checkpoints (default 10).
//!
//! What it does not: reconstruct anything itself (the `tlr::live` stages do).

use clap::Args;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{block_on_cancellable, load_config, Failure};
use tlr::live::{
    checkpoint_dir_for, LiveEvent, LiveEventSink, LiveSession, LiveSettings, Schedule,
};
use tlr::Registration;
use tlr_core::follow::FollowOptions;

/// Arguments of `tlr watch`.
#[derive(Args)]
pub struct WatchArgs {
    /// Folder the capture program writes frames into.
    pub dir: PathBuf,
    /// Output FITS file, rewritten atomically at every snapshot (a PNG preview goes next to it).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Configuration file (YAML; tile_compile files are accepted).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Publish a snapshot after every N used frames (default 1).
    #[arg(long, conflicts_with = "every_secs")]
    pub every: Option<usize>,
    /// Publish a snapshot at most every S seconds instead.
    #[arg(long)]
    pub every_secs: Option<f64>,
    /// Stop (writing the result and the checkpoint) after this many seconds without a new frame.
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
    /// Frames collected before the first reconstruction (default: min_valid_frames).
    #[arg(long)]
    pub bootstrap: Option<usize>,
    /// Ignore (and overwrite) an existing checkpoint.
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
    /// well; raise it for capture programs that pause while writing a file.
    #[arg(long, value_name = "MS")]
    pub stable_ms: Option<u64>,
    /// Frames between checkpoints (default 10; the bootstrap and the end are always checkpointed).
    #[arg(long, hide = true)]
    pub checkpoint_every: Option<usize>,
}

/// Default `--stable-ms` when following a local folder through file events.
const STABLE_MS_WITH_EVENTS: u64 = 500;

/// Runs `tlr watch`.
pub fn watch(args: WatchArgs) -> Result<(), Failure> {
    // Output-path safety, shared with `tlr run`: OUT.fits and OUT.png must not replace an input
    // frame, a folder or a special file (exit 2).
    tlr::output::check_output_paths(
        &args.dir,
        &FollowOptions::default().patterns,
        &tlr::output::planned_files(&tlr::output::OutputRequest {
            image: &args.output,
            keep_cfa: false,
            diagnostics: None,
        }),
    )?;
    let config = load_config(
        args.config.as_deref(),
        args.parallel_tiles,
        args.quiet || args.json,
    )?;
    let workers = config.parallel_tiles(tlr_core::config::physical_cores());
    let mut settings = LiveSettings::new(config);
    settings.parallel_tiles = NonZeroUsize::new(workers).unwrap_or(NonZeroUsize::MIN);
    settings.registration = if args.global_only {
        Registration::GlobalOnly
    } else {
        Registration::TileLocal
    };
    settings.schedule = match (args.every, args.every_secs) {
        (_, Some(s)) if s.is_finite() && s > 0.0 => Schedule::Every(Duration::from_secs_f64(s)),
        (_, Some(s)) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--every-secs must be a positive number of seconds, got {s}"
            )))
        }
        (Some(n), None) => Schedule::Frames(
            NonZeroUsize::new(n)
                .ok_or_else(|| Failure::usage(anyhow::anyhow!("--every must be at least 1")))?,
        ),
        (None, None) => Schedule::Frames(NonZeroUsize::MIN),
    };
    if let Some(s) = args.until_idle {
        if !(s.is_finite() && s >= 0.0) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--until-idle must be a number of seconds >= 0, got {s}"
            )));
        }
        settings.until_idle = Some(Duration::from_secs_f64(s));
    }
    settings.bootstrap_frames = args.bootstrap;
    settings.output = Some(args.output.clone());
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
    if let Some(n) = args.checkpoint_every {
        settings.checkpoint_every = NonZeroUsize::new(n).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!("--checkpoint-every must be at least 1"))
        })?;
    }
    let mut follow = FollowOptions {
        poll: args.poll,
        ..FollowOptions::default()
    };
    match args.stable_ms {
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
    let dir = args.dir.clone();
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
    let summary = outcome?;
    if !args.quiet && !args.json {
        eprintln!(
            "tlr watch: {} frames used, {} rejected, {} files skipped, {} snapshots; result {}",
            summary.frames_used.len(),
            summary.frames_rejected.len(),
            summary.files_skipped.len(),
            summary.snapshots,
            args.output.display()
        );
    }
    Ok(())
}

/// Event printing of `tlr watch`: JSON lines, a status line per event of interest, or nothing.
fn sink(json: bool, quiet: bool) -> LiveEventSink {
    if json {
        return Arc::new(|event: &LiveEvent| {
            if let Ok(line) = serde_json::to_string(event) {
                println!("{line}");
            }
        });
    }
    if quiet {
        return Arc::new(|_| {});
    }
    Arc::new(|event: &LiveEvent| match event {
        LiveEvent::Resumed {
            checkpoint,
            frames_used,
            ..
        } => eprintln!(
            "resumed from {} ({frames_used} frames already used)",
            checkpoint.display()
        ),
        LiveEvent::Bootstrapped {
            frames,
            tile_size_px,
            tiles,
        } => eprintln!("bootstrap: {frames} frames, {tiles} tiles of {tile_size_px} px"),
        LiveEvent::FrameRejected { name, reason } => eprintln!("skipped {name}: {reason}"),
        LiveEvent::Snapshot {
            frames_used,
            latency_s,
            ..
        } => eprintln!("snapshot: {frames_used} frames, latency {latency_s:.2} s"),
        LiveEvent::Warning { message } => eprintln!("warning: {message}"),
        _ => {}
    })
}
