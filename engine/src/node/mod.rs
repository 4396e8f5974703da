//! The replica runtime: proposal and read tracking, and (as the consensus
//! core lands) the step function and the threads around it.

pub mod proposals;
pub mod reads;
