//! The live reader: owns the frame source (a followed folder or frames pushed by an application) and
//! every FITS read of frames, and runs the global pass frame by frame (weights, shift). It asks the
//! follower for the next complete frame only when it can send one, so frames that arrive faster than
//! they are processed wait on disk; the blocking send into the bounded channel is the back-pressure.
//! Bayer frames: the route of the session (frames demosaiced one by one or Bayer planes in cell
//! space) is decided from its first `bootstrap_frames` frames, held until then (compactly), with the
//! batch run's rule (`super::colour::decide`), or taken from the checkpoint; every frame then goes
//! on as its planes, measured through their luminance.
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
use tlr_core::bayer::CfaPattern;
use tlr_core::fits::{self};
use tlr_core::global::{GlobalFrame, GlobalPass};
use tlr_core::live::{CompactImage, FrameFile, FrameKey, LiveColour};

use super::colour::{decide, frame_planes, ColourFrame, CompactFrames};
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
    /// What the global pass measured (quality and linear geometry).
    pub(super) measured: GlobalFrame,
    /// This frame is the global pass's reference frame.
    pub(super) is_reference: bool,
    pub(super) arrival: Instant,
    /// Bayer sessions: the frame's planes (`image` is then their luminance).
    pub(super) colour: Option<ColourFrame>,
}

/// How the reader treats colour: what resolves a frame's mode, the session's colour once known
/// (`None` until decided, or for mono), and the frames that wait for the decision.
pub(super) struct ReaderColour {
    /// Decides each frame's mode (header and configuration) and keeps it to the session's.
    pub(super) session: crate::source::SessionColour,
    /// Frames without a header (pushed, fed): their pattern, from the configuration.
    pub(super) configured: Option<CfaPattern>,
    /// The session's colour (from a checkpoint, or once decided).
    pub(super) colour: Option<LiveColour>,
    /// Frames that decide the route.
    pub(super) bootstrap_frames: usize,
}

/// A Bayer frame waiting for the session's route: name, arrival, file, pixels.
type Waiting = (String, Instant, Option<FrameFile>, CompactImage);

/// The global pass and the send to the tile stage, for mono and colour frames.
struct Emitter {
    pass: GlobalPass,
    frame_tx: mpsc::Sender<FrameMsg>,
    events: EventSink,
    seen: usize,
    colour: Option<LiveColour>,
    waiting: Vec<Waiting>,
    decide_after: usize,
    /// Frames the tile stage bootstraps from (their mosaics go with them): the first ones of a
    /// session that does not resume a checkpoint.
    bootstrap_left: usize,
}

impl Emitter {
    /// Takes a frame of mode `pattern`: Bayer frames wait until the route is decided. `false` when
    /// the tile stage has gone.
    fn frame(
        &mut self,
        (name, image, arrival, file): (String, Array2<f32>, Instant, Option<FrameFile>),
        pattern: Option<CfaPattern>,
    ) -> Result<bool, StageError> {
        match (pattern, self.colour) {
            (Some(pattern), None) => {
                self.waiting
                    .push((name, arrival, file, CompactImage::new(image)));
                if self.waiting.len() < self.decide_after {
                    return Ok(true);
                }
                self.decide(pattern)
            }
            _ => self.send(name, image, arrival, file),
        }
    }

    /// Decides the route from the waiting frames (the batch run's rule) and sends them on.
    fn decide(&mut self, pattern: CfaPattern) -> Result<bool, StageError> {
        if self.waiting.is_empty() {
            return Ok(true);
        }
        let waiting = std::mem::take(&mut self.waiting);
        let (meta, images): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .map(|(n, a, f, image)| ((n, a, f), image))
            .unzip();
        let images = Arc::new(images);
        let store = CompactFrames::new(Arc::clone(&images), |image| image);
        self.colour = Some(decide(Arc::new(store), pattern)?);
        // The decision's stores are gone: the images are this reader's again.
        let images = Arc::try_unwrap(images).unwrap_or_else(|shared| shared.as_ref().clone());
        for ((name, arrival, file), image) in meta.into_iter().zip(images) {
            if !self.send(name, image.to_f32(), arrival, file)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Frames still waiting at the end of the input: decided on what there is.
    fn finish(&mut self, pattern: Option<CfaPattern>) -> Result<(), StageError> {
        if let Some(pattern) = pattern {
            self.decide(pattern)?;
        }
        Ok(())
    }

    /// Measures the frame (a colour frame through its planes' luminance) and sends it on.
    fn send(
        &mut self,
        name: String,
        image: Array2<f32>,
        arrival: Instant,
        file: Option<FrameFile>,
    ) -> Result<bool, StageError> {
        let (image, colour) = match self.colour {
            Some(colour) => match frame_planes(image, colour, self.bootstrap_left > 0) {
                Ok((luminance, frame)) => (luminance, Some(frame)),
                Err(e) => {
                    (self.events)(&Event::FrameRejected {
                        name,
                        reason: crate::error::report(&e),
                    });
                    return Ok(true);
                }
            },
            None => (Arc::new(image), None),
        };
        self.seen += 1;
        self.bootstrap_left = self.bootstrap_left.saturating_sub(1);
        (self.events)(&Event::FrameSeen {
            name: name.clone(),
            seen: self.seen,
        });
        let before = self.pass.reference_index();
        let measured = self.pass.add_frame_detailed(image.view());
        let is_reference = before.is_none() && self.pass.reference_index().is_some();
        let msg = FrameMsg {
            name,
            file,
            image,
            measured,
            is_reference,
            arrival,
            colour,
        };
        // The blocking send is the back-pressure: while the tiles are busy, new frames stay on disk.
        Ok(self.frame_tx.blocking_send(msg).is_ok())
    }
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
    colour: ReaderColour,
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
    let mut pushed = 0usize;
    // The first frame decides mono or Bayer; a later frame of the other kind is refused.
    // A session that resumes a checkpoint has decided its colour and needs no bootstrap.
    let resumed = reference.is_some() || colour.colour.is_some();
    let ReaderColour {
        session: mut admitted,
        configured,
        colour,
        bootstrap_frames,
    } = colour;
    let mut emitter = Emitter {
        pass,
        frame_tx,
        events: Arc::clone(&events),
        seen: 0,
        colour,
        waiting: Vec::new(),
        decide_after: bootstrap_frames.max(1),
        bootstrap_left: if resumed { 0 } else { bootstrap_frames.max(1) },
    };
    let mut pattern: Option<CfaPattern> = None;
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
                    match admitted.admit(&header) {
                        Ok(p) => pattern = p,
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
                    pattern = configured;
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
        if !emitter.frame((name, image, arrival, file), pattern)? {
            break;
        }
    }
    // A short session: the frames still waiting for the route decide it.
    emitter.finish(pattern)?;
    // Dropping `frame_tx` (with the emitter) closes the channel: the tile stage drains and finishes.
    Ok(emitter.seen)
}
