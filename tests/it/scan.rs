//! scan tests (being written)
