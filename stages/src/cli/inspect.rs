//! `tlr inspect FILE...`: star count, median FWHM and ellipticity, background and noise per image.
//!
//! A 2-D image is measured as it is. A cube of several planes (tlr's colour result is an RGB cube,
//! NAXIS3 = 3) is measured on its luminance, the per-pixel mean of the planes (the first line, and the
//! top-level JSON fields), and on every plane by itself (`R`, `G`, `B` for three planes).
//!
//! What it does not: change files, or read any pixels itself (that is `tlr_core::fits::read_cube`).

use clap::Args;
use ndarray::{Array2, Array3, Axis};
use std::path::{Path, PathBuf};

use super::progress::print_json;
use super::Failure;
use tlr_core::stars::ImageQuality;

/// Arguments of `tlr inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// FITS images to measure (2-D images, or cubes such as tlr's RGB result), or SER videos (one line
    /// per frame, with its sharpness; Bayer frames are measured on their 2x2-cell luminance).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per file on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Names of the planes of a cube: R, G, B for three planes (tlr writes RGB), else 1-based numbers.
fn plane_names(planes: usize) -> Vec<String> {
    if planes == 3 {
        ["R", "G", "B"].iter().map(|s| s.to_string()).collect()
    } else {
        (1..=planes).map(|p| p.to_string()).collect()
    }
}

/// Per-pixel mean of the planes; NaN where any plane is NaN (missing data stays missing).
pub(super) fn luminance(cube: &Array3<f32>) -> Array2<f32> {
    let planes = cube.len_of(Axis(0)).max(1) as f32;
    cube.sum_axis(Axis(0)).mapv(|v| v / planes)
}

fn quality_json(q: &ImageQuality) -> serde_json::Value {
    serde_json::json!({
        "stars": q.stars,
        "median_fwhm_px": q.median_fwhm,
        "median_ellipticity": q.median_ellipticity,
        "background": q.background,
        "noise": q.noise,
    })
}

fn print_row(q: &ImageQuality, label: &str) {
    println!(
        "{:>6} {:>9.2} {:>7.3} {:>11.1} {:>9.2}  {label}",
        q.stars, q.median_fwhm, q.median_ellipticity, q.background, q.noise,
    );
}

/// Measures one file and prints its line(s).
fn inspect_file(path: &Path, json: bool) -> Result<(), tlr_core::fits::FitsError> {
    let (_, cube) = tlr_core::fits::read_cube(path)?;
    let planes = cube.len_of(Axis(0));
    if planes == 1 {
        let q = tlr_core::stars::measure(cube.index_axis(Axis(0), 0));
        if json {
            let mut v = quality_json(&q);
            v["file"] = serde_json::json!(path);
            v["planes"] = serde_json::json!(1);
            print_json(&v);
        } else {
            print_row(&q, &path.display().to_string());
        }
        return Ok(());
    }
    let names = plane_names(planes);
    let lum = tlr_core::stars::measure(luminance(&cube).view());
    let per_plane: Vec<ImageQuality> = cube
        .axis_iter(Axis(0))
        .map(tlr_core::stars::measure)
        .collect();
    if json {
        let mut v = quality_json(&lum);
        v["file"] = serde_json::json!(path);
        v["planes"] = serde_json::json!(planes);
        v["measured_on"] = serde_json::json!("luminance (mean of the planes)");
        v["per_plane"] = per_plane
            .iter()
            .zip(&names)
            .map(|(q, name)| {
                let mut p = quality_json(q);
                p["plane"] = serde_json::json!(name);
                p
            })
            .collect();
        print_json(&v);
    } else {
        print_row(
            &lum,
            &format!(
                "{} ({planes}-plane cube {}: luminance = mean of the planes)",
                path.display(),
                names.join(",")
            ),
        );
        for (q, name) in per_plane.iter().zip(&names) {
            print_row(q, &format!("{} [{name}]", path.display()));
        }
    }
    Ok(())
}

/// Runs `tlr inspect`. Unreadable files are reported and make the exit code 1, the others are measured.
pub fn inspect(args: InspectArgs) -> Result<(), Failure> {
    if args.json {
        super::progress::json_errors();
    }
    if !args.json {
        println!(
            "{:>6} {:>9} {:>7} {:>11} {:>9}  file",
            "stars", "FWHM px", "ellip", "background", "noise"
        );
    }
    let mut failures = 0usize;
    for path in &args.files {
        if tlr_core::ser::is_ser_path(path) {
            if let Err(error) = inspect_ser(path, args.json) {
                failures += 1;
                eprintln!("error: {}", tlr_core::report(&error));
            }
            continue;
        }
        if let Err(error) = inspect_file(path, args.json) {
            failures += 1;
            // The whole chain: the cause (e.g. the OS error) is the error's source, not its message.
            eprintln!("error: {}", tlr_core::report(&error));
        }
    }
    if failures > 0 {
        return Err(Failure::failed(anyhow::anyhow!(
            "{failures} of {} file(s) could not be read",
            args.files.len()
        )));
    }
    Ok(())
}

/// Measures every frame of a SER file: one line (or JSON object) per frame with the star figures and
/// the noise-corrected sharpness ([`tlr_core::quality::sharpness`]), then the file's summary line.
fn inspect_ser(path: &Path, json: bool) -> Result<(), tlr_core::ser::SerError> {
    use tlr_core::ser::{SerColor, SerFile};
    let file = SerFile::open(path)?;
    if let Some((complete, declared)) = file.truncation() {
        eprintln!(
            "warning: `{}` declares {declared} frames but holds {complete} complete ones",
            path.display()
        );
    }
    let pattern = match file.header().color {
        SerColor::Bayer(p) => Some(p),
        _ => None,
    };
    let mut sharpness = Vec::with_capacity(file.frames());
    for index in 0..file.frames() {
        let raw = file.read_frame(index)?;
        let image = match pattern {
            Some(p) => {
                let planes = tlr_core::bayer::split_planes(raw.view(), p);
                luminance(&planes)
            }
            None => raw,
        };
        let q = tlr_core::stars::measure(image.view());
        let sharp = tlr_core::quality::sharpness(image.view());
        sharpness.push(sharp);
        let label = format!("{}#{index}", path.display());
        if json {
            let mut v = quality_json(&q);
            v["file"] = serde_json::json!(path);
            v["frame"] = serde_json::json!(index);
            v["sharpness"] = serde_json::json!(sharp);
            if let Some(t) = file
                .timestamp_utc(index)
                .and_then(tlr_core::fits::format_utc)
            {
                v["date_obs"] = serde_json::json!(t);
            }
            print_json(&v);
        } else {
            print_row(&q, &format!("{label}  sharpness {sharp:.4e}"));
        }
    }
    if !json {
        let h = file.header();
        println!(
            "{}: {} frames of {}x{}, {:?}, {} bit, timestamps {}; median sharpness {:.4e}",
            path.display(),
            file.frames(),
            h.width,
            h.height,
            h.color,
            h.bit_depth,
            if file.has_timestamps() { "yes" } else { "no" },
            tlr_core::quality::typical(&sharpness)
        );
    }
    Ok(())
}
