//! The native backend: an uncompressed image (primary HDU or `IMAGE` extension) read with
//! `std::fs`. A region is one positioned read (full-width regions), a few row-spanning chunks, or
//! one read per row when the rows are far apart; the big-endian samples become `f32` in one pass by
//! `Conversion`, which replicates cfitsio's conversion rules (`fffXXr4` as `ffgsv` calls them with
//! `TFLOAT` and a NaN null value) bit for bit, followed by the module's rule that every non-finite
//! value is `f32::NAN`.
//!
//! What it does not: no validation (the header walk checked that the file holds every sample), no
//! bounds checks of the region (the reader's), no tile-compressed images and no scaling cards that
//! cfitsio might read differently (both go to [`super::cfitsio`]). cfitsio never opens these files.

use std::fs;
use std::io;
use std::ops::Range;

use super::scaling::Scaling;

/// Regions whose rows are at most this many bytes apart on disk (beyond the region's own columns)
/// are read in chunks spanning several rows, gaps included; wider gaps are skipped with one read per
/// row. One read call costs about as much as copying a few KiB.
const MAX_GAP_BYTES: usize = 16 * 1024;
/// Largest single read of the native backend when a region is read in row-spanning chunks.
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// How raw integer samples become `f32` (after the `BLANK` check).
#[derive(Debug, Clone, Copy, PartialEq)]
enum IntMap {
    /// `BSCALE = 1`, `BZERO = 0`: the integer cast straight to `f32`.
    Cast,
    /// `BSCALE = 1` and an integral `BZERO` small enough that `raw + BZERO` is exact in `i32`: the
    /// same value (and so the same single rounding to `f32`) as cfitsio's `raw * 1.0 + BZERO` in
    /// double, without the round trip through `f64`.
    Offset(i32),
    /// `(raw as f64 * BSCALE + BZERO) as f32`, cfitsio's general rule.
    Linear(f64, f64),
}

/// Conversion of big-endian samples of one BITPIX to `f32`, replicating cfitsio's `fffXXr4` routines
/// as `ffgsv` calls them with `TFLOAT` and a NaN null value, followed by this module's rule that
/// every non-finite result is `f32::NAN`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Conversion {
    /// BITPIX 8 (`fffi1r4`); `BLANK` counts only within 0..=255.
    U8 { blank: Option<u8>, map: IntMap },
    /// BITPIX 16 (`fffi2r4`); `BLANK` counts only within the `i16` range.
    I16 { blank: Option<i16>, map: IntMap },
    /// BITPIX 32 (`fffi4r4`); cfitsio casts `BLANK` to 32 bits without a range check.
    I32 { blank: Option<i32>, map: IntMap },
    /// BITPIX 64 (`fffi8r4`): `BSCALE = 1, BZERO = 2^63` flips the sign bit and casts the `u64`
    /// straight to `f32`; no scaling casts the `i64` straight to `f32`; otherwise via `f64`.
    I64 {
        blank: Option<i64>,
        unsigned: bool,
        scale: Option<(f64, f64)>,
    },
    /// BITPIX -32 (`fffr4r4`): NaN/Inf are null; zero and subnormal samples (exponent bits 0) become
    /// `+0.0`, or `BZERO` when scaled; others `v` or `(v as f64 * BSCALE + BZERO) as f32`.
    F32 { scale: Option<(f64, f64)> },
    /// BITPIX -64 (`fffr8r4`), the same rules for doubles.
    F64 { scale: Option<(f64, f64)> },
}

impl Conversion {
    fn new(bitpix: i64, s: Scaling) -> Self {
        let unscaled = s.bscale == 1.0 && s.bzero == 0.0;
        let scale = (!unscaled).then_some((s.bscale, s.bzero));
        let small_map = || {
            if unscaled {
                IntMap::Cast
            } else if s.bscale == 1.0 && s.bzero.fract() == 0.0 && s.bzero.abs() <= (1 << 30) as f64
            {
                IntMap::Offset(s.bzero as i32)
            } else {
                IntMap::Linear(s.bscale, s.bzero)
            }
        };
        let linear = if unscaled {
            IntMap::Cast
        } else {
            IntMap::Linear(s.bscale, s.bzero)
        };
        match bitpix {
            8 => Self::U8 {
                blank: s.blank.and_then(|b| u8::try_from(b).ok()),
                map: small_map(),
            },
            16 => Self::I16 {
                blank: s.blank.and_then(|b| i16::try_from(b).ok()),
                map: small_map(),
            },
            // `(INT32BIT) tnull` in cfitsio: the low 32 bits.
            32 => Self::I32 {
                blank: s.blank.map(|b| b as i32),
                map: linear,
            },
            64 => Self::I64 {
                blank: s.blank,
                unsigned: s.bscale == 1.0 && s.bzero == 9_223_372_036_854_775_808.0,
                scale,
            },
            -32 => Self::F32 { scale },
            _ => Self::F64 { scale },
        }
    }

    /// Bytes per sample.
    fn width(self) -> usize {
        match self {
            Self::U8 { .. } => 1,
            Self::I16 { .. } => 2,
            Self::I32 { .. } | Self::F32 { .. } => 4,
            Self::I64 { .. } | Self::F64 { .. } => 8,
        }
    }

    /// Appends the converted samples of `bytes` (a whole number of samples) to `out`.
    fn extend(self, bytes: &[u8], out: &mut Vec<f32>) {
        fn each<const N: usize>(bytes: &[u8], out: &mut Vec<f32>, f: impl Fn([u8; N]) -> f32) {
            out.extend(bytes.chunks_exact(N).map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            }));
        }
        fn finite(v: f32) -> f32 {
            if v.is_finite() {
                v
            } else {
                f32::NAN
            }
        }
        fn linear(v: f64, bscale: f64, bzero: f64) -> f32 {
            finite((v * bscale + bzero) as f32)
        }
        // One loop per case, so that none tests the case per pixel.
        macro_rules! int {
            ($n:literal, $t:ty, $blank:expr, $map:expr) => {
                match ($blank, $map) {
                    (None, IntMap::Cast) => {
                        each::<$n>(bytes, out, |a| <$t>::from_be_bytes(a) as f32)
                    }
                    (None, IntMap::Offset(z)) => each::<$n>(bytes, out, |a| {
                        (i32::from(<$t>::from_be_bytes(a)) + z) as f32
                    }),
                    (None, IntMap::Linear(m, z)) => each::<$n>(bytes, out, |a| {
                        linear(f64::from(<$t>::from_be_bytes(a)), m, z)
                    }),
                    (Some(b), IntMap::Cast) => each::<$n>(bytes, out, |a| {
                        let r = <$t>::from_be_bytes(a);
                        if r == b {
                            f32::NAN
                        } else {
                            r as f32
                        }
                    }),
                    (Some(b), IntMap::Offset(z)) => each::<$n>(bytes, out, |a| {
                        let r = <$t>::from_be_bytes(a);
                        if r == b {
                            f32::NAN
                        } else {
                            (i32::from(r) + z) as f32
                        }
                    }),
                    (Some(b), IntMap::Linear(m, z)) => each::<$n>(bytes, out, |a| {
                        let r = <$t>::from_be_bytes(a);
                        if r == b {
                            f32::NAN
                        } else {
                            linear(f64::from(r), m, z)
                        }
                    }),
                }
            };
        }
        match self {
            Self::U8 { blank, map } => int!(1, u8, blank, map),
            Self::I16 { blank, map } => int!(2, i16, blank, map),
            Self::I32 { blank, map } => match (blank, map) {
                (None, IntMap::Linear(m, z)) => each::<4>(bytes, out, |a| {
                    linear(f64::from(i32::from_be_bytes(a)), m, z)
                }),
                (None, _) => each::<4>(bytes, out, |a| i32::from_be_bytes(a) as f32),
                (Some(b), IntMap::Linear(m, z)) => each::<4>(bytes, out, |a| {
                    let r = i32::from_be_bytes(a);
                    if r == b {
                        f32::NAN
                    } else {
                        linear(f64::from(r), m, z)
                    }
                }),
                (Some(b), _) => each::<4>(bytes, out, |a| {
                    let r = i32::from_be_bytes(a);
                    if r == b {
                        f32::NAN
                    } else {
                        r as f32
                    }
                }),
            },
            Self::I64 {
                blank,
                unsigned,
                scale,
            } => {
                let blank_or = |r: i64, v: f32| if Some(r) == blank { f32::NAN } else { v };
                if unsigned {
                    each::<8>(bytes, out, |a| {
                        let r = i64::from_be_bytes(a);
                        blank_or(r, ((r as u64) ^ (1 << 63)) as f32)
                    })
                } else if let Some((m, z)) = scale {
                    each::<8>(bytes, out, |a| {
                        let r = i64::from_be_bytes(a);
                        blank_or(r, linear(r as f64, m, z))
                    })
                } else {
                    each::<8>(bytes, out, |a| {
                        let r = i64::from_be_bytes(a);
                        blank_or(r, r as f32)
                    })
                }
            }
            Self::F32 { scale } => {
                const EXP: u32 = 0x7f80_0000;
                match scale {
                    None => each::<4>(bytes, out, |a| {
                        let bits = u32::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => 0.0,
                            _ => f32::from_bits(bits),
                        }
                    }),
                    Some((m, z)) => each::<4>(bytes, out, |a| {
                        let bits = u32::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => finite(z as f32),
                            _ => linear(f64::from(f32::from_bits(bits)), m, z),
                        }
                    }),
                }
            }
            Self::F64 { scale } => {
                const EXP: u64 = 0x7ff0_0000_0000_0000;
                match scale {
                    None => each::<8>(bytes, out, |a| {
                        let bits = u64::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => 0.0,
                            _ => finite(f64::from_bits(bits) as f32),
                        }
                    }),
                    Some((m, z)) => each::<8>(bytes, out, |a| {
                        let bits = u64::from_be_bytes(a);
                        match bits & EXP {
                            EXP => f32::NAN,
                            0 => finite(z as f32),
                            _ => linear(f64::from_bits(bits), m, z),
                        }
                    }),
                }
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
fn read_exact_at(file: &mut fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}

/// The native backend: an uncompressed image read with `std::fs`.
pub(super) struct NativeImage {
    file: fs::File,
    /// Byte offset of the first sample.
    data_start: u64,
    conversion: Conversion,
    /// Read buffer, kept from one region to the next.
    bytes: Vec<u8>,
}

impl NativeImage {
    /// The backend for an image whose samples start at `data_start` in `file`, converted from
    /// `bitpix` with `scaling`.
    pub(super) fn new(file: fs::File, data_start: u64, bitpix: i64, scaling: Scaling) -> Self {
        Self {
            file,
            data_start,
            conversion: Conversion::new(bitpix, scaling),
            bytes: Vec::new(),
        }
    }

    /// Reads plane `plane`, rows `rows`, columns `cols` (checked by the caller) of a `h x w` image.
    pub(super) fn read(
        &mut self,
        (h, w): (usize, usize),
        plane: usize,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> io::Result<Vec<f32>> {
        let bpp = self.conversion.width();
        let (nr, nc) = (rows.len(), cols.len());
        let mut out = Vec::with_capacity(nr * nc);
        // Sample index of (plane, row, col) in the data unit; all fit in u64 (the layout checked
        // that the file holds every sample).
        let index = |row: usize, col: usize| ((plane * h + row) * w + col) as u64;
        let offset = |row: usize, col: usize| self.data_start + index(row, col) * bpp as u64;
        let stride = w * bpp;
        let (seg, gap) = (nc * bpp, (w - nc) * bpp);
        if nc == w || gap <= MAX_GAP_BYTES {
            // Chunks of whole rows: from the region's first column in the chunk's first row to its
            // last column in the chunk's last row (for full-width regions, contiguous samples).
            let per_chunk = (MAX_CHUNK_BYTES / stride).max(1);
            let mut r = rows.start;
            while r < rows.end {
                let n = per_chunk.min(rows.end - r);
                let len = (n - 1) * stride + seg;
                self.bytes.resize(len, 0);
                read_exact_at(&mut self.file, &mut self.bytes, offset(r, cols.start))?;
                if nc == w {
                    self.conversion.extend(&self.bytes, &mut out);
                } else {
                    for i in 0..n {
                        let start = i * stride;
                        self.conversion
                            .extend(&self.bytes[start..start + seg], &mut out);
                    }
                }
                r += n;
            }
        } else {
            self.bytes.resize(seg, 0);
            for r in rows {
                read_exact_at(&mut self.file, &mut self.bytes, offset(r, cols.start))?;
                self.conversion.extend(&self.bytes, &mut out);
            }
        }
        Ok(out)
    }
}
