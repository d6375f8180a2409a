//! From audit to action: the host firewall policy of one node that the model
//! and the site imply. Pure: a [`Plan`] is derived from a compiled
//! [`Policy`]; `nftables` and `powershell` only render it.
//!
//! Inbound, the plan allows every expected edge into the node (from the
//! addresses of the endpoints that may open it), keeps the model's
//! local-scope ports closed to every other host, and drops everything else
//! on the ports the model assigns to the node (its services' listeners) or a
//! site edge opens to it. Other ports are left alone: a port the model knows
//! on other nodes (80, 443, 445 on an engine) is not the model's to decide
//! on this one, unless [`Blocks::AllKnown`] asks for it. Outbound (optional)
//! is the mirror image for edges the node opens, on the ports its services
//! connect to.

pub mod nftables;
pub mod powershell;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Client, Scope};
pub use crate::policy::NoSuchNode;
use crate::policy::{EndpointId, EndpointKind, Origin, Policy};
use crate::quote::shell_word;

/// Which traffic of the node the plan covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    fn covers(self, way: Way) -> bool {
        matches!(
            (self, way),
            (Direction::Both, _) | (Direction::In, Way::Inbound) | (Direction::Out, Way::Outbound)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }
}

/// Which ports the drop rules cover besides the local-only ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocks {
    /// The ports the model assigns to the node (inbound: the listeners of
    /// its services; outbound: the ports its services connect to) and
    /// those of the site's edges into (out of) it.
    #[default]
    Assigned,
    /// Also every other port the model knows (`--block-all-model-ports`).
    AllKnown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Way {
    Inbound,
    Outbound,
}

/// The other end of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// Any address (the implicit `users` network, or a drop for everyone).
    Any,
    /// These networks (a node's addresses are host networks).
    Nets(Vec<IpNet>),
    /// Any address except these: the implicit `users` network is every
    /// host that is not a node or an external endpoint.
    AllBut(Vec<IpNet>),
}

/// Why a port is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    /// A local-scope port: only the host itself may open it.
    LocalOnly,
    /// A port the model knows, from any host no edge allows.
    NotExpected,
}

impl DropKind {
    /// Log prefix tag; the same words as the report's finding kinds.
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::LocalOnly => "local_only",
            DropKind::NotExpected => "unexpected",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Drop(DropKind),
}

/// One rule: for an allow, one expected edge; for a drop, a set of ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub way: Way,
    pub action: Action,
    pub ports: Vec<u16>,
    pub remote: Remote,
    /// One line saying what the rule does, e.g. `allow proxy -> central 4242/tcp (qrs)`.
    pub summary: String,
    /// What the rule rests on: model rules with their vendor page section,
    /// or site allowances.
    pub cites: Vec<Cite>,
}

/// What a citation refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiteOrigin {
    /// A rule of the model: its text is the vendor page's section and table.
    Model,
    /// The site file: an allowance's reason, the monitoring list.
    Site,
    /// An option of the command line (`--block-all-model-ports`).
    Option,
}

/// A reference to the model or the site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cite {
    pub origin: CiteOrigin,
    /// `qlik-sense-enterprise ports[12]` or `site allow[0]`.
    pub rule: String,
    /// The vendor page section and table (the rule's `cite`), or the
    /// allowance's reason.
    pub text: String,
}

impl Cite {
    /// The vendor page section: the cite up to its first `:`.
    pub fn section(&self) -> &str {
        self.text.split(':').next().unwrap_or("").trim()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub site: String,
    pub model: String,
    /// The vendor page the model comes from, by title (the model's `source`).
    pub page: String,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    pub direction: Direction,
    pub blocks: Blocks,
    pub rules: Vec<Rule>,
}

impl Plan {
    pub fn derive(
        p: &Policy,
        node: &str,
        direction: Direction,
        blocks: Blocks,
    ) -> Result<Plan, NoSuchNode> {
        let id = p.node_id(node)?;
        let n = &p.site.nodes[p.endpoint(id).index];
        let mut rules = Vec::new();
        for way in [Way::Inbound, Way::Outbound] {
            if direction.covers(way) {
                rules.extend(rules_for(p, id, way, blocks));
            }
        }
        Ok(Plan {
            site: p.site.name.clone(),
            model: p.model.id.clone(),
            page: p.model.source.clone(),
            node: n.name.clone(),
            addresses: n.addresses.clone(),
            direction,
            blocks,
            rules,
        })
    }

    /// The node's addresses, for the files' headers.
    pub fn addresses(&self) -> String {
        (self.addresses.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first line of the files' headers.
    pub fn title(&self) -> String {
        format!(
            "portwatch host firewall: node {} ({}) of site {} (model {}), direction {}.",
            self.node,
            self.addresses(),
            self.site,
            self.model,
            self.direction.as_str()
        )
    }

    /// The command that produces this plan, for the files' headers: a
    /// shell command line, names quoted as shell words.
    pub fn command(&self, format: &str) -> String {
        format!(
            "portwatch firewall --site {} --node {} --format {format} --direction {}{}",
            shell_word(&self.site),
            shell_word(&self.node),
            self.direction.as_str(),
            match self.blocks {
                Blocks::Assigned => "",
                Blocks::AllKnown => " --block-all-model-ports",
            }
        )
    }
}

/// Every port the model names, or an edge of the site (allowances, the
/// monitoring list's sensor port).
fn known_ports(p: &Policy) -> BTreeSet<u16> {
    (p.model.rules.iter().map(|r| r.port))
        // Stored edges: allowances and the monitoring list's sensor port.
        .chain(p.edges.iter().map(|e| e.port))
        .collect()
}

/// The ports the model assigns to `node` one way, each with the model
/// rules that assign it: inbound the listeners of its services, outbound
/// the ports its services connect to.
pub fn assigned_ports(p: &Policy, node: EndpointId, way: Way) -> BTreeMap<u16, Vec<Cite>> {
    let n = &p.site.nodes[p.endpoint(node).index];
    let mut out: BTreeMap<u16, Vec<Cite>> = BTreeMap::new();
    for (i, r) in p.model.rules.iter().enumerate() {
        let assigned = match way {
            Way::Inbound => r.to.matches(&n.roles, &n.services),
            Way::Outbound => r.from.iter().any(|c| match c {
                Client::AnyNode => true,
                Client::Users => false,
                Client::Nodes(s) => s.matches(&n.roles, &n.services),
            }),
        };
        if assigned {
            out.entry(r.port).or_default().push(model_cite(p, i));
        }
    }
    out
}

fn rules_for(p: &Policy, node: EndpointId, way: Way, blocks: Blocks) -> Vec<Rule> {
    let prep = match way {
        Way::Inbound => "to",
        Way::Outbound => "from",
    };
    // Every expected edge, optional ones too (the policy stores only those
    // something is attached to).
    let all = p.all_edges();
    let mut edges: Vec<_> = (all.iter())
        .filter(|e| match way {
            Way::Inbound => e.dst == node,
            Way::Outbound => e.src == node,
        })
        .collect();
    edges.sort_by(|a, b| {
        let name = |id| &p.endpoint(id).name;
        (a.port, name(a.src), name(a.dst)).cmp(&(b.port, name(b.src), name(b.dst)))
    });
    let mut out: Vec<Rule> = edges
        .iter()
        .map(|e| {
            let other = if way == Way::Inbound { e.src } else { e.dst };
            Rule {
                way,
                action: Action::Allow,
                ports: vec![e.port],
                remote: remote_of(p, other),
                summary: format!(
                    "allow {} -> {} {}/tcp ({})",
                    p.endpoint(e.src).name,
                    p.endpoint(e.dst).name,
                    e.port,
                    e.service
                ),
                cites: e.origins.iter().map(|o| cite(p, o)).collect(),
            }
        })
        .collect();
    let allowed: BTreeSet<u16> = edges.iter().map(|e| e.port).collect();
    let name = &p.endpoint(node).name;

    // The ports this plan may drop on, with what assigns each: the model's
    // rules for the node, the site's edges into (out of) it.
    let mut assigned = assigned_ports(p, node, way);
    for e in &edges {
        let cites = assigned.entry(e.port).or_default();
        for o in &e.origins {
            if !matches!(o, Origin::Rule(_)) {
                cites.push(cite(p, o));
            }
        }
    }

    // Local-scope ports of the node's services that no edge opens to
    // another host. Outbound, the node's own loopback covers them.
    let mut local: BTreeMap<u16, Vec<Cite>> = BTreeMap::new();
    if way == Way::Inbound {
        let n = &p.site.nodes[p.endpoint(node).index];
        for (i, r) in p.model.rules.iter().enumerate() {
            if r.scope == Scope::Local
                && r.to.matches(&n.roles, &n.services)
                && !allowed.contains(&r.port)
            {
                local.entry(r.port).or_default().push(model_cite(p, i));
            }
        }
    }
    if !local.is_empty() {
        out.push(Rule {
            way,
            action: Action::Drop(DropKind::LocalOnly),
            ports: local.keys().copied().collect(),
            remote: Remote::Any,
            summary: format!("drop other hosts on the local-only ports of {name}"),
            cites: distinct(local.values().flatten()),
        });
    }
    let candidates: BTreeSet<u16> = match blocks {
        Blocks::Assigned => assigned.keys().copied().collect(),
        Blocks::AllKnown => known_ports(p),
    };
    let rest: Vec<u16> = (candidates.into_iter())
        .filter(|port| !local.contains_key(port))
        .collect();
    if !rest.is_empty() {
        let mut cites = distinct(rest.iter().filter_map(|p| assigned.get(p)).flatten());
        let unassigned: Vec<String> = (rest.iter())
            .filter(|p| !assigned.contains_key(p))
            .map(u16::to_string)
            .collect();
        if !unassigned.is_empty() {
            cites.push(Cite {
                origin: CiteOrigin::Option,
                rule: "--block-all-model-ports".into(),
                text: format!(
                    "ports the model knows but does not assign to {name}: {}",
                    unassigned.join(",")
                ),
            });
        }
        let what = match blocks {
            Blocks::Assigned => "ports the model assigns to it".to_string(),
            Blocks::AllKnown => "ports the model knows".to_string(),
        };
        let summary = match way {
            Way::Inbound => format!("drop what no edge allows {prep} {name} on {what}"),
            Way::Outbound => format!("drop what no edge allows {prep} {name} to {what}"),
        };
        out.push(Rule {
            way,
            action: Action::Drop(DropKind::NotExpected),
            ports: rest,
            remote: Remote::Any,
            summary,
            cites,
        });
    }
    out
}

/// Each citation once, in the order first met.
fn distinct<'a>(cites: impl Iterator<Item = &'a Cite>) -> Vec<Cite> {
    let mut out: Vec<Cite> = Vec::new();
    for c in cites {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

fn model_cite(p: &Policy, i: usize) -> Cite {
    let rule = &p.model.rules[i];
    Cite {
        origin: CiteOrigin::Model,
        rule: format!(
            "{} ports[{i}] ({} {})",
            p.model.id,
            rule.to,
            rule.scope.as_str()
        ),
        text: rule.cite.clone(),
    }
}

fn cite(p: &Policy, o: &Origin) -> Cite {
    match o {
        Origin::Rule(r) => model_cite(p, r.0),
        Origin::Allowance(i) => Cite {
            origin: CiteOrigin::Site,
            rule: format!("site {} allow[{i}]", p.site.name),
            text: p.site.allow[*i].reason.clone(),
        },
        Origin::Monitoring => Cite {
            origin: CiteOrigin::Site,
            rule: format!("site {} monitoring", p.site.name),
            text: "scrapes the portwatch sensor".into(),
        },
    }
}

/// The addresses of an endpoint, as networks.
fn remote_of(p: &Policy, id: EndpointId) -> Remote {
    let e = p.endpoint(id);
    match e.kind {
        EndpointKind::Node => Remote::Nets(
            p.site.nodes[e.index]
                .addresses
                .iter()
                .map(|a| IpNet::from(*a))
                .collect(),
        ),
        EndpointKind::External => Remote::Nets(p.site.externals[e.index].nets.clone()),
        EndpointKind::UserNetwork => {
            let u = &p.site.user_networks[e.index];
            if u.cidrs.is_empty() {
                let nodes =
                    (p.site.nodes.iter()).flat_map(|n| n.addresses.iter().map(|a| IpNet::from(*a)));
                let exts = p.site.externals.iter().flat_map(|x| x.nets.iter().copied());
                Remote::AllBut(nodes.chain(exts).collect())
            } else {
                Remote::Nets(u.cidrs.clone())
            }
        }
    }
}

/// `192.0.2.11` for a host network, the prefix otherwise.
pub(super) fn host_or_net(n: &ipnet::IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

#[cfg(test)]
mod tests;
