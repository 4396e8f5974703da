//! Failover, restart, membership and partitions, end to end on disk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::raft::{ConfState, StateRole};
use tandem::{Cluster, ClusterConfig, Db, Error, ReadConsistency};

fn config(replicas: u64) -> ClusterConfig {
    let mut cfg = ClusterConfig::with_replicas(replicas);
    cfg.node.tick_interval = Duration::from_millis(5);
    cfg.client_deadline = Duration::from_secs(20);
    cfg
}

type KeyValue = (Vec<u8>, Vec<u8>);

/// Writers insert `w<writer>-<n>` keys until stopped; returns what was acknowledged.
fn spawn_writers(
    db: &Db,
    writers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<KeyValue>>> {
    (0..writers)
        .map(|w| {
            let db = db.clone();
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("w{w}-{n}").into_bytes();
                    let v = format!("value-{n}").into_bytes();
                    n += 1;
                    if db.insert(&k, &v).is_ok() {
                        acked.push((k, v));
                    }
                }
                acked
            })
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every running replica has applied at least `index`.
fn wait_applied(cluster: &Cluster, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = cluster.status();
        if st.len() == cluster.running().len() && st.iter().all(|s| s.applied >= index) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not apply {index}: {st:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_all_replicas_hold(cluster: &Cluster, acked: &[KeyValue]) {
    let commit = cluster.status().iter().map(|s| s.commit).max().unwrap();
    wait_applied(cluster, commit);
    for id in cluster.running() {
        let sm = Arc::clone(cluster.replica(id).unwrap().state_machine());
        for (k, v) in acked {
            assert_eq!(
                sm.get(k).unwrap().as_deref(),
                Some(v.as_slice()),
                "replica {id} lost an acknowledged write {}",
                String::from_utf8_lossy(k)
            );
        }
    }
}

/// Let the writers run a little longer, stop them, and check that every
/// replica holds what they were acknowledged.
fn finish_writers(
    cluster: &Cluster,
    stop: &AtomicBool,
    writers: Vec<std::thread::JoinHandle<Vec<KeyValue>>>,
) {
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(!acked.is_empty());
    check_all_replicas_hold(cluster, &acked);
}

/// A 3-replica cluster in `dir` once it has a leader: the cluster, a
/// handle, the leader and one of its followers.
fn three_replicas(dir: &std::path::Path) -> (Arc<Cluster>, Db, u64, u64) {
    let cluster = Cluster::open(dir, config(3)).unwrap();
    let db = cluster.db();
    let leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    (cluster, db, leader, follower)
}

/// The configuration of the current leader.
fn leader_conf(c: &Cluster) -> ConfState {
    let l = c.wait_leader(Duration::from_secs(20)).unwrap();
    c.replica(l).unwrap().status().unwrap().conf_state
}

#[test]
fn leader_failover_under_concurrent_writers_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config(3)).unwrap();
    let db = cluster.db();
    let first = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 4, &stop);
    std::thread::sleep(Duration::from_millis(300));
    cluster.stop(first).unwrap();
    wait_until("a new leader", || {
        cluster.leader().is_some_and(|l| l != first)
    });
    std::thread::sleep(Duration::from_millis(300));
    cluster.restart(first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    check_all_replicas_hold(&cluster, &acked);
}

#[test]
fn a_stopped_follower_catches_up_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, db, _, follower) = three_replicas(dir.path());
    db.insert(b"before", b"1").unwrap();
    cluster.stop(follower).unwrap();
    let mut acked = Vec::new();
    for i in 0..100u32 {
        let (k, v) = (format!("k{i}").into_bytes(), vec![i as u8; 256]);
        db.insert(&k, &v).unwrap();
        acked.push((k, v));
    }
    cluster.restart(follower).unwrap();
    check_all_replicas_hold(&cluster, &acked);
    let st = cluster.replica(follower).unwrap().status().unwrap();
    assert_eq!(st.role, StateRole::Follower);
}

#[test]
fn membership_changes_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config(3)).unwrap();
    let db = cluster.db();
    cluster.wait_leader(Duration::from_secs(20)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 2, &stop);
    cluster.add_learner(4).unwrap();
    let cs = leader_conf;
    assert!(cs(&cluster).learners.contains(&4));
    cluster.promote(4).unwrap();
    assert!(cs(&cluster).voters.contains(&4));
    assert!(matches!(cluster.promote(9), Err(Error::UnknownNode(9))));
    cluster.remove(2).unwrap();
    wait_until("the removal of 2", || !cs(&cluster).voters.contains(&2));
    // Remove the leader itself: the rest elect a new one.
    let leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    cluster.remove(leader).unwrap();
    wait_until("a leader among the rest", || {
        cluster.leader().is_some_and(|l| l != leader)
    });
    // The new leader learns the commit of the removal lazily; wait for it
    // to apply it.
    wait_until("the new leader to apply the removal", || {
        !cs(&cluster).voters.contains(&leader)
    });
    assert_eq!(cs(&cluster).voters.len(), 2);
    finish_writers(&cluster, &stop, writers);
    assert!(matches!(cluster.remove(77), Err(Error::UnknownNode(77))));
}

/// A removed replica that never learned of its removal comes back with
/// its old state and campaigns. The remaining replicas, restarted since the
/// removal, must still know it was removed and drop its messages.
#[test]
fn replicas_restarted_after_a_removal_still_ignore_the_removed_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, db, _, gone) = three_replicas(dir.path());
    db.insert(b"before", b"1").unwrap();
    // `gone` does not hear of its removal.
    cluster.network().isolate(gone);
    cluster.remove(gone).unwrap();
    let stayed: Vec<u64> = (1..=3).filter(|&i| i != gone).collect();
    for &id in &stayed {
        wait_until("the removal to be applied", || {
            cluster.replica(id).unwrap().status().unwrap().removed == [gone]
        });
        cluster.stop(id).unwrap();
        cluster.restart(id).unwrap();
        let st = cluster.replica(id).unwrap().status().unwrap();
        assert_eq!(st.removed, vec![gone], "replica {id} after its restart");
    }
    cluster.network().rejoin(gone);
    cluster.restart(gone).unwrap();
    let st = cluster.replica(gone).unwrap().status().unwrap();
    assert!(st.conf_state.voters.contains(&gone), "{st:?}");
    // It campaigns for a configuration it thinks it is in; both others
    // drop what it sends.
    wait_until("both replicas to drop the removed one's messages", || {
        stayed.iter().all(|&id| {
            let st = cluster.replica(id).unwrap().status().unwrap();
            st.counters.dropped_from_removed > 0
        })
    });
    db.insert(b"after", b"2").unwrap();
    let voters = leader_conf(&cluster).voters;
    assert_eq!(voters, stayed);
    assert!(
        cluster.leader().is_some_and(|l| l != gone),
        "the removed replica does not lead"
    );
    // Its id is not reused.
    cluster.stop(gone).unwrap();
    let keep = stayed[0];
    for refused in [
        cluster.add_learner(gone),
        cluster.add_voter(gone),
        cluster.replace(keep, gone),
    ] {
        assert!(
            matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("removed")),
            "{refused:?}"
        );
    }
    assert_eq!(leader_conf(&cluster).voters, stayed);
}

#[test]
fn voters_are_replaced_through_joint_configurations_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, db, leader, follower) = three_replicas(dir.path());
    let cs = leader_conf;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 2, &stop);
    // A follower by a new, empty replica.
    cluster.replace(follower, 4).unwrap();
    let after = cs(&cluster);
    assert!(
        after.voters_outgoing.is_empty(),
        "left the joint configuration: {after:?}"
    );
    let mut want: Vec<u64> = (1..=4).filter(|&i| i != follower).collect();
    assert_eq!(after.voters, want);
    assert!(
        cluster.replica(follower).is_none(),
        "the replaced voter stopped"
    );
    // The leader itself by a learner.
    cluster.add_learner(5).unwrap();
    cluster.replace(leader, 5).unwrap();
    wait_until("a leader among the rest", || {
        cluster.leader().is_some_and(|l| l != leader)
    });
    want.retain(|&i| i != leader);
    want.push(5);
    wait_until("the new leader to know the final configuration", || {
        let cs = cs(&cluster);
        cs.voters == want && cs.voters_outgoing.is_empty()
    });
    assert!(cs(&cluster).learners.is_empty());
    assert!(cluster.replica(leader).is_none());
    // Misuse.
    assert!(matches!(
        cluster.replace(77, 6),
        Err(Error::UnknownNode(77))
    ));
    assert!(matches!(
        cluster.replace(want[0], want[0]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        cluster.replace(want[0], want[1]),
        Err(Error::InvalidInput(_))
    ));
    finish_writers(&cluster, &stop, writers);
}

#[test]
fn leader_transfer_while_writing_and_reads_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config(3)).unwrap();
    let db = cluster.db();
    let leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 2, &stop);
    let target = (1..=3).find(|&i| i != leader).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    cluster.transfer_leadership(target).unwrap();
    assert_eq!(cluster.leader(), Some(target));
    // A linearizable read right after the change sees the last write.
    db.insert(b"fresh", b"yes").unwrap();
    assert_eq!(db.get(b"fresh").unwrap().as_deref(), Some(&b"yes"[..]));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    check_all_replicas_hold(&cluster, &acked);
    assert!(matches!(
        cluster.transfer_leadership(42),
        Err(Error::UnknownNode(42))
    ));
}

#[test]
fn a_partitioned_old_leader_cannot_serve_linearizable_reads_but_stale_reads_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config(3)).unwrap();
    let db = cluster.db();
    db.insert(b"k", b"old").unwrap();
    let old = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    cluster.network().isolate(old);
    // Right after the partition the old leader still believes it leads, but
    // it cannot confirm that with a quorum: it must not serve the read.
    let r = cluster.replica(old).unwrap();
    match r.read_barrier(ReadConsistency::Linearizable, Duration::from_secs(3)) {
        Err(Error::NotLeader { .. } | Error::Timeout(_)) => {}
        other => panic!("isolated old leader served a linearizable read: {other:?}"),
    }
    wait_until("a new leader, and the old one stepping down", || {
        let st = cluster.status();
        st.iter()
            .any(|s| s.id != old && s.role == StateRole::Leader)
            && st
                .iter()
                .any(|s| s.id == old && s.role != StateRole::Leader)
    });
    db.insert(b"k", b"new").unwrap();
    assert!(matches!(
        r.read_barrier(ReadConsistency::Linearizable, Duration::from_secs(3)),
        Err(Error::NotLeader { .. })
    ));
    // A stale read there is allowed, and says it is stale.
    let stale = db.get_stale_from(old, b"k").unwrap();
    assert!(stale.stale);
    assert_eq!(stale.served_by, old);
    assert_eq!(stale.value.as_deref(), Some(&b"old"[..]));
    // The handle's linearizable read goes to the new leader.
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    cluster.network().rejoin(old);
}

#[test]
fn a_cluster_without_quorum_fails_writes_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config(3)).unwrap();
    let db = cluster.db().with_deadline(Duration::from_secs(2));
    db.insert(b"k", b"v").unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    for id in cluster.running() {
        if id != leader {
            cluster.stop(id).unwrap();
        }
    }
    let start = Instant::now();
    match db.insert(b"k", b"v2") {
        Err(Error::NoQuorum(_) | Error::Timeout(_)) => {}
        other => panic!("expected a bounded error, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(60), "must not hang");
    let counts: BTreeMap<u64, usize> = cluster
        .status()
        .iter()
        .map(|s| (s.id, s.pending_proposals))
        .collect();
    assert!(counts.contains_key(&leader));
}

#[test]
fn writes_survive_a_lossy_slow_reordering_network() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), config(3)).unwrap();
    let db = cluster.db();
    cluster.wait_leader(Duration::from_secs(20)).unwrap();
    cluster.network().set_faults(tandem::transport::Faults {
        drop_rate: 0.05,
        delay_min: Duration::ZERO,
        delay_max: Duration::from_millis(2),
        reorder: true,
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 3, &stop);
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(!acked.is_empty(), "no write got through a 5% lossy network");
    cluster
        .network()
        .set_faults(tandem::transport::Faults::default());
    check_all_replicas_hold(&cluster, &acked);
    let stats = cluster.network().stats();
    assert!(
        stats.dropped_random > 0,
        "the fault injection did nothing: {stats:?}"
    );
}
