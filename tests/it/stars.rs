//! Star detection and measurement tests (being written).
