//! The `--events` file: created up front (an unwritable path is bad input).
//! Writes go through [`crate::export::events::EventLog`], which keeps lines
//! whole and counts failures; the audit goes on, and [`EventLog::finish`]
//! says at the end whether every event was logged.

use std::path::Path;

use super::Error;
use crate::export::events;
use crate::pipeline::Event;
use crate::policy::Policy;

pub(super) struct EventLog(Option<events::EventLog>);

impl EventLog {
    pub fn open(path: Option<&Path>) -> Result<EventLog, Error> {
        let log = path
            .map(|p| {
                events::EventLog::create(p).map_err(|e| Error::Events {
                    path: p.to_path_buf(),
                    source: e,
                })
            })
            .transpose()?;
        Ok(EventLog(log))
    }

    /// No event log.
    pub fn off() -> EventLog {
        EventLog(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Also count failed writes in the daemon's metric.
    #[allow(dead_code)] // for `run --events`
    pub fn with_metric(self, c: prometheus::IntCounter) -> EventLog {
        EventLog(self.0.map(|l| l.with_metric(c)))
    }

    pub fn write(&mut self, p: &Policy, events: &[Event]) {
        if let Some(log) = &mut self.0 {
            log.write(p, events);
        }
    }

    /// Flush; an error if any event could not be written.
    pub fn finish(&mut self) -> Result<(), Error> {
        match &mut self.0 {
            Some(log) => Ok(log.finish()?),
            None => Ok(()),
        }
    }
}
