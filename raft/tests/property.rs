//! Seeded randomized testing of the whole protocol.
//!
//! Each seed drives a cluster through a random schedule of ticks,
//! deliveries, drops, duplicates, reordering, partitions, crashes and
//! restarts (losing unpersisted writes), proposals, membership changes
//! (single-step and joint), leadership transfers, compactions and reads.
//! After every step the [`Checker`](tandem_raft::testing::Checker) verifies
//! election safety, log matching, leader completeness and state-machine
//! safety. After the schedule the network heals and the cluster must elect
//! a leader and commit a new proposal on every member within a bound.
//!
//! `TANDEM_RAFT_SEEDS=N` runs N seeds (default 500); `TANDEM_RAFT_SEED=S`
//! runs only seed S. A failure prints the seed and the command to replay it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_raft::testing::Network;
use tandem_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, StateRole,
};

/// Steps of random schedule per seed.
const STEPS: usize = 1200;
/// Ticks allowed for the healed cluster to elect a leader and commit.
const LIVENESS_TICKS: usize = 600;

struct Sim {
    net: Network,
    rng: ChaCha8Rng,
    ever_member: Vec<u64>,
    universe: Vec<u64>,
    next_value: u64,
    /// Read context -> highest index known committed when it was issued.
    reads: std::collections::HashMap<Vec<u8>, u64>,
    read_seq: u64,
    /// Per node: how many of its read states were checked.
    reads_checked: std::collections::BTreeMap<u64, usize>,
}

fn members(cs: &ConfState) -> Vec<u64> {
    let mut v: Vec<u64> = cs
        .voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .copied()
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim::new_with(seed, |_| {})
    }

    fn new_with(seed: u64, extra: impl Fn(&mut tandem_raft::Config) + Copy) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: u64 = if rng.gen_bool(0.5) { 3 } else { 5 };
        let voters: Vec<u64> = (1..=n).collect();
        let pre_vote = rng.gen_bool(0.5);
        let check_quorum = rng.gen_bool(0.5);
        let max_inflight = rng.gen_range(1..8);
        let max_size = if rng.gen_bool(0.5) { 1 } else { 1 << 20 };
        let batch = rng.gen_bool(0.3);
        let skip_bcast_commit = rng.gen_bool(0.2);
        let max_uncommitted = if rng.gen_bool(0.2) { 200 } else { 64 << 20 };
        let max_committed_per_ready = if rng.gen_bool(0.2) { 1 } else { 64 << 20 };
        let priority_node = if rng.gen_bool(0.2) {
            rng.gen_range(1..=n)
        } else {
            0
        };
        let cfg = move |c: &mut tandem_raft::Config| {
            c.seed = seed;
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
            c.max_inflight_msgs = max_inflight;
            c.max_size_per_msg = max_size;
            c.batch_append = batch;
            c.skip_bcast_commit = skip_bcast_commit;
            c.max_uncommitted_size = max_uncommitted;
            c.max_committed_size_per_ready = max_committed_per_ready;
            if c.id == priority_node {
                c.priority = 5;
            }
            extra(c);
        };
        let mut net = Network::new(&voters, cfg);
        let extra = [n + 1, n + 2];
        for id in extra {
            net.add_empty_node(id, cfg);
        }
        for id in voters.iter().chain(&extra) {
            net.node_mut(*id).async_persist = rng.gen_bool(0.4);
        }
        let mut universe = voters.clone();
        universe.extend(extra);
        Sim {
            net,
            rng,
            ever_member: voters,
            universe,
            next_value: 0,
            reads: std::collections::HashMap::new(),
            read_seq: 0,
            reads_checked: std::collections::BTreeMap::new(),
        }
    }

    fn pick(&mut self) -> u64 {
        let i = self.rng.gen_range(0..self.universe.len());
        self.universe[i]
    }

    fn step(&mut self) -> Result<(), String> {
        let op = self.rng.gen_range(0..100);
        match op {
            0..=19 => {
                if self.rng.gen_bool(0.5) {
                    self.net.tick_all();
                } else {
                    let id = self.pick();
                    self.net.tick(id);
                }
            }
            20..=54 => {
                let k = self.rng.gen_range(1..10);
                for _ in 0..k {
                    self.net.deliver_one();
                }
            }
            55..=56 => {
                self.net.drop_front();
            }
            57 => {
                self.net.duplicate_front();
            }
            58..=59 => self.net.delay_front(),
            60..=71 => {
                let id = self.pick();
                if self.net.node(id).is_up() {
                    self.next_value += 1;
                    let v = format!("v{}", self.next_value).into_bytes();
                    let _ = self.net.propose(id, v);
                }
            }
            72..=77 => {
                let id = self.pick();
                let _ = self.net.persist(id);
            }
            78 => {
                let id = self.pick();
                self.net.isolate(id);
            }
            79 => {
                let split = self.rng.gen_range(1..self.universe.len());
                let (a, b) = self.universe.split_at(split);
                let (a, b) = (a.to_vec(), b.to_vec());
                self.net.partition(&a, &b);
            }
            80..=83 => self.net.heal(),
            84 => {
                let id = self.pick();
                if self.net.node(id).is_up() {
                    self.net.crash(id);
                }
            }
            85..=87 => {
                let id = self.pick();
                if !self.net.node(id).is_up() {
                    self.net.restart(id);
                }
            }
            88..=92 => self.conf_change(),
            93..=94 => {
                if let Some(l) = self.net.leader() {
                    let to = self.pick();
                    self.net.transfer_leader(l, to);
                }
            }
            95..=96 => {
                let id = self.pick();
                if self.net.node(id).is_up() {
                    self.net.compact(id);
                }
            }
            _ => {
                let id = self.pick();
                if self.net.node(id).is_up() {
                    self.read_seq += 1;
                    let ctx = format!("read-{}", self.read_seq).into_bytes();
                    self.reads
                        .insert(ctx.clone(), self.net.checker.max_committed());
                    self.net.read_index(id, &ctx);
                }
            }
        }
        self.net.check()?;
        self.check_reads()
    }

    /// ReadIndex linearizability: a read may be served only at an index
    /// covering every write committed before the read was issued.
    fn check_reads(&mut self) -> Result<(), String> {
        for (id, n) in &self.net.nodes {
            let done = self.reads_checked.entry(*id).or_insert(0);
            for rs in &n.read_states[*done..] {
                let Some(&floor) = self.reads.get(&rs.request_ctx) else {
                    return Err(format!("node {id}: read state for unknown context"));
                };
                if rs.index < floor {
                    return Err(format!(
                        "read index {} on node {id} misses writes committed up to {floor} before the read ({})\n{}",
                        rs.index,
                        String::from_utf8_lossy(&rs.request_ctx),
                        self.net.describe()
                    ));
                }
            }
            *done = n.read_states.len();
        }
        Ok(())
    }

    fn conf_change(&mut self) {
        let Some(l) = self.net.leader() else { return };
        let cs = self.net.raft(l).prs().conf_state();
        let fresh: Vec<u64> = self
            .universe
            .iter()
            .copied()
            .filter(|id| !self.ever_member.contains(id))
            .collect();
        let single = |t, id| ConfChangeSingle {
            change_type: t,
            node_id: id,
        };
        let mut changes = Vec::new();
        let kind = self.rng.gen_range(0..6);
        match kind {
            0 if !fresh.is_empty() => {
                changes.push(single(ConfChangeType::AddLearnerNode, fresh[0]))
            }
            1 if !cs.learners.is_empty() => {
                changes.push(single(ConfChangeType::AddNode, cs.learners[0]))
            }
            2 if !fresh.is_empty() => changes.push(single(ConfChangeType::AddNode, fresh[0])),
            3 => {
                let all = members(&cs);
                let victim = all[self.rng.gen_range(0..all.len())];
                changes.push(single(ConfChangeType::RemoveNode, victim));
            }
            4 if !fresh.is_empty() && cs.voters.len() > 1 => {
                // Joint: swap a voter for a fresh node.
                let victim = cs.voters[self.rng.gen_range(0..cs.voters.len())];
                changes.push(single(ConfChangeType::AddNode, fresh[0]));
                changes.push(single(ConfChangeType::RemoveNode, victim));
            }
            5 => {
                // Leave a joint configuration explicitly (or a no-op error).
                let _ = self.net.propose_conf_change(l, ConfChangeV2::default());
                return;
            }
            _ => return,
        }
        let transition = match self.rng.gen_range(0..3) {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::Implicit,
            _ => ConfChangeTransition::Explicit,
        };
        for c in &changes {
            if c.change_type != ConfChangeType::RemoveNode && !self.ever_member.contains(&c.node_id)
            {
                self.ever_member.push(c.node_id);
            }
        }
        let cc = ConfChangeV2 {
            transition,
            changes,
            context: vec![],
        };
        let _ = self.net.propose_conf_change(l, cc);
    }

    /// Heal everything and require progress.
    fn liveness(&mut self) -> Result<(), String> {
        self.net.heal();
        // Restart everyone. Removed nodes keep running: a removed leader may
        // be the only one to know its removal committed, and its vote may
        // be needed by the old configuration until the others learn it.
        // (Once they applied their removal they never campaign.)
        let ids: Vec<u64> = self.net.nodes.keys().copied().collect();
        for &id in &ids {
            if !self.net.node(id).is_up() {
                self.net.restart(id);
            }
        }
        let mut proposed: Option<Vec<u8>> = None;
        for tick in 0..LIVENESS_TICKS {
            self.net.tick_all();
            self.net.stabilize();
            self.net.check()?;
            self.check_reads()?;
            let Some(l) = self.net.leader() else { continue };
            if self.net.raft(l).state != StateRole::Leader {
                continue;
            }
            if !self.net.raft(l).prs().is_voter(l) {
                // A removed leader hands over; if its transfer timed out,
                // shut it down once the voters have its commit index (what
                // an engine does with a removed replica).
                let commit = self.net.raft(l).raft_log.committed;
                let cs = self.net.raft(l).prs().conf_state();
                let caught_up = cs.voters.iter().all(|&v| {
                    self.net
                        .nodes
                        .get(&v)
                        .is_some_and(|n| n.is_up() && n.raft().raft_log.committed >= commit)
                });
                if caught_up && self.net.raft(l).lead_transferee.is_none() {
                    self.net.crash(l);
                }
                continue;
            }
            let value = proposed
                .get_or_insert_with(|| format!("live-{tick}").into_bytes())
                .clone();
            if !self.net.applied_data(l).contains(&value) {
                let _ = self.net.propose(l, value.clone());
                continue;
            }
            // Every member of the leader's configuration must apply it.
            let cs = self.net.raft(l).prs().conf_state();
            let all = members(&cs)
                .into_iter()
                .filter(|&id| self.net.nodes.contains_key(&id))
                .all(|id| self.net.applied_data(id).contains(&value));
            if all {
                return Ok(());
            }
        }
        Err(format!(
            "liveness: no leader committed a proposal on all members within {LIVENESS_TICKS} ticks (leader {:?})\n{}",
            self.net.leader(),
            self.net.describe()
        ))
    }
}

/// What one seed exercised, to make sure the schedules do real work.
#[derive(Debug, Default)]
struct Stats {
    committed: usize,
    leaders: usize,
    delivered: u64,
    reads_served: usize,
}

fn run_seed(seed: u64) -> Result<Stats, String> {
    run_sim(Sim::new(seed))
}

fn run_sim(mut sim: Sim) -> Result<Stats, String> {
    for step in 0..STEPS {
        sim.step().map_err(|e| format!("step {step}: {e}"))?;
    }
    sim.liveness()?;
    Ok(Stats {
        committed: sim.net.checker.committed_count(),
        leaders: sim.net.checker.leaders().len(),
        delivered: sim.net.delivered,
        reads_served: sim.reads_checked.values().sum(),
    })
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("TANDEM_RAFT_SEED") {
        return vec![s.parse().expect("TANDEM_RAFT_SEED is a number")];
    }
    let n: u64 = std::env::var("TANDEM_RAFT_SEEDS")
        .ok()
        .map_or(500, |s| s.parse().expect("TANDEM_RAFT_SEEDS is a number"));
    (0..n).collect()
}

#[test]
fn random_schedules_keep_raft_safe_and_live() {
    let seeds = seeds();
    let mut total = Stats::default();
    for &seed in &seeds {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        let failure = match result {
            Ok(Ok(s)) => {
                total.committed += s.committed;
                total.leaders += s.leaders;
                total.delivered += s.delivered;
                total.reads_served += s.reads_served;
                continue;
            }
            Ok(Err(e)) => e,
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic".into()),
        };
        panic!(
            "seed {seed} failed: {failure}\nreplay: TANDEM_RAFT_SEED={seed} cargo test -p tandem-raft --test property -- --nocapture"
        );
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    // Every seed elects at least one leader and commits at least the
    // liveness proposal: the schedules must not be vacuous.
    let n = seeds.len();
    assert!(total.leaders >= n, "{total:?}");
    assert!(total.committed >= 2 * n, "{total:?}");
    assert!(total.reads_served > 0, "{total:?}");
}

#[test]
fn same_seed_gives_identical_ready_sequences() {
    for seed in [1u64, 17, 99] {
        let mut a = Sim::new(seed);
        let mut b = Sim::new(seed);
        for _ in 0..STEPS {
            let _ = a.step();
            let _ = b.step();
        }
        assert!(a.net.nodes.values().any(|n| n.ready_log.len() > 10));
        for (id, na) in &a.net.nodes {
            let nb = b.net.node(*id);
            assert_eq!(na.ready_log, nb.ready_log, "seed {seed} node {id}");
        }
    }
}

#[test]
fn different_seeds_give_different_schedules() {
    let mut a = Sim::new(3);
    let mut b = Sim::new(4);
    for _ in 0..STEPS {
        let _ = a.step();
        let _ = b.step();
    }
    let la: Vec<_> = a.net.nodes.values().map(|n| n.ready_log.clone()).collect();
    let lb: Vec<_> = b.net.nodes.values().map(|n| n.ready_log.clone()).collect();
    assert_ne!(la, lb);
}

/// The checker must catch planted bugs (run with `--features planted-bugs`).
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_bugs_are_caught() {
    use tandem_raft::PlantedBug;
    // CommitOldTermByCounting needs the precise Figure 8 interleaving; the
    // scenario test `figure_8_planted_bug_is_caught` shows it is caught.
    for bug in [PlantedBug::CountStaleVotes, PlantedBug::VoteForStaleLog] {
        let caught = (0..3000u64).find(|&seed| {
            let sim = Sim::new_with(seed, move |c| c.planted_bug = bug);
            !matches!(std::panic::catch_unwind(|| run_sim(sim)), Ok(Ok(_)))
        });
        eprintln!("{bug:?}: first failing seed {caught:?}");
        assert!(caught.is_some(), "{bug:?} was not caught in 3000 seeds");
    }
}
