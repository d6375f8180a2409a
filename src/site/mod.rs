//! A site's inventory: its nodes with addresses and roles, the user networks
//! that may reach user-facing ports, the external endpoints nodes may reach,
//! and site-specific allowances and overrides.

mod accept;
mod exporter;
mod load;
mod names;
mod raw;

pub use accept::{end_of, AcceptEnd, Acceptance, MAX_ACCEPTANCES};
pub use exporter::{
    exporter_index, exporter_of, Covered, Exporter, MAX_DECLARED_EXPORTERS, UNDECLARED,
};
pub use load::{load_site, model_id_of};

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::model::Model;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub roles: Vec<String>,
    /// Where the services come from, and the ones named there, before
    /// what they start.
    pub services_from: ServicesFrom,
    pub named_services: Vec<String>,
    /// Every service that runs here, expanded through the model.
    pub services: Vec<String>,
    /// IANA time zone name (checked at load): the local time of the
    /// node's own logs.
    pub timezone: Option<String>,
}

/// Where a node's services come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServicesFrom {
    /// No `services:` list: the defaults of its roles.
    RoleDefaults,
    /// Its `services:` list, which replaces the roles' defaults.
    List,
}

impl Node {
    /// A node running the services of `listed` (model ids), or its roles'
    /// defaults when there is no list, and what those start.
    pub fn new(
        model: &Model,
        name: String,
        addresses: Vec<IpAddr>,
        roles: Vec<String>,
        listed: Option<Vec<String>>,
    ) -> Node {
        let (services_from, mut named_services) = match listed {
            Some(list) => (ServicesFrom::List, list),
            None => {
                let defaults = roles.iter().filter_map(|r| model.role(r));
                let named = defaults.flat_map(|r| r.services.clone()).collect();
                (ServicesFrom::RoleDefaults, named)
            }
        };
        named_services.sort();
        named_services.dedup();
        let services = model.expand_services([], &named_services);
        Node {
            name,
            addresses,
            roles,
            services_from,
            named_services,
            services,
            timezone: None,
        }
    }
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
    /// Known deviations accepted until a date: still findings, marked.
    pub accepted: Vec<Acceptance>,
    /// Flow exporters and what each covers.
    pub exporters: Vec<Exporter>,
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
