//! Star detection and measurement: positions, fluxes, FWHM and ellipticity of the stars of one image,
//! and the per-image summary (`tlr inspect`, the global pass's FWHM and star list).
//!
//! What it does:
//! 1. background and noise on a mesh of blocks (sigma-clipped median and MAD sigma per block; a block
//!    lying more than 3 sigma above the plane through its neighbours, i.e. filled by a bright star or
//!    galaxy, takes the plane's value), interpolated bilinearly between block centres and extrapolated
//!    linearly to the edges, so sky gradients and nebulae do not move the threshold;
//! 2. single-pixel spikes (hot pixels, cosmic-ray hits: the 4-neighbours carry < 15 % of the peak) are
//!    replaced by their neighbours' median, so they are neither detected nor hide a star next to them;
//! 3. detection: strict 5 x 5 local maxima of the background-subtracted image smoothed with a Gaussian
//!    (sigma 1 px), above `threshold_sigma` times the noise *measured on the smoothed image* (real noise
//!    is often correlated and quantised, so the white-noise prediction would be too low);
//! 4. per candidate, on its own Voronoi cell (pixels nearer to another candidate are ignored): centroid,
//!    size and shape from adaptive (Gaussian-weighted, iterated) second moments with the weight
//!    deconvolved; for stars with a peak of at least 8 sigma the FWHM comes from a least-squares fit
//!    of a Moffat profile with free beta plus a constant to the radial profile, so it is the real full
//!    width at half maximum for Gaussian- and Moffat-like stars; sources with FWHM below
//!    `min_fwhm_px` are rejected as defects;
//! 5. saturated stars (a flat top at the saturation level) and blended stars (a neighbour of at least a
//!    tenth of the peak within about two FWHM) are kept but flagged; [`measure`] takes its medians
//!    over the unflagged stars with a peak of at least [`MEDIAN_MIN_PEAK_SIGMA`] sigma.
//!
//! What it does not: PSF photometry, deblending beyond the Voronoi cells, plate solving, or colour (a
//! raw Bayer mosaic must be debayered or binned by the caller: its channel pattern inflates the noise).
//! NaN pixels are ignored; a star with a NaN in its 3 x 3 core is not measured. Cost: three
//! image-sized buffers (kept between frames by [`StarDetector`]) and, in a release build on one core of
//! a busy shared machine, about 12-18 ms of CPU time for a 1024 x 1024 frame when only the 150
//! brightest candidates are measured (the global pass) and 30-45 ms when all ~1200 stars are
//! (`benches/global.rs`). The full-image steps (mesh, subtraction, spikes, smoothing, candidates) are
//! single passes over row slices that skip sky pixels sixteen at a time; per star, the adaptive moments
//! and the Moffat fit cost about 15 µs.
//!
//! The parts, in the order of the steps above: `background.rs` (step 1: mesh, noise, subtraction),
//! `detect.rs` (steps 2 and 3: spikes, smoothing, local maxima, and the candidates' Voronoi cells),
//! `psf.rs` (the estimators of step 4: adaptive moments, radial Moffat fit), `measurement.rs` (steps 4
//! and 5 per candidate: peak, saturation, profile, flux, duplicates and blends). This file holds the
//! public types, the detector that runs the steps with its reusable buffers, and the image summary.

// `!(x > t)` is used on purpose throughout: unlike `x <= t` it is also true for NaN, which must be
// rejected as well.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use ndarray::ArrayView2;

use crate::stats;

mod background;
mod detect;
mod measurement;
mod psf;

use background::background_mesh;
use detect::{clear_owners, find_candidates, paint_owners, remove_spikes, smooth_into, NO_OWNER};
use measurement::{flag_blends, measure_candidates};

/// Options of [`detect_stars`]. `Default` suits camera frames and stacks.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    /// Detection threshold in units of the noise of the smoothed image.
    pub threshold_sigma: f32,
    /// Sigma of the Gaussian smoothing before detection, px.
    pub smoothing_sigma_px: f32,
    /// Saturation level (ADU, raw image values); `None` = the image maximum (a star is then saturated
    /// when at least two pixels of its 3 x 3 core reach it).
    pub saturation_adu: Option<f32>,
    /// Candidates closer than this to the image edge are ignored, px.
    pub border_px: usize,
    /// At most this many candidates (the brightest) are measured.
    pub max_stars: usize,
    /// Sources with a smaller FWHM are rejected as hot pixels or cosmic rays, px.
    pub min_fwhm_px: f32,
    /// Side of the background mesh blocks, px.
    pub background_mesh_px: usize,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            threshold_sigma: 5.0,
            smoothing_sigma_px: 1.0,
            saturation_adu: None,
            border_px: 4,
            max_stars: 20_000,
            min_fwhm_px: 1.0,
            background_mesh_px: 64,
        }
    }
}

/// One detected star.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Star {
    /// Column of the centroid (sub-pixel; pixel centres are integers).
    pub x: f32,
    /// Row of the centroid.
    pub y: f32,
    /// Background-subtracted flux within a radius of max(3, 2 FWHM), ADU.
    pub flux: f32,
    /// Peak pixel value above the local background, ADU.
    pub peak: f32,
    /// Full width at half maximum, px: from the radial Moffat fit for stars with a peak of at least
    /// 8 sigma, from the adaptive moments (Gaussian-equivalent width) for fainter or saturated ones.
    pub fwhm: f32,
    /// `1 - b/a` of the star's second-moment ellipse (0 = round).
    pub ellipticity: f32,
    /// The core reaches the saturation level: FWHM and flux are unreliable.
    pub saturated: bool,
    /// A neighbour of at least a tenth of its peak lies within about two FWHM.
    pub blended: bool,
}

/// Summary of one image, as `tlr inspect` prints it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageQuality {
    /// Number of stars detected (defects such as hot pixels excluded).
    pub stars: usize,
    /// Median FWHM of the unsaturated, unblended stars (the bright ones, see [`measure`]), px; NaN when
    /// there is none.
    pub median_fwhm: f32,
    /// Median ellipticity of the same stars; NaN when there is none.
    pub median_ellipticity: f32,
    /// Sky background (median of the background mesh), ADU; NaN for an image without finite pixels.
    pub background: f32,
    /// Noise (median of the per-block MAD sigma), ADU; NaN for an image without finite pixels.
    pub noise: f32,
    /// Number of stars the medians are taken over.
    pub fwhm_stars: usize,
}
/// Detects and measures the stars of `image` (any ADU scale; NaN = missing). Returns them brightest
/// first (by smoothed peak). Hot pixels and other single-pixel defects are not returned.
///
/// Allocates a few image-sized buffers per call; [`StarDetector`] reuses them across images.
pub fn detect_stars(image: ArrayView2<f32>, options: &DetectOptions) -> Vec<Star> {
    StarDetector::new(options.clone()).detect(image)
}

/// Image-sized working buffers of the detection, reused by [`StarDetector`].
#[derive(Clone, Default)]
struct Buffers {
    /// Background-subtracted image, spikes removed.
    work: Vec<f32>,
    /// `work` smoothed for detection.
    smoothed: Vec<f32>,
    /// Candidate index owning each pixel; all [`NO_OWNER`] between calls.
    owners: Vec<u32>,
    /// Background mesh rows interpolated along x.
    lines: Vec<f32>,
    /// Horizontally smoothed rows of the vertical pass.
    ring: Vec<f32>,
    /// One edge-padded row.
    padded: Vec<f32>,
}

/// [`detect_stars`] and [`measure_with`] with working buffers that are kept between images: measuring
/// a sequence of same-sized frames with one detector saves allocating, and page-faulting in, about
/// three image-sized buffers per frame (several ms for a 1024 x 1024 frame). Holds about 12 bytes per
/// pixel of the largest image seen; the results are the same as those of the free functions.
#[derive(Clone, Default)]
pub struct StarDetector {
    options: DetectOptions,
    buffers: Buffers,
}

impl std::fmt::Debug for StarDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StarDetector")
            .field("options", &self.options)
            .field("buffered_pixels", &self.buffers.work.capacity())
            .finish()
    }
}

impl StarDetector {
    /// A detector with these options and empty buffers.
    pub fn new(options: DetectOptions) -> Self {
        Self {
            options,
            buffers: Buffers::default(),
        }
    }

    /// The detection options.
    pub fn options(&self) -> &DetectOptions {
        &self.options
    }

    /// [`detect_stars`] with this detector's options and buffers.
    pub fn detect(&mut self, image: ArrayView2<f32>) -> Vec<Star> {
        detect_with_background(image, &self.options, &mut self.buffers).0
    }

    /// [`measure_with`] with this detector's options and buffers.
    pub fn measure(&mut self, image: ArrayView2<f32>) -> ImageQuality {
        let (stars, summary) = detect_with_background(image, &self.options, &mut self.buffers);
        summarise(image, &stars, summary)
    }
}

fn detect_with_background(
    image: ArrayView2<f32>,
    options: &DetectOptions,
    buffers: &mut Buffers,
) -> (Vec<Star>, Option<(f32, f32)>) {
    let (rows, cols) = image.dim();
    if rows < 5 || cols < 5 {
        return (Vec::new(), None);
    }
    let Some(bg) = background_mesh(image, options.background_mesh_px) else {
        return (Vec::new(), None);
    };
    let summary = Some((bg.level, bg.noise));
    let Buffers {
        work,
        smoothed,
        owners,
        lines,
        ring,
        padded,
    } = buffers;
    let image_max = bg.subtract_into(image, work, lines);
    let noise = if bg.noise.is_finite() { bg.noise } else { 0.0 };
    remove_spikes(work, rows, cols, 5.0 * noise);
    let k2 = smooth_into(
        work,
        rows,
        cols,
        options.smoothing_sigma_px,
        smoothed,
        ring,
        padded,
    );
    // Noise of the smoothed image, measured on it: real noise is often spatially correlated
    // (debayering, binning, compression) and quantised, so `noise * k2` would be too optimistic.
    let smoothed_view = ArrayView2::from_shape((rows, cols), &smoothed[..]).expect("rows * cols");
    let noise_smoothed = stats::background_and_noise(smoothed_view, 20_000)
        .map(|st| st.sigma)
        .filter(|v| v.is_finite())
        .unwrap_or(noise * k2)
        .max(noise * k2);
    let threshold = (options.threshold_sigma * noise_smoothed).max(0.0);
    let border = options.border_px.max(2);
    if rows <= 2 * border || cols <= 2 * border {
        return (Vec::new(), summary);
    }
    let mut candidates = find_candidates(smoothed, work, rows, cols, border, threshold);
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    candidates.truncate(options.max_stars);

    if owners.len() != rows * cols {
        owners.clear();
        owners.resize(rows * cols, NO_OWNER);
    }
    paint_owners(owners, rows, cols, &candidates);
    let work = ArrayView2::from_shape((rows, cols), &work[..]).expect("rows * cols");
    let owner_view = ArrayView2::from_shape((rows, cols), &owners[..]).expect("rows * cols");
    let mut stars = measure_candidates(
        image,
        work,
        owner_view,
        &candidates,
        options,
        image_max,
        noise,
    );
    clear_owners(owners, rows, cols, &candidates);
    flag_blends(&mut stars);
    (stars, summary)
}
/// Makes `buffer` exactly `len` long; new elements are `fill`, old ones keep their (stale) values.
pub(super) fn resize_buffer<T: Copy>(buffer: &mut Vec<T>, len: usize, fill: T) {
    buffer.truncate(len);
    buffer.resize(len, fill);
}
/// Peak, in noise sigmas, of the stars [`measure`] prefers for its medians.
pub const MEDIAN_MIN_PEAK_SIGMA: f32 = 10.0;
/// [`measure`] falls back to all unsaturated, unblended stars when fewer than this many reach
/// [`MEDIAN_MIN_PEAK_SIGMA`].
pub const MEDIAN_MIN_STARS: usize = 5;

/// Measures an image: star count, median FWHM and ellipticity (unsaturated, unblended stars with a
/// peak of at least [`MEDIAN_MIN_PEAK_SIGMA`] sigma, or all unsaturated, unblended ones if fewer than
/// [`MEDIAN_MIN_STARS`] are that bright),
/// background and noise. Never panics; an empty, flat or all-NaN image gives 0 stars and NaN medians
/// (background and noise NaN when no pixel is finite).
pub fn measure(image: ArrayView2<f32>) -> ImageQuality {
    measure_with(image, &DetectOptions::default())
}

/// [`measure`] with explicit detection options.
pub fn measure_with(image: ArrayView2<f32>, options: &DetectOptions) -> ImageQuality {
    StarDetector::new(options.clone()).measure(image)
}

/// The [`ImageQuality`] of `image` from its stars and the mesh's `(background, noise)`.
fn summarise(image: ArrayView2<f32>, stars: &[Star], summary: Option<(f32, f32)>) -> ImageQuality {
    let (background, noise) = summary.unwrap_or_else(|| {
        stats::background_and_noise(image, 50_000)
            .map(|s| (s.median, s.sigma))
            .unwrap_or((f32::NAN, f32::NAN))
    });
    // Faint stars give noisy sizes and a positively biased ellipticity: use the stars with a peak of
    // at least MEDIAN_MIN_PEAK_SIGMA sigma when there are enough of them.
    let clean: Vec<&Star> = stars
        .iter()
        .filter(|s| !s.saturated && !s.blended)
        .collect();
    let strong: Vec<&Star> = clean
        .iter()
        .copied()
        .filter(|s| s.peak >= MEDIAN_MIN_PEAK_SIGMA * noise)
        .collect();
    let good = if strong.len() >= MEDIAN_MIN_STARS {
        strong
    } else {
        clean
    };
    let fwhms: Vec<f32> = good.iter().map(|s| s.fwhm).collect();
    let ells: Vec<f32> = good.iter().map(|s| s.ellipticity).collect();
    ImageQuality {
        stars: stars.len(),
        median_fwhm: stats::median(&fwhms),
        median_ellipticity: stats::median(&ells),
        background,
        noise,
        fwhm_stars: good.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::StandardNormal;

    /// Adds an elliptical Moffat (beta) or Gaussian (beta = None) star sampled at pixel centres.
    #[allow(clippy::too_many_arguments)]
    fn add_star(
        img: &mut Array2<f32>,
        y: f32,
        x: f32,
        peak: f32,
        fwhm: f32,
        beta: Option<f32>,
        axis_ratio: f32,
    ) {
        let (rows, cols) = img.dim();
        for r in 0..rows {
            for c in 0..cols {
                let (dy, dx) = (r as f32 - y, (c as f32 - x) / axis_ratio.max(0.01));
                let d2 = dy * dy + dx * dx;
                if d2 > 900.0 {
                    continue;
                }
                img[[r, c]] += match beta {
                    Some(b) => {
                        let alpha = fwhm / (2.0 * (2f32.powf(1.0 / b) - 1.0).sqrt());
                        peak * (1.0 + d2 / (alpha * alpha)).powf(-b)
                    }
                    None => {
                        let s = fwhm / 2.354_82;
                        peak * (-0.5 * d2 / (s * s)).exp()
                    }
                };
            }
        }
    }

    fn noisy_sky(rows: usize, cols: usize, level: f32, sigma: f32, seed: u64) -> Array2<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_fn((rows, cols), |_| {
            level + sigma * rng.sample::<f32, _>(StandardNormal)
        })
    }

    fn grid_of_stars(fwhm: f32, beta: Option<f32>, seed: u64) -> (Array2<f32>, Vec<(f32, f32)>) {
        let mut img = noisy_sky(200, 200, 1000.0, 10.0, seed);
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let mut truth = Vec::new();
        for gy in 0..5 {
            for gx in 0..5 {
                let y = 20.0 + 40.0 * gy as f32 + rng.random_range(-0.5f32..0.5);
                let x = 20.0 + 40.0 * gx as f32 + rng.random_range(-0.5f32..0.5);
                add_star(
                    &mut img,
                    y,
                    x,
                    rng.random_range(300.0..3000.0),
                    fwhm,
                    beta,
                    1.0,
                );
                truth.push((y, x));
            }
        }
        (img, truth)
    }

    #[test]
    fn fwhm_and_positions_of_moffat_and_gaussian_stars() {
        for (k, beta) in [None, Some(2.5), Some(3.0), Some(4.5)]
            .into_iter()
            .enumerate()
        {
            for fwhm in [2.5f32, 3.5, 6.0] {
                let (img, truth) = grid_of_stars(fwhm, beta, 10 + k as u64);
                let stars = detect_stars(img.view(), &DetectOptions::default());
                assert_eq!(
                    stars.len(),
                    25,
                    "beta {beta:?} fwhm {fwhm}: {}",
                    stars.len()
                );
                for &(y, x) in &truth {
                    let s = stars
                        .iter()
                        .find(|s| (s.y - y).hypot(s.x - x) < 1.0)
                        .unwrap_or_else(|| panic!("star at {y}, {x} not found"));
                    assert!((s.y - y).hypot(s.x - x) < 0.15, "{s:?} vs {y}, {x}");
                }
                let q = measure(img.view());
                let err = (q.median_fwhm / fwhm - 1.0).abs();
                assert!(
                    err < 0.05,
                    "beta {beta:?} fwhm {fwhm}: measured {}",
                    q.median_fwhm
                );
                assert!(q.median_ellipticity < 0.08, "{q:?}");
                assert!((q.background - 1000.0).abs() < 10.0, "{q:?}");
                assert!((q.noise - 10.0).abs() < 2.0, "{q:?}");
            }
        }
    }

    #[test]
    fn hot_pixels_are_not_stars() {
        let (mut img, _) = grid_of_stars(3.0, Some(3.0), 3);
        let mut rng = StdRng::seed_from_u64(99);
        for _ in 0..60 {
            let (r, c) = (rng.random_range(5..195), rng.random_range(5..195));
            img[[r, c]] += rng.random_range(100.0..40_000.0);
        }
        let stars = detect_stars(img.view(), &DetectOptions::default());
        assert_eq!(stars.len(), 25);
        assert!(stars.iter().all(|s| s.fwhm > 2.0), "{stars:?}");
    }

    #[test]
    fn ellipticity_of_elongated_stars() {
        let mut img = noisy_sky(120, 120, 500.0, 5.0, 4);
        add_star(&mut img, 40.0, 40.0, 2000.0, 3.0, None, 2.0);
        add_star(&mut img, 80.0, 80.0, 2000.0, 3.0, None, 2.0);
        let q = measure(img.view());
        assert_eq!(q.stars, 2);
        assert!((q.median_ellipticity - 0.5).abs() < 0.05, "{q:?}");
    }

    #[test]
    fn saturated_and_blended_stars_are_flagged_and_left_out_of_the_median() {
        let (mut img, _) = grid_of_stars(3.0, Some(3.0), 5);
        add_star(&mut img, 80.0, 40.0, 200_000.0, 3.0, Some(3.0), 1.0);
        add_star(&mut img, 120.0, 80.0, 2000.0, 3.0, Some(3.0), 1.0);
        add_star(&mut img, 120.0, 86.5, 1500.0, 3.0, Some(3.0), 1.0);
        img.mapv_inplace(|v| v.min(30_000.0));
        let stars = detect_stars(img.view(), &DetectOptions::default());
        assert_eq!(stars.len(), 28);
        let sat = stars
            .iter()
            .find(|s| (s.y - 80.0).abs() < 1.0 && (s.x - 40.0).abs() < 1.0);
        assert!(sat.unwrap().saturated);
        let blended = stars.iter().filter(|s| s.blended).count();
        assert!(blended >= 2, "{stars:?}");
        let q = measure(img.view());
        assert!((q.median_fwhm / 3.0 - 1.0).abs() < 0.05, "{q:?}");
        assert_eq!(q.fwhm_stars, 25);
    }

    #[test]
    fn degenerate_images_do_not_panic() {
        let flat = Array2::from_elem((64, 64), 1234.0f32);
        let q = measure(flat.view());
        assert_eq!(q.stars, 0);
        assert!(q.median_fwhm.is_nan());
        assert_eq!(q.background, 1234.0);
        assert_eq!(q.noise, 0.0);

        let nan = Array2::from_elem((64, 64), f32::NAN);
        let q = measure(nan.view());
        assert_eq!(q.stars, 0);
        assert!(q.background.is_nan() && q.noise.is_nan());

        for shape in [(0, 0), (1, 1), (3, 100), (100, 4)] {
            let img = Array2::from_elem(shape, 5.0f32);
            assert_eq!(measure(img.view()).stars, 0);
        }

        // Noiseless star on a flat sky: still found.
        let mut img = Array2::from_elem((50, 50), 100.0f32);
        add_star(&mut img, 25.3, 24.6, 500.0, 3.0, Some(3.0), 1.0);
        let stars = detect_stars(img.view(), &DetectOptions::default());
        assert_eq!(stars.len(), 1);
        assert!((stars[0].fwhm - 3.0).abs() < 0.05, "{stars:?}");

        // Views that are not in standard layout.
        let (img, _) = grid_of_stars(3.0, Some(3.0), 8);
        let t = img.t();
        assert_eq!(measure(t).stars, 25);
        let part = img.slice(ndarray::s![0..120, 0..200;2]);
        assert!(measure(part).stars > 5);

        // Infinite values and NaN holes.
        let (mut img, _) = grid_of_stars(3.0, Some(3.0), 6);
        for r in 0..200 {
            img[[r, 100]] = f32::NAN;
        }
        img[[10, 10]] = f32::INFINITY;
        img[[150, 20]] = f32::NEG_INFINITY;
        let q = measure(img.view());
        assert!(q.stars >= 20 && q.stars <= 25, "{q:?}");
        assert!((q.median_fwhm / 3.0 - 1.0).abs() < 0.05, "{q:?}");
    }

    #[test]
    fn background_follows_a_gradient() {
        let mut img = noisy_sky(256, 256, 0.0, 8.0, 7);
        for ((r, c), v) in img.indexed_iter_mut() {
            *v += 1000.0 + 1.5 * r as f32 + 0.8 * c as f32;
        }
        add_star(&mut img, 30.0, 220.0, 150.0, 3.0, Some(3.0), 1.0);
        let stars = detect_stars(img.view(), &DetectOptions::default());
        // Only the star: the gradient makes no false detections.
        assert_eq!(stars.len(), 1, "{stars:?}");
    }
}
