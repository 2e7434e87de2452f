//! A sensor whose outermost lines read dark in every frame (as MicroObservatory's HAT-P-32 frames: the
//! top rows 44, 23, 13, 8, 5, 3, 2 noise sigmas below the sky, the first column 18 and the second 3),
//! under a drifting field: the corners of the stack that few frames cover are made of those lines. The
//! result must have no pixel far below the sky there, the coverage map must count only the frames'
//! lines that went in, and the output stays bit-identical for 1 and 2 workers.

use ndarray::Array2;
use tokio_util::sync::CancellationToken;

use tlr::events::no_events;
use tlr::{Input, MemoryFrames, PipelineOptions, RunOutput};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};
use tlr_core::stats::background_and_noise;

/// Drop below the sky of the outermost lines, in noise sigmas of one frame, from the edge inward.
const DARK_ROWS: [f32; 7] = [44.0, 23.0, 13.0, 8.0, 5.0, 3.0, 2.0];
const DARK_COLUMNS: [f32; 2] = [17.6, 2.7];

fn simulation() -> Simulation {
    Simulation::new(SimConfig {
        frames: 16,
        width: 256,
        height: 256,
        seed: 8,
        scenario: Scenario::Seeing,
        drift_px: 40.0,
        bad_frames: false,
        ..SimConfig::default()
    })
}

/// The frames with the dark lines on every side (the drift's direction is random: some corner of
/// the stack is then made of them).
fn frames(sim: &Simulation) -> Vec<Array2<f32>> {
    (0..sim.frames())
        .map(|i| {
            let mut f = sim.frame(i);
            let sigma = background_and_noise(f.view(), 1 << 16).unwrap().sigma;
            let (rows, cols) = f.dim();
            for (line, drop) in DARK_ROWS.iter().enumerate() {
                f.row_mut(line).mapv_inplace(|v| v - drop * sigma);
                f.row_mut(rows - 1 - line)
                    .mapv_inplace(|v| v - drop * sigma);
            }
            for (line, drop) in DARK_COLUMNS.iter().enumerate() {
                f.column_mut(line).mapv_inplace(|v| v - drop * sigma);
                f.column_mut(cols - 1 - line)
                    .mapv_inplace(|v| v - drop * sigma);
            }
            f
        })
        .collect()
}

fn run(frames: Vec<Array2<f32>>, workers: usize) -> RunOutput {
    let mut opts = PipelineOptions::default();
    opts.config.v4.parallel_tiles = Some(workers);
    let input = Input::Memory(MemoryFrames::new(frames).expect("frames"));
    tlr::run_blocking(input, opts, no_events(), CancellationToken::new()).expect("the run succeeds")
}

#[test]
fn dark_sensor_lines_leave_no_dark_corner_where_few_frames_cover() {
    let sim = simulation();
    let frames = frames(&sim);
    let n = frames.len() as f32;
    let result = run(frames.clone(), 2);
    // The lines down to 2 sigma, in whole 2x2 cells.
    let found = result.sensor_border;
    assert_eq!(
        (found.top, found.bottom, found.left, found.right),
        (8, 8, 2, 2)
    );
    let image = &result.image;
    let counts = tlr::output::frame_counts(&result);
    let st = background_and_noise(image.view(), 1 << 18).unwrap();
    let (sky, sigma) = (st.median, st.sigma);
    // Per pixel, the noise of the frames that cover it: sigma * sqrt(n / frames there).
    let mut worst = (0.0f32, (0, 0), 0.0f32);
    let mut low = 0;
    for ((y, x), &v) in image.indexed_iter() {
        // (The count follows the global shifts only: a pixel at the edge may have data from a frame
        // whose local shift reaches it while the count says 0.)
        let c = counts[[y, x]].max(1.0);
        if !v.is_finite() {
            continue;
        }
        let below = (sky - v) / (sigma * (n / c).sqrt());
        if below > 10.0 {
            low += 1;
        }
        if below > worst.0 {
            worst = (below, (y, x), c);
        }
    }
    println!(
        "sky {sky:.1} sigma {sigma:.2}: {low} pixels more than 10 sigma below; the lowest {:.1} sigma \
         at {:?} ({} frames)",
        worst.0, worst.1, worst.2
    );
    assert_eq!(
        low, 0,
        "the lowest pixel is {:.1} sigma (of its frames) below the sky at {:?}, covered by {} frames",
        worst.0, worst.1, worst.2
    );
    let one = run(frames, 1);
    assert!(
        one.image
            .iter()
            .zip(image.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "1 and 2 workers differ"
    );
}
