//! Data-driven protocol scenarios: `testdata/*.txt` hold commands and the
//! trace they must produce. Each block is
//!
//! ```text
//! command arg...
//! ----
//! expected output
//! <blank line>
//! ```
//!
//! Run with `TANDEM_REWRITE=1` to regenerate the expected output after an
//! intended behaviour change (then review the diff).
//!
//! Commands: `cluster <ids...> [pre_vote] [check_quorum]`, `campaign <id>`,
//! `propose <id> <data>`, `stabilize`, `tick <id> [n]`, `tick-all [n]`,
//! `isolate <id>`, `partition <ids...> | <ids...>`, `heal`, `crash <id>`,
//! `restart <id>`, `transfer <from> <to>`, `read <id> <ctx>`, `compact <id>`,
//! `status` (one line per node), `applied <id>`.

use std::fmt::Write as _;
use std::path::Path;

use tandem_raft::testing::Network;
use tandem_raft::StateRole;

fn ids(args: &[&str]) -> Vec<u64> {
    args.iter().filter_map(|a| a.parse().ok()).collect()
}

fn status(net: &Network) -> String {
    let mut out = String::new();
    for n in net.nodes.values() {
        match &n.raw {
            Some(raw) => {
                let r = &raw.raft;
                let role = match r.state {
                    StateRole::Leader => "leader",
                    StateRole::Follower => "follower",
                    StateRole::Candidate => "candidate",
                    StateRole::PreCandidate => "pre-candidate",
                };
                writeln!(
                    out,
                    "{}: {role} term={} lead={} commit={} applied={} last={}",
                    n.id,
                    r.term,
                    r.leader_id,
                    r.raft_log.committed,
                    r.raft_log.applied,
                    r.raft_log.last_index()
                )
                .unwrap();
            }
            None => writeln!(out, "{}: down", n.id).unwrap(),
        }
    }
    out
}

fn run_command(net: &mut Option<Network>, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (cmd, args) = (words[0], &words[1..]);
    if cmd == "cluster" {
        let pre_vote = args.contains(&"pre_vote");
        let check_quorum = args.contains(&"check_quorum");
        *net = Some(Network::new(&ids(args), |c| {
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
        }));
        return "ok\n".into();
    }
    let net = net.as_mut().expect("`cluster` first");
    let id = || args[0].parse::<u64>().expect("node id");
    let count = |i: usize| {
        args.get(i)
            .map_or(1, |s| s.parse::<usize>().expect("count"))
    };
    let out = match cmd {
        "campaign" => {
            net.campaign(id());
            "ok\n".into()
        }
        "propose" => match net.propose(id(), args[1].as_bytes().to_vec()) {
            Ok(()) => "ok\n".into(),
            Err(e) => format!("error: {e}\n"),
        },
        "stabilize" => {
            net.stabilize();
            status(net)
        }
        "tick" => {
            for _ in 0..count(1) {
                net.tick(id());
            }
            "ok\n".into()
        }
        "tick-all" => {
            for _ in 0..count(0) {
                net.tick_all();
                net.stabilize();
            }
            status(net)
        }
        "isolate" => {
            net.isolate(id());
            "ok\n".into()
        }
        "partition" => {
            let split = args
                .iter()
                .position(|a| *a == "|")
                .expect("`|` separates groups");
            net.partition(&ids(&args[..split]), &ids(&args[split + 1..]));
            "ok\n".into()
        }
        "heal" => {
            net.heal();
            "ok\n".into()
        }
        "crash" => {
            net.crash(id());
            "ok\n".into()
        }
        "restart" => {
            net.restart(id());
            "ok\n".into()
        }
        "transfer" => {
            let to = args[1].parse().expect("target id");
            net.transfer_leader(id(), to);
            "ok\n".into()
        }
        "read" => {
            net.read_index(id(), args[1].as_bytes());
            "ok\n".into()
        }
        "reads" => {
            let mut out = String::new();
            for r in &net.node(id()).read_states {
                writeln!(
                    out,
                    "index={} ctx={}",
                    r.index,
                    String::from_utf8_lossy(&r.request_ctx)
                )
                .unwrap();
            }
            out
        }
        "compact" => format!("{:?}\n", net.compact(id())),
        "status" => status(net),
        "applied" => {
            let data: Vec<String> = net
                .applied_data(id())
                .iter()
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .collect();
            format!("{}\n", data.join(" "))
        }
        other => panic!("unknown command {other:?}"),
    };
    net.check().expect("invariants hold after every command");
    out
}

fn run_file(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read test file");
    let rewrite = std::env::var("TANDEM_REWRITE").is_ok_and(|v| v == "1");
    let mut net = None;
    let mut rewritten = String::new();
    let mut lines = text.lines().peekable();
    let mut failures = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        let cmd = line.to_string();
        assert_eq!(lines.next(), Some("----"), "{name}: `----` after {cmd:?}");
        let mut expected = String::new();
        while let Some(l) = lines.peek() {
            if l.is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
            lines.next();
        }
        let got = run_command(&mut net, &cmd);
        if got != expected {
            failures.push(format!(
                "{name}: `{cmd}`\n--- expected\n{expected}--- got\n{got}"
            ));
        }
        rewritten.push_str(&cmd);
        rewritten.push_str("\n----\n");
        rewritten.push_str(&got);
    }
    if rewrite {
        std::fs::write(&path, rewritten).expect("rewrite test file");
        return;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn election_scenarios() {
    run_file("election.txt");
}

#[test]
fn replication_scenarios() {
    run_file("replication.txt");
}

#[test]
fn transfer_and_read_scenarios() {
    run_file("transfer_read.txt");
}
