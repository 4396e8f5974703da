//! The snapshot catch-up measurement (`tandem snapbench`) at a few MiB, so
//! the tool keeps working: the follower must catch up by snapshot (one
//! build, one transfer, one install, every figure filled) and end with the
//! same data as the others.

use tandem::snapbench::{run, SnapBenchOptions};

#[test]
fn snapbench_runs_at_a_small_size() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = SnapBenchOptions {
        state_bytes: 4 << 20,
        value_bytes: 16 << 10,
        batch_values: 4,
        ..SnapBenchOptions::new(dir.path().join("c"))
    };
    let r = run(&opts).unwrap();
    eprint!("{}", r.table());
    assert_eq!(r.keys, 256);
    assert_eq!(r.state_bytes, 4 << 20);
    assert!(r.leader.builds >= 1, "{r:?}");
    // The snapshot holds at least the loaded values.
    assert!(r.leader.build_bytes >= r.state_bytes, "{r:?}");
    assert!(r.leader.build_us > 0, "{r:?}");
    assert_eq!(r.follower.receives, 1, "{r:?}");
    assert_eq!(r.follower.installs, 1, "{r:?}");
    assert!(r.follower.receive_bytes >= r.state_bytes, "{r:?}");
    assert_eq!(r.follower.install_bytes, r.follower.receive_bytes);
    assert!(
        r.follower.receive_us > 0 && r.follower.install_us > 0,
        "{r:?}"
    );
    assert!(r.sends_started >= 1 && r.builds_started >= 1, "{r:?}");
    if tandem::snapbench::rss_bytes().is_some() {
        assert!(
            r.rss_before_transfer > 0 && r.rss_peak_catch_up > 0,
            "{r:?}"
        );
    }
    assert!(r.catch_up > std::time::Duration::ZERO);
    assert!(r.verified, "the replicas were compared");
    assert!(r.table().contains("apply_stall_us_max"));
}

#[test]
fn snapbench_refuses_empty_sizes_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (state, value, batch) in [(0, 1024, 4), (1 << 20, 0, 4), (1 << 20, 1024, 0)] {
        let opts = SnapBenchOptions {
            state_bytes: state,
            value_bytes: value,
            batch_values: batch,
            ..SnapBenchOptions::new(dir.path().join("c"))
        };
        let err = run(&opts).unwrap_err().to_string();
        assert!(err.contains("must be positive"), "{err}");
    }
    // Nothing was created or wiped for a refused run.
    assert!(!dir.path().join("c").exists());
}
