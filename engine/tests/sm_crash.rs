//! kill -9 test: a child process appends entries to the WAL, applies them to
//! the state machine and prints each acknowledged applied index; the parent
//! kills it with SIGKILL at a point chosen by count (never by time), then
//! reopens the replica (WAL + sled) and checks that
//! - sled on its own shows a state equal to the model at sled's applied
//!   index (no partial batch is visible), and
//! - after replaying the committed log, every acknowledged write is there
//!   and the state equals the model at the new applied index.
//!
//! The child also flushes durably and compacts the log now and then, so the
//! test fails if compaction ever passes what sled can recover.
//!
//! Several kill rounds run on the same directory. `TANDEM_SM_CRASH_ROUNDS`
//! sets their number (default 4).

mod sm_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem::raft::HardState;
use tandem::sm::{DiskStorage, SmOptions, StateMachine};
use tandem_wal::{Wal, WalOptions};

use sm_support::{command_at, contents, entry, Model};

const CHILD_ENV: &str = "TANDEM_SM_CRASH_CHILD";
const SEED: u64 = 0x5EED;
const BATCH_MAX: usize = 64;

fn wal_options() -> WalOptions {
    WalOptions {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 128 * 1024,
        entry_bytes_max: 64 * 1024,
        ..WalOptions::default()
    }
}

fn sm_options(round: u64) -> SmOptions {
    SmOptions {
        // Vary sled's own background flushing between rounds.
        sled_flush_every_ms: if round % 2 == 0 { None } else { Some(20) },
        // And how many applied entries are held before sled sees them:
        // write-through, a few, the default.
        write_behind_entries: [0, 4, 1024][(round % 3) as usize],
        ..SmOptions::default()
    }
}

fn open(dir: &std::path::Path, round: u64) -> (Arc<Wal>, Arc<StateMachine>) {
    let wal = Arc::new(Wal::open(dir.join("wal"), wal_options()).unwrap());
    let sm = Arc::new(StateMachine::open(dir.join("sm"), &sm_options(round)).unwrap());
    (wal, sm)
}

fn model_at(index: u64) -> Model {
    let mut m = Model::default();
    for i in 1..=index {
        m.apply(&command_at(SEED, i, BATCH_MAX));
    }
    m
}

/// The child: recover, then append + apply groups forever, acknowledging
/// each applied index on stdout.
fn child(dir: &std::path::Path, round: u64) -> ! {
    let (wal, sm) = open(dir, round);
    let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap();
    storage.replay_committed().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(round);
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {}", sm.applied_index()).unwrap();
    loop {
        let first = wal.last_index().unwrap() + 1;
        let n = rng.gen_range(1..=8u64);
        let entries: Vec<_> = (first..first + n)
            .map(|i| entry(i, 1, &command_at(SEED, i, BATCH_MAX)))
            .collect();
        let last = first + n - 1;
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: last,
        };
        // Durable in the log (committed: a single voter), then applied.
        wal.submit(entries.clone(), Some(hs))
            .unwrap()
            .wait()
            .unwrap();
        let applied = sm.apply(&entries).unwrap().applied_index;
        assert_eq!(applied, last);
        if rng.gen_ratio(1, 10) {
            let durable = sm.flush_durable().unwrap();
            // Compact as far as allowed; sometimes try one further.
            let _ = storage.compact(durable + 1 + u64::from(rng.gen_bool(0.3)));
        }
        writeln!(out, "ACK {applied}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write_and_shows_no_partial_batch() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, round) = spec.rsplit_once(':').unwrap();
        child(std::path::Path::new(dir), round.parse().unwrap());
    }
    let rounds: u64 = std::env::var("TANDEM_SM_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut acked = 0u64;
    for round in 0..rounds {
        let kill_after = rng.gen_range(5..120u64);
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args([
                "kill_9_loses_no_acknowledged_write_and_shows_no_partial_batch",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}:{round}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acks = 0u64;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(i) = line.strip_prefix("READY ") {
                let recovered: u64 = i.parse().unwrap();
                assert!(
                    recovered >= acked,
                    "child recovered {recovered} < acked {acked}"
                );
            } else if let Some(i) = line.strip_prefix("ACK ") {
                acked = i.parse().unwrap();
                acks += 1;
                if acks == kill_after {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(acks == kill_after, "child exited early: {status:?}");

        // sled alone: a whole-batch state, never a partial one.
        let (wal, sm) = open(dir.path(), round);
        let sled_applied = sm.applied_index();
        assert_eq!(
            contents(&sm),
            model_at(sled_applied).map,
            "round {round}: sled state at {sled_applied} differs from the model"
        );
        // WAL + sled: every acknowledged write.
        let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm)).unwrap();
        let replay = storage.replay_committed().unwrap();
        assert!(
            replay.to >= acked,
            "round {round}: recovered {} < acknowledged {acked}",
            replay.to
        );
        assert_eq!(
            contents(&sm),
            model_at(replay.to).map,
            "round {round}: state after replay differs from the model"
        );
        eprintln!(
            "round {round}: acked {acked}, sled recovered {sled_applied}, replayed to {}",
            replay.to
        );
    }
}
