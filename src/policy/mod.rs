//! A model applied to a site: every endpoint with its label, every expected
//! edge (with required flag and window), and the address lookups the
//! classifier needs. Built once per (re)load; read-only afterwards.

mod accepted;
mod expect;
mod visibility;

pub use accepted::AcceptNote;
pub use expect::{Expectation, ExpectedEdge, NodePorts};
pub use visibility::{UnknownSensor, Visibility};

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::diag::{ConfigError, Diagnostics};
use crate::map::FastMap;
use crate::model::{Client, Model, RuleId, Scope, Selector};
use crate::site::{Acceptance, EdgeSpec, Site};
use crate::time::Timestamp;

/// `--node` names no node of the site.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("--node {node}: no such node in site `{site}`; nodes: {nodes}")]
pub struct NoSuchNode {
    pub node: String,
    pub site: String,
    pub nodes: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    Node,
    UserNetwork,
    External,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Node => "node",
            EndpointKind::UserNetwork => "user_network",
            EndpointKind::External => "external",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub kind: EndpointKind,
    /// Index into the site's list of that kind.
    pub index: usize,
}

/// Index into [`Policy::endpoints`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u16);

/// Index into [`Policy::edges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(pub u32);

/// The service label of a scrape of a portwatch sensor.
pub const SENSOR_SERVICE: &str = "portwatch";

/// Where an expected edge comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Rule(RuleId),
    /// The site file's `allow[i]`.
    Allowance(usize),
    /// The site's `monitoring` list: a scraper reaching a node's sensor.
    Monitoring,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub src: EndpointId,
    pub dst: EndpointId,
    pub port: u16,
    pub service: Arc<str>,
    pub required: bool,
    pub window: Duration,
    pub origins: Vec<Origin>,
}

/// Index into the site's `accepted` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AcceptId(pub u16);

/// One side of a connection, as the site names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Endpoint(EndpointId),
    /// A loopback address: the host the sensor runs on.
    Localhost,
    /// Outside the inventory, the user networks and the externals.
    Unknown,
}

/// Most nodes a site may list (README "Limits"): a larger site is refused
/// with a clear error, and a reload to it keeps the old configuration.
pub const MAX_NODES: usize = 10_000;
/// Most endpoints (nodes, user networks and externals together): endpoint
/// ids are 16 bits.
pub const MAX_ENDPOINTS: usize = 20_000;
/// Most required edges a site may imply (counted before any is built).
pub const MAX_REQUIRED_EDGES: usize = 1_000_000;

/// The endpoints a (non-local) rule connects: the expected edges of a rule
/// without listing every pair.
#[derive(Debug)]
struct RuleEnds {
    /// Sorted, deduplicated.
    srcs: Vec<EndpointId>,
    /// Nodes then externals, in site order.
    dsts: Vec<EndpointId>,
    is_src: Vec<bool>,
    is_dst: Vec<bool>,
}

impl RuleEnds {
    fn connects(&self, src: EndpointId, dst: EndpointId) -> bool {
        src != dst && self.is_src[src.0 as usize] && self.is_dst[dst.0 as usize]
    }
}

/// Prefixes of externals and user networks, in the order they are tried,
/// as integers split by family: an address is masked and compared with
/// each prefix of its own family (one with no node's address is asked of
/// every prefix, so this is on the path of each new connection of other
/// systems' traffic). The same answer as [`IpNet::contains`] in order.
#[derive(Debug, Default)]
struct Nets {
    /// (network, netmask, endpoint).
    v4: Vec<(u32, u32, EndpointId)>,
    v6: Vec<(u128, u128, EndpointId)>,
}

impl Nets {
    fn new(nets: &[(IpNet, EndpointId)]) -> Nets {
        let mut out = Nets::default();
        for (n, id) in nets {
            match n {
                IpNet::V4(n) => out
                    .v4
                    .push((n.network().to_bits(), n.netmask().to_bits(), *id)),
                IpNet::V6(n) => out
                    .v6
                    .push((n.network().to_bits(), n.netmask().to_bits(), *id)),
            }
        }
        out
    }

    /// The endpoint of the first prefix that holds `ip`.
    #[inline]
    fn find(&self, ip: IpAddr) -> Option<EndpointId> {
        match ip {
            IpAddr::V4(a) => {
                let a = a.to_bits();
                self.v4.iter().find(|(n, m, _)| a & m == *n).map(|e| e.2)
            }
            IpAddr::V6(a) => {
                let a = a.to_bits();
                self.v6.iter().find(|(n, m, _)| a & m == *n).map(|e| e.2)
            }
        }
    }
}

/// The compiled policy. Expected edges are known two ways: `edges` holds
/// every edge something is attached to (a required rule, a site
/// allowance, an override), with an [`EdgeId`]; an optional edge only a
/// model rule implies is found by [`Policy::rule_for`] on demand, so a site
/// of a thousand nodes does not hold its million optional node pairs.
/// [`Policy::all_edges`] lists both, in the model's order.
#[derive(Debug)]
pub struct Policy {
    pub model: Model,
    pub site: Site,
    pub endpoints: Vec<Endpoint>,
    /// Required edges, site allowances and overridden edges.
    pub edges: Vec<Edge>,
    /// Per model rule; `None` for local-scope rules.
    rule_ends: Vec<Option<RuleEnds>>,
    node_addrs: FastMap<IpAddr, EndpointId>,
    /// Externals then declared user networks, most specific prefix first.
    nets: Nets,
    implicit_users: Option<EndpointId>,
    edge_index: FastMap<(EndpointId, EndpointId, u16), EdgeId>,
    /// Per model rule, its service label; shared with every classification
    /// (one is made per connection, so no string is allocated for it).
    rule_services: Vec<Arc<str>>,
    other_service: Arc<str>,
    /// The ports the model's rules name, one bit each: a scan's random
    /// ports are told apart without walking the rules.
    model_ports: Box<[u64; 1024]>,
    /// What the sensor itself adds to the traffic (set by the command).
    pub own: OwnTraffic,
    /// The site and model files it was compiled from, with their digests
    /// (set by the loader; empty for a policy compiled from text alone).
    pub sources: Vec<FileDigest>,
}

/// A file the policy was compiled from: what it is, where it was read
/// (a bundled file's name inside the binary) and its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileDigest {
    pub role: FileRole,
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    Site,
    Model,
}

impl FileRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Site => "site",
            FileRole::Model => "model",
        }
    }
}

/// The sensor's own part of the traffic it watches: set by the command,
/// not the site file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnTraffic {
    /// The sensor's listening sockets (`run --web.listen-address`, an
    /// unspecified address expanded to loopback and the `--sensor` nodes'
    /// addresses): connections to them are never findings.
    pub listeners: Vec<(IpAddr, u16)>,
    /// Judge loopback connections to ports the model does not know
    /// (`--strict-loopback`); by default they are not findings.
    pub strict_loopback: bool,
}

impl OwnTraffic {
    /// Whether `dst:port` is one of the sensor's own listeners.
    pub fn listens(&self, dst: IpAddr, port: u16) -> bool {
        self.listeners.contains(&(dst, port))
    }
}

impl Policy {
    /// Apply `model` to `site`. `site_file` names the file in diagnostics
    /// for overrides that match no edge.
    pub fn compile(model: Model, site: Site, site_file: &Path) -> Result<Policy, ConfigError> {
        let mut d = Diagnostics::new(site_file);
        let endpoints = site.nodes.len() + site.user_networks.len() + site.externals.len();
        let too_big = if site.nodes.len() > MAX_NODES {
            Some(format!(
                "{} nodes, more than the limit of {MAX_NODES}",
                site.nodes.len()
            ))
        } else if endpoints > MAX_ENDPOINTS {
            Some(format!(
                "{endpoints} nodes, user networks and externals, more than the limit of {MAX_ENDPOINTS}"
            ))
        } else {
            None
        };
        if let Some(what) = too_big {
            let msg = format!("{what} (README \"Limits and faults\"); split the site");
            return Err(site_too_big(site_file, msg));
        }
        let mut endpoints = Vec::new();
        let mut push = |name: &str, kind, index| {
            endpoints.push(Endpoint {
                name: name.to_string(),
                kind,
                index,
            });
            EndpointId((endpoints.len() - 1) as u16)
        };
        let node_ids: Vec<EndpointId> = (site.nodes.iter().enumerate())
            .map(|(i, n)| push(&n.name, EndpointKind::Node, i))
            .collect();
        let user_ids: Vec<EndpointId> = (site.user_networks.iter().enumerate())
            .map(|(i, u)| push(&u.name, EndpointKind::UserNetwork, i))
            .collect();
        let ext_ids: Vec<EndpointId> = (site.externals.iter().enumerate())
            .map(|(i, x)| push(&x.name, EndpointKind::External, i))
            .collect();

        let mut node_addrs = FastMap::default();
        for (n, id) in site.nodes.iter().zip(&node_ids) {
            for a in &n.addresses {
                node_addrs.insert(*a, *id);
            }
        }
        let mut nets = Vec::new();
        for (x, id) in site.externals.iter().zip(&ext_ids) {
            nets.extend(x.nets.iter().map(|n| (*n, *id)));
        }
        let ext_count = nets.len();
        if site.user_networks_declared {
            for (u, id) in site.user_networks.iter().zip(&user_ids) {
                nets.extend(u.cidrs.iter().map(|n| (*n, *id)));
            }
        }
        // Externals win over user networks; within each, the longest prefix.
        nets[..ext_count].sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        nets[ext_count..].sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let implicit_users = (!site.user_networks_declared).then(|| user_ids[0]);

        let mut p = Policy {
            sources: Vec::new(),
            model,
            site,
            endpoints,
            edges: Vec::new(),
            rule_ends: Vec::new(),
            node_addrs,
            nets: Nets::new(&nets),
            implicit_users,
            edge_index: FastMap::default(),
            rule_services: Vec::new(),
            other_service: Arc::from("other"),
            model_ports: Box::new([0; 1024]),
            own: OwnTraffic::default(),
        };
        for r in &p.model.rules {
            p.model_ports[usize::from(r.port / 64)] |= 1 << (r.port % 64);
        }
        p.rule_services = p
            .model
            .rules
            .iter()
            .map(|r| Arc::from(r.service()))
            .collect();
        p.rule_ends = p.rule_ends(&node_ids, &user_ids, &ext_ids);
        let required: usize = (p.model.rules.iter().zip(&p.rule_ends))
            .filter(|(r, _)| r.required)
            .filter_map(|(_, e)| e.as_ref())
            .map(|e| e.srcs.len().saturating_mul(e.dsts.len()))
            .fold(0, usize::saturating_add);
        if required > MAX_REQUIRED_EDGES {
            return Err(site_too_big(
                site_file,
                format!(
                    "the site implies up to {required} required edges, more than the limit of \
                     {MAX_REQUIRED_EDGES} (README \"Limits and faults\"); split the site"
                ),
            ));
        }
        p.derive_required_edges();
        p.apply_allowances(&mut d);
        p.apply_monitoring(&node_ids);
        p.apply_overrides(&mut d);
        d.finish(p)
    }

    /// Which endpoints each rule connects.
    fn rule_ends(
        &self,
        nodes: &[EndpointId],
        users: &[EndpointId],
        exts: &[EndpointId],
    ) -> Vec<Option<RuleEnds>> {
        let site = &self.site;
        let matches_dst = |sel: &Selector, id: EndpointId| -> bool {
            let e = &self.endpoints[id.0 as usize];
            match e.kind {
                EndpointKind::Node => {
                    let n = &site.nodes[e.index];
                    sel.matches(&n.roles, &n.services)
                }
                EndpointKind::External => {
                    let x = &site.externals[e.index];
                    sel.role.is_none() && sel.matches(&[], &x.services)
                }
                EndpointKind::UserNetwork => false,
            }
        };
        let set = |ids: &[EndpointId]| {
            let mut v = vec![false; self.endpoints.len()];
            for id in ids {
                v[id.0 as usize] = true;
            }
            v
        };
        let scoped = |rule: &crate::model::PortRule, id: EndpointId| {
            rule.scope != Scope::External
                || self.endpoints[id.0 as usize].kind == EndpointKind::External
        };
        self.model
            .rules
            .iter()
            .map(|rule| {
                if rule.scope == Scope::Local {
                    return None;
                }
                let dsts: Vec<EndpointId> = nodes
                    .iter()
                    .chain(exts)
                    .copied()
                    .filter(|id| matches_dst(&rule.to, *id) && scoped(rule, *id))
                    .collect();
                let mut srcs: Vec<EndpointId> = Vec::new();
                for c in &rule.from {
                    match c {
                        Client::AnyNode => srcs.extend(nodes),
                        Client::Users => srcs.extend(users),
                        Client::Nodes(sel) => srcs.extend(nodes.iter().filter(|id| {
                            let n = &site.nodes[self.endpoints[id.0 as usize].index];
                            sel.matches(&n.roles, &n.services)
                        })),
                    }
                }
                srcs.sort();
                srcs.dedup();
                Some(RuleEnds {
                    is_src: set(&srcs),
                    is_dst: set(&dsts),
                    srcs,
                    dsts,
                })
            })
            .collect()
    }

    /// Build every edge a required rule implies.
    fn derive_required_edges(&mut self) {
        let mut pairs = Vec::new();
        for (rule, ends) in self.model.rules.iter().zip(&self.rule_ends) {
            let Some(ends) = ends.as_ref().filter(|_| rule.required) else {
                continue;
            };
            for &dst in &ends.dsts {
                for &src in ends.srcs.iter().filter(|s| **s != dst) {
                    pairs.push((src, dst, rule.port));
                }
            }
        }
        for (src, dst, port) in pairs {
            self.materialise(src, dst, port);
        }
    }

    /// The rules that make `src -> dst:port` expected, in model order.
    fn rules_for(
        &self,
        src: EndpointId,
        dst: EndpointId,
        port: u16,
    ) -> impl Iterator<Item = RuleId> + '_ {
        (self.model.rules.iter().zip(&self.rule_ends).enumerate())
            .filter(move |(_, (r, e))| {
                r.port == port && e.as_ref().is_some_and(|e| e.connects(src, dst))
            })
            .map(|(i, _)| RuleId(i))
    }

    /// Give `src -> dst:port` an [`EdgeId`], with every rule behind it (as
    /// a required rule, an allowance or an override needs).
    fn materialise(&mut self, src: EndpointId, dst: EndpointId, port: u16) {
        if self.edge_index.contains_key(&(src, dst, port)) {
            return;
        }
        let rules: Vec<RuleId> = self.rules_for(src, dst, port).collect();
        for rule in rules {
            let r = self.model.rule(rule);
            let (service, required, window) =
                (self.rule_service(rule).clone(), r.required, r.window);
            self.add_edge(
                src,
                dst,
                port,
                service,
                required,
                window,
                Origin::Rule(rule),
            );
        }
    }

    /// The first model rule that makes `src -> dst:port` expected: how an
    /// optional edge without an [`EdgeId`] is recognised.
    pub fn rule_for(&self, src: Peer, dst: Peer, port: u16) -> Option<RuleId> {
        match (src, dst) {
            (Peer::Endpoint(s), Peer::Endpoint(d)) => self.rules_for(s, d, port).next(),
            _ => None,
        }
    }

    /// Every expected edge, with and without an [`EdgeId`], in the model's
    /// order (rule by rule, then site allowances). Lists every pair: for
    /// `expect` and the fixture generator, not the capture path.
    pub fn all_edges(&self) -> Vec<Edge> {
        let mut seen: std::collections::HashSet<(EndpointId, EndpointId, u16)> =
            std::collections::HashSet::new();
        let mut out = Vec::new();
        for (rule, ends) in self.model.rules.iter().zip(&self.rule_ends) {
            let Some(ends) = ends else { continue };
            for &dst in &ends.dsts {
                for &src in ends.srcs.iter().filter(|s| **s != dst) {
                    if !seen.insert((src, dst, rule.port)) {
                        continue;
                    }
                    out.push(match self.edge_index.get(&(src, dst, rule.port)) {
                        Some(id) => self.edge(*id).clone(),
                        None => self.optional_edge(src, dst, rule.port),
                    });
                }
            }
        }
        for e in &self.edges {
            if !seen.contains(&(e.src, e.dst, e.port)) {
                out.push(e.clone());
            }
        }
        out
    }

    /// An edge only optional rules imply, as it would be stored.
    fn optional_edge(&self, src: EndpointId, dst: EndpointId, port: u16) -> Edge {
        let origins: Vec<Origin> = self.rules_for(src, dst, port).map(Origin::Rule).collect();
        let first = match origins.first() {
            Some(Origin::Rule(r)) => Some(*r),
            _ => None,
        };
        Edge {
            src,
            dst,
            port,
            service: first.map_or_else(|| Arc::from(""), |r| self.rule_service(r).clone()),
            required: false,
            window: first.map_or(self.model.default_window, |r| self.model.rule(r).window),
            origins,
        }
    }

    /// How many expected edges there are, counted without listing them.
    pub fn edge_count(&self) -> usize {
        let mut ports: Vec<u16> = (self.model.rules.iter().zip(&self.rule_ends))
            .filter(|(_, e)| e.is_some())
            .map(|(r, _)| r.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        // Per port and destination, the union of the rules' sources.
        let mut mark = vec![u32::MAX; self.endpoints.len()];
        let mut stamp = 0u32;
        let mut n = 0;
        for port in ports {
            let ends: Vec<&RuleEnds> = (self.model.rules.iter().zip(&self.rule_ends))
                .filter(|(r, _)| r.port == port)
                .filter_map(|(_, e)| e.as_ref())
                .collect();
            for dst in 0..self.endpoints.len() {
                stamp += 1;
                for e in ends.iter().filter(|e| e.is_dst[dst]) {
                    for s in &e.srcs {
                        let s = s.0 as usize;
                        if s != dst && mark[s] != stamp {
                            mark[s] = stamp;
                            n += 1;
                        }
                    }
                }
            }
        }
        let site_only = (self.edges.iter())
            .filter(|e| self.rules_for(e.src, e.dst, e.port).next().is_none())
            .count();
        n + site_only
    }

    #[allow(clippy::too_many_arguments)]
    fn add_edge(
        &mut self,
        src: EndpointId,
        dst: EndpointId,
        port: u16,
        service: Arc<str>,
        required: bool,
        window: Duration,
        origin: Origin,
    ) {
        match self.edge_index.get(&(src, dst, port)) {
            Some(id) => {
                let e = &mut self.edges[id.0 as usize];
                // A required rule's window wins over an optional rule's default.
                match (e.required, required) {
                    (false, true) => e.window = window,
                    (true, true) => e.window = e.window.min(window),
                    _ => {}
                }
                e.required |= required;
                e.origins.push(origin);
            }
            None => {
                self.edge_index
                    .insert((src, dst, port), EdgeId(self.edges.len() as u32));
                self.edges.push(Edge {
                    src,
                    dst,
                    port,
                    service,
                    required,
                    window,
                    origins: vec![origin],
                });
            }
        }
    }

    fn apply_allowances(&mut self, d: &mut Diagnostics) {
        let specs = self.site.allow.clone();
        for spec in specs {
            let (Some(src), Some(dst)) = (self.endpoint_id(&spec.from), self.endpoint_id(&spec.to))
            else {
                continue; // already reported by the site loader
            };
            if src == dst {
                d.at_pos(
                    spec.pos,
                    format!("allow[{}]", spec.index),
                    "an edge needs two different endpoints",
                );
                continue;
            }
            self.materialise(src, dst, spec.port);
            let service = spec.service.as_deref().map_or_else(
                || self.service_for(Peer::Endpoint(dst), spec.port).clone(),
                Arc::from,
            );
            let window = spec.window.unwrap_or(self.model.default_window);
            let required = spec.required.unwrap_or(false);
            self.add_edge(
                src,
                dst,
                spec.port,
                service,
                required,
                window,
                Origin::Allowance(spec.index),
            );
        }
    }

    /// Every scraper of the `monitoring` list may reach every node's sensor
    /// port (which nodes run a sensor is not the site's to say).
    fn apply_monitoring(&mut self, nodes: &[EndpointId]) {
        let Some(m) = self.site.monitoring.clone() else {
            return;
        };
        for name in &m.from {
            let Some(src) = self.endpoint_id(name) else {
                continue; // reported by the site loader
            };
            for &dst in nodes.iter().filter(|&&n| n != src) {
                let window = self.model.default_window;
                self.add_edge(
                    src,
                    dst,
                    m.port,
                    SENSOR_SERVICE.into(),
                    false,
                    window,
                    Origin::Monitoring,
                );
            }
        }
    }

    fn apply_overrides(&mut self, d: &mut Diagnostics) {
        let specs: Vec<EdgeSpec> = self.site.overrides.clone();
        for spec in specs {
            let (Some(src), Some(dst)) = (self.endpoint_id(&spec.from), self.endpoint_id(&spec.to))
            else {
                continue;
            };
            if src != dst {
                self.materialise(src, dst, spec.port);
            }
            match self.edge_index.get(&(src, dst, spec.port)).copied() {
                Some(id) => {
                    let e = &mut self.edges[id.0 as usize];
                    if let Some(r) = spec.required {
                        e.required = r;
                    }
                    if let Some(w) = spec.window {
                        e.window = w;
                    }
                }
                None => d.at_pos(
                    spec.pos,
                    format!("overrides[{}]", spec.index),
                    format!(
                        "no edge {} -> {} port {} can occur in this site: the model has no rule for it \
                         (add it under `allow` to expect it)",
                        spec.from, spec.to, spec.port
                    ),
                ),
            }
        }
    }

    /// The first acceptance of the flow from `src` to `dst` on `port`
    /// (each end as the site names it, at its address) that holds at `ts`.
    pub fn accepted(
        &self,
        (src, src_addr): (Peer, IpAddr),
        (dst, dst_addr): (Peer, IpAddr),
        port: u16,
        ts: Timestamp,
    ) -> Option<AcceptId> {
        let ends = (
            (self.peer_name(src), src_addr),
            (self.peer_name(dst), dst_addr),
        );
        (self.site.accepted.iter())
            .position(|a| a.holds_at(ts) && a.covers(ends.0, ends.1, port))
            .map(|i| AcceptId(i as u16))
    }

    pub fn acceptance(&self, id: AcceptId) -> &Acceptance {
        &self.site.accepted[usize::from(id.0)]
    }

    pub fn endpoint_id(&self, name: &str) -> Option<EndpointId> {
        self.endpoints
            .iter()
            .position(|e| e.name == name)
            .map(|i| EndpointId(i as u16))
    }

    /// The endpoint of the node named by `--node`.
    pub fn node_id(&self, name: &str) -> Result<EndpointId, NoSuchNode> {
        self.endpoint_id(name)
            .filter(|id| self.endpoint(*id).kind == EndpointKind::Node)
            .ok_or_else(|| NoSuchNode {
                node: name.to_string(),
                site: self.site.name.clone(),
                nodes: (self.site.nodes.iter().map(|n| n.name.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn endpoint(&self, id: EndpointId) -> &Endpoint {
        &self.endpoints[id.0 as usize]
    }

    /// The label of a peer: an endpoint name, `localhost` or `unknown`.
    pub fn peer_name(&self, p: Peer) -> &str {
        match p {
            Peer::Endpoint(id) => &self.endpoint(id).name,
            Peer::Localhost => "localhost",
            Peer::Unknown => "unknown",
        }
    }

    /// The ports of required edges, sorted: their segments are evidence.
    pub fn required_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = (self.edges.iter())
            .filter(|e| e.required)
            .map(|e| e.port)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn edge(&self, id: EdgeId) -> &Edge {
        &self.edges[id.0 as usize]
    }

    pub fn find_edge(&self, src: Peer, dst: Peer, port: u16) -> Option<EdgeId> {
        match (src, dst) {
            (Peer::Endpoint(s), Peer::Endpoint(d)) => self.edge_index.get(&(s, d, port)).copied(),
            _ => None,
        }
    }

    /// The peer labelled `name` ([`Policy::peer_name`] backwards).
    pub fn peer_named(&self, name: &str) -> Option<Peer> {
        match name {
            "localhost" => Some(Peer::Localhost),
            "unknown" => Some(Peer::Unknown),
            _ => self.endpoint_id(name).map(Peer::Endpoint),
        }
    }

    /// Which site endpoint an address belongs to.
    pub fn peer_of(&self, ip: IpAddr) -> Peer {
        if let Some(id) = self.node_addrs.get(&ip) {
            return Peer::Endpoint(*id);
        }
        if ip.is_loopback() || ip.to_canonical().is_loopback() {
            return Peer::Localhost;
        }
        if let Some(id) = self.nets.find(ip) {
            return Peer::Endpoint(id);
        }
        match self.implicit_users {
            Some(id) => Peer::Endpoint(id),
            None => Peer::Unknown,
        }
    }

    pub fn is_node(&self, p: Peer) -> bool {
        matches!(p, Peer::Endpoint(id) if self.endpoint(id).kind == EndpointKind::Node)
    }

    /// The local-scope rule that keeps `port` on the host, when `dst` is a
    /// node running that rule's service and no rule of another scope makes
    /// the port reachable on `dst` (4747 on an engine is reachable from
    /// proxies, so a user reaching it is unexpected, not local-only).
    pub fn local_rule(&self, dst: Peer, port: u16) -> Option<RuleId> {
        let Peer::Endpoint(id) = dst else {
            return None;
        };
        let e = self.endpoint(id);
        if e.kind != EndpointKind::Node {
            return None;
        }
        let n = &self.site.nodes[e.index];
        let listens =
            |r: &&crate::model::PortRule| r.port == port && r.to.matches(&n.roles, &n.services);
        let rules = &self.model.rules;
        if rules
            .iter()
            .filter(listens)
            .any(|r| r.scope != Scope::Local)
        {
            return None;
        }
        rules
            .iter()
            .position(|r| r.scope == Scope::Local && listens(&r))
            .map(RuleId)
    }

    /// The service label for a port on a peer: the model's listener on that
    /// port (preferring one that runs there), or `other`.
    pub fn service_for(&self, dst: Peer, port: u16) -> &Arc<str> {
        if !self.knows_port(port) {
            return &self.other_service;
        }
        let services: &[String] = match dst {
            Peer::Endpoint(id) => {
                let e = self.endpoint(id);
                match e.kind {
                    EndpointKind::Node => &self.site.nodes[e.index].services,
                    EndpointKind::External => &self.site.externals[e.index].services,
                    EndpointKind::UserNetwork => &[],
                }
            }
            _ => &[],
        };
        // No services and none hosted (an address outside the site, a
        // user network): no rule can name it, so the rules are not scanned.
        if services.is_empty() && !self.hosts_services(dst) {
            return &self.other_service;
        }
        let on_port =
            || (self.model.rules.iter().zip(&self.rule_services)).filter(|(r, _)| r.port == port);
        on_port()
            .find(|(r, _)| services.contains(&r.to.service))
            .or_else(|| on_port().find(|_| self.hosts_services(dst)))
            .map_or(&self.other_service, |(_, s)| s)
    }

    /// Some rule of the model names `port`.
    #[inline]
    pub fn knows_port(&self, port: u16) -> bool {
        self.model_ports[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    /// The service label of a model rule.
    /// Whether `s` is a service label a classification under this policy
    /// can carry: a rule's, an edge's, or `other`.
    pub fn knows_service(&self, s: &str) -> bool {
        *self.other_service == *s
            || self.rule_services.iter().any(|r| **r == *s)
            || self.edges.iter().any(|e| *e.service == *s)
    }

    pub fn rule_service(&self, r: RuleId) -> &Arc<str> {
        &self.rule_services[r.0]
    }

    /// Nodes and the sensor's own host run the model's services; a port the
    /// model knows is labelled with its service there even if this node does
    /// not run it. User networks and unknown hosts run none.
    fn hosts_services(&self, p: Peer) -> bool {
        p == Peer::Localhost || self.is_node(p)
    }

    /// The port label: the number when the model or site names the port,
    /// else `other` (keeps metric label sets bounded under a port scan).
    pub fn port_label(&self, port: u16) -> Option<u16> {
        (self.knows_port(port)
            || self.site.allow.iter().any(|a| a.port == port)
            || self
                .site
                .monitoring
                .as_ref()
                .is_some_and(|m| m.port == port))
        .then_some(port)
    }
}

/// A site past a size limit: one problem, about the whole node list.
fn site_too_big(site_file: &Path, message: String) -> ConfigError {
    ConfigError {
        diagnostics: vec![crate::diag::Diagnostic {
            file: site_file.to_path_buf(),
            line: 1,
            column: 1,
            field: "nodes".into(),
            message,
        }],
    }
}

impl Diagnostics {
    fn at_pos(
        &mut self,
        pos: crate::site::Pos,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push_raw(pos.line, pos.column, field.into(), message.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_policy, BUNDLED_SITES};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    proptest! {
        /// The integer prefixes find what `IpNet::contains` finds, tried in
        /// the same order, for addresses inside, next to and outside them,
        /// of both families (an IPv4-mapped IPv6 address is IPv6).
        #[test]
        fn nets_find_what_ipnet_contains_finds(
            v4 in prop::collection::vec((any::<u32>(), 0u8..=32), 0..6),
            v6 in prop::collection::vec((any::<u128>(), 0u8..=128), 0..6),
            order in any::<u64>(),
            host in any::<u128>(),
        ) {
            let mut nets: Vec<(IpNet, EndpointId)> = Vec::new();
            for (i, (a, len)) in v4.iter().enumerate() {
                let n = ipnet::Ipv4Net::new(Ipv4Addr::from_bits(*a), *len).unwrap();
                nets.push((IpNet::V4(n), EndpointId(i as u16)));
            }
            for (i, (a, len)) in v6.iter().enumerate() {
                let n = ipnet::Ipv6Net::new(Ipv6Addr::from_bits(*a), *len).unwrap();
                nets.push((IpNet::V6(n), EndpointId(100 + i as u16)));
            }
            // Families interleaved in an arbitrary order.
            let k = nets.len().max(1);
            nets.rotate_left(order as usize % k);
            let compiled = Nets::new(&nets);
            let mut addrs: Vec<IpAddr> = vec![
                IpAddr::V4(Ipv4Addr::from_bits(host as u32)),
                IpAddr::V6(Ipv6Addr::from_bits(host)),
                IpAddr::V6(Ipv4Addr::from_bits(host as u32).to_ipv6_mapped()),
            ];
            for (n, _) in &nets {
                match n {
                    IpNet::V4(n) => {
                        let net = n.network().to_bits();
                        let inside = net | (host as u32 & !n.netmask().to_bits());
                        addrs.push(IpAddr::V4(Ipv4Addr::from_bits(inside)));
                        addrs.push(IpAddr::V4(Ipv4Addr::from_bits(n.broadcast().to_bits().wrapping_add(1))));
                        addrs.push(IpAddr::V4(Ipv4Addr::from_bits(net.wrapping_sub(1))));
                    }
                    IpNet::V6(n) => {
                        let net = n.network().to_bits();
                        let inside = net | (host & !n.netmask().to_bits());
                        addrs.push(IpAddr::V6(Ipv6Addr::from_bits(inside)));
                        addrs.push(IpAddr::V6(Ipv6Addr::from_bits(n.broadcast().to_bits().wrapping_add(1))));
                        addrs.push(IpAddr::V6(Ipv6Addr::from_bits(net.wrapping_sub(1))));
                    }
                }
            }
            for ip in addrs {
                let want = nets.iter().find(|(n, _)| n.contains(&ip)).map(|(_, id)| *id);
                prop_assert_eq!(compiled.find(ip), want, "{}", ip);
            }
        }
    }

    /// The edges without an `EdgeId` are exactly the optional, rule-only
    /// ones; counting them agrees with listing them, and each is found by
    /// `rule_for` with the rule its listing cites first.
    #[test]
    fn optional_edges_are_found_without_being_stored() {
        for (name, _, _) in BUNDLED_SITES {
            let p = load_policy(Path::new(name), None).unwrap().policy;
            let all = p.all_edges();
            assert_eq!(p.edge_count(), all.len(), "{name}");
            let mut stored = 0;
            for e in &all {
                let (s, d) = (Peer::Endpoint(e.src), Peer::Endpoint(e.dst));
                match p.find_edge(s, d, e.port) {
                    Some(id) => {
                        stored += 1;
                        assert_eq!(p.edge(id), e, "{name}");
                    }
                    None => {
                        assert!(!e.required, "{name}: a required edge must be stored");
                        let Some(Origin::Rule(first)) = e.origins.first() else {
                            panic!("{name}: an unstored edge comes from a rule");
                        };
                        assert_eq!(p.rule_for(s, d, e.port), Some(*first), "{name}");
                    }
                }
            }
            assert_eq!(stored, p.edges.len(), "{name}: every stored edge is listed");
            assert!(
                p.edges.len() < all.len(),
                "{name}: optional edges are not stored"
            );
        }
    }
}
