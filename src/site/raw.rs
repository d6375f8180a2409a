//! serde mirror of a site file.

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub site: Spanned<String>,
    /// Bundled model id; default `qlik-sense-enterprise`.
    pub model: Option<Spanned<String>>,
    #[serde(default)]
    pub description: String,
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub user_networks: Vec<RawUserNetwork>,
    #[serde(default)]
    pub externals: Vec<RawExternal>,
    /// Site-specific edges beyond the model.
    #[serde(default)]
    pub allow: Vec<RawEdgeSpec>,
    /// Changes to model edges: required or not, window.
    #[serde(default)]
    pub overrides: Vec<RawEdgeSpec>,
    /// Who scrapes the portwatch sensors.
    pub monitoring: Option<RawMonitoring>,
    /// Known deviations accepted until a date (not allowances).
    #[serde(default)]
    pub accepted: Vec<RawAcceptance>,
    /// NetFlow/IPFIX exporters and what passes their observation points.
    #[serde(default)]
    pub exporters: Vec<RawExporter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExporter {
    pub name: Spanned<String>,
    /// The source address of its datagrams.
    pub address: Spanned<String>,
    /// NetFlow v9 source id or IPFIX observation domain id.
    pub observation_domain: Option<Spanned<i64>>,
    /// Node names, user network names, addresses or CIDR blocks.
    pub covers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcceptance {
    /// An endpoint name, or an address or CIDR (for hosts outside the site).
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub port: Spanned<i64>,
    pub reason: Spanned<String>,
    pub ticket: Spanned<String>,
    pub owner: Spanned<String>,
    /// The last day it holds (UTC), `YYYY-MM-DD`.
    pub expires: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitoring {
    /// Endpoint names (externals, user networks, nodes) or addresses/CIDRs.
    pub from: Vec<Spanned<String>>,
    /// The sensors' listen port; default 9477.
    pub port: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
    pub addresses: Vec<Spanned<String>>,
    #[serde(default)]
    pub roles: Vec<Spanned<String>>,
    /// When given, exactly these services (plus what they start) run here.
    pub services: Option<Vec<Spanned<String>>>,
    /// The node's time zone (an IANA name): its firewall log's local time.
    pub timezone: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserNetwork {
    pub name: Spanned<String>,
    pub cidrs: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExternal {
    pub name: Spanned<String>,
    /// Addresses or CIDR blocks.
    pub addresses: Vec<Spanned<String>>,
    pub services: Vec<Spanned<String>>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeSpec {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub port: Spanned<i64>,
    /// Label for an allowance's service; default: the model's service on that port.
    pub service: Option<Spanned<String>>,
    pub required: Option<bool>,
    pub window: Option<Spanned<String>>,
    #[serde(default)]
    pub reason: String,
}
