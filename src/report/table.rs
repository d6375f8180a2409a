//! The report as text for a terminal: findings first, then edges and flows.

use std::fmt::Write;

use super::{executable_names, Report};
use crate::quote::log_field as field;

/// Render rows as columns two spaces apart, the header first. A cell is
/// one line whatever names it holds.
fn columns(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = (rows.iter())
        .map(|r| r.iter().map(|c| field(c).into_owned()).collect())
        .collect();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            let _ = write!(s, "{c:<width$}  ", width = w[i]);
        }
        let _ = writeln!(out, "  {}", s.trim_end());
    };
    line(out, &mut header.iter().copied());
    for r in &rows {
        line(out, &mut r.iter().map(String::as_str));
    }
}

/// What a packet capture tells of its packets.
fn packet_lines(s: &mut String, c: &super::Capture) {
    let _ = writeln!(
        s,
        "  control packets: {}",
        or_none(counts(&c.control_packets))
    );
    let _ = writeln!(s, "  decode errors: {}", or_none(counts(&c.decode_errors)));
    if !c.encapsulations.is_empty() {
        let _ = writeln!(s, "  encapsulations: {}", counts(&c.encapsulations));
    }
    if !c.mirror_sessions.is_empty() {
        let _ = writeln!(s, "  mirror sessions: {}", c.sessions_line());
    }
    for u in &c.unconfigured_tunnels {
        let _ = writeln!(s, "  WARNING: {}", u.warning());
    }
    if !c.replies_visible && c.packets > 0 {
        let _ = writeln!(
            s,
            "  no SYN-ACK seen: unanswered SYNs count as unknown unless retransmitted"
        );
    }
}

/// What `--since/--until` and `--filter` left out.
fn selection_lines(s: &mut String, sel: &super::Selection) {
    if sel.since.is_some() || sel.until.is_some() {
        let _ = writeln!(
            s,
            "  time range: from {} until {} (exclusive): skipped {} frames and {} records outside it",
            sel.since.as_deref().unwrap_or("the start"),
            sel.until.as_deref().unwrap_or("the end"),
            sel.frames_outside_range,
            sel.records_outside_range
        );
    }
    if let Some(f) = &sel.filter {
        let _ = writeln!(
            s,
            "  packet filter `{}`: skipped {} frames it did not pass",
            field(f),
            sel.frames_filtered_out.unwrap_or(0)
        );
    }
}

fn counts(m: &std::collections::BTreeMap<&'static str, u64>) -> String {
    m.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A record source's fidelity: what it can report, what it cannot see,
/// and its records by what was made of them.
fn fidelity(s: &mut String, f: &super::SourceFidelity) {
    let outcomes: Vec<&str> = f.outcomes.iter().map(|o| o.as_str()).collect();
    let _ = writeln!(
        s,
        "    {}{}: outcomes {}; blind to {}",
        f.kind.as_str(),
        (f.sensor.as_deref()).map_or(String::new(), |n| format!(" (node {})", field(n))),
        outcomes.join(" "),
        or_none(f.sees.blind_to().join(" "))
    );
    let _ = writeln!(s, "    records: {}", or_none(counts(&f.records)));
}

impl Report {
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        match self.store.is_some() {
            true => self.store_section(&mut s),
            false => self.capture_section(&mut s),
        }
        self.summary_section(&mut s);
        self.findings_section(&mut s);
        self.disagreements_section(&mut s);
        self.edges_section(&mut s);
        self.flows_section(&mut s);
        s
    }

    /// `report --prometheus`: the store, the time and range, the sensors.
    fn store_section(&self, s: &mut String) {
        let Some(st) = &self.store else {
            return;
        };
        let _ = writeln!(
            s,
            "STORE {} (site label {}), as of {}, range {}",
            field(&st.url),
            field(&st.site),
            st.at,
            humantime::format_duration(std::time::Duration::from_secs(st.range_seconds))
        );
        for x in &self.sensors {
            let _ = writeln!(
                s,
                "  sensor {} {}: {}, {}{}",
                field(&x.job),
                field(&x.instance),
                if x.up { "scraped" } else { "NOT scraped" },
                if x.covering {
                    "covering"
                } else {
                    "not covering"
                },
                match x.kinds.is_empty() {
                    true => String::new(),
                    false => format!(", reads {}", field(&x.kinds.join(", "))),
                }
            );
        }
        if self.sensors_left_out > 0 {
            let _ = writeln!(
                s,
                "  {} more sensors past the cap of {}, not listed",
                self.sensors_left_out,
                super::MAX_STORE_SENSORS
            );
        }
    }

    /// The sources read, the span, and what the packets held.
    fn capture_section(&self, s: &mut String) {
        let c = &self.capture;
        let _ = writeln!(s, "CAPTURE");
        for src in &c.sources {
            let what = if src.format == "live" {
                "packets received by the kernel"
            } else if src.fidelity.is_some() {
                "records"
            } else {
                "packets"
            };
            let format = std::iter::once(src.format.as_str())
                .chain(src.link_types.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "  {} ({format}): {} {what}",
                field(&src.path),
                src.packets
            );
            if let Some(stop) = &src.stopped {
                let _ = writeln!(
                    s,
                    "    STOPPED at byte {}: {}",
                    stop.offset,
                    field(&stop.reason)
                );
            }
            if let Some(f) = &src.fidelity {
                fidelity(s, f);
            }
            for x in &src.exporters {
                let _ = writeln!(s, "    exporter {}: {}", field(&x.name), x.counts());
            }
        }
        let records_only = c.packets == 0 && c.sources.iter().any(|s| s.fidelity.is_some());
        let _ = writeln!(
            s,
            "  {} {}, {} to {} ({:.1} s)",
            c.packets,
            if records_only {
                "packets (records only)"
            } else {
                "packets"
            },
            c.first_seen.as_deref().unwrap_or("-"),
            c.last_seen.as_deref().unwrap_or("-"),
            c.duration_seconds
        );
        if let Some(sel) = &c.selection {
            selection_lines(s, sel);
        }
        if !records_only {
            packet_lines(s, c);
        }
    }

    /// Counts by verdict, outcome, edge state and finding kind.
    fn summary_section(&self, s: &mut String) {
        let c = &self.capture;
        let sm = &self.summary;
        let _ = writeln!(
            s,
            "\nSUMMARY (site {}, model {})",
            field(&sm.site),
            field(&sm.model)
        );
        let _ = writeln!(s, "  connections: {}", or_none(counts(&sm.connections)));
        let _ = writeln!(s, "  outcomes: {}", or_none(counts(&sm.outcomes)));
        let _ = writeln!(
            s,
            "  required edges: {}",
            or_none(counts(&sm.required_edges))
        );
        let _ = writeln!(s, "  findings: {}", or_none(counts(&sm.findings)));
        if !sm.findings_refused.is_empty() {
            let _ = writeln!(
                s,
                "  findings refused past their budgets: {}",
                counts(&sm.findings_refused)
            );
        }
        // The store's are not by kind: no port, or past the cap.
        if self.store.is_some() && c.findings_refused > 0 {
            let _ = writeln!(
                s,
                "  findings refused (no port, or past the cap of {}): {}",
                super::MAX_STORE_FINDINGS,
                c.findings_refused
            );
        }
        if self.store.is_none()
            && c.packets == 0
            && c.sources.iter().all(|src| src.fidelity.is_none())
        {
            let _ = writeln!(s, "  the capture holds no packets: nothing was checked");
        }
    }

    /// Each finding with its explanation, then the acceptances.
    fn findings_section(&self, s: &mut String) {
        let _ = writeln!(s, "\nFINDINGS ({})", self.findings.len());
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                s,
                "  new since baseline {}: {}; already known, left out: {} ({})",
                field(&b.path),
                b.new,
                b.known,
                or_none(counts(&b.known_by_kind))
            );
        }
        if self.findings.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for f in &self.findings {
            let _ = writeln!(
                s,
                "  {:<12} {} ({}) -> {} ({}) port {} [{}] x{}  {}",
                f.kind.as_str(),
                field(&f.src),
                f.src_addr.as_deref().unwrap_or("-"),
                field(&f.dst),
                f.dst_addr.as_deref().unwrap_or("-"),
                f.port,
                field(&f.service),
                f.count,
                f.last_seen.as_deref().unwrap_or("never seen")
            );
            let _ = writeln!(s, "               {}", field(&f.explanation));
            if let Some(a) = &f.accepted {
                let _ = writeln!(
                    s,
                    "               ACCEPTED until {} under {} (owner {}): {}",
                    a.expires,
                    field(&a.ticket),
                    field(&a.owner),
                    field(&a.reason)
                );
            }
        }
        accepted_lines(s, &self.acceptances);
    }

    /// Connections two kinds of source disagree on (none: no section).
    fn disagreements_section(&self, s: &mut String) {
        let refused = self.disagreements_refused_note();
        if self.disagreements.is_empty() && refused.is_none() {
            return;
        }
        let _ = writeln!(
            s,
            "\nSOURCES DISAGREE ({}): one kind saw these established, another says not",
            self.disagreements.len()
        );
        if let Some(refused) = refused {
            let _ = writeln!(s, "  {refused}");
        }
        let rows: Vec<Vec<String>> = (self.disagreements.iter())
            .map(|d| {
                let outcomes: Vec<String> = (d.outcomes.iter())
                    .map(|(k, o)| format!("{k}={o}"))
                    .collect();
                vec![
                    d.src.clone(),
                    d.dst.clone(),
                    d.port.to_string(),
                    d.service.clone(),
                    d.connections.to_string(),
                    outcomes.join(" "),
                    d.last_seen.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        columns(
            s,
            &[
                "SRC",
                "DST",
                "PORT",
                "SERVICE",
                "CONNECTIONS",
                "OUTCOMES",
                "LAST SEEN",
            ],
            &rows,
        );
    }

    /// The required edges, and the processes named on them.
    fn edges_section(&self, s: &mut String) {
        let _ = writeln!(s, "\nREQUIRED EDGES ({})", self.edges.len());
        let rows: Vec<Vec<String>> = self
            .edges
            .iter()
            .map(|e| {
                vec![
                    e.src.clone(),
                    e.dst.clone(),
                    e.port.to_string(),
                    e.service.clone(),
                    e.state.as_str().into(),
                    humantime::format_duration(std::time::Duration::from_secs(e.window_seconds))
                        .to_string(),
                    e.last_seen.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        columns(
            s,
            &[
                "SRC",
                "DST",
                "PORT",
                "SERVICE",
                "STATE",
                "WINDOW",
                "LAST SEEN",
            ],
            &rows,
        );
        for e in self.edges.iter().filter(|e| !e.executables.is_empty()) {
            let _ = writeln!(
                s,
                "  processes on {} -> {} {}/tcp: {}",
                field(&e.src),
                field(&e.dst),
                e.port,
                field(&executable_names(&e.executables))
            );
        }
    }

    /// One row per flow.
    fn flows_section(&self, s: &mut String) {
        let _ = writeln!(s, "\nFLOWS ({})", self.flows.len());
        let rows: Vec<Vec<String>> = self
            .flows
            .iter()
            .map(|f| {
                vec![
                    f.src.clone(),
                    f.dst.clone(),
                    f.port.to_string(),
                    f.service.clone(),
                    f.verdict.as_str().into(),
                    f.attempts.to_string(),
                    or_none(counts(&f.outcomes)),
                ]
            })
            .collect();
        columns(
            s,
            &[
                "SRC", "DST", "PORT", "SERVICE", "VERDICT", "ATTEMPTS", "OUTCOMES",
            ],
            &rows,
        );
    }
}

/// What each of the site's acceptances matched; those that matched no
/// finding are named.
fn accepted_lines(s: &mut String, uses: &[super::AcceptanceUse]) {
    if uses.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nACCEPTED DEVIATIONS ({})", uses.len());
    for u in uses {
        let what = if u.unused() {
            "matched no finding in the input".to_string()
        } else {
            format!(
                "{} findings accepted ({} occurrences), {} after it expired",
                u.findings, u.occurrences, u.findings_after_expiry
            )
        };
        let _ = writeln!(
            s,
            "  accepted[{}] {} {} until {}: {what}",
            u.index,
            field(&u.flow),
            field(&u.ticket),
            u.expires
        );
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}
