//! The export flags `tlr run` and `tlr watch` share (`--bit-depth`, `--normalize`) and the check of
//! `-o`'s format before anything is read: an extension tlr does not write, or 32-bit PNG, is a usage
//! error (exit 2) naming the file and the choices.
//!
//! What it does not: encode (that is `tlr_core::export`) or decide file names.

use std::path::Path;

use clap::{Args, ValueEnum};
use tlr::output::{BitDepth, ExportOptions};

use super::Failure;

/// `--bit-depth` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BitDepthArg {
    /// 16-bit unsigned integers: the image mapped linearly onto 0..65535.
    #[value(name = "16")]
    Int16,
    /// 32-bit floats (FITS and TIFF).
    #[value(name = "32")]
    Float32,
}

/// The output format flags; the format itself follows `-o`'s extension.
#[derive(Args, Clone, Copy, Debug)]
pub struct ExportArgs {
    /// Samples of the output [default: 32 for .fits/.fit/.fts, 16 for .tif/.tiff and .png (PNG: 16
    /// only)]. 16-bit outputs map the image linearly onto 0..65535: 0 at the smaller of 0 and the
    /// image's minimum, 65535 at its maximum (no stretch).
    #[arg(long, value_enum, value_name = "BITS")]
    pub bit_depth: Option<BitDepthArg>,
    /// Float outputs (32-bit FITS and TIFF): write the values mapped onto [0, 1] by the same rule, for
    /// tools that expect it (16-bit outputs are always mapped).
    #[arg(long)]
    pub normalize: bool,
}

impl ExportArgs {
    /// The export options for `output`, checked: a format tlr does not write is a usage error.
    pub fn resolve(&self, output: &Path) -> Result<ExportOptions, Failure> {
        let options = ExportOptions {
            bit_depth: self.bit_depth.map(|b| match b {
                BitDepthArg::Int16 => BitDepth::Int16,
                BitDepthArg::Float32 => BitDepth::Float32,
            }),
            normalize: self.normalize,
        };
        tlr_core::export::Export::for_path(output, &options)
            .map_err(|e| Failure::usage(anyhow::anyhow!("-o {e}")))?;
        Ok(options)
    }
}
