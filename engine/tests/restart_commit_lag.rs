//! Restart when the state machine applied past the WAL's commit index.
//!
//! A hard state whose only change is the commit index is written lazily (no
//! fdatasync of its own), and sled persists its applied index on its own:
//! after a power loss the WAL may hold an older commit index than what the
//! state machine applied. Opening must raise the commit index to the
//! applied index (an applied entry is committed), replay nothing twice, and
//! the replicas must go on serving and committing.

use std::time::Duration;

use tandem::cluster::replica_dir;
use tandem::raft::HardState;
use tandem::{Cluster, ClusterConfig};
use tandem_wal::{Wal, WalOptions};

const WRITES: u64 = 20;

fn config() -> ClusterConfig {
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.tick_interval = Duration::from_millis(5);
    cfg.client_deadline = Duration::from_secs(30);
    cfg
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

#[test]
fn replicas_restart_when_sled_applied_past_the_wal_commit_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    {
        let cluster = Cluster::open(dir.path(), cfg.clone()).unwrap();
        let db = cluster.db();
        for i in 0..WRITES {
            db.insert(key(i), i.to_le_bytes()).unwrap();
        }
        // A write is acknowledged once a quorum has it: the third replica
        // may still be receiving (or writing) the last ones. Shut down once
        // every replica has applied them all, which is the state this test
        // starts from.
        let last = cluster.status().iter().map(|s| s.commit).max().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while cluster.status().iter().any(|s| s.applied < last) {
            assert!(
                std::time::Instant::now() < deadline,
                "replicas did not all apply {last}: {:#?}",
                cluster.status()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(db);
        cluster.shutdown();
    }
    // What a power loss may leave behind: every entry durable in the log,
    // the state machine applied through the last write, and a commit index
    // from long before (here: the bootstrap's).
    let wal_opts = WalOptions {
        segment_bytes: cfg.node.wal_segment_bytes,
        ..WalOptions::default()
    };
    for id in 1..=3 {
        let wal = Wal::open(replica_dir(dir.path(), id).join("wal"), wal_opts.clone()).unwrap();
        let hs = wal.hard_state().unwrap();
        assert!(wal.last_index().unwrap() > WRITES);
        let lowered = HardState { commit: 1, ..hs };
        wal.set_hard_state(lowered).unwrap().wait().unwrap();
    }
    let cluster = Cluster::open(dir.path(), cfg).unwrap();
    for st in cluster.status() {
        assert!(
            st.applied > WRITES && st.commit >= st.applied,
            "replica {} restarted with applied {} and commit {}",
            st.id,
            st.applied,
            st.commit
        );
    }
    let db = cluster.db();
    for i in 0..WRITES {
        assert_eq!(
            db.get(key(i)).unwrap().as_deref(),
            Some(&i.to_le_bytes()[..]),
            "write {i} after the restart"
        );
    }
    db.insert(b"after", b"restart").unwrap();
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"restart"[..]));
}
