//! Quorum arithmetic: which index a majority has acknowledged and how an
//! election stands. Plain majorities live in [`majority`], joint
//! configurations (two majorities that must both agree) in [`joint`].

pub mod joint;
pub mod majority;

pub use joint::JointConfig;
pub use majority::MajorityConfig;

/// The outcome of counting votes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: some voters have not answered.
    Pending,
    /// A quorum rejected; the election cannot be won.
    Lost,
    /// A quorum granted.
    Won,
}
