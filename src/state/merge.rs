//! One connection logged by several records: both ends of an edge between
//! two nodes (the initiator's `SEND`, the responder's `RECEIVE`), a node
//! that keeps both a firewall log and audit events, a log line per dropped
//! SYN. Records of one 4-tuple within [`MERGE_WITHIN`] of the first are one
//! connection: one attempt, the rest merged into it.
//!
//! - **Attempt.** The first record is the attempt: the caller classifies
//!   it, tallies it and takes it as evidence at once, then [`RecordMerge::insert`]s
//!   it with its tag.
//! - **Duplicates.** A later record of the same 4-tuple is
//!   [`RecordMerge::join`]ed: not a new attempt and not new evidence. When
//!   one log (a sensor and a kind of source) has logged the connection more
//!   often than any log before, the extra record is a retransmission (a
//!   firewall log writes one `DROP` per dropped SYN; one `ALLOW` per
//!   connection).
//! - **Outcome.** Held until the window ends ([`RecordMerge::expire`],
//!   [`RecordMerge::finish`]), as the handshake table holds a SYN: a record
//!   that decides the connection's fate (`denied`, or a packet outcome but
//!   `unknown`) replaces one that leaves it open (`permitted`: one end's
//!   firewall let it out, the other end's may drop it). The first decisive
//!   record stands.
//! - **Bounded.** At most `capacity` connections pending; past that the
//!   oldest is settled early (counted in [`RecordMerge::settled_early`]), so
//!   a record of it after that is counted again.

use std::sync::Arc;
use std::time::Duration;

use crate::map::holding::{Holding, Keyed};
use crate::observation::{FlowKey, Observation, Outcome, SourceKind};
use crate::time::Timestamp;

/// How long after a connection's first record another record of the same
/// 4-tuple is the same connection: a Windows client gives up on a SYN after
/// 21 s (retransmissions at 3 s and 9 s), and node clocks kept by NTP or a
/// domain agree to within seconds. A client still retrying later (Linux
/// retries up to 127 s) makes a second attempt.
pub const MERGE_WITHIN: Duration = Duration::from_secs(30);
/// Connections pending at once (as many as the handshake table's default).
pub const MERGE_CAPACITY: usize = 65_536;
/// Logs told apart per connection: two ends, each with a firewall log and
/// audit events. More are merged without counting retransmissions.
const LOGS_PER_CONNECTION: usize = 4;

/// One log: the node that wrote it and the kind of source.
type Log = (Option<Arc<str>>, SourceKind);

/// A connection whose window is open.
#[derive(Clone, Debug)]
struct Pending<T> {
    /// The first record (its key, initiator, sensor, process) with the
    /// filter so far, and the tag: the settled connection once the outcome
    /// is written in (settled where it is held, not moved out).
    settled: Settled<T>,
    /// The outcome so far and the time of the record that gave it.
    outcome: Option<(Outcome, Timestamp)>,
    /// Records of the first record's log, of the other logs (empty, so
    /// not allocated, until a second log writes), and the most any log
    /// wrote.
    first_log: u32,
    other_logs: Vec<(Log, u32)>,
    most: u32,
}

/// A connection whose window ended: its first record with the merged
/// outcome (at the time of the record that gave it) and filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled<T> {
    pub obs: Observation,
    pub tag: T,
    /// The first record's time (`obs.ts` is the deciding record's).
    pub start: Timestamp,
}

/// A record [`RecordMerge::join`] turned down: a new attempt, to
/// [`RecordMerge::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Miss {
    /// A connection of its 4-tuple is pending, its window passed.
    held: bool,
}

/// What [`RecordMerge::join`] made of a record of a pending connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Joined<T> {
    pub tag: T,
    /// Its log wrote the connection more often than any other log.
    pub retransmission: bool,
}

/// Pending connections by 4-tuple, settled in the order they began.
///
/// At a million attempts a second (flow records of lone SYNs) the merge is
/// at capacity and every record is a miss, an insert and the settling of
/// the oldest: the connections are held as the flow joins are
/// ([`Holding`]: a slab indexed by 4-byte slots, the order threaded
/// through it, the slot the oldest frees the one the next fills), and the
/// key is hashed once per record ([`RecordMerge::hash`]).
pub struct RecordMerge<T> {
    pending: Holding<Pending<T>>,
    within: Duration,
    duplicates: u64,
    settled_early: u64,
}

impl<T> Keyed for Pending<T> {
    type Key = FlowKey;
    fn key(&self) -> FlowKey {
        self.settled.obs.key
    }
}

impl<T> std::fmt::Debug for RecordMerge<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordMerge")
            .field("pending", &self.pending)
            .field("duplicates", &self.duplicates)
            .field("settled_early", &self.settled_early)
            .finish()
    }
}

impl<T> Default for RecordMerge<T> {
    fn default() -> Self {
        RecordMerge::new(MERGE_CAPACITY, MERGE_WITHIN)
    }
}

impl<T> RecordMerge<T> {
    pub fn new(capacity: usize, within: Duration) -> Self {
        RecordMerge {
            pending: Holding::new(capacity.max(1)),
            within,
            duplicates: 0,
            settled_early: 0,
        }
    }

    /// Records merged into a connection already observed.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Connections settled before their window ended, to make room.
    pub fn settled_early(&self) -> u64 {
        self.settled_early
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.len() == 0
    }

    /// The hash of `key` that [`Self::join`] and [`Self::insert`] take.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.pending.hash(key)
    }

    /// Merge `obs` into the pending connection of its 4-tuple (whose
    /// [`Self::hash`] is `hash`), if there is one and `obs` is within its
    /// window; a [`Miss`] is a new attempt.
    pub fn join(&mut self, hash: u64, obs: &Observation) -> Result<Joined<&T>, Miss> {
        let Some(p) = self.pending.get_mut(hash, &obs.key) else {
            return Err(Miss { held: false });
        };
        if obs.ts.saturating_sub(p.settled.start) >= self.within {
            return Err(Miss { held: true });
        }
        self.duplicates += 1;
        let of_log =
            |sensor: &Option<Arc<str>>, source| *sensor == obs.sensor && source == obs.source;
        let first = &p.settled.obs;
        let n = if of_log(&first.sensor, first.source) {
            Some(&mut p.first_log)
        } else {
            (p.other_logs.iter_mut())
                .find(|((sensor, source), _)| of_log(sensor, *source))
                .map(|(_, n)| n)
        };
        let retransmission = match n {
            Some(n) => {
                *n += 1;
                let more = *n > p.most;
                p.most = p.most.max(*n);
                more
            }
            None => {
                if 1 + p.other_logs.len() < LOGS_PER_CONNECTION {
                    p.other_logs.push(((obs.sensor.clone(), obs.source), 1));
                }
                false
            }
        };
        if let Some(o) = obs.outcome() {
            let open = p.outcome.is_none_or(|(was, _)| leaves_open(was));
            if open && !leaves_open(o) {
                p.outcome = Some((o, obs.ts));
            }
        }
        let filter = &mut p.settled.obs.filter;
        if filter.is_none() && obs.outcome() == Some(Outcome::Denied) {
            *filter = obs.filter;
        }
        Ok(Joined {
            tag: &p.settled.tag,
            retransmission,
        })
    }

    /// A new attempt `obs` (one [`Self::join`] turned down with `miss`;
    /// `hash` its key's [`Self::hash`]), with its tag. A pending connection
    /// of the same 4-tuple whose window has passed is settled first; at
    /// capacity the oldest is settled early.
    pub fn insert(
        &mut self,
        hash: u64,
        miss: Miss,
        obs: &Observation,
        tag: T,
        settle: &mut dyn FnMut(&mut Settled<T>),
    ) {
        if miss.held {
            if let Some(mut old) = self.pending.take_hashed(hash, &obs.key) {
                settle(old.settle());
            }
        }
        if self.pending.len() >= self.pending.limit() {
            self.settled_early += 1;
            self.settle_oldest(settle);
        }
        self.pending.hold_with(hash, || Pending {
            settled: Settled {
                obs: obs.clone(),
                tag,
                start: obs.ts,
            },
            outcome: obs.outcome().map(|o| (o, obs.ts)),
            first_log: 1,
            other_logs: Vec::new(),
            most: 1,
        });
    }

    /// Settle the connections whose window has passed at `now`, oldest
    /// first (one begun after an older, still open one waits for it).
    pub fn expire(&mut self, now: Timestamp, settle: &mut dyn FnMut(&mut Settled<T>)) {
        while let Some(p) = self.pending.oldest() {
            if now.saturating_sub(p.settled.start) < self.within {
                break;
            }
            self.settle_oldest(settle);
        }
    }

    /// Settle every pending connection (the sources ended).
    pub fn finish(&mut self, settle: &mut dyn FnMut(&mut Settled<T>)) {
        while self.pending.len() > 0 {
            self.settle_oldest(settle);
        }
    }

    /// Settle the oldest connection where it is held, then drop it.
    fn settle_oldest(&mut self, settle: &mut dyn FnMut(&mut Settled<T>)) {
        if let Some(p) = self.pending.oldest_mut() {
            settle(p.settle());
        }
        self.pending.drop_oldest();
    }
}

impl<T> Pending<T> {
    /// The connection settled: the merged outcome written into the first
    /// record, at the time of the record that gave it.
    fn settle(&mut self) -> &mut Settled<T> {
        if let Some((outcome, at)) = self.outcome.take() {
            self.settled.obs.ts = at;
            self.settled.obs.fate = crate::observation::Fate::Ended {
                outcome,
                inferred: false,
            };
        }
        &mut self.settled
    }
}

/// An outcome another record may still decide: one end's firewall let it
/// through (the other's may drop it), or nothing is known.
fn leaves_open(o: Outcome) -> bool {
    matches!(o, Outcome::Permitted | Outcome::Unknown)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            client: IpAddr::from([192, 0, 2, 11]),
            client_port: sport,
            server: IpAddr::from([192, 0, 2, 21]),
            server_port: 4747,
        }
    }

    fn rec(secs: u64, sport: u16, outcome: Outcome, node: &str, kind: SourceKind) -> Observation {
        let mut o = Observation::record(
            Timestamp::from_secs_nanos(secs, 0),
            key(sport),
            outcome,
            kind,
        );
        o.sensor = Some(node.into());
        o
    }

    /// Feed records as the pipeline does: a new attempt is inserted with
    /// a fresh tag (its index), a duplicate joins. Returns the tags of the
    /// retransmissions and the settled connections.
    fn feed(m: &mut RecordMerge<usize>, recs: &[Observation]) -> (Vec<usize>, Vec<Settled<usize>>) {
        let (mut retrans, mut out) = (Vec::new(), Vec::new());
        for (i, r) in recs.iter().enumerate() {
            m.expire(r.ts, &mut |s| out.push(s.clone()));
            let h = m.hash(&r.key);
            match m.join(h, r) {
                Ok(j) if j.retransmission => retrans.push(*j.tag),
                Ok(_) => {}
                Err(miss) => m.insert(h, miss, r, i, &mut |s| out.push(s.clone())),
            }
        }
        m.finish(&mut |s| out.push(s.clone()));
        (retrans, out)
    }

    /// Both ends of one connection, each with a firewall log and audit
    /// events: one attempt, whatever the order; the responder's drops
    /// decide the outcome over the initiator's `permitted`, and its repeated
    /// drops (one per SYN) are retransmissions, counted once whichever of
    /// its logs tells them.
    #[test]
    fn both_ends_and_both_formats_are_one_connection() {
        use Outcome::{Denied, Permitted};
        use SourceKind::{FirewallLog as Fw, WfpEvents as Wfp};
        let mut recs = vec![
            rec(100, 50_000, Permitted, "proxy", Fw),
            rec(100, 50_000, Permitted, "proxy", Wfp),
        ];
        for t in [100, 101, 103, 107] {
            recs.push(rec(t, 50_000, Denied, "engine1", Fw));
            let mut w = rec(t, 50_000, Denied, "engine1", Wfp);
            w.filter = Some(87_617);
            recs.push(w);
        }
        recs.sort_by_key(|r| r.ts);
        for order in [recs.clone(), recs.iter().rev().cloned().collect()] {
            let mut sorted = order.clone();
            sorted.sort_by_key(|r| r.ts);
            let mut m = RecordMerge::default();
            let (retrans, out) = feed(&mut m, &sorted);
            assert_eq!(retrans.len(), 3, "{retrans:?}");
            let [s] = &out[..] else { panic!("{out:?}") };
            assert_eq!(s.obs.outcome(), Some(Denied));
            assert_eq!(s.obs.filter, Some(87_617));
            assert_eq!(m.duplicates(), 9);
            assert!(m.is_empty());
        }
        // The responder's drop first: it stands, the later permitted does not undo it.
        let mut m = RecordMerge::default();
        let (_, out) = feed(
            &mut m,
            &[
                rec(100, 50_000, Denied, "engine1", Fw),
                rec(101, 50_000, Permitted, "proxy", Fw),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].obs.outcome(), Some(Denied));
        assert_eq!(out[0].obs.ts, Timestamp::from_secs_nanos(100, 0));
    }

    /// Permitted at both ends: permitted, and the decision's time is the
    /// first record's.
    #[test]
    fn permitted_at_both_ends_stays_permitted() {
        let mut m = RecordMerge::default();
        let (retrans, out) = feed(
            &mut m,
            &[
                rec(
                    10,
                    50_000,
                    Outcome::Permitted,
                    "engine2",
                    SourceKind::FirewallLog,
                ),
                rec(
                    10,
                    50_000,
                    Outcome::Permitted,
                    "engine1",
                    SourceKind::FirewallLog,
                ),
            ],
        );
        assert!(retrans.is_empty());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].obs.outcome(), Some(Outcome::Permitted));
        assert_eq!(out[0].obs.sensor.as_deref(), Some("engine2"));
    }

    /// Another port, or the same 4-tuple after the window: new attempts.
    /// Connections settle in the order they began once their window passed.
    #[test]
    fn windows_and_ports_separate_connections() {
        let fw = SourceKind::FirewallLog;
        let mut m = RecordMerge::default();
        let late = MERGE_WITHIN.as_secs() + 10;
        let recs = [
            rec(10, 50_000, Outcome::Permitted, "proxy", fw),
            rec(11, 50_001, Outcome::Permitted, "proxy", fw),
            rec(late, 50_000, Outcome::Denied, "engine1", fw),
        ];
        let (retrans, out) = feed(&mut m, &recs);
        assert!(retrans.is_empty());
        let tags: Vec<usize> = out.iter().map(|s| s.tag).collect();
        assert_eq!(tags, [0, 1, 2]);
        assert_eq!(m.duplicates(), 0);
    }

    /// At capacity the oldest pending connection is settled early and
    /// counted; a record of it after that is a new attempt.
    #[test]
    fn capacity_settles_the_oldest_early() {
        let fw = SourceKind::FirewallLog;
        let mut m = RecordMerge::new(2, MERGE_WITHIN);
        let recs = [
            rec(10, 50_000, Outcome::Permitted, "proxy", fw),
            rec(10, 50_001, Outcome::Permitted, "proxy", fw),
            rec(10, 50_002, Outcome::Permitted, "proxy", fw),
            rec(11, 50_000, Outcome::Permitted, "engine1", fw),
        ];
        let mut out = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            if i < 3 {
                let h = m.hash(&r.key);
                let miss = m.join(h, r).expect_err("a new attempt");
                m.insert(h, miss, r, i, &mut |s| out.push(s.tag));
            }
        }
        assert_eq!(out, [0]);
        assert_eq!(m.settled_early(), 1);
        assert_eq!(m.len(), 2);
        let h = m.hash(&recs[3].key);
        assert!(m.join(h, &recs[3]).is_err(), "settled: a new attempt");
    }
}
