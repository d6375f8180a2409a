//! Proposals drawn from traffic, for review: site entries (nodes, user
//! networks, externals, allowances) that would explain what a capture shows.
//! Pure: it reads the flows an [`Observer`] kept from the pipeline's events
//! and a policy; the `propose` command does the reading and printing.
//!
//! A proposal is never applied by portwatch. Its document is a site file
//! (`--model`) or a patch (`--site`): a YAML mapping whose keys (`nodes`,
//! `user_networks`, `externals`, `allow`) are lists to append to the site
//! file's lists of the same name.

mod infer;
mod observe;
mod render;

pub use infer::{covering_cidrs, infer, Inferred, Mode};
pub use observe::{FlowId, FlowStats, Gaps, Observer, MAX_FLOWS};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::classify::{classify, Verdict};
use crate::diag::ConfigError;
use crate::model::Model;
use crate::policy::Policy;
use crate::report::Finding;
use crate::site::{EdgeSpec, External, Node, Pos, Site, UserNetwork};
use crate::state::tally::FindingKind;
use crate::time::Timestamp;

/// Why a capture holds too little to infer from: what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    #[error(
        "no connection attempts (TCP SYN) in {frames} frames: nothing to infer from; the \
         capture needs the start of connections"
    )]
    NoSyn { frames: u64 },
    #[error(
        "{syns} SYNs but no SYN-ACKs seen: a one-way capture (only clients' packets) cannot \
         show which addresses accept connections; capture both directions"
    )]
    NoSynAck { syns: u64 },
    #[error(
        "no connection attempt was answered with SYN-ACK: no established connection to infer from"
    )]
    NoEstablished,
    #[error(
        "no address accepted a connection on a port of the model's roles (such as 4242 for \
         QRS or 443 for QPS): nothing to make a node of"
    )]
    NoNode,
}

/// An entry and the evidence for it (YAML comments; a list in JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposed<T> {
    pub entry: T,
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    pub name: String,
    pub addresses: Vec<String>,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkEntry {
    pub name: String,
    pub cidrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalEntry {
    pub name: String,
    pub addresses: Vec<String>,
    pub services: Vec<String>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowEntry {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub reason: String,
}

/// What the traffic showed of one proposed allowance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowEvidence {
    pub attempts: u64,
    pub established: u64,
    pub source_addresses: usize,
    pub first_seen: String,
    pub last_seen: String,
}

/// A required edge and how long it went without evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EdgeGap {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub window_seconds: u64,
    pub evidence: u64,
    /// Longest time between two consecutive pieces of evidence.
    pub longest_gap_seconds: Option<u64>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

/// A finding a replay against the proposed site would still report, and
/// why the proposal does not make it go away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub kind: FindingKind,
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub count: u64,
    pub why: String,
}

/// The captures a proposal was drawn from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceSummary {
    pub captures: Vec<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub attempts: u64,
    pub established: u64,
}

impl SourceSummary {
    pub fn of(
        captures: Vec<String>,
        span: Option<(Timestamp, Timestamp)>,
        flows: &BTreeMap<FlowId, FlowStats>,
    ) -> Self {
        SourceSummary {
            captures,
            first_seen: span.map(|s| s.0.rfc3339()),
            last_seen: span.map(|s| s.1.rfc3339()),
            attempts: flows.values().map(|f| f.attempts).sum(),
            established: flows.values().map(FlowStats::established).sum(),
        }
    }
}

/// Site file or patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Patch,
    Site,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub kind: Kind,
    /// The site patched, or the name given to the inferred site.
    pub site: String,
    pub model: String,
    /// What it was drawn from.
    pub source: SourceSummary,
    pub nodes: Vec<Proposed<NodeEntry>>,
    pub user_networks: Vec<Proposed<NetworkEntry>>,
    pub externals: Vec<Proposed<ExternalEntry>>,
    pub allow: Vec<Proposed<AllowEntry>>,
    #[serde(skip)]
    pub allow_evidence: Vec<AllowEvidence>,
    pub required_edges: Vec<EdgeGap>,
    pub left_out: Vec<LeftOut>,
    pub notes: Vec<String>,
}

/// An empty site for `--model`: no nodes, everything else the implicit
/// user network, so every address reaches the observer unjudged.
pub fn empty_site(name: &str, model: &Model) -> Site {
    Site {
        name: name.into(),
        model: model.id.clone(),
        description: String::new(),
        nodes: Vec::new(),
        user_networks: vec![UserNetwork {
            name: "users".into(),
            cidrs: Vec::new(),
        }],
        user_networks_declared: false,
        externals: Vec::new(),
        allow: Vec::new(),
        overrides: Vec::new(),
    }
}

/// `base` with the inferred entries and `allow` appended, as the loader
/// would build it from the patched file.
pub fn patched_site(base: &Site, model: &Model, inf: &Inferred, allow: &[AllowEntry]) -> Site {
    let mut s = base.clone();
    for n in &inf.nodes {
        let e = &n.entry;
        let services = match &e.services {
            Some(list) => model.expand_services([], list),
            None => model.expand_services(e.roles.iter().map(String::as_str), &[]),
        };
        s.nodes.push(Node {
            name: e.name.clone(),
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            roles: e.roles.clone(),
            services,
        });
    }
    if !inf.user_networks.is_empty() {
        if !s.user_networks_declared {
            s.user_networks.clear();
            s.user_networks_declared = true;
        }
        for u in &inf.user_networks {
            s.user_networks.push(UserNetwork {
                name: u.entry.name.clone(),
                cidrs: u
                    .entry
                    .cidrs
                    .iter()
                    .filter_map(|c| c.parse().ok())
                    .collect(),
            });
        }
    }
    for x in &inf.externals {
        s.externals.push(External {
            name: x.entry.name.clone(),
            nets: x
                .entry
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .map(ipnet::IpNet::from)
                .collect(),
            services: x.entry.services.clone(),
            description: x.entry.description.clone(),
        });
    }
    let first = s.allow.len();
    for (i, a) in allow.iter().enumerate() {
        s.allow.push(EdgeSpec {
            from: a.from.clone(),
            to: a.to.clone(),
            port: a.port,
            service: None,
            required: None,
            window: None,
            reason: a.reason.clone(),
            pos: Pos { line: 0, column: 0 },
            index: first + i,
        });
    }
    s
}

/// Compile a patched site (the loader's checks beyond [`Policy::compile`]
/// hold by construction: names are unique, addresses unclaimed).
pub fn compile(model: &Model, site: Site) -> Result<Policy, ConfigError> {
    Policy::compile(model.clone(), site, Path::new("<proposed site>"))
}

/// One `allow` entry per (source endpoint, destination endpoint, port) of
/// the flows `p` calls unexpected that were established at least once.
/// Flows between two addresses of one endpoint cannot be allowed (an edge
/// needs two endpoints) and are left out.
pub fn allow_entries(
    p: &Policy,
    flows: &BTreeMap<FlowId, FlowStats>,
) -> (Vec<Proposed<AllowEntry>>, Vec<AllowEvidence>) {
    #[derive(Default)]
    struct Group {
        attempts: u64,
        established: u64,
        sources: BTreeSet<IpAddr>,
        span: Option<(Timestamp, Timestamp)>,
    }
    let mut groups: BTreeMap<(String, String, u16), Group> = BTreeMap::new();
    // Every attempt of a triple counts once any attempt of it succeeded.
    for (f, s) in flows.iter().filter(|(_, s)| s.established() > 0) {
        let c = classify(p, f.client, f.server, f.port);
        if c.verdict != Verdict::Unexpected || c.src == c.dst {
            continue;
        }
        let key = (
            p.peer_name(c.src).to_string(),
            p.peer_name(c.dst).to_string(),
            f.port,
        );
        let g = groups.entry(key).or_default();
        g.attempts += s.attempts;
        g.established += s.established();
        g.sources.insert(f.client);
        g.span = Some(match g.span {
            None => (s.first, s.last),
            Some((a, b)) => (a.min(s.first), b.max(s.last)),
        });
    }
    groups
        .into_iter()
        .map(|((from, to, port), g)| {
            let (first, last) = g.span.expect("a group has a flow");
            let ev = AllowEvidence {
                attempts: g.attempts,
                established: g.established,
                source_addresses: g.sources.len(),
                first_seen: first.rfc3339(),
                last_seen: last.rfc3339(),
            };
            let reason = format!(
                "seen in traffic: {} attempt{}, {} established, from {} address{}",
                ev.attempts,
                plural(ev.attempts),
                ev.established,
                ev.source_addresses,
                if ev.source_addresses == 1 { "" } else { "es" }
            );
            let evidence = vec![format!(
                "{} attempt{} ({} established) from {} source address{}, first {}, last {}",
                ev.attempts,
                plural(ev.attempts),
                ev.established,
                ev.source_addresses,
                if ev.source_addresses == 1 { "" } else { "es" },
                ev.first_seen,
                ev.last_seen
            )];
            (
                Proposed {
                    entry: AllowEntry {
                        from,
                        to,
                        port,
                        reason,
                    },
                    evidence,
                },
                ev,
            )
        })
        .unzip()
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The longest gap between evidence for every required edge of `p`.
pub fn edge_gaps(p: &Policy, o: &Observer) -> Vec<EdgeGap> {
    let mut out: Vec<EdgeGap> = p
        .edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.required)
        .map(|(i, e)| {
            let g = o.gaps(i);
            EdgeGap {
                from: p.endpoint(e.src).name.clone(),
                to: p.endpoint(e.dst).name.clone(),
                port: e.port,
                window_seconds: e.window.as_secs(),
                evidence: g.count,
                longest_gap_seconds: (g.count >= 2).then(|| secs_up(g.longest)),
                first_seen: g.first.map(Timestamp::rfc3339),
                last_seen: g.last.map(Timestamp::rfc3339),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.from, &a.to, a.port).cmp(&(&b.from, &b.to, b.port)));
    out
}

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Why each finding of a replay against the proposed site is left to the
/// reader rather than proposed away.
pub fn left_out(findings: &[Finding]) -> Vec<LeftOut> {
    findings
        .iter()
        .map(|f| {
            let established = f.outcomes.get("established").copied().unwrap_or(0);
            let why = match f.kind {
                FindingKind::LocalOnly => {
                    "never allowed by a proposal: the model keeps this port on its host".into()
                }
                FindingKind::Blocked => {
                    "an expected flow that failed: fix the network, not the site file".into()
                }
                FindingKind::Missing => {
                    "a required edge without evidence for a whole window: see required_edges".into()
                }
                FindingKind::Unexpected | FindingKind::UnknownHost if established == 0 => {
                    "never established (refused, unanswered or cut off): not evidence of a \
                     legitimate flow"
                        .into()
                }
                FindingKind::Unexpected if f.src == f.dst => {
                    "both ends are the same endpoint: an allowance needs two".into()
                }
                _ => "not proposed: see the notes".to_string(),
            };
            LeftOut {
                kind: f.kind,
                src: f.src.clone(),
                dst: f.dst.clone(),
                port: f.port,
                count: f.count,
                why,
            }
        })
        .collect()
}

impl Proposal {
    pub fn to_yaml(&self) -> String {
        render::yaml(self)
    }

    pub fn to_json(&self) -> String {
        render::json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_policy;

    fn policy(site: &str) -> Policy {
        load_policy(Path::new(site), None).unwrap().policy
    }

    fn flow(
        flows: &mut BTreeMap<FlowId, FlowStats>,
        client: &str,
        server: &str,
        port: u16,
        established: u64,
        attempts: u64,
    ) {
        let at = Timestamp::from_secs_nanos(1_767_603_600, 0);
        flows.insert(
            FlowId {
                client: client.parse().unwrap(),
                server: server.parse().unwrap(),
                port,
            },
            FlowStats {
                attempts,
                outcomes: [established, attempts - established, 0, 0],
                first: at,
                last: at,
            },
        );
    }

    /// One entry per (source endpoint, destination, port); never for
    /// local-only ports or flows that were never established.
    #[test]
    fn allowances_group_by_endpoint_and_skip_what_is_not_legitimate() {
        let p = policy("multi-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "198.51.100.7", "192.0.2.21", 4747, 1, 1);
        flow(&mut f, "198.51.100.8", "192.0.2.21", 4747, 2, 3);
        flow(&mut f, "192.0.2.21", "192.0.2.11", 3389, 0, 2); // refused
        flow(&mut f, "192.0.2.11", "192.0.2.10", 4570, 1, 1); // local-only
        flow(&mut f, "192.0.2.11", "192.0.2.21", 4747, 1, 1); // expected
        let (allow, ev) = allow_entries(&p, &f);
        let got: Vec<(&str, &str, u16)> = allow
            .iter()
            .map(|a| (a.entry.from.as_str(), a.entry.to.as_str(), a.entry.port))
            .collect();
        assert_eq!(got, [("corp-users", "engine1", 4747)]);
        assert_eq!(
            (ev[0].attempts, ev[0].established, ev[0].source_addresses),
            (4, 3, 2)
        );
    }

    /// A site on the implicit `users` network gets no user network (that
    /// would turn every other address unknown); a server nodes reach on a
    /// port no role listens on becomes an external, and the allowance to it
    /// follows once the patch is applied.
    #[test]
    fn implicit_users_site_gets_externals_not_user_networks() {
        let p = policy("single-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "10.9.8.7", "192.0.2.10", 443, 1, 1);
        flow(&mut f, "192.0.2.10", "10.1.1.1", 389, 2, 2);
        let inf = infer(&p, &f, Mode::Site);
        assert!(inf.user_networks.is_empty() && inf.nodes.is_empty());
        let names: Vec<&str> = inf
            .externals
            .iter()
            .map(|x| x.entry.name.as_str())
            .collect();
        assert_eq!(names, ["host-10-1-1-1"]);
        let patched = compile(&p.model, patched_site(&p.site, &p.model, &inf, &[])).unwrap();
        let (allow, _) = allow_entries(&patched, &f);
        assert_eq!(allow.len(), 1);
        assert_eq!(
            (allow[0].entry.from.as_str(), allow[0].entry.to.as_str()),
            ("central", "host-10-1-1-1")
        );
    }

    /// An address that accepts a node-to-node listener port from the site's
    /// nodes is proposed as a node with the role those listeners imply.
    #[test]
    fn unknown_listener_becomes_a_node() {
        let p = policy("multi-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "192.0.2.10", "192.0.2.33", 5151, 1, 1);
        flow(&mut f, "192.0.2.10", "192.0.2.33", 4242, 1, 1);
        let inf = infer(&p, &f, Mode::Site);
        assert_eq!(inf.nodes.len(), 1);
        let n = &inf.nodes[0].entry;
        assert_eq!(
            (n.roles.clone(), n.addresses.clone()),
            (
                vec!["scheduler".to_string()],
                vec!["192.0.2.33".to_string()]
            )
        );
        // `scheduler` is taken in multi-node.
        assert_eq!(n.name, "scheduler1");
    }
}
