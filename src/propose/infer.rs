//! From established connections to the site entries they imply: which
//! addresses are nodes (they accept connections on a model listener port),
//! their roles (the role set whose listeners best explain what they accept),
//! the user networks (clients of user-facing ports) and the externals.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::observe::{FlowId, FlowStats};
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
    pub notes: Vec<String>,
}

/// Connections one address accepted on one port.
#[derive(Clone, Debug, Default)]
struct Accepted {
    clients: BTreeSet<IpAddr>,
    attempts: u64,
}

/// Cost of a role set: a service seen but not explained costs more than a
/// service the roles would run but nobody reached (a site need not use
/// every listener), and each role costs a little (fewest roles win ties).
const MISS: u32 = 6;
const EXTRA: u32 = 2;
const ROLE: u32 = 1;
/// Nodes in the bundled model hold at most two roles; three leaves room.
const MAX_ROLES: usize = 3;

pub fn infer(p: &Policy, flows: &BTreeMap<FlowId, FlowStats>, mode: Mode) -> Inferred {
    let model = &p.model;
    let known = |ip: IpAddr| -> Known {
        match p.peer_of(ip) {
            Peer::Localhost => Known::Loopback,
            Peer::Unknown => Known::Unknown,
            Peer::Endpoint(id) => match p.endpoint(id).kind {
                EndpointKind::Node => Known::Node,
                EndpointKind::External => Known::External,
                EndpointKind::UserNetwork => Known::Users,
            },
        }
    };
    let established: Vec<(FlowId, FlowStats)> = flows
        .iter()
        .filter(|(f, s)| {
            s.established() > 0
                && f.client != f.server
                && known(f.client) != Known::Loopback
                && known(f.server) != Known::Loopback
        })
        .map(|(f, s)| (*f, *s))
        .collect();

    // Servers the site does not name as a node or external.
    let mut servers: BTreeMap<IpAddr, BTreeMap<u16, Accepted>> = BTreeMap::new();
    for (f, s) in &established {
        if matches!(known(f.server), Known::Users | Known::Unknown) {
            let a = servers
                .entry(f.server)
                .or_default()
                .entry(f.port)
                .or_default();
            a.clients.insert(f.client);
            a.attempts += s.attempts;
        }
    }

    let ext_ports: BTreeSet<u16> = rules_of(model, Scope::External).map(|r| r.port).collect();
    let node_ports: BTreeSet<u16> = listener_rules(model, Scope::Site)
        .map(|r| r.port)
        .filter(|port| !ext_ports.contains(port))
        .collect();
    let user_ports: BTreeSet<u16> = listener_rules(model, Scope::Users)
        .map(|r| r.port)
        .collect();

    // Nodes: first what accepts a node-to-node listener port, then what
    // serves a user-facing port to clients that are not nodes.
    let mut new_nodes: BTreeSet<IpAddr> = servers
        .iter()
        .filter(|(_, ports)| ports.keys().any(|port| node_ports.contains(port)))
        .map(|(ip, _)| *ip)
        .collect();
    let is_node0 = |ip: &IpAddr| known(*ip) == Known::Node || new_nodes.contains(ip);
    let user_facing: Vec<IpAddr> = servers
        .iter()
        .filter(|(ip, _)| !new_nodes.contains(ip))
        .filter(|(_, ports)| {
            ports.iter().any(|(port, a)| {
                user_ports.contains(port) && a.clients.iter().any(|c| !is_node0(c))
            })
        })
        .map(|(ip, _)| *ip)
        .collect();
    new_nodes.extend(user_facing);
    let is_node = |ip: &IpAddr| known(*ip) == Known::Node || new_nodes.contains(ip);

    let mut out = Inferred::default();
    let mut taken: BTreeSet<String> = p.endpoints.iter().map(|e| e.name.clone()).collect();
    if mode == Mode::Model {
        taken.clear();
    }

    // Roles of each new node.
    let mut nodes: Vec<(IpAddr, Choice, Vec<String>)> = Vec::new();
    for ip in &new_nodes {
        let ports = &servers[ip];
        let (seen, evidence) = observed_services(model, ports, &is_node);
        let choice = best_roles(model, &seen, None);
        nodes.push((*ip, choice, evidence));
    }
    if mode == Mode::Model && nodes.len() == 1 && !nodes[0].1.roles.iter().any(|r| r == "central") {
        let ports = &servers[&nodes[0].0];
        let (seen, _) = observed_services(model, ports, &is_node);
        if let Some(c) = model
            .role("central")
            .map(|_| best_roles(model, &seen, Some("central")))
        {
            nodes[0].1 = c;
            nodes[0].2.push(
                "the only node seen: every site has a central node, and what this node accepted \
                 does not tell the central node from other roles (from users alone: a proxy)"
                    .into(),
            );
        }
    }
    if mode == Mode::Model && !nodes.is_empty() && !nodes.iter().any(|n| has(&n.1.roles, "central"))
    {
        out.notes.push(
            "no node shows the central node's listeners (4432 repository database, 5050 scheduler \
             manager): check the roles before use"
                .into(),
        );
    }
    let names = name_nodes(
        &nodes.iter().map(|n| n.1.roles.clone()).collect::<Vec<_>>(),
        &mut taken,
    );
    for ((ip, choice, mut evidence), name) in nodes.into_iter().zip(names) {
        evidence.push(choice.explain());
        out.nodes.push(Proposed {
            entry: NodeEntry {
                name,
                addresses: vec![ip.to_string()],
                roles: choice.roles.clone(),
                services: choice.services.clone(),
            },
            evidence,
        });
    }

    // Externals: servers that are not nodes; named by the model's external
    // service on the port when there is one, else by address.
    let mut by_service: BTreeMap<Vec<String>, Vec<IpAddr>> = BTreeMap::new();
    let mut ext_evidence: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (ip, ports) in servers.iter().filter(|(ip, _)| !new_nodes.contains(ip)) {
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
            .push(*ip);
        ext_evidence.insert(*ip, ev);
    }
    let mut externals: Vec<ExternalDraft> = Vec::new();
    for (services, ips) in by_service {
        if services.is_empty() {
            for ip in ips {
                let ev = ext_evidence.remove(&ip).unwrap_or_default();
                externals.push((host_name(ip), vec![ip], services.clone(), ev));
            }
        } else {
            let ev = ips
                .iter()
                .flat_map(|ip| ext_evidence.remove(ip).unwrap_or_default())
                .collect();
            externals.push((services.join("-"), ips, services, ev));
        }
    }

    // Clients: user networks from clients of user-facing ports; the rest
    // (clients the site cannot place) become externals by address.
    let placeable = |ip: &IpAddr| match mode {
        Mode::Model => !is_node(ip),
        Mode::Site => known(*ip) == Known::Unknown && !new_nodes.contains(ip),
    };
    let ext_addrs: BTreeSet<IpAddr> = externals.iter().flat_map(|e| e.1.clone()).collect();
    let mut user_clients: BTreeSet<IpAddr> = BTreeSet::new();
    let mut other_clients: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for (f, s) in &established {
        if !placeable(&f.client) || ext_addrs.contains(&f.client) {
            continue;
        }
        if user_ports.contains(&f.port) && is_node(&f.server) {
            user_clients.insert(f.client);
        } else {
            *other_clients.entry(f.client).or_default() += s.attempts;
        }
    }
    if !user_clients.is_empty() {
        let cidrs = covering_cidrs(&user_clients);
        let base = match mode {
            Mode::Model => "users",
            Mode::Site => "proposed-users",
        };
        let name = unique(base, &mut taken);
        let ports: BTreeSet<u16> = established
            .iter()
            .filter(|(f, _)| user_clients.contains(&f.client) && user_ports.contains(&f.port))
            .map(|(f, _)| f.port)
            .collect();
        out.user_networks.push(Proposed {
            entry: NetworkEntry {
                name,
                cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            },
            evidence: vec![format!(
                "{} client address{} of user-facing port{} {} on nodes; smallest block per /24 (IPv4) or /64 (IPv6)",
                user_clients.len(),
                if user_clients.len() == 1 { "" } else { "es" },
                if ports.len() == 1 { "" } else { "s" },
                join(ports.iter())
            )],
        });
    }
    for (ip, attempts) in other_clients
        .into_iter()
        .filter(|(ip, _)| !user_clients.contains(ip))
    {
        externals.push((
            host_name(ip),
            vec![ip],
            Vec::new(),
            vec![format!(
                "only connects out: {attempts} established attempt{} to the site, none on a user-facing port",
                if attempts == 1 { "" } else { "s" }
            )],
        ));
    }
    for (base, ips, services, evidence) in externals {
        let name = unique(&base, &mut taken);
        out.externals.push(Proposed {
            entry: ExternalEntry {
                name,
                addresses: ips.iter().map(|i| i.to_string()).collect(),
                services,
                description: "proposed from traffic".into(),
            },
            evidence,
        });
    }
    out
}

/// An external before its name is made unique: base name, addresses,
/// services, evidence.
type ExternalDraft = (String, Vec<IpAddr>, Vec<String>, Vec<String>);

/// Rules of a scope.
fn rules_of(model: &Model, scope: Scope) -> impl Iterator<Item = &crate::model::PortRule> {
    model.rules.iter().filter(move |r| r.scope == scope)
}

/// Rules of a scope whose listener is a node service (not an external one).
fn listener_rules(model: &Model, scope: Scope) -> impl Iterator<Item = &crate::model::PortRule> {
    rules_of(model, scope).filter(|r| !model.service(&r.to.service).is_some_and(|s| s.external))
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

/// A chosen role set and how well it explains what was seen.
#[derive(Clone, Debug)]
struct Choice {
    roles: Vec<String>,
    /// Explicit services when the roles' defaults do not cover what was seen.
    services: Option<Vec<String>>,
    explained: Vec<String>,
    unused: Vec<String>,
    beyond: Vec<String>,
}

impl Choice {
    fn explain(&self) -> String {
        let mut s = if self.explained.is_empty() {
            format!(
                "roles {}: none of their services was reached",
                self.roles.join(", ")
            )
        } else {
            format!(
                "roles {} explain {}",
                self.roles.join(", "),
                self.explained.join(", ")
            )
        };
        if !self.unused.is_empty() {
            s.push_str(&format!(
                "; they also run {} but nothing reached {} here",
                self.unused.join(", "),
                if self.unused.len() == 1 { "it" } else { "them" }
            ));
        }
        if !self.beyond.is_empty() {
            s.push_str(&format!(
                "; {} seen beyond the roles' defaults, so `services` lists them",
                self.beyond.join(", ")
            ));
        }
        s
    }
}

/// The services of `roles` that traffic can show: listeners of site and
/// user rules that would match such a node.
fn visible_services(model: &Model, roles: &[String]) -> BTreeSet<String> {
    let services = model.expand_services(roles.iter().map(String::as_str), &[]);
    model
        .rules
        .iter()
        .filter(|r| matches!(r.scope, Scope::Site | Scope::Users))
        .filter(|r| !model.service(&r.to.service).is_some_and(|s| s.external))
        .filter(|r| r.to.matches(roles, &services))
        .flat_map(|r| std::iter::once(r.to.service.clone()).chain(r.to.with.iter().cloned()))
        .collect()
}

/// The role set (up to [`MAX_ROLES`] roles; containing `must` if given) of
/// least cost for the services seen.
fn best_roles(model: &Model, seen: &BTreeSet<String>, must: Option<&str>) -> Choice {
    let ids: Vec<&str> = model.roles.iter().map(|r| r.id.as_str()).collect();
    let mut best: Option<(u32, Vec<usize>, BTreeSet<String>)> = None;
    for set in role_sets(ids.len(), MAX_ROLES) {
        let roles: Vec<String> = set.iter().map(|i| ids[*i].to_string()).collect();
        if must.is_some_and(|m| !roles.iter().any(|r| r == m)) {
            continue;
        }
        let visible = visible_services(model, &roles);
        let miss = seen.difference(&visible).count() as u32;
        let extra = visible.difference(seen).count() as u32;
        let cost = MISS * miss + EXTRA * extra + ROLE * roles.len() as u32;
        let better = match &best {
            None => true,
            Some((c, s, _)) => (cost, set.len(), &set) < (*c, s.len(), s),
        };
        if better {
            best = Some((cost, set, visible));
        }
    }
    let (_, set, visible) = best.unwrap_or_default();
    let roles: Vec<String> = set.iter().map(|i| ids[*i].to_string()).collect();
    let beyond: Vec<String> = seen.difference(&visible).cloned().collect();
    let services = (!beyond.is_empty()).then(|| {
        let mut s: BTreeSet<String> = roles
            .iter()
            .filter_map(|r| model.role(r))
            .flat_map(|r| r.services.iter().cloned())
            .collect();
        s.extend(beyond.iter().cloned());
        s.into_iter().collect()
    });
    Choice {
        services,
        explained: seen.intersection(&visible).cloned().collect(),
        unused: visible.difference(seen).cloned().collect(),
        beyond,
        roles,
    }
}

/// Every set of 1 to `max` indices below `n`, each in increasing order:
/// O(n^max), so a model with many roles stays cheap.
fn role_sets(n: usize, max: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut frontier = out.clone();
    for _ in 1..max {
        let mut next = Vec::new();
        for set in &frontier {
            let last = *set.last().expect("non-empty");
            for i in last + 1..n {
                let mut s = set.clone();
                s.push(i);
                next.push(s);
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

fn has(roles: &[String], r: &str) -> bool {
    roles.iter().any(|x| x == r)
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
    use crate::model::{load_model, BUNDLED_MODELS};
    use std::path::Path;

    fn model() -> Model {
        let (_, file, text) = BUNDLED_MODELS[0];
        load_model(Path::new(file), text).unwrap()
    }

    fn set(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

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

    #[test]
    fn role_sets_are_every_small_combination() {
        let sets = role_sets(5, 3);
        assert_eq!(sets.len(), 5 + 10 + 10);
        assert!(sets.contains(&vec![0, 2, 4]));
        assert!(sets.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])));
    }

    #[test]
    fn roles_from_listeners() {
        let m = model();
        let roles = |seen: &[&str]| best_roles(&m, &set(seen), None).roles;
        assert_eq!(
            roles(&["qes", "qrs", "qpr", "broker", "data-profiling", "hub"]),
            ["engine"]
        );
        assert_eq!(roles(&["qss-worker", "qrs"]), ["scheduler"]);
        assert_eq!(roles(&["qps", "qrs"]), ["proxy"]);
        assert_eq!(
            roles(&["qps", "qrs", "qrd", "qpr", "broker", "qss-manager"]),
            ["central"]
        );
        // A scheduler that also runs QES (but not QSD's broker): the
        // scheduler role plus an explicit service, not an engine.
        let c = best_roles(&m, &set(&["qss-worker", "qrs", "qes"]), None);
        assert_eq!(c.roles, ["scheduler"]);
        assert_eq!(
            c.services.unwrap(),
            ["qes", "qrs", "qsd", "qss-worker"].map(String::from)
        );
    }
}
