//! The report's side of accepted deviations: a finding's acceptance, and
//! what each acceptance of the site matched in the input.

use serde::Serialize;

use crate::policy::{AcceptId, Policy};
use crate::state::tally::FindingRow;

/// The acceptance a finding occurred under.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AcceptedBy {
    /// Its index in the site's `accepted` list.
    pub index: usize,
    pub ticket: String,
    pub owner: String,
    /// Its last day (UTC).
    pub expires: String,
    pub reason: String,
}

impl AcceptedBy {
    pub fn of(p: &Policy, id: AcceptId) -> AcceptedBy {
        let a = p.acceptance(id);
        AcceptedBy {
            index: a.index,
            ticket: a.ticket.clone(),
            owner: a.owner.clone(),
            expires: a.expires.clone(),
            reason: a.reason.clone(),
        }
    }
}

/// One acceptance of the site and what it matched.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AcceptanceUse {
    pub index: usize,
    /// `from -> to:port`, as the site file writes it.
    pub flow: String,
    pub ticket: String,
    pub owner: String,
    pub expires: String,
    /// Findings (rows) that occurred while it held, and their occurrences.
    pub findings: u64,
    pub occurrences: u64,
    /// Findings of its flow that occurred after it expired (alerts again).
    pub findings_after_expiry: u64,
}

impl AcceptanceUse {
    /// It matched nothing in the input.
    pub fn unused(&self) -> bool {
        self.findings == 0 && self.findings_after_expiry == 0
    }
}

/// Each acceptance of the site with what it matched among `rows`.
pub fn uses(p: &Policy, rows: &[FindingRow]) -> Vec<AcceptanceUse> {
    let mut out: Vec<AcceptanceUse> = (p.site.accepted.iter())
        .map(|a| AcceptanceUse {
            index: a.index,
            flow: a.flow_label(),
            ticket: a.ticket.clone(),
            owner: a.owner.clone(),
            expires: a.expires.clone(),
            findings: 0,
            occurrences: 0,
            findings_after_expiry: 0,
        })
        .collect();
    for r in rows {
        let k = &r.key;
        if let Some(id) = k.accepted {
            let u = &mut out[usize::from(id.0)];
            u.findings += 1;
            u.occurrences += r.count;
            continue;
        }
        let src = (p.peer_name(k.src), k.src_addr);
        let dst = (p.peer_name(k.dst), k.dst_addr);
        for (a, u) in p.site.accepted.iter().zip(out.iter_mut()) {
            if a.covers(src, dst, k.port) && !a.holds_at(r.last) {
                u.findings_after_expiry += 1;
            }
        }
    }
    out
}
