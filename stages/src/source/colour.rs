//! A colour (Bayer) sequence presented in cell space: four planes (R, G1, G2, B) of `H/2 x W/2` per
//! frame, whose luminance is what the global pass and the registration see; and the decision whether a
//! sequence is mono or colour ([`decide_sequence`] for a batch run: every header counts, the majority
//! wins and the frames that disagree are skipped with the reason; [`SessionColour`] for a live
//! session: its first frame decides).
//! What it does not: demosaic (the output does, from the reconstructed planes) or read files itself.

use ndarray::{Array2, Array3};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use tlr_core::bayer::{self, CfaPattern, ColorMode};
use tlr_core::fits::FrameHeader;

use super::{FrameMeta, FrameStore};
use crate::error::{Stage, StageError};

/// A Bayer (one-shot colour) sequence seen in cell space: frame `(H, W)` of the inner store becomes four
/// planes of `(H/2, W/2)` (an odd last row/column is dropped); [`FrameStore::read_full`] and
/// [`FrameStore::read_regions`] give the luminance (mean of the four planes) per 2x2 cell.
pub struct ColourFrames {
    inner: std::sync::Arc<dyn FrameStore>,
    pattern: tlr_core::bayer::CfaPattern,
}

impl ColourFrames {
    /// Wraps the full-resolution mosaic frames of `inner`, whose pattern (in file row order) is `pattern`.
    ///
    /// # Errors
    /// When the frames are smaller than 2x2.
    pub fn new(
        inner: std::sync::Arc<dyn FrameStore>,
        pattern: tlr_core::bayer::CfaPattern,
    ) -> Result<Self, StageError> {
        check_mosaic_size(inner.as_ref())?;
        Ok(Self { inner, pattern })
    }

    /// The Bayer pattern (file row order).
    pub fn pattern(&self) -> tlr_core::bayer::CfaPattern {
        self.pattern
    }

    fn luminance(&self, planes: &Array3<f32>) -> Result<Array2<f32>, StageError> {
        tlr_core::bayer::luminance(planes.view()).map_err(|e| StageError::bayer(Stage::Reader, e))
    }
}

impl FrameStore for ColourFrames {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> (usize, usize) {
        let (rows, cols) = self.inner.shape();
        (rows / 2, cols / 2)
    }

    fn meta(&self, index: usize) -> FrameMeta {
        self.inner.meta(index)
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        self.luminance(&self.read_full_planes(index)?)
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        self.read_plane_regions(index, regions)?
            .iter()
            .map(|p| self.luminance(p))
            .collect()
    }

    fn planes(&self) -> usize {
        tlr_core::bayer::PLANES
    }

    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        let full = self.inner.read_full(index)?;
        Ok(tlr_core::bayer::split_planes(full.view(), self.pattern))
    }

    fn read_plane_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array3<f32>>, StageError> {
        // Cell (r, c) covers full-resolution rows 2r..2r+2 and columns 2c..2c+2: the region starts on a
        // cell boundary, so the frame's own pattern applies to it unchanged.
        let full: Vec<(Range<usize>, Range<usize>)> = regions
            .iter()
            .map(|(r, c)| (2 * r.start..2 * r.end, 2 * c.start..2 * c.end))
            .collect();
        Ok(self
            .inner
            .read_regions(index, &full)?
            .iter()
            .map(|cfa| tlr_core::bayer::split_planes(cfa.view(), self.pattern))
            .collect())
    }
}

/// Bayer frames must be at least 2x2 (one cell).
///
/// # Errors
/// When they are smaller, naming their size.
pub(super) fn check_mosaic_size(store: &dyn FrameStore) -> Result<(), StageError> {
    let (rows, cols) = store.shape();
    if rows < 2 || cols < 2 {
        return Err(StageError::input(
            Stage::Reader,
            format!("Bayer frames of {cols}x{rows} are too small (at least 2x2)"),
        ));
    }
    Ok(())
}

/// The colour mode of a sequence, decided by [`decide_sequence`].
#[derive(Debug)]
pub struct SequenceColour {
    /// The pattern of the run (file row order); `None` = mono.
    pub pattern: Option<CfaPattern>,
    /// The frames that agree with it, in their order.
    pub kept: Vec<FrameHeader>,
    /// The frames that disagree, each with the reason (to be reported as skipped frames).
    pub skipped: Vec<(PathBuf, String)>,
    /// Conflicts between the headers and the configuration, one message (with a count) each.
    pub warnings: Vec<String>,
}

/// How a frame's colour is named in messages.
fn mode_name(pattern: Option<CfaPattern>) -> String {
    match pattern {
        Some(p) => format!("Bayer {p}"),
        None => "mono".to_string(),
    }
}

/// Decides mono or colour from every frame of a sequence, not from one header: each frame's mode
/// comes from its header (BAYERPAT, XBAYROFF/YBAYROFF, ROWORDER) and the configured `mode`
/// ([`bayer::resolve_pattern`]); when the frames disagree, the mode of most frames wins and every
/// other frame is skipped with the reason. With `data.color_mode: osc` the majority is taken among the
/// frames that have a pattern. The same header/configuration conflict on many frames gives one warning.
///
/// # Errors
/// A frame with an unknown `BAYERPAT` or `ROWORDER` (naming the file); no majority (as many frames of
/// one mode as of another); `osc` when no frame has a pattern.
pub fn decide_sequence(
    headers: Vec<FrameHeader>,
    mode: ColorMode,
) -> Result<SequenceColour, StageError> {
    let mut warnings: Vec<String> = Vec::new();
    let mut conflicts = 0usize;
    let mut modes = Vec::with_capacity(headers.len());
    for header in &headers {
        // `osc` is applied below, to the sequence: a frame without a pattern is then outvoted.
        let per_frame = if mode == ColorMode::Osc {
            ColorMode::Auto
        } else {
            mode
        };
        let decision = bayer::resolve_pattern(header, per_frame)
            .map_err(|e| StageError::bayer(Stage::Scan, e))?;
        if let Some(first) = decision.warnings.into_iter().next() {
            conflicts += 1;
            if warnings.is_empty() {
                warnings.push(first);
            }
        }
        modes.push(decision.pattern);
    }
    if conflicts > 1 {
        if let Some(w) = warnings.first_mut() {
            w.push_str(&format!(" (the same for {} more frames)", conflicts - 1));
        }
    }
    let mut counts: BTreeMap<Option<CfaPattern>, usize> = BTreeMap::new();
    for m in &modes {
        if mode != ColorMode::Osc || m.is_some() {
            *counts.entry(*m).or_default() += 1;
        }
    }
    let most = counts.values().copied().max().unwrap_or(0);
    let winners: Vec<Option<CfaPattern>> = counts
        .iter()
        .filter(|(_, &n)| n == most)
        .map(|(m, _)| *m)
        .collect();
    let pattern = match winners.as_slice() {
        [] if headers.is_empty() => None,
        [] => {
            return Err(StageError::input(
                Stage::Scan,
                format!(
                    "data.color_mode is osc but no frame has a BAYERPAT (first: `{}`): set \
                     data.bayer_pattern",
                    headers[0].path.display()
                ),
            ))
        }
        [one] => *one,
        _ => {
            let tally: Vec<String> = counts
                .iter()
                .map(|(m, n)| format!("{n} {}", mode_name(*m)))
                .collect();
            return Err(StageError::input(
                Stage::Scan,
                format!(
                    "the frames disagree on their colour mode and no mode has a majority ({}): \
                     set data.color_mode (mono or osc) and data.bayer_pattern, or remove the \
                     frames that do not belong",
                    tally.join(", ")
                ),
            ));
        }
    };
    let total = headers.len();
    let agreeing = modes.iter().filter(|m| **m == pattern).count();
    let mut kept = Vec::with_capacity(agreeing);
    let mut skipped = Vec::new();
    for (header, m) in headers.into_iter().zip(modes) {
        if m == pattern {
            kept.push(header);
        } else {
            let reason = format!(
                "{} frame in a {} sequence ({agreeing} of {total} frames are {}); colour mode \
                 from BAYERPAT, XBAYROFF/YBAYROFF and ROWORDER",
                mode_name(m),
                mode_name(pattern),
                mode_name(pattern)
            );
            skipped.push((header.path.clone(), reason));
        }
    }
    Ok(SequenceColour {
        pattern,
        kept,
        skipped,
        warnings,
    })
}

/// The colour mode of a live session: its first frame with a readable header decides (later frames
/// cannot outvote frames already reconstructed; a resumed session's checkpoint has decided already,
/// [`SessionColour::resumed`]); a later frame of another mode, or with an unknown pattern, is refused
/// with the reason (the session goes on). Each frame's mode is its header's as the configuration
/// resolves it (`data.color_mode`, `data.bayer_pattern`), as in a batch run.
#[derive(Debug, Default, Clone)]
pub struct SessionColour {
    first: Option<(Option<CfaPattern>, PathBuf)>,
    mode: ColorMode,
}

impl SessionColour {
    /// A session whose frames' modes `mode` resolves.
    pub fn new(mode: ColorMode) -> Self {
        Self { first: None, mode }
    }

    /// The session continues a checkpoint of `pattern` (`None`: mono) whose first frame was `first`.
    pub fn resumed(mut self, pattern: Option<CfaPattern>, first: PathBuf) -> Self {
        self.first = Some((pattern, first));
        self
    }

    /// `Ok` with the session's pattern (`None`: mono) when `header` belongs to the session (the first
    /// frame always does); otherwise why not, naming the file.
    ///
    /// # Errors
    /// The reason the frame is refused.
    pub fn admit(&mut self, header: &FrameHeader) -> Result<Option<CfaPattern>, String> {
        let pattern = bayer::resolve_pattern(header, self.mode)
            .map_err(|e| tlr_core::report(&e))?
            .pattern;
        match &self.first {
            None => {
                self.first = Some((pattern, header.path.clone()));
                Ok(pattern)
            }
            Some((session, _)) if *session == pattern => Ok(pattern),
            Some((session, first)) => Err(format!(
                "`{}` is a {} frame, but the session is {} (decided by its first frame `{}`)",
                header.path.display(),
                mode_name(pattern),
                mode_name(*session),
                first.display()
            )),
        }
    }
}
