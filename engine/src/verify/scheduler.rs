//! A seeded, deterministic event scheduler with a simulated clock.
//!
//! The simulator runs every replica, the network and the disks on one
//! thread. All of them put their future work (a message delivery, a timer
//! tick, an fsync completion, a crash) into one [`Scheduler`], which hands
//! events back in time order. Time is simulated: it jumps straight to the
//! next event, so a run of hours of simulated time takes milliseconds, and
//! the same seed always yields the same run — the property that lets a
//! failing seed be replayed with one command.
//!
//! ```
//! use tandem::verify::{Scheduler, TieOrder};
//!
//! let mut scheduler = Scheduler::new(42, TieOrder::Fifo);
//! scheduler.schedule_after(10, "tick");
//! let delay = scheduler.random_in(1, 5);
//! scheduler.schedule_after(delay, "deliver");
//! let (time, _, first) = scheduler.pop().unwrap();
//! assert_eq!((time, first), (delay, "deliver"));
//! assert_eq!(scheduler.now(), delay);
//! ```

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How events scheduled for the same instant are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TieOrder {
    /// In the order they were scheduled.
    Fifo,
    /// In an order drawn from the seeded RNG: explores more interleavings
    /// (still deterministic for a seed).
    Random,
}

/// Identifies a scheduled event, to cancel it (e.g. a timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(u64);

/// Position of an event in the queue: time, then tie-break, then sequence
/// number (unique, so keys never collide).
type QueueKey = (u64, u64, u64);

/// A deterministic discrete-event scheduler owning the simulated clock and
/// the simulation's only source of randomness.
#[derive(Debug)]
pub struct Scheduler<E> {
    seed: u64,
    rng: ChaCha8Rng,
    tie_order: TieOrder,
    /// Simulated time, in abstract units (the simulator uses microseconds).
    now: u64,
    next_seq: u64,
    queue: BTreeMap<QueueKey, E>,
    keys: HashMap<u64, QueueKey>,
    pending_max: usize,
    popped_total: u64,
}

impl<E> Scheduler<E> {
    /// Default bound on queued events; a simulation needing more has a
    /// runaway feedback loop (e.g. a message storm), which is a bug.
    pub const PENDING_MAX_DEFAULT: usize = 1_000_000;

    /// A scheduler at time 0 with at most [`Self::PENDING_MAX_DEFAULT`]
    /// queued events.
    #[must_use]
    pub fn new(seed: u64, tie_order: TieOrder) -> Self {
        Self::with_pending_max(seed, tie_order, Self::PENDING_MAX_DEFAULT)
    }

    /// A scheduler at time 0 with at most `pending_max` queued events.
    ///
    /// # Panics
    /// If `pending_max` is 0.
    #[must_use]
    pub fn with_pending_max(seed: u64, tie_order: TieOrder, pending_max: usize) -> Self {
        assert!(pending_max > 0, "a scheduler needs room for one event");
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            tie_order,
            now: 0,
            next_seq: 0,
            queue: BTreeMap::new(),
            keys: HashMap::new(),
            pending_max,
            popped_total: 0,
        }
    }

    /// The seed this scheduler was created with (print it on failure).
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current simulated time.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The simulation's RNG. Every random choice of a run must come from
    /// here (never from a thread RNG), in a deterministic order.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// A uniform random value in `[low, high]`.
    ///
    /// # Panics
    /// If `low > high`.
    pub fn random_in(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range [{low}, {high}]");
        self.rng.gen_range(low..=high)
    }

    /// True with probability `numerator / denominator` (integers keep runs
    /// identical across platforms).
    ///
    /// # Panics
    /// If `denominator` is 0 or `numerator > denominator`.
    pub fn chance(&mut self, numerator: u32, denominator: u32) -> bool {
        assert!(
            denominator > 0 && numerator <= denominator,
            "bad probability {numerator}/{denominator}"
        );
        self.rng.gen_range(0..denominator) < numerator
    }

    /// Schedules `event` at absolute time `at`.
    ///
    /// # Panics
    /// If `at` is in the past, or the queue already holds its maximum
    /// number of events: both are simulator bugs.
    pub fn schedule_at(&mut self, at: u64, event: E) -> EventId {
        assert!(
            at >= self.now,
            "event scheduled in the past: at {at}, now {}",
            self.now
        );
        assert!(
            self.queue.len() < self.pending_max,
            "scheduler holds {} events, its maximum: runaway simulation",
            self.queue.len()
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        let tie = match self.tie_order {
            TieOrder::Fifo => 0,
            TieOrder::Random => self.rng.gen(),
        };
        let key = (at, tie, seq);
        self.queue.insert(key, event);
        self.keys.insert(seq, key);
        EventId(seq)
    }

    /// Schedules `event` `delay` units from now.
    ///
    /// # Panics
    /// As [`Scheduler::schedule_at`], or if the time overflows.
    pub fn schedule_after(&mut self, delay: u64, event: E) -> EventId {
        let at = self
            .now
            .checked_add(delay)
            .expect("simulated time overflows u64");
        self.schedule_at(at, event)
    }

    /// Cancels a scheduled event; returns it if it had not fired yet.
    pub fn cancel(&mut self, id: EventId) -> Option<E> {
        let key = self.keys.remove(&id.0)?;
        let event = self.queue.remove(&key);
        debug_assert!(event.is_some(), "key index and queue disagree");
        event
    }

    /// The time of the next event, if any.
    #[must_use]
    pub fn peek_time(&self) -> Option<u64> {
        self.queue.keys().next().map(|&(at, _, _)| at)
    }

    /// Removes the next event, advances the clock to its time and returns
    /// `(time, id, event)`.
    pub fn pop(&mut self) -> Option<(u64, EventId, E)> {
        let ((at, _, seq), event) = self.queue.pop_first()?;
        self.keys.remove(&seq);
        assert!(at >= self.now, "simulated time went backwards");
        self.now = at;
        self.popped_total += 1;
        Some((at, EventId(seq), event))
    }

    /// Moves the clock forward to `at` without running anything (an idle
    /// period). Events due before `at` must be popped first.
    ///
    /// # Panics
    /// If `at` is in the past or an event is due before `at`.
    pub fn advance_to(&mut self, at: u64) {
        assert!(
            at >= self.now,
            "cannot move time back from {} to {at}",
            self.now
        );
        if let Some(next) = self.peek_time() {
            assert!(next >= at, "an event is due at {next}, before {at}");
        }
        self.now = at;
    }

    /// Number of queued events.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if no event is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Number of events popped so far (a run's length, for reports).
    #[must_use]
    pub fn popped_total(&self) -> u64 {
        self.popped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, tie_order: TieOrder) -> Vec<(u64, u32)> {
        let mut s = Scheduler::new(seed, tie_order);
        for i in 0..50u32 {
            let delay = s.random_in(0, 5);
            s.schedule_after(delay, i);
        }
        let mut out = Vec::new();
        while let Some((at, _, e)) = s.pop() {
            if e < 20 {
                // Events schedule more events, as timers and replies do.
                let delay = s.random_in(1, 3);
                s.schedule_after(delay, e + 100);
            }
            out.push((at, e));
        }
        out
    }

    #[test]
    fn same_seed_same_run_different_seed_different_run() {
        for tie_order in [TieOrder::Fifo, TieOrder::Random] {
            assert_eq!(run(7, tie_order), run(7, tie_order));
            assert_ne!(run(7, tie_order), run(8, tie_order));
        }
    }

    #[test]
    fn events_come_out_in_time_order_fifo_within_an_instant() {
        let out = run(3, TieOrder::Fifo);
        assert_eq!(out.len(), 70);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut s = Scheduler::new(1, TieOrder::Fifo);
        for i in 0..10 {
            s.schedule_at(5, i);
        }
        let order: Vec<i32> = std::iter::from_fn(|| s.pop().map(|(_, _, e)| e)).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn random_ties_shuffle_an_instant() {
        let mut s = Scheduler::new(1, TieOrder::Random);
        for i in 0..20 {
            s.schedule_at(5, i);
        }
        let order: Vec<i32> = std::iter::from_fn(|| s.pop().map(|(_, _, e)| e)).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_ne!(order, sorted, "20 ties should not come out in FIFO order");
    }

    #[test]
    fn cancel_removes_a_timer_once() {
        let mut s = Scheduler::new(1, TieOrder::Fifo);
        let a = s.schedule_after(10, "a");
        s.schedule_after(20, "b");
        assert_eq!(s.cancel(a), Some("a"));
        assert_eq!(s.cancel(a), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop().map(|(t, _, e)| (t, e)), Some((20, "b")));
        assert_eq!(s.now(), 20);
        assert!(s.is_empty());
        assert_eq!(s.popped_total(), 1);
    }

    #[test]
    #[should_panic(expected = "in the past")]
    fn scheduling_in_the_past_panics() {
        let mut s = Scheduler::new(1, TieOrder::Fifo);
        s.schedule_at(10, ());
        s.pop();
        s.schedule_at(9, ());
    }

    #[test]
    #[should_panic(expected = "runaway")]
    fn queue_is_bounded() {
        let mut s = Scheduler::with_pending_max(1, TieOrder::Fifo, 3);
        for _ in 0..4 {
            s.schedule_after(1, ());
        }
    }

    #[test]
    fn advance_to_moves_idle_time_and_chance_is_sane() {
        let mut s: Scheduler<()> = Scheduler::new(9, TieOrder::Fifo);
        s.advance_to(100);
        assert_eq!(s.now(), 100);
        assert!(!(0..100).any(|_| s.chance(0, 10)));
        assert!((0..100).all(|_| s.chance(10, 10)));
        let hits = (0..1000).filter(|_| s.chance(1, 2)).count();
        assert!((300..700).contains(&hits), "{hits} of 1000 coin flips");
    }
}
