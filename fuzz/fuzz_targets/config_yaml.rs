//! Fuzzes configuration parsing (`tlr_core::config::parse`: YAML, key table, conversions, ranges) on
//! arbitrary UTF-8 text; non-UTF-8 input is skipped (`load` rejects it before parsing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tlr_core::config::parse_with_cores(text, "fuzz.yaml", 4);
    }
});
