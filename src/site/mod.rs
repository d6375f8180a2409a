//! A site's inventory: its nodes with addresses and roles, the user networks
//! that may reach user-facing ports, the external endpoints nodes may reach,
//! and site-specific allowances and overrides.

mod load;
mod raw;

pub use load::{load_site, model_id_of};

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub roles: Vec<String>,
    /// Every service that runs here, expanded through the model.
    pub services: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserNetwork {
    pub name: String,
    /// Empty for the implicit `users` network: anything that is not a node
    /// or an external endpoint.
    pub cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    pub name: String,
    pub nets: Vec<IpNet>,
    pub services: Vec<String>,
    pub description: String,
}

/// Where in the site file something was written, for later diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

/// An allowance (extra edge) or an override of a model edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub service: Option<String>,
    pub required: Option<bool>,
    pub window: Option<Duration>,
    pub reason: String,
    pub pos: Pos,
    /// Index in its list, for field paths such as `overrides[2]`.
    pub index: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub model: String,
    pub description: String,
    pub nodes: Vec<Node>,
    /// Declared networks, or the single implicit `users` network.
    pub user_networks: Vec<UserNetwork>,
    pub user_networks_declared: bool,
    pub externals: Vec<External>,
    pub allow: Vec<EdgeSpec>,
    pub overrides: Vec<EdgeSpec>,
    /// Who scrapes the sensors: their connections to a node's sensor port
    /// are expected (service `portwatch`).
    pub monitoring: Option<Monitoring>,
}

/// The site's `monitoring` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitoring {
    /// Endpoint names; addresses and CIDRs of the list are gathered into an
    /// external endpoint named [`MONITORING`].
    pub from: Vec<String>,
    pub port: u16,
}

/// The external endpoint made of the `monitoring` list's addresses.
pub const MONITORING: &str = "monitoring";
/// Where `portwatch run` listens by default.
pub const DEFAULT_SENSOR_PORT: u16 = 9477;

impl Site {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
