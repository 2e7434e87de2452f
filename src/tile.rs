//! (module `tile`: being written; see the crate docs)
