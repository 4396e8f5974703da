//! The linearizability checker on histories of the real engine: threads of
//! clients on an on-disk `Cluster` while replicas crash, restart and get
//! cut off, every operation recorded and the whole history checked; and a
//! deliberately stale read, which the checker must catch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem::raft::StateRole;
use tandem::transport::Faults;
use tandem::verify::invariants::check_election_safety;
use tandem::verify::{check, CheckResult, HistoryRecorder, Op, Outcome, Output};
use tandem::{Cluster, ClusterConfig, Db, Error};

fn config() -> ClusterConfig {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let mut cfg = ClusterConfig::with_replicas(3);
    cfg.node.tick_interval = Duration::from_millis(5);
    cfg.client_deadline = Duration::from_secs(5);
    cfg
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `op` against the database and records it: an answer completes it,
/// an error that guarantees no effect drops it, any other error leaves it
/// pending (it may still take effect).
fn run(db: &Db, recorder: &HistoryRecorder, client: u64, op: Op) {
    let id = recorder.invoke(client, op.clone());
    let result: Result<Output, Error> = match op {
        Op::Get { key } => db.get(&key).map(|v| Output::Value(v.map(|v| v.to_vec()))),
        Op::Insert { key, value } => db.insert(&key, &value).map(|()| Output::Written),
        Op::Remove { key } => db.remove(&key).map(|()| Output::Written),
        Op::CompareAndSwap { key, expected, new } => db
            .compare_and_swap(&key, expected, new)
            .map(|r| Output::Cas(r.map_err(|mismatch| mismatch.current))),
    };
    match result {
        Ok(output) => recorder.complete(id, output),
        Err(e) if e.is_retryable() => recorder.fail_no_effect(id),
        Err(_) => recorder.fail_unknown(id),
    }
}

/// A random operation on a few keys with a few values, so that clients
/// contend and CASes sometimes succeed.
fn random_op(rng: &mut ChaCha8Rng) -> Op {
    let key = format!("key-{}", rng.gen_range(0..3)).into_bytes();
    let value = |rng: &mut ChaCha8Rng| format!("v{}", rng.gen_range(0..4)).into_bytes();
    match rng.gen_range(0..10) {
        0..=3 => Op::Get { key },
        4..=6 => Op::Insert {
            key,
            value: value(rng),
        },
        7 => Op::Remove { key },
        _ => Op::CompareAndSwap {
            key,
            expected: rng.gen_bool(0.8).then(|| value(rng)),
            new: rng.gen_bool(0.9).then(|| value(rng)),
        },
    }
}

#[test]
fn concurrent_clients_under_crashes_and_partitions_stay_linearizable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::open(dir.path(), config()).expect("open cluster");
    cluster
        .wait_leader(Duration::from_secs(30))
        .expect("first leader");
    let recorder = Arc::new(HistoryRecorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    const CLIENTS: u64 = 4;
    // Two fault rounds in CI; `TANDEM_CHAOS_ROUNDS=50` for a long run.
    let fault_rounds: u64 = std::env::var("TANDEM_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // Clients run until the faults are over; this only bounds the history.
    let ops_per_client_max = 1_000 + 2_000 * fault_rounds as usize;

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let db = cluster.db();
            let recorder = Arc::clone(&recorder);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(client);
                let mut ops = 0;
                while !stop.load(Ordering::Relaxed) && ops < ops_per_client_max {
                    run(&db, &recorder, client, random_op(&mut rng));
                    ops += 1;
                }
            })
        })
        .collect();

    // Faults while the clients run: crash and restart the leader, isolate
    // a replica, then a flaky network, then heal, then replace a voter (the
    // leader every other round) by a new replica through a joint
    // configuration; twice.
    let nemesis = {
        let cluster = Arc::clone(&cluster);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let pause = || std::thread::sleep(Duration::from_millis(150));
            for round in 1..=fault_rounds {
                pause();
                if let Some(leader) = cluster.leader() {
                    cluster.stop(leader).expect("stop the leader");
                    pause();
                    cluster.restart(leader).expect("restart it");
                }
                pause();
                let running = cluster.running();
                let victim = running[round as usize % running.len()];
                cluster.network().isolate(victim);
                pause();
                cluster.network().rejoin(victim);
                cluster.network().set_faults(Faults {
                    drop_rate: 0.05,
                    delay_min: Duration::ZERO,
                    delay_max: Duration::from_millis(3),
                    reorder: true,
                    ..Default::default()
                });
                pause();
                cluster.network().set_faults(Faults::default());
                cluster.network().heal();
                let leader = cluster
                    .wait_leader(Duration::from_secs(30))
                    .expect("a leader after healing");
                let old = if round % 2 == 0 {
                    leader
                } else {
                    *cluster
                        .running()
                        .iter()
                        .find(|&&id| id != leader)
                        .expect("a follower")
                };
                let new = 3 + round;
                match cluster.replace(old, new) {
                    Ok(()) => {}
                    // A slow machine can outlast the client deadline; the
                    // change must still complete.
                    Err(Error::Timeout(_) | Error::NoQuorum(_)) => {
                        wait_until("the replacement to complete", || {
                            cluster
                                .leader()
                                .and_then(|l| cluster.replica(l))
                                .is_some_and(|r| {
                                    r.status().is_ok_and(|s| {
                                        let cs = s.conf_state;
                                        cs.voters.contains(&new)
                                            && !cs.voters.contains(&old)
                                            && cs.voters_outgoing.is_empty()
                                    })
                                })
                        });
                        if cluster.replica(old).is_some() {
                            cluster.stop(old).expect("stop the replaced voter");
                        }
                    }
                    Err(e) => panic!(
                        "round {round}: replace {old} by {new}: {e}; {:#?}",
                        cluster.status()
                    ),
                }
            }
            // Some operations on the healed cluster, then stop the clients.
            cluster
                .wait_leader(Duration::from_secs(30))
                .expect("a leader after healing");
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
        })
    };

    // Meanwhile sample who claims to lead which term: two replicas leading
    // one term, at any two instants, break election safety.
    let monitor = {
        let cluster = Arc::clone(&cluster);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut claims = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                claims.extend(
                    cluster
                        .status()
                        .into_iter()
                        .filter(|s| s.role == StateRole::Leader)
                        .map(|s| (s.term, s.id)),
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            claims
        })
    };

    nemesis.join().expect("nemesis thread");
    for client in clients {
        client.join().expect("client thread");
    }
    let claims = monitor.join().expect("monitor thread");
    assert!(
        !claims.is_empty(),
        "the monitor ran while a leader was up and saw no leader"
    );
    if let Err(violation) = check_election_safety(claims) {
        panic!("{violation}");
    }
    let rounds = fault_rounds;
    cluster.shutdown();

    let history = recorder.history();
    eprintln!(
        "{} operations recorded under {rounds} fault rounds",
        history.len()
    );
    let completed = history
        .operations()
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Returned { .. }))
        .count();
    // Without answers the check would be vacuous; with a 5 s deadline and
    // faults lasting a fraction of that, most operations complete.
    assert!(
        completed * 2 > history.len(),
        "only {completed} of {} operations completed ({rounds} fault rounds)",
        history.len()
    );
    let result = check(&history);
    assert!(
        result.is_linearizable(),
        "{result}\n({} operations, {completed} completed, {rounds} fault rounds)",
        history.len()
    );
}

#[test]
fn a_stale_read_from_an_isolated_replica_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::open(dir.path(), config()).expect("open cluster");
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .expect("first leader");
    let db = cluster.db();
    let recorder = HistoryRecorder::new();
    let key = b"k".to_vec();

    run(
        &db,
        &recorder,
        1,
        Op::Insert {
            key: key.clone(),
            value: b"old".to_vec(),
        },
    );
    let follower = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    wait_until("the follower to apply the first write", || {
        db.get_stale_from(follower, &key)
            .is_ok_and(|r| r.value.as_deref() == Some(b"old".as_slice()))
    });
    cluster.network().isolate(follower);
    run(
        &db,
        &recorder,
        1,
        Op::Insert {
            key: key.clone(),
            value: b"new".to_vec(),
        },
    );
    // A stale (local) read on the cut-off follower, recorded as if it were a
    // linearizable read: the checker must object.
    let id = recorder.invoke(2, Op::Get { key: key.clone() });
    let read = db.get_stale_from(follower, &key).expect("stale read");
    recorder.complete(id, Output::Value(read.value.map(|v| v.to_vec())));
    cluster.network().heal();
    cluster.shutdown();

    let history = recorder.history();
    assert_eq!(history.len(), 3);
    assert!(
        history
            .operations()
            .iter()
            .all(|o| matches!(o.outcome, Outcome::Returned { .. })),
        "both writes must be acknowledged for the read to be stale: {history:?}"
    );
    let CheckResult::NotLinearizable(counterexample) = check(&history) else {
        panic!("a stale read of \"old\" after \"new\" was acknowledged must be rejected");
    };
    assert_eq!(counterexample.key, key);
    assert!(
        counterexample
            .operations
            .iter()
            .any(|o| o.client == 2 && matches!(o.op, Op::Get { .. })),
        "{counterexample}"
    );
}
