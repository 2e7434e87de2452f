//! Global registration without stars (`registration.global.method: correlation`): whole-frame
//! translation of the Sun, the Moon or a planet against a reference made from the sharpest frames.
//!
//! How a frame is placed ([`SurfaceReference::register`]):
//! 1. pre-centring on a bright disc: when the frame is a disc on black sky ([`disc_centroid`]: at most
//!    [`DISC_MAX_FILL`] of the pixels clearly above the sky), the offset between the frame's and the
//!    reference's intensity centroids is the start, so a planet that drifts far stays found;
//! 2. windowed phase correlation of the whole frame (mean removed, separable Hann window, the
//!    cross-power spectrum normalised and tapered by a Gaussian low-pass, so that noise does not whiten
//!    into the peak) gives the whole-pixel shift from the start;
//! 3. sub-pixel refinement with the tile registration ([`crate::register`], translation ECC by
//!    Gauss-Newton) on a crop of the reference of at most [`FINE_CROP_PX`] around its centroid (disc) or
//!    centre (a surface filling the frame): unwindowed, so the Hann window's bias is gone.
//!
//! [`build_reference`] aligns the sharpest frames to the sharpest one (the same three steps) and
//! averages them; its geometry is that of the sharpest frame. [`use_correlation`] decides
//! `auto` from the star pass.
//!
//! What it does not: rotation or local motion (tiles do that), star matching (`matching.rs`),
//! choose the frames (the caller picks the sharpest with [`crate::quality::sharpness`]).

use ndarray::{s, Array2, ArrayView2};
use rustfft::num_complex::Complex32;
use rustfft::FftPlanner;

use super::FrameQuality;
use crate::geom::Shift;
use crate::register::{register, Reference};

/// A frame counts as a disc on black sky when at most this fraction of its pixels lies clearly
/// (10 noise sigma) above the sky level.
pub const DISC_MAX_FILL: f32 = 0.6;
/// Edge of the reference crop used for the sub-pixel refinement, px (at most).
pub const FINE_CROP_PX: usize = 384;
/// Margin around the crop that the refinement may move in, px.
const FINE_MARGIN_PX: usize = 8;
/// Correlation below which a frame is not placed (`shift_ok = false`).
pub const MIN_CORRELATION: f32 = 0.3;
/// `auto` uses the stars when the star pass placed at least this fraction of the frames.
pub const AUTO_MIN_PLACED_FRACTION: f32 = 0.5;

/// How the global pass registers whole frames (`registration.global.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalMethod {
    /// Star matching when enough frames were placed by their stars, else correlation.
    #[default]
    Auto,
    /// Star matching only (frames without enough stars are left out).
    Stars,
    /// Whole-frame phase correlation plus sub-pixel refinement.
    Correlation,
}

impl GlobalMethod {
    /// The names `auto`, `stars`, `correlation`.
    pub const CHOICES: &'static str = "auto, stars or correlation";

    /// Parses a name (case-insensitive).
    ///
    /// # Errors
    /// An unknown name, with the choices.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "stars" => Ok(Self::Stars),
            "correlation" => Ok(Self::Correlation),
            other => Err(format!("`{other}` is not one of {}", Self::CHOICES)),
        }
    }
}

/// Whether the global pass should place the frames by correlation: `correlation`, or `auto` when the
/// star pass placed fewer than [`AUTO_MIN_PLACED_FRACTION`] of the measured frames.
pub fn use_correlation(method: GlobalMethod, qualities: &[Option<FrameQuality>]) -> bool {
    match method {
        GlobalMethod::Stars => false,
        GlobalMethod::Correlation => true,
        GlobalMethod::Auto => {
            let measured = qualities.iter().flatten().count();
            let placed = qualities.iter().flatten().filter(|q| q.shift_ok).count();
            (placed as f32) < AUTO_MIN_PLACED_FRACTION * measured as f32
        }
    }
}

/// Intensity centroid `(y, x)` of the pixels clearly above the sky (10 sigma over the sampled
/// background), when they fill at most [`DISC_MAX_FILL`] of the frame (a disc on black sky); `None` for
/// a surface that fills the frame, or a frame without such pixels.
pub fn disc_centroid(image: ArrayView2<f32>) -> Option<(f32, f32)> {
    let sky = crate::stats::background_and_noise(image, 16_384)?;
    let threshold = sky.median + 10.0 * sky.sigma.max(1e-6);
    let (mut sum, mut sy, mut sx, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for ((r, c), &v) in image.indexed_iter() {
        if v > threshold {
            let w = f64::from(v - sky.median);
            sum += w;
            sy += w * r as f64;
            sx += w * c as f64;
            n += 1;
        }
    }
    let fill = n as f32 / image.len().max(1) as f32;
    (n >= 16 && fill <= DISC_MAX_FILL && sum > 0.0).then(|| ((sy / sum) as f32, (sx / sum) as f32))
}

/// The placement of one frame: its shift against the reference (convention of [`crate::geom`]) and the
/// normalised correlation at that shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceShift {
    /// A feature at reference `(y, x)` is at frame `(y + dy, x + dx)`.
    pub shift: Shift,
    /// Zero-mean normalised correlation in `[0, 1]` of the refined crop.
    pub cc: f32,
}

/// A reference image prepared for [`SurfaceReference::register`].
#[derive(Debug)]
pub struct SurfaceReference {
    image: Array2<f32>,
    centroid: Option<(f32, f32)>,
    crop_origin: (usize, usize),
    fine: Reference,
}

impl SurfaceReference {
    /// Prepares `image` (a frame or an average of aligned frames).
    pub fn new(image: Array2<f32>) -> Self {
        let centroid = disc_centroid(image.view());
        let (rows, cols) = image.dim();
        let (cy, cx) = centroid.unwrap_or(((rows as f32 - 1.0) / 2.0, (cols as f32 - 1.0) / 2.0));
        let crop = |len: usize, centre: f32| {
            let edge = FINE_CROP_PX
                .min(len.saturating_sub(2 * FINE_MARGIN_PX))
                .max(1);
            let lo = FINE_MARGIN_PX.min(len.saturating_sub(edge));
            let hi = len.saturating_sub(edge + FINE_MARGIN_PX).max(lo);
            let start = (centre - edge as f32 / 2.0)
                .round()
                .clamp(lo as f32, hi as f32) as usize;
            (start, edge)
        };
        let ((y0, h), (x0, w)) = (crop(rows, cy), crop(cols, cx));
        let fine = Reference::new(image.slice(s![y0..y0 + h, x0..x0 + w]));
        Self {
            image,
            centroid,
            crop_origin: (y0, x0),
            fine,
        }
    }

    /// The reference image.
    pub fn image(&self) -> &Array2<f32> {
        &self.image
    }

    /// Places `frame` (same shape as the reference); `None` when it cannot be placed (another shape, no
    /// structure, correlation below [`MIN_CORRELATION`]).
    pub fn register(&self, frame: ArrayView2<f32>) -> Option<SurfaceShift> {
        if frame.dim() != self.image.dim() {
            return None;
        }
        // 1. Pre-centring on a disc.
        let start = match (self.centroid, disc_centroid(frame)) {
            (Some((ry, rx)), Some((fy, fx))) => {
                ((fy - ry).round() as isize, (fx - rx).round() as isize)
            }
            _ => (0, 0),
        };
        // 2. Whole-pixel rest by windowed phase correlation of the pre-centred frame.
        let moved = offset_view(frame, start);
        let (py, px) = phase_correlate(self.image.view(), moved.view())?;
        let (oy, ox) = (start.0 + py, start.1 + px);
        // 3. Sub-pixel refinement on the crop, in a cut-out offset by the whole-pixel shift.
        let (h, w) = self.fine.dim();
        let (y0, x0) = self.crop_origin;
        let m = FINE_MARGIN_PX as isize;
        let cut = cut_out(
            frame,
            y0 as isize + oy - m,
            x0 as isize + ox - m,
            h + 2 * FINE_MARGIN_PX,
            w + 2 * FINE_MARGIN_PX,
        );
        let fine = register(&self.fine, cut.view(), Some(Shift::ZERO));
        if !fine.converged || fine.cc < MIN_CORRELATION {
            return None;
        }
        Some(SurfaceShift {
            shift: Shift::new(oy as f32 + fine.shift.dy, ox as f32 + fine.shift.dx),
            cc: fine.cc,
        })
    }
}

/// The reference of a star-less run: `frames` (the sharpest first) aligned to the first by
/// [`SurfaceReference::register`] and averaged (Lanczos-3 resampling; frames that cannot be placed are
/// left out). `None` without frames.
pub fn build_reference(frames: &[Array2<f32>]) -> Option<Array2<f32>> {
    let first = frames.first()?;
    let anchor = SurfaceReference::new(first.clone());
    let (rows, cols) = first.dim();
    let mut sum = first.clone();
    let mut count = Array2::<f32>::ones((rows, cols));
    let mut resampler = crate::resample::Resampler::new().with_edge_fill(false);
    let mut aligned = Array2::<f32>::zeros((rows, cols));
    for frame in &frames[1..] {
        let Some(placed) = anchor.register(frame.view()) else {
            continue;
        };
        // The frame's pixel (y + dy, x + dx) shows reference pixel (y, x).
        resampler.sample_shifted(
            frame.view(),
            placed.shift.dy,
            placed.shift.dx,
            aligned.view_mut(),
        );
        for ((s, n), &v) in sum.iter_mut().zip(count.iter_mut()).zip(aligned.iter()) {
            if v.is_finite() {
                *s += v;
                *n += 1.0;
            }
        }
    }
    Some(sum / count)
}

/// `frame` moved so that its pixel `(y + oy, x + ox)` lands at `(y, x)`, edge pixels repeated outside.
fn offset_view(frame: ArrayView2<f32>, (oy, ox): (isize, isize)) -> Array2<f32> {
    let (rows, cols) = frame.dim();
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        frame[[clamp(r as isize + oy, rows), clamp(c as isize + ox, cols)]]
    })
}

/// The `h x w` window of `frame` whose top-left pixel is frame `(y0, x0)`; NaN outside the frame.
fn cut_out(frame: ArrayView2<f32>, y0: isize, x0: isize, h: usize, w: usize) -> Array2<f32> {
    let (rows, cols) = frame.dim();
    Array2::from_shape_fn((h, w), |(r, c)| {
        let (y, x) = (y0 + r as isize, x0 + c as isize);
        if y >= 0 && x >= 0 && (y as usize) < rows && (x as usize) < cols {
            frame[[y as usize, x as usize]]
        } else {
            f32::NAN
        }
    })
}

/// Whole-pixel shift of `moved` against `reference` (same shape) by windowed phase correlation: the
/// peak of the normalised, low-pass-tapered cross-power spectrum. `None` for empty or flat images.
pub fn phase_correlate(
    reference: ArrayView2<f32>,
    moved: ArrayView2<f32>,
) -> Option<(isize, isize)> {
    let (rows, cols) = reference.dim();
    if rows < 4 || cols < 4 || moved.dim() != (rows, cols) {
        return None;
    }
    let mut planner = FftPlanner::<f32>::new();
    let a = spectrum(reference, &mut planner)?;
    let b = spectrum(moved, &mut planner)?;
    // Cross-power with a Gaussian taper (sigma 0.15 cycles/px): the phase of fine, noisy frequencies
    // would otherwise dominate the peak.
    let taper = |k: usize, n: usize| {
        let f = (if k > n / 2 { n - k } else { k }) as f32 / n as f32;
        (-(f * f) / (2.0 * 0.15 * 0.15)).exp()
    };
    let mut cross: Vec<Complex32> = a
        .iter()
        .zip(&b)
        .enumerate()
        .map(|(i, (&fa, &fb))| {
            let p = fb * fa.conj();
            let norm = p.norm();
            if norm > 0.0 {
                p / norm * taper(i / cols, rows) * taper(i % cols, cols)
            } else {
                Complex32::new(0.0, 0.0)
            }
        })
        .collect();
    fft2(&mut cross, rows, cols, &mut planner, true);
    let (best, _) = cross
        .iter()
        .enumerate()
        .max_by(|(i, x), (j, y)| x.re.total_cmp(&y.re).then(j.cmp(i)))?;
    let wrap = |k: usize, n: usize| {
        if k > n / 2 {
            k as isize - n as isize
        } else {
            k as isize
        }
    };
    Some((wrap(best / cols, rows), wrap(best % cols, cols)))
}

/// Spectrum of the mean-removed, Hann-windowed image (NaN counts as the mean); `None` when flat.
fn spectrum(image: ArrayView2<f32>, planner: &mut FftPlanner<f32>) -> Option<Vec<Complex32>> {
    let (rows, cols) = image.dim();
    let finite: Vec<f32> = image.iter().copied().filter(|v| v.is_finite()).collect();
    let mean = finite.iter().map(|&v| f64::from(v)).sum::<f64>() / finite.len().max(1) as f64;
    let hann = |k: usize, n: usize| {
        0.5 - 0.5 * (2.0 * std::f32::consts::PI * (k as f32 + 0.5) / n as f32).cos()
    };
    let (wy, wx): (Vec<f32>, Vec<f32>) = (
        (0..rows).map(|r| hann(r, rows)).collect(),
        (0..cols).map(|c| hann(c, cols)).collect(),
    );
    let mut data: Vec<Complex32> = image
        .indexed_iter()
        .map(|((r, c), &v)| {
            let v = if v.is_finite() { v - mean as f32 } else { 0.0 };
            Complex32::new(v * wy[r] * wx[c], 0.0)
        })
        .collect();
    if data.iter().all(|v| v.re == 0.0) {
        return None;
    }
    fft2(&mut data, rows, cols, planner, false);
    Some(data)
}

/// In-place 2-D FFT of a row-major `rows x cols` array (inverse when `inverse`, unnormalised).
fn fft2(
    data: &mut [Complex32],
    rows: usize,
    cols: usize,
    planner: &mut FftPlanner<f32>,
    inverse: bool,
) {
    let mut plan = |n| {
        if inverse {
            planner.plan_fft_inverse(n)
        } else {
            planner.plan_fft_forward(n)
        }
    };
    let row_fft = plan(cols);
    for row in data.chunks_exact_mut(cols) {
        row_fft.process(row);
    }
    let col_fft = plan(rows);
    let mut column = vec![Complex32::new(0.0, 0.0); rows];
    for c in 0..cols {
        for r in 0..rows {
            column[r] = data[r * cols + c];
        }
        col_fft.process(&mut column);
        for r in 0..rows {
            data[r * cols + c] = column[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(rows: usize, cols: usize, dy: f32, dx: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let (y, x) = (r as f32 - dy, c as f32 - dx);
            500.0
                + 100.0 * (0.21 * x + 0.5).sin() * (0.17 * y).cos()
                + 60.0 * (0.09 * x + 0.13 * y).sin()
                + 40.0 * (0.31 * y - 0.07 * x).cos()
        })
    }

    fn disc(rows: usize, cols: usize, cy: f32, cx: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            let (y, x) = (r as f32 - cy, c as f32 - cx);
            let d = (y * y + x * x).sqrt();
            let edge = 1.0 / (1.0 + ((d - 60.0) / 1.0).exp());
            10.0 + edge * (1000.0 + 300.0 * (0.25 * y).sin())
        })
    }

    #[test]
    fn surfaces_are_placed_to_a_hundredth_of_a_pixel() {
        let reference = SurfaceReference::new(scene(200, 240, 0.0, 0.0));
        for (dy, dx) in [(0.0, 0.0), (3.3, -7.6), (-12.45, 0.8)] {
            let placed = reference.register(scene(200, 240, dy, dx).view()).unwrap();
            assert!(
                (placed.shift.dy - dy).abs() < 0.02 && (placed.shift.dx - dx).abs() < 0.02,
                "{dy},{dx}: {:?}",
                placed.shift
            );
            assert!(placed.cc > 0.99);
        }
    }

    #[test]
    fn a_disc_on_black_sky_is_found_far_away() {
        let reference = SurfaceReference::new(disc(256, 256, 128.0, 128.0));
        let placed = reference
            .register(disc(256, 256, 158.3, 90.6).view())
            .unwrap();
        assert!(
            (placed.shift.dy - 30.3).abs() < 0.05 && (placed.shift.dx + 37.4).abs() < 0.05,
            "{:?}",
            placed.shift
        );
        assert!(disc_centroid(scene(100, 100, 0.0, 0.0).view()).is_none());
    }

    #[test]
    fn reference_averages_aligned_frames_and_auto_follows_the_stars() {
        let frames: Vec<Array2<f32>> = [(0.0, 0.0), (2.5, 1.5), (-1.25, 3.0)]
            .iter()
            .map(|&(dy, dx)| scene(120, 120, dy, dx))
            .collect();
        let average = build_reference(&frames).unwrap();
        let inner = s![20..100, 20..100];
        let diff = (&average.slice(inner) - &frames[0].slice(inner)).mapv(f32::abs);
        assert!(diff.iter().copied().fold(0.0, f32::max) < 2.0);
        let q = |ok| FrameQuality {
            background: 1.0,
            noise: 1.0,
            fwhm: f32::NAN,
            stars: 0,
            shift: Shift::ZERO,
            shift_ok: ok,
        };
        let few = vec![Some(q(true)), Some(q(false)), Some(q(false)), None];
        assert!(use_correlation(GlobalMethod::Auto, &few));
        assert!(!use_correlation(GlobalMethod::Stars, &few));
        let most = vec![Some(q(true)), Some(q(true)), Some(q(false))];
        assert!(!use_correlation(GlobalMethod::Auto, &most));
        assert!(use_correlation(GlobalMethod::Correlation, &most));
        assert!(GlobalMethod::parse("Stars").is_ok() && GlobalMethod::parse("x").is_err());
    }
}
