use std::path::Path;

use super::*;
use crate::config::{load_policy, BUNDLED_SITES};
use crate::policy::Expectation;

fn policy(site: &str) -> Policy {
    load_policy(Path::new(site), None).unwrap().policy
}

#[test]
fn every_expected_inbound_edge_has_one_allow_rule_citing_its_origins() {
    for (site, _, _) in BUNDLED_SITES {
        let p = policy(site);
        let exp = Expectation::of(&p);
        for n in &p.site.nodes {
            let plan = Plan::derive(&p, &n.name, Direction::In).unwrap();
            let allows: Vec<&Rule> = (plan.rules.iter())
                .filter(|r| r.action == Action::Allow)
                .collect();
            let edges: Vec<_> = exp.edges.iter().filter(|e| e.dst == n.name).collect();
            assert_eq!(allows.len(), edges.len(), "{site} {}", n.name);
            for e in edges {
                let want = format!("allow {} -> {} {}/tcp", e.src, e.dst, e.port);
                let r = allows
                    .iter()
                    .find(|r| r.summary.starts_with(&want))
                    .unwrap_or_else(|| panic!("{site}: no rule `{want}`"));
                assert_eq!(r.ports, vec![e.port]);
                assert!(!r.cites.is_empty());
                for because in &e.because {
                    if !because.starts_with("site allow") {
                        assert!(
                            r.cites.iter().any(|c| &c.text == because),
                            "{want}: {because}"
                        );
                    }
                }
            }
            assert!(plan.rules.iter().all(|r| r.way == Way::Inbound));
        }
    }
}

#[test]
fn local_only_ports_are_never_opened_and_drops_cover_every_known_port() {
    for (site, _, _) in BUNDLED_SITES {
        let p = policy(site);
        for n in &p.site.nodes {
            let plan = Plan::derive(&p, &n.name, Direction::In).unwrap();
            let allowed: BTreeSet<u16> = (plan.rules.iter())
                .filter(|r| r.action == Action::Allow)
                .flat_map(|r| r.ports.clone())
                .collect();
            let dropped = |k| -> BTreeSet<u16> {
                (plan.rules.iter())
                    .filter(|r| r.action == Action::Drop(k))
                    .flat_map(|r| r.ports.clone())
                    .collect()
            };
            let (local, other) = (dropped(DropKind::LocalOnly), dropped(DropKind::NotExpected));
            assert!(local.is_disjoint(&allowed), "{site} {}", n.name);
            assert!(local.is_disjoint(&other));
            let all: BTreeSet<u16> = local.union(&other).copied().collect();
            assert_eq!(all, known_ports(&p), "{site} {}", n.name);
        }
    }
}

#[test]
fn central_of_multi_node_keeps_4244_local_and_allows_4242_from_each_rim_node() {
    let p = policy("multi-node");
    let plan = Plan::derive(&p, "central", Direction::In).unwrap();
    let local = plan
        .rules
        .iter()
        .find(|r| r.action == Action::Drop(DropKind::LocalOnly))
        .unwrap();
    assert!(local.ports.contains(&4244) && local.ports.contains(&4570));
    assert!(!local.ports.contains(&4242) && !local.ports.contains(&4432));
    for rim in ["proxy", "engine1", "engine2", "scheduler"] {
        let r = (plan.rules.iter())
            .find(|r| r.summary == format!("allow {rim} -> central 4242/tcp (qrs)"))
            .unwrap();
        let addr: IpNet = p.site.node(rim).unwrap().addresses[0].into();
        assert_eq!(r.remote, Remote::Nets(vec![addr]));
        assert!(r.cites[0].rule.starts_with("qlik-sense-enterprise ports["));
        assert_eq!(r.cites[0].section(), "Ports used between nodes");
    }
}

#[test]
fn outbound_rules_follow_edges_the_node_opens() {
    let p = policy("multi-node");
    let plan = Plan::derive(&p, "engine1", Direction::Out).unwrap();
    assert!(plan.rules.iter().all(|r| r.way == Way::Outbound));
    assert!(plan
        .rules
        .iter()
        .any(|r| r.summary == "allow engine1 -> central 4432/tcp (qrd)"));
    let both = Plan::derive(&p, "engine1", Direction::Both).unwrap();
    assert_eq!(
        both.rules.len(),
        plan.rules.len()
            + Plan::derive(&p, "engine1", Direction::In)
                .unwrap()
                .rules
                .len()
    );
}

#[test]
fn unknown_node_is_an_error_naming_the_nodes() {
    let p = policy("multi-node");
    let e = Plan::derive(&p, "corp-users", Direction::In).unwrap_err();
    assert!(e.to_string().contains("proxy, engine1"), "{e}");
}

#[test]
fn comments_fit_nftables_and_quote_nothing() {
    let p = policy("multi-node");
    let plan = Plan::derive(&p, "central", Direction::Both).unwrap();
    let text = nftables::render(&plan);
    for line in text.lines().filter(|l| l.contains("comment \"")) {
        let c = line
            .split("comment \"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        assert!(c.len() <= 127 && !c.contains('"'), "{line}");
        assert!(c.contains("ports[") || c.contains("portwatch: "), "{line}");
    }
    assert!(text.contains("table inet portwatch {"));
}

#[test]
fn a_site_allowance_is_allowed_and_cited_in_both_formats() {
    let dir = std::env::temp_dir().join(format!("portwatch-fw-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("site.yaml");
    let base = include_str!("../../deploy/sites/multi-node.yaml");
    let site = format!(
        "{base}allow:\n  - from: corp-users\n    to: central\n    port: 5252\n    \
         reason: \"the monitoring team's \\\"probe\\\" polls the scheduler API\"\n"
    );
    std::fs::write(&path, site).unwrap();
    let p = load_policy(&path, None).unwrap().policy;
    let _ = std::fs::remove_dir_all(&dir);
    let plan = Plan::derive(&p, "central", Direction::In).unwrap();
    let r = (plan.rules.iter())
        .find(|r| {
            r.summary
                .starts_with("allow corp-users -> central 5252/tcp")
        })
        .unwrap();
    assert_eq!(r.cites[0].rule, "site multi-node allow[0]");
    // 5252 is local on central, but the allowance opens it: not local-only.
    assert!(plan
        .rules
        .iter()
        .all(|r| r.action != Action::Drop(DropKind::LocalOnly) || !r.ports.contains(&5252)));
    for text in [nftables::render(&plan), powershell::render(&plan)] {
        let line = text
            .lines()
            .find(|l| l.contains("site multi-node allow[0]: the monitoring"))
            .unwrap_or_else(|| panic!("allowance not cited:\n{text}"));
        // Quotes from the site file never reach a rule's strings.
        assert!(line.contains("the monitoring teams probe polls"), "{line}");
    }
}
