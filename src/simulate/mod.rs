//! Deterministic synthetic frame sequences with known truth, for tests, benchmarks and the demo.
//!
//! What it does: renders a star field (power-law fluxes, a few elliptical galaxies and a nebula blob) on a
//! sky with a gradient, as seen through a moving, blurring atmosphere by a camera, frame by frame:
//! global drift + jitter, field rotation (`altaz`), a smooth anisoplanatic local displacement field that
//! is correlated in time, a Moffat PSF whose width varies per frame, transparency changes, Poisson and
//! read noise, fixed hot pixels, one cloudy frame and one frame with a satellite trail. Frames are
//! quantised like a 16-bit camera (ADU in 0..=65535 with a pedestal). [`write_sequence`] writes them as
//! FITS plus `truth.fits`, `truth_displacement.json` and `simulation.json`.
//!
//! Colour mode ([`SimConfig::color`] = a [`CfaPattern`]): the same scene and motion, but every object
//! has a colour (stars: a black-body temperature of 3000–12000 K seen through broad R/G/B bands at
//! 610/535/465 nm; galaxies yellowish; the nebula's components alternately H-alpha red and O-III teal;
//! the sky a light-polluted orange), normalised so that `(R + 2G + B) / 4` equals the mono flux. The
//! camera sees the Bayer mosaic of the three colour renderings (noise, hot pixels and quantisation are
//! applied to the mosaic); [`Simulation::truth_rgb`] is the colour truth and [`Simulation::truth`] its
//! mosaic. [`write_sequence`] then writes `BAYERPAT`, `XBAYROFF` = `YBAYROFF` = 0 and `ROWORDER` =
//! 'TOP-DOWN'. Colours are drawn from their own random stream, so mono sequences are unchanged.
//! [`Simulation::star_colour_errors`] measures how well a demosaiced reconstruction keeps the colours of
//! bright stars (used by the colour tests and `tlr demo --color`).
//!
//! What it does not: optics beyond a circular Moffat PSF (no coma, no diffraction spikes), colour
//! calibration of a real camera (no colour matrix, no per-channel QE), cosmic rays, flat-field
//! vignetting, or sub-stamp warping (see "Model" below).
//!
//! # Geometry and truth (binding for tests)
//!
//! - Truth coordinates are the reference geometry. [`Simulation::displacement`] maps a truth position to
//!   its position in frame `i` with the crate's [`Shift`] convention: a feature at truth `(y, x)` appears
//!   in frame `i` at `(y + dy, x + dx)`.
//! - The displacement of frame `i` at truth position `p = (y, x)` is
//!   `R(θ_i)(p - c) + c - p + g_i + l_i(p)`: rotation by `θ_i` about the image centre
//!   `c = ((height-1)/2, (width-1)/2)` (positive θ turns +x towards +y), then the global translation `g_i`
//!   ([`Simulation::global_displacement`]), plus the local field `l_i` evaluated at the truth position.
//! - Frame 0 has exactly zero global translation and zero rotation (`g_0 = 0`, `θ_0 = 0`).
//! - The local field has exactly zero mean over the sequence at every point (the sample mean of its
//!   amplitude processes is removed), so a stack that averages local motion out lands on truth geometry,
//!   and a reconstruction aligned globally to frame 0 shares the truth geometry. Frame 0 itself differs
//!   from the truth by its own local field `l_0(p)`.
//! - [`Simulation::truth`] is the sky without seeing, motion, transparency loss, noise or detector defects:
//!   pedestal + sky (with its gradient) + every object rendered with a narrow, pixel-integrated Gaussian of
//!   FWHM [`TRUTH_FWHM_PX`] (1.5 px) at its truth position; float ADU, not clipped at 65535.
//!
//! # Model
//!
//! - Stars: positions uniform over the image plus a 24 px margin; total flux `F = F_min u^(-1/a)`
//!   (cumulative counts `N(>F) ∝ F^-a`, `a` = `flux_power_index`), capped at `flux_max_adu`. Each star is
//!   a Moffat stamp (sampled at pixel centres, so the measured FWHM equals [`Simulation::fwhm_px`])
//!   placed at its displaced position; the displacement is evaluated at the star only (stamps are not
//!   warped). Bright stars saturate at 65535, or at `saturation_adu` (a full well, written as `SATURATE`).
//! - Extended objects: galaxies (core + disk elliptical Gaussians) and a nebula (four broad Gaussians),
//!   convolved with a Gaussian of the frame's FWHM (an approximation of the Moffat) and shifted rigidly by
//!   the displacement at their centre.
//! - Sky: `sky_adu * (1 + gradient)` fixed to the detector (it does not move with the field), times a
//!   per-frame factor of 1 ± 1 %.
//! - Local field: `local_modes` random spatial Fourier modes, wavelengths uniform in
//!   [`local_wavelength_min_px`, `local_wavelength_max_px`] (150–500 px) and random directions, each with
//!   four AR(1) amplitude processes (cos/sin × dy/dx) of per-frame correlation `local_correlation` (0.9:
//!   seeing cells drift slowly across the field between consecutive short exposures; the frame-to-frame
//!   change is then `sqrt(2 (1 - 0.9)) ≈ 0.45` of the amplitude). After removing the time mean, the
//!   amplitudes are scaled so that the RMS length of the local displacement vector over a 16 x 16 grid and
//!   all frames equals `local_rms_px` exactly (needs at least two frames; one frame has no local motion).
//! - FWHM: AR(1) process (correlation 0.8) around `fwhm_mean_px` with sd `fwhm_sd_px`, clamped to
//!   [`fwhm_min_px`, `fwhm_max_px`]; Moffat β = `moffat_beta`.
//! - Transparency: 1 + N(0, `transparency_sd`) per frame (clamped to ±4 sd).
//! - Noise: photo-electrons `e = gain * signal`; Poisson noise (exact below 20 e-, its Gaussian
//!   approximation above) and Gaussian read noise; then ADU = e / gain + pedestal, plus hot pixels,
//!   rounded and clamped to 0..=65535 (to `saturation_adu` when set).
//! - Hot pixels: fixed positions and values (1000–50000 ADU above the pedestal) in every frame.
//! - Bad frames (when `bad_frames` and at least 5 frames): frame `round(0.37 (N-1))` is cloudy
//!   (transparency 0.5, sky x1.5 plus a broad bright patch), frame `round(0.61 (N-1))` carries a satellite
//!   trail (a 2500 ADU line of Gaussian profile, sigma 1 px, across the whole frame).
//!
//! # Randomness
//!
//! The scene (stars, objects, hot pixels, sky gradient) depends only on `seed`, so every scenario of one
//! seed shows the same sky. Per-frame parameters are drawn once in [`Simulation::new`]; the noise of frame
//! `i` comes from its own `StdRng` seeded from `(seed, i)`, so `frame(i)` does not depend on call order.
//!
//! # Files, in the order data flows through them
//!
//! - [`config`]: [`SimConfig`] and [`Scenario`]: what to simulate, validation and sanitising.
//! - [`scene`]: [`Simulation::new`] draws from the seed the objects (stars, galaxies, nebula, hot pixels,
//!   colours) and every frame's conditions and motion; [`Simulation::displacement`] evaluates the motion.
//! - [`render`]: pixels: [`Simulation::truth`], [`Simulation::expected_frame`] and the noisy
//!   [`Simulation::frame`].
//! - [`truth`]: the truth displacement grid ([`TruthDisplacement`], `truth_displacement.json`).
//! - [`write`](mod@write): [`write_sequence`], every file of a simulated folder, each written atomically.
//! - [`metrics`]: [`StarColourErrors`], how well a reconstruction keeps the colours of stars.
//! - [`surface`], [`surface_write`]: star-less scenes (granulation, lunar, planet) with their own
//!   motion model and writer ([`SurfaceSim`], [`write_surface_sequence`], FITS or SER).
//!
//! The names of the files in a simulated folder are here, as the one place both [`truth`] and
//! [`write`](mod@write) read them from.
//!
//! [`CfaPattern`]: crate::bayer::CfaPattern
//! [`Shift`]: crate::geom::Shift

// `!(x > t)` is used on purpose throughout: unlike `x <= t` it is also true for NaN, which must be
// rejected as well.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::path::PathBuf;

pub mod calibration;
pub mod config;
pub mod metrics;
pub mod oracle;
pub mod positions;
pub mod render;
pub mod scene;
pub mod surface;
pub mod surface_write;
pub mod truth;
pub mod write;

pub use config::{Scenario, SimConfig};
pub use metrics::StarColourErrors;
pub use positions::StarPositionErrors;
pub use render::TRUTH_FWHM_PX;
pub use scene::{blackbody_color, FrameKind, HotPixel, Simulation, TruthStar};
pub use surface::{rms_against_truth, SurfaceConfig, SurfaceScene, SurfaceSim};
pub use surface_write::{write_surface_sequence, SurfaceOutput, SurfaceSummary};
pub use truth::{FrameTruth, TruthDisplacement};
pub use write::{write_sequence, SimSummary, TRUTH_GRID_STEP_PX};

/// File name of the true per-frame displacements written by [`write_sequence`].
pub const TRUTH_DISPLACEMENT_FILE: &str = "truth_displacement.json";
/// File name of the truth image written by [`write_sequence`].
pub const TRUTH_FILE: &str = "truth.fits";
/// File name of the colour truth `(3, rows, cols)` written by [`write_sequence`] in colour mode.
pub const TRUTH_RGB_FILE: &str = "truth_rgb.fits";
/// File name of the simulation configuration written by [`write_sequence`].
pub const CONFIG_FILE: &str = "simulation.json";

/// Errors of the simulator. Every variant names what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is unusable; every problem is listed.
    #[error("invalid simulation configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// One message per problem, each naming the field.
        problems: Vec<String>,
    },
    /// An unknown scenario name.
    #[error("unknown scenario `{value}` (expected static, seeing or altaz)")]
    UnknownScenario {
        /// The name given.
        value: String,
    },
    /// A file or folder could not be created, written or read.
    #[error("simulation file `{path}`")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be written or parsed.
    #[error("simulation file `{path}`")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A FITS file could not be written.
    #[error("simulation file `{path}`")]
    Fits {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::fits::FitsError,
    },
}

/// The conventional file name of frame `index`: `frame_0000.fits`, ...
pub fn frame_file_name(index: usize) -> String {
    format!("frame_{index:04}.fits")
}

/// A small configuration the unit tests share: `scenario`, `frames` frames of 128 x 96, seed 7.
#[cfg(test)]
fn small(scenario: Scenario, frames: usize) -> SimConfig {
    SimConfig::new(scenario, frames, 128, 96, 7)
}
