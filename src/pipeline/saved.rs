//! The pipeline's part of the state kept over a restart
//! ([`crate::state::saved`]): required-edge evidence and finding rows,
//! saved by names and addresses and matched against the policy in force
//! when read back.

use super::{classify, Pipeline};
use crate::classify::Verdict;
use crate::policy::{EdgeId, Peer, Policy, Visibility};
use crate::state::saved::{Saved, SavedEdge, SavedFinding};
use crate::state::tally::{finding_key, FindingKind, FindingRow};
use crate::time::Timestamp;

/// What a restore took and what it left out (names or findings the
/// policy in force no longer has, or past the tables' budgets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub edges: usize,
    pub findings: usize,
    pub skipped: usize,
}

impl Pipeline {
    /// Put the required-edge evidence and the findings into `out`; an edge
    /// judged (by `vis`) missing at `now`, observing since `since`, is
    /// saved as missing.
    pub fn save(&self, out: &mut Saved, vis: &Visibility, since: Timestamp, now: Timestamp) {
        let p = &self.policy;
        out.drops_ns = self.clock.drops_at().map(Timestamp::as_nanos);
        for (i, e) in p.edges.iter().enumerate().filter(|(_, e)| e.required) {
            let id = EdgeId(i as u32);
            let evidence = self.clock.first_last(id);
            let missing = vis.judges(p, e)
                && self.clock.state(id, e.window, since, now) == crate::state::EdgeState::Missing;
            if evidence.is_none() && !missing {
                continue;
            }
            out.edges.push(SavedEdge {
                src: p.endpoint(e.src).name.clone(),
                dst: p.endpoint(e.dst).name.clone(),
                port: e.port,
                first_ns: evidence.map(|(f, _)| f.as_nanos()),
                last_ns: evidence.map(|(_, l)| l.as_nanos()),
                count: self.clock.count(id),
                missing,
            });
        }
        out.findings
            .extend(self.tally.findings().iter().map(|f| SavedFinding {
                kind: f.key.kind,
                src_addr: f.key.src_addr,
                dst_addr: f.key.dst_addr,
                port: f.key.port,
                count: f.count,
                outcomes: f.outcomes,
                filters: f.filters.clone(),
                first_ns: f.first.as_nanos(),
                last_ns: f.last.as_nanos(),
            }));
    }

    /// Take back what [`Pipeline::save`] kept (before the first frame).
    pub fn restore(&mut self, saved: &Saved) -> Restored {
        let mut r = Restored::default();
        if let Some(d) = saved.drops_ns {
            self.clock.note_drops(Timestamp(d));
        }
        for e in &saved.edges {
            match self.restore_edge(e) {
                true => r.edges += 1,
                false => r.skipped += 1,
            }
        }
        for f in &saved.findings {
            let taken =
                finding_row(&self.policy, f).is_some_and(|row| self.tally.restore_finding(row));
            match taken {
                true => r.findings += 1,
                false => r.skipped += 1,
            }
        }
        r
    }

    fn restore_edge(&mut self, e: &SavedEdge) -> bool {
        let Some(edge) = saved_edge(&self.policy, e) else {
            return false;
        };
        if let (Some(first), Some(last)) = (e.first_ns, e.last_ns) {
            let (first, last) = (Timestamp(first), Timestamp(last));
            self.clock
                .restore(edge, first.min(last), last.max(first), e.count);
        }
        if e.missing {
            self.clock.hold_missing(edge);
        }
        true
    }
}

/// The required edge of `p` a saved edge names, if it still has it.
pub fn saved_edge(p: &Policy, e: &SavedEdge) -> Option<EdgeId> {
    let id = |name: &str| p.endpoint_id(name).map(Peer::Endpoint);
    id(&e.src)
        .zip(id(&e.dst))
        .and_then(|(s, d)| p.find_edge(s, d, e.port))
        .filter(|&edge| p.edge(edge).required)
}

/// The row of a saved finding, if its addresses still make that finding
/// under `p`.
fn finding_row(p: &Policy, f: &SavedFinding) -> Option<FindingRow> {
    let c = classify(p, f.src_addr, f.dst_addr, f.port);
    let same = match f.kind {
        FindingKind::Blocked => c.verdict == Verdict::Expected && c.is_site_edge(),
        FindingKind::Missing => false,
        kind => FindingKind::of(c.verdict) == Some(kind),
    };
    if !same {
        return None;
    }
    let (first, last) = (Timestamp(f.first_ns), Timestamp(f.last_ns));
    Some(FindingRow {
        key: finding_key(f.kind, &c, f.src_addr, f.dst_addr),
        service: c.service.to_string(),
        basis: c.basis.clone(),
        count: f.count,
        outcomes: f.outcomes,
        filters: f
            .filters
            .iter()
            .copied()
            .take(crate::state::tally::AGGREGATE_SAMPLES)
            .collect(),
        first: first.min(last),
        last: last.max(first),
    })
}
