//! The `tandem` binary's inspection commands on a cluster's directory:
//! `status` (every replica's on-disk state) and `wal inspect`, run as a user
//! would, after the cluster stopped and while one replica still runs.

use std::process::Command;
use std::time::Duration;

use tandem::{Cluster, ClusterConfig};

fn tandem(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("run tandem");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of `status` output for replica directory `node-<id>`.
fn line_of(out: &str, id: u64) -> &str {
    out.lines()
        .find(|l| l.contains(&format!("node-{id} ")))
        .unwrap_or_else(|| panic!("no line for node-{id} in:\n{out}"))
}

#[test]
fn status_and_wal_inspect_describe_a_cluster_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.tick_interval = Duration::from_millis(5);
    let cluster = Cluster::open(dir.path(), cfg).unwrap();
    let db = cluster.db();
    for i in 0..20u32 {
        db.insert(format!("k{i}"), b"v").unwrap();
    }
    let leader = cluster.wait_leader(Duration::from_secs(20)).unwrap();
    let gone = (1..=3).find(|&i| i != leader).unwrap();
    cluster.remove(gone).unwrap();
    db.insert(b"after", b"removal").unwrap();
    let stayed: Vec<u64> = (1..=3).filter(|&i| i != gone).collect();
    let commit = cluster.replica(leader).unwrap().status().unwrap().commit;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.status().iter().any(|s| s.applied < commit) {
        assert!(
            std::time::Instant::now() < deadline,
            "replicas did not apply {commit}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // While replicas run, their directories are reported in use.
    let root = dir.path().to_str().unwrap();
    let (ok, out, err) = tandem(&["status", root]);
    assert!(ok, "{err}");
    assert!(line_of(&out, leader).contains(" open "), "{out}");
    assert!(line_of(&out, leader).contains("in use"), "{out}");

    cluster.shutdown();
    drop(db);
    drop(cluster);
    let (ok, out, err) = tandem(&["status", root]);
    assert!(ok, "{err}");
    for &id in &stayed {
        let line = line_of(&out, id);
        assert!(line.contains(" closed "), "{out}");
        // The survivors hold the new membership and know whom they removed.
        assert!(
            line.contains(&format!("{stayed:?} / []")),
            "replica {id}: {line}"
        );
        assert!(
            line.contains(&format!("(removed: {{{gone}}})")),
            "replica {id}: {line}"
        );
        let fields: Vec<&str> = line.split_whitespace().collect();
        let applied: u64 = fields[5].parse().unwrap();
        assert!(
            applied >= commit,
            "replica {id} applied {applied} < {commit}: {line}"
        );
    }

    // The removed replica's directory stays, with the configuration it last knew.
    assert!(line_of(&out, gone).contains(" closed "), "{out}");

    let node = dir.path().join(format!("node-{leader}"));
    let (ok, out, err) = tandem(&["wal", "inspect", node.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("entries 1..="), "{out}");
    let first_segment = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("no segment 1 in:\n{out}"));
    assert!(first_segment.trim_end().ends_with("Ok"), "{first_segment}");

    // Bad input is an error with a message (and nothing on stdout), not a panic.
    let (ok, out, err) = tandem(&["status", dir.path().join("nowhere").to_str().unwrap()]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("not a directory"), "{err}");
    let (ok, _, err) = tandem(&["wal", "inspect", root]);
    assert!(!ok);
    assert!(err.contains("no wal/"), "{err}");
}
