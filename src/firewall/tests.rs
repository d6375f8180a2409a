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
    let reason =
        "site multi-node allow[0]: the monitoring team's \"probe\" polls the scheduler API";
    for text in [nftables::render(&plan), powershell::render(&plan)] {
        // The `#` lines cite the reason as written.
        assert!(
            text.lines()
                .any(|l| l.trim_start() == format!("#   {reason}")),
            "allowance not cited:\n{text}"
        );
    }
    // PowerShell reads the description back exactly, quotes and all.
    let ps = powershell::render(&plan);
    let described = crate::quote::tests::powershell_statements(&ps)
        .into_iter()
        .flatten()
        .any(|t| matches!(t, crate::quote::tests::PsToken::Verbatim(v) if v.contains(reason)));
    assert!(described, "{ps}");
}

/// A plan whose names and texts are all `text`: an allow and a drop
/// inbound, an allow outbound.
fn plan_named(text: &str) -> Plan {
    let rule = |way, action, ports: Vec<u16>| Rule {
        way,
        action,
        ports,
        remote: Remote::Nets(vec!["192.0.2.11/32".parse().unwrap()]),
        summary: text.to_string(),
        cites: vec![Cite {
            rule: text.to_string(),
            text: text.to_string(),
        }],
    };
    Plan {
        site: text.to_string(),
        model: text.to_string(),
        node: text.to_string(),
        addresses: vec!["192.0.2.10".parse().unwrap()],
        direction: Direction::Both,
        rules: vec![
            rule(Way::Inbound, Action::Allow, vec![4242]),
            rule(
                Way::Inbound,
                Action::Drop(DropKind::NotExpected),
                vec![4243],
            ),
            rule(Way::Outbound, Action::Allow, vec![443]),
        ],
    }
}

/// The statements a PowerShell script of `plan` must hold: the removal of
/// the group, then one `New-NetFirewallRule` per rule, in the group.
fn powershell_holds_exactly_the_plan(plan: &Plan) -> Result<(), String> {
    use crate::quote::tests::{powershell_statements, PsToken};
    let script = powershell::render(plan);
    let statements = powershell_statements(&script);
    let group = PsToken::Verbatim(powershell::group(plan));
    let word = |w: &str| PsToken::Word(w.to_string());
    let fail = |why: &str| Err(format!("{why}:\n{script}\n{statements:#?}"));
    if statements.len() != 1 + plan.rules.len() {
        return fail("statements");
    }
    let remove = [word("Remove-NetFirewallRule"), word("-Group"), group];
    if statements[0][..3] != remove {
        return fail("the first statement removes the group");
    }
    for s in &statements[1..] {
        let at = |p: &str| s.iter().position(|t| *t == word(p)).map(|i| &s[i + 1]);
        let ok = s[0] == word("New-NetFirewallRule")
            && at("-Group") == Some(&remove[2])
            && matches!(at("-DisplayName"), Some(PsToken::Verbatim(_)))
            && matches!(at("-Description"), Some(PsToken::Verbatim(_)))
            && s.iter().all(|t| !matches!(t, PsToken::Expandable(_)))
            && s.ends_with(&[word("|"), word("Out-Null")]);
        if !ok {
            return fail("a New-NetFirewallRule in the group");
        }
    }
    Ok(())
}

/// The reproducers: a name with line breaks became a line of
/// code in the header, and `’` closed a `-DisplayName '…'` string.
#[test]
fn powershell_names_cannot_become_commands() {
    for name in [
        "x\nStart-Process notepad.exe\n#",
        "x\u{2019}; Start-Process notepad.exe; \u{2019}",
        "x'; Start-Process notepad.exe; '",
    ] {
        powershell_holds_exactly_the_plan(&plan_named(name)).unwrap();
        assert!(!powershell::render(&plan_named(name))
            .lines()
            .any(|l| l.trim_start().starts_with("Start-Process")));
    }
}

proptest::proptest! {
    #[test]
    fn powershell_holds_exactly_the_plan_for_any_text(s in crate::quote::tests::hostile()) {
        powershell_holds_exactly_the_plan(&plan_named(&s)).map_err(proptest::test_runner::TestCaseError::fail)?;
    }
}
