//! (module `follow`: being written)
