//! Which required edges a sensor can see: the `--sensor` nodes, checked
//! against the site. Used by the report and the exporter alike.

use super::{Edge, EndpointId, EndpointKind, Peer, Policy};
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
    /// The site's nodes at either end of an observed connection: what a
    /// flow record of an undeclared exporter, or a flow log, is taken to
    /// cover.
    pub fn nodes_carried(&self, o: &Observation) -> impl Iterator<Item = EndpointId> + '_ {
        [o.key.client, o.key.server]
            .into_iter()
            .filter_map(|ip| match self.peer_of(ip) {
                p @ Peer::Endpoint(id) if self.is_node(p) => Some(id),
                _ => None,
            })
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
    use crate::config::load_policy;
    use crate::site::{Covered, Exporter, Pos};

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
