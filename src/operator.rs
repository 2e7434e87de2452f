//! (module `operator`: being written; see the crate docs)
