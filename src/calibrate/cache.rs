//! The master cache: a master built from a folder of frames is written as FITS (F32, atomically, with
//! HISTORY lines naming the method and every input file) into a cache folder, under a name that carries
//! a digest of what it was built from: the kind, the combination method and each input file's
//! identity (path, size, modification time). The next run with unchanged inputs reads it instead of
//! building it again; any change of an input file gives another name, so a stale master is never used.
//!
//! What it does not: delete old masters, or check the pixels of a cached master (its name is its key).

use ndarray::Array2;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{CalibrationError, Combine};
use crate::fits::{self, CardValue, FrameHeader, OutputMeta, SampleFormat};

/// The digest (16 hex characters) of a master's inputs: `kind`, `method` and every file's identity.
///
/// # Errors
/// [`CalibrationError::Folder`] when a file's metadata cannot be read.
pub fn key(
    kind: &str,
    method: Combine,
    frames: &[FrameHeader],
) -> Result<String, CalibrationError> {
    let mut hasher = Sha256::new();
    hasher.update(format!("tlr master v1\n{kind}\n{}\n", method.describe()).as_bytes());
    for h in frames {
        let meta = std::fs::metadata(&h.path).map_err(|e| CalibrationError::Folder {
            what: format!("{kind} frame"),
            path: h.path.clone(),
            reason: format!("cannot read its metadata: {e}"),
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let path = std::fs::canonicalize(&h.path).unwrap_or_else(|_| h.path.clone());
        hasher.update(format!("{}\0{}\0{mtime}\n", path.display(), meta.len()).as_bytes());
    }
    let mut hex = String::with_capacity(16);
    for byte in &hasher.finalize()[..8] {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Where the master of `kind` with `key` lives in `dir`.
pub fn path(dir: &Path, kind: &str, key: &str) -> PathBuf {
    dir.join(format!("master-{kind}-{key}.fits"))
}

/// The cached master at `path`, when it exists and has `shape`; `None` otherwise (then it is built).
pub fn load(path: &Path, shape: (usize, usize)) -> Option<Array2<f32>> {
    if !path.is_file() {
        return None;
    }
    fits::read_image(path)
        .ok()
        .map(|(_, image)| image)
        .filter(|image| image.dim() == shape)
}

/// Writes `master` to `path` atomically, with `cards` (e.g. EXPTIME, CCD-TEMP) and HISTORY lines
/// saying how it was built and from which files.
///
/// # Errors
/// The cache folder cannot be created, or the file cannot be written.
pub fn store(
    path: &Path,
    master: &Array2<f32>,
    kind: &str,
    method: Combine,
    frames: &[FrameHeader],
    cards: &[(&str, CardValue)],
) -> Result<(), CalibrationError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CalibrationError::Folder {
            what: "master cache folder".into(),
            path: dir.to_path_buf(),
            reason: format!("cannot create it: {e}"),
        })?;
    }
    let mut meta = OutputMeta::tlr_output(&format!("master-{kind}"));
    for (key, value) in cards {
        meta = meta.with_card(key, value.clone(), "");
    }
    meta = meta.with_history(&format!(
        "tlr master {kind}: {} of {} frames",
        method.describe(),
        frames.len()
    ));
    for h in frames {
        let name = h.path.display().to_string();
        if name.bytes().all(|b| (32..127).contains(&b)) {
            meta = meta.with_history(&format!("input {name}"));
        }
    }
    fits::write_image_atomic(path, master.view(), SampleFormat::F32, &meta)?;
    Ok(())
}
