//! The image files of a result: the FITS image (mono, or the demosaiced RGB cube `(3, H, W)` of a
//! colour run) with its PNG preview, and the reconstructed mosaic a colour run can keep for users who
//! debayer elsewhere.
//!
//! Every FITS file here follows the border policy of [`super::coverage`] (no NaN: pixels without data
//! are 0, a `COVERAGE` extension counts the frames per pixel), is cut to `--crop`'s area, and carries
//! the reference frame's WCS moved to its grid.
//!
//! What it does not: decide where files go or what the header says ([`super::header`]).

use std::path::{Path, PathBuf};

use tlr_core::fits;
use tlr_core::preview;

use super::coverage::{cut, write_fits, written_area, Pixels};
use super::header::{card_int, card_str, output_meta};
use super::{joined, preview_path};
use crate::batch::RunOutput;
use crate::error::{Stage, StageError};

/// Writes the image as float32 FITS and, next to it, `<stem>.png` (auto-stretched preview), the two
/// side by side. Returns the preview's path. A colour run writes the demosaiced RGB cube `(3, H, W)`
/// and a colour preview (auto white balance from the background).
///
/// # Errors
/// When a file cannot be written (the error names it; the FITS file's error comes first).
pub fn write_image(run: &RunOutput, path: &Path) -> Result<PathBuf, StageError> {
    let mut meta = output_meta(run, "result");
    let png = preview_path(path);
    let area = written_area(run);
    let Some(colour) = &run.colour else {
        side_by_side(
            || write_fits(run, path, Pixels::Image(run.image.view()), 1, &meta),
            || preview::write_png_preview_atomic(&png, cut(run.image.view(), area, 1)),
            &png,
        )?;
        return Ok(png);
    };
    let rgb = colour.rgb().map_err(|e| StageError::Output {
        path: path.to_path_buf(),
        message: format!("demosaicing the result: {e}"),
    })?;
    meta.cards.push(card_str(
        "CSPACE",
        "RGB",
        "planes R, G, B (demosaiced, Malvar-He-Cutler)",
    ));
    meta.history.push(format!(
        "colour: Bayer {} reconstructed per plane, demosaiced to RGB",
        colour.pattern.name()
    ));
    let shown = rgb.slice(ndarray::s![
        ..,
        area.y0 * 2..(area.y0 + area.rows) * 2,
        area.x0 * 2..(area.x0 + area.cols) * 2
    ]);
    side_by_side(
        || write_fits(run, path, Pixels::Cube(rgb.view()), 2, &meta),
        || preview::write_rgb_png_preview_atomic(&png, shown),
        &png,
    )?;
    Ok(png)
}

/// Runs `write_fits` here and `write_preview` (publishing `png`) on a thread of its own; the FITS
/// file's error comes first.
fn side_by_side(
    write_fits: impl FnOnce() -> Result<(), fits::FitsError>,
    write_preview: impl FnOnce() -> Result<(), preview::PreviewError> + Send,
    png: &Path,
) -> Result<(), StageError> {
    std::thread::scope(|scope| {
        let preview = scope.spawn(write_preview);
        if let Err(e) = write_fits() {
            // No preview without its image.
            if matches!(preview.join(), Ok(Ok(()))) {
                let _ = std::fs::remove_file(png);
            }
            return Err(StageError::fits(Stage::Output, e));
        }
        joined(preview, "writing the preview")?.map_err(|e| StageError::Output {
            path: png.to_path_buf(),
            message: crate::error::report(&e),
        })
    })
}

/// Writes the reconstructed mosaic (CFA, full resolution, float32, with `BAYERPAT` and
/// `ROWORDER = 'TOP-DOWN'`) of a colour run to `path`. Returns `Ok(false)` for a mono run (nothing
/// written).
///
/// # Errors
/// When the file cannot be written (the error names it).
pub fn write_cfa(run: &RunOutput, path: &Path) -> Result<bool, StageError> {
    let Some(colour) = &run.colour else {
        return Ok(false);
    };
    let cfa = colour.cfa().map_err(|e| StageError::Output {
        path: path.to_path_buf(),
        message: format!("merging the colour planes: {e}"),
    })?;
    let mut meta = output_meta(run, "cfa");
    meta.cards.push(card_str(
        "BAYERPAT",
        colour.pattern.name(),
        "Bayer pattern of the reconstructed mosaic",
    ));
    meta.cards
        .push(card_int("XBAYROFF", 0, "Bayer pattern x offset"));
    meta.cards
        .push(card_int("YBAYROFF", 0, "Bayer pattern y offset"));
    meta.cards
        .push(card_str("ROWORDER", "TOP-DOWN", "order of the rows"));
    write_fits(run, path, Pixels::Image(cfa.view()), 2, &meta)
        .map_err(|e| StageError::fits(Stage::Output, e))?;
    Ok(true)
}
