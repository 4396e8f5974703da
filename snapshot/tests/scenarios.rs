//! Data-driven protocol scenarios: each `tests/testdata/*.txt` file is a
//! script of commands; after every command the test prints what the sender
//! and receiver state machines did, and the whole transcript must equal the
//! file. Regenerate after an intended change with
//! `TANDEM_REWRITE=1 cargo test -p tandem-snapshot --test scenarios` and
//! review the diff.
//!
//! Commands (one per line; `#` starts a comment; output lines start with
//! two spaces and are regenerated):
//!
//! ```text
//! sender term=T attempt=A chunks=N window=W retransmit=R retries=M
//! receiver idle=I
//! start                 sender sends its offer
//! deliver rx|tx [bad]   deliver the oldest message queued for the receiver / sender
//!                       (`bad`: flip a byte of a chunk first)
//! drop rx|tx            lose the oldest queued message
//! tick tx|rx [n]        advance one side's clock n ticks
//! term T                the receiver learns raft term T
//! lead T yes|no         the sender learns its term and leadership
//! fail-verify           the next whole-snapshot verification fails
//! ```
//!
//! The receiver's disk actions (begin, stage, verify) succeed at once.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;

use tandem_raft::ConfState;
use tandem_snapshot::format::{encode_chunk, encode_pair};
use tandem_snapshot::{
    Manifest, Receiver, ReceiverAction, ReceiverConfig, Sender, SenderAction, SenderConfig,
    TransferId, TransferMsg,
};

fn show_id(id: &TransferId) -> String {
    format!("t{}a{}", id.leader_term, id.attempt)
}

fn show(m: &TransferMsg) -> String {
    match m {
        TransferMsg::Offer { id, .. } => format!("Offer {}", show_id(id)),
        TransferMsg::Accept { id } => format!("Accept {}", show_id(id)),
        TransferMsg::Chunk { id, chunk_no, .. } => format!("Chunk {} #{chunk_no}", show_id(id)),
        TransferMsg::Ack { id, chunk_no } => format!("Ack {} #{chunk_no}", show_id(id)),
        TransferMsg::Reject { id, chunk_no } => format!("Reject {} #{chunk_no}", show_id(id)),
        TransferMsg::Done { id } => format!("Done {}", show_id(id)),
        TransferMsg::Abort { id, reason } => format!("Abort {} {reason:?}", show_id(id)),
        _ => format!("{m:?}"),
    }
}

struct World {
    manifest: Option<Manifest>,
    chunks: Vec<Vec<u8>>,
    sender: Option<Sender>,
    receiver: Option<Receiver>,
    to_rx: VecDeque<TransferMsg>,
    to_tx: VecDeque<TransferMsg>,
    fail_verify: bool,
}

fn kv(args: &[&str], key: &str, default: u64) -> u64 {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{key}=")))
        .map_or(default, |v| v.parse().expect("number"))
}

impl World {
    fn new() -> Self {
        World {
            manifest: None,
            chunks: Vec::new(),
            sender: None,
            receiver: None,
            to_rx: VecDeque::new(),
            to_tx: VecDeque::new(),
            fail_verify: false,
        }
    }

    fn sender_actions(&mut self, actions: Vec<SenderAction>, out: &mut String) {
        let id = self.sender.as_ref().expect("sender").id();
        for a in actions {
            match a {
                SenderAction::Send(m) => {
                    writeln!(out, "  tx: send {}", show(&m)).unwrap();
                    self.to_rx.push_back(m);
                }
                SenderAction::SendChunk(n) => {
                    let m = TransferMsg::Chunk {
                        id,
                        chunk_no: n,
                        bytes: self.chunks[n as usize].clone(),
                    };
                    writeln!(out, "  tx: send {}", show(&m)).unwrap();
                    self.to_rx.push_back(m);
                }
                SenderAction::Finished(r) => writeln!(out, "  tx: finished {r:?}").unwrap(),
            }
        }
    }

    fn receiver_actions(&mut self, actions: Vec<ReceiverAction>, out: &mut String) {
        let mut queue: VecDeque<ReceiverAction> = actions.into();
        while let Some(a) = queue.pop_front() {
            let r = self.receiver.as_mut().expect("receiver");
            match a {
                ReceiverAction::Send(m) => {
                    writeln!(out, "  rx: send {}", show(&m)).unwrap();
                    self.to_tx.push_back(m);
                }
                ReceiverAction::Begin { id, manifest } => {
                    writeln!(
                        out,
                        "  rx: begin {} chunks={}",
                        show_id(&id),
                        manifest.chunk_count
                    )
                    .unwrap();
                    queue.extend(r.on_begun(id, Ok(())));
                }
                ReceiverAction::Stage { id, chunk_no, .. } => {
                    writeln!(out, "  rx: stage {} #{chunk_no}", show_id(&id)).unwrap();
                    queue.extend(r.on_staged(id, chunk_no, Ok(())));
                }
                ReceiverAction::Verify { id } => {
                    let ok = !std::mem::take(&mut self.fail_verify);
                    writeln!(
                        out,
                        "  rx: verify {} -> {}",
                        show_id(&id),
                        if ok { "ok" } else { "corrupt" }
                    )
                    .unwrap();
                    let res = if ok {
                        Ok(())
                    } else {
                        Err(tandem_snapshot::Error::InvalidState("injected".into()))
                    };
                    queue.extend(r.on_verified(id, res));
                }
                ReceiverAction::Discard { id } => {
                    writeln!(out, "  rx: discard {}", show_id(&id)).unwrap()
                }
                ReceiverAction::Complete { id } => {
                    writeln!(out, "  rx: complete {}", show_id(&id)).unwrap()
                }
                ReceiverAction::Failed { id, reason } => {
                    writeln!(out, "  rx: failed {} {reason:?}", show_id(&id)).unwrap();
                }
            }
        }
    }

    fn run(&mut self, line: &str, out: &mut String) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (words[0], &words[1..]);
        match cmd {
            "sender" => {
                let n = kv(args, "chunks", 3) as u32;
                self.chunks = (0..n)
                    .map(|i| {
                        let mut p = Vec::new();
                        encode_pair(&mut p, &i.to_be_bytes(), b"value");
                        encode_chunk(10, 2, i, 1, &p)
                    })
                    .collect();
                let m = Manifest {
                    index: 10,
                    term: 2,
                    conf_state: ConfState::from_voters([1, 2, 3]),
                    chunk_count: n,
                    total_bytes: self.chunks.iter().map(|c| c.len() as u64).sum(),
                    pair_count: u64::from(n),
                    checksum: 0,
                };
                let id = TransferId {
                    leader_term: kv(args, "term", 1),
                    from: 1,
                    index: 10,
                    term: 2,
                    attempt: kv(args, "attempt", 0),
                };
                let cfg = SenderConfig {
                    window_chunks: kv(args, "window", 2) as u32,
                    retransmit_ticks: kv(args, "retransmit", 3) as u32,
                    max_retries: kv(args, "retries", 2) as u32,
                    done_timeout_ticks: kv(args, "done", 20) as u32,
                };
                self.sender = Some(Sender::new(id, &m, cfg).unwrap());
                self.manifest = Some(m);
            }
            "receiver" => {
                self.receiver = Some(
                    Receiver::new(ReceiverConfig {
                        idle_timeout_ticks: kv(args, "idle", 10) as u32,
                    })
                    .unwrap(),
                );
            }
            "start" => {
                let a = self.sender.as_mut().unwrap().start();
                self.sender_actions(a, out);
            }
            "deliver" | "drop" => {
                let to_rx = args[0] == "rx";
                let q = if to_rx {
                    &mut self.to_rx
                } else {
                    &mut self.to_tx
                };
                let Some(mut m) = q.pop_front() else {
                    writeln!(out, "  (nothing queued)").unwrap();
                    return;
                };
                if cmd == "drop" {
                    writeln!(out, "  dropped {}", show(&m)).unwrap();
                    return;
                }
                if args.get(1) == Some(&"bad") {
                    if let TransferMsg::Chunk { bytes, .. } = &mut m {
                        let last = bytes.len() - 1;
                        bytes[last] ^= 0xff;
                    }
                }
                if to_rx {
                    let a = self.receiver.as_mut().unwrap().on_message(m);
                    self.receiver_actions(a, out);
                } else {
                    let a = self.sender.as_mut().unwrap().on_message(&m);
                    self.sender_actions(a, out);
                }
            }
            "tick" => {
                let n = args.get(1).map_or(1, |v| v.parse().unwrap());
                for _ in 0..n {
                    if args[0] == "tx" {
                        let a = self.sender.as_mut().unwrap().tick();
                        self.sender_actions(a, out);
                    } else {
                        let a = self.receiver.as_mut().unwrap().tick();
                        self.receiver_actions(a, out);
                    }
                }
            }
            "term" => {
                let a = self
                    .receiver
                    .as_mut()
                    .unwrap()
                    .on_term(args[0].parse().unwrap());
                self.receiver_actions(a, out);
            }
            "lead" => {
                let a = self
                    .sender
                    .as_mut()
                    .unwrap()
                    .on_leadership(args[0].parse().unwrap(), args[1] == "yes");
                self.sender_actions(a, out);
            }
            "fail-verify" => self.fail_verify = true,
            other => panic!("unknown command {other:?}"),
        }
    }
}

fn render(script: &str) -> String {
    let mut world = World::new();
    let mut out = String::new();
    for line in script.lines() {
        if line.starts_with("  ") {
            continue; // previous output
        }
        out.push_str(line);
        out.push('\n');
        let cmd = line.split('#').next().unwrap_or("").trim();
        if !cmd.is_empty() {
            world.run(cmd, &mut out);
        }
    }
    out
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    let rewrite = std::env::var_os("TANDEM_REWRITE").is_some();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let got = render(&text);
        if rewrite {
            std::fs::write(&f, &got).unwrap();
        } else {
            assert!(
                got == text,
                "{} differs; rerun with TANDEM_REWRITE=1 and review the diff:\n{got}",
                f.display()
            );
        }
    }
}
