//! The deterministic simulator of the whole engine (`tandem::sim`): real
//! `NodeCore`s over `DiskStorage` (the real WAL on `SimFs`, the real sled
//! state machine), simulated clock, network, crashes, fsync failures,
//! partitions, leader transfers, membership changes and clients whose
//! history goes through the linearizability checker.
//!
//! `TANDEM_SIM_SEEDS=N` runs N seeds (default 200, the CI budget);
//! `TANDEM_SIM_START=S` moves the range; `TANDEM_SIM_SEED=S` replays one.
//! Many more seeds: `cargo run --release -p tandem -- sim --seeds 100000`.

use tandem::sim::{run_seed, PlantedBug, SeedStats, SimFailure, SimOptions};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn opts(seed: u64, planted: PlantedBug) -> SimOptions {
    SimOptions {
        seed,
        planted,
        ..SimOptions::default()
    }
}

/// The seeds of one planted bug that catch it, among `seeds`.
fn caught(planted: PlantedBug, seeds: std::ops::Range<u64>) -> Vec<SimFailure> {
    seeds
        .filter_map(|seed| run_seed(&opts(seed, planted)).err())
        .collect()
}

#[test]
fn engine_simulation_keeps_every_invariant() {
    let seeds: Vec<u64> = match env_u64("TANDEM_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let start = env_u64("TANDEM_SIM_START").unwrap_or(0);
            let n = env_u64("TANDEM_SIM_SEEDS").unwrap_or(200);
            (start..start + n).collect()
        }
    };
    let mut total = SeedStats::default();
    for &seed in &seeds {
        match run_seed(&opts(seed, PlantedBug::None)) {
            Ok(s) => {
                total.committed += s.committed;
                total.acknowledged += s.acknowledged;
                total.crashes += s.crashes;
                total.ops_ok += s.ops_ok;
                total.conf_changes += s.conf_changes;
                total.sync_failures += s.sync_failures;
                total.compactions += s.compactions;
                total.ops_after_power_loss += s.ops_after_power_loss;
                total.snapshots_installed += s.snapshots_installed;
            }
            Err(f) => panic!(
                "{f}\nreplay in tests: TANDEM_SIM_SEED={seed} cargo test -p tandem --test sim_engine \
                 engine_simulation_keeps_every_invariant"
            ),
        }
    }
    // The runs must do work, or the checks hold vacuously.
    let n = seeds.len() as u64;
    assert!(total.committed >= 20 * n, "too little committed: {total:?}");
    assert!(
        total.acknowledged >= 10 * n,
        "too few acknowledged writes: {total:?}"
    );
    assert!(
        total.ops_ok >= 20 * n,
        "too few client operations answered: {total:?}"
    );
    if n >= 50 {
        assert!(total.crashes >= n, "too few crashes: {total:?}");
        assert!(
            total.conf_changes >= n / 4,
            "too few membership changes: {total:?}"
        );
        assert!(
            total.sync_failures >= n / 4,
            "too few fsync failures: {total:?}"
        );
    }
}

/// Seeds that once found a bug, kept as regressions:
/// - 1031, 1234, 1947, 1996: a crash kept a WAL submission's entries but
///   tore its hard state; the replica restarted in an older term than
///   entries it held (fixed in `DiskStorage::initial_state`);
/// - 1964: a read answered in the same event that stopped its replica
///   (simulator bug: the read is now refused);
/// - 78, 88, 139, 163, 229, 230: after a restart that replayed committed
///   entries, the node asked to compact past the durable applied index and
///   the replica stopped (fixed in `DiskStorage::replay_committed`);
/// - 693, 6102, 55365: a proposal whose entry was overwritten on its
///   leader was answered `Stale` ("not applied, retry"), but another
///   replica's copy was later committed and applied (fixed in
///   `Proposals::on_appended`: `Stale` only once another entry commits);
/// - 3061: the durability check took the voters from a lagging replica
///   that had not applied the latest membership change (simulator bug);
/// - 1119195: the simulator ran a replica's snapshot IO jobs in random
///   order, so a staging begun for a dropped transfer completed after the
///   same transfer was offered and begun again, and the receiver panicked
///   on a chunk it never asked for (simulator bug: the runtime's snapshot
///   IO thread takes its jobs in order, and now the simulator does too).
/// - 267, 435, 705 (with joint-consensus changes and the liveness checks,
///   2026-12-07): a replica that held an older configuration (1, 2, 3)
///   dropped every message of replica 4, the leader of a newer one it had
///   not learned yet, and never caught up; on other seeds (754 then) the
///   cluster had no leader at all, as 4's votes were dropped too (fixed in
///   `NodeCore::step`: only replicas seen removed are ignored, not every
///   one outside the configuration held);
/// - 17: a restarted joiner replaying the log from index 1 passed through
///   the initial configuration, without itself, and the simulator stopped
///   it for good as removed (simulator bug: a configuration counts as a
///   removal only past the one that added the replica).
/// - 2004125, 2005917 (once replicas kept their tombstones across restarts,
///   2026-12-07): with neither pre-vote nor check-quorum, removed replica 1,
///   unaware of its removal, campaigned at ever higher terms; replica 4, a
///   learner (or not yet a member) in its own stale configuration, granted
///   its votes and took its terms, then ignored leader 2's lower-term
///   heartbeats without a reply, and 2 dropped 1's votes (1 is removed): 2
///   never learned the higher term and 4 never caught up (fixed in the raft
///   core: a lower-term append or heartbeat is always answered with the
///   current term; `scenarios::election::without_check_quorum_a_stale_leader_still_learns_a_followers_higher_term`).
#[test]
fn seeds_that_found_bugs_pass() {
    for seed in [
        17, 78, 88, 139, 163, 229, 230, 267, 435, 693, 705, 1031, 1234, 1947, 1964, 1996, 3061,
        6102, 55365, 929701, 1119195, 2004125, 2005917,
    ] {
        if let Err(f) = run_seed(&opts(seed, PlantedBug::None)) {
            panic!("{f}");
        }
    }
}

#[test]
fn a_seed_replays_identically() {
    for seed in [1, 17] {
        let a = run_seed(&opts(seed, PlantedBug::None));
        let b = run_seed(&opts(seed, PlantedBug::None));
        assert_eq!(a, b, "seed {seed} did not replay identically");
    }
}

/// A log writer that reports writes durable before the WAL synced them
/// (acknowledging before fsync) is caught within the CI seed budget, with
/// a replay command in the report.
#[test]
fn planted_ack_before_fsync_is_caught() {
    let found = caught(PlantedBug::AckBeforeFsync, 0..30);
    assert!(
        !found.is_empty(),
        "no seed caught writes acknowledged before fsync"
    );
    let f = &found[0];
    assert!(f.replay.contains("--planted ack-before-fsync"), "{f}");
    assert!(!f.trace.is_empty(), "{f}");
}

/// A consensus core that grants votes without checking that the
/// candidate's log is up to date (§5.4.1) is caught within the CI seed
/// budget: a leader then lacks committed entries.
#[test]
fn planted_raft_vote_for_stale_log_is_caught() {
    let found = caught(
        PlantedBug::Raft(tandem::raft::PlantedBug::VoteForStaleLog),
        0..30,
    );
    assert!(
        !found.is_empty(),
        "no seed caught votes granted to candidates with stale logs"
    );
    assert!(
        found[0].replay.contains("--features planted-bugs"),
        "{}",
        found[0]
    );
}

/// Counting vote responses from an older term is rarer to expose: it needs
/// two candidates in one term and a grant delayed past an election. A
/// search of seeds 0..1500 found seeds that catch it (893, 1019, 1243: two
/// leaders in one term, or a leader missing a committed entry); each passes without the bug, so it is the bug that
/// is caught. The seeds move whenever the engine's event schedule does (384
/// until commit-only hard states stopped being synced, then 182 until
/// acknowledgements left from the WAL writer, then 46, 141 and 630 until
/// the simulator made joint-consensus changes), so the test asks that one of
/// the three still catches it — a change that makes none catch it fails
/// here and needs a new search (`tandem sim --planted count-stale-votes`).
#[test]
fn planted_raft_count_stale_votes_is_caught_on_a_known_seed() {
    let bug = PlantedBug::Raft(tandem::raft::PlantedBug::CountStaleVotes);
    let catching: Vec<SimFailure> = [893, 1019, 1243]
        .into_iter()
        .filter_map(|seed| run_seed(&opts(seed, bug)).err())
        .collect();
    assert!(
        !catching.is_empty(),
        "none of the known seeds catches count-stale-votes any more"
    );
    for f in &catching {
        // Two leaders in one term, or a leader elected without a committed
        // entry: the two ways counting stale votes shows.
        assert!(
            f.violation.contains("election safety") || f.violation.contains("leader completeness"),
            "{f}"
        );
        if let Err(clean) = run_seed(&opts(f.seed, PlantedBug::None)) {
            panic!("seed {} without the bug: {clean}", f.seed);
        }
    }
}
