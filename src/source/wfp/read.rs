//! Reading one file of WFP events: its shape from its first bytes, then
//! every record through the pure parsers, counted by id and by reason.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::ndjson::{parse_line, MAX_LINE};
use super::{evtx, Reason, Tally, WfpEvent};
use crate::source::file::Stopped;
use crate::source::flows::azure::{json_shape, JsonShape};
use crate::source::SourceError;

/// How a file of WFP events is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Evtx,
    Ndjson,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Evtx => "evtx",
            Shape::Ndjson => "ndjson",
        }
    }
}

/// The shape of a file from its first bytes: the EVTX magic, or a JSON
/// object first (after an optional UTF-8 byte order mark and blank space).
/// `None` for anything else; a JSON line need not be a WFP event (the
/// reader counts those as other events).
pub fn sniff(head: &[u8]) -> Option<Shape> {
    if head.starts_with(evtx::MAGIC) {
        return Some(Shape::Evtx);
    }
    let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Some(Shape::Ndjson),
        _ => None,
    }
}

/// Everything read from one file.
#[derive(Clone, Debug)]
pub struct WfpFile {
    pub path: String,
    pub shape: Shape,
    /// The 5156, 5157 and 5152 events, in the file's order.
    pub events: Vec<WfpEvent>,
    pub tally: Tally,
    /// `Some` if the file was cut short: what was read and where it stopped.
    pub stopped: Option<Stopped>,
}

/// Read a whole file of WFP events.
pub fn read(path: &Path) -> Result<WfpFile, SourceError> {
    let name = path.display().to_string();
    let io_err = |source: io::Error| SourceError::Io {
        path: name.clone(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 512];
    let n = read_head(&mut f, &mut head).map_err(io_err)?;
    let shape = sniff(&head[..n]).ok_or_else(|| SourceError::NotACapture {
        path: name.clone(),
        what: "neither EVTX nor NDJSON".into(),
    })?;
    // One JSON value over many lines is not one event a line: refused
    // rather than every line counted `not_json`.
    if shape == Shape::Ndjson && json_shape(&head[..n]) == Some(JsonShape::Document) {
        return Err(SourceError::Refused {
            what: format!(
                "{name}: a JSON document over lines (pretty-printed): neither WFP events one a \
                 line (NDJSON) nor an Azure flow log"
            ),
            path: name,
        });
    }
    let f = File::open(path).map_err(io_err)?;
    let mut out = WfpFile {
        path: name.clone(),
        shape,
        events: Vec::new(),
        tally: Tally::default(),
        stopped: None,
    };
    let mut sink = |r: Result<Option<WfpEvent>, Reason>| {
        out.tally.count(&r);
        if let Ok(Some(e)) = r {
            out.events.push(e);
        }
    };
    let stopped = match shape {
        Shape::Evtx => {
            let len = f.metadata().map_err(io_err)?.len();
            let cut = evtx::parse(f, len, &mut sink).map_err(|e| SourceError::NotACapture {
                path: name.clone(),
                what: e.to_string(),
            })?;
            cut.map(|t| {
                (
                    t.offset,
                    format!("incomplete EVTX chunk ({} bytes)", t.unread),
                )
            })
        }
        Shape::Ndjson => lines(BufReader::new(f), &mut sink).map_err(io_err)?,
    };
    let records = out.tally.events.values().sum::<u64>() + out.tally.other + out.tally.bad_total();
    out.stopped = stopped.map(|(offset, reason)| Stopped {
        records,
        offset,
        reason,
    });
    Ok(out)
}

fn read_head(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every line of an NDJSON stream. A last line with no newline that is not
/// a JSON object was cut short: it is not counted, and its offset is
/// returned with the reason.
pub fn lines(
    mut r: impl BufRead,
    sink: &mut dyn FnMut(Result<Option<WfpEvent>, Reason>),
) -> io::Result<Option<(u64, String)>> {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let complete = buf.last() == Some(&b'\n');
        if !complete && n > MAX_LINE {
            offset += n as u64 + skip_line(&mut r)?;
            sink(Err(Reason::LineTooLong));
            continue;
        }
        let parsed = parse_line(&buf);
        if !complete && parsed == Err(Reason::NotJson) {
            return Ok(Some((offset, format!("last line cut short ({n} bytes)"))));
        }
        offset += n as u64;
        sink(parsed);
    }
}

/// Consume the rest of an overlong line; the bytes skipped.
fn skip_line(r: &mut impl BufRead) -> io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(skipped + i as u64 + 1);
            }
            None => {
                let k = buf.len();
                r.consume(k);
                skipped += k as u64;
            }
        }
    }
}
