//! P9: recording a streamed request body for a possible replay.
fn main() {}
