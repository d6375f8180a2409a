//! The `--events` and `--conn-log` files of `replay`, `watch` and `run`,
//! and the `--write-findings` pcap: opened up front (an unwritable path is
//! bad input); whole lines, flushing, SIGHUP reopening
//! and write errors are `export::eventlog`'s. The audit goes on after a
//! failed write; [`EventLog::finish`] says at the end whether every line
//! was logged.

use std::path::Path;

use super::Error;
use crate::cli::{EventsFormat, EvidenceArgs};
use crate::decode::Decap;
use crate::export::ecs::Observer;
use crate::export::eventlog;
use crate::export::evidence::FindingsPcap;
use crate::pipeline::{ConnEnd, Event, Pipeline};
use crate::policy::{Policy, Visibility};
use crate::time::Timestamp;

pub(super) struct EventLog(Option<eventlog::EventLog>);

impl EventLog {
    /// Open `path` for appending (`-`: stdout). The sensor named first in
    /// `sensors` (else the host) is the lines' observer; `capacity` bounds
    /// the flow ids awaiting an outcome.
    pub fn open(
        path: Option<&Path>,
        format: EventsFormat,
        sensors: &[String],
        capacity: usize,
    ) -> Result<EventLog, Error> {
        let w = path
            .map(|p| {
                eventlog::EventLog::open(p, format.into(), Observer::local(sensors), capacity)
                    .map_err(|e| Error::Events {
                        path: p.to_path_buf(),
                        source: e,
                    })
            })
            .transpose()?;
        Ok(EventLog(w))
    }

    /// No event log.
    pub fn off() -> EventLog {
        EventLog(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn write(&mut self, p: &Policy, events: &[Event]) {
        if let Some(w) = &mut self.0 {
            w.write(p, events);
        }
    }

    /// One line per connection end (the conn log).
    pub fn write_conns(&mut self, p: &Policy, conns: &[ConnEnd]) {
        if let Some(w) = &mut self.0 {
            w.write_conns(p, conns);
        }
    }

    /// A `missing` alert for each judged required edge that just turned missing.
    pub fn judge_edges(
        &mut self,
        pl: &Pipeline,
        vis: &Visibility,
        since: Timestamp,
        now: Timestamp,
    ) {
        if let Some(w) = &mut self.0 {
            w.judge_edges(pl, vis, since, now);
        }
    }

    /// The ECS lines' memory of what was reported (`None`: no event log).
    pub fn formatter(&mut self) -> Option<&mut crate::export::ecs::EcsFormatter> {
        self.0.as_mut().map(|w| w.formatter())
    }

    pub fn set_policy(&mut self, p: &Policy) {
        if let Some(w) = &mut self.0 {
            w.set_policy(p);
        }
    }

    pub fn reopen(&mut self) {
        if let Some(w) = &mut self.0 {
            w.reopen();
        }
    }

    /// The file reopened by path on SIGHUP, if any.
    pub fn file(&self) -> Option<&Path> {
        self.0.as_ref().and_then(|w| w.file())
    }

    /// Lines that could not be written so far.
    pub fn lost(&self) -> u64 {
        self.0.as_ref().map_or(0, |w| w.lost())
    }

    pub fn flush(&mut self) {
        if let Some(w) = &mut self.0 {
            w.flush();
        }
    }

    /// Flush; an error if any line could not be written.
    pub fn finish(&mut self) -> Result<(), Error> {
        match &mut self.0 {
            Some(w) => Ok(w.finish()?),
            None => Ok(()),
        }
    }
}

/// `--write-findings`: the file created (an unwritable path is bad input).
pub(super) fn open_findings_pcap(
    e: &EvidenceArgs,
    decap: Decap,
) -> Result<Option<FindingsPcap>, Error> {
    let Some(path) = &e.write_findings else {
        return Ok(None);
    };
    FindingsPcap::create(path, e.write_findings_max, decap)
        .map(Some)
        .map_err(|source| Error::Events {
            path: path.clone(),
            source,
        })
}

/// Let the findings' packets see the events and ends about to be drained.
pub(super) fn decide_drained(w: &mut Option<FindingsPcap>, pl: &Pipeline) {
    if let Some(w) = w {
        w.decide(pl.events(), pl.conns());
        w.drained();
    }
}
