//! The event log file: `--events FILE|-`. Appended to (never truncated),
//! flushed at least once a second, reopened on SIGHUP so logrotate can
//! move it away. A write error is logged (once until writes work again)
//! and counted; it never stops the capture.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ecs::{EcsFormatter, Observer};
use super::events::write_event;
use crate::pipeline::{Event, Pipeline};
use crate::policy::{EdgeId, Peer, Policy, Visibility};
use crate::time::Timestamp;

/// How often buffered lines reach the file at the latest.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The shape of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventsFormat {
    /// Elastic Common Schema documents (the default).
    Ecs,
    /// portwatch's own flat objects (see README.md "Event log").
    Flat,
}

enum Target {
    Stdout,
    File(PathBuf),
}

pub struct EventLog {
    target: Target,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    format: EventsFormat,
    ecs: EcsFormatter,
    last_flush: Instant,
    failing: bool,
    write_errors: u64,
    /// Lines in the buffer since the last successful flush.
    pending: u64,
    line: Vec<u8>,
}

impl EventLog {
    /// Open `path` for appending (`-`: standard output). `capacity`
    /// bounds the flow ids kept for attempts awaiting their outcome.
    pub fn open(
        path: &Path,
        format: EventsFormat,
        observer: Observer,
        capacity: usize,
    ) -> io::Result<EventLog> {
        let target = match path == Path::new("-") {
            true => Target::Stdout,
            false => Target::File(path.to_path_buf()),
        };
        let out = Some(open_target(&target)?);
        Ok(EventLog {
            target,
            out,
            format,
            ecs: EcsFormatter::new(observer, capacity),
            last_flush: Instant::now(),
            failing: false,
            write_errors: 0,
            pending: 0,
            line: Vec::with_capacity(1024),
        })
    }

    /// Lines that could not be written.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// Write the lines for `events` (evidence events make none).
    pub fn write(&mut self, p: &Policy, events: &[Event]) {
        for e in events {
            match self.format {
                EventsFormat::Flat => {
                    self.line.clear();
                    // Writing into a Vec cannot fail.
                    let _ = write_event(&mut self.line, p, e);
                    self.emit_line();
                }
                EventsFormat::Ecs => match e {
                    Event::Connection { ts, class, key } => {
                        let doc = self.ecs.connection(p, *ts, class, key);
                        self.emit(&doc);
                    }
                    Event::Outcome {
                        ts,
                        class,
                        key,
                        outcome,
                    } => {
                        for doc in self.ecs.outcome(p, *ts, class, key, *outcome) {
                            self.emit(&doc);
                        }
                    }
                    Event::Evidence { .. } => {}
                },
            }
        }
    }

    /// A new policy (reload): missing-edge reports start over.
    pub fn set_policy(&mut self, p: &Policy) {
        self.ecs.set_policy(p);
    }

    /// Judge the required edges `vis` covers at `now` (observing since
    /// `since`) and write a `missing` alert for each that just turned
    /// missing. ECS lines only: the flat shape has no findings.
    pub fn judge_edges(
        &mut self,
        pl: &Pipeline,
        vis: &Visibility,
        since: Timestamp,
        now: Timestamp,
    ) {
        if self.format != EventsFormat::Ecs {
            return;
        }
        let p = pl.policy().clone();
        let clock = pl.clock();
        let states = p.edges.iter().enumerate().filter_map(|(i, e)| {
            let judged = e.required && vis.sees(&p, Peer::Endpoint(e.src), Peer::Endpoint(e.dst));
            let id = EdgeId(i as u32);
            judged.then(|| (id, clock.state(id, e.window, since, now)))
        });
        let docs = self.ecs.edges(&p, now, states.collect::<Vec<_>>());
        for d in &docs {
            self.emit(d);
        }
    }

    /// Flush if the last flush is a second old; says whether it did.
    pub fn tick(&mut self) -> bool {
        let due = self.last_flush.elapsed() >= FLUSH_EVERY;
        if due {
            self.flush();
        }
        due
    }

    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        let Some(w) = self.out.take() else {
            return;
        };
        let (w, r) = match flush_or_discard(w) {
            Ok(w) => (w, Ok(())),
            Err((w, e)) => (w, Err(e)),
        };
        self.out = Some(w);
        // A failed flush loses the buffered lines: count them.
        let lost = std::mem::take(&mut self.pending);
        self.result(r, lost);
    }

    /// SIGHUP: flush, close and open the path again (a new file if
    /// logrotate moved the old one away).
    pub fn reopen(&mut self) {
        self.flush();
        if let Target::Stdout = self.target {
            return;
        }
        self.out = None;
        match open_target(&self.target) {
            Ok(w) => {
                self.out = Some(w);
                self.failing = false;
                tracing::info!("event log reopened");
            }
            Err(e) => {
                self.write_errors += 1;
                tracing::error!(error = %e, "cannot reopen the event log; lines are lost until the next SIGHUP");
            }
        }
    }

    fn emit(&mut self, doc: &Value) {
        self.line.clear();
        // A `Value` always serializes.
        let _ = serde_json::to_writer(&mut self.line, doc);
        self.line.push(b'\n');
        self.emit_line();
    }

    /// Write the line in `self.line` whole.
    fn emit_line(&mut self) {
        let r = match &mut self.out {
            Some(w) => w.write_all(&self.line),
            None => Err(io::Error::other("the event log is not open")),
        };
        // Only a flush says the lines reached the file.
        match r {
            Ok(()) => self.pending += 1,
            Err(e) => self.result(Err(e), 1),
        }
    }

    fn result(&mut self, r: io::Result<()>, lines: u64) {
        match r {
            Ok(()) => self.failing = false,
            Err(e) => {
                self.write_errors += lines;
                if !self.failing {
                    self.failing = true;
                    tracing::error!(error = %e, "writing the event log failed; capture goes on");
                }
            }
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.flush();
    }
}

type Writer = BufWriter<Box<dyn Write + Send>>;

/// Flush `w`; on failure drop what it buffered (a full disk would
/// otherwise hold it, and every later line, forever).
fn flush_or_discard(mut w: Writer) -> Result<Writer, (Writer, io::Error)> {
    match w.flush() {
        Ok(()) => Ok(w),
        Err(e) => {
            let (inner, _lost) = w.into_parts();
            Err((BufWriter::with_capacity(BUFFER, inner), e))
        }
    }
}

const BUFFER: usize = 64 * 1024;

fn open_target(t: &Target) -> io::Result<BufWriter<Box<dyn Write + Send>>> {
    let w: Box<dyn Write + Send> = match t {
        Target::Stdout => Box::new(io::stdout()),
        Target::File(p) => Box::new(append(p)?),
    };
    Ok(BufWriter::with_capacity(BUFFER, w))
}

fn append(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}
