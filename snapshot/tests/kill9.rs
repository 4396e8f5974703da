//! Install under `kill -9`: a child process stages and installs snapshot
//! after snapshot; the parent kills it at a random moment, recovers, and
//! checks the live state is exactly one complete generation — never a mix.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_snapshot::{SnapshotReader, Stager, StateSwitch};

const CHILD_ENV: &str = "TANDEM_SNAPSHOT_KILL9_CHILD";
const GENERATIONS: u64 = 4;

fn gen_pairs(g: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    common::pairs(1000 + g, 150 + g as usize * 10)
}

fn version_name(g: u64) -> String {
    format!("v-{g:020}")
}

fn install(sw: &StateSwitch, g: u64, pairs: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) {
    let dir = sw.create_version(&version_name(g)).unwrap();
    let db = common::open_sled(&dir);
    for (k, v) in pairs {
        db.insert(k, v).unwrap();
    }
    db.flush().unwrap();
    drop(db);
    sw.switch_to(&version_name(g)).unwrap();
}

/// Child body: forever, stage generation g's snapshot from the leader
/// directory and install it, cycling through the generations.
fn child(work: &Path) -> ! {
    let snap = work.join("follower/snap");
    let sm = work.join("follower/sm");
    let mut g = 0;
    loop {
        g = g % GENERATIONS + 1;
        let src = SnapshotReader::open(
            &work.join(format!("leader-{g}")).join(
                std::fs::read_dir(work.join(format!("leader-{g}")))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .file_name(),
            ),
        )
        .unwrap();
        let stager = Stager::open(&snap).unwrap();
        let mut st = stager.begin(src.manifest()).unwrap();
        for n in 0..src.manifest().chunk_count {
            st.write_chunk(n, &src.read_chunk(n).unwrap()).unwrap();
        }
        let staged = st.finish().unwrap();
        let sw = StateSwitch::open(&sm).unwrap();
        install(&sw, g, staged.pairs().map(Result::unwrap));
        stager.remove_older_than(u64::MAX, 0).unwrap();
    }
}

#[test]
fn kill9_child() {
    // Only does something when spawned by `kill9_during_install_*`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&PathBuf::from(dir));
    }
}

fn live(sm: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let sw = StateSwitch::open(sm).unwrap();
    let dir = sw.recover().unwrap().expect("a live version");
    let db = common::open_sled(&dir);
    db.iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn kill9_during_install_leaves_one_complete_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    for g in 1..=GENERATIONS {
        common::build(
            &work.join(format!("leader-{g}")),
            100 * g,
            1,
            &gen_pairs(g),
            256,
        );
    }
    // Generation 0: the follower's initial state.
    let sm = work.join("follower/sm");
    install(
        &StateSwitch::open(&sm).unwrap(),
        0,
        gen_pairs(0).into_iter(),
    );
    let all: Vec<_> = (0..=GENERATIONS).map(gen_pairs).collect();

    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rounds = std::env::var("TANDEM_SNAPSHOT_KILL9_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, work)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..1500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Restart: recover snap/ and sm/, then the state must be exactly one generation.
        Stager::open(&work.join("follower/snap"))
            .unwrap()
            .recover()
            .unwrap();
        let state = live(&sm);
        let g = all.iter().position(|p| *p == state);
        assert!(
            g.is_some(),
            "round {round}: live state is not any complete generation"
        );
        for e in std::fs::read_dir(work.join("follower/snap")).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(
                name.starts_with("snapshot-"),
                "round {round}: {name} left after recovery"
            );
        }
    }
}
