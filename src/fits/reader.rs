//! [`FitsReader`], an open frame for repeated region reads: it validates the file with the header
//! walk, refuses cubes where a frame is needed, builds the [`FrameHeader`], picks the backend
//! (native for plain uncompressed images, cfitsio for the rest) and checks every region against the
//! image before a backend reads it.
//!
//! What it does not: no byte-level reading or sample conversion of its own (that is
//! [`super::native`] and [`super::cfitsio`]); whole-image and cube reads are the front door's
//! ([`read_image`](super::read_image), [`read_cube`](super::read_cube)).

use std::ops::Range;
use std::path::Path;

use fitsio::FitsFile;
use ndarray::Array2;

use super::cfitsio::{cfitsio_region, open_cfitsio};
use super::header::{read_layout_file, Storage};
use super::native::NativeImage;
use super::{frame_header, FitsError, FrameHeader};

/// Where a [`FitsReader`] gets its pixels.
enum Backend {
    /// Uncompressed image: positioned reads with `std::fs`, conversion in this module.
    Native(NativeImage),
    /// Tile-compressed image (or unusual scaling keywords): cfitsio's `ffgsv`.
    Cfitsio(FitsFile),
}

/// An open frame for repeated region reads. Not `Send` (it may hold a cfitsio handle): open, read and
/// drop it inside one thread. The file is closed when the reader is dropped.
///
/// Uncompressed images are read natively (one positioned read per region, or per chunk of rows),
/// tile-compressed ones through cfitsio; both give the same `f32` values, bit for bit.
///
/// ```
/// use ndarray::{s, Array2};
/// use tlr_core::fits::{write_image_atomic, FitsReader, OutputMeta, SampleFormat};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("Light [001] (M 27).fits"); // taken literally, no cfitsio syntax
/// let image = Array2::from_shape_fn((40, 60), |(r, c)| (r * 100 + c) as f32);
/// write_image_atomic(&path, image.view(), SampleFormat::U16, &OutputMeta::default())?;
///
/// let mut reader = FitsReader::open(&path)?;
/// assert_eq!((reader.header().rows, reader.header().cols), (40, 60));
/// let tile = reader.read_region(10..20, 30..45)?; // rows, then columns
/// assert_eq!(tile, image.slice(s![10..20, 30..45]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FitsReader {
    pub(super) header: FrameHeader,
    naxis: usize,
    /// `NAXIS3`; more than 1 only for a reader opened by [`read_cube`](super::read_cube).
    pub(super) planes: usize,
    /// Not `Send` (its cfitsio variant is not), whichever backend it holds.
    backend: Backend,
}

impl std::fmt::Debug for FitsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Native(_) => "native",
            Backend::Cfitsio(_) => "cfitsio",
        };
        f.debug_struct("FitsReader")
            .field("header", &self.header)
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl FitsReader {
    /// Validates the file (see [`read_header`]) and opens its image HDU, taking the file name
    /// literally: an uncompressed image with `std::fs` (cfitsio is not involved), a tile-compressed
    /// one with cfitsio.
    ///
    /// # Errors
    /// [`FitsError::Io`], [`FitsError::Empty`], [`FitsError::NotFits`], [`FitsError::HeaderTruncated`],
    /// [`FitsError::Truncated`], [`FitsError::Unpadded`], [`FitsError::BadKeyword`], [`FitsError::NoImage`],
    /// [`FitsError::Unsupported`], [`FitsError::Cube`] (a frame must be 2-D; see [`read_cube`]),
    /// [`FitsError::BadPath`], [`FitsError::Cfitsio`]; each names the file.
    ///
    /// [`read_header`]: super::read_header
    /// [`read_cube`]: super::read_cube
    pub fn open(path: &Path) -> Result<Self, FitsError> {
        Self::open_layout(path, false, false)
    }

    /// [`FitsReader::open`], but always reading the pixels through cfitsio, as the reader did before
    /// it had a native backend. For comparisons in tests and benchmarks only.
    ///
    /// # Errors
    /// As [`FitsReader::open`].
    #[doc(hidden)]
    pub fn open_with_cfitsio(path: &Path) -> Result<Self, FitsError> {
        Self::open_layout(path, false, true)
    }

    /// [`FitsReader::open`], optionally accepting a cube of several planes (only
    /// [`read_cube`](super::read_cube) does) and optionally forcing the cfitsio backend.
    pub(super) fn open_layout(
        path: &Path,
        allow_cube: bool,
        force_cfitsio: bool,
    ) -> Result<Self, FitsError> {
        let (layout, file) = read_layout_file(path)?;
        if layout.planes > 1 && !allow_cube {
            return Err(FitsError::Cube {
                path: path.to_path_buf(),
                planes: layout.planes,
            });
        }
        let header = frame_header(path, &layout);
        let backend = match layout.storage {
            Storage::Plain(scaling) if !force_cfitsio => Backend::Native(NativeImage::new(
                file,
                layout.data_start,
                layout.bitpix,
                scaling,
            )),
            _ => {
                drop(file);
                Backend::Cfitsio(open_cfitsio(path, &layout)?)
            }
        };
        Ok(Self {
            header,
            naxis: layout.naxis,
            planes: layout.planes,
            backend,
        })
    }

    /// The frame's header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// Reads the whole image as `(rows, cols)`.
    ///
    /// # Errors
    /// [`FitsError::Io`] or [`FitsError::Cfitsio`] when reading fails, [`FitsError::NoFiniteData`]
    /// when no pixel is finite.
    pub fn read_full(&mut self) -> Result<Array2<f32>, FitsError> {
        let image = self.read_region(0..self.header.rows, 0..self.header.cols)?;
        if !image.iter().any(|v| v.is_finite()) {
            return Err(FitsError::NoFiniteData {
                path: self.header.path.clone(),
            });
        }
        Ok(image)
    }

    /// Reads rows `rows` and columns `cols` (0-based, end-exclusive) as `(rows.len(), cols.len())`,
    /// without reading the rest of the frame. Undefined pixels and ±Inf come back as NaN.
    ///
    /// # Errors
    /// [`FitsError::RegionOutOfBounds`] for an empty region or one reaching outside the image,
    /// [`FitsError::Io`] or [`FitsError::Cfitsio`] when reading fails (e.g. the file shrank since it
    /// was opened).
    pub fn read_region(
        &mut self,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Array2<f32>, FitsError> {
        self.read_plane_region(0, rows, cols)
    }

    /// [`FitsReader::read_region`] of plane `plane` (0-based) of a cube; plane 0 of a 2-D image.
    pub(super) fn read_plane_region(
        &mut self,
        plane: usize,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Array2<f32>, FitsError> {
        let (h, w) = (self.header.rows, self.header.cols);
        if rows.start >= rows.end || cols.start >= cols.end || rows.end > h || cols.end > w {
            return Err(FitsError::RegionOutOfBounds {
                path: self.header.path.clone(),
                rows,
                cols,
                shape_rows: h,
                shape_cols: w,
            });
        }
        let (nr, nc) = (rows.len(), cols.len());
        let plane = plane.min(self.planes.saturating_sub(1));
        let data = match &mut self.backend {
            Backend::Native(image) => {
                image
                    .read((h, w), plane, rows, cols)
                    .map_err(|source| FitsError::Io {
                        path: self.header.path.clone(),
                        source,
                    })?
            }
            Backend::Cfitsio(file) => {
                cfitsio_region(file, &self.header.path, self.naxis, plane, rows, cols)?
            }
        };
        Array2::from_shape_vec((nr, nc), data).map_err(|e| FitsError::Cfitsio {
            path: self.header.path.clone(),
            action: "reshaping pixels",
            status: -1,
            message: e.to_string(),
        })
    }

    /// Reads the `h x w` box whose top-left pixel is `(y0, x0)`; the box may reach outside the image
    /// (e.g. a tile plus margin at the border): those pixels are NaN.
    ///
    /// # Errors
    /// [`FitsError::Io`] or [`FitsError::Cfitsio`] when reading fails.
    pub fn read_region_padded(
        &mut self,
        y0: i64,
        x0: i64,
        h: usize,
        w: usize,
    ) -> Result<Array2<f32>, FitsError> {
        let mut out = Array2::from_elem((h, w), f32::NAN);
        let clip = |start: i64, len: usize, limit: usize| -> Option<(Range<usize>, usize)> {
            let lo = start.max(0);
            let hi = (start + len as i64).min(limit as i64);
            (lo < hi).then(|| (lo as usize..hi as usize, (lo - start) as usize))
        };
        if let (Some((rr, oy)), Some((cr, ox))) =
            (clip(y0, h, self.header.rows), clip(x0, w, self.header.cols))
        {
            let (nr, nc) = (rr.len(), cr.len());
            let part = self.read_region(rr, cr)?;
            out.slice_mut(ndarray::s![oy..oy + nr, ox..ox + nc])
                .assign(&part);
        }
        Ok(out)
    }
}
