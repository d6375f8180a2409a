//! A proposal as text: YAML with the evidence in comments (the document is
//! a site file or a patch as written), or JSON with the document and the
//! evidence side by side.

use serde_json::{json, Map, Value};

use super::{Kind, Proposal, Proposed};

use crate::quote::{comment, yaml_scalar as q};

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", v.join(", "))
}

fn comments(out: &mut String, indent: &str, lines: &[String]) {
    for l in lines {
        out.push_str(&format!("{indent}{}\n", comment(l)));
    }
}

fn section<T>(
    out: &mut String,
    key: &str,
    items: &[Proposed<T>],
    mut fields: impl FnMut(&T) -> Vec<(&'static str, String)>,
) {
    if items.is_empty() {
        return;
    }
    out.push_str(&format!("{key}:\n"));
    for p in items {
        comments(out, "  ", &p.evidence);
        for (i, (k, v)) in fields(&p.entry).into_iter().enumerate() {
            let lead = if i == 0 { "  - " } else { "    " };
            out.push_str(&format!("{lead}{k}: {v}\n"));
        }
    }
}

pub fn yaml(p: &Proposal) -> String {
    let mut out = String::new();
    let src = &p.source;
    let drawn = format!(
        "Drawn from {} ({} to {}): {} connection attempts, {} established.",
        src.captures.join(", "),
        src.first_seen.as_deref().unwrap_or("-"),
        src.last_seen.as_deref().unwrap_or("-"),
        src.attempts,
        src.established
    );
    let head = match p.kind {
        Kind::Patch => vec![
            format!(
                "portwatch propose: additions to site `{}` drawn from traffic, for review.",
                p.site
            ),
            "Nothing is applied: append each list below to the site file's list of the".into(),
            "same name (add the key if the site has none), then `portwatch check`.".into(),
            drawn,
        ],
        Kind::Site => vec![
            "portwatch propose: a site file inferred from traffic, for review.".into(),
            "Check the roles, rename the nodes, then `portwatch check --site FILE`.".into(),
            drawn,
        ],
    };
    comments(&mut out, "", &head);
    if p.kind == Kind::Site {
        out.push_str(&format!("site: {}\n", q(&p.site)));
        out.push_str(&format!("model: {}\n", q(&p.model)));
        out.push_str(&format!(
            "description: {}\n",
            q("inferred from traffic by portwatch propose")
        ));
    }
    let empty = p.nodes.is_empty()
        && p.user_networks.is_empty()
        && p.externals.is_empty()
        && p.allow.is_empty();
    if empty && p.kind == Kind::Patch {
        out.push_str("# The traffic needs no additions.\n{}\n");
    }
    section(&mut out, "nodes", &p.nodes, |n| {
        let mut f = vec![
            ("name", q(&n.name)),
            ("addresses", list(&n.addresses)),
            ("roles", list(&n.roles)),
        ];
        if let Some(s) = &n.services {
            f.push(("services", list(s)));
        }
        f
    });
    section(&mut out, "user_networks", &p.user_networks, |u| {
        vec![("name", q(&u.name)), ("cidrs", list(&u.cidrs))]
    });
    section(&mut out, "externals", &p.externals, |x| {
        vec![
            ("name", q(&x.name)),
            ("addresses", list(&x.addresses)),
            ("services", list(&x.services)),
            ("description", q(&x.description)),
        ]
    });
    section(&mut out, "allow", &p.allow, |a| {
        vec![
            ("from", q(&a.from)),
            ("to", q(&a.to)),
            ("port", a.port.to_string()),
            ("reason", q(&a.reason)),
        ]
    });
    if !p.required_edges.is_empty() {
        out.push_str(
            "\n# Required edges: the longest gap between two pieces of evidence, to set\n",
        );
        out.push_str("# a window from data (an `overrides` entry with `window:`).\n");
        let lines: Vec<String> = (p.required_edges.iter())
            .map(|e| {
                let gap = match e.longest_gap_seconds {
                    Some(s) => format!("longest gap {}", human(s)),
                    None if e.evidence == 1 => "seen once: no gap to measure".into(),
                    None => "no evidence".into(),
                };
                format!(
                    "  {} -> {}:{}  window {}  evidence {}  {gap}",
                    e.from,
                    e.to,
                    e.port,
                    human(e.window_seconds),
                    e.evidence
                )
            })
            .collect();
        comments(&mut out, "", &lines);
    }
    if !p.suspicious.is_empty() {
        out.push_str(
            "\n# Suspicious, for review: not proposed. Declare or allow by hand what belongs.\n",
        );
        let lines: Vec<String> = (p.suspicious.iter())
            .map(|h| {
                format!(
                    "  {} {} -> {}:{}: {} attempt{} ({} established) from {} address{} over {} \
                     day{}, first {}, last {}: {}",
                    h.reason.as_str(),
                    h.src,
                    h.dst,
                    h.port,
                    h.attempts,
                    if h.attempts == 1 { "" } else { "s" },
                    h.established,
                    h.source_addresses,
                    if h.source_addresses == 1 { "" } else { "es" },
                    h.days,
                    if h.days == 1 { "" } else { "s" },
                    h.first_seen,
                    h.last_seen,
                    h.why
                )
            })
            .collect();
        comments(&mut out, "", &lines);
    }
    if !p.left_out.is_empty() {
        out.push_str("\n# Left out: a replay against the patched site still reports these.\n");
        let lines: Vec<String> = (p.left_out.iter())
            .map(|l| {
                format!(
                    "  {} {} -> {}:{} ({}x): {}",
                    l.kind.as_str(),
                    l.src,
                    l.dst,
                    l.port,
                    l.count,
                    l.why
                )
            })
            .collect();
        comments(&mut out, "", &lines);
    }
    if !p.notes.is_empty() {
        out.push_str("\n# Notes:\n");
        let lines: Vec<String> = p.notes.iter().map(|n| format!("  {n}")).collect();
        comments(&mut out, "", &lines);
    }
    out
}

fn human(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn entries<T: serde::Serialize>(items: &[Proposed<T>]) -> (Value, Value) {
    let doc = items.iter().map(|p| json!(p.entry)).collect();
    let ev = items.iter().map(|p| json!(p.evidence)).collect();
    (Value::Array(doc), Value::Array(ev))
}

pub fn json(p: &Proposal) -> String {
    let mut doc = Map::new();
    let mut evidence = Map::new();
    if p.kind == Kind::Site {
        doc.insert("site".into(), json!(p.site));
        doc.insert("model".into(), json!(p.model));
    }
    let mut put = |key: &str, (d, e): (Value, Value)| {
        if d.as_array().is_some_and(|a| !a.is_empty()) {
            doc.insert(key.into(), d);
            evidence.insert(key.into(), e);
        }
    };
    put("nodes", entries(&p.nodes));
    put("user_networks", entries(&p.user_networks));
    put("externals", entries(&p.externals));
    put("allow", entries(&p.allow));
    let v = json!({
        "kind": p.kind,
        "site": p.site,
        "model": p.model,
        "source": p.source,
        "document": doc,
        "evidence": evidence,
        "allow_evidence": p.allow_evidence,
        "required_edges": p.required_edges,
        "suspicious": p.suspicious,
        "left_out": p.left_out,
        "notes": p.notes,
    });
    serde_json::to_string_pretty(&v).expect("serializable")
}
