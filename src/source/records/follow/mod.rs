//! A node's log followed as it grows (`--follow`): the lines of [`Tail`]
//! read by the incremental reader of the file's format, told from its
//! first line (`#`: a Windows Firewall log, `{`: WFP events as NDJSON).
//! Each record comes out [`Counted`], by the same reasons `replay` counts;
//! what only following has is counted here: `line_too_long` (longer than
//! [`crate::source::follow::MAX_LINE`]), `cut_line` (a file rotated or
//! truncated inside a line), `unknown_format` (a line before the format
//! was told).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{pfirewall, wfp, Counted, RecordContext, RecordFormat};
use crate::source::follow::{Change, StartAt, Tail, TailEvent};

/// The reasons counted here.
pub mod reason {
    pub const LINE_TOO_LONG: &str = "line_too_long";
    pub const CUT_LINE: &str = "cut_line";
    pub const UNKNOWN_FORMAT: &str = "unknown_format";
}

/// The reader of a file's format, once told.
enum Reader {
    Unknown,
    Firewall(pfirewall::Follow),
    Wfp(wfp::Follow),
}

impl Reader {
    fn format(&self) -> Option<RecordFormat> {
        match self {
            Reader::Unknown => None,
            Reader::Firewall(_) => Some(RecordFormat::FirewallLog),
            Reader::Wfp(_) => Some(RecordFormat::WfpEvents),
        }
    }
}

/// What one poll of a followed file found, in the file's order.
#[derive(Clone, Debug, PartialEq)]
pub enum Followed {
    /// A record, and the format it was read as (`None`: not told yet).
    Record {
        format: Option<RecordFormat>,
        counted: Counted,
    },
    /// Something happened to the file.
    Change(Change),
}

/// One followed path.
pub struct FollowedFile {
    tail: Tail,
    reader: Reader,
    /// Records read, by what was made of them (a closed set).
    counts: BTreeMap<&'static str, u64>,
    records: u64,
    /// The node of its first record that named one.
    sensor: Option<Arc<str>>,
}

impl FollowedFile {
    pub fn new(path: &Path, start_at: StartAt) -> FollowedFile {
        FollowedFile {
            tail: Tail::new(path, start_at),
            reader: Reader::Unknown,
            counts: BTreeMap::new(),
            records: 0,
            sensor: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.tail.path()
    }

    /// The format told from its content, if it was.
    pub fn format(&self) -> Option<RecordFormat> {
        self.reader.format()
    }

    /// The node whose log it is: a firewall log's (once a line named it),
    /// else the node of the first record that named one.
    pub fn sensor(&self) -> Option<&Arc<str>> {
        match &self.reader {
            Reader::Firewall(f) => f.sensor().or(self.sensor.as_ref()),
            _ => self.sensor.as_ref(),
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Read what is new if a look is due at `now` (and release the lines
    /// that waited long enough for their node); returns whether more is
    /// waiting to be read at once.
    pub fn poll(&mut self, now: Instant, ctx: &RecordContext, out: &mut Vec<Followed>) -> bool {
        let FollowedFile { tail, reader, .. } = self;
        let from = out.len();
        let mut counted = Vec::new();
        let push = |format: Option<RecordFormat>, c: &mut Vec<Counted>, out: &mut Vec<_>| {
            out.extend(
                c.drain(..)
                    .map(|counted| Followed::Record { format, counted }),
            );
        };
        let more = tail.poll(now, &mut |e| {
            match e {
                TailEvent::Change(c) => {
                    if let (Change::Opened, Reader::Firewall(f)) = (c, &mut *reader) {
                        f.new_file();
                    }
                    out.push(Followed::Change(c));
                }
                TailEvent::Line { text, history } => {
                    if let Reader::Unknown = reader {
                        match text.trim_start().as_bytes().first() {
                            Some(b'#') => *reader = Reader::Firewall(pfirewall::Follow::default()),
                            Some(b'{') => *reader = Reader::Wfp(wfp::Follow::default()),
                            Some(_) if !history => {
                                counted.push(Counted::new(None, reason::UNKNOWN_FORMAT, None))
                            }
                            _ => {}
                        }
                    }
                    match reader {
                        Reader::Unknown => {}
                        Reader::Firewall(f) => f.line(text, history, now, ctx, &mut counted),
                        Reader::Wfp(w) => w.line(text.as_bytes(), history, ctx, &mut counted),
                    }
                }
                TailEvent::TooLong { history: false } => {
                    counted.push(Counted::new(None, reason::LINE_TOO_LONG, None))
                }
                TailEvent::TooLong { history: true } => {}
                TailEvent::Cut => counted.push(Counted::new(None, reason::CUT_LINE, None)),
            }
            push(reader.format(), &mut counted, out);
        });
        if let Reader::Firewall(f) = reader {
            f.tick(now, ctx, &mut counted);
        }
        push(reader.format(), &mut counted, out);
        // A record of a line the file's own reader could not place is the
        // file's node's, once known.
        let known = self.sensor().cloned();
        for f in &mut out[from..] {
            if let Followed::Record { counted, .. } = f {
                if counted.node.is_none() && matches!(self.reader, Reader::Firewall(_)) {
                    counted.node = known.clone();
                }
                self.records += 1;
                *self.counts.entry(counted.reason).or_default() += 1;
                if self.sensor.is_none() {
                    self.sensor = counted.node.clone();
                }
            }
        }
        more
    }
}

#[cfg(test)]
mod tests;
