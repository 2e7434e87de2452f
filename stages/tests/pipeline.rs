//! Whole-pipeline tests of the library API: determinism across worker counts and completion orders,
//! back-pressure, cancellation, error surfacing (bad frames, panics, too few valid tiles).

use ndarray::Array2;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use tlr::batch::TileProcessor;
use tlr::events::no_events;
use tlr::{Event, EventSink, FrameStore, Input, MemoryFrames, PipelineOptions, StageError};
use tlr_core::operator::{self, TileStack};
use tlr_core::simulate::{Scenario, SimConfig, Simulation};

fn frames(n: usize, size: usize, scenario: Scenario) -> Vec<Array2<f32>> {
    let sim = Simulation::new(SimConfig {
        frames: n,
        width: size,
        height: size,
        seed: 11,
        scenario,
        ..SimConfig::default()
    });
    (0..n).map(|i| sim.frame(i)).collect()
}

fn options(workers: usize) -> PipelineOptions {
    let mut o = PipelineOptions::default();
    o.config.v4.parallel_tiles = Some(workers);
    o
}

fn core_processor(options: &PipelineOptions) -> TileProcessor {
    let params = tlr::batch::operator_params(&options.config, options.registration);
    Arc::new(move |stack: &TileStack| operator::reconstruct_tile(stack, &params))
}

async fn run_memory(
    frames: &[Array2<f32>],
    options: PipelineOptions,
) -> Result<tlr::RunOutput, StageError> {
    let input = Input::Memory(MemoryFrames::new(frames.to_vec()).unwrap());
    tlr::run(input, options, no_events(), CancellationToken::new()).await
}

fn bits(image: &Array2<f32>) -> Vec<u32> {
    image.iter().map(|v| v.to_bits()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_bit_identical_for_1_2_and_8_workers() {
    let frames = frames(16, 256, Scenario::Seeing);
    let one = run_memory(&frames, options(1)).await.unwrap();
    assert!(one.summary.tiles_total > 1, "the test needs several tiles");
    for workers in [2, 8] {
        let other = run_memory(&frames, options(workers)).await.unwrap();
        assert_eq!(
            bits(&one.image),
            bits(&other.image),
            "{workers} workers differ from 1"
        );
        assert_eq!(other.summary.parallel_tiles, workers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_completion_order_gives_the_same_bytes() {
    let frames = frames(16, 256, Scenario::Seeing);
    let reference = run_memory(&frames, options(1)).await.unwrap();
    let mut delayed = options(4);
    let inner = core_processor(&delayed);
    let counter = Arc::new(AtomicUsize::new(0));
    delayed.processor = Some(Arc::new(move |stack: &TileStack| {
        // A deterministic pseudo-random delay per call scrambles the completion order.
        let k = counter.fetch_add(1, Ordering::Relaxed) as u64;
        let delay = (k.wrapping_mul(2_654_435_761) >> 7) % 40;
        std::thread::sleep(Duration::from_millis(delay));
        inner(stack)
    }));
    let scrambled = run_memory(&frames, delayed).await.unwrap();
    assert_eq!(bits(&reference.image), bits(&scrambled.image));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_workers_cap_what_the_reader_sends() {
    let frames = frames(12, 256, Scenario::Static);
    let mut opts = options(2);
    let inner = core_processor(&opts);
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (seen, gate_in) = (Arc::clone(&started), Arc::clone(&gate));
    opts.processor = Some(Arc::new(move |stack: &TileStack| {
        seen.fetch_add(1, Ordering::SeqCst);
        let (lock, cvar) = &*gate_in;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cvar.wait(open).unwrap();
        }
        drop(open);
        inner(stack)
    }));
    opts.channel_capacity = NonZeroUsize::new(1).unwrap();
    let owned = frames.clone();
    let task = tokio::spawn(async move { run_memory(&owned, opts).await });
    // Wait until both workers hold a job (the global pass comes first; a loaded machine may take
    // seconds), then give the reader time to send more if it wrongly could.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while started.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // With the consumer stalled, at most `parallel_tiles` jobs have started.
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert!(!task.is_finished());
    let (lock, cvar) = &*gate;
    *lock.lock().unwrap() = true;
    cvar.notify_all();
    let out = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("finishes once released")
        .unwrap()
        .unwrap();
    assert_eq!(started.load(Ordering::SeqCst), out.summary.tiles_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_within_a_timeout() {
    let frames = frames(12, 384, Scenario::Static);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let events: EventSink = Arc::new(move |event: &Event| {
        if matches!(event, Event::TileDone { done: 1, .. }) {
            trigger.cancel();
        }
    });
    let input = Input::Memory(MemoryFrames::new(frames).unwrap());
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        tlr::run(input, options(2), events, cancel),
    )
    .await
    .expect("a cancelled run ends promptly");
    assert!(
        matches!(outcome, Err(StageError::Cancelled)),
        "{:?}",
        outcome.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_is_an_error_not_a_hang() {
    let frames = frames(12, 256, Scenario::Static);
    let mut opts = options(2);
    opts.processor = Some(Arc::new(|stack: &TileStack| -> operator::TileResult {
        panic!("simulated failure in tile {}", stack.tile.index)
    }));
    let outcome = tokio::time::timeout(Duration::from_secs(30), run_memory(&frames, opts))
        .await
        .expect("no hang");
    match outcome {
        Err(StageError::Join { stage, .. }) => assert_eq!(stage, tlr::error::Stage::Workers),
        other => panic!("expected a join error, got {:?}", other.err()),
    }
}

/// A store whose frame `bad` cannot be read.
struct FailingStore {
    inner: MemoryFrames,
    bad: usize,
}

impl FrameStore for FailingStore {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    fn meta(&self, index: usize) -> tlr::source::FrameMeta {
        self.inner.meta(index)
    }
    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        if index == self.bad {
            Err(StageError::input(
                tlr::error::Stage::Reader,
                format!("frame {index}: corrupt"),
            ))
        } else {
            self.inner.read_full(index)
        }
    }
    fn read_regions(
        &self,
        index: usize,
        regions: &[(std::ops::Range<usize>, std::ops::Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        self.inner.read_regions(index, regions)
    }
}

#[test]
fn too_few_valid_tiles_is_a_clear_error() {
    let frames = frames(12, 256, Scenario::Static);
    let mut opts = options(1);
    // Every tile comes back invalid, as when the data cannot be registered anywhere.
    let core = core_processor(&opts);
    opts.processor = Some(Arc::new(move |stack: &TileStack| {
        let mut result = core(stack);
        result.valid = false;
        result.invalid_reason = Some("forced invalid by the test".into());
        result
    }));
    let outcome = tlr::run_blocking(
        Input::Memory(MemoryFrames::new(frames).unwrap()),
        opts,
        no_events(),
        CancellationToken::new(),
    );
    let error = outcome.err().expect("must fail");
    assert!(
        matches!(error, StageError::TooFewValidTiles { valid: 0, .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("min_valid_tile_fraction") && text.contains("forced invalid"),
        "{error}"
    );
}

#[test]
fn fewer_frames_than_min_valid_frames_run_with_all_of_them_and_warn_once() {
    let frames = frames(12, 256, Scenario::Static);
    let mut opts = options(1);
    opts.config.registration.local_tiles.min_valid_frames = 50; // more than there are frames
    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&warnings);
    let events: EventSink = Arc::new(move |e: &Event| {
        if let Event::Warning { message } = e {
            seen.lock().unwrap().push(message.clone());
        }
    });
    let digest = opts.config.digest();
    let run = tlr::run_blocking(
        Input::Memory(MemoryFrames::new(frames).unwrap()),
        opts,
        events,
        CancellationToken::new(),
    )
    .expect("a short session runs");
    let warnings = warnings.lock().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // The simulation's cloudy frame fails the global pass: the session has 11 usable frames.
    let used = run.summary.frames_used;
    assert!(used >= 10, "{used}");
    assert!(
        warnings[0].contains(&format!("only {used} usable frames"))
            && warnings[0].contains("registration.local_tiles.min_valid_frames (50)")
            && warnings[0].contains("outlier rejection"),
        "{}",
        warnings[0]
    );
    assert!(run.summary.tiles_valid > 0);
    // A tile of a short session needs two thirds of its usable frames (one that fails to register in
    // a tile does not invalidate it); the digest is the configuration's as given.
    let needed = (2 * used).div_ceil(3);
    assert!(run
        .tiles
        .iter()
        .all(|t| !t.valid || (needed..=used).contains(&t.frames_used)));
    assert_eq!(run.summary.config_digest, digest);
}

#[test]
fn a_corrupt_frame_is_skipped_or_fatal_when_strict() {
    let frames = frames(14, 256, Scenario::Static);
    let memory = MemoryFrames::new(frames).unwrap();
    let skipped = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&skipped);
    let events: EventSink = Arc::new(move |e: &Event| {
        if let Event::FrameSkipped { path, reason } = e {
            seen.lock()
                .unwrap()
                .push(format!("{}: {reason}", path.display()));
        }
    });
    let run = |strict: bool, events: EventSink| {
        let store = FailingStore {
            inner: memory.clone(),
            bad: 5,
        };
        let runtime = tlr::build_runtime(2).unwrap();
        runtime.block_on(tlr::run(
            Input::Store(Arc::new(store)),
            PipelineOptions {
                strict,
                ..options(2)
            },
            events,
            CancellationToken::new(),
        ))
    };
    let lenient = run(false, events).unwrap();
    assert_eq!(lenient.summary.frames_used, 13);
    let skipped = skipped.lock().unwrap().clone();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].contains("memory:5") && skipped[0].contains("corrupt"),
        "{skipped:?}"
    );
    let strict = run(true, no_events()).err().expect("strict fails");
    assert!(strict.to_string().contains("frame 5: corrupt"), "{strict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_tile_with_a_tight_reorder_window_does_not_deadlock() {
    // Regression: with the head tile slow and later tiles finishing first, a finished tile must be
    // forwarded even while the workers wait for a place in the reorder window.
    let frames = frames(12, 320, Scenario::Static);
    let mut opts = options(2);
    opts.reorder_window = NonZeroUsize::new(2);
    let inner = core_processor(&opts);
    opts.processor = Some(Arc::new(move |stack: &TileStack| {
        if stack.tile.index % 3 == 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
        inner(stack)
    }));
    let out = tokio::time::timeout(Duration::from_secs(60), run_memory(&frames, opts))
        .await
        .expect("no deadlock")
        .unwrap();
    assert!(out.summary.tiles_total > 3);
}

/// A store whose frame `bad` reads fine in the global pass and for the first tile row, then fails: a
/// frame deleted or damaged mid-run.
struct FailsInTilePhase {
    inner: MemoryFrames,
    bad: usize,
    reads: AtomicUsize,
}

impl FrameStore for FailsInTilePhase {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    fn meta(&self, index: usize) -> tlr::source::FrameMeta {
        self.inner.meta(index)
    }
    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        self.inner.read_full(index)
    }
    fn read_regions(
        &self,
        index: usize,
        regions: &[(std::ops::Range<usize>, std::ops::Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        if index == self.bad && self.reads.fetch_add(1, Ordering::SeqCst) >= 1 {
            return Err(StageError::input(
                tlr::error::Stage::Reader,
                format!("frame {index}: deleted"),
            ));
        }
        self.inner.read_regions(index, regions)
    }
}

#[test]
fn a_frame_failing_mid_run_is_counted_as_unused_everywhere() {
    let frames = frames(14, 256, Scenario::Static);
    let store = FailsInTilePhase {
        inner: MemoryFrames::new(frames).unwrap().with_exposure_s(10.0),
        bad: 5,
        reads: AtomicUsize::new(0),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let events: EventSink = Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone()));
    let mut opts = options(2);
    opts.reader_block_mib = 1 << 10;
    let out = tlr::run_blocking(
        Input::Store(Arc::new(store)),
        opts,
        events,
        CancellationToken::new(),
    )
    .unwrap();
    assert!(
        out.summary.tiles_total > 4,
        "the test needs several tile rows"
    );
    let s = &out.summary;
    assert_eq!(
        (s.frames_total, s.frames_used, s.frames_skipped),
        (14, 13, 1)
    );
    assert_eq!(s.exposure_total_s, Some(130.0));
    assert!(!out.frames[5].used && out.frames[5].weight == 0.0);
    assert_eq!(out.frames.iter().filter(|f| f.used).count(), 13);
    let meta = tlr::output::output_meta(&out, "result");
    let ncombine = meta.cards.iter().find(|c| c.key == "NCOMBINE").unwrap();
    assert!(
        matches!(ncombine.value, tlr_core::fits::CardValue::Int(13)),
        "{:?}",
        ncombine.value
    );
    assert!(meta
        .history
        .iter()
        .any(|h| h.contains("13 of 14 frames used")));
    let events = seen.lock().unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::Warning { message }
        if message.contains("frame 5: deleted") && message.contains("left out"))));
    let finished = events
        .iter()
        .find_map(|e| match e {
            Event::Finished { summary } => Some(summary.frames_used),
            _ => None,
        })
        .unwrap();
    assert_eq!(finished, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_a_stream_ending_with_the_summary() {
    use futures_util::StreamExt;
    let frames = frames(10, 192, Scenario::Static);
    let (events, stream) = tlr::events::channel();
    let input = Input::Memory(MemoryFrames::new(frames).unwrap());
    let run = tokio::spawn(tlr::run(
        input,
        options(2),
        events,
        CancellationToken::new(),
    ));
    let received: Vec<Event> = stream.collect().await;
    let out = run.await.unwrap().unwrap();
    let tiles = received
        .iter()
        .filter(|e| matches!(e, Event::TileDone { .. }))
        .count();
    assert_eq!(tiles, out.summary.tiles_total);
    assert!(matches!(received.last(), Some(Event::Finished { .. })));
}

#[test]
fn frames_from_files_give_the_bytes_frames_from_memory_give() {
    // A folder run cuts its first tile row from the rows the global pass kept; a memory run reads every
    // row from the store. Both must give the same image, bit for bit.
    let frames = frames(14, 256, Scenario::Seeing);
    let dir = tempfile::tempdir().unwrap();
    for (i, frame) in frames.iter().enumerate() {
        tlr_core::fits::write_image_atomic(
            &dir.path().join(format!("frame_{i:02}.fits")),
            frame.view(),
            tlr_core::fits::SampleFormat::F32,
            &tlr_core::fits::OutputMeta::default(),
        )
        .unwrap();
    }
    let memory = tlr::run_blocking(
        Input::Memory(MemoryFrames::new(frames.clone()).unwrap()),
        options(2),
        no_events(),
        CancellationToken::new(),
    )
    .unwrap();
    assert!(
        memory.summary.tiles_total > 4,
        "the test needs several tile rows"
    );
    let folder = tlr::run_blocking(
        Input::Folder {
            dir: dir.path().to_path_buf(),
            scan: tlr_core::scan::ScanOptions::default(),
        },
        options(2),
        no_events(),
        CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(bits(&memory.image), bits(&folder.image));
}
