//! A [`Plan`] as one self-contained nftables table, `table inet portwatch`.
//!
//! The file declares, deletes and recreates the table, so `nft -f` replaces
//! an earlier version atomically and touches no other table. Base chains
//! use `policy accept`: the table only drops what the model speaks of, and
//! what other tables drop stays dropped. nft rule comments are limited to
//! 128 bytes, so each rule carries a short `comment` (model rule and vendor
//! page section) and the full citation as `#` lines above it.

use std::fmt::Write;

use super::{Action, Plan, Remote, Rule, Way};
use crate::quote::{comment, nft_string};

/// How many dropped packets per rule are logged, at most.
const LOG_RATE: &str = "10/second burst 20 packets";

pub fn render(plan: &Plan) -> String {
    let mut s = String::from("#!/usr/sbin/nft -f\n");
    let header = [
        plan.title(),
        format!("Written by: {}", plan.command("nftables")),
        "Load with `nft -f FILE`: replaces table inet portwatch, leaves other tables alone.".into(),
        "Remove with `nft delete table inet portwatch`.".into(),
        "Dropped attempts are logged (at most 10/s per rule) with the prefix \"portwatch <kind>: \".".into(),
    ];
    for line in header {
        let _ = writeln!(s, "{}", comment(&line));
    }
    s.push_str("\ntable inet portwatch\ndelete table inet portwatch\n\ntable inet portwatch {\n");
    for (way, chain, hook, lo) in [
        (Way::Inbound, "input", "input", "iif"),
        (Way::Outbound, "output", "output", "oif"),
    ] {
        let rules: Vec<&Rule> = plan.rules.iter().filter(|r| r.way == way).collect();
        if rules.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "    chain {chain} {{\n        type filter hook {hook} priority filter; policy accept;\n\
             \n        # Replies and the host's own loopback traffic (local-scope ports) pass.\n\
             \x20       ct state established,related accept comment \"portwatch: replies\"\n\
             \x20       {lo} \"lo\" accept comment \"portwatch: same host\""
        );
        for r in rules {
            rule(&mut s, r);
        }
        s.push_str("    }\n");
    }
    s.push_str("}\n");
    s
}

fn rule(s: &mut String, r: &Rule) {
    let _ = writeln!(s, "\n        {}", comment(&r.summary));
    for c in &r.cites {
        let _ = writeln!(
            s,
            "        {}",
            comment(&format!("  {}: {}", c.rule, c.text))
        );
    }
    let addr_key = match r.way {
        Way::Inbound => "saddr",
        Way::Outbound => "daddr",
    };
    let ports = match r.ports.as_slice() {
        [p] => p.to_string(),
        ps => format!(
            "{{ {} }}",
            ps.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    // A drop is logged by a rule of its own before it: rate-limited, so a
    // scan cannot flood the kernel log, and the drop holds past the limit.
    let (log, verdict) = match r.action {
        Action::Allow => (None, "accept"),
        Action::Drop(k) => (
            Some(format!(
                "limit rate {LOG_RATE} log prefix \"portwatch {}: \"",
                k.as_str()
            )),
            "drop",
        ),
    };
    let note = nft_string(&note(r));
    let set = |ns: &[&ipnet::IpNet]| {
        let items: Vec<String> = ns.iter().map(|n| super::host_or_net(n)).collect();
        format!("{{ {} }}", items.join(", "))
    };
    let matches: Vec<String> = match &r.remote {
        Remote::Any => vec![String::new()],
        Remote::Nets(nets) => {
            let (v4, v6): (Vec<_>, Vec<_>) = nets.iter().partition(|n| n.addr().is_ipv4());
            let mut m = Vec::new();
            if !v4.is_empty() {
                m.push(format!("ip {addr_key} {} ", set(&v4)));
            }
            if !v6.is_empty() {
                m.push(format!("ip6 {addr_key} {} ", set(&v6)));
            }
            m
        }
        Remote::AllBut(nets) => {
            let (v4, v6): (Vec<_>, Vec<_>) = nets.iter().partition(|n| n.addr().is_ipv4());
            let mut m = Vec::new();
            for (fam, proto, ns) in [("ip", "ipv4", v4), ("ip6", "ipv6", v6)] {
                m.push(if ns.is_empty() {
                    format!("meta nfproto {proto} ")
                } else {
                    format!("{fam} {addr_key} != {} ", set(&ns))
                });
            }
            m
        }
    };
    for m in matches {
        if let Some(log) = &log {
            let _ = writeln!(s, "        {m}tcp dport {ports} {log}");
        }
        let _ = writeln!(s, "        {m}tcp dport {ports} {verdict} comment {note}");
    }
}

/// A rule's nft comment before quoting, the short form: what the rule
/// does, the model rules, the page sections.
pub fn note(r: &Rule) -> String {
    let rules: Vec<&str> = r
        .cites
        .iter()
        .map(|c| c.rule.split(" (").next().unwrap_or(&c.rule))
        .enumerate()
        // The model's name once: `qlik-sense-enterprise ports[1], ports[5]`.
        .map(|(i, r)| match (i, r.split_once(" ports[")) {
            (i, Some((_, idx))) if i > 0 => &r[r.len() - idx.len() - 6..],
            _ => r,
        })
        .collect();
    let mut sections: Vec<&str> = r.cites.iter().map(|c| c.section()).collect();
    sections.dedup();
    format!(
        "portwatch: {}; {}; {}",
        r.summary.trim_start_matches("allow "),
        rules.join(", "),
        sections.join(", ")
    )
}
