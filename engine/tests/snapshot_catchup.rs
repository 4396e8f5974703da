//! Catching up by snapshot, end to end on disk over the in-process network:
//! a follower that missed compacted entries, a brand-new learner, corrupted
//! chunks, a leader change mid-transfer, a crash between the state switch
//! and the log reset — and client traffic going on throughout.
//!
//! Sizes are small by default; `TANDEM_SNAP_WRITES` scales the writes made
//! while a follower is down (the figure is 100 000).

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::raft::StateRole;
use tandem::sm::StateMachine;
use tandem::transport::Faults;
use tandem::{Cluster, ClusterConfig, Db, SyncPolicy, WriteBatch};

fn writes() -> u64 {
    std::env::var("TANDEM_SNAP_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> ClusterConfig {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.tick_interval = Duration::from_millis(5);
    // Generous election timeouts (300-600 ms): snapshot builds, transfers
    // and installs load the disk and the two shared cores, and a debug build
    // on a loaded machine must not lose its leader to scheduling delays.
    cfg.node.election_ticks = 60;
    cfg.node.snapshot.receiver.idle_timeout_ticks = 400;
    cfg.node.sync = SyncPolicy::Never;
    cfg.node.max_value_bytes = 4 << 10;
    cfg.node.max_proposal_bytes = 64 << 10;
    cfg.node.wal_segment_bytes = 256 << 10;
    cfg.node.snapshot.compact_log_entries = 100;
    cfg.node.snapshot.compact_log_bytes = 256 << 10;
    cfg.node.snapshot.lag_entries_max = 500;
    // Many small chunks, so transfers have windows, acks and retransmits.
    cfg.node.snapshot.writer.chunk_bytes = 8 << 10;
    cfg.client_deadline = Duration::from_secs(30);
    cfg
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Hash of every user key and value of a replica, in key order.
fn checksum(sm: &StateMachine) -> (u64, u64) {
    let mut h = DefaultHasher::new();
    let mut n = 0;
    for kv in sm.range::<&[u8], _>(..) {
        let (k, v) = kv.unwrap();
        h.write_usize(k.len());
        h.write(&k);
        h.write_usize(v.len());
        h.write(&v);
        n += 1;
    }
    (n, h.finish())
}

/// Write `n` keys `prefix-<i>` in batches of 10, from 4 threads.
fn write_many(db: &Db, prefix: &str, n: u64) {
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let db = db.clone();
            s.spawn(move || {
                let mut i = t * 10;
                while i < n {
                    let mut b = WriteBatch::new();
                    for j in i..(i + 10).min(n) {
                        b.insert(
                            format!("{prefix}-{j:08}").into_bytes(),
                            vec![(j % 251) as u8; 100],
                        );
                    }
                    db.apply_batch(b).unwrap();
                    i += 40;
                }
            });
        }
    });
}

/// Wait until every running replica applied the leader's commit index,
/// then check they all hold the same data.
fn assert_converged(cluster: &Cluster) -> (u64, u64) {
    let leader = cluster.wait_leader(Duration::from_secs(30)).unwrap();
    let commit = cluster.replica(leader).unwrap().status().unwrap().commit;
    wait_until("every replica applies the leader's commit index", || {
        cluster.status().iter().all(|s| s.applied >= commit)
    });
    // Nothing is written meanwhile: the states must be identical.
    let sums: Vec<_> = cluster
        .running()
        .into_iter()
        .map(|id| (id, checksum(cluster.replica(id).unwrap().state_machine())))
        .collect();
    for (id, sum) in &sums {
        assert_eq!(
            *sum, sums[0].1,
            "replica {id} differs from replica {}",
            sums[0].0
        );
    }
    sums[0].1
}

fn a_follower(cluster: &Cluster) -> (u64, u64) {
    let leader = cluster.wait_leader(Duration::from_secs(30)).unwrap();
    let follower = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap();
    (leader, follower)
}

/// Write until the leader compacted its log past `index`, at least twice.
///
/// Compaction runs behind the writes (it waits for a state-machine flush and
/// for any snapshot build), so how many writes it takes depends on the
/// machine's load: rounds go on until it happened, and only a deadline far
/// beyond any normal run (a hang guard, as in `wait_until`) stops them.
fn write_until_compacted_past(cluster: &Cluster, db: &Db, index: u64, n: u64) {
    write_many(db, "bulk", n);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    loop {
        let leader = cluster.wait_leader(Duration::from_secs(30)).unwrap();
        let r = cluster.replica(leader).unwrap();
        let first = r.wal().stats().first_index;
        let compactions = r.status().unwrap().counters.compactions;
        if first > index + 1 && compactions >= 2 {
            break;
        }
        round += 1;
        assert!(
            Instant::now() < deadline,
            "the leader never compacted past {index} ({round} rounds of writes, first index \
             {first}, {compactions} compactions)"
        );
        write_many(db, &format!("more{round}"), 200);
        // Let the flush and the compaction behind it run.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restarted_follower_catches_up_by_snapshot_while_clients_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    let db = cluster.db();
    write_many(&db, "early", 200);
    let (_, follower) = a_follower(&cluster);
    let behind = cluster.replica(follower).unwrap().status().unwrap().applied;
    cluster.stop(follower).unwrap();
    write_until_compacted_past(&cluster, &db, behind, writes());
    let (leader, _) = a_follower(&cluster);
    let lst = cluster.replica(leader).unwrap().status().unwrap();
    assert!(lst.counters.compactions >= 2, "{:?}", lst.counters);

    // Clients keep writing and reading while the snapshot is built and sent.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (db, stop, done) = (db.clone(), Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("live-{i:08}");
                db.insert(&k, b"v").unwrap();
                assert_eq!(db.get(&k).unwrap().as_deref(), Some(&b"v"[..]));
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    cluster.restart(follower).unwrap();
    wait_until("the follower installs a snapshot", || {
        cluster
            .replica(follower)
            .unwrap()
            .status()
            .is_ok_and(|s| s.counters.snapshot.installed >= 1)
    });
    let during = done.load(Ordering::Relaxed);
    // A few more writes after the install, then stop.
    let target = during + 20;
    wait_until("writes continue after the install", || {
        done.load(Ordering::Relaxed) >= target
    });
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let (keys, _) = assert_converged(&cluster);
    assert!(keys >= 200 + writes());
    let fs = cluster.replica(follower).unwrap().status().unwrap();
    assert!(
        fs.first_index > behind + 1,
        "the follower's log restarts after the snapshot: {fs:?}"
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).unwrap();
    let ls = cluster.replica(leader).unwrap().status().unwrap();
    assert!(ls.counters.snapshot.builds_done >= 1, "{:?}", ls.counters);
    assert!(ls.counters.snapshot.sends_done >= 1, "{:?}", ls.counters);
    eprintln!(
        "follower caught up by snapshot; {} writes with reads completed while it did",
        done.load(Ordering::Relaxed)
    );
    // The follower restarts from its installed state and log.
    cluster.stop(follower).unwrap();
    cluster.restart(follower).unwrap();
    db.insert(b"after", b"restart").unwrap();
    assert_converged(&cluster);
}

#[test]
fn a_new_learner_joins_a_compacted_cluster_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    let db = cluster.db();
    write_until_compacted_past(&cluster, &db, 1, 1_000);
    db.add_learner(4).unwrap();
    wait_until("the learner installs a snapshot", || {
        cluster
            .replica(4)
            .is_some_and(|r| r.status().is_ok_and(|s| s.counters.snapshot.installed >= 1))
    });
    assert_converged(&cluster);
    let st = cluster.replica(4).unwrap().status().unwrap();
    assert!(st.conf_state.learners.contains(&4), "{:?}", st.conf_state);
    // It follows the log from there, and can be promoted.
    db.promote(4).unwrap();
    write_many(&db, "after-join", 100);
    assert_converged(&cluster);
}

#[test]
fn corrupted_chunks_are_rejected_and_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    let db = cluster.db();
    write_many(&db, "early", 100);
    let (_, follower) = a_follower(&cluster);
    let behind = cluster.replica(follower).unwrap().status().unwrap().applied;
    cluster.stop(follower).unwrap();
    write_until_compacted_past(&cluster, &db, behind, 1_000);
    cluster.network().set_faults(Faults {
        corrupt_frame_rate: 0.2,
        ..Faults::default()
    });
    cluster.restart(follower).unwrap();
    wait_until("the follower installs a snapshot", || {
        cluster
            .replica(follower)
            .unwrap()
            .status()
            .is_ok_and(|s| s.counters.snapshot.installed >= 1)
    });
    cluster.network().set_faults(Faults::default());
    let fs = cluster.replica(follower).unwrap().status().unwrap();
    assert!(cluster.network().stats().corrupted > 0);
    assert!(
        fs.counters.snapshot.chunks_rejected > 0,
        "damaged chunks are detected: {:?}",
        fs.counters.snapshot
    );
    assert_converged(&cluster);
}

#[test]
fn a_transfer_cut_by_a_leader_change_is_restarted_by_the_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    // A slow transfer: one small chunk in flight at a time.
    cfg.node.snapshot.writer.chunk_bytes = 4096;
    cfg.node.snapshot.sender.window_chunks = 1;
    // Every chunk is fsynced by the receiver: on a loaded disk an ack can
    // take longer than the default 10 ticks of 5 ms.
    cfg.node.snapshot.sender.retransmit_ticks = 40;
    cfg.node.snapshot.sender.max_retries = 20;
    let cluster = Cluster::open(dir.path(), cfg).unwrap();
    let db = cluster.db();
    write_many(&db, "early", 100);
    let (_, follower) = a_follower(&cluster);
    let behind = cluster.replica(follower).unwrap().status().unwrap().applied;
    cluster.stop(follower).unwrap();
    write_until_compacted_past(&cluster, &db, behind, 2_000);
    cluster.network().set_faults(Faults {
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(2),
        ..Faults::default()
    });
    cluster.restart(follower).unwrap();
    wait_until("the transfer is under way", || {
        cluster
            .replica(follower)
            .unwrap()
            .status()
            .is_ok_and(|s| s.counters.snapshot_frames >= 5)
    });
    let fs = cluster.replica(follower).unwrap().status().unwrap();
    assert_eq!(fs.counters.snapshot.installed, 0, "still transferring");
    // The replica sending it (the leader, unless leadership moved).
    let old_leader = cluster
        .status()
        .into_iter()
        .find(|s| s.role == StateRole::Leader && s.counters.snapshot.sends_started >= 1)
        .expect("a leader is sending the snapshot")
        .id;
    let other = cluster
        .running()
        .into_iter()
        .find(|&id| id != old_leader && id != follower)
        .unwrap();
    cluster.transfer_leadership(other).unwrap();
    wait_until("the follower installs a snapshot", || {
        cluster
            .replica(follower)
            .unwrap()
            .status()
            .is_ok_and(|s| s.counters.snapshot.installed >= 1)
    });
    cluster.network().set_faults(Faults::default());
    let old = cluster.replica(old_leader).unwrap().status().unwrap();
    assert!(
        old.counters.snapshot.sends_failed >= 1,
        "the old leader abandoned its transfer: {:?}",
        old.counters.snapshot
    );
    let new = cluster.replica(other).unwrap().status().unwrap();
    assert!(
        new.counters.snapshot.sends_started >= 1,
        "the new leader started over: {:?}",
        new.counters.snapshot
    );
    // (Under load leadership may move again; whoever leads finishes it.)
    let done: u64 = cluster
        .status()
        .iter()
        .map(|s| s.counters.snapshot.sends_done)
        .sum();
    assert!(done >= 1);
    assert_converged(&cluster);
}

#[test]
fn a_crash_between_the_state_switch_and_the_log_reset_recovers_the_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    let db = cluster.db();
    write_many(&db, "early", 100);
    let (leader, follower) = a_follower(&cluster);
    cluster.stop(follower).unwrap();
    write_many(&db, "bulk", 500);
    // A snapshot of the leader's state, installed into the stopped
    // follower's state machine only: the disk as an install leaves it when
    // the process dies right after switching CURRENT.
    let tmp = tempfile::tempdir().unwrap();
    let stager = tandem_snapshot::Stager::open(tmp.path()).unwrap();
    let snap = cluster
        .replica(leader)
        .unwrap()
        .state_machine()
        .build_snapshot(
            &stager,
            &tandem_snapshot::WriterConfig::default(),
            tandem_snapshot::BeforeImagesConfig::default(),
        )
        .unwrap();
    let at = snap.manifest().index;
    let fdir = tandem::cluster::replica_dir(dir.path(), follower);
    {
        let sm = StateMachine::open(fdir.join("sm"), &tandem::sm::SmOptions::default()).unwrap();
        assert!(sm.applied().0 < at);
        sm.install_snapshot(&snap).unwrap();
    }
    // And an interrupted incoming transfer in snap/.
    std::fs::create_dir_all(fdir.join("snap/incoming-00000000000000000001-00000000000000000001"))
        .unwrap();
    cluster.restart(follower).unwrap();
    let f = cluster.replica(follower).unwrap();
    assert!(
        f.state_machine().applied().0 >= at,
        "the new state survives"
    );
    assert!(
        f.wal().stats().first_index > at,
        "the log was reset to the installed snapshot at open"
    );
    assert!(!fdir
        .join("snap/incoming-00000000000000000001-00000000000000000001")
        .exists());
    write_many(&db, "after", 100);
    assert_converged(&cluster);
}
