//! Which required edges a sensor can see: the `--sensor` nodes, checked
//! against the site. Used by the report and the exporter alike.

use super::{Edge, Peer, Policy};

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
