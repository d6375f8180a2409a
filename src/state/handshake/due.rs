//! The expiry schedule: when to look at which entry.
//!
//! Two heaps, by the timeout a record waits out. Nearly every record that
//! comes due waits out the SYN timeout (seconds); an open connection's
//! waits out the idle timeout (hours) and usually outlives its entry. In one
//! heap those made it a hundred thousand records deep and its pops a sixth
//! of the time of a flood replay; apart, the heap that is popped stays small
//! enough for the cache, and a push on the other costs little (a new record
//! is nearly always its latest).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::slots::Slot;
use crate::time::Timestamp;

/// A reminder to look at the entry in `slot` at `at`. Records of entries
/// that are gone (`generation` differs), or that were rescheduled (`at`
/// differs from the entry's `check_at`), are skipped when they come up.
/// Ordered by time, then attempt; `wait` only picks the heap.
#[derive(Clone, Copy, Debug)]
pub(super) struct Due {
    pub at: Timestamp,
    pub generation: u64,
    pub slot: Slot,
    pub wait: Wait,
}

/// The timeout a record waits out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// The SYN timeout: an attempt's answer, a closed entry's lingering.
    Syn,
    /// The idle timeout of an open connection.
    Idle,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

/// Records, handed out earliest first (by time, then attempt).
#[derive(Default)]
pub(super) struct Schedule {
    syn: BinaryHeap<Reverse<Due>>,
    idle: BinaryHeap<Reverse<Due>>,
}

impl Schedule {
    pub fn len(&self) -> usize {
        self.syn.len() + self.idle.len()
    }

    /// Add a record. The buffers grow as a `Vec`'s do, but never so far
    /// that together they could hold more than `limit` records.
    pub fn push(&mut self, due: Due, limit: usize) {
        let room = limit.saturating_sub(self.len());
        let heap = match due.wait {
            Wait::Syn => &mut self.syn,
            Wait::Idle => &mut self.idle,
        };
        if heap.len() == heap.capacity() {
            heap.reserve_exact(heap.len().clamp(4, room.max(4)));
        }
        heap.push(Reverse(due));
    }

    /// Take the earliest record if it is due at `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Due> {
        let syn = self.syn.peek().map(|r| r.0);
        let idle = self.idle.peek().map(|r| r.0);
        let heap = match (syn, idle) {
            (Some(s), Some(i)) if i < s => &mut self.idle,
            (Some(_), _) => &mut self.syn,
            (None, _) => &mut self.idle,
        };
        match heap.peek() {
            Some(r) if r.0.at <= now => heap.pop().map(|r| r.0),
            _ => None,
        }
    }

    /// Replace every record with `records`, keeping the buffers.
    pub fn rebuild(&mut self, records: impl Iterator<Item = Due>) {
        let mut syn = std::mem::take(&mut self.syn).into_vec();
        let mut idle = std::mem::take(&mut self.idle).into_vec();
        syn.clear();
        idle.clear();
        for d in records {
            match d.wait {
                Wait::Syn => syn.push(Reverse(d)),
                Wait::Idle => idle.push(Reverse(d)),
            }
        }
        self.syn = BinaryHeap::from(syn);
        self.idle = BinaryHeap::from(idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(at: u64, generation: u64) -> Due {
        let wait = if at >= 7200 { Wait::Idle } else { Wait::Syn };
        Due {
            at: Timestamp(at),
            generation,
            slot: 0,
            wait,
        }
    }

    #[test]
    fn records_come_out_in_order_whatever_order_they_went_in() {
        let mut s = Schedule::default();
        let input = [(50, 1), (7200, 2), (53, 3), (7201, 4), (10, 5), (53, 0)];
        for (at, g) in input {
            s.push(due(at, g), 100);
        }
        assert_eq!(s.len(), 6);
        assert_eq!(s.pop_due(Timestamp(9)), None);
        let mut out = Vec::new();
        while let Some(d) = s.pop_due(Timestamp(10_000)) {
            out.push((d.at.0, d.generation));
        }
        assert_eq!(
            out,
            [(10, 5), (50, 1), (53, 0), (53, 3), (7200, 2), (7201, 4)]
        );
        s.rebuild([due(9, 2), due(3, 1)].into_iter());
        assert_eq!(s.pop_due(Timestamp(5)), Some(due(3, 1)));
        assert_eq!(s.pop_due(Timestamp(5)), None);
    }
}
