//! A deterministic simulator of the whole engine.
//!
//! One seed runs several replicas of the REAL engine code on one thread:
//! the step function ([`NodeCore`](crate::node::NodeCore)) over
//! [`DiskStorage`](crate::sm::DiskStorage), i.e. the real WAL (manual mode,
//! on the simulated disk [`SimFs`](tandem_wal::SimFs)) and the real sled state
//! machine. Everything that is a thread, a clock or a device in production
//! is an event of a seeded [`Scheduler`](crate::verify::Scheduler) here:
//!
//! | production                       | simulated by                                     |
//! |----------------------------------|--------------------------------------------------|
//! | raft thread's ticks               | `Tick` events every 10 ms of simulated time      |
//! | the network                       | `Deliver` events: drop, delay, duplicate, reorder, partitions |
//! | the WAL writer thread + fsync     | `Sync` events pumping the WAL on `SimFs`          |
//! | the apply thread                  | `Apply` events applying one task to sled         |
//! | state-machine durability          | `Flush` events (`StateMachine::flush_durable`)    |
//! | clients (`Db`)                    | `Client` events: get / insert / remove / CAS      |
//! | operators                         | leader transfers, membership changes              |
//! | faults                            | crashes + restarts, fsync failures, power loss    |
//!
//! # What a crash leaves
//!
//! The WAL's disk loses every write not synced; a random prefix of the
//! unsynced writes survives and the next one may be torn ([`SimFs::crash`](tandem_wal::SimFs::crash)).
//! sled recovers a prefix of its atomic batches that includes at least
//! everything made durable by the last `flush_durable`: the simulator
//! records the state machine's image after the last flush and after every
//! apply since, and restarts sled from one of them (the flushed one, the
//! newest one, or one in between), as a real crash could. Restart then runs
//! the engine's own recovery: WAL recovery, `DiskStorage::open`,
//! `replay_committed`, a new `NodeCore`.
//!
//! # Checks
//!
//! After every event: election safety, log matching, leader completeness,
//! committed entries never changing, `applied ≤ committed ≤ last`
//! ([`InvariantChecker`](crate::verify::invariants::InvariantChecker) over the replicas' logs) and state-machine safety
//! (every applied entry, as it is applied). At every crash, and at the end
//! of the seed after a power loss of every replica: durability — each
//! acknowledged write is held by enough replicas that no quorum of voters
//! lacks it, using what the crashed replicas actually recovered from disk.
//! At the end: the client history goes through the linearizability checker,
//! and replicas at the same applied index hold the same data.
//!
//! A failure carries the seed, a command that replays it and the last
//! events before it.
//!
//! ```no_run
//! use tandem::sim::{run_seed, SimOptions};
//!
//! let report = run_seed(&SimOptions { seed: 7, ..SimOptions::default() });
//! match report {
//!     Ok(stats) => println!("seed 7 passed: {stats:?}"),
//!     Err(failure) => panic!("{failure}"),
//! }
//! ```

mod world;

use std::fmt;
use std::path::PathBuf;

pub use world::run_seed;

/// A bug planted on purpose, to show the simulator catches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlantedBug {
    /// No bug.
    #[default]
    None,
    /// The log writer reports every submission durable as soon as it is
    /// handed over, before the WAL wrote and synced it (acknowledging
    /// before fsync): votes and append acknowledgements leave too early.
    AckBeforeFsync,
    /// A bug of the consensus core (needs the `planted-bugs` feature).
    #[cfg(feature = "planted-bugs")]
    Raft(tandem_raft::PlantedBug),
}

impl PlantedBug {
    /// The name `tandem sim --planted` takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::None => "none",
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            #[cfg(feature = "planted-bugs")]
            PlantedBug::Raft(tandem_raft::PlantedBug::None) => "none",
            #[cfg(feature = "planted-bugs")]
            PlantedBug::Raft(tandem_raft::PlantedBug::CountStaleVotes) => "count-stale-votes",
            #[cfg(feature = "planted-bugs")]
            PlantedBug::Raft(tandem_raft::PlantedBug::CommitOldTermByCounting) => "commit-old-term",
            #[cfg(feature = "planted-bugs")]
            PlantedBug::Raft(tandem_raft::PlantedBug::VoteForStaleLog) => "vote-for-stale-log",
        }
    }
}

/// Knobs of one simulated run. The defaults are what `tandem sim` and CI use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// The seed: every random choice of the run derives from it.
    pub seed: u64,
    /// Events to run before the final power loss (a fixed number more run
    /// after it, without faults).
    pub events: u64,
    /// Initial voters (ids `1..=replicas`); one more replica id is kept as a
    /// spare for membership changes.
    pub replicas: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Distinct keys the clients use.
    pub keys: u64,
    /// Inject faults (crashes, fsync failures, partitions, transfers,
    /// membership changes). Without, only the network is unreliable.
    pub faults: bool,
    /// A bug planted on purpose.
    pub planted: PlantedBug,
    /// Events kept for the failure trace.
    pub trace_events: usize,
    /// Where each seed's directory (sled databases, snapshots) goes (default: `/dev/shm` when it
    /// exists, else the system temp directory).
    pub sled_dir: PathBuf,
}

impl Default for SimOptions {
    fn default() -> Self {
        let shm = PathBuf::from("/dev/shm");
        SimOptions {
            seed: 0,
            events: 3_000,
            replicas: 3,
            clients: 4,
            keys: 3,
            faults: true,
            planted: PlantedBug::None,
            trace_events: 60,
            sled_dir: if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            },
        }
    }
}

/// What one passing seed did, for summaries and for tests that must see
/// progress (a run that commits nothing checks nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedStats {
    /// Events processed.
    pub events: u64,
    /// Highest commit index reached.
    pub committed: u64,
    /// Client operations that returned an answer.
    pub ops_ok: u64,
    /// Client operations that failed (no effect or unknown outcome).
    pub ops_failed: u64,
    /// Writes acknowledged to clients.
    pub acknowledged: u64,
    /// Replica crashes (including the final power loss).
    pub crashes: u64,
    /// fsync failures injected.
    pub sync_failures: u64,
    /// Membership changes applied by the leader.
    pub conf_changes: u64,
    /// Joint configurations entered (counted once, by the first replica to
    /// apply one).
    pub joint_configs: u64,
    /// Joint configurations left (counted the same way).
    pub joint_left: u64,
    /// Log compactions carried out.
    pub compactions: u64,
    /// Client operations answered after the final power loss and restart.
    pub ops_after_power_loss: u64,
    /// Snapshots built by leaders.
    pub snapshots_built: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Leader elections won.
    pub elections: u64,
}

/// A seed that broke an invariant, with what is needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// Simulated time of the failure, in microseconds.
    pub time_us: u64,
    /// What broke.
    pub violation: String,
    /// The last events before the failure, oldest first.
    pub trace: Vec<String>,
    /// A command that replays this seed.
    pub replay: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at t={}us: {}",
            self.seed, self.time_us, self.violation
        )?;
        writeln!(f, "replay: {}", self.replay)?;
        writeln!(f, "last {} events:", self.trace.len())?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// The command that replays `opts.seed` with the same options.
#[must_use]
pub fn replay_command(opts: &SimOptions) -> String {
    let features = match opts.planted {
        PlantedBug::None | PlantedBug::AckBeforeFsync => "",
        #[cfg(feature = "planted-bugs")]
        PlantedBug::Raft(_) => " --features planted-bugs",
    };
    let mut cmd = format!(
        "cargo run --release -p tandem{features} -- sim --start {} --seeds 1 --events {}",
        opts.seed, opts.events
    );
    if !opts.faults {
        cmd.push_str(" --no-faults");
    }
    if opts.planted != PlantedBug::None {
        cmd.push_str(" --planted ");
        cmd.push_str(opts.planted.name());
    }
    cmd.push_str(" --verbose");
    cmd
}
