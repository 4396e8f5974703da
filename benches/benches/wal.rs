//! WAL benchmarks (placeholder until the WAL API lands).
#![allow(missing_docs)]
fn main() {}
