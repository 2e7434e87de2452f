//! The live publisher: owns the snapshot schedule (every N frames or at most every S seconds), writes
//! the snapshot (FITS, TIFF or PNG, as the output's extension says) and its PNG preview atomically,
//! keeps the latest snapshot readable in memory and measures latency from a frame's hand-out to the
//! first snapshot that includes it.
//! What it does not: blend (the tile stage sends the blended image) or decide what a frame is worth.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::{Array2, Array3, ArrayView3};
use tokio::sync::{mpsc, watch};

use tlr_core::export::{Export, ExportOptions};
use tlr_core::fits::{self, OutputMeta};

use super::tiles::Update;
use super::{LiveSettings, Schedule, Snapshot};
use crate::batch::ColourResult;
use crate::error::{Stage, StageError};
use crate::events::{Event, EventSink};
use crate::memory::rss_bytes;

/// What the publisher did over a session.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Snapshots published.
    pub(super) snapshots: usize,
    /// Largest latency from a frame's hand-out to the snapshot including it, s.
    pub(super) max_latency_s: f64,
    /// Mean such latency, s.
    pub(super) mean_latency_s: f64,
}

/// The publisher: snapshot schedule, atomic FITS + PNG, latency.
pub(super) async fn publish(
    settings: LiveSettings,
    mut update_rx: mpsc::Receiver<Update>,
    snap_tx: watch::Sender<Option<Snapshot>>,
    events: EventSink,
) -> Result<Published, StageError> {
    let mut latest: Option<Update> = None;
    // Arrival times of frames not yet in a published snapshot (bounded by the schedule).
    let mut pending: Vec<Instant> = Vec::new();
    let mut last_publish = Instant::now();
    let mut frames_since = 0usize;
    let mut snapshots = 0usize;
    let mut max_latency = 0.0f64;
    let mut latency_sum = 0.0f64;
    let mut latency_n = 0usize;
    let mut published_frames = usize::MAX;
    loop {
        let tick = match settings.schedule {
            Schedule::Every(d) => d.saturating_sub(last_publish.elapsed()),
            Schedule::Frames(_) => Duration::from_secs(3600),
        };
        let received = tokio::select! {
            u = update_rx.recv() => Some(u),
            () = tokio::time::sleep(tick) => None,
        };
        let closed = matches!(received, Some(None));
        let mut force = false;
        if let Some(Some(update)) = received {
            if update.used && !update.force {
                pending.push(update.arrival);
                frames_since += 1;
            }
            force = update.force;
            latest = Some(update);
        }
        let due = force
            || match settings.schedule {
                Schedule::Frames(n) => frames_since >= n.get(),
                Schedule::Every(d) => frames_since > 0 && last_publish.elapsed() >= d,
            };
        if (due || closed) && latest.is_some() {
            let Some(update) = latest.as_ref() else {
                continue;
            };
            if update.frames_used != published_frames {
                published_frames = update.frames_used;
                let path = publish_one(&settings, update, &snap_tx).await?;
                let now = Instant::now();
                let lat: Vec<f64> = pending
                    .iter()
                    .map(|a| now.duration_since(*a).as_secs_f64())
                    .collect();
                let newest = lat.iter().copied().fold(f64::INFINITY, f64::min);
                let oldest = lat.iter().copied().fold(0.0f64, f64::max);
                latency_sum += lat.iter().sum::<f64>();
                latency_n += lat.len();
                max_latency = max_latency.max(oldest);
                snapshots += 1;
                events(&Event::Snapshot {
                    path,
                    frames_used: update.frames_used,
                    latency_s: if newest.is_finite() { newest } else { 0.0 },
                    max_latency_s: oldest,
                    resident_mib: rss_bytes().map(|b| b >> 20),
                });
            }
            pending.clear();
            frames_since = 0;
            last_publish = Instant::now();
        }
        if closed {
            break;
        }
    }
    let mean = if latency_n > 0 {
        latency_sum / latency_n as f64
    } else {
        0.0
    };
    Ok(Published {
        snapshots,
        max_latency_s: max_latency,
        mean_latency_s: mean,
    })
}

async fn publish_one(
    settings: &LiveSettings,
    update: &Update,
    snap_tx: &watch::Sender<Option<Snapshot>>,
) -> Result<Option<PathBuf>, StageError> {
    let Some(image) = update.image.clone() else {
        return Ok(None);
    };
    let output = settings.output.clone();
    let frames_used = update.frames_used;
    let digest = settings.config.digest();
    let export = settings.export;
    let planes = update.planes.clone();
    // Writing is blocking I/O (and PNG encoding CPU work; demosaicing cell-space planes too).
    let (image, rgb, written) = tokio::task::spawn_blocking(move || {
        let colour = planes.map(|(planes, colour)| ColourResult {
            pattern: colour.pattern,
            planes: Arc::unwrap_or_clone(planes),
            // Live does not measure saturation levels: the plain demosaic.
            levels: Vec::new(),
        });
        let rgb = match &colour {
            Some(c) => match c.rgb() {
                Ok(rgb) => Some(Arc::new(rgb)),
                Err(e) => {
                    let path = output.clone().unwrap_or_default();
                    return (image, None, Err(demosaic_error(&path, &e)));
                }
            },
            None => None,
        };
        let written = match &output {
            Some(path) => {
                let snapshot = SnapshotFile {
                    frames_used,
                    config_digest: &digest,
                    export: &export,
                };
                match (&colour, &rgb) {
                    (Some(colour), Some(rgb)) => snapshot.write_rgb(path, rgb, colour),
                    _ => snapshot.write(path, &image),
                }
                .map(|()| Some(path.clone()))
            }
            None => Ok(None),
        };
        (image, rgb, written)
    })
    .await
    .map_err(|source| StageError::Join {
        stage: Stage::Publisher,
        source,
    })?;
    let written = written?;
    snap_tx.send_replace(Some(Snapshot {
        image,
        frames_used,
        rgb,
    }));
    Ok(written)
}

fn demosaic_error(path: &Path, e: &tlr_core::bayer::BayerError) -> StageError {
    StageError::Output {
        path: path.to_path_buf(),
        message: format!("demosaicing the snapshot: {}", tlr_core::report(e)),
    }
}

/// What a snapshot file says besides its pixels.
struct SnapshotFile<'a> {
    frames_used: usize,
    config_digest: &'a str,
    export: &'a ExportOptions,
}

impl SnapshotFile<'_> {
    fn meta(&self) -> OutputMeta {
        OutputMeta::tlr_output("live")
            .with_card(
                "NCOMBINE",
                fits::CardValue::Int(self.frames_used as i64),
                "frames in this live snapshot",
            )
            .with_history(&format!(
                "tlr live snapshot, config digest {}",
                self.config_digest
            ))
    }

    /// A mono snapshot ([`write_snapshot`]).
    fn write(&self, path: &Path, image: &Array2<f32>) -> Result<(), StageError> {
        self.write_planes(
            path,
            image.view().insert_axis(ndarray::Axis(0)),
            &self.meta(),
        )?;
        let png = crate::output::preview_path(path);
        tlr_core::preview::write_png_preview_atomic(&png, image.view())
            .map_err(|e| output_error(&png, &e))
    }

    /// A Bayer session's snapshot: the RGB image `rgb` of `colour`, with the colour cards of a batch
    /// result and a colour preview.
    fn write_rgb(
        &self,
        path: &Path,
        rgb: &Array3<f32>,
        colour: &ColourResult,
    ) -> Result<(), StageError> {
        let mut meta = self.meta();
        crate::output::colour_meta(&mut meta, colour);
        self.write_planes(path, rgb.view(), &meta)?;
        let png = crate::output::preview_path(path);
        tlr_core::preview::write_rgb_png_preview_atomic(&png, rgb.view())
            .map_err(|e| output_error(&png, &e))
    }

    /// The file in `path`'s format, pixels without data as 0 (the border policy of `tlr run`).
    fn write_planes(
        &self,
        path: &Path,
        planes: ArrayView3<f32>,
        meta: &OutputMeta,
    ) -> Result<(), StageError> {
        let filled = crate::output::filled(planes);
        Export::for_path(path, self.export)
            .and_then(|export| tlr_core::export::write_atomic(path, filled.view(), &export, meta))
            .map_err(|e| output_error(path, &e))
    }
}

fn output_error(path: &Path, e: &(dyn std::error::Error + 'static)) -> StageError {
    StageError::Output {
        path: path.to_path_buf(),
        message: tlr_core::report(e),
    }
}

/// Writes the snapshot (FITS, TIFF or PNG as `path`'s extension says, with `export`'s samples and
/// scaling; pixels without data as 0, as `tlr run` writes them) and its PNG preview
/// ([`crate::output::preview_path`]), each atomically (temporary file + rename). A Bayer session's
/// snapshot is written by the publisher as RGB.
///
/// # Errors
/// [`StageError::Output`] naming the file (also for an extension of no format).
pub fn write_snapshot(
    path: &Path,
    image: &Array2<f32>,
    frames_used: usize,
    config_digest: &str,
    export: &ExportOptions,
) -> Result<(), StageError> {
    SnapshotFile {
        frames_used,
        config_digest,
        export,
    }
    .write(path, image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot follows `tlr run`'s border policy: no NaN in the file, every finite pixel as it was.
    #[test]
    fn snapshots_write_pixels_without_data_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.fits");
        let mut image = Array2::from_shape_fn((6, 7), |(r, c)| 100.0 + (r * 7 + c) as f32);
        image[[0, 0]] = f32::NAN;
        image[[5, 6]] = f32::NAN;
        write_snapshot(&path, &image, 3, "digest", &Default::default()).unwrap();
        let (_, back) = fits::read_image(&path).unwrap();
        assert_eq!((back[[0, 0]], back[[5, 6]]), (0.0, 0.0));
        for ((r, c), v) in image.indexed_iter().filter(|(_, v)| v.is_finite()) {
            assert_eq!(back[[r, c]].to_bits(), v.to_bits());
        }
    }
}
