//! The pipeline's part of the state kept over a restart
//! ([`crate::state::saved`]): required-edge evidence and finding rows,
//! saved by names and addresses and matched against the policy in force
//! when read back.

use super::Pipeline;
use crate::classify::classify_at;
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
                accepted: f.key.accepted.map(|id| p.acceptance(id).ticket.clone()),
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
/// under `p`, with the same acceptance (by ticket) holding at its first
/// occurrence.
fn finding_row(p: &Policy, f: &SavedFinding) -> Option<FindingRow> {
    let c = classify_at(p, f.src_addr, f.dst_addr, f.port, Timestamp(f.first_ns));
    let ticket = c.accepted.map(|id| p.acceptance(id).ticket.as_str());
    if ticket != f.accepted.as_deref() {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::load_policy;
    use crate::decode::{Control, Segment};
    use crate::state::saved::Identity;
    use crate::state::TrackConfig;

    fn syn(src: &str, sport: u16, dst: &str, dport: u16) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: sport,
            dst_port: dport,
            control: Control::Syn,
            flags: 0x02,
            seq: 0,
            mirror: None,
        }
    }

    /// Evidence, findings (one under a site acceptance, kept with its
    /// ticket) and an edge judged missing go out and come back the same;
    /// a finding whose acceptance is not the site's any more is left out.
    #[test]
    fn a_pipeline_state_round_trips() {
        let p = Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy);
        let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
        let t = |s: u64| Timestamp::from_secs_nanos(1_796_000_000 + s, 0);
        pl.process(t(0), &syn("192.0.2.11", 40_000, "192.0.2.10", 4242));
        pl.process(t(1), &syn("198.51.100.7", 40_001, "192.0.2.10", 3389));
        pl.process(t(2), &syn("198.51.100.7", 40_002, "192.0.2.21", 4747));
        pl.process(t(3), &syn("198.51.100.7", 40_003, "192.0.2.21", 4747));
        let vis = Visibility::default();
        let mut saved = Saved::new(Identity::of(&p), t(4000).as_nanos());
        pl.save(&mut saved, &vis, t(0), t(4000));
        let saved = Saved::decode(&saved.encode(), &Identity::of(&p)).unwrap();
        let tickets: Vec<_> = saved.findings.iter().map(|f| f.accepted.clone()).collect();
        assert_eq!(tickets, [Some("CHG-1234".to_string()), None]);
        assert!(
            saved.edges.iter().any(|e| e.missing),
            "an edge without evidence for 4000 s"
        );

        let mut back = Pipeline::new(p.clone(), TrackConfig::default());
        let r = back.restore(&saved);
        assert_eq!((r.findings, r.skipped), (2, 0));
        assert_eq!(r.edges, saved.edges.len());
        let rows = |pl: &Pipeline| {
            (pl.tally().findings().iter())
                .map(|f| (f.key, f.count, f.first, f.last, f.outcomes))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&back), rows(&pl));
        for (i, e) in p.edges.iter().enumerate().filter(|(_, e)| e.required) {
            let id = EdgeId(i as u32);
            assert_eq!(back.clock().first_last(id), pl.clock().first_last(id));
            let judged = |pl: &Pipeline| pl.clock().state(id, e.window, t(4000), t(4001));
            assert_eq!(
                judged(&back) == crate::state::EdgeState::Missing,
                saved
                    .edges
                    .iter()
                    .any(|s| s.missing && saved_edge(&p, s) == Some(id)),
                "held missing from the first instant after the restart"
            );
        }

        let mut other = saved.clone();
        other.findings[0].accepted = Some("CHG-9999".into());
        let mut back = Pipeline::new(p, TrackConfig::default());
        let r = back.restore(&other);
        assert_eq!((r.findings, r.skipped), (1, 1));
        let unaccepted: IpAddr = "192.0.2.21".parse().unwrap();
        assert_eq!(back.tally().findings()[0].key.dst_addr, unaccepted);
    }
}
