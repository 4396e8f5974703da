//! What the leader knows about each follower: how far its log matches
//! ([`Progress`]), how many appends are unacknowledged ([`Inflights`]), and
//! the whole membership with everyone's progress ([`ProgressTracker`]).

pub mod inflights;
#[allow(clippy::module_inception)]
pub mod progress;
pub mod tracker;

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};
pub use tracker::{Configuration, ProgressTracker};
