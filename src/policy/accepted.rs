//! What `check` says of the site's acceptances: those expired or about to,
//! and those that can match no finding, or only a blocked attempt. Time
//! (the wall clock of `check`) is passed in.

use std::time::Duration;

use super::{EndpointKind, Peer, Policy};
use crate::site::{AcceptEnd, Acceptance};
use crate::time::Timestamp;

/// A remark on one acceptance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptNote {
    /// Its last day is past: its flow alerts again.
    Expired,
    /// It holds for this long still (less than the warning period).
    ExpiresIn(Duration),
    /// The policy expects the flow: only a blocked attempt can match it.
    Allowed,
    /// The flow is never a finding (the same host on a port the model
    /// knows, or loopback).
    NeverAFinding,
}

impl AcceptNote {
    pub fn message(&self, a: &Acceptance) -> String {
        let flow = a.flow_label();
        match self {
            AcceptNote::Expired => format!(
                "{flow} ({}) expired on {}: its findings alert again",
                a.ticket, a.expires
            ),
            AcceptNote::ExpiresIn(d) => match d.as_secs() / 86_400 {
                0 => format!("{flow} ({}) expires today, {}", a.ticket, a.expires),
                n => format!(
                    "{flow} ({}) expires on {} (in {n} days)",
                    a.ticket, a.expires
                ),
            },
            AcceptNote::Allowed => format!(
                "{flow}: the policy already allows this flow; only a refused, unanswered or denied attempt can match it"
            ),
            AcceptNote::NeverAFinding => {
                format!("{flow} can match nothing: the model never makes this flow a finding")
            }
        }
    }
}

impl Policy {
    /// Remarks on each acceptance at `now`: expired, or expiring within
    /// `soon`; and what its flow can be.
    pub fn accept_notes(&self, now: Timestamp, soon: Duration) -> Vec<(&Acceptance, AcceptNote)> {
        let mut out = Vec::new();
        for a in &self.site.accepted {
            if !a.holds_at(now) {
                out.push((a, AcceptNote::Expired));
            } else if a.until.saturating_sub(now) <= soon {
                out.push((a, AcceptNote::ExpiresIn(a.until.saturating_sub(now))));
            }
            if let Some(note) = self.flow_note(a) {
                out.push((a, note));
            }
        }
        out
    }

    /// Whether the acceptance's flow is expected, or never judged.
    fn flow_note(&self, a: &Acceptance) -> Option<AcceptNote> {
        let (s, d) = (self.peer_of_end(&a.from)?, self.peer_of_end(&a.to)?);
        let same_host = s == d && (self.is_node(s) || s == Peer::Localhost);
        if same_host && self.knows_port(a.port) {
            return Some(AcceptNote::NeverAFinding);
        }
        let allowed =
            self.find_edge(s, d, a.port).is_some() || self.rule_for(s, d, a.port).is_some();
        allowed.then_some(AcceptNote::Allowed)
    }

    /// The peer an end stands for; `None` for a block of addresses wider
    /// than one (its addresses may be several peers).
    fn peer_of_end(&self, end: &AcceptEnd) -> Option<Peer> {
        match end {
            AcceptEnd::Name(n) => self.endpoint_id(n).map(Peer::Endpoint),
            AcceptEnd::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                Some(self.peer_of(net.addr()))
            }
            AcceptEnd::Net(net) => {
                // A block inside one user network or external is that endpoint.
                let p = self.peer_of(net.network());
                let one = matches!(p, Peer::Endpoint(id)
                    if self.endpoint(id).kind != EndpointKind::Node
                        && self.peer_of(net.broadcast()) == p);
                one.then_some(p)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::classify::{classify_at, Verdict};

    fn at(s: &str) -> Timestamp {
        crate::time::parse_time_bound(s).unwrap()
    }

    fn entry(from: AcceptEnd, to: &str, port: u16, expires: &str) -> Acceptance {
        Acceptance::for_test(from, AcceptEnd::Name(to.into()), port, expires)
    }

    fn multi_node(accepted: Vec<Acceptance>) -> Policy {
        let mut p = crate::config::load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        p.site.accepted = accepted;
        p
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A finding's acceptance is judged at the event's time: before and on
    /// its last day it holds, the day after it does not.
    #[test]
    fn a_finding_is_accepted_until_the_end_of_the_last_day() {
        let users = AcceptEnd::Name("corp-users".into());
        let p = multi_node(vec![entry(users, "engine1", 4747, "2026-01-05")]);
        let (user, engine) = (ip("198.51.100.7"), ip("192.0.2.21"));
        let judge = |t: &str| classify_at(&p, user, engine, 4747, at(t));
        assert_eq!(judge("2026-01-04T08:00:00Z").verdict, Verdict::Unexpected);
        assert!(judge("2026-01-04T08:00:00Z").accepted.is_some(), "before");
        assert!(
            judge("2026-01-05T23:59:59Z").accepted.is_some(),
            "on the day"
        );
        assert!(judge("2026-01-06T00:00:00Z").accepted.is_none(), "after");
        // Another port, or another engine: not this acceptance.
        assert!(
            classify_at(&p, user, engine, 4242, at("2026-01-04T00:00:00Z"))
                .accepted
                .is_none()
        );
        let other = ip("192.0.2.22");
        assert!(
            classify_at(&p, user, other, 4747, at("2026-01-04T00:00:00Z"))
                .accepted
                .is_none()
        );
    }

    /// Occurrences of one flow before and after the last day are two
    /// finding rows, one accepted.
    #[test]
    fn occurrences_across_the_expiry_are_two_findings() {
        use crate::observation::{Fate, FlowKey, Initiator, Observation, Process, SourceKind};
        use crate::state::tally::Tally;
        let users = AcceptEnd::Name("corp-users".into());
        let p = multi_node(vec![entry(users, "engine1", 4747, "2026-01-05")]);
        let (user, engine) = (ip("198.51.100.7"), ip("192.0.2.21"));
        let mut t = Tally::default();
        for when in [
            "2026-01-05T22:00:00Z",
            "2026-01-05T23:00:00Z",
            "2026-01-06T01:00:00Z",
        ] {
            let ts = at(when);
            let obs = Observation {
                ts,
                end: None,
                key: FlowKey {
                    client: user,
                    client_port: 50_000,
                    server: engine,
                    server_port: 4747,
                },
                initiator: Initiator::Syn,
                fate: Fate::Attempted,
                sensor: None,
                process: Process::default(),
                filter: None,
                source: SourceKind::Packets,
            };
            t.attempt(&classify_at(&p, user, engine, 4747, ts), &obs);
        }
        let rows: Vec<(bool, u64)> = (t.findings().iter())
            .map(|f| (f.key.accepted.is_some(), f.count))
            .collect();
        assert_eq!(rows, [(true, 2), (false, 1)]);
    }

    /// An unknown host is accepted by its address; an expected flow that
    /// can be blocked carries its acceptance too.
    #[test]
    fn addresses_and_expected_edges_can_be_accepted() {
        let rogue = AcceptEnd::Net("100.64.0.0/10".parse().unwrap());
        let proxy = AcceptEnd::Name("proxy".into());
        let p = multi_node(vec![
            entry(rogue, "engine1", 4747, "2026-12-31"),
            entry(proxy, "engine1", 4747, "2026-12-31"),
        ]);
        let t = at("2026-06-01T00:00:00Z");
        let c = classify_at(&p, ip("100.64.9.9"), ip("192.0.2.21"), 4747, t);
        assert_eq!(
            (c.verdict, c.accepted.map(|a| a.0)),
            (Verdict::UnknownHost, Some(0))
        );
        let c = classify_at(&p, ip("192.0.2.11"), ip("192.0.2.21"), 4747, t);
        assert_eq!(
            (c.verdict, c.accepted.map(|a| a.0)),
            (Verdict::Expected, Some(1))
        );
    }

    #[test]
    fn check_notes_say_expired_expiring_allowed_and_never_a_finding() {
        let name = |n: &str| AcceptEnd::Name(n.into());
        let p = multi_node(vec![
            entry(name("corp-users"), "engine1", 4747, "2026-01-31"),
            entry(name("corp-users"), "engine1", 4747, "2026-03-01"),
            entry(name("proxy"), "engine1", 4747, "2027-01-01"),
            entry(name("engine1"), "engine1", 4747, "2027-01-01"),
        ]);
        let now = at("2026-02-01T12:00:00Z");
        let month = Duration::from_secs(30 * 86_400);
        let notes: Vec<(String, AcceptNote)> = (p.accept_notes(now, month).into_iter())
            .map(|(a, n)| (a.expires.clone(), n))
            .collect();
        assert_eq!(
            notes,
            [
                ("2026-01-31".into(), AcceptNote::Expired),
                (
                    "2026-03-01".into(),
                    AcceptNote::ExpiresIn(Duration::from_secs(28 * 86_400 + 12 * 3600))
                ),
                ("2027-01-01".into(), AcceptNote::Allowed),
                ("2027-01-01".into(), AcceptNote::NeverAFinding),
            ]
        );
        // At the last instant of its last day it has not expired yet.
        let last = at("2026-01-31T23:59:59Z");
        assert!(matches!(
            p.accept_notes(last, month)[0].1,
            AcceptNote::ExpiresIn(_)
        ));
    }
}
