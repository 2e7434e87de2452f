//! Embedding tlr as a pipeline stage with frames held in memory (as a capture or processing program
//! would): progress arrives as events through a callback, the image and the report come back as values.
//! Nothing is printed by the library and no file is written.
//!
//! Run: `cargo run --release --example embed_memory`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use tlr::{Event, EventSink, Input, MemoryFrames, PipelineOptions};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

pub fn main() -> anyhow::Result<()> {
    // Any source of `Array2<f32>` frames works; here: the built-in simulator.
    let sim = Simulation::new(SimConfig {
        frames: 16,
        width: 256,
        height: 256,
        seed: 3,
        scenario: Scenario::Seeing,
        ..SimConfig::default()
    });
    let frames: Vec<_> = (0..16).map(|i| sim.frame(i)).collect();

    let tiles_done = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&tiles_done);
    let events: EventSink = Arc::new(move |event: &Event| {
        if let Event::TileDone { .. } = event {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let input = Input::Memory(MemoryFrames::new(frames)?.with_exposure_s(10.0));
    let output = tlr::run_blocking(
        input,
        PipelineOptions::default(),
        events,
        CancellationToken::new(),
    )?;

    let s = &output.summary;
    println!(
        "reconstructed {}x{} from {} frames: {} of {} tiles valid, {} tile events, total exposure {:?} s",
        output.image.ncols(),
        output.image.nrows(),
        s.frames_used,
        s.tiles_valid,
        s.tiles_total,
        tiles_done.load(Ordering::Relaxed),
        s.exposure_total_s
    );
    anyhow::ensure!(tiles_done.load(Ordering::Relaxed) == s.tiles_total);
    Ok(())
}
