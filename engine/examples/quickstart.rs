//! A three-replica cluster in a temporary directory: writes, reads of each
//! consistency, a failover, and a restart from disk.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use tandem::{Cluster, ClusterConfig, ReadConsistency, WriteBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let cluster = Cluster::open(dir.path(), ClusterConfig::with_replicas(3))?;
        let db = cluster.db();

        db.insert(b"hello", b"world")?;
        let mut batch = WriteBatch::new();
        batch.insert(b"fruit/apple".to_vec(), b"red".to_vec());
        batch.insert(b"fruit/banana".to_vec(), b"yellow".to_vec());
        db.apply_batch(batch)?;
        assert!(db
            .compare_and_swap(b"hello", Some(b"world"), Some(b"there"))?
            .is_ok());

        // Linearizable (the default), lease-based, or stale — per call.
        assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"there"[..]));
        let lease = db.get_with(b"hello", ReadConsistency::Lease)?;
        let stale = db.get_with(b"hello", ReadConsistency::Stale)?;
        println!(
            "lease read from node {}, stale read from node {} (stale: {})",
            lease.served_by, stale.served_by, stale.stale
        );
        for kv in db.scan_prefix(b"fruit/")? {
            let (k, v) = kv?;
            println!(
                "{} = {}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            );
        }

        // Stop the leader: the others elect a new one and the handle follows it.
        let leader = cluster.wait_leader(Duration::from_secs(10))?;
        cluster.stop(leader)?;
        db.insert(b"after-failover", b"still works")?;
        println!(
            "node {leader} stopped; node {:?} leads now",
            cluster.leader()
        );
        cluster.restart(leader)?;
        for s in cluster.status() {
            println!(
                "node {}: {:?} term {} commit {} applied {}",
                s.id, s.role, s.term, s.commit, s.applied
            );
        }
    }
    // Everything survives a restart of the whole cluster from disk.
    let cluster = Cluster::open(dir.path(), ClusterConfig::with_replicas(3))?;
    assert_eq!(
        cluster.db().get(b"after-failover")?.as_deref(),
        Some(&b"still works"[..])
    );
    println!("reopened from {}: all data present", dir.path().display());
    Ok(())
}
