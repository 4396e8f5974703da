//! The window of appends sent to a follower and not yet acknowledged.

use std::collections::VecDeque;

/// A bounded FIFO of the last indexes of in-flight append messages. When it
/// is full the leader stops sending to that follower (flow control); an
/// acknowledgement up to index `i` frees every message ending at or below `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflights {
    window: VecDeque<u64>,
    capacity: usize,
}

impl Inflights {
    /// An empty window holding at most `capacity` messages.
    ///
    /// # Panics
    /// If `capacity` is 0 (`Config::validate` rejects it first).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "inflight window capacity must be positive");
        Inflights {
            window: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    /// True if no more messages may be sent.
    #[must_use]
    pub fn full(&self) -> bool {
        self.window.len() >= self.capacity
    }

    /// Number of messages in flight.
    #[must_use]
    pub fn count(&self) -> usize {
        self.window.len()
    }

    /// The window's capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Record a message whose last entry is `last`.
    ///
    /// # Panics
    /// If the window is full or `last` does not increase: the caller checks
    /// `full()` first and sends entries in order, so either is a broken invariant.
    pub fn add(&mut self, last: u64) {
        assert!(!self.full(), "cannot add into a full inflights window");
        if let Some(&back) = self.window.back() {
            assert!(back < last, "inflight index {last} not above {back}");
        }
        self.window.push_back(last);
    }

    /// Free every message whose last entry is `<= to`.
    pub fn free_to(&mut self, to: u64) {
        while let Some(&front) = self.window.front() {
            if front > to {
                break;
            }
            self.window.pop_front();
        }
    }

    /// Free the oldest message (a heartbeat response proves the follower is
    /// alive, so one slot is reopened to keep a full window from stalling).
    pub fn free_first_one(&mut self) {
        self.window.pop_front();
    }

    /// Forget everything in flight.
    pub fn reset(&mut self) {
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_frees_in_order() {
        let mut ins = Inflights::new(4);
        for i in [2, 4, 6, 8] {
            assert!(!ins.full());
            ins.add(i);
        }
        assert!(ins.full());
        assert_eq!(ins.count(), 4);
        ins.free_to(5);
        assert_eq!(ins.count(), 2);
        assert!(!ins.full());
        ins.free_to(5);
        assert_eq!(ins.count(), 2, "freeing again is a no-op");
        ins.free_to(100);
        assert_eq!(ins.count(), 0);
    }

    #[test]
    fn free_first_one_reopens_a_slot() {
        let mut ins = Inflights::new(2);
        ins.add(1);
        ins.add(2);
        assert!(ins.full());
        ins.free_first_one();
        assert!(!ins.full());
        ins.add(3);
        ins.free_to(2);
        assert_eq!(ins.count(), 1);
        ins.reset();
        assert_eq!(ins.count(), 0);
        ins.free_first_one();
        assert_eq!(ins.count(), 0);
    }

    #[test]
    #[should_panic(expected = "full inflights")]
    fn adding_to_full_window_panics() {
        let mut ins = Inflights::new(1);
        ins.add(1);
        ins.add(2);
    }

    #[test]
    #[should_panic(expected = "not above")]
    fn adding_out_of_order_panics() {
        let mut ins = Inflights::new(3);
        ins.add(5);
        ins.add(5);
    }

    #[test]
    fn free_below_everything_keeps_all() {
        let mut ins = Inflights::new(3);
        ins.add(10);
        ins.add(11);
        ins.free_to(9);
        assert_eq!(ins.count(), 2);
        assert_eq!(ins.capacity(), 3);
    }
}
