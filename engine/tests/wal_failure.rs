//! A replica whose log fsync fails stops, and the others go on.
//!
//! The follower's WAL is on a `SimFs` whose next fsync fails: the WAL
//! poisons itself, the follower's raft loop (which writes its own appends)
//! gets the error and stops the replica. Writes keep committing on the two
//! others, and nothing acknowledged is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::sm::{Command, WriteBatch};
use tandem::{Config, InProcNetwork, Replica};
use tandem_wal::{FileSystem, SimFs};

fn insert(key: &str) -> Vec<u8> {
    let mut b = WriteBatch::new();
    b.insert(key.as_bytes().to_vec(), b"value".to_vec());
    Command::Batch(b).encode()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Propose `key` on whichever of `replicas` leads, until one commits it.
fn write(replicas: &[Replica], key: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for r in replicas {
            if r.propose_wait(insert(key), Duration::from_secs(10)).is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no replica committed {key}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Three replicas of a new cluster; replica `faulty` keeps its WAL on `fs`.
fn open_three(dir: &std::path::Path, net: &InProcNetwork, fs: &SimFs, faulty: u64) -> Vec<Replica> {
    let voters = [1u64, 2, 3];
    voters
        .iter()
        .map(|&id| {
            let cfg = Config {
                // Steady leadership on a loaded machine.
                election_ticks: 50,
                ..Config::new(id)
            };
            let path = dir.join(format!("node-{id}"));
            let transport = Arc::new(net.transport(id));
            let r = if id == faulty {
                let wal_fs: Arc<dyn FileSystem> = Arc::new(fs.clone());
                Replica::open_with_wal_fs(&cfg, &path, transport, Some(&voters), wal_fs)
            } else {
                Replica::open(&cfg, &path, transport, Some(&voters))
            }
            .unwrap();
            net.register(r.inbox());
            r
        })
        .collect()
}

fn leads(r: &Replica) -> bool {
    r.status().is_ok_and(|s| s.leader == Some(s.id))
}

#[test]
fn a_follower_whose_fsync_fails_stops_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let net = InProcNetwork::new(7);
    let fs = SimFs::new();
    let replicas = open_three(dir.path(), &net, &fs, 3);
    // Replica 3 must be a follower: if it leads, it hands leadership to 1.
    wait_until("replica 1 or 2 leads", || {
        if leads(&replicas[2]) {
            // Refused if it just lost leadership: then asked again.
            let _ = replicas[2].node().transfer_leader(1);
        }
        replicas[..2].iter().any(leads)
    });
    for i in 0..5 {
        write(&replicas[..2], &format!("before/{i}"));
    }
    let applied = replicas[0].status().unwrap().commit;
    wait_until("replica 3 has the first writes", || {
        replicas[2].status().is_ok_and(|s| s.applied >= applied)
    });
    assert!(replicas[2].node().failure().is_none());
    fs.fail_next_sync();
    // Writes go on: replicas 1 and 2 are a quorum.
    for i in 0..20 {
        write(&replicas[..2], &format!("after/{i}"));
    }
    wait_until("replica 3 stops on its failed fsync", || {
        replicas[2].node().failure().is_some()
    });
    let why = replicas[2].node().failure().unwrap();
    assert!(
        why.contains("wal poisoned") && why.contains("fsync"),
        "stopped for another reason: {why}"
    );
    // Its proposals are refused, not left hanging.
    assert!(replicas[2]
        .propose_wait(insert("to/a/stopped/replica"), Duration::from_secs(30))
        .is_err());
    // The other two apply every write (a follower learns the last commit
    // index from the next heartbeat).
    wait_until("replicas 1 and 2 apply every write", || {
        replicas[..2]
            .iter()
            .all(|r| r.status().is_ok_and(|s| s.applied >= applied + 20))
    });
}

#[test]
fn a_leader_whose_fsync_fails_stops_and_the_others_elect_another() {
    let dir = tempfile::tempdir().unwrap();
    let net = InProcNetwork::new(8);
    let fs = SimFs::new();
    let replicas = open_three(dir.path(), &net, &fs, 1);
    wait_until("replica 1 leads", || {
        if !leads(&replicas[0]) {
            if let Some(other) = replicas[1..].iter().find(|r| leads(r)) {
                let _ = other.node().transfer_leader(1);
            } else {
                let _ = replicas[0].node().campaign();
            }
        }
        leads(&replicas[0])
    });
    for i in 0..5 {
        write(&replicas[..1], &format!("before/{i}"));
    }
    // Several clients at once, so the leader hands its writes to the WAL's
    // writer thread, which meets the failed fsync.
    std::thread::scope(|scope| {
        for c in 0..4 {
            let leader = &replicas[0];
            scope.spawn(move || {
                for i in 0.. {
                    let r =
                        leader.propose_wait(insert(&format!("c{c}/{i}")), Duration::from_secs(5));
                    if r.is_err() {
                        break;
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        fs.fail_next_sync();
    });
    wait_until("replica 1 stops on its failed fsync", || {
        replicas[0].node().failure().is_some()
    });
    let why = replicas[0].node().failure().unwrap();
    assert!(
        why.contains("wal poisoned") || why.contains("fsync"),
        "stopped for another reason: {why}"
    );
    for i in 0..10 {
        write(&replicas[1..], &format!("after/{i}"));
    }
}
