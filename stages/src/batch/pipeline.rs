//! The pipeline: wires the stages together and is the library API for embedding.
//!
//! ```text
//! FrameStore ─▶ FrameReader ──TileJob──▶ Workers (≤ parallel_tiles blocking jobs) ──TileDone──▶ Accumulator
//! (files or     global pass,   bounded     completion order                         bounded     reorder buffer,
//!  memory)      then blocks                                                                     seq order, mosaic
//! ```
//!
//! [`run`] is the whole job: scan (for a folder), global pass, tile grid, staged reconstruction, result.
//! Stage tasks are created and spawned only here. Only the reader watches the cancellation token; the
//! other stages stop when their input channel closes, after draining what is in flight.
//! Colour (Bayer) frames: the mode is decided once per run from every frame's header and the
//! configuration (`data.color_mode`, `data.bayer_pattern`; see [`decide_sequence`]): the majority
//! wins, frames of another mode are skipped (reported like other skipped files; an error with
//! `strict`), an unknown pattern is an error naming the file; warnings go out as events. A
//! well-sampled colour run works in cell space (`H/2 x W/2`) throughout: registration on the luminance
//! per 2x2 cell, every Bayer plane reconstructed with the same shifts and weights
//! ([`crate::source::ColourFrames`]), one demosaic at the end. An undersampled one (star FWHM below
//! [`DEBAYER_BELOW_FWHM_CELLS`] cells, measured on one frame before the global pass) demosaics every
//! frame as it is read and works at full resolution on R, G, B ([`crate::source::DebayeredFrames`]).
//! The result carries the blended planes ([`ColourResult`]).
//! What it does not: write files ([`crate::output`] does) or print (events go to the caller's sink).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use tlr_core::config::Config;
use tlr_core::operator;
use tlr_core::scan::{self, ScanOptions};
use tlr_core::tile;

use super::accumulator::{Accumulator, Blend};
use super::global_pass::{GlobalSummary, UsedFrame};
use super::reader::{FrameReader, ReadPlan};
use super::saturation::{hold_saturated, Saturation, STACK_CLIPPED_FRACTION};
use super::workers::{batch_work, Pool, TileProcessor};
use crate::error::{Stage, StageError};
use crate::events::{Event, EventSink};
use crate::memory::{bytes_read, peak_rss_bytes, MemoryGuard};
use crate::report::{FrameSummary, RunSummary, TileSummary};
use crate::settings::{operator_params, worker_count, Registration};
use crate::source::{
    decide_sequence, ColourFrames, DebayeredFrames, FileFrames, FrameStore, MemoryFrames,
};

/// Where the frames come from.
pub enum Input {
    /// Every frame in a folder (scanned, checked and time-ordered first).
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Which files count as frames and which to leave out.
        scan: ScanOptions,
    },
    /// Frames held in memory, in time order.
    Memory(MemoryFrames),
    /// Any other frame store (an application's own frame source).
    Store(Arc<dyn FrameStore>),
    /// The complete frames of a SER video file, in file order (Bayer pattern from its ColorID unless
    /// `data.color_mode` / `data.bayer_pattern` say otherwise).
    Ser(PathBuf),
}

/// Settings of one run: the reconstruction configuration plus runtime choices.
#[derive(Clone)]
pub struct PipelineOptions {
    /// The reconstruction configuration (YAML).
    pub config: Config,
    /// Capacity of each channel between stages (tile stacks, results).
    pub channel_capacity: NonZeroUsize,
    /// Tiles allowed in flight plus waiting for reordering; `None` = 2 x workers + 2.
    pub reorder_window: Option<NonZeroUsize>,
    /// Memory the reader may use for its rolling window of frame rows (one tile row of every frame), MiB;
    /// above it, the image is read in column bands.
    pub reader_block_mib: usize,
    /// A frame that cannot be read or registered stops the run instead of being left out.
    pub strict: bool,
    /// Tile-local (default) or the global-registration baseline.
    pub registration: Registration,
    /// Folder where masters built from calibration folders are cached (`config.calibration`);
    /// `None` builds them every run.
    pub calibration_cache: Option<PathBuf>,
    /// Replaces the per-tile operator (instrumentation in tests); `None` = the core operator. A test
    /// hook, not part of the supported API.
    #[doc(hidden)]
    pub processor: Option<TileProcessor>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            config: Config::default(),
            channel_capacity: NonZeroUsize::new(2).expect("2 > 0"),
            reorder_window: None,
            reader_block_mib: 64,
            strict: false,
            registration: Registration::TileLocal,
            calibration_cache: None,
            processor: None,
        }
    }
}

/// The colour part of a colour run's result.
#[derive(Debug, Clone)]
pub struct ColourResult {
    /// The Bayer pattern of the input frames (file row order).
    pub pattern: tlr_core::bayer::CfaPattern,
    /// The blended planes (NaN where no valid tile reached): either the four Bayer planes R, G1, G2, B
    /// in cell space, `(4, H/2, W/2)`, or, when the frames were demosaiced one by one (undersampled
    /// sequences, see [`run`]), R, G, B at full resolution, `(3, H, W)`.
    pub planes: ndarray::Array3<f32>,
    /// The saturation level of each plane in the planes' units, when known ([`Saturation::levels`]);
    /// empty: none.
    pub levels: Vec<Option<f32>>,
}

impl ColourResult {
    /// Whether the planes are R, G, B at full resolution (the frames were demosaiced one by one).
    pub fn is_rgb(&self) -> bool {
        self.planes.dim().0 == crate::source::RGB_PLANES
    }

    /// Output pixels per pixel of the run's grid along each axis: 2 for cell-space planes, 1 for RGB.
    pub fn scale(&self) -> usize {
        if self.is_rgb() {
            1
        } else {
            2
        }
    }

    /// The reconstructed mosaic (CFA) at full resolution, `(H, W)` (even size), in the input's pattern
    /// (for RGB planes: each pixel's own colour of them).
    ///
    /// # Errors
    /// When the planes are neither four nor three (cannot happen for a pipeline result).
    pub fn cfa(&self) -> Result<ndarray::Array2<f32>, tlr_core::bayer::BayerError> {
        if self.is_rgb() {
            return tlr_core::bayer::mosaic(self.planes.view(), self.pattern);
        }
        tlr_core::bayer::merge_planes(self.planes.view(), self.pattern)
    }

    /// The RGB image `(3, H, W)`: the planes themselves, or the cell-space planes demosaiced
    /// (Malvar-He-Cutler; next to samples at or above [`STACK_CLIPPED_FRACTION`] of their plane's level
    /// kept within its bilinear taps, next to those at [`tlr_core::saturation::BRIGHT_FRACTION`] of it
    /// not below them: [`tlr_core::saturation::demosaic_levels`]).
    ///
    /// # Errors
    /// As [`tlr_core::bayer::demosaic`].
    pub fn rgb(&self) -> Result<ndarray::Array3<f32>, tlr_core::bayer::BayerError> {
        if self.is_rgb() {
            return Ok(self.planes.clone());
        }
        let mut levels = [None; tlr_core::bayer::PLANES];
        for (l, &found) in levels.iter_mut().zip(&self.levels) {
            *l = found;
        }
        tlr_core::saturation::demosaic_levels(
            self.cfa()?.view(),
            self.pattern,
            &levels,
            STACK_CLIPPED_FRACTION,
        )
    }
}

/// The result of [`run`].
pub struct RunOutput {
    /// The reconstructed image, `(rows, cols)`; NaN where no valid tile reached. In colour mode the
    /// luminance (mean of the planes): per 2x2 cell, `(H/2, W/2)`, or at full resolution for frames
    /// demosaiced one by one ([`ColourResult::scale`]; the tile grid and diagnostics are in this space).
    pub image: ndarray::Array2<f32>,
    /// Colour mode: the reconstructed planes; `None` for mono.
    pub colour: Option<ColourResult>,
    /// Figures of the run.
    pub summary: RunSummary,
    /// One entry per tile, in tile order.
    pub tiles: Vec<TileSummary>,
    /// One entry per frame, in frame order.
    pub frames: Vec<FrameSummary>,
    /// Global shift per frame that entered the tile phase (slot order of the tiles' frame reports),
    /// including a frame that failed to read later in the run ([`FrameSummary::used`] is false for it,
    /// and the summary does not count it).
    pub used_frames: Vec<UsedFrame>,
    /// What the result's header carries from the frames combined: observation keywords, time span
    /// and the reference frame's WCS (empty for frames without headers, e.g. from memory).
    pub header: tlr_core::fits::StackHeader,
    /// The written grid (full resolution, also for colour) relative to the reference frame: written
    /// pixel -> reference-frame pixel. The output is in the sequence's mean geometry (or the frame
    /// `registration.reference_frame` names): the frames' linear motions are taken relative to it,
    /// every tile's local shifts are made zero-mean around them, so this map is the inverse of that
    /// geometry as measured against the reference frame (a colour run's cell `(i, j)` is the frame's
    /// pixels `(2i..2i+2, 2j..2j+2)`). The WCS written follows it.
    pub to_reference: tlr_core::fits::PixelMap,
    /// The area of `image` the files are cut to (`--crop common`: [`crate::output::common_area`]);
    /// `None` writes the whole grid.
    pub crop: Option<crate::output::GridArea>,
    /// The saturated pixels, held at the saturation level; `None` when no frame gives a level.
    pub saturation: Option<Saturation>,
    /// The frames' edge lines left out as a sensor border (full-resolution pixels; empty: none).
    pub sensor_border: tlr_core::sensor_border::SensorBorder,
}

/// Runs the whole job on `input`. Progress goes to `events`; `cancel` stops it (no result then).
///
/// # Errors
/// Any stage's error, naming the stage and the file, tile or key; [`StageError::Cancelled`] after a
/// cancellation; [`StageError::TooFewValidTiles`] when the methodology's validity rule fails.
pub async fn run(
    input: Input,
    options: PipelineOptions,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<RunOutput, StageError> {
    let started = Instant::now();
    let read_before = bytes_read();
    let cfg = &options.config;
    let memory = MemoryGuard::new(
        cfg.v4.memory_limits.rss_warn_mb,
        cfg.v4.memory_limits.rss_abort_mb,
        Arc::clone(&events),
    );
    // Folder runs: the colour mode the frames' headers decided (memory frames: the configuration's).
    let mut decided: Option<Option<tlr_core::bayer::CfaPattern>> = None;
    let mut file_frames: Option<Arc<FileFrames>> = None;
    let (store, skipped_by_scan): (Arc<dyn FrameStore>, usize) = match input {
        Input::Folder { dir, scan } => {
            let mut report = tokio::task::spawn_blocking(move || scan::scan_folder(&dir, &scan))
                .await
                .map_err(|source| StageError::Join {
                    stage: Stage::Scan,
                    source,
                })??;
            // The sequence decides mono or colour; frames of another mode are skipped like others.
            let colour =
                decide_sequence(std::mem::take(&mut report.frames), cfg.data.color_mode())?;
            for message in colour.warnings {
                events(&Event::Warning { message });
            }
            report.skipped.extend(
                colour
                    .skipped
                    .into_iter()
                    .map(|(path, reason)| tlr_core::scan::SkippedFile { path, reason }),
            );
            for skipped in &report.skipped {
                events(&Event::FrameSkipped {
                    path: skipped.path.clone(),
                    reason: skipped.reason.clone(),
                });
            }
            if options.strict && !report.skipped.is_empty() {
                return Err(StageError::input(
                    Stage::Scan,
                    format!(
                        "{} file(s) were skipped and --strict is set: {}",
                        report.skipped.len(),
                        report
                            .skipped
                            .iter()
                            .map(|s| format!("`{}`: {}", s.path.display(), s.reason))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ));
            }
            let skipped = report.skipped.len();
            let files = Arc::new(FileFrames::new(colour.kept)?);
            decided = Some(colour.pattern);
            file_frames = Some(Arc::clone(&files));
            let (cfg, cache) = (cfg.clone(), options.calibration_cache.clone());
            let (pattern, sink) = (colour.pattern, Arc::clone(&events));
            let store = tokio::task::spawn_blocking(move || {
                crate::source::calibrate(files, pattern, &cfg.calibration, cache.as_deref(), &sink)
            })
            .await
            .map_err(|source| StageError::Join {
                stage: Stage::Reader,
                source,
            })??;
            (store, skipped)
        }
        Input::Memory(frames) => (Arc::new(frames), 0),
        Input::Store(store) => (store, 0),
        Input::Ser(path) => {
            let ser = tokio::task::spawn_blocking(move || crate::source::SerFrames::open(&path))
                .await
                .map_err(|source| StageError::Join {
                    stage: Stage::Scan,
                    source,
                })??;
            for message in ser.warnings() {
                events(&Event::Warning { message });
            }
            decided = Some(crate::source::ser_colour(
                ser.pattern(),
                cfg.data.color_mode(),
            )?);
            (Arc::new(ser), 0)
        }
    };
    if decided.is_none() && !cfg.calibration.is_default() {
        events(&Event::Warning {
            message: "the calibration settings apply to frames read from files; frames from \
                      memory or an application's store are used as they are"
                .into(),
        });
    }
    // Edge lines every frame shows off the sky (a sensor border) are left out, before anything reads.
    let (store, sensor_border) = {
        let sink = Arc::clone(&events);
        tokio::task::spawn_blocking(move || crate::source::leave_out_sensor_border(store, &sink))
            .await
            .map_err(|source| StageError::Join {
                stage: Stage::Reader,
                source,
            })?
    };
    let (store, pattern) = colour_store(store, decided, cfg, &events)?;
    if cfg.v4.adaptive_tiles.enabled {
        events(&Event::Warning {
            message:
                "v4.adaptive_tiles.enabled is accepted, but this version of tlr does not split \
                      tiles yet: every tile keeps the size chosen from the FWHM"
                    .into(),
        });
    }
    let (rows, cols) = store.shape();
    events(&Event::Scanned {
        frames: store.len(),
        skipped: skipped_by_scan,
        rows,
        cols,
    });

    // Frames from files: the global pass keeps their top rows for the first tile row (read while both
    // workers wait), within the reader's window budget.
    let top_rows = if decided.is_some() {
        top_rows_to_keep(cfg, &*store, options.reader_block_mib << 20)
    } else {
        0
    };
    let reader = FrameReader::new(
        Arc::clone(&store),
        Arc::clone(&events),
        options.strict,
        memory.clone(),
    )
    .keep_top_rows(top_rows)
    .with_global(cfg.registration.global.clone());
    let workers_n = worker_count(cfg);
    let mut global = reader.global_pass(&cancel, workers_n.get()).await?;
    global.set_output_geometry(cfg.registration.reference_frame)?;
    // A short session runs with all its usable frames: the tile validity rule then asks for all of
    // them (the live bootstrap caps the same way), and the user is told that rejection is weaker.
    let lowered;
    let cfg = if let Some(message) = cfg.small_session_warning(global.frames.len()) {
        events(&Event::Warning { message });
        let mut c = cfg.clone();
        c.registration.local_tiles.min_valid_frames =
            cfg.effective_min_valid_frames(global.frames.len());
        lowered = c;
        &lowered
    } else {
        cfg
    };
    let median_fwhm = median_fwhm(&global);
    let tile_px = tile::tile_size_px(
        median_fwhm,
        cfg.tile.size_factor as f32,
        cfg.tile.min_size,
        cfg.tile.max_size,
    );
    let grid = tile::tile_grid(rows, cols, tile_px, cfg.tile.overlap_fraction as f32)?;
    let margin = cfg.tile.margin_px;
    events(&Event::GlobalDone {
        frames_used: global.frames.len(),
        median_fwhm_px: median_fwhm,
        tile_size_px: tile_px,
        tiles: grid.len(),
    });

    let plan = ReadPlan::new(
        &grid,
        margin,
        global.frames.len() * store.planes(),
        options.reader_block_mib << 20,
    );
    let tiles = plan.tiles.clone();
    let window_size = options
        .reorder_window
        .map_or(2 * workers_n.get() + 2, NonZeroUsize::get)
        .max(workers_n.get());
    let processor = options.processor.clone().unwrap_or_else(|| {
        let params = super::job::tile_params(
            operator_params(cfg, options.registration),
            global.surface,
            cfg.registration.local_tiles.keep_best_percent,
            global.frames.len(),
        );
        Arc::new(move |stack: &operator::TileStack| operator::reconstruct_tile(stack, &params))
    });

    let capacity = options.channel_capacity.get();
    let (tile_tx, tile_rx) = mpsc::channel(capacity);
    let pool = Pool::new(workers_n, window_size);
    let work = batch_work(
        processor,
        operator_params(cfg, options.registration),
        workers_n,
    );
    let results = pool.ordered(ReceiverStream::new(tile_rx), work);
    let blend = Blend::new(
        rows,
        cols,
        &tiles,
        if store.planes() > 1 {
            store.planes()
        } else {
            0
        },
        cfg.registration.local_tiles.variance_window_sigma as f32,
    );
    let accumulator = Accumulator::new(blend, tiles.len(), Arc::clone(&events));
    let used_frames = global.frames.clone();
    let reader_task = tokio::spawn(reader.run(
        plan,
        global.frames.clone(),
        global.geometry.clone(),
        tile_tx,
        cancel.clone(),
    ));
    // The worker pool runs inside the accumulator's stream: its jobs are blocking tasks of their own.
    let accumulator_task = tokio::spawn(accumulator.run(results));

    // Join in data-flow order; the first stage that failed is the one to report, since later stages
    // only see their input end early.
    let reader_result = reader_task.await.map_err(|source| StageError::Join {
        stage: Stage::Reader,
        source,
    })?;
    let accumulated = accumulator_task.await.map_err(|source| StageError::Join {
        stage: Stage::Accumulator,
        source,
    })?;
    let tile_phase = reader_result?;
    let mut accumulated = accumulated?;

    let valid = accumulated.tiles.iter().filter(|t| t.valid).count();
    let min_fraction = cfg.v4.min_valid_tile_fraction;
    if (valid as f64) < min_fraction * accumulated.tiles.len() as f64 {
        return Err(StageError::TooFewValidTiles {
            valid,
            total: accumulated.tiles.len(),
            fraction: 100.0 * valid as f64 / accumulated.tiles.len().max(1) as f64,
            min_fraction,
            reason: most_common_reason(&accumulated.tiles),
        });
    }

    // A frame that failed to read in the tile phase is counted as unused everywhere (header, summary,
    // report, events), although tiles read before the failure include it: the counts never overstate.
    let frames = frame_summaries(store.as_ref(), &global, &tile_phase.failed);
    let combined: Vec<&UsedFrame> = used_frames
        .iter()
        .filter(|f| !tile_phase.failed.contains(&f.index))
        .collect();
    let exposures: Vec<f64> = combined
        .iter()
        .filter_map(|f| store.meta(f.index).exposure_s)
        .collect();
    let summary = RunSummary {
        frames_total: store.len() + skipped_by_scan,
        frames_used: combined.len(),
        frames_skipped: store.len() + skipped_by_scan - combined.len(),
        tiles_total: accumulated.tiles.len(),
        tiles_valid: valid,
        tile_size_px: tile_px,
        margin_px: margin,
        median_fwhm_px: median_fwhm,
        parallel_tiles: workers_n.get(),
        registration: options.registration,
        exposure_total_s: (exposures.len() == combined.len()).then(|| exposures.iter().sum()),
        date_obs_first: combined.first().and_then(|f| store.meta(f.index).date_obs),
        elapsed_s: started.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_bytes().map(|b| b >> 20),
        bytes_read: bytes_read()
            .zip(read_before)
            .map(|(after, before)| after.saturating_sub(before)),
        // The configuration as given (a short session's lowered minimum is not a setting).
        config_digest: options.config.digest(),
    };
    events(&Event::Finished {
        summary: summary.clone(),
    });
    let stack_header = file_frames.map_or_else(Default::default, |files| {
        let headers = files.headers();
        let combined: Vec<&tlr_core::fits::FrameHeader> = combined
            .iter()
            .filter_map(|f| headers.get(f.index))
            .collect();
        // The reference is the first frame the global pass measured a shift for (its own is zero).
        let reference = global
            .qualities
            .iter()
            .position(|q| q.is_some_and(|q| q.shift_ok))
            .and_then(|i| headers.get(i));
        tlr_core::fits::StackHeader::from_frames(&combined, reference)
    });
    let saturation = match accumulated.planes.as_mut() {
        Some(planes) => hold_saturated(&combined, true, planes.outer_iter_mut()),
        None => hold_saturated(&combined, false, [accumulated.image.view_mut()]),
    };
    let colour = match (pattern, accumulated.planes) {
        (Some(pattern), Some(planes)) => Some(ColourResult {
            pattern,
            planes,
            levels: saturation
                .as_ref()
                .map_or_else(Vec::new, |s| s.levels.clone()),
        }),
        _ => None,
    };
    Ok(RunOutput {
        image: accumulated.image,
        colour,
        summary,
        tiles: accumulated.tiles,
        frames,
        used_frames,
        header: stack_header,
        to_reference: output_to_reference(&global, store.planes()),
        crop: None,
        saturation,
        sensor_border,
    })
}

/// The written grid relative to the reference frame ([`RunOutput::to_reference`]): the inverse of the
/// output geometry ([`GlobalSummary::base`]), in full-resolution pixels (a colour run in cell space,
/// four Bayer planes, measures its geometry in 2x2 cells; frames demosaiced one by one, R, G, B, in
/// pixels).
fn output_to_reference(global: &GlobalSummary, planes: usize) -> tlr_core::fits::PixelMap {
    let cell = if planes == tlr_core::bayer::PLANES {
        2.0
    } else {
        1.0
    };
    global
        .base
        .and_then(|base| tlr_core::global::output_to_reference(&base, cell))
        .unwrap_or(tlr_core::fits::PixelMap::IDENTITY)
}

/// Runs [`run`] on a runtime of its own, for callers without one. Blocks until the run ends.
///
/// # Errors
/// As [`run`]; also when the runtime cannot be built.
pub fn run_blocking(
    input: Input,
    options: PipelineOptions,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<RunOutput, StageError> {
    let workers = worker_count(&options.config).get();
    let runtime = build_runtime(workers).map_err(StageError::Runtime)?;
    runtime.block_on(run(input, options, events, cancel))
}

/// A multi-threaded runtime sized for `parallel_tiles` workers: two async threads (the stages only
/// await), and enough blocking threads for the workers plus the reader.
pub fn build_runtime(parallel_tiles: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(parallel_tiles + 2)
        .enable_all()
        .build()
}

/// Mono or colour for the run: the pattern the folder's frames decided ([`decide_sequence`]), or for
/// frames without headers (memory, an application's store) the configuration's: colour only when it
/// names a pattern. Wraps the store in cell space for colour.
fn colour_store(
    store: Arc<dyn FrameStore>,
    decided: Option<Option<tlr_core::bayer::CfaPattern>>,
    cfg: &Config,
    events: &EventSink,
) -> Result<(Arc<dyn FrameStore>, Option<tlr_core::bayer::CfaPattern>), StageError> {
    use tlr_core::bayer::{self, ColorMode};
    let pattern = match decided {
        Some(pattern) => pattern,
        None => match cfg.data.color_mode() {
            ColorMode::Bayer(p) => Some(p),
            ColorMode::Osc => {
                return Err(StageError::input(
                    Stage::Reader,
                    "data.color_mode is osc but frames from memory carry no BAYERPAT: set \
                     data.bayer_pattern",
                ))
            }
            ColorMode::Auto | ColorMode::Mono => None,
        },
    };
    let Some(pattern) = pattern else {
        return Ok((store, None));
    };
    let (rows, cols) = store.shape();
    if let (_, Some(message)) = bayer::even_size(rows, cols) {
        events(&Event::Warning { message });
    }
    let cells = ColourFrames::new(Arc::clone(&store), pattern)?;
    let fwhm = sampling_fwhm_cells(&cells);
    if fwhm < DEBAYER_BELOW_FWHM_CELLS {
        return Ok((
            Arc::new(DebayeredFrames::new(store, pattern)?),
            Some(pattern),
        ));
    }
    Ok((Arc::new(cells), Some(pattern)))
}

/// Frames [`sampling_fwhm_cells`] measures, at most, spread evenly over the sequence.
const SAMPLING_PROBE_FRAMES: usize = 5;
/// The cell-space window [`sampling_fwhm_cells`] measures, at most (centred), per side.
const SAMPLING_PROBE_CELLS: usize = 512;

/// The median star FWHM (cells) of a few frames spread over the sequence (the first, the last and
/// evenly between), each measured on the cell-space luminance of a central window with the global
/// pass's detector; frames without measurable stars (or unreadable: the global pass reports those)
/// do not count; NaN when none has any. Seeing changes from frame to frame: one frame is not enough
/// to tell (a 12-frame sequence of 1.4-px stars measured 1.74 cells on its first frame, 1.55 over five).
/// Cheap: one window of at most five frames.
pub(crate) fn sampling_fwhm_cells(cells: &ColourFrames) -> f32 {
    let (rows, cols) = cells.shape();
    let (h, w) = (
        rows.min(SAMPLING_PROBE_CELLS),
        cols.min(SAMPLING_PROBE_CELLS),
    );
    let (y0, x0) = ((rows - h) / 2, (cols - w) / 2);
    let window = [(y0..y0 + h, x0..x0 + w)];
    let options = tlr_core::global::GlobalOptions::default();
    let n = cells.len();
    let probes = SAMPLING_PROBE_FRAMES.min(n);
    let mut indices: Vec<usize> = (0..probes)
        .map(|k| {
            if probes > 1 {
                k * (n - 1) / (probes - 1)
            } else {
                0
            }
        })
        .collect();
    indices.dedup();
    let fwhms: Vec<f32> = indices
        .into_iter()
        .filter_map(|index| cells.read_regions(index, &window).ok()?.pop())
        .map(|lum| tlr_core::global::measure_frame(lum.view(), &options).fwhm)
        .filter(|fwhm| fwhm.is_finite())
        .collect();
    tlr_core::stats::median(&fwhms)
}

/// Rows above the first tile row's windows that a frame's whole-pixel global offset may add, for
/// [`top_rows_to_keep`].
const TOP_ROWS_SLACK: usize = 32;

/// How many top rows of every frame the global pass keeps for the first tile row: what the largest
/// tile (`tile.max_size`) plus its margins and some offset needs, at most what fits in `budget_bytes`
/// for all frames and planes (the first tile row's windows hold as much once read).
fn top_rows_to_keep(cfg: &Config, store: &dyn FrameStore, budget_bytes: usize) -> usize {
    let (_, cols) = store.shape();
    let row_bytes = store.len() * store.planes() * cols * std::mem::size_of::<f32>();
    let wanted = cfg.tile.max_size + 2 * cfg.tile.margin_px + TOP_ROWS_SLACK;
    wanted.min(budget_bytes / row_bytes.max(1))
}

/// A colour sequence whose star FWHM, measured on the cell-space luminance (a 2x2 binning, which puts a
/// floor of about 1.3 cells under it; [`sampling_fwhm_cells`]), is below this is demosaiced frame by
/// frame ([`DebayeredFrames`]) and registered and stacked at full resolution; above it the run works
/// on the four Bayer planes in cell space ([`ColourFrames`]) and demosaics once, at the end.
/// Measured cell FWHM of simulated RGGB sequences at 1.2 / 1.6 / 2.0 / 2.6 / 3.2 px: 1.34 / 1.40 /
/// 1.43 / 1.71 / 2.00; the M27 frames in `../shared/data`: 1.55. Why both: each Bayer plane samples
/// the sky every 2 px, so shifting the planes of undersampled stars (about one cell wide) blurs them
/// like a 2x2 binning (colour luminance FWHM 48 / 42 / 32 % wider than the mono result of the same
/// scene at 1.2 / 1.6 / 2.0 px, `fwhm_real.py`), while on well-sampled coloured stars the per-frame
/// demosaic's cross-colour estimates put colour fringes into their wings that the cell-space path
/// does not have (ring colour error of `stages/tests/colour.rs` 0.315 against 0.178).
pub(crate) const DEBAYER_BELOW_FWHM_CELLS: f32 = 1.6;

fn median_fwhm(global: &GlobalSummary) -> f32 {
    let values: Vec<f32> = global
        .frames
        .iter()
        .filter_map(|f| global.qualities[f.index].as_ref().map(|q| q.fwhm))
        .collect();
    tlr_core::stats::median(&values)
}

fn most_common_reason(tiles: &[TileSummary]) -> String {
    let reasons = tiles
        .iter()
        .filter(|t| !t.valid)
        .map(|t| t.invalid_reason.as_deref().unwrap_or("unknown"));
    tlr_core::select::most_common_by(reasons, |r| r)
        .map_or_else(|| "none".to_string(), |(r, n)| format!("{r} ({n} tiles)"))
}

/// One summary per frame; frames in `failed` (unreadable in the tile phase) are unused, weight 0.
fn frame_summaries(
    store: &dyn FrameStore,
    global: &GlobalSummary,
    failed: &[usize],
) -> Vec<FrameSummary> {
    (0..store.len())
        .map(|index| {
            let quality = global.qualities[index].as_ref();
            let used = global
                .frames
                .iter()
                .find(|f| f.index == index && !failed.contains(&index));
            FrameSummary {
                label: store.meta(index).label,
                used: used.is_some(),
                weight: used.map_or(0.0, |f| f.weight),
                background: quality.map(|q| q.background),
                noise: quality.map(|q| q.noise),
                fwhm_px: quality.map(|q| q.fwhm),
                stars: quality.map(|q| q.stars),
                shift: quality.map(|q| q.shift),
            }
        })
        .collect()
}
