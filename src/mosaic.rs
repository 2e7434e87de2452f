//! (module `mosaic`: being written; see the crate docs)
