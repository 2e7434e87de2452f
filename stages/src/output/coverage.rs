//! Borders that every tool reads: the policy for pixels of the output grid that no frame covered,
//! the coverage map written next to the image, and the area every frame covers (`--crop common`).
//!
//! Policy: the image keeps the reference frame's grid, so it covers every pixel at least one frame
//! saw; a pixel without data (no frame covered it, or its tile could not be reconstructed) is written
//! as [`UNCOVERED`] (0), never NaN, so that tools which average the image (Siril's `stat`) give finite
//! figures. Every other pixel keeps its value bit for bit. Which pixels were uncovered is in the
//! coverage map: per pixel, the number of combined frames whose registered field (the frame moved by
//! its global shift, without the sensor border the run left out) covers it, 0 where the image has no data; it is written as an IMAGE extension
//! `COVERAGE` after the image (the primary HDU stays the image).
//!
//! What it does not: weigh frames per pixel (the count says where fewer frames went in, not their
//! weights or the pixels rejected as outliers), or write files ([`super::image`] does).

use ndarray::{s, Array2, ArrayView2};

use crate::batch::RunOutput;
use crate::error::{Stage, StageError};

/// A rectangle of the run's grid (`run.image`; cell space for colour): what the files show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridArea {
    /// First row.
    pub y0: usize,
    /// First column.
    pub x0: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

/// The value written for a pixel without data.
pub const UNCOVERED: f32 = 0.0;

/// The widest border (px of the output grid, per side) [`common_area`] trims beyond the frames'
/// common field for pixels still without data (sub-pixel local shifts and resampling at the edge).
const MAX_EDGE_TRIM: usize = 8;

/// `values` with every non-finite pixel set to [`UNCOVERED`]; finite pixels unchanged.
pub(crate) fn filled<D: ndarray::Dimension>(
    values: ndarray::ArrayView<f32, D>,
) -> ndarray::Array<f32, D> {
    values.mapv(|v| if v.is_finite() { v } else { UNCOVERED })
}

/// The pixels `[y0, y1) x [x0, x1)` of a `(rows, cols)` grid that a frame moved by `shift` covers,
/// when its data is its grid pixels `kept` = `[y0, y1, x0, x1]` (all of it, or the frame without its
/// sensor border, [`tlr_core::sensor_border::SensorBorder::kept`]): output pixel `p` samples the
/// frame at `p + shift`, which must lie within half a pixel of its data.
fn bordered_footprint(
    shift: tlr_core::Shift,
    rows: usize,
    cols: usize,
    kept: [usize; 4],
) -> [usize; 4] {
    let range = |d: f32, n: usize, from: usize, to: usize| {
        let d = f64::from(d);
        let lo = (from as f64 - 0.5 - d).ceil().clamp(0.0, n as f64) as usize;
        let hi = (to as f64 - 0.5 - d).ceil().clamp(0.0, n as f64) as usize;
        (lo, hi.max(lo))
    };
    let (y0, y1) = range(shift.dy, rows, kept[0], kept[1]);
    let (x0, x1) = range(shift.dx, cols, kept[2], kept[3]);
    [y0, y1, x0, x1]
}

/// The part of the run's grid (cell space for colour) that holds the frames' data: all of it, less
/// the sensor border left out ([`RunOutput::sensor_border`], in pixels; cells are 2 pixels).
fn kept_area(run: &RunOutput) -> [usize; 4] {
    let (rows, cols) = run.image.dim();
    let scale = run.colour.as_ref().map_or(1, |c| c.scale());
    let b = run.sensor_border;
    let grid = tlr_core::sensor_border::SensorBorder {
        top: b.top / scale,
        bottom: b.bottom / scale,
        left: b.left / scale,
        right: b.right / scale,
    };
    grid.kept(rows, cols)
}

/// The global shifts of the frames combined (a frame that failed to read in the tile phase is not
/// counted, as everywhere else).
fn combined_shifts(run: &RunOutput) -> impl Iterator<Item = tlr_core::Shift> + '_ {
    run.used_frames
        .iter()
        .filter(|f| run.frames.get(f.index).is_some_and(|s| s.used))
        .map(|f| f.shift)
}

/// Per pixel of the run's grid (`run.image`, cell space for colour), the number of combined frames
/// whose registered field covers it (a 2-D difference array: linear in pixels plus frames).
pub fn frame_counts(run: &RunOutput) -> Array2<f32> {
    let (rows, cols) = run.image.dim();
    let kept = kept_area(run);
    let mut diff = Array2::<i64>::zeros((rows + 1, cols + 1));
    for shift in combined_shifts(run) {
        let [y0, y1, x0, x1] = bordered_footprint(shift, rows, cols, kept);
        if y0 < y1 && x0 < x1 {
            diff[[y0, x0]] += 1;
            diff[[y0, x1]] -= 1;
            diff[[y1, x0]] -= 1;
            diff[[y1, x1]] += 1;
        }
    }
    let mut counts = Array2::<f32>::zeros((rows, cols));
    let mut row_sums = vec![0i64; cols + 1];
    for y in 0..rows {
        let mut running = 0i64;
        for x in 0..cols {
            running += diff[[y, x]];
            row_sums[x] += running;
            counts[[y, x]] = row_sums[x] as f32;
        }
    }
    counts
}

/// The coverage map of an image whose pixel `(y, x)` is cell `(y / scale, x / scale)` of the run's
/// grid (`scale` 2 for a colour result at full resolution, else 1): the frame counts, 0 where
/// `has_data` is false.
pub(crate) fn coverage_for(
    counts: ArrayView2<f32>,
    scale: usize,
    has_data: impl Fn(usize, usize) -> bool,
) -> Array2<f32> {
    let (rows, cols) = counts.dim();
    Array2::from_shape_fn((rows * scale, cols * scale), |(y, x)| {
        if has_data(y, x) {
            counts[[y / scale, x / scale]]
        } else {
            0.0
        }
    })
}

/// Whether a cell of the run's grid has data in every product (the image, and every colour plane).
fn cell_has_data(run: &RunOutput, y: usize, x: usize) -> bool {
    run.image[[y, x]].is_finite()
        && run
            .colour
            .as_ref()
            .is_none_or(|c| (0..c.planes.dim().0).all(|p| c.planes[[p, y, x]].is_finite()))
}

/// The area of the run's grid (cell space for colour) that every combined frame covers (the
/// intersection of their registered fields), less up to 8 px per side where its
/// edge still has pixels without data: what `--crop common` keeps.
///
/// # Errors
/// When the frames have no area in common, or its edges have no data over the whole trim.
pub fn common_area(run: &RunOutput) -> Result<GridArea, StageError> {
    let (rows, cols) = run.image.dim();
    let kept = kept_area(run);
    let [mut y0, mut y1, mut x0, mut x1] = combined_shifts(run)
        .map(|shift| bordered_footprint(shift, rows, cols, kept))
        .fold([0, rows, 0, cols], |a, b| {
            [
                a[0].max(b[0]),
                a[1].min(b[1]),
                a[2].max(b[2]),
                a[3].min(b[3]),
            ]
        });
    let none = |why: &str| {
        StageError::input(
            Stage::Output,
            format!("--crop common: {why}; write the whole image instead (no --crop)"),
        )
    };
    if y0 >= y1 || x0 >= x1 {
        return Err(none(
            "the frames have no area in common (the field drifted by more than the frame)",
        ));
    }
    let row_ok = |y: usize, x0: usize, x1: usize| (x0..x1).all(|x| cell_has_data(run, y, x));
    let col_ok = |x: usize, y0: usize, y1: usize| (y0..y1).all(|y| cell_has_data(run, y, x));
    let (top, bottom, left, right) = (y0, y1, x0, x1);
    loop {
        let before = [y0, y1, x0, x1];
        if y0 < y1 && !row_ok(y0, x0, x1) && y0 < top + MAX_EDGE_TRIM {
            y0 += 1;
        }
        if y0 < y1 && !row_ok(y1 - 1, x0, x1) && y1 + MAX_EDGE_TRIM > bottom {
            y1 -= 1;
        }
        if x0 < x1 && y0 < y1 && !col_ok(x0, y0, y1) && x0 < left + MAX_EDGE_TRIM {
            x0 += 1;
        }
        if x0 < x1 && y0 < y1 && !col_ok(x1 - 1, y0, y1) && x1 + MAX_EDGE_TRIM > right {
            x1 -= 1;
        }
        if before == [y0, y1, x0, x1] || y0 >= y1 || x0 >= x1 {
            break;
        }
    }
    if y0 >= y1 || x0 >= x1 {
        return Err(none("the area every frame covers has no data"));
    }
    Ok(GridArea {
        y0,
        x0,
        rows: y1 - y0,
        cols: x1 - x0,
    })
}

/// The area of the run's grid the files show: `run.crop`, or the whole grid.
pub(crate) fn written_area(run: &RunOutput) -> GridArea {
    let (rows, cols) = run.image.dim();
    run.crop.unwrap_or(GridArea {
        y0: 0,
        x0: 0,
        rows,
        cols,
    })
}

/// `image` (full resolution when `scale` is 2) cut to `area` of the run's grid.
pub(crate) fn cut(image: ArrayView2<f32>, area: GridArea, scale: usize) -> ArrayView2<f32> {
    image.slice_move(s![
        area.y0 * scale..(area.y0 + area.rows) * scale,
        area.x0 * scale..(area.x0 + area.cols) * scale
    ])
}

/// [`cut`] for every plane of `cube` `(planes, rows, cols)`.
pub(crate) fn cut_cube(
    cube: ndarray::ArrayView3<f32>,
    area: GridArea,
    scale: usize,
) -> ndarray::ArrayView3<f32> {
    cube.slice_move(s![
        ..,
        area.y0 * scale..(area.y0 + area.rows) * scale,
        area.x0 * scale..(area.x0 + area.cols) * scale
    ])
}

/// The pixels of a written FITS file: an image or a cube `(planes, rows, cols)`, at `scale` times the
/// run's grid (2 for a colour run's full-resolution products).
#[derive(Clone, Copy)]
pub(crate) enum Pixels<'a> {
    Image(ArrayView2<'a, f32>),
    Cube(ndarray::ArrayView3<'a, f32>),
}

/// Writes `pixels` as float32 FITS, cut to the written area ([`written_area`]), every pixel without
/// data as [`UNCOVERED`], the WCS of the reference frame moved to the written grid (with the HISTORY
/// line of [`tlr_core::fits::StackHeader::wcs_cards`]) added to `meta`, and the coverage map as the
/// IMAGE extension `COVERAGE` (16-bit frame counts, same grid and WCS).
/// `meta` with the reference frame's WCS moved to the written grid (`scale` output pixels per grid
/// pixel), and the WCS cards alone (for the coverage extension).
pub(crate) fn with_wcs(
    run: &RunOutput,
    meta: &tlr_core::fits::OutputMeta,
    scale: usize,
) -> (tlr_core::fits::OutputMeta, Vec<tlr_core::fits::Card>) {
    let area = written_area(run);
    let map = run
        .to_reference
        .cropped((area.x0 * scale) as f64, (area.y0 * scale) as f64);
    let (wcs, note) = run.header.wcs_cards(&map);
    let mut meta = meta.clone();
    meta.cards.extend(wcs.iter().cloned());
    meta.history.extend(note);
    (meta, wcs)
}

pub(crate) fn write_fits(
    run: &RunOutput,
    path: &std::path::Path,
    pixels: Pixels,
    scale: usize,
    meta: &tlr_core::fits::OutputMeta,
) -> Result<(), tlr_core::fits::FitsError> {
    use tlr_core::fits::{CardValue, Hdu, OutputMeta, SampleFormat};
    let area = written_area(run);
    let (meta, wcs) = with_wcs(run, meta, scale);
    let counts = frame_counts(run);
    let counts = cut(counts.view(), area, 1);
    let mut extension = OutputMeta::default()
        .with_card(
            "EXTNAME",
            CardValue::Str("COVERAGE".into()),
            "frames covering each pixel",
        )
        .with_card(
            "BUNIT",
            CardValue::Str("frames".into()),
            "combined frames whose field covers the pixel",
        )
        .with_history("0 where the image has no data (written there as 0)");
    extension.cards.extend(wcs);
    fn both<'a>(
        path: &std::path::Path,
        primary: Hdu<'a>,
        coverage: ArrayView2<'a, f32>,
        extension: &'a OutputMeta,
    ) -> Result<(), tlr_core::fits::FitsError> {
        let coverage = Hdu::image(coverage, SampleFormat::U16, extension);
        tlr_core::fits::write_hdus_atomic(path, &[primary, coverage])
    }
    match pixels {
        Pixels::Image(image) => {
            let image = cut(image, area, scale);
            let coverage = coverage_for(counts, scale, |y, x| image[[y, x]].is_finite());
            let image = filled(image);
            let primary = Hdu::image(image.view(), SampleFormat::F32, &meta);
            both(path, primary, coverage.view(), &extension)
        }
        Pixels::Cube(cube) => {
            let cube = cut_cube(cube, area, scale);
            let coverage = coverage_for(counts, scale, |y, x| {
                (0..cube.dim().0).all(|p| cube[[p, y, x]].is_finite())
            });
            let cube = filled(cube);
            both(
                path,
                Hdu::cube(cube.view(), &meta),
                coverage.view(),
                &extension,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlr_core::Shift;

    fn footprint(shift: Shift, rows: usize, cols: usize) -> [usize; 4] {
        bordered_footprint(shift, rows, cols, [0, rows, 0, cols])
    }

    #[test]
    fn footprints_keep_pixels_within_half_a_pixel_of_the_data() {
        assert_eq!(footprint(Shift::ZERO, 10, 20), [0, 10, 0, 20]);
        // Sampling at p + 0.7: the last row lands 0.3 px past the edge's half pixel.
        assert_eq!(footprint(Shift::new(0.7, -2.2), 10, 20), [0, 9, 2, 20]);
        // Exactly half a pixel past the last row is outside (the interval is half-open).
        assert_eq!(footprint(Shift::new(0.5, -0.5), 10, 20), [0, 9, 0, 20]);
        assert_eq!(footprint(Shift::new(30.0, 0.0), 10, 20)[..2], [0, 0]);
        // Without a sensor border of 2 rows at the top and 1 column on the right: output row 1
        // samples frame row 1.7, within half a pixel of row 2; output column 19 samples column 16.8.
        assert_eq!(
            bordered_footprint(Shift::new(0.7, -2.2), 10, 20, [2, 10, 0, 19]),
            [1, 9, 2, 20]
        );
        assert_eq!(
            bordered_footprint(Shift::new(0.0, 0.0), 10, 20, [2, 10, 0, 19]),
            [2, 10, 0, 19]
        );
    }

    #[test]
    fn filling_changes_only_what_is_not_finite() {
        let a = ndarray::arr2(&[[1.5, f32::NAN], [f32::INFINITY, -0.0]]);
        let f = filled(a.view());
        assert_eq!(f[[0, 0]].to_bits(), 1.5f32.to_bits());
        assert_eq!(f[[1, 1]].to_bits(), (-0.0f32).to_bits());
        assert_eq!((f[[0, 1]], f[[1, 0]]), (UNCOVERED, UNCOVERED));
    }
}
