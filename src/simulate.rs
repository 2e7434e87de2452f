//! (module `simulate`: being written; see the crate docs)
