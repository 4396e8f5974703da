//! # tandem-snapshot
//!
//! Point-in-time images of a Tandem state machine, cut into CRC-checked
//! chunks, and the pure sender/receiver state machines that move them
//! between replicas.

#![deny(missing_docs)]
