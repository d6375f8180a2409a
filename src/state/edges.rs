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
    /// No evidence, but the observation is shorter than the window.
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

/// First and last evidence per edge of the policy; sized once by the
/// policy, so it cannot grow with traffic.
#[derive(Clone, Debug)]
pub struct EdgeClock {
    evidence: Vec<Option<(Timestamp, Timestamp)>>,
    counts: Vec<u64>,
}

impl EdgeClock {
    pub fn new(p: &Policy) -> Self {
        EdgeClock {
            evidence: vec![None; p.edges.len()],
            counts: vec![0; p.edges.len()],
        }
    }

    /// A SYN of the edge, or a FIN/RST of one of its open connections.
    pub fn observe(&mut self, edge: EdgeId, ts: Timestamp) {
        let i = edge.0 as usize;
        if let Some(slot) = self.evidence.get_mut(i) {
            *slot = Some(match *slot {
                None => (ts, ts),
                Some((first, last)) => (first.min(ts), last.max(ts)),
            });
            self.counts[i] += 1;
        }
    }

    /// Set an edge's evidence wholesale (carried over a policy reload).
    pub fn restore(&mut self, edge: EdgeId, first: Timestamp, last: Timestamp, count: u64) {
        let i = edge.0 as usize;
        if let Some(slot) = self.evidence.get_mut(i) {
            *slot = Some((first, last));
            self.counts[i] = count;
        }
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
        match self.first_last(edge) {
            Some((_, last)) if now.saturating_sub(last) <= window => EdgeState::Seen,
            _ if now.saturating_sub(since) >= window => EdgeState::Missing,
            _ => EdgeState::NotObserved,
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
}
