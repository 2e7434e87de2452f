//! Sub-pixel translation registration of a frame's tile cut-out against a tile reference.
//!
//! What it does, in two steps:
//! 1. **Integer search** (only without an initial guess, or when the refinement from the guess fails):
//!    plain cross-correlation of the zero-mean reference with the frame cut-out through a real 2-D FFT,
//!    divided by the cut-out's local energy in each window (normalised cross-correlation, computed with
//!    integral images), over every lag that keeps the reference inside the cut-out. Phase-normalised
//!    correlation is deliberately not used: it whitens the noise and was 4-20x less accurate on noisy star
//!    tiles in a measurement here. A parabola through the peak gives a sub-pixel start.
//! 2. **Refinement**: Gauss-Newton for a translation plus a linear photometric model
//!    (`frame(x + p) ~ alpha * ref(x - d) + beta`), in the inverse-additive form (Hager-Belhumeur), which is
//!    exact for translations: the Jacobian is built from the *reference's* gradients, so the 4x4 normal
//!    matrix depends only on the reference and is inverted once in [`Reference::new`]. One iteration costs
//!    one Lanczos-3 resampling of the cut-out (see [`crate::resample`]) and five dot products. Because gain
//!    and offset are solved for, this is the translation-only ECC criterion (maximising the zero-mean
//!    normalised correlation), solved by Gauss-Newton.
//!
//! The returned correlation `cc` is the zero-mean normalised correlation (Pearson) of the aligned cut-out
//! with the reference at the final shift, clamped to `[0, 1]`. The shift uncertainty `sigma_px` follows
//! from the residual noise and the inverse normal matrix (Cramer-Rao for the fit); a tile with little
//! structure (empty sky, a flat gradient) has a large `sigma_px` or a reference without structure, and
//! is flagged `low_structure`: callers must then not trust the shift (the operator falls back to the
//! prior / global motion).
//!
//! NaN pixels (outside the frame, bad pixels) are masked out, in the reference and in the cut-out.
//!
//! What it does not: rotation, scale or any non-translational warp; sub-pixel accuracy for shifts that
//! push the reference outside the cut-out (the margin bounds the searchable shift); threading.

// Numerical kernels: comparisons are written so that NaN fails them (`!(x > 0.0)` is true for NaN),
// and index loops over several arrays at once read more clearly than zipped iterators.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

use std::sync::{Arc, OnceLock};

use ndarray::{Array2, ArrayView2};
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use crate::geom::Shift;
use crate::resample::Resampler;

/// Refinement stops when the last update is smaller than this (pixels).
pub const TOLERANCE_PX: f32 = 0.01;
/// At most this many Gauss-Newton iterations per refinement.
pub const MAX_ITERATIONS: usize = 12;
/// A registration whose estimated 1-sigma shift uncertainty exceeds this (pixels) is `low_structure`.
pub const LOW_STRUCTURE_SIGMA_PX: f32 = 0.25;
/// A reference whose weakest gradient direction carries less excess gradient energy over its own noise
/// than this many standard deviations of that noise energy has no usable structure (empty sky).
pub const MIN_STRUCTURE_RATIO: f32 = 5.0;
/// Derivative of the Lanczos-3 interpolant at a pixel centre: `D1 (f[+1] - f[-1]) - D2 (f[+2] - f[-2])`,
/// with `D1 = sinc(1/3) = 0.8270` and `D2 = sinc(2/3) / 2 = 0.2067` (from `L'(m) = (-1)^m sinc(m/3) / m`).
const DERIV_1: f32 = 0.826_993_3;
const DERIV_2: f32 = 0.206_748_3;
/// Largest Gauss-Newton step (pixels); larger steps are shortened (the linearisation is local).
const MAX_STEP_PX: f32 = 1.5;
/// Minimum number of valid reference pixels for any registration.
const MIN_VALID_PIXELS: usize = 64;

/// Result of one registration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftEstimate {
    /// Shift of the frame cut-out relative to the reference placed at the cut-out's centre
    /// (a feature at reference `(y, x)` is at cut-out `(y + margin + dy, x + margin + dx)`).
    /// When the registration fails this is the initial guess (or zero without one).
    pub shift: Shift,
    /// Zero-mean normalised correlation at the final shift, clamped to `[0, 1]` (0 on failure).
    pub cc: f32,
    /// True when the refinement converged inside the searchable range.
    pub converged: bool,
    /// Estimated 1-sigma uncertainty of each shift component in pixels (`INFINITY` when unknown).
    pub sigma_px: f32,
    /// True when the tile has too little structure for a trustworthy shift (empty sky): the shift must
    /// not be used; fall back to the prior or the global motion.
    pub low_structure: bool,
    /// Gauss-Newton iterations of the last refinement (each one resampling of the cut-out).
    pub iterations: u32,
}

impl ShiftEstimate {
    fn failed(shift: Shift, low_structure: bool) -> Self {
        ShiftEstimate {
            shift,
            cc: 0.0,
            converged: false,
            sigma_px: f32::INFINITY,
            low_structure,
            iterations: 0,
        }
    }
}

/// Everything about a tile reference that registration needs and that does not depend on the frame:
/// masked zero-mean values, gradients, the inverted normal matrix, a structure measure and (lazily,
/// per cut-out size) the FFT plans and the reference spectrum for the integer search.
pub struct Reference {
    h: usize,
    w: usize,
    /// Zero-mean reference over the mask, 0 outside it.
    t: Vec<f32>,
    /// 1 where the pixel is used, else 0.
    mask: Vec<f32>,
    /// Zero-mean (over the mask) central-difference gradients, 0 outside the mask.
    gy: Vec<f32>,
    gx: Vec<f32>,
    n_valid: usize,
    gram: [[f64; 4]; 4],
    gram_inv: Option<[[f64; 4]; 4]>,
    structure_ratio: f32,
    search: OnceLock<Option<SearchPlan>>,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("h", &self.h)
            .field("w", &self.w)
            .field("n_valid", &self.n_valid)
            .field("structure_ratio", &self.structure_ratio)
            .finish_non_exhaustive()
    }
}

impl Reference {
    /// Precompute the registration data of `reference` (shape `(h, w)`, `NaN` = missing).
    ///
    /// Never fails: a reference without enough valid pixels or structure is accepted and every
    /// registration against it reports `low_structure` / not converged.
    pub fn new(reference: ArrayView2<f32>) -> Self {
        let (h, w) = reference.dim();
        let n = h * w;
        let mut mask = vec![0.0f32; n];
        let mut t = vec![0.0f32; n];
        let mut gy = vec![0.0f32; n];
        let mut gx = vec![0.0f32; n];
        let at = |r: usize, c: usize| reference[[r, c]];
        let mut n_valid = 0usize;
        let mut sum = 0.0f64;
        // Gradients: the exact derivative of the Lanczos-3 interpolant at the pixel centres (the warp uses
        // the same kernel, so the linearisation matches it and Gauss-Newton converges in few steps).
        let (d1, d2) = (DERIV_1, DERIV_2);
        if h >= 5 && w >= 5 {
            for r in 2..h - 2 {
                for c in 2..w - 2 {
                    let v = at(r, c);
                    let (u1, u2, b1, b2) = (at(r - 1, c), at(r - 2, c), at(r + 1, c), at(r + 2, c));
                    let (l1, l2, r1, r2) = (at(r, c - 1), at(r, c - 2), at(r, c + 1), at(r, c + 2));
                    let all = [v, u1, u2, b1, b2, l1, l2, r1, r2];
                    if all.iter().all(|x| x.is_finite()) {
                        let i = r * w + c;
                        mask[i] = 1.0;
                        t[i] = v;
                        gy[i] = d1 * (b1 - u1) - d2 * (b2 - u2);
                        gx[i] = d1 * (r1 - l1) - d2 * (r2 - l2);
                        n_valid += 1;
                        sum += f64::from(v);
                    }
                }
            }
        }
        let mut reference_out = Reference {
            h,
            w,
            t,
            mask,
            gy,
            gx,
            n_valid,
            gram: [[0.0; 4]; 4],
            gram_inv: None,
            structure_ratio: 0.0,
            search: OnceLock::new(),
        };
        if n_valid < MIN_VALID_PIXELS {
            return reference_out;
        }
        let nv = n_valid as f64;
        let mean_t = sum / nv;
        let (mut sgy, mut sgx) = (0.0f64, 0.0f64);
        for i in 0..n {
            if reference_out.mask[i] > 0.0 {
                sgy += f64::from(reference_out.gy[i]);
                sgx += f64::from(reference_out.gx[i]);
            }
        }
        let (mgy, mgx) = ((sgy / nv) as f32, (sgx / nv) as f32);
        let mut gram = [[0.0f64; 4]; 4];
        for i in 0..n {
            if reference_out.mask[i] > 0.0 {
                let tv = (f64::from(reference_out.t[i]) - mean_t) as f32;
                reference_out.t[i] = tv;
                reference_out.gy[i] -= mgy;
                reference_out.gx[i] -= mgx;
                let b = [tv, 1.0, reference_out.gy[i], reference_out.gx[i]];
                for a in 0..4 {
                    for c in a..4 {
                        gram[a][c] += f64::from(b[a]) * f64::from(b[c]);
                    }
                }
            }
        }
        for a in 0..4 {
            for c in 0..a {
                gram[a][c] = gram[c][a];
            }
        }
        reference_out.gram = gram;
        reference_out.gram_inv = invert4(&gram);
        // Structure: smallest eigenvalue of the gradient block after projecting out the reference
        // itself, compared with what noise alone gives. The gradient noise per pixel comes from the MAD of
        // the gradients (stars are few pixels, so they do not inflate it); pure noise gives a sum of about
        // n * sigma_g^2 with a spread of sqrt(2 n) sigma_g^2, and the ratio below is that excess in units
        // of its spread (about 0 for empty sky, tens to thousands for star tiles).
        let mut gvals: Vec<f32> = Vec::with_capacity(n_valid);
        for i in 0..n {
            if reference_out.mask[i] > 0.0 {
                gvals.push(reference_out.gy[i]);
            }
        }
        let (_, sgy) = crate::stats::median_and_sigma(&gvals);
        gvals.clear();
        for i in 0..n {
            if reference_out.mask[i] > 0.0 {
                gvals.push(reference_out.gx[i]);
            }
        }
        let (_, sgx) = crate::stats::median_and_sigma(&gvals);
        let g = &gram;
        let mut hyy = g[2][2];
        let mut hxx = g[3][3];
        let mut hxy = g[2][3];
        if g[0][0] > 0.0 {
            hyy -= g[0][2] * g[0][2] / g[0][0];
            hxx -= g[0][3] * g[0][3] / g[0][0];
            hxy -= g[0][2] * g[0][3] / g[0][0];
        }
        let tr = 0.5 * (hyy + hxx);
        let det = hyy * hxx - hxy * hxy;
        let lambda_min = (tr - (tr * tr - det).max(0.0).sqrt()).max(0.0);
        let noise_var = 0.5 * (f64::from(sgy).powi(2) + f64::from(sgx).powi(2));
        reference_out.structure_ratio = if noise_var.is_finite() && noise_var > 0.0 {
            ((lambda_min / noise_var - nv) / (2.0 * nv).sqrt()) as f32
        } else if lambda_min > 0.0 {
            f32::INFINITY // noise-free synthetic reference
        } else {
            0.0
        };
        reference_out
    }

    /// Shape `(rows, cols)` of the reference.
    pub fn dim(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    /// Significance of the gradient energy of the weakest direction above the reference's own noise, in
    /// standard deviations of the noise energy (about 0 for pure noise; star tiles give tens to thousands).
    pub fn structure_ratio(&self) -> f32 {
        self.structure_ratio
    }

    /// True when the reference has enough valid pixels and structure to register against.
    pub fn has_structure(&self) -> bool {
        self.gram_inv.is_some() && self.structure_ratio >= MIN_STRUCTURE_RATIO
    }

    fn search_plan(&self, fh: usize, fw: usize) -> Option<std::borrow::Cow<'_, SearchPlan>> {
        let cached = self
            .search
            .get_or_init(|| SearchPlan::new(self, fh, fw))
            .as_ref();
        match cached {
            Some(plan) if plan.fh == fh && plan.fw == fw => Some(std::borrow::Cow::Borrowed(plan)),
            _ => SearchPlan::new(self, fh, fw).map(std::borrow::Cow::Owned),
        }
    }
}

/// FFT plans and the conjugated reference spectrum for one cut-out size.
#[derive(Clone)]
struct SearchPlan {
    fh: usize,
    fw: usize,
    ph: usize,
    pw: usize,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    /// conj(FFT(zero-mean reference padded to ph x pw)), column-major: `[c * ph + r]`.
    spectrum: Vec<Complex32>,
}

/// Next size >= n whose only prime factors are 2, 3 and 5 (fast FFT lengths).
fn smooth_size(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut k = m;
        for p in [2, 3, 5] {
            while k % p == 0 {
                k /= p;
            }
        }
        if k == 1 {
            return m;
        }
        m += 1;
    }
}

impl SearchPlan {
    fn new(reference: &Reference, fh: usize, fw: usize) -> Option<Self> {
        if fh < reference.h || fw < reference.w || reference.n_valid < MIN_VALID_PIXELS {
            return None;
        }
        let (ph, pw) = (smooth_size(fh), smooth_size(fw));
        let mut rp = RealFftPlanner::<f32>::new();
        let mut cp = FftPlanner::<f32>::new();
        let mut plan = SearchPlan {
            fh,
            fw,
            ph,
            pw,
            r2c: rp.plan_fft_forward(pw),
            c2r: rp.plan_fft_inverse(pw),
            col_fwd: cp.plan_fft_forward(ph),
            col_inv: cp.plan_fft_inverse(ph),
            spectrum: Vec::new(),
        };
        let mut padded = vec![0.0f32; ph * pw];
        for r in 0..reference.h {
            padded[r * pw..r * pw + reference.w]
                .copy_from_slice(&reference.t[r * reference.w..(r + 1) * reference.w]);
        }
        let mut spec = plan.forward(&mut padded)?;
        for v in spec.iter_mut() {
            *v = v.conj();
        }
        plan.spectrum = spec;
        Some(plan)
    }

    /// 2-D forward FFT of a `ph x pw` real image (row-major; destroyed), column-major half spectrum.
    fn forward(&self, data: &mut [f32]) -> Option<Vec<Complex32>> {
        let wc = self.pw / 2 + 1;
        let mut rows = vec![Complex32::new(0.0, 0.0); self.ph * wc];
        let mut scratch = self.r2c.make_scratch_vec();
        for r in 0..self.ph {
            self.r2c
                .process_with_scratch(
                    &mut data[r * self.pw..(r + 1) * self.pw],
                    &mut rows[r * wc..(r + 1) * wc],
                    &mut scratch,
                )
                .ok()?;
        }
        let mut cols = vec![Complex32::new(0.0, 0.0); self.ph * wc];
        for r in 0..self.ph {
            for c in 0..wc {
                cols[c * self.ph + r] = rows[r * wc + c];
            }
        }
        self.col_fwd.process(&mut cols);
        Some(cols)
    }

    /// Inverse of [`Self::forward`] (unnormalised), into a row-major `ph x pw` real image.
    fn inverse(&self, mut cols: Vec<Complex32>) -> Option<Vec<f32>> {
        let wc = self.pw / 2 + 1;
        self.col_inv.process(&mut cols);
        let mut rows = vec![Complex32::new(0.0, 0.0); self.ph * wc];
        for c in 0..wc {
            for r in 0..self.ph {
                rows[r * wc + c] = cols[c * self.ph + r];
            }
        }
        let mut out = vec![0.0f32; self.ph * self.pw];
        let mut scratch = self.c2r.make_scratch_vec();
        for r in 0..self.ph {
            let row = &mut rows[r * wc..(r + 1) * wc];
            // The spectrum of a real signal has real DC and Nyquist terms; rounding may leave tiny
            // imaginary parts that realfft would reject.
            row[0].im = 0.0;
            if self.pw % 2 == 0 {
                row[wc - 1].im = 0.0;
            }
            self.c2r
                .process_with_scratch(row, &mut out[r * self.pw..(r + 1) * self.pw], &mut scratch)
                .ok()?;
        }
        Some(out)
    }
}

/// Invert a symmetric 4x4 matrix (Gauss-Jordan with partial pivoting); `None` when (nearly) singular.
///
/// The normal matrices here mix columns of different units (the template in data units, a constant
/// column of ones, gradients in data units per pixel), so their diagonal spans many decades that depend
/// on the data's scale: 1e-13 to 1 for float frames scaled by 1e-8, 1 to 1e13 for 32-bit frames scaled
/// by 65536. The matrix is therefore equilibrated first (`D^-1/2 M D^-1/2`, unit diagonal), which makes
/// the singularity test and the rounding independent of the data's units; the inverse is scaled back.
fn invert4(m: &[[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
    let mut d = [0.0f64; 4];
    for (i, di) in d.iter_mut().enumerate() {
        let v = m[i][i];
        if !(v > 0.0) || !v.is_finite() {
            return None;
        }
        *di = v.sqrt();
    }
    let mut a = [[0.0f64; 4]; 4];
    let mut inv = [[0.0f64; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            a[i][j] = m[i][j] / (d[i] * d[j]);
        }
        inv[i][i] = 1.0;
    }
    for col in 0..4 {
        let pivot = (col..4).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if !(a[pivot][col].abs() > 1e-12) {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for k in 0..4 {
            a[col][k] /= p;
            inv[col][k] /= p;
        }
        for r in 0..4 {
            if r != col {
                let f = a[r][col];
                if f != 0.0 {
                    for k in 0..4 {
                        a[r][k] -= f * a[col][k];
                        inv[r][k] -= f * inv[col][k];
                    }
                }
            }
        }
    }
    for i in 0..4 {
        for j in 0..4 {
            inv[i][j] /= d[i] * d[j];
        }
    }
    inv.iter().flatten().all(|v| v.is_finite()).then_some(inv)
}

fn mat_vec(m: &[[f64; 4]; 4], b: &[f64; 4]) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (o, row) in out.iter_mut().zip(m.iter()) {
        *o = row.iter().zip(b.iter()).map(|(x, y)| x * y).sum();
    }
    out
}

/// Sums of one Gauss-Newton evaluation.
struct Eval {
    /// Least-squares coefficients of (t, 1, gy, gx).
    coef: [f64; 4],
    cc: f32,
    sigma_px: f32,
}

/// Lanes of the f32 partial sums (one AVX register).
const LANES: usize = 8;

/// `[sum t d, sum d, sum gy d, sum gx d, sum d d]` with `d = (img - mu) * mask`, accumulated in eight
/// f32 lanes (element `i` goes to lane `i % 8`, in order) and totalled in f64. The AVX2 path does exactly
/// the same operations in the same order (no FMA), so both paths give bit-identical results.
fn sums5(img: &[f32], mask: &[f32], t: &[f32], gy: &[f32], gx: &[f32], mu: f32) -> [f64; 5] {
    let n = img
        .len()
        .min(mask.len())
        .min(t.len())
        .min(gy.len())
        .min(gx.len());
    let (img, mask, t, gy, gx) = (&img[..n], &mask[..n], &t[..n], &gy[..n], &gx[..n]);
    let body = n / LANES * LANES;
    #[cfg(target_arch = "x86_64")]
    let mut lanes = if crate::resample::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time just above); all slices have length n.
        unsafe { sums5_avx2(img, mask, t, gy, gx, mu, body) }
    } else {
        sums5_lanes(img, mask, t, gy, gx, mu, body)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let mut lanes = sums5_lanes(img, mask, t, gy, gx, mu, body);
    let mut out = [0.0f64; 5];
    for (o, l) in out.iter_mut().zip(lanes.iter_mut()) {
        *o = l.iter().map(|&v| f64::from(v)).sum();
    }
    for i in body..n {
        let d = f64::from((img[i] - mu) * mask[i]);
        out[0] += f64::from(t[i]) * d;
        out[1] += d;
        out[2] += f64::from(gy[i]) * d;
        out[3] += f64::from(gx[i]) * d;
        out[4] += d * d;
    }
    out
}

/// Portable lane-wise accumulation of [`sums5`] over `0..body` (a multiple of [`LANES`]).
fn sums5_lanes(
    img: &[f32],
    mask: &[f32],
    t: &[f32],
    gy: &[f32],
    gx: &[f32],
    mu: f32,
    body: usize,
) -> [[f32; LANES]; 5] {
    let mut acc = [[0.0f32; LANES]; 5];
    let mut i = 0;
    while i < body {
        for l in 0..LANES {
            let k = i + l;
            let d = (img[k] - mu) * mask[k];
            acc[0][l] += t[k] * d;
            acc[1][l] += d;
            acc[2][l] += gy[k] * d;
            acc[3][l] += gx[k] * d;
            acc[4][l] += d * d;
        }
        i += LANES;
    }
    acc
}

/// AVX2 version of [`sums5_lanes`] (eight lanes in one register each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sums5_avx2(
    img: &[f32],
    mask: &[f32],
    t: &[f32],
    gy: &[f32],
    gx: &[f32],
    mu: f32,
    body: usize,
) -> [[f32; LANES]; 5] {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm256_sub_ps,
    };
    let body = body
        .min(img.len())
        .min(mask.len())
        .min(t.len())
        .min(gy.len())
        .min(gx.len())
        / LANES
        * LANES;
    let m = _mm256_set1_ps(mu);
    let (mut a0, mut a1, mut a2, mut a3, mut a4) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= body <= the length of every slice.
        let (v, k, tv, yv, xv) = unsafe {
            (
                _mm256_loadu_ps(img.as_ptr().add(i)),
                _mm256_loadu_ps(mask.as_ptr().add(i)),
                _mm256_loadu_ps(t.as_ptr().add(i)),
                _mm256_loadu_ps(gy.as_ptr().add(i)),
                _mm256_loadu_ps(gx.as_ptr().add(i)),
            )
        };
        let d = _mm256_mul_ps(_mm256_sub_ps(v, m), k);
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(tv, d));
        a1 = _mm256_add_ps(a1, d);
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(yv, d));
        a3 = _mm256_add_ps(a3, _mm256_mul_ps(xv, d));
        a4 = _mm256_add_ps(a4, _mm256_mul_ps(d, d));
        i += LANES;
    }
    let mut out = [[0.0f32; LANES]; 5];
    for (o, a) in out.iter_mut().zip([a0, a1, a2, a3, a4]) {
        // SAFETY: `o` has room for eight f32.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), a) };
    }
    out
}

/// Register a frame cut-out against a prepared reference.
///
/// `frame` must be larger than the reference by a margin on every side (the reference sits at its centre,
/// `origin = ((rows_f - rows_r) / 2, (cols_f - cols_r) / 2)`); the returned shift is relative to that
/// placement and its components are bounded by the margin. `initial` is a starting guess (e.g. the prior or
/// the previous iteration's shift); without it, or when the refinement from it fails to converge, the
/// integer search by FFT cross-correlation runs first.
///
/// Never panics: a frame smaller than the reference, an all-`NaN` frame or a reference without structure
/// give `converged = false`, `cc = 0` and the initial guess (or zero) as shift.
pub fn register(
    reference: &Reference,
    frame: ArrayView2<f32>,
    initial: Option<Shift>,
) -> ShiftEstimate {
    let (fh, fw) = frame.dim();
    let fallback_shift = initial
        .filter(|s| s.dy.is_finite() && s.dx.is_finite())
        .unwrap_or(Shift::ZERO);
    if fh < reference.h || fw < reference.w || reference.gram_inv.is_none() {
        return ShiftEstimate::failed(fallback_shift, true);
    }
    let origin_y = (fh - reference.h) as f32 / 2.0;
    let origin_x = (fw - reference.w) as f32 / 2.0;
    let mut ctx = Refiner {
        reference,
        frame,
        origin_y,
        origin_x,
        resampler: Resampler::new().with_edge_fill(false),
        aligned: Array2::from_elem((reference.h, reference.w), 0.0),
    };
    let structured = reference.has_structure();
    let finish = |mut r: ShiftEstimate| {
        r.low_structure = !structured || !(r.sigma_px <= LOW_STRUCTURE_SIGMA_PX);
        r
    };
    if let Some(start) = initial.filter(|s| s.dy.is_finite() && s.dx.is_finite()) {
        let r = ctx.refine(start);
        if r.converged {
            return finish(r);
        }
    }
    match search(reference, frame) {
        Some(start) => {
            let r = ctx.refine(start);
            if r.converged {
                finish(r)
            } else {
                finish(ShiftEstimate {
                    shift: fallback_shift,
                    ..r
                })
            }
        }
        None => ShiftEstimate::failed(fallback_shift, true),
    }
}

/// Zero-mean normalised correlation in `[0, 1]` of `frame` (a cut-out as for [`register`]) aligned at
/// `shift` with the reference, without refining the shift (0 when it cannot be computed).
pub fn correlation_at(reference: &Reference, frame: ArrayView2<f32>, shift: Shift) -> f32 {
    let (fh, fw) = frame.dim();
    if fh < reference.h || fw < reference.w || reference.gram_inv.is_none() {
        return 0.0;
    }
    let mut ctx = Refiner {
        reference,
        frame,
        origin_y: (fh - reference.h) as f32 / 2.0,
        origin_x: (fw - reference.w) as f32 / 2.0,
        resampler: Resampler::new().with_edge_fill(false),
        aligned: Array2::from_elem((reference.h, reference.w), 0.0),
    };
    ctx.resampler.sample_shifted(
        frame,
        ctx.origin_y + shift.dy,
        ctx.origin_x + shift.dx,
        ctx.aligned.view_mut(),
    );
    let mut offset = f32::NAN;
    ctx.evaluate(&mut offset).map_or(0.0, |e| e.cc)
}

/// Zero-mean normalised correlation in `[0, 1]` of an image already aligned to the reference (same shape
/// as the reference; `NaN` pixels are ignored); 0 when it cannot be computed or the shape differs.
pub fn correlation_of_aligned(reference: &Reference, aligned: ArrayView2<f32>) -> f32 {
    if aligned.dim() != (reference.h, reference.w) || reference.gram_inv.is_none() {
        return 0.0;
    }
    let owned;
    let slice = match aligned.as_slice() {
        Some(s) => s,
        None => {
            owned = aligned.iter().copied().collect::<Vec<f32>>();
            &owned
        }
    };
    let mut offset = f32::NAN;
    evaluate_slice(reference, slice, &mut offset).map_or(0.0, |e| e.cc)
}

/// Integer (plus parabolic sub-pixel) search of the shift by normalised cross-correlation.
/// Returns `None` when the frame has no finite pixel or the FFT fails.
fn search(reference: &Reference, frame: ArrayView2<f32>) -> Option<Shift> {
    let (fh, fw) = frame.dim();
    let plan = reference.search_plan(fh, fw)?;
    let (ph, pw) = (plan.ph, plan.pw);
    // Frame with NaN replaced by its finite mean (contributes ~0 against the zero-mean reference).
    let (mut s, mut k) = (0.0f64, 0usize);
    for &v in frame.iter() {
        if v.is_finite() {
            s += f64::from(v);
            k += 1;
        }
    }
    if k == 0 {
        return None;
    }
    let mean = (s / k as f64) as f32;
    let mut padded = vec![0.0f32; ph * pw];
    for (r, row) in frame.rows().into_iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            padded[r * pw + c] = if v.is_finite() { v - mean } else { 0.0 };
        }
    }
    // Integral images of the (mean-subtracted) frame and its square for the window energy.
    let iw = fw + 1;
    let mut s1 = vec![0.0f64; (fh + 1) * iw];
    let mut s2 = vec![0.0f64; (fh + 1) * iw];
    for r in 0..fh {
        let (mut a1, mut a2) = (0.0f64, 0.0f64);
        for c in 0..fw {
            let v = f64::from(padded[r * pw + c]);
            a1 += v;
            a2 += v * v;
            s1[(r + 1) * iw + c + 1] = s1[r * iw + c + 1] + a1;
            s2[(r + 1) * iw + c + 1] = s2[r * iw + c + 1] + a2;
        }
    }
    let mut spec = plan.forward(&mut padded)?;
    for (v, t) in spec.iter_mut().zip(plan.spectrum.iter()) {
        *v *= *t;
    }
    let corr = plan.inverse(spec)?;
    let (h, w) = (reference.h, reference.w);
    let n = (h * w) as f64;
    let rect = |tab: &[f64], y: usize, x: usize| {
        tab[(y + h) * iw + x + w] - tab[y * iw + x + w] - tab[(y + h) * iw + x] + tab[y * iw + x]
    };
    let (ly_max, lx_max) = (fh - h, fw - w);
    let mut score = vec![f32::NEG_INFINITY; (ly_max + 1) * (lx_max + 1)];
    let mut best = (f32::NEG_INFINITY, 0usize, 0usize);
    for ly in 0..=ly_max {
        for lx in 0..=lx_max {
            let a1 = rect(&s1, ly, lx);
            let a2 = rect(&s2, ly, lx);
            let energy = (a2 - a1 * a1 / n).max(0.0);
            if energy <= 0.0 {
                continue;
            }
            let v = (f64::from(corr[ly * pw + lx]) / energy.sqrt()) as f32;
            score[ly * (lx_max + 1) + lx] = v;
            if v > best.0 {
                best = (v, ly, lx);
            }
        }
    }
    if !best.0.is_finite() {
        return None;
    }
    let (_, ly, lx) = best;
    let at = |y: usize, x: usize| score[y * (lx_max + 1) + x];
    let parabola = |m: f32, c: f32, p: f32| {
        let d = m - 2.0 * c + p;
        if m.is_finite() && p.is_finite() && d < 0.0 {
            (0.5 * (m - p) / d).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let fy = if ly > 0 && ly < ly_max {
        parabola(at(ly - 1, lx), at(ly, lx), at(ly + 1, lx))
    } else {
        0.0
    };
    let fx = if lx > 0 && lx < lx_max {
        parabola(at(ly, lx - 1), at(ly, lx), at(ly, lx + 1))
    } else {
        0.0
    };
    Some(Shift::new(
        ly as f32 + fy - (fh - h) as f32 / 2.0,
        lx as f32 + fx - (fw - w) as f32 / 2.0,
    ))
}

struct Refiner<'a> {
    reference: &'a Reference,
    frame: ArrayView2<'a, f32>,
    origin_y: f32,
    origin_x: f32,
    resampler: Resampler,
    aligned: Array2<f32>,
}

impl Refiner<'_> {
    /// Gauss-Newton refinement from `start`.
    fn refine(&mut self, start: Shift) -> ShiftEstimate {
        let (my, mx) = (self.origin_y, self.origin_x);
        let mut p = start;
        if !(p.dy.abs() <= my && p.dx.abs() <= mx) {
            return ShiftEstimate::failed(start, false);
        }
        let mut offset = f32::NAN;
        let mut result = ShiftEstimate::failed(start, false);
        let mut prev_step: Option<Shift> = None;
        for it in 1..=MAX_ITERATIONS as u32 {
            self.resampler.sample_shifted(
                self.frame,
                self.origin_y + p.dy,
                self.origin_x + p.dx,
                self.aligned.view_mut(),
            );
            let Some(e) = self.evaluate(&mut offset) else {
                break;
            };
            let alpha = e.coef[0];
            if !(alpha > 0.0) {
                // Anti-correlated or no signal: no meaningful alignment.
                let mut r = ShiftEstimate::failed(start, true);
                r.iterations = it;
                return r;
            }
            let mut d = Shift::new((-e.coef[2] / alpha) as f32, (-e.coef[3] / alpha) as f32);
            let len = d.norm();
            if !len.is_finite() {
                break;
            }
            let raw = d;
            if len > MAX_STEP_PX {
                d = Shift::new(d.dy * MAX_STEP_PX / len, d.dx * MAX_STEP_PX / len);
            } else if let Some(prev) = prev_step {
                // Aitken extrapolation: when the frame's PSF differs from the reference's (a sharp frame
                // against a blurred first reference), Gauss-Newton steps overshoot or undershoot by a
                // steady factor; the ratio r of successive steps gives the limit p + d / (1 - r).
                let pp = prev.dy * prev.dy + prev.dx * prev.dx;
                if pp > 0.0 {
                    let r = (d.dy * prev.dy + d.dx * prev.dx) / pp;
                    if r > -0.9 && r < 0.5 {
                        d = Shift::new(d.dy / (1.0 - r), d.dx / (1.0 - r));
                    }
                }
            }
            prev_step = (len <= MAX_STEP_PX).then_some(raw);
            let next = p + d;
            result = ShiftEstimate {
                shift: p,
                cc: e.cc,
                converged: false,
                sigma_px: e.sigma_px,
                low_structure: false,
                iterations: it,
            };
            if !(next.dy.abs() <= my && next.dx.abs() <= mx) {
                // Ran out of the searchable range.
                result.sigma_px = f32::INFINITY;
                return result;
            }
            if len < TOLERANCE_PX {
                // The last update is tiny: take it without another resampling.
                result.shift = next;
                result.converged = true;
                return result;
            }
            p = next;
        }
        result
    }

    /// Least-squares fit of the aligned cut-out on (t, 1, gy, gx), correlation and shift uncertainty.
    fn evaluate(&self, offset: &mut f32) -> Option<Eval> {
        evaluate_slice(self.reference, self.aligned.as_slice()?, offset)
    }
}

/// Least-squares fit of an aligned image on (t, 1, gy, gx), correlation and shift uncertainty.
/// `offset` is the image level used to condition the sums (computed on first use).
fn evaluate_slice(r: &Reference, img: &[f32], offset: &mut f32) -> Option<Eval> {
    if !offset.is_finite() {
        // Level of the cut-out (any value near the mean keeps the f32 sums well conditioned; a
        // subsample of every 7th pixel is plenty).
        let (mut s, mut k) = (0.0f64, 0usize);
        for i in (0..img.len().min(r.mask.len())).step_by(7) {
            let (v, m) = (img[i], r.mask[i]);
            if m > 0.0 && v.is_finite() {
                s += f64::from(v);
                k += 1;
            }
        }
        if k == 0 {
            return None;
        }
        *offset = (s / k as f64) as f32;
    }
    let mu = *offset;
    // Fast path: five dot products of the masked residual d = (img - mu) * mask in one pass.
    let sums = sums5(img, &r.mask, &r.t, &r.gy, &r.gx, mu);
    // NaN in a used pixel (0 * NaN is NaN): redo with a joint mask.
    if sums.iter().all(|v| v.is_finite()) {
        let b = [sums[0], sums[1], sums[2], sums[3]];
        let inv = r.gram_inv.as_ref()?;
        Some(finish_eval(&r.gram, inv, &b, sums[4], r.n_valid as f64))
    } else {
        evaluate_masked(r, img, mu)
    }
}

/// [`evaluate_slice`] over the joint mask of the reference and the finite image pixels.
///
/// Missing pixels are few (a frame edge, a hole), so instead of a second full pass with a per-pixel
/// normal matrix this takes the vectorised [`sums5`] over the image with its missing pixels set to the
/// level `mu` (their residual is then exactly 0) and removes their share from the reference's normal
/// matrix, which is a sum over pixels too.
fn evaluate_masked(r: &Reference, img: &[f32], mu: f32) -> Option<Eval> {
    let n_px = img.len().min(r.mask.len());
    let filled: Vec<f32> = img[..n_px]
        .iter()
        .map(|&v| if v.is_finite() { v } else { mu })
        .collect();
    let mut gram = r.gram;
    let mut n = r.n_valid;
    for i in 0..n_px {
        if r.mask[i] > 0.0 && !img[i].is_finite() {
            let basis = [
                f64::from(r.t[i]),
                1.0,
                f64::from(r.gy[i]),
                f64::from(r.gx[i]),
            ];
            for a in 0..4 {
                for c in a..4 {
                    gram[a][c] -= basis[a] * basis[c];
                }
            }
            n -= 1;
        }
    }
    if n < MIN_VALID_PIXELS || n * 4 < r.n_valid {
        return None; // less than a quarter of the tile overlaps: not a registration
    }
    for a in 0..4 {
        for c in 0..a {
            gram[a][c] = gram[c][a];
        }
    }
    let sums = sums5(&filled, &r.mask, &r.t, &r.gy, &r.gx, mu);
    if !sums.iter().all(|v| v.is_finite()) {
        return None;
    }
    let inv = invert4(&gram)?;
    let b = [sums[0], sums[1], sums[2], sums[3]];
    Some(finish_eval(&gram, &inv, &b, sums[4], n as f64))
}

/// Coefficients, correlation and shift uncertainty from the normal equations.
fn finish_eval(gram: &[[f64; 4]; 4], inv: &[[f64; 4]; 4], b: &[f64; 4], s2: f64, n: f64) -> Eval {
    let coef = mat_vec(inv, b);
    // Pearson correlation over the used pixels: covariance of (t, img) and the variances, with the
    // means removed through the "1" column of the normal matrix.
    let n1 = gram[1][1].max(1.0);
    let st = gram[0][1];
    let cov = b[0] - st * b[1] / n1;
    let var_t = gram[0][0] - st * st / n1;
    let var_i = s2 - b[1] * b[1] / n1;
    let cc = if var_t > 0.0 && var_i > 0.0 {
        (cov / (var_t * var_i).sqrt()).clamp(0.0, 1.0) as f32
    } else {
        0.0
    };
    let fitted: f64 = coef.iter().zip(b.iter()).map(|(c, v)| c * v).sum();
    let rss = (s2 - fitted).max(0.0);
    let sigma2 = rss / (n - 4.0).max(1.0);
    let alpha = coef[0];
    let sigma_px = if alpha > 0.0 {
        ((inv[2][2].max(inv[3][3]) * sigma2).max(0.0).sqrt() / alpha) as f32
    } else {
        f32::INFINITY
    };
    Eval { coef, cc, sigma_px }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resample::sample_shifted;
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Distribution, Normal, Poisson};

    /// A synthetic star field: `stars` Gaussian stars (FWHM `fwhm`) on a background, no noise.
    /// `star_list` gives (y, x, flux) in field coordinates.
    pub(crate) fn star_list(h: usize, w: usize, stars: usize, seed: u64) -> Vec<(f64, f64, f64)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..stars)
            .map(|_| {
                let flux = 3000.0 * (1.0 + 20.0 * rng.random::<f64>().powi(4));
                (
                    rng.random_range(0.0..h as f64),
                    rng.random_range(0.0..w as f64),
                    flux,
                )
            })
            .collect()
    }

    /// Render stars shifted by (dy, dx) (feature at y appears at y + dy) on a (h, w) grid, with the field
    /// origin at (oy, ox) of the grid, plus background and Poisson+read noise when `noise_seed` is given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn render(
        stars: &[(f64, f64, f64)],
        h: usize,
        w: usize,
        oy: f64,
        ox: f64,
        dy: f64,
        dx: f64,
        fwhm: f64,
        noise_seed: Option<u64>,
    ) -> Array2<f32> {
        let s2 = (fwhm / 2.354_820_045).powi(2);
        let bg = 200.0;
        let mut img = Array2::from_elem((h, w), bg as f32);
        let rad = (4.0 * fwhm).ceil() as i64;
        for &(sy, sx, flux) in stars {
            let (cy, cx) = (sy + oy + dy, sx + ox + dx);
            let amp = flux / (2.0 * std::f64::consts::PI * s2);
            let (r0, c0) = (cy.round() as i64, cx.round() as i64);
            for r in (r0 - rad).max(0)..(r0 + rad + 1).min(h as i64) {
                for c in (c0 - rad).max(0)..(c0 + rad + 1).min(w as i64) {
                    let d2 = (r as f64 - cy).powi(2) + (c as f64 - cx).powi(2);
                    img[[r as usize, c as usize]] += (amp * (-d2 / (2.0 * s2)).exp()) as f32;
                }
            }
        }
        if let Some(seed) = noise_seed {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let read = Normal::new(0.0, 8.0).unwrap();
            for v in img.iter_mut() {
                let lambda = f64::from(*v).max(1e-3);
                let p = Poisson::new(lambda).unwrap().sample(&mut rng) as f32;
                *v = p + read.sample(&mut rng) as f32;
            }
        }
        img
    }

    /// Reference tile (t x t, noise-reduced like a stack of many frames) and a frame cut-out of size
    /// t + 2m with a known shift.
    fn case(t: usize, m: usize, dy: f64, dx: f64, seed: u64) -> (Array2<f32>, Array2<f32>) {
        let stars = star_list(t + 2 * m, t + 2 * m, (t * t) / 600 + 3, seed);
        // Reference: field coordinates shifted by -m so it sees the centre of the cut-out field.
        let mut reference = render(&stars, t, t, -(m as f64), -(m as f64), 0.0, 0.0, 3.0, None);
        // Modest noise in the reference (a stacked reference has sqrt(N) less noise).
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabc);
        let nn = Normal::new(0.0, 3.0).unwrap();
        reference.mapv_inplace(|v| v + nn.sample(&mut rng) as f32);
        let frame = render(
            &stars,
            t + 2 * m,
            t + 2 * m,
            0.0,
            0.0,
            dy,
            dx,
            3.0,
            Some(seed + 1),
        );
        (reference, frame)
    }

    fn rms_error(t: usize, trials: usize, seed0: u64) -> (f64, usize, f64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed0);
        let m = t / 8;
        let (mut se, mut failures, mut iters) = (0.0, 0usize, 0.0);
        for k in 0..trials {
            let (dy, dx) = (rng.random_range(-2.0..2.0), rng.random_range(-2.0..2.0));
            let (reference, frame) = case(t, m, dy, dx, seed0 * 1000 + k as u64);
            let r = register(&Reference::new(reference.view()), frame.view(), None);
            iters += f64::from(r.iterations) / trials as f64;
            if !r.converged || r.low_structure {
                failures += 1;
            }
            se += (f64::from(r.shift.dy) - dy).powi(2) + (f64::from(r.shift.dx) - dx).powi(2);
        }
        (((se / (2 * trials) as f64).sqrt()), failures, iters)
    }

    #[test]
    fn subpixel_accuracy_64_128_256() {
        for (t, trials) in [(64usize, 40usize), (128, 20), (256, 8)] {
            let (rms, failures, iters) = rms_error(t, trials, t as u64);
            eprintln!("tile {t}: rms error {rms:.4} px over {trials} noisy trials, {iters:.1} iterations on average");
            assert_eq!(failures, 0, "tile {t}");
            assert!(rms <= 0.05, "tile {t}: rms {rms}");
        }
    }

    #[test]
    fn large_shifts_up_to_a_quarter_tile() {
        for t in [64usize, 128] {
            let m = t / 4;
            let lim = m as f64 - 1.0;
            for (k, (dy, dx)) in [(lim, -lim), (-lim, 0.3), (0.5 * lim, lim), (-lim, -lim)]
                .into_iter()
                .enumerate()
            {
                let (reference, frame) = case(t, m, dy, dx, 77 + k as u64);
                let r = register(&Reference::new(reference.view()), frame.view(), None);
                assert!(r.converged, "t {t} ({dy},{dx}): {r:?}");
                assert!(
                    (f64::from(r.shift.dy) - dy).abs() < 0.1,
                    "t {t} ({dy},{dx}): {r:?}"
                );
                assert!(
                    (f64::from(r.shift.dx) - dx).abs() < 0.1,
                    "t {t} ({dy},{dx}): {r:?}"
                );
                assert!(r.cc > 0.5);
            }
        }
    }

    #[test]
    fn initial_guess_refines_and_wrong_guess_recovers() {
        let (reference, frame) = case(96, 24, 3.3, -5.7, 5);
        let rf = Reference::new(reference.view());
        let good = register(&rf, frame.view(), Some(Shift::new(3.0, -6.0)));
        assert!(
            good.converged
                && (good.shift.dy - 3.3).abs() < 0.05
                && (good.shift.dx + 5.7).abs() < 0.05
        );
        let from_search = register(&rf, frame.view(), None);
        assert!((from_search.shift.dy - good.shift.dy).abs() < 1e-2);
    }

    #[test]
    fn registration_does_not_depend_on_the_data_units() {
        let (reference, frame) = case(64, 16, 0.6, -1.3, 7);
        let base = register(&Reference::new(reference.view()), frame.view(), None);
        assert!(base.converged && base.cc > 0.9, "{base:?}");
        for scale in [1e-8f32, 1e-4, 1e3, 1e5, 65536.0 * 65536.0] {
            let rf = Reference::new(reference.mapv(|v| v * scale).view());
            let r = register(&rf, frame.mapv(|v| v * scale).view(), None);
            assert!(
                (r.shift.dy - base.shift.dy).abs() < 1e-3
                    && (r.shift.dx - base.shift.dx).abs() < 1e-3
                    && (r.cc - base.cc).abs() < 1e-4,
                "scale {scale}: {r:?} vs {base:?}"
            );
        }
    }

    #[test]
    fn empty_sky_is_flagged_and_does_not_move() {
        let t = 64;
        let m = 16;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let nn = Normal::new(0.0, 10.0).unwrap();
        let reference = Array2::from_shape_fn((t, t), |_| 200.0 + 0.3 * nn.sample(&mut rng) as f32);
        let frame = Array2::from_shape_fn((t + 2 * m, t + 2 * m), |_| {
            200.0 + nn.sample(&mut rng) as f32
        });
        let rf = Reference::new(reference.view());
        assert!(!rf.has_structure(), "{rf:?}");
        let prior = Shift::new(0.4, -0.2);
        let r = register(&rf, frame.view(), Some(prior));
        assert!(r.low_structure, "{r:?}");
        // A star tile has structure.
        let (sref, _) = case(64, 16, 0.0, 0.0, 3);
        assert!(Reference::new(sref.view()).has_structure());
    }

    /// The obvious masked fit: one pass with a per-pixel normal matrix over the joint mask.
    fn evaluate_masked_slow(r: &Reference, img: &[f32], mu: f32) -> Option<Eval> {
        let mut gram = [[0.0f64; 4]; 4];
        let mut b = [0.0f64; 4];
        let (mut s2, mut n) = (0.0f64, 0usize);
        for i in 0..img.len() {
            if r.mask[i] > 0.0 && img[i].is_finite() {
                let d = f64::from(img[i] - mu);
                let basis = [
                    f64::from(r.t[i]),
                    1.0,
                    f64::from(r.gy[i]),
                    f64::from(r.gx[i]),
                ];
                for a in 0..4 {
                    b[a] += basis[a] * d;
                    for c in 0..4 {
                        gram[a][c] += basis[a] * basis[c];
                    }
                }
                s2 += d * d;
                n += 1;
            }
        }
        if n < MIN_VALID_PIXELS || n * 4 < r.n_valid {
            return None;
        }
        let inv = invert4(&gram)?;
        Some(finish_eval(&gram, &inv, &b, s2, n as f64))
    }

    #[test]
    fn masked_evaluation_matches_the_per_pixel_fit() {
        let (reference, frame) = case(64, 16, 0.3, -0.4, 5);
        let rf = Reference::new(reference.view());
        let (h, w) = reference.dim();
        let mut img: Vec<f32> = frame
            .slice(ndarray::s![16..16 + h, 16..16 + w])
            .iter()
            .copied()
            .collect();
        // A missing edge strip and scattered holes.
        for r in 0..h {
            for c in 0..5 {
                img[r * w + c] = f32::NAN;
            }
        }
        for k in (7..img.len()).step_by(97) {
            img[k] = f32::NAN;
        }
        let mu = 210.0;
        let fast = evaluate_masked(&rf, &img, mu).expect("enough pixels");
        let slow = evaluate_masked_slow(&rf, &img, mu).expect("enough pixels");
        for (a, b) in fast.coef.iter().zip(slow.coef.iter()) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-3), "{a} vs {b}");
        }
        assert!(
            (fast.cc - slow.cc).abs() < 1e-4,
            "{} vs {}",
            fast.cc,
            slow.cc
        );
        assert!((fast.sigma_px - slow.sigma_px).abs() <= 1e-3 * slow.sigma_px);
        // Too little overlap is refused by both.
        let mostly_nan: Vec<f32> = img
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % w < w * 4 / 5 { f32::NAN } else { v })
            .collect();
        assert!(evaluate_masked(&rf, &mostly_nan, mu).is_none());
        assert!(evaluate_masked_slow(&rf, &mostly_nan, mu).is_none());
    }

    #[test]
    fn nan_edges_are_masked() {
        let (reference, mut frame) = case(64, 16, 1.25, -0.75, 11);
        for r in 0..frame.nrows() {
            for c in 0..20 {
                frame[[r, c]] = f32::NAN;
            }
        }
        let r = register(&Reference::new(reference.view()), frame.view(), None);
        assert!(r.converged, "{r:?}");
        assert!(
            (r.shift.dy - 1.25).abs() < 0.08 && (r.shift.dx + 0.75).abs() < 0.08,
            "{r:?}"
        );
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let reference = Array2::from_elem((32, 32), f32::NAN);
        let frame = Array2::from_elem((40, 40), 1.0f32);
        let r = register(&Reference::new(reference.view()), frame.view(), None);
        assert!(!r.converged && r.cc == 0.0);
        let (sref, _) = case(64, 8, 0.0, 0.0, 1);
        let rf = Reference::new(sref.view());
        let all_nan = Array2::from_elem((80, 80), f32::NAN);
        let r = register(&rf, all_nan.view(), Some(Shift::new(0.5, 0.5)));
        assert!(!r.converged && r.shift == Shift::new(0.5, 0.5));
        let small = Array2::from_elem((10, 10), 1.0f32);
        assert!(!register(&rf, small.view(), None).converged);
        let r = register(&rf, all_nan.view(), Some(Shift::new(f32::NAN, 0.0)));
        assert!(!r.converged && r.shift == Shift::ZERO);
        // Constant frame: no correlation.
        let flat = Array2::from_elem((80, 80), 5.0f32);
        let r = register(&rf, flat.view(), None);
        assert!(!r.converged || r.low_structure);
        let _ = Reference::new(Array2::<f32>::zeros((0, 0)).view());
        let _ = sample_shifted;
    }

    #[test]
    fn dot_products_match_f64_reference_and_paths_agree() {
        let n = 1003;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut v = || {
            (0..n)
                .map(|_| rng.random_range(-100.0..100.0f32))
                .collect::<Vec<f32>>()
        };
        let (img, t, gy, gx) = (v(), v(), v(), v());
        let mask: Vec<f32> = (0..n).map(|i| if i % 7 == 0 { 0.0 } else { 1.0 }).collect();
        let mu = 3.5f32;
        let got = sums5(&img, &mask, &t, &gy, &gx, mu);
        let mut want = [0.0f64; 5];
        for i in 0..n {
            let d = f64::from((img[i] - mu) * mask[i]);
            want[0] += f64::from(t[i]) * d;
            want[1] += d;
            want[2] += f64::from(gy[i]) * d;
            want[3] += f64::from(gx[i]) * d;
            want[4] += d * d;
        }
        for k in 0..5 {
            assert!(
                (got[k] - want[k]).abs() <= 1e-4 * want[4].abs().max(1.0),
                "{k}: {} vs {}",
                got[k],
                want[k]
            );
        }
        let body = n / LANES * LANES;
        let portable = sums5_lanes(&img, &mask, &t, &gy, &gx, mu, body);
        #[cfg(target_arch = "x86_64")]
        if crate::resample::has_avx2() {
            // SAFETY: AVX2 checked just above.
            let fast = unsafe { sums5_avx2(&img, &mask, &t, &gy, &gx, mu, body) };
            assert_eq!(fast, portable, "the AVX2 path must be bit-identical");
        }
        let _ = portable;
    }

    #[test]
    fn cc_is_one_for_identical_and_low_for_unrelated() {
        let (reference, _) = case(64, 8, 0.0, 0.0, 21);
        let mut frame = Array2::from_elem((80, 80), f32::NAN);
        frame
            .slice_mut(ndarray::s![8..72, 8..72])
            .assign(&reference.mapv(|v| 2.0 * v + 10.0));
        let rf = Reference::new(reference.view());
        let r = register(&rf, frame.view(), Some(Shift::ZERO));
        assert!(r.cc > 0.999 && r.shift.norm() < 1e-3, "{r:?}");
        let (other, _) = case(64, 8, 0.0, 0.0, 22);
        let mut f2 = Array2::from_elem((80, 80), 200.0f32);
        f2.slice_mut(ndarray::s![8..72, 8..72]).assign(&other);
        let r = register(&rf, f2.view(), None);
        assert!(r.cc < 0.5, "{r:?}");
    }
}
