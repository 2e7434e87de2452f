//! `tlr watch` (being written).
use super::Failure;
/// Arguments of `tlr watch`.
#[derive(clap::Args)]
pub struct WatchArgs {}
/// Runs `tlr watch`.
pub fn watch(_args: WatchArgs) -> Result<(), Failure> {
    Err(Failure::usage(anyhow::anyhow!("tlr watch is not available yet")))
}
