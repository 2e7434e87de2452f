//! Embedding tlr's live mode, as a capture program would: frames are pushed from memory one by one
//! while they are taken, and the latest tile-local reconstruction can be read at any time. Nothing is
//! printed by the library and no file is written (set `LiveSettings::output` / `checkpoint` for that).
//!
//! Run: `cargo run --release --example live_session`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tlr::live::{LiveSession, LiveSettings};
use tlr::{Event, EventSink};
use tlr_core::config::Config;
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

/// Pushes `frames` simulated frames and returns (frames used, FWHM of the final snapshot).
pub fn run(frames: usize) -> anyhow::Result<(usize, f32)> {
    // Any source of `Array2<f32>` frames works; here: the built-in simulator.
    let sim = Simulation::new(SimConfig {
        frames,
        width: 256,
        height: 256,
        seed: 5,
        scenario: Scenario::Seeing,
        ..SimConfig::default()
    });
    let used = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&used);
    let events: EventSink = Arc::new(move |event: &Event| {
        if let Event::FrameUsed { .. } = event {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut settings = LiveSettings::new(Config::default());
    settings.bootstrap_frames = Some(6);

    let runtime = tlr::build_runtime(settings.parallel_tiles().get())?;
    let (summary, last) = runtime.block_on(async {
        let mut session = LiveSession::start_memory(settings, events)?;
        let snapshots = session.subscribe();
        for i in 0..frames {
            // Waits while the session is busy: the queue between the application and tlr is bounded.
            session.push(sim.frame(i)).await?;
            if i == frames / 2 {
                // The application can show the current result at any time.
                if let Some(snapshot) = session.wait_for_frames(1).await {
                    let q = tlr_core::stars::measure(snapshot.image.view());
                    println!(
                        "after {} frames: FWHM {:.2} px",
                        snapshot.frames_used, q.median_fwhm
                    );
                }
            }
        }
        // Closes the input; returns once the final snapshot is published.
        let summary = session.finish().await?;
        let last = snapshots.borrow().clone();
        anyhow::Ok((summary, last))
    })?;
    let last = last.ok_or_else(|| anyhow::anyhow!("no snapshot was published"))?;
    let fwhm = tlr_core::stars::measure(last.image.view()).median_fwhm;
    println!(
        "{} frames used, {} snapshots, {:.1} frames/s, max latency {:.2} s",
        summary.frames_used.len(),
        summary.snapshots,
        summary.frames_per_s,
        summary.max_latency_s
    );
    println!(
        "final snapshot: {} frames, FWHM {fwhm:.2} px",
        last.frames_used
    );
    Ok((used.load(Ordering::Relaxed), fwhm))
}

#[allow(dead_code)] // `main` is for `cargo run --example`; the test calls `run`.
fn main() -> anyhow::Result<()> {
    run(20).map(|_| ())
}
