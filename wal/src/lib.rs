//! # tandem-wal
//!
//! The persistent raft log of one Tandem replica: segment files of
//! CRC-checked records holding entries and the hard state, written by one
//! writer thread with group commit.

#![deny(missing_docs)]
