//! Windows Filtering Platform audit events from a node's Security log:
//! 5156 (the platform permitted a connection), 5157 (it blocked one) and
//! 5152 (it dropped a packet), read from `.evtx` files ([`evtx`]) and from
//! NDJSON exports ([`ndjson`]: Winlogbeat/Elastic Agent ECS with
//! `winlog.event_data.*`, or NXLog's flat `EventID`, `SourceAddress`, …).
//! The shape is found from the content, never from the file name.
//!
//! Every shape ends in the same [`WfpEvent`]: the event's own fields, not yet
//! interpreted. [`Sides`] then decides who initiated the connection and
//! which end is the logging node, because the fields do not say it the same
//! way on every Windows release (see [`Sides`]).
//!
//! Parsing is pure: bytes and lines in, events or a [`Reason`] out. A bad
//! record is counted by reason in a [`Tally`] and reading goes on; only the
//! reader in [`read`] touches files.

pub mod evtx;
pub mod ndjson;
pub mod observe;
pub mod read;
pub mod sides;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

pub use sides::{Ends, Sides, Unresolved};

use crate::time::Timestamp;

/// The three Filtering Platform events portwatch reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventId {
    /// 5156: the platform permitted a connection (its completion is not known).
    Permitted,
    /// 5157: the platform blocked a connection.
    Blocked,
    /// 5152: the platform dropped a packet.
    Dropped,
}

impl EventId {
    pub fn from_code(code: u64) -> Option<EventId> {
        match code {
            5156 => Some(EventId::Permitted),
            5157 => Some(EventId::Blocked),
            5152 => Some(EventId::Dropped),
            _ => None,
        }
    }

    pub fn code(self) -> u16 {
        match self {
            EventId::Permitted => 5156,
            EventId::Blocked => 5157,
            EventId::Dropped => 5152,
        }
    }
}

/// `Direction`: `%%14592` / `Inbound`, `%%14593` / `Outbound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// `LayerName`: where in the platform the decision was taken. Application
/// Layer Enforcement (ALE) layers judge a connection; the others judge a
/// single packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// `%%14611` Connect (ALE, outbound).
    Connect,
    /// `%%14610` Receive/Accept (ALE, inbound).
    ReceiveAccept,
    /// `%%14597` Transport: one packet.
    Transport,
    /// `%%14596` IP Packet: one packet.
    IpPacket,
    /// `%%14601` ICMP Error: a packet the stack answered, or an error about one.
    IcmpError,
    /// Any other layer, by its message number.
    Other(u32),
}

impl Layer {
    /// A layer that judges a connection rather than a packet.
    pub fn is_ale(self) -> bool {
        matches!(self, Layer::Connect | Layer::ReceiveAccept)
    }
}

/// Where an event's time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The event's creation time (EVTX `TimeCreated`, NXLog `TimeCreated` or
    /// `EventTime` with an offset, ECS `@timestamp`).
    Created,
    /// Only the shipper's receive time was given with a zone (NXLog through
    /// Logstash: `@timestamp`); it is seconds after the event.
    Shipped,
}

/// One address and port as the event gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// One 5156, 5157 or 5152 event, its fields as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WfpEvent {
    pub id: EventId,
    pub time: Timestamp,
    pub clock: Clock,
    /// The logging node: `Computer`, `host.name` or `Hostname`.
    pub host: Option<String>,
    pub direction: Direction,
    pub layer: Layer,
    /// `SourceAddress`, `SourcePort`: not always the initiator (see [`Sides`]).
    pub source: Endpoint,
    /// `DestAddress`, `DestPort`.
    pub dest: Endpoint,
    /// IP protocol number (6 is TCP).
    pub protocol: u8,
    /// `Application`: the executable's device path, `System`; `None` for `-`.
    pub application: Option<String>,
    /// `ProcessID` (5156, 5157) or `ProcessId` (5152).
    pub pid: Option<u32>,
    /// `FilterRTID`: the run-time id of the filter that decided; 0 means none.
    pub filter_rtid: Option<u64>,
}

/// Why a record or line gave no event. Counted, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A line that is not a JSON object.
    NotJson,
    /// A JSON object with no event id where the shape has one.
    NoEventId,
    /// A field the event needs is absent.
    MissingField(Field),
    /// A field is present but its value cannot be read.
    BadField(Field),
    /// The only time given has no zone or offset.
    TimeWithoutOffset,
    /// An EVTX record the `evtx` crate could not read.
    CorruptRecord,
    /// An EVTX chunk that could not be read (bad header, checksum).
    CorruptChunk,
    /// A line longer than [`ndjson::MAX_LINE`].
    LineTooLong,
}

impl Reason {
    /// The reason without its field: a closed set of labels.
    pub fn kind(self) -> &'static str {
        match self {
            Reason::NotJson => "not_json",
            Reason::NoEventId => "no_event_id",
            Reason::MissingField(_) => "missing_field",
            Reason::BadField(_) => "bad_field",
            Reason::TimeWithoutOffset => "time_without_offset",
            Reason::CorruptRecord => "corrupt_record",
            Reason::CorruptChunk => "corrupt_chunk",
            Reason::LineTooLong => "line_too_long",
        }
    }

    /// The label of a count, e.g. `missing_field:SourcePort`.
    pub fn label(self) -> String {
        match self {
            Reason::MissingField(f) | Reason::BadField(f) => {
                format!("{}:{}", self.kind(), f.name())
            }
            _ => self.kind().into(),
        }
    }
}

/// The fields an event is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Time,
    Direction,
    LayerName,
    SourceAddress,
    SourcePort,
    DestAddress,
    DestPort,
    Protocol,
    ProcessId,
    FilterRtid,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::Direction => "Direction",
            Field::LayerName => "LayerName",
            Field::SourceAddress => "SourceAddress",
            Field::SourcePort => "SourcePort",
            Field::DestAddress => "DestAddress",
            Field::DestPort => "DestPort",
            Field::Protocol => "Protocol",
            Field::ProcessId => "ProcessID",
            Field::FilterRtid => "FilterRTID",
        }
    }
}

/// What reading one file found: events by id, other events, and what could
/// not be read, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub events: BTreeMap<EventId, u64>,
    /// Records of other event ids (other channels, 5158, logons, …).
    pub other: u64,
    pub bad: BTreeMap<Reason, u64>,
}

impl Tally {
    pub fn count(&mut self, r: &Result<Option<WfpEvent>, Reason>) {
        match r {
            Ok(Some(e)) => *self.events.entry(e.id).or_default() += 1,
            Ok(None) => self.other += 1,
            Err(reason) => *self.bad.entry(*reason).or_default() += 1,
        }
    }

    pub fn of(&self, id: EventId) -> u64 {
        self.events.get(&id).copied().unwrap_or(0)
    }

    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }
}

/// The header of an event, read by each shape its own way.
struct Header {
    id: EventId,
    time: Result<(Timestamp, Clock), Reason>,
    host: Option<String>,
}

/// An event from its header and its `EventData` fields (the same names in
/// every shape; values are strings or numbers).
fn event(h: Header, data: &Map<String, Value>) -> Result<WfpEvent, Reason> {
    let (time, clock) = h.time?;
    let get = |f: Field, names: &[&str]| -> Result<&Value, Reason> {
        names
            .iter()
            .find_map(|n| data.get(*n).filter(|v| !v.is_null()))
            .ok_or(Reason::MissingField(f))
    };
    let endpoint = |a: Field, an: &str, p: Field, pn: &str| -> Result<Endpoint, Reason> {
        Ok(Endpoint {
            addr: text(get(a, &[an])?)
                .parse()
                .map_err(|_| Reason::BadField(a))?,
            port: number(get(p, &[pn])?).ok_or(Reason::BadField(p))?,
        })
    };
    let dir = get(Field::Direction, &["Direction"])?;
    let layer = get(Field::LayerName, &["LayerName"])?;
    let pid = match get(Field::ProcessId, &["ProcessID", "ProcessId"]) {
        Ok(v) => Some(number(v).ok_or(Reason::BadField(Field::ProcessId))?),
        Err(_) => None,
    };
    let filter_rtid = match get(Field::FilterRtid, &["FilterRTID"]) {
        Ok(v) => Some(number(v).ok_or(Reason::BadField(Field::FilterRtid))?),
        Err(_) => None,
    };
    Ok(WfpEvent {
        id: h.id,
        time,
        clock,
        host: h.host,
        direction: direction(&text(dir)).ok_or(Reason::BadField(Field::Direction))?,
        layer: layer_of(&text(layer)).ok_or(Reason::BadField(Field::LayerName))?,
        source: endpoint(
            Field::SourceAddress,
            "SourceAddress",
            Field::SourcePort,
            "SourcePort",
        )?,
        dest: endpoint(
            Field::DestAddress,
            "DestAddress",
            Field::DestPort,
            "DestPort",
        )?,
        protocol: number(get(Field::Protocol, &["Protocol"])?)
            .ok_or(Reason::BadField(Field::Protocol))?,
        application: data
            .get("Application")
            .map(text)
            .filter(|a| !a.is_empty() && a != "-"),
        pid,
        filter_rtid,
    })
}

/// A value as text: strings as they are, numbers in decimal.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A decimal number given as a JSON number or a string.
fn number<T: TryFrom<u64>>(v: &Value) -> Option<T> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    T::try_from(n).ok()
}

fn direction(s: &str) -> Option<Direction> {
    match s {
        "%%14592" | "Inbound" => Some(Direction::Inbound),
        "%%14593" | "Outbound" => Some(Direction::Outbound),
        _ => None,
    }
}

/// A layer from its message number (`%%14611`) or its rendered name.
fn layer_of(s: &str) -> Option<Layer> {
    Some(match s {
        "%%14611" | "Connect" => Layer::Connect,
        "%%14610" | "Receive/Accept" => Layer::ReceiveAccept,
        "%%14597" | "Transport" => Layer::Transport,
        "%%14596" | "IP Packet" => Layer::IpPacket,
        "%%14601" | "ICMP Error" => Layer::IcmpError,
        other => Layer::Other(other.strip_prefix("%%")?.parse().ok()?),
    })
}

/// An RFC 3339 time with `Z` or an offset; `None` without one.
fn instant(s: &str) -> Option<Timestamp> {
    let t: jiff::Timestamp = s.trim().parse().ok()?;
    u64::try_from(t.as_nanosecond()).ok().map(Timestamp)
}
