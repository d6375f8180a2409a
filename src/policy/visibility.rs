//! Which required edges a sensor can see: the `--sensor` nodes, checked
//! against the site. Used by the report and the exporter alike.

use std::net::IpAddr;

use super::{Edge, EdgeId, EndpointId, EndpointKind, Peer, Policy};
use crate::observation::Observation;
use crate::site::{Covered, Exporter};

/// A `--sensor` name that is not a node of the site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--sensor {sensor}: no such node in site `{site}`; nodes: {}", nodes.join(", "))]
pub struct UnknownSensor {
    pub sensor: String,
    pub site: String,
    pub nodes: Vec<String>,
}

/// Which required edges a sensor can see: all, or those touching its nodes.
#[derive(Clone, Debug, Default)]
pub struct Visibility {
    pub nodes: Vec<String>,
    /// Only `nodes` are seen, even when there are none (node logs whose
    /// node is unknown cover nothing); otherwise no nodes means the whole
    /// site (a SPAN).
    pub limited: bool,
    /// Why the required edges outside `nodes` are not judged, when the
    /// report lists them (`not_observed`) rather than leaving them out: what
    /// the flow logs cover.
    pub unjudged: Option<String>,
}

impl Visibility {
    /// Check `--sensor` names against the site's nodes.
    pub fn for_site(p: &Policy, sensors: &[String]) -> Result<Visibility, UnknownSensor> {
        match sensors.iter().find(|s| p.site.node(s.as_str()).is_none()) {
            Some(s) => Err(UnknownSensor {
                sensor: s.clone(),
                site: p.site.name.clone(),
                nodes: p.site.nodes.iter().map(|n| n.name.clone()).collect(),
            }),
            None => Ok(Visibility {
                nodes: sensors.to_vec(),
                limited: !sensors.is_empty(),
                unjudged: None,
            }),
        }
    }

    /// A required edge whose endpoints this sensor sees: one the report,
    /// the metrics and the event log judge.
    pub fn judges(&self, p: &Policy, e: &Edge) -> bool {
        e.required && self.sees(p, Peer::Endpoint(e.src), Peer::Endpoint(e.dst))
    }

    pub fn sees(&self, p: &Policy, src: Peer, dst: Peer) -> bool {
        (self.nodes.is_empty() && !self.limited)
            || [src, dst]
                .iter()
                .any(|e| self.nodes.iter().any(|n| p.peer_name(*e) == n))
    }
}

impl Policy {
    /// The site node owning a logged interface whose records all have an
    /// end among `addrs` (see `source::flows::Ends`): the one node with an
    /// address there; `None` when no node, or more than one, has.
    pub fn interface_owner(&self, addrs: &[IpAddr]) -> Option<EndpointId> {
        let mut nodes = addrs.iter().filter_map(|ip| self.node_at(*ip));
        let first = nodes.next()?;
        nodes.all(|n| n == first).then_some(first)
    }

    fn node_at(&self, ip: IpAddr) -> Option<EndpointId> {
        match self.peer_of(ip) {
            p @ Peer::Endpoint(id) if self.is_node(p) => Some(id),
            _ => None,
        }
    }

    /// The site's nodes at either end of an observed connection: what a
    /// flow record of an undeclared exporter is taken to cover.
    pub fn nodes_carried(&self, o: &Observation) -> impl Iterator<Item = EndpointId> + '_ {
        [o.key.client, o.key.server]
            .into_iter()
            .filter_map(|ip| self.node_at(ip))
    }

    /// The endpoint names a declared exporter covers: those named, and the
    /// nodes with an address in a covered block and the user networks
    /// whose blocks all lie inside one.
    pub fn exporter_covers(&self, x: &Exporter) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        };
        for c in &x.covers {
            match c {
                Covered::Name(n) => add(n),
                Covered::Net(net) => {
                    for e in &self.endpoints {
                        if self.endpoint_inside(e.kind, e.index, net) {
                            add(&e.name);
                        }
                    }
                }
            }
        }
        out
    }

    /// The required edges a declared exporter's records cover: those
    /// touching what it covers. A sequence gap of that exporter leaves
    /// these, and no others, unjudged over the windows that hold it.
    pub fn exporter_edges(&self, x: &Exporter) -> Vec<EdgeId> {
        let mut covered = vec![false; self.endpoints.len()];
        for id in (self.exporter_covers(x).iter()).filter_map(|n| self.endpoint_id(n)) {
            covered[usize::from(id.0)] = true;
        }
        let touches = |id: EndpointId| covered[usize::from(id.0)];
        (self.edges.iter().enumerate())
            .filter(|(_, e)| e.required && (touches(e.src) || touches(e.dst)))
            .map(|(i, _)| EdgeId(i as u32))
            .collect()
    }

    fn endpoint_inside(&self, kind: EndpointKind, index: usize, net: &ipnet::IpNet) -> bool {
        match kind {
            EndpointKind::Node => (self.site.nodes[index].addresses.iter())
                .any(|a| net.contains(a) || net.contains(&a.to_canonical())),
            EndpointKind::UserNetwork => {
                let cidrs = &self.site.user_networks[index].cidrs;
                !cidrs.is_empty() && cidrs.iter().all(|c| net.contains(c))
            }
            EndpointKind::External => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Visibility;
    use crate::config::load_policy;
    use crate::policy::{EdgeId, Policy};
    use crate::site::{Covered, Exporter, Pos};
    use crate::state::edges::{EdgeClock, Unobserved};
    use crate::state::EdgeState;
    use crate::time::Timestamp;

    fn exporter(name: &str, covers: &[&str]) -> Exporter {
        Exporter {
            name: name.into(),
            address: "192.0.2.250".parse().unwrap(),
            observation_domain: None,
            covers: covers
                .iter()
                .map(|c| Covered::Name(c.to_string()))
                .collect(),
            pos: Pos { line: 1, column: 1 },
        }
    }

    /// A required edge whose both ends are among `inside` and none among
    /// `outside`.
    fn edge_between(p: &Policy, inside: &[&str], outside: &[&str]) -> EdgeId {
        let name = |id| p.endpoint(id).name.as_str();
        let i = (p.edges.iter())
            .position(|e| {
                e.required
                    && [e.src, e.dst].iter().all(|&n| inside.contains(&name(n)))
                    && [e.src, e.dst].iter().all(|&n| !outside.contains(&name(n)))
            })
            .expect("such a required edge");
        EdgeId(i as u32)
    }

    /// Exporter A covers engine1, B engine2 (every required edge of the
    /// site touches central): a gap of B makes B's edges `not_observed` and
    /// leaves A's `missing`; a gap of A within the window of A's edge makes
    /// it `not_observed`, and once the window has passed the gap, `missing`.
    #[test]
    fn a_gap_unjudges_only_the_gapped_exporters_edges() {
        let p = (load_policy(std::path::Path::new("multi-node"), None).unwrap()).policy;
        let a = exporter("a", &["engine1"]);
        let b = exporter("b", &["engine2"]);
        let a_edge = edge_between(&p, &["engine1", "central"], &["engine2"]);
        let b_edge = edge_between(&p, &["engine2", "central"], &["engine1"]);
        let (a_edges, b_edges) = (p.exporter_edges(&a), p.exporter_edges(&b));
        assert!(a_edges.contains(&a_edge) && !a_edges.contains(&b_edge));
        assert!(b_edges.contains(&b_edge) && !b_edges.contains(&a_edge));
        assert!(a_edges
            .iter()
            .chain(&b_edges)
            .all(|e| p.edges[e.0 as usize].required));

        let s = |n: u64| Timestamp::from_secs_nanos(n, 0);
        let w = Duration::from_secs(60);
        let mut clock = EdgeClock::new(&p);
        for &e in &b_edges {
            clock.note_gap(e, s(100));
        }
        assert_eq!(clock.state(a_edge, w, s(0), s(120)), EdgeState::Missing);
        assert_eq!(
            clock.judge(b_edge, w, s(0), s(120)),
            (EdgeState::NotObserved, Some(Unobserved::Gap(s(100))))
        );
        for &e in &a_edges {
            clock.note_gap(e, s(110));
        }
        assert_eq!(
            clock.judge(a_edge, w, s(0), s(170)),
            (EdgeState::NotObserved, Some(Unobserved::Gap(s(110))))
        );
        assert_eq!(clock.state(a_edge, w, s(0), s(171)), EdgeState::Missing);
    }

    /// The nodes a VPC flow log of `records` (interface, src, dst) covers,
    /// by name, and the visibility they give.
    fn log_covers(p: &Policy, records: &[(&str, &str, &str)]) -> (Vec<String>, Visibility) {
        let mut log = String::from(
            "version interface-id srcaddr dstaddr srcport dstport protocol start end action log-status\n",
        );
        for (eni, src, dst) in records {
            log += &format!("3 {eni} {src} {dst} 50001 4747 6 1767603600 1767603660 ACCEPT OK\n");
        }
        let f = crate::source::flows::vpc::read(log.as_bytes());
        let names: Vec<String> = (f.interfaces.owners(|a| p.interface_owner(a)).into_iter())
            .map(|id| p.endpoint(id).name.clone())
            .collect();
        let vis = Visibility {
            nodes: names.clone(),
            limited: true,
            unjudged: None,
        };
        (names, vis)
    }

    const CENTRAL: &str = "192.0.2.10";
    const PROXY: &str = "192.0.2.11";
    const ENGINE1: &str = "192.0.2.21";
    const ENGINE2: &str = "192.0.2.22";

    /// engine1's interface: its peers central and proxy are ends of its
    /// records, but central's edges with the other nodes are not its to
    /// judge.
    #[test]
    fn a_flow_log_covers_the_owner_of_its_interface_once_two_peers_tell_it() {
        let p = (load_policy(std::path::Path::new("multi-node"), None).unwrap()).policy;
        let one_peer = [("eni-e", ENGINE1, CENTRAL), ("eni-e", CENTRAL, ENGINE1)];
        let (names, vis) = log_covers(&p, &one_peer);
        assert!(names.is_empty(), "undecided yet: {names:?}");
        assert!(!p.edges.iter().any(|e| vis.judges(&p, e)));

        let two_peers = [one_peer[0], one_peer[1], ("eni-e", PROXY, ENGINE1)];
        let (names, vis) = log_covers(&p, &two_peers);
        assert_eq!(names, ["engine1"]);
        let own = edge_between(&p, &["central", "engine1"], &[]);
        let peers = edge_between(&p, &["central", "engine2"], &[]);
        assert!(vis.judges(&p, &p.edges[own.0 as usize]));
        assert!(!vis.judges(&p, &p.edges[peers.0 as usize]));
        let mut judged = p.edges.iter().filter(|e| vis.judges(&p, e));
        assert!(judged.all(|e| [e.src, e.dst]
            .iter()
            .any(|&n| p.endpoint(n).name == "engine1")));
    }

    #[test]
    fn a_flow_log_of_an_interface_no_node_owns_covers_nothing() {
        let p = (load_policy(std::path::Path::new("multi-node"), None).unwrap()).policy;
        let outsider = "10.9.9.9";
        let log = [("eni-x", outsider, ENGINE1), ("eni-x", outsider, PROXY)];
        let (names, vis) = log_covers(&p, &log);
        assert!(names.is_empty(), "{names:?}");
        assert!(!p.edges.iter().any(|e| vis.judges(&p, e)));
    }

    #[test]
    fn a_flow_log_of_two_interfaces_covers_both_owners() {
        let p = (load_policy(std::path::Path::new("multi-node"), None).unwrap()).policy;
        let log = [
            ("eni-c", ENGINE1, CENTRAL),
            ("eni-e", PROXY, ENGINE2),
            ("eni-c", CENTRAL, PROXY),
            ("eni-e", ENGINE2, CENTRAL),
        ];
        let (mut names, _) = log_covers(&p, &log);
        names.sort();
        assert_eq!(names, ["central", "engine2"]);
    }

    #[test]
    fn an_exporter_covers_named_endpoints_and_what_lies_in_its_blocks() {
        let p = (load_policy(std::path::Path::new("multi-node"), None).unwrap()).policy;
        let x = Exporter {
            name: "sw".into(),
            address: "192.0.2.250".parse().unwrap(),
            observation_domain: None,
            covers: vec![
                Covered::Name("proxy".into()),
                // engine1 and engine2 (.21, .22); not central (.10) nor scheduler (.31).
                Covered::Net("192.0.2.16/29".parse().unwrap()),
                // corp-users has an IPv6 block too: not wholly inside.
                Covered::Net("198.51.100.0/24".parse().unwrap()),
                Covered::Name("proxy".into()),
            ],
            pos: Pos { line: 1, column: 1 },
        };
        assert_eq!(p.exporter_covers(&x), ["proxy", "engine1", "engine2"]);
    }
}
