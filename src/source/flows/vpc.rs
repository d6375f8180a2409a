//! AWS VPC Flow Logs: one line per flow of a network interface and
//! aggregation interval, space-separated; the default (version 2) fields,
//! or those a header line names (custom formats, versions 3 to 5).
//!
//! What a record can prove:
//! - `REJECT`: the security group or network ACL dropped it: `denied`.
//! - `tcp-flags` (version 3 on) are ORed per direction and interval, and
//!   ACK is reported only with SYN: SYN-ACK back is `established`, RST back
//!   without it `refused`; the SYN's direction names the initiator. The two
//!   directions' records of one interval make one observation.
//! - Without flags (version 2), an `ACCEPT` is `permitted` and the
//!   initiator is guessed from the ports (the lower is the service); every
//!   interval of a long connection is another observation.
//! - With flags, an interval without SYN continues an older connection:
//!   counted, not observed.
//! - `NODATA`, `SKIPDATA`: the interval is a gap (counted).
//! - `pkt-srcaddr` / `pkt-dstaddr`, where logged, are the packet's own
//!   addresses (through a NAT or transit gateway) and are used instead.
//! - `end` (the interval's last packet) is the connection's last sign of
//!   life, as a flow export record's end is; one that is not a time,
//!   before `start` or more than [`MAX_SPAN`] after it is not used
//!   (counted `time_implausible`), and the start stands.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{by_ports, key, FlowFile, FlowItem, FlowStop, Interfaces};
use crate::observation::{FlowKey, Initiator, Observation, Outcome, SourceKind};
use crate::time::Timestamp;

/// The default format's fields (version 2), used until a header says
/// otherwise.
const DEFAULT_FIELDS: &str = "version account-id interface-id srcaddr dstaddr srcport dstport \
                              protocol packets bytes start end action log-status";

const SYN: u8 = 2;
const RST: u8 = 4;
const ACK: u8 = 16;

/// The longest a record can span: AWS aggregates at most 10 minutes, and
/// may stamp each end up to 60 s late.
pub const MAX_SPAN: Duration = Duration::from_secs(11 * 60);

/// Connections of one file held for joining their two directions; beyond
/// this, all held are observed early (counted).
const JOIN_CAPACITY: usize = 1 << 20;

/// A first line in this format: a header, or a default-format record.
pub fn looks_like(first: &str) -> bool {
    let t = Fields::of(first.split_whitespace());
    if t.get(0) == Some("version") {
        return t
            .kept()
            .iter()
            .any(|f| matches!(*f, "srcaddr" | "log-status"));
    }
    t.len() == 14
        && t.get(0).is_some_and(|v| v.parse::<u8>().is_ok())
        && t.get(2).is_some_and(|i| i.starts_with("eni-"))
}

/// Fields a line is split into: AWS defines about 40; a format naming more
/// has the columns past these read as absent.
const MAX_FIELDS: usize = 64;

/// A line's space-separated fields (the first [`MAX_FIELDS`] kept).
type Fields<'a> = super::Fields<'a, MAX_FIELDS>;

/// Column positions of the fields this reader uses.
#[derive(Clone, Debug)]
struct Columns {
    count: usize,
    interface_id: Option<usize>,
    srcaddr: Option<usize>,
    dstaddr: Option<usize>,
    srcport: Option<usize>,
    dstport: Option<usize>,
    protocol: Option<usize>,
    start: Option<usize>,
    end: Option<usize>,
    action: Option<usize>,
    tcp_flags: Option<usize>,
    log_status: Option<usize>,
    pkt_srcaddr: Option<usize>,
    pkt_dstaddr: Option<usize>,
}

impl Columns {
    fn parse(header: &str) -> Columns {
        let names = Fields::of(header.split_whitespace());
        let at = |n: &str| names.kept().iter().position(|x| *x == n);
        Columns {
            count: names.len(),
            interface_id: at("interface-id"),
            srcaddr: at("srcaddr"),
            dstaddr: at("dstaddr"),
            srcport: at("srcport"),
            dstport: at("dstport"),
            protocol: at("protocol"),
            start: at("start"),
            end: at("end"),
            action: at("action"),
            tcp_flags: at("tcp-flags"),
            log_status: at("log-status"),
            pkt_srcaddr: at("pkt-srcaddr"),
            pkt_dstaddr: at("pkt-dstaddr"),
        }
    }
}

/// One TCP record, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    start: Timestamp,
    /// Its `end`, or the start where that is not logged or not usable.
    end: Timestamp,
    /// The `end` was logged but is not usable.
    implausible_end: bool,
    reject: bool,
    flags: Option<u8>,
}

/// What one line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Tcp(Record),
    Gap {
        from: Timestamp,
        to: Timestamp,
        status: &'static str,
    },
    /// Counted by this reason, nothing else.
    Skip(&'static str),
}

fn field<'a>(t: &Fields<'a>, at: Option<usize>) -> Option<&'a str> {
    at.and_then(|i| t.get(i))
}

fn secs(s: Option<&str>) -> Option<Timestamp> {
    s?.parse::<u64>()
        .ok()
        .map(|s| Timestamp::from_secs_nanos(s, 0))
}

fn parse_line(c: &Columns, t: &Fields) -> Line {
    if t.len() != c.count {
        return Line::Skip("malformed_field_count");
    }
    let status = match field(t, c.log_status) {
        None | Some("OK") => "ok",
        Some("NODATA") => "nodata",
        Some("SKIPDATA") => "skipdata",
        Some(_) => return Line::Skip("malformed_log_status"),
    };
    if status != "ok" {
        return match (secs(field(t, c.start)), secs(field(t, c.end))) {
            (Some(from), Some(to)) => Line::Gap { from, to, status },
            _ => Line::Skip("malformed_time"),
        };
    }
    match field(t, c.protocol) {
        Some("6") => {}
        Some(p) if p.parse::<u8>().is_ok() => return Line::Skip("not_tcp"),
        _ => return Line::Skip("malformed_protocol"),
    }
    record(c, t).map_or_else(Line::Skip, Line::Tcp)
}

/// A record's interface and the addresses at its ends (the packet's own
/// too, where logged), for telling whose interface it is.
fn note_ends(c: &Columns, t: &Fields, interfaces: &mut Interfaces) {
    // On the stack: this is done for every line.
    let mut ends = [IpAddr::from([0u8; 4]); 4];
    let mut n = 0;
    for at in [c.srcaddr, c.dstaddr, c.pkt_srcaddr, c.pkt_dstaddr] {
        if let Some(a) = field(t, at).and_then(|a| a.parse().ok()) {
            ends[n] = a;
            n += 1;
        }
    }
    if n > 0 {
        interfaces.note(field(t, c.interface_id).unwrap_or(""), &ends[..n]);
    }
}

/// An address column, or the packet's own (`pkt-...`) where logged.
fn address(t: &Fields, at: Option<usize>, pkt: Option<usize>) -> Option<IpAddr> {
    match field(t, pkt) {
        Some(a) if a != "-" => a.parse().ok(),
        _ => field(t, at)?.parse().ok(),
    }
}

fn record(c: &Columns, t: &Fields) -> Result<Record, &'static str> {
    let src = address(t, c.srcaddr, c.pkt_srcaddr).ok_or("malformed_address")?;
    let dst = address(t, c.dstaddr, c.pkt_dstaddr).ok_or("malformed_address")?;
    let port = |i| field(t, i)?.parse::<u16>().ok();
    let (sp, dp) = port(c.srcport)
        .zip(port(c.dstport))
        .ok_or("malformed_port")?;
    if c.start.is_none() {
        return Err("no_time");
    }
    let start = secs(field(t, c.start)).ok_or("malformed_time")?;
    let latest = start.saturating_add(MAX_SPAN);
    let (end, implausible_end) = match c.end.map(|_| secs(field(t, c.end))) {
        None => (start, false),
        Some(Some(end)) if start <= end && end <= latest => (end, false),
        Some(_) => (start, true),
    };
    let reject = match field(t, c.action) {
        Some("ACCEPT") => false,
        Some("REJECT") => true,
        _ => return Err("malformed_action"),
    };
    let flags = match field(t, c.tcp_flags) {
        None | Some("-") => None,
        Some(f) => Some(f.parse::<u8>().map_err(|_| "malformed_tcp_flags")?),
    };
    Ok(Record {
        src: (src, sp),
        dst: (dst, dp),
        start,
        end,
        implausible_end,
        reject,
        flags,
    })
}

/// Which end initiated: the SYN's sender, else the port guess. `true`:
/// the record's source.
fn orient(r: &Record) -> (bool, Initiator) {
    match r.flags {
        Some(f) if f & SYN != 0 && f & ACK == 0 => (true, Initiator::Syn),
        Some(f) if f & SYN != 0 => (false, Initiator::Logged),
        _ => by_ports(r.src.1, r.dst.1),
    }
}

/// Both directions of one connection in one interval.
#[derive(Clone, Copy, Debug)]
struct Join {
    initiator: Initiator,
    /// The latest end of its records.
    end: Timestamp,
    reject: bool,
    flags_known: bool,
    syn: bool,
    syn_ack_back: bool,
    rst_back: bool,
}

impl Join {
    fn add(&mut self, r: &Record, forward: bool, initiator: Initiator) {
        // The SYN's own record says most.
        let rank = |i| match i {
            Initiator::Syn => 2,
            Initiator::Logged => 1,
            Initiator::Inferred => 0,
        };
        if rank(initiator) > rank(self.initiator) {
            self.initiator = initiator;
        }
        self.reject |= r.reject;
        self.end = self.end.max(r.end);
        let Some(f) = r.flags else { return };
        self.flags_known = true;
        self.syn |= f & SYN != 0;
        if !forward {
            self.syn_ack_back |= f & SYN != 0 && f & ACK != 0;
            self.rst_back |= f & RST != 0;
        }
    }

    /// The outcome, or `None` for an interval that continues an older
    /// connection.
    fn outcome(&self) -> Option<Outcome> {
        Some(if self.reject {
            Outcome::Denied
        } else if self.syn_ack_back {
            Outcome::Established
        } else if self.rst_back {
            Outcome::Refused
        } else if self.flags_known && !self.syn {
            return None;
        } else {
            Outcome::Permitted
        })
    }
}

/// Joins held by connection and interval start, in first-seen order.
#[derive(Default)]
struct Joins {
    at: HashMap<(FlowKey, Timestamp), usize>,
    order: Vec<((FlowKey, Timestamp), Join)>,
}

impl Joins {
    fn add(&mut self, r: &Record) {
        let (forward, initiator) = orient(r);
        let k = (key(r.src, r.dst, forward), r.start);
        let i = *self.at.entry(k).or_insert_with(|| {
            self.order.push((
                k,
                Join {
                    initiator,
                    end: r.end,
                    reject: false,
                    flags_known: false,
                    syn: false,
                    syn_ack_back: false,
                    rst_back: false,
                },
            ));
            self.order.len() - 1
        });
        self.order[i].1.add(r, forward, initiator);
    }

    /// Every join held, as an observation (`None`: an interval that
    /// continues an older connection).
    fn flush(&mut self, emit: &mut dyn FnMut(Option<Observation>)) {
        self.at.clear();
        for ((k, ts), j) in self.order.drain(..) {
            emit(j.outcome().map(|outcome| Observation {
                initiator: j.initiator,
                end: Some(j.end),
                ..Observation::record(ts, k, outcome, SourceKind::VpcFlowLog)
            }));
        }
    }
}

fn flush_into(joins: &mut Joins, f: &mut FlowFile) {
    joins.flush(&mut |o| match o {
        None => f.count("continued"),
        Some(o) => f.observe(o),
    });
}

/// What one line is, by its fields: a header (its columns taken), or data.
fn header(cols: &mut Columns, headers: &mut u32, line: &str, t: &Fields) -> Option<bool> {
    if t.get(0) != Some("version") {
        return None;
    }
    *headers += 1;
    *cols = Columns::parse(line);
    Some(*headers > 1)
}

/// Read a VPC flow log's text.
pub fn read(bytes: &[u8]) -> FlowFile {
    let mut f = FlowFile::default();
    let mut cols = Columns::parse(DEFAULT_FIELDS);
    let mut joins = Joins::default();
    let mut offset = 0usize;
    let mut headers = 0;
    for raw in bytes.split_inclusive(|b| *b == b'\n') {
        let at = offset;
        offset += raw.len();
        let Ok(line) = std::str::from_utf8(raw) else {
            f.records += 1;
            f.count("malformed_encoding");
            continue;
        };
        let t = Fields::of(line.split_whitespace());
        if t.is_empty() {
            continue;
        }
        if let Some(again) = header(&mut cols, &mut headers, line, &t) {
            if again {
                f.count("header_again");
            }
            continue;
        }
        f.records += 1;
        if !line.ends_with('\n') && t.len() != cols.count {
            f.stopped = Some(FlowStop {
                offset: at as u64,
                reason: "the last line is cut short".into(),
            });
            f.count("truncated");
            break;
        }
        let line = parse_line(&cols, &t);
        if matches!(line, Line::Tcp(_) | Line::Skip("not_tcp")) {
            note_ends(&cols, &t, &mut f.interfaces);
        }
        match line {
            Line::Tcp(r) => {
                f.count("tcp");
                if r.implausible_end {
                    f.count(IMPLAUSIBLE_END);
                }
                if joins.order.len() >= JOIN_CAPACITY {
                    f.count("join_full");
                    flush_into(&mut joins, &mut f);
                }
                joins.add(&r);
            }
            Line::Gap { from, to, status } => {
                f.count(status);
                f.items.push(FlowItem::Gap {
                    from,
                    to,
                    exporter: None,
                });
            }
            Line::Skip(reason) => f.count(reason),
        }
    }
    flush_into(&mut joins, &mut f);
    f
}

/// How long a followed log's records wait for the other direction of
/// their connection: AWS delivers an interval's records together.
pub const JOIN_WAIT: Duration = Duration::from_secs(5);

/// What a followed line or a released join gives.
#[derive(Clone, Debug, PartialEq)]
pub enum Followed {
    /// One line, counted by `reason`; a TCP line carries its two ends (for
    /// the node), a `NODATA`/`SKIPDATA` line its gap.
    Line {
        reason: &'static str,
        ends: Option<(IpAddr, IpAddr)>,
        gap: Option<FlowItem>,
    },
    /// A connection's joined records: counted by `reason` (`observed`,
    /// `continued`, `join_full`), not a line.
    Joined {
        reason: &'static str,
        observation: Option<Observation>,
    },
}

/// The reasons that count something other than a record (a connection,
/// a header line, a record's unusable end), as [`read`] counts them beside
/// its records.
pub const NOT_RECORDS: [&str; 5] = [
    "observed",
    "continued",
    "join_full",
    "header_again",
    IMPLAUSIBLE_END,
];

/// Counted beside `tcp` for a record whose `end` is not used.
const IMPLAUSIBLE_END: &str = "time_implausible";

/// A VPC flow log read line by line as it grows (`--follow`), as [`read`]
/// reads it whole: the same columns, counts, joins and interfaces. Joins
/// are held until the oldest has waited [`JOIN_WAIT`] (or
/// [`JOIN_CAPACITY`] are held), then all go out.
pub struct Follow {
    cols: Columns,
    headers: u32,
    joins: Joins,
    held_since: Option<Instant>,
    /// The logged interfaces, across rotations (the same interfaces'
    /// log), bounded by [`super::INTERFACE_CAPACITY`].
    interfaces: Interfaces,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            cols: Columns::parse(DEFAULT_FIELDS),
            headers: 0,
            joins: Joins::default(),
            held_since: None,
            interfaces: Interfaces::default(),
        }
    }
}

impl Follow {
    /// The addresses each logged interface's records share so far: whose
    /// interface it is, as [`FlowFile::interfaces`] tells for `replay`.
    pub fn interfaces(&self) -> &Interfaces {
        &self.interfaces
    }

    /// A new file starts (rotation, truncation): its own header, if any.
    pub fn new_file(&mut self) {
        self.cols = Columns::parse(DEFAULT_FIELDS);
        self.headers = 0;
    }

    /// One whole line read at `now`; `history`: read for its header only.
    pub fn line(&mut self, line: &str, history: bool, now: Instant, out: &mut Vec<Followed>) {
        let t = Fields::of(line.split_whitespace());
        if t.is_empty() {
            return;
        }
        if let Some(again) = header(&mut self.cols, &mut self.headers, line, &t) {
            if again && !history {
                out.push(Followed::Line {
                    reason: "header_again",
                    ends: None,
                    gap: None,
                });
            }
            return;
        }
        if history {
            return;
        }
        let line = parse_line(&self.cols, &t);
        if matches!(line, Line::Tcp(_) | Line::Skip("not_tcp")) {
            note_ends(&self.cols, &t, &mut self.interfaces);
        }
        let (reason, ends, gap) = match line {
            Line::Tcp(r) => {
                if self.joins.order.len() >= JOIN_CAPACITY {
                    self.release(out);
                    out.push(Followed::Joined {
                        reason: "join_full",
                        observation: None,
                    });
                }
                if r.implausible_end {
                    out.push(Followed::Joined {
                        reason: IMPLAUSIBLE_END,
                        observation: None,
                    });
                }
                self.joins.add(&r);
                self.held_since.get_or_insert(now);
                ("tcp", Some((r.src.0, r.dst.0)), None)
            }
            Line::Gap { from, to, status } => {
                let gap = FlowItem::Gap {
                    from,
                    to,
                    exporter: None,
                };
                (status, None, Some(gap))
            }
            Line::Skip(reason) => (reason, None, None),
        };
        out.push(Followed::Line { reason, ends, gap });
    }

    /// Joins that waited [`JOIN_WAIT`] by `now` go out.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Followed>) {
        if self
            .held_since
            .is_some_and(|t| now.saturating_duration_since(t) >= JOIN_WAIT)
        {
            self.release(out);
        }
    }

    fn release(&mut self, out: &mut Vec<Followed>) {
        self.held_since = None;
        self.joins.flush(&mut |observation| {
            let reason = if observation.is_some() {
                "observed"
            } else {
                "continued"
            };
            out.push(Followed::Joined {
                reason,
                observation,
            });
        });
    }
}
