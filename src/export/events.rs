//! One JSON object per line for SIEMs: every connection attempt with its
//! verdict, and every outcome. Field names are stable (see README.md).

use std::io::Write;

use serde::Serialize;

use crate::classify::explain;
use crate::pipeline::Event;
use crate::policy::Policy;

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    event: &'static str,
    site: &'a str,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    src: &'a str,
    src_addr: String,
    src_port: u16,
    dst: &'a str,
    dst_addr: String,
    dst_port: u16,
    service: &'a str,
    explanation: String,
}

/// Write `e` as one line; evidence events are not logged (the connection
/// line already carries them).
pub fn write_event(out: &mut impl Write, p: &Policy, e: &Event) -> std::io::Result<()> {
    let (ts, class, key, event, outcome) = match e {
        Event::Connection { ts, class, key } => (ts, class, key, "connection", None),
        Event::Outcome {
            ts,
            class,
            key,
            outcome,
        } => (ts, class, key, "outcome", Some(outcome.as_str())),
        Event::Evidence { .. } => return Ok(()),
    };
    let line = Line {
        timestamp: ts.rfc3339(),
        event,
        site: &p.site.name,
        verdict: class.verdict.as_str(),
        outcome,
        src: p.peer_name(class.src),
        src_addr: key.client.to_string(),
        src_port: key.client_port,
        dst: p.peer_name(class.dst),
        dst_addr: key.server.to_string(),
        dst_port: key.server_port,
        service: &class.service,
        explanation: explain(p, class),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// The event log file. Each batch of lines goes out in one write; if it
/// fails (a full disk, `/dev/full`), the file is cut back to the end of the
/// last whole line, so a reader never sees half a JSON object, and the
/// failure is counted. Later batches are tried again: a disk that frees up
/// gets events again.
#[derive(Debug)]
pub struct EventLog {
    file: std::fs::File,
    path: String,
    buf: Vec<u8>,
    /// Bytes of whole lines in the file.
    committed: u64,
    write_errors: u64,
    lost: u64,
    first_error: Option<String>,
    /// `portwatch_event_log_write_errors_total`, for `run`.
    metric: Option<prometheus::IntCounter>,
}

/// What went wrong with an event log, for the closing message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {write_errors} failed write(s), {lost} event(s) not logged; first error: {first}")]
pub struct EventLogError {
    pub path: String,
    pub write_errors: u64,
    pub lost: u64,
    pub first: String,
}

impl EventLog {
    pub fn create(path: &std::path::Path) -> std::io::Result<EventLog> {
        Ok(EventLog::new(
            std::fs::File::create(path)?,
            &path.display().to_string(),
        ))
    }

    pub fn new(file: std::fs::File, path: &str) -> EventLog {
        EventLog {
            file,
            path: path.to_string(),
            buf: Vec::new(),
            committed: 0,
            write_errors: 0,
            lost: 0,
            first_error: None,
            metric: None,
        }
    }

    /// Also count failed writes in `c` (the daemon's metric).
    pub fn with_metric(mut self, c: prometheus::IntCounter) -> EventLog {
        self.metric = Some(c);
        self
    }

    /// Log `events` (the JSON lines of [`write_event`]). Returns false if
    /// the write failed; the failure is kept for [`EventLog::finish`].
    pub fn write(&mut self, p: &Policy, events: &[Event]) -> bool {
        self.append(|buf| {
            let mut n = 0;
            for e in events {
                let before = buf.len();
                write_event(buf, p, e)?;
                n += usize::from(buf.len() > before);
            }
            Ok(n)
        })
    }

    /// Write the lines `render` appends to the buffer (returning how many)
    /// as one batch: whole, or cut back and counted.
    pub fn append(&mut self, render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<usize>) -> bool {
        self.buf.clear();
        let lines = match render(&mut self.buf) {
            Ok(n) => n,
            Err(e) => {
                self.failed(0, &e);
                return false;
            }
        };
        if self.buf.is_empty() {
            return true;
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.committed += self.buf.len() as u64;
                true
            }
            Err(e) => {
                self.failed(lines as u64, &e);
                // Cut a partly written batch back to whole lines. A device
                // such as /dev/full cannot be cut: nothing reached it.
                use std::io::{Seek, SeekFrom};
                let _ = self.file.set_len(self.committed);
                let _ = self.file.seek(SeekFrom::Start(self.committed));
                false
            }
        }
    }

    fn failed(&mut self, lines: u64, e: &std::io::Error) {
        if self.first_error.is_none() {
            tracing::error!(path = %self.path, error = %e, "event log write failed; events are being lost");
            self.first_error = Some(e.to_string());
        }
        self.write_errors += 1;
        self.lost += lines;
        if let Some(c) = &self.metric {
            c.inc();
        }
    }

    /// Failed writes so far (for a metric).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// Flush to the disk and say whether every event was logged.
    pub fn finish(&mut self) -> Result<(), EventLogError> {
        if let Err(e) = self.file.sync_data() {
            // Devices and pipes cannot sync; only a real I/O error counts.
            if e.raw_os_error() != Some(22) {
                self.failed(0, &e);
            }
        }
        match &self.first_error {
            None => Ok(()),
            Some(first) => Err(EventLogError {
                path: self.path.clone(),
                write_errors: self.write_errors,
                lost: self.lost,
                first: first.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::source::Source;
    use std::sync::Arc;

    fn demo_events() -> (Arc<Policy>, Vec<Event>) {
        let p = Arc::new(
            crate::config::load_policy(std::path::Path::new("multi-node"), None)
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
        )
        .unwrap();
        while let Ok(crate::source::Poll::Frames(_)) = src.poll(&mut |f| {
            pl.ingest(f);
        }) {}
        (p, pl.drain_events())
    }

    #[test]
    fn dev_full_is_reported_with_the_count_of_lost_events() {
        let (p, events) = demo_events();
        let logged = events
            .iter()
            .filter(|e| !matches!(e, Event::Evidence { .. }))
            .count() as u64;
        assert!(logged > 0);
        let metrics = crate::export::metrics::Metrics::new();
        let counter = metrics.faults.event_log_write_errors.clone();
        let mut log = EventLog::create(std::path::Path::new("/dev/full"))
            .unwrap()
            .with_metric(counter);
        assert!(!log.write(&p, &events));
        assert!(!log.write(&p, &events));
        assert!(metrics
            .render()
            .contains("portwatch_event_log_write_errors_total 2"));
        assert!(log.write(&p, &[]), "an empty batch writes nothing");
        let e = log.finish().unwrap_err();
        assert_eq!((e.write_errors, e.lost), (2, 2 * logged));
        assert!(
            e.to_string().starts_with("/dev/full: 2 failed write(s)"),
            "{e}"
        );
    }

    #[test]
    fn a_working_file_gets_whole_lines() {
        let (p, events) = demo_events();
        let dir = std::env::temp_dir().join(format!("portwatch-evlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut log = EventLog::create(&path).unwrap();
        assert!(log.write(&p, &events));
        log.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
