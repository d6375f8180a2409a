//! One connection seen by sources of different kinds in one process: a
//! capture and a node's firewall log (`replay capture.pcap pfirewall.log`,
//! `run -i … --follow …`), or flow records. Each kind makes its own
//! observation of the connection; the first is the attempt, the others
//! join it, so it counts once. Their outcomes are compared: one kind saw it
//! established while another says refused, unanswered or denied is a
//! [`Disagreement`], reported and never settled in favour of either.
//!
//! - **Same connection.** The same 4-tuple (initiator first) seen by
//!   another kind within [`MERGE_WITHIN`] of its first observation (record
//!   times have whole seconds, node clocks differ by a few).
//! - **Same kind again** is not joined here: a capture's reused 4-tuple is
//!   the handshake table's business, a log's repeated record the
//!   [`super::merge::RecordMerge`]'s.
//! - **Bounded.** At most `capacity` connections; the oldest goes first
//!   (counted in [`KindJoin::evicted`]). An entry is kept [`HOLD`] after
//!   its first observation, for the outcomes that come later (a record's
//!   outcome settles at the end of its merge window).
//! - **Off** until [`KindJoin::enable`]: a process that reads one kind of
//!   source pays nothing per attempt.

use std::collections::VecDeque;
use std::time::Duration;

use crate::map::FastMap;
use crate::observation::{FlowKey, Outcome, SensorKind};
use crate::state::merge::{MERGE_CAPACITY, MERGE_WITHIN};
use crate::time::Timestamp;

/// How long an entry is kept after its first observation: its join window
/// and a record's merge window after that.
pub const HOLD: Duration = Duration::from_secs(2 * MERGE_WITHIN.as_secs() + 5);

/// Two kinds of source that told different fates of one connection: the
/// first one that saw it established and the one that says it was not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Disagreement {
    pub established: SensorKind,
    pub blocked: (SensorKind, Outcome),
}

#[derive(Clone, Debug)]
struct Seen<T> {
    first: Timestamp,
    tag: T,
    /// Each kind's outcome, by [`SensorKind`] index; `Some(None)`: seen,
    /// no outcome yet.
    kinds: [Option<Option<Outcome>>; SensorKind::ALL.len()],
    reported: bool,
}

/// Recent connections by 4-tuple, with the kinds that saw them.
#[derive(Debug)]
pub struct KindJoin<T> {
    on: bool,
    seen: FastMap<FlowKey, Seen<T>>,
    order: VecDeque<(Timestamp, FlowKey)>,
    capacity: usize,
    joined: u64,
    evicted: u64,
}

impl<T: Copy> Default for KindJoin<T> {
    fn default() -> Self {
        KindJoin::new(MERGE_CAPACITY)
    }
}

impl<T: Copy> KindJoin<T> {
    pub fn new(capacity: usize) -> Self {
        KindJoin {
            on: false,
            seen: FastMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            joined: 0,
            evicted: 0,
        }
    }

    /// Start joining (a second kind of source is read).
    pub fn enable(&mut self) {
        self.on = true;
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Observations joined to a connection another kind saw first.
    pub fn joined(&self) -> u64 {
        self.joined
    }

    /// Connections dropped at capacity before their hold ended.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Forget everything (a new policy: the tags are the old one's).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }

    /// The tag of the connection `key` another kind saw within
    /// [`MERGE_WITHIN`] before `ts` (or after: records' times are coarse);
    /// `kind` joins it. `None`: a new attempt.
    #[inline]
    pub fn join(&mut self, key: &FlowKey, kind: SensorKind, ts: Timestamp) -> Option<T> {
        if !self.on {
            return None;
        }
        self.join_on(key, kind, ts)
    }

    fn join_on(&mut self, key: &FlowKey, kind: SensorKind, ts: Timestamp) -> Option<T> {
        let s = self.seen.get_mut(key)?;
        let apart = ts.saturating_sub(s.first).max(s.first.saturating_sub(ts));
        if apart >= MERGE_WITHIN || s.kinds[kind as usize].is_some() {
            return None;
        }
        s.kinds[kind as usize] = Some(None);
        self.joined += 1;
        Some(s.tag)
    }

    /// A new attempt of `key` seen by `kind` at `ts`, with its tag.
    #[inline]
    pub fn insert(&mut self, key: FlowKey, kind: SensorKind, ts: Timestamp, tag: T) {
        if self.on {
            self.insert_on(key, kind, ts, tag);
        }
    }

    fn insert_on(&mut self, key: FlowKey, kind: SensorKind, ts: Timestamp, tag: T) {
        self.expire(ts);
        while self.seen.len() >= self.capacity {
            let Some((first, old)) = self.order.pop_front() else {
                break;
            };
            if self.remove_if(first, &old) {
                self.evicted += 1;
            }
        }
        let mut kinds = [None; SensorKind::ALL.len()];
        kinds[kind as usize] = Some(None);
        let s = Seen {
            first: ts,
            tag,
            kinds,
            reported: false,
        };
        self.seen.insert(key, s);
        self.order.push_back((ts, key));
    }

    /// `kind` told the outcome of `key`: a disagreement the first time
    /// one kind's `established` meets another's refused, unanswered or
    /// denied.
    #[inline]
    pub fn outcome(
        &mut self,
        key: &FlowKey,
        kind: SensorKind,
        outcome: Outcome,
    ) -> Option<Disagreement> {
        if !self.on {
            return None;
        }
        self.outcome_on(key, kind, outcome)
    }

    fn outcome_on(
        &mut self,
        key: &FlowKey,
        kind: SensorKind,
        outcome: Outcome,
    ) -> Option<Disagreement> {
        let s = self.seen.get_mut(key)?;
        let slot = s.kinds.get_mut(kind as usize)?;
        if slot.is_none() {
            return None;
        }
        *slot = Some(Some(outcome));
        if s.reported {
            return None;
        }
        let told = SensorKind::ALL
            .into_iter()
            .filter_map(|k| s.kinds[k as usize].flatten().map(|o| (k, o)));
        let established = told.clone().find(|(_, o)| *o == Outcome::Established);
        let blocked = told
            .filter(|(_, o)| o.is_blocked())
            .find(|(k, _)| established.is_some_and(|(e, _)| e != *k));
        let d = Disagreement {
            established: established?.0,
            blocked: blocked?,
        };
        s.reported = true;
        Some(d)
    }

    /// Drop the entries whose hold has passed at `now`.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(first, key)) = self.order.front() {
            if now.saturating_sub(first) < HOLD {
                break;
            }
            self.order.pop_front();
            self.remove_if(first, &key);
        }
    }

    /// Remove `key` if its entry is the one begun at `first`.
    fn remove_if(&mut self, first: Timestamp, key: &FlowKey) -> bool {
        if self.seen.get(key).is_some_and(|s| s.first == first) {
            self.seen.remove(key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            client: "192.0.2.11".parse().unwrap(),
            client_port: port,
            server: "192.0.2.10".parse().unwrap(),
            server_port: 4242,
        }
    }

    fn at(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos(s, 0)
    }

    #[test]
    fn another_kind_joins_and_a_contrary_outcome_is_a_disagreement() {
        let mut j = KindJoin::<u32>::new(8);
        j.enable();
        j.insert(key(1), SensorKind::FirewallLog, at(100), 7);
        // The same kind again is not joined here.
        assert_eq!(j.join(&key(1), SensorKind::FirewallLog, at(101)), None);
        assert_eq!(j.join(&key(1), SensorKind::Packets, at(101)), Some(7));
        assert_eq!(
            j.outcome(&key(1), SensorKind::Packets, Outcome::Established),
            None
        );
        let d = j.outcome(&key(1), SensorKind::FirewallLog, Outcome::Denied);
        assert_eq!(
            d,
            Some(Disagreement {
                established: SensorKind::Packets,
                blocked: (SensorKind::FirewallLog, Outcome::Denied),
            })
        );
        // Reported once.
        assert_eq!(
            j.outcome(&key(1), SensorKind::FirewallLog, Outcome::Denied),
            None
        );
        assert_eq!(j.joined(), 1);
    }

    #[test]
    fn agreeing_kinds_and_late_joins_are_not_disagreements() {
        let mut j = KindJoin::<u32>::new(8);
        j.enable();
        j.insert(key(1), SensorKind::Packets, at(100), 1);
        assert_eq!(j.join(&key(1), SensorKind::Flow, at(102)), Some(1));
        assert_eq!(
            j.outcome(&key(1), SensorKind::Packets, Outcome::Established),
            None
        );
        assert_eq!(
            j.outcome(&key(1), SensorKind::Flow, Outcome::Established),
            None
        );
        // Too late to be the same connection.
        j.insert(key(2), SensorKind::Packets, at(100), 2);
        assert_eq!(j.join(&key(2), SensorKind::Wfp, at(100 + 30)), None);
        // An outcome of a kind that did not join says nothing.
        assert_eq!(j.outcome(&key(2), SensorKind::Wfp, Outcome::Denied), None);
    }

    #[test]
    fn off_by_default_and_bounded() {
        let mut j = KindJoin::<u32>::new(2);
        j.insert(key(1), SensorKind::Packets, at(100), 1);
        assert_eq!(j.join(&key(1), SensorKind::FirewallLog, at(100)), None);
        j.enable();
        for p in 1..=3 {
            j.insert(key(p), SensorKind::Packets, at(100), u32::from(p));
        }
        assert_eq!(j.evicted(), 1);
        assert_eq!(j.join(&key(1), SensorKind::FirewallLog, at(100)), None);
        assert_eq!(j.join(&key(3), SensorKind::FirewallLog, at(100)), Some(3));
        // Past the hold, entries go.
        j.insert(key(9), SensorKind::Packets, at(100).saturating_add(HOLD), 9);
        assert_eq!(j.join(&key(3), SensorKind::Flow, at(100)), None);
    }
}
