//! The event log file: `--events FILE|-`. Appended to (never truncated),
//! flushed at least once a second, reopened on SIGHUP so logrotate can
//! move it away. Lines are buffered whole and each flush is one write; a
//! write that stops short (a full disk, a file size limit, `/dev/full`)
//! keeps the whole lines that fit and is cut back after the last of them,
//! so a reader never sees half a JSON object. The lines that did not fit
//! are counted as lost. A write error is logged once, and so is the first
//! write that works again; it never stops the capture, and
//! [`EventLog::finish`] says whether every line was logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ecs::{set_mirror, set_process, EcsFormatter, Observer};
use super::events::write_event;
use crate::pipeline::{ConnEnd, Event, Pipeline};
use crate::policy::{EdgeId, Policy, Visibility};
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

/// Where lines go once open.
enum Sink {
    Stdout(io::Stdout),
    File(File),
}

/// What went wrong with an event log, for the closing message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {failures} failed write(s), {lost} line(s) not logged; first error: {first}")]
pub struct EventLogError {
    pub path: String,
    pub failures: u64,
    pub lost: u64,
    pub first: String,
}

pub struct EventLog {
    target: Target,
    out: Option<Sink>,
    format: EventsFormat,
    ecs: EcsFormatter,
    last_flush: Instant,
    /// Whole lines not yet written.
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    failing: bool,
    /// Failed writes (and reopens).
    failures: u64,
    /// Lines that could not be written.
    lost: u64,
    first_error: Option<String>,
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
            buf: Vec::with_capacity(BUFFER),
            pending: 0,
            failing: false,
            failures: 0,
            lost: 0,
            first_error: None,
            line: Vec::with_capacity(1024),
        })
    }

    /// Lines that could not be written (the metric counts these).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The path reopened on SIGHUP (`None`: standard output).
    pub fn file(&self) -> Option<&Path> {
        match &self.target {
            Target::Stdout => None,
            Target::File(p) => Some(p),
        }
    }

    /// Write the lines for `events` (evidence events make none).
    pub fn write(&mut self, p: &Policy, events: &[Event]) {
        for e in events {
            match self.format {
                EventsFormat::Flat => {
                    self.line.clear();
                    // Writing into a Vec cannot fail.
                    let _ = write_event(&mut self.line, p, e);
                    if !self.line.is_empty() {
                        self.emit_line();
                    }
                }
                EventsFormat::Ecs => match e {
                    Event::Connection {
                        ts,
                        class,
                        key,
                        mirror,
                        process,
                    } => {
                        for mut doc in self.ecs.connection(p, *ts, class, key) {
                            set_mirror(&mut doc, *mirror);
                            set_process(&mut doc, process);
                            self.emit(&doc);
                        }
                    }
                    Event::Outcome {
                        ts,
                        class,
                        key,
                        outcome,
                        mirror,
                        ..
                    } => {
                        for mut doc in self.ecs.outcome(p, *ts, class, key, *outcome) {
                            set_mirror(&mut doc, *mirror);
                            self.emit(&doc);
                        }
                    }
                    Event::Disagreement {
                        ts,
                        class,
                        key,
                        disagreement,
                    } => {
                        let doc = self.ecs.disagreement(p, *ts, class, key, disagreement);
                        self.emit(&doc);
                    }
                    Event::Evidence { .. } => {}
                },
            }
        }
    }

    /// Write one ECS line per connection end (the conn log, in either
    /// format: it has only the ECS shape).
    pub fn write_conns(&mut self, p: &Policy, conns: &[ConnEnd]) {
        for c in conns {
            let doc = self.ecs.conn_end(p, c);
            self.emit(&doc);
        }
    }

    /// A new policy (reload): missing-edge reports start over.
    pub fn set_policy(&mut self, p: &Policy) {
        self.ecs.set_policy(p);
    }

    /// The alert lines' memory: which findings were already logged, and
    /// which edges were reported missing (kept over a restart).
    pub fn formatter(&mut self) -> &mut EcsFormatter {
        &mut self.ecs
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
            let id = EdgeId(i as u32);
            vis.judges(&p, e)
                .then(|| (id, clock.state(id, e.window, since, now)))
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

    /// Write the buffered lines in one write. When it stops short, the
    /// whole lines that reached the file stay, the file is cut back after
    /// the last of them, and the other lines are counted as lost (a full
    /// disk would otherwise hold them, and every later line, forever).
    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.buf.is_empty() {
            return;
        }
        let (kept, r) = match &mut self.out {
            Some(Sink::Stdout(w)) => {
                let (n, r) = write_some(w, &self.buf);
                // A pipe cannot be cut: a reader may see the start of a line.
                (whole_lines(&self.buf[..n]), r.and_then(|()| w.flush()))
            }
            Some(Sink::File(f)) => {
                let before = f.metadata().map(|m| m.len());
                let (n, r) = write_some(f, &self.buf);
                let kept = whole_lines(&self.buf[..n]);
                if kept < n {
                    // A device such as /dev/full cannot be cut: nothing reached it.
                    if let Ok(len) = before {
                        let _ = f.set_len(len + kept as u64);
                    }
                }
                (kept, r)
            }
            None => (0, Err(io::Error::other("the event log is not open"))),
        };
        let written = self.buf[..kept].iter().filter(|&&b| b == b'\n').count() as u64;
        self.buf.clear();
        let lines = std::mem::take(&mut self.pending);
        self.result(r, lines.saturating_sub(written));
    }

    /// Flush, sync a file to disk, and say whether every line was logged.
    pub fn finish(&mut self) -> Result<(), EventLogError> {
        self.flush();
        if let Some(Sink::File(f)) = &self.out {
            if let Err(e) = f.sync_data() {
                // Devices and pipes cannot sync; only a real I/O error counts.
                if e.raw_os_error() != Some(22) {
                    self.result(Err(e), 0);
                }
            }
        }
        match &self.first_error {
            None => Ok(()),
            Some(first) => Err(EventLogError {
                path: match &self.target {
                    Target::Stdout => "-".to_string(),
                    Target::File(p) => p.display().to_string(),
                },
                failures: self.failures,
                lost: self.lost,
                first: first.clone(),
            }),
        }
    }

    /// SIGHUP: flush, close and open the path again (a new file if
    /// logrotate moved the old one away).
    pub fn reopen(&mut self) {
        self.flush();
        if let Target::Stdout = self.target {
            return;
        }
        match open_target(&self.target) {
            Ok(w) => {
                self.out = Some(w);
                tracing::info!("event log reopened");
            }
            Err(e) => {
                self.failures += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                // Lines keep going to the file open until now (moved away
                // by logrotate, say) rather than nowhere.
                match self.out.is_some() {
                    true => {
                        tracing::error!(error = %e, "cannot reopen the event log; still writing to the file open before")
                    }
                    false => {
                        tracing::error!(error = %e, "cannot reopen the event log; lines are lost until the next SIGHUP")
                    }
                }
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

    /// Buffer the whole line in `self.line`; a full buffer is written out.
    fn emit_line(&mut self) {
        self.buf.extend_from_slice(&self.line);
        self.pending += 1;
        if self.buf.len() >= BUFFER {
            self.flush();
        }
    }

    /// The outcome of a write that left `lines` lines out.
    fn result(&mut self, r: io::Result<()>, lines: u64) {
        match r {
            Ok(()) => {
                if std::mem::replace(&mut self.failing, false) {
                    tracing::info!(lost = self.lost, "writing the event log works again");
                }
            }
            Err(e) => {
                self.failures += 1;
                self.lost += lines;
                self.first_error.get_or_insert_with(|| e.to_string());
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

/// Buffered lines past this are written at once (besides once a second).
const BUFFER: usize = 64 * 1024;

/// Write as much of `buf` as goes: the bytes written, and the error that
/// stopped the rest (`write_all` would not say how far it got).
pub(super) fn write_some(w: &mut impl Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut n = 0;
    while n < buf.len() {
        match w.write(&buf[n..]) {
            Ok(0) => return (n, Err(io::ErrorKind::WriteZero.into())),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Err(e)),
        }
    }
    (n, Ok(()))
}

/// The length of the whole lines at the start of `bytes`.
fn whole_lines(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

fn open_target(t: &Target) -> io::Result<Sink> {
    Ok(match t {
        Target::Stdout => Sink::Stdout(io::stdout()),
        Target::File(p) => Sink::File(append(p)?),
    })
}

fn append(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;
    use std::sync::Arc;

    fn demo_events() -> (Arc<Policy>, Vec<Event>) {
        let p = Arc::new(
            crate::config::load_policy(Path::new("multi-node"), None)
                .unwrap()
                .policy,
        );
        let mut pl = Pipeline::new(p.clone(), Default::default());
        pl.record_events(true);
        let mut src = crate::source::file::FileSource::open_savefile(
            &crate::source::file::Savefile::Embedded {
                name: "demo.pcap",
                bytes: include_bytes!("../../fixtures/demo.pcap"),
            },
            false,
        )
        .unwrap();
        while let Ok(crate::source::Poll::Frames(_)) = src.poll(&mut |f| {
            pl.ingest(f);
        }) {}
        (p, pl.drain_events())
    }

    fn open(path: &Path, format: EventsFormat) -> EventLog {
        EventLog::open(path, format, Observer::local(&[]), 1024).unwrap()
    }

    #[test]
    fn dev_full_is_reported_with_the_count_of_lost_lines() {
        let (p, events) = demo_events();
        let lines = events
            .iter()
            .filter(|e| !matches!(e, Event::Evidence { .. }))
            .count() as u64;
        assert!(lines > 0);
        let mut log = open(Path::new("/dev/full"), EventsFormat::Flat);
        log.write(&p, &events);
        log.flush();
        log.write(&p, &events);
        log.flush();
        log.flush();
        assert_eq!(log.lost(), 2 * lines);
        let e = log.finish().unwrap_err();
        // Each batch is one write, or several past the 64 KiB buffer.
        assert!(e.failures >= 2, "{e}");
        assert_eq!(e.lost, 2 * lines);
        let head = format!(
            "/dev/full: {} failed write(s), {} line(s) not logged; first error: ",
            e.failures, e.lost
        );
        assert!(e.to_string().starts_with(&head), "{e}");
    }

    /// Takes `room` bytes, then fails as a full disk does.
    struct Disk {
        got: Vec<u8>,
        room: usize,
        /// Bytes a call takes at most (a short write before the error).
        chunk: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.got.len()).min(self.chunk);
            if n == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A full disk takes part of a batch: what reached it is reported, and
    /// the whole lines in it are kept.
    #[test]
    fn a_short_write_keeps_the_whole_lines_that_fit() {
        let batch = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        for (room, chunk, kept) in [(20, 7, 16), (16, 100, 16), (15, 4, 8), (3, 100, 0)] {
            let mut d = Disk {
                got: Vec::new(),
                room,
                chunk,
            };
            let (n, r) = write_some(&mut d, batch);
            assert_eq!(n, room);
            assert_eq!(r.unwrap_err().raw_os_error(), Some(28));
            assert_eq!(d.got, batch[..n]);
            assert_eq!(whole_lines(&d.got), kept, "room {room}");
        }
        let mut d = Disk {
            got: Vec::new(),
            room: 100,
            chunk: 5,
        };
        assert_eq!(write_some(&mut d, batch).0, batch.len());
        assert_eq!(whole_lines(batch), batch.len());
    }

    #[test]
    fn a_working_file_gets_whole_lines_appended() {
        let (p, events) = demo_events();
        let dir = std::env::temp_dir().join(format!("portwatch-evlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut sizes = vec![];
        for format in [EventsFormat::Ecs, EventsFormat::Flat] {
            let mut log = open(&path, format);
            log.write(&p, &events);
            log.finish().unwrap();
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(sizes[0] > 0 && sizes[1] > sizes[0], "appended: {sizes:?}");
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
