//! (module `bayer`: being written)
