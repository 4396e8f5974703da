//! Configuration of a replica ([`Config`]) and of an in-process cluster
//! ([`ClusterConfig`]), with documented defaults and validation.
//!
//! Every limit has a default chosen for a small cluster on one machine or a
//! LAN; [`Config::validate`] runs at open and rejects values that cannot
//! work, naming the field.

use std::time::Duration;

use tandem_snapshot::{BeforeImagesConfig, ReceiverConfig, SenderConfig, WriterConfig};

use crate::error::{Error, Result};

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Linearizable via ReadIndex: the leader confirms with one heartbeat
    /// round that it still leads, then serves the read once it has applied up
    /// to its commit index at the time of the request. The default.
    #[default]
    Linearizable,
    /// Linearizable while the leader's lease holds: no heartbeat round, but
    /// correctness relies on bounded clock drift between replicas.
    Lease,
    /// Served from this replica's state machine as it is: may miss
    /// acknowledged writes. Results say they are stale.
    Stale,
}

/// When the WAL forces its writes to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` every group commit before acknowledging it. The default:
    /// an acknowledged write survives a power loss of a minority.
    #[default]
    Always,
    /// Never sync (tests and benchmarks of the rest of the stack only).
    Never,
}

/// Configuration of one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// This replica's id; non-zero and unique in the cluster.
    pub id: u64,
    /// Identifies the cluster; messages carrying another cluster id are
    /// dropped (and counted), so two clusters sharing a network cannot mix.
    /// Default 1.
    pub cluster_id: u64,
    /// Real time per raft tick. Default 10 ms.
    pub tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns; the actual
    /// timeout is randomised in `[election_ticks, 2 * election_ticks)`.
    /// Default 20 (200-400 ms with the default tick).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats; must be below `election_ticks`.
    /// Default 3.
    pub heartbeat_ticks: usize,
    /// Seed of the consensus core's election randomness; 0 derives one from `id`.
    pub seed: u64,
    /// Longest key accepted. Default 4 KiB.
    pub max_key_bytes: usize,
    /// Longest value accepted. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Most operations in one `apply_batch`. Default 10 000.
    pub max_batch_ops: usize,
    /// Most bytes (keys + values) in one proposal. Default 8 MiB.
    pub max_proposal_bytes: usize,
    /// Most bytes of entries in one append message. Default 1 MiB.
    pub max_size_per_msg_bytes: u64,
    /// Most append messages in flight to one follower. Default 256.
    pub max_inflight_msgs: usize,
    /// Most bytes of proposed-but-uncommitted entries on a leader. Default 64 MiB.
    pub max_uncommitted_bytes: u64,
    /// Most client requests (writes and reads) waiting on this replica;
    /// more get [`Error::Overloaded`]. Default 100 000.
    pub max_pending_requests: usize,
    /// Longest a request waits inside the replica before it completes with
    /// [`Error::Timeout`]. Default 10 s.
    pub request_timeout: Duration,
    /// Most committed entries handed to the apply thread in one batch
    /// (applied as one sled batch). Default 4096.
    pub max_apply_batch_entries: usize,
    /// When the WAL syncs. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Size of each WAL segment file; compaction deletes whole segments, so
    /// this is the granularity at which the log's disk space shrinks. At
    /// least twice `max_proposal_bytes` plus 64 KiB. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Pre-vote: a partitioned replica does not inflate terms. Default on.
    pub pre_vote: bool,
    /// Check-quorum: a leader that loses contact with a quorum for an
    /// election timeout steps down; needed for lease reads. Default on.
    pub check_quorum: bool,
    /// Log compaction and snapshots.
    pub snapshot: SnapshotConfig,
    /// The sled state machine: page cache, sled's own flush interval, and
    /// how many applied writes are held in memory before they are written
    /// to sled (write-behind; `write_behind_entries: 0` writes each apply
    /// through). Defaults: [`crate::sm::SmOptions::default`].
    pub state_machine: crate::sm::SmOptions,
    /// A known bug planted in the consensus core, so a test can show the
    /// simulator catches it. Only with the `planted-bugs` feature (tests).
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub planted_bug: tandem_raft::PlantedBug,
}

/// When the log is compacted, and how snapshots are built and sent.
///
/// The log is compacted up to the state machine's *durable* applied index
/// (flushed and fsynced), never beyond: after a power loss sled may come
/// back at that index and every later entry must still be in the log. A
/// leader keeps the entries a follower being sent a snapshot will need after
/// it, and those a replicating or probing follower still needs, but the
/// latter only down to `lag_entries_max` below the durable index and
/// `lag_bytes_max` bytes of log: a follower further behind is sent a
/// snapshot instead. (A follower that
/// takes longer to install a snapshot than the cluster takes to write
/// `lag_entries_max` entries needs another one: keep the bound well above
/// a snapshot's worth of writes.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Compact once this many durable applied entries are in the log.
    /// Default 10 000.
    pub compact_log_entries: u64,
    /// ... or once this many bytes of entries (`Entry::size_bytes`) were
    /// appended since the last compaction (counting those it left after the
    /// durable index, which a slow flush held back). Default 64 MiB.
    pub compact_log_bytes: u64,
    /// Entries below the durable applied index kept for a lagging follower,
    /// at most. Default 50 000. A follower back from a snapshot is not held
    /// to it until it first comes within both bounds (see `lag_bytes_max`).
    pub lag_entries_max: u64,
    /// ... and bytes of log (`Entry::size_bytes` of the entries after the
    /// follower's index, counted per persisted batch) kept for it, at most:
    /// with large entries the entry bound alone could keep gigabytes.
    /// Default 512 MiB; at least 4096. For a follower back from a snapshot,
    /// which replays what was written during the transfer, twice this is
    /// kept until it first comes within the bounds (otherwise a transfer
    /// slower than writing past the bounds would need snapshot after
    /// snapshot).
    pub lag_bytes_max: u64,
    /// How snapshots are cut into chunks (default 1 MiB chunks).
    pub writer: WriterConfig,
    /// Window, retransmission and patience of a sending leader (in ticks).
    pub sender: SenderConfig,
    /// Patience of a receiving follower (in ticks).
    pub receiver: ReceiverConfig,
    /// Bound of the before-images recorded while a snapshot is built
    /// (default 64 MiB); a build that would exceed it fails and is retried.
    pub before_images: BeforeImagesConfig,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            compact_log_entries: 10_000,
            compact_log_bytes: 64 << 20,
            lag_entries_max: 50_000,
            lag_bytes_max: 512 << 20,
            writer: WriterConfig::default(),
            sender: SenderConfig::default(),
            receiver: ReceiverConfig::default(),
            before_images: BeforeImagesConfig::default(),
        }
    }
}

impl SnapshotConfig {
    /// Check every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.compact_log_entries == 0 {
            return Err(Error::Config(
                "snapshot.compact_log_entries must be at least 1".into(),
            ));
        }
        if self.compact_log_bytes < 4096 {
            return Err(Error::Config(format!(
                "snapshot.compact_log_bytes must be at least 4096, got {}",
                self.compact_log_bytes
            )));
        }
        if self.lag_bytes_max < 4096 {
            return Err(Error::Config(format!(
                "snapshot.lag_bytes_max must be at least 4096, got {}",
                self.lag_bytes_max
            )));
        }
        let sub = |what: &str, r: tandem_snapshot::Result<()>| {
            r.map_err(|e| Error::Config(format!("snapshot.{what}: {e}")))
        };
        sub("writer", self.writer.validate())?;
        sub("sender", self.sender.validate())?;
        sub("receiver", self.receiver.validate())?;
        if self.before_images.prune_every_steps == 0 {
            return Err(Error::Config(
                "snapshot.before_images.prune_every_steps must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The defaults for replica `id`.
    #[must_use]
    pub fn new(id: u64) -> Self {
        Config {
            id,
            ..Config::default()
        }
    }

    /// The seed actually used for the consensus core.
    #[must_use]
    pub fn effective_seed(&self) -> u64 {
        if self.seed == 0 {
            // A fixed odd multiplier spreads small ids over the seed space.
            self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
        } else {
            self.seed
        }
    }

    /// The election timeout in real time (lower bound).
    #[must_use]
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * u32::try_from(self.election_ticks).unwrap_or(u32::MAX)
    }

    /// Check every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field and why.
    pub fn validate(&self) -> Result<()> {
        fn bad(msg: String) -> Result<()> {
            Err(Error::Config(msg))
        }
        if self.id == 0 {
            return bad("id must be non-zero (0 means \"no node\" in raft)".into());
        }
        if self.cluster_id == 0 {
            return bad("cluster_id must be non-zero".into());
        }
        if self.tick_interval < Duration::from_millis(1)
            || self.tick_interval > Duration::from_secs(10)
        {
            return bad(format!(
                "tick_interval must be within 1 ms..=10 s, got {:?}",
                self.tick_interval
            ));
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks must be at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return bad(format!(
                "election_ticks ({}) must exceed heartbeat_ticks ({})",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 1 << 20 {
            return bad(format!(
                "max_key_bytes must be within 1..=1 MiB, got {}",
                self.max_key_bytes
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return bad(format!(
                "max_value_bytes must be within 1..=64 MiB, got {}",
                self.max_value_bytes
            ));
        }
        if self.max_proposal_bytes < self.max_key_bytes + self.max_value_bytes {
            return bad(format!(
                "max_proposal_bytes ({}) must hold at least one maximal key and value ({})",
                self.max_proposal_bytes,
                self.max_key_bytes + self.max_value_bytes
            ));
        }
        if (self.max_uncommitted_bytes as usize) < self.max_proposal_bytes {
            return bad(format!(
                "max_uncommitted_bytes ({}) must be at least max_proposal_bytes ({})",
                self.max_uncommitted_bytes, self.max_proposal_bytes
            ));
        }
        if self.max_batch_ops == 0 {
            return bad("max_batch_ops must be at least 1".into());
        }
        if self.max_size_per_msg_bytes == 0 {
            return bad("max_size_per_msg_bytes must be at least 1".into());
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be at least 1".into());
        }
        if self.max_pending_requests == 0 {
            return bad("max_pending_requests must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive".into());
        }
        if self.max_apply_batch_entries == 0 {
            return bad("max_apply_batch_entries must be at least 1".into());
        }
        if self.wal_segment_bytes < 2 * self.max_proposal_bytes as u64 + (64 << 10)
            || self.wal_segment_bytes > u64::from(u32::MAX)
        {
            return bad(format!(
                "wal_segment_bytes ({}) must be within 2 * max_proposal_bytes + 64 KiB ..= 4 GiB",
                self.wal_segment_bytes
            ));
        }
        self.state_machine
            .validate()
            .map_err(|e| Error::Config(format!("state_machine: {e}")))?;
        self.snapshot.validate()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 1,
            cluster_id: 1,
            tick_interval: Duration::from_millis(10),
            election_ticks: 20,
            heartbeat_ticks: 3,
            seed: 0,
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
            max_batch_ops: 10_000,
            max_proposal_bytes: 8 << 20,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_bytes: 64 << 20,
            max_pending_requests: 100_000,
            request_timeout: Duration::from_secs(10),
            max_apply_batch_entries: 4096,
            sync: SyncPolicy::Always,
            wal_segment_bytes: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            snapshot: SnapshotConfig::default(),
            state_machine: crate::sm::SmOptions::default(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: tandem_raft::PlantedBug::None,
        }
    }
}

/// Configuration of an in-process cluster ([`crate::Cluster`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// How many replicas (ids `1..=replicas`) the cluster starts with. Default 3.
    pub replicas: u64,
    /// The template every replica's [`Config`] is made from (its `id` is replaced).
    pub node: Config,
    /// How long a [`crate::Db`] call keeps retrying across leader changes
    /// before it gives up. Default 10 s.
    pub client_deadline: Duration,
}

impl ClusterConfig {
    /// Defaults with `replicas` replicas.
    #[must_use]
    pub fn with_replicas(replicas: u64) -> Self {
        ClusterConfig {
            replicas,
            ..ClusterConfig::default()
        }
    }

    /// Check every field, including the node template.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.replicas == 0 || self.replicas > 64 {
            return Err(Error::Config(format!(
                "replicas must be within 1..=64, got {}",
                self.replicas
            )));
        }
        if self.client_deadline.is_zero() {
            return Err(Error::Config("client_deadline must be positive".into()));
        }
        self.node.validate()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replicas: 3,
            node: Config::default(),
            client_deadline: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        ClusterConfig::default().validate().unwrap();
        assert_eq!(
            Config::default().election_timeout(),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn bad_values_are_rejected_naming_the_field() {
        type Mutation = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("id", Box::new(|c| c.id = 0)),
            ("cluster_id", Box::new(|c| c.cluster_id = 0)),
            (
                "tick_interval",
                Box::new(|c| c.tick_interval = Duration::ZERO),
            ),
            ("heartbeat_ticks", Box::new(|c| c.heartbeat_ticks = 0)),
            ("election_ticks", Box::new(|c| c.election_ticks = 3)),
            ("max_key_bytes", Box::new(|c| c.max_key_bytes = 0)),
            (
                "max_value_bytes",
                Box::new(|c| c.max_value_bytes = 100 << 20),
            ),
            (
                "max_proposal_bytes",
                Box::new(|c| c.max_proposal_bytes = 10),
            ),
            (
                "max_uncommitted_bytes",
                Box::new(|c| c.max_uncommitted_bytes = 1),
            ),
            ("max_batch_ops", Box::new(|c| c.max_batch_ops = 0)),
            (
                "wal_segment_bytes",
                Box::new(|c| c.wal_segment_bytes = 4096),
            ),
            ("max_inflight_msgs", Box::new(|c| c.max_inflight_msgs = 0)),
            (
                "max_pending_requests",
                Box::new(|c| c.max_pending_requests = 0),
            ),
            (
                "request_timeout",
                Box::new(|c| c.request_timeout = Duration::ZERO),
            ),
            (
                "compact_log_entries",
                Box::new(|c| c.snapshot.compact_log_entries = 0),
            ),
            ("cache_bytes", Box::new(|c| c.state_machine.cache_bytes = 1)),
            (
                "compact_log_bytes",
                Box::new(|c| c.snapshot.compact_log_bytes = 1),
            ),
            (
                "lag_bytes_max",
                Box::new(|c| c.snapshot.lag_bytes_max = 100),
            ),
            (
                "snapshot.writer",
                Box::new(|c| c.snapshot.writer.chunk_bytes = 1),
            ),
            (
                "snapshot.sender",
                Box::new(|c| c.snapshot.sender.window_chunks = 0),
            ),
            (
                "snapshot.receiver",
                Box::new(|c| c.snapshot.receiver.idle_timeout_ticks = 0),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let mut cc = ClusterConfig::with_replicas(0);
        assert!(cc.validate().unwrap_err().to_string().contains("replicas"));
        cc.replicas = 3;
        cc.node.election_ticks = 1;
        assert!(cc
            .validate()
            .unwrap_err()
            .to_string()
            .contains("election_ticks"));
    }

    #[test]
    fn seeds_differ_per_node_unless_set() {
        assert_ne!(
            Config::new(1).effective_seed(),
            Config::new(2).effective_seed()
        );
        let c = Config {
            seed: 42,
            ..Config::new(7)
        };
        assert_eq!(c.effective_seed(), 42);
    }
}
