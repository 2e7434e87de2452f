//! The live reader: owns the frame source (a followed folder or frames pushed by an application) and
//! every FITS read of frames, and runs the global pass frame by frame (weights, shift). It asks the
//! follower for the next complete frame only when it can send one, so frames that arrive faster than
//! they are processed wait on disk; the blocking send into the bounded channel is the back-pressure.
//! What it does not: reconstruct (the tile stage does) or publish.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::Array2;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::source::feed::FrameFeed;
use crate::source::follow::{FollowEvent, Follower};
use tlr_core::fits::{self};
use tlr_core::global::{FrameQuality, GlobalPass};
use tlr_core::live::{FrameFile, FrameKey};

use crate::error::StageError;
use crate::events::{Event, EventSink};

/// Where frames come from.
pub(super) enum Feed {
    Folder(Box<Follower>),
    /// An application's feed (pushed frames or its own [`FrameFeed`]), awaited on `runtime`.
    App {
        feed: Box<dyn FrameFeed>,
        runtime: tokio::runtime::Handle,
    },
}

/// A frame on its way from the reader to the tile stage.
pub(super) struct FrameMsg {
    pub(super) name: String,
    /// The frame file's identity (folder sessions), recorded in the checkpoint.
    pub(super) file: Option<FrameFile>,
    pub(super) image: Arc<Array2<f32>>,
    pub(super) quality: FrameQuality,
    /// This frame is the global pass's reference frame.
    pub(super) is_reference: bool,
    pub(super) arrival: Instant,
}

/// The reader: the frame source, FITS reads, the global pass. Returns the frames seen.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_frames(
    mut feed: Feed,
    reference: Option<Array2<f32>>,
    mut known: HashMap<FrameKey, String>,
    frame_tx: mpsc::Sender<FrameMsg>,
    events: EventSink,
    cancel: CancellationToken,
    until_idle: Option<Duration>,
    skipped: Arc<std::sync::Mutex<Vec<(PathBuf, String)>>>,
    mut calibrator: Option<crate::source::FrameCalibrator>,
) -> Result<usize, StageError> {
    let mut pass = GlobalPass::new();
    if let Some(image) = &reference {
        // A resumed session measures shifts against the same reference frame as before.
        let q = pass.add_frame(image.view());
        if !q.shift_ok {
            events(&Event::Warning {
                message: "the checkpoint's global reference frame has too few stars; \
                          the next good frame becomes the reference"
                    .to_string(),
            });
        }
    }
    let mut seen = 0usize;
    let mut pushed = 0usize;
    // The first frame decides mono or Bayer; a later frame of the other kind is refused.
    let mut colour = crate::source::SessionColour::default();
    let mut last_activity = Instant::now();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let next: Option<(String, Array2<f32>, Instant, Option<FrameFile>)> = match &mut feed {
            Feed::Folder(follower) => match follower.next(Duration::from_millis(200)) {
                Ok(Some(FollowEvent::Ready(header))) => {
                    let arrival = Instant::now();
                    let name = header
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_else(|| header.path.display().to_string());
                    last_activity = Instant::now();
                    let file = match FrameFile::of(&header.path) {
                        Ok(file) => file,
                        Err(e) => {
                            events(&Event::FrameRejected {
                                name,
                                reason: format!(
                                    "cannot read `{}`: {}",
                                    header.path.display(),
                                    tlr_core::report(&e)
                                ),
                            });
                            continue;
                        }
                    };
                    // The follower hands out each name once; a renamed frame comes under a new one.
                    if let Some(first) = known.get(&file.key()) {
                        events(&Event::FrameRejected {
                            name,
                            reason: format!(
                                "same frame as `{first}` (same size, time and header: renamed or \
                                 copied), which was used already"
                            ),
                        });
                        continue;
                    }
                    match colour.admit(&header) {
                        Ok(Some(message)) => events(&Event::Warning { message }),
                        Ok(None) => {}
                        Err(reason) => {
                            events(&Event::FrameRejected { name, reason });
                            continue;
                        }
                    }
                    match fits::read_image(&header.path) {
                        Ok((_, mut image)) => {
                            // Calibrated before anything else sees it (masters loaded once).
                            if let Some(calibrator) = &mut calibrator {
                                calibrator.calibrate(&header, &mut image, &events)?;
                            }
                            known.insert(file.key(), name.clone());
                            Some((name, image, arrival, Some(file)))
                        }
                        Err(e) => {
                            events(&Event::FrameRejected {
                                name,
                                reason: tlr_core::report(&e),
                            });
                            last_activity = Instant::now();
                            continue;
                        }
                    }
                }
                Ok(Some(FollowEvent::Skipped { path, reason })) => {
                    events(&Event::FrameRejected {
                        name: path.display().to_string(),
                        reason: reason.clone(),
                    });
                    if let Ok(mut s) = skipped.lock() {
                        s.push((path, reason));
                    }
                    continue;
                }
                Ok(None) => None,
                Err(e) => {
                    events(&Event::Warning {
                        message: tlr_core::report(&e),
                    });
                    None
                }
            },
            // This is a blocking thread of the runtime: it may wait for the application's feed.
            Feed::App { feed, runtime } => match runtime.block_on(async {
                tokio::select! {
                    frame = feed.next_frame() => frame,
                    () = cancel.cancelled() => None,
                }
            }) {
                Some(frame) => {
                    pushed += 1;
                    let name = frame.name.unwrap_or_else(|| format!("memory:{pushed}"));
                    Some((name, frame.image, frame.arrival, None))
                }
                // The feed ended (the application finished pushing) or the session was cancelled.
                None => break,
            },
        };
        let Some((name, image, arrival, file)) = next else {
            if let (Some(idle), Feed::Folder(f)) = (until_idle, &feed) {
                if last_activity.elapsed() >= idle && f.backlog() == 0 {
                    break;
                }
            }
            continue;
        };
        last_activity = Instant::now();
        seen += 1;
        events(&Event::FrameSeen {
            name: name.clone(),
            seen,
        });
        let before = pass.reference_index();
        let quality = pass.add_frame(image.view());
        let is_reference = before.is_none() && pass.reference_index().is_some();
        let msg = FrameMsg {
            name,
            file,
            image: Arc::new(image),
            quality,
            is_reference,
            arrival,
        };
        // The blocking send is the back-pressure: while the tiles are busy, new frames stay on disk.
        if frame_tx.blocking_send(msg).is_err() {
            break;
        }
    }
    // Dropping `frame_tx` closes the channel: the tile stage drains and finishes.
    Ok(seen)
}
