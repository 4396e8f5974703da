//! Protocol scenarios, organised by the sections of the Raft paper and
//! thesis. Each runs a deterministic in-memory cluster
//! ([`tandem_raft::testing::Network`]) and checks the safety invariants
//! along the way.

mod election;
mod membership;
mod persistence;
mod reads;
mod replication;
mod robustness;
mod snapshot;
mod transfer;

use tandem_raft::testing::Network;
use tandem_raft::{Config, Message, MessageType, StateRole};

/// A cluster of `ids` with config adjustments `f`.
pub fn cluster(ids: &[u64], f: impl Fn(&mut Config)) -> Network {
    Network::new(ids, f)
}

/// Elect `id` and let the cluster settle; checks the invariants.
pub fn elect(net: &mut Network, id: u64) {
    net.campaign(id);
    net.stabilize();
    assert_eq!(
        net.raft(id).state,
        StateRole::Leader,
        "node {id} should lead"
    );
    net.check().unwrap();
}

/// Tick every node `n` times, settling the network after each tick.
pub fn tick_n(net: &mut Network, n: usize) {
    for _ in 0..n {
        net.tick_all();
        net.stabilize();
        net.check().unwrap();
    }
}

/// Tick one node `n` times without delivering anything.
pub fn tick_node(net: &mut Network, id: u64, n: usize) {
    for _ in 0..n {
        net.tick(id);
    }
}

/// A message of type `t` from `from` to `to` in `term`.
pub fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    Message {
        msg_type: t,
        from,
        to,
        term,
        ..Message::default()
    }
}

/// Tick every node `ticks` times; after each tick deliver messages one by
/// one, showing each to `f` before delivery.
pub fn observe(net: &mut Network, ticks: usize, mut f: impl FnMut(&Message)) {
    let ids: Vec<u64> = net.nodes.keys().copied().collect();
    for _ in 0..ticks {
        net.tick_all();
        loop {
            for &id in &ids {
                net.process(id);
                while net.persist(id) {}
            }
            let Some(m) = net.queue().front().cloned() else {
                break;
            };
            f(&m);
            net.deliver_one();
        }
        net.check().unwrap();
    }
}

/// Propose `data` at `id` and settle.
pub fn propose(net: &mut Network, id: u64, data: &[u8]) {
    net.propose(id, data.to_vec()).unwrap();
    net.stabilize();
    net.check().unwrap();
}

/// The last index of node `id`.
pub fn last_index(net: &Network, id: u64) -> u64 {
    net.raft(id).raft_log.last_index()
}

/// The commit index of node `id`.
pub fn committed(net: &Network, id: u64) -> u64 {
    net.raft(id).raft_log.committed
}
