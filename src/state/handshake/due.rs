//! The expiry schedule: when to look at which entry.
//!
//! Two queues, by the timeout a record waits out. Nearly every record that
//! comes due waits out the SYN timeout (seconds); an open connection's
//! waits out the idle timeout (hours) and usually outlives its entry. In one
//! heap those made it a hundred thousand records deep and its pops a sixth
//! of the time of a flood replay. Apart, each queue's records come nearly
//! always in time order, so each is a first-in first-out run with a heap
//! for the exceptions ([`Queue`]).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

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
    syn: Queue,
    idle: Queue,
}

/// The records of one wait. Capture time only moves forward and every
/// record of a queue waits out the same timeout, so records nearly always
/// come in order: those go to a first-in first-out run, O(1) each way, and
/// only the few that do not (a reschedule to an earlier time, held frames
/// processed at their own times) to a heap. The earliest record is at the
/// front of one of the two.
#[derive(Default)]
struct Queue {
    run: VecDeque<Due>,
    heap: BinaryHeap<Reverse<Due>>,
}

impl Queue {
    fn len(&self) -> usize {
        self.run.len() + self.heap.len()
    }

    fn push(&mut self, due: Due, room: usize) {
        if self.run.back().is_none_or(|last| *last <= due) {
            if self.run.len() == self.run.capacity() {
                self.run.reserve_exact(self.run.len().clamp(4, room.max(4)));
            }
            self.run.push_back(due);
        } else {
            if self.heap.len() == self.heap.capacity() {
                self.heap
                    .reserve_exact(self.heap.len().clamp(4, room.max(4)));
            }
            self.heap.push(Reverse(due));
        }
    }

    fn first(&self) -> Option<Due> {
        match (self.run.front(), self.heap.peek()) {
            (Some(r), Some(Reverse(h))) => Some(*r.min(h)),
            (r, h) => r.copied().or(h.map(|h| h.0)),
        }
    }

    fn pop(&mut self) -> Option<Due> {
        match (self.run.front(), self.heap.peek()) {
            (Some(r), Some(Reverse(h))) if h < r => self.heap.pop().map(|h| h.0),
            (Some(_), _) => self.run.pop_front(),
            (None, _) => self.heap.pop().map(|h| h.0),
        }
    }

    /// Replace every record with `records`, keeping the buffers.
    fn rebuild(&mut self, mut records: Vec<Due>) {
        records.sort_unstable();
        self.heap.clear();
        self.run.clear();
        self.run.extend(records);
    }
}

impl Schedule {
    pub fn len(&self) -> usize {
        self.syn.len() + self.idle.len()
    }

    /// Add a record. The buffers grow as a `Vec`'s do, but never so far
    /// that together they could hold more than `limit` records.
    pub fn push(&mut self, due: Due, limit: usize) {
        let room = limit.saturating_sub(self.len());
        match due.wait {
            Wait::Syn => self.syn.push(due, room),
            Wait::Idle => self.idle.push(due, room),
        }
    }

    /// Take the earliest record if it is due at `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Due> {
        let queue = match (self.syn.first(), self.idle.first()) {
            (Some(s), Some(i)) if i < s => &mut self.idle,
            (Some(s), _) if s.at <= now => &mut self.syn,
            (Some(_), _) => return None,
            (None, Some(i)) if i.at <= now => &mut self.idle,
            (None, _) => return None,
        };
        match queue.first() {
            Some(d) if d.at <= now => queue.pop(),
            _ => None,
        }
    }

    /// Replace every record with `records`, keeping the buffers.
    pub fn rebuild(&mut self, records: impl Iterator<Item = Due>) {
        let (syn, idle): (Vec<Due>, Vec<Due>) = records.partition(|d| d.wait == Wait::Syn);
        self.syn.rebuild(syn);
        self.idle.rebuild(idle);
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

    /// Mostly in-order pushes with some out of order, pops interleaved:
    /// records come out exactly as from one sorted set.
    #[test]
    fn run_and_heap_hand_out_what_a_sorted_set_would() {
        let mut x = 0x9e37_79b9_u64;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut s = Schedule::default();
        // A multiset: (time, attempt) -> how many records.
        let mut reference = std::collections::BTreeMap::<(Timestamp, u64), usize>::new();
        let (mut now, mut generation) = (0u64, 0u64);
        for _ in 0..20_000 {
            now += rnd(3);
            generation += 1;
            // Usually now + a timeout; sometimes earlier (a reschedule).
            let at = match rnd(10) {
                0 => now.saturating_sub(rnd(40)) + 5,
                1 => now + 7200,
                _ => now + 5,
            };
            let d = due(
                at,
                if rnd(8) == 0 {
                    generation / 2
                } else {
                    generation
                },
            );
            s.push(d, usize::MAX);
            *reference.entry((d.at, d.generation)).or_default() += 1;
            if rnd(3) == 0 {
                while let Some(d) = s.pop_due(Timestamp(now)) {
                    let mut first = reference.first_entry().expect("reference not empty");
                    assert_eq!((d.at, d.generation), *first.key());
                    *first.get_mut() -= 1;
                    if *first.get() == 0 {
                        first.remove();
                    }
                    assert!(d.at.0 <= now);
                }
                assert!(reference.keys().next().is_none_or(|f| f.0 .0 > now));
            }
        }
        assert_eq!(s.len(), reference.values().sum::<usize>());
    }
}
