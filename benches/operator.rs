//! Benchmarks of the per-tile operator (being written).
fn main() {}
