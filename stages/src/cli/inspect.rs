//! `tlr inspect FILE...`: star count, median FWHM and ellipticity, background and noise per image.
//!
//! What it does not: change files.

use clap::Args;
use std::path::PathBuf;

use super::progress::print_json;
use super::Failure;

/// Arguments of `tlr inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// FITS images to measure.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per file on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tlr inspect`. Unreadable files are reported and make the exit code 1, the others are measured.
pub fn inspect(args: InspectArgs) -> Result<(), Failure> {
    if !args.json {
        println!(
            "{:>6} {:>9} {:>7} {:>11} {:>9}  file",
            "stars", "FWHM px", "ellip", "background", "noise"
        );
    }
    let mut failures = 0usize;
    for path in &args.files {
        match tlr_core::fits::read_image(path) {
            Ok((_, image)) => {
                let q = tlr_core::stars::measure(image.view());
                if args.json {
                    print_json(&serde_json::json!({
                        "file": path,
                        "stars": q.stars,
                        "median_fwhm_px": q.median_fwhm,
                        "median_ellipticity": q.median_ellipticity,
                        "background": q.background,
                        "noise": q.noise,
                    }));
                } else {
                    println!(
                        "{:>6} {:>9.2} {:>7.3} {:>11.1} {:>9.2}  {}",
                        q.stars,
                        q.median_fwhm,
                        q.median_ellipticity,
                        q.background,
                        q.noise,
                        path.display()
                    );
                }
            }
            Err(error) => {
                failures += 1;
                eprintln!("error: {error}");
            }
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
