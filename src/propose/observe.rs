//! What `propose` keeps of a capture, fed by the pipeline's events: per
//! (client, server, port) the attempts and their outcomes, and per expected
//! edge the longest gap between two pieces of evidence.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::pipeline::Event;
use crate::state::Outcome;
use crate::time::Timestamp;

/// Most distinct (client, server, port) triples kept; later ones are
/// counted in [`Observer::dropped`] and the proposal says so.
pub const MAX_FLOWS: usize = 1 << 18;

/// A connection's direction and listener port; the client port is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    pub client: IpAddr,
    pub server: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowStats {
    pub attempts: u64,
    /// By [`Outcome::index`].
    pub outcomes: crate::observation::OutcomeCounts,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl FlowStats {
    pub fn established(&self) -> u64 {
        self.outcomes[Outcome::Established.index()]
    }
}

/// Evidence of one expected edge over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gaps {
    pub count: u64,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    /// Longest time between two consecutive pieces of evidence.
    pub longest: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct Observer {
    flows: BTreeMap<FlowId, FlowStats>,
    dropped: u64,
    /// Indexed by `EdgeId`; sized by the policy, so bounded.
    gaps: Vec<Gaps>,
}

impl Observer {
    /// An observer for a policy with `edges` expected edges.
    pub fn new(edges: usize) -> Self {
        Observer {
            gaps: vec![Gaps::default(); edges],
            ..Observer::default()
        }
    }

    pub fn feed(&mut self, e: &Event) {
        match e {
            Event::Connection { ts, key, .. } => {
                let id = FlowId {
                    client: key.client,
                    server: key.server,
                    port: key.server_port,
                };
                if let Some(s) = self.flows.get_mut(&id) {
                    s.attempts += 1;
                    s.first = s.first.min(*ts);
                    s.last = s.last.max(*ts);
                } else if self.flows.len() < MAX_FLOWS {
                    self.flows.insert(
                        id,
                        FlowStats {
                            attempts: 1,
                            outcomes: [0; Outcome::COUNT],
                            first: *ts,
                            last: *ts,
                        },
                    );
                } else {
                    self.dropped += 1;
                }
            }
            Event::Outcome { key, outcome, .. } => {
                let id = FlowId {
                    client: key.client,
                    server: key.server,
                    port: key.server_port,
                };
                if let Some(s) = self.flows.get_mut(&id) {
                    s.outcomes[outcome.index()] += 1;
                }
            }
            Event::Disagreement { .. } => {}
            Event::Evidence { ts, edge } => {
                if let Some(g) = self.gaps.get_mut(edge.0 as usize) {
                    g.count += 1;
                    if let Some(last) = g.last {
                        g.longest = g.longest.max(ts.saturating_sub(last));
                    }
                    g.first = Some(g.first.map_or(*ts, |f| f.min(*ts)));
                    g.last = Some(g.last.map_or(*ts, |l| l.max(*ts)));
                }
            }
        }
    }

    pub fn flows(&self) -> &BTreeMap<FlowId, FlowStats> {
        &self.flows
    }

    /// Attempts not kept because [`MAX_FLOWS`] triples were already kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn gaps(&self, edge: usize) -> Gaps {
        self.gaps.get(edge).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::EdgeId;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos(s, 0)
    }

    #[test]
    fn longest_gap_is_between_consecutive_evidence() {
        let mut o = Observer::new(1);
        for s in [10, 20, 100, 130] {
            o.feed(&Event::Evidence {
                ts: at(s),
                edge: EdgeId(0),
            });
        }
        let g = o.gaps(0);
        assert_eq!(g.count, 4);
        assert_eq!(g.longest, Duration::from_secs(80));
        assert_eq!((g.first, g.last), (Some(at(10)), Some(at(130))));
        // An edge the policy does not have is ignored, not a panic.
        o.feed(&Event::Evidence {
            ts: at(1),
            edge: EdgeId(7),
        });
        assert_eq!(o.gaps(7), Gaps::default());
    }
}
