//! Progress display for the terminal: one indicatif bar per stage (global pass, tiles), JSON lines on
//! stdout with `--json`, or nothing but skipped files with `--quiet`. Warnings and skipped files go to
//! stderr (as JSON events with `--json`); skipped files even with `--quiet`.
//!
//! What it does not: decide anything about the run; it only maps [`tlr::Event`]s to output.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use tlr::{Event, EventSink};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Bars on stderr (hidden automatically when stderr is not a terminal).
    Bars,
    /// One JSON object per line on stdout.
    Json,
    /// Nothing but errors.
    Quiet,
}

impl Display {
    /// The display chosen by `--json` / `--quiet`.
    pub fn from_flags(json: bool, quiet: bool) -> Self {
        if json {
            Display::Json
        } else if quiet {
            Display::Quiet
        } else {
            Display::Bars
        }
    }
}

/// Prints one JSON line (for `--json` output of the subcommands), with the schema version.
pub fn print_json(value: &serde_json::Value) {
    print_line(&tlr::events::with_schema(&value.to_string()));
}

/// Prints one event as a JSON line. Never loses an event silently.
pub fn print_event(event: &Event) {
    match event.to_json_line() {
        Ok(line) => print_line(&line),
        Err(e) => eprintln!("warning: an event could not be written as JSON: {e}"),
    }
}

/// Set once a subcommand runs with `--json`: errors then also go to stdout as a `failed` event.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes a failure of this process also print a `failed` JSON event ([`report_failure`]).
pub fn json_errors() {
    JSON_ERRORS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Reports a failure: the message with every cause once on stderr, and with `--json` the `failed`
/// event with the exit code on stdout.
pub fn report_failure(error: &anyhow::Error, code: u8) {
    eprintln!("error: {error:#}");
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        let event = Event::failed(error.as_ref());
        if let Ok(line) = event.to_json_line() {
            let line = match line.strip_suffix('}') {
                Some(head) => format!("{head},\"exit_code\":{code}}}"),
                None => line,
            };
            print_line(&line);
        }
    }
}

/// Writes one line to stdout. A reader that went away (`tlr run --json | head`: a broken pipe) does not
/// stop the run or panic, as `println!` would: the outputs are still written; the lines are dropped.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// An event sink for `display`. `label` prefixes the bars (e.g. "tile-local", "global").
pub fn sink(display: Display, label: &str) -> EventSink {
    match display {
        Display::Json => Arc::new(print_event),
        // Quiet hides progress, not what was left out: a skipped file is always reported.
        Display::Quiet => Arc::new(|event: &Event| {
            if let Event::FrameSkipped { path, reason } = event {
                eprintln!("skipped `{}`: {reason}", path.display());
            }
        }),
        Display::Bars => bars(label),
    }
}

fn bars(label: &str) -> EventSink {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:>22} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let global = multi.add(ProgressBar::new(0).with_style(style.clone()));
    global.set_prefix(format!("{label}: global pass"));
    let tiles = multi.add(ProgressBar::new(0).with_style(style));
    tiles.set_prefix(format!("{label}: tiles"));
    Arc::new(move |event: &Event| match event {
        Event::Scanned {
            frames, rows, cols, ..
        } => {
            global.set_length(*frames as u64);
            global.set_message(format!("{cols}x{rows}"));
        }
        Event::FrameSkipped { path, reason } => {
            multi.suspend(|| eprintln!("skipped `{}`: {reason}", path.display()));
        }
        Event::GlobalFrame { done, total } => {
            global.set_length(*total as u64);
            global.set_position(*done as u64);
        }
        Event::GlobalDone {
            frames_used,
            median_fwhm_px,
            tile_size_px,
            tiles: n,
        } => {
            global
                .finish_with_message(format!("{frames_used} frames, FWHM {median_fwhm_px:.2} px"));
            tiles.set_length(*n as u64);
            tiles.set_message(format!("{tile_size_px} px tiles"));
        }
        Event::TileDone { done, .. } => tiles.set_position(*done as u64),
        Event::Warning { message } => multi.suspend(|| eprintln!("warning: {message}")),
        Event::Finished { summary } => {
            tiles.finish_with_message(format!(
                "{} of {} valid, {:.1} s",
                summary.tiles_valid, summary.tiles_total, summary.elapsed_s
            ));
        }
        _ => {}
    })
}
