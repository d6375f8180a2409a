//! What a replay against the proposed site shows: the longest gap between
//! evidence of each required edge, and the findings left to the reader.

use std::time::Duration;

use super::{EdgeGap, LeftOut, Observer};
use crate::policy::Policy;
use crate::report::Finding;
use crate::state::tally::FindingKind;
use crate::time::Timestamp;

/// The longest gap between evidence for every required edge of `p`.
pub fn edge_gaps(p: &Policy, o: &Observer) -> Vec<EdgeGap> {
    let mut out: Vec<EdgeGap> = p
        .edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.required)
        .map(|(i, e)| {
            let g = o.gaps(i);
            EdgeGap {
                from: p.endpoint(e.src).name.clone(),
                to: p.endpoint(e.dst).name.clone(),
                port: e.port,
                window_seconds: e.window.as_secs(),
                evidence: g.count,
                longest_gap_seconds: (g.count >= 2).then(|| secs_up(g.longest)),
                first_seen: g.first.map(Timestamp::rfc3339),
                last_seen: g.last.map(Timestamp::rfc3339),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.from, &a.to, a.port).cmp(&(&b.from, &b.to, b.port)));
    out
}

fn secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Why each finding of a replay against the proposed site is left to the
/// reader rather than proposed away.
pub fn left_out(findings: &[Finding]) -> Vec<LeftOut> {
    findings
        .iter()
        .map(|f| {
            let established = f.outcomes.get("established").copied().unwrap_or(0);
            let why = match f.kind {
                FindingKind::LocalOnly => {
                    "never allowed by a proposal: the model keeps this port on its host".into()
                }
                FindingKind::Blocked => {
                    "an expected flow that failed: fix the network, not the site file".into()
                }
                FindingKind::Missing => {
                    "a required edge without evidence for a whole window: see required_edges".into()
                }
                FindingKind::Unexpected | FindingKind::UnknownHost if established == 0 => {
                    "never established (refused, unanswered or cut off): not evidence of a \
                     legitimate flow"
                        .into()
                }
                FindingKind::Unexpected if f.src == f.dst => {
                    "both ends are the same endpoint: an allowance needs two".into()
                }
                _ => "held back for review: see suspicious".to_string(),
            };
            LeftOut {
                kind: f.kind,
                src: f.src.clone(),
                dst: f.dst.clone(),
                port: f.port,
                count: f.count,
                why,
            }
        })
        .collect()
}
