//! # Tandem
//!
//! An embedded, replicated key-value storage engine. Every write is
//! replicated with Raft to a quorum of replicas, made durable in a
//! segmented, CRC-checked write-ahead log, and applied to a sled-backed
//! state machine atomically with the applied index.
//!
//! The crate is being built up issue by issue; see the README's feature
//! table for what works today.

#![deny(missing_docs)]

pub use tandem_raft as raft;

pub mod sm;
pub mod verify;
