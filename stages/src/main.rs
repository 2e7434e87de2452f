//! The `tlr` command line (being written).
fn main() {}
