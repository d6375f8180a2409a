//! Every Prometheus metric portwatch exports is defined here (the list, with
//! meanings, is README.md "Metrics"; names and labels are a public contract).
//!
//! Two halves:
//! * [`Metrics`]: the registry and the metric families. Cheap to clone (the
//!   `prometheus` handles are atomics behind `Arc`s), shared with the HTTP
//!   side, which only renders it.
//! * [`Recorder`]: owned by the capture thread. It resolves each label set
//!   once (per flow key, per edge, per interface) and keeps the counter
//!   handle, so the hot path increments an atomic and never hashes label
//!   strings. Its caches are per policy: [`Recorder::set_policy`] drops them
//!   on reload and the next event re-resolves its labels against the new
//!   site.
//!
//! Label values come only from the model and the site: endpoint names,
//! `localhost` and `unknown` for `src`/`dst`; ports the model or site names,
//! else `other`; closed enums for `verdict`, `outcome`, `sensor_kind`,
//! `result`, `where` and `reason`. So the number of series is bounded by
//! the policy, never by traffic: a port scan from thousands of addresses
//! adds none beyond that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::classify::{Basis, Classification, Verdict};
use crate::decode::{EncapKind, Skip};
use crate::export::findings::finding_of;
use crate::map::FastMap;
use crate::observation::SensorKind;
use crate::pipeline::{Event, Ingested, Pipeline};
use crate::policy::Visibility;
use crate::policy::{EdgeId, Peer, Policy};
use crate::state::saved::SavedAlert;
use crate::state::{EdgeState, Eviction, Outcome};
use crate::time::Timestamp;

/// The `result` label of `portwatch_packets_total`: what decoding made of
/// a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketResult {
    /// A TCP SYN, SYN-ACK, RST or FIN.
    Control,
    NotIp,
    NotTcp,
    /// TCP data or pure ACK.
    NotControl,
    /// A non-first IP fragment.
    Fragment,
    /// UDP that looks like VXLAN or GENEVE on a port not configured for it.
    UnconfiguredTunnel,
    /// Failed to decode (truncated, invalid, unsupported link type).
    Malformed,
}

impl PacketResult {
    pub const ALL: [PacketResult; 7] = [
        PacketResult::Control,
        PacketResult::NotIp,
        PacketResult::NotTcp,
        PacketResult::NotControl,
        PacketResult::Fragment,
        PacketResult::UnconfiguredTunnel,
        PacketResult::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PacketResult::Control => "control",
            PacketResult::NotIp => "not_ip",
            PacketResult::NotTcp => "not_tcp",
            PacketResult::NotControl => "not_control",
            PacketResult::Fragment => "fragment",
            PacketResult::UnconfiguredTunnel => "unconfigured_tunnel",
            PacketResult::Malformed => "malformed",
        }
    }

    pub fn of(i: Ingested) -> PacketResult {
        match i {
            Ingested::Control(_) => PacketResult::Control,
            Ingested::Skipped(Skip::NotIp) => PacketResult::NotIp,
            Ingested::Skipped(Skip::NotTcp) => PacketResult::NotTcp,
            Ingested::Skipped(Skip::NotControl) => PacketResult::NotControl,
            Ingested::Skipped(Skip::Fragment) => PacketResult::Fragment,
            Ingested::Skipped(Skip::UnconfiguredTunnel) => PacketResult::UnconfiguredTunnel,
            Ingested::Malformed => PacketResult::Malformed,
        }
    }
}

/// The `where` label of `portwatch_capture_dropped_packets_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropSite {
    /// libpcap `ps_drop`: no room in the kernel buffer.
    Kernel,
    /// libpcap `ps_ifdrop`: dropped by the interface or its driver.
    Interface,
}

impl DropSite {
    pub const ALL: [DropSite; 2] = [DropSite::Kernel, DropSite::Interface];

    pub fn as_str(self) -> &'static str {
        match self {
            DropSite::Kernel => "kernel",
            DropSite::Interface => "interface",
        }
    }
}

/// The registry and every metric family. Clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connections: IntCounterVec,
    handshakes: IntCounterVec,
    sensor_sources: IntGaugeVec,
    disagreements: IntCounterVec,
    accepted_handshakes: IntCounterVec,
    edge_last_seen: GaugeVec,
    edge_window: GaugeVec,
    edge_missing: IntGaugeVec,
    finding_active: IntGaugeVec,
    finding_last_seen: GaugeVec,
    finding_evicted: IntCounter,
    packets: IntCounterVec,
    encapsulated: IntCounterVec,
    dropped: IntCounterVec,
    capture_up: IntGaugeVec,
    flow_entries: IntGauge,
    evictions: IntCounterVec,
    timestamp_anomalies: IntCounter,
    build_info: IntGaugeVec,
    site_info: IntGaugeVec,
    node_info: IntGaugeVec,
    reload_success: IntGauge,
    last_reload: Gauge,
    reload_failures: IntCounter,
    event_log_errors: IntCounter,
    /// `--write-findings`: no series without it.
    findings_not_written: IntCounterVec,
    records: IntCounterVec,
    /// Per flow exporter (`run --flow-listen`): datagrams, lost records,
    /// lost export packets.
    flow_exporter: [IntCounterVec; 3],
    followed_changes: IntCounterVec,
    /// `run --state-dir`: no series without it.
    state_writes: IntCounterVec,
    state_last_write: GaugeVec,
    state_rejected: IntCounterVec,
    /// Faults the process survives (README "Limits and faults").
    pub faults: Faults,
}

/// Counters of faults survived: none of these stops the process.
#[derive(Clone)]
pub struct Faults {
    /// Interfaces lost while capturing (each later reopen ends the gap).
    pub capture_lost: IntCounterVec,
    /// `accept` failures of the HTTP listener (e.g. out of descriptors).
    pub http_accept_errors: IntCounter,
    /// HTTP connections closed at once because the connection cap was reached.
    pub http_rejected: IntCounter,
    /// Requests answered 429 unchecked: the bcrypt checks allowed at once
    /// were running or waiting (guesses, most likely).
    pub http_auth_throttled: IntCounter,
}

const EDGE_LABELS: &[&str] = &["src", "dst", "port", "service"];
/// `accepted` is `true` while an acceptance of the site file holds.
const FINDING_LABELS: &[&str] = &["src", "dst", "port", "service", "finding", "accepted"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            // Names are fixed and distinct: registration cannot fail.
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let m = Metrics {
            connections: counter_vec(
                "portwatch_connections_total",
                "New TCP connection attempts (SYNs of new flows), by site endpoints, port and verdict.",
                &["src", "dst", "port", "service", "verdict"],
            ),
            handshakes: counter_vec(
                "portwatch_handshakes_total",
                "Connection attempts whose outcome is known, by outcome and the kind of source that told it.",
                &["src", "dst", "port", "service", "outcome", "sensor_kind"],
            ),
            disagreements: counter_vec(
                "portwatch_outcome_disagreements_total",
                "Connections two kinds of source this sensor reads told different fates of: one saw it established, the other refused, unanswered or denied.",
                EDGE_LABELS,
            ),
            sensor_sources: int_gauge_vec(
                "portwatch_sensor_source_info",
                "Always 1; one series per kind of source this sensor reads (packets, firewall_log, wfp, flow).",
                &["sensor_kind"],
            ),
            accepted_handshakes: counter_vec(
                "portwatch_accepted_handshakes_total",
                "Blocked attempts (refused, unanswered, denied) an acceptance of the site file covers: a part of portwatch_handshakes_total the failure alerts leave out.",
                &["src", "dst", "port", "service", "outcome"],
            ),
            edge_last_seen: gauge_vec(
                "portwatch_edge_last_seen_timestamp_seconds",
                "Last evidence of use of a required edge (capture time for replays); 0 if none yet.",
                EDGE_LABELS,
            ),
            edge_window: gauge_vec(
                "portwatch_edge_window_seconds",
                "How long a required edge may go without evidence before it counts as missing.",
                EDGE_LABELS,
            ),
            edge_missing: int_gauge_vec(
                "portwatch_edge_missing",
                "1 when a required edge has had no evidence for a whole window, else 0.",
                EDGE_LABELS,
            ),
            finding_active: int_gauge_vec(
                "portwatch_finding_active",
                "1 from a finding's first occurrence until the hold (run --finding-hold) after its latest, then 0: what the finding alerts fire on (accepted=\"false\" only).",
                FINDING_LABELS,
            ),
            finding_last_seen: gauge_vec(
                "portwatch_finding_last_seen_timestamp_seconds",
                "Time of a finding's latest occurrence (capture time for replays).",
                FINDING_LABELS,
            ),
            finding_evicted: reg(
                &registry,
                IntCounter::new(
                    "portwatch_finding_series_evicted_total",
                    "Finding series removed at the cap (4096 label sets; those back at 0 first).",
                )
                .expect("valid metric"),
            ),
            packets: counter_vec(
                "portwatch_packets_total",
                "Frames read from the capture, by what decoding made of them.",
                &["interface", "result"],
            ),
            encapsulated: counter_vec(
                "portwatch_encapsulated_packets_total",
                "Frames opened from an encapsulation (a mirror session's VXLAN, GENEVE, ERSPAN, GRE, ...), by kind; a frame in two counts under both.",
                &["kind"],
            ),
            dropped: counter_vec(
                "portwatch_capture_dropped_packets_total",
                "Packets the capture lost before portwatch saw them (libpcap statistics).",
                &["interface", "where"],
            ),
            capture_up: int_gauge_vec(
                "portwatch_capture_up",
                "1 while the capture on an interface (or replay) is delivering, 0 once it stopped.",
                &["interface"],
            ),
            flow_entries: reg(
                &registry,
                IntGauge::new(
                    "portwatch_flow_table_entries",
                    "Connection attempts and open connections currently tracked.",
                )
                .expect("valid metric"),
            ),
            findings_not_written: counter_vec(
                "portwatch_findings_packets_not_written_total",
                "Packets of connections with findings not in the --write-findings file, by reason (write_error: a write failed, the file keeps whole records; over_cap: past --write-findings-max; other_link_type).",
                &["reason"],
            ),
            evictions: counter_vec(
                "portwatch_flow_table_evictions_total",
                "Tracked connections dropped before they closed, by reason (capacity_half_open, capacity_open, idle).",
                &["reason"],
            ),
            timestamp_anomalies: reg(
                &registry,
                IntCounter::new(
                    "portwatch_timestamp_anomalies_total",
                    "Frames whose timestamp did not move the capture clock: far behind it, or far ahead and not confirmed by the frames after.",
                )
                .expect("valid metric"),
            ),
            build_info: int_gauge_vec(
                "portwatch_build_info",
                "Always 1; the version, git revision and Rust compiler portwatch was built from.",
                &["version", "revision", "rustversion"],
            ),
            site_info: int_gauge_vec(
                "portwatch_site_info",
                "Always 1; the loaded site and its port model as labels.",
                &["site", "model"],
            ),
            node_info: int_gauge_vec(
                "portwatch_node_info",
                "Always 1; one series per node of the loaded site, with its roles.",
                &["node", "roles"],
            ),
            reload_success: reg(
                &registry,
                IntGauge::new(
                    "portwatch_config_last_reload_successful",
                    "1 if the last configuration load (start or SIGHUP) succeeded, 0 if it failed.",
                )
                .expect("valid metric"),
            ),
            last_reload: reg(
                &registry,
                Gauge::new(
                    "portwatch_config_last_reload_success_timestamp_seconds",
                    "Wall-clock time of the last successful configuration load.",
                )
                .expect("valid metric"),
            ),
            reload_failures: reg(
                &registry,
                IntCounter::new(
                    "portwatch_config_reload_failures_total",
                    "SIGHUP reloads rejected because the new configuration was invalid.",
                )
                .expect("valid metric"),
            ),
            event_log_errors: reg(
                &registry,
                IntCounter::new(
                    "portwatch_event_log_write_errors_total",
                    "Event log and conn log lines (--events, --conn-log) that could not be written; capture goes on, and the logs keep whole lines only.",
                )
                .expect("valid metric"),
            ),
            records: counter_vec(
                "portwatch_records_total",
                "Records read from followed node logs (--follow) and received flow records (--flow-listen), by the node whose log it is (unknown until found; always for flow records), the format, and what was made of them.",
                &["node", "format", "reason"],
            ),
            flow_exporter: [
                counter_vec(
                    "portwatch_flow_export_datagrams_total",
                    "Export datagrams received on --flow-listen, by the exporter's name in the site (exporters:), or undeclared.",
                    &["exporter"],
                ),
                counter_vec(
                    "portwatch_flow_export_lost_records_total",
                    "Flow records an exporter's sequence numbers say were lost (NetFlow v5, IPFIX), by the exporter's name in the site, or undeclared.",
                    &["exporter"],
                ),
                counter_vec(
                    "portwatch_flow_export_lost_packets_total",
                    "Export packets an exporter's sequence numbers say were lost (NetFlow v9), by the exporter's name in the site, or undeclared.",
                    &["exporter"],
                ),
            ],
            followed_changes: counter_vec(
                "portwatch_followed_file_changes_total",
                "What happened to followed files (--follow): opened, rotated, truncated, missing, unreadable, or refused as binary (EVTX), gzip or azure_flow_log; by the node whose log it is.",
                &["node", "change"],
            ),
            state_writes: counter_vec(
                "portwatch_state_writes_total",
                "Writes of the state file (run --state-dir), by result: written, or failed (the previous file stays).",
                &["result"],
            ),
            state_last_write: gauge_vec(
                "portwatch_state_last_write_timestamp_seconds",
                "Wall-clock time of the last state file written (run --state-dir).",
                &[],
            ),
            state_rejected: counter_vec(
                "portwatch_state_files_rejected_total",
                "State files not taken at start and set aside (run --state-dir), by reason.",
                &["reason"],
            ),
            faults: Faults {
                capture_lost: reg(
                    &registry,
                    IntCounterVec::new(
                        Opts::new(
                            "portwatch_capture_interface_lost_total",
                            "Times a capture interface went away (it is reopened with backoff).",
                        ),
                        &["interface"],
                    )
                    .expect("valid metric"),
                ),
                http_accept_errors: reg(
                    &registry,
                    IntCounter::new(
                        "portwatch_http_accept_errors_total",
                        "Failed accepts on the HTTP listener (e.g. out of file descriptors); never fatal.",
                    )
                    .expect("valid metric"),
                ),
                http_rejected: reg(
                    &registry,
                    IntCounter::new(
                        "portwatch_http_connections_rejected_total",
                        "HTTP connections closed at once because the connection cap was reached.",
                    )
                    .expect("valid metric"),
                ),
                http_auth_throttled: reg(
                    &registry,
                    IntCounter::new(
                        "portwatch_http_auth_throttled_total",
                        "Requests answered 429 without a password check: as many bcrypt checks as allowed were running or waiting.",
                    )
                    .expect("valid metric"),
                ),
            },
            registry,
        };
        for why in Eviction::ALL {
            m.evictions.with_label_values(&[why.as_str()]);
        }
        m.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("PORTWATCH_REVISION"),
                env!("PORTWATCH_RUSTVERSION"),
            ])
            .set(1);
        m
    }

    /// Also export this process's `process_*` metrics (CPU seconds,
    /// resident memory, open file descriptors, …: the names every exporter
    /// uses). Linux only; the daemon's registry, not a replay's golden.
    pub fn with_process_metrics(self) -> Metrics {
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metric names are unique");
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// A configuration was loaded (at start, or by a reload) at `now`.
    pub fn config_loaded(&self, p: &Policy, now: Timestamp) {
        self.site_info.reset();
        self.site_info
            .with_label_values(&[p.site.name.as_str(), p.model.id.as_str()])
            .set(1);
        self.node_info.reset();
        for n in &p.site.nodes {
            let roles = n.roles.join(",");
            self.node_info
                .with_label_values(&[n.name.as_str(), roles.as_str()])
                .set(1);
        }
        self.reload_success.set(1);
        self.last_reload.set(now.as_secs_f64());
    }

    /// A reload was refused; the previous configuration stays in force.
    pub fn config_rejected(&self) {
        self.reload_success.set(0);
        self.reload_failures.inc();
    }

    /// What `--write-findings` could not write so far (running totals).
    pub fn findings_not_written(&self, stats: &crate::export::evidence::EvidenceStats) {
        for why in crate::export::evidence::NotWritten::ALL {
            let c = self.findings_not_written.with_label_values(&[why.as_str()]);
            c.inc_by(stats.not_written(why).saturating_sub(c.get()));
        }
    }

    /// The event log's write errors so far (a running total).
    pub fn event_log_errors(&self, total: u64) {
        let seen = self.event_log_errors.get();
        self.event_log_errors.inc_by(total.saturating_sub(seen));
    }

    /// `run --state-dir`: its series, at 0, for every result and reason.
    pub fn state_kept(&self) {
        for r in ["written", "failed"] {
            self.state_writes.with_label_values(&[r]);
        }
        for r in crate::state::saved::REJECT_REASONS {
            self.state_rejected.with_label_values(&[r]);
        }
    }

    /// A state file write, at `wall` (system time).
    pub fn state_written(&self, ok: bool, wall: Timestamp) {
        let result = if ok { "written" } else { "failed" };
        self.state_writes.with_label_values(&[result]).inc();
        if ok {
            let no_labels: [&str; 0] = [];
            (self.state_last_write.with_label_values(&no_labels)).set(wall.as_secs_f64());
        }
    }

    /// A state file set aside at start, for `reason`
    /// ([`crate::state::saved::REJECT_REASONS`]).
    pub fn state_rejected(&self, reason: &'static str) {
        self.state_rejected.with_label_values(&[reason]).inc();
    }
}

impl Metrics {
    /// This sensor reads a source of `kind`.
    pub fn source_read(&self, kind: SensorKind) {
        self.sensor_sources
            .with_label_values(&[kind.as_str()])
            .set(1);
    }
}

/// Most record counter handles kept (label values are bounded anyway).
const MAX_RECORD_SERIES: usize = 1024;

/// What a connection's labels are a function of: the two endpoints, the
/// port label, the verdict, and the edge whose service names it (else the
/// service comes from the destination and port).
type FlowLabels = (Peer, Peer, Option<u16>, Verdict, Option<EdgeId>);

mod alerting;
pub use alerting::{AlertKind, DEFAULT_HOLD as DEFAULT_FINDING_HOLD};

struct EdgeSeries {
    last_seen: Gauge,
    missing: IntGauge,
    window: Duration,
}

/// What one flow exporter sent and lost (`run --flow-listen`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterCounts {
    pub datagrams: u64,
    /// Records lost by sequence gaps (NetFlow v5, IPFIX).
    pub lost_records: u64,
    /// Export packets lost by sequence gaps (NetFlow v9).
    pub lost_packets: u64,
}

impl ExporterCounts {
    pub fn add(&mut self, o: ExporterCounts) {
        self.datagrams += o.datagrams;
        self.lost_records += o.lost_records;
        self.lost_packets += o.lost_packets;
    }
}

/// Flow exporter series kept: the most a site declares, and `undeclared`.
const MAX_EXPORTER_SERIES: usize = crate::site::MAX_DECLARED_EXPORTERS + 1;

/// The capture thread's side: cached handles, fed with pipeline events.
pub struct Recorder {
    m: Metrics,
    packets: Vec<[IntCounter; PacketResult::ALL.len()]>,
    dropped: Vec<[IntCounter; 2]>,
    dropped_seen: Vec<[u64; 2]>,
    up: Vec<IntGauge>,
    lost: Vec<IntCounter>,
    evictions: [IntCounter; 3],
    evictions_seen: [u64; 3],
    encapsulated: [IntCounter; EncapKind::ALL.len()],
    encapsulated_seen: [u64; EncapKind::ALL.len()],
    anomalies_seen: u64,
    /// Record counters by node, format and reason (each a closed set or
    /// the site's node names; capped all the same).
    records: FastMap<(Option<Arc<str>>, &'static str, &'static str), IntCounter>,
    /// Flow exporter counters by label value (a declared name or
    /// `undeclared`).
    flow_exporters: FastMap<String, [IntCounter; 3]>,
    // Per policy:
    connections: FastMap<FlowLabels, IntCounter>,
    handshakes: FastMap<OutcomeLabels, IntCounter>,
    accepted_handshakes: FastMap<OutcomeLabels, IntCounter>,
    disagreements: FastMap<FlowLabels, IntCounter>,
    /// Kinds of source marked in `portwatch_sensor_source_info`.
    sources: [bool; SensorKind::ALL.len()],
    edges: Vec<Option<EdgeSeries>>,
    findings: alerting::Held,
}

impl Recorder {
    /// `interfaces` names the capture's interfaces (`replay` for files,
    /// none without a capture); frames are counted by their position in it.
    pub fn new(m: &Metrics, interfaces: &[String]) -> Recorder {
        // No capture (`--follow` alone): no per-interface series.
        let names: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        let packets = (names.iter())
            .map(|i| PacketResult::ALL.map(|r| m.packets.with_label_values(&[*i, r.as_str()])))
            .collect();
        let dropped = (names.iter())
            .map(|i| DropSite::ALL.map(|w| m.dropped.with_label_values(&[*i, w.as_str()])))
            .collect();
        let up = (names.iter())
            .map(|i| m.capture_up.with_label_values(&[*i]))
            .collect();
        let lost = (names.iter())
            .map(|i| m.faults.capture_lost.with_label_values(&[*i]))
            .collect();
        Recorder {
            evictions: Eviction::ALL.map(|w| m.evictions.with_label_values(&[w.as_str()])),
            evictions_seen: [0; 3],
            encapsulated: EncapKind::ALL.map(|k| m.encapsulated.with_label_values(&[k.as_str()])),
            encapsulated_seen: [0; EncapKind::ALL.len()],
            anomalies_seen: 0,
            records: FastMap::default(),
            flow_exporters: FastMap::default(),
            m: m.clone(),
            packets,
            dropped,
            dropped_seen: vec![[0; 2]; names.len()],
            up,
            lost,
            connections: FastMap::default(),
            handshakes: FastMap::default(),
            accepted_handshakes: FastMap::default(),
            disagreements: FastMap::default(),
            sources: [false; SensorKind::ALL.len()],
            edges: Vec::new(),
            findings: alerting::Held::new(
                m.finding_active.clone(),
                m.finding_last_seen.clone(),
                m.finding_evicted.clone(),
            ),
        }
    }

    /// How long a finding's gauge stays 1 after its latest occurrence.
    pub fn with_finding_hold(mut self, hold: Duration) -> Recorder {
        self.findings.set_hold(hold);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.m
    }

    /// Start recording against `p` (at start and after a reload, before the
    /// new pipeline sees a frame): label caches are dropped and the
    /// required-edge series rebuilt. Connection counters keep their series.
    /// The running-total baselines (`*_seen`) stay: the flow table, the
    /// clock and the capture outlive a reload, and so do their totals.
    pub fn set_policy(&mut self, p: &Policy, vis: &Visibility) {
        self.connections.clear();
        self.handshakes.clear();
        self.accepted_handshakes.clear();
        self.disagreements.clear();
        self.findings.set_policy();
        self.m.edge_last_seen.reset();
        self.m.edge_window.reset();
        self.m.edge_missing.reset();
        self.edges = (p.edges.iter())
            .map(|e| {
                if !vis.judges(p, e) {
                    return None;
                }
                let (src, dst) = (Peer::Endpoint(e.src), Peer::Endpoint(e.dst));
                let port = e.port.to_string();
                let labels = [
                    p.peer_name(src),
                    p.peer_name(dst),
                    port.as_str(),
                    &*e.service,
                ];
                self.m
                    .edge_window
                    .with_label_values(&labels)
                    .set(e.window.as_secs_f64());
                Some(EdgeSeries {
                    last_seen: self.m.edge_last_seen.with_label_values(&labels),
                    missing: self.m.edge_missing.with_label_values(&labels),
                    window: e.window,
                })
            })
            .collect();
    }

    /// One frame from interface `slot` (its position in `interfaces`).
    #[inline]
    pub fn packet(&self, slot: usize, what: Ingested) {
        let slot = slot.min(self.packets.len().saturating_sub(1));
        if let Some(p) = self.packets.get(slot) {
            p[PacketResult::of(what) as usize].inc();
        }
    }

    /// One record of a followed log: its node (a site node's name, if
    /// known), its format's name and its reason (closed sets).
    pub fn record(&mut self, node: Option<&Arc<str>>, format: &'static str, reason: &'static str) {
        let key = (node.cloned(), format, reason);
        if let Some(c) = self.records.get(&key) {
            c.inc();
            return;
        }
        let c =
            (self.m.records).with_label_values(&[node.map_or("unknown", |n| &**n), format, reason]);
        c.inc();
        if self.records.len() < MAX_RECORD_SERIES {
            self.records.insert(key, c);
        }
    }

    /// `n` records of a source without a node (a flow exporter) counted
    /// under `reason`.
    pub fn records_n(&mut self, format: &'static str, reason: &'static str, n: u64) {
        let key = (None, format, reason);
        if let Some(c) = self.records.get(&key) {
            c.inc_by(n);
            return;
        }
        let c = (self.m.records).with_label_values(&["unknown", format, reason]);
        c.inc_by(n);
        if self.records.len() < MAX_RECORD_SERIES {
            self.records.insert(key, c);
        }
    }

    /// This sensor reads a source of `kind` (marked once).
    pub fn source_read(&mut self, kind: SensorKind) {
        if !std::mem::replace(&mut self.sources[kind as usize], true) {
            self.m.source_read(kind);
        }
    }

    /// `n` more of the flow exporter labelled `exporter`: a name the site
    /// declares, or `undeclared` (never an address). All zero makes the
    /// series, so a rate over it starts from 0.
    pub fn flow_exporter(&mut self, exporter: &str, n: ExporterCounts) {
        let series = match self.flow_exporters.get(exporter) {
            Some(s) => s.clone(),
            None => {
                let s = (self.m.flow_exporter.each_ref()).map(|v| v.with_label_values(&[exporter]));
                if self.flow_exporters.len() < MAX_EXPORTER_SERIES {
                    self.flow_exporters.insert(exporter.to_string(), s.clone());
                }
                s
            }
        };
        for (c, by) in series
            .iter()
            .zip([n.datagrams, n.lost_records, n.lost_packets])
        {
            c.inc_by(by);
        }
    }

    /// Something happened to a followed file (a [`crate::source::follow::Change`]).
    pub fn followed_change(&self, node: Option<&Arc<str>>, change: &'static str) {
        (self.m.followed_changes)
            .with_label_values(&[node.map_or("unknown", |n| &**n), change])
            .inc();
    }

    pub fn capture_up(&self, slot: usize, up: bool) {
        if let Some(g) = self.up.get(slot) {
            g.set(i64::from(up));
        }
    }

    /// Interface `slot` went away: down, and counted.
    pub fn interface_lost(&self, slot: usize) {
        self.capture_up(slot, false);
        if let Some(c) = self.lost.get(slot) {
            c.inc();
        }
    }

    /// libpcap's cumulative drop counts for interface `slot`.
    pub fn capture_drops(&mut self, slot: usize, kernel: u64, interface: u64) {
        let (Some(c), Some(seen)) = (self.dropped.get(slot), self.dropped_seen.get_mut(slot))
        else {
            return;
        };
        for (i, now) in [kernel, interface].into_iter().enumerate() {
            // libpcap's counters are 32-bit and wrap: count a wrap as a restart.
            let delta = now.checked_sub(seen[i]).unwrap_or(now);
            c[i].inc_by(delta);
            seen[i] = now;
        }
    }

    /// Count one pipeline event, handled at `wall`. `p` is the pipeline's
    /// policy.
    pub fn observe(&mut self, p: &Policy, e: &Event, wall: Instant) {
        if let Some(f) = finding_of(e) {
            self.findings.occurred(p, &f, wall);
        }
        match e {
            Event::Connection { class, .. } => {
                let key = flow_labels(p, class);
                self.connections
                    .entry(key)
                    .or_insert_with(|| {
                        let port = port_label(p, class.port);
                        self.m.connections.with_label_values(&[
                            p.peer_name(class.src),
                            p.peer_name(class.dst),
                            port.as_str(),
                            &*class.service,
                            class.verdict.as_str(),
                        ])
                    })
                    .inc();
            }
            Event::Outcome {
                class,
                outcome,
                source,
                ..
            } => {
                let kind = SensorKind::from(*source);
                self.source_read(kind);
                let (cache, vec) = (&mut self.handshakes, &self.m.handshakes);
                outcome_counter(cache, vec, p, class, *outcome, Some(kind)).inc();
                // Accepted failures apart too: the failure ratio alert
                // leaves them out.
                if class.accepted.is_some() && outcome.is_blocked() {
                    let (cache, vec) = (&mut self.accepted_handshakes, &self.m.accepted_handshakes);
                    outcome_counter(cache, vec, p, class, *outcome, None).inc();
                }
            }
            Event::Disagreement { class, .. } => {
                let key = flow_labels(p, class);
                self.disagreements
                    .entry(key)
                    .or_insert_with(|| {
                        let port = port_label(p, class.port);
                        self.m.disagreements.with_label_values(&[
                            p.peer_name(class.src),
                            p.peer_name(class.dst),
                            port.as_str(),
                            &*class.service,
                        ])
                    })
                    .inc();
            }
            Event::Evidence { ts, edge } => {
                if let Some(Some(s)) = self.edges.get(edge.0 as usize) {
                    if ts.as_secs_f64() > s.last_seen.get() {
                        s.last_seen.set(ts.as_secs_f64());
                    }
                }
            }
        }
    }

    /// Finding alert series there are.
    pub fn alert_series(&self) -> usize {
        self.findings.len()
    }

    /// The finding alert series to keep over a restart (`wall` and `now`:
    /// one instant on the monotonic and the system clock).
    pub fn saved_alerts(&self, wall: Instant, now: Timestamp) -> Vec<SavedAlert> {
        self.findings.save(wall, now)
    }

    /// Take back an alert series kept over a restart; false if `p` cannot
    /// give its labels.
    pub fn restore_alert(
        &mut self,
        p: &Policy,
        a: &SavedAlert,
        wall: Instant,
        now: Timestamp,
    ) -> bool {
        self.findings.restore(p, a, wall, now)
    }

    /// Finding gauges whose hold has passed at `wall` go back to 0.
    pub fn expire_findings(&mut self, wall: Instant) {
        self.findings.expire(wall);
    }

    /// Periodic gauges: flow table, evictions, and which required edges are
    /// missing at `now`, having observed since `since` (capture time for a
    /// replay, the wall clock for live capture).
    pub fn tick(&mut self, pl: &Pipeline, since: Timestamp, now: Timestamp) {
        let table = pl.table();
        self.m.flow_entries.set(table.len() as i64);
        for (i, why) in Eviction::ALL.into_iter().enumerate() {
            let total = table.evictions(why);
            self.evictions[i].inc_by(total.saturating_sub(self.evictions_seen[i]));
            self.evictions_seen[i] = total;
        }
        for (i, kind) in EncapKind::ALL.into_iter().enumerate() {
            let total = pl.stats().encapsulated(kind);
            self.encapsulated[i].inc_by(total.saturating_sub(self.encapsulated_seen[i]));
            self.encapsulated_seen[i] = self.encapsulated_seen[i].max(total);
        }
        let anomalies = pl.time().anomalies();
        (self.m.timestamp_anomalies).inc_by(anomalies.saturating_sub(self.anomalies_seen));
        self.anomalies_seen = self.anomalies_seen.max(anomalies);
        let clock = pl.clock();
        for (i, s) in self.edges.iter().enumerate() {
            let Some(s) = s else { continue };
            let edge = EdgeId(i as u32);
            // An open connection is evidence up to `now`.
            if let Some(last) = clock.last_evidence(edge, now) {
                if last.as_secs_f64() > s.last_seen.get() {
                    s.last_seen.set(last.as_secs_f64());
                }
            }
            let missing = clock.state(edge, s.window, since, now) == EdgeState::Missing;
            s.missing.set(i64::from(missing));
        }
    }
}

/// An outcome counter's labels: the flow's, the outcome, and the kind of
/// source where the family has that label.
type OutcomeLabels = (FlowLabels, Outcome, Option<SensorKind>);

/// The counter of `outcome` on `class`'s flow in `vec` (with a
/// `sensor_kind` label if `kind` is given), cached.
fn outcome_counter<'a>(
    cache: &'a mut FastMap<OutcomeLabels, IntCounter>,
    vec: &IntCounterVec,
    p: &Policy,
    class: &Classification,
    outcome: Outcome,
    kind: Option<SensorKind>,
) -> &'a IntCounter {
    cache
        .entry((flow_labels(p, class), outcome, kind))
        .or_insert_with(|| {
            let port = port_label(p, class.port);
            let mut labels = vec![
                p.peer_name(class.src),
                p.peer_name(class.dst),
                port.as_str(),
                &*class.service,
                outcome.as_str(),
            ];
            labels.extend(kind.map(SensorKind::as_str));
            vec.with_label_values(&labels)
        })
}

fn flow_labels(p: &Policy, c: &Classification) -> FlowLabels {
    let edge = match c.basis {
        Basis::Edge(e) => Some(e),
        _ => None,
    };
    (c.src, c.dst, p.port_label(c.port), c.verdict, edge)
}

fn port_label(p: &Policy, port: u16) -> String {
    match p.port_label(port) {
        Some(n) => n.to_string(),
        None => "other".to_string(),
    }
}

#[cfg(test)]
mod tests;
