//! (module `live`: being written)
