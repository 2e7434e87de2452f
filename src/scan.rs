//! (module `scan`: being written; see the crate docs)
