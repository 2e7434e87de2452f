//! The calibration flags of `tlr run` and `tlr watch` (`--bias`, `--darks`, `--flats`, `--dark-flats`):
//! each takes a folder of frames or a master FITS and sets the `calibration.*` keys a configuration
//! file would (a folder: `use_*` and `*_dir`; a file: `use_*`, `*_use_master` and `*_master`), after
//! the file and `--set`. Masters built from folders are cached in `tlr-masters/` next to the output.
//! What it does not: read calibration frames (`tlr_core::calibrate` does, when the run starts).

use clap::Args;
use std::path::PathBuf;

use tlr_core::config::Config;

/// Calibration inputs.
#[derive(Args, Debug, Clone, Default)]
pub struct CalibrationArgs {
    /// Bias frames: a folder (a master is built and cached) or a master bias FITS.
    #[arg(long, value_name = "DIR|FILE")]
    pub bias: Option<PathBuf>,
    /// Dark frames (bias included; one master per exposure, matched to each light): a folder or a
    /// master dark FITS.
    #[arg(long, value_name = "DIR|FILE")]
    pub darks: Option<PathBuf>,
    /// Flat frames (each minus the dark-flats or bias and divided by its median before the combine,
    /// per colour for Bayer frames; the master normalised to 1): a folder or a master flat FITS.
    #[arg(long, value_name = "DIR|FILE")]
    pub flats: Option<PathBuf>,
    /// Dark-flats, subtracted from the flats instead of the bias: a folder or a master FITS.
    #[arg(long = "dark-flats", value_name = "DIR|FILE")]
    pub dark_flats: Option<PathBuf>,
}

impl CalibrationArgs {
    /// Sets the `calibration.*` keys the flags stand for.
    pub fn apply(&self, config: &mut Config) {
        let c = &mut config.calibration;
        let set = |path: &PathBuf,
                   enabled: &mut bool,
                   use_master: &mut bool,
                   dir: &mut Option<PathBuf>,
                   master: &mut Option<PathBuf>| {
            *enabled = true;
            *use_master = path.is_file();
            if *use_master {
                *master = Some(path.clone());
            } else {
                *dir = Some(path.clone());
            }
        };
        if let Some(p) = &self.bias {
            set(
                p,
                &mut c.use_bias,
                &mut c.bias_use_master,
                &mut c.bias_dir,
                &mut c.bias_master,
            );
        }
        if let Some(p) = &self.darks {
            set(
                p,
                &mut c.use_dark,
                &mut c.dark_use_master,
                &mut c.darks_dir,
                &mut c.dark_master,
            );
        }
        if let Some(p) = &self.flats {
            set(
                p,
                &mut c.use_flat,
                &mut c.flat_use_master,
                &mut c.flats_dir,
                &mut c.flat_master,
            );
        }
        if let Some(p) = &self.dark_flats {
            c.dark_flats = Some(p.clone());
        }
    }
}
