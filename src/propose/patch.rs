//! Applying a proposal in memory, as the loader would build the patched
//! file, and the allowances the patched site still needs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use super::{
    AllowEntry, AllowEvidence, FlowId, FlowStats, Inferred, Proposed, Suspicion, Suspicious,
    Thresholds,
};
use crate::classify::{classify, Verdict};
use crate::diag::ConfigError;
use crate::model::Model;
use crate::policy::{Peer, Policy};
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
        accepted: Vec::new(),
        exporters: Vec::new(),
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

/// Most suspicious observations listed; the rest are counted.
pub const MAX_SUSPICIOUS: usize = 256;

/// The allowances the traffic supports, and what it shows that is held
/// back for review.
#[derive(Clone, Debug, Default)]
pub struct Allowances {
    pub allow: Vec<Proposed<AllowEntry>>,
    pub evidence: Vec<AllowEvidence>,
    /// At most [`MAX_SUSPICIOUS`], ordered by reason, source, destination, port.
    pub suspicious: Vec<Suspicious>,
    /// Suspicious observations beyond [`MAX_SUSPICIOUS`].
    pub suspicious_left_off: usize,
}

/// One `allow` entry per (source endpoint, destination endpoint, port) of
/// the flows `p` does not expect, when their attempts meet `t`: at least
/// `min_attempts`, established at least once, from the first to the last
/// over at least `min_days` calendar days. The others are [`Suspicious`]:
/// those of hosts the site does not know (`unknown`, the clients inference
/// would not place, and addresses `p` does not know), never established,
/// single, too few or too short. Flows `p` expects, local-only ports (the
/// replay lists those) and flows between two addresses of one endpoint (an
/// edge needs two) are neither.
pub fn allow_entries(
    p: &Policy,
    flows: &BTreeMap<FlowId, FlowStats>,
    t: Thresholds,
    unknown: &BTreeSet<IpAddr>,
) -> Allowances {
    #[derive(Default)]
    struct Group {
        attempts: u64,
        established: u64,
        sources: BTreeSet<IpAddr>,
        span: Option<(Timestamp, Timestamp)>,
        unknown: bool,
    }
    // Bounded by `flows` (at most MAX_FLOWS triples).
    let mut groups: BTreeMap<(String, String, u16), Group> = BTreeMap::new();
    for (f, s) in flows {
        let c = classify(p, f.client, f.server, f.port);
        match c.verdict {
            Verdict::Expected | Verdict::LocalOnly => continue,
            Verdict::Unexpected if c.src == c.dst => continue,
            Verdict::Unexpected | Verdict::UnknownHost => {}
        }
        let name = |peer: Peer, ip: IpAddr| match peer {
            Peer::Endpoint(_) if !unknown.contains(&ip) => p.peer_name(peer).to_string(),
            _ => ip.to_string(),
        };
        let key = (name(c.src, f.client), name(c.dst, f.server), f.port);
        let g = groups.entry(key).or_default();
        g.attempts += s.attempts;
        g.established += s.established();
        g.sources.insert(f.client);
        g.unknown |= c.verdict == Verdict::UnknownHost || unknown.contains(&f.client);
        g.span = Some(match g.span {
            None => (s.first, s.last),
            Some((a, b)) => (a.min(s.first), b.max(s.last)),
        });
    }
    let mut out = Allowances::default();
    for ((from, to, port), g) in groups {
        let (first, last) = g.span.expect("a group has a flow");
        let days = day(last).saturating_sub(day(first)) + 1;
        let addresses = g.sources.len();
        let held = if g.unknown {
            Some((
                Suspicion::UnknownHost,
                "a host the site does not know: declare it by hand if it belongs".to_string(),
            ))
        } else if g.established == 0 {
            Some((
                Suspicion::RefusedOnly,
                "never established (refused or unanswered): no evidence of a legitimate flow"
                    .to_string(),
            ))
        } else if g.attempts < t.min_attempts && g.attempts == 1 {
            Some((
                Suspicion::Single,
                format!("one attempt, fewer than --min-attempts {}", t.min_attempts),
            ))
        } else if g.attempts < t.min_attempts {
            Some((
                Suspicion::FewAttempts,
                format!(
                    "{} attempts, fewer than --min-attempts {}",
                    g.attempts, t.min_attempts
                ),
            ))
        } else if days < t.min_days {
            Some((
                Suspicion::FewDays,
                format!(
                    "over {days} day{}, fewer than --min-days {}",
                    plural(days),
                    t.min_days
                ),
            ))
        } else {
            None
        };
        if let Some((reason, why)) = held {
            out.suspicious.push(Suspicious {
                reason,
                src: from,
                dst: to,
                port,
                attempts: g.attempts,
                established: g.established,
                source_addresses: addresses,
                days,
                first_seen: first.rfc3339(),
                last_seen: last.rfc3339(),
                why,
            });
            continue;
        }
        let ev = AllowEvidence {
            attempts: g.attempts,
            established: g.established,
            source_addresses: addresses,
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
        out.allow.push(Proposed {
            entry: AllowEntry {
                from,
                to,
                port,
                reason,
            },
            evidence,
        });
        out.evidence.push(ev);
    }
    out.suspicious.sort_by(|a, b| {
        (a.reason, &a.src, &a.dst, a.port).cmp(&(b.reason, &b.src, &b.dst, b.port))
    });
    out.suspicious_left_off = out.suspicious.len().saturating_sub(MAX_SUSPICIOUS);
    out.suspicious.truncate(MAX_SUSPICIOUS);
    out
}

/// The UTC calendar day of a timestamp, as days since 1970-01-01.
fn day(t: Timestamp) -> u64 {
    t.as_nanos() / (86_400 * 1_000_000_000)
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
        let found = allow_entries(&p, &f, Thresholds::DEFAULT, &BTreeSet::new());
        let (allow, ev) = (found.allow, found.evidence);
        let got: Vec<(&str, &str, u16)> = allow
            .iter()
            .map(|a| (a.entry.from.as_str(), a.entry.to.as_str(), a.entry.port))
            .collect();
        assert_eq!(got, [("corp-users", "engine1", 4747)]);
        assert_eq!(
            (ev[0].attempts, ev[0].established, ev[0].source_addresses),
            (4, 3, 2)
        );
        let held: Vec<(Suspicion, &str, &str, u16)> = (found.suspicious.iter())
            .map(|h| (h.reason, h.src.as_str(), h.dst.as_str(), h.port))
            .collect();
        assert_eq!(held, [(Suspicion::RefusedOnly, "engine1", "proxy", 3389)]);
    }

    /// The reproducer: one established attempt from a host the
    /// site does not know, to central:4242, is suspicious and never an
    /// allowance, whatever --min-attempts; one attempt between known
    /// endpoints is `single`, two `few_attempts`, and three over one day
    /// `few_days` with --min-days 2; --min-attempts 1 proposes the single
    /// one, never the unknown host.
    #[test]
    fn single_unknown_and_refused_observations_are_suspicious_not_allowed() {
        let p = policy("multi-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "192.0.2.99", "192.0.2.10", 4242, 1, 1); // unknown host
        flow(&mut f, "198.51.100.7", "192.0.2.21", 4747, 1, 1); // single
        flow(&mut f, "198.51.100.7", "192.0.2.22", 4747, 2, 2); // two
        flow(&mut f, "198.51.100.7", "192.0.2.11", 4747, 3, 3); // three, one day
        let reasons = |t: Thresholds| -> Vec<(Suspicion, String, u16)> {
            let found = allow_entries(&p, &f, t, &BTreeSet::new());
            assert!(found.allow.iter().all(|a| a.entry.from != "192.0.2.99"));
            (found.suspicious.iter())
                .map(|h| (h.reason, format!("{}->{}", h.src, h.dst), h.port))
                .collect()
        };
        let s = |r, e: &str, port| (r, e.to_string(), port);
        assert_eq!(
            reasons(Thresholds::DEFAULT),
            [
                s(Suspicion::UnknownHost, "192.0.2.99->central", 4242),
                s(Suspicion::Single, "corp-users->engine1", 4747),
                s(Suspicion::FewAttempts, "corp-users->engine2", 4747),
            ]
        );
        let days = Thresholds {
            min_attempts: 1,
            min_days: 2,
        };
        assert_eq!(
            reasons(days),
            [
                s(Suspicion::UnknownHost, "192.0.2.99->central", 4242),
                s(Suspicion::FewDays, "corp-users->engine1", 4747),
                s(Suspicion::FewDays, "corp-users->engine2", 4747),
                s(Suspicion::FewDays, "corp-users->proxy", 4747),
            ]
        );
        let one = Thresholds {
            min_attempts: 1,
            min_days: 1,
        };
        assert_eq!(
            reasons(one),
            [s(Suspicion::UnknownHost, "192.0.2.99->central", 4242)]
        );
        let found = allow_entries(&p, &f, one, &BTreeSet::new());
        assert_eq!(found.allow.len(), 3);
        // A client inference would not place counts as unknown too.
        let unknown: BTreeSet<IpAddr> = ["198.51.100.7".parse().unwrap()].into();
        let found = allow_entries(&p, &f, one, &unknown);
        assert!(found.allow.is_empty());
        assert!(found
            .suspicious
            .iter()
            .all(|h| h.reason == Suspicion::UnknownHost));
    }

    /// Two days apart, the span is two calendar days: --min-days 2 holds.
    #[test]
    fn min_days_counts_calendar_days_first_to_last() {
        let p = policy("multi-node");
        let mut f = BTreeMap::new();
        flow(&mut f, "198.51.100.7", "192.0.2.21", 4747, 3, 3);
        let s = f.values_mut().next().unwrap();
        s.last = Timestamp::from_secs_nanos(1_767_603_600 + 86_400, 0);
        let t = Thresholds {
            min_attempts: 3,
            min_days: 2,
        };
        assert_eq!(allow_entries(&p, &f, t, &BTreeSet::new()).allow.len(), 1);
        let t = Thresholds { min_days: 3, ..t };
        let found = allow_entries(&p, &f, t, &BTreeSet::new());
        assert_eq!(
            (
                found.allow.len(),
                found.suspicious[0].reason,
                found.suspicious[0].days
            ),
            (0, Suspicion::FewDays, 2)
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
        flow(&mut f, "192.0.2.10", "10.1.1.1", 389, 3, 3);
        let inf = infer(&p, &f, Mode::Site);
        assert!(inf.user_networks.is_empty() && inf.nodes.is_empty());
        let names: Vec<&str> = inf
            .externals
            .iter()
            .map(|x| x.entry.name.as_str())
            .collect();
        assert_eq!(names, ["host-10-1-1-1"]);
        let patched = compile(&p.model, patched_site(&p.site, &p.model, &inf, &[])).unwrap();
        let allow = allow_entries(&patched, &f, Thresholds::DEFAULT, &inf.unknown_clients).allow;
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
