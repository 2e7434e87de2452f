//! Writing SER files ([`write_ser`]), for the simulator and for tests: mono or Bayer frames, 8 or 16
//! bits, little-endian samples (header field `LittleEndian` = 0, as the major readers understand it,
//! see [`super`]), with an optional timestamp trailer. The file is written atomically
//! ([`crate::atomic::write_file`]), one frame at a time.
//!
//! What it does not: write RGB/BGR frames, big-endian samples, or append to an existing file.

use ndarray::Array2;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{unix_s_to_ticks, SerColor, SerError, FILE_ID, HEADER_LEN, MAX_EDGE_PX};

/// Layout of the frames [`write_ser`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerFrameFormat {
    /// Mono or a Bayer pattern (RGB/BGR are refused).
    pub color: SerColor,
    /// 8 or 16 (bits per sample; values are rounded and clamped to the range).
    pub bits: u32,
}

/// Writes `frames` (all `(rows, cols)` alike; values rounded and clamped to `0..=2^bits - 1`) to `path`
/// as a SER file with `LittleEndian` = 0 and, when `times_utc_s` is given (one per frame, seconds since
/// 1970), a timestamp trailer and the first time as `DateTime_UTC`. `frames` is consumed one frame at
/// a time, so a long sequence is never held in memory.
///
/// # Errors
/// [`SerError::BadFrames`] for no frame, unequal or impossible sizes, an unsupported format or a
/// timestamp count that differs from the frame count; [`SerError::Io`] / [`SerError::Atomic`] when
/// writing fails.
pub fn write_ser(
    path: &Path,
    format: SerFrameFormat,
    frames: impl IntoIterator<Item = Array2<f32>>,
    times_utc_s: Option<&[f64]>,
) -> Result<usize, SerError> {
    let bad = |reason: String| SerError::BadFrames {
        path: path.to_path_buf(),
        reason,
    };
    if format.color.samples() != 1 {
        return Err(bad("only mono and Bayer frames can be written".into()));
    }
    if format.bits != 8 && format.bits != 16 {
        return Err(bad(format!("{} bits per sample (8 or 16)", format.bits)));
    }
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| SerError::Io {
            path,
            action: action.to_string(),
            source,
        }
    };
    let mut written = 0usize;
    crate::atomic::write_file(path, |tmp| -> Result<(), SerError> {
        let file = crate::atomic::create_new(tmp)?;
        let mut out = BufWriter::new(file);
        let mut shape = None;
        for frame in frames {
            let (rows, cols) = frame.dim();
            if shape.is_none() {
                if !(1..=MAX_EDGE_PX).contains(&rows) || !(1..=MAX_EDGE_PX).contains(&cols) {
                    return Err(bad(format!("impossible frame size {cols}x{rows}")));
                }
                shape = Some((rows, cols));
                // The header's frame count is patched once all frames are written.
                out.write_all(&header(format, rows, cols, times_utc_s))
                    .map_err(io("writing the header"))?;
            }
            if shape != Some((rows, cols)) {
                return Err(bad(format!(
                    "frame {written} is {cols}x{rows}, unlike the first frame"
                )));
            }
            let max = ((1u32 << format.bits) - 1) as f32;
            let mut bytes = Vec::with_capacity(rows * cols * 2);
            for &v in &frame {
                let v = if v.is_finite() {
                    v.round().clamp(0.0, max)
                } else {
                    0.0
                };
                if format.bits == 8 {
                    bytes.push(v as u8);
                } else {
                    bytes.extend_from_slice(&(v as u16).to_le_bytes());
                }
            }
            out.write_all(&bytes).map_err(io("writing a frame"))?;
            written += 1;
        }
        if shape.is_none() {
            return Err(bad("no frame to write".into()));
        }
        if let Some(times) = times_utc_s {
            if times.len() != written {
                return Err(bad(format!(
                    "{} timestamps for {written} frames",
                    times.len()
                )));
            }
            for &t in times {
                out.write_all(&unix_s_to_ticks(t).to_le_bytes())
                    .map_err(io("writing the timestamp trailer"))?;
            }
        }
        let file = out
            .into_inner()
            .map_err(|e| io("writing the file")(e.into_error()))?;
        use std::os::unix::fs::FileExt;
        let count = i32::try_from(written).map_err(|_| bad("too many frames".into()))?;
        file.write_all_at(&count.to_le_bytes(), 38)
            .map_err(io("writing the frame count"))?;
        Ok(())
    })?;
    Ok(written)
}

/// The 178 header bytes.
fn header(
    format: SerFrameFormat,
    rows: usize,
    cols: usize,
    times: Option<&[f64]>,
) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..14].copy_from_slice(FILE_ID);
    let mut put = |at: usize, v: i32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(18, format.color.id());
    put(22, 0); // little-endian samples, as Siril and the first SER writers read the field
    put(26, cols as i32);
    put(30, rows as i32);
    put(34, format.bits as i32);
    // FrameCount (offset 38) stays 0 until the frames are written.
    let name = b"tlr";
    h[82..82 + name.len()].copy_from_slice(name);
    if let Some(&first) = times.and_then(|t| t.first()) {
        let ticks = unix_s_to_ticks(first).to_le_bytes();
        h[162..170].copy_from_slice(&ticks);
        h[170..178].copy_from_slice(&ticks);
    }
    h
}
