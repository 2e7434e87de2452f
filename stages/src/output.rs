//! Writing a run's results: the FITS image, its PNG preview, and the diagnostics folder.
//!
//! Every file is written atomically (temporary file in the same folder, then rename), so a viewer or a
//! cancelled run never leaves a half-written file under the final name.
//! A colour run's image is the demosaiced RGB cube `(3, H, W)` (NAXIS3 = 3) with a colour preview;
//! [`write_cfa`] also keeps the reconstructed mosaic for users who debayer elsewhere.
//! Output-path safety ([`check_output_paths`], also used by `tlr watch`): before a run reads anything,
//! every path it will write is resolved (parent canonicalized, plus the file name, and the link target
//! when the name is a symlink) and refused when it is an input frame or any other file the frame
//! patterns match in the input folder (tlr's own earlier outputs excepted), another output of the same
//! run, a folder, or a special file (device, FIFO, socket). [`write_outputs`] creates missing folders once,
//! before any writer starts; [`remove_stale_temporaries`] removes what killed runs left behind.
//! What it does not: compute anything about the reconstruction; it only lays out what the run produced.

use ndarray::{Array2, Array3};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tlr_core::fits::{self, Card, CardValue, OutputMeta, SampleFormat};
use tlr_core::preview;

use crate::batch::RunOutput;
use crate::error::{Stage, StageError};

/// Which diagnostics to write (`v4.diagnostics.*`).
#[derive(Debug, Clone, Copy)]
pub struct DiagnosticsSelection {
    /// warp_dx.fits, warp_dy.fits and warp_field.png.
    pub warp_field: bool,
    /// invalid_tile_map.fits and tile_invalid_map.png.
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

/// Pixels sampled (on a regular grid) for the `DATAMED`/`DATASIG` header figures.
const IMAGE_STAT_SAMPLES: usize = 1 << 18;

/// The header of a result: provenance and the figures a user expects.
pub fn output_meta(run: &RunOutput, kind: &str) -> OutputMeta {
    let s = &run.summary;
    let mut cards = vec![
        card_str(
            "CREATOR",
            &format!(
                "{} {} {kind}",
                fits::CREATOR_PREFIX,
                env!("CARGO_PKG_VERSION")
            ),
            "software that wrote this file",
        ),
        card_int(
            "NCOMBINE",
            s.frames_used as i64,
            "number of frames combined",
        ),
        card_int("TLRTILES", s.tiles_total as i64, "tiles in the grid"),
        card_int("TLRVALID", s.tiles_valid as i64, "tiles reconstructed"),
        card_int("TLRTSIZE", s.tile_size_px as i64, "[px] tile size"),
        card_float(
            "TLRFWHM",
            f64::from(s.median_fwhm_px),
            "[px] median FWHM of input frames",
        ),
        card_str(
            "TLRMODE",
            match s.registration {
                crate::settings::Registration::TileLocal => "tile-local",
                crate::settings::Registration::GlobalOnly => "global",
            },
            "registration mode",
        ),
    ];
    if let Some(exposure) = s.exposure_total_s {
        cards.push(card_float(
            "EXPTIME",
            exposure,
            "[s] total exposure of combined frames",
        ));
    }
    if let Some(date) = &s.date_obs_first {
        cards.push(card_str(
            "DATE-OBS",
            date,
            "start of the first combined frame",
        ));
    }
    // A sampled estimate (as for every background in tlr): a full sigma-clipped pass over the image
    // cost 30-60 ms per file written, serially at the end of a run.
    if let Some(stats) = tlr_core::stats::background_and_noise(run.image.view(), IMAGE_STAT_SAMPLES)
    {
        cards.push(card_float(
            "DATAMED",
            f64::from(stats.median),
            "median of the image (clipped, sampled)",
        ));
        cards.push(card_float(
            "DATASIG",
            f64::from(stats.sigma),
            "robust sigma of the image (sampled)",
        ));
    }
    OutputMeta {
        cards,
        history: vec![
            format!(
                "tlr {} tile-local registration and reconstruction (methodology v4 phase 6)",
                env!("CARGO_PKG_VERSION")
            ),
            format!("config sha256 {}", s.config_digest),
            format!(
                "{} of {} frames used, {} of {} tiles valid",
                s.frames_used, s.frames_total, s.tiles_valid, s.tiles_total
            ),
        ],
    }
}

/// Everything a finished run can write, for [`write_outputs`].
#[derive(Debug, Clone, Copy)]
pub struct OutputRequest<'a> {
    /// The image (FITS); its preview goes next to it as `<stem>.png`.
    pub image: &'a Path,
    /// Also write the reconstructed mosaic to [`cfa_path`] (colour runs only; a mono run writes none).
    pub keep_cfa: bool,
    /// The diagnostics folder and what to write into it.
    pub diagnostics: Option<(&'a Path, DiagnosticsSelection)>,
}

/// Writes what `request` asks for: the image and its preview ([`write_image`]), the mosaic
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
        let image = write_image(run, request.image);
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
fn joined<T>(
    handle: std::thread::ScopedJoinHandle<'_, T>,
    what: &'static str,
) -> Result<T, StageError> {
    handle.join().map_err(|panic| StageError::Panicked {
        stage: Stage::Output,
        what,
        message: crate::error::panic_message(panic.as_ref()),
    })
}

/// The diagnostics files, by name inside the diagnostics folder.
const TILE_REPORT: &str = "tile_report.json";
const WARP_DX: &str = "warp_dx.fits";
const WARP_DY: &str = "warp_dy.fits";
const WARP_FIELD: &str = "warp_field.png";
const INVALID_TILE_MAP: &str = "invalid_tile_map.fits";
const TILE_INVALID_MAP_PNG: &str = "tile_invalid_map.png";
const WARP_VARIANCE_HIST: &str = "warp_variance_hist.png";

/// The preview written next to `image`: `OUT.fits` -> `OUT.png`.
pub fn preview_path(image: &Path) -> PathBuf {
    image.with_extension("png")
}

/// Every file `request` may write: image, preview, the mosaic (when asked for; a mono run then writes
/// none) and the diagnostics as selected. The paths [`check_output_paths`] is given.
pub fn planned_files(request: &OutputRequest) -> Vec<PathBuf> {
    let mut files = vec![request.image.to_path_buf(), preview_path(request.image)];
    if request.keep_cfa {
        files.push(cfa_path(request.image));
    }
    if let Some((dir, selection)) = request.diagnostics {
        let mut names = vec![TILE_REPORT];
        if selection.warp_field {
            names.extend([WARP_DX, WARP_DY, WARP_FIELD]);
        }
        if selection.tile_invalid_map {
            names.extend([INVALID_TILE_MAP, TILE_INVALID_MAP_PNG]);
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
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing parents, adding those it created (outermost first) to `created`.
fn create_folder(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), StageError> {
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

/// Refuses (with [`StageError::UnsafeOutput`], naming the path and the reason) any of `outputs` that
/// would replace an input: a file in `input_dir` that `patterns` match (an input frame, or a file the
/// scan would skip), unless it is one of tlr's own outputs; and any output that is another output of
/// the same list, an existing folder, or a special file (device, FIFO, socket). Paths are compared
/// after resolving symlinks: the parent folder canonicalized plus the file name, and also the link's
/// target when the name itself is a symlink. Reads only metadata (and the header of a matched file).
/// Call it before the run reads anything; `tlr run` and `tlr watch` do.
///
/// # Errors
/// The first refused path; [`StageError::Scan`] when `patterns` are invalid.
pub fn check_output_paths(
    input_dir: &Path,
    patterns: &[String],
    outputs: &[PathBuf],
) -> Result<(), StageError> {
    let input = std::fs::canonicalize(input_dir).unwrap_or_else(|_| input_dir.to_path_buf());
    let matcher = tlr_core::scan::NameFilter::new(&input, patterns)?;
    let refuse = |path: &Path, reason: String| StageError::UnsafeOutput {
        path: path.to_path_buf(),
        reason,
    };
    let mut seen: Vec<(PathBuf, &Path)> = Vec::new();
    for path in outputs {
        let Some(name) = path.file_name() else {
            return Err(refuse(path, "names no file".into()));
        };
        let resolved = resolve(path, name);
        if let Some((_, first)) = seen.iter().find(|(r, _)| *r == resolved) {
            return Err(refuse(
                path,
                format!(
                    "is also where `{}` would be written: one file cannot be two outputs",
                    first.display()
                ),
            ));
        }
        seen.push((resolved.clone(), path));
        if let Some(parent) = resolved.parent() {
            if std::fs::metadata(parent).is_ok_and(|m| !m.is_dir()) {
                return Err(refuse(
                    path,
                    format!("is inside `{}`, which is not a folder", parent.display()),
                ));
            }
        }
        let Ok(meta) = std::fs::metadata(&resolved) else {
            continue; // nothing there yet (or a dangling link, which the rename replaces)
        };
        if let Some(kind) = tlr_core::fits::not_a_regular_file(&meta.file_type()) {
            return Err(refuse(
                path,
                format!("is {kind}; an output must be a regular file (or not exist yet)"),
            ));
        }
        let target = std::fs::canonicalize(&resolved).unwrap_or_else(|_| resolved.clone());
        for candidate in [&resolved, &target] {
            if is_matched_input(candidate, &input, &matcher) {
                return Err(refuse(
                    path,
                    format!(
                        "is an input frame (a file the frame patterns `{}` match in `{}`); writing \
                         it would replace the input: choose an output outside the input or another name",
                        patterns.join(" "),
                        input_dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `path` with its parent canonicalized (when it exists) and `name` appended.
fn resolve(path: &Path, name: &OsStr) -> PathBuf {
    let parent = folder_of(path);
    std::fs::canonicalize(parent)
        .unwrap_or_else(|_| std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf()))
        .join(name)
}

/// Whether `path` (resolved) is a file in `input` (canonical) that the scan would look at: a visible
/// name the frame patterns match, not one of tlr's own outputs.
fn is_matched_input(path: &Path, input: &Path, matcher: &tlr_core::scan::NameFilter) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    if dir != input || !matcher.is_candidate(name) {
        return false;
    }
    let own_output = fits::read_header(path)
        .ok()
        .and_then(|h| h.creator)
        .is_some_and(|c| fits::is_own_output(&c));
    !own_output
}

/// Writes the image as float32 FITS and, next to it, `<stem>.png` (auto-stretched preview), the two
/// side by side. Returns the preview's path. A colour run writes the demosaiced RGB cube `(3, H, W)`
/// and a colour preview (auto white balance from the background).
///
/// # Errors
/// When a file cannot be written (the error names it; the FITS file's error comes first).
pub fn write_image(run: &RunOutput, path: &Path) -> Result<PathBuf, StageError> {
    let mut meta = output_meta(run, "result");
    let png = preview_path(path);
    let Some(colour) = &run.colour else {
        side_by_side(
            || fits::write_image_atomic(path, run.image.view(), SampleFormat::F32, &meta),
            || preview::write_png_preview_atomic(&png, run.image.view()),
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
    side_by_side(
        || fits::write_cube_atomic(path, rgb.view(), &meta),
        || preview::write_rgb_png_preview_atomic(&png, rgb.view()),
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

/// The path of the kept mosaic next to `output`: `OUT.fits` -> `OUT.cfa.fits`.
pub fn cfa_path(output: &Path) -> PathBuf {
    output.with_extension("cfa.fits")
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
    fits::write_image_atomic(path, cfa.view(), SampleFormat::F32, &meta)
        .map_err(|e| StageError::fits(Stage::Output, e))?;
    Ok(true)
}

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

/// Writes the diagnostics into `dir` (created if needed): `tile_report.json` always, the rest as selected.
/// Returns the files written, in the order listed below.
///
/// `warp_dx.fits`/`warp_dy.fits` are cubes `(frames, grid rows, grid cols)`: per used frame and tile, the
/// tile's local shift relative to the frame's global motion (NaN where the frame was rejected or the tile
/// invalid). `warp_field.png` draws that field, as arrows per tile, for the frame where it is strongest.
/// `invalid_tile_map.fits` is `(grid rows, grid cols)`, 1 for invalid tiles.
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
    let png_out = |name: &str,
                   write: &dyn Fn(&Path) -> Result<(), preview::PreviewError>|
     -> Result<PathBuf, StageError> {
        let path = dir.join(name);
        write(&path).map_err(|e| StageError::Output {
            path: path.clone(),
            message: crate::error::report(&e),
        })?;
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
    type Job<'a> = Box<dyn FnOnce() -> Result<PathBuf, StageError> + Send + 'a>;
    let mut jobs: Vec<Job> = vec![Box::new(|| write_tile_report(run, &dir.join(TILE_REPORT)))];
    if let Some((dx, dy)) = &warp {
        jobs.push(Box::new(|| fits_out(WARP_DX, dx.view())));
        jobs.push(Box::new(|| fits_out(WARP_DY, dy.view())));
        jobs.push(Box::new(|| {
            let slot = strongest_frame(dx, dy);
            let valid: Vec<&crate::report::TileSummary> =
                run.tiles.iter().filter(|t| t.valid).collect();
            let boxes: Vec<tlr_core::TileBox> = valid.iter().map(|t| t.tile).collect();
            let arrows: Vec<tlr_core::Shift> = valid
                .iter()
                .map(|t| {
                    let (gy, gx) = position(&t.tile);
                    tlr_core::Shift::new(dy[[slot, gy, gx]], dx[[slot, gy, gx]])
                })
                .collect();
            png_out(WARP_FIELD, &|png| {
                preview::write_warp_field_png(png, run.image.view(), &boxes, &arrows, 0.0)
            })
        }));
    }
    if let Some(map) = &invalid_map {
        jobs.push(Box::new(|| {
            fits_out(INVALID_TILE_MAP, map.view().insert_axis(ndarray::Axis(0)))
        }));
        jobs.push(Box::new(|| {
            let boxes: Vec<tlr_core::TileBox> = run.tiles.iter().map(|t| t.tile).collect();
            let valid: Vec<bool> = run.tiles.iter().map(|t| t.valid).collect();
            let (rows, cols) = run.image.dim();
            png_out(TILE_INVALID_MAP_PNG, &|png| {
                preview::write_tile_map_png(png, rows, cols, &boxes, &valid)
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
            png_out(WARP_VARIANCE_HIST, &|png| {
                preview::write_histogram_png(png, &values, 30)
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

/// The frame (slot) whose local warp field is strongest (largest mean squared local shift over the
/// tiles): the one `warp_field.png` shows, as the most telling example of the field.
fn strongest_frame(dx: &Array3<f32>, dy: &Array3<f32>) -> usize {
    let energy = |slot: usize| -> f64 {
        let (sum, n) = dx
            .index_axis(ndarray::Axis(0), slot)
            .iter()
            .zip(dy.index_axis(ndarray::Axis(0), slot).iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .fold((0.0f64, 0usize), |(s, n), (x, y)| {
                (s + f64::from(x * x + y * y), n + 1)
            });
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    };
    (0..dx.len_of(ndarray::Axis(0)))
        .max_by(|&a, &b| energy(a).total_cmp(&energy(b)))
        .unwrap_or(0)
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

fn card_str(key: &str, value: &str, comment: &str) -> Card {
    Card {
        key: key.into(),
        value: CardValue::Str(value.into()),
        comment: comment.into(),
    }
}

fn card_int(key: &str, value: i64, comment: &str) -> Card {
    Card {
        key: key.into(),
        value: CardValue::Int(value),
        comment: comment.into(),
    }
}

fn card_float(key: &str, value: f64, comment: &str) -> Card {
    Card {
        key: key.into(),
        value: CardValue::Float(value),
        comment: comment.into(),
    }
}
