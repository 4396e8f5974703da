//! Raft safety invariants as functions over plain observations.
//!
//! The simulator observes every replica after every step and turns what it
//! sees into [`ReplicaView`]s: term, leadership, the log as `(index, term,
//! hash)` triples, commit and apply positions. The functions here check the
//! properties of the Raft paper (§5.2–§5.4, Figure 3) and of the design
//! brief over that plain data, so they do not depend on how a replica is
//! built and can be unit-tested with hand-written violations:
//!
//! * election safety — at most one leader per term ([`check_election_safety`]);
//! * log matching — two logs holding an entry with the same index and term
//!   are identical up to it ([`check_log_matching`]);
//! * leader completeness — a leader holds every entry committed in an
//!   earlier term ([`check_leader_completeness`]);
//! * state-machine safety — no two replicas apply different commands at one
//!   index ([`check_state_machine_safety`]);
//! * `applied ≤ committed ≤ last` ([`check_progress`]);
//! * durability — an acknowledged write is held by a quorum of voters, even
//!   after crashes ([`check_durability`]).
//!
//! [`InvariantChecker`] accumulates what must be remembered across steps
//! (leaders seen per term, committed and applied entries, acknowledged
//! writes) and runs all checks on each new observation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use tandem_raft::{Entry, EntryType, Storage};

/// One log entry as the checks see it: position, term, and a hash of its
/// command (type, data and context), so equal hashes stand for equal entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    /// Log index (the first entry ever is 1).
    pub index: u64,
    /// The term the entry was created in.
    pub term: u64,
    /// Hash of the entry's contents.
    pub hash: u64,
}

impl EntryId {
    /// The identity of a raft entry: its index, term, and a hash of its type,
    /// data and context. The hash is FNV-1a, written out here so it is the
    /// same on every platform and Rust version (a failing seed must replay
    /// to the same report).
    #[must_use]
    pub fn of(entry: &Entry) -> EntryId {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let kind: u8 = match entry.entry_type {
            EntryType::EntryNormal => 0,
            EntryType::EntryConfChange => 1,
            EntryType::EntryConfChangeV2 => 2,
        };
        let mut hash = FNV_OFFSET;
        let data_len = (entry.data.len() as u64).to_le_bytes();
        let parts: [&[u8]; 4] = [&[kind], &data_len, &entry.data, &entry.context];
        for byte in parts.into_iter().flatten() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        EntryId {
            index: entry.index,
            term: entry.term,
            hash,
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{:016x}", self.index, self.term, self.hash)
    }
}

/// What the simulator observed of one replica at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaView {
    /// The replica's id.
    pub id: u64,
    /// Its current term.
    pub term: u64,
    /// True if it believes it leads `term`.
    pub is_leader: bool,
    /// Entries up to this index were compacted into a snapshot (0: none).
    pub snapshot_index: u64,
    /// Term of the entry at `snapshot_index` (0 if none).
    pub snapshot_term: u64,
    /// The log after the snapshot: indexes `snapshot_index + 1 ..= last`,
    /// in order.
    pub log: Vec<EntryId>,
    /// Highest index it knows committed.
    pub committed: u64,
    /// Highest index its state machine applied.
    pub applied: u64,
}

impl ReplicaView {
    /// Fills `snapshot_index`, `snapshot_term` and `log` from a raft
    /// [`Storage`] (the engine's disk storage, or `MemStorage`), keeping the
    /// other fields. For durability checks after a crash, pass the storage
    /// as recovered from disk.
    ///
    /// # Errors
    /// Whatever the storage returns when reading its entries.
    pub fn with_log_from(mut self, storage: &impl Storage) -> tandem_raft::Result<Self> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        self.snapshot_index = first - 1;
        self.snapshot_term = storage.term(first - 1)?;
        self.log = if last >= first {
            storage
                .entries(first, last + 1, None)?
                .iter()
                .map(EntryId::of)
                .collect()
        } else {
            Vec::new()
        };
        Ok(self)
    }

    /// Index of the last entry (the snapshot index if the log is empty).
    #[must_use]
    pub fn last_index(&self) -> u64 {
        self.log.last().map_or(self.snapshot_index, |e| e.index)
    }

    /// The entry at `index`, if the log holds it (not compacted, not beyond the end).
    #[must_use]
    pub fn entry(&self, index: u64) -> Option<EntryId> {
        let offset = index.checked_sub(self.snapshot_index + 1)?;
        let entry = *self.log.get(usize::try_from(offset).ok()?)?;
        Some(entry)
    }

    /// True if the replica holds `entry`: in its log, or compacted into its
    /// snapshot (a snapshot holds the applied effect of every entry up to
    /// its index; the term is checked at the snapshot index itself).
    #[must_use]
    pub fn holds(&self, entry: &EntryId) -> bool {
        if entry.index < self.snapshot_index {
            return true;
        }
        if entry.index == self.snapshot_index {
            return entry.term == self.snapshot_term;
        }
        self.entry(entry.index) == Some(*entry)
    }
}

/// A broken invariant, with what is needed to understand it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A view is internally inconsistent (gaps, terms going down, ...).
    MalformedLog {
        /// The replica.
        replica: u64,
        /// What is wrong.
        reason: String,
    },
    /// Two replicas led the same term.
    ElectionSafety {
        /// The term.
        term: u64,
        /// The two leaders.
        leaders: [u64; 2],
    },
    /// Two logs agree on an entry's index and term but differ before it or
    /// in the entry itself.
    LogMatching {
        /// The two replicas.
        replicas: [u64; 2],
        /// The highest index where their terms agree.
        matching_index: u64,
        /// The index where they differ.
        differing: [EntryId; 2],
    },
    /// A leader lacks an entry committed before its term.
    LeaderCompleteness {
        /// The leader.
        leader: u64,
        /// Its term.
        term: u64,
        /// The committed entry it lacks.
        missing: EntryId,
    },
    /// A replica reports as committed an entry different from one already
    /// seen committed at the same index.
    CommittedEntryChanged {
        /// The replica.
        replica: u64,
        /// What was committed at the index before.
        before: EntryId,
        /// What the replica now holds there.
        now: EntryId,
    },
    /// Two replicas applied different entries at the same index.
    StateMachineSafety {
        /// The replicas, in the order they applied.
        replicas: [u64; 2],
        /// What each applied.
        entries: [EntryId; 2],
    },
    /// `applied <= committed <= last` does not hold.
    Progress {
        /// The replica.
        replica: u64,
        /// Its applied index.
        applied: u64,
        /// Its commit index.
        committed: u64,
        /// Its last log index.
        last: u64,
    },
    /// An acknowledged write is not held by a quorum of voters.
    Durability {
        /// The acknowledged entry.
        entry: EntryId,
        /// The voters still holding it.
        holders: Vec<u64>,
        /// How many are needed.
        quorum: usize,
    },
    /// An acknowledged write is lacked by a quorum of a joint configuration:
    /// by a quorum of its incoming voters and one of its outgoing voters.
    JointDurability {
        /// The acknowledged entry.
        entry: EntryId,
        /// The incoming voters, and those of them holding it.
        incoming: (Vec<u64>, Vec<u64>),
        /// The outgoing voters, and those of them holding it.
        outgoing: (Vec<u64>, Vec<u64>),
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::MalformedLog { replica, reason } => {
                write!(f, "malformed view of replica {replica}: {reason}")
            }
            Violation::ElectionSafety { term, leaders } => write!(
                f,
                "election safety: replicas {} and {} both lead term {term}",
                leaders[0], leaders[1]
            ),
            Violation::LogMatching {
                replicas,
                matching_index,
                differing,
            } => write!(
                f,
                "log matching: replicas {} and {} agree on the term at index {matching_index} \
                 but hold {} and {}",
                replicas[0], replicas[1], differing[0], differing[1]
            ),
            Violation::LeaderCompleteness {
                leader,
                term,
                missing,
            } => write!(
                f,
                "leader completeness: leader {leader} of term {term} lacks committed entry {missing}"
            ),
            Violation::CommittedEntryChanged {
                replica,
                before,
                now,
            } => write!(
                f,
                "committed entry changed: {before} was committed, replica {replica} now has {now}"
            ),
            Violation::StateMachineSafety { replicas, entries } => write!(
                f,
                "state-machine safety: replica {} applied {} but replica {} applied {}",
                replicas[0], entries[0], replicas[1], entries[1]
            ),
            Violation::Progress {
                replica,
                applied,
                committed,
                last,
            } => write!(
                f,
                "replica {replica}: applied {applied} <= committed {committed} <= last {last} \
                 does not hold"
            ),
            Violation::Durability {
                entry,
                holders,
                quorum,
            } => write!(
                f,
                "durability: acknowledged {entry} is held by voters {holders:?} only, \
                 fewer than the {quorum} needed"
            ),
            Violation::JointDurability {
                entry,
                incoming,
                outgoing,
            } => write!(
                f,
                "durability: acknowledged {entry} is held only by {:?} of the incoming voters \
                 {:?} and {:?} of the outgoing voters {:?}: a joint quorum lacks it",
                incoming.1, incoming.0, outgoing.1, outgoing.0
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// Checks that a view is well formed: log indexes contiguous from
/// `snapshot_index + 1`, terms non-decreasing from `snapshot_term` and not
/// above the replica's term.
///
/// # Errors
/// [`Violation::MalformedLog`] naming the first problem.
pub fn check_log_shape(view: &ReplicaView) -> Result<(), Violation> {
    let malformed = |reason: String| Violation::MalformedLog {
        replica: view.id,
        reason,
    };
    let mut prev_term = view.snapshot_term;
    for (offset, entry) in view.log.iter().enumerate() {
        let expected = view.snapshot_index + 1 + offset as u64;
        if entry.index != expected {
            return Err(malformed(format!(
                "entry {entry} where index {expected} was expected"
            )));
        }
        if entry.term < prev_term {
            return Err(malformed(format!(
                "entry {entry} has a lower term than the entry before it ({prev_term})"
            )));
        }
        if entry.term > view.term {
            return Err(malformed(format!(
                "entry {entry} is from a term after the replica's term {}",
                view.term
            )));
        }
        prev_term = entry.term;
    }
    Ok(())
}

/// Checks `applied <= committed <= last index` for one replica.
///
/// # Errors
/// [`Violation::Progress`] if it does not hold.
pub fn check_progress(view: &ReplicaView) -> Result<(), Violation> {
    let last = view.last_index();
    if view.applied <= view.committed && view.committed <= last {
        Ok(())
    } else {
        Err(Violation::Progress {
            replica: view.id,
            applied: view.applied,
            committed: view.committed,
            last,
        })
    }
}

/// Checks that no term had two leaders, over every `(term, leader)` pair
/// ever observed (the same pair may appear many times).
///
/// # Errors
/// [`Violation::ElectionSafety`] for the first term with two leaders.
pub fn check_election_safety(
    observations: impl IntoIterator<Item = (u64, u64)>,
) -> Result<(), Violation> {
    let mut leaders: HashMap<u64, u64> = HashMap::new();
    for (term, leader) in observations {
        let first = *leaders.entry(term).or_insert(leader);
        if first != leader {
            return Err(Violation::ElectionSafety {
                term,
                leaders: [first, leader],
            });
        }
    }
    Ok(())
}

/// Checks the log matching property between two logs: if both hold an
/// entry with the same index and term, the entries are identical and so are
/// all entries before it (as far as both still hold them).
///
/// # Errors
/// [`Violation::LogMatching`] naming the highest agreeing index and an
/// index at or below it where the logs differ.
pub fn check_log_matching(a: &ReplicaView, b: &ReplicaView) -> Result<(), Violation> {
    let low = a.snapshot_index.max(b.snapshot_index) + 1;
    let high = a.last_index().min(b.last_index());
    // The highest index both hold with equal terms; everything at or below
    // it must be identical.
    let Some(matching_index) = (low..=high).rev().find(|&i| {
        let (x, y) = (a.entry(i), b.entry(i));
        x.zip(y).is_some_and(|(x, y)| x.term == y.term)
    }) else {
        return Ok(());
    };
    for i in (low..=matching_index).rev() {
        let (x, y) = (
            a.entry(i).expect("index within a's log"),
            b.entry(i).expect("index within b's log"),
        );
        if x != y {
            return Err(Violation::LogMatching {
                replicas: [a.id, b.id],
                matching_index,
                differing: [x, y],
            });
        }
    }
    Ok(())
}

/// A committed entry and the highest term observed anywhere when it was
/// first seen committed: every leader of a later term must hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// The entry.
    pub entry: EntryId,
    /// The highest term observed when it was first seen committed; it was
    /// committed in this term or an earlier one.
    pub known_in_term: u64,
}

/// Checks that `leader` holds every entry committed before its term.
/// Views that do not lead are ignored.
///
/// # Errors
/// [`Violation::LeaderCompleteness`] naming a missing entry.
pub fn check_leader_completeness<'a>(
    committed: impl IntoIterator<Item = &'a CommittedEntry>,
    leader: &ReplicaView,
) -> Result<(), Violation> {
    if !leader.is_leader {
        return Ok(());
    }
    for c in committed {
        if c.known_in_term < leader.term && !leader.holds(&c.entry) {
            return Err(Violation::LeaderCompleteness {
                leader: leader.id,
                term: leader.term,
                missing: c.entry,
            });
        }
    }
    Ok(())
}

/// Checks that no two replicas applied different entries at one index, over
/// every `(replica, applied entry)` pair.
///
/// # Errors
/// [`Violation::StateMachineSafety`] for the first conflicting pair.
pub fn check_state_machine_safety(
    applied: impl IntoIterator<Item = (u64, EntryId)>,
) -> Result<(), Violation> {
    let mut first: HashMap<u64, (u64, EntryId)> = HashMap::new();
    for (replica, entry) in applied {
        let (first_replica, first_entry) = *first.entry(entry.index).or_insert((replica, entry));
        if first_entry != entry {
            return Err(Violation::StateMachineSafety {
                replicas: [first_replica, replica],
                entries: [first_entry, entry],
            });
        }
    }
    Ok(())
}

/// Checks that every acknowledged write is held ([`ReplicaView::holds`])
/// by a majority of `voters`. `views` should reflect durable state: after a
/// crash, what the replica recovered, not what it had in memory. Voters
/// without a view count as not holding anything.
///
/// Pass the configuration the write was acknowledged under; during a
/// membership change check both the outgoing and the incoming voters.
///
/// # Errors
/// [`Violation::Durability`] for the first write held by too few voters.
pub fn check_durability(
    acknowledged: &[EntryId],
    views: &[ReplicaView],
    voters: &[u64],
) -> Result<(), Violation> {
    check_held_by(acknowledged, views, voters, voters.len() / 2 + 1)
}

/// Checks that no quorum of `voters` lacks an acknowledged write: each is
/// held by at least `n - q + 1` of the `n` voters (quorum `q`), so every
/// quorum — and hence every election winner's voters — includes a holder.
/// This is what Raft guarantees right after a membership change, where the
/// new configuration may hold a committed entry on fewer than a quorum of
/// its voters (e.g. two of four after adding a fourth voter).
///
/// # Errors
/// [`Violation::Durability`] for the first write held by too few voters.
pub fn check_no_quorum_lacks(
    acknowledged: &[EntryId],
    views: &[ReplicaView],
    voters: &[u64],
) -> Result<(), Violation> {
    let n = voters.len();
    check_held_by(acknowledged, views, voters, n - (n / 2 + 1) + 1)
}

/// [`check_no_quorum_lacks`] for a configuration that may be joint. A quorum
/// of a joint configuration is a majority of `incoming` together with a
/// majority of `outgoing`, so a write is exposed only if both sets have a
/// quorum that lacks it. With `outgoing` empty (not joint) this is
/// `check_no_quorum_lacks(incoming)`.
///
/// # Errors
/// [`Violation::Durability`] (not joint) or [`Violation::JointDurability`]
/// for the first write that a quorum of the configuration lacks.
pub fn check_no_joint_quorum_lacks(
    acknowledged: &[EntryId],
    views: &[ReplicaView],
    incoming: &[u64],
    outgoing: &[u64],
) -> Result<(), Violation> {
    if outgoing.is_empty() {
        return check_no_quorum_lacks(acknowledged, views, incoming);
    }
    for entry in acknowledged {
        let one = std::slice::from_ref(entry);
        if let (
            Err(Violation::Durability { holders: i, .. }),
            Err(Violation::Durability { holders: o, .. }),
        ) = (
            check_no_quorum_lacks(one, views, incoming),
            check_no_quorum_lacks(one, views, outgoing),
        ) {
            return Err(Violation::JointDurability {
                entry: *entry,
                incoming: (incoming.to_vec(), i),
                outgoing: (outgoing.to_vec(), o),
            });
        }
    }
    Ok(())
}

fn check_held_by(
    acknowledged: &[EntryId],
    views: &[ReplicaView],
    voters: &[u64],
    needed: usize,
) -> Result<(), Violation> {
    for entry in acknowledged {
        let holders: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|id| views.iter().any(|v| v.id == *id && v.holds(entry)))
            .collect();
        if holders.len() < needed {
            return Err(Violation::Durability {
                entry: *entry,
                holders,
                quorum: needed,
            });
        }
    }
    Ok(())
}

/// Runs every check on each observation and remembers across steps what
/// the checks need: leaders per term, committed entries (with the term in
/// which they were first seen committed), applied entries, acknowledged writes.
///
/// Memory grows with the log; long runs call
/// [`InvariantChecker::forget_below`] with an index every replica has
/// applied and snapshotted.
#[derive(Clone, Debug, Default)]
pub struct InvariantChecker {
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, CommittedEntry>,
    applied: BTreeMap<u64, (u64, EntryId)>,
    acknowledged: Vec<EntryId>,
    max_term: u64,
    observations_total: u64,
}

impl InvariantChecker {
    /// A checker that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one observation of (some of) the replicas: each view's shape
    /// and progress, election safety against every leader seen before, log
    /// matching between every pair, committed entries never changing, and
    /// leader completeness; then records the newly committed entries.
    ///
    /// # Errors
    /// The first [`Violation`] found.
    pub fn observe(&mut self, views: &[ReplicaView]) -> Result<(), Violation> {
        self.observations_total += 1;
        for view in views {
            check_log_shape(view)?;
            check_progress(view)?;
            self.max_term = self.max_term.max(view.term);
            if view.is_leader {
                self.record_leader(view.term, view.id)?;
            }
        }
        for (i, a) in views.iter().enumerate() {
            for b in &views[i + 1..] {
                check_log_matching(a, b)?;
            }
        }
        for view in views {
            check_leader_completeness(self.committed.values(), view)?;
        }
        // Record what is committed now, after checking the leaders against
        // what was committed before: an entry first seen committed in this
        // observation is known in the current highest term.
        for view in views {
            let low = view.snapshot_index + 1;
            for index in low..=view.committed {
                let entry = view
                    .entry(index)
                    .expect("check_progress: committed <= last index");
                match self.committed.get(&index) {
                    Some(c) if c.entry != entry => {
                        return Err(Violation::CommittedEntryChanged {
                            replica: view.id,
                            before: c.entry,
                            now: entry,
                        });
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(
                            index,
                            CommittedEntry {
                                entry,
                                known_in_term: self.max_term,
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that `leader` claims to lead `term` (for replicas whose log
    /// cannot be observed right now), checking election safety.
    ///
    /// # Errors
    /// [`Violation::ElectionSafety`] if another replica led `term`.
    pub fn record_leader(&mut self, term: u64, leader: u64) -> Result<(), Violation> {
        let first = *self.leaders.entry(term).or_insert(leader);
        if first != leader {
            return Err(Violation::ElectionSafety {
                term,
                leaders: [first, leader],
            });
        }
        Ok(())
    }

    /// Records that `replica` applied `entry`, checking it against what any
    /// replica applied at that index before.
    ///
    /// # Errors
    /// [`Violation::StateMachineSafety`] on a conflict.
    pub fn record_applied(&mut self, replica: u64, entry: EntryId) -> Result<(), Violation> {
        let (first_replica, first_entry) =
            *self.applied.entry(entry.index).or_insert((replica, entry));
        if first_entry != entry {
            return Err(Violation::StateMachineSafety {
                replicas: [first_replica, replica],
                entries: [first_entry, entry],
            });
        }
        Ok(())
    }

    /// Records that a client was told `entry` was written.
    pub fn record_acknowledged(&mut self, entry: EntryId) {
        self.acknowledged.push(entry);
    }

    /// Checks every acknowledged write against durable views (see
    /// [`check_durability`]).
    ///
    /// # Errors
    /// [`Violation::Durability`] for the first write held by too few voters.
    pub fn check_durability(&self, views: &[ReplicaView], voters: &[u64]) -> Result<(), Violation> {
        check_durability(&self.acknowledged, views, voters)
    }

    /// Checks every acknowledged write against durable views with
    /// [`check_no_joint_quorum_lacks`] (`outgoing` empty unless the
    /// configuration is joint).
    ///
    /// # Errors
    /// [`Violation::Durability`] or [`Violation::JointDurability`] for the
    /// first write a quorum lacks.
    pub fn check_no_quorum_lacks(
        &self,
        views: &[ReplicaView],
        incoming: &[u64],
        outgoing: &[u64],
    ) -> Result<(), Violation> {
        check_no_joint_quorum_lacks(&self.acknowledged, views, incoming, outgoing)
    }

    /// Forgets committed, applied and acknowledged entries below `index`,
    /// to bound memory. Only call it with an index every replica has
    /// compacted: their views no longer hold those entries either.
    pub fn forget_below(&mut self, index: u64) {
        self.committed = self.committed.split_off(&index);
        self.applied = self.applied.split_off(&index);
        self.acknowledged.retain(|e| e.index >= index);
    }

    /// Number of [`observe`](Self::observe) calls so far.
    #[must_use]
    pub fn observations_total(&self) -> u64 {
        self.observations_total
    }

    /// Number of committed entries remembered.
    #[must_use]
    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u64, term: u64) -> EntryId {
        EntryId {
            index,
            term,
            hash: index * 1000 + term,
        }
    }

    /// A replica holding entries with the given terms from index 1.
    fn view(id: u64, term: u64, terms: &[u64], committed: u64) -> ReplicaView {
        ReplicaView {
            id,
            term,
            is_leader: false,
            snapshot_index: 0,
            snapshot_term: 0,
            log: terms
                .iter()
                .enumerate()
                .map(|(i, &t)| e(i as u64 + 1, t))
                .collect(),
            committed,
            applied: committed,
        }
    }

    fn leader(mut v: ReplicaView) -> ReplicaView {
        v.is_leader = true;
        v
    }

    #[test]
    fn healthy_cluster_passes_every_check() {
        let mut checker = InvariantChecker::new();
        let views = [
            leader(view(1, 2, &[1, 1, 2, 2], 3)),
            view(2, 2, &[1, 1, 2], 3),
            view(3, 2, &[1, 1], 2),
        ];
        checker.observe(&views).expect("healthy");
        for v in &views {
            for i in 1..=v.applied {
                checker
                    .record_applied(v.id, v.entry(i).unwrap())
                    .expect("same entries");
            }
        }
        checker.record_acknowledged(e(3, 2));
        checker
            .check_durability(&views, &[1, 2, 3])
            .expect("on 2 of 3");
        // Next term: replica 2 leads, still holding every committed entry.
        let views = [
            view(1, 3, &[1, 1, 2, 2], 3),
            leader(view(2, 3, &[1, 1, 2, 3], 4)),
        ];
        checker.observe(&views).expect("healthy after an election");
        assert_eq!(checker.observations_total(), 2);
        assert_eq!(checker.committed_len(), 4);
    }

    #[test]
    fn catches_two_leaders_in_one_term() {
        let mut checker = InvariantChecker::new();
        checker.observe(&[leader(view(1, 5, &[], 0))]).unwrap();
        // A later observation of another leader in the same term.
        let err = checker.observe(&[leader(view(2, 5, &[], 0))]).unwrap_err();
        assert_eq!(
            err,
            Violation::ElectionSafety {
                term: 5,
                leaders: [1, 2]
            }
        );
        assert!(check_election_safety([(1, 1), (2, 2), (1, 1)]).is_ok());
        checker.record_leader(6, 1).unwrap();
        assert!(checker.record_leader(6, 3).is_err());
        assert!(check_election_safety([(1, 1), (2, 2), (2, 3)]).is_err());
    }

    #[test]
    fn catches_log_matching_violations() {
        // Same entry at index 3 and term 2, different entry at index 2.
        let a = view(1, 2, &[1, 1, 2], 0);
        let mut b = view(2, 2, &[1, 1, 2], 0);
        b.log[1].hash ^= 1;
        let err = check_log_matching(&a, &b).unwrap_err();
        assert!(
            matches!(err, Violation::LogMatching { matching_index: 3, differing, .. } if differing[0].index == 2),
            "{err}"
        );
        // Same index and term, different contents.
        let mut c = view(3, 2, &[1, 1, 2], 0);
        c.log[2].hash ^= 1;
        assert!(check_log_matching(&a, &c).is_err());
        // Diverging suffixes from different terms are legal.
        let d = view(4, 3, &[1, 1, 3, 3], 0);
        check_log_matching(&a, &d).expect("divergent uncommitted suffix");
        // Compacted prefixes are skipped.
        let mut s = view(5, 2, &[], 0);
        s.snapshot_index = 2;
        s.snapshot_term = 1;
        s.log = vec![e(3, 2)];
        check_log_matching(&a, &s).expect("agrees on what both hold");
        let mut checker = InvariantChecker::new();
        assert!(checker.observe(&[a, b]).is_err());
    }

    #[test]
    fn catches_a_leader_missing_a_committed_entry() {
        let mut checker = InvariantChecker::new();
        checker
            .observe(&[leader(view(1, 2, &[1, 2, 2], 3)), view(2, 2, &[1, 2, 2], 3)])
            .unwrap();
        // Replica 3 wins term 3 without entry 3: impossible in Raft.
        let err = checker
            .observe(&[leader(view(3, 3, &[1, 2], 2))])
            .unwrap_err();
        assert_eq!(
            err,
            Violation::LeaderCompleteness {
                leader: 3,
                term: 3,
                missing: e(3, 2)
            }
        );
        // A stale leader of the term in which it was committed is not bound.
        let committed = [CommittedEntry {
            entry: e(3, 2),
            known_in_term: 2,
        }];
        check_leader_completeness(&committed, &leader(view(4, 2, &[1, 2], 2))).unwrap();
        // A compacted entry counts as held.
        let mut snap = leader(view(5, 3, &[], 3));
        snap.snapshot_index = 3;
        snap.snapshot_term = 2;
        check_leader_completeness(&committed, &snap).unwrap();
    }

    #[test]
    fn catches_a_committed_entry_changing() {
        let mut checker = InvariantChecker::new();
        checker.observe(&[view(1, 2, &[1, 2], 2)]).unwrap();
        // Alone (no log matching partner), replica 2 reports a different
        // committed entry at index 2.
        let err = checker.observe(&[view(2, 3, &[1, 3], 2)]).unwrap_err();
        assert!(
            matches!(err, Violation::CommittedEntryChanged { replica: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn catches_different_commands_applied_at_one_index() {
        let mut checker = InvariantChecker::new();
        checker.record_applied(1, e(1, 1)).unwrap();
        checker.record_applied(2, e(1, 1)).unwrap();
        let other = EntryId { hash: 7, ..e(1, 1) };
        let err = checker.record_applied(3, other).unwrap_err();
        assert_eq!(
            err,
            Violation::StateMachineSafety {
                replicas: [1, 3],
                entries: [e(1, 1), other]
            }
        );
        assert!(check_state_machine_safety([(1, e(1, 1)), (2, e(2, 1))]).is_ok());
        assert!(check_state_machine_safety([(1, e(1, 1)), (2, other)]).is_err());
    }

    #[test]
    fn catches_broken_progress_and_malformed_logs() {
        let mut v = view(1, 1, &[1, 1], 2);
        check_progress(&v).unwrap();
        v.applied = 3;
        assert!(matches!(
            check_progress(&v),
            Err(Violation::Progress { applied: 3, .. })
        ));
        let mut v = view(1, 1, &[1, 1], 2);
        v.committed = 3;
        v.applied = 1;
        assert!(
            check_progress(&v).is_err(),
            "committed beyond the last index"
        );
        let mut checker = InvariantChecker::new();
        assert!(checker.observe(&[v]).is_err());

        let mut gap = view(1, 2, &[1, 1, 2], 0);
        gap.log.remove(1);
        assert!(check_log_shape(&gap).is_err());
        let falling = view(1, 2, &[2, 1], 0);
        assert!(check_log_shape(&falling).is_err());
        let future = view(1, 2, &[1, 3], 0);
        assert!(check_log_shape(&future).is_err());
    }

    #[test]
    fn views_from_raft_storage_and_entry_hashes() {
        use tandem_raft::{ConfState, MemStorage};
        let entry = |index: u64, term: u64, data: &[u8]| Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Entry::default()
        };
        let a = MemStorage::new_with_conf_state(ConfState::from_voters(1..=3));
        a.wl()
            .append(&[entry(1, 1, b"x"), entry(2, 1, b"y"), entry(3, 2, b"z")])
            .unwrap();
        let view_a = ReplicaView {
            id: 1,
            term: 2,
            committed: 3,
            applied: 3,
            ..ReplicaView::default()
        }
        .with_log_from(&a)
        .unwrap();
        assert_eq!(view_a.log.len(), 3);
        assert_eq!(view_a.last_index(), 3);
        assert_eq!(view_a.log[2], EntryId::of(&entry(3, 2, b"z")));
        // Same index and term, different data: different hash, and the log
        // matching check sees it.
        assert_ne!(
            EntryId::of(&entry(2, 1, b"y")),
            EntryId::of(&entry(2, 1, b"Y"))
        );
        let b = MemStorage::new_with_conf_state(ConfState::from_voters(1..=3));
        b.wl()
            .append(&[entry(1, 1, b"x"), entry(2, 1, b"Y"), entry(3, 2, b"z")])
            .unwrap();
        let view_b = ReplicaView {
            id: 2,
            term: 2,
            ..ReplicaView::default()
        }
        .with_log_from(&b)
        .unwrap();
        assert!(check_log_matching(&view_a, &view_b).is_err());
        // After compaction the view starts past the snapshot.
        a.wl().compact(2).unwrap();
        let compacted = ReplicaView::default().with_log_from(&a).unwrap();
        assert_eq!((compacted.snapshot_index, compacted.snapshot_term), (1, 1));
        assert_eq!(compacted.log.first().map(|e| e.index), Some(2));
        check_log_shape(&ReplicaView {
            term: 2,
            ..compacted
        })
        .unwrap();
    }

    #[test]
    fn catches_an_acknowledged_write_lost_by_a_quorum() {
        let mut checker = InvariantChecker::new();
        checker.record_acknowledged(e(2, 1));
        let views = [
            view(1, 1, &[1, 1], 2),
            view(2, 1, &[1, 1], 2),
            view(3, 1, &[1], 1),
        ];
        checker.check_durability(&views, &[1, 2, 3]).unwrap();
        // Replica 2 crashes and recovers without the unsynced entry 2 (an
        // acknowledgement sent before fsync).
        let views = [
            view(1, 1, &[1, 1], 2),
            view(2, 1, &[1], 1),
            view(3, 1, &[1], 1),
        ];
        let err = checker.check_durability(&views, &[1, 2, 3]).unwrap_err();
        assert_eq!(
            err,
            Violation::Durability {
                entry: e(2, 1),
                holders: vec![1],
                quorum: 2
            }
        );
        checker.forget_below(3);
        checker.check_durability(&views, &[1, 2, 3]).unwrap();
    }

    /// Replacing voter 3 by 4 through a joint configuration: a write held by
    /// 2 and 3 is lacked by the incoming quorum {1, 4}, but an election also
    /// needs an outgoing quorum, and every one of those holds it. Only when
    /// both sides have a quorum without it is it exposed.
    #[test]
    fn a_joint_quorum_needs_both_sides_to_lack_a_write() {
        let mut checker = InvariantChecker::new();
        checker.record_acknowledged(e(2, 1));
        let (incoming, outgoing) = ([1, 2, 4], [1, 2, 3]);
        let held_by_2_and_3 = [
            view(1, 1, &[1], 1),
            view(2, 1, &[1, 1], 2),
            view(3, 1, &[1, 1], 2),
            view(4, 1, &[1], 1),
        ];
        assert!(checker
            .check_no_quorum_lacks(&held_by_2_and_3, &incoming, &[])
            .is_err());
        checker
            .check_no_quorum_lacks(&held_by_2_and_3, &incoming, &outgoing)
            .unwrap();
        let held_by_3 = [
            view(1, 1, &[1], 1),
            view(2, 1, &[1], 1),
            view(3, 1, &[1, 1], 2),
            view(4, 1, &[1], 1),
        ];
        let err = checker
            .check_no_quorum_lacks(&held_by_3, &incoming, &outgoing)
            .unwrap_err();
        assert_eq!(
            err,
            Violation::JointDurability {
                entry: e(2, 1),
                incoming: (incoming.to_vec(), vec![]),
                outgoing: (outgoing.to_vec(), vec![3]),
            }
        );
        assert!(err.to_string().contains("a joint quorum lacks it"), "{err}");
    }
}
