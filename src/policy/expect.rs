//! What a site needs open: per node, the inbound and outbound ports, and
//! every expected edge. This is the firewall list the vendor page gives for
//! its deployment examples, derived from the model instead of copied.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Serialize;

use super::{EndpointKind, Origin, Policy};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodePorts {
    pub name: String,
    pub roles: Vec<String>,
    pub services: Vec<String>,
    pub inbound: Vec<u16>,
    pub outbound: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpectedEdge {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub service: String,
    pub required: bool,
    pub window_seconds: u64,
    /// Page sections the edge is cited from, or the site allowance.
    pub because: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expectation {
    pub site: String,
    pub model: String,
    pub nodes: Vec<NodePorts>,
    pub edges: Vec<ExpectedEdge>,
}

impl Expectation {
    pub fn of(p: &Policy) -> Expectation {
        let all = p.all_edges();
        let mut inbound = vec![BTreeSet::new(); p.endpoints.len()];
        let mut outbound = vec![BTreeSet::new(); p.endpoints.len()];
        for edge in &all {
            inbound[edge.dst.0 as usize].insert(edge.port);
            outbound[edge.src.0 as usize].insert(edge.port);
        }
        let nodes = p
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == EndpointKind::Node)
            .map(|(i, e)| {
                let node = &p.site.nodes[e.index];
                let inbound = std::mem::take(&mut inbound[i]);
                let outbound = std::mem::take(&mut outbound[i]);
                NodePorts {
                    name: e.name.clone(),
                    roles: node.roles.clone(),
                    services: node.services.clone(),
                    inbound: inbound.into_iter().collect(),
                    outbound: outbound.into_iter().collect(),
                }
            })
            .collect();
        let mut edges: Vec<ExpectedEdge> = all
            .iter()
            .map(|e| ExpectedEdge {
                src: p.endpoint(e.src).name.clone(),
                dst: p.endpoint(e.dst).name.clone(),
                port: e.port,
                service: e.service.to_string(),
                required: e.required,
                window_seconds: e.window.as_secs(),
                because: e
                    .origins
                    .iter()
                    .map(|o| match o {
                        Origin::Rule(r) => p.model.rule(*r).cite.clone(),
                        Origin::Allowance(i) => {
                            format!("site allow[{i}]: {}", p.site.allow[*i].reason)
                        }
                        Origin::Monitoring => {
                            "site monitoring: scrapes the portwatch sensor".into()
                        }
                    })
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            })
            .collect();
        edges.sort_by(|a, b| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)));
        Expectation {
            site: p.site.name.clone(),
            model: p.model.id.clone(),
            nodes,
            edges,
        }
    }

    /// Only what concerns one node (`expect --node`): its ports, and the
    /// edges it is an end of.
    pub fn only(mut self, node: &str) -> Expectation {
        self.nodes.retain(|n| n.name == node);
        self.edges.retain(|e| e.src == node || e.dst == node);
        self
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let list = |ports: &[u16]| {
            if ports.is_empty() {
                "-".to_string()
            } else {
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(s, "site {} (model {})\n", self.site, self.model);
        let w = self
            .nodes
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(s, "{:w$}  {:<9}  PORTS", "NODE", "DIRECTION");
        for n in &self.nodes {
            let _ = writeln!(s, "{:w$}  {:<9}  {}", n.name, "inbound", list(&n.inbound));
            let _ = writeln!(s, "{:w$}  {:<9}  {}", "", "outbound", list(&n.outbound));
        }
        let sw = self
            .edges
            .iter()
            .map(|e| e.src.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let dw = self
            .edges
            .iter()
            .map(|e| e.dst.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let vw = self
            .edges
            .iter()
            .map(|e| e.service.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let _ = writeln!(
            s,
            "\n{:sw$}  {:dw$}  {:>5}  {:vw$}  {:<8}  WINDOW",
            "SRC", "DST", "PORT", "SERVICE", "REQUIRED"
        );
        for e in &self.edges {
            let window = if e.required {
                humantime::format_duration(std::time::Duration::from_secs(e.window_seconds))
                    .to_string()
            } else {
                "-".into()
            };
            let _ = writeln!(
                s,
                "{:sw$}  {:dw$}  {:>5}  {:vw$}  {:<8}  {}",
                e.src,
                e.dst,
                e.port,
                e.service,
                if e.required { "yes" } else { "no" },
                window
            );
        }
        s
    }
}
