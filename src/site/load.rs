//! Site file → [`Site`], checked against the model, every problem at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::raw::{RawAcceptance, RawEdgeSpec, RawSite};
use super::{
    end_of, AcceptEnd, Acceptance, EdgeSpec, External, Monitoring, Node, Pos, Site, UserNetwork,
    DEFAULT_SENSOR_PORT, MAX_ACCEPTANCES, MONITORING,
};
use crate::diag::{parse_duration, parse_port, parse_yaml_all, ConfigError, Diagnostics};
use crate::model::{Model, Named};

/// Names an endpoint may not take: they are labels portwatch uses itself.
pub const RESERVED_NAMES: &[&str] = &["unknown", "localhost", "other"];

/// Which bundled model a site file asks for, with the line and column of the
/// `model` value, read before the full load so that the model can be chosen.
/// Errors are left to [`load_site`].
pub fn model_id_of(text: &str) -> Option<(String, u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Head {
        model: Option<Spanned<String>>,
    }
    serde_saphyr::from_str::<Head>(text)
        .ok()
        .and_then(|h| h.model)
        .map(|m| (m.value, m.referenced.line(), m.referenced.column()))
}

pub fn load_site(file: &Path, text: &str, model: &Model) -> Result<Site, ConfigError> {
    let (raw, mut d) = parse_yaml_all::<RawSite>(file, text);
    let Some(raw) = raw else {
        return Err(d.into_error());
    };
    super::names::check(text, &raw, &mut d);

    if let Some(m) = &raw.model {
        if m.value != model.id {
            d.on(
                m,
                "model",
                format!(
                    "site asks for model `{}` but `{}` is loaded",
                    m.value, model.id
                ),
            );
        }
    }

    // Every name, in one namespace: nodes, user networks and externals are
    // all `src`/`dst` label values.
    let mut names: BTreeMap<String, &'static str> = BTreeMap::new();
    fn claim_name(
        names: &mut BTreeMap<String, &'static str>,
        d: &mut Diagnostics,
        n: &Spanned<String>,
        field: String,
        kind: &'static str,
    ) {
        if RESERVED_NAMES.contains(&n.value.as_str()) || n.value.is_empty() {
            d.on(
                n,
                field,
                format!("`{}` is reserved; choose another name", n.value),
            );
        } else if let Some(prev) = names.insert(n.value.clone(), kind) {
            d.on(
                n,
                field,
                format!("duplicate name `{}` (already a {prev})", n.value),
            );
        }
    }

    let known_roles = model
        .roles
        .iter()
        .map(|r| r.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let known_services = model.known_services();
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();

    let mut nodes = Vec::new();
    for (i, n) in raw.nodes.iter().enumerate() {
        claim_name(
            &mut names,
            &mut d,
            &n.name,
            format!("nodes[{i}].name"),
            "node",
        );
        let mut addresses = Vec::new();
        if n.addresses.is_empty() {
            d.on(
                &n.name,
                format!("nodes[{i}].addresses"),
                "a node needs at least one address",
            );
        }
        for (j, a) in n.addresses.iter().enumerate() {
            let field = format!("nodes[{i}].addresses[{j}]");
            match a.value.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(prev) = owners.insert(ip, n.name.value.clone()) {
                        d.on(
                            a,
                            field,
                            format!("address {ip} is already claimed by node `{prev}`"),
                        );
                    }
                    addresses.push(ip);
                }
                Err(_) => d.on(
                    a,
                    field,
                    format!("`{}` is not an IPv4 or IPv6 address", a.value),
                ),
            }
        }
        for (j, r) in n.roles.iter().enumerate() {
            if model.role(&r.value).is_none() {
                d.on(
                    r,
                    format!("nodes[{i}].roles[{j}]"),
                    format!("unknown role `{}`; known: {known_roles}", r.value),
                );
            }
        }
        let roles: Vec<String> = n.roles.iter().map(|r| r.value.clone()).collect();
        let listed = n.services.as_ref().map(|list| {
            (list.iter().enumerate())
                .filter_map(|(j, s)| {
                    node_service(model, &mut d, s, &roles, (i, j), &known_services)
                })
                .collect::<Vec<String>>()
        });
        if n.roles.is_empty() && n.services.as_ref().is_none_or(Vec::is_empty) {
            d.on(
                &n.name,
                format!("nodes[{i}].roles"),
                "a node needs roles or services",
            );
        }
        if let Some(tz) = &n.timezone {
            if let Err(e) = jiff::tz::TimeZone::get(&tz.value) {
                d.on(
                    tz,
                    format!("nodes[{i}].timezone"),
                    format!("`{}` is not an IANA time zone name ({e})", tz.value),
                );
            }
        }
        let mut node = Node::new(model, n.name.value.clone(), addresses, roles, listed);
        node.timezone = n.timezone.as_ref().map(|t| t.value.clone());
        nodes.push(node);
    }
    if raw.nodes.is_empty() {
        d.on(&raw.site, "nodes", "a site needs at least one node");
    }

    let mut user_networks = Vec::new();
    for (i, u) in raw.user_networks.iter().enumerate() {
        claim_name(
            &mut names,
            &mut d,
            &u.name,
            format!("user_networks[{i}].name"),
            "user network",
        );
        let mut cidrs = Vec::new();
        for (j, c) in u.cidrs.iter().enumerate() {
            match parse_net(&c.value) {
                Ok(n) => cidrs.push(n),
                Err(e) => d.on(c, format!("user_networks[{i}].cidrs[{j}]"), e),
            }
        }
        user_networks.push(UserNetwork {
            name: u.name.value.clone(),
            cidrs,
        });
    }
    let user_networks_declared = !user_networks.is_empty();
    if !user_networks_declared {
        if names.contains_key("users") {
            d.on(
                &raw.site,
                "user_networks",
                "`users` names an endpoint, so the implicit user network needs declaring",
            );
        }
        user_networks.push(UserNetwork {
            name: "users".into(),
            cidrs: Vec::new(),
        });
    }

    let mut externals = Vec::new();
    for (i, x) in raw.externals.iter().enumerate() {
        claim_name(
            &mut names,
            &mut d,
            &x.name,
            format!("externals[{i}].name"),
            "external endpoint",
        );
        let mut nets = Vec::new();
        for (j, a) in x.addresses.iter().enumerate() {
            let field = format!("externals[{i}].addresses[{j}]");
            match parse_net(&a.value) {
                Ok(n) => {
                    if let Some(owner) = owners.iter().find(|(ip, _)| n.contains(*ip)) {
                        d.on(
                            a,
                            field,
                            format!("{n} covers {} of node `{}`", owner.0, owner.1),
                        );
                    } else {
                        nets.push(n)
                    }
                }
                Err(e) => d.on(a, field, e),
            }
        }
        for (j, s) in x.services.iter().enumerate() {
            if model.service(&s.value).is_none() {
                d.on(
                    s,
                    format!("externals[{i}].services[{j}]"),
                    format!("unknown service `{}`; known: {known_services}", s.value),
                );
            }
        }
        externals.push(External {
            name: x.name.value.clone(),
            nets,
            services: x.services.iter().map(|s| s.value.clone()).collect(),
            description: x.description.clone(),
        });
    }

    let specs = |d: &mut Diagnostics, list: &[RawEdgeSpec], what: &str| -> Vec<EdgeSpec> {
        let mut out = Vec::new();
        for (i, e) in list.iter().enumerate() {
            let at = |f: &str| format!("{what}[{i}].{f}");
            for (end, f) in [(&e.from, "from"), (&e.to, "to")] {
                let implicit_users = end.value == "users" && !user_networks_declared;
                if !implicit_users && !names.contains_key(&end.value) {
                    d.on(
                        end,
                        at(f),
                        format!(
                            "`{}` names no node, user network or external endpoint",
                            end.value
                        ),
                    );
                }
            }
            let port = parse_port(e.port.value).unwrap_or_else(|m| {
                d.on(&e.port, at("port"), m);
                0
            });
            let window = e.window.as_ref().and_then(|w| {
                parse_duration(&w.value)
                    .map_err(|m| d.on(w, at("window"), m))
                    .ok()
            });
            if let Some(s) = &e.service {
                if model.service(&s.value).is_none() {
                    d.on(
                        s,
                        at("service"),
                        format!("unknown service `{}`; known: {known_services}", s.value),
                    );
                }
            }
            out.push(EdgeSpec {
                from: e.from.value.clone(),
                to: e.to.value.clone(),
                port,
                service: e.service.as_ref().map(|s| s.value.clone()),
                required: e.required,
                window,
                reason: e.reason.clone(),
                pos: Pos {
                    line: e.from.referenced.line(),
                    column: e.from.referenced.column(),
                },
                index: i,
            });
        }
        out
    };
    let monitoring = raw.monitoring.as_ref().map(|m| {
        let mut from = Vec::new();
        let mut nets = Vec::new();
        for (i, f) in m.from.iter().enumerate() {
            let implicit_users = f.value == "users" && !user_networks_declared;
            if implicit_users || names.contains_key(&f.value) {
                from.push(f.value.clone());
                continue;
            }
            match parse_net(&f.value) {
                Ok(n) => nets.push(n),
                Err(_) => d.on(
                    f,
                    format!("monitoring.from[{i}]"),
                    format!(
                        "`{}` names no node, user network or external endpoint, and is not an address or CIDR",
                        f.value
                    ),
                ),
            }
        }
        if !nets.is_empty() {
            if let Some(kind) = names.get(MONITORING) {
                d.on(
                    &m.from[0],
                    "monitoring.from",
                    format!("addresses here make an endpoint `{MONITORING}`, but that name is already a {kind}"),
                );
            } else {
                externals.push(External {
                    name: MONITORING.into(),
                    nets,
                    services: Vec::new(),
                    description: "who scrapes the sensors (site monitoring list)".into(),
                });
                from.push(MONITORING.into());
            }
        }
        let port = match &m.port {
            None => DEFAULT_SENSOR_PORT,
            Some(p) => parse_port(p.value).unwrap_or_else(|e| {
                d.on(p, "monitoring.port", e);
                DEFAULT_SENSOR_PORT
            }),
        };
        Monitoring { from, port }
    });
    let allow = specs(&mut d, &raw.allow, "allow");
    let overrides = specs(&mut d, &raw.overrides, "overrides");
    let is_name = |n: &str| names.contains_key(n) || (n == "users" && !user_networks_declared);
    let accepted = acceptances(text, &mut d, &raw.accepted, &is_name);
    let is_covered = |n: &str| {
        names.get(n).is_some_and(|k| *k != "external endpoint")
            || (n == "users" && !user_networks_declared)
    };
    let exporters = super::exporter::exporters(text, &mut d, &raw.exporters, &is_covered);

    d.finish(Site {
        name: raw.site.value,
        model: model.id.clone(),
        description: raw.description,
        nodes,
        user_networks,
        user_networks_declared,
        externals,
        allow,
        overrides,
        monitoring,
        accepted,
        exporters,
    })
}

/// The `accepted:` list: ends named or given as addresses, a port, free
/// text that must not be empty, and the last day as a date.
fn acceptances(
    text: &str,
    d: &mut Diagnostics,
    raw: &[RawAcceptance],
    is_name: &dyn Fn(&str) -> bool,
) -> Vec<Acceptance> {
    if let Some(a) = raw.get(MAX_ACCEPTANCES) {
        d.on(
            &a.from,
            format!("accepted[{MAX_ACCEPTANCES}]"),
            format!("more than {MAX_ACCEPTANCES} accepted deviations; fix some instead"),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let at = |f: &str| format!("accepted[{i}].{f}");
        let mut end = |v: &Spanned<String>, f: &str| accept_end(text, d, v, at(f), is_name);
        let (from, to) = (end(&a.from, "from"), end(&a.to, "to"));
        let port = parse_port(a.port.value)
            .map_err(|m| d.on(&a.port, at("port"), m))
            .ok();
        for (v, f) in [
            (&a.reason, "reason"),
            (&a.ticket, "ticket"),
            (&a.owner, "owner"),
        ] {
            if v.value.trim().is_empty() {
                d.on(v, at(f), format!("an accepted deviation needs a {f}"));
            }
        }
        let until = (a.expires.value.trim().parse::<jiff::civil::Date>().ok())
            .filter(|_| a.expires.value.trim().len() == 10)
            .and_then(end_of);
        if until.is_none() {
            d.on(
                &a.expires,
                at("expires"),
                format!(
                    "`{}` is not a date (YYYY-MM-DD, its last day)",
                    a.expires.value
                ),
            );
        }
        if let (Some(from), Some(to), Some(port), Some(until)) = (from, to, port, until) {
            out.push(Acceptance {
                from,
                to,
                port,
                reason: a.reason.value.clone(),
                ticket: a.ticket.value.clone(),
                owner: a.owner.value.clone(),
                expires: a.expires.value.trim().to_string(),
                until,
                pos: Pos {
                    line: a.from.referenced.line(),
                    column: a.from.referenced.column(),
                },
                index: i,
            });
        }
    }
    out
}

/// One end of an accepted flow: an address or CIDR, or the name of an
/// endpoint (an identifier, and one the site declares).
fn accept_end(
    text: &str,
    d: &mut Diagnostics,
    v: &Spanned<String>,
    field: String,
    is_name: &dyn Fn(&str) -> bool,
) -> Option<AcceptEnd> {
    if let Ok(net) = parse_net(&v.value) {
        return Some(AcceptEnd::Net(net));
    }
    if is_name(&v.value) {
        return Some(AcceptEnd::Name(v.value.clone()));
    }
    if crate::name::check(&v.value).is_err() {
        d.name(text, v, field);
    } else {
        d.on(
            v,
            field,
            format!(
                "`{}` names no node, user network or external endpoint, and is not an address or CIDR",
                v.value
            ),
        );
    }
    None
}

/// The model id of a node's `services:` entry (an id or a Windows service
/// name), or a diagnostic.
fn node_service(
    model: &Model,
    d: &mut Diagnostics,
    s: &Spanned<String>,
    roles: &[String],
    (i, j): (usize, usize),
    known: &str,
) -> Option<String> {
    let message = match model.node_service(&s.value, roles) {
        Named::Service(svc) => return Some(svc.id.clone()),
        Named::Unknown => format!("unknown service `{}`; known: {known}", s.value),
        Named::Ambiguous(all) => format!(
            "`{}` runs as {}; the node's roles do not say which: name the id",
            s.value,
            all.iter()
                .map(|x| format!("`{}` ({})", x.id, x.name))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    d.on(s, format!("nodes[{i}].services[{j}]"), message);
    None
}

pub(super) fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        if n.trunc() != n {
            return Err(format!(
                "`{s}` has host bits set; did you mean {}?",
                n.trunc()
            ));
        }
        return Ok(n);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not a CIDR block (e.g. 198.51.100.0/24) or an address"))
}
