//! What a finished run or session reports: the figures of a batch run ([`RunSummary`]), one entry per
//! frame ([`FrameSummary`]) and per tile ([`TileSummary`]), and the figures of a live session
//! ([`LiveSummary`]). The CLI prints them, the JSON events carry them, the tile report is written from
//! them.
//!
//! Paths are serialized as text with bytes that are not UTF-8 replaced by U+FFFD ([`lossy_path`]): a
//! frame named `bad\xff.fits` must not make its event unserializable (the checkpoint keeps names
//! exactly). What it does not: compute anything; the stages fill these in.

use std::path::PathBuf;

use serde::Serialize;

use tlr_core::operator::FrameReport;
use tlr_core::{Shift, TileBox};

use crate::settings::Registration;

/// Figures of a finished run (also the JSON summary of the CLI).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Frames found.
    pub frames_total: usize,
    /// Frames that took part in the reconstruction.
    pub frames_used: usize,
    /// Frames left out (with reasons in the events / report).
    pub frames_skipped: usize,
    /// Tiles in the grid.
    pub tiles_total: usize,
    /// Tiles reconstructed.
    pub tiles_valid: usize,
    /// Tile size, px.
    pub tile_size_px: usize,
    /// Search margin around each tile, px.
    pub margin_px: usize,
    /// Median star FWHM of the input frames, px.
    pub median_fwhm_px: f32,
    /// Workers used.
    pub parallel_tiles: usize,
    /// Registration mode.
    pub registration: Registration,
    /// Sum of the used frames' exposure times, s (when known).
    pub exposure_total_s: Option<f64>,
    /// DATE-OBS of the first used frame.
    pub date_obs_first: Option<String>,
    /// Wall time of the run, s.
    pub elapsed_s: f64,
    /// Peak resident memory of the process so far, MiB.
    pub peak_rss_mib: Option<u64>,
    /// Bytes the process read during the run (frames, and anything else it read), when measurable.
    pub bytes_read: Option<u64>,
    /// Digest of the effective configuration (also in the FITS HISTORY).
    pub config_digest: String,
}

/// Per-frame outcome of the global pass.
#[derive(Debug, Clone, Serialize)]
pub struct FrameSummary {
    /// The file or `memory:<index>` (in JSON, bytes that are not UTF-8 become U+FFFD).
    #[serde(serialize_with = "lossy_path")]
    pub label: PathBuf,
    /// Used in the reconstruction.
    pub used: bool,
    /// Global weight G_f (0 when unused).
    pub weight: f32,
    /// Background level, ADU.
    pub background: Option<f32>,
    /// Noise, ADU.
    pub noise: Option<f32>,
    /// Median star FWHM, px.
    pub fwhm_px: Option<f32>,
    /// Stars detected.
    pub stars: Option<usize>,
    /// Global shift relative to the reference frame, px.
    pub shift: Option<tlr_core::Shift>,
}

/// Everything about one tile except its pixels, for reports and diagnostics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TileSummary {
    /// The tile's box.
    pub tile: TileBox,
    /// Whether it was reconstructed.
    pub valid: bool,
    /// Why not, when invalid.
    pub invalid_reason: Option<String>,
    /// Frames that contributed.
    pub frames_used: usize,
    /// Mean registration correlation of the used frames.
    pub mean_cc: f32,
    /// Var(dx) + Var(dy) of the used shifts, px².
    pub warp_variance: f32,
    /// Mean shift of the used frames relative to the global motion, px.
    pub mean_shift: Shift,
    /// Operator iterations run.
    pub iterations: usize,
    /// Set when the tile fell back to the global motion, and why.
    pub fallback: Option<String>,
    /// Blend weight factor psi(warp variance) applied.
    pub psi: f32,
    /// Per-frame details.
    #[serde(skip)]
    pub frames: Vec<FrameReport>,
    /// The frames per-tile best-N % selection left out of this tile; absent when it kept them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_kept: Option<NotKept>,
}

/// Frames that per-tile best-N % selection (`registration.local_tiles.keep_best_percent`) left out
/// of one tile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotKept {
    /// Why, e.g. "not among the sharpest 25 % in this tile (...)".
    pub reason: String,
    /// The frames, numbered from 1 in run order (as `frames` of `tile_report.json`).
    pub frames: Vec<usize>,
}

impl NotKept {
    /// The frames of `reports` that best-N % selection left out, if any.
    pub fn of(reports: &[FrameReport]) -> Option<Self> {
        let (mut reason, mut frames) = (None, Vec::new());
        for r in reports {
            let why = r.status.reason();
            if let Some(why) = why.filter(|w| w.starts_with(tlr_core::quality::NOT_KEPT_IN_TILE)) {
                reason.get_or_insert_with(|| why.to_string());
                frames.push(r.index + 1);
            }
        }
        reason.map(|reason| Self { reason, frames })
    }
}

/// Figures of a finished live session.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LiveSummary {
    /// Frames seen by this session (not counting a resumed checkpoint's).
    pub frames_seen: usize,
    /// Names of all frames used, checkpointed sessions included, in order.
    pub frames_used: Vec<String>,
    /// Names of all frames rejected (whole frame), checkpointed sessions included.
    pub frames_rejected: Vec<String>,
    /// Files the follower skipped, with reasons.
    #[serde(serialize_with = "lossy_skipped")]
    pub files_skipped: Vec<(PathBuf, String)>,
    /// Snapshots published.
    pub snapshots: usize,
    /// Largest latency from frame hand-out to the snapshot including it, s.
    pub max_latency_s: f64,
    /// Mean such latency, s.
    pub mean_latency_s: f64,
    /// Frames processed per second of processing time (bootstrap excluded).
    pub frames_per_s: f64,
    /// Wall time of the session, s.
    pub elapsed_s: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: Option<u64>,
    /// Resident memory at the end, MiB.
    pub rss_mib: Option<u64>,
}

/// Serializes a path as a string, replacing bytes that are not UTF-8 with U+FFFD: a frame named
/// `bad\xff.fits` must not make its event (or the tile report) unserializable.
///
/// # Errors
/// Only the serializer's own.
pub fn lossy_path<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`lossy_path`] for an optional path.
///
/// # Errors
/// Only the serializer's own.
pub fn lossy_opt_path<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// [`lossy_path`] for a list of (path, reason) pairs.
fn lossy_skipped<S: serde::Serializer>(v: &[(PathBuf, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(p, r)| (p.to_string_lossy(), r)))
}
