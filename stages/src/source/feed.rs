//! Frames an application hands to a live session one at a time from its own capture loop.
//!
//! [`FrameFeed`] is the source a capture program implements: the session awaits
//! [`FrameFeed::next_frame`] whenever it can take a frame, so a camera that delivers faster than
//! frames are processed is held back by the application, not queued without bound. It is an async
//! trait object (`Box<dyn FrameFeed>`, through `async-trait`), because an application awaits its camera
//! and the session must hold feeds of any type. [`PushedFrames`] is the feed behind
//! [`crate::live::LiveSession::push`]: a bounded channel the application pushes into.
//!
//! What it does not: read files (a followed folder is [`super::follow::Follower`]) or check frames
//! (the live reader measures them and reports what it cannot use).

use std::time::Instant;

use async_trait::async_trait;
use ndarray::Array2;
use tokio::sync::mpsc;

/// One frame from a [`FrameFeed`].
#[derive(Debug, Clone)]
pub struct FedFrame {
    /// A name for events and the checkpoint's frame list; `None` = `memory:<n>` (n counts from 1).
    pub name: Option<String>,
    /// The pixels, in camera units (all frames of a session have one size).
    pub image: Array2<f32>,
    /// When the frame was handed over: a snapshot's latency is measured from here.
    pub arrival: Instant,
}

impl FedFrame {
    /// An unnamed frame handed over now.
    pub fn new(image: Array2<f32>) -> Self {
        Self {
            name: None,
            image,
            arrival: Instant::now(),
        }
    }

    /// A named frame handed over now.
    pub fn named(name: impl Into<String>, image: Array2<f32>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::new(image)
        }
    }
}

/// A source of frames for a live session, in time order.
///
/// ```
/// use tlr::source::feed::{FedFrame, FrameFeed};
///
/// /// A "camera" that delivers three flat frames.
/// struct Camera(usize);
///
/// #[async_trait::async_trait]
/// impl FrameFeed for Camera {
///     async fn next_frame(&mut self) -> Option<FedFrame> {
///         (self.0 < 3).then(|| {
///             self.0 += 1;
///             FedFrame::named(format!("exposure {}", self.0), ndarray::Array2::zeros((64, 64)))
///         })
///     }
/// }
/// // `LiveSession::start_feed(Box::new(Camera(0)), settings, events)` runs a session on it.
/// ```
#[async_trait]
pub trait FrameFeed: Send {
    /// The next frame, or `None` when the capture has ended (the session then finishes: final
    /// snapshot and checkpoint). Called again only after the previous frame was taken.
    async fn next_frame(&mut self) -> Option<FedFrame>;
}

/// The feed of [`crate::live::LiveSession::push`]: frames pushed into a bounded channel; it ends when
/// the pushing side is closed.
pub struct PushedFrames(pub(crate) mpsc::Receiver<FedFrame>);

#[async_trait]
impl FrameFeed for PushedFrames {
    async fn next_frame(&mut self) -> Option<FedFrame> {
        self.0.recv().await
    }
}
