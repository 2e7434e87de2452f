//! tlr: the staged pipeline (being written).
