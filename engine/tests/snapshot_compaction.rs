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
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.tick_interval = Duration::from_millis(5);
    cfg.node.sync = SyncPolicy::Never;
    cfg.node.max_value_bytes = 4 << 10;
    cfg.node.max_proposal_bytes = 64 << 10;
    cfg.node.wal_segment_bytes = 256 << 10;
    cfg.node.snapshot.compact_log_entries = 200;
    cfg.node.snapshot.compact_log_bytes = 1 << 20;
    cfg.client_deadline = Duration::from_secs(30);
    cfg
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
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in cluster.running() {
        let r = cluster.replica(id).unwrap();
        loop {
            let stats = r.wal().stats();
            if stats.first_index > n / 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id} never compacted: {stats:?} {:?}",
                r.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
