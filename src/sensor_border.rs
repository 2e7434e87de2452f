//! The sensor's own border: edge rows and columns that every frame shows off the sky, found in the
//! lights themselves, so that the stack can leave them out.
//!
//! Some cameras read their outermost lines darker or brighter than the rest of the chip (a readout
//! or clamping effect). MicroObservatory's HAT-P-32 frames: the top row is 66 ADU below the sky
//! (frame noise 1.5 ADU), the next ones 34, 19, 12, 8, 5, 4, 3 ADU, and the first column 26 ADU, in
//! every frame alike. Where the field drifts, the corner of the stack that few frames cover is made
//! of exactly those lines, and comes out up to 56 sigma below the sky. Such a pattern stays on the
//! same sensor lines while the sky moves, so it shows in the lines' levels: per side, each of the
//! [`MAX_LINES`] outermost lines' interquartile mean is compared with the straight line fitted
//! through the levels of lines [`BAND`] (the sky and its gradient, extrapolated to the edge). The
//! statistics are per 2x2 sub-plane (line parity x pixel parity), so a Bayer mosaic's colours are never
//! mixed, and a line's deviation is the largest of its colours', in units of the sub-plane's noise.
//! Over frames the median deviation counts (stars and satellites cross a line in a few frames only).
//! A side's border is every line up to the innermost one deviating by more than [`KAPPA`] noise
//! sigmas, in whole 2x2 cells. A side whose band is not a flat sky (the fitted levels scatter by more
//! than [`MAX_BAND_SCATTER`] sigmas: a Moon or Sun surface, a nebula up to the edge) gives no border.
//!
//! What it does not: read frames (the caller hands the bands over), repair the lines (a dark row may
//! be an offset or a gain: leaving it out is right for both), or find defects inside the frame (hot
//! and cold pixels are the calibration's and the rejection's).

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use crate::stats::{median, median_and_sigma};

/// The outermost lines per side that may be left out.
pub const MAX_LINES: usize = 16;
/// The lines whose levels give the sky near a side (fitted by a straight line and extrapolated).
pub const BAND: std::ops::Range<usize> = 16..48;
/// A line deviating from the extrapolated sky by more than this many noise sigmas (median over the
/// frames) is part of the border.
pub const KAPPA: f32 = 1.0;
/// Largest rms scatter (noise sigmas) of the band's line levels around their straight line for the
/// side to be measured (a flat sky scatters by about 0.1).
pub const MAX_BAND_SCATTER: f32 = 0.5;
/// Fewest pixels of a line measured (besides its corners): on shorter lines a star that stays on the
/// same lines (a field that hardly moves) looks like a fixed pattern (128-px simulated frames did).
pub const MIN_LENGTH: usize = 128;
/// Pixels left out at each end of a line (the corners belong to the perpendicular sides).
pub const CORNER: usize = BAND.end;

/// Lines of each side of the sensor that the frames show off the sky, to be left out of the stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SensorBorder {
    /// Rows from the top (row 0 of the file's data).
    pub top: usize,
    /// Rows from the bottom.
    pub bottom: usize,
    /// Columns from the left (column 0).
    pub left: usize,
    /// Columns from the right.
    pub right: usize,
}

/// The four sides, in the order [`SensorBorder`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Row 0 and down.
    Top,
    /// The last row and up.
    Bottom,
    /// Column 0 and right.
    Left,
    /// The last column and left.
    Right,
}

impl Side {
    /// Every side.
    pub const ALL: [Side; 4] = [Side::Top, Side::Bottom, Side::Left, Side::Right];

    /// The frame region `(rows, cols)` holding this side's [`BAND`]`.end` outermost lines of a
    /// `(rows, cols)` frame.
    pub fn region(
        self,
        rows: usize,
        cols: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let depth = BAND.end;
        match self {
            Side::Top => (0..depth.min(rows), 0..cols),
            Side::Bottom => (rows.saturating_sub(depth)..rows, 0..cols),
            Side::Left => (0..rows, 0..depth.min(cols)),
            Side::Right => (0..rows, cols.saturating_sub(depth)..cols),
        }
    }

    /// `region` (as [`Side::region`] cut it) turned so that its row 0 is the edge line and its rows are
    /// the lines (a left or right band is transposed, a bottom or right one reversed).
    pub fn lines(self, region: ArrayView2<f32>) -> ArrayView2<f32> {
        match self {
            Side::Top => region,
            Side::Bottom => region.slice_move(ndarray::s![..;-1, ..]),
            Side::Left => region.reversed_axes(),
            Side::Right => region.reversed_axes().slice_move(ndarray::s![..;-1, ..]),
        }
    }
}

impl SensorBorder {
    /// No line left out.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The lines of `side`.
    pub fn get(&self, side: Side) -> usize {
        match side {
            Side::Top => self.top,
            Side::Bottom => self.bottom,
            Side::Left => self.left,
            Side::Right => self.right,
        }
    }

    fn set(&mut self, side: Side, lines: usize) {
        match side {
            Side::Top => self.top = lines,
            Side::Bottom => self.bottom = lines,
            Side::Left => self.left = lines,
            Side::Right => self.right = lines,
        }
    }

    /// Whether a frame whose rows are `rows` and columns `cols` is large enough to be measured: every
    /// side needs its [`BAND`] clear of the opposite side's, and lines longer than their two corners.
    pub fn measurable(rows: usize, cols: usize) -> bool {
        let need = 2 * BAND.end + MIN_LENGTH;
        rows >= need && cols >= need
    }

    /// The border from [`side_profile`]s: `profiles[s]` holds side `s`'s (in [`Side::ALL`] order)
    /// profile of every frame measured (`None`: not measurable in that frame). A side's line counts
    /// when the median over its measured frames deviates by more than [`KAPPA`]; a side measurable in
    /// fewer than half of the frames gives no border.
    pub fn from_profiles(profiles: &[Vec<Option<[f32; MAX_LINES]>>; 4]) -> Self {
        let mut border = Self::default();
        for (side, frames) in Side::ALL.into_iter().zip(profiles) {
            let measured: Vec<&[f32; MAX_LINES]> = frames.iter().flatten().collect();
            if measured.is_empty() || 2 * measured.len() < frames.len() {
                continue;
            }
            let deviating = (0..MAX_LINES).rev().find(|&line| {
                let values: Vec<f32> = measured.iter().map(|p| p[line]).collect();
                median(&values) > KAPPA
            });
            // Whole 2x2 cells, so that a Bayer mosaic keeps its pattern.
            border.set(side, deviating.map_or(0, |line| (line + 2) & !1));
        }
        border
    }

    /// Sets the border's pixels of the frame region `region`, whose pixel `(0, 0)` is frame pixel
    /// `(row0, col0)` of a `(rows, cols)` frame, to NaN (no data).
    pub fn mask(
        &self,
        mut region: ArrayViewMut2<f32>,
        (row0, col0): (usize, usize),
        (rows, cols): (usize, usize),
    ) {
        if self.is_empty() {
            return;
        }
        let (h, w) = region.dim();
        let keep_rows = self.top..rows.saturating_sub(self.bottom);
        let keep_cols = self.left..cols.saturating_sub(self.right);
        for (i, mut row) in region.axis_iter_mut(Axis(0)).enumerate().take(h) {
            let y = row0 + i;
            if !keep_rows.contains(&y) {
                row.fill(f32::NAN);
                continue;
            }
            for (j, v) in row.iter_mut().enumerate().take(w) {
                if !keep_cols.contains(&(col0 + j)) {
                    *v = f32::NAN;
                }
            }
        }
    }

    /// The frame pixels `[y0, y1) x [x0, x1)` that keep their data in a `(rows, cols)` frame.
    pub fn kept(&self, rows: usize, cols: usize) -> [usize; 4] {
        let y1 = rows.saturating_sub(self.bottom).max(self.top.min(rows));
        let x1 = cols.saturating_sub(self.right).max(self.left.min(cols));
        [self.top.min(rows), y1, self.left.min(cols), x1]
    }
}

/// One side of one frame: how far each of its [`MAX_LINES`] outermost lines lies from the sky
/// extrapolated from lines [`BAND`], in noise sigmas (the largest over the line's two colours of a
/// 2x2 period). `lines` is the side's band as [`Side::lines`] turns it (row 0 the edge line, at
/// least [`BAND`]`.end` rows); the [`CORNER`] pixels at each end of a line are not used. `None` when
/// the band is too small or not a flat sky ([`MAX_BAND_SCATTER`]).
pub fn side_profile(lines: ArrayView2<f32>) -> Option<[f32; MAX_LINES]> {
    let (depth, length) = lines.dim();
    if depth < BAND.end || length < 2 * CORNER + MIN_LENGTH {
        return None;
    }
    let inner = lines.slice(ndarray::s![.., CORNER..length - CORNER]);
    let mut profile = [0.0f32; MAX_LINES];
    for line_parity in 0..2 {
        for pixel_parity in 0..2 {
            // Plane row k is line 2k + line_parity.
            let plane = inner.slice(ndarray::s![line_parity..;2, pixel_parity..;2]);
            let level = |k: usize| interquartile_mean(plane.row(k).iter().copied());
            let band: Vec<usize> = (0..depth.div_ceil(2))
                .map(|k| 2 * k + line_parity)
                .filter(|l| BAND.contains(l))
                .collect();
            let mut band_pixels = Vec::new();
            for &l in &band {
                band_pixels.extend(plane.row((l - line_parity) / 2).iter().copied());
            }
            let (_, sigma) = median_and_sigma(&band_pixels);
            if !(sigma.is_finite() && sigma > 0.0) {
                return None;
            }
            let points: Vec<(f64, f64)> = band
                .iter()
                .filter_map(|&l| level((l - line_parity) / 2).map(|v| (l as f64, f64::from(v))))
                .collect();
            let (slope, intercept) = fit_line(&points)?;
            let sky = |l: usize| slope * l as f64 + intercept;
            let scatter = (points
                .iter()
                .map(|&(l, v)| (v - sky(l as usize)).powi(2))
                .sum::<f64>()
                / points.len() as f64)
                .sqrt()
                / f64::from(sigma);
            if scatter > f64::from(MAX_BAND_SCATTER) {
                return None;
            }
            for line in (line_parity..MAX_LINES).step_by(2) {
                // A line without data (a sensor's masked border, stored as NaN) has nothing to leave out.
                let deviation = level((line - line_parity) / 2).map_or(0.0, |v| {
                    ((f64::from(v) - sky(line)).abs() / f64::from(sigma)) as f32
                });
                profile[line] = profile[line].max(deviation);
            }
        }
    }
    Some(profile)
}

/// Mean of the finite values between the first and third quartile (a star's wings crossing the line
/// do not move it, and it resolves integer data finer than a median); `None` with fewer than 8.
fn interquartile_mean(values: impl Iterator<Item = f32>) -> Option<f32> {
    let mut v: Vec<f32> = values.filter(|x| x.is_finite()).collect();
    if v.len() < 8 {
        return None;
    }
    v.sort_unstable_by(f32::total_cmp);
    let (a, b) = (v.len() / 4, v.len() - v.len() / 4);
    Some((v[a..b].iter().map(|&x| f64::from(x)).sum::<f64>() / (b - a) as f64) as f32)
}

/// Least-squares straight line `(slope, intercept)` through `points`; `None` with fewer than 3.
fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if !(sxx > 0.0) {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// A flat sky of 1000 with noise of sigma about 10 (a fixed pseudo-random draw).
    fn sky(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut state = seed;
        Array2::from_shape_fn((rows, cols), |_| {
            let mut sum = 0.0;
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                sum += (state >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            }
            (1000.0 + sum * 17.3) as f32
        })
    }

    fn border_of(frames: &[Array2<f32>]) -> SensorBorder {
        let mut profiles: [Vec<Option<[f32; MAX_LINES]>>; 4] = Default::default();
        for frame in frames {
            for (i, side) in Side::ALL.into_iter().enumerate() {
                let (r, c) = side.region(frame.nrows(), frame.ncols());
                let region = frame.slice(ndarray::s![r, c]);
                profiles[i].push(side_profile(side.lines(region)));
            }
        }
        SensorBorder::from_profiles(&profiles)
    }

    #[test]
    fn a_flat_sky_has_no_border() {
        let frames: Vec<_> = (0..5).map(|k| sky(240, 260, 11 + k)).collect();
        assert_eq!(border_of(&frames), SensorBorder::default());
    }

    #[test]
    fn dark_top_rows_and_a_dark_first_column_are_found_in_whole_cells() {
        let frames: Vec<_> = (0..5)
            .map(|k| {
                let mut f = sky(240, 260, 31 + k);
                // Like HAT-P-32's frames: 66, 34, 19, 12, 8, 5 noise-scaled ADU at the top, 26 in column 0.
                for (row, drop) in [44.0, 23.0, 13.0, 8.0, 5.0, 3.0, 2.0].iter().enumerate() {
                    f.row_mut(row).mapv_inplace(|v| v - drop * 10.0);
                }
                f.column_mut(0).mapv_inplace(|v| v - 170.0);
                f
            })
            .collect();
        let border = border_of(&frames);
        assert_eq!(
            border,
            SensorBorder {
                top: 8,
                bottom: 0,
                left: 2,
                right: 0
            }
        );
        let mut region = Array2::<f32>::ones((4, 5));
        border.mask(region.view_mut(), (6, 0), (240, 260));
        assert!(
            region.row(0).iter().all(|v| v.is_nan()) && region.row(1).iter().all(|v| v.is_nan())
        );
        assert!(region[[2, 0]].is_nan() && region[[2, 1]].is_nan() && region[[2, 2]] == 1.0);
        assert_eq!(border.kept(240, 260), [8, 240, 2, 260]);
    }

    #[test]
    fn a_sky_gradient_is_not_a_border_and_a_textured_band_is_not_measured() {
        let frames: Vec<_> = (0..3)
            .map(|k| {
                let mut f = sky(240, 260, 51 + k);
                for ((y, x), v) in f.indexed_iter_mut() {
                    *v += 3.0 * y as f32 + 2.0 * x as f32;
                }
                f
            })
            .collect();
        assert_eq!(border_of(&frames), SensorBorder::default());
        let mut textured = sky(240, 260, 5);
        for ((y, _), v) in textured.indexed_iter_mut() {
            *v += if (y / 3) % 2 == 0 { 400.0 } else { 0.0 };
        }
        let (r, c) = Side::Top.region(240, 260);
        assert_eq!(
            side_profile(Side::Top.lines(textured.slice(ndarray::s![r, c]))),
            None
        );
    }
}
