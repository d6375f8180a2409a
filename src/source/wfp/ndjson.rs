//! One JSON object a line, in either of the two shapes shippers write,
//! told apart line by line:
//!
//! * Winlogbeat and Elastic Agent (ECS): `winlog.event_id`, `@timestamp`
//!   (the event's creation time), `host.name` or `winlog.computer_name`,
//!   and the event's fields under `winlog.event_data`.
//! * NXLog (`im_msvistalog`, often through Logstash): every field flat at
//!   the top, `EventID`, `Hostname`, and the time as `TimeCreated`, or
//!   `EventTime` which NXLog writes in the node's local time without an
//!   offset unless told otherwise; then only Logstash's `@timestamp` (when
//!   it received the line, in UTC) has a zone, and the event says so
//!   ([`Clock::Shipped`]).

use serde_json::{Map, Value};

use super::{event, instant, number, Clock, EventId, Field, Header, Reason, WfpEvent};

/// Longest line read; a longer one is counted and skipped. Real events are
/// a few kilobytes (the rendered `Message` included).
pub const MAX_LINE: usize = 64 * 1024;

/// One line: `Ok(None)` for an event that is not 5156, 5157 or 5152, and
/// for a blank line.
pub fn parse_line(line: &[u8]) -> Result<Option<WfpEvent>, Reason> {
    if line.len() > MAX_LINE {
        return Err(Reason::LineTooLong);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(line).map_err(|_| Reason::NotJson)?;
    let obj = v.as_object().ok_or(Reason::NotJson)?;
    match obj.get("winlog").and_then(Value::as_object) {
        Some(winlog) => ecs(obj, winlog),
        None => flat(obj),
    }
}

fn ecs(obj: &Map<String, Value>, winlog: &Map<String, Value>) -> Result<Option<WfpEvent>, Reason> {
    let code = winlog
        .get("event_id")
        .or_else(|| obj.get("event").and_then(|e| e.get("code")))
        .ok_or(Reason::NoEventId)?;
    let Some(id) = number(code).and_then(EventId::from_code) else {
        return Ok(None);
    };
    let time = match obj.get("@timestamp").and_then(Value::as_str) {
        Some(t) => instant(t)
            .map(|t| (t, Clock::Created))
            .ok_or(Reason::BadField(Field::Time)),
        None => Err(Reason::MissingField(Field::Time)),
    };
    let host = (obj.get("host").and_then(|h| h.get("name")))
        .or_else(|| winlog.get("computer_name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let empty = Map::new();
    let data = winlog
        .get("event_data")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    event(Header { id, time, host }, data).map(Some)
}

fn flat(obj: &Map<String, Value>) -> Result<Option<WfpEvent>, Reason> {
    let code = obj.get("EventID").ok_or(Reason::NoEventId)?;
    let Some(id) = number(code).and_then(EventId::from_code) else {
        return Ok(None);
    };
    let host = obj
        .get("Hostname")
        .and_then(Value::as_str)
        .map(str::to_string);
    event(
        Header {
            id,
            time: flat_time(obj),
            host,
        },
        obj,
    )
    .map(Some)
}

/// The creation time if it has a zone, else the shipper's time.
fn flat_time(obj: &Map<String, Value>) -> Result<(super::Timestamp, Clock), Reason> {
    let field = |name: &str| obj.get(name).and_then(Value::as_str);
    for name in ["TimeCreated", "EventTime"] {
        if let Some(t) = field(name).and_then(instant) {
            return Ok((t, Clock::Created));
        }
    }
    if let Some(t) = field("@timestamp").and_then(instant) {
        return Ok((t, Clock::Shipped));
    }
    match field("EventTime").or_else(|| field("TimeCreated")) {
        Some(_) => Err(Reason::TimeWithoutOffset),
        None => Err(Reason::MissingField(Field::Time)),
    }
}
