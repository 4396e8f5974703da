//! Crash test with a real process: a child appends with `SyncPolicy::Always`
//! and reports every acknowledged append on a pipe; the parent kills it
//! with SIGKILL at a random moment, reopens the log and checks that every
//! acknowledged entry is there, byte for byte. 50 rounds by default;
//! `TANDEM_WAL_KILL_ROUNDS=N` runs more, `TANDEM_WAL_KILL_SEED` picks the
//! kill moments.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::entry;
use tandem_raft::Entry;
use tandem_wal::{Wal, WalOptions};

const CHILD_DIR: &str = "TANDEM_WAL_KILL_CHILD_DIR";
const CHILD_TERM: &str = "TANDEM_WAL_KILL_CHILD_TERM";
const TEST_NAME: &str = "sigkill_loses_no_acknowledged_append";

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 128 * 1024,
        entry_bytes_max: 16 * 1024,
        cache_bytes_max: 64 * 1024,
        // Payloads of 0-2999 bytes: some copied, some shared.
        shared_payload_min: 1500,
        ..WalOptions::default()
    }
}

fn len_of(index: u64) -> usize {
    (index as usize * 997) % 3000
}

fn child(dir: &str, term: u64) -> ! {
    let wal = Wal::open(dir, opts()).expect("child opens the log");
    let out = std::io::stdout();
    let mut last = wal.last_index().unwrap();
    // Start each life by overwriting the last entry or two with the new
    // term, as a new leader would.
    let mut next = (last + 1)
        .saturating_sub(term % 3)
        .max(wal.first_index().unwrap());
    let mut k = 0u64;
    loop {
        let mut pending = Vec::new();
        for _ in 0..1 + k % 4 {
            let n = 1 + (k * 7) % 5;
            let es: Vec<Entry> = (next..next + n)
                .map(|i| entry(i, term, len_of(i)))
                .collect();
            {
                // Announce the overwrite before it can reach the disk.
                let mut o = out.lock();
                writeln!(o, "sub {next}").unwrap();
                o.flush().unwrap();
            }
            let c = wal.submit(es, None).expect("submit");
            pending.push((c, next, next + n - 1));
            next += n;
            k += 1;
        }
        for (c, f, l) in pending {
            c.wait().expect("durable");
            let mut o = out.lock();
            writeln!(o, "ack {f} {l} {term}").unwrap();
            o.flush().unwrap();
            last = l;
        }
        if k % 50 == 0 && last > 300 {
            wal.compact(last - 200).unwrap().wait().unwrap();
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_loses_no_acknowledged_append() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let term = std::env::var(CHILD_TERM).unwrap().parse().unwrap();
        child(&dir, term);
    }
    let rounds: u64 = std::env::var("TANDEM_WAL_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("TANDEM_WAL_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    eprintln!("kill test: {rounds} rounds, TANDEM_WAL_KILL_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // index -> term of the acknowledged entry currently at that index.
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total_acks = 0;
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_TERM, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if (line.starts_with("ack ") || line.starts_with("sub ")) && tx.send(line).is_err()
                {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        // Let the child get going, then kill it at a random moment.
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(60)) {
            lines.push(l);
        }
        if round == 1 {
            // The running child holds the directory lock.
            match Wal::open(dir.path(), opts()) {
                Err(tandem_wal::Error::Locked { .. }) => {}
                other => panic!("a second process opened a locked log: {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 30_000));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        assert!(
            !lines.is_empty(),
            "round {round}: the child reported nothing"
        );
        for l in &lines {
            let v: Vec<u64> = l[4..].split(' ').map(|x| x.parse().unwrap()).collect();
            if l.starts_with("sub ") {
                // From here on the entries at and above v[0] may be replaced.
                model.split_off(&v[0]);
                continue;
            }
            let (f, last, term) = (v[0], v[1], v[2]);
            model.split_off(&f);
            for i in f..=last {
                model.insert(i, term);
            }
            total_acks += 1;
        }
        let wal = Wal::open(dir.path(), opts()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let first = wal.first_index().unwrap();
        let last = wal.last_index().unwrap();
        let model_last = model.keys().next_back().copied().unwrap_or(first - 1);
        assert!(
            last >= model_last,
            "round {round}: last {last} < acknowledged {model_last}"
        );
        let got = wal.entries(first, model_last + 1, None).unwrap();
        for e in got {
            // Indexes without an acknowledgement hold entries a child wrote
            // but was killed before reporting; they must still be intact.
            let term = model.get(&e.index).copied().unwrap_or(e.term);
            assert!(
                e == entry(e.index, term, len_of(e.index)),
                "round {round}: entry {} has term {}, {} data bytes; expected term {term}",
                e.index,
                e.term,
                e.data.len()
            );
        }
        // Entries beyond the last acknowledgement were written but not yet
        // acknowledged, or overwritten later; the model keeps only what the
        // next round cannot contradict.
        model.retain(|&i, _| i >= first);
    }
    assert!(total_acks >= rounds);
}
