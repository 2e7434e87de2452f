//! The image files of a result: the image (mono, or the demosaiced RGB cube `(3, H, W)` of a colour
//! run) in the format its name asks for (FITS, TIFF or PNG: the encoding is [`tlr_core::export`]'s),
//! with its PNG preview, and the reconstructed mosaic (FITS) a colour run can keep for users who
//! debayer elsewhere.
//!
//! Every file here follows the border policy of [`super::coverage`] (no NaN: pixels without data
//! are 0; a float FITS image also gets a `COVERAGE` extension counting the frames per pixel), is cut
//! to `--crop`'s area, and a FITS file carries the reference frame's WCS moved to its grid.
//!
//! What it does not: decide where files go or what the header says ([`super::header`]), or encode.

use std::path::{Path, PathBuf};

use ndarray::{Array3, Axis};
use tlr_core::export::{self, Export, ExportError, ExportOptions, FileFormat};
use tlr_core::fits;
use tlr_core::preview;

use super::coverage::{cut, cut_cube, filled, with_wcs, write_fits, written_area, Pixels};
use super::header::{card_int, card_str, output_meta};
use super::{joined, preview_path};
use crate::batch::RunOutput;
use crate::error::{Stage, StageError};

/// [`write_image_as`] with the default export of `path`'s format (FITS: float32 as before; TIFF and
/// PNG: 16-bit).
///
/// # Errors
/// As [`write_image_as`].
pub fn write_image(run: &RunOutput, path: &Path) -> Result<PathBuf, StageError> {
    write_image_as(run, path, &ExportOptions::default())
}

/// Writes the image in the format `path`'s extension names ([`tlr_core::export`]: FITS, TIFF or PNG,
/// with `options`' depth and scaling) and, next to it, the auto-stretched PNG preview
/// ([`preview_path`]), the two side by side. Returns the preview's path. A colour run writes the
/// demosaiced RGB cube `(3, H, W)` (RGB in TIFF and PNG) and a colour preview (auto white balance from
/// the background).
///
/// # Errors
/// When `path` names no format tlr writes, or a file cannot be written (the error names it; the
/// image's error comes first).
pub fn write_image_as(
    run: &RunOutput,
    path: &Path,
    options: &ExportOptions,
) -> Result<PathBuf, StageError> {
    let export = Export::for_path(path, options).map_err(|e| export_error(path, e))?;
    let mut meta = output_meta(run, "result");
    let png = preview_path(path);
    let area = written_area(run);
    let Some(colour) = &run.colour else {
        side_by_side(
            path,
            || {
                write_as(
                    run,
                    path,
                    Pixels::Image(run.image.view()),
                    1,
                    &export,
                    &meta,
                )
            },
            || preview::write_png_preview_atomic(&png, cut(run.image.view(), area, 1)),
            &png,
        )?;
        return Ok(png);
    };
    let rgb = colour.rgb().map_err(|e| StageError::Output {
        path: path.to_path_buf(),
        message: format!("demosaicing the result: {e}"),
    })?;
    colour_meta(&mut meta, colour);
    let scale = colour.scale();
    let shown = cut_cube(rgb.view(), area, scale);
    side_by_side(
        path,
        || write_as(run, path, Pixels::Cube(rgb.view()), scale, &export, &meta),
        || preview::write_rgb_png_preview_atomic(&png, shown),
        &png,
    )?;
    Ok(png)
}

/// The cards of an RGB image made from `colour` (`CSPACE`, a HISTORY line naming the pattern and the
/// route), for a run's result and a live snapshot alike.
pub(crate) fn colour_meta(meta: &mut fits::OutputMeta, colour: &crate::batch::ColourResult) {
    meta.cards.push(card_str(
        "CSPACE",
        "RGB",
        "planes R, G, B (demosaiced, Malvar-He-Cutler)",
    ));
    meta.history.push(if colour.is_rgb() {
        format!(
            "colour: Bayer {} demosaiced frame by frame, R, G, B reconstructed",
            colour.pattern.name()
        )
    } else {
        format!(
            "colour: Bayer {} reconstructed per plane, demosaiced to RGB",
            colour.pattern.name()
        )
    });
}

/// An export failure as the stage error a caller reports: FITS errors as they are, others naming
/// `path`.
/// Writes `pixels` (`scale` output pixels per grid pixel) as `export` says: float32 FITS with the
/// coverage extension ([`write_fits`]); any other export cut to the written area with pixels without
/// data as 0, a FITS file with the WCS moved to its grid.
fn write_as(
    run: &RunOutput,
    path: &Path,
    pixels: Pixels,
    scale: usize,
    export: &Export,
    meta: &fits::OutputMeta,
) -> Result<(), ExportError> {
    if export.format == FileFormat::Fits && !export.scales() {
        return Ok(write_fits(run, path, pixels, scale, meta)?);
    }
    let area = written_area(run);
    let planes: Array3<f32> = match pixels {
        Pixels::Image(image) => filled(cut(image, area, 1).insert_axis(Axis(0))),
        Pixels::Cube(cube) => filled(cut_cube(cube, area, scale)),
    };
    let (meta, _) = with_wcs(run, meta, scale);
    export::write_atomic(path, planes.view(), export, &meta)
}

pub(crate) fn export_error(path: &Path, error: ExportError) -> StageError {
    match error {
        ExportError::Fits(e) => StageError::fits(Stage::Output, e),
        other => StageError::Output {
            path: path.to_path_buf(),
            message: crate::error::report(&other),
        },
    }
}

/// Runs `write_file` (publishing `path`) here and `write_preview` (publishing `png`) on a thread of
/// its own; the image's error comes first.
fn side_by_side(
    path: &Path,
    write_file: impl FnOnce() -> Result<(), ExportError>,
    write_preview: impl FnOnce() -> Result<(), preview::PreviewError> + Send,
    png: &Path,
) -> Result<(), StageError> {
    std::thread::scope(|scope| {
        let preview = scope.spawn(write_preview);
        if let Err(e) = write_file() {
            // No preview without its image.
            if matches!(preview.join(), Ok(Ok(()))) {
                let _ = std::fs::remove_file(png);
            }
            return Err(export_error(path, e));
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
    write_fits(run, path, Pixels::Image(cfa.view()), colour.scale(), &meta)
        .map_err(|e| StageError::fits(Stage::Output, e))?;
    Ok(true)
}
