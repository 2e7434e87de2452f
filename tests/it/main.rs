//! Integration tests of tlr-core, one module per area (a single test binary).

mod operator;
