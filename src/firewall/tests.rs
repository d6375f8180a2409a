use std::path::Path;

use super::*;
use crate::config::{load_policy, BUNDLED_SITES};
use crate::policy::Expectation;
use crate::quote::log_field;
use crate::quote::tests::{powershell_tokens_checked, PsToken};

fn policy(site: &str) -> Policy {
    load_policy(Path::new(site), None).unwrap().policy
}

#[test]
fn every_expected_inbound_edge_has_one_allow_rule_citing_its_origins() {
    for (site, _, _) in BUNDLED_SITES {
        let p = policy(site);
        let exp = Expectation::of(&p);
        for n in &p.site.nodes {
            let plan = Plan::derive(&p, &n.name, Direction::In, Blocks::Assigned).unwrap();
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
            let plan = Plan::derive(&p, &n.name, Direction::In, Blocks::Assigned).unwrap();
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
            let id = p.node_id(&n.name).unwrap();
            let assigned: BTreeSet<u16> = (assigned_ports(&p, id, Way::Inbound).into_keys())
                .chain(allowed.iter().copied())
                .collect();
            assert_eq!(all, assigned, "{site} {}", n.name);
            let every = Plan::derive(&p, &n.name, Direction::In, Blocks::AllKnown).unwrap();
            let all: BTreeSet<u16> = (every.rules.iter())
                .filter(|r| r.action != Action::Allow)
                .flat_map(|r| r.ports.clone())
                .collect();
            assert_eq!(all, known_ports(&p), "{site} {}", n.name);
        }
    }
}

/// The engine: 80, 443 and 445 are ports the model knows, but on
/// proxies and file shares, not on an engine. An engine's plan leaves them
/// alone (SMB admin shares keep working) unless --block-all-model-ports
/// asks for them, and then says so in the rule's citation.
#[test]
fn an_engine_blocks_only_the_ports_the_model_assigns_to_it() {
    let p = policy("multi-node");
    let dropped = |blocks| -> BTreeSet<u16> {
        let plan = Plan::derive(&p, "engine1", Direction::In, blocks).unwrap();
        (plan.rules.iter())
            .filter(|r| r.action != Action::Allow)
            .flat_map(|r| r.ports.clone())
            .collect()
    };
    let assigned = dropped(Blocks::Assigned);
    for port in [80, 443, 445, 4243, 4432, 5050] {
        assert!(!assigned.contains(&port), "{port}: {assigned:?}");
    }
    // Its own listeners are still closed to hosts no edge allows.
    for port in [4242, 4747, 4748] {
        assert!(assigned.contains(&port), "{port}");
    }
    let all = dropped(Blocks::AllKnown);
    assert!(all.contains(&80) && all.contains(&443) && all.contains(&445));
    let plan = Plan::derive(&p, "engine1", Direction::In, Blocks::AllKnown).unwrap();
    let opted = (plan.rules.iter())
        .flat_map(|r| &r.cites)
        .find(|c| c.origin == CiteOrigin::Option)
        .unwrap();
    assert!(opted.text.contains("80,443,445"), "{}", opted.text);
    assert!(plan
        .command("powershell")
        .ends_with(" --block-all-model-ports"));
}

/// Every script for every node of every bundled site (both directions,
/// both block scopes, with --enable-logging's part) tokenizes whole: every
/// string and comment closed, every bracket balanced; its double-quoted
/// strings (auditpol's subcategories) expand nothing. This is how the
/// scripts are checked: pwsh is not on the build machines.
#[test]
fn every_powershell_script_tokenizes_balanced() {
    for (site, _, _) in BUNDLED_SITES {
        let p = policy(site);
        for n in &p.site.nodes {
            for (direction, blocks) in [
                (Direction::In, Blocks::Assigned),
                (Direction::Both, Blocks::AllKnown),
            ] {
                let plan = Plan::derive(&p, &n.name, direction, blocks).unwrap();
                let script = format!(
                    "{}\n{}",
                    powershell::render(&plan),
                    powershell::logging(&plan)
                );
                let tokens = powershell_tokens_checked(&script)
                    .unwrap_or_else(|e| panic!("{site} {}: {e}\n{script}", n.name));
                for t in &tokens {
                    if let PsToken::Expandable(v) = t {
                        assert!(!v.contains(['$', '`']), "{site} {}: {v}", n.name);
                    }
                }
                let requires: Vec<&PsToken> = tokens.iter().take(6).collect();
                assert_eq!(
                    requires,
                    [
                        &PsToken::Comment("Requires -Version 5.1".into()),
                        &PsToken::End,
                        &PsToken::Comment("Requires -Modules NetSecurity".into()),
                        &PsToken::End,
                        &PsToken::Comment("Requires -RunAsAdministrator".into()),
                        &PsToken::End,
                    ]
                );
            }
        }
    }
}

#[test]
fn central_of_multi_node_keeps_4244_local_and_allows_4242_from_each_rim_node() {
    let p = policy("multi-node");
    let plan = Plan::derive(&p, "central", Direction::In, Blocks::Assigned).unwrap();
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
    let plan = Plan::derive(&p, "engine1", Direction::Out, Blocks::Assigned).unwrap();
    assert!(plan.rules.iter().all(|r| r.way == Way::Outbound));
    assert!(plan
        .rules
        .iter()
        .any(|r| r.summary == "allow engine1 -> central 4432/tcp (qrd)"));
    let both = Plan::derive(&p, "engine1", Direction::Both, Blocks::Assigned).unwrap();
    assert_eq!(
        both.rules.len(),
        plan.rules.len()
            + Plan::derive(&p, "engine1", Direction::In, Blocks::Assigned)
                .unwrap()
                .rules
                .len()
    );
}

#[test]
fn unknown_node_is_an_error_naming_the_nodes() {
    let p = policy("multi-node");
    let e = Plan::derive(&p, "corp-users", Direction::In, Blocks::Assigned).unwrap_err();
    assert!(e.to_string().contains("proxy, engine1"), "{e}");
}

#[test]
fn comments_fit_nftables_and_quote_nothing() {
    let p = policy("multi-node");
    let plan = Plan::derive(&p, "central", Direction::Both, Blocks::Assigned).unwrap();
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
    let plan = Plan::derive(&p, "central", Direction::In, Blocks::Assigned).unwrap();
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
    let described = powershell_tokens_checked(&ps)
        .unwrap()
        .into_iter()
        .any(|t| matches!(t, PsToken::Verbatim(v) if v.contains(reason)));
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
        cites: vec![
            Cite {
                origin: CiteOrigin::Model,
                rule: text.to_string(),
                text: text.to_string(),
            },
            Cite {
                origin: CiteOrigin::Site,
                rule: text.to_string(),
                text: text.to_string(),
            },
        ],
    };
    Plan {
        site: text.to_string(),
        model: text.to_string(),
        page: text.to_string(),
        blocks: Blocks::Assigned,
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

/// A script's structure: its tokens with the text of strings and comments
/// left out.
fn shape(tokens: &[PsToken]) -> Vec<PsToken> {
    (tokens.iter())
        .map(|t| match t {
            PsToken::Verbatim(_) => PsToken::Verbatim(String::new()),
            PsToken::Comment(_) => PsToken::Comment(String::new()),
            t => t.clone(),
        })
        .collect()
}

/// What a PowerShell script of `plan` must be, whatever the texts in it:
/// it tokenizes whole (strings closed, brackets balanced), has the shape of
/// the same plan with every text `x` (so no text became code), names the
/// group in one string, and writes one `New-NetFirewallRule` per rule,
/// each in the group, its display name and description a string.
fn powershell_holds_exactly_the_plan(plan: &Plan) -> Result<(), String> {
    let script = powershell::render(plan);
    let tokens = powershell_tokens_checked(&script).map_err(|e| format!("{e}:\n{script}"))?;
    let plain = powershell::render(&plan_named("x"));
    let plain = powershell_tokens_checked(&plain).map_err(|e| format!("{e}:\n{plain}"))?;
    let fail = |why: &str| Err(format!("{why}:\n{script}\n{tokens:#?}"));
    if shape(&tokens) != shape(&plain) {
        return fail("not the shape of the plain script");
    }
    if tokens.iter().any(|t| matches!(t, PsToken::Expandable(_))) {
        return fail("an expandable string");
    }
    let word = |w: &str| PsToken::Word(w.to_string());
    let group = [
        PsToken::Variable("Group".into()),
        word("="),
        PsToken::Verbatim(powershell::group(plan)),
    ];
    if !tokens.windows(3).any(|w| w == group) {
        return fail("$Group is the group");
    }
    let statements: Vec<&[PsToken]> = tokens.split(|t| *t == PsToken::End).collect();
    let news: Vec<&&[PsToken]> = (statements.iter())
        .filter(|s| s.first() == Some(&word("New-NetFirewallRule")))
        .collect();
    if news.len() != plan.rules.len() {
        return fail("one New-NetFirewallRule per rule");
    }
    for (s, r) in news.iter().zip(&plan.rules) {
        let at = |p: &str| s.iter().position(|t| *t == word(p)).map(|i| &s[i + 1]);
        let display = format!("{}: {}", powershell::group(plan), log_field(&r.summary));
        let ok = at("-Group") == Some(&PsToken::Variable("Group".into()))
            && matches!(at("-DisplayName"), Some(PsToken::Verbatim(d)) if d.starts_with(&display))
            && matches!(at("-Description"), Some(PsToken::Verbatim(d)) if d.chars().count() <= powershell::DESCRIPTION_MAX)
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
