//! Frame scan: list the frames of a folder, read and check their headers, put them in time order.
//!
//! What it does ([`scan_folder`]):
//! - lists the entries directly in the folder (not recursive) whose *file name* matches one of
//!   the glob patterns, case-insensitively (default `*.fit *.fits *.fts *.fit.fz *.fits.fz`);
//!   other files are not looked at and not reported; a matching entry that is not a regular file
//!   (after following links: a folder, FIFO, device or socket) or that cannot be examined (dangling
//!   link, link loop) is skipped with the reason, without being opened;
//! - ignores hidden files (name starting with `.`; the atomic writer's temporary files are hidden),
//!   the tool's own outputs (header `CREATOR` whose first word is `tlr`, see
//!   [`crate::fits::is_own_output`]) and every path in [`ScanOptions::exclude`]: these are listed in
//!   [`ScanReport::ignored`], never as errors;
//! - reads each header with [`crate::fits::read_header`] (which rejects empty, non-FITS, truncated
//!   and unsupported files); each rejected file becomes a [`SkippedFile`] with the reason;
//! - keeps one frame size: the size most frames have wins; on a tie, the size of the earliest frame
//!   (in the order below) wins; frames of another size are skipped with a reason;
//! - orders frames by `DATE-OBS` (parsed with [`crate::fits::parse_date_obs`], time zones honoured),
//!   ties broken by file name; frames without a parseable `DATE-OBS` come **after** all dated frames,
//!   ordered by file name (byte-wise, so zero-padded numbers sort naturally), and a note says so.
//!
//! What it does not: read pixels (an all-NaN frame is found when it is read), watch the folder,
//! recurse into sub-folders, or fail on skipped files: strict mode is the caller's choice
//! ([`ScanReport::ensure_no_skips`]).

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::fits::{self, FrameHeader};

/// The default file name patterns of a frame folder.
pub const DEFAULT_PATTERNS: &[&str] = &["*.fit", "*.fits", "*.fts", "*.fit.fz", "*.fits.fz"];

/// What to scan for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// Glob patterns matched case-insensitively against file names (not paths).
    pub patterns: Vec<String>,
    /// Files to ignore silently (e.g. the output file of the current run); compared after
    /// canonicalisation, so relative and absolute spellings match.
    pub exclude: Vec<PathBuf>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            patterns: DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect(),
            exclude: Vec::new(),
        }
    }
}

/// A file that matched the patterns but cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped (a user-facing sentence).
    pub reason: String,
}

/// The result of a scan: usable frames in order, plus what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanReport {
    /// The scanned folder, as given.
    pub dir: PathBuf,
    /// Usable frames in time order (see the module docs).
    pub frames: Vec<FrameHeader>,
    /// Files that matched but were skipped, with reasons, in file name order.
    pub skipped: Vec<SkippedFile>,
    /// Rows of every frame.
    pub rows: usize,
    /// Columns of every frame.
    pub cols: usize,
    /// Files ignored on purpose (hidden files excepted): own outputs and excluded paths.
    pub ignored: Vec<PathBuf>,
    /// Remarks for the user that are not errors (e.g. frames without DATE-OBS ordered by name).
    pub notes: Vec<String>,
}

impl ScanReport {
    /// Strict mode: an error listing every skipped file, if there is any.
    ///
    /// # Errors
    /// [`ScanError::Skipped`] when `skipped` is not empty.
    pub fn ensure_no_skips(&self) -> Result<(), ScanError> {
        if self.skipped.is_empty() {
            Ok(())
        } else {
            Err(ScanError::Skipped {
                dir: self.dir.clone(),
                count: self.skipped.len(),
                list: list_skipped(&self.skipped),
            })
        }
    }
}

/// Errors of the frame scan. Every variant names the folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The folder cannot be listed (missing, not a folder, no permission).
    #[error("frame folder `{dir}`: cannot list it")]
    Unreadable {
        /// The folder.
        dir: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A glob pattern is invalid.
    #[error("frame folder `{dir}`: invalid file pattern `{pattern}`")]
    BadPattern {
        /// The folder.
        dir: PathBuf,
        /// The pattern.
        pattern: String,
        /// The glob parser's error.
        #[source]
        source: globset::Error,
    },
    /// No file matches the patterns.
    #[error("frame folder `{dir}`: no file matches {patterns}")]
    NoMatches {
        /// The folder.
        dir: PathBuf,
        /// The patterns, space-separated.
        patterns: String,
    },
    /// Files matched, but none is a usable frame.
    #[error("frame folder `{dir}`: no usable frame; {count} file(s) skipped:{list}")]
    NoUsableFrames {
        /// The folder.
        dir: PathBuf,
        /// Number of skipped files.
        count: usize,
        /// One line per skipped file with its reason.
        list: String,
    },
    /// Strict mode: some files were skipped.
    #[error("frame folder `{dir}`: {count} file(s) skipped (strict mode):{list}")]
    Skipped {
        /// The folder.
        dir: PathBuf,
        /// Number of skipped files.
        count: usize,
        /// One line per skipped file with its reason.
        list: String,
    },
}

fn list_skipped(skipped: &[SkippedFile]) -> String {
    skipped
        .iter()
        .map(|s| format!("\n  - {}: {}", s.path.display(), s.reason))
        .collect()
}

fn build_globs(dir: &Path, patterns: &[String]) -> Result<GlobSet, ScanError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(true)
            .build()
            .map_err(|source| ScanError::BadPattern {
                dir: dir.to_path_buf(),
                pattern: pattern.clone(),
                source,
            })?;
        builder.add(glob);
    }
    builder.build().map_err(|source| ScanError::BadPattern {
        dir: dir.to_path_buf(),
        pattern: patterns.join(" "),
        source,
    })
}

/// The scan's file name rule, for callers that list a folder themselves (the folder follower,
/// `tlr::source::follow` in the `tlr` crate): a name is a candidate when it is not hidden (does not start with `.`) and
/// matches one of the glob patterns, case-insensitively.
#[derive(Debug, Clone)]
pub struct NameFilter {
    globs: GlobSet,
}

impl NameFilter {
    /// Compiles `patterns` (globs matched against file names, not paths).
    ///
    /// # Errors
    /// [`ScanError::BadPattern`] (naming `dir`) for an invalid glob.
    pub fn new(dir: &Path, patterns: &[String]) -> Result<Self, ScanError> {
        Ok(Self {
            globs: build_globs(dir, patterns)?,
        })
    }

    /// True when a file called `name` is looked at by the scan.
    pub fn is_candidate(&self, name: &std::ffi::OsStr) -> bool {
        !name.to_string_lossy().starts_with('.') && self.globs.is_match(Path::new(name))
    }
}

/// Sorts frames into scan order: dated frames by (`DATE-OBS` time, file name), then frames without
/// a parseable `DATE-OBS` by file name (byte-wise). Returns how many frames are undated.
pub fn sort_frames(frames: &mut Vec<FrameHeader>) -> usize {
    let mut keyed: Vec<(Option<f64>, FrameHeader)> = frames
        .drain(..)
        .map(|h| (h.date_obs.as_deref().and_then(fits::parse_date_obs), h))
        .collect();
    keyed.sort_by(|(ta, a), (tb, b)| {
        let by_time = match (ta, tb) {
            (Some(x), Some(y)) => x.total_cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_time.then_with(|| name_of(&a.path).cmp(name_of(&b.path)))
    });
    let undated = keyed.iter().filter(|(t, _)| t.is_none()).count();
    frames.extend(keyed.into_iter().map(|(_, h)| h));
    undated
}

fn name_of(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// Lists, checks and orders the frames of `dir` (see the module docs for the rules).
///
/// # Errors
/// [`ScanError::Unreadable`] when the folder cannot be listed, [`ScanError::BadPattern`] for an
/// invalid glob, [`ScanError::NoMatches`] when no file matches, [`ScanError::NoUsableFrames`] when
/// every matching file was skipped or ignored (the message lists each skip with its reason).
pub fn scan_folder(dir: &Path, options: &ScanOptions) -> Result<ScanReport, ScanError> {
    let names = NameFilter::new(dir, &options.patterns)?;
    let unreadable = |source| ScanError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    };
    let meta = fs::metadata(dir).map_err(unreadable)?;
    if !meta.is_dir() {
        return Err(unreadable(io::Error::other("it is not a folder")));
    }
    let excluded: Vec<PathBuf> = options
        .exclude
        .iter()
        .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();

    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = match entry {
            Ok(e) => e,
            Err(source) => return Err(unreadable(source)),
        };
        if !names.is_candidate(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // `metadata` follows links: a link is judged by what it points to.
        match fs::metadata(&path) {
            Ok(m) => match fits::not_a_regular_file(&m.file_type()) {
                None => candidates.push(path),
                // Never opened: a FIFO would block the scan, a device never ends.
                Some(kind) => skipped.push(SkippedFile {
                    path,
                    reason: format!("it is {kind}, not a regular file"),
                }),
            },
            Err(e) => skipped.push(SkippedFile {
                path,
                reason: format!("cannot read it: {e}"),
            }),
        }
    }
    candidates.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    if candidates.is_empty() && skipped.is_empty() {
        return Err(ScanError::NoMatches {
            dir: dir.to_path_buf(),
            patterns: options.patterns.join(" "),
        });
    }

    let mut ignored = Vec::new();
    let mut headers = Vec::new();
    for path in candidates {
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if excluded.contains(&canonical) {
            ignored.push(path);
            continue;
        }
        match fits::read_header(&path) {
            Ok(h) if h.creator.as_deref().is_some_and(fits::is_own_output) => ignored.push(path),
            Ok(h) => headers.push(h),
            Err(e) => skipped.push(SkippedFile {
                path,
                reason: crate::report(&e),
            }),
        }
    }

    // Time order: dated frames by (time, name), then undated frames by name.
    let mut ordered = headers;
    let undated = sort_frames(&mut ordered);
    let total = ordered.len();
    let mut notes = Vec::new();
    if undated > 0 && undated < total {
        notes.push(format!("{undated} frame(s) have no usable DATE-OBS; they are ordered by file name after the dated frames"));
    } else if undated > 0 {
        notes.push("no frame has a usable DATE-OBS; frames are ordered by file name".to_string());
    }

    // One size: the most common wins; ties go to the size seen first in time order.
    let mut sizes: Vec<((usize, usize), usize)> = Vec::new();
    for h in &ordered {
        match sizes.iter_mut().find(|(s, _)| *s == (h.rows, h.cols)) {
            Some((_, n)) => *n += 1,
            None => sizes.push(((h.rows, h.cols), 1)),
        }
    }
    let winner = sizes.iter().fold(
        None::<((usize, usize), usize)>,
        |best, &(s, n)| match best {
            Some((_, bn)) if bn >= n => best,
            _ => Some((s, n)),
        },
    );
    let mut frames = Vec::new();
    if let Some(((rows, cols), n)) = winner {
        for h in ordered {
            if (h.rows, h.cols) == (rows, cols) {
                frames.push(h);
            } else {
                skipped.push(SkippedFile {
                    reason: format!(
                        "its size {}x{} (rows x cols) differs from the {rows}x{cols} of the other {n} frame(s)",
                        h.rows, h.cols
                    ),
                    path: h.path,
                });
            }
        }
    }
    skipped.sort_by(|a, b| name_of(&a.path).cmp(name_of(&b.path)));

    if frames.is_empty() {
        let mut list = list_skipped(&skipped);
        if !ignored.is_empty() {
            list.push_str(&format!(
                "\n  ({} file(s) ignored as this tool's own output or excluded: {})",
                ignored.len(),
                ignored
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Err(ScanError::NoUsableFrames {
            dir: dir.to_path_buf(),
            count: skipped.len(),
            list,
        });
    }
    let (rows, cols) = (frames[0].rows, frames[0].cols);
    Ok(ScanReport {
        dir: dir.to_path_buf(),
        frames,
        skipped,
        rows,
        cols,
        ignored,
        notes,
    })
}
