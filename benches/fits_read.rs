//! Timed loop (not criterion) of frame reading: 100 camera frames of 1024x1024 (BITPIX 16,
//! BZERO 32768), each read whole, then in 16 full-width row bands (1600 region reads), then in 16
//! tiles of 288x288 (tile plus margin, not full width), with the native backend and with the reader
//! forced onto cfitsio (the reader before the native backend). Prints process CPU time and wall time
//! per phase, best of 3 rounds.
//!
//! `cargo bench --bench fits_read` (`TLR_BENCH_FRAMES=N` for another frame count;
//! `TLR_BENCH_ONLY=native` or `=cfitsio` runs one backend, e.g. under `perf record`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use tlr_core::fits::{write_image_atomic, FitsError, FitsReader, OutputMeta, SampleFormat};

#[path = "cpu_time.rs"]
#[allow(dead_code)] // the criterion measurement in it is for the other benches
mod cpu_time;
use cpu_time::process_cpu_s;

const SIDE: usize = 1024;

type Open = fn(&Path) -> Result<FitsReader, FitsError>;

/// Runs `phase` over all frames; returns (CPU s, wall s) and a checksum.
fn timed(frames: &[PathBuf], open: Open, phase: &str) -> (f64, f64, f64) {
    let (c0, w0) = (process_cpu_s(), Instant::now());
    let mut sum = 0.0f64;
    for path in frames {
        let mut reader = open(path).expect("open");
        match phase {
            "full" => sum += f64::from(reader.read_full().expect("full")[[7, 9]]),
            "bands" => {
                for b in 0..16 {
                    let band = reader
                        .read_region(b * 64..(b + 1) * 64, 0..SIDE)
                        .expect("band");
                    sum += f64::from(band[[1, 2]]);
                }
            }
            _ => {
                for t in 0..16usize {
                    let (y, x) = ((t / 4) * 256, (t % 4) * 256);
                    let (y0, x0) = (y.saturating_sub(16), x.saturating_sub(16));
                    let tile = reader
                        .read_region(y0..(y + 272).min(SIDE), x0..(x + 272).min(SIDE))
                        .expect("tile");
                    sum += f64::from(tile[[1, 2]]);
                }
            }
        }
    }
    (process_cpu_s() - c0, w0.elapsed().as_secs_f64(), sum)
}

fn main() {
    let n: usize = std::env::var("TLR_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let only = std::env::var("TLR_BENCH_ONLY").ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let frames: Vec<PathBuf> = (0..n)
        .map(|i| {
            let image = Array2::from_shape_fn((SIDE, SIDE), |(r, c)| {
                (1000 + (r * 31 + c * 17 + i * 7) % 20_000) as f32
            });
            let path = dir.path().join(format!("frame_{i:04}.fits"));
            write_image_atomic(
                &path,
                image.view(),
                SampleFormat::U16,
                &OutputMeta::default(),
            )
            .expect("write");
            path
        })
        .collect();
    println!("{n} frames of {SIDE}x{SIDE}, BITPIX 16 BZERO 32768; best of 3 rounds");
    for phase in ["full", "bands", "tiles"] {
        let mut best = [(f64::INFINITY, f64::INFINITY); 2];
        let mut sums = [0.0; 2];
        for _ in 0..3 {
            for (k, open) in [FitsReader::open as Open, FitsReader::open_with_cfitsio]
                .into_iter()
                .enumerate()
            {
                if only
                    .as_deref()
                    .is_some_and(|o| o != ["native", "cfitsio"][k])
                {
                    continue;
                }
                let (cpu, wall, sum) = timed(&frames, open, phase);
                best[k] = (best[k].0.min(cpu), best[k].1.min(wall));
                sums[k] = sum;
            }
        }
        if only.is_none() {
            assert_eq!(sums[0].to_bits(), sums[1].to_bits(), "backends disagree");
        }
        let reads = match phase {
            "full" => n,
            _ => 16 * n,
        };
        let figure = |k: usize| {
            format!(
                "{} {:.3} s CPU ({:.3} s wall)",
                ["native", "cfitsio"][k],
                best[k].0,
                best[k].1
            )
        };
        match only.as_deref() {
            Some("native") => println!("{phase:>5} ({reads:>4} reads): {}", figure(0)),
            Some(_) => println!("{phase:>5} ({reads:>4} reads): {}", figure(1)),
            None => println!(
                "{phase:>5} ({reads:>4} reads): {}, {}: {:.1}x less CPU",
                figure(0),
                figure(1),
                best[1].0 / best[0].0
            ),
        }
    }
}
