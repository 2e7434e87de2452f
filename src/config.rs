//! (module `config`: being written; see the crate docs)
