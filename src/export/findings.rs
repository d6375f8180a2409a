//! Findings printed as they happen (`watch`, `run --print`, `demo`): each
//! finding once per (kind, src, dst, port), then again when its count
//! reaches 10, 100, 1000…; the map of printed keys is capped like every
//! other.

use std::collections::HashMap;
use std::io::Write;

use crate::classify::Classification;
use crate::pipeline::Event;
use crate::policy::Policy;
use crate::quote::log_field;
use crate::state::tally::FindingKind;
use crate::state::{FlowKey, Outcome};
use crate::time::Timestamp;

/// A finding one event raises: what the printer, the metrics and the event
/// log all report.
pub struct Found<'a> {
    pub kind: FindingKind,
    pub ts: Timestamp,
    pub class: &'a Classification,
    pub key: &'a FlowKey,
    /// For `blocked`: refused or unanswered.
    pub outcome: Option<Outcome>,
}

/// The finding `e` raises, if any: an attempt whose verdict is one, or a
/// refused or unanswered attempt on an expected site edge (`blocked`).
pub fn finding_of(e: &Event) -> Option<Found<'_>> {
    match e {
        Event::Connection { ts, class, key, .. } => Some(Found {
            kind: FindingKind::of(class.verdict)?,
            ts: *ts,
            class,
            key,
            outcome: None,
        }),
        Event::Outcome {
            ts,
            class,
            key,
            outcome,
            ..
        } if class.is_site_edge() && outcome.is_blocked() => Some(Found {
            kind: FindingKind::Blocked,
            ts: *ts,
            class,
            key,
            outcome: Some(*outcome),
        }),
        _ => None,
    }
}

/// Which occurrences of a finding are reported (printed, or written as an
/// alert to the event log): the first per (kind, src, dst, port), then the
/// 10th, 100th, 1000th…. The map is capped like every other: past the cap
/// new keys are not reported, and counted (the report and the metrics
/// still count them).
#[derive(Default)]
pub struct Occurrences {
    /// By (kind, src, dst, port, accepted): the first occurrence after an
    /// acceptance expires is reported again.
    seen: HashMap<(FindingKind, String, String, u16, bool), u64>,
    /// Findings not reported because the cap was reached.
    pub refused: u64,
}

/// One finding as [`Occurrences`] counts it: kind, source and destination
/// names, port, whether an acceptance held, and its occurrences so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counted<'a> {
    pub kind: FindingKind,
    pub src: &'a str,
    pub dst: &'a str,
    pub port: u16,
    pub accepted: bool,
    pub occurrences: u64,
}

/// Whether to report one occurrence.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Yes: this is its `n`th occurrence.
    Report(u64),
    No,
    /// No, and the cap was reached just now: say so once.
    CapReached,
}

const MAX_PRINTED_KEYS: usize = 10_000;

impl Occurrences {
    /// The findings counted, with their occurrences so far (what a
    /// restart must not report as new again).
    pub fn entries(&self) -> impl Iterator<Item = Counted<'_>> {
        (self.seen.iter()).map(|((kind, src, dst, port, accepted), n)| Counted {
            kind: *kind,
            src,
            dst,
            port: *port,
            accepted: *accepted,
            occurrences: *n,
        })
    }

    /// Distinct findings counted.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Take back the occurrences of a finding counted before a restart;
    /// past the cap, nothing (and false).
    pub fn restore(&mut self, c: &Counted<'_>) -> bool {
        let id = (
            c.kind,
            c.src.to_string(),
            c.dst.to_string(),
            c.port,
            c.accepted,
        );
        if !self.seen.contains_key(&id) && self.seen.len() >= MAX_PRINTED_KEYS {
            return false;
        }
        let was = self.seen.entry(id).or_insert(0);
        *was = (*was).max(c.occurrences);
        true
    }

    /// Count one occurrence of `f`.
    pub fn count(&mut self, p: &Policy, f: &Found<'_>) -> Due {
        let id = (
            f.kind,
            p.peer_name(f.class.src).to_string(),
            p.peer_name(f.class.dst).to_string(),
            f.class.port,
            f.class.accepted.is_some(),
        );
        let full = self.seen.len() >= MAX_PRINTED_KEYS;
        let n = match self.seen.get_mut(&id) {
            Some(n) => {
                *n += 1;
                *n
            }
            None if full => {
                self.refused += 1;
                return match self.refused {
                    1 => Due::CapReached,
                    _ => Due::No,
                };
            }
            None => {
                self.seen.insert(id, 1);
                1
            }
        };
        match n == 1 || (n >= 10 && power_of_ten(n)) {
            true => Due::Report(n),
            false => Due::No,
        }
    }
}

/// Prints each finding when [`Occurrences`] says it is due, and one line
/// when its cap is reached.
#[derive(Default)]
pub struct FindingPrinter {
    pub due: Occurrences,
}

impl FindingPrinter {
    /// Write `e` to `w` if it is a finding due for printing. A write error
    /// is the caller's to judge (a closed stdout ends `watch`, but only
    /// silences `run --print`).
    pub fn write(&mut self, w: &mut dyn Write, p: &Policy, e: &Event) -> std::io::Result<()> {
        match self.line(p, e) {
            Some(line) => writeln!(w, "{line}"),
            None => Ok(()),
        }
    }

    /// The line to print for `e`, if it is a finding due for printing.
    pub fn line(&mut self, p: &Policy, e: &Event) -> Option<String> {
        let f = finding_of(e)?;
        let n = match self.due.count(p, &f) {
            Due::Report(n) => n,
            Due::No => return None,
            Due::CapReached => {
                return Some(format!(
                "(more than {MAX_PRINTED_KEYS} distinct findings: new ones are no longer printed; \
                     the summary and the metrics still count them)"
            ))
            }
        };
        let Found {
            kind,
            ts,
            class,
            key,
            outcome,
        } = f;
        let what = match outcome {
            Some(o) => format!("{} ", o.as_str()),
            None => String::new(),
        };
        let accepted = match class.accepted.map(|id| p.acceptance(id)) {
            Some(a) => format!(
                "  [accepted until {} under {}]",
                a.expires,
                log_field(&a.ticket)
            ),
            None => String::new(),
        };
        Some(format!(
            "{} {:<12} {} ({}) -> {} ({}:{}) [{}] {}x{n}  {}{accepted}",
            ts,
            kind.as_str(),
            log_field(p.peer_name(class.src)),
            key.client,
            log_field(p.peer_name(class.dst)),
            key.server,
            key.server_port,
            log_field(&class.service),
            what,
            log_field(&crate::classify::explain(p, class))
        ))
    }
}

fn power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::config::load_policy;
    use crate::state::FlowKey;
    use crate::time::Timestamp;

    fn connection(p: &Policy, port: u16) -> Event {
        let (src, dst) = (
            "198.51.100.7".parse().unwrap(),
            "192.0.2.21".parse().unwrap(),
        );
        Event::Connection {
            ts: Timestamp(0),
            class: classify(p, src, dst, port),
            key: FlowKey {
                client: src,
                client_port: 50_000,
                server: dst,
                server_port: port,
            },
            mirror: None,
            process: Default::default(),
        }
    }

    #[test]
    fn prints_first_then_powers_of_ten_and_caps_keys() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let mut pr = FindingPrinter::default();
        let printed: Vec<usize> = (1..=120)
            .filter(|_| pr.line(&p, &connection(&p, 4747)).is_some())
            .collect();
        // The 1st, 10th and 100th occurrence of one finding.
        assert_eq!(printed, [1, 10, 100]);

        // One key is taken by 4747: fill the rest.
        for port in 1..MAX_PRINTED_KEYS as u16 {
            pr.line(&p, &connection(&p, 10_000 + port));
        }
        assert_eq!(pr.due.seen.len(), MAX_PRINTED_KEYS);
        let note = pr
            .line(&p, &connection(&p, 3))
            .expect("one note when the cap is hit");
        assert!(note.contains("no longer printed"), "{note}");
        assert_eq!(pr.line(&p, &connection(&p, 4)), None);
        assert_eq!(pr.due.refused, 2);
    }
}
