//! Writing a run's results: the image (FITS, TIFF or PNG, as its extension says) and its preview
//! ([`write_image_as`], files `image.rs`), with the
//! header [`output_meta`] makes (`header.rs`), the mosaic a colour run can keep ([`write_cfa`]), and the
//! diagnostics folder ([`write_diagnostics`], `diagnostics.rs`); [`check_output_paths`] (`paths.rs`)
//! refuses unsafe output paths before a run reads anything.
//!
//! Every file is written atomically (temporary file in the same folder, then rename), so a viewer or a
//! cancelled run never leaves a half-written file under the final name. [`write_outputs`] creates
//! missing folders once, before any writer starts; [`remove_stale_temporaries`] removes what killed runs
//! left behind.
//! What it does not: compute anything about the reconstruction; it only lays out what the run produced.

mod coverage;
mod diagnostics;
mod header;
mod image;
mod paths;
mod plots;

pub(crate) use coverage::filled;
pub use coverage::{common_area, frame_counts, GridArea, UNCOVERED};
pub use diagnostics::{write_diagnostics, DiagnosticsSelection};
pub use header::output_meta;
pub(crate) use image::colour_meta;
pub use image::{write_cfa, write_image, write_image_as};
pub use paths::check_output_paths;
pub use tlr_core::export::{BitDepth, ExportOptions, FileFormat};

use std::path::{Path, PathBuf};

use diagnostics::{
    FRAME_QUALITY, INVALID_TILE_MAP, INVALID_TILE_MAP_PNG, TILE_REPORT, WARP_DX, WARP_DY,
    WARP_FIELD, WARP_VARIANCE_HIST,
};

use crate::batch::RunOutput;
use crate::error::{Stage, StageError};

/// Everything a finished run can write, for [`write_outputs`].
#[derive(Debug, Clone, Copy)]
pub struct OutputRequest<'a> {
    /// The image: FITS, TIFF or PNG as its extension says ([`FileFormat::from_path`]); its preview
    /// goes next to it ([`preview_path`]).
    pub image: &'a Path,
    /// Samples and scaling of the image ([`ExportOptions`]; the default: float32 FITS as before,
    /// 16-bit TIFF and PNG).
    pub export: ExportOptions,
    /// Also write the reconstructed mosaic to [`cfa_path`] (colour runs only; a mono run writes none).
    pub keep_cfa: bool,
    /// The diagnostics folder and what to write into it.
    pub diagnostics: Option<(&'a Path, DiagnosticsSelection)>,
}

/// Writes what `request` asks for: the image and its preview ([`write_image_as`]), the mosaic
/// ([`write_cfa`]) and the diagnostics ([`write_diagnostics`]), side by side on threads of their own
/// (they only read the finished run; one after another they kept one core busy for 0.2 s at the end of
/// every run). Returns the files written: image, preview, mosaic, then the diagnostics.
///
/// # Errors
/// The first failure in that order (the error names the file). The other files are still written.
pub fn write_outputs(run: &RunOutput, request: &OutputRequest) -> Result<Vec<PathBuf>, StageError> {
    // Folders first, before any writer starts: writers running side by side must never race to create
    // them (a no-op when the caller already called `create_output_folders`).
    let _created = create_output_folders(request)?;
    std::thread::scope(|scope| {
        let cfa = request.keep_cfa.then(|| {
            let path = cfa_path(request.image);
            scope.spawn(move || write_cfa(run, &path).map(|written| written.then_some(path)))
        });
        let diagnostics = request
            .diagnostics
            .map(|(dir, selection)| scope.spawn(move || write_diagnostics(run, dir, selection)));
        let image = write_image_as(run, request.image, &request.export);
        let cfa = cfa.map(|h| joined(h, "writing the mosaic").and_then(|r| r));
        let diagnostics = diagnostics.map(|h| joined(h, "writing the diagnostics").and_then(|r| r));
        let preview = match image {
            Ok(preview) => preview,
            Err(error) => {
                // No mosaic or diagnostics without the image they describe (the image itself is
                // untouched: atomic). Best effort; the image's error is what the user needs.
                let written = cfa
                    .into_iter()
                    .flatten()
                    .flatten()
                    .chain(diagnostics.into_iter().flatten().flatten());
                for file in written {
                    let _ = std::fs::remove_file(file);
                }
                return Err(error);
            }
        };
        let mut files = vec![request.image.to_path_buf(), preview];
        if let Some(cfa) = cfa {
            files.extend(cfa?);
        }
        if let Some(diagnostics) = diagnostics {
            files.extend(diagnostics?);
        }
        Ok(files)
    })
}

/// The result of a scoped output thread; a panic becomes [`StageError::Panicked`].
pub(crate) fn joined<T>(
    handle: std::thread::ScopedJoinHandle<'_, T>,
    what: &'static str,
) -> Result<T, StageError> {
    handle.join().map_err(|panic| StageError::Panicked {
        stage: Stage::Output,
        what,
        message: crate::error::panic_message(panic.as_ref()),
    })
}

/// The preview written next to `image`: `OUT.fits` -> `OUT.png`; `OUT.png` -> `OUT.preview.png` (a
/// PNG output is linear 16-bit: the stretched preview is still wanted, under its own name).
pub fn preview_path(image: &Path) -> PathBuf {
    let is_png = image
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    image.with_extension(if is_png { "preview.png" } else { "png" })
}

/// Every file `request` may write: image, preview, the mosaic (when asked for; a mono run then writes
/// none) and the diagnostics as selected. The paths [`check_output_paths`] is given.
pub fn planned_files(request: &OutputRequest) -> Vec<PathBuf> {
    let mut files = vec![request.image.to_path_buf(), preview_path(request.image)];
    if request.keep_cfa {
        files.push(cfa_path(request.image));
    }
    if let Some((dir, selection)) = request.diagnostics {
        let mut names = vec![TILE_REPORT, FRAME_QUALITY];
        if selection.warp_field {
            names.extend([WARP_DX, WARP_DY, WARP_FIELD]);
        }
        if selection.tile_invalid_map {
            names.extend([INVALID_TILE_MAP, INVALID_TILE_MAP_PNG]);
        }
        if selection.warp_variance_hist {
            names.push(WARP_VARIANCE_HIST);
        }
        files.extend(names.into_iter().map(|name| dir.join(name)));
    }
    files
}

/// Creates the folders `request` writes into when missing: the image's (also the preview's and the
/// mosaic's) and the diagnostics folder. `tlr run` calls it before the run, so a folder that cannot be
/// created stops it at once rather than after the reconstruction; [`write_outputs`] calls it again.
/// Returns the folders it created, for [`CreatedFolders::remove_empty`] after a failed run.
///
/// # Errors
/// When a folder cannot be created (the error names it).
pub fn create_output_folders(request: &OutputRequest) -> Result<CreatedFolders, StageError> {
    let mut created = CreatedFolders(Vec::new());
    create_folder(folder_of(request.image), &mut created.0)?;
    if let Some((dir, _)) = request.diagnostics {
        create_folder(dir, &mut created.0)?;
    }
    Ok(created)
}

/// Folders [`create_output_folders`] created, outermost first.
#[derive(Debug, Default)]
#[must_use = "a failed run removes the folders it created with `remove_empty`"]
pub struct CreatedFolders(Vec<PathBuf>);

impl CreatedFolders {
    /// True when every folder already existed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes those of the folders that are still empty (innermost first): a run that published
    /// nothing leaves no new folders behind either.
    pub fn remove_empty(self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir); // fails, as it should, when something is inside
        }
    }
}

/// The folder `path` is in (`.` for a bare file name).
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing parents, adding those it created (outermost first) to `created`.
pub(crate) fn create_folder(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), StageError> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| StageError::Output {
        path: dir.to_path_buf(),
        message: format!("cannot create the folder: {e}"),
    })?;
    created.extend(missing.into_iter().rev());
    Ok(())
}

/// Removes the temporary files that killed runs (SIGKILL, a power cut) left next to the outputs of
/// `request` (image, preview, mosaic: only theirs; in the diagnostics folder: all), when their writing
/// process is gone. Returns how many were removed.
pub fn remove_stale_temporaries(request: &OutputRequest) -> usize {
    let own = [
        request.image.to_path_buf(),
        preview_path(request.image),
        cfa_path(request.image),
    ];
    let mut removed: usize = own
        .iter()
        .map(|p| tlr_core::atomic::remove_stale_temporaries(folder_of(p), p.file_name()))
        .sum();
    if let Some((dir, _)) = request.diagnostics {
        removed += tlr_core::atomic::remove_stale_temporaries(dir, None);
    }
    removed
}

/// The path of the kept mosaic next to `output`: `OUT.fits` -> `OUT.cfa.fits`.
pub fn cfa_path(output: &Path) -> PathBuf {
    output.with_extension("cfa.fits")
}

/// Writes bytes to `path` through a temporary file in the same folder and a rename.
///
/// # Errors
/// When the folder is not writable (the error names the file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    tlr_core::atomic::write_bytes(path, bytes).map_err(|e| StageError::Output {
        path: path.to_path_buf(),
        message: crate::error::report(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_of_a_png_output_gets_its_own_name_in_the_planned_files() {
        for (image, preview) in [
            ("r.fits", "r.png"),
            ("d/r.TIF", "d/r.png"),
            ("r.png", "r.preview.png"),
            ("d/r.PNG", "d/r.preview.png"),
        ] {
            assert_eq!(preview_path(Path::new(image)), Path::new(preview));
        }
        let request = OutputRequest {
            image: Path::new("out/r.png"),
            export: ExportOptions::default(),
            keep_cfa: true,
            diagnostics: None,
        };
        let planned = planned_files(&request);
        let expected = ["out/r.png", "out/r.preview.png", "out/r.cfa.fits"];
        assert_eq!(planned, expected.map(PathBuf::from));
    }
}
