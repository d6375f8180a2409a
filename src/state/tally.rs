//! Aggregates a report is made from: per-flow rows (src, dst, port,
//! verdict) and findings (per address pair). Both are capped: past the cap
//! new keys are refused and counted, so a scan cannot grow memory.

use std::net::IpAddr;

use crate::classify::{Basis, Classification, Verdict};
use crate::map::FastMap;
use crate::policy::Peer;
use crate::state::Outcome;
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

    /// The row of `key`, made by `make` if new; `None` when refused.
    fn upsert(&mut self, key: K, make: impl FnOnce() -> V) -> Option<&mut V> {
        let id = match self.index.get(&key) {
            Some(id) => *id,
            None if self.rows.len() >= self.max => {
                self.refused += 1;
                return None;
            }
            None => {
                let id = self.rows.len() as u32;
                self.rows.push(make());
                self.index.insert(key, id);
                id
            }
        };
        Some(&mut self.rows[id as usize])
    }

    fn id(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }
}

#[derive(Debug)]
pub struct Tally {
    rows: Capped<FlowRowKey, FlowRow>,
    findings: Capped<FindingKey, FindingRow>,
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
            rows: Capped::new(max_rows),
            findings: Capped::new(max_findings),
            by_verdict: [0; 4],
            by_outcome: [0; 4],
            retransmissions: 0,
        }
    }

    pub fn rows(&self) -> &[FlowRow] {
        &self.rows.rows
    }

    pub fn findings(&self) -> &[FindingRow] {
        &self.findings.rows
    }

    pub fn row(&self, id: u32) -> &FlowRow {
        &self.rows.rows[id as usize]
    }

    /// Flow rows refused because the cap was reached.
    pub fn rows_refused(&self) -> u64 {
        self.rows.refused
    }

    /// Findings refused because the cap was reached.
    pub fn findings_refused(&self) -> u64 {
        self.findings.refused
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
        let r = self.rows.upsert(key, || FlowRow {
            key,
            service: c.service.clone(),
            basis: c.basis.clone(),
            attempts: 0,
            retransmissions: 0,
            outcomes: [0; 4],
            first: ts,
            last: ts,
        })?;
        r.attempts += 1;
        r.first = r.first.min(ts);
        r.last = r.last.max(ts);
        self.rows.id(&key)
    }

    pub fn retransmission(&mut self, row: RowId) {
        self.retransmissions += 1;
        if let Some(id) = row {
            self.rows.rows[id as usize].retransmissions += 1;
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
            self.rows.rows[id as usize].outcomes[o.index()] += 1;
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
                if let Some(id) = self.findings.id(&key) {
                    self.findings.rows[id as usize].outcomes[o.index()] += 1;
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
        let Some(f) = self.findings.upsert(key, || FindingRow {
            key,
            service: c.service.clone(),
            basis: c.basis.clone(),
            count: 0,
            outcomes: [0; 4],
            first: ts,
            last: ts,
        }) else {
            return;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::config::load_policy;

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
            t.attempt(Timestamp(1), &c, user, ip(dst));
        }
        assert_eq!(t.rows().len(), 2);
        assert_eq!(t.rows_refused(), 1);
        assert_eq!(t.findings().len(), 1);
        assert_eq!(t.findings_refused(), 1);
        // Counts by verdict stay exact whatever the caps refuse.
        assert_eq!(t.by_verdict, [1, 2, 0, 0]);
        // A known key still counts after the cap is reached.
        let c = classify(&p, user, ip("192.0.2.11"), 443);
        let row = t.attempt(Timestamp(2), &c, user, ip("192.0.2.11"));
        assert_eq!(t.row(row.unwrap()).attempts, 2);
    }
}
