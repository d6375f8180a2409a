//! The audit report drawn from a metrics store instead of a capture: the
//! site's required edges with the states the shipped recording rules give
//! them, findings with counts estimated over the range, and the sensors
//! with their coverage. Pure: the caller asks the store
//! ([`crate::store::promql::SiteQueries`]) and passes the answers in.
//!
//! Required edges are the policy's; store labels that name other edges
//! are not shown as edges. Findings come from the store's labels, which
//! are untrusted text: at most [`MAX_STORE_FINDINGS`], the rest counted.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::{
    blocked_text, edge_counts, finding_counts, first_addr, missing_text, shown_outcomes, Capture,
    DisagreementEntry, EdgeEntry, Finding, Provenance, Report, Summary,
};
use crate::classify::Verdict;
use crate::observation::{Outcome, OutcomeCounts, SensorKind};
use crate::policy::{Peer, Policy};
use crate::state::tally::FindingKind;
use crate::state::EdgeState;
use crate::store::Sample;
use crate::time::Timestamp;

/// Findings drawn from the store's series at most; the series of a site
/// are bounded by its model and inventory, so more means a foreign store.
pub const MAX_STORE_FINDINGS: usize = 4096;

/// Sensors listed at most: one per node of the largest site. Past it, the
/// first by (job, instance) are kept and the rest counted.
pub const MAX_STORE_SENSORS: usize = crate::policy::MAX_NODES;

/// What the store answered to each of the site's queries.
#[derive(Clone, Debug, Default)]
pub struct StoreAnswers {
    pub site_info: Vec<Sample>,
    pub edge_window: Vec<Sample>,
    pub edge_missing: Vec<Sample>,
    pub edge_covering: Vec<Sample>,
    pub edge_last_seen: Vec<Sample>,
    pub connections: Vec<Sample>,
    pub handshakes: Vec<Sample>,
    pub sensors_up: Vec<Sample>,
    pub sensors_covering: Vec<Sample>,
    pub sensor_kinds: Vec<Sample>,
    pub disagreements: Vec<Sample>,
    pub handshakes_by_kind: Vec<Sample>,
}

/// Where the report was drawn from (the URL without credentials).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StoreFacts {
    pub url: String,
    /// The `site` label asked for.
    pub site: String,
    /// The time the report is as of (RFC 3339).
    pub at: String,
    /// Findings and counts cover this much time before `at`.
    pub range_seconds: u64,
}

/// A sensor of the site, as the store knows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SensorEntry {
    pub job: String,
    pub instance: String,
    /// Scraped at the report's time (`portwatch:up`).
    pub up: bool,
    /// Can vouch for an absence (`portwatch:sensor_covering`): capturing
    /// through the last hour, at most 1% of packets lost.
    pub covering: bool,
    /// What it reads (`portwatch_sensor_source_info`), when the store has it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

/// An edge's labels: (src, dst, port, service).
type EdgeKey = (String, String, String, String);

fn key(s: &Sample) -> EdgeKey {
    let l = |n| s.label(n).to_string();
    (l("src"), l("dst"), l("port"), l("service"))
}

/// A count estimated from rates: whole events, and at least one for a
/// series that exists (its first event has no rate).
fn estimate(v: f64) -> u64 {
    match v.is_finite() && v > 0.0 {
        true => (v.round() as u64).max(1),
        false => 1,
    }
}

impl Report {
    /// The report of `p`'s site as the store has it at `at`, over `range`.
    pub fn from_store(
        p: &Policy,
        a: &StoreAnswers,
        facts: StoreFacts,
        at: Timestamp,
        range: Duration,
    ) -> Report {
        let shown = store_outcomes(&a.handshakes);
        let outcomes = outcome_counts(&a.handshakes);
        let mut disagreements_refused = 0;
        let disagreements = disagreements(a, &mut disagreements_refused);
        let mut refused = 0;
        let mut findings = verdict_findings(a, &outcomes, &shown, &mut refused);
        findings.extend(blocked_findings(p, a, &outcomes, &shown, &mut refused));
        let mut edges = Vec::new();
        for e in &p.edges {
            let (entry, missing) = store_edge(p, e, a, &shown);
            findings.extend(missing);
            edges.push(entry);
        }
        edges.sort_by(|a, b| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)));
        findings.sort_by(|a, b| {
            (a.kind, &a.src, &a.dst, a.port).cmp(&(b.kind, &b.src, &b.dst, b.port))
        });
        let since = Timestamp(at.as_nanos().saturating_sub(range.as_nanos() as u64));
        let (sensors, sensors_left_out) = sensors(a, MAX_STORE_SENSORS);
        Report {
            provenance: Provenance {
                files: p.sources.clone(),
            },
            summary: Summary {
                site: p.site.name.clone(),
                model: p.model.id.clone(),
                connections: connection_totals(&a.connections),
                outcomes: (shown.iter())
                    .map(|o| (o.as_str(), totals_of(&a.handshakes, "outcome", o.as_str())))
                    .collect(),
                established_inferred: 0,
                syn_retransmissions: 0,
                required_edges: edge_counts(&edges),
                findings: finding_counts(&findings),
                findings_refused: BTreeMap::new(),
            },
            capture: Capture {
                first_seen: Some(since.rfc3339()),
                last_seen: Some(at.rfc3339()),
                duration_seconds: range.as_secs_f64(),
                findings_refused: refused,
                disagreements_refused,
                ..Capture::default()
            },
            flows: Vec::new(),
            edges,
            findings,
            acceptances: Vec::new(),
            disagreements,
            baseline: None,
            store: Some(facts),
            sensors,
            sensors_left_out,
        }
    }
}

/// The outcomes the site's handshake series name, else a capture's four.
fn store_outcomes(handshakes: &[Sample]) -> Vec<Outcome> {
    let named: Vec<Outcome> = (Outcome::ALL.into_iter())
        .filter(|o| handshakes.iter().any(|s| s.label("outcome") == o.as_str()))
        .collect();
    match named.is_empty() {
        true => shown_outcomes(&[]),
        false => named,
    }
}

/// Estimated handshakes per edge, by outcome.
fn outcome_counts(handshakes: &[Sample]) -> HashMap<EdgeKey, OutcomeCounts> {
    let mut out: HashMap<EdgeKey, OutcomeCounts> = HashMap::new();
    for s in handshakes {
        if let Some(o) = Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s.label("outcome"))
        {
            out.entry(key(s)).or_insert([0; Outcome::COUNT])[o.index()] += estimate(s.value);
        }
    }
    out
}

fn totals_of(samples: &[Sample], label: &str, value: &str) -> u64 {
    (samples.iter())
        .filter(|s| s.label(label) == value)
        .map(|s| estimate(s.value))
        .sum()
}

fn connection_totals(connections: &[Sample]) -> BTreeMap<&'static str, u64> {
    (Verdict::ALL.iter())
        .map(|v| (v.as_str(), totals_of(connections, "verdict", v.as_str())))
        .collect()
}

fn outcome_map(shown: &[Outcome], counts: Option<&OutcomeCounts>) -> BTreeMap<&'static str, u64> {
    super::counts_of(shown, counts.unwrap_or(&[0; Outcome::COUNT]))
}

/// A finding of the store's labels (no addresses, no first sighting: the
/// store keeps neither). The port label `other` (a port the model does not
/// know, kept out of the labels) is port 0; a label that is no port at all
/// makes no finding.
fn store_finding(
    kind: FindingKind,
    s: &Sample,
    count: u64,
    explanation: String,
) -> Option<Finding> {
    let port = match s.label("port") {
        "other" => 0,
        p => p.parse().ok()?,
    };
    Some(Finding {
        kind,
        src: s.label("src").to_string(),
        src_addr: None,
        dst: s.label("dst").to_string(),
        dst_addr: None,
        port,
        service: s.label("service").to_string(),
        count,
        outcomes: BTreeMap::new(),
        first_seen: None,
        last_seen: None,
        explanation,
        folded: None,
        accepted: None,
    })
}

/// Unexpected, local-only and unknown-host connections in the range.
fn verdict_findings(
    a: &StoreAnswers,
    outcomes: &HashMap<EdgeKey, OutcomeCounts>,
    shown: &[Outcome],
    refused: &mut u64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &a.connections {
        let Some(v) = Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s.label("verdict"))
        else {
            continue;
        };
        let Some(kind) = FindingKind::of(v) else {
            continue;
        };
        if out.len() >= MAX_STORE_FINDINGS {
            *refused += 1;
            continue;
        }
        let n = estimate(s.value);
        let other = match s.label("port") {
            "other" => " (port `other`: one the model does not know)",
            _ => "",
        };
        let text = format!(
            "{} connection {} -> {}:{} ({}): about {n} in the range, estimated from the store's 5-minute rates{other}",
            v.as_str(),
            s.label("src"),
            s.label("dst"),
            s.label("port"),
            s.label("service"),
        );
        match store_finding(kind, s, n, text) {
            Some(mut f) => {
                f.outcomes = outcome_map(shown, outcomes.get(&key(s)));
                out.push(f);
            }
            None => *refused += 1,
        }
    }
    out
}

/// Expected edges between site endpoints with refused, unanswered or
/// denied handshakes in the range.
fn blocked_findings(
    p: &Policy,
    a: &StoreAnswers,
    outcomes: &HashMap<EdgeKey, OutcomeCounts>,
    shown: &[Outcome],
    refused: &mut u64,
) -> Vec<Finding> {
    let site_end = |name: &str| p.endpoints.iter().any(|e| e.name == name);
    let failed = [Outcome::Refused, Outcome::Unanswered, Outcome::Denied];
    let mut out = Vec::new();
    for s in a
        .connections
        .iter()
        .filter(|s| s.label("verdict") == "expected")
    {
        let Some(counts) = outcomes.get(&key(s)) else {
            continue;
        };
        let n: u64 = failed.iter().map(|o| counts[o.index()]).sum();
        if n == 0 || !site_end(s.label("src")) || !site_end(s.label("dst")) {
            continue;
        }
        if out.len() >= MAX_STORE_FINDINGS {
            *refused += 1;
            continue;
        }
        let expected = format!(
            "expected edge {} -> {}:{} ({}); counts estimated from the store's 5-minute rates",
            s.label("src"),
            s.label("dst"),
            s.label("port"),
            s.label("service"),
        );
        match store_finding(
            FindingKind::Blocked,
            s,
            n,
            blocked_text(counts, &[], &expected),
        ) {
            Some(mut f) => {
                f.outcomes = outcome_map(shown, Some(counts));
                out.push(f);
            }
            None => *refused += 1,
        }
    }
    out
}

/// A required edge's state at `at`, as deploy/README.md "How sensors are
/// combined" derives it, and its finding when it is missing.
fn store_edge(
    p: &Policy,
    e: &crate::policy::Edge,
    a: &StoreAnswers,
    shown: &[Outcome],
) -> (EdgeEntry, Option<Finding>) {
    let (src, dst) = (&p.endpoint(e.src).name, &p.endpoint(e.dst).name);
    let k: EdgeKey = (
        src.clone(),
        dst.clone(),
        e.port.to_string(),
        e.service.to_string(),
    );
    let find = |v: &[Sample]| v.iter().find(|s| key(s) == k).map(|s| s.value);
    let last = find(&a.edge_last_seen)
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| Timestamp((t * 1e9) as u64));
    let (state, why) = edge_state(
        find(&a.edge_window).is_some(),
        find(&a.edge_missing),
        find(&a.edge_covering),
        last.is_some(),
    );
    let evidence = (a.connections.iter())
        .filter(|s| key(s) == k && s.label("verdict") == "expected")
        .map(|s| estimate(s.value))
        .sum();
    let entry = EdgeEntry {
        src: src.clone(),
        dst: dst.clone(),
        port: e.port,
        service: e.service.to_string(),
        window_seconds: e.window.as_secs(),
        state,
        reason: why.map(str::to_string),
        evidence,
        open_connections: 0,
        last_seen: last.map(Timestamp::rfc3339),
        executables: Vec::new(),
    };
    let missing = (state == EdgeState::Missing).then(|| Finding {
        kind: FindingKind::Missing,
        src: src.clone(),
        src_addr: first_addr(p, Peer::Endpoint(e.src)),
        dst: dst.clone(),
        dst_addr: first_addr(p, Peer::Endpoint(e.dst)),
        port: e.port,
        service: e.service.to_string(),
        count: 0,
        outcomes: outcome_map(shown, None),
        first_seen: None,
        last_seen: entry.last_seen.clone(),
        explanation: missing_text(p, e, last),
        folded: None,
        accepted: None,
    });
    (entry, missing)
}

/// The state of an edge from the site's series: reported now, the site's
/// missing flag, its covering sensors, any evidence.
fn edge_state(
    reported: bool,
    missing: Option<f64>,
    covering: Option<f64>,
    evidence: bool,
) -> (EdgeState, Option<&'static str>) {
    const UNWATCHED: &str =
        "unwatched: no sensor of the site reports this edge (not scraped, or no --sensor node is an end of it)";
    const UNVERIFIABLE: &str = "unverifiable: it looks missing, but no sensor reporting it was capturing through the last hour with at most 1% drops";
    const NOT_YET: &str =
        "no evidence, and a sensor reporting it has watched it for less than its window";
    match (reported, missing) {
        (false, _) | (true, None) => (EdgeState::NotObserved, Some(UNWATCHED)),
        (true, Some(1.0)) => match covering.is_some_and(|c| c > 0.0) {
            true => (EdgeState::Missing, None),
            false => (EdgeState::NotObserved, Some(UNVERIFIABLE)),
        },
        (true, Some(_)) if evidence => (EdgeState::Seen, None),
        (true, Some(_)) => (EdgeState::NotObserved, Some(NOT_YET)),
    }
}

/// Edges the site's sensors of different kinds disagreed on in the range:
/// a kind that saw connections established, one that saw them fail, and
/// the failures counted (estimated from the 5-minute increases).
fn disagreements(a: &StoreAnswers, refused: &mut u64) -> Vec<DisagreementEntry> {
    let mut listed = Vec::new();
    for d in &a.disagreements {
        let Ok(port) = d.label("port").parse::<u16>() else {
            *refused += 1;
            continue;
        };
        if listed.len() >= MAX_STORE_FINDINGS {
            *refused += 1;
            continue;
        }
        listed.push((d, port));
    }
    // One pass over the kinds' series for all the listed edges (at most
    // the cap of them).
    let mut seen: HashMap<EdgeRef, KindsSeen> = (listed.iter())
        .map(|(d, _)| (edge_ref(d), KindsSeen::default()))
        .collect();
    for s in a.handshakes_by_kind.iter().filter(|s| s.value > 0.0) {
        if let Some(k) = seen.get_mut(&edge_ref(s)) {
            k.note(s);
        }
    }
    let mut out: Vec<DisagreementEntry> = (listed.into_iter())
        .map(|(d, port)| seen[&edge_ref(d)].entry(d, port))
        .collect();
    out.sort_by(|a, b| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)));
    out
}

/// An edge's labels borrowed from its sample: (src, dst, port, service).
type EdgeRef<'a> = (&'a str, &'a str, &'a str, &'a str);

fn edge_ref(s: &Sample) -> EdgeRef<'_> {
    (
        s.label("src"),
        s.label("dst"),
        s.label("port"),
        s.label("service"),
    )
}

/// What the kinds of sensor saw of one edge, in the store's order: those
/// that saw connections established, and each (kind, outcome) of failure
/// with its increase (the largest of its series). Each kind or pair once:
/// bounded by the closed sets.
#[derive(Default)]
struct KindsSeen {
    established: Vec<SensorKind>,
    failed: Vec<(SensorKind, Outcome, f64)>,
}

impl KindsSeen {
    fn note(&mut self, s: &Sample) {
        let kind = (SensorKind::ALL.into_iter()).find(|x| x.as_str() == s.label("sensor_kind"));
        let outcome = (Outcome::ALL.into_iter()).find(|o| o.as_str() == s.label("outcome"));
        let (Some(kind), Some(o)) = (kind, outcome) else {
            return;
        };
        if o == Outcome::Established {
            if !self.established.contains(&kind) {
                self.established.push(kind);
            }
        } else {
            // The recording rule keeps one series per kind and outcome, the
            // max over the site's sensors (two see the same connections);
            // more (a label the rule keeps, such as an HA replica's) are
            // views of the same connections: the max, as the rule takes,
            // whatever order the store answered in. A sum would count them
            // twice.
            match self.failed.iter_mut().find(|f| (f.0, f.1) == (kind, o)) {
                Some(f) => f.2 = f.2.max(s.value),
                None => self.failed.push((kind, o, s.value)),
            }
        }
    }

    /// The row of disagreement `d`: the first kind that saw its
    /// connections established, and the first other kind that saw them
    /// fail.
    fn entry(&self, d: &Sample, port: u16) -> DisagreementEntry {
        let pair = (self.established.iter())
            .find_map(|e| self.failed.iter().find(|f| f.0 != *e).map(|f| (e, f)));
        DisagreementEntry {
            src: d.label("src").to_string(),
            dst: d.label("dst").to_string(),
            port,
            service: d.label("service").to_string(),
            // No pair of kinds in the range's increases (a sensor reading
            // two kinds counts its own): the rule's word alone.
            connections: pair.map_or(0, |(_, f)| estimate(f.2)),
            outcomes: pair.map_or_else(BTreeMap::new, |(e, f)| {
                BTreeMap::from([
                    (e.as_str(), Outcome::Established.as_str()),
                    (f.0.as_str(), f.1.as_str()),
                ])
            }),
            first_seen: None,
            last_seen: None,
        }
    }
}

/// The site's sensors: those with site info in the range, at most `cap`
/// (the first by job and instance), and how many more there were.
fn sensors(a: &StoreAnswers, cap: usize) -> (Vec<SensorEntry>, u64) {
    let id = |s: &Sample| (s.label("job").to_string(), s.label("instance").to_string());
    // The answer is held already; its distinct ids, sorted, tell which
    // sensors fit under the cap whatever order the store answered in.
    let mut ids: Vec<(&str, &str)> = (a.site_info.iter())
        .map(|s| (s.label("job"), s.label("instance")))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let left_out = ids.len().saturating_sub(cap) as u64;
    let mut out: BTreeMap<(String, String), SensorEntry> = (ids.into_iter().take(cap))
        .map(|(job, instance)| {
            let entry = SensorEntry {
                job: job.to_string(),
                instance: instance.to_string(),
                up: false,
                covering: false,
                kinds: Vec::new(),
            };
            ((job.to_string(), instance.to_string()), entry)
        })
        .collect();
    for s in &a.sensors_up {
        if let Some(e) = out.get_mut(&id(s)) {
            e.up = s.value == 1.0;
        }
    }
    for s in &a.sensors_covering {
        if let Some(e) = out.get_mut(&id(s)) {
            e.covering = true;
        }
    }
    for s in &a.sensor_kinds {
        if let Some(e) = out.get_mut(&id(s)) {
            // Known kinds only: the list stays within their closed set.
            let k = s.label("sensor_kind");
            let known = SensorKind::ALL.iter().any(|x| x.as_str() == k);
            if known && !e.kinds.iter().any(|x| x == k) {
                e.kinds.push(k.to_string());
            }
        }
    }
    (out.into_values().collect(), left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_state_follows_the_site_series() {
        use EdgeState::*;
        let s = |r, m, c, e| edge_state(r, m, c, e);
        assert_eq!(s(true, Some(1.0), Some(2.0), false), (Missing, None));
        assert_eq!(s(true, Some(0.0), Some(2.0), true), (Seen, None));
        let why = |x: (EdgeState, Option<&str>)| {
            (x.0, x.1.unwrap().split(':').next().unwrap().to_string())
        };
        assert_eq!(
            why(s(true, Some(1.0), Some(0.0), false)),
            (NotObserved, "unverifiable".into())
        );
        assert_eq!(
            why(s(false, None, None, true)),
            (NotObserved, "unwatched".into())
        );
        assert!(s(true, Some(0.0), Some(1.0), false)
            .1
            .unwrap()
            .starts_with("no evidence"));
    }

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn a_disagreement_names_the_kind_that_saw_it_established_and_the_one_that_did_not() {
        let edge = [
            ("src", "engine1"),
            ("dst", "central"),
            ("port", "4242"),
            ("service", "qrs"),
        ];
        let by_kind = |kind, outcome, v| {
            let mut l = edge.to_vec();
            l.extend([("sensor_kind", kind), ("outcome", outcome)]);
            sample(&l, v)
        };
        let a = StoreAnswers {
            disagreements: vec![sample(&edge, 1.0), sample(&[("port", "other")], 1.0)],
            handshakes_by_kind: vec![
                by_kind("packets", "established", 40.0),
                by_kind("packets", "refused", 0.0),
                by_kind("firewall_log", "denied", 12.4),
                by_kind("no_such_kind", "denied", 3.0),
            ],
            ..Default::default()
        };
        let mut refused = 0;
        let d = disagreements(&a, &mut refused);
        assert_eq!(refused, 1, "the bad port is counted, not listed");
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].connections, d[0].first_seen.as_deref()), (12, None));
        assert_eq!(
            d[0].outcomes,
            BTreeMap::from([("firewall_log", "denied"), ("packets", "established")])
        );
    }

    /// Series of one kind and outcome beyond the one the recording rule
    /// makes (a replica's label kept) are views of the same connections:
    /// counted once, at the largest increase, in either order.
    #[test]
    fn a_kinds_series_of_one_outcome_count_at_their_largest_in_any_order() {
        let edge = [
            ("src", "engine1"),
            ("dst", "central"),
            ("port", "4242"),
            ("service", "qrs"),
        ];
        let by_kind = |kind, outcome, replica, v| {
            let mut l = edge.to_vec();
            l.extend([
                ("sensor_kind", kind),
                ("outcome", outcome),
                ("replica", replica),
            ]);
            sample(&l, v)
        };
        let mut series = vec![
            by_kind("packets", "established", "a", 40.0),
            by_kind("firewall_log", "denied", "a", 5.2),
            by_kind("firewall_log", "denied", "b", 12.4),
        ];
        for _ in 0..2 {
            let a = StoreAnswers {
                disagreements: vec![sample(&edge, 1.0)],
                handshakes_by_kind: series.clone(),
                ..Default::default()
            };
            let d = disagreements(&a, &mut 0);
            assert_eq!(d[0].connections, 12, "{series:?}");
            series.reverse();
        }
    }

    #[test]
    fn sensors_past_the_cap_are_counted_not_listed() {
        let info = |job, instance| sample(&[("job", job), ("instance", instance)], 1.0);
        let a = StoreAnswers {
            // Unsorted, and one sensor twice (two series of its site info).
            site_info: vec![
                info("pw", "c:9"),
                info("pw", "a:9"),
                info("pw", "c:9"),
                info("pw", "b:9"),
            ],
            sensor_kinds: vec![
                sample(
                    &[
                        ("job", "pw"),
                        ("instance", "a:9"),
                        ("sensor_kind", "packets"),
                    ],
                    1.0,
                ),
                sample(
                    &[("job", "pw"), ("instance", "a:9"), ("sensor_kind", "x\ny")],
                    1.0,
                ),
            ],
            ..Default::default()
        };
        let (kept, left_out) = sensors(&a, 2);
        let names: Vec<&str> = kept.iter().map(|s| s.instance.as_str()).collect();
        assert_eq!((names, left_out), (vec!["a:9", "b:9"], 1));
        assert_eq!(kept[0].kinds, ["packets"], "an unknown kind is not listed");
        assert_eq!(sensors(&a, 3).1, 0);
    }

    #[test]
    fn findings_come_from_the_site_series_with_estimated_counts() {
        let p = crate::config::load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let conn = |src, dst, port, verdict, v| {
            sample(
                &[
                    ("src", src),
                    ("dst", dst),
                    ("port", port),
                    ("service", "svc"),
                    ("verdict", verdict),
                ],
                v,
            )
        };
        let hs = |outcome, v| {
            sample(
                &[
                    ("src", "proxy"),
                    ("dst", "central"),
                    ("port", "4242"),
                    ("service", "svc"),
                    ("outcome", outcome),
                ],
                v,
            )
        };
        let a = StoreAnswers {
            connections: vec![
                conn("unknown", "central", "22", "unknown_host", 0.0),
                conn("proxy", "central", "4242", "expected", 9.6),
                conn("x", "y", "not a port", "unexpected", 3.0),
            ],
            handshakes: vec![hs("established", 7.0), hs("refused", 2.4)],
            disagreements: vec![sample(&[("port", "not a port")], 1.0)],
            ..Default::default()
        };
        let facts = StoreFacts {
            url: "http://store".into(),
            site: "multi-node".into(),
            at: "now".into(),
            range_seconds: 60,
        };
        let r = Report::from_store(
            &p,
            &a,
            facts,
            Timestamp(3_600_000_000_000),
            Duration::from_secs(60),
        );
        let kinds: Vec<(FindingKind, &str, u64)> = r
            .findings
            .iter()
            .filter(|f| f.kind != FindingKind::Missing)
            .map(|f| (f.kind, f.src.as_str(), f.count))
            .collect();
        // The unknown host counts one (its series exists), the bad port is
        // left out, the refusals make a blocked finding of the expected edge.
        assert_eq!(
            kinds,
            [
                (FindingKind::UnknownHost, "unknown", 1),
                (FindingKind::Blocked, "proxy", 2)
            ]
        );
        assert_eq!(r.capture.findings_refused, 1);
        // A refused disagreement is counted as one, not as a finding.
        assert_eq!(r.capture.disagreements_refused, 1);
        // The table and the page say both counts too.
        let table = r.to_table();
        assert!(
            table.contains("  1 more not listed (no port, or past the cap of 4096)"),
            "{table}"
        );
        assert!(
            table.contains("findings refused (no port, or past the cap of 4096): 1"),
            "{table}"
        );
        let page = super::super::html::render(
            &r,
            &super::super::html::Page {
                svg: String::new(),
                layout: String::new(),
                refresh_seconds: None,
                links: Vec::new(),
                subtitle: String::new(),
                signoff: None,
            },
        );
        assert!(
            page.contains("1 more not listed (no port, or past the cap of 4096)."),
            "{page}"
        );
        assert!(
            page.contains("1 (no port, or past the cap of 4096)"),
            "{page}"
        );
        // A capture's report refuses disagreements only past its row cap.
        let capture = Report {
            store: None,
            ..r.clone()
        };
        assert_eq!(
            capture.disagreements_refused_note().as_deref(),
            Some("1 more past the row cap, not listed")
        );
        assert_eq!(r.summary.connections["expected"], 10);
        assert_eq!(r.summary.outcomes["refused"], 2);
        // Nothing reported: every required edge is unwatched, none missing.
        assert!(r.edges.iter().all(|e| e.state == EdgeState::NotObserved));
        assert!(!r.edges.is_empty());
    }
}
