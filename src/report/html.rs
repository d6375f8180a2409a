//! The report as one self-contained HTML page: no scripts, styles, fonts or
//! images from anywhere else, so it can be attached to a ticket and opened
//! offline. The site diagram comes in as SVG (laid out by the caller); the
//! rest is the report's own data. The same page is served live by `run`.
//!
//! Written with maud's `html!`: every value spliced in is escaped (as
//! [`crate::quote::html`] does) unless it is wrapped in `PreEscaped`, which
//! only the page's own style, script and the diagram's SVG are.

use std::collections::BTreeMap;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{EdgeEntry, Finding, FlowEntry, Report};
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
    let title = format!("portwatch audit: site {}", r.summary.site);
    html! {
        (DOCTYPE) "\n"
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(n) = page.refresh_seconds {
                    meta http-equiv="refresh" content=(n);
                }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            "\n"
            body {
                "\n"
                header {
                    h1 { (title) }
                    p { "model " (r.summary.model) " · " (page.subtitle) }
                    @if !page.links.is_empty() {
                        nav {
                            @for (href, text) in &page.links {
                                a href=(href) { (text) }
                            }
                        }
                    }
                }
                "\n"
                main {
                    "\n"
                    (summary(r))
                    (diagram(page))
                    (baseline(r))
                    (findings(&r.findings))
                    (disagreements(r))
                    (acceptances(r))
                    (edges(r))
                    (unknown_flows(r))
                    @if r.store.is_some() { (store(r)) } @else { (capture(r)) }
                    (signoff(r, page))
                }
                "\n"
                script { (PreEscaped(SCRIPT)) }
                "\n"
            }
        }
        "\n"
    }
    .into_string()
}

fn tile(label: &str, n: u64, bad: bool) -> Markup {
    tile_of(label, n, label, bad && n > 0)
}

/// A tile whose `text` says more than its `label` (the `data-count` key).
fn tile_of(label: &str, n: u64, text: &str, bad: bool) -> Markup {
    html! {
        div.tile.bad[bad] data-count=(label) { b { (n) } small { (text) } }
    }
}

/// A findings tile: red only for findings no acceptance covers, which
/// alert; the accepted ones are said apart.
fn findings_tile(label: &str, n: u64, accepted: u64) -> Markup {
    let text = match accepted {
        0 => label.to_string(),
        a => format!("{label}, {a} accepted"),
    };
    tile_of(label, n, &text, n > accepted)
}

fn summary(r: &Report) -> Markup {
    let s = &r.summary;
    let total: u64 = s.findings.values().sum();
    let mut accepted: BTreeMap<&str, u64> = BTreeMap::new();
    for f in r.findings.iter().filter(|f| f.accepted.is_some()) {
        *accepted.entry(f.kind.as_str()).or_default() += 1;
    }
    let accepted_of = |k: &str| accepted.get(k).copied().unwrap_or(0);
    html! {
        section id="summary" {
            h2 { "Summary" }
            div class="tiles" {
                (findings_tile("findings", total, accepted.values().sum()))
                @for (k, n) in &s.findings {
                    (findings_tile(k, *n, accepted_of(k)))
                }
            }
            h2 style="margin-top:12px" { "Connections and required edges" }
            div class="tiles" {
                @for (k, n) in &s.connections {
                    (tile(&format!("{k} connections"), *n, *k != "expected"))
                }
                @for (k, n) in &s.outcomes {
                    (tile(k, *n, matches!(*k, "refused" | "unanswered" | "denied")))
                }
                @for (k, n) in &s.required_edges {
                    (tile(&format!("required {k}"), *n, *k == "missing"))
                }
            }
        }
        "\n"
    }
}

/// The diagram's legend: class, text, whether the line is dashed.
const LEGEND: [(&str, &str, bool); 7] = [
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
];

fn diagram(page: &Page) -> Markup {
    html! {
        section id="diagram" {
            h2 { "Site diagram" }
            div class="legend" {
                @for (class, text, dash) in LEGEND {
                    span class=(class) { i class=(if dash { "dash" } else { "" }) {} (text) }
                }
            }
            // A CSS-only switch: the page works without its script.
            input type="checkbox" id="hide-not-observed";
            label for="hide-not-observed" class="note" {
                " hide required edges not observed yet (drawn faint; hover one for why)"
            }
            // The SVG is markup already: portwatch's own layout escapes as
            // this page does, Graphviz writes XML-escaped text.
            div class="diagram" { (PreEscaped(&page.svg)) }
            p class="note" { "Layout: " (page.layout) }
        }
        "\n"
    }
}

const FINDING_COLUMNS: [&str; 10] = [
    "kind",
    "source",
    "destination",
    "port",
    "service",
    "count",
    "outcomes",
    "first seen",
    "last seen",
    "explanation",
];

fn findings(fs: &[Finding]) -> Markup {
    let mut by_kind: BTreeMap<FindingKind, Vec<&Finding>> = BTreeMap::new();
    for f in fs {
        by_kind.entry(f.kind).or_default().push(f);
    }
    html! {
        section id="findings" {
            h2 { "Findings (" (fs.len()) ")" }
            @if fs.is_empty() {
                p { "None: every connection matched the model and every required edge was seen." }
            } @else {
                table class="sortable" {
                    thead { tr { @for c in FINDING_COLUMNS { th { (c) } } } }
                    @for (kind, list) in &by_kind {
                        tbody class="group" {
                            tr { th colspan="10" class=(kind.as_str()) { (kind.as_str()) " (" (list.len()) ")" } }
                        }
                        tbody data-kind=(kind.as_str()) {
                            @for f in list {
                                (finding_row(f))
                            }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn finding_row(f: &Finding) -> Markup {
    let k = f.kind.as_str();
    let outcomes = (f.outcomes.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        tr class="row finding" data-finding=(format!("{k}:{}:{}:{}", f.src, f.dst, f.port)) {
            td class=(format!("kind {k}")) { (k) }
            td { (end(&f.src, f.src_addr.as_deref())) }
            td { (end(&f.dst, f.dst_addr.as_deref())) }
            td { (f.port) }
            td { (f.service) }
            td { (f.count) }
            td { (outcomes) }
            td { (f.first_seen.as_deref().unwrap_or("-")) }
            td { (f.last_seen.as_deref().unwrap_or("-")) }
            td { (explanation_cell(f)) }
        }
    }
}

/// A finding's explanation, and the acceptance it occurred under.
fn explanation_cell(f: &Finding) -> Markup {
    html! {
        (f.explanation)
        @if let Some(a) = &f.accepted {
            br;
            span class="accepted" data-ticket=(a.ticket) {
                "accepted until " (a.expires) " under " (a.ticket) " (owner " (a.owner) "): " (a.reason)
            }
        }
    }
}

/// Connections two kinds of source told different fates of.
fn disagreements(r: &Report) -> Markup {
    const COLUMNS: [&str; 7] = [
        "src",
        "dst",
        "port",
        "service",
        "connections",
        "outcomes by kind of source",
        "last seen",
    ];
    let refused = r.disagreements_refused_note();
    html! {
        @if !r.disagreements.is_empty() || refused.is_some() {
            section id="disagreements" {
                h2 { "Sources disagree (" (r.disagreements.len()) ")" }
                p {
                    "One kind of source saw these connections established, another says they were "
                    "refused, unanswered or denied. Neither is taken as the truth."
                }
                @if let Some(refused) = refused {
                    p.refused data-count="disagreements_refused" { (refused) "." }
                }
                table {
                    thead { tr { @for c in COLUMNS { th { (c) } } } }
                    tbody {
                        @for d in &r.disagreements {
                            tr.disagreement {
                                td { (d.src) }
                                td { (d.dst) }
                                td { (d.port) }
                                td { (d.service) }
                                td { (d.connections) }
                                td {
                                    @for (k, o) in &d.outcomes {
                                        (k) ": " (o) " "
                                    }
                                }
                                td { (d.last_seen.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
            "\n"
        }
    }
}

/// `replay --baseline`: how many findings the earlier report had.
fn baseline(r: &Report) -> Markup {
    html! {
        @if let Some(b) = &r.baseline {
            section id="baseline" {
                h2 { "Baseline" }
                p {
                    "Findings new since " (b.path) ": " (b.new) "; already known there, left out: "
                    (b.known) "."
                }
            }
            "\n"
        }
    }
}

/// The site's accepted deviations and what each matched.
fn acceptances(r: &Report) -> Markup {
    const COLUMNS: [&str; 6] = ["entry", "flow", "ticket", "owner", "last day", "matched"];
    html! {
        @if !r.acceptances.is_empty() {
            section id="acceptances" {
                h2 { "Accepted deviations (" (r.acceptances.len()) ")" }
                table {
                    thead { tr { @for c in COLUMNS { th { (c) } } } }
                    tbody {
                        @for u in &r.acceptances {
                            tr.acceptance.unused[u.unused()] {
                                td { "accepted[" (u.index) "]" }
                                td { (u.flow) }
                                td { (u.ticket) }
                                td { (u.owner) }
                                td { (u.expires) }
                                td {
                                    @if u.unused() {
                                        "no finding in the input"
                                    } @else {
                                        (u.findings) " findings (" (u.occurrences) " occurrences); "
                                        (u.findings_after_expiry) " after it expired"
                                    }
                                }
                            }
                        }
                    }
                }
            }
            "\n"
        }
    }
}

/// An endpoint's name, and the address seen when there is one.
fn end(name: &str, addr: Option<&str>) -> Markup {
    html! {
        (name)
        @if let Some(a) = addr {
            " " span class="note" { (a) }
        }
    }
}

fn edges(r: &Report) -> Markup {
    // Edges without a verdict yet crowd out the ones with one: they go
    // last, folded unless they are all there is.
    let (quiet, judged): (Vec<&EdgeEntry>, Vec<&EdgeEntry>) =
        (r.edges.iter()).partition(|e| e.state == EdgeState::NotObserved);
    html! {
        section id="edges" {
            h2 { "Required edges (" (r.edges.len()) ")" }
            @if r.edges.is_empty() {
                p { "None judged: the site has none, the sensor sees none, or nothing was read." }
            }
            @if !judged.is_empty() {
                (edge_table(r, &judged, false))
            }
            @if !quiet.is_empty() {
                details id="not-observed" open[judged.is_empty()] {
                    summary class="not_observed" {
                        (quiet.len()) " not observed yet: no verdict, and why"
                    }
                    (edge_table(r, &quiet, true))
                }
            }
        }
        "\n"
    }
}

const EDGE_COLUMNS: [&str; 8] = [
    "source",
    "destination",
    "port",
    "service",
    "state",
    "window",
    "evidence",
    "last seen",
];

fn edge_table(r: &Report, rows: &[&EdgeEntry], why: bool) -> Markup {
    html! {
        table class="sortable" {
            thead {
                tr {
                    @for c in EDGE_COLUMNS { th { (c) } }
                    @if why { th { "why not observed" } }
                }
            }
            tbody {
                @for e in rows {
                    (edge_row(r, e, why))
                }
            }
        }
    }
}

fn edge_row(r: &Report, e: &EdgeEntry, why: bool) -> Markup {
    let blocked = (r.findings.iter()).any(|f| {
        f.kind == FindingKind::Blocked && f.src == e.src && f.dst == e.dst && f.port == e.port
    });
    let reason = e.reason.as_deref().unwrap_or("");
    let st = e.state.as_str();
    let window = humantime::format_duration(std::time::Duration::from_secs(e.window_seconds));
    html! {
        tr class="row edge" data-edge=(format!("{}:{}:{}", e.src, e.dst, e.port)) title=(reason) {
            td { (e.src) }
            td { (e.dst) }
            td { (e.port) }
            td { (service_cell(e)) }
            td class=(st) {
                (st)
                @if blocked { " " span class="blocked" { "(blocked)" } }
            }
            td data-v=(e.window_seconds) { (window) }
            td { (e.evidence) }
            td { (e.last_seen.as_deref().unwrap_or("-")) }
            @if why { td class="reason" { (reason) } }
        }
    }
}

/// The service, and the executables the nodes' audit events named for it.
fn service_cell(e: &EdgeEntry) -> Markup {
    html! {
        (e.service)
        @if !e.executables.is_empty() {
            br;
            small class="proc" title=(e.executables.join("\n")) {
                (super::executable_names(&e.executables))
            }
        }
    }
}

/// The flows behind the `unknown` outcome (attempts whose fate the
/// sources could not tell), most attempts first; none, no section.
fn unknown_flows(r: &Report) -> Markup {
    let mut rows: Vec<(&FlowEntry, u64)> = (r.flows.iter())
        .filter_map(|f| Some((f, *f.outcomes.get("unknown")?)))
        .filter(|(_, n)| *n > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    html! {
        @if !rows.is_empty() {
            section id="unknown-flows" {
                h2 { "Flows with outcome unknown" }
                p class="note" {
                    "Attempts whose fate the sources could not tell (no SYN-ACK, RST or \
                     retransmission seen, e.g. a one-way capture)."
                }
                table class="sortable" {
                    thead {
                        tr {
                            @for c in ["Source", "Destination", "Port", "Service", "Verdict", "Unknown", "Attempts"] {
                                th { (c) }
                            }
                        }
                    }
                    tbody {
                        @for (f, n) in &rows {
                            tr class="row" {
                                td { (f.src) }
                                td { (f.dst) }
                                td { (f.port) }
                                td { (f.service) }
                                td { (f.verdict.as_str()) }
                                td { (n) }
                                td { (f.attempts) }
                            }
                        }
                    }
                }
            }
            "\n"
        }
    }
}

/// Rows of a two-column table: what, and its value.
fn key_values(rows: &[(&str, String)]) -> Markup {
    html! {
        table {
            tbody {
                @for (k, v) in rows {
                    tr { th { (k) } td { (v) } }
                }
            }
        }
    }
}

/// The sign-off block: who ran the audit, when, over which span, against
/// which site and model files (SHA-256) and portwatch version; lines to
/// sign on.
fn signoff(r: &Report, page: &Page) -> Markup {
    html! {
        section id="signoff" {
            h2 { "Sign-off" }
            (key_values(&signoff_rows(r, page)))
            table class="sign" {
                tbody {
                    @for line in ["Reviewed by (name)", "Role", "Date", "Signature"] {
                        tr {
                            th { (line) }
                            td style="border-bottom:1px solid #263238;width:60%" { (PreEscaped("&nbsp;")) }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn signoff_rows<'a>(r: &'a Report, page: &Page) -> Vec<(&'a str, String)> {
    let mut rows = Vec::new();
    if let Some(so) = &page.signoff {
        rows.push(("run by", so.user.clone()));
        rows.push(("run at", so.at.rfc3339()));
    }
    let c = &r.capture;
    rows.push((
        "span",
        format!(
            "{} to {}",
            c.first_seen.as_deref().unwrap_or("-"),
            c.last_seen.as_deref().unwrap_or("-")
        ),
    ));
    if let Some(sel) = (c.selection.as_ref()).filter(|s| s.since.is_some() || s.until.is_some()) {
        rows.push((
            "time range",
            format!(
                "from {} until {} (exclusive)",
                sel.since.as_deref().unwrap_or("the start"),
                sel.until.as_deref().unwrap_or("the end")
            ),
        ));
    }
    if let Some(f) = c.selection.as_ref().and_then(|s| s.filter.as_deref()) {
        rows.push(("packet filter", f.to_string()));
    }
    for f in &r.provenance.files {
        rows.push((
            f.role.as_str(),
            format!("{} (SHA-256 {})", f.path, f.sha256),
        ));
    }
    rows.push(("portwatch", env!("CARGO_PKG_VERSION").to_string()));
    rows
}

/// `report --prometheus`: the store, the time and range, the sensors.
fn store(r: &Report) -> Markup {
    let mut rows = Vec::new();
    if let Some(s) = &r.store {
        rows.push(("store", s.url.clone()));
        rows.push(("site label", s.site.clone()));
        rows.push(("as of", s.at.clone()));
        rows.push((
            "range",
            humantime::format_duration(std::time::Duration::from_secs(s.range_seconds)).to_string(),
        ));
    }
    if r.capture.findings_refused > 0 {
        rows.push((
            "findings refused",
            format!(
                "{} (no port, or past the cap of {})",
                r.capture.findings_refused,
                super::MAX_STORE_FINDINGS
            ),
        ));
    }
    if r.sensors_left_out > 0 {
        rows.push((
            "sensors not listed",
            format!(
                "{} past the cap of {}",
                r.sensors_left_out,
                super::MAX_STORE_SENSORS
            ),
        ));
    }
    html! {
        section id="store" {
            h2 { "Store and sensors (" (r.sensors.len()) ")" }
            (key_values(&rows))
            table {
                thead { tr { th { "job" } th { "instance" } th { "scraped" } th { "covering" } th { "reads" } } }
                tbody {
                    @for s in &r.sensors {
                        tr {
                            td { (s.job) } td { (s.instance) }
                            td { (if s.up { "yes" } else { "no" }) }
                            td { (if s.covering { "yes" } else { "no: cannot vouch for an absence" }) }
                            td { (s.kinds.join(", ")) }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn capture(r: &Report) -> Markup {
    html! {
        section id="capture" {
            h2 { "Capture" }
            (key_values(&capture_rows(r)))
        }
        "\n"
    }
}

/// `k=n` of the counts above zero, or `none`.
fn nonzero(m: &BTreeMap<&'static str, u64>) -> String {
    let v: Vec<String> = (m.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn capture_rows(r: &Report) -> Vec<(&'static str, String)> {
    let c = &r.capture;
    let mut rows = Vec::new();
    for src in &c.sources {
        source_rows(&mut rows, src);
    }
    rows.push((
        "span",
        format!(
            "{} to {} ({:.1} s)",
            c.first_seen.as_deref().unwrap_or("-"),
            c.last_seen.as_deref().unwrap_or("-"),
            c.duration_seconds
        ),
    ));
    if let Some(sel) = &c.selection {
        selection_rows(&mut rows, sel);
    }
    rows.push(("packets", c.packets.to_string()));
    rows.push(("control packets", nonzero(&c.control_packets)));
    rows.push(("skipped packets", nonzero(&c.skipped_packets)));
    rows.push(("decode errors", nonzero(&c.decode_errors)));
    if !c.encapsulations.is_empty() {
        rows.push(("encapsulations", nonzero(&c.encapsulations)));
        rows.push(("mirror sessions", c.sessions_line()));
    }
    rows.push((
        "replies visible",
        if c.replies_visible {
            "yes: silence after a SYN means unanswered".into()
        } else {
            "no SYN-ACK seen: one-way capture, silence is unknown".into()
        },
    ));
    rows.push((
        "flow table",
        format!(
            "capacity {}, peak {}, evictions: {}",
            c.flow_table.capacity,
            c.flow_table.peak_entries,
            nonzero(&c.flow_table.evictions)
        ),
    ));
    rows.push((
        "refused at caps",
        format!(
            "{} flow rows, {} findings",
            c.flow_rows_refused, c.findings_refused
        ),
    ));
    rows.push((
        "truncated",
        if c.truncated { "yes" } else { "no" }.to_string(),
    ));
    rows
}

/// A source's row, and a record source's fidelity (with an export
/// source's line per exporter, as the table's).
fn source_rows(rows: &mut Vec<(&'static str, String)>, src: &super::SourceFacts) {
    let stopped = match &src.stopped {
        Some(st) => format!("; stopped at byte {}: {}", st.offset, st.reason),
        None => String::new(),
    };
    let Some(f) = &src.fidelity else {
        rows.push((
            "source",
            format!(
                "{} ({}, {}): {} packets{stopped}",
                src.path,
                src.format,
                src.link_types.join(", "),
                src.packets
            ),
        ));
        return;
    };
    let (sees, blind) = f.sees.split();
    let node = f.sensor.as_deref().unwrap_or("unknown");
    rows.push((
        "source",
        format!(
            "{} ({}, node {node}): {} records ({}){stopped}",
            src.path,
            src.format,
            src.packets,
            nonzero(&f.records)
        ),
    ));
    rows.push((
        "fidelity",
        format!("sees {}; cannot see {}", sees.join(", "), blind.join(", ")),
    ));
    for x in &src.exporters {
        rows.push(("exporter", format!("{}: {}", x.name, x.counts())));
    }
}

/// The time range and packet filter asked for, and what they left out.
fn selection_rows(rows: &mut Vec<(&'static str, String)>, sel: &super::Selection) {
    if sel.since.is_some() || sel.until.is_some() {
        rows.push((
            "time range",
            format!(
                "from {} until {} (exclusive): skipped {} frames and {} records outside it",
                sel.since.as_deref().unwrap_or("the start"),
                sel.until.as_deref().unwrap_or("the end"),
                sel.frames_outside_range,
                sel.records_outside_range
            ),
        ));
    }
    if let Some(f) = &sel.filter {
        rows.push((
            "packet filter",
            format!(
                "{f}: skipped {} frames it did not pass",
                sel.frames_filtered_out.unwrap_or(0)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::classify::Verdict;
    use crate::config::load_policy;
    use crate::observation::SourceKind;
    use crate::pipeline::Pipeline;
    use crate::report::diagram::Diagram;
    use crate::report::{AcceptanceUse, AcceptedBy, Baseline, ExporterFacts, SourceFacts};
    use crate::time::Timestamp;

    /// The page of a report in which every name, address, service, reason,
    /// path and explanation is `s`.
    fn page_naming(s: &str) -> String {
        let p = Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy);
        let pl = Pipeline::new(p.clone(), Default::default());
        let mut r = Report::build(&pl, Vec::new(), None, &Default::default());
        let text = || s.to_string();
        r.findings.push(Finding {
            kind: FindingKind::UnknownHost,
            src: text(),
            src_addr: Some(text()),
            dst: text(),
            dst_addr: None,
            port: 1,
            service: text(),
            count: 1,
            outcomes: BTreeMap::from([("refused", 1)]),
            first_seen: Some(text()),
            last_seen: None,
            explanation: text(),
            folded: None,
            accepted: Some(AcceptedBy {
                index: 0,
                ticket: text(),
                owner: text(),
                expires: text(),
                reason: text(),
            }),
        });
        r.acceptances.push(AcceptanceUse {
            index: 0,
            flow: text(),
            ticket: text(),
            owner: text(),
            expires: text(),
            findings: 1,
            occurrences: 1,
            findings_after_expiry: 0,
        });
        r.edges.push(EdgeEntry {
            src: text(),
            dst: text(),
            port: 2,
            service: text(),
            window_seconds: 60,
            state: EdgeState::NotObserved,
            reason: Some(text()),
            evidence: 0,
            open_connections: 0,
            last_seen: Some(text()),
            executables: vec![text(), text()],
        });
        r.flows.push(FlowEntry {
            src: text(),
            dst: text(),
            port: 3,
            service: text(),
            verdict: Verdict::Unexpected,
            attempts: 1,
            syn_retransmissions: 0,
            outcomes: BTreeMap::from([("unknown", 1)]),
            established_inferred: 0,
            executables: Vec::new(),
            first_seen: text(),
            last_seen: text(),
        });
        r.capture.first_seen = Some(text());
        r.capture.sources.push(
            SourceFacts {
                path: text(),
                format: "netflow-ipfix-capture".into(),
                exporters: vec![ExporterFacts {
                    name: text(),
                    datagrams: 2,
                    lost_records: 4,
                    lost_packets: 0,
                }],
                ..SourceFacts::default()
            }
            .with_fidelity(SourceKind::FlowExport, None, BTreeMap::new()),
        );
        r.baseline = Some(Baseline {
            path: text(),
            known: 1,
            known_by_kind: BTreeMap::new(),
            new: 1,
        });
        let page = Page {
            svg: Diagram::audit(&p, &r).to_svg(),
            layout: text(),
            refresh_seconds: Some(5),
            links: vec![(text(), text())],
            subtitle: text(),
            signoff: Some(SignOff {
                user: text(),
                at: Timestamp::ZERO,
            }),
        };
        render(&r, &page)
    }

    /// The page's markup: each tag's name in order, and how many `"` it
    /// holds (an attribute value broken open would add some).
    fn markup(page: &str) -> (Vec<&str>, usize) {
        let tags = (page.split('<').skip(1))
            .map(|t| t.split([' ', '>', '\n']).next().unwrap_or(""))
            .collect();
        (tags, page.matches('"').count())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn no_text_adds_markup_to_the_page(s in crate::quote::tests::hostile()) {
            let (page, plain) = (page_naming(&s), page_naming("x"));
            prop_assert_eq!(markup(&page), markup(&plain));
        }
    }

    #[test]
    fn names_are_on_the_page_escaped() {
        let page = page_naming("<b>\"&");
        assert!(page.contains("&lt;b&gt;&quot;&amp;"));
        assert!(!page.contains("<b>\""));
    }

    /// An export source's exporters are listed beside its fidelity.
    #[test]
    fn exporters_are_listed_beside_the_fidelity() {
        let page = page_naming("core<v9>");
        let row =
            "<th>exporter</th><td>core&lt;v9&gt;: 2 datagrams, 4 records lost, 0 packets lost</td>";
        assert!(page.contains(row), "{page}");
        assert!(page.find("<th>fidelity</th>") < page.find(row));
    }
}
