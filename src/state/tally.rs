//! Aggregates a report is made from: per-flow rows (src, dst, port,
//! verdict) and findings (per address pair). Both are capped: past the cap
//! new keys are refused and counted, so a scan cannot grow memory.
//!
//! Findings have budgets instead of one first-come cap, so a flood of one
//! kind never hides findings of another: [`FINDINGS_PER_KIND`] rows per
//! kind, and [`FINDINGS_PER_SOURCE`] of them per source group (the source
//! endpoint, `localhost` or `unknown`). Unknown-host findings past a budget
//! are folded into one [`Aggregate`] per source group; other kinds past a
//! budget are refused and counted per kind.

use std::net::IpAddr;
use std::sync::Arc;

use crate::classify::{Basis, Classification, Verdict};
use crate::map::FastMap;
use crate::observation::{hash_addresses, Observation, Outcome, OutcomeCounts, SensorKind};
use crate::policy::{AcceptId, Peer};
use crate::state::kinds::Disagreement;
use crate::time::Timestamp;

/// Default caps; each row is a few hundred bytes.
pub const MAX_FLOW_ROWS: usize = 10_000;
/// Finding rows per kind (unexpected, local-only, unknown-host, blocked).
pub const FINDINGS_PER_KIND: usize = 2_500;
/// Finding rows per kind and source group.
pub const FINDINGS_PER_SOURCE: usize = 500;
/// Addresses and ports an aggregate keeps as examples.
pub const AGGREGATE_SAMPLES: usize = 16;
/// Most disagreement rows (edge and the two kinds' outcomes); past that
/// new ones are refused and counted.
pub const MAX_DISAGREEMENT_ROWS: usize = 1_024;
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Unexpected,
    LocalOnly,
    UnknownHost,
    /// An expected edge whose handshake was refused or unanswered.
    Blocked,
    /// A required edge with no evidence in its window.
    Missing,
}

impl FindingKind {
    pub const ALL: [FindingKind; 5] = [
        FindingKind::Unexpected,
        FindingKind::LocalOnly,
        FindingKind::UnknownHost,
        FindingKind::Blocked,
        FindingKind::Missing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Unexpected => "unexpected",
            FindingKind::LocalOnly => "local_only",
            FindingKind::UnknownHost => "unknown_host",
            FindingKind::Blocked => "blocked",
            FindingKind::Missing => "missing",
        }
    }

    /// The finding a verdict raises, if any.
    pub fn of(v: Verdict) -> Option<FindingKind> {
        match v {
            Verdict::Expected => None,
            Verdict::Unexpected => Some(FindingKind::Unexpected),
            Verdict::LocalOnly => Some(FindingKind::LocalOnly),
            Verdict::UnknownHost => Some(FindingKind::UnknownHost),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowRowKey {
    pub src: Peer,
    pub dst: Peer,
    pub port: u16,
    pub verdict: Verdict,
}

#[derive(Clone, Debug)]
pub struct FlowRow {
    pub key: FlowRowKey,
    pub service: String,
    pub basis: Basis,
    pub attempts: u64,
    pub retransmissions: u64,
    pub outcomes: OutcomeCounts,
    /// Of the established: those inferred from the client's ACK or data
    /// (the SYN-ACK was not captured).
    pub inferred: u64,
    /// Executables its sources named (a node's audit events), up to
    /// [`AGGREGATE_SAMPLES`], first seen first.
    pub executables: Vec<Arc<str>>,
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FindingKey {
    pub kind: FindingKind,
    pub src: Peer,
    pub src_addr: IpAddr,
    pub dst: Peer,
    pub dst_addr: IpAddr,
    pub port: u16,
    /// The acceptance that held when it occurred: occurrences before and
    /// after an acceptance expires are two rows.
    pub accepted: Option<AcceptId>,
}

#[derive(Clone, Debug)]
pub struct FindingRow {
    pub key: FindingKey,
    pub service: String,
    pub basis: Basis,
    pub count: u64,
    pub outcomes: OutcomeCounts,
    /// Host firewall filters cited by its observations (up to
    /// [`AGGREGATE_SAMPLES`], first seen first).
    pub filters: Vec<u64>,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// A peer as 18 bits, for the keys' hashes below.
#[inline]
fn peer_bits(p: Peer) -> u64 {
    match p {
        Peer::Endpoint(id) => u64::from(id.0),
        Peer::Localhost => 1 << 16,
        Peer::Unknown => 2 << 16,
    }
}

/// Both peers, the port and a key's kind (its verdict or finding kind) as
/// one word, for the keys' hashes below.
#[inline]
fn edge_bits(src: Peer, dst: Peer, port: u16, kind: u8) -> u64 {
    peer_bits(src) | peer_bits(dst) << 18 | u64::from(port) << 36 | u64::from(kind) << 52
}

/// Written by hand, as [`crate::observation::FlowKey`]'s: every attempt
/// and outcome looks its rows up, and the derived hash fed the hasher
/// field by field (an address as a tag, a length and its bytes).
impl std::hash::Hash for FlowRowKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(edge_bits(self.src, self.dst, self.port, self.verdict as u8));
    }
}

impl std::hash::Hash for FindingKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(edge_bits(self.src, self.dst, self.port, self.kind as u8));
        h.write_u32(self.accepted.map_or(0, |a| u32::from(a.0) + 1));
        hash_addresses(h, self.src_addr, self.dst_addr);
    }
}

/// What an attempt left in the tally, for its later records: its flow
/// row (none when the row cap refused it) and where its finding went, so
/// its outcome does not look the finding up again. Eight bytes, as the
/// `Option<u32>` it replaces: the handshake table keeps one per attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowId {
    flow: u32,
    finding: u32,
}

/// No flow row, or no finding slot.
const NONE: u32 = u32::MAX;
/// A finding slot's bit for a folded one (the aggregate's index below it).
const FOLDED: u32 = 1 << 31;

/// Where an attempt's finding went, as [`RowId`] packs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// None, or not told: the outcome looks it up.
    Unknown,
    Row(u32),
    /// Folded into this aggregate (an unknown-host finding past its budgets).
    Folded(u32),
}

impl Default for RowId {
    fn default() -> Self {
        RowId::NONE
    }
}

impl RowId {
    pub const NONE: RowId = RowId {
        flow: NONE,
        finding: NONE,
    };

    /// The flow row, if the cap did not refuse it.
    pub fn flow(self) -> Option<u32> {
        (self.flow != NONE).then_some(self.flow)
    }

    fn slot(self) -> Slot {
        match self.finding {
            NONE => Slot::Unknown,
            f if f & FOLDED != 0 => Slot::Folded(f & !FOLDED),
            f => Slot::Row(f),
        }
    }

    /// `slot` packed; an index too large to pack is left unknown.
    fn pack(slot: Slot) -> u32 {
        match slot {
            Slot::Row(i) if i < FOLDED => i,
            Slot::Folded(i) if i < FOLDED - 1 => i | FOLDED,
            _ => NONE,
        }
    }
}

/// Rows in first-seen order with an index by key, capped: past `max`, new
/// keys are refused and counted (keeping the first-seen rows is what an
/// audit wants; evicting them would hide the oldest findings).
#[derive(Debug)]
struct Capped<K, V> {
    rows: Vec<V>,
    index: FastMap<K, u32>,
    max: usize,
    refused: u64,
}

impl<K: std::hash::Hash + Eq, V> Capped<K, V> {
    fn new(max: usize) -> Self {
        Capped {
            rows: Vec::new(),
            index: FastMap::default(),
            max,
            refused: 0,
        }
    }

    /// The row of `key` and its index, made by `make` if new; `None` when
    /// refused. One hash of the key either way.
    fn upsert(&mut self, key: K, make: impl FnOnce() -> V) -> Option<(u32, &mut V)> {
        use std::collections::hash_map::Entry;
        let id = match self.index.entry(key) {
            Entry::Occupied(o) => *o.get(),
            Entry::Vacant(_) if self.rows.len() >= self.max => {
                self.refused += 1;
                return None;
            }
            Entry::Vacant(v) => {
                let id = self.rows.len() as u32;
                self.rows.push(make());
                v.insert(id);
                id
            }
        };
        Some((id, &mut self.rows[id as usize]))
    }

    fn id(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }
}

/// Unknown-host findings of one source group past their budget, folded
/// into one: exact counts, example addresses and ports. Those an
/// acceptance held for are folded apart, one per acceptance: they do not
/// alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub src: Peer,
    pub accepted: Option<AcceptId>,
    /// Connection attempts folded in.
    pub attempts: u64,
    pub outcomes: OutcomeCounts,
    pub first: Timestamp,
    pub last: Timestamp,
    /// Up to [`AGGREGATE_SAMPLES`] of each, in first-seen order.
    pub src_addrs: Vec<IpAddr>,
    pub dst_addrs: Vec<IpAddr>,
    pub ports: Vec<u16>,
    /// Whether more addresses or ports were seen than are kept.
    pub more: bool,
}

impl Aggregate {
    fn add(&mut self, ts: Timestamp, src: IpAddr, dst: IpAddr, port: u16) {
        self.attempts += 1;
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
        if self.more && self.is_full() {
            // Nothing more can be kept (most folded attempts of a busy
            // segment): the three scans would change nothing.
            return;
        }
        let kept = sample(&mut self.src_addrs, src)
            & sample(&mut self.dst_addrs, dst)
            & sample(&mut self.ports, port);
        self.more |= !kept;
    }

    fn is_full(&self) -> bool {
        self.src_addrs.len() >= AGGREGATE_SAMPLES
            && self.dst_addrs.len() >= AGGREGATE_SAMPLES
            && self.ports.len() >= AGGREGATE_SAMPLES
    }
}

/// Keep `x` in `v` if it is there or there is room; false if dropped.
fn sample<T: PartialEq>(v: &mut Vec<T>, x: T) -> bool {
    if v.contains(&x) {
        true
    } else if v.len() < AGGREGATE_SAMPLES {
        v.push(x);
        true
    } else {
        false
    }
}

/// A source group's place in [`Findings::per_source`]'s lists.
#[inline]
fn group_index(p: Peer) -> usize {
    match p {
        Peer::Localhost => 0,
        Peer::Unknown => 1,
        Peer::Endpoint(id) => 2 + usize::from(id.0),
    }
}

/// Findings with their budgets.
#[derive(Debug)]
struct Findings {
    rows: Capped<FindingKey, FindingRow>,
    per_kind: [usize; 5],
    /// Rows per kind and source group, by [`group_index`]: a direct index,
    /// as the groups are the policy's endpoints (grown to the largest seen,
    /// so bounded by them) and two more.
    per_source: [Vec<usize>; 5],
    /// Occurrences refused by a budget, per kind.
    refused: [u64; 5],
    /// Folded unknown-host findings, by source group and acceptance (at
    /// most the policy's endpoints times its acceptances and one).
    aggregates: Vec<Aggregate>,
    per_kind_budget: usize,
    per_source_budget: usize,
}

impl Findings {
    fn new(per_kind: usize, per_source: usize) -> Self {
        Findings {
            rows: Capped::new(usize::MAX),
            per_kind: [0; 5],
            per_source: Default::default(),
            refused: [0; 5],
            aggregates: Vec::new(),
            per_kind_budget: per_kind,
            per_source_budget: per_source,
        }
    }

    /// The row of `key` and its index if it has one or the budgets allow a
    /// new one.
    fn row(
        &mut self,
        key: FindingKey,
        make: impl FnOnce() -> FindingRow,
    ) -> Option<(u32, &mut FindingRow)> {
        // A finding seen before (the common case): one lookup.
        if let Some(id) = self.rows.id(&key) {
            return Some((id, &mut self.rows.rows[id as usize]));
        }
        if self.full(&key) {
            return None;
        }
        let (kind, group) = (key.kind as usize, group_index(key.src));
        let in_group = self.per_source[kind].get(group).copied().unwrap_or(0);
        self.per_kind[kind] += 1;
        let counts = &mut self.per_source[kind];
        if counts.len() <= group {
            counts.resize(group + 1, 0);
        }
        counts[group] = in_group + 1;
        self.rows.upsert(key, make)
    }

    /// Whether the budgets refuse `key`'s kind and source group a new row.
    fn full(&self, key: &FindingKey) -> bool {
        let (kind, group) = (key.kind as usize, group_index(key.src));
        let in_group = self.per_source[kind].get(group).copied().unwrap_or(0);
        self.per_kind[kind] >= self.per_kind_budget || in_group >= self.per_source_budget
    }

    /// The aggregate of `c`'s source group and acceptance, and its index.
    fn aggregate(&mut self, c: &Classification, ts: Timestamp) -> (u32, &mut Aggregate) {
        let (src, accepted) = (c.src, c.accepted);
        let at = (self.aggregates.iter()).position(|a| a.src == src && a.accepted == accepted);
        let i = match at {
            Some(i) => i,
            None => {
                self.aggregates.push(Aggregate {
                    src,
                    accepted,
                    attempts: 0,
                    outcomes: [0; Outcome::COUNT],
                    first: ts,
                    last: ts,
                    src_addrs: Vec::new(),
                    dst_addrs: Vec::new(),
                    ports: Vec::new(),
                    more: false,
                });
                self.aggregates.len() - 1
            }
        };
        (i as u32, &mut self.aggregates[i])
    }
}

/// Connections of one flow on which two kinds of source told different
/// fates, the same two outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DisagreementKey {
    pub src: Peer,
    pub dst: Peer,
    pub port: u16,
    /// The kind that saw them established.
    pub established: SensorKind,
    /// The kind that says otherwise, and what it says.
    pub other: SensorKind,
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
pub struct DisagreementRow {
    pub key: DisagreementKey,
    pub service: String,
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Debug)]
pub struct Tally {
    rows: Capped<FlowRowKey, FlowRow>,
    disagreements: Capped<DisagreementKey, DisagreementRow>,
    findings: Findings,
    pub by_verdict: [u64; 4],
    pub by_outcome: OutcomeCounts,
    /// Established handshakes inferred without their SYN-ACK.
    pub inferred: u64,
    pub retransmissions: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new(MAX_FLOW_ROWS, FINDINGS_PER_KIND)
    }
}

impl Tally {
    /// `per_kind` finding rows per kind; a fifth of that per source group
    /// (at least one).
    pub fn new(max_rows: usize, per_kind: usize) -> Self {
        let per_source = (per_kind * FINDINGS_PER_SOURCE / FINDINGS_PER_KIND).max(1);
        Tally::with_budgets(max_rows, per_kind, per_source)
    }

    pub fn with_budgets(max_rows: usize, per_kind: usize, per_source: usize) -> Self {
        Tally {
            rows: Capped::new(max_rows),
            disagreements: Capped::new(MAX_DISAGREEMENT_ROWS),
            findings: Findings::new(per_kind, per_source),
            by_verdict: [0; 4],
            by_outcome: [0; Outcome::COUNT],
            inferred: 0,
            retransmissions: 0,
        }
    }

    pub fn rows(&self) -> &[FlowRow] {
        &self.rows.rows
    }

    pub fn findings(&self) -> &[FindingRow] {
        &self.findings.rows.rows
    }

    /// Unknown-host findings folded past their budgets, by source group.
    pub fn aggregates(&self) -> &[Aggregate] {
        &self.findings.aggregates
    }

    pub fn row(&self, id: u32) -> &FlowRow {
        &self.rows.rows[id as usize]
    }

    /// Connections two kinds of source told different fates of, by flow
    /// and outcomes, first seen first.
    pub fn disagreements(&self) -> &[DisagreementRow] {
        &self.disagreements.rows
    }

    /// Disagreement rows refused at [`MAX_DISAGREEMENT_ROWS`].
    pub fn disagreements_refused(&self) -> u64 {
        self.disagreements.refused
    }

    /// A connection of `c` two kinds of source disagree on, at `ts`.
    pub fn disagreement(&mut self, c: &Classification, d: Disagreement, ts: Timestamp) {
        let key = DisagreementKey {
            src: c.src,
            dst: c.dst,
            port: c.port,
            established: d.established,
            other: d.blocked.0,
            outcome: d.blocked.1,
        };
        let row = self.disagreements.upsert(key, || DisagreementRow {
            key,
            service: c.service.to_string(),
            count: 0,
            first: ts,
            last: ts,
        });
        if let Some((_, r)) = row {
            r.count += 1;
            r.first = r.first.min(ts);
            r.last = r.last.max(ts);
        }
    }

    /// Flow rows refused because the cap was reached.
    pub fn rows_refused(&self) -> u64 {
        self.rows.refused
    }

    /// Finding occurrences refused by a budget (all kinds).
    pub fn findings_refused(&self) -> u64 {
        self.findings.refused.iter().sum()
    }

    /// Finding occurrences refused by a budget, for one kind.
    pub fn findings_refused_of(&self, kind: FindingKind) -> u64 {
        self.findings.refused[kind as usize]
    }

    /// A new connection attempt; returns its row for later outcomes.
    pub fn attempt(&mut self, c: &Classification, obs: &Observation) -> RowId {
        self.attempt_hinted(c, obs, RowId::NONE)
    }

    /// [`Tally::attempt`], given what it returned for an earlier attempt
    /// between the same addresses classified the same (acceptance aside)
    /// by this tally's policy, or [`RowId::NONE`]: rows never move, so
    /// where the hint's rows still have this attempt's keys, they are
    /// counted without looking the keys up.
    pub fn attempt_hinted(&mut self, c: &Classification, obs: &Observation, hint: RowId) -> RowId {
        let (ts, end) = (obs.ts, last_of(obs));
        self.by_verdict[c.verdict as usize] += 1;
        let slot = match FindingKind::of(c.verdict) {
            Some(kind) => self.finding(kind, c, obs, None, hint.slot()),
            None => Slot::Unknown,
        };
        let mut id = RowId {
            flow: NONE,
            finding: RowId::pack(slot),
        };
        let key = FlowRowKey {
            src: c.src,
            dst: c.dst,
            port: c.port,
            verdict: c.verdict,
        };
        let rows = &mut self.rows.rows;
        let known = (hint.flow()).filter(|&i| rows.get(i as usize).is_some_and(|r| r.key == key));
        let found = match known {
            Some(i) => Some((i, &mut rows[i as usize])),
            None => self.rows.upsert(key, || FlowRow {
                key,
                service: c.service.to_string(),
                basis: c.basis.clone(),
                attempts: 0,
                retransmissions: 0,
                outcomes: [0; Outcome::COUNT],
                inferred: 0,
                executables: Vec::new(),
                first: ts,
                last: end,
            }),
        };
        let Some((row, r)) = found else {
            return id;
        };
        r.attempts += 1;
        if let Some(exe) = &obs.process.executable {
            sample(&mut r.executables, exe.clone());
        }
        r.first = r.first.min(ts);
        r.last = r.last.max(end);
        id.flow = row;
        id
    }

    /// Another record of an attempt already counted (its other end, or
    /// another log of the same node): the executable it names joins the
    /// row's, its end the row's last.
    pub fn named(&mut self, row: RowId, obs: &Observation) {
        let Some(r) = row
            .flow()
            .and_then(|id| self.rows.rows.get_mut(id as usize))
        else {
            return;
        };
        if let Some(exe) = &obs.process.executable {
            sample(&mut r.executables, exe.clone());
        }
        r.last = r.last.max(last_of(obs));
    }

    pub fn retransmission(&mut self, row: RowId) {
        self.retransmissions += 1;
        if let Some(id) = row.flow() {
            self.rows.rows[id as usize].retransmissions += 1;
        }
    }

    /// An attempt's outcome (`inferred`: established without a captured
    /// SYN-ACK). A refused, unanswered or denied expected edge becomes a
    /// `blocked` finding; other findings count how their attempts ended.
    pub fn outcome(
        &mut self,
        row: RowId,
        c: &Classification,
        obs: &Observation,
        o: Outcome,
        inferred: bool,
    ) {
        let (src, dst) = (obs.key.client, obs.key.server);
        self.by_outcome[o.index()] += 1;
        self.inferred += u64::from(inferred);
        if let Some(id) = row.flow() {
            let r = &mut self.rows.rows[id as usize];
            r.outcomes[o.index()] += 1;
            r.inferred += u64::from(inferred);
        }
        match (FindingKind::of(c.verdict), o) {
            // Only site edges are blocked; a refused same-host port is a
            // stopped service, not a firewall.
            (None, o) if o.is_blocked() && c.is_site_edge() => {
                self.finding(FindingKind::Blocked, c, obs, Some(o), Slot::Unknown);
            }
            (None, _) => {}
            (Some(kind), _) => {
                let key = finding_key(kind, c, src, dst);
                let f = &mut self.findings;
                // Where the attempt's finding went, if it is this one (the
                // acceptance may have changed since; `row` is of these
                // addresses, under this policy).
                match row.slot() {
                    Slot::Row(id) => {
                        if let Some(r) = f.rows.rows.get_mut(id as usize) {
                            if r.key == key {
                                r.outcomes[o.index()] += 1;
                                return;
                            }
                        }
                    }
                    Slot::Folded(i) if kind == FindingKind::UnknownHost => {
                        if let Some(a) = f.aggregates.get_mut(i as usize) {
                            if (a.src, a.accepted) == (c.src, c.accepted) {
                                // Past its group's budgets it never gets a row.
                                debug_assert_eq!(f.rows.index.get(&key), None);
                                a.outcomes[o.index()] += 1;
                                return;
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(id) = f.rows.id(&key) {
                    f.rows.rows[id as usize].outcomes[o.index()] += 1;
                } else if kind == FindingKind::UnknownHost {
                    let mut all = f.aggregates.iter_mut();
                    if let Some(a) = all.find(|a| a.src == c.src && a.accepted == c.accepted) {
                        a.outcomes[o.index()] += 1;
                    }
                }
            }
        }
    }

    /// A finding row carried over a restart (its key made from the
    /// addresses classified under the policy in force). It goes through the
    /// budgets as a new finding does; false when they refuse it.
    pub fn restore_finding(&mut self, row: FindingRow) -> bool {
        self.findings.row(row.key, || row).is_some()
    }

    /// A `kind` finding of `c` counted; returns where it went. `hint`:
    /// where the same finding went before (see [`Tally::attempt_hinted`]).
    fn finding(
        &mut self,
        kind: FindingKind,
        c: &Classification,
        obs: &Observation,
        o: Option<Outcome>,
        hint: Slot,
    ) -> Slot {
        let (ts, end, src, dst) = (obs.ts, last_of(obs), obs.key.client, obs.key.server);
        let key = finding_key(kind, c, src, dst);
        let f = &mut self.findings;
        let hinted = match hint {
            Slot::Row(id) if f.rows.rows.get(id as usize).is_some_and(|r| r.key == key) => {
                debug_assert_eq!(f.rows.id(&key), Some(id));
                Some(id)
            }
            // Folded once, always: the budgets only fill, and a key that
            // has no row gets none past them.
            Slot::Folded(i)
                if kind == FindingKind::UnknownHost
                    && f.full(&key)
                    && (f.aggregates.get(i as usize))
                        .is_some_and(|a| (a.src, a.accepted) == (c.src, c.accepted)) =>
            {
                debug_assert_eq!(f.rows.id(&key), None);
                f.aggregates[i as usize].add(ts, src, dst, c.port);
                return Slot::Folded(i);
            }
            _ => None,
        };
        let found = match hinted {
            Some(id) => Some((id, &mut f.rows.rows[id as usize])),
            None => f.row(key, || FindingRow {
                key,
                service: c.service.to_string(),
                basis: c.basis.clone(),
                count: 0,
                outcomes: [0; Outcome::COUNT],
                filters: Vec::new(),
                first: ts,
                last: end,
            }),
        };
        let Some((id, f)) = found else {
            if kind == FindingKind::UnknownHost {
                let (i, a) = self.findings.aggregate(c, ts);
                a.add(ts, src, dst, c.port);
                return Slot::Folded(i);
            }
            self.findings.refused[kind as usize] += 1;
            return Slot::Unknown;
        };
        f.count += 1;
        f.first = f.first.min(ts);
        f.last = f.last.max(end);
        if let Some(o) = o {
            f.outcomes[o.index()] += 1;
        }
        if let Some(filter) = obs.filter {
            sample(&mut f.filters, filter);
        }
        Slot::Row(id)
    }
}

/// The time an observation was last seen: its end where its source tells
/// one (a flow record's), else its time.
fn last_of(obs: &Observation) -> Timestamp {
    obs.end.map_or(obs.ts, |e| e.max(obs.ts))
}

/// The key of a `kind` finding of classification `c` between `src` and `dst`.
pub fn finding_key(kind: FindingKind, c: &Classification, src: IpAddr, dst: IpAddr) -> FindingKey {
    FindingKey {
        kind,
        src: c.src,
        src_addr: src,
        dst: c.dst,
        dst_addr: dst,
        port: c.port,
        accepted: c.accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::config::load_policy;
    use crate::observation::{Fate, FlowKey, Initiator, Process, SourceKind};

    /// A packet capture's attempt from `src` to `dst:port`.
    fn attempt(ts: Timestamp, src: IpAddr, dst: IpAddr, port: u16) -> Observation {
        Observation {
            ts,
            end: None,
            key: FlowKey {
                client: src,
                client_port: 50_000,
                server: dst,
                server_port: port,
            },
            initiator: Initiator::Syn,
            fate: Fate::Attempted,
            sensor: None,
            process: Process::default(),
            filter: None,
            source: SourceKind::Packets,
        }
    }

    #[test]
    fn caps_refuse_new_keys_and_count_them() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut t = Tally::new(2, 1);
        let user = ip("198.51.100.7");
        // Three distinct flows, two of them findings (users may not reach engines).
        for (dst, port) in [
            ("192.0.2.11", 443),
            ("192.0.2.21", 4747),
            ("192.0.2.22", 4747),
        ] {
            let c = classify(&p, user, ip(dst), port);
            t.attempt(&c, &attempt(Timestamp(1), user, ip(dst), port));
        }
        assert_eq!(t.rows().len(), 2);
        assert_eq!(t.rows_refused(), 1);
        assert_eq!(t.findings().len(), 1);
        assert_eq!(t.findings_refused(), 1);
        // Counts by verdict stay exact whatever the caps refuse.
        assert_eq!(t.by_verdict, [1, 2, 0, 0]);
        // A known key still counts after the cap is reached.
        let c = classify(&p, user, ip("192.0.2.11"), 443);
        let row = t.attempt(&c, &attempt(Timestamp(2), user, ip("192.0.2.11"), 443));
        assert_eq!(t.row(row.flow().unwrap()).attempts, 2);
    }

    /// A flood of unknown-host findings fills its own budget and is folded;
    /// findings of other kinds, and of other source groups, keep theirs.
    #[test]
    fn a_flood_of_one_kind_never_hides_another() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut t = Tally::with_budgets(100, 20, 10);
        let engine = ip("192.0.2.21");
        for i in 0..1_000u32 {
            let spoofed = IpAddr::from([100, 64, (i >> 8) as u8, i as u8]);
            let c = classify(&p, spoofed, engine, 4747);
            assert_eq!(c.verdict, Verdict::UnknownHost);
            t.attempt(&c, &attempt(Timestamp(u64::from(i)), spoofed, engine, 4747));
        }
        // From a node to an unknown address: another source group.
        let node = ip("192.0.2.11");
        let c = classify(&p, node, ip("100.64.200.1"), 443);
        t.attempt(
            &c,
            &attempt(Timestamp(2_000), node, ip("100.64.200.1"), 443),
        );
        // A genuine unexpected flow after the flood.
        let user = ip("198.51.100.7");
        let c = classify(&p, user, engine, 4747);
        assert_eq!(c.verdict, Verdict::Unexpected);
        t.attempt(&c, &attempt(Timestamp(3_000), user, engine, 4747));

        let kinds = |t: &Tally, k| t.findings().iter().filter(|f| f.key.kind == k).count();
        assert_eq!(
            kinds(&t, FindingKind::UnknownHost),
            11,
            "10 from unknown, 1 from a node"
        );
        assert_eq!(kinds(&t, FindingKind::Unexpected), 1);
        assert_eq!(
            t.findings_refused(),
            0,
            "unknown hosts are folded, not refused"
        );
        let [a] = t.aggregates() else {
            panic!("{:?}", t.aggregates())
        };
        assert_eq!(a.src, Peer::Unknown);
        assert_eq!(a.attempts, 990);
        assert_eq!(a.src_addrs.len(), AGGREGATE_SAMPLES);
        assert_eq!(a.ports, [4747]);
        assert!(a.more);
        assert_eq!(t.by_verdict[Verdict::UnknownHost as usize], 1_001);

        // Past its own budget, another kind is refused and counted by kind.
        for i in 0..30u8 {
            let u = IpAddr::from([198, 51, 100, i]);
            let c = classify(&p, u, engine, 4747);
            t.attempt(&c, &attempt(Timestamp(4_000), u, engine, 4747));
        }
        assert_eq!(kinds(&t, FindingKind::Unexpected), 10, "per-source budget");
        assert_eq!(t.findings_refused_of(FindingKind::Unexpected), 20);
        assert_eq!(t.findings_refused_of(FindingKind::UnknownHost), 0);
    }

    /// An outcome counts in the finding row or aggregate its attempt went
    /// to; classified under another acceptance since, where that key is.
    #[test]
    fn an_outcome_counts_where_its_attempt_went() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let engine: IpAddr = "192.0.2.21".parse().unwrap();
        let mut t = Tally::with_budgets(100, 20, 2);
        let attempts: Vec<_> = (0..4u8)
            .map(|i| {
                let src = IpAddr::from([100, 64, 0, i]);
                let c = classify(&p, src, engine, 4747);
                let obs = attempt(Timestamp(u64::from(i)), src, engine, 4747);
                (t.attempt(&c, &obs), c, obs)
            })
            .collect();
        for (row, c, obs) in &attempts {
            t.outcome(*row, c, obs, Outcome::Refused, false);
        }
        let refused = Outcome::Refused.index();
        assert_eq!(t.findings().len(), 2);
        assert!(t.findings().iter().all(|f| f.outcomes[refused] == 1));
        let [a] = t.aggregates() else {
            panic!("{:?}", t.aggregates())
        };
        assert_eq!((a.attempts, a.outcomes[refused]), (2, 2));

        // Accepted since its attempt: neither its row nor its aggregate is
        // that key's, and no aggregate holds that acceptance.
        let established = Outcome::Established.index();
        for (row, c, obs) in [&attempts[0], &attempts[3]] {
            let mut later = c.clone();
            later.accepted = Some(AcceptId(0));
            t.outcome(*row, &later, obs, Outcome::Established, false);
        }
        assert!(t.findings().iter().all(|f| f.outcomes[established] == 0));
        assert_eq!(t.aggregates()[0].outcomes[established], 0);
        assert_eq!(t.by_outcome[established], 2);
    }

    /// An attempt given where the last one of its addresses went counts
    /// as one looked up does: in rows, findings and aggregates, with
    /// hints that are its own, stale (another key's) or none.
    #[test]
    fn a_hinted_attempt_counts_as_a_looked_up_one() {
        let p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let engine = ip("192.0.2.21");
        let user = ip("198.51.100.7");
        // Unknown hosts past their budgets (folded), users (unexpected,
        // some past the per-source budget: refused), expected flows.
        let mut pairs = Vec::new();
        for i in 0..12u8 {
            pairs.push((IpAddr::from([100, 64, 0, i]), engine, 4747));
            pairs.push((IpAddr::from([198, 51, 100, i]), engine, 4747));
        }
        pairs.push((user, ip("192.0.2.11"), 443));
        pairs.push((ip("192.0.2.11"), ip("192.0.2.10"), 4242));
        let (mut plain, mut hinted) = (Tally::new(40, 20), Tally::new(40, 20));
        let mut hints = std::collections::HashMap::new();
        for round in 0..3u64 {
            for (n, &(src, dst, port)) in pairs.iter().enumerate() {
                let c = classify(&p, src, dst, port);
                let obs = attempt(Timestamp(round * 100 + n as u64), src, dst, port);
                let want = plain.attempt(&c, &obs);
                // A stale hint in the second round: the previous pair's.
                let hint = match round {
                    1 => hints.get(&pairs[n.saturating_sub(1)]),
                    _ => hints.get(&(src, dst, port)),
                };
                let got = hinted.attempt_hinted(&c, &obs, hint.copied().unwrap_or_default());
                assert_eq!(got, want, "{src} {dst} {port}, round {round}");
                hints.insert((src, dst, port), got);
            }
        }
        let rows = |t: &Tally| {
            (t.rows().iter())
                .map(|r| (r.key, r.attempts, r.first, r.last))
                .collect::<Vec<_>>()
        };
        let findings = |t: &Tally| {
            (t.findings().iter())
                .map(|f| (f.key, f.count, f.first, f.last))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&hinted), rows(&plain));
        assert_eq!(findings(&hinted), findings(&plain));
        assert_eq!(hinted.aggregates(), plain.aggregates());
        assert!(!plain.aggregates().is_empty(), "some were folded");
        assert!(plain.findings_refused() > 0, "some were refused");
        assert_eq!(hinted.findings_refused(), plain.findings_refused());
        assert_eq!(hinted.by_verdict, plain.by_verdict);
    }

    /// Unknown-host findings past the budget keep their acceptance: the
    /// accepted ones fold apart from those that alert.
    #[test]
    fn folding_keeps_accepted_and_alerting_apart() {
        use crate::classify::classify_at;
        use crate::policy::AcceptId;
        use crate::site::{AcceptEnd, Acceptance};
        let mut p = load_policy(std::path::Path::new("multi-node"), None)
            .unwrap()
            .policy;
        p.site.accepted = vec![Acceptance::for_test(
            AcceptEnd::Net("100.64.0.0/10".parse().unwrap()),
            AcceptEnd::Name("engine1".into()),
            4747,
            "2030-01-01",
        )];
        let engine: IpAddr = "192.0.2.21".parse().unwrap();
        let mut t = Tally::with_budgets(100, 20, 10);
        for (net, n) in [([100, 64], 30u8), ([10, 9], 25)] {
            for i in 0..n {
                let src = IpAddr::from([net[0], net[1], 0, i]);
                let ts = Timestamp(u64::from(i));
                let c = classify_at(&p, src, engine, 4747, ts);
                assert_eq!(c.verdict, Verdict::UnknownHost);
                t.attempt(&c, &attempt(ts, src, engine, 4747));
            }
        }
        // 10 rows (the source group's budget, all accepted), then folded.
        assert_eq!(t.findings().len(), 10);
        assert!(t.findings().iter().all(|f| f.key.accepted.is_some()));
        let folded: Vec<(Option<AcceptId>, u64)> = (t.aggregates().iter())
            .map(|a| (a.accepted, a.attempts))
            .collect();
        assert_eq!(folded, [(Some(AcceptId(0)), 20), (None, 25)]);
    }
}
