//! Dropped-event detection from per-capture-thread sequence numbers.

use std::collections::HashMap;

/// Tracks the last sequence number seen per capture thread. Each capture thread counts
/// from 1 and increments by one per event it *attempted* to log, so a jump means the
/// runtime dropped events (typically a full session buffer).
#[derive(Default)]
pub(crate) struct SeqTracker {
    last: HashMap<u64, u32>,
    /// The capture thread of the previous event, cached outside the map because events of
    /// one thread come in long runs and the map lookup would dominate the hot path.
    cur: Option<(u64, u32)>,
    pub(crate) gaps: u64,
    pub(crate) dropped: u64,
}

impl SeqTracker {
    #[inline]
    pub(crate) fn observe(&mut self, thread: u64, seq: u32) {
        match self.cur {
            Some((t, last)) if t == thread => {
                self.check(last, seq);
                self.cur = Some((thread, seq));
            }
            _ => {
                self.park();
                if let Some(&last) = self.last.get(&thread) {
                    self.check(last, seq);
                }
                self.cur = Some((thread, seq));
            }
        }
    }

    fn park(&mut self) {
        if let Some((t, s)) = self.cur.take() {
            self.last.insert(t, s);
        }
    }

    #[inline]
    fn check(&mut self, last: u32, seq: u32) {
        let expected = last.wrapping_add(1);
        // A restart at 1 is a new OS thread reusing the id, not a drop.
        if seq == expected || seq == 1 {
            return;
        }
        let missing = seq.wrapping_sub(expected);
        // Going backwards is not a drop (and cannot be explained); ignore it.
        if missing < 1 << 31 {
            self.gaps += 1;
            self.dropped += u64::from(missing);
        }
    }

    /// A sequence point states a lower bound of what each thread attempted to log.
    pub(crate) fn checkpoint(&mut self, thread: u64, seq: u32) {
        self.park();
        match self.last.get_mut(&thread) {
            Some(last) => {
                let missing = seq.wrapping_sub(*last);
                if missing != 0 && missing < 1 << 31 {
                    self.gaps += 1;
                    self.dropped += u64::from(missing);
                    *last = seq;
                }
            }
            None => {
                self.last.insert(thread, seq);
            }
        }
    }
}
