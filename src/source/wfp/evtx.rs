//! `.evtx` files (Windows Event Forwarding, `wevtutil epl`, a copy of
//! `Security.evtx`), read with the `evtx` crate: a 4 KiB file header, then
//! chunks of 64 KiB, each holding records of binary XML.
//!
//! A file whose size is not a whole number of chunks was cut short: the
//! whole chunks are read and the rest is reported as [`Truncated`]. A chunk
//! or record the crate cannot read is counted and skipped.

use std::io::{Read, Seek};

use evtx::err::EvtxError;
use evtx::{EvtxParser, ParserSettings};
use serde_json::{Map, Value};

use super::{event, instant, number, Clock, EventId, Field, Header, Reason, WfpEvent};
use crate::time::Timestamp;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"ElfFile\0";
pub const FILE_HEADER_BYTES: u64 = 4096;
pub const CHUNK_BYTES: u64 = 64 * 1024;

/// Where a cut-short file stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated {
    /// Byte offset of the first incomplete chunk (or of the header's end).
    pub offset: u64,
    /// Bytes after it that were not read.
    pub unread: u64,
}

/// The file could not be opened as EVTX at all.
#[derive(Debug, thiserror::Error)]
#[error("not an EVTX file: {0}")]
pub struct NotEvtx(String);

/// Every record of an EVTX stream of `len` bytes, in the log's own order,
/// each handed to `sink` as an event, `None` (another event id) or the
/// reason it could not be read. Returns where a cut-short file stopped.
pub fn parse<R: Read + Seek + Send + 'static>(
    data: R,
    len: u64,
    sink: &mut dyn FnMut(Result<Option<WfpEvent>, Reason>),
) -> Result<Option<Truncated>, NotEvtx> {
    if len < FILE_HEADER_BYTES {
        return Err(NotEvtx(format!(
            "{len} bytes, shorter than the file header"
        )));
    }
    let mut parser = EvtxParser::from_read_seek(data)
        .map_err(|e| NotEvtx(e.to_string()))?
        .with_configuration(ParserSettings::new().num_threads(1));
    for r in parser.records_json_value() {
        sink(match r {
            Ok(rec) => record(&rec.data, rec.timestamp),
            Err(EvtxError::FailedToParseChunk { .. }) => Err(Reason::CorruptChunk),
            Err(_) => Err(Reason::CorruptRecord),
        });
    }
    let unread = (len - FILE_HEADER_BYTES) % CHUNK_BYTES;
    Ok((unread != 0).then(|| Truncated {
        offset: len - unread,
        unread,
    }))
}

/// One record as the crate renders it: `{"Event": {"System": …, "EventData": …}}`.
fn record(v: &Value, written: jiff::Timestamp) -> Result<Option<WfpEvent>, Reason> {
    let ev = v.get("Event").ok_or(Reason::CorruptRecord)?;
    let system = ev.get("System").ok_or(Reason::CorruptRecord)?;
    let code = system.get("EventID").ok_or(Reason::NoEventId)?;
    // `<EventID Qualifiers="…">` renders as an object with a `#text`.
    let code = code.get("#text").unwrap_or(code);
    let Some(id) = number(code).and_then(EventId::from_code) else {
        return Ok(None);
    };
    let created = (system.get("TimeCreated"))
        .and_then(|t| t.get("#attributes"))
        .and_then(|a| a.get("SystemTime"))
        .and_then(Value::as_str);
    let time = match created {
        Some(t) => instant(t).ok_or(Reason::BadField(Field::Time)),
        None => u64::try_from(written.as_nanosecond())
            .map(Timestamp)
            .map_err(|_| Reason::BadField(Field::Time)),
    };
    let host = system
        .get("Computer")
        .and_then(Value::as_str)
        .map(str::to_string);
    let empty = Map::new();
    let data = ev
        .get("EventData")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let header = Header {
        id,
        time: time.map(|t| (t, Clock::Created)),
        host,
    };
    event(header, data).map(Some)
}
