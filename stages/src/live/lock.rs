//! Where a live session keeps its state next to the output (`OUT.checkpoint/`, `OUT.lock`), the lock
//! that keeps a second session off the same output, and the clean-up of temporary files a killed
//! session left. What it does not: read or write the checkpoint's content ([`tlr_core::live`] does).

use std::path::{Path, PathBuf};

use crate::error::StageError;

/// The checkpoint folder used for an output file: `OUT.checkpoint` next to it.
pub fn checkpoint_dir_for(output: &Path) -> PathBuf {
    sibling(output, ".checkpoint")
}

/// The lock file of an output file: `OUT.lock` next to it (see [`OutputLock`]).
pub fn lock_path_for(output: &Path) -> PathBuf {
    sibling(output, ".lock")
}

/// `output`'s name with `suffix` appended, in the same folder.
fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    output.with_file_name(name)
}

/// An exclusive lock on an output file, held while the value lives: `OUT.lock` next to the output
/// ([`lock_path_for`]), locked with `flock(2)`, holding the owner's pid for the message another
/// session prints.
///
/// Why `flock` and not a file created with `O_EXCL` plus a pid check: the kernel releases the lock
/// when its process ends in any way (SIGKILL and crashes included), so a lock left by a dead process
/// never stops anyone and taking it over has no race between checking the pid and replacing the
/// file. The file itself stays after the session (removing it while another process opens it would
/// let two sessions lock two different files).
#[derive(Debug)]
pub struct OutputLock {
    _file: std::fs::File,
}

impl OutputLock {
    /// Takes the lock of `output`, or fails at once when another process holds it.
    ///
    /// # Errors
    /// [`StageError::Output`] naming the lock file: held by another process (its pid when known), or
    /// the file cannot be created or locked.
    pub fn acquire(output: &Path) -> Result<Self, StageError> {
        use std::io::{Read as _, Write as _};
        use std::os::fd::AsRawFd as _;
        let path = lock_path_for(output);
        let fail = |message: String| StageError::Output {
            path: path.clone(),
            message,
        };
        // The output's folder is created here, first: the lock is the session's first file in it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create the output folder: {e}")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(format!("cannot open the lock file: {e}")))?;
        // SAFETY: flock(2) on a descriptor owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let os = std::io::Error::last_os_error();
            if os.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(fail(format!("cannot lock the lock file: {os}")));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let owner = text.trim().parse::<u32>().map_or_else(
                |_| "another process".to_string(),
                |pid| format!("process {pid}"),
            );
            return Err(fail(format!(
                "locked by {owner}: another `tlr watch` is writing this output; stop it first or \
                 choose another output"
            )));
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| fail(format!("cannot write the lock file: {e}")))?;
        Ok(Self { _file: file })
    }
}

/// Removes the hidden temporary files (`.NAME.tmp-<pid>…`) that a killed earlier session left next to
/// `path` while writing it; files of live processes (another writer) are left alone.
pub(super) fn remove_stale_temporaries(path: &Path) {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        tlr_core::atomic::remove_stale_temporaries(dir, Some(name));
    }
}
