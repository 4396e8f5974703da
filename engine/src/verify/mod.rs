//! Verification tools: a linearizability checker for client histories.
