//! (module `global`: being written; see the crate docs)
