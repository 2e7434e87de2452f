//! (module `stars`: being written; see the crate docs)
