//! (module `resample`: being written; see the crate docs)
