//! The cfitsio side of the module: paths handed to cfitsio so that it takes them literally
//! (`fits_open_diskfile` / `fits_create_diskfile`, never the extended filename syntax), cfitsio's
//! status and message stack as a [`FitsError::Cfitsio`], opening an image HDU the header walk has
//! validated (and checking that cfitsio agrees on its geometry), and region reads with `ffgsv`: the
//! backend for tile-compressed images and for uncompressed ones with unusual scaling cards.
//!
//! What it does not: no validation of the file (the header walk in [`super::header`] has done it
//! before cfitsio sees the file), no choice of backend ([`super::reader`]), no writing (the writer
//! in [`super::write`] uses these helpers and cfitsio's write calls itself).

use std::ffi::{CStr, CString};
use std::ops::Range;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use fitsio::FitsFile;
use fitsio_sys as sys;

use super::header::Layout;
use super::FitsError;

/// cfitsio's longest file name (FLEN_FILENAME - 1).
const MAX_PATH_BYTES: usize = 1024;

// cfitsio data type codes (fitsio.h).
pub(super) const TFLOAT: c_int = 42;
pub(super) const TUSHORT: c_int = 20;
pub(super) const FLOAT_IMG: c_int = -32;
pub(super) const USHORT_IMG: c_int = 20;

/// Path as a C string cfitsio takes literally (absolute or `./`-prefixed: cfitsio strips leading
/// blanks).
pub(super) fn c_path(path: &Path) -> Result<CString, String> {
    let mut p = PathBuf::new();
    if path.is_relative() {
        p.push(".");
    }
    p.push(path);
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = p
        .to_str()
        .ok_or_else(|| "the path is not valid Unicode".to_string())?
        .as_bytes()
        .to_vec();
    if bytes.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long; cfitsio accepts at most {MAX_PATH_BYTES}",
            bytes.len()
        ));
    }
    CString::new(bytes).map_err(|_| "the path contains a NUL byte".to_string())
}

/// cfitsio's status text plus its error message stack (which is cleared).
fn cfitsio_message(status: c_int) -> String {
    let mut text = [0 as c_char; 32];
    // SAFETY: ffgerr writes at most FLEN_STATUS (31) bytes including the NUL.
    unsafe { sys::ffgerr(status, text.as_mut_ptr()) };
    // SAFETY: NUL-terminated by ffgerr.
    let mut message = unsafe { CStr::from_ptr(text.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut buf = [0 as c_char; 96];
    for _ in 0..8 {
        // SAFETY: ffgmsg writes at most FLEN_ERRMSG (81) bytes including the NUL.
        let more = unsafe { sys::ffgmsg(buf.as_mut_ptr()) };
        if more == 0 {
            break;
        }
        // SAFETY: NUL-terminated by ffgmsg.
        let line = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .trim()
            .to_string();
        if !line.is_empty() && !message.contains(&line) {
            message.push_str("; ");
            message.push_str(&line);
        }
    }
    // SAFETY: clears cfitsio's (thread-local with reentrant builds) message stack.
    unsafe { sys::ffcmsg() };
    message
}

pub(super) fn cfitsio_error(path: &Path, action: &'static str, status: c_int) -> FitsError {
    FitsError::Cfitsio {
        path: path.to_path_buf(),
        action,
        status,
        message: cfitsio_message(status),
    }
}

/// Opens the image HDU of a validated file with cfitsio and checks that cfitsio agrees with
/// `layout` on its geometry.
pub(super) fn open_cfitsio(path: &Path, layout: &Layout) -> Result<FitsFile, FitsError> {
    let c_name = c_path(path).map_err(|reason| FitsError::NotFits {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut fptr: *mut sys::fitsfile = ptr::null_mut();
    let mut status: c_int = 0;
    // SAFETY: valid NUL-terminated name, out-pointer to a local; READONLY = 0.
    unsafe { sys::ffdkopn(&mut fptr, c_name.as_ptr(), 0, &mut status) };
    if status != 0 || fptr.is_null() {
        if !fptr.is_null() {
            let mut s2 = 0;
            // SAFETY: fptr came from ffdkopn.
            unsafe { sys::ffclos(fptr, &mut s2) };
        }
        return Err(cfitsio_error(path, "opening the file", status));
    }
    // SAFETY: fptr is a valid open handle; FitsFile takes ownership and closes it on drop.
    let mut file =
        unsafe { FitsFile::from_raw(fptr, fitsio::FileOpenMode::READONLY) }.map_err(|e| {
            FitsError::Cfitsio {
                path: path.to_path_buf(),
                action: "opening the file",
                status: -1,
                message: e.to_string(),
            }
        })?;
    // SAFETY: the handle is valid while `file` lives.
    let raw = unsafe { file.as_raw() };
    let mut hdutype: c_int = 0;
    // SAFETY: valid handle; cfitsio HDU numbers are 1-based.
    unsafe { sys::ffmahd(raw, layout.hdu as c_int + 1, &mut hdutype, &mut status) };
    if status != 0 {
        return Err(cfitsio_error(path, "moving to the image HDU", status));
    }
    let mut bitpix: c_int = 0;
    let mut naxis: c_int = 0;
    let mut naxes = [0 as sys::LONGLONG; 9];
    // SAFETY: valid handle; naxes holds maxaxis entries.
    unsafe {
        sys::ffgiprll(
            raw,
            9,
            &mut bitpix,
            &mut naxis,
            naxes.as_mut_ptr(),
            &mut status,
        )
    };
    if status != 0 {
        return Err(cfitsio_error(path, "reading the image geometry", status));
    }
    let agrees = naxis as usize == layout.naxis
        && naxes[0] == layout.cols as sys::LONGLONG
        && naxes[1] == layout.rows as sys::LONGLONG
        && (layout.naxis < 3 || naxes[2] == layout.planes as sys::LONGLONG)
        && i64::from(bitpix) == layout.bitpix;
    if !agrees {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!(
                "cfitsio sees BITPIX {bitpix}, NAXIS {naxis} {:?} where the header says BITPIX {}, {}x{}",
                &naxes[..naxis.clamp(0, 9) as usize],
                layout.bitpix,
                layout.rows,
                layout.cols
            ),
        });
    }
    Ok(file)
}

/// Reads a checked region of plane `plane` with cfitsio's `ffgsv` (`TFLOAT`, null value NaN) and
/// turns every non-finite value into `f32::NAN`.
pub(super) fn cfitsio_region(
    file: &mut FitsFile,
    path: &Path,
    naxis: usize,
    plane: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Result<Vec<f32>, FitsError> {
    // cfitsio pixel coordinates are 1-based, inclusive, in FITS axis order (x first).
    let mut blc: Vec<c_long> = vec![cols.start as c_long + 1, rows.start as c_long + 1];
    let mut trc: Vec<c_long> = vec![cols.end as c_long, rows.end as c_long];
    let mut inc: Vec<c_long> = vec![1, 1];
    if naxis == 3 {
        let p = plane as c_long + 1;
        blc.push(p);
        trc.push(p);
        inc.push(1);
    }
    let mut data = vec![0f32; rows.len() * cols.len()];
    let mut nulval = f32::NAN;
    let mut anynul: c_int = 0;
    let mut status: c_int = 0;
    // SAFETY: valid handle; blc/trc/inc have NAXIS entries; data holds exactly the region.
    unsafe {
        sys::ffgsv(
            file.as_raw(),
            TFLOAT,
            blc.as_mut_ptr(),
            trc.as_mut_ptr(),
            inc.as_mut_ptr(),
            &mut nulval as *mut f32 as *mut c_void,
            data.as_mut_ptr() as *mut c_void,
            &mut anynul,
            &mut status,
        )
    };
    if status != 0 {
        return Err(cfitsio_error(path, "reading pixels", status));
    }
    for v in &mut data {
        if !v.is_finite() {
            *v = f32::NAN;
        }
    }
    Ok(data)
}
