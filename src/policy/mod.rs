//! A model applied to a site: every endpoint with its label, every expected
//! edge (with required flag and window), and the address lookups the
//! classifier needs. Built once per (re)load; read-only afterwards.

mod expect;
mod visibility;

pub use expect::{Expectation, ExpectedEdge, NodePorts};
pub use visibility::{UnknownSensor, Visibility};

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::diag::{ConfigError, Diagnostics};
use crate::map::FastMap;
use crate::model::{Client, Model, RuleId, Scope, Selector};
use crate::site::{EdgeSpec, Site};

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
    pub service: String,
    pub required: bool,
    pub window: Duration,
    pub origins: Vec<Origin>,
}

/// One side of a connection, as the site names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Endpoint(EndpointId),
    /// A loopback address: the host the sensor runs on.
    Localhost,
    /// Outside the inventory, the user networks and the externals.
    Unknown,
}

#[derive(Debug)]
pub struct Policy {
    pub model: Model,
    pub site: Site,
    pub endpoints: Vec<Endpoint>,
    pub edges: Vec<Edge>,
    node_addrs: FastMap<IpAddr, EndpointId>,
    /// Externals then declared user networks, most specific prefix first.
    nets: Vec<(IpNet, EndpointId)>,
    implicit_users: Option<EndpointId>,
    edge_index: FastMap<(EndpointId, EndpointId, u16), EdgeId>,
}

impl Policy {
    /// Apply `model` to `site`. `site_file` names the file in diagnostics
    /// for overrides that match no edge.
    pub fn compile(model: Model, site: Site, site_file: &Path) -> Result<Policy, ConfigError> {
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
            model,
            site,
            endpoints,
            edges: Vec::new(),
            node_addrs,
            nets,
            implicit_users,
            edge_index: FastMap::default(),
        };
        p.derive_edges(&node_ids, &user_ids, &ext_ids);
        let mut d = Diagnostics::new(site_file);
        p.apply_allowances(&mut d);
        p.apply_monitoring(&node_ids);
        p.apply_overrides(&mut d);
        d.finish(p)
    }

    fn derive_edges(&mut self, nodes: &[EndpointId], users: &[EndpointId], exts: &[EndpointId]) {
        let model = &self.model;
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
        let mut found = Vec::new();
        for (ri, rule) in model.rules.iter().enumerate() {
            if rule.scope == Scope::Local {
                continue;
            }
            let dsts: Vec<EndpointId> = nodes
                .iter()
                .chain(exts)
                .copied()
                .filter(|id| matches_dst(&rule.to, *id))
                .filter(|id| rule.scope != Scope::External || exts.contains(id))
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
            for &dst in &dsts {
                for &src in &srcs {
                    if src != dst {
                        found.push((src, dst, rule.port, RuleId(ri)));
                    }
                }
            }
        }
        for (src, dst, port, rule) in found {
            let r = self.model.rule(rule);
            let (service, required, window) = (r.service().to_string(), r.required, r.window);
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

    #[allow(clippy::too_many_arguments)]
    fn add_edge(
        &mut self,
        src: EndpointId,
        dst: EndpointId,
        port: u16,
        service: String,
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
            let service = spec
                .service
                .clone()
                .unwrap_or_else(|| self.service_for(Peer::Endpoint(dst), spec.port).to_string());
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

    pub fn endpoint_id(&self, name: &str) -> Option<EndpointId> {
        self.endpoints
            .iter()
            .position(|e| e.name == name)
            .map(|i| EndpointId(i as u16))
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

    pub fn edge(&self, id: EdgeId) -> &Edge {
        &self.edges[id.0 as usize]
    }

    pub fn find_edge(&self, src: Peer, dst: Peer, port: u16) -> Option<EdgeId> {
        match (src, dst) {
            (Peer::Endpoint(s), Peer::Endpoint(d)) => self.edge_index.get(&(s, d, port)).copied(),
            _ => None,
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
        if let Some((_, id)) = self.nets.iter().find(|(n, _)| n.contains(&ip)) {
            return Peer::Endpoint(*id);
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
    pub fn service_for(&self, dst: Peer, port: u16) -> &str {
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
        let on_port = || self.model.rules.iter().filter(|r| r.port == port);
        on_port()
            .find(|r| services.contains(&r.to.service))
            .or_else(|| on_port().find(|_| self.hosts_services(dst)))
            .map(|r| r.service())
            .unwrap_or("other")
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
        (self.model.knows_port(port)
            || self.site.allow.iter().any(|a| a.port == port)
            || self
                .site
                .monitoring
                .as_ref()
                .is_some_and(|m| m.port == port))
        .then_some(port)
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
