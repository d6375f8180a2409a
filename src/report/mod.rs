//! The audit report of a replay (and the closing summary of `watch`): what
//! was read, counts by verdict, per-flow rows, required-edge states, and
//! findings with an explanation citing the rule. The JSON shape is a public
//! contract, documented in README.md.

mod accepted;
mod baseline;
pub mod diagram;
pub mod html;
mod json;
mod store;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::classify::{explain, Classification, Verdict};
use crate::decode::{Control, EncapKind, Skip};
use crate::observation::{Fidelity, Outcome, OutcomeCounts, SourceKind};
use crate::pipeline::Pipeline;
use crate::policy::{Edge, EdgeId, EndpointKind, Peer, Policy};
use crate::state::tally::{FindingKind, FlowRow};
use crate::state::{EdgeState, Eviction, Unobserved};
use crate::time::Timestamp;

pub use crate::policy::{UnknownSensor, Visibility};
pub use accepted::{AcceptanceUse, AcceptedBy};
pub use baseline::{Baseline, BaselineError, Known, MAX_BASELINE_FINDINGS};
pub use store::{SensorEntry, StoreAnswers, StoreFacts, MAX_STORE_FINDINGS, MAX_STORE_SENSORS};

/// What the caller knows of its sources.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SourceFacts {
    pub path: String,
    /// `pcap`, `pcapng`, or `live`.
    pub format: String,
    pub link_types: Vec<String>,
    pub packets: u64,
    /// Where and why reading stopped early, if it did.
    pub stopped: Option<Stopped>,
    /// Live capture only: packets the kernel dropped for lack of buffer
    /// space (libpcap `ps_drop`) and the interface or its driver dropped
    /// (`ps_ifdrop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Drops>,
    /// What kind of source; a record source (a firewall log) also shows
    /// its fidelity, what it can and cannot see (packets see everything
    /// the report counts, so a capture shows none).
    #[serde(skip)]
    pub kind: SourceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<SourceFidelity>,
    /// A capture of export packets, or `run --flow-listen`: per exporter,
    /// by its name in the site (every one declared, then `undeclared`),
    /// what it sent and lost.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exporters: Vec<ExporterFacts>,
}

/// What one flow exporter sent and lost, as `run --flow-listen` counts it
/// in `portwatch_flow_export_*_total{exporter}`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExporterFacts {
    /// Its name in the site's `exporters:`, or `undeclared`.
    pub name: String,
    /// Export datagrams it sent.
    pub datagrams: u64,
    /// Records lost by sequence gaps (NetFlow v5, IPFIX).
    pub lost_records: u64,
    /// Export packets lost by sequence gaps (NetFlow v9).
    pub lost_packets: u64,
}

impl ExporterFacts {
    /// Its counts as the table and the page write them after its name.
    pub fn counts(&self) -> String {
        format!(
            "{} datagrams, {} records lost, {} packets lost",
            self.datagrams, self.lost_records, self.lost_packets
        )
    }
}

/// A record source's kind and fidelity, as the report shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceFidelity {
    pub kind: SourceKind,
    /// The node whose log it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    pub outcomes: Vec<Outcome>,
    #[serde(flatten)]
    pub sees: Fidelity,
    /// Records read, by what was made of them (`observed`, `not_tcp`,
    /// `malformed_...`, `events_lost`): a closed set per reader.
    pub records: BTreeMap<&'static str, u64>,
}

impl SourceFacts {
    /// The fidelity entry of a record source of `kind`.
    pub fn with_fidelity(
        mut self,
        kind: SourceKind,
        sensor: Option<String>,
        records: BTreeMap<&'static str, u64>,
    ) -> Self {
        self.kind = kind;
        self.fidelity = Some(SourceFidelity {
            kind,
            sensor,
            outcomes: kind.outcomes().to_vec(),
            sees: kind.fidelity(),
            records,
        });
        self
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Drops {
    pub kernel: u64,
    pub interface: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Stopped {
    pub offset: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// What the report was judged against: the site and model files with
    /// their SHA-256 (who ran it and when are the HTML page's, not here).
    pub provenance: Provenance,
    pub capture: Capture,
    pub summary: Summary,
    pub flows: Vec<FlowEntry>,
    pub edges: Vec<EdgeEntry>,
    pub findings: Vec<Finding>,
    /// The site's accepted deviations and what each matched (absent when
    /// the site has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acceptances: Vec<AcceptanceUse>,
    /// Connections two kinds of source told different fates of (one saw
    /// them established, the other refused, unanswered or denied), by flow
    /// and outcomes; absent when none did. Neither outcome is dropped: both
    /// are in the flow's outcomes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disagreements: Vec<DisagreementEntry>,
    /// `replay --baseline`: the findings it already had, left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// `report --prometheus`: the store it was drawn from (absent for a
    /// capture's report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreFacts>,
    /// `report --prometheus`: the site's sensors and their coverage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<SensorEntry>,
    /// Sensors past [`MAX_STORE_SENSORS`], not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub sensors_left_out: u64,
}

/// Connections of one flow two kinds of source disagree on.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DisagreementEntry {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub service: String,
    pub connections: u64,
    /// Each kind's outcome, by `sensor_kind`: the one that saw them
    /// established and the one that says otherwise.
    pub outcomes: BTreeMap<&'static str, &'static str>,
    /// Absent in a report from the store, which keeps no sighting times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Capture {
    pub sources: Vec<SourceFacts>,
    pub packets: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub duration_seconds: f64,
    pub control_packets: BTreeMap<&'static str, u64>,
    pub skipped_packets: BTreeMap<&'static str, u64>,
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Frames opened from each encapsulation (kinds seen only; a frame in
    /// two counts under both). Absent for a capture with none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub encapsulations: BTreeMap<&'static str, u64>,
    /// The sessions those frames named (VNI, ERSPAN session id, GRE key),
    /// at most [`crate::pipeline::MAX_MIRROR_SESSIONS`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirror_sessions: Vec<MirrorSession>,
    /// Frames of sessions beyond that cap.
    #[serde(skip_serializing_if = "is_zero")]
    pub mirror_sessions_dropped: u64,
    /// UDP that looks like VXLAN or GENEVE on a port not configured for it
    /// (`--vxlan-ports`, `--geneve-ports`): not opened, so not checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unconfigured_tunnels: Vec<UnconfiguredTunnel>,
    /// Encapsulated control packets that were a second copy of one just
    /// seen (both ends of a connection mirrored): applied once.
    #[serde(skip_serializing_if = "is_zero")]
    pub mirror_duplicates: u64,
    /// Records of a connection already observed (its other end's log,
    /// another log of the same node, a line per dropped SYN): merged into
    /// one attempt.
    #[serde(skip_serializing_if = "is_zero")]
    pub record_duplicates: u64,
    /// Connections whose records were settled before their merge window
    /// ended, to make room (a later record of one counts again); shown only
    /// when some were.
    #[serde(skip_serializing_if = "is_zero")]
    pub records_settled_early: u64,
    /// Observations of a connection another kind of source already
    /// counted (a capture and a node's log of the same connection): joined,
    /// not a new attempt.
    #[serde(skip_serializing_if = "is_zero")]
    pub kinds_joined: u64,
    /// Connections the join let go at its cap before their hold ended (a
    /// later observation of one by another kind counts again).
    #[serde(skip_serializing_if = "is_zero")]
    pub kinds_join_evicted: u64,
    /// Disagreements past the row cap, not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub disagreements_refused: u64,
    /// Frames whose timestamp did not move the capture clock (far behind
    /// it, or far ahead and not confirmed by the frames after); they are
    /// classified at the clock's time and left out of the span.
    pub timestamp_anomalies: u64,
    /// A SYN-ACK was seen somewhere in the capture.
    pub replies_visible: bool,
    /// (server, client) address pairs whose SYN-ACKs were seen: a silence
    /// between them counts as unanswered.
    pub reply_pairs: usize,
    /// Pairs forgotten because their table (65,536 pairs) was full; shown
    /// only when some were.
    #[serde(skip_serializing_if = "is_zero")]
    pub reply_pairs_dropped: u64,
    pub flow_table: FlowTable,
    /// Rows or findings refused because their caps were reached.
    pub flow_rows_refused: u64,
    pub findings_refused: u64,
    pub truncated: bool,
    /// What `replay --since/--until` (and `--filter`) left out of the audit;
    /// absent when neither was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Provenance {
    pub files: Vec<crate::policy::FileDigest>,
}

/// The part of the data a replay audited: the time range and the packet
/// filter asked for, and what fell outside them.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Selection {
    /// `--since`, inclusive (RFC 3339, UTC).
    pub since: Option<String>,
    /// `--until`, exclusive.
    pub until: Option<String>,
    /// Frames of the captures outside the range, skipped.
    pub frames_outside_range: u64,
    /// Records of flow logs and node logs outside the range, skipped.
    pub records_outside_range: u64,
    /// The packet filter (libpcap syntax), if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Frames in the range the filter did not pass, skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_filtered_out: Option<u64>,
}

impl Capture {
    /// The mirror sessions as `kind session (frames)`, comma-separated.
    pub fn sessions_line(&self) -> String {
        let mut parts: Vec<String> = (self.mirror_sessions.iter())
            .map(|m| format!("{} {} ({} frames)", m.kind, m.session, m.frames))
            .collect();
        if self.mirror_sessions_dropped > 0 {
            parts.push(format!(
                "{} frames of further sessions",
                self.mirror_sessions_dropped
            ));
        }
        match parts.is_empty() {
            true => "none named".into(),
            false => parts.join(", "),
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MirrorSession {
    pub kind: &'static str,
    pub session: u32,
    pub frames: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UnconfiguredTunnel {
    pub kind: &'static str,
    pub port: u16,
    pub frames: u64,
}

impl UnconfiguredTunnel {
    /// The warning printed once for it.
    pub fn warning(&self) -> String {
        let flag = if self.kind == EncapKind::Vxlan.as_str() {
            "--vxlan-ports"
        } else {
            "--geneve-ports"
        };
        format!(
            "UDP port {} carries what looks like {} ({} frames) but is not configured for it: \
             those frames were not opened; add the port with {flag}",
            self.port, self.kind, self.frames
        )
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FlowTable {
    pub capacity: usize,
    pub peak_entries: usize,
    pub evictions: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub site: String,
    pub model: String,
    pub connections: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Of `outcomes.established`: inferred from the client's ACK or data,
    /// the SYN-ACK not being in the capture.
    pub established_inferred: u64,
    pub syn_retransmissions: u64,
    pub required_edges: BTreeMap<&'static str, u64>,
    /// Findings listed, by kind (a folded aggregate counts once).
    pub findings: BTreeMap<&'static str, u64>,
    /// Occurrences whose finding a budget refused, by kind (only kinds
    /// with some): with `connections`, the counts stay complete.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub findings_refused: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FlowEntry {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub service: String,
    pub verdict: Verdict,
    pub attempts: u64,
    pub syn_retransmissions: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub established_inferred: u64,
    /// Executables the sources named (a node's audit events), as logged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub executables: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EdgeEntry {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub service: String,
    pub window_seconds: u64,
    pub state: EdgeState,
    /// Why the edge is `not_observed` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub evidence: u64,
    /// Connections of the edge open at the end (evidence while open).
    pub open_connections: u32,
    pub last_seen: Option<String>,
    /// Executables named on the edge's flows (a node's audit events).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub executables: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub src: String,
    pub src_addr: Option<String>,
    pub dst: String,
    pub dst_addr: Option<String>,
    pub port: u16,
    pub service: String,
    pub count: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub explanation: String,
    /// Unknown-host findings past their budget, folded into this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<Folded>,
    /// The site's acceptance that held when it occurred: still a finding,
    /// but a known deviation that does not alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<AcceptedBy>,
}

/// What a folded finding stands for: exact counts, example addresses.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Folded {
    pub attempts: u64,
    pub src_addrs: Vec<String>,
    pub dst_addrs: Vec<String>,
    pub ports: Vec<u16>,
    /// More addresses or ports were seen than are listed.
    pub more: bool,
}

impl Report {
    /// Build the report. `window` is the observation period the edge states
    /// are judged over (capture span for a replay, wall clock for live).
    pub fn build(
        pl: &Pipeline,
        sources: Vec<SourceFacts>,
        window: Option<(Timestamp, Timestamp)>,
        vis: &Visibility,
    ) -> Report {
        let b = Builder {
            pl,
            p: pl.policy(),
            shown: shown_outcomes(&sources),
        };
        let flows = b.flows();
        let mut findings = b.tally_findings();
        let mut edges = Vec::new();
        if let Some((since, now)) = window {
            for (i, e) in b.p.edges.iter().enumerate() {
                if !vis.judges(b.p, e) {
                    if let (true, Some(why)) = (e.required, &vis.unjudged) {
                        edges.push(b.unjudged(EdgeId(i as u32), e, &flows, (since, now), why));
                    }
                    continue;
                }
                let (entry, missing) = b.edge(EdgeId(i as u32), e, &flows, since, now);
                findings.extend(missing);
                edges.push(entry);
            }
        }
        edges.sort_by(|a, b| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)));
        findings.sort_by(|a, b| {
            (a.kind, &a.src, &a.dst, a.port, &a.src_addr, &a.dst_addr).cmp(&(
                b.kind,
                &b.src,
                &b.dst,
                b.port,
                &b.src_addr,
                &b.dst_addr,
            ))
        });
        Report {
            provenance: Provenance {
                files: b.p.sources.clone(),
            },
            summary: b.summary(&edges, &findings),
            capture: b.capture(sources),
            flows,
            edges,
            findings,
            acceptances: accepted::uses(b.p, b.pl.tally().findings()),
            disagreements: b.disagreements(),
            baseline: None,
            store: None,
            sensors: Vec::new(),
            sensors_left_out: 0,
        }
    }

    /// What the table and the page say of the disagreements not listed:
    /// a report from the store refuses those without a port too.
    pub(crate) fn disagreements_refused_note(&self) -> Option<String> {
        let n = self.capture.disagreements_refused;
        (n > 0).then(|| match self.store {
            Some(_) => {
                format!("{n} more not listed (no port, or past the cap of {MAX_STORE_FINDINGS})")
            }
            None => format!("{n} more past the row cap, not listed"),
        })
    }

    /// Findings that count for the exit status: any not under an
    /// acceptance that held.
    pub fn has_findings(&self) -> bool {
        self.findings.iter().any(|f| f.accepted.is_none())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// Writes the JSON report and a newline to `w` as it is serialized: a
    /// report at the row and finding caps is about 10 MB of JSON, which
    /// `to_json` would hold (and grow by doubling) in memory.
    pub fn write_json(&self, mut w: impl std::io::Write) -> std::io::Result<()> {
        json::write_pretty(&mut w, self)?;
        w.write_all(b"\n")?;
        w.flush()
    }
}

/// The outcomes the report's sources can tell (a packet capture's four
/// when it has no sources at all).
fn shown_outcomes(sources: &[SourceFacts]) -> Vec<Outcome> {
    let none = sources.is_empty().then_some(SourceKind::Packets);
    Outcome::ALL
        .into_iter()
        .filter(|o| {
            let mut kinds = sources.iter().map(|s| s.kind).chain(none);
            kinds.any(|k| k.outcomes().contains(o))
        })
        .collect()
}

/// What the parts of a report are built from: the pipeline after its
/// last frame, and the outcomes the report shows.
struct Builder<'a> {
    pl: &'a Pipeline,
    p: &'a Policy,
    shown: Vec<Outcome>,
}

impl Builder<'_> {
    fn outcomes(&self, o: &OutcomeCounts) -> BTreeMap<&'static str, u64> {
        counts_of(&self.shown, o)
    }

    /// One row per flow of the tally, by ends, port and verdict.
    fn disagreements(&self) -> Vec<DisagreementEntry> {
        let p = self.p;
        let mut out: Vec<DisagreementEntry> = (self.pl.tally().disagreements().iter())
            .map(|d| DisagreementEntry {
                src: p.peer_name(d.key.src).to_string(),
                dst: p.peer_name(d.key.dst).to_string(),
                port: d.key.port,
                service: d.service.clone(),
                connections: d.count,
                outcomes: BTreeMap::from([
                    (d.key.established.as_str(), Outcome::Established.as_str()),
                    (d.key.other.as_str(), d.key.outcome.as_str()),
                ]),
                first_seen: Some(d.first.rfc3339()),
                last_seen: Some(d.last.rfc3339()),
            })
            .collect();
        out.sort_by(|a, b| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)));
        out
    }

    fn flows(&self) -> Vec<FlowEntry> {
        let p = self.p;
        // Sorted by names as integer keys before the entries are made: a
        // capture of other systems' traffic has thousands of rows, whose
        // ends are a few peers; comparing their names and moving whole
        // entries in the sort cost more than making the entries.
        let rows = self.pl.tally().rows();
        let rank = NameRank::new(p, rows.iter().flat_map(|r| [r.key.src, r.key.dst]));
        let mut rows: Vec<(SortKey, &FlowRow)> = (rows.iter())
            .map(|r| {
                let k = &r.key;
                ((rank.of(k.src), rank.of(k.dst), k.port, k.verdict), r)
            })
            .collect();
        // Stable, as the sort of entries was: rows of equal keys keep
        // the tally's order.
        rows.sort_by_key(|(k, _)| *k);
        (rows.into_iter())
            .map(|(_, r)| FlowEntry {
                src: p.peer_name(r.key.src).to_string(),
                dst: p.peer_name(r.key.dst).to_string(),
                port: r.key.port,
                service: r.service.clone(),
                verdict: r.key.verdict,
                attempts: r.attempts,
                syn_retransmissions: r.retransmissions,
                outcomes: self.outcomes(&r.outcomes),
                established_inferred: r.inferred,
                executables: r.executables.iter().map(|e| e.to_string()).collect(),
                first_seen: r.first.rfc3339(),
                last_seen: r.last.rfc3339(),
            })
            .collect()
    }

    /// The tally's findings with their explanations, then the folded
    /// unknown-host aggregates.
    fn tally_findings(&self) -> Vec<Finding> {
        let tally = self.pl.tally();
        let folded = (tally.aggregates().iter())
            .map(|a| folded_finding(self.p, a, self.outcomes(&a.outcomes)));
        (tally.findings().iter())
            .map(|f| self.finding(f))
            .chain(folded)
            .collect()
    }

    fn finding(&self, f: &crate::state::tally::FindingRow) -> Finding {
        let p = self.p;
        let c = Classification {
            verdict: match f.key.kind {
                FindingKind::LocalOnly => Verdict::LocalOnly,
                FindingKind::UnknownHost => Verdict::UnknownHost,
                FindingKind::Unexpected => Verdict::Unexpected,
                _ => Verdict::Expected,
            },
            src: f.key.src,
            dst: f.key.dst,
            port: f.key.port,
            service: Arc::from(f.service.as_str()),
            basis: f.basis.clone(),
            accepted: f.key.accepted,
        };
        let mut explanation = explain(p, &c);
        if f.key.kind == FindingKind::Blocked {
            explanation = blocked_text(&f.outcomes, &f.filters, &explanation);
        }
        Finding {
            kind: f.key.kind,
            src: p.peer_name(f.key.src).to_string(),
            src_addr: Some(f.key.src_addr.to_string()),
            dst: p.peer_name(f.key.dst).to_string(),
            dst_addr: Some(f.key.dst_addr.to_string()),
            port: f.key.port,
            service: f.service.clone(),
            count: f.count,
            outcomes: self.outcomes(&f.outcomes),
            first_seen: Some(f.first.rfc3339()),
            last_seen: Some(f.last.rfc3339()),
            explanation,
            folded: None,
            accepted: f.key.accepted.map(|id| AcceptedBy::of(p, id)),
        }
    }

    /// A required edge judged over `since..now`, and its finding when it
    /// is missing.
    fn edge(
        &self,
        id: EdgeId,
        e: &Edge,
        flows: &[FlowEntry],
        since: Timestamp,
        now: Timestamp,
    ) -> (EdgeEntry, Option<Finding>) {
        let (p, clock) = (self.p, self.pl.clock());
        let (state, why) = clock.judge(id, e.window, since, now);
        let last = clock.last_evidence(id, now);
        let (src, dst) = (&p.endpoint(e.src).name, &p.endpoint(e.dst).name);
        let entry = EdgeEntry {
            src: src.clone(),
            dst: dst.clone(),
            port: e.port,
            service: e.service.to_string(),
            window_seconds: e.window.as_secs(),
            state,
            reason: why.map(|w| unobserved_text(w, e.window)),
            evidence: clock.count(id),
            open_connections: clock.open_count(id),
            last_seen: last.map(Timestamp::rfc3339),
            executables: executables_of(flows, src, dst, e.port),
        };
        let missing = (state == EdgeState::Missing).then(|| Finding {
            kind: FindingKind::Missing,
            src: entry.src.clone(),
            src_addr: first_addr(p, Peer::Endpoint(e.src)),
            dst: entry.dst.clone(),
            dst_addr: first_addr(p, Peer::Endpoint(e.dst)),
            port: e.port,
            service: e.service.to_string(),
            count: 0,
            outcomes: self.outcomes(&[0; Outcome::COUNT]),
            first_seen: None,
            last_seen: entry.last_seen.clone(),
            explanation: missing_text(p, e, last),
            folded: None,
            accepted: None,
        });
        (entry, missing)
    }

    /// A required edge no source covers, listed: `not_observed` for `why`
    /// unless some record of it was seen after all.
    fn unjudged(
        &self,
        id: EdgeId,
        e: &Edge,
        flows: &[FlowEntry],
        (since, now): (Timestamp, Timestamp),
        why: &str,
    ) -> EdgeEntry {
        let (mut entry, _) = self.edge(id, e, flows, since, now);
        if entry.state != EdgeState::Seen {
            entry.state = EdgeState::NotObserved;
            entry.reason = Some(why.to_string());
        }
        entry
    }

    fn summary(&self, edges: &[EdgeEntry], findings: &[Finding]) -> Summary {
        let tally = self.pl.tally();
        Summary {
            site: self.p.site.name.clone(),
            model: self.p.model.id.clone(),
            connections: (Verdict::ALL.iter())
                .map(|v| (v.as_str(), tally.by_verdict[*v as usize]))
                .collect(),
            outcomes: self.outcomes(&tally.by_outcome),
            established_inferred: tally.inferred,
            syn_retransmissions: tally.retransmissions,
            required_edges: edge_counts(edges),
            findings: finding_counts(findings),
            findings_refused: (FindingKind::ALL.iter())
                .map(|k| (k.as_str(), tally.findings_refused_of(*k)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    fn capture(&self, sources: Vec<SourceFacts>) -> Capture {
        let (pl, stats) = (self.pl, self.pl.stats());
        let span = pl.span();
        Capture {
            truncated: sources.iter().any(|s| s.stopped.is_some()),
            sources,
            packets: stats.frames,
            first_seen: span.map(|(a, _)| a.rfc3339()),
            last_seen: span.map(|(_, b)| b.rfc3339()),
            duration_seconds: span
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64())
                .unwrap_or(0.0),
            control_packets: [Control::Syn, Control::SynAck, Control::Rst, Control::Fin]
                .iter()
                .map(|c| (c.as_str(), stats.control(*c)))
                .collect(),
            skipped_packets: (Skip::ALL.iter())
                .map(|s| (s.as_str(), stats.skipped(*s)))
                .collect(),
            decode_errors: stats.errors.clone(),
            encapsulations: (EncapKind::ALL.iter())
                .filter(|k| stats.encapsulated(**k) > 0)
                .map(|k| (k.as_str(), stats.encapsulated(*k)))
                .collect(),
            mirror_sessions: (stats.sessions.iter())
                .filter_map(|(e, n)| {
                    Some(MirrorSession {
                        kind: e.kind.as_str(),
                        session: e.session?,
                        frames: *n,
                    })
                })
                .collect(),
            mirror_sessions_dropped: stats.sessions_dropped,
            mirror_duplicates: stats.mirror_duplicates,
            record_duplicates: pl.record_merge().duplicates(),
            kinds_joined: pl.kind_join().joined(),
            kinds_join_evicted: pl.kind_join().evicted(),
            disagreements_refused: pl.tally().disagreements_refused(),
            records_settled_early: pl.record_merge().settled_early(),
            unconfigured_tunnels: (stats.unconfigured.iter())
                .map(|((kind, port), n)| UnconfiguredTunnel {
                    kind: kind.as_str(),
                    port: *port,
                    frames: *n,
                })
                .collect(),
            timestamp_anomalies: pl.time().anomalies(),
            replies_visible: pl.table().replies_visible(),
            reply_pairs: pl.table().reply_pairs(),
            reply_pairs_dropped: pl.table().reply_pairs_dropped(),
            flow_table: FlowTable {
                capacity: pl.table().config().capacity,
                peak_entries: pl.table().peak(),
                evictions: (Eviction::ALL.iter())
                    .map(|e| (e.as_str(), pl.table().evictions(*e)))
                    .collect(),
            },
            flow_rows_refused: self.pl.tally().rows_refused(),
            findings_refused: self.pl.tally().findings_refused(),
            selection: None,
        }
    }
}

/// Required edges by state.
fn edge_counts(edges: &[EdgeEntry]) -> BTreeMap<&'static str, u64> {
    let states = [EdgeState::Seen, EdgeState::Missing, EdgeState::NotObserved];
    (states.iter())
        .map(|s| {
            (
                s.as_str(),
                edges.iter().filter(|e| e.state == *s).count() as u64,
            )
        })
        .collect()
}

/// Findings listed, by kind.
fn finding_counts(findings: &[Finding]) -> BTreeMap<&'static str, u64> {
    (FindingKind::ALL.iter())
        .map(|k| {
            (
                k.as_str(),
                findings.iter().filter(|f| f.kind == *k).count() as u64,
            )
        })
        .collect()
}

/// The finding standing for unknown-host findings folded past a budget.
fn folded_finding(
    p: &Policy,
    a: &crate::state::tally::Aggregate,
    outcomes: BTreeMap<&'static str, u64>,
) -> Finding {
    let list = |v: &[std::net::IpAddr]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (src_addrs, dst_addrs) = (list(&a.src_addrs), list(&a.dst_addrs));
    let ports: Vec<String> = a.ports.iter().map(u16::to_string).collect();
    let more = if a.more { ", and more" } else { "" };
    Finding {
        kind: FindingKind::UnknownHost,
        src: p.peer_name(a.src).to_string(),
        src_addr: None,
        dst: "various".into(),
        dst_addr: None,
        port: 0,
        service: "various".into(),
        count: a.attempts,
        outcomes,
        first_seen: Some(a.first.rfc3339()),
        last_seen: Some(a.last.rfc3339()),
        explanation: format!(
            "{} unknown-host attempts from {} past the findings budget, folded into one: \
             sources {}; destinations {}; ports {}{more}",
            a.attempts,
            p.peer_name(a.src),
            src_addrs.join(", "),
            dst_addrs.join(", "),
            ports.join(", "),
        ),
        folded: Some(Folded {
            attempts: a.attempts,
            src_addrs,
            dst_addrs,
            ports: a.ports.clone(),
            more: a.more,
        }),
        accepted: a.accepted.map(|id| AcceptedBy::of(p, id)),
    }
}

fn first_addr(p: &Policy, peer: Peer) -> Option<String> {
    let Peer::Endpoint(id) = peer else {
        return None;
    };
    let e = p.endpoint(id);
    match e.kind {
        EndpointKind::Node => p.site.nodes[e.index]
            .addresses
            .first()
            .map(|a| a.to_string()),
        EndpointKind::External => p.site.externals[e.index]
            .nets
            .first()
            .map(|n| n.to_string()),
        EndpointKind::UserNetwork => None,
    }
}

fn unobserved_text(why: Unobserved, window: std::time::Duration) -> String {
    match why {
        Unobserved::TooShort => format!(
            "observed for less than the window ({})",
            humantime::format_duration(window)
        ),
        Unobserved::Drops(at) => format!(
            "the capture dropped packets within the window (last drop noticed {at}): no evidence proves nothing"
        ),
        Unobserved::Gap(at) => format!(
            "a flow exporter covering the edge lost records within the window (last gap noticed {at}): no record proves nothing"
        ),
    }
}

/// `counts` of the outcomes in `shown`, by name.
fn counts_of(shown: &[Outcome], counts: &OutcomeCounts) -> BTreeMap<&'static str, u64> {
    shown
        .iter()
        .map(|x| (x.as_str(), counts[x.index()]))
        .collect()
}

/// A flow row's place: its ends' name ranks, port and verdict.
type SortKey = (u32, u32, u16, Verdict);

/// Peers ranked by name (equal names, equal ranks), so rows sort by
/// integers in the order their names would.
struct NameRank(Vec<(Peer, u32)>);

impl NameRank {
    fn new(p: &Policy, peers: impl Iterator<Item = Peer>) -> NameRank {
        let mut peers: Vec<Peer> = peers.collect();
        peers.sort_unstable();
        peers.dedup();
        let mut by_name: Vec<(&str, Peer)> = peers.iter().map(|&x| (p.peer_name(x), x)).collect();
        by_name.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut ranks = Vec::with_capacity(by_name.len());
        let mut rank = 0;
        for (i, (name, peer)) in by_name.iter().enumerate() {
            if i > 0 && by_name[i - 1].0 != *name {
                rank += 1;
            }
            ranks.push((*peer, rank));
        }
        ranks.sort_unstable();
        NameRank(ranks)
    }

    /// The rank of a peer given to [`NameRank::new`] (any other: last).
    fn of(&self, peer: Peer) -> u32 {
        match self.0.binary_search_by_key(&peer, |(x, _)| *x) {
            Ok(i) => self.0[i].1,
            Err(_) => u32::MAX,
        }
    }
}

/// Executables by file name (`\\device\\...\\svchost.exe` is `svchost.exe`), in order.
pub fn executable_names(exes: &[String]) -> String {
    let names: Vec<&str> = exes
        .iter()
        .map(|e| e.rsplit(['\\', '/']).next().unwrap_or(e))
        .collect();
    names.join(", ")
}

/// The executables named on the flows from `src` to `dst` on `port`.
fn executables_of(flows: &[FlowEntry], src: &str, dst: &str, port: u16) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let same = |f: &&FlowEntry| f.src == src && f.dst == dst && f.port == port;
    for exe in flows.iter().filter(same).flat_map(|f| &f.executables) {
        if !out.contains(exe) {
            out.push(exe.clone());
        }
    }
    out
}

fn blocked_text(outcomes: &OutcomeCounts, filters: &[u64], expected: &str) -> String {
    let n = |o: Outcome| outcomes[o.index()];
    let mut how = match (n(Outcome::Refused), n(Outcome::Unanswered)) {
        (0, 0) => None,
        (r, 0) => Some(format!("refused by RST {r}x")),
        (0, u) => Some(format!("unanswered {u}x (a firewall dropping it?)")),
        (r, u) => Some(format!("refused {r}x, unanswered {u}x")),
    };
    if n(Outcome::Denied) > 0 {
        let cite = match filters {
            [] => String::new(),
            [f] => format!(", filter {f}"),
            fs => {
                let ids: Vec<String> = fs.iter().map(u64::to_string).collect();
                format!(", filters {}", ids.join(", "))
            }
        };
        let denied = format!(
            "denied by the node's firewall {}x (its log{cite})",
            n(Outcome::Denied)
        );
        how = Some(match how {
            Some(h) => format!("{h}, {denied}"),
            None => denied,
        });
    }
    format!("blocked: {}; {expected}", how.unwrap_or_default())
}

fn missing_text(p: &Policy, e: &Edge, last: Option<Timestamp>) -> String {
    let window = humantime::format_duration(e.window);
    let cite = e
        .origins
        .iter()
        .map(|o| match o {
            crate::policy::Origin::Rule(r) => p.model.rule(*r).cite.clone(),
            crate::policy::Origin::Allowance(i) => format!("site allow[{i}]"),
            crate::policy::Origin::Monitoring => "site monitoring".into(),
        })
        .next()
        .unwrap_or_default();
    let seen = match last {
        Some(t) => format!("last evidence {t}"),
        None => "no evidence at all".into(),
    };
    format!("required edge not seen within {window} ({seen}); {cite}")
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_finding_says_what_blocked_it_and_cites_the_filters() {
        let mut o = [0; Outcome::COUNT];
        o[Outcome::Refused.index()] = 2;
        assert_eq!(
            blocked_text(&o, &[], "rule"),
            "blocked: refused by RST 2x; rule"
        );
        o[Outcome::Denied.index()] = 3;
        assert_eq!(
            blocked_text(&o, &[7, 9], "rule"),
            "blocked: refused by RST 2x, denied by the node's firewall 3x (its log, filters 7, 9); rule"
        );
        let mut d = [0; Outcome::COUNT];
        d[Outcome::Denied.index()] = 1;
        assert_eq!(
            blocked_text(&d, &[], "rule"),
            "blocked: denied by the node's firewall 1x (its log); rule"
        );
    }

    #[test]
    fn a_report_shows_the_outcomes_its_sources_can_tell() {
        let p = crate::config::load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let pl = Pipeline::new(Arc::new(p), crate::state::TrackConfig::default());
        let vis = Visibility::default();
        let pcap = SourceFacts::default();
        let log = SourceFacts::default().with_fidelity(
            SourceKind::FirewallLog,
            Some("central".into()),
            BTreeMap::new(),
        );
        let keys = |r: Report| r.summary.outcomes.keys().copied().collect::<Vec<_>>();
        let packets = ["established", "refused", "unanswered", "unknown"];
        assert_eq!(
            keys(Report::build(&pl, vec![pcap.clone()], None, &vis)),
            packets
        );
        assert_eq!(
            keys(Report::build(&pl, vec![log.clone()], None, &vis)),
            ["denied", "permitted"]
        );
        assert_eq!(
            keys(Report::build(&pl, vec![pcap, log], None, &vis)).len(),
            6
        );
    }
}
