//! The transfer protocol end to end (drivers with real disk IO) over a
//! seeded, lossy simulated network: drops, duplicates, reordering and
//! corrupted chunks; leader changes; stale transfers.
//!
//! More seeds: `TANDEM_SNAPSHOT_SEEDS=1000 cargo test -p tandem-snapshot --test transfer_sim`.

mod common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_snapshot::transfer::ReceiverStats;
use tandem_snapshot::{
    AbortReason, ReceiverConfig, ReceiverDriver, ReceiverEvent, SenderConfig, SenderDriver,
    SnapshotReader, Stager, TransferId, TransferMsg,
};

#[derive(Clone, Copy)]
struct Faults {
    drop: f64,
    dup: f64,
    corrupt_chunk: f64,
    delay_ticks_max: u64,
}

const CLEAN: Faults = Faults {
    drop: 0.0,
    dup: 0.0,
    corrupt_chunk: 0.0,
    delay_ticks_max: 0,
};

/// One direction of the network: messages with a delivery tick.
struct Link {
    queue: Vec<(u64, u64, TransferMsg)>,
    seq: u64,
    corrupted: u64,
}

impl Link {
    fn new() -> Self {
        Link {
            queue: Vec::new(),
            seq: 0,
            corrupted: 0,
        }
    }

    /// Every message goes through its wire encoding.
    fn send(&mut self, rng: &mut ChaCha8Rng, f: Faults, now: u64, msg: TransferMsg) {
        if rng.gen_bool(f.drop) {
            return;
        }
        let copies = if rng.gen_bool(f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut m = TransferMsg::decode(&msg.encode()).unwrap();
            if let TransferMsg::Chunk { bytes, .. } = &mut m {
                if rng.gen_bool(f.corrupt_chunk) {
                    let i = rng.gen_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.gen_range(0..8);
                    self.corrupted += 1;
                }
            }
            let at = now + rng.gen_range(0..=f.delay_ticks_max);
            self.seq += 1;
            self.queue.push((at, self.seq, m));
        }
    }

    /// Due messages, in a random order among those due.
    fn due(&mut self, rng: &mut ChaCha8Rng, now: u64) -> Vec<TransferMsg> {
        let mut due = Vec::new();
        let mut keep = Vec::new();
        for e in self.queue.drain(..) {
            if e.0 <= now {
                due.push(e);
            } else {
                keep.push(e);
            }
        }
        self.queue = keep;
        // Shuffle: reordering within a tick.
        for i in (1..due.len()).rev() {
            let j = rng.gen_range(0..=i);
            due.swap(i, j);
        }
        due.into_iter().map(|e| e.2).collect()
    }
}

struct Sim {
    rng: ChaCha8Rng,
    faults: Faults,
    now: u64,
    to_rx: Link,
    to_tx: Link,
    rx: ReceiverDriver,
    completed: Vec<(TransferId, SnapshotReader)>,
    failed: Vec<(TransferId, AbortReason)>,
}

impl Sim {
    fn new(seed: u64, faults: Faults, snap_dir: &std::path::Path, rcfg: ReceiverConfig) -> Self {
        let stager = Stager::open(snap_dir).unwrap();
        Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults,
            now: 0,
            to_rx: Link::new(),
            to_tx: Link::new(),
            rx: ReceiverDriver::new(stager, rcfg).unwrap(),
            completed: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn rx_out(&mut self, out: (Vec<TransferMsg>, Vec<ReceiverEvent>)) {
        for m in out.0 {
            self.to_tx.send(&mut self.rng, self.faults, self.now, m);
        }
        for e in out.1 {
            match e {
                ReceiverEvent::Completed { id, snapshot } => self.completed.push((id, snapshot)),
                ReceiverEvent::Failed { id, reason } => self.failed.push((id, reason)),
            }
        }
    }

    fn tx_out(
        &mut self,
        out: (Vec<TransferMsg>, Option<Result<(), AbortReason>>),
    ) -> Option<Result<(), AbortReason>> {
        for m in out.0 {
            self.to_rx.send(&mut self.rng, self.faults, self.now, m);
        }
        out.1
    }

    /// One tick: deliver due messages both ways, then tick both sides.
    /// Messages to the sender go to `tx` if present (an aborted sender is
    /// gone).
    fn step(
        &mut self,
        tx: Option<&mut SenderDriver>,
        window: u32,
    ) -> Option<Result<(), AbortReason>> {
        let mut outcome = None;
        for m in self.to_rx.due(&mut self.rng, self.now) {
            let out = self.rx.on_message(m);
            self.rx_out(out);
        }
        let to_tx = self.to_tx.due(&mut self.rng, self.now);
        if let Some(tx) = tx {
            for m in to_tx {
                let out = tx.on_message(&m);
                outcome = outcome.or(self.tx_out(out));
                assert!(tx.sender().inflight() <= window as usize, "window exceeded");
            }
            let out = tx.tick();
            outcome = outcome.or(self.tx_out(out));
        }
        let out = self.rx.tick();
        self.rx_out(out);
        self.now += 1;
        outcome
    }
}

fn seeds() -> u64 {
    std::env::var("TANDEM_SNAPSHOT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

fn id(leader_term: u64, attempt: u64) -> TransferId {
    TransferId {
        leader_term,
        from: 1,
        index: 50,
        term: 2,
        attempt,
    }
}

fn sender_cfg(window: u32) -> SenderConfig {
    SenderConfig {
        window_chunks: window,
        retransmit_ticks: 6,
        max_retries: 30,
        done_timeout_ticks: 2_000,
    }
}

/// Runs one transfer to its end; returns (outcome, sender).
fn run_to_end(
    sim: &mut Sim,
    tx: &mut SenderDriver,
    window: u32,
    seed: u64,
) -> Result<(), AbortReason> {
    let out = tx.start();
    sim.tx_out(out);
    for _ in 0..200_000 {
        if let Some(r) = sim.step(Some(tx), window) {
            return r;
        }
    }
    panic!("seed {seed}: transfer did not finish");
}

#[test]
fn lossy_network_transfers_exact_snapshot() {
    for seed in 0..seeds() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfeed);
        let n = rng.gen_range(0..250);
        let pairs = common::pairs(seed, n);
        let chunk_bytes = rng.gen_range(256..4096);
        let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, chunk_bytes);
        let window = rng.gen_range(1..8);
        let faults = Faults {
            drop: 0.1,
            dup: 0.1,
            corrupt_chunk: 0.1,
            delay_ticks_max: 4,
        };
        let mut sim = Sim::new(
            seed,
            faults,
            &tmp.path().join("follower"),
            ReceiverConfig {
                idle_timeout_ticks: 10_000,
            },
        );
        let mut tx = SenderDriver::new(id(3, 0), src.clone(), sender_cfg(window)).unwrap();
        let r = run_to_end(&mut sim, &mut tx, window, seed);
        assert_eq!(r, Ok(()), "seed {seed}");
        assert_eq!(sim.completed.len(), 1, "seed {seed}");
        let (cid, got) = &sim.completed[0];
        assert_eq!(*cid, id(3, 0));
        assert_eq!(got.manifest(), src.manifest(), "seed {seed}");
        assert_eq!(common::read_all(got), pairs, "seed {seed}");
        // Every corrupted chunk that reached the receiver was rejected, never staged.
        let st: ReceiverStats = sim.rx.receiver().stats();
        assert!(st.chunks_rejected <= sim.to_rx.corrupted, "seed {seed}");
        assert!(sim.failed.is_empty(), "seed {seed}: {:?}", sim.failed);
    }
}

#[test]
fn corrupted_chunk_is_detected_and_resent() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(7, 300);
    let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, 256);
    assert!(src.manifest().chunk_count > 10);
    let faults = Faults {
        corrupt_chunk: 0.3,
        ..CLEAN
    };
    let mut sim = Sim::new(
        7,
        faults,
        &tmp.path().join("follower"),
        ReceiverConfig::default(),
    );
    let mut tx = SenderDriver::new(id(3, 0), src.clone(), sender_cfg(4)).unwrap();
    assert_eq!(run_to_end(&mut sim, &mut tx, 4, 7), Ok(()));
    assert!(sim.to_rx.corrupted > 0);
    // Without drops every corrupted chunk arrives, is rejected and re-sent.
    assert_eq!(
        sim.rx.receiver().stats().chunks_rejected,
        sim.to_rx.corrupted
    );
    assert!(tx.sender().stats().chunks_resent >= sim.to_rx.corrupted);
    assert_eq!(common::read_all(&sim.completed[0].1), pairs);
}

#[test]
fn leader_change_abandons_transfer_and_new_leader_restarts() {
    for seed in 0..seeds() {
        let tmp = tempfile::tempdir().unwrap();
        let pairs = common::pairs(seed, 120);
        let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, 400);
        let faults = Faults {
            drop: 0.05,
            delay_ticks_max: 3,
            ..CLEAN
        };
        let mut sim = Sim::new(
            seed,
            faults,
            &tmp.path().join("follower"),
            ReceiverConfig {
                idle_timeout_ticks: 10_000,
            },
        );
        let mut old = SenderDriver::new(id(3, 0), src.clone(), sender_cfg(4)).unwrap();
        let out = old.start();
        sim.tx_out(out);
        // Run the old leader's transfer part way.
        let stop_at = ChaCha8Rng::seed_from_u64(seed).gen_range(2..25);
        for _ in 0..stop_at {
            assert_eq!(
                sim.step(Some(&mut old), 4),
                None,
                "seed {seed}: finished too early"
            );
        }
        // Leadership moves: the old sender aborts, and its Abort is lost.
        let (msgs, outcome) = old.abort(AbortReason::LeaderChanged);
        assert_eq!(outcome, Some(Err(AbortReason::LeaderChanged)));
        assert_eq!(msgs.len(), 1);
        // Node 2 leads term 4 and sends the same snapshot (the state at
        // index 50 is the same everywhere) with its own first attempt number.
        let new_id = TransferId {
            from: 2,
            ..id(4, 0)
        };
        let mut new = SenderDriver::new(new_id, src, sender_cfg(4)).unwrap();
        assert_eq!(
            run_to_end(&mut sim, &mut new, 4, seed),
            Ok(()),
            "seed {seed}"
        );
        assert_eq!(sim.completed.len(), 1, "seed {seed}");
        assert_eq!(sim.completed[0].0, new_id);
        assert_eq!(common::read_all(&sim.completed[0].1), pairs);
        // The old transfer, if it had begun, was reported as superseded.
        for (fid, reason) in &sim.failed {
            assert_eq!(
                (*fid, *reason),
                (id(3, 0), AbortReason::Superseded),
                "seed {seed}"
            );
        }
        // Only the published snapshot is left in snap/.
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("follower"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "seed {seed}: {names:?}");
        assert!(names[0].starts_with("snapshot-"));
    }
}

#[test]
fn old_leader_chunks_after_new_term_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(1, 100);
    let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, 128);
    let mut sim = Sim::new(
        1,
        CLEAN,
        &tmp.path().join("follower"),
        ReceiverConfig::default(),
    );
    let mut old = SenderDriver::new(id(3, 0), src, sender_cfg(2)).unwrap();
    let out = old.start();
    sim.tx_out(out);
    for _ in 0..3 {
        sim.step(Some(&mut old), 2);
    }
    assert!(!sim.rx.receiver().is_idle());
    // Raft on the follower learns of term 4: the transfer of term 3 is dropped.
    let out = sim.rx.on_term(4);
    sim.rx_out(out);
    assert_eq!(sim.failed, vec![(id(3, 0), AbortReason::Superseded)]);
    assert!(sim.rx.receiver().is_idle());
    // The old leader keeps going and is told to stop.
    let mut outcome = None;
    for _ in 0..50 {
        outcome = outcome.or(sim.step(Some(&mut old), 2));
    }
    assert_eq!(outcome, Some(Err(AbortReason::Superseded)));
    assert!(sim.completed.is_empty());
    assert!(sim.rx.receiver().stats().stale_messages > 0);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("follower"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn silent_sender_times_out_and_a_restart_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(2, 200);
    let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, 128);
    let mut sim = Sim::new(
        2,
        CLEAN,
        &tmp.path().join("follower"),
        ReceiverConfig {
            idle_timeout_ticks: 20,
        },
    );
    let mut first = SenderDriver::new(id(3, 0), src.clone(), sender_cfg(2)).unwrap();
    let out = first.start();
    sim.tx_out(out);
    for _ in 0..4 {
        sim.step(Some(&mut first), 2);
    }
    // The sender vanishes (crash): the receiver gives up after its idle timeout.
    drop(first);
    for _ in 0..25 {
        sim.step(None, 2);
    }
    assert_eq!(sim.failed, vec![(id(3, 0), AbortReason::TimedOut)]);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("follower"))
            .unwrap()
            .count(),
        0
    );
    // A restarted leader (same term, next attempt) starts over and succeeds.
    let mut second = SenderDriver::new(id(3, 1), src, sender_cfg(2)).unwrap();
    assert_eq!(run_to_end(&mut sim, &mut second, 2, 2), Ok(()));
    assert_eq!(common::read_all(&sim.completed[0].1), pairs);
}

#[test]
fn stale_attempt_offer_is_refused_while_newer_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(3, 100);
    let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, 128);
    let mut sim = Sim::new(
        3,
        CLEAN,
        &tmp.path().join("follower"),
        ReceiverConfig::default(),
    );
    let mut newer = SenderDriver::new(id(3, 5), src.clone(), sender_cfg(2)).unwrap();
    let out = newer.start();
    sim.tx_out(out);
    sim.step(Some(&mut newer), 2);
    // A delayed offer of an older attempt arrives.
    let mut older = SenderDriver::new(id(3, 4), src, sender_cfg(2)).unwrap();
    let (msgs, _) = older.start();
    let mut refused = false;
    for m in msgs {
        let (replies, events) = sim.rx.on_message(m);
        assert!(events.is_empty());
        for r in replies {
            let (_, outcome) = older.on_message(&r);
            refused |= outcome == Some(Err(AbortReason::Superseded));
        }
    }
    assert!(refused);
    assert_eq!(run_to_end_started(&mut sim, &mut newer, 2), Ok(()));
    assert_eq!(sim.completed[0].0, id(3, 5));
}

fn run_to_end_started(
    sim: &mut Sim,
    tx: &mut SenderDriver,
    window: u32,
) -> Result<(), AbortReason> {
    for _ in 0..100_000 {
        if let Some(r) = sim.step(Some(tx), window) {
            return r;
        }
    }
    panic!("transfer did not finish");
}

#[test]
fn empty_snapshot_transfers() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::build(&tmp.path().join("leader"), 50, 2, &[], 128);
    assert_eq!(src.manifest().chunk_count, 0);
    let mut sim = Sim::new(
        4,
        CLEAN,
        &tmp.path().join("follower"),
        ReceiverConfig::default(),
    );
    let mut tx = SenderDriver::new(id(3, 0), src.clone(), sender_cfg(2)).unwrap();
    assert_eq!(run_to_end(&mut sim, &mut tx, 2, 4), Ok(()));
    assert_eq!(sim.completed[0].1.manifest(), src.manifest());
}

#[test]
fn sender_read_failure_aborts_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = common::pairs(5, 100);
    let src = common::build(&tmp.path().join("leader"), 50, 2, &pairs, 128);
    // Damage a chunk on the leader's disk: the sender must not send it.
    let victim = src.dir().join(tandem_snapshot::chunk_file_name(3));
    let mut b = std::fs::read(&victim).unwrap();
    b[50] ^= 0xff;
    std::fs::write(&victim, b).unwrap();
    let mut sim = Sim::new(
        5,
        CLEAN,
        &tmp.path().join("follower"),
        ReceiverConfig::default(),
    );
    let mut tx = SenderDriver::new(id(3, 0), src, sender_cfg(2)).unwrap();
    assert_eq!(
        run_to_end(&mut sim, &mut tx, 2, 5),
        Err(AbortReason::SenderIo)
    );
    for _ in 0..10 {
        sim.step(None, 2);
    }
    assert_eq!(sim.failed, vec![(id(3, 0), AbortReason::SenderIo)]);
    assert!(sim.completed.is_empty());
}
