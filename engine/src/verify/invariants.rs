//! Raft safety invariants over plain observations.
