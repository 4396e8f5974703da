//! End-to-end: a 3-replica cluster on disk over the in-process network.

use std::time::Duration;

use tandem::{Cluster, ClusterConfig, Error, ReadConsistency, WriteBatch};

fn config() -> ClusterConfig {
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.tick_interval = Duration::from_millis(5);
    cfg.client_deadline = Duration::from_secs(20);
    cfg
}

#[test]
fn writes_reads_batches_cas_and_scans() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    let db = cluster.db();
    db.insert(b"a", b"1").unwrap();
    db.insert(b"b", b"2").unwrap();
    assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    let mut batch = WriteBatch::new();
    batch.insert(b"c".to_vec(), b"3".to_vec());
    batch.remove(b"a".to_vec());
    db.apply_batch(batch).unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    assert!(db
        .compare_and_swap(b"b", Some(b"2"), Some(b"20"))
        .unwrap()
        .is_ok());
    let mismatch = db
        .compare_and_swap(b"b", Some(b"2"), Some(b"21"))
        .unwrap()
        .unwrap_err();
    assert_eq!(mismatch.current.as_deref(), Some(&b"20"[..]));
    let keys: Vec<Vec<u8>> = db
        .range(b"a".as_slice()..b"z".as_slice())
        .unwrap()
        .map(|kv| kv.unwrap().0.to_vec())
        .collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    let prefixed: Vec<_> = db.scan_prefix(b"c").unwrap().collect();
    assert_eq!(prefixed.len(), 1);
    db.remove(b"c").unwrap();
    assert_eq!(db.get(b"c").unwrap(), None);
    let lease = db.get_with(b"b", ReadConsistency::Lease).unwrap();
    assert_eq!(lease.value.as_deref(), Some(&b"20"[..]));
    assert!(!lease.stale);
    let st = db.status();
    assert_eq!(st.len(), 3);
    let leader = st
        .iter()
        .find(|s| s.leader == Some(s.id))
        .expect("a leader");
    assert_eq!(
        leader.progress.len(),
        3,
        "the leader reports every peer's progress"
    );
    assert!(leader.applied >= 1 && leader.commit >= leader.applied);
    let proposals: u64 = st.iter().map(|s| s.counters.proposals).sum();
    assert!(
        proposals >= 6,
        "six writes were proposed, counters say {proposals}"
    );
}

#[test]
fn oversize_values_and_a_second_open_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let cluster = Cluster::open(dir.path(), cfg.clone()).unwrap();
    let db = cluster.db();
    let big = vec![0u8; cfg.node.max_value_bytes + 1];
    assert!(matches!(db.insert(b"k", &big), Err(Error::TooLarge { .. })));
    let key = vec![0u8; cfg.node.max_key_bytes + 1];
    assert!(matches!(db.insert(&key, b"v"), Err(Error::TooLarge { .. })));
    match Cluster::open(dir.path(), cfg) {
        Err(Error::Locked(p)) => assert!(p.ends_with("node-1")),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn the_whole_cluster_restarts_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cluster = Cluster::open(dir.path(), config()).unwrap();
        let db = cluster.db();
        for i in 0..50u32 {
            db.insert(i.to_be_bytes(), i.to_le_bytes()).unwrap();
        }
    }
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    assert_eq!(cluster.running(), vec![1, 2, 3]);
    let db = cluster.db();
    for i in 0..50u32 {
        assert_eq!(
            db.get(i.to_be_bytes()).unwrap().as_deref(),
            Some(&i.to_le_bytes()[..])
        );
    }
    db.insert(b"after", b"restart").unwrap();
}

#[test]
fn shutdown_with_requests_in_flight_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config()).unwrap();
    let db = cluster.db();
    db.insert(b"k", b"v").unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    // Cut the leader off so its proposals cannot commit, then stop it.
    cluster.network().isolate(leader);
    let replica = cluster.replica(leader).unwrap();
    let pending: Vec<_> = (0..5u8)
        .map(|_| replica.node().propose(tandem::sm::Command::Noop.encode()))
        .collect();
    cluster.stop(leader).unwrap();
    for rx in pending {
        match rx
            .recv_timeout(Duration::from_secs(30))
            .expect("answered, not hung")
        {
            Err(Error::ShuttingDown | Error::NotLeader { .. }) => {}
            other => panic!("expected ShuttingDown, got {other:?}"),
        }
    }
    assert!(matches!(
        replica.propose_wait(vec![], Duration::from_secs(5)),
        Err(Error::ShuttingDown)
    ));
    assert!(matches!(cluster.restart(99), Err(Error::UnknownNode(99))));
    assert!(matches!(cluster.stop(99), Err(Error::UnknownNode(99))));
}

#[test]
fn the_state_machine_options_reach_every_replica() {
    // Write-through: a replica writes each apply to sled before it reports
    // the entry applied, so sled is never behind the reported index.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.node.state_machine.write_behind_entries = 0;
    let cluster = Cluster::open(dir.path(), cfg).unwrap();
    let db = cluster.db();
    for i in 0..20u32 {
        db.insert(i.to_be_bytes(), b"v").unwrap();
    }
    for id in cluster.running() {
        let replica = cluster.replica(id).unwrap();
        let applied = replica.status().unwrap().applied;
        let written = replica.state_machine().written_index();
        assert!(
            written >= applied,
            "replica {id}: sled at {written}, applied {applied}"
        );
    }
    drop(db);
    drop(cluster);
    // Bad state machine options are refused at open, naming the field.
    let mut bad = config();
    bad.node.state_machine.cache_bytes = 1;
    let err = Cluster::open(tempfile::tempdir().unwrap().path(), bad).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("cache_bytes")),
        "{err}"
    );
}

/// A lone client's writes are synced by the replicas' raft threads
/// themselves instead of being handed to their WAL writer threads: each
/// follower writes the appends it receives, and the leader writes its own
/// entries while it has one proposal in flight. (One thread hand-off less
/// on the write's critical path at each end.)
#[test]
fn a_lone_clients_writes_are_synced_by_the_raft_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    // Long enough that a loaded machine does not change leaders midway.
    cfg.node.tick_interval = Duration::from_millis(50);
    let cluster = Cluster::open(dir.path(), cfg).unwrap();
    let db = cluster.db();
    db.insert(b"warm", b"up").unwrap();
    let groups = |id: u64| {
        let s = cluster.replica(id).unwrap().wal().stats();
        (s.write_groups, s.groups_led_by_callers)
    };
    // Retried if the leader changes during a round (then the roles the
    // counts belong to are unclear).
    for round in 0..5 {
        let leader = cluster.wait_leader(Duration::from_secs(30)).unwrap();
        let before: Vec<_> = [1, 2, 3].map(groups).to_vec();
        for i in 0..50u32 {
            db.insert(format!("{round}/{i}"), b"value").unwrap();
        }
        if cluster.leader() != Some(leader) {
            continue;
        }
        for (k, id) in [1u64, 2, 3].into_iter().enumerate() {
            let (g1, l1) = groups(id);
            let (written, led) = (g1 - before[k].0, l1 - before[k].1);
            assert!(written > 0, "replica {id} wrote nothing");
            if id == leader {
                assert!(
                    led > 0,
                    "the leader wrote none of its {written} groups itself"
                );
            } else {
                // Every one, unless the writer thread was awake for
                // something else; at least half in any case.
                assert!(
                    led * 2 >= written,
                    "follower {id} wrote {led} of its {written} groups itself"
                );
            }
        }
        return;
    }
    panic!("the leader changed in each of 5 rounds");
}
