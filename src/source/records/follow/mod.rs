//! A node's log followed as it grows (`--follow`): the lines of [`Tail`]
//! read by the incremental reader of the file's format, told from its
//! first line (`#`: a Windows Firewall log, `{`: WFP events as NDJSON, a
//! VPC flow log's header or default-format record: an AWS VPC flow log).
//! Each record comes out [`Counted`], by the same reasons `replay` counts;
//! what only following has is counted here: `line_too_long` (longer than
//! [`crate::source::follow::MAX_LINE`]), `cut_line` (a file rotated or
//! truncated inside a line), `unknown_format` (a line before the format
//! was told).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{pfirewall, wfp, Counted, RecordContext, RecordFormat, RecordItem};
use crate::source::flows::{vpc, Interfaces};
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
    Vpc(vpc::Follow),
}

impl Reader {
    fn format(&self) -> Option<RecordFormat> {
        match self {
            Reader::Unknown => None,
            Reader::Firewall(_) => Some(RecordFormat::FirewallLog),
            Reader::Wfp(_) => Some(RecordFormat::WfpEvents),
            Reader::Vpc(_) => Some(RecordFormat::VpcFlow),
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

    /// A VPC flow log's interfaces so far (`None` for other formats): the
    /// node owning one is the node the log covers, as for `replay`.
    pub fn interfaces(&self) -> Option<&Interfaces> {
        match &self.reader {
            Reader::Vpc(v) => Some(v.interfaces()),
            _ => None,
        }
    }

    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Read what is new if a look is due at `now` (and release the lines
    /// that waited long enough for their node); returns whether more is
    /// waiting to be read at once.
    pub fn poll(&mut self, now: Instant, ctx: &RecordContext, out: &mut Vec<Followed>) -> bool {
        let from = out.len();
        let more = self.read(now, ctx, out);
        self.release(now, ctx, out);
        self.account(from, out);
        more
    }

    /// Release, without reading, what waited long enough by `now` for
    /// its node or its connection's other direction (at the stop: `now`
    /// past the longest wait releases everything read).
    pub fn settle(&mut self, now: Instant, ctx: &RecordContext, out: &mut Vec<Followed>) {
        let from = out.len();
        self.release(now, ctx, out);
        self.account(from, out);
    }

    /// The tail's new lines through the file's reader.
    fn read(&mut self, now: Instant, ctx: &RecordContext, out: &mut Vec<Followed>) -> bool {
        let FollowedFile { tail, reader, .. } = self;
        let mut counted = Vec::new();
        let mut flows = Vec::new();
        tail.poll(now, &mut |e| {
            match e {
                TailEvent::Change(c) => {
                    match (c, &mut *reader) {
                        (Change::Opened, Reader::Firewall(f)) => f.new_file(),
                        (Change::Opened, Reader::Vpc(v)) => v.new_file(),
                        _ => {}
                    }
                    out.push(Followed::Change(c));
                }
                TailEvent::Line { text, history } => {
                    if let Reader::Unknown = reader {
                        match text.trim_start().as_bytes().first() {
                            Some(b'#') => *reader = Reader::Firewall(pfirewall::Follow::default()),
                            Some(b'{') => *reader = Reader::Wfp(wfp::Follow::default()),
                            Some(_) if vpc::looks_like(text) => {
                                *reader = Reader::Vpc(vpc::Follow::default())
                            }
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
                        Reader::Vpc(v) => {
                            v.line(text, history, now, &mut flows);
                            counted.extend(flows.drain(..).map(|f| vpc_counted(f, ctx)));
                        }
                    }
                }
                TailEvent::TooLong { history: false } => {
                    counted.push(Counted::new(None, reason::LINE_TOO_LONG, None))
                }
                TailEvent::TooLong { history: true } => {}
                TailEvent::Cut => counted.push(Counted::new(None, reason::CUT_LINE, None)),
            }
            push(reader.format(), &mut counted, out);
        })
    }

    /// What the reader held that waited long enough by `now`.
    fn release(&mut self, now: Instant, ctx: &RecordContext, out: &mut Vec<Followed>) {
        let mut counted = Vec::new();
        match &mut self.reader {
            Reader::Firewall(f) => f.tick(now, ctx, &mut counted),
            Reader::Vpc(v) => {
                let mut flows = Vec::new();
                v.tick(now, &mut flows);
                counted.extend(flows.into_iter().map(|f| vpc_counted(f, ctx)));
            }
            _ => {}
        }
        push(self.reader.format(), &mut counted, out);
    }

    /// The records put out since `from`, counted.
    fn account(&mut self, from: usize, out: &mut [Followed]) {
        // A record of a line the file's own reader could not place is the
        // file's node's, once known.
        let known = self.sensor().cloned();
        for f in &mut out[from..] {
            if let Followed::Record { counted, .. } = f {
                if counted.node.is_none() && matches!(self.reader, Reader::Firewall(_)) {
                    counted.node = known.clone();
                }
                // A VPC connection (or header) is counted, not a record.
                let record = !matches!(self.reader, Reader::Vpc(_))
                    || !vpc::NOT_RECORDS.contains(&counted.reason);
                self.records += u64::from(record);
                *self.counts.entry(counted.reason).or_default() += 1;
                if self.sensor.is_none() {
                    self.sensor = counted.node.clone();
                }
            }
        }
    }
}

/// `c`'s records out, read as `format`.
fn push(format: Option<RecordFormat>, c: &mut Vec<Counted>, out: &mut Vec<Followed>) {
    out.extend(
        c.drain(..)
            .map(|counted| Followed::Record { format, counted }),
    );
}

/// A VPC flow log's line or connection as a record: its node is the site
/// node owning one of its ends (the interface logged), the client's first.
fn vpc_counted(f: vpc::Followed, ctx: &RecordContext) -> Counted {
    let node = |ends: Option<(IpAddr, IpAddr)>| {
        let (a, b) = ends?;
        let n = ctx.node_of(a).or_else(|| ctx.node_of(b))?;
        Some(n.name.clone())
    };
    match f {
        vpc::Followed::Line { reason, ends, gap } => {
            let item = gap.map(|g| RecordItem::Lost {
                at: g.ts(),
                events: 0,
            });
            Counted::new(node(ends), reason, item)
        }
        vpc::Followed::Joined {
            reason,
            observation,
        } => {
            let ends = observation.as_ref().map(|o| (o.key.client, o.key.server));
            Counted::new(node(ends), reason, observation.map(RecordItem::Observed))
        }
    }
}

#[cfg(test)]
mod tests;
