//! The live tile stage: owns the [`LiveState`]; bootstraps the first frames through the batch operator
//! on the worker pool, then sends every frame through all tiles on the same pool
//! ([`crate::batch::workers::Pool`]) and blends each tile's new image in tile order as it comes back
//! ([`crate::batch::accumulator::Blend`], the incremental accumulator); writes the checkpoint.
//! What it does not: read files (the reader does) or write snapshots (the publisher does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ndarray::Array2;
use tokio::sync::mpsc;

use tlr_core::live::{
    self as core_live, BootstrapFrame, BootstrapPlan, CheckpointSource, ColourBootstrap,
    CompactImage, FrameFile, LiveColour, LiveOptions, LiveState, LiveTile,
};
use tlr_core::operator::FrameReport;
use tlr_core::select::MAX_PLANES;
use tlr_core::TileBox;

use super::colour::ColourFrame;
use super::reader::FrameMsg;
use super::LiveSettings;
use crate::batch::accumulator::Blend;
use crate::batch::workers::Pool;
use crate::error::{Stage, StageError};
use crate::events::{Event, EventSink};

/// A frame's outcome on its way to the publisher, with the blended reconstruction.
pub(super) struct Update {
    pub(super) used: bool,
    /// Publish at once, whatever the schedule (the state loaded from a checkpoint).
    pub(super) force: bool,
    pub(super) frames_used: usize,
    pub(super) arrival: Instant,
    pub(super) image: Option<Arc<Array2<f32>>>,
    /// Colour sessions: the blended planes and the session's colour.
    pub(super) planes: Option<(Arc<ndarray::Array3<f32>>, LiveColour)>,
}

type TileOutcome = (
    LiveTile,
    (FrameReport, usize),
    Array2<f32>,
    Vec<Array2<f32>>,
    f32,
);

/// What the tile stage did over a session.
#[derive(Debug, Default)]
pub(super) struct TileStageOutcome {
    /// Names of all frames used, checkpointed sessions included.
    pub(super) used: Vec<String>,
    /// Names of all frames rejected as a whole.
    pub(super) rejected: Vec<String>,
    /// Time spent processing frames after the bootstrap, s.
    pub(super) busy_s: f64,
    /// Frames processed after the bootstrap.
    pub(super) processed: usize,
}

/// The tile stage (incremental state + ordered accumulator): bootstrap, then every frame through all
/// tiles, each tile's new image blended in tile order as it comes back.
pub(super) async fn run_tiles(
    mut state: Option<LiveState>,
    source: CheckpointSource,
    options: LiveOptions,
    settings: LiveSettings,
    mut frame_rx: mpsc::Receiver<FrameMsg>,
    update_tx: mpsc::Sender<Update>,
    events: EventSink,
) -> Result<TileStageOutcome, StageError> {
    let mut boot: Vec<BootstrapFrame> = Vec::new();
    let mut boot_arrivals: Vec<Instant> = Vec::new();
    let mut boot_files: Vec<FrameFile> = Vec::new();
    // Colour sessions: the bootstrap frames' colour and plane backgrounds.
    let mut boot_colour: Option<ColourBootstrap> = None;
    // The global pass's reference frame, kept only until a checkpoint has saved it.
    let mut global_reference: Option<Arc<Array2<f32>>> = None;
    let mut since_checkpoint = 0usize;
    let mut busy = Duration::ZERO;
    let mut processed = 0usize;
    let workers = settings.parallel_tiles();
    let pool = Pool::new(workers, workers.get());
    let sigma = options.params.variance_window_sigma;
    if let Some(st) = state.take() {
        // A resumed session publishes the checkpoint's state at once, so the published result is
        // never older than the checkpoint (a hard kill may have happened between the two).
        let (st, update) = full_update(st, Instant::now(), true).await?;
        state = Some(st);
        if update_tx.send(update).await.is_err() {
            return Ok(TileStageOutcome::default());
        }
    }
    while let Some(mut msg) = frame_rx.recv().await {
        if msg.is_reference && settings.checkpoint.is_some() {
            global_reference = Some(Arc::clone(&msg.image));
        }
        let Some(mut st) = state.take() else {
            // A colour frame is kept as its raw mosaic (its planes are read from it per tile).
            let kept = match msg.colour.take() {
                Some(ColourFrame {
                    colour,
                    mosaic: Some(mosaic),
                    backgrounds,
                    ..
                }) => {
                    let c = boot_colour.get_or_insert_with(|| ColourBootstrap {
                        colour,
                        backgrounds: Vec::new(),
                    });
                    c.backgrounds.push(Some(backgrounds));
                    mosaic
                }
                Some(_) => {
                    // The reader sends the mosaic with the first frames of a session (cannot happen).
                    events(&Event::FrameRejected {
                        name: msg.name,
                        reason: "a bootstrap frame came without its mosaic".to_string(),
                    });
                    continue;
                }
                None => msg.image,
            };
            boot_files.extend(msg.file.take());
            boot.push(BootstrapFrame {
                name: msg.name,
                // Compact (u16 for camera counts): bootstrap frames are the only frames kept.
                image: match Arc::try_unwrap(kept) {
                    Ok(image) => CompactImage::new(image),
                    // Shared with `global_reference`: converted without an f32 copy.
                    Err(shared) => CompactImage::from_view(shared.view()),
                },
                quality: msg.measured.quality,
                transform: msg.measured.transform,
            });
            boot_arrivals.push(msg.arrival);
            if boot.len() >= options.bootstrap_frames {
                let frames = std::mem::take(&mut boot);
                let (mut st, reports) =
                    bootstrap(frames, boot_colour.take(), options, &pool).await?;
                adopt(&mut st, &source, &mut boot_files);
                for r in &reports {
                    report_event(&events, r);
                }
                events(&Event::Bootstrapped {
                    frames: reports.len(),
                    tile_size_px: st.tile_px(),
                    tiles: st.tiles().len(),
                });
                let arrival = boot_arrivals.drain(..).min().unwrap_or_else(Instant::now);
                let (st, update) = full_update(st, arrival, false).await?;
                if update_tx.send(update).await.is_err() {
                    state = Some(st);
                    break;
                }
                // The bootstrap is the most expensive step: checkpoint it at once.
                since_checkpoint = 0;
                state = Some(checkpoint(st, &settings, &mut global_reference, &events).await?);
            }
            continue;
        };
        // Recorded before the frame is processed: checkpoints are written between frames only.
        st.source_mut().frames.extend(msg.file.take());
        let t0 = Instant::now();
        if msg.colour.as_ref().map(|c| c.colour) != st.colour() {
            events(&Event::FrameRejected {
                name: msg.name.clone(),
                reason: "its colour mode differs from the session's".to_string(),
            });
            state = Some(st);
            continue;
        }
        let backgrounds = msg.colour.as_ref().map(|c| c.backgrounds);
        let plan = match st.plan_planes(&msg.name, &msg.measured, backgrounds) {
            Ok(plan) => plan,
            Err(reason) => {
                events(&Event::FrameRejected {
                    name: msg.name.clone(),
                    reason,
                });
                state = Some(st);
                continue;
            }
        };
        if msg.image.dim() != st.dim() {
            events(&Event::FrameRejected {
                name: msg.name.clone(),
                reason: format!(
                    "size {:?} differs from the session's {:?}",
                    msg.image.dim(),
                    st.dim()
                ),
            });
            state = Some(st);
            continue;
        }
        let plan_for_tiles = plan.clone();
        let margin = options.margin_px;
        let tiles = st.take_tiles();
        let boxes: Vec<TileBox> = tiles.iter().map(|t| *t.tile()).collect();
        let image = Arc::clone(&msg.image);
        drop(msg.image);
        // Colour: the frame's planes (the mosaic is not needed after the bootstrap).
        let planes = msg.colour.take().map(|c| c.planes);
        let shift = plan.shift;
        let scales: [f32; MAX_PLANES] = plan.plane_scales;
        // One job per tile on the worker pool; results come back in tile order and each tile's image
        // goes into the blend as soon as it is its turn (no copies are kept).
        let mut outcomes = Box::pin(pool.ordered(
            stream::iter(tiles),
            move |mut tile: LiveTile| {
                let input = plan_for_tiles.input(tile.tile());
                let r = match &planes {
                    Some(planes) => {
                        let cut =
                            core_live::cutout_planes(planes.view(), tile.tile(), margin, shift);
                        let n = cut.dim().0.min(MAX_PLANES);
                        tile.add_frame_planes(cut.view(), &scales[..n], &input, &options)
                    }
                    None => {
                        let cut = core_live::cutout(image.view(), tile.tile(), margin, shift);
                        tile.add_frame(cut.view(), &input, &options)
                    }
                };
                let current = tile.current();
                let current_planes = tile.current_planes();
                let var = tile.warp_variance();
                (tile, r, current, current_planes, var)
            },
        ));
        let (rows, cols) = st.dim();
        let colour = st.colour();
        let mut blend = Blend::new(
            rows,
            cols,
            &boxes,
            colour.map_or(0, |c| c.route.planes()),
            sigma,
        );
        let mut tiles = Vec::with_capacity(boxes.len());
        let mut reports = Vec::with_capacity(boxes.len());
        while let Some(outcome) = outcomes.next().await {
            let (tile, r, current, current_planes, var): TileOutcome = outcome?;
            blend.add(tile.tile(), current.view(), &current_planes, blend.psi(var));
            tiles.push(tile);
            reports.push(r);
        }
        drop(outcomes);
        let report = st.put_tiles(tiles, &plan, &reports);
        report_event(&events, &report);
        let (blended, blended_planes) = tokio::task::spawn_blocking(move || blend.finish())
            .await
            .map_err(|source| StageError::Join {
                stage: Stage::Tiles,
                source,
            })??;
        busy += t0.elapsed();
        processed += 1;
        let update = Update {
            used: report.tiles_used > 0,
            force: false,
            frames_used: st.frames_used().len(),
            arrival: msg.arrival,
            image: Some(Arc::new(blended)),
            planes: blended_planes.zip(colour).map(|(p, c)| (Arc::new(p), c)),
        };
        if update_tx.send(update).await.is_err() {
            state = Some(st);
            break;
        }
        since_checkpoint += 1;
        if since_checkpoint >= settings.checkpoint_every.get() {
            since_checkpoint = 0;
            st = checkpoint(st, &settings, &mut global_reference, &events).await?;
        }
        state = Some(st);
    }
    // Input closed: bootstrap with what there is (a short session), then the final checkpoint.
    if state.is_none() && !boot.is_empty() {
        // The same rule and warning as a short batch run: the bootstrap caps min_valid_frames at the
        // frames there are.
        if let Some(message) =
            tlr_core::config::few_frames_warning(boot.len(), options.params.min_valid_frames)
        {
            events(&Event::Warning { message });
        }
        let frames = std::mem::take(&mut boot);
        match bootstrap(frames, boot_colour.take(), options, &pool).await {
            Ok((mut st, reports)) => {
                adopt(&mut st, &source, &mut boot_files);
                for r in &reports {
                    report_event(&events, r);
                }
                let arrival = boot_arrivals.drain(..).min().unwrap_or_else(Instant::now);
                let (st, update) = full_update(st, arrival, false).await?;
                state = Some(st);
                let _ = update_tx.send(update).await;
            }
            Err(e) => events(&Event::Warning {
                message: format!("{}; nothing was reconstructed", tlr_core::report(&e)),
            }),
        }
    }
    let Some(mut st) = state else {
        return Ok(TileStageOutcome {
            busy_s: busy.as_secs_f64(),
            processed,
            ..TileStageOutcome::default()
        });
    };
    if settings.checkpoint.is_some() {
        st = checkpoint(st, &settings, &mut global_reference, &events).await?;
    }
    // Dropping `update_tx` closes the channel: the publisher writes the final snapshot.
    Ok(TileStageOutcome {
        used: st.frames_used().to_vec(),
        rejected: st.frames_rejected().to_vec(),
        busy_s: busy.as_secs_f64(),
        processed,
    })
}

/// Gives a freshly bootstrapped state this session's source and the bootstrap frames' files.
fn adopt(st: &mut LiveState, source: &CheckpointSource, files: &mut Vec<FrameFile>) {
    *st.source_mut() = CheckpointSource {
        frames: std::mem::take(files),
        ..source.clone()
    };
}

/// Bootstraps on the worker pool: the frame-level plan, then one job per tile, assembled in tile order (identical to the serial [`LiveState::bootstrap`]).
/// A colour bootstrap reads each tile's planes from the frames' raw mosaics through the batch store of
/// its route (only the tile's region is demosaiced or split).
async fn bootstrap(
    frames: Vec<BootstrapFrame>,
    colour: Option<ColourBootstrap>,
    options: LiveOptions,
    pool: &Pool,
) -> Result<(LiveState, Vec<core_live::LiveFrameReport>), StageError> {
    let frames = Arc::new(frames);
    let route = colour.as_ref().map(|c| c.colour);
    let plan = BootstrapPlan::new_colour(&frames, options, colour)
        .map_err(|e| StageError::live(Stage::Tiles, e))?;
    let plan = Arc::new(plan);
    let store = match route {
        Some(c) => Some(super::colour::route_store(
            Arc::new(super::colour::CompactFrames::new(
                Arc::clone(&frames),
                |f: &BootstrapFrame| &f.image,
            )),
            c,
        )?),
        None => None,
    };
    let tiles = {
        let (plan, frames) = (Arc::clone(&plan), Arc::clone(&frames));
        let margin = options.margin_px;
        pool.ordered(stream::iter(0..plan.tiles().len()), move |k| match &store {
            Some(store) => plan.bootstrap_tile_planes(k, &frames, |i, tile, shift, out| {
                super::colour::cut_bootstrap_planes(store.as_ref(), i, (tile, margin, shift), out)
            }),
            None => plan.bootstrap_tile(k, &frames),
        })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<(LiveTile, Vec<FrameReport>)>, StageError>>()?
    };
    // The bootstrap frames are not needed any more.
    drop(frames);
    tokio::task::spawn_blocking(move || plan.finish(tiles))
        .await
        .map_err(|source| StageError::Join {
            stage: Stage::Tiles,
            source,
        })
}

/// Blends the state's tiles (on a blocking thread) into an update for the publisher.
async fn full_update(
    st: LiveState,
    arrival: Instant,
    force: bool,
) -> Result<(LiveState, Update), StageError> {
    let (st, image, planes) = tokio::task::spawn_blocking(move || {
        let image = st.snapshot();
        let planes = st.snapshot_planes();
        (st, image, planes)
    })
    .await
    .map_err(|source| StageError::Join {
        stage: Stage::Tiles,
        source,
    })?;
    let update = Update {
        used: true,
        force,
        frames_used: st.frames_used().len(),
        arrival,
        image: Some(Arc::new(image)),
        planes: planes.zip(st.colour()).map(|(p, c)| (Arc::new(p), c)),
    };
    Ok((st, update))
}

/// Writes the checkpoint (when the session has one) on a blocking thread; the global reference frame
/// is handed over once and dropped after it was saved.
async fn checkpoint(
    mut st: LiveState,
    settings: &LiveSettings,
    reference: &mut Option<Arc<Array2<f32>>>,
    events: &EventSink,
) -> Result<LiveState, StageError> {
    let Some(dir) = settings.checkpoint.clone() else {
        return Ok(st);
    };
    let d = dir.clone();
    let image = reference.take();
    // Writing the checkpoint is blocking I/O.
    let (st, image, result) = tokio::task::spawn_blocking(move || {
        let r = st.save(&d, image.as_ref().map(|a| a.view()));
        (st, image, r)
    })
    .await
    .map_err(|source| StageError::Join {
        stage: Stage::Checkpoint,
        source,
    })?;
    if result.is_err() {
        // Not saved: keep it for the next attempt.
        *reference = image;
    }
    result.map_err(|e| StageError::live(Stage::Checkpoint, e))?;
    events(&Event::Checkpoint {
        dir,
        frames_used: st.frames_used().len(),
    });
    Ok(st)
}

fn report_event(events: &EventSink, r: &core_live::LiveFrameReport) {
    if r.tiles_used > 0 {
        events(&Event::FrameUsed {
            name: r.name.clone(),
            tiles_used: r.tiles_used,
            tiles_rejected: r.tiles_rejected,
            pixels_rejected: r.pixels_rejected,
            reason: r.reason.clone(),
        });
    } else {
        events(&Event::FrameRejected {
            name: r.name.clone(),
            reason: r
                .reason
                .clone()
                .unwrap_or_else(|| "no tile used it".to_string()),
        });
    }
}
