//! Files followed as they grow (`--follow`), with `tail -F`'s semantics:
//! the file is known by its device and inode and read through one open
//! descriptor.
//!
//! - **Rotation** (Windows renames `pfirewall.log` to `pfirewall.log.old`
//!   and starts a new file): the old file is read to its end through the
//!   descriptor still open, then the new one from its start. A generation
//!   that came and went between two polls (rotated twice) is read in full
//!   from `<path>.old`.
//! - **Truncation** (the file got shorter than the offset read): read
//!   again from its start.
//! - **A file that is not there yet** is waited for, said once.
//! - **Lines:** only complete lines are delivered; a partial last line
//!   waits for its end. A line longer than [`MAX_LINE`] is reported once and
//!   skipped to its end; a line a file ended in (rotated or truncated
//!   before its end came) is reported as cut. Each file's encoding (UTF-8,
//!   UTF-16 LE, with or without a byte-order mark) is told from its first
//!   bytes; a file that does not grow by lines ([`Refusal`]: EVTX, gzip, an
//!   Azure flow log, a JSON document over lines) is refused until it is replaced, whenever it appears.
//!
//! Poll-based: [`Tail::poll`] looks at the file at most every
//! [`POLL_EVERY`] of the time passed in, reading at most
//! [`READ_PER_POLL`] bytes at once so a long file does not hold up its
//! caller.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::flows::azure::{json_shape, JsonShape};
use super::flows::{FlowFormat, GZIP_MAGIC};
use super::records::text::{self, Encoding};
use super::wfp::evtx::MAGIC as EVTX_MAGIC;

/// Longest line delivered, in bytes; a longer one is skipped and reported.
pub const MAX_LINE: usize = 64 * 1024;
/// Most files followed at once.
pub const MAX_FOLLOWED: usize = 64;
/// How often a followed file is looked at.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Most bytes read from one file in one poll; the rest comes at the next.
pub const READ_PER_POLL: usize = 4 << 20;
const CHUNK: usize = 64 * 1024;

/// Where a file that is there when following starts is read from. Files
/// that appear later, and those after a rotation or truncation, are always
/// read from their start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Everything the file holds.
    Start,
    /// Only what is written from now on; the lines already there are
    /// delivered as history (for their headers and the node they name),
    /// not as records.
    End,
}

/// Bytes of a file's head that tell whether it is refused.
pub const HEAD: usize = 512;

/// Why a file cannot be followed: it is not written line by line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Windows writes EVTX in chunks rewritten in place.
    Evtx,
    /// A gzip file is written whole (AWS's `.log.gz`).
    Gzip,
    /// An Azure flow log blob is one JSON document rewritten as it grows.
    AzureFlowLog,
    /// A JSON document over lines (pretty-printed) is not one value a line.
    JsonDocument,
}

impl Refusal {
    /// The change label of a file refused for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Evtx => "binary",
            Refusal::Gzip => "gzip",
            Refusal::AzureFlowLog => "azure_flow_log",
            Refusal::JsonDocument => "json_document",
        }
    }

    /// Why, and what to do instead.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Evtx => {
                "an EVTX file cannot be followed (it is not written line by line): \
                 follow the NDJSON a shipper writes (Winlogbeat, NXLog), or replay the .evtx"
            }
            Refusal::Gzip => {
                "a gzip file cannot be followed (it is written whole, not line by line): \
                 replay it, or follow the plain text log"
            }
            Refusal::AzureFlowLog => {
                "an Azure flow log cannot be followed (its blob is one JSON document \
                 rewritten as it grows, not appended lines): replay each hour's PT1H.json"
            }
            Refusal::JsonDocument => {
                "a JSON document over several lines cannot be followed (it is not one \
                 value a line, as NDJSON is): replay it (an Azure flow log blob is one)"
            }
        }
    }
}

/// What a file's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Refused(Refusal),
    /// Followed as text.
    Text,
    /// Too few bytes yet to tell.
    Short,
}

impl Head {
    /// The verdict on a file starting with `head`. `whole`: no more bytes
    /// will be waited for (a file checked at start: its first [`HEAD`]
    /// bytes). A JSON head is told once its first line is whole (one
    /// value a line: text) or it holds [`HEAD`] bytes: a first line that
    /// opens a document the next lines continue waits for an Azure flow
    /// log's marks until then, and is refused as a JSON document after.
    pub fn of(head: &[u8], whole: bool) -> Head {
        if head.starts_with(EVTX_MAGIC) {
            return Head::Refused(Refusal::Evtx);
        }
        if head.starts_with(&GZIP_MAGIC) {
            return Head::Refused(Refusal::Gzip);
        }
        if FlowFormat::detect(head) == Some(FlowFormat::AzureFlowLog) {
            return Head::Refused(Refusal::AzureFlowLog);
        }
        let full = whole || head.len() >= HEAD;
        let json = match json_shape(head) {
            Some(JsonShape::Document) if full => return Head::Refused(Refusal::JsonDocument),
            Some(JsonShape::Document) => true,
            Some(JsonShape::Lines) => false,
            None => head.trim_ascii_start().starts_with(b"{") && !head.contains(&b'\n'),
        };
        let prefix = |magic: &[u8]| head.len() < magic.len() && magic.starts_with(head);
        if !full && (prefix(EVTX_MAGIC) || prefix(&GZIP_MAGIC) || json) {
            return Head::Short;
        }
        Head::Text
    }
}

/// A file's identity: it stays the same through renames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What happened to the followed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The path names no file (yet): said once until one appears.
    Missing,
    /// A file is read from its start (or, at [`StartAt::End`], its history
    /// first): the lines after this belong to a new file, its header and
    /// encoding its own.
    Opened,
    /// The file was renamed away (or removed) and a new one took its name;
    /// the old one was read to its end first.
    Rotated,
    /// The file got shorter than what was read of it: read again from its
    /// start (an [`Change::Opened`] follows).
    Truncated,
    /// The file does not grow by lines: not read until replaced.
    Refused(Refusal),
    /// Looking at or reading the file failed (a share gone away): said once
    /// until it works again.
    Unreadable(io::ErrorKind),
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Missing => "missing",
            Change::Opened => "opened",
            Change::Rotated => "rotated",
            Change::Truncated => "truncated",
            Change::Refused(r) => r.as_str(),
            Change::Unreadable(_) => "unreadable",
        }
    }
}

/// What a poll delivers, in the file's order.
#[derive(Debug, PartialEq, Eq)]
pub enum TailEvent<'a> {
    Change(Change),
    /// One complete line, without its line end. `history`: it was in the
    /// file when following started at [`StartAt::End`].
    Line {
        text: &'a str,
        history: bool,
    },
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong {
        history: bool,
    },
    /// The file ended inside a line: rotated or truncated before the line's
    /// end was written. The part read is dropped.
    Cut,
}

/// One open file and how far it was read.
struct Open {
    file: File,
    id: FileId,
    /// Bytes read from the descriptor.
    offset: u64,
    /// Told from the first bytes; `None` until there are enough of them.
    encoding: Option<Encoding>,
    /// The bytes of the line not ended yet (at most [`MAX_LINE`] plus one
    /// read), or the first bytes while the encoding is not known.
    partial: Vec<u8>,
    /// File offset of `partial[0]`.
    partial_at: u64,
    /// Inside a line longer than [`MAX_LINE`]: dropped up to its end.
    skipping: bool,
    /// Lines ending at or before this offset are history.
    history_until: u64,
    /// Refused: nothing more is read from it.
    refused: bool,
}

impl Open {
    fn new(file: File, id: FileId, history_until: u64) -> Open {
        Open {
            file,
            id,
            offset: 0,
            encoding: None,
            partial: Vec::new(),
            partial_at: 0,
            skipping: false,
            history_until,
            refused: false,
        }
    }

    /// Back to the start of a file that was truncated.
    fn restart(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let (file, id) = (self.file.try_clone()?, self.id);
        *self = Open::new(file, id, 0);
        Ok(())
    }

    /// Whether the file ended inside a line.
    fn cut(&self) -> bool {
        // A head still being told is text of two bytes or more.
        let text = self.encoding.is_some() || self.partial.len() >= 2;
        !self.refused && !self.skipping && text && !self.partial.is_empty()
    }

    /// Read up to `budget` bytes; `true` at the end of the file.
    fn read(
        &mut self,
        budget: &mut usize,
        buf: &mut Vec<u8>,
        sink: &mut dyn FnMut(TailEvent<'_>),
    ) -> io::Result<bool> {
        loop {
            if *budget == 0 {
                return Ok(false);
            }
            let want = CHUNK.min(*budget);
            buf.resize(want, 0);
            let n = match self.file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(true);
            }
            *budget -= n;
            self.feed(&buf[..n], sink);
        }
    }

    /// Bytes read from the file, in order.
    fn feed(&mut self, chunk: &[u8], sink: &mut dyn FnMut(TailEvent<'_>)) {
        let mut at = self.offset;
        self.offset += chunk.len() as u64;
        if self.refused {
            return;
        }
        let mut chunk = chunk;
        let encoding = match self.encoding {
            Some(e) => e,
            None => {
                self.partial.extend_from_slice(chunk);
                chunk = &[];
                let head = &self.partial[..];
                match Head::of(head, false) {
                    Head::Refused(r) => {
                        self.refused = true;
                        self.partial = Vec::new();
                        sink(TailEvent::Change(Change::Refused(r)));
                        return;
                    }
                    Head::Short => return,
                    Head::Text => {}
                }
                let Some(e) = Encoding::sniff(head) else {
                    return;
                };
                self.encoding = Some(e);
                self.partial.drain(..e.bom_len());
                self.partial_at = e.bom_len() as u64;
                e
            }
        };
        if self.skipping {
            match line_end(encoding, chunk, at) {
                None => return,
                Some((i, t)) => {
                    chunk = &chunk[i + t..];
                    at += (i + t) as u64;
                    self.skipping = false;
                    self.partial_at = at;
                }
            }
        }
        self.partial.extend_from_slice(chunk);
        let mut from = 0;
        while let Some((i, t)) = line_end(
            encoding,
            &self.partial[from..],
            self.partial_at + from as u64,
        ) {
            let end = self.partial_at + (from + i + t) as u64;
            let history = end <= self.history_until;
            let line = &self.partial[from..from + i];
            if line.len() > MAX_LINE {
                sink(TailEvent::TooLong { history });
            } else {
                let (text, _invalid) = text::decode_as(encoding, line);
                sink(TailEvent::Line {
                    text: &text,
                    history,
                });
            }
            from += i + t;
        }
        self.partial.drain(..from);
        self.partial_at += from as u64;
        if self.partial.len() > MAX_LINE {
            sink(TailEvent::TooLong {
                history: self.partial_at < self.history_until,
            });
            self.partial_at += self.partial.len() as u64;
            self.partial.clear();
            self.skipping = true;
        }
    }
}

/// The first line end in `bytes` (which start at file offset `at`): its
/// index and length. In UTF-16 a line end is the unit `\n`, on a unit
/// boundary of the file (after its byte-order mark).
fn line_end(encoding: Encoding, bytes: &[u8], at: u64) -> Option<(usize, usize)> {
    if !encoding.is_utf16() {
        return bytes.iter().position(|b| *b == b'\n').map(|i| (i, 1));
    }
    let bom = encoding.bom_len() as u64;
    let first = usize::from(at.saturating_sub(bom) % 2 == 1);
    (first..bytes.len().saturating_sub(1))
        .step_by(2)
        .find(|&i| bytes[i] == b'\n' && bytes[i + 1] == 0)
        .map(|i| (i, 2))
}

/// One followed path.
pub struct Tail {
    path: PathBuf,
    /// Where a rotated file goes: `<path>.old`.
    old: PathBuf,
    start_at: StartAt,
    /// No poll yet: a file there now is the one following started with.
    first: bool,
    open: Option<Open>,
    said_missing: bool,
    said_unreadable: bool,
    next_poll: Option<Instant>,
    /// The last poll stopped at [`READ_PER_POLL`]: go on at once.
    behind: bool,
    buf: Vec<u8>,
}

impl Tail {
    pub fn new(path: &Path, start_at: StartAt) -> Tail {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        Tail {
            path: path.to_path_buf(),
            old: PathBuf::from(old),
            start_at,
            first: true,
            open: None,
            said_missing: false,
            said_unreadable: false,
            next_poll: None,
            behind: false,
            buf: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what is new, if a poll is due at `now` (or the last one did
    /// not read everything). Returns whether more is waiting to be read
    /// at once.
    pub fn poll(&mut self, now: Instant, sink: &mut dyn FnMut(TailEvent<'_>)) -> bool {
        if !self.behind && self.next_poll.is_some_and(|t| now < t) {
            return false;
        }
        self.next_poll = Some(now + POLL_EVERY);
        let mut budget = READ_PER_POLL;
        match self.step(&mut budget, sink) {
            Ok(()) => self.said_unreadable = false,
            Err(e) => {
                if !self.said_unreadable {
                    sink(TailEvent::Change(Change::Unreadable(e.kind())));
                    self.said_unreadable = true;
                }
            }
        }
        self.first = false;
        self.behind = budget == 0;
        self.behind
    }

    fn step(&mut self, budget: &mut usize, sink: &mut dyn FnMut(TailEvent<'_>)) -> io::Result<()> {
        if let Some(o) = &mut self.open {
            if !o.read(budget, &mut self.buf, sink)? {
                return Ok(());
            }
        }
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Renamed away and no new file yet: the open one may still
                // be written to; it stays open.
                if self.open.is_none() && !self.said_missing {
                    self.said_missing = true;
                    sink(TailEvent::Change(Change::Missing));
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let id = FileId::of(&meta);
        match &mut self.open {
            Some(o) if o.id == id => {
                if meta.len() < o.offset {
                    if o.cut() {
                        sink(TailEvent::Cut);
                    }
                    o.restart()?;
                    sink(TailEvent::Change(Change::Truncated));
                    sink(TailEvent::Change(Change::Opened));
                    o.read(budget, &mut self.buf, sink)?;
                }
                Ok(())
            }
            Some(o) => {
                // Finish the old file through its descriptor first.
                if !o.read(budget, &mut self.buf, sink)? {
                    return Ok(());
                }
                if o.cut() {
                    sink(TailEvent::Cut);
                }
                let old_id = o.id;
                sink(TailEvent::Change(Change::Rotated));
                self.open = None;
                self.missed_generation(old_id, id, sink)?;
                self.open_path(budget, sink)
            }
            None => self.open_path(budget, sink),
        }
    }

    /// Rotated twice between two polls: the file in between is at
    /// `<path>.old`, neither the one read nor the one now at the path.
    fn missed_generation(
        &mut self,
        read: FileId,
        current: FileId,
        sink: &mut dyn FnMut(TailEvent<'_>),
    ) -> io::Result<()> {
        let Ok(file) = File::open(&self.old) else {
            return Ok(());
        };
        let id = FileId::of(&file.metadata()?);
        if id == read || id == current {
            return Ok(());
        }
        let mut o = Open::new(file, id, 0);
        sink(TailEvent::Change(Change::Opened));
        let mut unbounded = usize::MAX;
        o.read(&mut unbounded, &mut self.buf, sink)?;
        if o.cut() {
            sink(TailEvent::Cut);
        }
        sink(TailEvent::Change(Change::Rotated));
        Ok(())
    }

    /// Open the file at the path and read it from its start.
    fn open_path(
        &mut self,
        budget: &mut usize,
        sink: &mut dyn FnMut(TailEvent<'_>),
    ) -> io::Result<()> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            // Gone again between the look and the open: next poll.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let history_until = match (self.first, self.start_at) {
            (true, StartAt::End) => meta.len(),
            _ => 0,
        };
        self.said_missing = false;
        sink(TailEvent::Change(Change::Opened));
        let o = self
            .open
            .insert(Open::new(file, FileId::of(&meta), history_until));
        o.read(budget, &mut self.buf, sink)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
