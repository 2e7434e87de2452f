//! Embedding tlr on a folder of FITS frames from async code: scan, reconstruct, write the FITS result,
//! its PNG preview and the diagnostics, with progress as events.
//!
//! Run: `cargo run --release --example embed_folder -- [FRAMES_DIR [OUTPUT.fits]]`
//! Without arguments it simulates a small sequence into a temporary folder first.

use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use tlr::output::{self, DiagnosticsSelection};
use tlr::{Event, EventSink, Input, PipelineOptions};
use tlr_core::simulate::{self, Scenario, SimConfig};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    run(args.next(), args.next())
}

/// Reconstructs `frames_dir` (or a fresh simulation) into `out` (or a temporary file).
pub fn run(frames_dir: Option<PathBuf>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let frames_dir = match frames_dir {
        Some(dir) => dir,
        None => {
            let cfg = SimConfig {
                frames: 16,
                width: 256,
                height: 256,
                seed: 5,
                scenario: Scenario::Seeing,
                ..SimConfig::default()
            };
            simulate::write_sequence(&cfg, scratch.path())?;
            scratch.path().to_path_buf()
        }
    };
    let out = out.unwrap_or_else(|| scratch.path().join("result.fits"));

    let events: EventSink = Arc::new(|event: &Event| match event {
        Event::FrameSkipped { path, reason } => eprintln!("skipped {}: {reason}", path.display()),
        Event::GlobalDone {
            tiles,
            tile_size_px,
            ..
        } => {
            eprintln!("{tiles} tiles of {tile_size_px} px")
        }
        _ => {}
    });

    let runtime = tokio::runtime::Runtime::new()?;
    let run = runtime.block_on(async {
        let input = Input::Folder {
            dir: frames_dir.clone(),
            scan: tlr_core::scan::ScanOptions::default(),
        };
        tlr::run(
            input,
            PipelineOptions::default(),
            events,
            CancellationToken::new(),
        )
        .await
    })?;
    let diagnostics = out.with_extension("diagnostics");
    let files = output::write_outputs(
        &run,
        &output::OutputRequest {
            image: &out,
            export: output::ExportOptions::default(),
            keep_cfa: false,
            diagnostics: Some((diagnostics.as_path(), DiagnosticsSelection::ALL)),
        },
    )?;
    // Image, preview, then the diagnostics.
    let preview = &files[1];
    println!(
        "wrote {} and {} ({} diagnostics files); {} of {} frames used",
        out.display(),
        preview.display(),
        files.len() - 2,
        run.summary.frames_used,
        run.summary.frames_total
    );
    anyhow::ensure!(out.exists() && preview.exists());
    Ok(())
}
