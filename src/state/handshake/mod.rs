//! The bounded handshake table: one entry per connection attempt (a SYN on a
//! new 4-tuple), followed until its outcome is known. All expiry is driven
//! by the timestamps passed in, so a replay answers the same on every run.

use std::time::Duration;

use crate::decode::{flow_hash_of, Control, Segment};
pub use crate::observation::{Close, FlowKey, Outcome};
use crate::time::Timestamp;

mod due;
mod replies;
mod slots;

use due::{Due, Schedule, Wait};
use replies::ReplyPairs;
use slots::{Order, Slot, Slots};

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

/// Why an entry left the table other than by its own close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Eviction {
    /// The table was full and the oldest entry not open was dropped: an
    /// attempt still waiting for its answer (its outcome is `unknown`), or a
    /// closed connection lingering for retransmitted FIN/RST.
    CapacityHalfOpen,
    /// The table was full of open connections and the oldest was dropped.
    /// Only happens when no half-open entry is left, so a SYN flood or a
    /// scan cannot push out the connections that prove required edges.
    CapacityOpen,
    /// An open connection went quiet for `idle_timeout`.
    Idle,
}

impl Eviction {
    pub const ALL: [Eviction; 3] = [
        Eviction::CapacityHalfOpen,
        Eviction::CapacityOpen,
        Eviction::Idle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::CapacityHalfOpen => "capacity_half_open",
            Eviction::CapacityOpen => "capacity_open",
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
    /// The client sent the attempt's SYN again (same initial sequence
    /// number), before or after the answer (a lost SYN-ACK).
    Retransmission { tag: T },
    /// The attempt's outcome is now known (once per attempt). `inferred`:
    /// established because a segment after the handshake was seen (the
    /// client's ACK or data), not the SYN-ACK itself.
    Resolved {
        tag: T,
        key: FlowKey,
        outcome: Outcome,
        inferred: bool,
    },
    /// A segment of an open connection (FIN, RST, or data and ACKs on
    /// ports the caller decodes): evidence that the edge is in use.
    Activity { tag: T },
    /// An open connection stopped being open: closed by FIN from both
    /// ends or RST, evicted, or idle. Follows its `Resolved` established.
    Closed { tag: T },
    /// A segment of a connection this table never saw open (it was open
    /// before the capture started, or its SYN was missed).
    Untracked { segment: Segment },
    /// The connection ended (closed, or left the table unclosed), once per
    /// attempt, after its `Resolved` and `Closed`; only when asked for
    /// ([`HandshakeTable::report_ends`]).
    Ended {
        tag: T,
        key: FlowKey,
        ending: Ending,
    },
}

/// What the table knows of a connection at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// Its first SYN.
    pub start: Timestamp,
    /// Its last segment seen (control, or one decoded for evidence).
    pub last: Timestamp,
    /// Control segments (SYN, SYN-ACK, FIN, RST) from the client and from
    /// the server, until the end. Data and pure ACKs are not counted: most
    /// are skipped undecoded.
    pub controls: [u32; 2],
    pub close: Close,
    pub outcome: Outcome,
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
    /// The client's initial sequence number: a SYN carrying it again is a
    /// retransmission, one with another is a new attempt.
    isn: u32,
    last_syn: Timestamp,
    last_activity: Timestamp,
    /// The attempt's number: orders outcomes, and tells this entry's
    /// expiry records from those of an earlier entry in the same slot.
    generation: u64,
    /// Which ends have sent a FIN ([`FIN_CLIENT`], [`FIN_SERVER`]); both
    /// close the entry, so finished connections do not wait out the idle
    /// timeout in the table.
    fins: u8,
    /// When the entry is next looked at by `expire`: never later than the
    /// time it becomes due, and the time of one of its [`Due`] records.
    check_at: Timestamp,
    /// In the pending filter: the client's non-control segments towards it
    /// are decoded (an ACK proves the handshake). From the SYN for a pair
    /// whose replies this capture has not shown, from a retransmission
    /// otherwise, and in the grace after a timeout.
    watched: bool,
    /// Timed out once unanswered on a pair whose replies are visible, and
    /// watched for one more SYN timeout: a client that ACKs in it had its
    /// SYN-ACK dropped by the capture, not by the network.
    grace: bool,
    /// The first SYN's time, for [`Ending::start`].
    start: Timestamp,
    /// [`Ending::controls`] so far.
    controls: [u32; 2],
}

const FIN_CLIENT: u8 = 1;
const FIN_SERVER: u8 = 2;

/// Most (server, client) address pairs remembered as having shown a reply.
pub const MAX_REPLY_PAIRS: usize = 65_536;

impl<T: Copy> Entry<T> {
    /// Its [`TableEvent::Ended`], sent to `sink` if `on`.
    fn end(
        &self,
        on: bool,
        key: FlowKey,
        close: Close,
        outcome: Outcome,
        sink: &mut impl FnMut(TableEvent<T>),
    ) {
        if !on {
            return;
        }
        let ending = Ending {
            start: self.start,
            last: self.last_activity,
            controls: self.controls,
            close,
            outcome,
        };
        sink(TableEvent::Ended {
            tag: self.tag,
            key,
            ending,
        });
    }
}

impl<T> Entry<T> {
    /// A control segment from the server (`true`) or the client.
    fn control_from(&mut self, server: bool) {
        let n = &mut self.controls[usize::from(server)];
        *n = n.saturating_add(1);
    }

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

    /// The timeout [`Entry::due_at`] counts.
    fn wait(&self) -> Wait {
        match self.phase {
            Phase::Open => Wait::Idle,
            Phase::SynSent | Phase::Closed => Wait::Syn,
        }
    }

    /// Whether the entry leaves the table at `now`, and why. `replied`:
    /// whether this pair's replies are visible to the capture (asked only
    /// when it decides: a lookup that would miss the cache).
    fn judge(
        &self,
        now: Timestamp,
        cfg: &TrackConfig,
        replied: impl FnOnce() -> bool,
    ) -> Option<Removal> {
        match self.phase {
            Phase::SynSent if now.saturating_sub(self.last_syn) >= cfg.syn_timeout => {
                if !self.watched {
                    Some(Removal::Grace)
                } else {
                    Some(Removal::Resolved(self.silence(|| self.grace || replied())))
                }
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

    /// Start the grace after a first timeout: watched from `now` for one
    /// more SYN timeout.
    fn begin_grace(&mut self, now: Timestamp, pending: &mut Pending, key: &FlowKey) {
        self.grace = true;
        self.watched = true;
        self.last_syn = now;
        pending.add(key);
    }

    /// The outcome of an attempt that got no answer: unanswered only with
    /// evidence one was due (the client retried with no ACK after, or this
    /// pair's replies are visible elsewhere in the capture: `replied`,
    /// asked only when the retries do not settle it).
    fn silence(&self, replied: impl FnOnce() -> bool) -> Outcome {
        if self.syns > 1 || replied() {
            Outcome::Unanswered
        } else {
            Outcome::Unknown
        }
    }
}

/// Why `expire` removes an entry.
#[derive(Clone, Copy, Debug)]
enum Removal {
    Resolved(Outcome),
    /// Not removed: watched for one more SYN timeout ([`Entry::grace`]).
    Grace,
    Idle,
    Lingered,
}

/// After a change to the phase or times of `e` (in `slot`): the record
/// that makes sure it is looked at no later than it becomes due, if its
/// current one is too late. Pass it to [`HandshakeTable::schedule`].
#[must_use]
fn reschedule<T>(cfg: &TrackConfig, slot: Slot, e: &mut Entry<T>) -> Option<Due> {
    let at = e.due_at(cfg);
    (at < e.check_at).then(|| {
        e.check_at = at;
        Due {
            at,
            generation: e.generation,
            slot,
            wait: e.wait(),
        }
    })
}

/// Attempts waiting for an answer, counted per server port and per bucket
/// of the client-to-server 4-tuple's [`flow_hash`]: which non-control
/// segments can complete a handshake and so are worth decoding. The port
/// count is the first, cheapest test; the bucket keeps a busy port's other
/// connections on the fast path.
struct Pending {
    ports: Vec<u32>,
    tuples: Vec<u32>,
    /// Per port: [`PORT_REQUIRED`] (set by the caller) and [`PORT_PENDING`]
    /// (some attempt to it waits), as bits, the two of 64 ports side by
    /// side: 16 KiB that stay in the L1 cache on the per-packet path.
    flags: Box<[[u64; 2]; 1024]>,
}

/// Where a port's bit lies in [`Pending::flags`].
#[inline]
fn port_bit(port: u16) -> (usize, u64) {
    (usize::from(port >> 6), 1 << (port & 63))
}

/// The port is a required edge's: its segments are evidence.
pub const PORT_REQUIRED: u8 = 1;
/// An attempt to the port is waiting for its answer.
pub const PORT_PENDING: u8 = 2;

/// Small enough to stay in the L1 cache: a false positive costs a decode.
const TUPLE_BUCKETS: usize = 1 << 12;

fn bucket(key: &FlowKey) -> usize {
    let h = flow_hash_of(key.client, key.server, key.client_port, key.server_port);
    h as usize % TUPLE_BUCKETS
}

impl Pending {
    fn new() -> Self {
        Pending {
            ports: vec![0; 1 << 16],
            tuples: vec![0; TUPLE_BUCKETS],
            flags: Box::new([[0; 2]; 1024]),
        }
    }

    #[inline]
    fn flags(&self, port: u16) -> u8 {
        let (w, bit) = port_bit(port);
        let [required, pending] = self.flags[w];
        (u8::from(required & bit != 0) * PORT_REQUIRED)
            | (u8::from(pending & bit != 0) * PORT_PENDING)
    }

    fn set(&mut self, port: u16, flag: u8, on: bool) {
        let (w, bit) = port_bit(port);
        let word = &mut self.flags[w][usize::from(flag == PORT_PENDING)];
        if on {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// Empty, keeping the ports' [`PORT_REQUIRED`] marks.
    fn new_like(old: &Pending) -> Self {
        let mut p = Pending::new();
        for (f, o) in p.flags.iter_mut().zip(old.flags.iter()) {
            f[0] = o[0];
        }
        p
    }

    fn add(&mut self, key: &FlowKey) {
        let port = usize::from(key.server_port);
        self.ports[port] += 1;
        self.set(key.server_port, PORT_PENDING, true);
        self.tuples[bucket(key)] += 1;
    }

    fn remove(&mut self, key: &FlowKey) {
        let port = usize::from(key.server_port);
        let n = &mut self.ports[port];
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.set(key.server_port, PORT_PENDING, false);
        }
        let n = &mut self.tuples[bucket(key)];
        *n = n.saturating_sub(1);
    }
}

pub struct HandshakeTable<T> {
    config: TrackConfig,
    /// The entries, with their creation order (for evicting the oldest
    /// attempt first; an open entry leaves it when an eviction passes it)
    /// and the order in which they became open (evicted only when no entry
    /// in creation order is left).
    entries: Slots<FlowKey, Entry<T>>,
    /// When to look at which entry: `expire` visits only the entries that
    /// may be due instead of sweeping the whole table. Stale records are
    /// compacted away once there are [`HandshakeTable::due_limit`].
    due: Schedule,
    next_generation: u64,
    /// The slot of the last attempt made: the caller tags it next.
    last_attempt: Option<Slot>,
    /// A SYN-ACK has been seen: this capture sees the reply direction.
    replies_visible: bool,
    replied: ReplyPairs,
    pending: Pending,
    evictions: [u64; 3],
    peak: usize,
    /// Send [`TableEvent::Ended`] (off: nothing is made of it).
    report_ends: bool,
}

impl<T: Copy> HandshakeTable<T> {
    pub fn new(config: TrackConfig) -> Self {
        HandshakeTable {
            config,
            // Grows with what is open: a table sized for the cap would spread a
            // few hundred live entries over megabytes and miss the cache.
            entries: Slots::new(config.capacity),
            due: Schedule::default(),
            next_generation: 0,
            last_attempt: None,
            replies_visible: false,
            replied: ReplyPairs::default(),
            pending: Pending::new(),
            evictions: [0; 3],
            peak: 0,
            report_ends: false,
        }
    }

    /// Send a [`TableEvent::Ended`] for each connection at its end (the
    /// conn log); off by default.
    pub fn report_ends(&mut self, on: bool) {
        self.report_ends = on;
    }

    pub fn config(&self) -> TrackConfig {
        self.config
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn evictions(&self, why: Eviction) -> u64 {
        self.evictions[why as usize]
    }

    /// A SYN-ACK was seen anywhere in the capture.
    pub fn replies_visible(&self) -> bool {
        self.replies_visible
    }

    /// How many (server, client) pairs have shown replies so far.
    pub fn reply_pairs(&self) -> usize {
        self.replied.len()
    }

    /// Reply pairs forgotten because their set was full.
    pub fn reply_pairs_dropped(&self) -> u64 {
        self.replied.dropped()
    }

    /// Whether an attempt to `port` may be waiting for its answer: the
    /// client's ACK or data to that port would prove it completed.
    #[inline]
    pub fn pending_on(&self, port: u16) -> bool {
        self.port_flags(port) & PORT_PENDING != 0
    }

    /// [`PORT_REQUIRED`] and [`PORT_PENDING`] of a port.
    #[inline]
    pub fn port_flags(&self, port: u16) -> u8 {
        self.pending.flags(port)
    }

    /// Mark the ports of required edges (replacing the previous marks).
    pub fn set_required_ports(&mut self, ports: &[u16]) {
        for f in self.pending.flags.iter_mut() {
            f[0] = 0;
        }
        for p in ports {
            self.pending.set(*p, PORT_REQUIRED, true);
        }
    }

    /// Whether an attempt whose client-to-server 4-tuple has this
    /// [`flow_hash`] may be waiting for its answer (false positives only).
    #[inline]
    pub fn pending_tuple(&self, hash: u32) -> bool {
        self.pending.tuples[hash as usize % TUPLE_BUCKETS] != 0
    }

    /// Replace the tag of an entry (the caller makes its row after the
    /// attempt is known to be new).
    pub fn set_tag(&mut self, key: &FlowKey, tag: T) {
        // Usually the attempt just made: its slot is known.
        let last = self
            .last_attempt
            .filter(|&s| self.entries.get(s).is_some_and(|(k, _)| k == key));
        if let Some(slot) = last.or_else(|| self.entries.find(key)) {
            self.entries.value_mut(slot).tag = tag;
        }
    }

    /// Give every entry a new tag (after a policy reload); `f` is given
    /// the old tag and told whether the connection is open.
    pub fn retag(&mut self, mut f: impl FnMut(&FlowKey, &T, bool) -> T) {
        for (key, e) in self.entries.iter_mut() {
            e.tag = f(key, &e.tag, e.phase == Phase::Open);
        }
    }

    /// Apply one segment. `new_tag` is called once for a new attempt, to
    /// make the caller's tag for it.
    pub fn observe(
        &mut self,
        ts: Timestamp,
        seg: &Segment,
        new_tag: impl FnOnce(&FlowKey) -> T,
        sink: &mut impl FnMut(TableEvent<T>),
    ) {
        match seg.control {
            Control::Syn => self.on_syn(ts, seg, new_tag, sink),
            Control::SynAck => self.on_syn_ack(ts, seg, sink),
            Control::Rst | Control::Fin => self.on_close(ts, seg, sink),
            Control::Ack => self.on_ack(ts, seg, sink),
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
        if let Some(slot) = self.entries.find(&key) {
            let e = self.entries.value_mut(slot);
            match e.phase {
                // The same attempt again, answered or not yet.
                Phase::SynSent | Phase::Open if e.isn == seg.seq => {
                    e.syns += 1;
                    e.control_from(false);
                    if e.phase == Phase::SynSent {
                        e.last_syn = ts;
                        if !e.watched {
                            // The SYN-ACK may have been lost: watch for the ACK.
                            e.watched = true;
                            self.pending.add(&key);
                        }
                    }
                    e.last_activity = ts;
                    let tag = e.tag;
                    let due = reschedule(&self.config, slot, e);
                    self.schedule(due);
                    sink(TableEvent::Retransmission { tag });
                    return;
                }
                // Another initial sequence number, or after the close: the
                // 4-tuple is reused by a new attempt.
                _ => {
                    let (_, old) = self.entries.remove(slot);
                    self.retire(key, old, None, Close::Reused, sink);
                }
            }
        } else if let Some(slot) = self.entries.find(&FlowKey::from_server(seg)) {
            let e = self.entries.value_mut(slot);
            if e.phase != Phase::Closed {
                // Simultaneous open: the other end's SYN crossed this one.
                // The first SYN seen made the attempt; this is not a new one
                // (its "server port" is the first SYN's ephemeral port).
                e.last_activity = ts;
                e.control_from(true);
                return;
            }
        }
        if self.entries.len() >= self.config.capacity.max(1) {
            self.evict_one(sink);
        }
        let tag = new_tag(&key);
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut entry = Entry {
            tag,
            phase: Phase::SynSent,
            syns: 1,
            isn: seg.seq,
            last_syn: ts,
            last_activity: ts,
            generation,
            fins: 0,
            check_at: Timestamp::ZERO,
            watched: !self.replied.contains(&key),
            grace: false,
            start: ts,
            controls: [1, 0],
        };
        entry.check_at = entry.due_at(&self.config);
        let slot = self.entries.insert(key, entry);
        self.schedule(Some(Due {
            at: entry.check_at,
            generation,
            slot,
            wait: Wait::Syn,
        }));
        if entry.watched {
            self.pending.add(&key);
        }
        self.last_attempt = Some(slot);
        self.peak = self.peak.max(self.entries.len());
        sink(TableEvent::Attempt { tag, key });
    }

    /// Most records `due` holds: twice the capacity, so compacting (which
    /// costs a pass over the entries) frees at least half of them.
    fn due_limit(&self) -> usize {
        2 * self.config.capacity.max(16)
    }

    /// Add an expiry record made by [`reschedule`] (its entry's `check_at`
    /// already set). A full schedule is compacted instead of grown: rebuilt
    /// from the entries, one record each at its `check_at`, which includes
    /// this one. So its buffers never outgrow the limit.
    fn schedule(&mut self, due: Option<Due>) {
        let Some(due) = due else { return };
        let limit = self.due_limit();
        if self.due.len() < limit {
            return self.due.push(due, limit);
        }
        self.due
            .rebuild(self.entries.iter().map(|(slot, _, e)| Due {
                at: e.check_at,
                generation: e.generation,
                slot,
                wait: e.wait(),
            }));
    }

    fn on_syn_ack(&mut self, ts: Timestamp, seg: &Segment, sink: &mut impl FnMut(TableEvent<T>)) {
        self.replies_visible = true;
        self.replied.note(seg.src, seg.dst, ts);
        if let Some(slot) = self.entries.find(&FlowKey::from_server(seg)) {
            let e = self.entries.value_mut(slot);
            e.last_activity = ts;
            e.control_from(true);
            if e.phase == Phase::SynSent {
                self.open(slot, false, sink);
            } else {
                // A retransmitted SYN-ACK.
                let due = reschedule(&self.config, slot, e);
                self.schedule(due);
            }
        } else if let Some(slot) = self.entries.find(&FlowKey::from_client(seg)) {
            // The first SYN's sender answering a simultaneous open.
            let e = self.entries.value_mut(slot);
            e.last_activity = ts;
            e.control_from(false);
        } else {
            sink(TableEvent::Untracked { segment: *seg });
        }
    }

    /// The attempt in `slot` (in `SynSent`) is established.
    fn open(&mut self, slot: Slot, inferred: bool, sink: &mut impl FnMut(TableEvent<T>)) {
        let (&key, e) = self.entries.get_mut(slot).expect("a live slot");
        if e.watched {
            self.pending.remove(&key);
        }
        e.phase = Phase::Open;
        let tag = e.tag;
        let due = reschedule(&self.config, slot, e);
        self.schedule(due);
        self.entries.push_back(Order::Opened, slot);
        sink(TableEvent::Resolved {
            tag,
            key,
            outcome: Outcome::Established,
            inferred,
        });
    }

    /// Data or a pure ACK: after a SYN, an acknowledging segment proves the
    /// handshake completed even if the SYN-ACK was not captured.
    fn on_ack(&mut self, ts: Timestamp, seg: &Segment, sink: &mut impl FnMut(TableEvent<T>)) {
        // Most such segments are the client's: look that way first.
        let found = (self.entries.find(&FlowKey::from_client(seg)))
            .or_else(|| self.entries.find(&FlowKey::from_server(seg)));
        let Some(slot) = found else {
            sink(TableEvent::Untracked { segment: *seg });
            return;
        };
        let e = self.entries.value_mut(slot);
        e.last_activity = ts;
        match e.phase {
            Phase::SynSent if seg.has_ack() => {
                let tag = e.tag;
                self.open(slot, true, sink);
                sink(TableEvent::Activity { tag });
            }
            Phase::Open => sink(TableEvent::Activity { tag: e.tag }),
            _ => {}
        }
    }

    fn on_close(&mut self, ts: Timestamp, seg: &Segment, sink: &mut impl FnMut(TableEvent<T>)) {
        // The sender may be either end.
        let found = match self.entries.find(&FlowKey::from_server(seg)) {
            Some(slot) => Some((slot, true)),
            None => (self.entries.find(&FlowKey::from_client(seg))).map(|slot| (slot, false)),
        };
        let Some((slot, by_server)) = found else {
            sink(TableEvent::Untracked { segment: *seg });
            return;
        };
        let e = self.entries.value_mut(slot);
        e.last_activity = ts;
        e.control_from(by_server);
        if e.phase == Phase::SynSent && seg.control == Control::Fin && seg.has_ack() {
            // A FIN acknowledges the other end's SYN: the handshake completed.
            self.open(slot, true, sink);
        }
        let on = self.report_ends;
        let rst = match by_server {
            true => Close::RstServer,
            false => Close::RstClient,
        };
        let (&key, e) = self.entries.get_mut(slot).expect("a live slot");
        match (e.phase, seg.control) {
            (Phase::SynSent, Control::Rst) => {
                e.phase = Phase::Closed;
                if e.watched {
                    self.pending.remove(&key);
                }
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
                    inferred: false,
                });
                e.end(on, key, rst, outcome, sink);
            }
            (Phase::Open, _) => {
                if seg.control == Control::Fin {
                    e.fins |= if by_server { FIN_SERVER } else { FIN_CLIENT };
                }
                sink(TableEvent::Activity { tag: e.tag });
                if seg.control == Control::Rst || e.fins == FIN_CLIENT | FIN_SERVER {
                    e.phase = Phase::Closed;
                    sink(TableEvent::Closed { tag: e.tag });
                    let close = match seg.control {
                        Control::Rst => rst,
                        _ => Close::Fin,
                    };
                    e.end(on, key, close, Outcome::Established, sink);
                }
            }
            // FIN before an answer, or anything after the close: nothing new.
            _ => {}
        }
        let due = reschedule(&self.config, slot, e);
        self.schedule(due);
    }

    /// An entry removed from the table: settle what its phase owes.
    /// `outcome` is the verdict on an attempt still waiting (default: what
    /// its silence so far shows); `close`, why it ends here.
    fn retire(
        &mut self,
        key: FlowKey,
        e: Entry<T>,
        outcome: Option<Outcome>,
        close: Close,
        sink: &mut impl FnMut(TableEvent<T>),
    ) {
        match e.phase {
            Phase::SynSent => {
                if e.watched {
                    self.pending.remove(&key);
                }
                let outcome = outcome.unwrap_or_else(|| e.silence(|| self.replied.contains(&key)));
                sink(TableEvent::Resolved {
                    tag: e.tag,
                    key,
                    outcome,
                    inferred: false,
                });
                e.end(self.report_ends, key, close, outcome, sink);
            }
            Phase::Open => {
                sink(TableEvent::Closed { tag: e.tag });
                e.end(self.report_ends, key, close, Outcome::Established, sink);
            }
            Phase::Closed => {}
        }
    }

    /// The table is full: drop the oldest entry that is not open, else the
    /// oldest open connection.
    fn evict_one(&mut self, sink: &mut impl FnMut(TableEvent<T>)) {
        while let Some(slot) = self.entries.front(Order::Created) {
            if self.entries.value(slot).phase != Phase::Open {
                let (key, e) = self.entries.remove(slot);
                self.evictions[Eviction::CapacityHalfOpen as usize] += 1;
                return self.retire(key, e, Some(Outcome::Unknown), Close::Evicted, sink);
            }
            // Open: from now on it waits its turn in the open order only,
            // even once it closes.
            self.entries.unlink(Order::Created, slot);
        }
        if let Some(slot) = self.entries.front(Order::Opened) {
            let (key, e) = self.entries.remove(slot);
            self.evictions[Eviction::CapacityOpen as usize] += 1;
            self.retire(key, e, Some(Outcome::Unknown), Close::Evicted, sink);
        }
    }

    /// Judge attempts whose SYN timed out and drop quiet entries, as of `now`.
    /// Outcomes are emitted in attempt order, whatever the slots' order.
    pub fn expire(&mut self, now: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        let cfg = self.config;
        let mut removed = Vec::new();
        // Entries looked at but not due: rescheduled after the loop, so a
        // record due again at `now` cannot loop.
        let mut later = Vec::new();
        while let Some(d) = self.due.pop_due(now) {
            let Some((key, e)) = self.entries.get_mut(d.slot) else {
                continue;
            };
            if e.generation != d.generation || e.check_at != d.at {
                continue; // a stale record: the entry was replaced or rescheduled
            }
            match e.judge(now, &cfg, || self.replied.contains(key)) {
                // A closed entry that lingered has nothing left to settle:
                // not sorted with those that do (most of what expires).
                Some(Removal::Lingered) => {
                    self.entries.remove(d.slot);
                }
                Some(why) if !matches!(why, Removal::Grace) => {
                    let (key, e) = self.entries.remove(d.slot);
                    removed.push((e.generation, key, e, why));
                }
                // Kept: rescheduled, after starting its grace if it has one.
                keep => {
                    if matches!(keep, Some(Removal::Grace)) {
                        e.begin_grace(now, &mut self.pending, key);
                    }
                    e.check_at = e.due_at(&cfg);
                    later.push(Due {
                        at: e.check_at,
                        generation: e.generation,
                        slot: d.slot,
                        wait: e.wait(),
                    });
                }
            }
        }
        // As many records as were taken out: the schedule does not grow.
        let limit = self.due_limit();
        for d in later {
            self.due.push(d, limit);
        }
        self.settle(removed, sink);
    }

    /// Settle removed entries in attempt order, whatever the slots' order.
    fn settle(
        &mut self,
        mut removed: Vec<(u64, FlowKey, Entry<T>, Removal)>,
        sink: &mut impl FnMut(TableEvent<T>),
    ) {
        removed.sort_by_key(|r| r.0);
        for (_, key, e, why) in removed {
            match why {
                Removal::Resolved(outcome) => {
                    self.retire(key, e, Some(outcome), Close::SynTimeout, sink)
                }
                Removal::Idle => {
                    self.evictions[Eviction::Idle as usize] += 1;
                    self.retire(key, e, None, Close::IdleTimeout, sink);
                }
                Removal::Lingered | Removal::Grace => {}
            }
        }
    }

    /// The expiry pass as a sweep over every entry: the definition
    /// [`HandshakeTable::expire`] must agree with (tested).
    #[cfg(test)]
    fn expire_by_sweep(&mut self, now: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        let cfg = self.config;
        let mut removed = Vec::new();
        let slots: Vec<Slot> = self.entries.iter().map(|(slot, _, _)| slot).collect();
        for slot in slots {
            let (key, e) = self.entries.get_mut(slot).expect("a live slot");
            match e.judge(now, &cfg, || self.replied.contains(key)) {
                Some(Removal::Grace) => e.begin_grace(now, &mut self.pending, key),
                Some(why) => {
                    let (key, e) = self.entries.remove(slot);
                    removed.push((e.generation, key, e, why));
                }
                None => {}
            }
        }
        self.settle(removed, sink);
    }

    /// The capture ended at `end`: judge what timed out, then every attempt
    /// still waiting as its timeout would, as if the capture had gone on
    /// silent. The packets decide, not where the capture stopped, so a
    /// replay of a live capture gives the live verdicts: a retried SYN is
    /// unanswered, a lone one unknown unless the pair's replies are
    /// visible. Open connections stay open as far as the caller knows (no
    /// `Closed`); with ends reported, every entry not closed yet gets its
    /// `Ended` (`capture_end`).
    pub fn finish(&mut self, end: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        self.end_all(end, false, sink);
    }

    /// A looped replay starts its capture again after `end`: as
    /// [`Self::finish`], and the open connections are `Closed` too. The
    /// next pass sends the same SYNs (same 4-tuples, same initial sequence
    /// numbers); left open, a connection the capture never closes would
    /// take its SYN for a retransmission and count once over all passes.
    pub fn restart(&mut self, end: Timestamp, sink: &mut impl FnMut(TableEvent<T>)) {
        self.end_all(end, true, sink);
    }

    fn end_all(&mut self, end: Timestamp, close_open: bool, sink: &mut impl FnMut(TableEvent<T>)) {
        self.expire(end, sink);
        let replied = &self.replied;
        let on = self.report_ends;
        let open_too = on || close_open;
        // Attempts waiting (with their outcome), and open connections when
        // their ends are reported or they close here.
        let mut left: Vec<(FlowKey, Entry<T>, Option<Outcome>)> = self
            .entries
            .iter()
            .filter(|(_, _, e)| e.phase == Phase::SynSent || (open_too && e.phase == Phase::Open))
            .map(|(_, key, e)| {
                let waiting = e.phase == Phase::SynSent;
                let outcome = waiting.then(|| e.silence(|| e.grace || replied.contains(key)));
                (*key, *e, outcome)
            })
            .collect();
        left.sort_by_key(|(_, e, _)| e.generation);
        // Nothing is left to track: give the memory back (at the caps,
        // megabytes) before the caller builds its report.
        self.entries = Slots::new(self.config.capacity);
        self.due = Schedule::default();
        self.last_attempt = None;
        self.pending = Pending::new_like(&self.pending);
        for (key, e, outcome) in left {
            let Some(outcome) = outcome else {
                if close_open {
                    sink(TableEvent::Closed { tag: e.tag });
                }
                e.end(on, key, Close::CaptureEnd, Outcome::Established, sink);
                continue;
            };
            sink(TableEvent::Resolved {
                tag: e.tag,
                key,
                outcome,
                inferred: false,
            });
            e.end(on, key, Close::CaptureEnd, outcome, sink);
        }
    }
}

#[cfg(test)]
mod tests;
