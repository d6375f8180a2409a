//! The one pipeline both sources feed: frame → decode → classify → state.
//! Pure: time comes from the frames (or `advance` for a quiet live
//! capture), and nothing here touches the OS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{accept_at, classify, classify_at, classify_peers, explain, Classification};
use crate::decode::{
    decode_checked, decode_deferred, either_way_hash_of, flow_hash_of, is_skipped, vxlan_skipped,
    Control, Decap, Decoded, Encap, EncapKind, Encaps, RawTuple, Segment, Skip, Wanted,
};
use crate::frame::Frame;
use crate::observation::{Fate, Initiator, Observation, Process, SensorKind, SourceKind};
use crate::policy::{EdgeId, Peer, Policy};
use crate::state::kinds::{Disagreement, KindJoin};
use crate::state::merge::{Miss, RecordMerge, Settled};
use crate::state::tally::{RowId, Tally};
use crate::state::{
    Close, EdgeClock, Ending, FlowKey, HandshakeTable, Outcome, TableEvent, TrackConfig,
    PORT_PENDING, PORT_REQUIRED,
};
use crate::time::{Admit, CaptureClock, Held, Timestamp};

/// How often (in capture time) the handshake table is swept.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// Least capture time between two [`Event::Evidence`] of one edge.
const EVIDENCE_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Most mirror sessions named in [`DecodeStats::sessions`]; more are
/// counted in `sessions_dropped`.
pub const MAX_MIRROR_SESSIONS: usize = 64;
/// Most (encapsulation, port) pairs named in [`DecodeStats::unconfigured`].
pub const MAX_UNCONFIGURED_PORTS: usize = 16;

/// Packet counts by what decoding made of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub frames: u64,
    /// By [`Control`]; `Ack` counts the non-control segments decoded for
    /// evidence (they are also in `skipped`, as `not_control`).
    pub controls: [u64; 5],
    pub skipped: [u64; Skip::ALL.len()],
    /// By `DecodeError::reason()`: a closed set.
    pub errors: BTreeMap<&'static str, u64>,
    /// Frames by encapsulation opened, by [`EncapKind`] (a frame in two
    /// encapsulations counts under both).
    pub encapsulated: [u64; EncapKind::ALL.len()],
    /// Frames by encapsulation and session (VNI, ERSPAN session id, GRE
    /// key), at most [`MAX_MIRROR_SESSIONS`].
    pub sessions: SessionCounts,
    /// Frames of sessions beyond that cap.
    pub sessions_dropped: u64,
    /// UDP that looks like a tunnel on a port not configured for it:
    /// frames by (encapsulation, port), at most [`MAX_UNCONFIGURED_PORTS`]
    /// pairs (all are in `skipped` as `unconfigured_tunnel`).
    pub unconfigured: BTreeMap<(EncapKind, u16), u64>,
    /// Encapsulated control segments that repeated one seen within
    /// [`MIRROR_DUPLICATE_WITHIN`] (both ends mirrored): counted in
    /// `controls`, applied once.
    pub mirror_duplicates: u64,
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

    pub fn encapsulated(&self, k: EncapKind) -> u64 {
        self.encapsulated[k as usize]
    }

    /// Count the encapsulations one frame was opened from.
    fn encaps(&mut self, e: &Encaps) {
        for layer in e.iter() {
            self.encap(*layer);
        }
        if let Some(u) = e.unconfigured {
            // Beyond the cap the frame is still in `skipped`.
            let _ = bounded_count(&mut self.unconfigured, u, MAX_UNCONFIGURED_PORTS);
        }
    }

    /// Count one encapsulation layer and its session.
    #[inline]
    fn encap(&mut self, layer: Encap) {
        self.encapsulated[layer.kind as usize] += 1;
        if layer.session.is_some() && !self.sessions.count(layer) {
            self.sessions_dropped += 1;
        }
    }
}

/// Frames by mirror session, at most [`MAX_MIRROR_SESSIONS`] sessions, in
/// order. A short sorted list rather than a tree: every frame of a mirror
/// is counted here, and a capture has one session or a few, found by the
/// first comparisons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts(Vec<(Encap, u64)>);

impl SessionCounts {
    pub fn iter(&self) -> impl Iterator<Item = (&Encap, &u64)> {
        self.0.iter().map(|(e, n)| (e, n))
    }

    pub fn get(&self, e: &Encap) -> Option<&u64> {
        self.0.iter().find(|(k, _)| k == e).map(|(_, n)| n)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Count a frame of `e`; false if `e` is new and the list is full.
    #[inline]
    fn count(&mut self, e: Encap) -> bool {
        // One session is the common case: its entry is asked first.
        if let Some((k, n)) = self.0.first_mut() {
            if *k == e {
                *n += 1;
                return true;
            }
        }
        if let Some((_, n)) = self.0.iter_mut().find(|(k, _)| *k == e) {
            *n += 1;
            return true;
        }
        if self.0.len() >= MAX_MIRROR_SESSIONS {
            return false;
        }
        let at = self.0.partition_point(|(k, _)| *k < e);
        self.0.insert(at, (e, 1));
        true
    }
}

/// Count `key` in `map` unless it is new and the map holds `cap` keys.
fn bounded_count<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, cap: usize) -> Option<()> {
    if map.len() >= cap && !map.contains_key(&key) {
        return None;
    }
    *map.entry(key).or_default() += 1;
    Some(())
}

/// One connection at its end, for the conn log ([`Pipeline::record_conns`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnEnd {
    /// `client` is the initiator.
    pub key: FlowKey,
    pub class: Classification,
    /// The first SYN (a record source: the first record).
    pub start: Timestamp,
    /// The last segment seen (a record source: the record that decided).
    pub end: Timestamp,
    pub outcome: Option<Outcome>,
    pub close: Close,
    /// Control segments (SYN, SYN-ACK, FIN, RST) from the client and from
    /// the server: a packet source's only counts (data segments are mostly
    /// skipped undecoded, so neither their packets nor any bytes are known).
    pub controls: Option<[u32; 2]>,
    pub source: SourceKind,
    /// The node whose own log it is (record sources).
    pub sensor: Option<Arc<str>>,
    /// The encapsulation its SYN arrived in.
    pub mirror: Option<Encap>,
}

/// Something that happened, for live printing, the event log and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new connection attempt and its verdict; `mirror`: the
    /// encapsulation its SYN arrived in.
    Connection {
        ts: Timestamp,
        class: Classification,
        key: FlowKey,
        mirror: Option<Encap>,
        /// The process that owned the socket, where the source names it.
        process: Process,
    },
    /// How an attempt ended.
    Outcome {
        ts: Timestamp,
        class: Classification,
        key: FlowKey,
        outcome: Outcome,
        mirror: Option<Encap>,
        /// The kind of source that told the outcome.
        source: SourceKind,
    },
    /// Evidence that a required edge is in use.
    Evidence { ts: Timestamp, edge: EdgeId },
    /// Two kinds of source this process reads told different fates of one
    /// connection (one saw it established, the other says it was not):
    /// both outcomes stand, this says they disagree.
    Disagreement {
        ts: Timestamp,
        class: Classification,
        key: FlowKey,
        disagreement: Disagreement,
    },
}

/// What [`Pipeline::ingest`] made of one frame: a closed set, so per-packet
/// metrics can keep one counter handle per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    Control(Control),
    Skipped(Skip),
    Malformed,
}

/// The pipeline's tag for a tracked connection: its flow row, the
/// expected edge it belongs to (for evidence while it is open), and the
/// encapsulation its SYN arrived in (for its outcome event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tag {
    pub row: RowId,
    pub edge: Option<EdgeId>,
    pub mirror: Option<Encap>,
}

/// A record attempt pending in the merge: its tag and its classification,
/// which its settled outcome is judged by again (only the site's
/// acceptance, which has time bounds, is asked again at the outcome's
/// time; the policy cannot change meanwhile: a reload settles the merge
/// first).
#[derive(Clone, Debug)]
pub struct MergedAttempt {
    pub tag: Tag,
    pub class: Classification,
}

/// Which non-control segments are worth a full decode: those of an attempt
/// waiting for its answer (the client's ACK proves the handshake
/// completed), and on a port of a required edge those of a 4-tuple not
/// examined in the last [`RECENT_FOR`] (evidence, also for connections open
/// before the capture: once a second per connection is enough). Everything
/// else keeps the fixed-offset fast path.
struct Interest<'a> {
    table: &'a HandshakeTable<Tag>,
    recent: &'a Recent,
    now: Timestamp,
}

impl Wanted for Interest<'_> {
    #[inline(always)]
    fn wants(&self, t: &RawTuple<'_>) -> bool {
        let (src, dst) = (
            self.table.port_flags(t.src_port),
            self.table.port_flags(t.dst_port),
        );
        if (src | dst) & PORT_REQUIRED == 0 && dst & PORT_PENDING == 0 {
            return false;
        }
        let required = (src | dst) & PORT_REQUIRED != 0;
        let pending = dst & PORT_PENDING != 0;
        (pending && self.table.pending_tuple(t.hash()))
            || (required && !self.recent.fresh(t.either_way_hash(), self.now))
    }
}

/// How long (at least; at most a second more) a 4-tuple's non-control
/// segments are skipped after one was examined for evidence.
///
/// A connection whose SYN-ACK was seen is skipped longer ([`OPEN_SKIP`],
/// at most half the idle timeout): while open it is evidence anyway, and
/// its data only keeps it from idling out.
const RECENT_FOR: Duration = Duration::from_secs(1);
const RECENT_SLOTS: usize = 4096;
const OPEN_SKIP: Duration = Duration::from_secs(60);

/// How close in capture time two copies of one encapsulated control
/// segment must be to count as mirror copies: a path between two mirrored
/// hosts takes microseconds to a few milliseconds, a TCP retransmission
/// 200 ms (Linux's least RTO) or more.
pub const MIRROR_DUPLICATE_WITHIN: Duration = Duration::from_millis(100);
const MIRROR_SLOTS: usize = 1024;

/// The last encapsulated control segments, direct-mapped by a hash of
/// tuple, flags and sequence number, with their times (a collision only
/// lets a copy through: it then counts as a retransmission, as unmirrored).
struct MirrorCopies(Box<[(u32, Timestamp); MIRROR_SLOTS]>);

impl MirrorCopies {
    fn new() -> Self {
        MirrorCopies(Box::new([(0, Timestamp::ZERO); MIRROR_SLOTS]))
    }

    /// Whether `s` repeats one seen just before `ts`; remembers it.
    fn seen(&mut self, s: &Segment, ts: Timestamp) -> bool {
        let h = flow_hash_of(s.src, s.dst, s.src_port, s.dst_port)
            ^ s.seq.rotate_left(7)
            ^ u32::from(s.flags) << 24;
        let slot = &mut self.0[h as usize % MIRROR_SLOTS];
        let (tag, at) = *slot;
        *slot = (h, ts);
        tag == h && at != Timestamp::ZERO && ts.saturating_sub(at) < MIRROR_DUPLICATE_WITHIN
    }
}

/// Connections examined lately (both directions as one), direct-mapped by
/// [`RawTuple::either_way_hash`] (a collision
/// only costs a decode): the hash and until when (whole seconds, so 16 KiB
/// in all).
struct Recent(Box<[(u32, u32); RECENT_SLOTS]>);

fn whole_secs(t: Timestamp) -> u32 {
    u32::try_from(t.as_nanos() / 1_000_000_000).unwrap_or(u32::MAX)
}

impl Recent {
    fn new() -> Self {
        Recent(Box::new([(0, 0); RECENT_SLOTS]))
    }

    #[inline]
    fn fresh(&self, h: u32, now: Timestamp) -> bool {
        let (tag, until) = self.0[h as usize % RECENT_SLOTS];
        tag == h && whole_secs(now) < until
    }

    fn mark(&mut self, h: u32, now: Timestamp) {
        self.mark_for(h, now, RECENT_FOR);
    }

    fn mark_for(&mut self, h: u32, now: Timestamp, hold: Duration) {
        let until = whole_secs(now).saturating_add(hold.as_secs() as u32 + 1);
        self.0[h as usize % RECENT_SLOTS] = (h, until);
    }
}

pub struct Pipeline {
    policy: Arc<Policy>,
    decap: Decap,
    mirrored: MirrorCopies,
    recent: Recent,
    table: HandshakeTable<Tag>,
    /// Record observations of one connection (both ends, both formats,
    /// repeated drops) merged into one attempt.
    merge: RecordMerge<MergedAttempt>,
    /// One connection seen by two kinds of source counted once, their
    /// outcomes compared (off until [`Pipeline::join_kinds`]).
    kinds: KindJoin<Tag>,
    tally: Tally,
    clock: EdgeClock,
    time: CaptureClock,
    stats: DecodeStats,
    next_expiry: Timestamp,
    drops_seen: u64,
    /// Segments of frames with a suspect timestamp (at most
    /// [`crate::time::CONFIRM_FRAMES`]` - 1`), with those timestamps.
    held: Vec<(Timestamp, Segment)>,
    events: Option<Vec<Event>>,
    /// Connections at their end, for the conn log (off by default).
    conns: Option<Vec<ConnEnd>>,
    /// Recent classifications, for the control packets (emptied when the
    /// policy changes).
    verdicts: Verdicts,
}

impl Pipeline {
    pub fn new(policy: Arc<Policy>, config: TrackConfig) -> Self {
        let mut table = HandshakeTable::new(config);
        table.set_required_ports(&policy.required_ports());
        Pipeline {
            clock: EdgeClock::new(&policy),
            recent: Recent::new(),
            decap: Decap::STANDARD,
            mirrored: MirrorCopies::new(),
            policy,
            table,
            merge: RecordMerge::default(),
            kinds: KindJoin::default(),
            tally: Tally::default(),
            time: CaptureClock::default(),
            stats: DecodeStats::default(),
            next_expiry: Timestamp::ZERO,
            drops_seen: 0,
            held: Vec::new(),
            events: None,
            conns: None,
            verdicts: Verdicts::default(),
        }
    }

    /// Open the UDP encapsulations on the ports of `decap` (the standard
    /// ports by default).
    pub fn set_decap(&mut self, decap: Decap) {
        self.decap = decap;
    }

    pub fn decap(&self) -> &Decap {
        &self.decap
    }

    /// Sources of several kinds feed this pipeline (packets and node logs
    /// or flow records): a connection two kinds see is one attempt, and
    /// their outcomes are compared ([`Event::Disagreement`]). Off by
    /// default: one kind pays nothing for it.
    pub fn join_kinds(&mut self) {
        self.kinds.enable();
    }

    /// Connections two kinds of source saw, joined.
    pub fn kind_join(&self) -> &KindJoin<Tag> {
        &self.kinds
    }

    /// Keep [`Event`]s for [`Pipeline::drain_events`] (off by default: a
    /// plain replay needs only the aggregates).
    pub fn record_events(&mut self, on: bool) {
        self.events = on.then(Vec::new);
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The events kept since the last drain (to see what one frame did).
    pub fn events(&self) -> &[Event] {
        self.events.as_deref().unwrap_or_default()
    }

    /// Keep a [`ConnEnd`] of every connection at its end for
    /// [`Pipeline::drain_conns`] (off by default: the table then makes
    /// nothing of its ends).
    pub fn record_conns(&mut self, on: bool) {
        self.conns = on.then(Vec::new);
        self.table.report_ends(on);
    }

    pub fn drain_conns(&mut self) -> Vec<ConnEnd> {
        self.conns.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The connection ends kept since the last drain.
    pub fn conns(&self) -> &[ConnEnd] {
        self.conns.as_deref().unwrap_or_default()
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

    pub fn table(&self) -> &HandshakeTable<Tag> {
        &self.table
    }

    /// The recent classifications the control packets are judged from.
    pub fn verdicts(&self) -> &Verdicts {
        &self.verdicts
    }

    /// Record observations merged into a connection already observed, and
    /// connections settled early to make room.
    pub fn record_merge(&self) -> &RecordMerge<MergedAttempt> {
        &self.merge
    }

    /// The capture's clock: span and timestamp anomalies.
    pub fn time(&self) -> &CaptureClock {
        &self.time
    }

    /// First and last frame timestamps that set the clock (frames with
    /// stray timestamps excluded).
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        self.time.span()
    }

    /// Decode one frame and apply it; says what the frame was.
    ///
    /// Most frames are segments nobody wants, in order with the clock and
    /// with no expiry due: they take the few lines here, small enough to be
    /// inlined into the source's loop. Everything else goes on to
    /// [`Self::ingest_admitted`] or [`Self::ingest_unordered`].
    #[inline(always)]
    pub fn ingest(&mut self, frame: &Frame<'_>) -> Ingested {
        if frame.ts_invalid || !self.time.admit_in_order(frame.ts) {
            return self.ingest_unordered(frame);
        }
        // The plain pre-check is tried only here (the out-of-line path
        // tries the others); its answer is passed on so it is not asked twice.
        let checked = frame.ts < self.next_expiry;
        if checked {
            let wanted = Interest {
                table: &self.table,
                recent: &self.recent,
                now: frame.ts,
            };
            if is_skipped(frame.linktype, frame.data, &wanted) {
                self.stats.frames += 1;
                self.stats.skipped[Skip::NotControl as usize] += 1;
                return Ingested::Skipped(Skip::NotControl);
            }
            return self.ingest_checked(frame);
        }
        self.ingest_in_order(frame)
    }

    /// A frame in order with an expiry due. Its arguments fit in
    /// registers, so the inline path ends in a jump here rather than a
    /// call with an `Admit` on its stack.
    #[inline(never)]
    fn ingest_in_order(&mut self, frame: &Frame<'_>) -> Ingested {
        self.ingest_admitted(frame, Admit::at(frame.ts), false)
    }

    /// A frame in order, with no expiry due, that the plain pre-check
    /// declined: a mirror session's VXLAN around a segment nobody wants
    /// (a cloud sensor's every frame) is counted here, without the
    /// general path's bookkeeping; anything else goes on to it.
    #[inline(never)]
    fn ingest_checked(&mut self, frame: &Frame<'_>) -> Ingested {
        let wanted = Interest {
            table: &self.table,
            recent: &self.recent,
            now: frame.ts,
        };
        if let Some(vxlan) = vxlan_skipped(frame.linktype, frame.data, &wanted, &self.decap) {
            self.stats.frames += 1;
            self.stats.encap(vxlan);
            self.stats.skipped[Skip::NotControl as usize] += 1;
            return Ingested::Skipped(Skip::NotControl);
        }
        self.ingest_admitted(frame, Admit::at(frame.ts), true)
    }

    /// A frame whose timestamp is invalid or not simply in order.
    #[inline(never)]
    fn ingest_unordered(&mut self, frame: &Frame<'_>) -> Ingested {
        if frame.ts_invalid {
            // Its time cannot be trusted: counted, and it moves nothing.
            self.stats.frames += 1;
            let reason = crate::decode::DecodeError::InvalidTimestamp.reason();
            *self.stats.errors.entry(reason).or_default() += 1;
            return Ingested::Malformed;
        }
        let admit = self.time.admit(frame.ts);
        self.ingest_admitted(frame, admit, false)
    }

    /// Decode a frame the clock has taken and apply it at the time `admit`
    /// says (or hold it), then expire what is due. `checked`: both
    /// pre-checks (plain, VXLAN) already declined it.
    #[inline(never)]
    fn ingest_admitted(&mut self, frame: &Frame<'_>, admit: Admit, checked: bool) -> Ingested {
        self.stats.frames += 1;
        let wanted = Interest {
            table: &self.table,
            recent: &self.recent,
            now: admit.at.unwrap_or(frame.ts),
        };
        let mut encaps = Encaps::default();
        let (linktype, data) = (frame.linktype, frame.data);
        let decoded = if checked {
            decode_checked(linktype, data, &wanted, &self.decap, &mut encaps)
        } else if !is_skipped(linktype, data, &wanted) {
            decode_deferred(linktype, data, &wanted, &self.decap, &mut encaps)
        } else {
            Ok(Decoded::Skipped(Skip::NotControl))
        };
        if !encaps.is_empty() {
            self.stats.encaps(&encaps);
        }
        // The segment is used where it was decoded (each move of it cost
        // a dozen instructions or more a control packet).
        let (what, seg) = match &decoded {
            Ok(Decoded::Control(seg)) => {
                self.stats.controls[seg.control as usize] += 1;
                match seg.control {
                    // Counted as what it is on the wire: not a control packet.
                    Control::Ack => {
                        let h = either_way_hash_of(seg.src, seg.dst, seg.src_port, seg.dst_port);
                        self.recent.mark(h, wanted.now);
                        self.stats.skipped[Skip::NotControl as usize] += 1;
                        (Ingested::Skipped(Skip::NotControl), Some(seg))
                    }
                    c => (Ingested::Control(c), Some(seg)),
                }
            }
            Ok(Decoded::Skipped(s)) => {
                self.stats.skipped[*s as usize] += 1;
                (Ingested::Skipped(*s), None)
            }
            Err(e) => {
                *self.stats.errors.entry(e.reason()).or_default() += 1;
                (Ingested::Malformed, None)
            }
        };
        if admit.held != Held::Keep {
            self.release_held(admit.held);
        }
        let seg = seg.filter(|s| !self.mirror_copy(s, frame.ts));
        match (admit.at, seg) {
            (Some(ts), Some(seg)) => {
                self.process(ts, seg);
                if seg.control == Control::SynAck {
                    let h = either_way_hash_of(seg.src, seg.dst, seg.src_port, seg.dst_port);
                    let hold = OPEN_SKIP.min(self.table.config().idle_timeout / 2);
                    self.recent.mark_for(h, ts, hold);
                }
            }
            // A suspect timestamp: held until the frames after it decide.
            (None, Some(seg)) => self.held.push((frame.ts, *seg)),
            _ => {}
        }
        if let Some(ts) = admit.at {
            if ts >= self.next_expiry {
                self.expire_to(ts);
            }
        }
        what
    }

    /// An encapsulated control segment already applied (the other end's
    /// mirror of the same packet): counted, not applied again.
    fn mirror_copy(&mut self, s: &Segment, ts: Timestamp) -> bool {
        if s.mirror.is_none() || s.control == Control::Ack {
            return false;
        }
        let copy = self.mirrored.seen(s, ts);
        self.stats.mirror_duplicates += u64::from(copy);
        copy
    }

    /// Process the segments held on suspect timestamps, now that the clock
    /// has decided: at their own times if confirmed, at the clock if strays.
    #[cold]
    fn release_held(&mut self, fate: Held) {
        if fate == Held::Keep || self.held.is_empty() {
            return;
        }
        let now = self.time.now().unwrap_or_default();
        for (ts, seg) in std::mem::take(&mut self.held) {
            let at = if fate == Held::Confirmed { ts } else { now };
            self.process(at, &seg);
        }
    }

    /// Take over the required-edge evidence of `old` (a pipeline on the
    /// previous policy), matching edges by endpoint names and port, so a
    /// reload does not make every edge look unseen.
    pub fn carry_evidence(&mut self, old: &Pipeline) {
        self.clock = carried_clock(&self.policy, &old.policy, &old.clock);
    }

    /// Switch to a new policy (a reload), keeping the handshake table and
    /// the capture clock: attempts still pending are judged under the new
    /// policy when their answer comes, open connections stay evidence for
    /// the new policy's edges, and required-edge evidence is carried over by
    /// endpoint names and port. Counts and findings start afresh.
    pub fn swap_policy(&mut self, policy: Arc<Policy>) {
        // Pending records belong to the old policy's tallies.
        self.settle_records(None);
        let mut clock = carried_clock(&policy, &self.policy, &self.clock);
        self.table.retag(|key, old, open| {
            let c = classify(&policy, key.client, key.server, key.server_port);
            let edge = c.edge();
            if let (true, Some(e)) = (open, edge) {
                clock.opened(e);
            }
            // The mirror session is a fact of the packets, not of the
            // policy: a pending attempt's outcome keeps it.
            Tag {
                row: RowId::NONE,
                edge,
                mirror: old.mirror,
            }
        });
        self.clock = clock;
        self.table.set_required_ports(&policy.required_ports());
        self.tally = Tally::default();
        self.kinds.clear();
        self.verdicts.clear();
        self.policy = policy;
    }

    /// The capture's drop counters (summed over interfaces) read `total`
    /// at `at`: if they grew, required edges cannot be declared missing
    /// over a window that includes `at`.
    pub fn capture_drops(&mut self, at: Timestamp, total: u64) {
        if total > self.drops_seen {
            self.clock.note_drops(at);
        }
        self.drops_seen = total;
    }

    /// Apply one segment at `ts`.
    pub fn process(&mut self, ts: Timestamp, seg: &Segment) {
        let Pipeline {
            policy,
            table,
            kinds,
            tally,
            clock,
            events,
            conns,
            verdicts,
            ..
        } = self;
        let policy: &Policy = policy;
        // A new attempt's key: its tag is made once `observe` returns.
        let mut made: Option<FlowKey> = None;
        {
            let mut sink = |e: TableEvent<Tag>| {
                on_table_event(policy, verdicts, tally, clock, kinds, events, conns, ts, e)
            };
            let new_tag = |key: &FlowKey| {
                made = Some(*key);
                Tag::default()
            };
            table.observe(ts, seg, new_tag, &mut sink);
        }
        if let Some(key) = made {
            let v = verdicts.classify_at(policy, key.client, key.server, key.server_port, ts);
            let mirror = seg.mirror;
            let tag = match kinds.join(&key, SensorKind::Packets, ts) {
                // Another kind of source counted it: evidence only.
                Some(t) => {
                    if let Some(edge) = t.edge {
                        evidence(clock, events, edge, ts);
                    }
                    Tag { mirror, ..t }
                }
                None => {
                    let obs = packet_observation(ts, key, Fate::Attempted);
                    let (row, edge) =
                        attempted(tally, clock, events, &v.class, &obs, mirror, v.row);
                    v.row = row;
                    let tag = Tag { row, edge, mirror };
                    kinds.insert(key, SensorKind::Packets, ts, tag);
                    tag
                }
            };
            table.set_tag(&key, tag);
        }
    }

    /// Apply an observation a record source made (a firewall log line, an
    /// audit event, a flow record): classified, tallied and evidence for its
    /// edge as a packet attempt is. Records of one 4-tuple within
    /// [`crate::state::merge::MERGE_WITHIN`] are one connection (both ends
    /// of an edge between nodes log it; a node may keep two logs; a log
    /// writes a line per dropped SYN): the first is the attempt, the others
    /// are merged into it, and its outcome is applied when the window ends
    /// (the decisive one: a `denied` over a `permitted`). It moves the clock
    /// forward (records carry parsed, trusted times), so a replay of logs
    /// alone has a span; a record behind the clock is applied at its own
    /// time.
    pub fn observe(&mut self, obs: &Observation) {
        self.time.note_record(obs.ts);
        let kind = SensorKind::from(obs.source);
        // One hash of the 4-tuple for the merge's lookup and its insert.
        let hash = self.merge.hash(&obs.key);
        match self.merge.join(hash, obs) {
            Ok(joined) => {
                let row = joined.tag.tag.row;
                if joined.retransmission {
                    self.tally.retransmission(row);
                }
                self.tally.named(row, obs);
                self.kinds.join(&obs.key, kind, obs.ts);
            }
            Err(miss) => self.attempt(hash, miss, obs, kind),
        }
        // A record's own outcome, before the merge settles on one.
        if let Some(o) = obs.outcome() {
            if let Some(d) = self.kinds.outcome(&obs.key, kind, o) {
                let k = obs.key;
                let c = classify_at(&self.policy, k.client, k.server, k.server_port, obs.ts);
                disagreed(&mut self.tally, &mut self.events, c, k, d, obs.ts);
            }
        }
        if obs.ts >= self.next_expiry {
            self.expire_to(obs.ts.max(self.time.now().unwrap_or(obs.ts)));
        }
    }

    /// A record that is a new attempt: classified, tallied (unless another
    /// kind of source counted it) and held in the merge.
    fn attempt(&mut self, hash: u64, miss: Miss, obs: &Observation, kind: SensorKind) {
        let Pipeline {
            policy,
            merge,
            kinds,
            tally,
            clock,
            events,
            conns,
            ..
        } = self;
        let k = obs.key;
        let attempt = match kinds.join(&k, kind, obs.ts) {
            // Another kind of source counted it: evidence only.
            Some(t) => {
                if let Some(edge) = t.edge {
                    evidence(clock, events, edge, obs.ts);
                }
                MergedAttempt {
                    tag: Tag { mirror: None, ..t },
                    class: classify_at(policy, k.client, k.server, k.server_port, obs.ts),
                }
            }
            None => {
                let c = classify_at(policy, k.client, k.server, k.server_port, obs.ts);
                let (row, edge) = attempted(tally, clock, events, &c, obs, None, RowId::NONE);
                let tag = Tag {
                    row,
                    edge,
                    mirror: None,
                };
                kinds.insert(k, kind, obs.ts, tag);
                MergedAttempt { tag, class: c }
            }
        };
        merge.insert(hash, miss, obs, attempt, &mut |s| {
            settle(policy, tally, clock, events, conns, s)
        });
    }

    /// Apply the outcomes of the merged records whose window has passed at
    /// `now` (all of them if `None`).
    fn settle_records(&mut self, now: Option<Timestamp>) {
        if self.merge.is_empty() {
            return;
        }
        let Pipeline {
            policy,
            merge,
            tally,
            clock,
            events,
            conns,
            ..
        } = self;
        let mut sink =
            |s: &mut Settled<MergedAttempt>| settle(policy, tally, clock, events, conns, s);
        match now {
            Some(now) => merge.expire(now, &mut sink),
            None => merge.finish(&mut sink),
        }
    }

    /// A record source lost events at `at` (a firewall log's
    /// `INFO-EVENTS-LOST`): required edges cannot be declared missing over
    /// a window that includes `at`, as with capture drops.
    pub fn sensor_lost(&mut self, at: Timestamp) {
        self.covered(at);
        self.clock.note_drops(at);
    }

    /// A flow exporter lost records at `at`: only `edges`, those it covers,
    /// cannot be declared missing over a window that includes `at`.
    pub fn exporter_lost(&mut self, edges: &[EdgeId], at: Timestamp) {
        self.covered(at);
        for &e in edges {
            self.clock.note_gap(e, at);
        }
    }

    /// A record source was alive at `at` (a record that is not an
    /// observation): the span reaches this far.
    pub fn covered(&mut self, at: Timestamp) {
        self.time.note_record(at);
    }

    /// Expire as of `now` from the source's own clock (the wall clock of a
    /// quiet live capture, a paced replay's due time): judge timed-out
    /// attempts, drop idle entries. The capture clock (and so the time
    /// frames are processed at) stays with the frames: a paced replay's
    /// clock may run ahead of the next frame, which must not make frames
    /// late.
    pub fn advance(&mut self, now: Timestamp) {
        self.expire_to(now);
    }

    fn expire_to(&mut self, now: Timestamp) {
        self.settle_records(Some(now));
        self.drive(now, |table, mut sink| table.expire(now, &mut sink));
        self.next_expiry = now.saturating_add(EXPIRY_INTERVAL);
    }

    /// The capture ended at `end`: every pending attempt gets its outcome.
    pub fn finish(&mut self, end: Timestamp) {
        let fate = self.time.end();
        self.release_held(fate);
        self.settle_records(None);
        self.drive(end, |table, mut sink| table.finish(end, &mut sink));
    }

    /// A looped replay starts its capture again; its last frame was at
    /// `end`. The handshake table ends as at [`Self::finish`] and its open
    /// connections close, so each pass counts its connections afresh.
    /// Records (node logs, flow records) are not the capture's and go on.
    pub fn restart_capture(&mut self, end: Timestamp) {
        self.drive(end, |table, mut sink| table.restart(end, &mut sink));
    }

    /// Run `f` on the table with a sink that applies its events at `at`.
    fn drive(
        &mut self,
        at: Timestamp,
        f: impl FnOnce(&mut HandshakeTable<Tag>, &mut dyn FnMut(TableEvent<Tag>)),
    ) {
        let Pipeline {
            policy,
            table,
            kinds,
            tally,
            clock,
            events,
            conns,
            verdicts,
            ..
        } = self;
        f(table, &mut |e| {
            on_table_event(policy, verdicts, tally, clock, kinds, events, conns, at, e)
        });
    }

    /// One line explaining a classification.
    pub fn explain(&self, c: &Classification) -> String {
        explain(&self.policy, c)
    }
}

/// `old_clock` (of `old`) with its evidence moved to the matching edges of
/// `new` (same endpoint names and port).
fn carried_clock(new: &Policy, old: &Policy, old_clock: &EdgeClock) -> EdgeClock {
    let mut clock = EdgeClock::new(new);
    for (i, e) in new.edges.iter().enumerate() {
        let id = |p: &Policy, name: &str| p.endpoint_id(name).map(Peer::Endpoint);
        let src = id(old, &new.endpoint(e.src).name);
        let dst = id(old, &new.endpoint(e.dst).name);
        let Some(was) = src.zip(dst).and_then(|(s, d)| old.find_edge(s, d, e.port)) else {
            continue;
        };
        if let Some((first, last)) = old_clock.first_last(was) {
            clock.restore(EdgeId(i as u32), first, last, old_clock.count(was));
        }
        if old_clock.is_held_missing(was) {
            clock.hold_missing(EdgeId(i as u32));
        }
        if let Some(g) = old_clock.gap_at(was) {
            clock.note_gap(EdgeId(i as u32), g);
        }
    }
    clock.carry_drops(old_clock);
    clock
}

fn push(events: &mut Option<Vec<Event>>, e: Event) {
    if let Some(v) = events {
        v.push(e);
    }
}

/// Evidence for `edge` at `ts`. The event (which moves a gauge) is sent at
/// most once a second per edge: data segments of a busy connection are
/// evidence too, and need not each be an event.
fn evidence(clock: &mut EdgeClock, events: &mut Option<Vec<Event>>, edge: EdgeId, ts: Timestamp) {
    let was = clock.observe(edge, ts);
    if was.is_none_or(|w| ts >= w.saturating_add(EVIDENCE_EVENT_INTERVAL)) {
        push(events, Event::Evidence { ts, edge });
    }
}

/// A merged record connection's outcome, judged as its attempt was with
/// the acceptance that holds at the outcome's time (as the table's
/// outcomes are classified at theirs).
fn settle(
    policy: &Policy,
    tally: &mut Tally,
    clock: &mut EdgeClock,
    events: &mut Option<Vec<Event>>,
    conns: &mut Option<Vec<ConnEnd>>,
    s: &mut Settled<MergedAttempt>,
) {
    let k = s.obs.key;
    accept_at(policy, &mut s.tag.class, k.client, k.server, s.obs.ts);
    let c = &s.tag.class;
    if let Some(v) = conns {
        v.push(ConnEnd {
            key: k,
            class: c.clone(),
            start: s.start,
            end: s.obs.ts,
            outcome: s.obs.outcome(),
            close: Close::Record,
            controls: None,
            source: s.obs.source,
            sensor: s.obs.sensor.clone(),
            mirror: None,
        });
    }
    ended(tally, clock, events, s.tag.tag, c, &s.obs);
}

/// The handshake tracker's observation of `key` at `ts`.
#[inline]
fn packet_observation(ts: Timestamp, key: FlowKey, fate: Fate) -> Observation {
    Observation {
        ts,
        end: None,
        key,
        initiator: Initiator::Syn,
        fate,
        sensor: None,
        process: Process::default(),
        filter: None,
        source: SourceKind::Packets,
    }
}

/// A new attempt, classified as `c`: tallied, evidence for its edge, an
/// event (with the encapsulation its SYN arrived in). Returns its flow
/// row and edge. `hint`: see [`Tally::attempt_hinted`].
fn attempted(
    tally: &mut Tally,
    clock: &mut EdgeClock,
    events: &mut Option<Vec<Event>>,
    c: &Classification,
    obs: &Observation,
    mirror: Option<Encap>,
    hint: RowId,
) -> (RowId, Option<EdgeId>) {
    let row = tally.attempt_hinted(c, obs, hint);
    let edge = c.edge();
    if let Some(edge) = edge {
        evidence(clock, events, edge, obs.ts);
    }
    // Built only when kept: the clones are not free per attempt.
    if let Some(v) = events {
        v.push(Event::Connection {
            ts: obs.ts,
            class: c.clone(),
            key: obs.key,
            mirror,
            process: obs.process.clone(),
        });
    }
    (row, edge)
}

/// An attempt's outcome, if `obs` has one: tallied (a `blocked` finding
/// where it says so), an open connection of the tag's edge while
/// established, an event.
fn ended(
    tally: &mut Tally,
    clock: &mut EdgeClock,
    events: &mut Option<Vec<Event>>,
    tag: Tag,
    c: &Classification,
    obs: &Observation,
) {
    let Fate::Ended { outcome, inferred } = obs.fate else {
        return;
    };
    tally.outcome(tag.row, c, obs, outcome, inferred);
    if let (Outcome::Established, Some(edge)) = (outcome, tag.edge) {
        clock.opened(edge);
    }
    if let Some(v) = events {
        v.push(Event::Outcome {
            ts: obs.ts,
            class: c.clone(),
            key: obs.key,
            outcome,
            mirror: tag.mirror,
            source: obs.source,
        });
    }
}

/// Two kinds of source disagree on the fate of `key`'s connection.
fn disagreed(
    tally: &mut Tally,
    events: &mut Option<Vec<Event>>,
    c: Classification,
    key: FlowKey,
    d: Disagreement,
    ts: Timestamp,
) {
    tally.disagreement(&c, d, ts);
    push(
        events,
        Event::Disagreement {
            ts,
            class: c,
            key,
            disagreement: d,
        },
    );
}

#[allow(clippy::too_many_arguments)]
fn on_table_event(
    policy: &Policy,
    verdicts: &mut Verdicts,
    tally: &mut Tally,
    clock: &mut EdgeClock,
    kinds: &mut KindJoin<Tag>,
    events: &mut Option<Vec<Event>>,
    conns: &mut Option<Vec<ConnEnd>>,
    ts: Timestamp,
    e: TableEvent<Tag>,
) {
    match e {
        // Attempts are handled by the caller once the tag is known.
        TableEvent::Attempt { .. } => {}
        TableEvent::Retransmission { tag } => tally.retransmission(tag.row),
        TableEvent::Resolved {
            tag,
            key,
            outcome,
            inferred,
        } => {
            let c = reclassify(policy, verdicts, tally, tag, key, ts);
            if let Some(d) = kinds.outcome(&key, SensorKind::Packets, outcome) {
                disagreed(tally, events, c.clone(), key, d, ts);
            }
            let obs = packet_observation(ts, key, Fate::Ended { outcome, inferred });
            ended(tally, clock, events, tag, c, &obs);
        }
        TableEvent::Activity { tag } => {
            if let Some(edge) = tag.edge {
                evidence(clock, events, edge, ts);
            }
        }
        TableEvent::Closed { tag } => {
            if let Some(edge) = tag.edge {
                clock.closed(edge);
            }
        }
        TableEvent::Untracked { segment } => {
            if let Some(edge) = edge_of_untracked(policy, &segment) {
                evidence(clock, events, edge, ts);
            }
        }
        TableEvent::Ended { tag, key, ending } => {
            if let Some(v) = conns {
                v.push(packet_conn(policy, tag, key, ending));
            }
        }
    }
}

/// An attempt classified again at its outcome: as recently, else with the
/// peers of its flow row where it has one (the row's key holds the peers
/// its attempt's classification found for these addresses, under the same
/// policy: a reload starts a new tally and clears the tags' rows).
fn reclassify<'v>(
    policy: &Policy,
    verdicts: &'v mut Verdicts,
    tally: &Tally,
    tag: Tag,
    key: FlowKey,
    ts: Timestamp,
) -> &'v Classification {
    let (client, server, port) = (key.client, key.server, key.server_port);
    let make = || match tag.row.flow() {
        Some(row) => {
            let k = tally.row(row).key;
            classify_peers(policy, (k.src, client), (k.dst, server), port)
        }
        None => classify(policy, client, server, port),
    };
    let r = verdicts.get(policy, client, server, port, ts, make);
    if r.row == RowId::NONE {
        // The attempt's rows are these addresses' under this policy.
        r.row = tag.row;
    }
    &r.class
}

/// A connection the handshake table saw end, classified again as its
/// outcome was, with the acceptance that held at its start.
#[cold]
fn packet_conn(policy: &Policy, tag: Tag, key: FlowKey, e: Ending) -> ConnEnd {
    ConnEnd {
        key,
        class: classify_at(policy, key.client, key.server, key.server_port, e.start),
        start: e.start,
        end: e.last,
        outcome: Some(e.outcome),
        close: e.close,
        controls: Some(e.controls),
        source: SourceKind::Packets,
        sensor: None,
        mirror: tag.mirror,
    }
}

/// A segment of a connection whose SYN was not seen: which expected edge
/// it belongs to, trying both ends as the listener.
fn edge_of_untracked(policy: &Policy, s: &Segment) -> Option<EdgeId> {
    if s.control == Control::Syn {
        return None;
    }
    // Each end's peer once (an address outside the site is asked of every
    // prefix), then the edge either way. Edges join two endpoints: a
    // source outside them (other systems' traffic) ends it there.
    let src = policy.peer_of(s.src);
    if !matches!(src, Peer::Endpoint(_)) {
        return None;
    }
    let dst = policy.peer_of(s.dst);
    match s.control {
        Control::SynAck => policy.find_edge(dst, src, s.src_port),
        _ => policy
            .find_edge(src, dst, s.dst_port)
            .or_else(|| policy.find_edge(dst, src, s.src_port)),
    }
}

mod saved;
mod verdicts;
pub use saved::{saved_edge, Restored};
pub use verdicts::{Remembered, Verdicts, VERDICT_SLOTS};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tunnel_tests;
