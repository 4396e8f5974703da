//! The leader's view of one follower's log.

use super::Inflights;

/// How the leader currently replicates to a follower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's log position is unknown: send one append per
    /// heartbeat interval and back off on rejection.
    #[default]
    Probe,
    /// The follower is known to match: stream appends optimistically, up
    /// to the inflight window.
    Replicate,
    /// A snapshot is on its way; send nothing until it is reported.
    Snapshot,
}

/// Replication progress of one peer, as tracked by the leader.
///
/// Invariant: `matched < next_idx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The highest index known to be replicated on the peer.
    pub matched: u64,
    /// The next index to send.
    pub next_idx: u64,
    /// The replication state.
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// The index the follower asked a snapshot for (0: none).
    pub pending_request_snapshot: u64,
    /// Heard from within the last election timeout (check-quorum).
    pub recent_active: bool,
    /// In `Probe` state: a probe was sent and not yet answered.
    pub probe_sent: bool,
    /// Appends in flight.
    pub ins: Inflights,
}

impl Progress {
    /// A fresh progress probing from `next_idx`.
    #[must_use]
    pub fn new(next_idx: u64, max_inflight: usize) -> Self {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            pending_request_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            ins: Inflights::new(max_inflight),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.ins.reset();
    }

    /// Start probing right after the last known match (or after the
    /// snapshot just sent, if that is further).
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    /// Start streaming after the match.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    /// A snapshot at `snapshot_idx` is being sent.
    pub fn become_snapshot(&mut self, snapshot_idx: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_idx;
    }

    /// The peer acknowledged up to `n`. Returns false for a stale ack.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = if self.matched < n {
            self.matched = n;
            self.probe_sent = false;
            true
        } else {
            false
        };
        self.next_idx = self.next_idx.max(n + 1);
        updated
    }

    /// Entries up to `n` were sent in `Replicate` state.
    pub fn optimistic_update(&mut self, n: u64) {
        self.next_idx = n + 1;
    }

    /// The peer rejected an append at `rejected`; `match_hint` is where it
    /// suggests probing next. Returns false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64, request_snapshot: u64) -> bool {
        if self.state == ProgressState::Replicate {
            // A rejection below the match is stale; so is one of an old
            // probe unless it carries a snapshot request.
            if rejected < self.matched || (rejected == self.matched && request_snapshot == 0) {
                return false;
            }
            if request_snapshot == 0 {
                self.next_idx = self.matched + 1;
            } else {
                self.pending_request_snapshot = request_snapshot;
            }
            return true;
        }
        // Probe (or Snapshot): only the rejection of the last probe counts.
        if (self.next_idx == 0 || self.next_idx - 1 != rejected) && request_snapshot == 0 {
            return false;
        }
        if request_snapshot == 0 {
            self.next_idx = rejected.min(match_hint + 1).max(self.matched + 1).max(1);
        } else if self.pending_request_snapshot == 0 {
            self.pending_request_snapshot = request_snapshot;
        }
        self.probe_sent = false;
        true
    }

    /// True if nothing may be sent to the peer now.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.ins.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Stop sending until the next heartbeat response (a probe is in flight).
    pub fn pause(&mut self) {
        self.probe_sent = true;
    }

    /// Allow the next probe.
    pub fn resume(&mut self) {
        self.probe_sent = false;
    }

    /// In `Snapshot` state: the peer has caught up to the snapshot.
    #[must_use]
    pub fn is_snapshot_caught_up(&self) -> bool {
        self.state == ProgressState::Snapshot && self.matched >= self.pending_snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(state: ProgressState, matched: u64, next: u64) -> Progress {
        let mut p = Progress::new(next, 4);
        p.state = state;
        p.matched = matched;
        p
    }

    #[test]
    fn maybe_update_moves_match_and_next() {
        // (matched, next, update, want_ok, want_match, want_next)
        let cases = [
            (3, 5, 2, false, 3, 5),
            (3, 5, 3, false, 3, 5),
            (3, 5, 4, true, 4, 5),
            (3, 5, 5, true, 5, 6),
            (3, 5, 9, true, 9, 10),
        ];
        for (m, n, up, ok, wm, wn) in cases {
            let mut p = pr(ProgressState::Probe, m, n);
            p.probe_sent = true;
            assert_eq!(p.maybe_update(up), ok, "update {up}");
            assert_eq!((p.matched, p.next_idx), (wm, wn), "update {up}");
            if ok {
                assert!(!p.probe_sent, "an ack resumes probing");
            }
        }
    }

    #[test]
    fn maybe_decr_in_replicate() {
        // Stale rejections are ignored.
        let mut p = pr(ProgressState::Replicate, 5, 10);
        assert!(!p.maybe_decr_to(4, 4, 0));
        assert!(!p.maybe_decr_to(5, 5, 0));
        assert_eq!(p.next_idx, 10);
        // A real rejection falls back to match + 1.
        assert!(p.maybe_decr_to(9, 9, 0));
        assert_eq!(p.next_idx, 6);
        // A snapshot request is remembered.
        let mut p = pr(ProgressState::Replicate, 5, 10);
        assert!(p.maybe_decr_to(5, 5, 7));
        assert_eq!(p.pending_request_snapshot, 7);
    }

    #[test]
    fn maybe_decr_in_probe_uses_hint() {
        let mut p = pr(ProgressState::Probe, 0, 10);
        // Not the probe we sent (next-1 = 9).
        assert!(!p.maybe_decr_to(5, 5, 0));
        assert_eq!(p.next_idx, 10);
        p.probe_sent = true;
        assert!(p.maybe_decr_to(9, 3, 0));
        assert_eq!(p.next_idx, 4, "jumps to hint + 1");
        assert!(!p.probe_sent);
        // Never below match + 1, never above the rejected index.
        let mut p = pr(ProgressState::Probe, 6, 10);
        assert!(p.maybe_decr_to(9, 2, 0));
        assert_eq!(p.next_idx, 7);
        let mut p = pr(ProgressState::Probe, 0, 10);
        assert!(p.maybe_decr_to(9, 50, 0));
        assert_eq!(p.next_idx, 9);
        // Next never reaches 0.
        let mut p = pr(ProgressState::Probe, 0, 1);
        assert!(p.maybe_decr_to(0, 0, 0));
        assert_eq!(p.next_idx, 1);
    }

    #[test]
    fn paused_by_state() {
        let mut p = pr(ProgressState::Probe, 0, 1);
        assert!(!p.is_paused());
        p.pause();
        assert!(p.is_paused());
        p.resume();
        assert!(!p.is_paused());
        let mut p = pr(ProgressState::Replicate, 0, 1);
        assert!(!p.is_paused());
        for i in 1..=4 {
            p.ins.add(i);
        }
        assert!(p.is_paused(), "full window pauses");
        let p = pr(ProgressState::Snapshot, 0, 1);
        assert!(p.is_paused());
    }

    #[test]
    fn state_transitions_reset_next() {
        let mut p = pr(ProgressState::Replicate, 5, 9);
        p.ins.add(8);
        p.become_probe();
        assert_eq!(
            (p.state, p.next_idx, p.ins.count()),
            (ProgressState::Probe, 6, 0)
        );
        p.become_snapshot(20);
        assert_eq!(p.pending_snapshot, 20);
        assert!(!p.is_snapshot_caught_up());
        p.matched = 20;
        assert!(p.is_snapshot_caught_up());
        p.matched = 5;
        p.become_probe();
        assert_eq!(p.next_idx, 21, "probe resumes after the snapshot sent");
        p.matched = 21;
        p.become_replicate();
        assert_eq!((p.state, p.next_idx), (ProgressState::Replicate, 22));
    }
}
