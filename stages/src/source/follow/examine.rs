//! What one file is: a complete frame, tlr's own output, still being written, or broken. The checks a
//! file must pass before it is handed out (signature, `END` card, the data length BITPIX and NAXISn
//! promise, one finite pixel) and the names that are never frames (temporary files).
//! What it does not: keep state or decide when to look again ([`super::decide`]).

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::Path;

use tlr_core::fits::{self, FitsError, FitsReader, FrameHeader};

/// File name endings of temporary files, compared case-insensitively; never frames.
pub const TEMP_SUFFIXES: &[&str] = &[
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".swp",
    "~",
];

/// Pixels read per band while looking for a finite value.
const PIXEL_BAND: usize = 1 << 16;
/// Length of one FITS block.
const FITS_BLOCK: u64 = 2880;
/// How a FITS file starts.
const FITS_SIGNATURE: &[u8] = b"SIMPLE  = ";

/// What an examination found.
pub(super) enum Examined {
    Frame(Box<FrameHeader>),
    OwnOutput,
}

/// Why a file cannot be used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    /// May still be written: retried until `give_up_after` without change.
    Incomplete,
    /// Looks broken: reported after `retries` + 1 examinations.
    Broken,
}

/// True for names of temporary files (see [`TEMP_SUFFIXES`]).
pub(super) fn is_temporary(name: &OsStr) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    TEMP_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Reads the header (completeness checks included) and, if asked, looks for one finite pixel.
pub(super) fn examine(path: &Path, check_pixels: bool) -> Result<Examined, FitsError> {
    let mut reader = FitsReader::open(path)?;
    let header = reader.header().clone();
    if header.creator.as_deref().is_some_and(fits::is_own_output) {
        return Ok(Examined::OwnOutput);
    }
    if check_pixels {
        let band = (PIXEL_BAND / header.cols.max(1)).max(1);
        let mut row = 0;
        let mut finite = false;
        while row < header.rows && !finite {
            let end = (row + band).min(header.rows);
            finite = reader
                .read_region(row..end, 0..header.cols)?
                .iter()
                .any(|v| v.is_finite());
            row = end;
        }
        if !finite {
            return Err(FitsError::NoFiniteData {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(Examined::Frame(Box::new(header)))
}

/// The header checks alone, for a file that is still changing: `None` when it looks complete.
pub(super) fn peek(path: &Path) -> Option<Trouble> {
    fits::read_header_cards(path)
        .err()
        .map(|e| classify(&e, path))
}

/// Sorts a failed examination into "may still be written" and "broken".
pub(super) fn classify(error: &FitsError, path: &Path) -> Trouble {
    match error {
        FitsError::Empty { .. }
        | FitsError::HeaderTruncated { .. }
        | FitsError::Truncated { .. }
        | FitsError::Unpadded { .. }
        | FitsError::Io { .. } => Trouble::Incomplete,
        FitsError::NotFits { .. } if starts_like_fits(path) => Trouble::Incomplete,
        _ => Trouble::Broken,
    }
}

/// True for a file shorter than one FITS block whose bytes so far are the start of a FITS
/// signature: the fits module calls it "not FITS", but it may be a frame being written.
pub(super) fn starts_like_fits(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if file.take(FITS_BLOCK).read_to_end(&mut head).is_err() || head.len() as u64 >= FITS_BLOCK {
        return false;
    }
    let n = head.len().min(FITS_SIGNATURE.len());
    head[..n] == FITS_SIGNATURE[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        for name in [
            "a.fits.tmp",
            "a.FITS.PART",
            "a.fits~",
            "a.fits.partial",
            "x.crdownload",
        ] {
            assert!(is_temporary(OsStr::new(name)), "{name}");
        }
        for name in ["a.fits", "a.fit", "tmp.fits", "a.part.fits"] {
            assert!(!is_temporary(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn short_fits_prefix_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("a.fits");
        fs::write(&partial, b"SIMPLE  =   ").unwrap();
        let err = fits::read_header(&partial).unwrap_err();
        assert_eq!(classify(&err, &partial), Trouble::Incomplete, "{err}");
        fs::write(&partial, b"SIM").unwrap();
        let err = fits::read_header(&partial).unwrap_err();
        assert_eq!(classify(&err, &partial), Trouble::Incomplete, "{err}");
        let text = dir.path().join("b.fits");
        fs::write(&text, b"this is a note, not a frame\n").unwrap();
        let err = fits::read_header(&text).unwrap_err();
        assert_eq!(classify(&err, &text), Trouble::Broken, "{err}");
        let empty = dir.path().join("c.fits");
        fs::write(&empty, b"").unwrap();
        let err = fits::read_header(&empty).unwrap_err();
        assert_eq!(classify(&err, &empty), Trouble::Incomplete, "{err}");
    }
}
