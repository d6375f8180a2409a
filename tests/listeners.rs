//! Every listener of the three bundled models, judged by the classifier on
//! a site made for the model (two nodes per role, a user network, one
//! external per external service): from a client the model allows the
//! verdict is `expected`, from one it does not `unexpected`, and a `local`
//! port reached from another host `local_only`.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

use portwatch::classify::{classify, Verdict};
use portwatch::config::load_policy;
use portwatch::model::{load_model, Client, Model, Scope, BUNDLED_MODELS};
use portwatch::policy::{EndpointKind, Peer, Policy};

use crate::util::TempDir;

const USER: &str = "198.51.100.7";

/// A site with two nodes per role of `m`, running the role's services.
fn site_for(m: &Model) -> String {
    let mut y = format!("site: every-listener\nmodel: {}\nnodes:\n", m.id);
    let mut host = 10;
    for role in &m.roles {
        for n in 1..=2 {
            let services: Vec<&str> = (role.services.iter())
                .filter(|s| m.service(s).is_some_and(|s| !s.external))
                .map(String::as_str)
                .collect();
            writeln!(
                y,
                "  - name: {}-{n}\n    addresses: [192.0.2.{host}]\n    roles: [{}]\n    services: [{}]",
                role.id,
                role.id,
                services.join(", ")
            )
            .unwrap();
            host += 1;
        }
    }
    y.push_str("user_networks:\n  - name: users\n    cidrs: [198.51.100.0/24]\n");
    let externals: Vec<_> = m.services.iter().filter(|s| s.external).collect();
    if !externals.is_empty() {
        y.push_str("externals:\n");
        for (i, s) in externals.iter().enumerate() {
            writeln!(
                y,
                "  - name: ext-{}\n    addresses: [203.0.113.{}]\n    services: [{}]",
                s.id,
                10 + i,
                s.id
            )
            .unwrap();
        }
    }
    y
}

trait Kind {
    fn endpoint_kind(&self, p: Peer) -> Option<EndpointKind>;
}

impl Kind for Policy {
    fn endpoint_kind(&self, p: Peer) -> Option<EndpointKind> {
        match p {
            Peer::Endpoint(id) => Some(self.endpoint(id).kind),
            _ => None,
        }
    }
}

/// An address of an endpoint of the site.
fn address(p: &Policy, peer: Peer) -> IpAddr {
    let Peer::Endpoint(id) = peer else {
        panic!("not an endpoint")
    };
    let e = p.endpoint(id);
    match e.kind {
        EndpointKind::Node => p.site.nodes[e.index].addresses[0],
        EndpointKind::External => p.site.externals[e.index].nets[0].addr(),
        EndpointKind::UserNetwork => USER.parse().unwrap(),
    }
}

#[test]
fn every_listener_of_every_bundled_model() {
    let dir = TempDir::new("listeners");
    let mut summary = Vec::new();
    for (id, file, text) in BUNDLED_MODELS {
        let m = load_model(Path::new(file), text).unwrap();
        let site = dir.0.join(format!("{id}.yaml"));
        std::fs::write(&site, site_for(&m)).unwrap();
        let p = load_policy(&site, Some(Path::new(file)))
            .unwrap_or_else(|e| panic!("{id}: {e}"))
            .policy;
        let users = Peer::Endpoint(p.endpoint_id("users").unwrap());
        let (mut expected, mut unexpected, mut local) = (0, 0, 0);
        for rule in &m.rules {
            let what = format!(
                "{id}: {} port {} ({:?})",
                rule.to.service, rule.port, rule.scope
            );
            let mut covered = false;
            if rule.scope == Scope::Local {
                for (i, n) in p.site.nodes.iter().enumerate() {
                    if !rule.to.matches(&n.roles, &n.services) {
                        continue;
                    }
                    let dst = p.peer_of(n.addresses[0]);
                    if p.local_rule(dst, rule.port).is_none() {
                        continue; // the port is reachable there by another rule
                    }
                    let other = &p.site.nodes[(i + 1) % p.site.nodes.len()];
                    let c = classify(&p, other.addresses[0], n.addresses[0], rule.port);
                    assert_eq!(c.verdict, Verdict::LocalOnly, "{what} from {}", other.name);
                    covered = true;
                    local += 1;
                    break;
                }
                // A local port that every matching node also opens to others
                // is covered by that other rule.
                covered |= !p
                    .site
                    .nodes
                    .iter()
                    .any(|n| rule.to.matches(&n.roles, &n.services));
                covered |= p.site.nodes.iter().all(|n| {
                    !rule.to.matches(&n.roles, &n.services)
                        || p.local_rule(p.peer_of(n.addresses[0]), rule.port).is_none()
                });
                assert!(covered, "{what}: no node to check");
                continue;
            }
            // Every (client, listener) pair this rule lets connect.
            let mut dsts: Vec<Peer> = Vec::new();
            for n in &p.site.nodes {
                if rule.to.matches(&n.roles, &n.services) {
                    dsts.push(p.peer_of(n.addresses[0]));
                }
            }
            for x in &p.site.externals {
                if rule.to.role.is_none() && rule.to.matches(&[], &x.services) {
                    dsts.push(p.peer_of(x.nets[0].addr()));
                }
            }
            let src_matches = |src: Peer| {
                rule.from.iter().any(|c| match (c, src) {
                    (Client::Users, _) => src == users,
                    (Client::AnyNode, _) => p.is_node(src),
                    (Client::Nodes(sel), Peer::Endpoint(id)) if p.is_node(src) => {
                        let n = &p.site.nodes[p.endpoint(id).index];
                        sel.matches(&n.roles, &n.services)
                    }
                    _ => false,
                })
            };
            let srcs: Vec<Peer> = (p.site.nodes.iter())
                .map(|n| p.peer_of(n.addresses[0]))
                .chain([users])
                .collect();
            let pairs: Vec<(Peer, Peer)> = (dsts.iter())
                .flat_map(|d| srcs.iter().map(move |s| (*s, *d)))
                .filter(|(s, d)| s != d && src_matches(*s))
                .filter(|(_, d)| {
                    rule.scope != Scope::External
                        || p.endpoint_kind(*d) == Some(EndpointKind::External)
                })
                .collect();
            assert!(
                !pairs.is_empty(),
                "{what}: no client and listener in the test site"
            );
            for (src, dst) in &pairs {
                let c = classify(&p, address(&p, *src), address(&p, *dst), rule.port);
                assert_eq!(
                    c.verdict,
                    Verdict::Expected,
                    "{what}: {} -> {}",
                    p.peer_name(*src),
                    p.peer_name(*dst)
                );
            }
            expected += 1;
            // A client the model does not allow to reach that listener.
            let dst = pairs[0].1;
            let mut found = false;
            for src in srcs {
                let allowed = p.find_edge(src, dst, rule.port).is_some()
                    || p.rule_for(src, dst, rule.port).is_some();
                if src == dst || allowed {
                    continue;
                }
                let c = classify(&p, address(&p, src), address(&p, dst), rule.port);
                assert_eq!(
                    c.verdict,
                    Verdict::Unexpected,
                    "{what}: from {}",
                    p.peer_name(src)
                );
                found = true;
                unexpected += 1;
                break;
            }
            if !found {
                eprintln!("{what}: every client may reach it");
            }
        }
        summary.push(format!(
            "{id}: {} listeners; expected {expected}, unexpected {unexpected}, local_only {local}",
            m.rules.len()
        ));
        assert!(expected + local > 0, "{id}: nothing checked");
    }
    eprintln!("{}", summary.join("\n"));
}
