//! A one-shot answer slot for clients waiting on the replica: the waiter
//! parks on a condition variable at once.
//!
//! Client requests used to wait on a crossbeam `bounded(1)` channel, whose
//! blocking receive first spins and then calls `sched_yield` several times
//! before it parks. With many client threads on few cores those yields
//! took a measurable share of the CPU (17% in client threads at 64
//! clients, mostly `sched_yield` and futex calls) — CPU the raft loops,
//! WAL writers and apply threads needed. An answer here arrives after at
//! least one fdatasync, far longer than any spin, so spinning buys nothing:
//! [`Receiver::recv_timeout`] parks right away, and [`Sender::send`] wakes
//! the receiver only if it is parked (no futex call otherwise).
//!
//! The interface mirrors the subset of `crossbeam_channel` the engine used
//! (including its error types): the first [`Sender::send`] delivers, later
//! ones are refused; once every sender is gone without an answer the
//! receiver sees `Disconnected`.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use crossbeam_channel::{RecvTimeoutError, TryRecvError};

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    /// The answer, until the receiver takes it.
    value: Option<T>,
    /// An answer was delivered (taken or not): later sends are refused.
    sent: bool,
    /// Live senders; none and no value means no answer will come.
    senders: usize,
    /// The receiver is parked: a send (or the last sender leaving) must
    /// wake it.
    parked: bool,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The critical sections cannot panic midway; a poisoned lock still
        // holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answering side; cloneable (every clone may answer, the first wins).
pub struct Sender<T> {
    slot: Arc<Slot<T>>,
}

/// The waiting side.
pub struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

/// A new slot.
#[must_use]
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            sent: false,
            senders: 1,
            parked: false,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            slot: Arc::clone(&slot),
        },
        Receiver { slot },
    )
}

impl<T> Sender<T> {
    /// Deliver the answer.
    ///
    /// # Errors
    /// Gives `value` back if an answer was delivered already.
    pub fn send(&self, value: T) -> Result<(), T> {
        let mut st = self.slot.lock();
        if st.sent {
            return Err(value);
        }
        st.sent = true;
        st.value = Some(value);
        let parked = st.parked;
        drop(st);
        if parked {
            self.slot.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.slot.lock().senders += 1;
        Sender {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = self.slot.lock();
        st.senders -= 1;
        let wake = st.senders == 0 && st.value.is_none() && st.parked;
        drop(st);
        if wake {
            self.slot.ready.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// True while no answer is waiting to be taken.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slot.lock().value.is_none()
    }

    /// The answer if it is there.
    ///
    /// # Errors
    /// `Empty` while it may still come; `Disconnected` if every sender is
    /// gone without leaving one.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut st = self.slot.lock();
        match st.value.take() {
            Some(v) => Ok(v),
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Wait for the answer, at most `timeout`, parked (no spinning).
    ///
    /// # Errors
    /// `Timeout`; `Disconnected` if every sender is gone without an answer.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.slot.lock();
        loop {
            if let Some(v) = st.value.take() {
                st.parked = false;
                return Ok(v);
            }
            if st.senders == 0 {
                st.parked = false;
                return Err(RecvTimeoutError::Disconnected);
            }
            st.parked = true;
            st = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        st.parked = false;
                        return Err(RecvTimeoutError::Timeout);
                    }
                    self.slot
                        .ready
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .slot
                    .ready
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("oneshot::Sender").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("oneshot::Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_wins_and_reaches_a_parked_receiver() {
        let (tx, rx) = channel::<u32>();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let tx2 = tx.clone();
        let t = std::thread::spawn(move || {
            // Whether the receiver parked first or not, the answer arrives.
            tx2.send(7).unwrap();
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(7));
        t.join().unwrap();
        assert_eq!(tx.send(8), Err(8), "one answer only");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_receiver_whose_senders_all_left_is_disconnected_even_while_parked() {
        let (tx, rx) = channel::<u32>();
        let tx2 = tx.clone();
        drop(tx);
        let t = std::thread::spawn(move || drop(tx2));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );
        t.join().unwrap();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn an_unanswered_wait_times_out() {
        let (_tx, rx) = channel::<u32>();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
        assert_eq!(
            rx.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Timeout)
        );
    }
}
