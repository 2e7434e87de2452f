mod fits;
mod scan;
