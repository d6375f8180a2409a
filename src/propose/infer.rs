//! From established connections to the site entries they imply: which
//! addresses are nodes (they accept connections on a model listener port),
//! their roles (the role set whose listeners best explain what they accept),
//! the user networks (clients of user-facing ports) and the externals.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::observe::{FlowId, FlowStats};
use super::roles::{best_roles, has, listener_rules, rules_of, Choice};
use super::{ExternalEntry, NetworkEntry, NodeEntry, Proposed};
use crate::model::{Model, Scope};
use crate::policy::{EndpointKind, Peer, Policy};

/// Patch an existing site, or infer a whole one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Site,
    Model,
}

/// What an address is to the site before the proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Node,
    External,
    /// In a user network (declared or implicit): may still accept connections.
    Users,
    Unknown,
    Loopback,
}

/// New entries for the site, each with its evidence.
#[derive(Clone, Debug, Default)]
pub struct Inferred {
    pub nodes: Vec<Proposed<NodeEntry>>,
    pub user_networks: Vec<Proposed<NetworkEntry>>,
    pub externals: Vec<Proposed<ExternalEntry>>,
    /// Clients the site cannot place that only connect in (not to a
    /// user-facing port): not proposed, their flows held back for review.
    pub unknown_clients: BTreeSet<IpAddr>,
    pub notes: Vec<String>,
}

/// Connections one address accepted on one port.
#[derive(Clone, Debug, Default)]
struct Accepted {
    clients: BTreeSet<IpAddr>,
    attempts: u64,
}

pub fn infer(p: &Policy, flows: &BTreeMap<FlowId, FlowStats>, mode: Mode) -> Inferred {
    let ports = Ports::of(&p.model);
    let mut t = Traffic::of(p, flows);
    t.nodes = t.find_nodes(&ports);
    let mut taken: BTreeSet<String> = match mode {
        Mode::Site => p.endpoints.iter().map(|e| e.name.clone()).collect(),
        Mode::Model => BTreeSet::new(),
    };
    let mut out = Inferred::default();
    out.nodes = t.propose_nodes(mode, &mut taken, &mut out.notes);
    let externals = t.server_externals();
    let (users, others) = t.clients(mode, &ports, &externals);
    if let Some(u) = users {
        out.user_networks.push(u.named(mode, &mut taken));
    }
    // A host the site does not know that connects in is never declared from
    // traffic: its flows are listed as suspicious.
    out.unknown_clients = others;
    out.externals = externals.into_iter().map(|d| d.named(&mut taken)).collect();
    out
}

/// Listener ports of the model, by who may reach them.
struct Ports {
    /// Node-to-node listeners, minus ports an external service also uses
    /// (443 is QPS between nodes but also the licensing backend).
    node: BTreeSet<u16>,
    /// Listeners users reach (QPS on 443 and 80).
    user: BTreeSet<u16>,
}

impl Ports {
    fn of(model: &Model) -> Ports {
        let ext: BTreeSet<u16> = rules_of(model, Scope::External).map(|r| r.port).collect();
        Ports {
            node: listener_rules(model, Scope::Site)
                .map(|r| r.port)
                .filter(|port| !ext.contains(port))
                .collect(),
            user: listener_rules(model, Scope::Users)
                .map(|r| r.port)
                .collect(),
        }
    }
}

/// The established connections, as the site saw them before the proposal.
struct Traffic<'a> {
    p: &'a Policy,
    established: Vec<(FlowId, FlowStats)>,
    /// Servers the site does not name as a node or external, by port.
    servers: BTreeMap<IpAddr, BTreeMap<u16, Accepted>>,
    /// Servers proposed as nodes.
    nodes: BTreeSet<IpAddr>,
}

impl<'a> Traffic<'a> {
    fn of(p: &'a Policy, flows: &BTreeMap<FlowId, FlowStats>) -> Self {
        let mut t = Traffic {
            p,
            established: Vec::new(),
            servers: BTreeMap::new(),
            nodes: BTreeSet::new(),
        };
        t.established = flows
            .iter()
            .filter(|(f, s)| {
                s.established() > 0
                    && f.client != f.server
                    && t.known(f.client) != Known::Loopback
                    && t.known(f.server) != Known::Loopback
            })
            .map(|(f, s)| (*f, *s))
            .collect();
        for (f, s) in &t.established {
            if matches!(t.known(f.server), Known::Users | Known::Unknown) {
                let a = t
                    .servers
                    .entry(f.server)
                    .or_default()
                    .entry(f.port)
                    .or_default();
                a.clients.insert(f.client);
                a.attempts += s.attempts;
            }
        }
        t
    }

    fn known(&self, ip: IpAddr) -> Known {
        match self.p.peer_of(ip) {
            Peer::Localhost => Known::Loopback,
            Peer::Unknown => Known::Unknown,
            Peer::Endpoint(id) => match self.p.endpoint(id).kind {
                EndpointKind::Node => Known::Node,
                EndpointKind::External => Known::External,
                EndpointKind::UserNetwork => Known::Users,
            },
        }
    }

    fn is_node(&self, ip: &IpAddr) -> bool {
        self.known(*ip) == Known::Node || self.nodes.contains(ip)
    }

    /// Nodes: servers that accept a node-to-node listener port, then those
    /// that serve a user-facing port to clients that are not nodes.
    fn find_nodes(&self, ports: &Ports) -> BTreeSet<IpAddr> {
        let mut nodes: BTreeSet<IpAddr> = self
            .servers
            .iter()
            .filter(|(_, by_port)| by_port.keys().any(|port| ports.node.contains(port)))
            .map(|(ip, _)| *ip)
            .collect();
        let node_so_far = |ip: &IpAddr| self.known(*ip) == Known::Node || nodes.contains(ip);
        let user_facing: Vec<IpAddr> = self
            .servers
            .iter()
            .filter(|(ip, _)| !nodes.contains(ip))
            .filter(|(_, by_port)| {
                by_port.iter().any(|(port, a)| {
                    ports.user.contains(port) && a.clients.iter().any(|c| !node_so_far(c))
                })
            })
            .map(|(ip, _)| *ip)
            .collect();
        nodes.extend(user_facing);
        nodes
    }

    /// Each node with the role set that best explains what it accepted.
    fn propose_nodes(
        &self,
        mode: Mode,
        taken: &mut BTreeSet<String>,
        notes: &mut Vec<String>,
    ) -> Vec<Proposed<NodeEntry>> {
        let model = &self.p.model;
        let is_node = |ip: &IpAddr| self.is_node(ip);
        let mut nodes: Vec<(IpAddr, Choice, Vec<String>)> = Vec::new();
        for ip in &self.nodes {
            let (seen, evidence) = observed_services(model, &self.servers[ip], &is_node);
            nodes.push((*ip, best_roles(model, &seen, None), evidence));
        }
        let central = |c: &Choice| has(&c.roles, "central");
        if mode == Mode::Model && nodes.len() == 1 && !central(&nodes[0].1) {
            let (seen, _) = observed_services(model, &self.servers[&nodes[0].0], &is_node);
            if model.role("central").is_some() {
                nodes[0].1 = best_roles(model, &seen, Some("central"));
                nodes[0].2.push(
                    "the only node seen: every site has a central node, and what this node \
                     accepted does not tell the central node from other roles (from users \
                     alone: a proxy)"
                        .into(),
                );
            }
        }
        if mode == Mode::Model && !nodes.is_empty() && !nodes.iter().any(|n| central(&n.1)) {
            notes.push(
                "no node shows the central node's listeners (4432 repository database, 5050 \
                 scheduler manager): check the roles before use"
                    .into(),
            );
        }
        let roles: Vec<Vec<String>> = nodes.iter().map(|n| n.1.roles.clone()).collect();
        let names = name_nodes(&roles, taken);
        nodes
            .into_iter()
            .zip(names)
            .map(|((ip, choice, mut evidence), name)| {
                evidence.push(choice.explain());
                Proposed {
                    entry: NodeEntry {
                        name,
                        addresses: vec![ip.to_string()],
                        roles: choice.roles,
                        services: choice.services,
                    },
                    evidence,
                }
            })
            .collect()
    }

    /// Servers that are not nodes: one external per model external service
    /// they serve (named after it), else one per address.
    fn server_externals(&self) -> Vec<ExternalDraft> {
        let model = &self.p.model;
        let is_node = |ip: &IpAddr| self.is_node(ip);
        let mut by_service: BTreeMap<Vec<String>, Vec<(IpAddr, Vec<String>)>> = BTreeMap::new();
        for (ip, ports) in self
            .servers
            .iter()
            .filter(|(ip, _)| !self.nodes.contains(ip))
        {
            let services: BTreeSet<String> = ports
                .keys()
                .flat_map(|port| rules_of(model, Scope::External).filter(move |r| r.port == *port))
                .map(|r| r.to.service.clone())
                .collect();
            let mut ev = accepted_lines(ports, &is_node);
            ev.push(if services.is_empty() {
                "no port of a model role: an external endpoint, reached under `allow`".to_string()
            } else {
                format!(
                    "the model's port{} of external service {}",
                    if ports.len() == 1 { "" } else { "s" },
                    join(services.iter())
                )
            });
            by_service
                .entry(services.into_iter().collect())
                .or_default()
                .push((*ip, ev));
        }
        let mut out = Vec::new();
        for (services, hosts) in by_service {
            if services.is_empty() {
                out.extend(hosts.into_iter().map(|(ip, evidence)| ExternalDraft {
                    base: host_name(ip),
                    addresses: vec![ip],
                    services: Vec::new(),
                    evidence,
                }));
            } else {
                out.push(ExternalDraft {
                    base: services.join("-"),
                    addresses: hosts.iter().map(|h| h.0).collect(),
                    evidence: hosts.into_iter().flat_map(|h| h.1).collect(),
                    services,
                });
            }
        }
        out
    }

    /// Clients the site cannot place: those of user-facing ports make a user
    /// network; the others (they only connect out, into the site) are
    /// returned as unknown hosts.
    fn clients(
        &self,
        mode: Mode,
        ports: &Ports,
        externals: &[ExternalDraft],
    ) -> (Option<NetworkDraft>, BTreeSet<IpAddr>) {
        let placeable = |ip: &IpAddr| match mode {
            Mode::Model => !self.is_node(ip),
            Mode::Site => self.known(*ip) == Known::Unknown && !self.nodes.contains(ip),
        };
        let taken: BTreeSet<IpAddr> = externals.iter().flat_map(|e| e.addresses.clone()).collect();
        let mut users: BTreeSet<IpAddr> = BTreeSet::new();
        let mut user_ports: BTreeSet<u16> = BTreeSet::new();
        let mut others: BTreeSet<IpAddr> = BTreeSet::new();
        for (f, _) in &self.established {
            if !placeable(&f.client) || taken.contains(&f.client) {
                continue;
            }
            if ports.user.contains(&f.port) && self.is_node(&f.server) {
                users.insert(f.client);
                user_ports.insert(f.port);
            } else {
                others.insert(f.client);
            }
        }
        let network = (!users.is_empty()).then(|| NetworkDraft {
            evidence: format!(
                "{} client address{} of user-facing port{} {} on nodes; smallest block per /24 \
                 (IPv4) or /64 (IPv6)",
                users.len(),
                if users.len() == 1 { "" } else { "es" },
                if user_ports.len() == 1 { "" } else { "s" },
                join(user_ports.iter())
            ),
            cidrs: covering_cidrs(&users),
        });
        let unknown = others.difference(&users).copied().collect();
        (network, unknown)
    }
}

/// A proposed user network before it is named.
struct NetworkDraft {
    cidrs: Vec<IpNet>,
    evidence: String,
}

impl NetworkDraft {
    fn named(self, mode: Mode, taken: &mut BTreeSet<String>) -> Proposed<NetworkEntry> {
        let base = match mode {
            Mode::Model => "users",
            Mode::Site => "proposed-users",
        };
        Proposed {
            entry: NetworkEntry {
                name: unique(base, taken),
                cidrs: self.cidrs.iter().map(|c| c.to_string()).collect(),
            },
            evidence: vec![self.evidence],
        }
    }
}

/// A proposed external before its name is made unique.
struct ExternalDraft {
    base: String,
    addresses: Vec<IpAddr>,
    services: Vec<String>,
    evidence: Vec<String>,
}

impl ExternalDraft {
    fn named(self, taken: &mut BTreeSet<String>) -> Proposed<ExternalEntry> {
        Proposed {
            entry: ExternalEntry {
                name: unique(&self.base, taken),
                addresses: self.addresses.iter().map(|i| i.to_string()).collect(),
                services: self.services,
                description: "proposed from traffic".into(),
            },
            evidence: self.evidence,
        }
    }
}

/// The services an address shows by what it accepts: per port and kind of
/// client (nodes: site rules; others: user rules), the services every rule
/// that could explain it names. Also one evidence line per port.
fn observed_services(
    model: &Model,
    ports: &BTreeMap<u16, Accepted>,
    is_node: &dyn Fn(&IpAddr) -> bool,
) -> (BTreeSet<String>, Vec<String>) {
    let mut seen = BTreeSet::new();
    for (port, a) in ports {
        for (scope, any) in [
            (Scope::Site, a.clients.iter().any(is_node)),
            (Scope::Users, a.clients.iter().any(|c| !is_node(c))),
        ] {
            if !any {
                continue;
            }
            let mut common: Option<BTreeSet<String>> = None;
            for r in listener_rules(model, scope).filter(|r| r.port == *port) {
                let s: BTreeSet<String> = std::iter::once(r.to.service.clone())
                    .chain(r.to.with.iter().cloned())
                    .collect();
                common = Some(match common {
                    None => s,
                    Some(c) => c.intersection(&s).cloned().collect(),
                });
            }
            seen.extend(common.unwrap_or_default());
        }
    }
    (seen, accepted_lines(ports, is_node))
}

fn accepted_lines(
    ports: &BTreeMap<u16, Accepted>,
    is_node: &dyn Fn(&IpAddr) -> bool,
) -> Vec<String> {
    ports
        .iter()
        .map(|(port, a)| {
            let nodes = a.clients.iter().filter(|c| is_node(c)).count();
            let others = a.clients.len() - nodes;
            let mut who = Vec::new();
            if nodes > 0 {
                who.push(format!("{nodes} node{}", if nodes == 1 { "" } else { "s" }));
            }
            if others > 0 {
                who.push(format!(
                    "{others} other address{}",
                    if others == 1 { "" } else { "es" }
                ));
            }
            format!(
                "accepted port {port}: {} attempt{} from {}",
                a.attempts,
                if a.attempts == 1 { "" } else { "s" },
                who.join(" and ")
            )
        })
        .collect()
}

/// Names from roles (`engine`, `proxy-engine`), numbered when several
/// nodes share them or the name is taken.
fn name_nodes(roles: &[Vec<String>], taken: &mut BTreeSet<String>) -> Vec<String> {
    let bases: Vec<String> = roles.iter().map(|r| r.join("-")).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &bases {
        *counts.entry(b).or_default() += 1;
    }
    let mut out = Vec::new();
    for b in &bases {
        let name = if counts[b.as_str()] == 1 && !taken.contains(b) {
            taken.insert(b.clone());
            b.clone()
        } else {
            numbered(b, taken)
        };
        out.push(name);
    }
    out
}

fn numbered(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut n = 1;
    loop {
        let name = format!("{base}{n}");
        if taken.insert(name.clone()) {
            return name;
        }
        n += 1;
    }
}

fn unique(base: &str, taken: &mut BTreeSet<String>) -> String {
    if taken.insert(base.to_string()) {
        base.to_string()
    } else {
        numbered(&format!("{base}-"), taken)
    }
}

fn host_name(ip: IpAddr) -> String {
    let s: String = ip
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("host-{s}")
}

fn join<T: std::fmt::Display>(it: impl Iterator<Item = T>) -> String {
    it.map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// The smallest block covering each group of addresses that share a /24
/// (IPv4) or /64 (IPv6): clients of one office LAN give one block, clients
/// far apart do not widen it to half the Internet.
pub fn covering_cidrs(addrs: &BTreeSet<IpAddr>) -> Vec<IpNet> {
    let group = |ip: &IpAddr| -> IpNet {
        let len = if ip.is_ipv4() { 24 } else { 64 };
        IpNet::new(*ip, len).expect("valid prefix").trunc()
    };
    let mut groups: BTreeMap<IpNet, (IpAddr, IpAddr)> = BTreeMap::new();
    for ip in addrs {
        let g = groups.entry(group(ip)).or_insert((*ip, *ip));
        g.0 = g.0.min(*ip);
        g.1 = g.1.max(*ip);
    }
    groups
        .values()
        .map(|(lo, hi)| {
            let common = match (lo, hi) {
                (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(*a) ^ u32::from(*b)).leading_zeros(),
                (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(*a) ^ u128::from(*b)).leading_zeros(),
                _ => 0,
            };
            IpNet::new(*lo, common as u8).expect("valid prefix").trunc()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_the_smallest_block_per_lan() {
        let a: BTreeSet<IpAddr> = [
            "198.51.100.20",
            "198.51.100.25",
            "10.1.2.3",
            "2001:db8:100::17",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got: Vec<String> = covering_cidrs(&a).iter().map(|n| n.to_string()).collect();
        assert_eq!(
            got,
            ["10.1.2.3/32", "198.51.100.16/28", "2001:db8:100::17/128"]
        );
    }
}
