//! Applying a proposal in memory, as the loader would build the patched
//! file, and the allowances the patched site still needs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use super::{AllowEntry, AllowEvidence, FlowId, FlowStats, Inferred, Proposed};
use crate::classify::{classify, Verdict};
use crate::diag::ConfigError;
use crate::model::Model;
use crate::policy::Policy;
use crate::site::{EdgeSpec, External, Node, Pos, Site, UserNetwork};
use crate::time::Timestamp;

/// An empty site for `--model`: no nodes, everything else the implicit
/// user network, so every address reaches the observer unjudged.
pub fn empty_site(name: &str, model: &Model) -> Site {
    Site {
        name: name.into(),
        model: model.id.clone(),
        description: String::new(),
        nodes: Vec::new(),
        user_networks: vec![UserNetwork {
            name: "users".into(),
            cidrs: Vec::new(),
        }],
        user_networks_declared: false,
        externals: Vec::new(),
        allow: Vec::new(),
        overrides: Vec::new(),
        monitoring: None,
    }
}

/// `base` with the inferred entries and `allow` appended, as the loader
/// would build it from the patched file.
pub fn patched_site(base: &Site, model: &Model, inf: &Inferred, allow: &[AllowEntry]) -> Site {
    let mut s = base.clone();
    for n in &inf.nodes {
        let e = &n.entry;
        s.nodes.push(Node::new(
            model,
            e.name.clone(),
            e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            e.roles.clone(),
            e.services.clone(),
        ));
    }
    if !inf.user_networks.is_empty() {
        if !s.user_networks_declared {
            s.user_networks.clear();
            s.user_networks_declared = true;
        }
        for u in &inf.user_networks {
            s.user_networks.push(UserNetwork {
                name: u.entry.name.clone(),
                cidrs: u
                    .entry
                    .cidrs
                    .iter()
                    .filter_map(|c| c.parse().ok())
                    .collect(),
            });
        }
    }
    for x in &inf.externals {
        s.externals.push(External {
            name: x.entry.name.clone(),
            nets: x
                .entry
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .map(ipnet::IpNet::from)
                .collect(),
            services: x.entry.services.clone(),
            description: x.entry.description.clone(),
        });
    }
    let first = s.allow.len();
    for (i, a) in allow.iter().enumerate() {
        s.allow.push(EdgeSpec {
            from: a.from.clone(),
            to: a.to.clone(),
            port: a.port,
            service: None,
            required: None,
            window: None,
            reason: a.reason.clone(),
            pos: Pos { line: 0, column: 0 },
            index: first + i,
        });
    }
    s
}

/// Compile a patched site (the loader's checks beyond [`Policy::compile`]
/// hold by construction: names are unique, addresses unclaimed).
pub fn compile(model: &Model, site: Site) -> Result<Policy, ConfigError> {
    Policy::compile(model.clone(), site, Path::new("<proposed site>"))
}

/// One `allow` entry per (source endpoint, destination endpoint, port) of
/// the flows `p` calls unexpected that were established at least once.
/// Flows between two addresses of one endpoint cannot be allowed (an edge
/// needs two endpoints) and are left out.
pub fn allow_entries(
    p: &Policy,
    flows: &BTreeMap<FlowId, FlowStats>,
) -> (Vec<Proposed<AllowEntry>>, Vec<AllowEvidence>) {
    #[derive(Default)]
    struct Group {
        attempts: u64,
        established: u64,
        sources: BTreeSet<IpAddr>,
        span: Option<(Timestamp, Timestamp)>,
    }
    let mut groups: BTreeMap<(String, String, u16), Group> = BTreeMap::new();
    // Every attempt of a triple counts once any attempt of it succeeded.
    for (f, s) in flows.iter().filter(|(_, s)| s.established() > 0) {
        let c = classify(p, f.client, f.server, f.port);
        if c.verdict != Verdict::Unexpected || c.src == c.dst {
            continue;
        }
        let key = (
            p.peer_name(c.src).to_string(),
            p.peer_name(c.dst).to_string(),
            f.port,
        );
        let g = groups.entry(key).or_default();
        g.attempts += s.attempts;
        g.established += s.established();
        g.sources.insert(f.client);
        g.span = Some(match g.span {
            None => (s.first, s.last),
            Some((a, b)) => (a.min(s.first), b.max(s.last)),
        });
    }
    groups
        .into_iter()
        .map(|((from, to, port), g)| {
            let (first, last) = g.span.expect("a group has a flow");
            let ev = AllowEvidence {
                attempts: g.attempts,
                established: g.established,
                source_addresses: g.sources.len(),
                first_seen: first.rfc3339(),
                last_seen: last.rfc3339(),
            };
            let reason = format!(
                "seen in traffic: {} attempt{}, {} established, from {} address{}",
                ev.attempts,
                plural(ev.attempts),
                ev.established,
                ev.source_addresses,
                if ev.source_addresses == 1 { "" } else { "es" }
            );
            let evidence = vec![format!(
                "{} attempt{} ({} established) from {} source address{}, first {}, last {}",
                ev.attempts,
                plural(ev.attempts),
                ev.established,
                ev.source_addresses,
                if ev.source_addresses == 1 { "" } else { "es" },
                ev.first_seen,
                ev.last_seen
            )];
            (
                Proposed {
                    entry: AllowEntry {
                        from,
                        to,
                        port,
                        reason,
                    },
                    evidence,
                },
                ev,
            )
        })
        .unzip()
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_policy;
    use crate::propose::{infer, Mode};

    fn policy(site: &str) -> Policy {
        load_policy(Path::new(site), None).unwrap().policy
    }

    fn flow(
        flows: &mut BTreeMap<FlowId, FlowStats>,
        client: &str,
        server: &str,
        port: u16,
        established: u64,
        attempts: u64,
    ) {
        let at = Timestamp::from_secs_nanos(1_767_603_600, 0);
        flows.insert(
            FlowId {
                client: client.parse().unwrap(),
                server: server.parse().unwrap(),
                port,
            },
            FlowStats {
                attempts,
                outcomes: [established, attempts - established, 0, 0, 0, 0],
                first: at,
                last: at,
            },
        );
    }

    /// One entry per (source endpoint, destination, port); never for
    /// local-only ports or flows that were never established.
    #[test]
    fn allowances_group_by_endpoint_and_skip_what_is_not_legitimate() {
        let p = policy("multi-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "198.51.100.7", "192.0.2.21", 4747, 1, 1);
        flow(&mut f, "198.51.100.8", "192.0.2.21", 4747, 2, 3);
        flow(&mut f, "192.0.2.21", "192.0.2.11", 3389, 0, 2); // refused
        flow(&mut f, "192.0.2.11", "192.0.2.10", 4570, 1, 1); // local-only
        flow(&mut f, "192.0.2.11", "192.0.2.21", 4747, 1, 1); // expected
        let (allow, ev) = allow_entries(&p, &f);
        let got: Vec<(&str, &str, u16)> = allow
            .iter()
            .map(|a| (a.entry.from.as_str(), a.entry.to.as_str(), a.entry.port))
            .collect();
        assert_eq!(got, [("corp-users", "engine1", 4747)]);
        assert_eq!(
            (ev[0].attempts, ev[0].established, ev[0].source_addresses),
            (4, 3, 2)
        );
    }

    /// A site on the implicit `users` network gets no user network (that
    /// would turn every other address unknown); a server nodes reach on a
    /// port no role listens on becomes an external, and the allowance to it
    /// follows once the patch is applied.
    #[test]
    fn implicit_users_site_gets_externals_not_user_networks() {
        let p = policy("single-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "10.9.8.7", "192.0.2.10", 443, 1, 1);
        flow(&mut f, "192.0.2.10", "10.1.1.1", 389, 2, 2);
        let inf = infer(&p, &f, Mode::Site);
        assert!(inf.user_networks.is_empty() && inf.nodes.is_empty());
        let names: Vec<&str> = inf
            .externals
            .iter()
            .map(|x| x.entry.name.as_str())
            .collect();
        assert_eq!(names, ["host-10-1-1-1"]);
        let patched = compile(&p.model, patched_site(&p.site, &p.model, &inf, &[])).unwrap();
        let (allow, _) = allow_entries(&patched, &f);
        assert_eq!(allow.len(), 1);
        assert_eq!(
            (allow[0].entry.from.as_str(), allow[0].entry.to.as_str()),
            ("central", "host-10-1-1-1")
        );
    }

    /// An address that accepts a node-to-node listener port from the site's
    /// nodes is proposed as a node with the role those listeners imply.
    #[test]
    fn unknown_listener_becomes_a_node() {
        let p = policy("multi-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "192.0.2.10", "192.0.2.33", 5151, 1, 1);
        flow(&mut f, "192.0.2.10", "192.0.2.33", 4242, 1, 1);
        let inf = infer(&p, &f, Mode::Site);
        assert_eq!(inf.nodes.len(), 1);
        let n = &inf.nodes[0].entry;
        assert_eq!(
            (n.roles.clone(), n.addresses.clone()),
            (
                vec!["scheduler".to_string()],
                vec!["192.0.2.33".to_string()]
            )
        );
        // `scheduler` is taken in multi-node.
        assert_eq!(n.name, "scheduler1");
    }
}
