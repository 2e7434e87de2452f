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

/// An event sink for `display`. `label` prefixes the bars (e.g. "tile-local", "global"; empty: none).
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

/// Width the terminal output is laid out for (bars fill the terminal up to it).
pub const COLUMNS: usize = 80;

/// A rate for humans: `0.8/s`, `7.4/s`, `77/s` (no more digits than the estimate is worth).
pub fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        String::new()
    } else if per_sec < 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.0}/s")
    }
}

/// A duration for humans: `0.4 s`, `12 s`, `3 min 20 s`.
pub fn duration(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.1} s")
    } else if seconds < 60.0 {
        format!("{seconds:.0} s")
    } else {
        let s = seconds.round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// `text` broken at spaces into lines of at most [`COLUMNS`] characters, the continuation lines
/// indented by `indent` spaces, when stderr is a terminal; unchanged otherwise (logs keep one line per
/// message). A word longer than a line stays whole.
pub fn fit(text: &str, indent: usize) -> String {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return text.to_string();
    }
    wrap(text, COLUMNS, indent)
}

fn wrap(text: &str, columns: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line = 0usize;
    for word in text.split(' ') {
        let len = word.chars().count();
        if line > indent && line + 1 + len > columns {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = indent;
        } else if !out.is_empty() {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out
}

/// The bar styles of one display: waiting (a spinner), running (bar, count, rate, time left) and
/// done (one line of figures). Every line fits the terminal: the bar takes what the rest leaves.
struct Styles {
    waiting: ProgressStyle,
    running: ProgressStyle,
    done: ProgressStyle,
}

impl Styles {
    fn new(prefix_width: usize) -> Self {
        let style = |template: String| {
            ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let w = prefix_width;
        let running = style(format!(
            "{{prefix:<{w}}} [{{bar:24}}] {{pos:>4}}/{{len:<4}} {{rate:>6}} {{eta_left:>10}}  {{wide_msg}}"
        ))
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let text = if state.pos() == 0 {
                    String::new()
                } else {
                    rate(state.per_sec())
                };
                let _ = out.write_str(&text);
            },
        )
        .with_key(
            "eta_left",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                if state.pos() > 0 && state.len().is_some_and(|n| state.pos() < n) {
                    let secs = state.eta().as_secs_f64().ceil();
                    let left = if secs < 60.0 {
                        format!("{secs:.0} s left")
                    } else {
                        format!("{} left", duration(secs))
                    };
                    let _ = out.write_str(&left);
                }
            },
        )
        .progress_chars("=> ");
        Self {
            waiting: style(format!("{{prefix:<{w}}} {{spinner}} {{wide_msg}}")),
            running,
            done: style(format!("{{prefix:<{w}}} {{wide_msg}}")),
        }
    }
}

fn bars(label: &str) -> EventSink {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let phase = |name: &str| {
        if label.is_empty() {
            name.to_string()
        } else {
            format!("{label} {name}")
        }
    };
    // Phases line up with the closing lines' values (column 14).
    let styles = Arc::new(Styles::new(phase("global pass").chars().count().max(12)));
    // The global pass shows a spinner until the folder is listed; the tiles bar appears only when the
    // tile phase starts (it never stands full at "0/0" before).
    let global = multi.add(ProgressBar::new_spinner().with_style(styles.waiting.clone()));
    global.set_prefix(phase("global pass"));
    global.set_message("reading the frames' headers");
    global.enable_steady_tick(std::time::Duration::from_millis(120));
    let tiles = ProgressBar::hidden().with_style(styles.running.clone());
    tiles.set_prefix(phase("tiles"));
    Arc::new(move |event: &Event| match event {
        Event::Scanned {
            frames, rows, cols, ..
        } => {
            global.disable_steady_tick();
            global.set_style(styles.running.clone());
            global.set_length(*frames as u64);
            global.set_message(format!("{cols}x{rows}"));
        }
        Event::FrameSkipped { path, reason } => {
            multi.suspend(|| {
                eprintln!(
                    "{}",
                    fit(&format!("skipped `{}`: {reason}", path.display()), 2)
                )
            });
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
            global.set_style(styles.done.clone());
            global.finish_with_message(format!(
                "{frames_used} frames measured (median FWHM {median_fwhm_px:.2} px), {}",
                duration(global.elapsed().as_secs_f64())
            ));
            let tiles = multi.add(tiles.clone());
            tiles.set_length(*n as u64);
            tiles.set_message(format!("{tile_size_px} px tiles"));
            tiles.reset_elapsed();
        }
        Event::TileDone { done, .. } => tiles.set_position(*done as u64),
        Event::Warning { message } => {
            multi.suspend(|| eprintln!("{}", fit(&format!("warning: {message}"), 2)));
        }
        Event::Master { .. } | Event::BadPixels { .. } => {
            if let Some(line) = calibration_line(event) {
                multi.suspend(|| eprintln!("{}", fit(&line, 2)));
            }
        }
        Event::Finished { summary } => {
            tiles.set_style(styles.done.clone());
            tiles.finish_with_message(format!(
                "{} tiles of {} px reconstructed, {}",
                summary.tiles_total,
                summary.tile_size_px,
                duration(tiles.elapsed().as_secs_f64())
            ));
        }
        _ => {}
    })
}

/// The terminal line of a calibration event: `master bias: built from 16 frames, written to `…``,
/// `master dark-30s: reused `…` (16 frames, unchanged)`, `bad pixels: 12 hot, 3 dead or cold,
/// repaired`; `None` for other events.
pub fn calibration_line(event: &Event) -> Option<String> {
    match event {
        Event::Master {
            kind,
            origin,
            frames,
            path,
        } => Some(
            tlr_core::calibrate::MasterReport {
                kind: kind.clone(),
                origin: *origin,
                frames: *frames,
                path: path.clone(),
            }
            .to_string(),
        ),
        Event::BadPixels { hot, cold } => Some(format!(
            "bad pixels: {hot} hot, {cold} dead or cold, repaired from same-colour neighbours"
        )),
        _ => None,
    }
}

/// The closing lines of a run on the terminal: frames used and skipped, tiles valid, the star FWHM of
/// the result against the frames' median (`result_quality`: measured on the result's image, in the
/// frames' pixels: 2x2 cells for colour in cell space; `None` when not measured), the time, where the outputs are
/// (the image files on one line, the diagnostics folder on one). `total_s`: the whole command's time.
pub fn closing_lines(
    s: &tlr::RunSummary,
    total_s: f64,
    result_quality: Option<&tlr_core::stars::ImageQuality>,
    files: &[std::path::PathBuf],
    diagnostics: Option<&std::path::Path>,
    cells: bool,
) -> Vec<String> {
    let cells = if cells { " (2x2 cells)" } else { "" };
    let fwhm = match result_quality {
        Some(q) if q.median_fwhm.is_finite() => format!(
            "{:.2} px result ({} stars), {:.2} px frames' median{cells}",
            q.median_fwhm, q.fwhm_stars, s.median_fwhm_px
        ),
        _ => format!(
            "{:.2} px frames' median{cells}; no star measured in the result",
            s.median_fwhm_px
        ),
    };
    let (in_diagnostics, images): (Vec<&std::path::PathBuf>, Vec<&std::path::PathBuf>) = files
        .iter()
        .partition(|f| diagnostics.is_some_and(|d| f.starts_with(d)));
    let images: Vec<String> = images.iter().map(|f| f.display().to_string()).collect();
    let mut lines = vec![
        format!(
            "frames       {} of {} used, {} skipped",
            s.frames_used, s.frames_total, s.frames_skipped
        ),
        format!(
            "tiles        {} of {} valid, {} px",
            s.tiles_valid, s.tiles_total, s.tile_size_px
        ),
        format!("star FWHM    {fwhm}"),
        format!(
            "time         {} in all ({} reconstructing, {} worker{})",
            duration(total_s),
            duration(s.elapsed_s),
            s.parallel_tiles,
            if s.parallel_tiles == 1 { "" } else { "s" }
        ),
        format!("result       {}", images.join(", ")),
    ];
    if let Some(dir) = diagnostics.filter(|_| !in_diagnostics.is_empty()) {
        lines.push(format!(
            "diagnostics  {}/ ({} files)",
            dir.display(),
            in_diagnostics.len()
        ));
    }
    lines.iter().map(|l| fit(l, 13)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_have_sensible_precision() {
        assert_eq!(rate(77.009_5), "77/s");
        assert_eq!(rate(0.801_8), "0.8/s");
        assert_eq!(rate(0.0), "");
        assert_eq!(duration(5.83), "5.8 s");
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(200.0), "3 min 20 s");
    }

    #[test]
    fn long_lines_wrap_at_spaces_with_an_indent() {
        let text = "warning: ".to_string() + &"word ".repeat(40);
        let wrapped = wrap(text.trim_end(), COLUMNS, 2);
        assert!(wrapped.lines().count() > 1);
        for line in wrapped.lines() {
            assert!(line.chars().count() <= COLUMNS, "{line}");
        }
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("  w")));
        assert_eq!(wrap("short line", COLUMNS, 2), "short line");
    }
}
