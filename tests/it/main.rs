mod fits;
mod follow;
mod scan;
