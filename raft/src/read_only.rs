//! Linearizable reads without log writes (ReadIndex, thesis §6.4).
//!
//! A read request records the commit index at arrival; it is served once a
//! quorum has answered a heartbeat carrying the request's context, proving
//! the leader was still the leader when the request arrived.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::types::Message;

/// How read-only requests are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOnlyOption {
    /// Confirm leadership with a quorum heartbeat round (always safe).
    #[default]
    Safe,
    /// Trust the leader lease (needs `check_quorum`; assumes bounded clock drift).
    LeaseBased,
}

/// A read that may be served once the application has applied `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index when the request was made.
    pub index: u64,
    /// The context given to `read_index`.
    pub request_ctx: Vec<u8>,
}

/// A pending read request.
#[derive(Clone, Debug)]
pub struct ReadIndexStatus {
    /// The original request.
    pub req: Message,
    /// The commit index when it arrived.
    pub index: u64,
    /// Nodes that acknowledged the heartbeat carrying it.
    pub acks: BTreeSet<u64>,
}

/// The queue of pending read requests, in arrival order.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    /// The serving mode.
    pub option: ReadOnlyOption,
    pending: BTreeMap<Vec<u8>, ReadIndexStatus>,
    queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    /// An empty queue.
    #[must_use]
    pub fn new(option: ReadOnlyOption) -> Self {
        ReadOnly {
            option,
            ..ReadOnly::default()
        }
    }

    /// Queue request `m` (context `ctx`) at commit `index`; the leader
    /// `self_id` acknowledges itself. A duplicate context is ignored.
    pub fn add_request(&mut self, index: u64, ctx: Vec<u8>, m: Message, self_id: u64) {
        if self.pending.contains_key(&ctx) {
            return;
        }
        let mut acks = BTreeSet::new();
        acks.insert(self_id);
        self.pending.insert(
            ctx.clone(),
            ReadIndexStatus {
                req: m,
                index,
                acks,
            },
        );
        self.queue.push_back(ctx);
    }

    /// Record `id`'s heartbeat acknowledgement of `ctx`; returns the acks so
    /// far, or None for an unknown context.
    pub fn recv_ack(&mut self, id: u64, ctx: &[u8]) -> Option<&BTreeSet<u64>> {
        let st = self.pending.get_mut(ctx)?;
        st.acks.insert(id);
        Some(&st.acks)
    }

    /// Dequeue every request up to and including `ctx` (earlier requests
    /// are confirmed too: they were asked before).
    pub fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_slice() == ctx) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(pos + 1);
        for c in self.queue.drain(..=pos) {
            if let Some(st) = self.pending.remove(&c) {
                out.push(st);
            }
        }
        out
    }

    /// The context of the newest pending request.
    #[must_use]
    pub fn last_pending_request_ctx(&self) -> Option<Vec<u8>> {
        self.queue.back().cloned()
    }

    /// Number of pending requests.
    #[must_use]
    pub fn pending_read_count(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_served_in_order_up_to_the_acked_one() {
        let mut ro = ReadOnly::new(ReadOnlyOption::Safe);
        for (i, ctx) in [b"a", b"b", b"c"].iter().enumerate() {
            ro.add_request(10 + i as u64, ctx.to_vec(), Message::default(), 1);
        }
        assert_eq!(ro.pending_read_count(), 3);
        assert_eq!(ro.last_pending_request_ctx(), Some(b"c".to_vec()));
        assert_eq!(ro.recv_ack(2, b"b").unwrap().len(), 2);
        assert!(ro.recv_ack(2, b"zz").is_none());
        let served = ro.advance(b"b");
        assert_eq!(
            served.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![10, 11]
        );
        assert_eq!(ro.pending_read_count(), 1);
        assert!(ro.advance(b"a").is_empty(), "already served");
        assert_eq!(ro.advance(b"c").len(), 1);
        assert_eq!(ro.pending_read_count(), 0);
    }

    #[test]
    fn duplicate_context_is_ignored() {
        let mut ro = ReadOnly::new(ReadOnlyOption::Safe);
        ro.add_request(1, b"x".to_vec(), Message::default(), 1);
        ro.add_request(2, b"x".to_vec(), Message::default(), 1);
        assert_eq!(ro.pending_read_count(), 1);
        let served = ro.advance(b"x");
        assert_eq!(served[0].index, 1);
    }

    #[test]
    fn acks_accumulate_per_request() {
        let mut ro = ReadOnly::new(ReadOnlyOption::Safe);
        ro.add_request(1, b"x".to_vec(), Message::default(), 1);
        ro.recv_ack(2, b"x");
        ro.recv_ack(2, b"x");
        let acks = ro.recv_ack(3, b"x").unwrap();
        assert_eq!(acks.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
