//! The bounded handshake table: one entry per connection attempt (a SYN on a
//! new 4-tuple), followed until its outcome is known. All expiry is driven
//! by the timestamps passed in, so a replay answers the same on every run.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::decode::{Control, Segment};
use crate::map::FastMap;
use crate::time::Timestamp;

/// Limits of the table. Defaults suit a node sensor; see `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    /// Most entries at once; the oldest attempt is evicted beyond it.
    pub capacity: usize,
    /// How long a SYN waits for SYN-ACK or RST before it is judged.
    pub syn_timeout: Duration,
    /// How long an open connection is kept without a control packet.
    pub idle_timeout: Duration,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            capacity: 65_536,
            syn_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(2 * 3600),
        }
    }
}

/// A connection's direction: the client sent the SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
}

impl FlowKey {
    /// The key of a segment sent by the client.
    pub fn from_client(s: &Segment) -> FlowKey {
        FlowKey {
            client: s.src,
            client_port: s.src_port,
            server: s.dst,
            server_port: s.dst_port,
        }
    }

    /// The key of a segment sent by the server.
    pub fn from_server(s: &Segment) -> FlowKey {
        FlowKey {
            client: s.dst,
            client_port: s.dst_port,
            server: s.src,
            server_port: s.src_port,
        }
    }
}

/// How a connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The listener answered with SYN-ACK.
    Established,
    /// The listener (or a firewall for it) answered with RST.
    Refused,
    /// No answer within the timeout, and the evidence says one would have
    /// been seen: the client retransmitted, or replies are visible here.
    Unanswered,
    /// No answer, but nothing shows one was due: the capture ended, the
    /// client gave up, the entry was evicted, or this capture sees no replies.
    Unknown,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Established,
        Outcome::Refused,
        Outcome::Unanswered,
        Outcome::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::Unanswered => "unanswered",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why an entry left the table other than by its own close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Eviction {
    /// The table was full.
    Capacity,
    /// An open connection went quiet for `idle_timeout`.
    Idle,
}

impl Eviction {
    pub const ALL: [Eviction; 2] = [Eviction::Capacity, Eviction::Idle];

    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Capacity => "capacity",
            Eviction::Idle => "idle",
        }
    }
}

/// What one segment or one expiry pass did; `T` is the caller's tag for
/// the attempt (its aggregate row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableEvent<T> {
    /// A new attempt; the tag was just made for it.
    Attempt { tag: T, key: FlowKey },
    /// The client sent its SYN again.
    Retransmission { tag: T },
    /// The attempt's outcome is now known (once per attempt).
    Resolved {
        tag: T,
        key: FlowKey,
        outcome: Outcome,
    },
    /// FIN or RST on an open connection: evidence that the edge is in use.
    Activity { tag: T },
    /// A control segment of a connection this table never saw open (it was
    /// open before the capture started, or its SYN was missed).
    Untracked { segment: Segment },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    SynSent,
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    tag: T,
    phase: Phase,
    syns: u32,
    last_syn: Timestamp,
    last_activity: Timestamp,
    /// Matches the eviction queue's record for this entry.
    generation: u64,
    /// Which ends have sent a FIN ([`FIN_CLIENT`], [`FIN_SERVER`]); both
    /// close the entry, so finished connections do not wait out the idle
    /// timeout in the table.
    fins: u8,
    /// When the entry is next looked at by `expire`: never later than the
    /// time it becomes due, and the time of one of its [`Due`] records.
    check_at: Timestamp,
}

const FIN_CLIENT: u8 = 1;
const FIN_SERVER: u8 = 2;

impl<T> Entry<T> {
    /// The earliest time at which [`Entry::judge`] can remove the entry.
    fn due_at(&self, cfg: &TrackConfig) -> Timestamp {
        let (since, after) = match self.phase {
            Phase::SynSent => (self.last_syn, cfg.syn_timeout),
            Phase::Open => (self.last_activity, cfg.idle_timeout),
            Phase::Closed => (self.last_activity, cfg.syn_timeout),
        };
        if after.is_zero() {
            // Due whatever the clock says, even for an earlier `now`.
            Timestamp::ZERO
        } else {
            since.saturating_add(after)
        }
    }

    /// Whether the entry leaves the table at `now`, and why.
    fn judge(&self, now: Timestamp, cfg: &TrackConfig, replies_visible: bool) -> Option<Removal> {
        match self.phase {
            Phase::SynSent if now.saturating_sub(self.last_syn) >= cfg.syn_timeout => {
                Some(Removal::Resolved(if self.syns > 1 || replies_visible {
                    Outcome::Unanswered
                } else {
                    Outcome::Unknown
                }))
            }
            Phase::Open if now.saturating_sub(self.last_activity) >= cfg.idle_timeout => {
                Some(Removal::Idle)
            }
            // Closed entries linger one SYN timeout to absorb retransmitted FIN/RST.
            Phase::Closed if now.saturating_sub(self.last_activity) >= cfg.syn_timeout => {
                Some(Removal::Lingered)
            }
            _ => None,
        }
    }
}

/// Why `expire` removes an entry.
#[derive(Clone, Copy, Debug)]
enum Removal {
    Resolved(Outcome),
    Idle,
    Lingered,
}

/// A reminder to look at an entry at `at`. Records of entries that are
/// gone, or that were rescheduled, are skipped when they come up.
#[derive(Clone, Copy, Debug)]
struct Due {
    at: Timestamp,
    generation: u64,
    key: FlowKey,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

/// Makes sure `e` is looked at no later than it becomes due, after a change
/// to its phase or times.
fn reschedule<T>(
    due: &mut BinaryHeap<Reverse<Due>>,
    cfg: &TrackConfig,
    key: FlowKey,
    e: &mut Entry<T>,
) {
    let at = e.due_at(cfg);
    if at < e.check_at {
        e.check_at = at;
        due.push(Reverse(Due {
            at,
            generation: e.generation,
            key,
        }));
    }
}

pub struct HandshakeTable<T> {
    config: TrackConfig,
    entries: FastMap<FlowKey, Entry<T>>,
    /// Creation order, for evicting the oldest attempt; stale records (of
    /// entries already gone) are skipped and compacted away.
    order: VecDeque<(FlowKey, u64)>,
    /// When to look at which entry: `expire` visits only the entries that
    /// may be due instead of sweeping the whole map. Stale records are
    /// compacted away like `order`'s.
    due: BinaryHeap<Reverse<Due>>,
    next_generation: u64,
    /// A SYN-ACK has been seen: this capture sees the reply direction.
    replies_visible: bool,
    evictions: [u64; 2],
    peak: usize,
}

impl<T: Copy> HandshakeTable<T> {
    pub fn new(config: TrackConfig) -> Self {
        HandshakeTable {
            config,
            // Grows with what is open: a table sized for the cap would spread a
            // few hundred live entries over megabytes and miss the cache.
            entries: FastMap::default(),
            order: VecDeque::new(),
            due: BinaryHeap::new(),
            next_generation: 0,
            replies_visible: false,
            evictions: [0; 2],
            peak: 0,
        }
    }

    pub fn config(&self) -> TrackConfig {
        self.config
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn evictions(&self, why: Eviction) -> u64 {
        self.evictions[why as usize]
    }

    pub fn replies_visible(&self) -> bool {
        self.replies_visible
    }

    /// Replace the tag of an entry (the caller makes its row after the
    /// attempt is known to be new).
    pub fn set_tag(&mut self, key: &FlowKey, tag: T) {
        if let Some(e) = self.entries.get_mut(key) {
            e.tag = tag;
        }
    }

    /// Apply one control segment. `new_tag` is called once for a new
    /// attempt, to make the caller's tag for it.
    pub fn observe(
        &mut self,
        ts: Timestamp,
        seg: &Segment,
        new_tag: impl FnOnce(&FlowKey) -> T,
        sink: &mut impl FnMut(TableEvent<T>),
    ) {
        match seg.control {
            Control::Syn => self.on_syn(ts, seg, new_tag, sink),
            Control::SynAck => {
                self.replies_visible = true;
                let key = FlowKey::from_server(seg);
                match self.entries.get_mut(&key) {
                    Some(e) if e.phase == Phase::SynSent => {
                        e.phase = Phase::Open;
                        e.last_activity = ts;
                        reschedule(&mut self.due, &self.config, key, e);
                        sink(TableEvent::Resolved {
                            tag: e.tag,
                            key,
                            outcome: Outcome::Established,
                        });
                    }
                    Some(e) => {
                        // A retransmitted SYN-ACK.
                        e.last_activity = ts;
                        reschedule(&mut self.due, &self.config, key, e);
                    }
                    None => sink(TableEvent::Untracked { segment: *seg }),
                }
            }
            Control::Rst | Control::Fin => self.on_close(ts, seg, sink),
        }
    }

    fn on_syn(
        &mut self,
        ts: Timestamp,
        seg: &Segment,
        new_tag: impl FnOnce(&FlowKey) -> T,
        sink: &mut impl FnMut(TableEvent<T>),
    ) {
        let key = FlowKey::from_client(seg);
        if let Some(e) = self.entries.get_mut(&key) {
            if e.phase == Phase::SynSent {
                e.syns += 1;
                e.last_syn = ts;
                e.last_activity = ts;
                reschedule(&mut self.due, &self.config, key, e);
                sink(TableEvent::Retransmission { tag: e.tag });
                return;
            }
            // The 4-tuple is reused after a close: a new attempt.
            self.entries.remove(&key);
        }
        if self.entries.len() >= self.config.capacity.max(1) {
            self.evict_oldest(sink);
        }
        let tag = new_tag(&key);
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut entry = Entry {
            tag,
            phase: Phase::SynSent,
            syns: 1,
            last_syn: ts,
            last_activity: ts,
            generation,
            fins: 0,
            check_at: Timestamp::ZERO,
        };
        entry.check_at = entry.due_at(&self.config);
        self.due.push(Reverse(Due {
            at: entry.check_at,
            generation,
            key,
        }));
        self.entries.insert(key, entry);
        let limit = 2 * self.config.capacity.max(16);
        if self.order.len() >= limit {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
            // A ring walks its whole capacity over time: past the limit it
            // would double and, in a long capture, all of it be resident.
            self.order.shrink_to(limit);
        }
        self.order.push_back((key, generation));
        if self.due.len() > limit {
            self.due = self
                .entries
                .iter()
                .map(|(key, e)| {
                    Reverse(Due {
                        at: e.check_at,
                        generation: e.generation,
                        key: *key,
                    })
                })
                .collect();
        }
        self.peak = self.peak.max(self.entries.len());
        sink(TableEvent::Attempt { tag, key });
    }

    fn on_close(&mut self, ts: Timestamp, seg: &Segment, sink: &mut impl FnMut(TableEvent<T>)) {
        // The sender may be either end.
        let from_server = FlowKey::from_server(seg);
        let (key, by_server) = if self.entries.contains_key(&from_server) {
            (from_server, true)
        } else {
            (FlowKey::from_client(seg), false)
        };
        let Some(e) = self.entries.get_mut(&key) else {
            sink(TableEvent::Untracked { segment: *seg });
            return;
        };
        e.last_activity = ts;
        match (e.phase, seg.control) {
            (Phase::SynSent, Control::Rst) => {
                e.phase = Phase::Closed;
                // A RST from the listener refuses; one from the client gives up.
                let outcome = if by_server {
                    Outcome::Refused
                } else {
                    Outcome::Unknown
                };
                sink(TableEvent::Resolved {
                    tag: e.tag,
                    key,
                    outcome,
                });
            }
            (Phase::Open, _) => {
                if seg.control == Control::Fin {
                    e.fins |= if by_server { FIN_SERVER } else { FIN_CLIENT };
                }
                if seg.control == Control::Rst || e.fins == FIN_CLIENT | FIN_SERVER {
                    e.phase = Phase::Closed;
                }
                sink(TableEvent::Activity { tag: e.tag });
            }
            // FIN before an answer, or anything after the close: nothing new.
            _ => {}
        }
        reschedule(&mut self.due, &self.config, key, e);
    }

    fn evict_oldest(&mut self, sink: &mut impl FnMut(TableEvent<T>)) {
        while let Some((key, generation)) = self.order.pop_front() {
            match self.entries.get(&key) {
                Some(e) if e.generation == generation => {
                    let e = self.entries.remove(&key).expect("present");
                    self.evictions[Eviction::Capacity as usize] += 1;
                    if e.phase == Phase::SynSent {
                        sink(TableEvent::Resolved {
                            tag: e.tag,
                            key,
                            outcome: Outcome::Unknown,
                        });
                    }
                    return;
                }
                _ => continue,
            }
        }
    }

    /// Judge attempts whose SYN timed out and drop quiet entries, as of `now`.
    /// Outcomes are emitted in attempt order, whatever the map's order.
    pub fn expire(&mut self, now: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        let cfg = self.config;
        let replies_visible = self.replies_visible;
        let mut idle = 0;
        let mut resolved = Vec::new();
        // Entries looked at but not due: rescheduled after the loop, so a
        // record due again at `now` cannot loop.
        let mut later = Vec::new();
        while let Some(Reverse(d)) = self.due.peek().copied() {
            if d.at > now {
                break;
            }
            self.due.pop();
            let Some(e) = self.entries.get_mut(&d.key) else {
                continue;
            };
            if e.generation != d.generation || e.check_at != d.at {
                continue; // a stale record: the entry was replaced or rescheduled
            }
            match e.judge(now, &cfg, replies_visible) {
                Some(why) => {
                    if let Some(e) = self.entries.remove(&d.key) {
                        match why {
                            Removal::Resolved(outcome) => {
                                resolved.push((e.generation, e.tag, d.key, outcome))
                            }
                            Removal::Idle => idle += 1,
                            Removal::Lingered => {}
                        }
                    }
                }
                None => {
                    e.check_at = e.due_at(&cfg);
                    later.push(Reverse(Due {
                        at: e.check_at,
                        generation: e.generation,
                        key: d.key,
                    }));
                }
            }
        }
        self.due.extend(later);
        self.evictions[Eviction::Idle as usize] += idle;
        emit_in_order(resolved, sink);
    }

    /// The expiry pass as a sweep over every entry: the definition
    /// [`HandshakeTable::expire`] must agree with (tested).
    #[cfg(test)]
    fn expire_by_sweep(&mut self, now: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        let cfg = self.config;
        let replies_visible = self.replies_visible;
        let mut idle = 0;
        let mut resolved = Vec::new();
        self.entries
            .retain(|key, e| match e.judge(now, &cfg, replies_visible) {
                Some(Removal::Resolved(outcome)) => {
                    resolved.push((e.generation, e.tag, *key, outcome));
                    false
                }
                Some(Removal::Idle) => {
                    idle += 1;
                    false
                }
                Some(Removal::Lingered) => false,
                None => true,
            });
        self.evictions[Eviction::Idle as usize] += idle;
        emit_in_order(resolved, sink);
    }

    /// The capture ended at `end`: judge what timed out, and give every
    /// attempt still waiting the outcome `unknown`.
    pub fn finish(&mut self, end: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        self.expire(end, sink);
        let waiting = self
            .entries
            .drain()
            .filter(|(_, e)| e.phase == Phase::SynSent)
            .map(|(key, e)| (e.generation, e.tag, key, Outcome::Unknown))
            .collect();
        emit_in_order(waiting, sink);
        self.order.clear();
        self.due.clear();
    }
}

fn emit_in_order<T>(
    mut resolved: Vec<(u64, T, FlowKey, Outcome)>,
    sink: &mut impl FnMut(TableEvent<T>),
) {
    resolved.sort_by_key(|r| r.0);
    for (_, tag, key, outcome) in resolved {
        sink(TableEvent::Resolved { tag, key, outcome });
    }
}

#[cfg(test)]
mod tests;
