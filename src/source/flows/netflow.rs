//! NetFlow v5, NetFlow v9 and IPFIX export packets: pure decoding. Bytes,
//! the exporter's address and the time of arrival in; [`FlowItem`]s and
//! counts out. The UDP socket (`run --flow-listen`) and the capture of
//! export traffic (`replay`) live elsewhere.
//!
//! - **Templates** (v9, IPFIX) are scoped per exporter address, version and
//!   observation domain (v9: source id). At most [`MAX_DOMAINS`] domains
//!   (the least recently heard from is evicted) of at most
//!   [`MAX_TEMPLATES_PER_DOMAIN`] templates (the oldest is evicted); both
//!   counted. A template redefined with other fields replaces the old one
//!   (`template_changed`).
//! - **A data set before its template** is held, at most
//!   [`MAX_HELD_SETS`] sets per domain for [`HOLD_FOR`], and decoded when
//!   the template comes; past that it is dropped (`no_template`).
//! - **Sequence numbers**: a gap is lost records (v5 and IPFIX count
//!   records, v9 counts export packets). It is counted per exporter and is a
//!   [`FlowItem::Gap`], so required edges are not judged missing over it.
//!   An IPFIX stream numbered [`SeqRule::Through`] (softflowd) is
//!   recognised and checked by its own rule, so it shows no phantom gaps.
//! - **What a record proves.** A flow record is not a handshake. From
//!   `tcpControlBits` per direction: SYN from the initiator and nothing back
//!   is `unanswered`; SYN-ACK back is `established`; RST back without
//!   SYN-ACK is `refused`. The initiator is the side whose record has SYN
//!   without ACK; where both sides' flags hold SYN and ACK the ports say
//!   (the lower is the service). A biflow record (RFC 5103: reverse
//!   elements, enterprise 29305) names the initiator as its source. A
//!   connection whose records hold no SYN began before: counted
//!   (`no_syn`), not observed. The two directions' records of one
//!   connection (an exporter sends one per direction) are joined for at
//!   most [`JOIN_FOR`]. `flowEndReason` 4 or 5 (forced end, lack of
//!   resources) on a lone SYN makes it `unknown`, not `unanswered`.
//! - **Time**: a record is placed at its own start (v5/v9 uptime offsets,
//!   IPFIX absolute fields, or IPFIX uptime from the stream's
//!   `systemInitTimeMilliseconds`, kept per domain). Where that is unknown
//!   (`time_from_export`) or implausible (`time_implausible`: more than
//!   [`MAX_AHEAD`] after export, or before 1970) the export time is used.
//!   Its end (v5/v9 Last, IPFIX 151/153/21) is read by the same rules, and
//!   is also implausible before the start; an end not known is the start.
//!   A record counts each reason once, for its start or its end.
//! - **Bad input** is counted by reason, never fatal: a bad header, a
//!   truncated set, a template with a zero-length field (read as absent) or
//!   of zero length (refused), a record too short for its template.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::{by_ports, key, FlowItem};
use crate::map::holding::{Holding, Keyed};
use crate::map::FastMap;
use crate::observation::{address_bits, Fate, Initiator, Observation, Outcome, SourceKind};
use crate::time::Timestamp;

/// Exporter domains (exporter address, version, observation domain) with
/// templates and sequence state; the least recently heard from is evicted.
pub const MAX_DOMAINS: usize = 4096;
/// Templates per domain; the oldest is evicted.
pub const MAX_TEMPLATES_PER_DOMAIN: usize = 512;
/// Data sets held per domain while their template is awaited.
pub const MAX_HELD_SETS: usize = 64;
/// How long a data set waits for its template.
pub const HOLD_FOR: Duration = Duration::from_secs(30);
/// How long one direction's record waits for the other's.
pub const JOIN_FOR: Duration = Duration::from_secs(5);
/// Connections held for joining; beyond this the oldest is released early.
pub const MAX_JOINS: usize = 1 << 18;
/// Exporters whose losses are counted one by one; more are summed as one.
pub const MAX_EXPORTERS: usize = 1024;

const TCP: u8 = 6;
const FIN: u16 = 0x01;
const SYN: u16 = 0x02;
const RST: u16 = 0x04;
const ACK: u16 = 0x10;

const V5_HEADER: usize = 24;
const V5_RECORD: usize = 48;
const V9_HEADER: usize = 20;
const IPFIX_HEADER: usize = 16;
const SET_HEADER: usize = 4;
const FIRST_DATA_SET: u16 = 256;
const VARIABLE_LENGTH: u16 = 0xffff;
/// RFC 5103: the reverse information elements' enterprise number.
const REVERSE_PEN: u32 = 29305;

/// Information elements read (RFC 7012 numbers; v9 uses the same for
/// these).
mod ie {
    pub const PACKETS: u16 = 2;
    pub const PROTOCOL: u16 = 4;
    pub const TCP_FLAGS: u16 = 6;
    pub const SRC_PORT: u16 = 7;
    pub const SRC_V4: u16 = 8;
    pub const DST_PORT: u16 = 11;
    pub const DST_V4: u16 = 12;
    pub const END_UPTIME: u16 = 21;
    pub const START_UPTIME: u16 = 22;
    pub const SRC_V6: u16 = 27;
    pub const DST_V6: u16 = 28;
    pub const END_REASON: u16 = 136;
    pub const START_SECONDS: u16 = 150;
    pub const END_SECONDS: u16 = 151;
    pub const START_MILLISECONDS: u16 = 152;
    pub const END_MILLISECONDS: u16 = 153;
    pub const SYSTEM_INIT_MILLISECONDS: u16 = 160;
}

/// `flowEndReason` values that say the flow was cut off, not ended.
const END_FORCED: u8 = 4;
const END_LACK_OF_RESOURCES: u8 = 5;

/// The export protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V5,
    V9,
    Ipfix,
}

impl Version {
    /// The version of an export packet, by a sane header: the version word,
    /// and a count or length that fits.
    pub fn detect(b: &[u8]) -> Option<Version> {
        match be16(b, 0)? {
            5 => {
                let n = usize::from(be16(b, 2)?);
                ((1..=30).contains(&n) && b.len() >= V5_HEADER + n * V5_RECORD)
                    .then_some(Version::V5)
            }
            9 => (b.len() >= V9_HEADER + SET_HEADER).then_some(Version::V9),
            10 => {
                let len = usize::from(be16(b, 2)?);
                (len >= IPFIX_HEADER + SET_HEADER && len <= b.len()).then_some(Version::Ipfix)
            }
            _ => None,
        }
    }

    /// The observation domain an export packet names: v9's source id,
    /// IPFIX's observation domain id; v5 has none.
    pub fn domain(b: &[u8]) -> Option<u32> {
        match Version::detect(b)? {
            Version::V5 => None,
            Version::V9 => be32(b, 16),
            Version::Ipfix => be32(b, 12),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V5 => "netflow-v5",
            Version::V9 => "netflow-v9",
            Version::Ipfix => "ipfix",
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// An unsigned integer of 1 to 8 bytes, big-endian (reduced-size encoding).
fn uint(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x)))
}

/// Where an exporter's templates and sequence numbers live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DomainKey {
    exporter: IpAddr,
    version: Version,
    domain: u32,
}

impl DomainKey {
    /// The domain a site's `exporters:` entry can name: v5's engine id is
    /// not one (as [`Version::domain`]).
    fn declared_domain(&self) -> Option<u32> {
        (self.version != Version::V5).then_some(self.domain)
    }
}

/// A field a template reads, by position in the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    SrcPort,
    DstPort,
    Protocol,
    Flags,
    ReverseFlags,
    Packets,
    ReversePackets,
    EndReason,
    StartSeconds,
    StartMilliseconds,
    StartUptime,
    EndSeconds,
    EndMilliseconds,
    EndUptime,
    SystemInit,
}

impl Field {
    fn of(id: u16, enterprise: u32) -> Option<Field> {
        if enterprise == REVERSE_PEN {
            return match id {
                ie::TCP_FLAGS => Some(Field::ReverseFlags),
                ie::PACKETS => Some(Field::ReversePackets),
                _ => None,
            };
        }
        if enterprise != 0 {
            return None;
        }
        Some(match id {
            ie::SRC_V4 => Field::SrcV4,
            ie::DST_V4 => Field::DstV4,
            ie::SRC_V6 => Field::SrcV6,
            ie::DST_V6 => Field::DstV6,
            ie::SRC_PORT => Field::SrcPort,
            ie::DST_PORT => Field::DstPort,
            ie::PROTOCOL => Field::Protocol,
            ie::TCP_FLAGS => Field::Flags,
            ie::PACKETS => Field::Packets,
            ie::END_REASON => Field::EndReason,
            ie::START_SECONDS => Field::StartSeconds,
            ie::START_MILLISECONDS => Field::StartMilliseconds,
            ie::START_UPTIME => Field::StartUptime,
            ie::END_SECONDS => Field::EndSeconds,
            ie::END_MILLISECONDS => Field::EndMilliseconds,
            ie::END_UPTIME => Field::EndUptime,
            ie::SYSTEM_INIT_MILLISECONDS => Field::SystemInit,
            _ => return None,
        })
    }
}

/// One field of a template as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spec {
    id: u16,
    enterprise: u32,
    len: u16,
}

/// A template, compiled: the fields read, at fixed offsets when no field is
/// of variable length.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Template {
    specs: Vec<Spec>,
    options: bool,
    /// Fixed record length, or `None` with variable-length fields.
    fixed: Option<usize>,
    /// Fields read: (field, offset, length), for a fixed-length template.
    reads: Vec<(Field, usize, usize)>,
    /// Least record length (variable fields at their length byte).
    min_len: usize,
}

impl Template {
    fn compile(specs: Vec<Spec>, options: bool) -> Template {
        let variable = specs.iter().any(|s| s.len == VARIABLE_LENGTH);
        let mut reads = Vec::new();
        let mut at = 0usize;
        let mut min_len = 0usize;
        for s in &specs {
            if s.len == VARIABLE_LENGTH {
                min_len += 1;
                continue;
            }
            if !variable && s.len > 0 {
                if let Some(f) = Field::of(s.id, s.enterprise) {
                    reads.push((f, at, usize::from(s.len)));
                }
            }
            at += usize::from(s.len);
            min_len += usize::from(s.len);
        }
        Template {
            fixed: (!variable).then_some(at),
            specs,
            options,
            reads,
            min_len,
        }
    }

    /// One record at the start of `b`: its fields and its length, or
    /// `None` when `b` is too short (the set's padding, or a cut record).
    fn record(&self, b: &[u8], rec: &mut Raw) -> Option<usize> {
        if let Some(len) = self.fixed {
            let r = b.get(..len)?;
            for &(f, at, n) in &self.reads {
                rec.set(f, &r[at..at + n]);
            }
            return Some(len);
        }
        let mut at = 0usize;
        for s in &self.specs {
            let n = if s.len == VARIABLE_LENGTH {
                let first = *b.get(at)?;
                at += 1;
                if first == 255 {
                    let n = be16(b, at)?;
                    at += 2;
                    usize::from(n)
                } else {
                    usize::from(first)
                }
            } else {
                usize::from(s.len)
            };
            let v = b.get(at..at.checked_add(n)?)?;
            if n > 0 {
                if let Some(f) = Field::of(s.id, s.enterprise) {
                    rec.set(f, v);
                }
            }
            at += n;
        }
        Some(at)
    }
}

/// The fields of one data record, as read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Raw {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    flags: Option<u16>,
    reverse_flags: Option<u16>,
    packets: Option<u64>,
    reverse_packets: Option<u64>,
    end_reason: Option<u8>,
    start_secs: Option<u64>,
    start_ms: Option<u64>,
    start_uptime_ms: Option<u64>,
    end_secs: Option<u64>,
    end_ms: Option<u64>,
    end_uptime_ms: Option<u64>,
    system_init_ms: Option<u64>,
}

impl Raw {
    fn set(&mut self, f: Field, v: &[u8]) {
        let n = uint(v);
        match f {
            Field::SrcV4 | Field::DstV4 => {
                let Ok(a) = <[u8; 4]>::try_from(v) else {
                    return;
                };
                let a = Some(IpAddr::V4(Ipv4Addr::from(a)));
                if f == Field::SrcV4 {
                    self.src = a;
                } else {
                    self.dst = a;
                }
            }
            Field::SrcV6 | Field::DstV6 => {
                let Ok(a) = <[u8; 16]>::try_from(v) else {
                    return;
                };
                let a = Some(IpAddr::V6(Ipv6Addr::from(a)));
                if f == Field::SrcV6 {
                    self.src = a;
                } else {
                    self.dst = a;
                }
            }
            Field::SrcPort => self.src_port = n.and_then(|n| u16::try_from(n).ok()),
            Field::DstPort => self.dst_port = n.and_then(|n| u16::try_from(n).ok()),
            Field::Protocol => self.protocol = n.and_then(|n| u8::try_from(n).ok()),
            Field::Flags => self.flags = n.map(|n| n as u16),
            Field::ReverseFlags => self.reverse_flags = n.map(|n| n as u16),
            Field::Packets => self.packets = n,
            Field::ReversePackets => self.reverse_packets = n,
            Field::EndReason => self.end_reason = n.and_then(|n| u8::try_from(n).ok()),
            Field::StartSeconds => self.start_secs = n,
            Field::StartMilliseconds => self.start_ms = n,
            Field::StartUptime => self.start_uptime_ms = n,
            Field::EndSeconds => self.end_secs = n,
            Field::EndMilliseconds => self.end_ms = n,
            Field::EndUptime => self.end_uptime_ms = n,
            Field::SystemInit => self.system_init_ms = n,
        }
    }
}

/// How far after the export time a record's own time may lie before it
/// is judged implausible (a bad clock or field) and the export time used.
pub const MAX_AHEAD: Duration = Duration::from_secs(3600);

/// What an export packet's header says of time.
#[derive(Clone, Copy, Debug)]
struct Clock {
    /// Export time, Unix milliseconds.
    export_ms: u64,
    /// The exporter's uptime at export (v5, v9), milliseconds.
    uptime_ms: Option<u64>,
    /// The exporter's init time (IPFIX `systemInitTimeMilliseconds`, from
    /// an options record of the stream), Unix milliseconds.
    init_ms: Option<u64>,
}

/// A record's own time (its start or its end), as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Own {
    /// The record has no such field.
    Absent,
    /// Unix milliseconds.
    At(u64),
    /// There, but not usable: the reason.
    Unusable(&'static str),
}

impl Clock {
    /// A record's start time: an absolute field, else its uptime offset,
    /// else the export time. With the reason counted when the record's own
    /// time was there but could not be used.
    fn start(&self, r: &Raw) -> (Timestamp, Option<&'static str>) {
        match self.own(r.start_ms, r.start_secs, r.start_uptime_ms, r) {
            Own::At(ms) => (self.at(ms), None),
            Own::Absent => (self.at(self.export_ms), None),
            Own::Unusable(why) => (self.at(self.export_ms), Some(why)),
        }
    }

    /// A record's end time, read as its start is; not known, or before
    /// `start`, it is `start`.
    fn end(&self, r: &Raw, start: Timestamp) -> (Timestamp, Option<&'static str>) {
        match self.own(r.end_ms, r.end_secs, r.end_uptime_ms, r) {
            Own::At(ms) if self.at(ms) >= start => (self.at(ms), None),
            Own::At(_) => (start, Some("time_implausible")),
            Own::Absent => (start, None),
            Own::Unusable(why) => (start, Some(why)),
        }
    }

    /// A time from its absolute fields (milliseconds, else seconds), else
    /// its uptime offset; implausible more than [`MAX_AHEAD`] after export
    /// or before 1970.
    fn own(&self, ms: Option<u64>, secs: Option<u64>, uptime: Option<u64>, r: &Raw) -> Own {
        let own = if let Some(ms) = ms {
            Some(ms)
        } else if let Some(s) = secs {
            s.checked_mul(1000)
        } else if let Some(t) = uptime {
            match (r.system_init_ms.or(self.init_ms), self.uptime_ms) {
                (Some(init), _) => init.checked_add(t),
                (None, Some(up)) => {
                    // Uptime wraps after 49.7 days: a time "after" export
                    // is from before the wrap.
                    let behind = (up as u32).wrapping_sub(t as u32);
                    // None: before 1970.
                    self.export_ms.checked_sub(u64::from(behind))
                }
                (None, None) => return Own::Unusable("time_from_export"),
            }
        } else {
            return Own::Absent;
        };
        let latest = self.export_ms.saturating_add(MAX_AHEAD.as_millis() as u64);
        match own {
            Some(ms) if ms <= latest => Own::At(ms),
            _ => Own::Unusable("time_implausible"),
        }
    }

    fn at(&self, ms: u64) -> Timestamp {
        Timestamp::from_secs_nanos(ms / 1000, ((ms % 1000) * 1_000_000) as u32)
    }
}

/// A data set waiting for its template.
#[derive(Clone, Debug)]
struct Held {
    template: u16,
    at: Timestamp,
    clock: Clock,
    body: Vec<u8>,
}

/// How an exporter numbers its IPFIX messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeqRule {
    /// RFC 7011: the data records sent before this message.
    #[default]
    Before,
    /// The flow records sent up to and including this message's, options
    /// records not counted (softflowd: 24 on a first message of 24 flow
    /// records and an options record, 56 on the next of 32).
    Through,
}

impl SeqRule {
    fn other(self) -> SeqRule {
        match self {
            SeqRule::Before => SeqRule::Through,
            SeqRule::Through => SeqRule::Before,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SeqRule::Before => "records before the message (RFC 7011)",
            SeqRule::Through => "records through the message",
        }
    }
}

/// Messages in a row that fit only the other [`SeqRule`] before a stream
/// is switched to it.
const SWITCH_AFTER: u8 = 2;

/// Per-domain state.
#[derive(Debug)]
struct Domain {
    templates: FastMap<u16, (u64, Template)>,
    next_stamp: u64,
    /// The next sequence number by [`SeqRule::Before`].
    expected: Option<u32>,
    /// The last sequence number: [`SeqRule::Through`] adds to it.
    last_seq: Option<u32>,
    rule: SeqRule,
    /// Messages in a row that fit only the other rule.
    against: u8,
    /// The gap by `rule` of a message that fit only the other rule:
    /// counted if the next telling message fits `rule` after all.
    pending: Option<(u32, Timestamp, Timestamp)>,
    /// When the last sequence number was checked: where a gap begins.
    checked: Timestamp,
    last_seen: Timestamp,
    held: VecDeque<Held>,
    /// IPFIX `systemInitTimeMilliseconds` from the stream's options
    /// records: what its uptime fields count from.
    system_init_ms: Option<u64>,
}

impl Domain {
    fn new(now: Timestamp) -> Domain {
        Domain {
            templates: FastMap::default(),
            next_stamp: 0,
            expected: None,
            last_seq: None,
            rule: SeqRule::Before,
            against: 0,
            pending: None,
            checked: now,
            last_seen: now,
            held: VecDeque::new(),
            system_init_ms: None,
        }
    }
}

/// Losses of one exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Records lost by sequence gaps (v5, IPFIX).
    pub records: u64,
    /// Export packets lost by sequence gaps (v9).
    pub packets: u64,
}

/// Where an item put out came from: the exporter's address, the
/// observation domain a site's `exporters:` entry can name (v9 source id,
/// IPFIX observation domain; none for v5), and for a gap what it lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub exporter: IpAddr,
    pub domain: Option<u32>,
    pub lost: Lost,
}

/// One direction's record (or a biflow), held to be joined.
#[derive(Clone, Copy, Debug)]
struct Half {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    start: Timestamp,
    /// Not before `start`.
    end: Timestamp,
    flags: u16,
    /// Biflow: the reverse direction's flags, `Some(0)` when it sent none.
    reverse: Option<u16>,
    end_reason: Option<u8>,
}

/// A connection's first record, held for its other direction (by the
/// unordered 4-tuple), or a biflow record.
#[derive(Clone, Copy, Debug)]
struct Join {
    exporter: IpAddr,
    domain: Option<u32>,
    first: Half,
    held_at: Timestamp,
}

impl Keyed for Join {
    type Key = JoinKey;
    fn key(&self) -> JoinKey {
        join_key(self.exporter, &self.first)
    }
}

impl Default for Holding<Join> {
    fn default() -> Self {
        Holding::new(MAX_JOINS)
    }
}

/// A connection's two directions at one exporter: the unordered 4-tuple,
/// lower end first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JoinKey {
    exporter: IpAddr,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

/// By hand, as [`crate::observation::FlowKey`]'s: the derived hash feeds
/// each `IpAddr` as a discriminant and a length-prefixed byte slice, eleven
/// writes where an IPv4 key needs two words.
impl std::hash::Hash for JoinKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let ports = u32::from(self.a.1) << 16 | u32::from(self.b.1);
        match (self.exporter, self.a.0, self.b.0) {
            (IpAddr::V4(x), IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
                h.write_u64(u64::from(x.to_bits()) << 32 | u64::from(ports));
            }
            (x, a, b) => {
                h.write_u128(address_bits(x));
                h.write_u128(address_bits(a));
                h.write_u128(address_bits(b));
                h.write_u32(ports);
            }
        }
    }
}

fn join_key(exporter: IpAddr, h: &Half) -> JoinKey {
    let (a, b) = if h.src <= h.dst {
        (h.src, h.dst)
    } else {
        (h.dst, h.src)
    };
    JoinKey { exporter, a, b }
}

/// The decoder of every exporter's packets: templates, held sets,
/// sequence numbers, joins; and the counts.
#[derive(Debug, Default)]
pub struct Collector {
    domains: FastMap<DomainKey, Domain>,
    /// Records waiting for their other direction, in holding order.
    joins: Holding<Join>,
    /// Held sets are looked at once a second, not per packet.
    next_held_check: Timestamp,
    /// Export packets read.
    pub packets: u64,
    /// Data records read.
    pub records: u64,
    /// Of them, options records.
    options_records: u64,
    /// Records and packets by what was made of them (`observed`, `not_tcp`,
    /// `no_syn`, ... and the bad-input reasons).
    pub counts: BTreeMap<&'static str, u64>,
    /// Losses by exporter (at most [`MAX_EXPORTERS`]; the rest under
    /// `None`).
    pub lost: BTreeMap<Option<IpAddr>, Lost>,
    /// When `Some`: the origin of each item put out, in the items' order
    /// (the caller drains both together).
    pub origins: Option<Vec<Origin>>,
}

impl Collector {
    pub fn new() -> Collector {
        Collector::default()
    }

    fn count(&mut self, reason: &'static str) {
        self.count_n(reason, 1);
    }

    fn count_n(&mut self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        *self.counts.entry(reason).or_insert(0) += n;
    }

    /// One export packet from `exporter`, arrived at `now`: its items go to
    /// `out` (observations of joined records, gaps).
    pub fn packet(&mut self, exporter: IpAddr, now: Timestamp, b: &[u8], out: &mut Vec<FlowItem>) {
        self.packets += 1;
        self.expire(now, out);
        match Version::detect(b) {
            Some(Version::V5) => self.v5(exporter, now, b, out),
            Some(Version::V9) => self.v9(exporter, now, b, out),
            Some(Version::Ipfix) => self.ipfix(exporter, now, b, out),
            None => self.count("bad_header"),
        }
    }

    /// Release what has waited long enough as of `now`: joins past
    /// [`JOIN_FOR`] (observed alone), held sets past [`HOLD_FOR`] (dropped).
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<FlowItem>) {
        while let Some(j) = self.joins.oldest() {
            if now.saturating_sub(j.held_at) < JOIN_FOR {
                break;
            }
            let j = self.joins.pop_oldest().expect("just seen");
            self.settle(j, None, out);
        }
        if now < self.next_held_check {
            return;
        }
        self.next_held_check = now.saturating_add(Duration::from_secs(1));
        let mut dropped = 0u64;
        for d in self.domains.values_mut() {
            while d
                .held
                .front()
                .is_some_and(|h| now.saturating_sub(h.at) >= HOLD_FOR)
            {
                d.held.pop_front();
                dropped += 1;
            }
        }
        self.count_n("no_template", dropped);
    }

    /// Every record waiting for its other direction is settled alone (the
    /// end of a capture file).
    pub fn settle_joins(&mut self, out: &mut Vec<FlowItem>) {
        let mut joins = self.joins.drain();
        // Held in arrival order; stable, so ties keep it.
        joins.sort_by_key(|j| j.held_at);
        for j in joins {
            self.settle(j, None, out);
        }
    }

    /// The end of the input: every join is settled, every held set dropped.
    pub fn finish(&mut self, out: &mut Vec<FlowItem>) {
        self.settle_joins(out);
        let dropped: usize = self
            .domains
            .values_mut()
            .map(|d| d.held.drain(..).count())
            .sum();
        self.count_n("no_template", dropped as u64);
    }

    fn domain(&mut self, k: DomainKey, now: Timestamp) -> &mut Domain {
        if !self.domains.contains_key(&k) && self.domains.len() >= MAX_DOMAINS {
            let oldest = self
                .domains
                .iter()
                .min_by_key(|(_, d)| d.last_seen)
                .map(|(k, _)| *k);
            if let Some(o) = oldest {
                self.domains.remove(&o);
                self.count("domain_evicted");
            }
        }
        let d = self.domains.entry(k).or_insert_with(|| Domain::new(now));
        d.last_seen = d.last_seen.max(now);
        d
    }

    /// Check a sequence number: by [`SeqRule::Before`] against `next` of
    /// the message before; by [`SeqRule::Through`] against the last number
    /// plus `flows`, this message's flow records (IPFIX only). A gap is
    /// lost. A stream whose messages fit only the other rule
    /// [`SWITCH_AFTER`] times in a row is switched to it.
    fn sequence(
        &mut self,
        k: DomainKey,
        now: Timestamp,
        seq: u32,
        (next, flows): (Option<u32>, Option<u32>),
        out: &mut Vec<FlowItem>,
    ) {
        let d = self.domain(k, now);
        let since = std::mem::replace(&mut d.checked, now).min(now);
        let before = std::mem::replace(&mut d.expected, next);
        let through = d.last_seq.zip(flows).map(|(s, n)| s.wrapping_add(n));
        d.last_seq = Some(seq);
        let (by_rule, by_other) = match d.rule {
            SeqRule::Before => (before, through),
            SeqRule::Through => (through, before),
        };
        let telling = by_rule.is_some() && by_other.is_some() && by_rule != by_other;
        let Some(expected) = by_rule else { return };
        let gap = seq.wrapping_sub(expected);
        if telling && by_other == Some(seq) {
            d.against += 1;
            if d.against < SWITCH_AFTER {
                d.pending = Some((gap, since, now));
                return;
            }
            let (from, to) = (d.rule, d.rule.other());
            d.rule = to;
            d.against = 0;
            d.pending = None;
            self.count("sequence_rule_switched");
            tracing::warn!(
                exporter = %k.exporter,
                domain = k.domain,
                from = from.name(),
                to = to.name(),
                "an IPFIX exporter numbers its messages by another rule; checked by it from now on"
            );
            return;
        }
        if telling && gap == 0 {
            d.against = 0;
            if let Some((gap, from, to)) = d.pending.take() {
                self.gap(k, gap, from, to, out);
            }
        }
        self.gap(k, gap, since, now, out);
    }

    /// A gap of `gap` between `from` and `to`: lost, or behind.
    fn gap(
        &mut self,
        k: DomainKey,
        gap: u32,
        from: Timestamp,
        to: Timestamp,
        out: &mut Vec<FlowItem>,
    ) {
        if gap == 0 {
            return;
        }
        if gap >= 1 << 31 {
            // Behind: reordered, or the exporter restarted.
            self.count("sequence_behind");
            return;
        }
        let n = self.lost.len();
        let slot = if n < MAX_EXPORTERS || self.lost.contains_key(&Some(k.exporter)) {
            Some(k.exporter)
        } else {
            None
        };
        let this = match k.version {
            Version::V9 => Lost {
                records: 0,
                packets: u64::from(gap),
            },
            _ => Lost {
                records: u64::from(gap),
                packets: 0,
            },
        };
        let lost = self.lost.entry(slot).or_default();
        lost.records += this.records;
        lost.packets += this.packets;
        self.count_n("lost_packets", this.packets);
        self.count_n("lost_records", this.records);
        out.push(FlowItem::Gap {
            from,
            to,
            exporter: None,
        });
        if let Some(origins) = &mut self.origins {
            origins.push(Origin {
                exporter: k.exporter,
                domain: k.declared_domain(),
                lost: this,
            });
        }
    }

    fn v5(&mut self, exporter: IpAddr, now: Timestamp, b: &[u8], out: &mut Vec<FlowItem>) {
        let (Some(n), Some(uptime), Some(secs), Some(nanos), Some(seq)) =
            (be16(b, 2), be32(b, 4), be32(b, 8), be32(b, 12), be32(b, 16))
        else {
            return self.count("bad_header");
        };
        let engine = u32::from(be16(b, 20).unwrap_or(0));
        let k = DomainKey {
            exporter,
            version: Version::V5,
            domain: engine,
        };
        self.sequence(
            k,
            now,
            seq,
            (Some(seq.wrapping_add(u32::from(n))), None),
            out,
        );
        let clock = Clock {
            export_ms: u64::from(secs) * 1000 + u64::from(nanos / 1_000_000),
            uptime_ms: Some(u64::from(uptime)),
            init_ms: None,
        };
        for i in 0..usize::from(n) {
            let at = V5_HEADER + i * V5_RECORD;
            let Some(r) = b.get(at..at + V5_RECORD) else {
                self.count("truncated_set");
                return;
            };
            self.records += 1;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(r[o], r[o + 1], r[o + 2], r[o + 3]));
            let raw = Raw {
                src: Some(ip(0)),
                dst: Some(ip(4)),
                start_uptime_ms: be32(r, 24).map(u64::from),
                end_uptime_ms: be32(r, 28).map(u64::from),
                src_port: be16(r, 32),
                dst_port: be16(r, 34),
                flags: Some(u16::from(r[37])),
                protocol: Some(r[38]),
                packets: be32(r, 16).map(u64::from),
                ..Raw::default()
            };
            self.record(k, now, &clock, &raw, out);
        }
    }

    fn v9(&mut self, exporter: IpAddr, now: Timestamp, b: &[u8], out: &mut Vec<FlowItem>) {
        let (Some(uptime), Some(secs), Some(seq), Some(source)) =
            (be32(b, 4), be32(b, 8), be32(b, 12), be32(b, 16))
        else {
            return self.count("bad_header");
        };
        let k = DomainKey {
            exporter,
            version: Version::V9,
            domain: source,
        };
        self.sequence(k, now, seq, (Some(seq.wrapping_add(1)), None), out);
        let clock = Clock {
            export_ms: u64::from(secs) * 1000,
            uptime_ms: Some(u64::from(uptime)),
            init_ms: None,
        };
        self.sets(k, now, &clock, &b[V9_HEADER..], out);
    }

    fn ipfix(&mut self, exporter: IpAddr, now: Timestamp, b: &[u8], out: &mut Vec<FlowItem>) {
        let (Some(len), Some(secs), Some(seq), Some(domain)) =
            (be16(b, 2), be32(b, 4), be32(b, 8), be32(b, 12))
        else {
            return self.count("bad_header");
        };
        let k = DomainKey {
            exporter,
            version: Version::Ipfix,
            domain,
        };
        let clock = Clock {
            export_ms: u64::from(secs) * 1000,
            uptime_ms: None,
            init_ms: None,
        };
        let body = &b[IPFIX_HEADER..usize::from(len).min(b.len())];
        let (records, options) = (self.records, self.options_records);
        let complete = self.sets(k, now, &clock, body, out);
        // The sequence counts data records: known only when every data set
        // of this message could be read.
        let read = (self.records - records) as u32;
        let flows = read - (self.options_records - options) as u32;
        let next = complete.then(|| seq.wrapping_add(read));
        self.sequence(k, now, seq, (next, complete.then_some(flows)), out);
    }

    /// The sets of a v9 or IPFIX message. False when a data set could not
    /// be read now (held, or cut), so the record count is not known.
    fn sets(
        &mut self,
        k: DomainKey,
        now: Timestamp,
        clock: &Clock,
        mut b: &[u8],
        out: &mut Vec<FlowItem>,
    ) -> bool {
        let (template_set, options_set) = match k.version {
            Version::V9 => (0u16, 1u16),
            _ => (2, 3),
        };
        let mut complete = true;
        while b.len() >= SET_HEADER {
            let id = be16(b, 0).unwrap_or(0);
            let len = usize::from(be16(b, 2).unwrap_or(0));
            if len < SET_HEADER || len > b.len() {
                self.count("truncated_set");
                return false;
            }
            let body = &b[SET_HEADER..len];
            b = &b[len..];
            if id == template_set {
                self.templates(k, now, body, false, out);
            } else if id == options_set {
                self.templates(k, now, body, true, out);
            } else if id >= FIRST_DATA_SET {
                complete &= self.data_set(k, now, clock, id, body, out);
            } else {
                self.count("unknown_set");
            }
        }
        complete
    }

    fn templates(
        &mut self,
        k: DomainKey,
        now: Timestamp,
        mut b: &[u8],
        options: bool,
        out: &mut Vec<FlowItem>,
    ) {
        while b.len() >= 4 && b.iter().any(|x| *x != 0) {
            let parsed = match (k.version, options) {
                (Version::V9, true) => v9_options_template(b),
                _ => template(b, options, k.version == Version::Ipfix),
            };
            let Some((id, specs, used)) = parsed else {
                self.count("truncated_template");
                return;
            };
            b = &b[used..];
            if id < FIRST_DATA_SET {
                self.count("bad_template_id");
                continue;
            }
            if specs.is_empty() {
                // IPFIX withdrawal.
                self.domain(k, now).templates.remove(&id);
                self.count("template_withdrawn");
                continue;
            }
            if specs.iter().any(|s| s.len == 0) {
                self.count("zero_length_field");
            }
            let t = Template::compile(specs, options);
            if t.min_len == 0 {
                self.count("zero_length_template");
                continue;
            }
            self.define(k, now, id, t, out);
        }
    }

    fn define(
        &mut self,
        k: DomainKey,
        now: Timestamp,
        id: u16,
        t: Template,
        out: &mut Vec<FlowItem>,
    ) {
        let d = self.domain(k, now);
        let stamp = d.next_stamp;
        d.next_stamp += 1;
        let mut reasons: Vec<&'static str> = Vec::new();
        match d.templates.get(&id) {
            Some((_, old)) if *old == t => {}
            Some(_) => reasons.push("template_changed"),
            None => {
                if d.templates.len() >= MAX_TEMPLATES_PER_DOMAIN {
                    if let Some(oldest) = d
                        .templates
                        .iter()
                        .min_by_key(|(_, (s, _))| *s)
                        .map(|(i, _)| *i)
                    {
                        d.templates.remove(&oldest);
                        reasons.push("template_evicted");
                    }
                }
            }
        }
        d.templates.insert(id, (stamp, t));
        let (ready, wait): (VecDeque<Held>, VecDeque<Held>) =
            d.held.drain(..).partition(|h| h.template == id);
        d.held = wait;
        for r in reasons {
            self.count(r);
        }
        for h in ready {
            self.count("held_decoded");
            self.data_set(k, now, &h.clock, id, &h.body, out);
        }
    }

    fn data_set(
        &mut self,
        k: DomainKey,
        now: Timestamp,
        clock: &Clock,
        id: u16,
        b: &[u8],
        out: &mut Vec<FlowItem>,
    ) -> bool {
        let d = self.domain(k, now);
        let Some((_, t)) = d.templates.get(&id) else {
            if d.held.len() >= MAX_HELD_SETS {
                d.held.pop_front();
                self.count("no_template");
            }
            let d = self.domain(k, now);
            d.held.push_back(Held {
                template: id,
                at: now,
                clock: *clock,
                body: b.to_vec(),
            });
            self.count("held_for_template");
            return false;
        };
        // A set holds options or data records, never both: the data
        // records' clock is fixed for the set.
        let data_clock = Clock {
            init_ms: d.system_init_ms,
            ..*clock
        };
        // Decode against a copy: `record` needs `self` mutably.
        let t = t.clone();
        let mut at = 0usize;
        let mut complete = true;
        while at < b.len() {
            let mut raw = Raw::default();
            let Some(n) = t.record(&b[at..], &mut raw) else {
                // Padding is shorter than a record and zero; anything
                // else is a cut record.
                if b.len() - at >= t.min_len.min(4) && b[at..].iter().any(|x| *x != 0) {
                    self.count("truncated_record");
                    complete = false;
                }
                break;
            };
            at += n;
            self.records += 1;
            if t.options {
                self.options_records += 1;
                self.count("options_record");
                if let Some(init) = raw.system_init_ms {
                    self.domain(k, now).system_init_ms = Some(init);
                }
                continue;
            }
            self.record(k, now, &data_clock, &raw, out);
        }
        complete
    }

    /// One data record: to a half waiting for its other direction, or
    /// counted.
    fn record(
        &mut self,
        k: DomainKey,
        now: Timestamp,
        clock: &Clock,
        r: &Raw,
        out: &mut Vec<FlowItem>,
    ) {
        let (Some(src), Some(dst)) = (r.src, r.dst) else {
            return self.count("no_address");
        };
        match r.protocol {
            Some(TCP) => {}
            Some(_) => return self.count("not_tcp"),
            None => return self.count("no_protocol"),
        }
        let (Some(sp), Some(dp)) = (r.src_port, r.dst_port) else {
            return self.count("no_port");
        };
        let Some(flags) = r.flags else {
            return self.count("no_tcp_flags");
        };
        let (start, why) = clock.start(r);
        let (end, why_end) = clock.end(r, start);
        // Once a record per reason.
        for reason in [why, why_end.filter(|e| why != Some(*e))]
            .into_iter()
            .flatten()
        {
            self.count(reason);
        }
        let reverse = match (r.reverse_flags, r.reverse_packets) {
            (Some(f), _) => Some(f),
            (None, Some(0)) => Some(0),
            (None, _) => None,
        };
        let half = Half {
            src: (src, sp),
            dst: (dst, dp),
            start,
            end,
            flags,
            reverse,
            end_reason: r.end_reason,
        };
        if reverse.is_some() {
            // A biflow needs no join.
            return self.settle(
                Join {
                    exporter: k.exporter,
                    domain: k.declared_domain(),
                    first: half,
                    held_at: now,
                },
                None,
                out,
            );
        }
        if let Some(j) = self.joins.take(&join_key(k.exporter, &half)) {
            if j.first.src != half.src {
                return self.settle(j, Some(half), out);
            }
            // The same direction again (a later record of the flow):
            // settle the one held, hold this.
            self.settle(j, None, out);
        }
        let evicted = self.joins.push(Join {
            exporter: k.exporter,
            domain: k.declared_domain(),
            first: half,
            held_at: now,
        });
        // At the cap the oldest is released early, and said so.
        if let Some(j) = evicted {
            self.count("join_evicted");
            self.settle(j, None, out);
        }
    }

    /// A connection's records, joined or alone: an observation, or counted.
    /// Counted per record: one or two.
    fn settle(&mut self, j: Join, second: Option<Half>, out: &mut Vec<FlowItem>) {
        let n = 1 + u64::from(second.is_some());
        match judge(&j, second.as_ref()) {
            Ok(o) => {
                self.count_n("observed", n);
                out.push(FlowItem::Observed(o));
                if let Some(origins) = &mut self.origins {
                    origins.push(Origin {
                        exporter: j.exporter,
                        domain: j.domain,
                        lost: Lost::default(),
                    });
                }
            }
            Err(reason) => self.count_n(reason, n),
        }
    }
}

/// What a connection's records prove. See the module documentation.
fn judge(j: &Join, second: Option<&Half>) -> Result<Observation, &'static str> {
    let a = &j.first;
    let syn_only = |f: u16| f & SYN != 0 && f & ACK == 0;
    // (initiator's half as (src, dst), its flags, the reply's flags, how
    // the initiator is known, start)
    let (src, dst, init, reply, how) = match (a.reverse, second) {
        (Some(rev), _) => (a.src, a.dst, a.flags, Some(rev), Initiator::Logged),
        (None, None) => {
            if a.flags & SYN == 0 {
                return Err("no_syn");
            }
            let (fwd, how) = if syn_only(a.flags) {
                (true, Initiator::Syn)
            } else {
                by_ports(a.src.1, a.dst.1)
            };
            if fwd {
                (a.src, a.dst, a.flags, None, how)
            } else {
                // Only the listener's side was seen: its SYN-ACK.
                (a.dst, a.src, 0, Some(a.flags), how)
            }
        }
        (None, Some(b)) => {
            let (fa, fb) = (a.flags, b.flags);
            let a_first = if syn_only(fa) && !syn_only(fb) {
                Some(Initiator::Syn)
            } else if syn_only(fb) && !syn_only(fa) {
                None
            } else if fa & SYN != 0 && fb & SYN == 0 {
                Some(Initiator::Syn)
            } else if fb & SYN != 0 && fa & SYN == 0 {
                None
            } else if fa & SYN == 0 {
                return Err("no_syn");
            } else {
                let (fwd, how) = by_ports(a.src.1, a.dst.1);
                if fwd {
                    Some(how)
                } else {
                    return Ok(observation(
                        b.src,
                        b.dst,
                        fb,
                        Some(fa),
                        how,
                        (b.start.min(a.start), b.end.max(a.end)),
                        b,
                    ));
                }
            };
            match a_first {
                Some(how) => (a.src, a.dst, fa, Some(fb), how),
                None => (b.src, b.dst, fb, Some(fa), Initiator::Syn),
            }
        }
    };
    let start = second.map_or(a.start, |b| b.start.min(a.start));
    let end = second.map_or(a.end, |b| b.end.max(a.end));
    Ok(observation(src, dst, init, reply, how, (start, end), a))
}

fn observation(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    init: u16,
    reply: Option<u16>,
    how: Initiator,
    (start, end): (Timestamp, Timestamp),
    a: &Half,
) -> Observation {
    let cut_off = matches!(a.end_reason, Some(END_FORCED | END_LACK_OF_RESOURCES));
    let reply = reply.unwrap_or(0);
    let (outcome, inferred) = if reply & SYN != 0 && reply & ACK != 0 {
        (Outcome::Established, false)
    } else if reply & RST != 0 {
        (Outcome::Refused, false)
    } else if reply == 0 && init & SYN != 0 && init & (ACK | FIN | RST) == 0 && !cut_off {
        (Outcome::Unanswered, false)
    } else if reply == 0 && init & SYN != 0 && init & ACK != 0 {
        // The initiator acknowledged an answer this exporter did not see.
        (Outcome::Established, true)
    } else {
        (Outcome::Unknown, false)
    };
    let mut o = Observation::record(start, key(src, dst, true), outcome, SourceKind::FlowExport);
    o.initiator = how;
    o.fate = Fate::Ended { outcome, inferred };
    o.end = Some(end);
    o
}

/// A v9 or IPFIX template record at the start of `b`: its id, fields and
/// length. IPFIX fields may carry an enterprise number; an options
/// template has a scope field count.
fn template(b: &[u8], options: bool, ipfix: bool) -> Option<(u16, Vec<Spec>, usize)> {
    let id = be16(b, 0)?;
    let count = usize::from(be16(b, 2)?);
    let mut at = 4;
    if options && count > 0 {
        be16(b, at)?; // scope field count
        at += 2;
    }
    let mut specs = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        let raw_id = be16(b, at)?;
        let len = be16(b, at + 2)?;
        at += 4;
        let enterprise = if ipfix && raw_id & 0x8000 != 0 {
            let e = be32(b, at)?;
            at += 4;
            e
        } else {
            0
        };
        specs.push(Spec {
            id: raw_id & if ipfix { 0x7fff } else { 0xffff },
            enterprise,
            len,
        });
    }
    Some((id, specs, at))
}

/// A v9 options template record: scope and option lengths in bytes.
fn v9_options_template(b: &[u8]) -> Option<(u16, Vec<Spec>, usize)> {
    let id = be16(b, 0)?;
    let scope_len = usize::from(be16(b, 2)?);
    let option_len = usize::from(be16(b, 4)?);
    let fields = (scope_len + option_len) / 4;
    let mut specs = Vec::with_capacity(fields.min(256));
    let mut at = 6;
    for _ in 0..fields {
        specs.push(Spec {
            id: be16(b, at)?,
            enterprise: 0,
            len: be16(b, at + 2)?,
        });
        at += 4;
    }
    // Padding to four bytes.
    let used = (at + 3) & !3;
    Some((id, specs, used.min(b.len())))
}

/// Item counts by kind, for tests and the report.
pub fn observed(items: &[FlowItem]) -> impl Iterator<Item = &Observation> {
    items.iter().filter_map(|i| match i {
        FlowItem::Observed(o) => Some(o),
        FlowItem::Gap { .. } => None,
    })
}

#[cfg(test)]
#[path = "netflow_tests.rs"]
mod tests;
