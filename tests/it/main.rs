//! Integration tests of tlr-core, one module per area.
mod simulate;
mod stars;
