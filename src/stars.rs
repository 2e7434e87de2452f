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

// `!(x > t)` is used on purpose throughout: unlike `x <= t` it is also true for NaN, which must be
// rejected as well.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use ndarray::{Array2, ArrayView2};

use crate::stats;

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

/// Background map and noise of an image.
struct Background {
    /// Per-block background, ADU.
    mesh: Array2<f32>,
    /// Row coordinates of the block centres.
    cy: Vec<f32>,
    /// Column coordinates of the block centres.
    cx: Vec<f32>,
    /// Median of the mesh values.
    level: f32,
    /// Median of the per-block noise.
    noise: f32,
}

/// Background and noise on a mesh of `block` px blocks; `None` when no block has enough finite pixels.
fn background_mesh(image: ArrayView2<f32>, block: usize) -> Option<Background> {
    let (rows, cols) = image.dim();
    let block = block.clamp(8, rows.max(cols).max(8));
    let (nby, nbx) = (rows.div_ceil(block), cols.div_ceil(block));
    let mut level = Array2::<f32>::from_elem((nby, nbx), f32::NAN);
    let mut sigma = Array2::<f32>::from_elem((nby, nbx), f32::NAN);
    let mut samples = Vec::with_capacity(block * block);
    for by in 0..nby {
        for bx in 0..nbx {
            let (r0, r1) = (by * block, ((by + 1) * block).min(rows));
            let (c0, c1) = (bx * block, ((bx + 1) * block).min(cols));
            // About 400-1000 samples per block are plenty for a median and a MAD.
            let stride = (((r1 - r0) * (c1 - c0)) as f32 / 400.0)
                .sqrt()
                .floor()
                .max(1.0) as usize;
            samples.clear();
            for r in (r0..r1).step_by(stride) {
                for c in (c0..c1).step_by(stride) {
                    let v = image[[r, c]];
                    if v.is_finite() {
                        samples.push(v);
                    }
                }
            }
            if samples.len() < 16 {
                continue;
            }
            if let Some((median, sd)) = sigma_clipped_sorting(&mut samples, 3.0, 3) {
                level[[by, bx]] = median;
                sigma[[by, bx]] = sd;
            }
        }
    }
    let valid: Vec<f32> = level.iter().copied().filter(|v| v.is_finite()).collect();
    if valid.is_empty() {
        return None;
    }
    let global_level = stats::median(&valid);
    let noise = stats::median(sigma.as_slice().unwrap_or(&[]));
    level.mapv_inplace(|v| if v.is_finite() { v } else { global_level });
    // A block that lies above the plane through its neighbours by more than 3 sigma (a bright star or
    // galaxy fills it) takes the plane's value; blocks on a smooth gradient, corners included, stay.
    if nby * nbx >= 4 {
        let src = level.clone();
        let tolerance = 3.0 * if noise.is_finite() { noise } else { 0.0 };
        for by in 0..nby {
            for bx in 0..nbx {
                let mut pts = Vec::with_capacity(8);
                for y in by.saturating_sub(1)..(by + 2).min(nby) {
                    for x in bx.saturating_sub(1)..(bx + 2).min(nbx) {
                        if (y, x) != (by, bx) {
                            let dy = y as f64 - by as f64;
                            let dx = x as f64 - bx as f64;
                            pts.push((dy, dx, f64::from(src[[y, x]])));
                        }
                    }
                }
                if let Some(plane) = plane_at_origin(&pts) {
                    let v = src[[by, bx]];
                    if f64::from(v) > plane + f64::from(tolerance) {
                        level[[by, bx]] = plane as f32;
                    }
                }
            }
        }
    }
    // Bilinear between block centres, extrapolated linearly beyond the outer centres (half a block at
    // most), so that a sky gradient is followed up to the image edge.
    let centre = |i: usize, len: usize| -> f32 {
        let lo = i * block;
        let hi = ((i + 1) * block).min(len);
        0.5 * (lo + hi) as f32 - 0.5
    };
    let cy: Vec<f32> = (0..nby).map(|i| centre(i, rows)).collect();
    let cx: Vec<f32> = (0..nbx).map(|i| centre(i, cols)).collect();
    Some(Background {
        mesh: level,
        cy,
        cx,
        level: global_level,
        noise,
    })
}

/// The median and sigma of [`stats::sigma_clipped`]`(samples, kappa, max_rounds)` (bit-identical),
/// computed by sorting `samples` (finite values) once: each round keeps a contiguous run of the sorted
/// values, whose median is its middle and whose MAD a merge of the deviations on both sides of the
/// median, so no round needs a selection. About twice as fast for the few hundred samples of a block.
fn sigma_clipped_sorting(samples: &mut [f32], kappa: f32, max_rounds: usize) -> Option<(f32, f32)> {
    samples.sort_unstable_by(f32::total_cmp);
    let (mut lo, mut hi) = (0, samples.len());
    let (mut med, mut sigma) = (f32::NAN, f32::NAN);
    for _ in 0..=max_rounds {
        let kept = &samples[lo..hi];
        med = sorted_median(kept);
        sigma = sorted_mad(kept, med) * stats::MAD_TO_SIGMA;
        if sigma <= 0.0 {
            break;
        }
        let limit = kappa * sigma;
        // |v - med| is monotone on either side of the median, so the kept values stay contiguous.
        let new_lo = lo + kept.partition_point(|&v| v <= med && !((v - med).abs() <= limit));
        let new_hi = lo + kept.partition_point(|&v| v < med || (v - med).abs() <= limit);
        if (new_lo, new_hi) == (lo, hi) || new_lo >= new_hi {
            (lo, hi) = (new_lo, new_hi.max(new_lo));
            break;
        }
        (lo, hi) = (new_lo, new_hi);
    }
    (lo < hi).then_some((med, sigma))
}

/// Median of sorted values, as [`stats::median_in_place`] computes it; NaN when empty.
fn sorted_median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    match n {
        0 => f32::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// Median of `|v - med|` over sorted values, as [`stats::median_in_place`] computes it on the
/// deviations: the deviations below and above `med` are each sorted, so merging them finds the middle.
fn sorted_mad(sorted: &[f32], med: f32) -> f32 {
    let n = sorted.len();
    if n == 0 {
        return f32::NAN;
    }
    let split = sorted.partition_point(|&v| v < med);
    let (mut left, mut right) = (split, split); // next candidates: sorted[left - 1], sorted[right]
    let mut next = || {
        let dl = (left > 0).then(|| (sorted[left - 1] - med).abs());
        let dr = (right < n).then(|| (sorted[right] - med).abs());
        match (dl, dr) {
            (Some(a), Some(b)) if b.total_cmp(&a).is_lt() => {
                right += 1;
                b
            }
            (Some(a), _) => {
                left -= 1;
                a
            }
            (None, Some(b)) => {
                right += 1;
                b
            }
            (None, None) => f32::NAN,
        }
    };
    let mut previous = f32::NAN;
    for _ in 0..n / 2 {
        previous = next();
    }
    let upper = next();
    if n % 2 == 1 {
        upper
    } else {
        0.5 * (previous + upper)
    }
}

/// Index pair and fraction for linear interpolation in `coords` (extrapolating beyond the ends).
fn lerp_weights(coords: &[f32], p: f32) -> (usize, usize, f32) {
    let n = coords.len();
    if n == 1 {
        return (0, 0, 0.0);
    }
    let i = coords.partition_point(|&c| c <= p).clamp(1, n - 1) - 1;
    let t = (p - coords[i]) / (coords[i + 1] - coords[i]);
    (i, i + 1, t)
}

impl Background {
    /// Writes `image - background` (NaN stays NaN) into `work` (row-major, `rows * cols`) and returns
    /// the largest pixel of `image` (NaN ignored). `lines` is scratch: the mesh rows interpolated along
    /// x, so that a row of the background is one blend of two of them.
    fn subtract_into(
        &self,
        image: ArrayView2<f32>,
        work: &mut Vec<f32>,
        lines: &mut Vec<f32>,
    ) -> f32 {
        let (rows, cols) = image.dim();
        let nby = self.cy.len();
        lines.clear();
        lines.resize(nby * cols, 0.0);
        let xw: Vec<(usize, usize, f32)> = (0..cols)
            .map(|c| lerp_weights(&self.cx, c as f32))
            .collect();
        for (by, line) in lines.chunks_exact_mut(cols).enumerate() {
            for (l, &(x0, x1, tx)) in line.iter_mut().zip(&xw) {
                *l = self.mesh[[by, x0]] * (1.0 - tx) + self.mesh[[by, x1]] * tx;
            }
        }
        resize_buffer(work, rows * cols, 0.0);
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut gathered = Vec::new(); // a row of a view that is not in standard layout
        for (r, (row, out)) in image
            .rows()
            .into_iter()
            .zip(work.chunks_exact_mut(cols))
            .enumerate()
        {
            let src: &[f32] = match row.to_slice() {
                Some(s) => s,
                None => {
                    gathered.clear();
                    gathered.extend(row.iter().copied());
                    &gathered
                }
            };
            let (y0, y1, ty) = lerp_weights(&self.cy, r as f32);
            let (l0, l1) = (&lines[y0 * cols..][..cols], &lines[y1 * cols..][..cols]);
            let (w0, w1) = (1.0 - ty, ty);
            for (((o, &v), &a), &b) in out.iter_mut().zip(src).zip(l0).zip(l1) {
                *o = v - (a * w0 + b * w1);
            }
            // Eight independent running maxima (`>` skips NaN), so the loop vectorises.
            let chunks = src.chunks_exact(8);
            for &v in chunks.remainder() {
                if v > lanes[0] {
                    lanes[0] = v;
                }
            }
            for chunk in chunks {
                for (m, &v) in lanes.iter_mut().zip(chunk) {
                    if v > *m {
                        *m = v;
                    }
                }
            }
        }
        lanes
            .into_iter()
            .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
    }
}

/// Makes `buffer` exactly `len` long; new elements are `fill`, old ones keep their (stale) values.
fn resize_buffer<T: Copy>(buffer: &mut Vec<T>, len: usize, fill: T) {
    buffer.truncate(len);
    buffer.resize(len, fill);
}

/// True when `v` is a single-pixel spike: its 4-neighbours carry less than 15 % of it.
fn is_spike(v: f32, neighbours: [f32; 4]) -> bool {
    let (mut sum, mut n) = (0.0f32, 0usize);
    for x in neighbours {
        if x.is_finite() {
            sum += x;
            n += 1;
        }
    }
    n > 0 && v > 0.0 && sum / (n as f32) < 0.15 * v
}

/// Replaces single-pixel spikes above `min_excess` (hot pixels, cosmic ray hits) in the
/// background-subtracted images by the median of their 8 neighbours, so that they neither hide a star
/// nearby from detection nor distort its moments.
fn remove_spikes(work: &mut [f32], rows: usize, cols: usize, min_excess: f32) {
    let mut spikes = Vec::new();
    if cols >= 3 {
        for r in 1..rows.saturating_sub(1) {
            let (above, rest) = work[(r - 1) * cols..].split_at(cols);
            let (row, below) = rest.split_at(cols);
            // Most pixels are sky: skip runs of 16 without any pixel above `min_excess` (a
            // branch-free test that vectorises).
            for (k, chunk) in row[1..cols - 1].chunks(16).enumerate() {
                if !chunk.iter().fold(false, |any, &v| any | (v > min_excess)) {
                    continue;
                }
                for (j, &v) in chunk.iter().enumerate() {
                    let c = 1 + 16 * k + j;
                    if v > min_excess && is_spike(v, [above[c], below[c], row[c - 1], row[c + 1]]) {
                        spikes.push(r * cols + c);
                    }
                }
            }
        }
    }
    let mut around = Vec::with_capacity(8);
    for &i in &spikes {
        around.clear();
        for centre in [i - cols, i, i + cols] {
            for (j, &v) in work[centre - 1..=centre + 1].iter().enumerate() {
                if centre - 1 + j != i && v.is_finite() {
                    around.push(v);
                }
            }
        }
        work[i] = stats::median_in_place(&mut around);
    }
}

/// Value at (0, 0) of the least-squares plane `a + b dy + c dx` through `pts`; the mean when the
/// points do not determine a plane (e.g. all in one row).
fn plane_at_origin(pts: &[(f64, f64, f64)]) -> Option<f64> {
    if pts.is_empty() {
        return None;
    }
    let n = pts.len() as f64;
    let (mut sy, mut sx, mut sv) = (0.0, 0.0, 0.0);
    for &(y, x, v) in pts {
        sy += y;
        sx += x;
        sv += v;
    }
    let (my, mx, mv) = (sy / n, sx / n, sv / n);
    let (mut syy, mut sxx, mut sxy, mut syv, mut sxv) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(y, x, v) in pts {
        let (y, x, v) = (y - my, x - mx, v - mv);
        syy += y * y;
        sxx += x * x;
        sxy += x * y;
        syv += y * v;
        sxv += x * v;
    }
    let det = syy * sxx - sxy * sxy;
    if det.abs() < 1e-9 {
        // Degenerate (collinear) neighbours: fit along the one axis that varies, if any.
        let slope_y = if syy > 1e-9 { syv / syy } else { 0.0 };
        let slope_x = if sxx > 1e-9 { sxv / sxx } else { 0.0 };
        if syy > 1e-9 && sxx > 1e-9 {
            return Some(mv);
        }
        return Some(mv - slope_y * my - slope_x * mx);
    }
    let b = (syv * sxx - sxv * sxy) / det;
    let c = (sxv * syy - syv * sxy) / det;
    Some(mv - b * my - c * mx)
}

/// Separable Gaussian smoothing of `work` (`rows x cols`, row-major) into `out`, with clamped edges;
/// NaN counts as 0 (the background). Returns `sum(w_i^2)` of the 1-D kernel (white noise of sigma `s`
/// becomes `s * sum(w_i^2)`). Rows are smoothed horizontally into a ring of `2 radius + 1` rows
/// (`ring`, `padded`: scratch) that the vertical pass combines, so no image-sized temporary is needed.
fn smooth_into(
    work: &[f32],
    rows: usize,
    cols: usize,
    sigma: f32,
    out: &mut Vec<f32>,
    ring: &mut Vec<f32>,
    padded: &mut Vec<f32>,
) -> f32 {
    let clean = |v: f32| if v.is_finite() { v } else { 0.0 };
    resize_buffer(out, rows * cols, 0.0);
    if !(sigma > 0.05) || rows == 0 || cols == 0 {
        for (o, &v) in out.iter_mut().zip(work) {
            *o = clean(v);
        }
        return 1.0;
    }
    let radius = (3.0 * sigma).ceil() as usize;
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-0.5 * d * d / (sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let k2: f32 = kernel.iter().map(|k| k * k).sum();
    let taps = 2 * radius + 1;
    resize_buffer(ring, taps * cols, 0.0);
    resize_buffer(padded, cols + 2 * radius, 0.0);
    let mut next = 0; // next row to smooth horizontally into the ring
    for (r, out_row) in out.chunks_exact_mut(cols).enumerate() {
        while next <= (r + radius).min(rows - 1) {
            // Horizontal pass of row `next`: padded by `radius` replicated edge pixels; the kernel is
            // symmetric, so each pair of taps costs one multiplication.
            let src = &work[next * cols..][..cols];
            padded[..radius].fill(clean(src[0]));
            padded[radius + cols..].fill(clean(src[cols - 1]));
            for (p, &v) in padded[radius..radius + cols].iter_mut().zip(src) {
                *p = clean(v);
            }
            let slot = &mut ring[(next % taps) * cols..][..cols];
            let k_mid = kernel[radius];
            for (o, &p) in slot.iter_mut().zip(&padded[radius..radius + cols]) {
                *o = k_mid * p;
            }
            for (i, &k) in kernel[..radius].iter().enumerate() {
                let left = &padded[i..i + cols];
                let right = &padded[2 * radius - i..2 * radius - i + cols];
                for ((o, &a), &b) in slot.iter_mut().zip(left).zip(right) {
                    *o += k * (a + b);
                }
            }
            next += 1;
        }
        // Vertical pass: rows r - radius ..= r + radius (clamped) of the ring, paired by symmetry.
        let ring_row = |d: isize| {
            let rr = (r as isize + d).clamp(0, rows as isize - 1) as usize;
            &ring[(rr % taps) * cols..][..cols]
        };
        let k_mid = kernel[radius];
        for (o, &v) in out_row.iter_mut().zip(ring_row(0)) {
            *o = k_mid * v;
        }
        for (i, &k) in kernel[..radius].iter().enumerate() {
            let d = (radius - i) as isize;
            for ((o, &a), &b) in out_row.iter_mut().zip(ring_row(-d)).zip(ring_row(d)) {
                *o += k * (a + b);
            }
        }
    }
    k2
}

/// Result of the adaptive moments of one star.
struct Moments {
    y: f32,
    x: f32,
    /// Deconvolved covariance (yy, xy, xx), px^2.
    cov: (f32, f32, f32),
}

/// Adaptive (Gaussian-weighted, iterated) moments on the background-subtracted `work` image starting at
/// `(y, x)`. `None` when they do not converge to a positive size.
///
/// Only pixels of candidate `me` (or of none) in `owners` are used, so a neighbour does not drag the
/// centroid or widen the size.
fn adaptive_moments(
    work: ArrayView2<f32>,
    y: f32,
    x: f32,
    owners: ArrayView2<u32>,
    me: u32,
) -> Option<Moments> {
    let (rows, cols) = work.dim();
    let work = work.as_slice().expect("standard layout");
    let owners = owners.as_slice().expect("standard layout");
    let (mut yc, mut xc) = (y, x);
    let mut sw2 = 1.5f32 * 1.5;
    let mut cov = (sw2, 0.0, sw2);
    let mut ex: Vec<f32> = Vec::new();
    for _ in 0..MOMENT_ITERATIONS {
        let sw = sw2.sqrt();
        let radius = (3.5 * sw).ceil().clamp(3.0, 40.0);
        // (the neighbour search reaches 48 px, beyond this window)
        let r0 = (yc - radius).floor().max(0.0) as usize;
        let r1 = ((yc + radius).ceil() + 1.0).min(rows as f32) as usize;
        let c0 = (xc - radius).floor().max(0.0) as usize;
        let c1 = ((xc + radius).ceil() + 1.0).min(cols as f32) as usize;
        let inv = 0.5 / sw2;
        // The round Gaussian weight is separable: exp(-(dx^2 + dy^2) inv) = ex(c) * ey(r).
        ex.clear();
        ex.extend((c0..c1).map(|c| {
            let dx = c as f32 - xc;
            (-dx * dx * inv).exp()
        }));
        let (mut s0, mut sy, mut sx, mut syy, mut sxy, mut sxx) = (0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0);
        for r in r0..r1 {
            let dy = r as f32 - yc;
            let ey = (-dy * dy * inv).exp();
            let row = &work[r * cols + c0..r * cols + c1];
            let own = &owners[r * cols + c0..r * cols + c1];
            let (mut r0s, mut r1x, mut r2x) = (0.0f32, 0.0f32, 0.0f32);
            for (((c, &e), &v), &o) in (c0..c1).zip(&ex).zip(row).zip(own) {
                if !v.is_finite() {
                    continue;
                }
                if o != me && o != NO_OWNER {
                    continue;
                }
                let dx = c as f32 - xc;
                let w = e * v;
                r0s += w;
                r1x += w * dx;
                r2x += w * dx * dx;
            }
            let (r0s, r1x, r2x) = (r0s * ey, r1x * ey, r2x * ey);
            s0 += r0s;
            sy += r0s * dy;
            sx += r1x;
            syy += r0s * dy * dy;
            sxy += r1x * dy;
            sxx += r2x;
        }
        let (s0, sy, sx, syy, sxy, sxx) = (
            f64::from(s0),
            f64::from(sy),
            f64::from(sx),
            f64::from(syy),
            f64::from(sxy),
            f64::from(sxx),
        );
        if !(s0 > 0.0) {
            return None;
        }
        let (my, mx) = ((sy / s0) as f32, (sx / s0) as f32);
        // Second moments about the weighted mean.
        let myy = (syy / s0) as f32 - my * my;
        let mxy = (sxy / s0) as f32 - my * mx;
        let mxx = (sxx / s0) as f32 - mx * mx;
        // Deconvolve the round Gaussian weight: C^-1 = M^-1 - I / sw2.
        let det_m = myy * mxx - mxy * mxy;
        let step_y = (2.0 * my).clamp(-1.0, 1.0);
        let step_x = (2.0 * mx).clamp(-1.0, 1.0);
        yc += step_y;
        xc += step_x;
        if !(det_m > 0.0 && myy > 0.0) {
            sw2 *= 2.0;
            if sw2 > 400.0 {
                return None;
            }
            continue;
        }
        let (iyy, ixy, ixx) = (
            mxx / det_m - 1.0 / sw2,
            -mxy / det_m,
            myy / det_m - 1.0 / sw2,
        );
        let det_i = iyy * ixx - ixy * ixy;
        if !(det_i > 0.0 && iyy > 0.0) {
            // The source is at least as broad as the weight: widen it.
            sw2 *= 2.0;
            if sw2 > 400.0 {
                return None;
            }
            continue;
        }
        cov = (ixx / det_i, -ixy / det_i, iyy / det_i);
        let new_sw2 = (0.5 * (cov.0 + cov.2)).clamp(0.04, 400.0);
        let change = (new_sw2 - sw2).abs() / sw2;
        sw2 = new_sw2;
        if change < 2e-3 && step_y.abs() < 2e-3 && step_x.abs() < 2e-3 {
            break;
        }
    }
    if !(yc.is_finite() && xc.is_finite() && cov.0 > 0.0 && cov.2 > 0.0) {
        return None;
    }
    Some(Moments { y: yc, x: xc, cov })
}

/// Owner value of a pixel that belongs to no candidate.
const NO_OWNER: u32 = u32::MAX;
/// Pixels farther than this from every candidate belong to none, px.
const OWNER_RADIUS_PX: usize = 12;

/// Paints into `owners` (`rows x cols`, row-major, all [`NO_OWNER`] on entry) which candidate each
/// pixel belongs to: the nearest one within [`OWNER_RADIUS_PX`] (Voronoi cells of the candidates; ties
/// go to the brighter, earlier one), or [`NO_OWNER`]. Measuring a star on its own cell keeps neighbours
/// from dragging its centroid or widening its profile. [`clear_owners`] restores the entry state, so
/// the buffer is reused without an image-sized reset.
fn paint_owners(owners: &mut [u32], rows: usize, cols: usize, candidates: &[(f32, usize, usize)]) {
    let reach = OWNER_RADIUS_PX;
    let reach2 = (reach * reach) as i64;
    for (k, &(_, r, c)) in candidates.iter().enumerate() {
        for rr in r.saturating_sub(reach)..(r + reach + 1).min(rows) {
            let dy = rr as i64 - r as i64;
            let row = &mut owners[rr * cols..][..cols];
            for (cc, o) in row
                .iter_mut()
                .enumerate()
                .take((c + reach + 1).min(cols))
                .skip(c.saturating_sub(reach))
            {
                let dx = cc as i64 - c as i64;
                let d2 = dy * dy + dx * dx;
                if d2 > reach2 {
                    continue;
                }
                let take = *o == NO_OWNER || {
                    let (_, orow, ocol) = candidates[*o as usize];
                    let (oy, ox) = (rr as i64 - orow as i64, cc as i64 - ocol as i64);
                    d2 < oy * oy + ox * ox
                };
                if take {
                    *o = k as u32;
                }
            }
        }
    }
}

/// Resets the pixels [`paint_owners`] may have painted for `candidates` to [`NO_OWNER`].
fn clear_owners(owners: &mut [u32], rows: usize, cols: usize, candidates: &[(f32, usize, usize)]) {
    let reach = OWNER_RADIUS_PX;
    for &(_, r, c) in candidates {
        for rr in r.saturating_sub(reach)..(r + reach + 1).min(rows) {
            owners[rr * cols + c.saturating_sub(reach)..rr * cols + (c + reach + 1).min(cols)]
                .fill(NO_OWNER);
        }
    }
}

/// Candidates: strict 5 x 5 local maxima of `smoothed` above `threshold` (ties go to the first in scan
/// order) at least `border` (>= 2) px from the edges, where `work` is finite; `(value, row, col)`.
fn find_candidates(
    smoothed: &[f32],
    work: &[f32],
    rows: usize,
    cols: usize,
    border: usize,
    threshold: f32,
) -> Vec<(f32, usize, usize)> {
    let mut candidates = Vec::new();
    for r in border..rows - border {
        let row = &smoothed[r * cols..][..cols];
        for (k, chunk) in row[border..cols - border].chunks(16).enumerate() {
            // Most pixels are sky: skip runs of 16 below the threshold with one branch-free test.
            if !chunk.iter().fold(false, |any, &v| any | (v > threshold)) {
                continue;
            }
            for (j, &v) in chunk.iter().enumerate() {
                let c = border + 16 * k + j;
                if !(v > threshold) || !work[r * cols + c].is_finite() {
                    continue;
                }
                // Most pixels above the threshold lie on the flank of a star: the 4-neighbours
                // reject them cheaply (earlier pixels win ties, as below).
                let (up, down) = (smoothed[(r - 1) * cols + c], smoothed[(r + 1) * cols + c]);
                if row[c - 1] >= v || up >= v || row[c + 1] > v || down > v {
                    continue;
                }
                // The centre compares neither greater nor "earlier and equal" to itself.
                let is_max = (r - 2..=r + 2).all(|rr| {
                    smoothed[rr * cols + c - 2..rr * cols + c + 3]
                        .iter()
                        .enumerate()
                        .all(|(k, &o)| !(o > v || ((rr, k) < (r, 2) && o == v)))
                });
                if is_max {
                    candidates.push((v, r, c));
                }
            }
        }
    }
    candidates
}

/// Stars with a peak of at least this many noise sigmas get the Moffat fit; fainter ones keep the
/// adaptive-moments FWHM (their fit would be noise-dominated anyway).
const FIT_MIN_PEAK_SIGMA: f32 = 8.0;
/// Most iterations of the adaptive moments.
const MOMENT_ITERATIONS: usize = 15;
/// Most Levenberg-Marquardt iterations of the radial Moffat fit.
const FIT_ITERATIONS: usize = 20;

/// Solves the 4 x 4 system `a x = b` by Gaussian elimination with partial pivoting.
fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for col in 0..4 {
        let pivot = (col..4).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..4 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (dst, src) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *dst -= f * src;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 4];
    for row in (0..4).rev() {
        let mut s = b[row];
        for k in row + 1..4 {
            s -= a[row][k] * x[k];
        }
        x[row] = s / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Least-squares fit of `b + A (1 + r^2/alpha^2)^-beta` to radial bins `(r, mean value, count)`
/// (Levenberg-Marquardt, beta in [1.1, 20]). Returns `(fwhm, background offset)`.
fn fit_moffat(bins: &[(f64, f64, f64)], amp0: f64, fwhm0: f64) -> Option<(f32, f32)> {
    if bins.len() < 5 || !(amp0 > 0.0) || !(fwhm0 > 0.0) {
        return None;
    }
    let fwhm_of = |alpha: f64, beta: f64| 2.0 * alpha * (2f64.powf(1.0 / beta) - 1.0).sqrt();
    // params: b, A, alpha, beta
    let mut p = [0.0, amp0, fwhm0 / fwhm_of(1.0, 3.0), 3.0];
    let residual = |p: &[f64; 4]| -> f64 {
        bins.iter()
            .map(|&(r, v, n)| {
                let u = 1.0 + r * r / (p[2] * p[2]);
                let m = p[0] + p[1] * u.powf(-p[3]);
                n * (v - m) * (v - m)
            })
            .sum()
    };
    let mut cost = residual(&p);
    let mut lambda = 1e-3;
    for _ in 0..FIT_ITERATIONS {
        let mut jtj = [[0.0f64; 4]; 4];
        let mut jtr = [0.0f64; 4];
        for &(r, v, n) in bins {
            let a2 = p[2] * p[2];
            let u = 1.0 + r * r / a2;
            let ln_u = u.ln();
            let pw = (-p[3] * ln_u).exp();
            let m = p[0] + p[1] * pw;
            let j = [
                1.0,
                pw,
                p[1] * p[3] * pw / u * 2.0 * r * r / (a2 * p[2]),
                -p[1] * pw * ln_u,
            ];
            for a in 0..4 {
                jtr[a] += n * j[a] * (v - m);
                for b in 0..4 {
                    jtj[a][b] += n * j[a] * j[b];
                }
            }
        }
        let mut improved = false;
        for _ in 0..8 {
            let mut a = jtj;
            for (k, row) in a.iter_mut().enumerate() {
                row[k] += lambda * jtj[k][k].max(1e-12);
            }
            let Some(step) = solve4(a, jtr) else {
                lambda *= 10.0;
                continue;
            };
            let trial = [
                p[0] + step[0],
                p[1] + step[1],
                (p[2] + step[2]).clamp(0.05, 100.0),
                (p[3] + step[3]).clamp(1.1, 20.0),
            ];
            let c = residual(&trial);
            if c.is_finite() && c <= cost {
                let rel = (cost - c) / cost.max(1e-300);
                p = trial;
                cost = c;
                lambda = (lambda * 0.3).max(1e-9);
                improved = rel > 1e-4;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    let fwhm = fwhm_of(p[2], p[3]);
    (p[1] > 0.0 && fwhm.is_finite() && fwhm > 0.0).then_some((fwhm as f32, p[0] as f32))
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

/// Measures each candidate (see the module docs, step 4): brightest raw pixel, spike test, adaptive
/// moments, Moffat fit of the radial profile, aperture flux. Candidates that fail are left out.
fn measure_candidates(
    image: ArrayView2<f32>,
    work: ArrayView2<f32>,
    owners: ArrayView2<u32>,
    candidates: &[(f32, usize, usize)],
    options: &DetectOptions,
    image_max: f32,
    noise: f32,
) -> Vec<Star> {
    let (rows, cols) = work.dim();
    let saturation = options.saturation_adu.unwrap_or(image_max);
    let explicit_saturation = options.saturation_adu.is_some();
    let mut stars = Vec::with_capacity(candidates.len());
    for (k, &(_, r, c)) in candidates.iter().enumerate() {
        let me = k as u32;
        let mine = |rr: usize, cc: usize| {
            let o = owners[[rr, cc]];
            o == me || o == NO_OWNER
        };
        // Brightest raw pixel of the 3 x 3 around the smoothed maximum; NaN in the core: skip.
        let (mut pr, mut pc, mut peak) = (r, c, f32::NEG_INFINITY);
        let mut nan_core = false;
        let mut at_saturation = 0;
        for rr in r - 1..=r + 1 {
            for cc in c - 1..=c + 1 {
                let v = work[[rr, cc]];
                if !v.is_finite() {
                    nan_core = true;
                } else if v > peak {
                    peak = v;
                    pr = rr;
                    pc = cc;
                }
                if image[[rr, cc]] >= saturation * 0.999 {
                    at_saturation += 1;
                }
            }
        }
        if nan_core || !(peak > 0.0) {
            continue;
        }
        let saturated = if explicit_saturation {
            at_saturation >= 1
        } else {
            at_saturation >= 2
        };
        // Single-pixel spike: the 4-neighbours carry almost nothing of the peak.
        if !saturated && pr > 0 && pc > 0 && pr + 1 < rows && pc + 1 < cols {
            let n4 = [
                work[[pr - 1, pc]],
                work[[pr + 1, pc]],
                work[[pr, pc - 1]],
                work[[pr, pc + 1]],
            ];
            if is_spike(peak, n4) {
                continue;
            }
        }
        let Some(mom) = adaptive_moments(work, pr as f32, pc as f32, owners, me) else {
            continue;
        };
        if (mom.y - pr as f32).abs() > 2.5 || (mom.x - pc as f32).abs() > 2.5 {
            continue;
        }
        let (cyy, cxy, cxx) = mom.cov;
        let tr = cyy + cxx;
        let disc = ((cyy - cxx) * (cyy - cxx) + 4.0 * cxy * cxy).sqrt();
        let (l1, l2) = (0.5 * (tr + disc), (0.5 * (tr - disc)).max(0.0));
        let ellipticity = if l1 > 0.0 {
            1.0 - (l2 / l1).sqrt()
        } else {
            0.0
        };
        let fwhm_moments = 2.354_82 * (0.5 * tr).sqrt();
        // Radial profile in 0.25 px bins within 2 FWHM + 2 px.
        let radius = (2.0 * fwhm_moments + 2.0).clamp(4.0, 24.0);
        let mut fwhm = fwhm_moments;
        let mut offset = 0.0f32;
        if !saturated && peak >= FIT_MIN_PEAK_SIGMA * noise {
            let nb = (radius / 0.25).ceil() as usize + 1;
            let mut acc = vec![(0.0f64, 0.0f64, 0.0f64); nb];
            let r0 = (mom.y - radius).floor().max(0.0) as usize;
            let r1 = ((mom.y + radius).ceil() + 1.0).min(rows as f32) as usize;
            let c0 = (mom.x - radius).floor().max(0.0) as usize;
            let c1 = ((mom.x + radius).ceil() + 1.0).min(cols as f32) as usize;
            for rr in r0..r1 {
                for cc in c0..c1 {
                    let v = work[[rr, cc]];
                    if !v.is_finite() {
                        continue;
                    }
                    let (dy, dx) = (rr as f32 - mom.y, cc as f32 - mom.x);
                    let d2 = dy * dy + dx * dx;
                    if d2 > radius * radius || !mine(rr, cc) {
                        continue;
                    }
                    let d = d2.sqrt();
                    let b = &mut acc[(d / 0.25) as usize];
                    b.0 += f64::from(d);
                    b.1 += f64::from(v);
                    b.2 += 1.0;
                }
            }
            let bins: Vec<(f64, f64, f64)> = acc
                .into_iter()
                .filter(|b| b.2 > 0.0)
                .map(|b| (b.0 / b.2, b.1 / b.2, b.2))
                .collect();
            if let Some((f, b)) = fit_moffat(&bins, f64::from(peak), f64::from(fwhm_moments)) {
                // A fit far from the moments' size means a noisy or odd profile: trust the moments.
                if f > 0.5 * fwhm_moments && f < 2.0 * fwhm_moments {
                    fwhm = f;
                    offset = b;
                }
            }
        }
        if !(fwhm >= options.min_fwhm_px) {
            continue;
        }
        let ap = (2.0 * fwhm).clamp(3.0, 24.0);
        let mut flux = 0.0f64;
        let r0 = (mom.y - ap).floor().max(0.0) as usize;
        let r1 = ((mom.y + ap).ceil() + 1.0).min(rows as f32) as usize;
        let c0 = (mom.x - ap).floor().max(0.0) as usize;
        let c1 = ((mom.x + ap).ceil() + 1.0).min(cols as f32) as usize;
        for rr in r0..r1 {
            for cc in c0..c1 {
                let v = work[[rr, cc]];
                let (dy, dx) = (rr as f32 - mom.y, cc as f32 - mom.x);
                let d2 = dy * dy + dx * dx;
                if v.is_finite() && d2 <= ap * ap && mine(rr, cc) {
                    flux += f64::from(v - offset);
                }
            }
        }
        stars.push(Star {
            x: mom.x,
            y: mom.y,
            flux: flux as f32,
            peak: peak - offset,
            fwhm,
            ellipticity,
            saturated,
            blended: false,
        });
    }
    stars
}

/// Drops duplicates (two candidates converging on one star) and flags blends, using a sweep over
/// the stars sorted by row.
fn flag_blends(stars: &mut Vec<Star>) {
    let n = stars.len();
    if n < 2 {
        return;
    }
    let max_fwhm = stars.iter().map(|s| s.fwhm).fold(0.0f32, f32::max);
    let reach = 2.0 * max_fwhm + 1.0;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| stars[a].y.total_cmp(&stars[b].y).then(a.cmp(&b)));
    let mut duplicate = vec![false; n];
    let mut blended = vec![false; n];
    for (k, &i) in order.iter().enumerate() {
        for &j in &order[k + 1..] {
            if stars[j].y - stars[i].y > reach {
                break;
            }
            let (a, b) = (&stars[i], &stars[j]);
            let d = (a.y - b.y).hypot(a.x - b.x);
            if d < 1.5 {
                // Keep the brighter (lower index: candidates are sorted brightest first).
                duplicate[i.max(j)] = true;
                continue;
            }
            let limit = 2.0 * a.fwhm.max(b.fwhm) + 1.0;
            if d < limit {
                if b.peak > 0.1 * a.peak {
                    blended[i] = true;
                }
                if a.peak > 0.1 * b.peak {
                    blended[j] = true;
                }
            }
        }
    }
    let all = std::mem::take(stars);
    *stars = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !duplicate[*i])
        .map(|(i, mut star)| {
            star.blended = blended[i];
            star
        })
        .collect();
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
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
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
                let y = 20.0 + 40.0 * gy as f32 + rng.gen_range(-0.5f32..0.5);
                let x = 20.0 + 40.0 * gx as f32 + rng.gen_range(-0.5f32..0.5);
                add_star(
                    &mut img,
                    y,
                    x,
                    rng.gen_range(300.0..3000.0),
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
            let (r, c) = (rng.gen_range(5..195), rng.gen_range(5..195));
            img[[r, c]] += rng.gen_range(100.0..40_000.0);
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
    fn sorting_clip_equals_the_selecting_one_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(21);
        for n in [1usize, 2, 3, 16, 17, 400, 401, 484, 1000] {
            for outliers in [0usize, 3, 40] {
                let mut v: Vec<f32> = (0..n)
                    .map(|_| (100.0 + 7.0 * rng.sample::<f32, _>(StandardNormal)).round())
                    .collect();
                for x in v.iter_mut().take(outliers.min(n)) {
                    *x += rng.gen_range(50.0..5000.0f32);
                }
                let reference = stats::sigma_clipped(&v, 3.0, 3).map(|st| (st.median, st.sigma));
                let fast = sigma_clipped_sorting(&mut v.clone(), 3.0, 3);
                assert_eq!(fast, reference, "n {n}, outliers {outliers}");
            }
        }
        let mut flat = vec![5.0f32; 20];
        assert_eq!(sigma_clipped_sorting(&mut flat, 3.0, 3), Some((5.0, 0.0)));
        assert_eq!(sigma_clipped_sorting(&mut [], 3.0, 3), None);
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
