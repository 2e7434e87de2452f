//! The diagnostics folder of a real (simulated) run: every planned file is written, the pictures
//! decode at the expected sizes, and they are the same bytes for 1 and 2 workers.

use ndarray::Array2;
use std::path::Path;
use tokio_util::sync::CancellationToken;

use tlr::events::no_events;
use tlr::output::{self, DiagnosticsSelection, OutputRequest};
use tlr::{Input, MemoryFrames, PipelineOptions};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn run(frames: &[Array2<f32>], workers: usize) -> tlr::RunOutput {
    let mut options = PipelineOptions::default();
    options.config.v4.parallel_tiles = Some(workers);
    tlr::run_blocking(
        Input::Memory(MemoryFrames::new(frames.to_vec()).unwrap()),
        options,
        no_events(),
        CancellationToken::new(),
    )
    .unwrap()
}

/// (width, height) of a PNG, checking that it decodes as 8-bit RGB.
fn png_size(path: &Path) -> (u32, u32) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    (info.width, info.height)
}

#[test]
fn diagnostics_are_complete_readable_and_the_same_for_1_and_2_workers() {
    let sim = Simulation::new(SimConfig {
        frames: 12,
        width: 256,
        height: 256,
        seed: 5,
        scenario: Scenario::Seeing,
        ..SimConfig::default()
    });
    let frames: Vec<Array2<f32>> = (0..12).map(|i| sim.frame(i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for workers in [1, 2] {
        let result = run(&frames, workers);
        let diag = dir.path().join(format!("diag{workers}"));
        let image = dir.path().join(format!("r{workers}.fits"));
        let request = OutputRequest {
            image: &image,
            keep_cfa: false,
            diagnostics: Some((&diag, DiagnosticsSelection::ALL)),
            export: output::ExportOptions::default(),
        };
        let files = output::write_diagnostics(&result, &diag, DiagnosticsSelection::ALL).unwrap();
        let mut planned: Vec<_> = output::planned_files(&request)
            .into_iter()
            .filter(|f| f.starts_with(&diag))
            .collect();
        let mut got = files.clone();
        planned.sort();
        got.sort();
        assert_eq!(got, planned, "written and planned files differ");
        written.push(files);
    }
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let pngs: Vec<&std::path::PathBuf> = written[0]
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    let names: Vec<String> = pngs.iter().map(|p| name(p)).collect();
    assert_eq!(
        names,
        [
            "frame_quality.png",
            "warp_field.png",
            "invalid_tile_map.png",
            "warp_variance_hist.png"
        ]
    );
    for png in &pngs {
        let (w, h) = png_size(png);
        match name(png).as_str() {
            // The 256² image enlarged 4x, with axes, title and legend around it.
            "warp_field.png" | "invalid_tile_map.png" => {
                assert!(w >= 1024 + 70 && h >= 1024 + 100, "{png:?}: {w} x {h}")
            }
            "warp_variance_hist.png" => assert_eq!((w, h), (900, 520)),
            _ => assert!(w >= 900 && h >= 600, "{png:?}: {w} x {h}"),
        }
        let other = dir.path().join("diag2").join(png.file_name().unwrap());
        assert!(
            std::fs::read(png).unwrap() == std::fs::read(&other).unwrap(),
            "{} differs between 1 and 2 workers",
            name(png)
        );
    }
}
