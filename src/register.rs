//! (module `register`: being written; see the crate docs)
