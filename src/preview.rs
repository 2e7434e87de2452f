//! (module `preview`: being written; see the crate docs)
