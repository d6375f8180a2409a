//! Frames from several live interfaces put back in timestamp order.
//!
//! Each interface's ring hands over its frames in batches, up to the
//! capture timeout late, and one poll reads the interfaces one after the
//! other: a SYN-ACK seen on one interface could reach the pipeline before
//! the SYN seen on another. [`Reorder`] keeps copies of the frames and
//! releases them in timestamp order once they are older than `hold` (the
//! capture timeout plus a margin): by then every interface has handed over
//! what it captured before that time, so no earlier frame can still come.
//! Kernel timestamps and [`Timestamp::now`] are the same clock.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::frame::{Frame, LinkType};
use crate::time::Timestamp;

/// Most frames held; beyond it the oldest are released early.
pub const MAX_HELD: usize = 1 << 16;

struct Held {
    ts: Timestamp,
    seq: u64,
    linktype: LinkType,
    wire_len: u32,
    interface: u32,
    ts_invalid: bool,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Held {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

pub struct Reorder {
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
    hold: Duration,
}

impl Reorder {
    pub fn new(hold: Duration) -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            seq: 0,
            hold,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keep a copy of `f`.
    pub fn push(&mut self, f: &Frame<'_>) {
        self.heap.push(Reverse(Held {
            ts: f.ts,
            seq: self.seq,
            linktype: f.linktype,
            wire_len: f.wire_len,
            interface: f.interface,
            ts_invalid: f.ts_invalid,
            data: f.data.to_vec(),
        }));
        self.seq += 1;
    }

    /// When the oldest frame held becomes due, if any.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.heap
            .peek()
            .map(|Reverse(h)| h.ts.saturating_add(self.hold))
    }

    /// Hand `sink` every frame held, due or not, in timestamp order: the
    /// capture stops and no earlier frame will come.
    pub fn release_all(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> usize {
        self.release(Timestamp(u64::MAX), sink)
    }

    /// Hand `sink` the frames older than `hold` at `now` (and the oldest
    /// beyond [`MAX_HELD`]), in timestamp order; equal timestamps in the
    /// order they were read.
    pub fn release(&mut self, now: Timestamp, sink: &mut dyn FnMut(&Frame<'_>)) -> usize {
        let mut n = 0;
        while let Some(Reverse(top)) = self.heap.peek() {
            let due = top.ts.saturating_add(self.hold) <= now;
            if !due && self.heap.len() <= MAX_HELD {
                break;
            }
            let Some(Reverse(h)) = self.heap.pop() else {
                break;
            };
            sink(&Frame {
                ts: h.ts,
                linktype: h.linktype,
                wire_len: h.wire_len,
                data: &h.data,
                interface: h.interface,
                ts_invalid: h.ts_invalid,
            });
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ts: u64, interface: u32, data: &[u8]) -> Frame<'_> {
        Frame {
            ts: Timestamp(ts),
            linktype: LinkType::ETHERNET,
            wire_len: data.len() as u32,
            data,
            interface,
            ts_invalid: false,
        }
    }

    #[test]
    fn releases_in_timestamp_order_once_held_long_enough() {
        let mut r = Reorder::new(Duration::from_nanos(100));
        // Read interface 0 first, though interface 1 saw the earlier frame.
        r.push(&frame(50, 0, b"syn-ack"));
        r.push(&frame(60, 0, b"ack"));
        r.push(&frame(40, 1, b"syn"));
        let mut got = Vec::new();
        let mut sink = |f: &Frame<'_>| got.push((f.ts.0, f.interface, f.data.to_vec()));
        assert_eq!(r.release(Timestamp(145), &mut sink), 1);
        assert_eq!(r.release(Timestamp(1000), &mut sink), 2);
        assert_eq!(
            got,
            vec![
                (40, 1, b"syn".to_vec()),
                (50, 0, b"syn-ack".to_vec()),
                (60, 0, b"ack".to_vec())
            ]
        );
        assert!(r.is_empty());
    }
}
