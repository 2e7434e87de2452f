//! The diagnostics folder: `tile_report.json` and the frame-quality plot, the warp field (cubes and
//! picture), the invalid-tile map (FITS and picture) and the warp-variance histogram, as
//! `v4.diagnostics.*` selects. The pictures are drawn by [`super::plots`].
//!
//! What it does not: compute anything about the reconstruction; it lays out what the run measured.

use ndarray::{Array2, Array3};
use std::path::{Path, PathBuf};

use tlr_core::fits;

use super::header::output_meta;
use super::plots::{self, Picture};
use super::{create_folder, joined, write_atomic};
use crate::batch::RunOutput;
use crate::error::{Stage, StageError};

/// Which diagnostics to write (`v4.diagnostics.*`).
#[derive(Debug, Clone, Copy)]
pub struct DiagnosticsSelection {
    /// warp_dx.fits, warp_dy.fits and warp_field.png.
    pub warp_field: bool,
    /// invalid_tile_map.fits and invalid_tile_map.png.
    pub tile_invalid_map: bool,
    /// warp_variance_hist.png.
    pub warp_variance_hist: bool,
}

impl DiagnosticsSelection {
    /// Everything.
    pub const ALL: Self = Self {
        warp_field: true,
        tile_invalid_map: true,
        warp_variance_hist: true,
    };

    /// The selection configured in `v4.diagnostics` (its switches; `enabled` is the caller's business).
    pub fn from_config(cfg: &tlr_core::config::Config) -> Self {
        let d = &cfg.v4.diagnostics;
        Self {
            warp_field: d.warp_field,
            tile_invalid_map: d.tile_invalid_map,
            warp_variance_hist: d.warp_variance_hist,
        }
    }
}

/// The diagnostics files, by name inside the diagnostics folder.
pub(crate) const TILE_REPORT: &str = "tile_report.json";
pub(crate) const WARP_DX: &str = "warp_dx.fits";
pub(crate) const WARP_DY: &str = "warp_dy.fits";
pub(crate) const WARP_FIELD: &str = "warp_field.png";
pub(crate) const INVALID_TILE_MAP: &str = "invalid_tile_map.fits";
pub(crate) const INVALID_TILE_MAP_PNG: &str = "invalid_tile_map.png";
pub(crate) const WARP_VARIANCE_HIST: &str = "warp_variance_hist.png";
pub(crate) const FRAME_QUALITY: &str = "frame_quality.png";

/// The tile grid as `(row positions, column positions)`: distinct `y0` and `x0` values in order.
fn grid_axes(run: &RunOutput) -> (Vec<usize>, Vec<usize>) {
    let mut ys: Vec<usize> = run.tiles.iter().map(|t| t.tile.y0).collect();
    let mut xs: Vec<usize> = run.tiles.iter().map(|t| t.tile.x0).collect();
    ys.sort_unstable();
    ys.dedup();
    xs.sort_unstable();
    xs.dedup();
    (ys, xs)
}

/// Writes the diagnostics into `dir` (created if needed): `tile_report.json` and `frame_quality.png`
/// always, the rest as selected. Returns the files written, in the order listed below.
///
/// `frame_quality.png` plots every frame's FWHM, global weight and share of the valid tiles that used
/// it. `warp_dx.fits`/`warp_dy.fits` are cubes `(frames, grid rows, grid cols)`: per used frame and
/// tile, the tile's local shift relative to the frame's global motion (NaN where the frame was rejected
/// or the tile invalid). `warp_field.png` draws that field, as arrows per tile over the image, for the
/// frame where it is strongest. `invalid_tile_map.fits` is `(grid rows, grid cols)`, 1 for invalid
/// tiles; `invalid_tile_map.png` draws them over the image. `warp_variance_hist.png` is the histogram of
/// the valid tiles' warp variance.
///
/// The files are written side by side, each on a thread of its own (they only read the finished run;
/// one after another they were the longest chain of the output phase, serial at the end of a run).
///
/// # Errors
/// When a file cannot be written (the error names it): the first failure in the order above; the other
/// files are still written.
pub fn write_diagnostics(
    run: &RunOutput,
    dir: &Path,
    selection: DiagnosticsSelection,
) -> Result<Vec<PathBuf>, StageError> {
    create_folder(dir, &mut Vec::new())?;
    let (ys, xs) = grid_axes(run);
    let position = |t: &tlr_core::TileBox| {
        (
            ys.binary_search(&t.y0).unwrap_or(0),
            xs.binary_search(&t.x0).unwrap_or(0),
        )
    };
    let meta = output_meta(run, "diagnostics");
    let fits_out = |name: &str, data: ndarray::ArrayView3<f32>| -> Result<PathBuf, StageError> {
        let path = dir.join(name);
        fits::write_cube_atomic(&path, data, &meta)
            .map_err(|e| StageError::fits(Stage::Output, e))?;
        Ok(path)
    };
    let png_out =
        |name: &str, draw: &dyn Fn() -> Result<Picture, String>| -> Result<PathBuf, StageError> {
            let path = dir.join(name);
            let picture = draw().map_err(|message| StageError::Output {
                path: path.clone(),
                message: format!("cannot draw the picture: {message}"),
            })?;
            picture.save(&path)?;
            Ok(path)
        };
    // The warp field is computed once, before the threads: both cubes and the picture use it.
    let warp = selection.warp_field.then(|| {
        let frames = run.used_frames.len();
        let mut dx = Array3::from_elem((frames, ys.len(), xs.len()), f32::NAN);
        let mut dy = dx.clone();
        for t in run.tiles.iter().filter(|t| t.valid) {
            let (gy, gx) = position(&t.tile);
            for (slot, report) in t.frames.iter().enumerate().take(frames) {
                if report.status.is_used() {
                    let prior = run.used_frames[slot].prior();
                    dy[[slot, gy, gx]] = report.shift.dy - prior.dy;
                    dx[[slot, gy, gx]] = report.shift.dx - prior.dx;
                }
            }
        }
        (dx, dy)
    });
    let invalid_map = selection.tile_invalid_map.then(|| {
        let mut map = Array2::<f32>::zeros((ys.len(), xs.len()));
        for t in run.tiles.iter().filter(|t| !t.valid) {
            map[position(&t.tile)] = 1.0;
        }
        map
    });
    let tiles: Vec<tlr_core::TileBox> = run.tiles.iter().map(|t| t.tile).collect();
    type Job<'a> = Box<dyn FnOnce() -> Result<PathBuf, StageError> + Send + 'a>;
    let mut jobs: Vec<Job> = vec![
        Box::new(|| write_tile_report(run, &dir.join(TILE_REPORT))),
        Box::new(|| {
            let tile_use = tile_use(run);
            png_out(FRAME_QUALITY, &|| {
                plots::frame_quality(&run.frames, &tile_use)
            })
        }),
    ];
    if let Some((dx, dy)) = &warp {
        jobs.push(Box::new(|| fits_out(WARP_DX, dx.view())));
        jobs.push(Box::new(|| fits_out(WARP_DY, dy.view())));
        jobs.push(Box::new(|| {
            let slot = strongest_frame(dx, dy);
            let shifts: Vec<Option<tlr_core::Shift>> = run
                .tiles
                .iter()
                .map(|t| {
                    let (gy, gx) = position(&t.tile);
                    let at = [slot, gy, gx];
                    t.valid.then(|| match (dy.get(at), dx.get(at)) {
                        (Some(&y), Some(&x)) => tlr_core::Shift::new(y, x),
                        _ => tlr_core::Shift::new(f32::NAN, f32::NAN),
                    })
                })
                .collect();
            let shown = run.used_frames.get(slot).map(|u| u.index);
            let frame = plots::WarpFrame {
                number: shown.map(|i| (i + 1, run.frames.len())),
                name: shown
                    .and_then(|i| run.frames.get(i))
                    .map(|f| plots::frame_name(&f.label))
                    .unwrap_or_default(),
                tiles: &tiles,
                shifts: &shifts,
            };
            png_out(WARP_FIELD, &|| plots::warp_field(run.image.view(), &frame))
        }));
    }
    if let Some(map) = &invalid_map {
        jobs.push(Box::new(|| {
            fits_out(INVALID_TILE_MAP, map.view().insert_axis(ndarray::Axis(0)))
        }));
        jobs.push(Box::new(|| {
            let invalid: Vec<Option<&str>> = run
                .tiles
                .iter()
                .map(|t| (!t.valid).then(|| t.invalid_reason.as_deref().unwrap_or("invalid")))
                .collect();
            png_out(INVALID_TILE_MAP_PNG, &|| {
                plots::tile_map(run.image.view(), &tiles, &invalid)
            })
        }));
    }
    if selection.warp_variance_hist {
        jobs.push(Box::new(|| {
            let values: Vec<f32> = run
                .tiles
                .iter()
                .filter(|t| t.valid)
                .map(|t| t.warp_variance)
                .collect();
            png_out(WARP_VARIANCE_HIST, &|| {
                plots::warp_variance_histogram(&values, run.tiles.len())
            })
        }));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.into_iter().map(|job| scope.spawn(job)).collect();
        // Join all before reporting, so that a failure never leaves a writer running.
        let results: Vec<Result<PathBuf, StageError>> = handles
            .into_iter()
            .map(|h| joined(h, "writing the diagnostics").and_then(|r| r))
            .collect();
        results.into_iter().collect()
    })
}

/// Writes `tile_report.json` (summary, frames, tiles) to `path`.
fn write_tile_report(run: &RunOutput, path: &Path) -> Result<PathBuf, StageError> {
    #[derive(serde::Serialize)]
    struct Report<'a> {
        summary: &'a crate::report::RunSummary,
        frames: &'a [crate::report::FrameSummary],
        tiles: &'a [crate::report::TileSummary],
    }
    let report = Report {
        summary: &run.summary,
        frames: &run.frames,
        tiles: &run.tiles,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| StageError::Output {
        path: path.to_path_buf(),
        message: format!("cannot encode the report: {e}"),
    })?;
    write_atomic(path, json.as_bytes())?;
    Ok(path.to_path_buf())
}

/// Per frame of the run: the percentage of the valid tiles that used it (`None` for a frame that never
/// reached the tiles, or when no tile is valid).
fn tile_use(run: &RunOutput) -> Vec<Option<f64>> {
    let valid: Vec<&crate::report::TileSummary> = run.tiles.iter().filter(|t| t.valid).collect();
    let mut share = vec![None; run.frames.len()];
    if valid.is_empty() {
        return share;
    }
    for (slot, used) in run.used_frames.iter().enumerate() {
        let n = valid
            .iter()
            .filter(|t| t.frames.get(slot).is_some_and(|r| r.status.is_used()))
            .count();
        if let Some(s) = share.get_mut(used.index) {
            *s = Some(100.0 * n as f64 / valid.len() as f64);
        }
    }
    share
}

/// The frame (slot) whose local warp field is strongest (largest median length of the local shifts
/// over the tiles, so that one outlier tile does not decide): the one `warp_field.png` shows, as the
/// most telling example of the field.
fn strongest_frame(dx: &Array3<f32>, dy: &Array3<f32>) -> usize {
    let strength = |slot: usize| -> f32 {
        let lengths: Vec<f32> = dx
            .index_axis(ndarray::Axis(0), slot)
            .iter()
            .zip(dy.index_axis(ndarray::Axis(0), slot).iter())
            .map(|(x, y)| x.hypot(*y))
            .collect();
        tlr_core::stats::median(&lengths)
    };
    (0..dx.len_of(ndarray::Axis(0)))
        .map(|slot| (slot, strength(slot)))
        .filter(|(_, s)| s.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(slot, _)| slot)
}
