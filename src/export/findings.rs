//! Findings printed as they happen (`watch`, `run --print`, `demo`): each
//! finding once per (kind, src, dst, port), then again when its count
//! reaches 10, 100, 1000…; the map of printed keys is capped like every
//! other.

use std::collections::HashMap;

use crate::pipeline::Event;
use crate::policy::Policy;
use crate::state::tally::FindingKind;
use crate::state::Outcome;

/// Prints each finding once per (kind, src, dst, port), then again when its
/// count reaches 10, 100, 1000…; the map is capped like every other.
#[derive(Default)]
pub struct FindingPrinter {
    seen: HashMap<(FindingKind, String, String, u16), u64>,
}

const MAX_PRINTED_KEYS: usize = 10_000;

impl FindingPrinter {
    /// Print `e` to stdout if it is a finding due for printing.
    pub fn print(&mut self, p: &Policy, e: &Event) {
        if let Some(line) = self.line(p, e) {
            crate::app::out(&format!("{line}\n"));
        }
    }

    /// The line to print for `e`, if it is a finding due for printing.
    pub fn line(&mut self, p: &Policy, e: &Event) -> Option<String> {
        let (kind, class, key, ts) = match e {
            Event::Connection { ts, class, key } => match FindingKind::of(class.verdict) {
                Some(k) => (k, class, key, ts),
                None => return None,
            },
            Event::Outcome {
                ts,
                class,
                key,
                outcome,
            } if class.edge().is_some()
                && matches!(outcome, Outcome::Refused | Outcome::Unanswered) =>
            {
                (FindingKind::Blocked, class, key, ts)
            }
            _ => return None,
        };
        let id = (
            kind,
            p.peer_name(class.src).to_string(),
            p.peer_name(class.dst).to_string(),
            class.port,
        );
        let full = self.seen.len() >= MAX_PRINTED_KEYS;
        let n = match self.seen.get_mut(&id) {
            Some(n) => {
                *n += 1;
                *n
            }
            None if full => return None,
            None => {
                self.seen.insert(id, 1);
                1
            }
        };
        if !(n == 1 || (n >= 10 && power_of_ten(n))) {
            return None;
        }
        let what = match e {
            Event::Outcome { outcome, .. } => format!("{} ", outcome.as_str()),
            _ => String::new(),
        };
        Some(format!(
            "{} {:<12} {} ({}) -> {} ({}:{}) [{}] {}x{n}  {}",
            ts,
            kind.as_str(),
            p.peer_name(class.src),
            key.client,
            p.peer_name(class.dst),
            key.server,
            key.server_port,
            class.service,
            what,
            crate::classify::explain(p, class)
        ))
    }
}

fn power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}
