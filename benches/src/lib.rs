//! Shared helpers for Tandem's criterion benchmarks.

#![deny(missing_docs)]
