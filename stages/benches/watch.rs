//! Live-mode throughput benchmark (prints figures; no criterion statistics: the quantity of interest
//! is behaviour over time, not one kernel's speed).
//!
//! Frames of `TLR_BENCH_SIZE` x `TLR_BENCH_SIZE` px (default 2048) are pushed into a [`LiveSession`]
//! every `TLR_BENCH_INTERVAL_MS` (default 2000) until `TLR_BENCH_FRAMES` (default 60) frames; a
//! snapshot is published per frame. Printed: sustained frames per second of processing, latency from
//! push to the snapshot that includes the frame (mean / max / last), resident memory after the
//! bootstrap and at the end (flat = memory does not grow with the number of frames), and the backlog
//! (pushes that had to wait).
//!
//! Run: `cargo bench -p tlr --bench watch` (env vars above to change the load).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tlr::live::{LiveEvent, LiveEventSink, LiveSession, LiveSettings};
use tlr::memory::rss_bytes;
use tlr_core::config::Config;
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let size = env("TLR_BENCH_SIZE", 2048) as usize;
    let frames = env("TLR_BENCH_FRAMES", 60) as usize;
    let interval = Duration::from_millis(env("TLR_BENCH_INTERVAL_MS", 2000));
    let distinct = 8usize.min(frames);
    let sim = Simulation::new(SimConfig {
        frames: distinct,
        width: size,
        height: size,
        seed: 21,
        scenario: Scenario::Seeing,
        ..SimConfig::default()
    });
    let t = Instant::now();
    // Distinct frames are generated once and reused in turn (simulating is slower than capturing).
    let pool: Vec<_> = (0..distinct).map(|i| sim.frame(i)).collect();
    eprintln!(
        "simulated {distinct} frames of {size}x{size} in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let rss_log: Arc<Mutex<Vec<(usize, u64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&rss_log);
    let events: LiveEventSink = Arc::new(move |e: &LiveEvent| {
        if let LiveEvent::Snapshot {
            frames_used,
            latency_s,
            ..
        } = e
        {
            if let Ok(mut l) = log.lock() {
                l.push((*frames_used, rss_bytes().unwrap_or(0) >> 20, *latency_s));
            }
        }
    });
    let mut settings = LiveSettings::new(Config::default());
    settings.bootstrap_frames = Some(10);
    let runtime = tlr::pipeline::build_runtime(settings.parallel_tiles.get())?;
    let started = Instant::now();
    let mut waited = 0usize;
    let summary = runtime.block_on(async {
        let session = LiveSession::start_memory(settings, events)?;
        for i in 0..frames {
            let due = started + interval * i as u32;
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            } else if i > 0 {
                waited += 1;
            }
            session.push(pool[i % distinct].clone()).await?;
        }
        anyhow::Ok(session.finish().await?)
    })?;
    let log = rss_log.lock().map(|l| l.clone()).unwrap_or_default();
    let after_boot = log.first().map_or(0, |x| x.1);
    let latencies: Vec<f64> = log.iter().skip(1).map(|x| x.2).collect();
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let max = latencies.iter().copied().fold(0.0, f64::max);
    println!(
        "live bench: {frames} frames of {size}x{size}, one every {:.2} s, snapshot per frame",
        interval.as_secs_f64()
    );
    println!(
        "  sustained processing rate: {:.2} frames/s (bootstrap excluded)",
        summary.frames_per_s
    );
    println!("  latency push -> snapshot: mean {mean:.2} s, max {max:.2} s (bootstrap excluded)");
    println!("  pushes behind schedule (backlog): {waited}");
    println!(
        "  RSS after bootstrap {after_boot} MiB, at the end {} MiB, peak {} MiB",
        log.last().map_or(0, |x| x.1),
        summary.peak_rss_mib.unwrap_or(0)
    );
    for (n, rss, lat) in log.iter().step_by((log.len() / 10).max(1)) {
        println!("    after {n:4} frames: RSS {rss:5} MiB, latency {lat:.2} s");
    }
    Ok(())
}
