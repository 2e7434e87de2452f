//! Preview tests (being written).
