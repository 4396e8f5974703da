//! Consensus-core throughput: propose → replicate → commit through a
//! 3-node in-memory cluster (RawNode + MemStorage, messages handed over in
//! memory, every Ready persisted synchronously). Measures the core alone:
//! no disk, no network, no state machine.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::VecDeque;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tandem_raft::{ConfState, Config, MemStorage, Message, RawNode, StateRole};

/// Proposals per measured batch.
const BATCH: usize = 256;

struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    queue: VecDeque<Message>,
    applied: u64,
}

impl Cluster {
    fn new(batch_append: bool) -> Cluster {
        let cs = ConfState::from_voters([1, 2, 3]);
        let nodes = (1..=3)
            .map(|id| {
                let c = Config {
                    max_inflight_msgs: 1024,
                    max_uncommitted_size: 1 << 30,
                    batch_append,
                    ..Config::new(id)
                };
                RawNode::new(&c, MemStorage::new_with_conf_state(cs.clone())).expect("node")
            })
            .collect();
        let mut c = Cluster {
            nodes,
            queue: VecDeque::new(),
            applied: 0,
        };
        c.nodes[0].campaign().expect("campaign");
        c.settle();
        assert_eq!(c.nodes[0].raft.state, StateRole::Leader);
        c
    }

    fn handle_ready(&mut self, i: usize) {
        while self.nodes[i].has_ready() {
            let node = &mut self.nodes[i];
            let mut rd = node.ready();
            self.queue.extend(rd.take_messages());
            let store = node.store().clone();
            if !rd.entries().is_empty() {
                store.wl().append(rd.entries()).expect("append");
            }
            if let Some(hs) = rd.hs() {
                store.wl().set_hard_state(*hs);
            }
            self.queue.extend(rd.take_persisted_messages());
            if i == 0 {
                self.applied += rd.committed_entries().len() as u64;
            }
            let mut light = node.advance(rd);
            if let Some(c) = light.commit_index() {
                store.wl().set_commit(c);
            }
            self.queue.extend(light.take_messages());
            if i == 0 {
                self.applied += light.committed_entries().len() as u64;
            }
            node.advance_apply();
        }
    }

    fn settle(&mut self) {
        loop {
            for i in 0..3 {
                self.handle_ready(i);
            }
            let Some(m) = self.queue.pop_front() else {
                break;
            };
            let to = (m.to - 1) as usize;
            let _ = self.nodes[to].step(m);
        }
    }

    /// Keep the in-memory logs short so a long run measures steady state.
    fn compact(&mut self) {
        for n in &mut self.nodes {
            let applied = n.raft.raft_log.applied;
            let store = n.store().clone();
            let mut core = store.wl();
            if applied > core.stored_snapshot().metadata.index + 4096 {
                core.create_snapshot(applied, ConfState::from_voters([1, 2, 3]), Vec::new())
                    .expect("snapshot");
            }
        }
    }
}

fn propose_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_propose_commit_3_nodes");
    for (size, batch_append) in [(16usize, false), (1024, false), (16, true), (1024, true)] {
        let mut cluster = Cluster::new(batch_append);
        group.throughput(Throughput::Elements(BATCH as u64));
        let name = if batch_append {
            format!("{size}B_batch_append")
        } else {
            format!("{size}B")
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || vec![7u8; size],
                |payload| {
                    let before = cluster.applied;
                    for _ in 0..BATCH {
                        cluster.nodes[0]
                            .propose(Vec::new(), payload.clone())
                            .expect("leader accepts");
                    }
                    cluster.settle();
                    assert_eq!(cluster.applied - before, BATCH as u64, "all committed");
                    cluster.compact();
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, propose_commit);
criterion_main!(benches);
