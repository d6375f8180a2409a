//! Required-edge clocks: when each expected edge last showed evidence of
//! use, and whether it is seen, missing or not yet observable.

use std::time::Duration;

use crate::policy::{EdgeId, Policy};
use crate::time::Timestamp;

/// The state of a required edge at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// Evidence within the last window.
    Seen,
    /// The observation covers a whole window and there was no evidence in it.
    Missing,
    /// No evidence, but the observation is shorter than the window, or the
    /// capture dropped packets within it (a blind sensor proves nothing).
    NotObserved,
}

impl EdgeState {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeState::Seen => "seen",
            EdgeState::Missing => "missing",
            EdgeState::NotObserved => "not_observed",
        }
    }
}

/// First and last evidence per edge of the policy, and how many of its
/// connections are open; sized once by the policy, so it cannot grow with
/// traffic.
#[derive(Clone, Debug)]
pub struct EdgeClock {
    evidence: Vec<Option<(Timestamp, Timestamp)>>,
    counts: Vec<u64>,
    open: Vec<u32>,
    /// The last time the capture was seen to drop packets.
    drops_at: Option<Timestamp>,
    /// Per edge: the last sequence gap of a flow exporter covering it (the
    /// other edges are not that exporter's to judge).
    gaps: Vec<Option<Timestamp>>,
    /// Judged missing before a restart: missing until evidence comes (the
    /// time the sensor was down proves nothing either way).
    held_missing: Vec<bool>,
}

/// Why an edge without evidence is `not_observed` rather than `missing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unobserved {
    /// The observation is shorter than the edge's window.
    TooShort,
    /// The capture dropped packets within the edge's last window.
    Drops(Timestamp),
    /// A flow exporter covering the edge lost records within its last
    /// window.
    Gap(Timestamp),
}

impl EdgeClock {
    pub fn new(p: &Policy) -> Self {
        EdgeClock {
            evidence: vec![None; p.edges.len()],
            counts: vec![0; p.edges.len()],
            open: vec![0; p.edges.len()],
            drops_at: None,
            gaps: vec![None; p.edges.len()],
            held_missing: vec![false; p.edges.len()],
        }
    }

    /// Any segment of the edge: a SYN, a segment of one of its connections,
    /// or of a connection open before the capture. Returns the previous
    /// last evidence.
    pub fn observe(&mut self, edge: EdgeId, ts: Timestamp) -> Option<Timestamp> {
        let i = edge.0 as usize;
        let slot = self.evidence.get_mut(i)?;
        let was = slot.map(|(_, last)| last);
        *slot = Some(match *slot {
            None => (ts, ts),
            Some((first, last)) => (first.min(ts), last.max(ts)),
        });
        self.counts[i] += 1;
        self.held_missing[i] = false;
        was
    }

    /// A connection of the edge was established: evidence while it is open.
    pub fn opened(&mut self, edge: EdgeId) {
        if let Some(n) = self.open.get_mut(edge.0 as usize) {
            *n += 1;
        }
    }

    /// A connection of the edge closed (FIN, RST, eviction or idle).
    pub fn closed(&mut self, edge: EdgeId) {
        if let Some(n) = self.open.get_mut(edge.0 as usize) {
            *n = n.saturating_sub(1);
        }
    }

    /// Connections of the edge open now.
    pub fn open_count(&self, edge: EdgeId) -> u32 {
        self.open.get(edge.0 as usize).copied().unwrap_or(0)
    }

    /// Keep `old`'s knowledge of drops (across a reload).
    pub fn carry_drops(&mut self, old: &EdgeClock) {
        self.drops_at = old.drops_at;
    }

    /// The capture reported new drops at `at`.
    pub fn note_drops(&mut self, at: Timestamp) {
        self.drops_at = Some(self.drops_at.map_or(at, |d| d.max(at)));
    }

    /// A flow exporter covering `edge` lost records at `at`.
    pub fn note_gap(&mut self, edge: EdgeId, at: Timestamp) {
        if let Some(g) = self.gaps.get_mut(edge.0 as usize) {
            *g = Some(g.map_or(at, |g| g.max(at)));
        }
    }

    /// The last gap of a flow exporter covering `edge`.
    pub fn gap_at(&self, edge: EdgeId) -> Option<Timestamp> {
        self.gaps.get(edge.0 as usize).copied().flatten()
    }

    /// The last evidence of `edge` as of `now`: `now` while a connection of
    /// it is open.
    pub fn last_evidence(&self, edge: EdgeId, now: Timestamp) -> Option<Timestamp> {
        if self.open_count(edge) > 0 {
            return Some(now);
        }
        self.first_last(edge).map(|(_, last)| last)
    }

    /// Set an edge's evidence wholesale (carried over a policy reload).
    pub fn restore(&mut self, edge: EdgeId, first: Timestamp, last: Timestamp, count: u64) {
        let i = edge.0 as usize;
        if let Some(slot) = self.evidence.get_mut(i) {
            *slot = Some((first, last));
            self.counts[i] = count;
        }
    }

    /// `edge` was judged missing before a restart: it stays missing until
    /// evidence of it comes.
    pub fn hold_missing(&mut self, edge: EdgeId) {
        if let Some(h) = self.held_missing.get_mut(edge.0 as usize) {
            *h = true;
        }
    }

    pub fn is_held_missing(&self, edge: EdgeId) -> bool {
        self.held_missing
            .get(edge.0 as usize)
            .copied()
            .unwrap_or(false)
    }

    /// The last time the capture dropped packets.
    pub fn drops_at(&self) -> Option<Timestamp> {
        self.drops_at
    }

    pub fn first_last(&self, edge: EdgeId) -> Option<(Timestamp, Timestamp)> {
        self.evidence.get(edge.0 as usize).copied().flatten()
    }

    pub fn count(&self, edge: EdgeId) -> u64 {
        self.counts.get(edge.0 as usize).copied().unwrap_or(0)
    }

    /// The state of `edge` at `now`, having observed since `since`.
    pub fn state(
        &self,
        edge: EdgeId,
        window: Duration,
        since: Timestamp,
        now: Timestamp,
    ) -> EdgeState {
        self.judge(edge, window, since, now).0
    }

    /// The state, and why an edge without evidence is not `missing`.
    pub fn judge(
        &self,
        edge: EdgeId,
        window: Duration,
        since: Timestamp,
        now: Timestamp,
    ) -> (EdgeState, Option<Unobserved>) {
        match self.last_evidence(edge, now) {
            Some(last) if now.saturating_sub(last) <= window => (EdgeState::Seen, None),
            _ if self.is_held_missing(edge) => (EdgeState::Missing, None),
            _ if now.saturating_sub(since) < window => {
                (EdgeState::NotObserved, Some(Unobserved::TooShort))
            }
            _ => match (self.drops_at, self.gap_at(edge)) {
                (Some(d), _) if now.saturating_sub(d) <= window => {
                    (EdgeState::NotObserved, Some(Unobserved::Drops(d)))
                }
                (_, Some(g)) if now.saturating_sub(g) <= window => {
                    (EdgeState::NotObserved, Some(Unobserved::Gap(g)))
                }
                _ => (EdgeState::Missing, None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_policy;

    #[test]
    fn seen_missing_not_observed() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let e = EdgeId(0);
        let mut c = EdgeClock::new(&p);
        let w = Duration::from_secs(60);
        let s = |n: u64| Timestamp::from_secs_nanos(n, 0);
        assert_eq!(c.state(e, w, s(0), s(30)), EdgeState::NotObserved);
        assert_eq!(c.state(e, w, s(0), s(60)), EdgeState::Missing);
        c.observe(e, s(10));
        assert_eq!(c.state(e, w, s(0), s(70)), EdgeState::Seen);
        assert_eq!(c.state(e, w, s(0), s(71)), EdgeState::Missing);
        c.observe(e, s(5));
        assert_eq!(c.first_last(e), Some((s(5), s(10))));
        assert_eq!(c.count(e), 2);
    }

    #[test]
    fn an_open_connection_is_evidence_until_it_closes() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let e = EdgeId(0);
        let mut c = EdgeClock::new(&p);
        let w = Duration::from_secs(60);
        let s = |n: u64| Timestamp::from_secs_nanos(n, 0);
        c.observe(e, s(10));
        c.opened(e);
        assert_eq!(c.state(e, w, s(0), s(5000)), EdgeState::Seen);
        assert_eq!(c.last_evidence(e, s(5000)), Some(s(5000)));
        c.closed(e);
        assert_eq!(c.state(e, w, s(0), s(5000)), EdgeState::Missing);
        assert_eq!(c.last_evidence(e, s(5000)), Some(s(10)));
    }

    #[test]
    fn drops_in_the_window_make_missing_not_observed() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let e = EdgeId(0);
        let mut c = EdgeClock::new(&p);
        let w = Duration::from_secs(60);
        let s = |n: u64| Timestamp::from_secs_nanos(n, 0);
        c.note_drops(s(100));
        assert_eq!(
            c.judge(e, w, s(0), s(150)),
            (EdgeState::NotObserved, Some(Unobserved::Drops(s(100))))
        );
        // The drops are older than the window: the silence is real.
        assert_eq!(c.state(e, w, s(0), s(161)), EdgeState::Missing);
    }

    /// Missing before a restart: missing from the first instant after it,
    /// however short the observation, until evidence comes.
    #[test]
    fn a_held_missing_edge_stays_missing_until_evidence() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let e = EdgeId(0);
        let mut c = EdgeClock::new(&p);
        let w = Duration::from_secs(60);
        let s = |n: u64| Timestamp::from_secs_nanos(n, 0);
        c.hold_missing(e);
        c.note_drops(s(100));
        assert_eq!(c.state(e, w, s(100), s(101)), EdgeState::Missing);
        c.observe(e, s(102));
        assert_eq!(c.state(e, w, s(100), s(103)), EdgeState::Seen);
        assert!(!c.is_held_missing(e));
        // From then on the usual rule: drops in the window prove nothing.
        c.note_drops(s(165));
        assert_eq!(c.state(e, w, s(100), s(170)), EdgeState::NotObserved);
    }
}
