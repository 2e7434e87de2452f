//! Global pass tests (being written).
