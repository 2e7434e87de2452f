//! (module `fits`: being written; see the crate docs)
