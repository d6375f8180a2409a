//! The `--events` file: created up front (an unwritable path is bad input),
//! disabled with one warning on its first write error so the audit goes on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::Error;
use crate::export::events::write_event;
use crate::pipeline::Event;
use crate::policy::Policy;

pub(super) struct EventLog(Option<BufWriter<File>>);

impl EventLog {
    pub fn open(path: Option<&Path>) -> Result<EventLog, Error> {
        let w = path
            .map(|p| {
                File::create(p)
                    .map(BufWriter::new)
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
            for e in events {
                if let Err(err) = write_event(w, p, e) {
                    tracing::warn!(error = %err, "event log write failed; event log disabled");
                    self.0 = None;
                    return;
                }
            }
        }
    }

    pub fn flush(&mut self) {
        if let Some(w) = &mut self.0 {
            let _ = w.flush();
        }
    }
}
