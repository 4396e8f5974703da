//! Log compaction in a running cluster: the log stays bounded under a long
//! write load (first index advances, segments are deleted).
//!
//! Scale with `TANDEM_SNAP_WRITES` (default 3 000 writes).

use std::time::{Duration, Instant};

use tandem::{Cluster, ClusterConfig, SyncPolicy};

fn writes() -> u64 {
    std::env::var("TANDEM_SNAP_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
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
    // Elections of 300-600 ms, as in the catch-up tests: on a loaded machine
    // 100-200 ms elections moved the leader, and a new leader whose own log
    // was compacted further than a follower's sends that follower a
    // snapshot, which this test does not mean to exercise (it tolerates it).
    cfg.node.election_ticks = 60;
    cfg.node.sync = SyncPolicy::Never;
    cfg.node.max_value_bytes = 4 << 10;
    cfg.node.max_proposal_bytes = 64 << 10;
    cfg.node.wal_segment_bytes = 256 << 10;
    cfg.node.snapshot.compact_log_entries = 200;
    cfg.node.snapshot.compact_log_bytes = 1 << 20;
    cfg.client_deadline = Duration::from_secs(30);
    cfg
}

/// Poll `f` until it holds; after 120 s fail with every replica's status.
fn wait_until(cluster: &Cluster, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        if Instant::now() > deadline {
            let wal: Vec<_> = cluster
                .running()
                .into_iter()
                .map(|id| (id, cluster.replica(id).unwrap().wal().stats()))
                .collect();
            panic!(
                "timed out waiting for: {what}\nstatus: {:#?}\nwal: {wal:#?}",
                cluster.status()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn log_stays_bounded_under_a_long_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let cluster = Cluster::open(dir.path(), cfg.clone()).unwrap();
    let db = cluster.db();
    let n = writes();
    let threads = 4;
    let value = vec![7u8; 1024];
    let mut max_segments = 0;
    let mut max_span = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let db = db.clone();
                let value = value.clone();
                s.spawn(move || {
                    for i in (t..n).step_by(threads as usize) {
                        db.insert(format!("key-{i:08}"), &value).unwrap();
                    }
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            for id in cluster.running() {
                let stats = cluster.replica(id).unwrap().wal().stats();
                max_segments = max_segments.max(stats.segments);
                max_span = max_span.max(stats.last_index + 1 - stats.first_index);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    // Without compaction the log would hold every write: n KiB of values
    // in 256 KiB segments.
    let uncompacted_segments = (n as usize * 1100).div_ceil(256 << 10);
    // Wait on conditions, not on a fixed time: first every replica applies
    // everything the leader committed (a follower that fell behind a
    // compaction point catches up by snapshot first), then each compacts
    // past half of the writes. The bounds only turn a hang into a failure
    // that shows every replica's state.
    let leader = cluster.wait_leader(Duration::from_secs(30)).unwrap();
    let commit = cluster.replica(leader).unwrap().status().unwrap().commit;
    wait_until(
        &cluster,
        "every replica applies the final commit index",
        || cluster.status().iter().all(|s| s.applied >= commit),
    );
    for id in cluster.running() {
        let r = cluster.replica(id).unwrap();
        wait_until(
            &cluster,
            &format!("replica {id} compacts past {}", n / 2),
            || r.wal().stats().first_index > n / 2,
        );
        assert!(
            r.state_machine().durable_applied() >= r.wal().stats().first_index - 1,
            "never compacted past the durable applied index"
        );
        let counters = r.status().unwrap().counters;
        assert!(counters.compactions >= 2, "{counters:?}");
    }
    eprintln!(
        "writes {n}: max segments {max_segments} (uncompacted {uncompacted_segments}), \
         max entries in a log {max_span}"
    );
    assert!(
        max_segments <= 6 && max_segments * 2 < uncompacted_segments.max(12),
        "segments are deleted: at most {max_segments} in use, {uncompacted_segments} without compaction"
    );
    assert!(
        max_span < n * 2 / 3,
        "the log span stayed bounded: {max_span} entries of {n}"
    );
    // The data is all there after compaction.
    assert_eq!(
        db.range::<&[u8], _>(..).unwrap().count() as u64,
        n,
        "every write is readable"
    );
    drop(db);
    drop(cluster);
    // A restart from the compacted logs works (replay starts at the
    // compaction point, never before).
    let cluster = Cluster::open(dir.path(), cfg).unwrap();
    let db = cluster.db();
    db.insert(b"after-restart", b"1").unwrap();
    assert_eq!(db.range::<&[u8], _>(..).unwrap().count() as u64, n + 1);
}
