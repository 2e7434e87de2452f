//! `tlr config [FILE]`: checks a configuration (every problem at once, warnings for unused keys) and
//! prints the effective configuration with its SHA-256 digest, the one written into FITS HISTORY.
//!
//! `--set KEY=VALUE` (repeatable) changes one key after the file, with the same checks.
//!
//! What it does not: change the file.

use clap::Args;
use std::path::PathBuf;

use super::{load_config, Failure};

/// Arguments of `tlr config`.
#[derive(Args)]
pub struct ConfigArgs {
    /// Configuration file (YAML; tile_compile files are accepted). Without it: the defaults.
    pub file: Option<PathBuf>,
    /// Set one configuration key, after the file (repeatable), e.g.
    /// `--set registration.local_tiles.min_valid_frames=6`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<tlr_core::config::Override>,
}

/// Runs `tlr config`.
pub fn config(args: ConfigArgs) -> Result<(), Failure> {
    let config = load_config(args.file.as_deref(), &args.set, None, false)?;
    print!("{}", config.to_yaml());
    println!("# sha256 {}", config.digest());
    println!(
        "# parallel_tiles on this machine: {} ({} physical cores)",
        config.parallel_tiles(tlr_core::config::physical_cores()),
        tlr_core::config::physical_cores()
    );
    Ok(())
}
