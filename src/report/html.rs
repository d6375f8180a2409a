//! The report as one self-contained HTML page: no scripts, styles, fonts or
//! images from anywhere else, so it can be attached to a ticket and opened
//! offline. The site diagram comes in as SVG (laid out by the caller); the
//! rest is the report's own data. The same page is served live by `run`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{EdgeEntry, Finding, Report};
use crate::quote::html as esc;
use crate::state::tally::FindingKind;
use crate::state::EdgeState;
use crate::time::Timestamp;

/// What surrounds the report on the page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The diagram, an `<svg>` element.
    pub svg: String,
    /// How the diagram was laid out, and why that way.
    pub layout: String,
    /// For the live page: reload every this many seconds.
    pub refresh_seconds: Option<u32>,
    /// Links shown in the header: (href, text).
    pub links: Vec<(String, String)>,
    /// What the page covers, e.g. "replay of fixtures/demo.pcap".
    pub subtitle: String,
    /// Who ran the audit and when (`replay`, `watch`); none on the live page.
    pub signoff: Option<SignOff>,
}

/// Who ran an audit (a user name from the environment, or a uid) and when
/// (the wall clock, passed in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignOff {
    pub user: String,
    pub at: Timestamp,
}

const STYLE: &str = "
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#263238;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cfd8dc}header nav a{color:#80cbc4;margin-right:14px}
main{padding:12px 24px}section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:14px 0;padding:12px 16px}
h2{font-size:16px;margin:0 0 10px}.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{border:1px solid #e0e0e0;border-radius:6px;padding:6px 12px;min-width:90px}.tile b{display:block;font-size:20px}
.tile.bad b{color:#c62828}.tile small{color:#607d8b}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff1;vertical-align:top}
th{background:#f5f5f5;cursor:pointer;user-select:none}tbody.group th{background:#fff;cursor:default;font-size:13px;padding-top:10px}
.kind{font-weight:bold;white-space:nowrap}.unexpected{color:#6a1b9a}.local_only{color:#ad1457}.unknown_host{color:#5d4037}
.accepted{color:#2e7d32;font-style:italic}.blocked{color:#ef6c00}.missing{color:#c62828}.seen{color:#2e7d32}.not_observed{color:#757575}
.diagram{overflow:auto;text-align:center}.diagram svg{max-width:100%;height:auto}
.legend span{margin-right:14px;white-space:nowrap}.legend i{display:inline-block;width:22px;height:0;border-top:3px solid;vertical-align:middle;margin-right:4px}
.legend i.dash{border-top-style:dashed}.note{color:#607d8b;font-size:12px}
svg .group-label{font-weight:bold;fill:#546e7a}svg g.not_observed{opacity:.3}svg g.not_observed:hover{opacity:1}
#hide-not-observed:checked~.diagram svg g.not_observed{display:none}details summary{cursor:pointer;margin:10px 0 6px}svg .line-label{font-size:10px;paint-order:stroke;stroke:#fff;stroke-width:3px}
";

/// Sort a table's rows (within each tbody) by the clicked column.
const SCRIPT: &str = "
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
      t.querySelectorAll('tbody').forEach(function(b){
        var rows=Array.prototype.slice.call(b.querySelectorAll('tr.row'));
        rows.sort(function(x,y){
          var a=x.children[i].dataset.v||x.children[i].textContent,c=y.children[i].dataset.v||y.children[i].textContent;
          var n=parseFloat(a)-parseFloat(c);var r=isNaN(n)?a.localeCompare(c):n;return asc?r:-r;});
        rows.forEach(function(r){b.appendChild(r);});});});});});
";

pub fn render(r: &Report, page: &Page) -> String {
    let mut s = String::new();
    let title = format!("portwatch audit: site {}", r.summary.site);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{}\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n<header><h1>{}</h1><p>model {} · {}</p>",
        page.refresh_seconds
            .map(|n| format!("<meta http-equiv=\"refresh\" content=\"{n}\">"))
            .unwrap_or_default(),
        esc(&title),
        esc(&title),
        esc(&r.summary.model),
        esc(&page.subtitle),
    );
    if !page.links.is_empty() {
        s.push_str("<nav>");
        for (href, text) in &page.links {
            let _ = write!(s, "<a href=\"{}\">{}</a>", esc(href), esc(text));
        }
        s.push_str("</nav>");
    }
    s.push_str("</header>\n<main>\n");
    summary(&mut s, r);
    diagram(&mut s, page);
    baseline(&mut s, r);
    findings(&mut s, &r.findings);
    acceptances(&mut s, r);
    edges(&mut s, r);
    unknown_flows(&mut s, r);
    capture(&mut s, r);
    signoff(&mut s, r, page);
    let _ = write!(s, "</main>\n<script>{SCRIPT}</script>\n</body></html>\n");
    s
}

fn tile(s: &mut String, label: &str, n: u64, bad: bool) {
    let _ = write!(
        s,
        "<div class=\"tile{}\" data-count=\"{}\"><b>{n}</b><small>{}</small></div>",
        if bad && n > 0 { " bad" } else { "" },
        esc(label),
        esc(label)
    );
}

fn summary(s: &mut String, r: &Report) {
    s.push_str("<section id=\"summary\"><h2>Summary</h2><div class=\"tiles\">");
    let total: u64 = r.summary.findings.values().sum();
    tile(s, "findings", total, true);
    for (k, n) in &r.summary.findings {
        tile(s, k, *n, true);
    }
    s.push_str("</div><h2 style=\"margin-top:12px\">Connections and required edges</h2><div class=\"tiles\">");
    for (k, n) in &r.summary.connections {
        tile(s, &format!("{k} connections"), *n, *k != "expected");
    }
    for (k, n) in &r.summary.outcomes {
        tile(s, k, *n, matches!(*k, "refused" | "unanswered" | "denied"));
    }
    for (k, n) in &r.summary.required_edges {
        tile(s, &format!("required {k}"), *n, *k == "missing");
    }
    s.push_str("</div></section>\n");
}

fn diagram(s: &mut String, page: &Page) {
    s.push_str("<section id=\"diagram\"><h2>Site diagram</h2><div class=\"legend\">");
    for (class, text, dash) in [
        ("seen", "required edge seen", false),
        ("missing", "required edge missing", false),
        ("not_observed", "required edge not observed yet", true),
        (
            "blocked",
            "expected edge blocked (refused/unanswered/denied)",
            false,
        ),
        ("unexpected", "unexpected flow (count)", true),
        ("local_only", "local-only port reached", true),
        ("unknown_host", "host outside the inventory", true),
    ] {
        let _ = write!(
            s,
            "<span class=\"{class}\"><i class=\"{}\"></i>{text}</span>",
            if dash { "dash" } else { "" }
        );
    }
    // A CSS-only switch: the page works without its script.
    let _ = writeln!(
        s,
        "</div><input type=\"checkbox\" id=\"hide-not-observed\"><label for=\"hide-not-observed\" class=\"note\"> \
         hide required edges not observed yet (drawn faint; hover one for why)</label>\
         <div class=\"diagram\">{}</div><p class=\"note\">Layout: {}</p></section>",
        page.svg,
        esc(&page.layout)
    );
}

fn findings(s: &mut String, fs: &[Finding]) {
    let _ = write!(
        s,
        "<section id=\"findings\"><h2>Findings ({})</h2>",
        fs.len()
    );
    if fs.is_empty() {
        s.push_str("<p>None: every connection matched the model and every required edge was seen.</p></section>\n");
        return;
    }
    s.push_str(
        "<table class=\"sortable\"><thead><tr><th>kind</th><th>source</th><th>destination</th><th>port</th>\
         <th>service</th><th>count</th><th>outcomes</th><th>first seen</th><th>last seen</th><th>explanation</th></tr></thead>",
    );
    let mut by_kind: BTreeMap<FindingKind, Vec<&Finding>> = BTreeMap::new();
    for f in fs {
        by_kind.entry(f.kind).or_default().push(f);
    }
    for (kind, list) in by_kind {
        let _ = write!(
            s,
            "<tbody class=\"group\"><tr><th colspan=\"10\" class=\"{k}\">{k} ({})</th></tr></tbody><tbody data-kind=\"{k}\">",
            list.len(),
            k = kind.as_str()
        );
        for f in list {
            let end = |name: &str, addr: &Option<String>| match addr {
                Some(a) => format!("{} <span class=\"note\">{}</span>", esc(name), esc(a)),
                None => esc(name),
            };
            let outcomes = f
                .outcomes
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = write!(
                s,
                "<tr class=\"row finding\" data-finding=\"{}:{}:{}:{}\"><td class=\"kind {k}\">{k}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                kind.as_str(),
                esc(&f.src),
                esc(&f.dst),
                f.port,
                end(&f.src, &f.src_addr),
                end(&f.dst, &f.dst_addr),
                f.port,
                esc(&f.service),
                f.count,
                esc(&outcomes),
                esc(f.first_seen.as_deref().unwrap_or("-")),
                esc(f.last_seen.as_deref().unwrap_or("-")),
                explanation_cell(f),
                k = kind.as_str(),
            );
        }
        s.push_str("</tbody>");
    }
    s.push_str("</table></section>\n");
}

/// A finding's explanation, and the acceptance it occurred under.
fn explanation_cell(f: &Finding) -> String {
    let Some(a) = &f.accepted else {
        return esc(&f.explanation);
    };
    format!(
        "{}<br><span class=\"accepted\" data-ticket=\"{}\">accepted until {} under {} (owner {}): {}</span>",
        esc(&f.explanation),
        esc(&a.ticket),
        esc(&a.expires),
        esc(&a.ticket),
        esc(&a.owner),
        esc(&a.reason)
    )
}

/// `replay --baseline`: how many findings the earlier report had.
fn baseline(s: &mut String, r: &Report) {
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            s,
            "<section id=\"baseline\"><h2>Baseline</h2><p>Findings new since {}: {}; already known there, left out: {}.</p></section>",
            esc(&b.path),
            b.new,
            b.known
        );
    }
}

/// The site's accepted deviations and what each matched.
fn acceptances(s: &mut String, r: &Report) {
    if r.acceptances.is_empty() {
        return;
    }
    let _ = write!(
        s,
        "<section id=\"acceptances\"><h2>Accepted deviations ({})</h2><table><thead><tr><th>entry</th>\
         <th>flow</th><th>ticket</th><th>owner</th><th>last day</th><th>matched</th></tr></thead><tbody>",
        r.acceptances.len()
    );
    for u in &r.acceptances {
        let matched = match u.unused() {
            true => "no finding in the input".to_string(),
            false => format!(
                "{} findings ({} occurrences); {} after it expired",
                u.findings, u.occurrences, u.findings_after_expiry
            ),
        };
        let _ = write!(
            s,
            "<tr class=\"acceptance{}\"><td>accepted[{}]</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if u.unused() { " unused" } else { "" },
            u.index,
            esc(&u.flow),
            esc(&u.ticket),
            esc(&u.owner),
            esc(&u.expires),
            esc(&matched),
        );
    }
    s.push_str("</tbody></table></section>\n");
}

fn edges(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<section id=\"edges\"><h2>Required edges ({})</h2>",
        r.edges.len()
    );
    if r.edges.is_empty() {
        s.push_str("<p>None judged: the site has none, the sensor sees none, or nothing was read.</p></section>\n");
        return;
    }
    // Edges without a verdict yet crowd out the ones with one: they go
    // last, folded unless they are all there is.
    let (quiet, judged): (Vec<&EdgeEntry>, Vec<&EdgeEntry>) =
        (r.edges.iter()).partition(|e| e.state == EdgeState::NotObserved);
    if !judged.is_empty() {
        edge_table(s, r, &judged, false);
    }
    if !quiet.is_empty() {
        let _ = write!(
            s,
            "<details id=\"not-observed\"{}><summary class=\"not_observed\">{} not observed yet: no verdict, and why</summary>",
            if judged.is_empty() { " open" } else { "" },
            quiet.len()
        );
        edge_table(s, r, &quiet, true);
        s.push_str("</details>");
    }
    s.push_str("</section>\n");
}

fn edge_table(s: &mut String, r: &Report, rows: &[&EdgeEntry], why: bool) {
    let _ = write!(
        s,
        "<table class=\"sortable\"><thead><tr><th>source</th><th>destination</th><th>port</th><th>service</th>\
         <th>state</th><th>window</th><th>evidence</th><th>last seen</th>{}</tr></thead><tbody>",
        if why { "<th>why not observed</th>" } else { "" }
    );
    for e in rows {
        let blocked = r.findings.iter().any(|f| {
            f.kind == FindingKind::Blocked && f.src == e.src && f.dst == e.dst && f.port == e.port
        });
        let reason = esc(e.reason.as_deref().unwrap_or(""));
        let _ = write!(
            s,
            "<tr class=\"row edge\" data-edge=\"{}:{}:{}\" title=\"{reason}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{st}\">{st}{}</td><td data-v=\"{}\">{}</td><td>{}</td><td>{}</td>{}</tr>",
            esc(&e.src),
            esc(&e.dst),
            e.port,
            esc(&e.src),
            esc(&e.dst),
            e.port,
            service_cell(e),
            if blocked { " <span class=\"blocked\">(blocked)</span>" } else { "" },
            e.window_seconds,
            humantime::format_duration(std::time::Duration::from_secs(e.window_seconds)),
            e.evidence,
            esc(e.last_seen.as_deref().unwrap_or("-")),
            if why { format!("<td class=\"reason\">{reason}</td>") } else { String::new() },
            st = e.state.as_str(),
        );
    }
    s.push_str("</tbody></table>");
}

/// The service, and the executables the nodes' audit events named for it.
fn service_cell(e: &EdgeEntry) -> String {
    if e.executables.is_empty() {
        return esc(&e.service);
    }
    format!(
        "{}<br><small class=\"proc\" title=\"{}\">{}</small>",
        esc(&e.service),
        esc(&e.executables.join("\n")),
        esc(&super::executable_names(&e.executables))
    )
}

/// The flows behind the `unknown` outcome (attempts whose fate the
/// sources could not tell), most attempts first; none, no section.
fn unknown_flows(s: &mut String, r: &Report) {
    let mut rows: Vec<(&super::FlowEntry, u64)> = (r.flows.iter())
        .filter_map(|f| Some((f, *f.outcomes.get("unknown")?)))
        .filter(|(_, n)| *n > 0)
        .collect();
    if rows.is_empty() {
        return;
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    s.push_str(
        "<section id=\"unknown-flows\"><h2>Flows with outcome unknown</h2>\
         <p class=\"note\">Attempts whose fate the sources could not tell (no SYN-ACK, RST or \
         retransmission seen, e.g. a one-way capture).</p>\
         <table class=\"sortable\"><thead><tr><th>Source</th><th>Destination</th><th>Port</th>\
         <th>Service</th><th>Verdict</th><th>Unknown</th><th>Attempts</th></tr></thead><tbody>",
    );
    for (f, n) in rows {
        let _ = write!(
            s,
            "<tr class=\"row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{n}</td><td>{}</td></tr>",
            esc(&f.src),
            esc(&f.dst),
            f.port,
            esc(&f.service),
            f.verdict.as_str(),
            f.attempts
        );
    }
    s.push_str("</tbody></table></section>\n");
}

/// The sign-off block: who ran the audit, when, over which span, against
/// which site and model files (SHA-256) and portwatch version; lines to
/// sign on.
fn signoff(s: &mut String, r: &Report, page: &Page) {
    s.push_str("<section id=\"signoff\"><h2>Sign-off</h2><table><tbody>");
    let mut row = |k: &str, v: &str| {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    };
    if let Some(so) = &page.signoff {
        row("run by", &so.user);
        row("run at", &so.at.rfc3339());
    }
    let c = &r.capture;
    row(
        "span",
        &format!(
            "{} to {}",
            c.first_seen.as_deref().unwrap_or("-"),
            c.last_seen.as_deref().unwrap_or("-")
        ),
    );
    if let Some(sel) = c
        .selection
        .as_ref()
        .filter(|s| s.since.is_some() || s.until.is_some())
    {
        row(
            "time range",
            &format!(
                "from {} until {} (exclusive)",
                sel.since.as_deref().unwrap_or("the start"),
                sel.until.as_deref().unwrap_or("the end")
            ),
        );
    }
    if let Some(f) = c.selection.as_ref().and_then(|s| s.filter.as_deref()) {
        row("packet filter", f);
    }
    for f in &r.provenance.files {
        row(
            f.role.as_str(),
            &format!("{} (SHA-256 {})", f.path, f.sha256),
        );
    }
    row("portwatch", env!("CARGO_PKG_VERSION"));
    s.push_str("</tbody></table><table class=\"sign\"><tbody>");
    for line in ["Reviewed by (name)", "Role", "Date", "Signature"] {
        let _ = write!(
            s,
            "<tr><th>{}</th><td style=\"border-bottom:1px solid #263238;width:60%\">&nbsp;</td></tr>",
            esc(line)
        );
    }
    s.push_str("</tbody></table></section>\n");
}

fn capture(s: &mut String, r: &Report) {
    let c = &r.capture;
    let nonzero = |m: &BTreeMap<&'static str, u64>| {
        let v: Vec<String> = m
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    s.push_str("<section id=\"capture\"><h2>Capture</h2><table><tbody>");
    let mut row = |k: &str, v: String| {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    for src in &c.sources {
        let stopped = match &src.stopped {
            Some(st) => format!("; stopped at byte {}: {}", st.offset, st.reason),
            None => String::new(),
        };
        if let Some(f) = &src.fidelity {
            let (sees, blind) = f.sees.split();
            let node = f.sensor.as_deref().unwrap_or("unknown");
            let records = nonzero(&f.records);
            row(
                "source",
                format!(
                    "{} ({}, node {node}): {} records ({records}){stopped}",
                    src.path, src.format, src.packets
                ),
            );
            row(
                "fidelity",
                format!("sees {}; cannot see {}", sees.join(", "), blind.join(", ")),
            );
            continue;
        }
        row(
            "source",
            format!(
                "{} ({}, {}): {} packets{stopped}",
                src.path,
                src.format,
                src.link_types.join(", "),
                src.packets
            ),
        );
    }
    row(
        "span",
        format!(
            "{} to {} ({:.1} s)",
            c.first_seen.as_deref().unwrap_or("-"),
            c.last_seen.as_deref().unwrap_or("-"),
            c.duration_seconds
        ),
    );
    if let Some(sel) = &c.selection {
        if sel.since.is_some() || sel.until.is_some() {
            row(
                "time range",
                format!(
                    "from {} until {} (exclusive): skipped {} frames and {} records outside it",
                    sel.since.as_deref().unwrap_or("the start"),
                    sel.until.as_deref().unwrap_or("the end"),
                    sel.frames_outside_range,
                    sel.records_outside_range
                ),
            );
        }
        if let Some(f) = &sel.filter {
            row(
                "packet filter",
                format!(
                    "{f}: skipped {} frames it did not pass",
                    sel.frames_filtered_out.unwrap_or(0)
                ),
            );
        }
    }
    row("packets", c.packets.to_string());
    row("control packets", nonzero(&c.control_packets));
    row("skipped packets", nonzero(&c.skipped_packets));
    row("decode errors", nonzero(&c.decode_errors));
    if !c.encapsulations.is_empty() {
        row("encapsulations", nonzero(&c.encapsulations));
        row("mirror sessions", c.sessions_line());
    }
    row(
        "replies visible",
        if c.replies_visible {
            "yes: silence after a SYN means unanswered".into()
        } else {
            "no SYN-ACK seen: one-way capture, silence is unknown".into()
        },
    );
    row(
        "flow table",
        format!(
            "capacity {}, peak {}, evictions: {}",
            c.flow_table.capacity,
            c.flow_table.peak_entries,
            nonzero(&c.flow_table.evictions)
        ),
    );
    row(
        "refused at caps",
        format!(
            "{} flow rows, {} findings",
            c.flow_rows_refused, c.findings_refused
        ),
    );
    row(
        "truncated",
        if c.truncated { "yes" } else { "no" }.to_string(),
    );
    s.push_str("</tbody></table></section>\n");
}
