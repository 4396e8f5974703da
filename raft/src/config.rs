//! Configuration of a raft node.

use crate::errors::{Error, Result};
use crate::read_only::ReadOnlyOption;

/// Known bugs that can be planted into the core to show that a checker
/// catches them. Only exists with the `planted-bugs` cargo feature, which no
/// crate enables by default; each bug is off unless selected here.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlantedBug {
    /// No bug (the default).
    #[default]
    None,
    /// Commit by counting replicas even for entries of older terms,
    /// ignoring §5.4.2 (the Figure 8 bug).
    CommitOldTermByCounting,
    /// Count vote responses that carry an older term than the candidate's.
    CountStaleVotes,
    /// Grant votes without checking that the candidate's log is up to date.
    VoteForStaleLog,
}

/// How a node behaves. Build with [`Config::new`] and adjust fields, then
/// [`Config::validate`] (done by `RawNode::new`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: u64,
    /// Ticks without hearing from a leader before campaigning. The actual
    /// timeout is drawn from `[min_election_tick, max_election_tick)`.
    pub election_tick: usize,
    /// Ticks between leader heartbeats; must be below `election_tick`.
    pub heartbeat_tick: usize,
    /// The index already applied by the application (0: the snapshot index).
    pub applied: u64,
    /// Byte limit of the entries in one append message (at least one entry is sent).
    pub max_size_per_msg: u64,
    /// Maximum append messages in flight to one follower in Replicate state.
    pub max_inflight_msgs: usize,
    /// Leader steps down if it has not heard from a quorum within an
    /// election timeout; followers ignore vote requests while they have a leader.
    pub check_quorum: bool,
    /// Run a pre-vote round before incrementing the term (§9.6).
    pub pre_vote: bool,
    /// Lower bound of the randomised election timeout (0: `election_tick`).
    pub min_election_tick: usize,
    /// Upper bound, exclusive (0: `2 * election_tick`).
    pub max_election_tick: usize,
    /// How read-index requests are served.
    pub read_only_option: ReadOnlyOption,
    /// Do not broadcast an append just to spread a new commit index; it
    /// travels with the next append or heartbeat instead.
    pub skip_bcast_commit: bool,
    /// Merge consecutive appends to the same follower into one message.
    pub batch_append: bool,
    /// Election priority: a voter refuses a candidate with an equally
    /// up-to-date log but lower priority, so higher priorities win ties.
    pub priority: i64,
    /// Bytes of proposed, uncommitted entries the leader accepts before
    /// dropping proposals (one proposal is always accepted when none is pending).
    pub max_uncommitted_size: u64,
    /// Byte limit of the committed entries handed out in one `Ready`.
    pub max_committed_size_per_ready: u64,
    /// A leader that applies its own removal steps down at once. Off by
    /// default: it keeps leading (refusing proposals) and transfers
    /// leadership to the most caught-up voter, because the remaining voters
    /// may not yet know the removal committed and may need its log.
    pub step_down_on_removal: bool,
    /// Seed of the election-timeout RNG, combined with `id` so that nodes
    /// sharing a seed still draw different timeouts.
    pub seed: u64,
    /// A bug to plant (test builds only; see [`PlantedBug`]).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: PlantedBug,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 2,
            applied: 0,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: false,
            pre_vote: false,
            min_election_tick: 0,
            max_election_tick: 0,
            read_only_option: ReadOnlyOption::Safe,
            skip_bcast_commit: false,
            batch_append: false,
            priority: 0,
            max_uncommitted_size: 64 * 1024 * 1024,
            max_committed_size_per_ready: 64 * 1024 * 1024,
            step_down_on_removal: false,
            seed: 0,
            #[cfg(feature = "planted-bugs")]
            planted_bug: PlantedBug::None,
        }
    }
}

/// Upper bound on `max_inflight_msgs`: a window larger than this only
/// wastes memory (each slot is 8 bytes per follower).
pub const MAX_INFLIGHT_MSGS_LIMIT: usize = 1 << 16;

impl Config {
    /// Defaults for node `id`.
    #[must_use]
    pub fn new(id: u64) -> Self {
        Config {
            id,
            ..Config::default()
        }
    }

    /// The effective lower bound of the election timeout.
    #[must_use]
    pub fn min_election_tick(&self) -> usize {
        if self.min_election_tick == 0 {
            self.election_tick
        } else {
            self.min_election_tick
        }
    }

    /// The effective (exclusive) upper bound of the election timeout.
    #[must_use]
    pub fn max_election_tick(&self) -> usize {
        if self.max_election_tick == 0 {
            2 * self.election_tick
        } else {
            self.max_election_tick
        }
    }

    /// Reject invalid settings.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] naming the offending setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(Error::ConfigInvalid(s.to_string()));
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be greater than 0");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        let (min, max) = (self.min_election_tick(), self.max_election_tick());
        if min < self.election_tick {
            return Err(Error::ConfigInvalid(format!(
                "min_election_tick {min} must not be less than election_tick {}",
                self.election_tick
            )));
        }
        if min >= max {
            return Err(Error::ConfigInvalid(format!(
                "min_election_tick {min} must be less than max_election_tick {max}"
            )));
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be greater than 0");
        }
        if self.max_inflight_msgs > MAX_INFLIGHT_MSGS_LIMIT {
            return Err(Error::ConfigInvalid(format!(
                "max_inflight_msgs must be at most {MAX_INFLIGHT_MSGS_LIMIT}"
            )));
        }
        if self.max_size_per_msg == 0 {
            return bad("max_size_per_msg must be greater than 0");
        }
        if self.max_uncommitted_size == 0 {
            return bad("max_uncommitted_size must be greater than 0");
        }
        if self.max_committed_size_per_ready == 0 {
            return bad("max_committed_size_per_ready must be greater than 0");
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return bad("read_only_option LeaseBased requires check_quorum");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_for_id_is_valid() {
        assert!(Config::new(1).validate().is_ok());
        assert_eq!(Config::new(1).min_election_tick(), 10);
        assert_eq!(Config::new(1).max_election_tick(), 20);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        type Mutator = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Mutator)> = vec![
            ("id", Box::new(|c| c.id = 0)),
            ("heartbeat_tick", Box::new(|c| c.heartbeat_tick = 0)),
            ("election_tick", Box::new(|c| c.election_tick = 2)),
            ("min_election_tick", Box::new(|c| c.min_election_tick = 5)),
            (
                "max_election_tick",
                Box::new(|c| {
                    c.min_election_tick = 12;
                    c.max_election_tick = 12;
                }),
            ),
            ("max_inflight_msgs", Box::new(|c| c.max_inflight_msgs = 0)),
            (
                "max_inflight_msgs",
                Box::new(|c| c.max_inflight_msgs = MAX_INFLIGHT_MSGS_LIMIT + 1),
            ),
            ("max_size_per_msg", Box::new(|c| c.max_size_per_msg = 0)),
            (
                "max_uncommitted_size",
                Box::new(|c| c.max_uncommitted_size = 0),
            ),
            (
                "max_committed_size_per_ready",
                Box::new(|c| c.max_committed_size_per_ready = 0),
            ),
            (
                "LeaseBased",
                Box::new(|c| c.read_only_option = ReadOnlyOption::LeaseBased),
            ),
        ];
        for (needle, mutate) in cases {
            let mut c = Config::new(1);
            mutate(&mut c);
            match c.validate() {
                Err(Error::ConfigInvalid(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{needle}: expected ConfigInvalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn lease_reads_with_check_quorum_are_valid() {
        let c = Config {
            read_only_option: ReadOnlyOption::LeaseBased,
            check_quorum: true,
            ..Config::new(3)
        };
        assert!(c.validate().is_ok());
    }
}
