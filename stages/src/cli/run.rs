//! `tlr run INPUT_DIR -o OUT.fits`: the batch job on a folder of frames.
//!
//! A folder with fewer usable frames than `registration.local_tiles.min_valid_frames` runs with all of
//! them, with one warning that outlier rejection is weaker (see [`run_pipeline`]); `--set KEY=VALUE`
//! changes one configuration key without a file.
//!
//! What it does not: watch the folder for new frames (that is `tlr watch`).

use clap::Args;
use std::path::PathBuf;

use super::progress::{self, Display};
use super::{load_config, run_pipeline, Failure};
use tlr::output::{self, DiagnosticsSelection};
use tlr::{Input, PipelineOptions, Registration};

/// Arguments of `tlr run`.
#[derive(Args)]
pub struct RunArgs {
    /// Folder with the frames (FITS; see --glob), or a SER video file (`.ser`).
    pub input: PathBuf,
    /// Output file: its extension chooses the format, .fits/.fit/.fts (FITS), .tif/.tiff (TIFF) or
    /// .png (PNG). The auto-stretched preview goes next to it as OUT.png (OUT.preview.png for a PNG
    /// output).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format flags.
    #[command(flatten)]
    pub export: super::export::ExportArgs,
    /// Calibration frames (--bias, --darks, --flats, --dark-flats).
    #[command(flatten)]
    pub calibration: super::calibration::CalibrationArgs,
    /// Configuration file (YAML; tile_compile files are accepted).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Set one configuration key after the file (repeatable; any key a file accepts, value as in
    /// YAML; an empty value restores the default), e.g.
    /// `--set registration.local_tiles.min_valid_frames=6`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<tlr_core::config::Override>,
    /// Number of tile workers (overrides v4.parallel_tiles; at most the physical core count, 16).
    #[arg(long)]
    pub parallel_tiles: Option<usize>,
    /// Write diagnostics (tile report, warp maps, pictures) into this folder.
    #[arg(long)]
    pub diagnostics: Option<PathBuf>,
    /// File patterns of frames, separated by spaces (case-insensitive).
    #[arg(long, default_value = "*.fit *.fits *.fts *.fit.fz *.fits.fz")]
    pub glob: String,
    /// Treat any skipped file or frame as an error.
    #[arg(long)]
    pub strict: bool,
    /// Register whole frames only (the global-stack baseline), with the same weights and rejection.
    #[arg(long)]
    pub global_only: bool,
    /// Stack in frame N's geometry (its translation, rotation and stretch; frames numbered from 1 in
    /// run order, as in tile_report.json) instead of the sequence's mean geometry, e.g. to match an
    /// existing image of that frame (overrides registration.reference_frame).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub reference_frame: Option<u32>,
    /// Colour (Bayer) input: also write the reconstructed mosaic as OUT.cfa.fits (with BAYERPAT).
    #[arg(long)]
    pub keep_cfa: bool,
    /// Area written: `full` (the reference frame's whole field; pixels no frame covered are 0, see
    /// the COVERAGE extension) or `common` (only the area every frame covers).
    #[arg(long, value_enum, default_value_t = Crop::Full)]
    pub crop: Crop,
    /// How whole frames are placed: auto, stars or correlation (whole-frame phase correlation, for the
    /// Sun, the Moon and planets); sets registration.global.method.
    #[arg(long, value_name = "METHOD")]
    pub global_method: Option<String>,
    /// Keep only the best PERCENT % of the frames (the sharpest without stars, the highest weight with
    /// stars), e.g. 25; sets registration.global.keep_best_percent.
    #[arg(long, value_name = "PERCENT")]
    pub keep_best: Option<f64>,
    /// Keep in each tile only the best PERCENT % of the frames that passed the global selection (the
    /// sharpest in that tile without stars, as lucky imaging's alignment points; the highest weight
    /// with stars), e.g. 25; sets registration.local_tiles.keep_best_percent.
    #[arg(long, value_name = "PERCENT")]
    pub keep_best_local: Option<f64>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Progress and the summary as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--crop`: which area of the output grid the files show.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Crop {
    /// The whole grid (the reference frame's field).
    Full,
    /// The area every combined frame covers.
    Common,
}

/// The `--glob` patterns, checked before anything runs: none, or an invalid one, is a usage error.
fn glob_patterns(glob: &str, dir: &std::path::Path) -> Result<Vec<String>, Failure> {
    let patterns: Vec<String> = glob.split_whitespace().map(String::from).collect();
    if patterns.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--glob `{glob}`: no file pattern given"
        )));
    }
    // The scan error's text already includes the glob parser's reason: no source chain.
    tlr_core::scan::NameFilter::new(dir, &patterns)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--glob: {e}")))?;
    Ok(patterns)
}

/// Runs `tlr run`.
pub fn run(args: RunArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    if args.json {
        progress::json_errors();
    }
    // The format first: an output tlr cannot write stops the run before anything is read (exit 2).
    let export = args.export.resolve(&args.output)?;
    let mut set = args.set.clone();
    for (key, value) in [
        ("registration.global.method", args.global_method.clone()),
        (
            "registration.global.keep_best_percent",
            args.keep_best.map(|p| p.to_string()),
        ),
        (
            "registration.local_tiles.keep_best_percent",
            args.keep_best_local.map(|p| p.to_string()),
        ),
    ] {
        if let Some(value) = value {
            set.push(tlr_core::config::Override {
                key: key.to_string(),
                value,
            });
        }
    }
    let mut config = load_config(
        args.config.as_deref(),
        &set,
        args.parallel_tiles,
        args.quiet || args.json,
    )?;
    args.calibration.apply(&mut config);
    if let Some(n) = args.reference_frame {
        config.registration.reference_frame = n as usize;
    }
    let display = Display::from_flags(args.json, args.quiet);
    let diagnostics_dir = args.diagnostics.clone().or_else(|| {
        config
            .v4
            .diagnostics
            .enabled
            .then(|| args.output.with_extension("diagnostics"))
    });
    let selection = if args.diagnostics.is_some() {
        DiagnosticsSelection::ALL
    } else {
        DiagnosticsSelection::from_config(&config)
    };
    let scan = tlr_core::scan::ScanOptions {
        patterns: glob_patterns(&args.glob, &args.input)?,
        exclude: vec![
            args.output.clone(),
            output::preview_path(&args.output),
            output::cfa_path(&args.output),
        ],
    };
    let options = PipelineOptions {
        config,
        strict: args.strict,
        calibration_cache: Some(tlr::source::master_cache_for(&args.output)),
        registration: if args.global_only {
            Registration::GlobalOnly
        } else {
            Registration::TileLocal
        },
        ..PipelineOptions::default()
    };
    let request = output::OutputRequest {
        image: &args.output,
        export,
        keep_cfa: args.keep_cfa,
        diagnostics: diagnostics_dir.as_deref().map(|dir| (dir, selection)),
    };
    // Before anything is read: no output may replace an input, a folder or a special file (exit 2),
    // what killed runs left next to the outputs goes, and the output folders exist (a folder that
    // cannot be created stops the run now, not after the reconstruction).
    let planned = output::planned_files(&request);
    // A SER input: the file itself is the one input an output must not replace.
    let ser = tlr_core::ser::is_ser_path(&args.input);
    let (input_dir, input_patterns) = if ser {
        ser_guard(&args.input)
    } else {
        (args.input.clone(), scan.patterns.clone())
    };
    let (input_dir, input_patterns) = (input_dir.as_path(), &input_patterns);
    output::check_output_paths(input_dir, input_patterns, &planned)?;
    let created = output::create_output_folders(&request)?;
    // A path through a folder that did not exist yet (`new/../frame.fits`) resolves only now.
    if !created.is_empty() {
        if let Err(refused) = output::check_output_paths(input_dir, input_patterns, &planned) {
            created.remove_empty();
            return Err(refused.into());
        }
    }
    output::remove_stale_temporaries(&request);
    let events = progress::sink(display, "");
    let input = if ser {
        Input::Ser(args.input.clone())
    } else {
        Input::Folder {
            dir: args.input.clone(),
            scan,
        }
    };
    let mut result = match run_pipeline(input, options, events) {
        Ok(result) => result,
        Err(failure) => {
            created.remove_empty(); // nothing was published: no new empty folders either
            return Err(failure);
        }
    };
    if args.crop == Crop::Common {
        result.crop = Some(output::common_area(&result)?);
    }
    let files = output::write_outputs(&result, &request)?;
    if args.keep_cfa && result.colour.is_none() && display == Display::Bars {
        eprintln!("--keep-cfa: the input is not a Bayer mosaic; no CFA written");
    }
    let s = &result.summary;
    // The result's own star size, against the frames' median (in the frames' pixels: 2x2 cells for
    // colour); a fraction of a second next to the run.
    let quality =
        (display != Display::Quiet).then(|| tlr_core::stars::measure(result.image.view()));
    let fwhm = quality
        .as_ref()
        .map(|q| q.median_fwhm)
        .filter(|f| f.is_finite());
    match display {
        Display::Json => progress::print_json(&serde_json::json!({
            "event": "written",
            "files": files.iter().map(|f| f.to_string_lossy()).collect::<Vec<_>>(),
            "result_fwhm_px": fwhm,
            "result_stars": quality.as_ref().map(|q| q.fwhm_stars),
        })),
        Display::Quiet => {}
        Display::Bars => {
            let lines = progress::closing_lines(
                s,
                started.elapsed().as_secs_f64(),
                quality.as_ref(),
                &files,
                diagnostics_dir.as_deref(),
                result.colour.as_ref().is_some_and(|c| !c.is_rgb()),
            );
            for line in lines {
                eprintln!("{line}");
            }
        }
    }
    Ok(())
}

/// The folder of a SER file and a pattern matching exactly its name (glob characters escaped), for
/// the output-path check.
fn ser_guard(file: &std::path::Path) -> (PathBuf, Vec<String>) {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let escaped: String = name
        .chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect();
    (dir.to_path_buf(), vec![escaped])
}
