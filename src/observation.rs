//! Observations: what one sensor saw of one connection. Every source meets
//! the rest of portwatch at this type.
//!
//! - **The type.** An [`Observation`] holds the time, the 4-tuple as a
//!   [`FlowKey`] (its `client` is the end that initiated the connection),
//!   how the initiator is known ([`Initiator`]), what is known of the
//!   connection's fate ([`Fate`]), the site node that logged it (`sensor`,
//!   when the source is a node's own log), the process where the source
//!   names it, the firewall filter where it cites one, and the kind of
//!   source ([`SourceKind`]).
//! - **Outcomes.** A packet capture sees the handshake: `established`,
//!   `refused` (RST), `unanswered`, `unknown`. A host's firewall log sees the
//!   firewall's decision only: `permitted` (let through; whether the
//!   handshake then completed is not known) and `denied` (dropped or
//!   blocked, with the filter where the record has it).
//! - **Fidelity.** Each [`SourceKind`] states what it can and cannot see
//!   ([`Fidelity`]); the report prints it per source, and no verdict claims
//!   more than its source saw (a `permitted` is never counted as
//!   `established`; a source that lost events cannot prove an edge missing).
//! - **Producing observations.** The handshake tracker makes them from
//!   packets in two steps: [`Fate::Attempted`] when the SYN is seen, then
//!   [`Fate::Ended`] with the outcome (same key) when it is known. A record
//!   reader (firewall log, audit events, flow records) makes one observation
//!   per record with [`Fate::Ended`] at once, and hands it to
//!   `Pipeline::observe`: classification, tallies, required-edge evidence,
//!   findings, metrics, events and reports take it from there exactly as
//!   for packets. A reader reports the events its sensor lost with
//!   `Pipeline::sensor_lost` (required edges are then not judged missing
//!   over that window).

use std::net::IpAddr;
use std::sync::Arc;

use crate::time::Timestamp;

/// A connection's direction: the client initiated it (sent the SYN, or is
/// the end a record names as the initiator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
}

/// By hand: the derived hash feeds each `IpAddr` as a discriminant and a
/// length-prefixed byte slice, five writes where an IPv4 key needs two
/// words. Equal keys write the same words, as `Eq` requires.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        hash_addresses(h, self.client, self.server);
        h.write_u32(u32::from(self.client_port) << 16 | u32::from(self.server_port));
    }
}

/// Two addresses into `h` for a hash written by hand: one word when both
/// are IPv4.
#[inline]
pub(crate) fn hash_addresses<H: std::hash::Hasher>(h: &mut H, a: IpAddr, b: IpAddr) {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
        }
        (a, b) => {
            h.write_u128(address_bits(a));
            h.write_u128(address_bits(b));
        }
    }
}

/// An address as 128 bits, IPv4 mapped, for a hash written by hand.
#[inline]
pub(crate) fn address_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

/// How a connection attempt ended, as far as its source can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The listener answered with SYN-ACK.
    Established,
    /// The listener (or a firewall for it) answered with RST.
    Refused,
    /// No answer within the timeout, and the evidence says one would have
    /// been seen: the client retransmitted, or replies are visible here.
    Unanswered,
    /// No answer, but nothing shows one was due: the capture ended, the
    /// client gave up, the entry was evicted, or this capture sees no replies.
    Unknown,
    /// The host firewall let it through; whether the handshake completed is
    /// not known.
    Permitted,
    /// The host firewall dropped or blocked it.
    Denied,
}

impl Outcome {
    pub const COUNT: usize = 6;
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Established,
        Outcome::Refused,
        Outcome::Unanswered,
        Outcome::Unknown,
        Outcome::Permitted,
        Outcome::Denied,
    ];
    /// What a packet capture can tell.
    pub const PACKET: [Outcome; 4] = [
        Outcome::Established,
        Outcome::Refused,
        Outcome::Unanswered,
        Outcome::Unknown,
    ];
    /// What a host firewall's log can tell.
    pub const FIREWALL: [Outcome; 2] = [Outcome::Permitted, Outcome::Denied];
    /// What a flow record with TCP flags can tell (AWS `tcp-flags`): a
    /// SYN-ACK or RST back, or the filter's decision.
    pub const FLOW_FLAGS: [Outcome; 4] = [
        Outcome::Established,
        Outcome::Refused,
        Outcome::Permitted,
        Outcome::Denied,
    ];
    /// What a flow record without flags can tell (Azure): packets back
    /// after the client's second, or the filter's decision.
    pub const FLOW_COUNTS: [Outcome; 3] =
        [Outcome::Established, Outcome::Permitted, Outcome::Denied];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Unanswered => "unanswered",
            Outcome::Unknown => "unknown",
            Outcome::Permitted => "permitted",
            Outcome::Denied => "denied",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// An outcome that says the connection did not get through: on an
    /// expected edge between nodes, a `blocked` finding.
    pub fn is_blocked(self) -> bool {
        matches!(
            self,
            Outcome::Refused | Outcome::Unanswered | Outcome::Denied
        )
    }
}

/// How a connection left the tracker: the conn log's close reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Close {
    /// Both ends sent a FIN.
    Fin,
    /// The client sent a RST (before an answer: it gave up).
    RstClient,
    /// The server sent a RST (before an answer: it refused).
    RstServer,
    /// No answer to the SYN within the SYN timeout.
    SynTimeout,
    /// Open, and no control packet for the idle timeout.
    IdleTimeout,
    /// Dropped to make room in the full handshake table.
    Evicted,
    /// A new SYN (another initial sequence number) took its 4-tuple.
    Reused,
    /// Still pending or open when the capture ended (or the daemon stopped,
    /// or a looped replay started its capture again).
    CaptureEnd,
    /// A record source's connection: the record is all it says (no close
    /// seen), written when its merge window ends.
    Record,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::RstClient => "rst_client",
            Close::RstServer => "rst_server",
            Close::SynTimeout => "syn_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::Evicted => "evicted",
            Close::Reused => "reused",
            Close::CaptureEnd => "capture_end",
            Close::Record => "record",
        }
    }
}

/// Counts by [`Outcome::index`].
pub type OutcomeCounts = [u64; Outcome::COUNT];

/// How the initiator (the key's `client`) is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// Its SYN was seen.
    Syn,
    /// The record says which way the connection went (a firewall log's
    /// `path`, an audit event's `Direction`).
    Logged,
    /// Guessed (from ports or flags) by a source that does not say: may be
    /// the wrong way round.
    Inferred,
}

/// What is known of a connection's fate at the time of an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The attempt was seen (a SYN); its outcome follows in a later
    /// observation of the same key. Only the handshake tracker says this.
    Attempted,
    /// The outcome (for a record: the attempt and its outcome at once).
    /// `inferred`: established from the client's ACK or data, the
    /// SYN-ACK itself not captured.
    Ended { outcome: Outcome, inferred: bool },
}

/// The process that owned the connection's socket, where the source names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub executable: Option<Arc<str>>,
    pub pid: Option<u32>,
}

impl Process {
    pub fn is_known(&self) -> bool {
        self.executable.is_some() || self.pid.is_some()
    }
}

/// The kind of source an observation came from: a closed set, so metric
/// labels and the fidelity table stay bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Packets (pcap, pcapng, a live interface).
    #[default]
    Packets,
    /// The Windows Defender Firewall log, `pfirewall.log`.
    FirewallLog,
    /// Windows Filtering Platform audit events 5156/5157/5152 (EVTX or
    /// NDJSON).
    WfpEvents,
    /// AWS VPC Flow Logs: per-interface records aggregated over an
    /// interval, with `tcp-flags` where the format has them.
    VpcFlowLog,
    /// Azure VNet flow logs and NSG flow logs: per-flow tuples with a
    /// state (begin, continuing, end, denied) and packet counts.
    AzureFlowLog,
    /// NetFlow v5, v9 and IPFIX export records: per-direction (or biflow)
    /// records with `tcpControlBits`, lost records told by sequence numbers.
    FlowExport,
}

/// The `sensor_kind` metric label: the kinds of source a site's verdict
/// combines, coarser than [`SourceKind`] (the three flow formats are one
/// kind: each says the same about a connection's fate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Packets (pcap, pcapng, a live interface).
    Packets,
    /// The Windows Defender Firewall log.
    FirewallLog,
    /// Windows Filtering Platform audit events.
    Wfp,
    /// NetFlow/IPFIX export, AWS VPC and Azure flow logs.
    Flow,
}

impl SensorKind {
    pub const ALL: [SensorKind; 4] = [
        SensorKind::Packets,
        SensorKind::FirewallLog,
        SensorKind::Wfp,
        SensorKind::Flow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Packets => "packets",
            SensorKind::FirewallLog => "firewall_log",
            SensorKind::Wfp => "wfp",
            SensorKind::Flow => "flow",
        }
    }
}

impl From<SourceKind> for SensorKind {
    fn from(k: SourceKind) -> SensorKind {
        match k {
            SourceKind::Packets => SensorKind::Packets,
            SourceKind::FirewallLog => SensorKind::FirewallLog,
            SourceKind::WfpEvents => SensorKind::Wfp,
            SourceKind::VpcFlowLog | SourceKind::AzureFlowLog | SourceKind::FlowExport => {
                SensorKind::Flow
            }
        }
    }
}

/// What a kind of source can see. `false` means the source is blind to it,
/// so its silence proves nothing there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fidelity {
    /// The attempt's SYN (every attempt, retransmissions told apart).
    pub attempts: bool,
    /// A completed handshake (SYN-ACK, or the client's ACK after it).
    pub handshake: bool,
    /// A refusal by the listening host (RST).
    pub host_rst: bool,
    /// The host firewall's decision (permitted, denied).
    pub firewall_decision: bool,
    /// The filter that decided.
    pub filter: bool,
    /// The process owning the socket.
    pub process: bool,
    /// Connections open before the source started (their later segments).
    pub open_before: bool,
    /// Its own losses (capture drops, lost events).
    pub losses: bool,
}

impl Fidelity {
    /// What the source cannot see, by field name.
    pub fn blind_to(&self) -> Vec<&'static str> {
        [
            (self.attempts, "attempts"),
            (self.handshake, "handshake"),
            (self.host_rst, "host_rst"),
            (self.firewall_decision, "firewall_decision"),
            (self.filter, "filter"),
            (self.process, "process"),
            (self.open_before, "open_before"),
            (self.losses, "losses"),
        ]
        .into_iter()
        .filter_map(|(sees, name)| (!sees).then_some(name))
        .collect()
    }

    /// What the source sees and what it cannot see, by name.
    pub fn split(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let all = [
            ("attempts", self.attempts),
            ("completed handshakes", self.handshake),
            ("host RSTs", self.host_rst),
            ("the firewall's decision", self.firewall_decision),
            ("the deciding filter", self.filter),
            ("the process", self.process),
            ("connections open before it started", self.open_before),
            ("its own losses", self.losses),
        ];
        let pick = |want: bool| {
            all.iter()
                .filter(|(_, v)| *v == want)
                .map(|(k, _)| *k)
                .collect()
        };
        (pick(true), pick(false))
    }
}

impl SourceKind {
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Packets,
        SourceKind::FirewallLog,
        SourceKind::WfpEvents,
        SourceKind::VpcFlowLog,
        SourceKind::AzureFlowLog,
        SourceKind::FlowExport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Packets => "packets",
            SourceKind::FirewallLog => "firewall_log",
            SourceKind::WfpEvents => "wfp_events",
            SourceKind::VpcFlowLog => "vpc_flow_log",
            SourceKind::AzureFlowLog => "azure_flow_log",
            SourceKind::FlowExport => "flow_export",
        }
    }

    /// The outcomes this kind of source can report.
    pub fn outcomes(self) -> &'static [Outcome] {
        match self {
            SourceKind::Packets | SourceKind::FlowExport => &Outcome::PACKET,
            SourceKind::FirewallLog | SourceKind::WfpEvents => &Outcome::FIREWALL,
            SourceKind::VpcFlowLog => &Outcome::FLOW_FLAGS,
            SourceKind::AzureFlowLog => &Outcome::FLOW_COUNTS,
        }
    }

    pub fn fidelity(self) -> Fidelity {
        match self {
            SourceKind::Packets => Fidelity {
                attempts: true,
                handshake: true,
                host_rst: true,
                firewall_decision: false,
                filter: false,
                process: false,
                open_before: true,
                losses: true,
            },
            // One line per allowed connection or dropped packet; no filter
            // and no process (the `pid` column of newer builds aside).
            SourceKind::FirewallLog => Fidelity {
                attempts: true,
                handshake: false,
                host_rst: false,
                firewall_decision: true,
                filter: false,
                process: false,
                open_before: false,
                losses: true,
            },
            SourceKind::WfpEvents => Fidelity {
                attempts: true,
                handshake: false,
                host_rst: false,
                firewall_decision: true,
                filter: true,
                process: true,
                open_before: false,
                losses: false,
            },
            // Aggregated per interval: no single attempt, no retransmission.
            // The handshake and a host's RST only through `tcp-flags`
            // (version 3 and later); the decision is the security group's
            // or network ACL's, without the rule. SKIPDATA says what it lost.
            SourceKind::VpcFlowLog => Fidelity {
                attempts: false,
                handshake: true,
                host_rst: true,
                firewall_decision: true,
                filter: false,
                process: false,
                open_before: true,
                losses: true,
            },
            // No flags: an answer is read from packet counts, so a refusal
            // (one packet each way) is only `permitted`. Denials are counted
            // by rule name, not tied to observations; nothing says what was
            // lost.
            SourceKind::AzureFlowLog => Fidelity {
                attempts: false,
                handshake: true,
                host_rst: false,
                firewall_decision: true,
                filter: false,
                process: false,
                open_before: true,
                losses: false,
            },
            // The flags ORed over each direction of a flow: the SYN, a
            // SYN-ACK or RST back, no single retransmission; no firewall
            // decision (an exporter on a firewall may drop what it
            // records). Sequence numbers say how many records were lost.
            SourceKind::FlowExport => Fidelity {
                attempts: true,
                handshake: true,
                host_rst: true,
                firewall_decision: false,
                filter: false,
                process: false,
                open_before: true,
                losses: true,
            },
        }
    }
}

/// What one sensor saw of one connection. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub ts: Timestamp,
    /// The connection's last packet, where the source tells it apart from
    /// `ts` (a flow record's end); not before `ts`.
    pub end: Option<Timestamp>,
    /// `client` is the initiator.
    pub key: FlowKey,
    pub initiator: Initiator,
    pub fate: Fate,
    /// The site node whose own log this is; `None` for a capture (whose
    /// sensors are the `--sensor` nodes, if any).
    pub sensor: Option<Arc<str>>,
    pub process: Process,
    /// The host firewall filter that decided (WFP `FilterRTID`).
    pub filter: Option<u64>,
    pub source: SourceKind,
}

impl Observation {
    /// A record's observation: the attempt and its outcome at once.
    pub fn record(ts: Timestamp, key: FlowKey, outcome: Outcome, source: SourceKind) -> Self {
        Observation {
            ts,
            end: None,
            key,
            initiator: Initiator::Logged,
            fate: Fate::Ended {
                outcome,
                inferred: false,
            },
            sensor: None,
            process: Process::default(),
            filter: None,
            source,
        }
    }

    /// The outcome, if this observation carries one.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.fate {
            Fate::Attempted => None,
            Fate::Ended { outcome, .. } => Some(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_reports_only_outcomes_its_fidelity_allows() {
        for kind in SourceKind::ALL {
            let f = kind.fidelity();
            for o in kind.outcomes() {
                let allowed = match o {
                    Outcome::Established => f.handshake,
                    Outcome::Refused => f.host_rst,
                    Outcome::Unanswered | Outcome::Unknown => f.attempts,
                    Outcome::Permitted | Outcome::Denied => f.firewall_decision,
                };
                assert!(allowed, "{} reports {}", kind.as_str(), o.as_str());
            }
        }
        assert!(!SourceKind::FirewallLog
            .outcomes()
            .contains(&Outcome::Established));
    }

    #[test]
    fn outcome_indexes_follow_all() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        assert!(Outcome::Denied.is_blocked() && !Outcome::Permitted.is_blocked());
    }
}
