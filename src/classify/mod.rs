//! Pure classification of a new connection: (policy, addresses, port) →
//! [`Verdict`]. No I/O, no clock, no state: the same inputs always give the
//! same answer.

use std::net::IpAddr;
use std::sync::Arc;

use crate::model::RuleId;
use crate::policy::{AcceptId, EdgeId, Origin, Peer, Policy};
use crate::time::Timestamp;

/// What the model says of a connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// An edge the model (or a site allowance) expects between these endpoints.
    Expected,
    /// Both ends are known, but no rule allows it.
    Unexpected,
    /// A same-host-only port reached from another host.
    LocalOnly,
    /// An end outside the inventory, the user networks and the externals.
    UnknownHost,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Expected,
        Verdict::Unexpected,
        Verdict::LocalOnly,
        Verdict::UnknownHost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Expected => "expected",
            Verdict::Unexpected => "unexpected",
            Verdict::LocalOnly => "local_only",
            Verdict::UnknownHost => "unknown_host",
        }
    }
}

/// Why a verdict was reached: what the explanation of a finding cites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The expected edge that allows it.
    Edge(EdgeId),
    /// An optional edge of this model rule allows it (such edges have no
    /// [`EdgeId`]: see [`Policy::rule_for`]).
    Rule(RuleId),
    /// Both ends are the same host and the model knows the port.
    SameHost,
    /// Loopback to a port the model does not know: not judged unless
    /// `--strict-loopback`.
    Loopback,
    /// The sensor's own listener (its web endpoints).
    Sensor,
    /// The local-scope rule that keeps the port on its host.
    LocalRule(RuleId),
    /// No rule: nothing to cite but the absence.
    NoRule,
    /// Which end is unknown.
    Unknown { src: bool, dst: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub verdict: Verdict,
    pub src: Peer,
    pub dst: Peer,
    pub port: u16,
    /// The model's service on that port (or `other`).
    pub service: Arc<str>,
    pub basis: Basis,
    /// The site's acceptance of this flow that held at the event's time
    /// (set by [`classify_at`]): its finding is shown marked, not alerted.
    pub accepted: Option<AcceptId>,
}

impl Classification {
    pub fn edge(&self) -> Option<EdgeId> {
        match self.basis {
            Basis::Edge(e) => Some(e),
            _ => None,
        }
    }

    /// An expected edge between two site endpoints allows it (with or
    /// without an [`EdgeId`]): a refusal of it is a `blocked` finding.
    pub fn is_site_edge(&self) -> bool {
        matches!(self.basis, Basis::Edge(_) | Basis::Rule(_))
    }
}

/// Judge a connection attempt from `src` to `dst:port`.
pub fn classify(p: &Policy, src: IpAddr, dst: IpAddr, port: u16) -> Classification {
    classify_peers(p, (p.peer_of(src), src), (p.peer_of(dst), dst), port)
}

/// [`classify`] with each end's peer already known (what
/// [`Policy::peer_of`] says of its address): an outcome is judged again
/// with the peers of its attempt's flow row, and an address outside the
/// site is asked of every prefix.
pub fn classify_peers(
    p: &Policy,
    (s, src): (Peer, IpAddr),
    (d, dst): (Peer, IpAddr),
    port: u16,
) -> Classification {
    debug_assert_eq!((s, d), (p.peer_of(src), p.peer_of(dst)));
    let service = |basis: &Basis| match basis {
        Basis::Edge(e) => p.edge(*e).service.clone(),
        Basis::Rule(r) => p.rule_service(*r).clone(),
        _ => p.service_for(d, port).clone(),
    };
    let basis = match p.own.listens(dst, port) {
        true => Basis::Sensor,
        false => judge(p, src == dst, s, d, port),
    };
    let verdict = match basis {
        Basis::Edge(_) | Basis::Rule(_) | Basis::SameHost | Basis::Loopback | Basis::Sensor => {
            Verdict::Expected
        }
        Basis::LocalRule(_) => Verdict::LocalOnly,
        Basis::NoRule => Verdict::Unexpected,
        Basis::Unknown { .. } => Verdict::UnknownHost,
    };
    Classification {
        verdict,
        src: s,
        dst: d,
        port,
        service: service(&basis),
        basis,
        accepted: None,
    }
}

/// [`classify`], with the acceptance that holds at `ts` (the event's time)
/// when the attempt can be a finding: any but an expected one, or an
/// expected site edge (it is a finding if blocked).
pub fn classify_at(
    p: &Policy,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    ts: Timestamp,
) -> Classification {
    let mut c = classify(p, src, dst, port);
    accept_at(p, &mut c, src, dst, ts);
    c
}

/// [`classify_peers`], with the acceptance as [`classify_at`] sets it.
pub fn classify_peers_at(
    p: &Policy,
    src: (Peer, IpAddr),
    dst: (Peer, IpAddr),
    port: u16,
    ts: Timestamp,
) -> Classification {
    let mut c = classify_peers(p, src, dst, port);
    accept_at(p, &mut c, src.1, dst.1, ts);
    c
}

/// Give `c` (of `src` to `dst`) the site's acceptance that holds at `ts`,
/// as [`classify_at`] does: the rest of a classification depends on the
/// policy and the addresses alone, so one made at another time needs only
/// this.
#[inline]
pub fn accept_at(p: &Policy, c: &mut Classification, src: IpAddr, dst: IpAddr, ts: Timestamp) {
    if !p.site.accepted.is_empty() && (c.verdict != Verdict::Expected || c.is_site_edge()) {
        c.accepted = p.accepted((c.src, src), (c.dst, dst), c.port, ts);
    }
}

fn judge(p: &Policy, same_addr: bool, s: Peer, d: Peer, port: u16) -> Basis {
    if s == Peer::Unknown || d == Peer::Unknown {
        return Basis::Unknown {
            src: s == Peer::Unknown,
            dst: d == Peer::Unknown,
        };
    }
    let same_host =
        same_addr || (s == d && p.is_node(s)) || (s == Peer::Localhost && d == Peer::Localhost);
    if same_host {
        let loopback = s == Peer::Localhost && d == Peer::Localhost;
        return if p.knows_port(port) {
            Basis::SameHost
        } else if loopback && !p.own.strict_loopback {
            Basis::Loopback
        } else {
            Basis::NoRule
        };
    }
    if let Some(e) = p.find_edge(s, d, port) {
        return Basis::Edge(e);
    }
    if let Some(r) = p.rule_for(s, d, port) {
        return Basis::Rule(r);
    }
    match p.local_rule(d, port) {
        Some(r) => Basis::LocalRule(r),
        None => Basis::NoRule,
    }
}

/// A one-line explanation of a verdict, citing the rule where there is one.
pub fn explain(p: &Policy, c: &Classification) -> String {
    let (src, dst) = (p.peer_name(c.src), p.peer_name(c.dst));
    let by_rule = |r: RuleId| {
        let rule = p.model.rule(r);
        format!(
            "{src} -> {dst}:{} is expected: {} ({})",
            c.port, rule.purpose, rule.cite
        )
    };
    match &c.basis {
        Basis::Rule(r) => by_rule(*r),
        Basis::Edge(e) => {
            let edge = p.edge(*e);
            match edge.origins.first() {
                Some(Origin::Rule(r)) => by_rule(*r),
                Some(Origin::Monitoring) => format!(
                    "{src} -> {dst}:{} is expected: {src} scrapes the portwatch sensor (site monitoring list)",
                    c.port
                ),
                Some(Origin::Allowance(i)) => {
                    format!(
                        "{src} -> {dst}:{} is allowed by the site (allow[{i}])",
                        c.port
                    )
                }
                None => format!("{src} -> {dst}:{} is expected", c.port),
            }
        }
        Basis::SameHost => format!(
            "{src} -> {dst}:{}: same host, port known to the model",
            c.port
        ),
        Basis::Loopback => format!(
            "{src} -> {dst}:{}: loopback, port not in the model (judged only with --strict-loopback)",
            c.port
        ),
        Basis::Sensor => format!(
            "{src} -> {dst}:{}: the portwatch sensor's own listener",
            c.port
        ),
        Basis::LocalRule(r) => {
            let rule = p.model.rule(*r);
            format!(
                "port {} ({}) is local to its host, reached from {src}: {} ({})",
                c.port, rule.to.service, rule.purpose, rule.cite
            )
        }
        Basis::NoRule => {
            if p.knows_port(c.port) {
                format!(
                    "no rule of {} lets {src} open port {} ({}) on {dst}",
                    p.model.id, c.port, c.service
                )
            } else {
                format!(
                    "port {} is not in model {}; {src} -> {dst}",
                    c.port, p.model.id
                )
            }
        }
        Basis::Unknown { src: us, dst: ud } => {
            let which = match (us, ud) {
                (true, true) => "neither end is",
                (true, false) => "the source is not",
                _ => "the destination is not",
            };
            format!(
                "{which} a node, user network or declared external of site {}",
                p.site.name
            )
        }
    }
}

#[cfg(test)]
mod tests;
