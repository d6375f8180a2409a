//! Aggregates a report is made from: per-flow rows (src, dst, port,
//! verdict) and findings (per address pair). Both are capped: past the cap
//! new keys are refused and counted, so a scan cannot grow memory.

use std::net::IpAddr;

use crate::classify::{Basis, Classification, Verdict};
use crate::policy::Peer;
use crate::state::{FastMap, Outcome};
use crate::time::Timestamp;

/// Default caps; each row is a few hundred bytes.
pub const MAX_FLOW_ROWS: usize = 10_000;
pub const MAX_FINDINGS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    pub outcomes: [u64; 4],
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FindingKey {
    pub kind: FindingKind,
    pub src: Peer,
    pub src_addr: IpAddr,
    pub dst: Peer,
    pub dst_addr: IpAddr,
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct FindingRow {
    pub key: FindingKey,
    pub service: String,
    pub basis: Basis,
    pub count: u64,
    pub outcomes: [u64; 4],
    pub first: Timestamp,
    pub last: Timestamp,
}

/// Index of a flow row; `None` when the row cap refused it.
pub type RowId = Option<u32>;

#[derive(Debug)]
pub struct Tally {
    rows: Vec<FlowRow>,
    row_index: FastMap<FlowRowKey, u32>,
    findings: Vec<FindingRow>,
    finding_index: FastMap<FindingKey, u32>,
    max_rows: usize,
    max_findings: usize,
    pub rows_refused: u64,
    pub findings_refused: u64,
    pub by_verdict: [u64; 4],
    pub by_outcome: [u64; 4],
    pub retransmissions: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new(MAX_FLOW_ROWS, MAX_FINDINGS)
    }
}

impl Tally {
    pub fn new(max_rows: usize, max_findings: usize) -> Self {
        Tally {
            rows: Vec::new(),
            row_index: FastMap::default(),
            findings: Vec::new(),
            finding_index: FastMap::default(),
            max_rows,
            max_findings,
            rows_refused: 0,
            findings_refused: 0,
            by_verdict: [0; 4],
            by_outcome: [0; 4],
            retransmissions: 0,
        }
    }

    pub fn rows(&self) -> &[FlowRow] {
        &self.rows
    }

    pub fn findings(&self) -> &[FindingRow] {
        &self.findings
    }

    pub fn row(&self, id: u32) -> &FlowRow {
        &self.rows[id as usize]
    }

    /// A new connection attempt; returns its row for later outcomes.
    pub fn attempt(
        &mut self,
        ts: Timestamp,
        c: &Classification,
        src: IpAddr,
        dst: IpAddr,
    ) -> RowId {
        self.by_verdict[c.verdict as usize] += 1;
        if let Some(kind) = FindingKind::of(c.verdict) {
            self.finding(kind, ts, c, src, dst, None);
        }
        let key = FlowRowKey {
            src: c.src,
            dst: c.dst,
            port: c.port,
            verdict: c.verdict,
        };
        let id = match self.row_index.get(&key) {
            Some(id) => *id,
            None if self.rows.len() >= self.max_rows => {
                self.rows_refused += 1;
                return None;
            }
            None => {
                let id = self.rows.len() as u32;
                self.rows.push(FlowRow {
                    key,
                    service: c.service.clone(),
                    basis: c.basis.clone(),
                    attempts: 0,
                    retransmissions: 0,
                    outcomes: [0; 4],
                    first: ts,
                    last: ts,
                });
                self.row_index.insert(key, id);
                id
            }
        };
        let r = &mut self.rows[id as usize];
        r.attempts += 1;
        r.first = r.first.min(ts);
        r.last = r.last.max(ts);
        Some(id)
    }

    pub fn retransmission(&mut self, row: RowId) {
        self.retransmissions += 1;
        if let Some(id) = row {
            self.rows[id as usize].retransmissions += 1;
        }
    }

    /// An attempt's outcome. A refused or unanswered expected edge becomes
    /// a `blocked` finding; other findings count how their attempts ended.
    pub fn outcome(
        &mut self,
        ts: Timestamp,
        row: RowId,
        c: &Classification,
        src: IpAddr,
        dst: IpAddr,
        o: Outcome,
    ) {
        self.by_outcome[o.index()] += 1;
        if let Some(id) = row {
            self.rows[id as usize].outcomes[o.index()] += 1;
        }
        match (FindingKind::of(c.verdict), o) {
            // Only site edges are blocked; a refused same-host port is a
            // stopped service, not a firewall.
            (None, Outcome::Refused | Outcome::Unanswered) if c.edge().is_some() => {
                self.finding(FindingKind::Blocked, ts, c, src, dst, Some(o))
            }
            (None, _) => {}
            (Some(kind), _) => {
                let key = finding_key(kind, c, src, dst);
                if let Some(id) = self.finding_index.get(&key) {
                    self.findings[*id as usize].outcomes[o.index()] += 1;
                }
            }
        }
    }

    fn finding(
        &mut self,
        kind: FindingKind,
        ts: Timestamp,
        c: &Classification,
        src: IpAddr,
        dst: IpAddr,
        o: Option<Outcome>,
    ) {
        let key = finding_key(kind, c, src, dst);
        let id = match self.finding_index.get(&key) {
            Some(id) => *id,
            None if self.findings.len() >= self.max_findings => {
                self.findings_refused += 1;
                return;
            }
            None => {
                let id = self.findings.len() as u32;
                self.findings.push(FindingRow {
                    key,
                    service: c.service.clone(),
                    basis: c.basis.clone(),
                    count: 0,
                    outcomes: [0; 4],
                    first: ts,
                    last: ts,
                });
                self.finding_index.insert(key, id);
                id
            }
        };
        let f = &mut self.findings[id as usize];
        f.count += 1;
        f.first = f.first.min(ts);
        f.last = f.last.max(ts);
        if let Some(o) = o {
            f.outcomes[o.index()] += 1;
        }
    }
}

fn finding_key(kind: FindingKind, c: &Classification, src: IpAddr, dst: IpAddr) -> FindingKey {
    FindingKey {
        kind,
        src: c.src,
        src_addr: src,
        dst: c.dst,
        dst_addr: dst,
        port: c.port,
    }
}
