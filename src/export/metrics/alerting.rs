//! The series that let one finding alert: a gauge per finding and label
//! set, 1 from its first occurrence until a hold after its latest, then 0.
//! A counter series that first appears at 1 has no `rate()` and no
//! `increase()`, so a single probe never fired the rules built on
//! `portwatch_connections_total`; a gauge at 1 fires at the next rule
//! evaluation, and back at 0 it cannot fire again for the same event.
//!
//! The hold runs on the wall clock (passed in): it is about Prometheus
//! seeing the gauge, and Prometheus scrapes in wall time, whatever the
//! pace of a replay.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::{Gauge, GaugeVec, IntCounter, IntGauge, IntGaugeVec};

use super::FlowLabels;
use crate::export::findings::Found;
use crate::map::FastMap;
use crate::policy::Policy;
use crate::state::saved::SavedAlert;
use crate::state::tally::FindingKind;
use crate::state::Outcome;
use crate::time::Timestamp;

/// The `finding` label: a finding kind, `blocked` split by its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    Unexpected,
    LocalOnly,
    UnknownHost,
    BlockedRefused,
    BlockedUnanswered,
    /// A host firewall's log: the attempt was dropped.
    BlockedDenied,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Unexpected => "unexpected",
            AlertKind::LocalOnly => "local_only",
            AlertKind::UnknownHost => "unknown_host",
            AlertKind::BlockedRefused => "blocked_refused",
            AlertKind::BlockedUnanswered => "blocked_unanswered",
            AlertKind::BlockedDenied => "blocked_denied",
        }
    }

    pub const ALL: [AlertKind; 6] = [
        AlertKind::Unexpected,
        AlertKind::LocalOnly,
        AlertKind::UnknownHost,
        AlertKind::BlockedRefused,
        AlertKind::BlockedUnanswered,
        AlertKind::BlockedDenied,
    ];

    /// [`AlertKind::as_str`] backwards.
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// `missing` is not an event: its gauge is `portwatch_edge_missing`.
    pub fn of(f: &Found<'_>) -> Option<AlertKind> {
        Some(match (f.kind, f.outcome) {
            (FindingKind::Unexpected, _) => AlertKind::Unexpected,
            (FindingKind::LocalOnly, _) => AlertKind::LocalOnly,
            (FindingKind::UnknownHost, _) => AlertKind::UnknownHost,
            (FindingKind::Blocked, Some(Outcome::Refused)) => AlertKind::BlockedRefused,
            (FindingKind::Blocked, Some(Outcome::Denied)) => AlertKind::BlockedDenied,
            (FindingKind::Blocked, _) => AlertKind::BlockedUnanswered,
            (FindingKind::Missing, _) => return None,
        })
    }
}

/// How long a finding's gauge stays 1 after its latest occurrence unless
/// `run --finding-hold` says otherwise.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(300);

/// Most finding series kept. Their labels are bounded by the policy, but
/// reloads can add label sets: past the cap, series back at 0 go first,
/// then the oldest; each removal is counted.
pub const MAX_SERIES: usize = crate::state::saved::MAX_ALERTS;

/// Labels: src, dst, port, service, finding, accepted (`true` while a
/// site acceptance holds: the shipped alerts leave those out).
type Labels = [String; 6];

struct Series {
    labels: Labels,
    active: IntGauge,
    last_seen: Gauge,
    /// Wall-clock time of the latest occurrence, while active.
    since: Option<Instant>,
}

/// The finding gauges, kept by the capture thread's recorder.
pub(super) struct Held {
    active: IntGaugeVec,
    last_seen: GaugeVec,
    evicted: IntCounter,
    hold: Duration,
    by_labels: HashMap<Labels, usize>,
    series: Vec<Series>,
    /// Per policy: a finding's series by its policy labels, so a repeated
    /// finding (a scan) builds no label strings.
    cache: FastMap<(FlowLabels, AlertKind, bool), usize>,
}

impl Held {
    pub fn new(active: IntGaugeVec, last_seen: GaugeVec, evicted: IntCounter) -> Held {
        Held {
            active,
            last_seen,
            evicted,
            hold: DEFAULT_HOLD,
            by_labels: HashMap::new(),
            series: Vec::new(),
            cache: FastMap::default(),
        }
    }

    /// A new policy: its peers and ports are other indices.
    pub fn set_policy(&mut self) {
        self.cache.clear();
    }

    pub fn set_hold(&mut self, hold: Duration) {
        self.hold = hold;
    }

    /// `f` happened (seen at `wall`): its gauge goes to 1 for the hold.
    pub fn occurred(&mut self, p: &Policy, f: &Found<'_>, wall: Instant) {
        let Some(kind) = AlertKind::of(f) else {
            return;
        };
        let accepted = f.class.accepted.is_some();
        let key = (super::flow_labels(p, f.class), kind, accepted);
        let i = match self.cache.get(&key) {
            Some(i) => *i,
            None => {
                let labels: Labels = [
                    p.peer_name(f.class.src).to_string(),
                    p.peer_name(f.class.dst).to_string(),
                    super::port_label(p, f.class.port),
                    f.class.service.to_string(),
                    kind.as_str().to_string(),
                    accepted.to_string(),
                ];
                let i = match self.by_labels.get(&labels) {
                    Some(i) => *i,
                    None => self.add(labels),
                };
                self.cache.insert(key, i);
                i
            }
        };
        let s = &mut self.series[i];
        s.active.set(1);
        s.last_seen.set(f.ts.as_secs_f64());
        s.since = Some(wall);
    }

    fn add(&mut self, labels: Labels) -> usize {
        if self.series.len() >= MAX_SERIES {
            self.make_room();
        }
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        self.series.push(Series {
            active: self.active.with_label_values(&l),
            last_seen: self.last_seen.with_label_values(&l),
            labels: labels.clone(),
            since: None,
        });
        self.by_labels.insert(labels, self.series.len() - 1);
        self.series.len() - 1
    }

    /// At the cap: drop the series back at 0, or else the oldest active
    /// one (its alert resolves early).
    fn make_room(&mut self) {
        let mut drop: Vec<usize> = (self.series.iter().enumerate())
            .filter(|(_, s)| s.since.is_none())
            .map(|(i, _)| i)
            .collect();
        if drop.is_empty() {
            drop.extend(
                (self.series.iter().enumerate())
                    .min_by_key(|(_, s)| s.since)
                    .map(|(i, _)| i),
            );
        }
        for &i in drop.iter().rev() {
            let s = self.series.swap_remove(i);
            let l: Vec<&str> = s.labels.iter().map(String::as_str).collect();
            let _ = self.active.remove_label_values(&l);
            let _ = self.last_seen.remove_label_values(&l);
        }
        self.evicted.inc_by(drop.len() as u64);
        self.cache.clear();
        self.by_labels = (self.series.iter().enumerate())
            .map(|(i, s)| (s.labels.clone(), i))
            .collect();
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// The series to keep over a restart. `wall` and `now` are the same
    /// instant on the monotonic and the system clock: a held gauge's start
    /// is kept as a system time, which outlives the process.
    pub fn save(&self, wall: Instant, now: Timestamp) -> Vec<SavedAlert> {
        (self.series.iter())
            .map(|s| {
                let [src, dst, port, service, finding, accepted] = s.labels.clone();
                let held = s.since.map(|t| wall.saturating_duration_since(t));
                SavedAlert {
                    src,
                    dst,
                    port,
                    service,
                    finding,
                    accepted,
                    last_seen: s.last_seen.get(),
                    held_since_ns: held.map(|d| now.as_nanos().saturating_sub(d.as_nanos() as u64)),
                }
            })
            .collect()
    }

    /// Take back a series kept over a restart, if its labels are all ones
    /// `p` can give (a label never comes from the file alone): held at 1
    /// for what is left of its hold at `wall` (`now` on the system clock),
    /// else at 0 with its last-seen time.
    pub fn restore(&mut self, p: &Policy, a: &SavedAlert, wall: Instant, now: Timestamp) -> bool {
        let port_known = a.port == "other"
            || (a.port.parse::<u16>().ok()).is_some_and(|n| p.port_label(n).is_some());
        let known = p.peer_named(&a.src).is_some()
            && p.peer_named(&a.dst).is_some()
            && port_known
            && p.knows_service(&a.service)
            && AlertKind::parse(&a.finding).is_some()
            && matches!(a.accepted.as_str(), "true" | "false");
        if !known || !a.last_seen.is_finite() {
            return false;
        }
        let labels: Labels = [
            a.src.clone(),
            a.dst.clone(),
            a.port.clone(),
            a.service.clone(),
            a.finding.clone(),
            a.accepted.clone(),
        ];
        let i = match self.by_labels.get(&labels) {
            Some(i) => *i,
            None => self.add(labels),
        };
        let held = (a.held_since_ns)
            .map(|t| now.saturating_sub(Timestamp(t)))
            .filter(|ago| *ago < self.hold)
            .and_then(|ago| wall.checked_sub(ago));
        let s = &mut self.series[i];
        s.active.set(i64::from(held.is_some()));
        s.last_seen.set(a.last_seen);
        s.since = held;
        true
    }

    /// Gauges whose latest occurrence is a hold old at `wall` go back to 0.
    pub fn expire(&mut self, wall: Instant) {
        for s in &mut self.series {
            if s.since
                .is_some_and(|t| wall.saturating_duration_since(t) >= self.hold)
            {
                s.active.set(0);
                s.since = None;
            }
        }
    }
}
