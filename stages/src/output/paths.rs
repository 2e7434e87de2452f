//! Output-path safety: before a run reads anything, every path it will write is resolved (parent
//! canonicalized, plus the file name, and the link target when the name is a symlink) and refused when
//! it is an input frame or any other file the frame patterns match in the input folder (tlr's own
//! earlier outputs excepted), another output of the same run, a folder, or a special file (device,
//! FIFO, socket). Also used by `tlr watch`.
//!
//! What it does not: write anything; it reads metadata (and the header of a matched file) only.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tlr_core::fits;

use super::folder_of;
use crate::error::StageError;

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
