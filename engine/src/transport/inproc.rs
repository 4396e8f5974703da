//! The in-process network: replicas of one process exchange envelopes
//! through channels, with fault injection.
//!
//! Faults: isolate a node, split the nodes into partition groups, block a
//! single direction of a link, drop a fraction of messages, delay them, and
//! reorder them. All randomness comes from a seeded ChaCha RNG, so a failing
//! run replays from its seed. Two delivery modes:
//!
//! - **automatic** ([`InProcNetwork::new`]): a message without delay is
//!   handed to the destination's [`Inbox`] inside `send`; delayed or
//!   reordered ones wait in a queue that a background thread drains when
//!   their time comes.
//! - **manual** ([`InProcNetwork::manual`]): every message waits in the
//!   queue until the test calls [`InProcNetwork::deliver_one`] or
//!   [`InProcNetwork::deliver_all`]; with `reorder` the next message is
//!   picked at random. Nothing happens behind the test's back.
//!
//! Link faults are checked when a message is sent and again when it is
//! delivered, so a partition also cuts the messages already in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Envelope, Inbox, Payload, Transport, TransportError};

/// Probabilistic faults applied to every message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Fraction of messages silently lost, in `[0, 1]`.
    pub drop_rate: f64,
    /// Least delay of a delivered message.
    pub delay_min: Duration,
    /// Greatest delay of a delivered message (at least `delay_min`).
    pub delay_max: Duration,
    /// Deliver messages out of send order (random delay within
    /// `delay_min..=delay_max` in automatic mode, at least 1 ms of jitter;
    /// random pick in manual mode).
    pub reorder: bool,
    /// Fraction of snapshot transfer frames whose last byte is flipped in
    /// transit, in `[0, 1]` (for a chunk frame that is a payload byte, so
    /// the chunk's CRC must catch it).
    pub corrupt_frame_rate: f64,
}

/// Counters of the whole network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Envelopes passed to `send`.
    pub sent: u64,
    /// Envelopes handed to a destination inbox.
    pub delivered: u64,
    /// Lost to the random drop rate.
    pub dropped_random: u64,
    /// Lost to isolation, partitions or blocked links.
    pub dropped_partitioned: u64,
    /// Addressed to a node that is not registered.
    pub dropped_unknown: u64,
    /// Snapshot frames corrupted on purpose (`corrupt_frame_rate`).
    pub corrupted: u64,
}

struct NetState {
    inboxes: HashMap<u64, Inbox>,
    isolated: HashSet<u64>,
    /// Partition groups; empty means fully connected.
    groups: Vec<HashSet<u64>>,
    /// One-way blocked links `(from, to)`.
    blocked: HashSet<(u64, u64)>,
    faults: Faults,
    rng: ChaCha8Rng,
    manual: bool,
    /// Messages waiting: keyed by (due time, sequence) for FIFO among equals.
    queue: BTreeMap<(Instant, u64), Envelope>,
    seq: u64,
    stats: NetworkStats,
    thread_started: bool,
}

impl NetState {
    fn link_allowed(&self, from: u64, to: u64) -> bool {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return false;
        }
        if self.blocked.contains(&(from, to)) {
            return false;
        }
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|g| g.contains(&from) && g.contains(&to))
    }

    /// Check the link and the destination at delivery time; returns the inbox to use.
    fn route(&mut self, env: &Envelope) -> Option<Inbox> {
        if !self.link_allowed(env.from, env.to) {
            self.stats.dropped_partitioned += 1;
            return None;
        }
        match self.inboxes.get(&env.to) {
            Some(inbox) => {
                self.stats.delivered += 1;
                Some(inbox.clone())
            }
            None => {
                self.stats.dropped_unknown += 1;
                None
            }
        }
    }
}

struct Shared {
    state: Mutex<NetState>,
    wake: Condvar,
}

/// An in-process network with fault injection. Cheap to clone; all clones
/// share one network.
#[derive(Clone)]
pub struct InProcNetwork {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for InProcNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.state.lock();
        f.debug_struct("InProcNetwork")
            .field("nodes", &s.inboxes.len())
            .field("manual", &s.manual)
            .field("stats", &s.stats)
            .finish_non_exhaustive()
    }
}

impl InProcNetwork {
    /// A network in automatic delivery mode with no faults.
    #[must_use]
    pub fn new(seed: u64) -> InProcNetwork {
        Self::with_mode(seed, false)
    }

    /// A network in manual delivery mode: messages move only when the
    /// caller delivers them.
    #[must_use]
    pub fn manual(seed: u64) -> InProcNetwork {
        Self::with_mode(seed, true)
    }

    fn with_mode(seed: u64, manual: bool) -> InProcNetwork {
        InProcNetwork {
            shared: Arc::new(Shared {
                state: Mutex::new(NetState {
                    inboxes: HashMap::new(),
                    isolated: HashSet::new(),
                    groups: Vec::new(),
                    blocked: HashSet::new(),
                    faults: Faults::default(),
                    rng: ChaCha8Rng::seed_from_u64(seed),
                    manual,
                    queue: BTreeMap::new(),
                    seq: 0,
                    stats: NetworkStats::default(),
                    thread_started: false,
                }),
                wake: Condvar::new(),
            }),
        }
    }

    /// Attach a replica's inbox (replacing any previous one with its id,
    /// e.g. after a restart).
    pub fn register(&self, inbox: Inbox) {
        self.shared.state.lock().inboxes.insert(inbox.id(), inbox);
    }

    /// Detach a replica: messages to it are dropped as unknown.
    pub fn unregister(&self, id: u64) {
        self.shared.state.lock().inboxes.remove(&id);
    }

    /// The sending side for replica `id`.
    #[must_use]
    pub fn transport(&self, id: u64) -> InProcTransport {
        InProcTransport {
            net: self.clone(),
            id,
        }
    }

    /// Cut `id` off from every other node, both directions.
    pub fn isolate(&self, id: u64) {
        self.shared.state.lock().isolated.insert(id);
    }

    /// Undo [`InProcNetwork::isolate`] for `id`.
    pub fn rejoin(&self, id: u64) {
        self.shared.state.lock().isolated.remove(&id);
    }

    /// Split the network: nodes talk only within their group. A node in no
    /// group talks to nobody.
    ///
    /// # Panics
    /// If a node appears in two groups (a caller bug).
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut seen = HashSet::new();
        for id in groups.iter().flat_map(|g| g.iter()) {
            assert!(seen.insert(*id), "node {id} is in two partition groups");
        }
        self.shared.state.lock().groups =
            groups.iter().map(|g| g.iter().copied().collect()).collect();
    }

    /// Block messages from `from` to `to` (one direction only).
    pub fn block_link(&self, from: u64, to: u64) {
        self.shared.state.lock().blocked.insert((from, to));
    }

    /// Remove all isolation, partitions and blocked links (not the probabilistic faults).
    pub fn heal(&self) {
        let mut s = self.shared.state.lock();
        s.isolated.clear();
        s.groups.clear();
        s.blocked.clear();
    }

    /// Set the probabilistic faults.
    ///
    /// # Panics
    /// If `drop_rate` is outside `[0, 1]` or `delay_max < delay_min`.
    pub fn set_faults(&self, faults: Faults) {
        assert!(
            (0.0..=1.0).contains(&faults.drop_rate),
            "drop_rate must be within [0, 1]"
        );
        assert!(
            (0.0..=1.0).contains(&faults.corrupt_frame_rate),
            "corrupt_frame_rate must be within [0, 1]"
        );
        assert!(
            faults.delay_max >= faults.delay_min,
            "delay_max must be at least delay_min"
        );
        self.shared.state.lock().faults = faults;
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> NetworkStats {
        self.shared.state.lock().stats
    }

    /// Messages waiting in the queue.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    /// Route one envelope.
    fn send_envelope(&self, mut env: Envelope) -> Result<(), TransportError> {
        let mut s = self.shared.state.lock();
        s.stats.sent += 1;
        if !s.inboxes.contains_key(&env.to) {
            s.stats.dropped_unknown += 1;
            return Err(TransportError::UnknownPeer(env.to));
        }
        if !s.link_allowed(env.from, env.to) {
            s.stats.dropped_partitioned += 1;
            return Ok(());
        }
        let drop_rate = s.faults.drop_rate;
        if drop_rate > 0.0 && s.rng.gen_bool(drop_rate) {
            s.stats.dropped_random += 1;
            return Ok(());
        }
        let corrupt = s.faults.corrupt_frame_rate;
        if let Payload::SnapshotChunk(bytes) = &mut env.payload {
            if corrupt > 0.0 && !bytes.is_empty() && s.rng.gen_bool(corrupt) {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x5A;
                s.stats.corrupted += 1;
            }
        }
        let (min, max, reorder) = (s.faults.delay_min, s.faults.delay_max, s.faults.reorder);
        if !s.manual && max.is_zero() && !reorder {
            // Fast path: deliver inline, outside the lock.
            let inbox = s.route(&env);
            drop(s);
            if let Some(inbox) = inbox {
                inbox.deliver(env);
            }
            return Ok(());
        }
        let mut delay = if max > min {
            s.rng.gen_range(min..=max)
        } else {
            min
        };
        if reorder && !s.manual && max.is_zero() {
            delay = Duration::from_micros(s.rng.gen_range(0..=1000));
        }
        let seq = s.seq;
        s.seq += 1;
        s.queue.insert((Instant::now() + delay, seq), env);
        if !s.manual && !s.thread_started {
            s.thread_started = true;
            let weak = Arc::downgrade(&self.shared);
            std::thread::Builder::new()
                .name("tandem-inproc-net".into())
                .spawn(move || delivery_loop(&weak))
                .expect("spawn network delivery thread");
        }
        drop(s);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Manual mode: deliver one queued message (the oldest, or a random one
    /// with `reorder`), ignoring its delay. Returns the envelope's
    /// `(from, to)` if one was taken from the queue (it may still have been
    /// dropped by a partition).
    pub fn deliver_one(&self) -> Option<(u64, u64)> {
        let mut s = self.shared.state.lock();
        let key = if s.faults.reorder && s.queue.len() > 1 {
            let len = s.queue.len();
            let n = s.rng.gen_range(0..len);
            *s.queue.keys().nth(n).expect("n < len")
        } else {
            *s.queue.keys().next()?
        };
        let env = s.queue.remove(&key).expect("key taken from the queue");
        let route = (env.from, env.to);
        let inbox = s.route(&env);
        drop(s);
        if let Some(inbox) = inbox {
            inbox.deliver(env);
        }
        Some(route)
    }

    /// Manual mode: deliver every message queued now (not the ones their
    /// delivery causes). Returns how many were taken from the queue.
    pub fn deliver_all(&self) -> usize {
        let n = self.pending();
        for _ in 0..n {
            if self.deliver_one().is_none() {
                break;
            }
        }
        n
    }
}

/// Background delivery for automatic mode; exits when the network is dropped.
fn delivery_loop(weak: &Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let mut due = Vec::new();
        {
            let mut s = shared.state.lock();
            let now = Instant::now();
            while let Some((&key, _)) = s.queue.iter().next() {
                if key.0 > now {
                    break;
                }
                let env = s.queue.remove(&key).expect("key from iteration");
                if let Some(inbox) = s.route(&env) {
                    due.push((inbox, env));
                }
            }
            if due.is_empty() {
                // Wake at the next due time, or periodically to notice the
                // network being dropped.
                let wait = s
                    .queue
                    .keys()
                    .next()
                    .map_or(Duration::from_millis(100), |k| {
                        k.0.saturating_duration_since(now)
                    })
                    .min(Duration::from_millis(100));
                shared.wake.wait_for(&mut s, wait);
            }
        }
        for (inbox, env) in due {
            inbox.deliver(env);
        }
    }
}

/// The sending side of one replica on an [`InProcNetwork`].
#[derive(Clone, Debug)]
pub struct InProcTransport {
    net: InProcNetwork,
    id: u64,
}

impl InProcTransport {
    /// The network this transport sends on.
    #[must_use]
    pub fn network(&self) -> &InProcNetwork {
        &self.net
    }
}

impl Transport for InProcTransport {
    fn send(&self, envelope: Envelope) -> Result<(), TransportError> {
        debug_assert_eq!(envelope.from, self.id, "envelope sent by another node");
        self.net.send_envelope(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Payload;
    use crossbeam_channel::Receiver;
    use tandem_raft::{Message, MessageType};

    fn env(from: u64, to: u64, index: u64) -> Envelope {
        Envelope::raft(
            1,
            Message {
                msg_type: MessageType::MsgAppend,
                from,
                to,
                index,
                ..Message::default()
            },
        )
    }

    fn index_of(e: &Envelope) -> u64 {
        match &e.payload {
            Payload::Raft(m) => m.index,
            Payload::SnapshotChunk(_) => panic!("unexpected chunk"),
        }
    }

    fn node(net: &InProcNetwork, id: u64) -> Receiver<Envelope> {
        let (tx, rx) = crossbeam_channel::unbounded();
        net.register(Inbox::new(id, 1, tx));
        rx
    }

    #[test]
    fn manual_mode_delivers_only_when_asked_and_in_order() {
        let net = InProcNetwork::manual(1);
        let _r1 = node(&net, 1);
        let r2 = node(&net, 2);
        let t1 = net.transport(1);
        for i in 0..5 {
            t1.send(env(1, 2, i)).unwrap();
        }
        assert!(r2.try_recv().is_err());
        assert_eq!(net.pending(), 5);
        assert_eq!(net.deliver_one(), Some((1, 2)));
        assert_eq!(index_of(&r2.try_recv().unwrap()), 0);
        assert_eq!(net.deliver_all(), 4);
        let got: Vec<u64> = r2.try_iter().map(|e| index_of(&e)).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(t1.send(env(1, 9, 0)), Err(TransportError::UnknownPeer(9)));
        let st = net.stats();
        assert_eq!((st.sent, st.delivered, st.dropped_unknown), (6, 5, 1));
    }

    #[test]
    fn isolation_partitions_and_blocked_links_cut_traffic() {
        let net = InProcNetwork::new(1);
        let r1 = node(&net, 1);
        let r2 = node(&net, 2);
        let r3 = node(&net, 3);
        net.isolate(3);
        net.transport(1).send(env(1, 3, 0)).unwrap();
        net.transport(3).send(env(3, 2, 0)).unwrap();
        net.transport(1).send(env(1, 2, 7)).unwrap();
        assert!(r3.try_recv().is_err());
        assert_eq!(index_of(&r2.try_recv().unwrap()), 7);
        assert!(r2.try_recv().is_err());
        net.rejoin(3);
        net.partition(&[&[1], &[2, 3]]);
        net.transport(1).send(env(1, 2, 0)).unwrap();
        net.transport(2).send(env(2, 3, 8)).unwrap();
        assert!(r2.try_recv().is_err());
        assert_eq!(index_of(&r3.try_recv().unwrap()), 8);
        net.heal();
        net.block_link(1, 2);
        net.transport(1).send(env(1, 2, 0)).unwrap();
        net.transport(2).send(env(2, 1, 9)).unwrap();
        assert!(r2.try_recv().is_err());
        assert_eq!(index_of(&r1.try_recv().unwrap()), 9);
        assert_eq!(net.stats().dropped_partitioned, 4);
    }

    #[test]
    fn a_partition_also_cuts_messages_in_flight() {
        let net = InProcNetwork::manual(1);
        let r2 = node(&net, 2);
        let _r1 = node(&net, 1);
        net.transport(1).send(env(1, 2, 0)).unwrap();
        net.isolate(2);
        assert_eq!(net.deliver_all(), 1);
        assert!(r2.try_recv().is_err());
        assert_eq!(net.stats().dropped_partitioned, 1);
    }

    #[test]
    fn drop_rate_is_seeded_and_roughly_respected() {
        let run = |seed| {
            let net = InProcNetwork::new(seed);
            let r2 = node(&net, 2);
            let _r1 = node(&net, 1);
            net.set_faults(Faults {
                drop_rate: 0.3,
                ..Faults::default()
            });
            for i in 0..1000 {
                net.transport(1).send(env(1, 2, i)).unwrap();
            }
            r2.try_iter().map(|e| index_of(&e)).collect::<Vec<_>>()
        };
        let a = run(5);
        assert_eq!(a, run(5), "same seed, same losses");
        assert_ne!(a, run(6));
        assert!((600..800).contains(&a.len()), "kept {}", a.len());
    }

    #[test]
    fn reorder_in_manual_mode_changes_order_but_loses_nothing() {
        let net = InProcNetwork::manual(3);
        let r2 = node(&net, 2);
        let _r1 = node(&net, 1);
        net.set_faults(Faults {
            reorder: true,
            ..Faults::default()
        });
        for i in 0..50 {
            net.transport(1).send(env(1, 2, i)).unwrap();
        }
        net.deliver_all();
        let got: Vec<u64> = r2.try_iter().map(|e| index_of(&e)).collect();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(got, sorted, "reorder must change the order");
    }

    #[test]
    fn delayed_messages_arrive_through_the_delivery_thread() {
        let net = InProcNetwork::new(1);
        let r2 = node(&net, 2);
        let _r1 = node(&net, 1);
        net.set_faults(Faults {
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
            reorder: true,
            ..Faults::default()
        });
        for i in 0..20 {
            net.transport(1).send(env(1, 2, i)).unwrap();
        }
        let mut got: Vec<u64> = (0..20)
            .map(|_| index_of(&r2.recv_timeout(Duration::from_secs(10)).unwrap()))
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(net.pending(), 0);
    }
}
