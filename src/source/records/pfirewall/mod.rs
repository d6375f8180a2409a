//! The Windows Defender Firewall log, `pfirewall.log`: a `#Fields:` header
//! names the columns (newer builds add `pid`), then one line per allowed
//! connection or dropped packet, in the node's local time.
//!
//! - `ALLOW` (and the older `OPEN`) of TCP: a `permitted` observation; the
//!   log never says whether the handshake then completed.
//! - `DROP` of TCP: a `denied` observation when the packet opened a
//!   connection (its `tcpflags` hold `S` without `A`, or are not logged);
//!   a dropped segment of some other connection is counted, not observed.
//! - `INFO-EVENTS-LOST`: the log lost `info` events; required edges are not
//!   judged missing over a window that includes it.
//! - Anything else (UDP, ICMP, `CLOSE`) is counted by reason.
//!
//! The line's `src-ip` sent the packet, so for a connection's first packet
//! it is the initiator; `path` (`RECEIVE`, `SEND`) says which end is the
//! node, which finds the sensor among the site's nodes.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

use super::text::{self, Encoding};
use super::{
    Counted, RecordContext, RecordError, RecordFile, RecordFormat, RecordItem, RecordStop,
};
use crate::observation::{FlowKey, Observation, Outcome, Process, SourceKind};
use crate::time::Timestamp;

/// The columns of Windows' own header, used until a `#Fields:` line says
/// otherwise.
const DEFAULT_FIELDS: &str = "date time action protocol src-ip dst-ip src-port dst-port size \
                              tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path";

/// Columns Windows writes; any other name in `#Fields:` is counted and
/// its column ignored.
const KNOWN_FIELDS: [&str; 18] = [
    "date", "time", "action", "protocol", "src-ip", "dst-ip", "src-port", "dst-port", "size",
    "tcpflags", "tcpsyn", "tcpack", "tcpwin", "icmptype", "icmpcode", "info", "path", "pid",
];

/// Column positions of the fields this reader uses.
#[derive(Clone, Debug)]
struct Columns {
    count: usize,
    date: Option<usize>,
    time: Option<usize>,
    action: Option<usize>,
    protocol: Option<usize>,
    src_ip: Option<usize>,
    dst_ip: Option<usize>,
    src_port: Option<usize>,
    dst_port: Option<usize>,
    tcpflags: Option<usize>,
    info: Option<usize>,
    path: Option<usize>,
    pid: Option<usize>,
}

impl Columns {
    /// From a `#Fields:` list; the names it does not know.
    fn parse(list: &str) -> (Columns, Vec<String>) {
        let names: Vec<&str> = list.split_whitespace().collect();
        let at = |n: &str| names.iter().position(|x| x.eq_ignore_ascii_case(n));
        let unknown = names
            .iter()
            .filter(|n| !KNOWN_FIELDS.iter().any(|k| k.eq_ignore_ascii_case(n)))
            .map(|n| n.to_string())
            .collect();
        let c = Columns {
            count: names.len(),
            date: at("date"),
            time: at("time"),
            action: at("action"),
            protocol: at("protocol"),
            src_ip: at("src-ip"),
            dst_ip: at("dst-ip"),
            src_port: at("src-port"),
            dst_port: at("dst-port"),
            tcpflags: at("tcpflags"),
            info: at("info"),
            path: at("path"),
            pid: at("pid"),
        };
        (c, unknown)
    }
}

/// A line's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Drop,
    Open,
    Close,
    EventsLost,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "ALLOW" => Action::Allow,
            "DROP" => Action::Drop,
            "OPEN" | "OPEN-INBOUND" => Action::Open,
            "CLOSE" => Action::Close,
            "INFO-EVENTS-LOST" => Action::EventsLost,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Drop => "drop",
            Action::Open => "open",
            Action::Close => "close",
            Action::EventsLost => "info_events_lost",
        }
    }
}

/// Which end of the line's packet is the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Receive,
    Send,
    Unknown,
}

/// One data line, its time still local.
#[derive(Clone, Debug)]
enum Line {
    Connection {
        local: DateTime,
        key: FlowKey,
        outcome: Outcome,
        path: Path,
        pid: Option<u32>,
    },
    Lost {
        local: DateTime,
        events: u64,
    },
}

/// Why a line gave no observation: a closed set (report and tests).
mod reason {
    pub const OBSERVED: &str = "observed";
    pub const NOT_TCP: &str = "not_tcp";
    pub const NOT_AN_ATTEMPT: &str = "not_an_attempt";
    pub const CLOSED: &str = "connection_closed";
    pub const EVENTS_LOST: &str = "events_lost";
    pub const UNKNOWN_ACTION: &str = "unknown_action";
    pub const FIELD_COUNT: &str = "malformed_field_count";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const TIME: &str = "malformed_time";
    pub const ADDRESS: &str = "malformed_address";
    pub const PORT: &str = "malformed_port";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const NO_BOM: &str = "utf16_without_bom";
    pub const INVALID_TEXT: &str = "invalid_characters";
    pub const NO_TIME_ZONE: &str = "no_time_zone";
}

/// A line that gave no observation: why, and its time if it could be read
/// (the log was alive then).
type Skipped = (&'static str, Option<DateTime>);

/// Parse one data line.
fn parse_line(c: &Columns, line: &str) -> Result<Line, Skipped> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != c.count {
        return Err((reason::FIELD_COUNT, None));
    }
    let get = |i: Option<usize>| i.map(|i| f[i]).ok_or((reason::MISSING_FIELD, None));
    let local = parse_time(get(c.date)?, get(c.time)?).ok_or((reason::TIME, None))?;
    let action = Action::parse(get(c.action)?).ok_or((reason::UNKNOWN_ACTION, Some(local)))?;
    parse_connection(c, &f, action, local).map_err(|r| (r, Some(local)))
}

/// The rest of a line whose time and action were read.
fn parse_connection(
    c: &Columns,
    f: &[&str],
    action: Action,
    local: DateTime,
) -> Result<Line, &'static str> {
    let get = |i: Option<usize>| i.map(|i| f[i]).ok_or(reason::MISSING_FIELD);
    if action == Action::EventsLost {
        let events = c.info.and_then(|i| f[i].parse().ok()).unwrap_or(1);
        return Ok(Line::Lost { local, events });
    }
    if !matches!(get(c.protocol)?, "TCP" | "6") {
        return Err(reason::NOT_TCP);
    }
    let outcome = match action {
        Action::Allow | Action::Open => Outcome::Permitted,
        Action::Close => return Err(reason::CLOSED),
        Action::Drop => {
            let flags = c.tcpflags.map_or("-", |i| f[i]);
            let opens = flags == "-" || (flags.contains('S') && !flags.contains('A'));
            if !opens {
                return Err(reason::NOT_AN_ATTEMPT);
            }
            Outcome::Denied
        }
        Action::EventsLost => unreachable!("handled above"),
    };
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| reason::ADDRESS);
    let port = |s: &str| s.parse::<u16>().map_err(|_| reason::PORT);
    let key = FlowKey {
        client: ip(get(c.src_ip)?)?,
        client_port: port(get(c.src_port)?)?,
        server: ip(get(c.dst_ip)?)?,
        server_port: port(get(c.dst_port)?)?,
    };
    let path = match c.path.map(|i| f[i]) {
        Some("RECEIVE") => Path::Receive,
        Some("SEND") => Path::Send,
        _ => Path::Unknown,
    };
    let pid = c.pid.and_then(|i| f[i].parse().ok());
    Ok(Line::Connection {
        local,
        key,
        outcome,
        path,
        pid,
    })
}

fn parse_time(date: &str, time: &str) -> Option<DateTime> {
    let d: jiff::civil::Date = date.parse().ok()?;
    let t: jiff::civil::Time = time.parse().ok()?;
    Some(d.to_datetime(t))
}

/// What one line of the log is.
enum LineKind {
    /// A `#` line; `#Fields:` set the columns (`unknown`: names not known).
    Header {
        unknown: u64,
    },
    Blank,
    /// A record: its action if it names a known one, and what it gave.
    Data {
        action: Option<Action>,
        parsed: Result<Line, Skipped>,
    },
}

/// Read one line (its line end removed), under and into `columns`.
fn read_line(columns: &mut Columns, line: &str) -> LineKind {
    let line = line.trim_end_matches('\r');
    if let Some(h) = line.strip_prefix('#') {
        let mut unknown = 0;
        if let Some(list) = h.strip_prefix("Fields:") {
            let (c, names) = Columns::parse(list);
            unknown = names.len() as u64;
            *columns = c;
        }
        return LineKind::Header { unknown };
    }
    if line.trim().is_empty() {
        return LineKind::Blank;
    }
    let action = (columns.action)
        .and_then(|i| line.split_whitespace().nth(i))
        .and_then(Action::parse);
    LineKind::Data {
        action,
        parsed: parse_line(columns, line),
    }
}

impl Line {
    fn local(&self) -> DateTime {
        match self {
            Line::Connection { local, .. } | Line::Lost { local, .. } => *local,
        }
    }

    /// The node's own end of a connection line (`dst-ip` of `RECEIVE`,
    /// `src-ip` of `SEND`).
    fn local_end(&self) -> Option<IpAddr> {
        match self {
            Line::Connection { key, path, .. } => match path {
                Path::Receive => Some(key.server),
                Path::Send => Some(key.client),
                Path::Unknown => None,
            },
            Line::Lost { .. } => None,
        }
    }
}

/// Local time to UTC in `tz`. In a gap (clocks going forward) the time is
/// read with the offset before it, as if the clock had not changed yet
/// (RFC 5545's rule); in an overlap (clocks going back) it is the earlier
/// of the two instants, unless that would put the line before the line
/// above it (the log is written in order): then the later.
pub fn resolve(tz: &TimeZone, local: DateTime, previous: Option<Timestamp>) -> Option<Timestamp> {
    let offset = match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Gap { before, .. } => before,
        AmbiguousOffset::Fold { before, after } => {
            let early = to_timestamp(before, local)?;
            return match previous {
                Some(p) if early < p => to_timestamp(after, local),
                _ => Some(early),
            };
        }
    };
    to_timestamp(offset, local)
}

fn to_timestamp(offset: jiff::tz::Offset, local: DateTime) -> Option<Timestamp> {
    let ts = offset.to_timestamp(local).ok()?;
    let nanos = u64::try_from(ts.as_nanosecond()).ok()?;
    Some(Timestamp(nanos))
}

/// Read a whole `pfirewall.log` (its bytes; `path` names it).
pub fn read(path: String, bytes: &[u8], ctx: &RecordContext) -> Result<RecordFile, RecordError> {
    let text = text::decode(bytes);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut count = |r: &'static str, n: u64| *counts.entry(r).or_default() += n;
    if text.encoding == Encoding::Utf16LeNoBom {
        count(reason::NO_BOM, 1);
    }
    if text.invalid > 0 {
        count(reason::INVALID_TEXT, text.invalid);
    }
    let mut actions: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut columns, _) = Columns::parse(DEFAULT_FIELDS);
    let mut lines = Vec::new();
    let mut records = 0;
    let mut stopped = None;
    // First and last local time of the lines that gave no observation.
    let mut span: Option<(DateTime, DateTime)> = None;
    let body = text.text.as_str();
    let mut at = 0;
    while at < body.len() {
        let (line, next) = match body[at..].find('\n') {
            Some(i) => (&body[at..at + i], at + i + 1),
            None => {
                // No newline at the end: the file was cut in this line.
                stopped = Some(RecordStop {
                    offset: text.byte_offset(at),
                    reason: "the last line is cut short (no line end)".into(),
                });
                break;
            }
        };
        at = next;
        match read_line(&mut columns, line) {
            LineKind::Header { unknown } => {
                if unknown > 0 {
                    count(reason::UNKNOWN_FIELD, unknown);
                }
            }
            LineKind::Blank => {}
            LineKind::Data { action, parsed } => {
                records += 1;
                if let Some(a) = action {
                    *actions.entry(a.as_str()).or_default() += 1;
                }
                match parsed {
                    Ok(l) => lines.push(l),
                    Err((r, local)) => {
                        count(r, 1);
                        if let Some(local) = local {
                            span = Some(
                                span.map_or((local, local), |(a, b)| (local.min(a), local.max(b))),
                            );
                        }
                    }
                }
            }
        }
    }
    if stopped.is_none() && text.odd_byte {
        stopped = Some(RecordStop {
            offset: bytes.len() as u64 - 1,
            reason: "half a UTF-16 character at the end".into(),
        });
    }
    let sensor = sensor_of(&lines, ctx);
    let needed = !lines.is_empty() || span.is_some();
    let tz = time_zone(&path, sensor.as_deref(), ctx, needed)?;
    let mut items = Vec::with_capacity(lines.len());
    let mut previous = None;
    for l in lines {
        let local = l.local();
        let Some(ts) = tz.as_ref().and_then(|tz| resolve(tz, local, previous)) else {
            count(reason::TIME, 1);
            continue;
        };
        previous = Some(ts);
        items.push(match l {
            Line::Lost { events, .. } => {
                count(reason::EVENTS_LOST, events);
                RecordItem::Lost { at: ts, events }
            }
            Line::Connection {
                key, outcome, pid, ..
            } => {
                count(reason::OBSERVED, 1);
                let mut o = Observation::record(ts, key, outcome, SourceKind::FirewallLog);
                o.sensor = sensor.clone();
                o.process = Process {
                    executable: None,
                    pid,
                };
                RecordItem::Observed(o)
            }
        });
    }
    // The log was alive from its first line to its last, whatever they were.
    if let (Some(tz), Some((first, last))) = (&tz, span) {
        let from = resolve(tz, first, None);
        items.extend(from.map(|at| RecordItem::Covered { at }));
        items.extend(resolve(tz, last, from).map(|at| RecordItem::Covered { at }));
    }
    items.sort_by_key(RecordItem::ts);
    Ok(RecordFile {
        path,
        format: RecordFormat::FirewallLog,
        sensor,
        items,
        records,
        actions,
        counts,
        stopped,
    })
}

/// The node whose log this is: the site node owning most of the lines'
/// local ends (`dst-ip` of `RECEIVE`, `src-ip` of `SEND`), else `--sensor`.
fn sensor_of(lines: &[Line], ctx: &RecordContext) -> Option<Arc<str>> {
    let mut votes: BTreeMap<&str, u64> = BTreeMap::new();
    for l in lines {
        if let Some(n) = l.local_end().and_then(|a| ctx.node_of(a)) {
            *votes.entry(&n.name).or_default() += 1;
        }
    }
    let best = votes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(name, _)| name);
    match best {
        Some(name) => ctx.node(name).map(|n| n.name.clone()),
        None => ctx.sensor.clone(),
    }
}

/// The node's time zone, else `--timezone`; refused when a log with data
/// has neither.
fn time_zone(
    path: &str,
    sensor: Option<&str>,
    ctx: &RecordContext,
    needed: bool,
) -> Result<Option<TimeZone>, RecordError> {
    let node = sensor.and_then(|s| ctx.node(s));
    if let Some(tz) = node.and_then(|n| n.timezone.clone()) {
        return Ok(Some(tz));
    }
    if let Some((_, tz)) = &ctx.timezone {
        return Ok(Some(tz.clone()));
    }
    if !needed {
        return Ok(None);
    }
    Err(RecordError::NoTimeZone {
        path: path.to_string(),
        node: match sensor {
            Some(s) => format!(" (node `{s}` has no `timezone:`)"),
            None => " (no node of the site owns its addresses)".into(),
        },
    })
}

/// Most lines held while the log's node is not known yet; beyond it, or
/// after [`HOLD_FOR`], they go out under `--sensor` (or no node).
pub const MAX_HELD: usize = 1024;
/// How long a line waits for a later line to name the log's node.
pub const HOLD_FOR: Duration = Duration::from_secs(10);

/// A line read, waiting for the log's node (its time zone, and the node its
/// observation names).
#[derive(Debug)]
enum Held {
    Line(Line),
    Skipped(Skipped),
}

/// A `pfirewall.log` read line by line as it grows (`--follow`): the
/// columns of the current file's `#Fields:` (a new file starts over with
/// Windows' own), the node whose log it is, and the time of the line
/// before (for daylight-saving overlaps).
///
/// The node is the one owning the local end of the first line that names
/// one (history lines count); lines before it wait for it, at most
/// [`MAX_HELD`] of them for at most [`HOLD_FOR`], then go out under
/// `--sensor`, and later lines under the node a line names. Times are
/// resolved in the node's `timezone:`, else `--timezone`; a line with
/// neither is counted `no_time_zone`.
#[derive(Debug)]
pub struct Follow {
    columns: Columns,
    sensor: Option<Arc<str>>,
    /// The node was named by a line (not `--sensor`'s fallback).
    found: bool,
    /// Lines go out as they come (the node was found, or waiting ended).
    released: bool,
    previous: Option<Timestamp>,
    held: VecDeque<(Held, Instant)>,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            columns: Columns::parse(DEFAULT_FIELDS).0,
            sensor: None,
            found: false,
            released: false,
            previous: None,
            held: VecDeque::new(),
        }
    }
}

impl Follow {
    /// The node whose log this is, once known.
    pub fn sensor(&self) -> Option<&Arc<str>> {
        self.sensor.as_ref()
    }

    /// A new file starts (after a rotation or truncation): its own header.
    pub fn new_file(&mut self) {
        self.columns = Columns::parse(DEFAULT_FIELDS).0;
    }

    /// One line (without its line end) read at `now`; `history`: it was in
    /// the file before following started, read for its header and node
    /// only. What it gives (and what waiting lines give once released)
    /// goes to `out`.
    pub fn line(
        &mut self,
        line: &str,
        history: bool,
        now: Instant,
        ctx: &RecordContext,
        out: &mut Vec<Counted>,
    ) {
        let LineKind::Data { parsed, .. } = read_line(&mut self.columns, line) else {
            return;
        };
        if !self.found {
            let named = parsed.as_ref().ok().and_then(Line::local_end);
            if let Some(n) = named.and_then(|a| ctx.node_of(a)) {
                self.sensor = Some(n.name.clone());
                self.found = true;
                self.released = true;
            }
        }
        if history {
            return;
        }
        let held = match parsed {
            Ok(l) => Held::Line(l),
            Err(skipped) => Held::Skipped(skipped),
        };
        self.held.push_back((held, now));
        if self.held.len() > MAX_HELD {
            self.released = true;
            self.sensor = self.sensor.take().or_else(|| ctx.sensor.clone());
        }
        self.release(ctx, out);
    }

    /// Lines that waited [`HOLD_FOR`] by `now` go out.
    pub fn tick(&mut self, now: Instant, ctx: &RecordContext, out: &mut Vec<Counted>) {
        let waited = self
            .held
            .front()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= HOLD_FOR);
        if waited && !self.released {
            self.released = true;
            self.sensor = ctx.sensor.clone();
        }
        self.release(ctx, out);
    }

    fn release(&mut self, ctx: &RecordContext, out: &mut Vec<Counted>) {
        if !self.released {
            return;
        }
        let node = self.sensor.clone();
        let tz = (node.as_deref())
            .and_then(|n| ctx.node(n))
            .and_then(|n| n.timezone.clone())
            .or_else(|| ctx.timezone.as_ref().map(|(_, tz)| tz.clone()));
        while let Some((held, _)) = self.held.pop_front() {
            let (reason, item) = match held {
                Held::Line(l) => {
                    let Some(tz) = &tz else {
                        out.push(Counted::new(node.clone(), reason::NO_TIME_ZONE, None));
                        continue;
                    };
                    let Some(ts) = resolve(tz, l.local(), self.previous) else {
                        out.push(Counted::new(node.clone(), reason::TIME, None));
                        continue;
                    };
                    self.previous = Some(ts);
                    match l {
                        Line::Lost { events, .. } => {
                            (reason::EVENTS_LOST, RecordItem::Lost { at: ts, events })
                        }
                        Line::Connection {
                            key, outcome, pid, ..
                        } => {
                            let mut o =
                                Observation::record(ts, key, outcome, SourceKind::FirewallLog);
                            o.sensor = node.clone();
                            o.process = Process {
                                executable: None,
                                pid,
                            };
                            (reason::OBSERVED, RecordItem::Observed(o))
                        }
                    }
                }
                Held::Skipped((r, local)) => {
                    let at = local
                        .zip(tz.as_ref())
                        .and_then(|(local, tz)| resolve(tz, local, self.previous));
                    out.push(Counted::new(
                        node.clone(),
                        r,
                        at.map(|at| RecordItem::Covered { at }),
                    ));
                    continue;
                }
            };
            out.push(Counted::new(node.clone(), reason, Some(item)));
        }
    }
}

#[cfg(test)]
mod tests;
