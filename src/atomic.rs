//! The one way tlr writes a file: a hidden temporary file in the target's folder, fsync, rename over
//! the target, fsync of the folder. A reader (a viewer, a folder follower, a restarted run) sees either
//! the old file or the complete new one, never a half-written file under the final name, and a power cut
//! after [`write_file`] returns cannot lose the rename.
//!
//! Temporary names are `.NAME.tmp-PID-N` (hidden, so frame scans and folder followers skip them; `PID`
//! is the writing process, `N` a per-process counter, so concurrent writers never share a name).
//! [`remove_stale_temporaries`] deletes those whose process is gone (left by SIGKILL or a power cut);
//! every run calls it for the files it is about to write.
//!
//! What it does not: decide whether a path may be written (output-path safety is the caller's), create
//! folders, or encode anything; callers hand in bytes or a closure that writes the temporary file.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed atomic write: what was being done, to which file, and the operating system's reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("{action} `{}`", path.display())]
pub struct AtomicError {
    /// The file the step acted on (the temporary file, the target, or its folder).
    pub path: PathBuf,
    /// The step that failed, e.g. "creating the temporary file".
    pub action: &'static str,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

impl AtomicError {
    fn new(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

const TMP_MARK: &str = ".tmp-";

/// The hidden temporary name next to `path` for this process: `.NAME.tmp-PID-N`.
///
/// # Errors
/// When `path` has no file name (e.g. `..` or `/`).
pub fn temporary_path(path: &Path) -> Result<PathBuf, AtomicError> {
    let name = path.file_name().ok_or_else(|| {
        AtomicError::new(
            path,
            "naming the temporary file for",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path has no file name",
            ),
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!("{TMP_MARK}{}-{n}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Writes `path` atomically: `fill` writes the complete content into the temporary path it is given
/// (which does not exist yet), then the file is synced, renamed over `path`, and the folder synced.
/// On any failure the temporary file is removed and `path` is untouched.
///
/// # Errors
/// `fill`'s error, or an [`AtomicError`] (converted into `E`) naming the step and file that failed.
pub fn write_file<E: From<AtomicError>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temporary_path(path)?;
    let result = fill(&tmp).and_then(|()| commit(&tmp, path).map_err(E::from));
    if result.is_err() {
        let _ = fs::remove_file(&tmp); // best effort: the error is what the user needs
    }
    result
}

/// Writes `bytes` to `path` atomically (see [`write_file`]).
///
/// # Errors
/// When the temporary file cannot be created or written, or the rename fails; the error names the file.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    write_file(path, |tmp| {
        let mut file = create_new(tmp)?;
        file.write_all(bytes)
            .map_err(|e| AtomicError::new(tmp, "writing the temporary file", e))
    })
}

/// Creates `path` for writing, failing if anything (a file, a link, a device) already has that name.
///
/// # Errors
/// When the file exists or the folder is not writable.
pub fn create_new(path: &Path) -> Result<fs::File, AtomicError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| AtomicError::new(path, "creating the temporary file", e))
}

/// Syncs the finished temporary file, renames it over `path`, syncs the folder.
fn commit(tmp: &Path, path: &Path) -> Result<(), AtomicError> {
    fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| AtomicError::new(tmp, "syncing the temporary file", e))?;
    fs::rename(tmp, path)
        .map_err(|e| AtomicError::new(path, "renaming the temporary file onto", e))?;
    // The folder entry of the rename must reach the disk too, or a power cut could bring back the
    // previous file. Best effort: some file systems cannot sync a folder, and the rename is atomic anyway.
    if let Ok(d) = fs::File::open(folder_of(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Removes the temporary files in `dir` (only those of the file named `target`, when given) whose
/// writing process no longer exists. Files of live processes, this one included, are left alone.
/// Returns how many were removed; an unreadable folder is skipped silently.
pub fn remove_stale_temporaries(dir: &Path, target: Option<&OsStr>) -> usize {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((of, pid)) = parse_temporary_name(&name) else {
            continue;
        };
        if target.is_some_and(|t| t != of) {
            continue;
        }
        if !process_alive(pid) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Splits `.NAME.tmp-PID[-N]` into `NAME` and `PID`; `None` for any other name.
fn parse_temporary_name(name: &OsStr) -> Option<(OsString, u32)> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = name.as_bytes().strip_prefix(b".")?;
    let mark = TMP_MARK.as_bytes();
    let at = bytes.windows(mark.len()).rposition(|w| w == mark)?;
    let (target, rest) = (&bytes[..at], &bytes[at + mark.len()..]);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let tail = &rest[digits..];
    let tail_ok = tail.is_empty() || (tail[0] == b'-' && tail[1..].iter().all(u8::is_ascii_digit));
    if target.is_empty() || digits == 0 || !tail_ok {
        return None;
    }
    let pid = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((OsString::from_vec(target.to_vec()), pid))
}

/// Whether a process with this id exists (signal 0 checks without sending anything).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: the process exists but belongs to someone else.
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_unique_and_parse_back() {
        let a = temporary_path(Path::new("/x/r.fits")).unwrap();
        let b = temporary_path(Path::new("/x/r.fits")).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap();
        assert!(name.to_string_lossy().starts_with(".r.fits.tmp-"));
        let (target, pid) = parse_temporary_name(name).unwrap();
        assert_eq!(target, OsString::from("r.fits"));
        assert_eq!(pid, std::process::id());
    }

    #[test]
    fn only_temporary_names_parse() {
        for bad in [
            "r.fits",
            ".r.fits",
            ".r.fits.tmp-",
            ".r.fits.tmp-x",
            ".tmp-12",
            ".r.tmp-12-x",
        ] {
            assert!(parse_temporary_name(OsStr::new(bad)).is_none(), "{bad}");
        }
        assert!(parse_temporary_name(OsStr::new(".r.fits.tmp-12")).is_some());
        assert!(parse_temporary_name(OsStr::new(".a.tmp-1.tmp-12-3")).is_some());
    }

    #[test]
    fn write_replaces_atomically_and_failure_leaves_target_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_bytes(&path, b"one").unwrap();
        write_bytes(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let failed: Result<(), AtomicError> = write_file(&path, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(AtomicError::new(
                tmp,
                "writing",
                std::io::Error::other("disk full"),
            ))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.fits");
        // A pid above the kernel's maximum (4194304) can never be alive.
        let dead = dir.path().join(".r.fits.tmp-99999999-0");
        let dead_other = dir.path().join(".x.png.tmp-99999999");
        let live = temporary_path(&path).unwrap();
        for p in [&dead, &dead_other, &live] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_temporaries(dir.path(), path.file_name()), 1);
        assert!(!dead.exists() && dead_other.exists() && live.exists());
        assert_eq!(remove_stale_temporaries(dir.path(), None), 1);
        assert!(!dead_other.exists() && live.exists());
    }
}
