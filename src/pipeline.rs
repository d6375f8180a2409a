//! The one pipeline both sources feed: frame → decode → classify → state.
//! Pure: time comes from the frames (or `advance` for a quiet live
//! capture), and nothing here touches the OS.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{classify, explain, Classification, Verdict};
use crate::decode::{decode, Control, Decoded, Segment, Skip};
use crate::frame::Frame;
use crate::policy::{EdgeId, Peer, Policy};
use crate::state::tally::{RowId, Tally};
use crate::state::{EdgeClock, FlowKey, HandshakeTable, Outcome, TableEvent, TrackConfig};
use crate::time::Timestamp;

/// How often (in capture time) the handshake table is swept.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Packet counts by what decoding made of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub frames: u64,
    pub controls: [u64; 4],
    pub skipped: [u64; 4],
    /// By `DecodeError::reason()`: a closed set.
    pub errors: BTreeMap<&'static str, u64>,
}

impl DecodeStats {
    pub fn control(&self, c: Control) -> u64 {
        self.controls[c as usize]
    }

    pub fn skipped(&self, s: Skip) -> u64 {
        self.skipped[s as usize]
    }

    pub fn malformed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Something that happened, for live printing, the event log and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new connection attempt and its verdict.
    Connection {
        ts: Timestamp,
        class: Classification,
        key: FlowKey,
    },
    /// How an attempt ended.
    Outcome {
        ts: Timestamp,
        class: Classification,
        key: FlowKey,
        outcome: Outcome,
    },
    /// Evidence that a required edge is in use.
    Evidence { ts: Timestamp, edge: EdgeId },
}

/// What [`Pipeline::ingest`] made of one frame: a closed set, so per-packet
/// metrics can keep one counter handle per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    Control(Control),
    Skipped(Skip),
    Malformed,
}

pub struct Pipeline {
    policy: Arc<Policy>,
    table: HandshakeTable<RowId>,
    tally: Tally,
    clock: EdgeClock,
    stats: DecodeStats,
    span: Option<(Timestamp, Timestamp)>,
    next_expiry: Timestamp,
    events: Option<Vec<Event>>,
}

impl Pipeline {
    pub fn new(policy: Arc<Policy>, config: TrackConfig) -> Self {
        Pipeline {
            clock: EdgeClock::new(&policy),
            policy,
            table: HandshakeTable::new(config),
            tally: Tally::default(),
            stats: DecodeStats::default(),
            span: None,
            next_expiry: Timestamp::ZERO,
            events: None,
        }
    }

    /// Keep [`Event`]s for [`Pipeline::drain_events`] (off by default: a
    /// plain replay needs only the aggregates).
    pub fn record_events(&mut self, on: bool) {
        self.events = on.then(Vec::new);
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn clock(&self) -> &EdgeClock {
        &self.clock
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    pub fn table(&self) -> &HandshakeTable<RowId> {
        &self.table
    }

    /// First and last frame timestamps seen.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        self.span
    }

    /// Decode one frame and apply it; says what the frame was.
    pub fn ingest(&mut self, frame: &Frame<'_>) -> Ingested {
        self.stats.frames += 1;
        if frame.ts_invalid {
            // Its time cannot be trusted: counted, and it moves nothing.
            let reason = crate::decode::DecodeError::InvalidTimestamp.reason();
            *self.stats.errors.entry(reason).or_default() += 1;
            return Ingested::Malformed;
        }
        let ts = frame.ts;
        self.span = Some(match self.span {
            None => (ts, ts),
            Some((a, b)) => (a.min(ts), b.max(ts)),
        });
        let what = match decode(frame.linktype, frame.data) {
            Ok(Decoded::Control(seg)) => {
                self.stats.controls[seg.control as usize] += 1;
                self.process(ts, &seg);
                Ingested::Control(seg.control)
            }
            Ok(Decoded::Skipped(s)) => {
                self.stats.skipped[s as usize] += 1;
                Ingested::Skipped(s)
            }
            Err(e) => {
                *self.stats.errors.entry(e.reason()).or_default() += 1;
                Ingested::Malformed
            }
        };
        if ts >= self.next_expiry {
            self.advance(ts);
        }
        what
    }

    /// Take over the required-edge evidence of `old` (a pipeline on the
    /// previous policy), matching edges by endpoint names and port, so a
    /// reload does not make every edge look unseen.
    pub fn carry_evidence(&mut self, old: &Pipeline) {
        let (new_p, old_p) = (&self.policy, &old.policy);
        for (i, e) in new_p.edges.iter().enumerate() {
            let id = |p: &Policy, name: &str| p.endpoint_id(name).map(Peer::Endpoint);
            let src = id(old_p, &new_p.endpoint(e.src).name);
            let dst = id(old_p, &new_p.endpoint(e.dst).name);
            let Some(was) = src
                .zip(dst)
                .and_then(|(s, d)| old_p.find_edge(s, d, e.port))
            else {
                continue;
            };
            if let Some((first, last)) = old.clock.first_last(was) {
                self.clock
                    .restore(EdgeId(i as u32), first, last, old.clock.count(was));
            }
        }
    }

    /// Apply one control segment at `ts`.
    pub fn process(&mut self, ts: Timestamp, seg: &Segment) {
        let Pipeline {
            policy,
            table,
            tally,
            clock,
            events,
            ..
        } = self;
        let policy: &Policy = policy;
        // The tag is made inside `observe` for a new attempt only.
        let mut made: Option<(Classification, FlowKey)> = None;
        {
            let mut sink =
                |e: TableEvent<RowId>| on_table_event(policy, tally, clock, events, ts, e);
            let new_tag = |key: &FlowKey| {
                let c = classify(policy, key.client, key.server, key.server_port);
                made = Some((c, *key));
                None
            };
            table.observe(ts, seg, new_tag, &mut sink);
        }
        if let Some((c, key)) = made {
            let row = tally.attempt(ts, &c, key.client, key.server);
            table.set_tag(&key, row);
            if let Some(edge) = c.edge() {
                clock.observe(edge, ts);
                push(events, Event::Evidence { ts, edge });
            }
            push(events, Event::Connection { ts, class: c, key });
        }
    }

    /// Move time forward to `now` (capture time, or the wall clock for a
    /// quiet live capture): judge timed-out attempts, drop idle entries.
    pub fn advance(&mut self, now: Timestamp) {
        self.drive(now, |table, mut sink| table.expire(now, &mut sink));
        self.next_expiry = now.saturating_add(EXPIRY_INTERVAL);
    }

    /// The capture ended at `end`: every pending attempt gets its outcome.
    pub fn finish(&mut self, end: Timestamp) {
        self.drive(end, |table, mut sink| table.finish(end, &mut sink));
    }

    /// Run `f` on the table with a sink that applies its events at `at`.
    fn drive(
        &mut self,
        at: Timestamp,
        f: impl FnOnce(&mut HandshakeTable<RowId>, &mut dyn FnMut(TableEvent<RowId>)),
    ) {
        let Pipeline {
            policy,
            table,
            tally,
            clock,
            events,
            ..
        } = self;
        f(table, &mut |e| {
            on_table_event(policy, tally, clock, events, at, e)
        });
    }

    /// One line explaining a classification.
    pub fn explain(&self, c: &Classification) -> String {
        explain(&self.policy, c)
    }
}

fn push(events: &mut Option<Vec<Event>>, e: Event) {
    if let Some(v) = events {
        v.push(e);
    }
}

fn on_table_event(
    policy: &Policy,
    tally: &mut Tally,
    clock: &mut EdgeClock,
    events: &mut Option<Vec<Event>>,
    ts: Timestamp,
    e: TableEvent<RowId>,
) {
    match e {
        // Attempts are handled by the caller once the tag is known.
        TableEvent::Attempt { .. } => {}
        TableEvent::Retransmission { tag } => tally.retransmission(tag),
        TableEvent::Resolved { tag, key, outcome } => {
            let c = classify(policy, key.client, key.server, key.server_port);
            tally.outcome(ts, tag, &c, key.client, key.server, outcome);
            push(
                events,
                Event::Outcome {
                    ts,
                    class: c,
                    key,
                    outcome,
                },
            );
        }
        TableEvent::Activity { tag } => {
            let edge = tag
                .map(|row| tally.row(row))
                .filter(|r| r.key.verdict == Verdict::Expected)
                .and_then(|r| policy.find_edge(r.key.src, r.key.dst, r.key.port));
            if let Some(edge) = edge {
                clock.observe(edge, ts);
                push(events, Event::Evidence { ts, edge });
            }
        }
        TableEvent::Untracked { segment } => {
            if let Some(edge) = edge_of_untracked(policy, &segment) {
                clock.observe(edge, ts);
                push(events, Event::Evidence { ts, edge });
            }
        }
    }
}

/// A FIN, RST or SYN-ACK of a connection whose SYN was not seen: which
/// expected edge it belongs to, trying both ends as the listener.
fn edge_of_untracked(policy: &Policy, s: &Segment) -> Option<EdgeId> {
    let edge = |client: IpAddr, server: IpAddr, port: u16| {
        policy.find_edge(policy.peer_of(client), policy.peer_of(server), port)
    };
    match s.control {
        Control::SynAck => edge(s.dst, s.src, s.src_port),
        Control::Fin | Control::Rst => {
            edge(s.src, s.dst, s.dst_port).or_else(|| edge(s.dst, s.src, s.src_port))
        }
        Control::Syn => None,
    }
}

#[cfg(test)]
mod tests;
