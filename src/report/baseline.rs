//! `replay --baseline REPORT.json`: the findings of an earlier report
//! (`replay --format json`) are known; the new report lists only those not
//! in it, and says how many were left out. Required-edge states stay in
//! full. Pure: the caller reads the file.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Finding, Report};
use crate::state::tally::FindingKind;

/// Most findings read from a baseline (a report holds at most the
/// findings budgets' worth, 2,500 per kind, plus folded ones).
pub const MAX_BASELINE_FINDINGS: usize = 100_000;

/// What identifies a finding across reports: its kind, its ends (names and
/// addresses) and its port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
struct FindingId {
    kind: FindingKind,
    src: String,
    src_addr: Option<String>,
    dst: String,
    dst_addr: Option<String>,
    port: u16,
}

impl FindingId {
    fn of(f: &Finding) -> FindingId {
        FindingId {
            kind: f.kind,
            src: f.src.clone(),
            src_addr: f.src_addr.clone(),
            dst: f.dst.clone(),
            dst_addr: f.dst_addr.clone(),
            port: f.port,
        }
    }
}

/// The findings of a previous report.
#[derive(Clone, Debug, Default)]
pub struct Known {
    ids: HashSet<FindingId>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    #[error("not a portwatch JSON report (replay --format json): {0}")]
    NotAReport(String),
    #[error("more than {MAX_BASELINE_FINDINGS} findings")]
    TooLarge,
}

impl Known {
    /// The findings of `text`, a JSON report.
    pub fn parse(text: &str) -> Result<Known, BaselineError> {
        #[derive(Deserialize)]
        struct Shape {
            findings: Vec<FindingId>,
        }
        let shape: Shape =
            serde_json::from_str(text).map_err(|e| BaselineError::NotAReport(e.to_string()))?;
        if shape.findings.len() > MAX_BASELINE_FINDINGS {
            return Err(BaselineError::TooLarge);
        }
        Ok(Known {
            ids: shape.findings.into_iter().collect(),
        })
    }
}

/// What the baseline took out of a report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Baseline {
    /// The baseline report's path, as given.
    pub path: String,
    /// Findings left out because the baseline has them, in all and by kind.
    pub known: u64,
    pub known_by_kind: BTreeMap<&'static str, u64>,
    /// Findings listed: new since the baseline.
    pub new: u64,
}

impl Report {
    /// Keep only the findings `known` does not have; the summary's counts
    /// of findings become those of the new ones.
    pub fn against(&mut self, known: &Known, path: &str) {
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        self.findings.retain(|f| {
            let old = known.ids.contains(&FindingId::of(f));
            if old {
                *by_kind.entry(f.kind.as_str()).or_default() += 1;
            }
            !old
        });
        for (k, n) in self.summary.findings.iter_mut() {
            *n = n.saturating_sub(by_kind.get(k).copied().unwrap_or(0));
        }
        self.baseline = Some(Baseline {
            path: path.to_string(),
            known: by_kind.values().sum(),
            known_by_kind: by_kind,
            new: self.findings.len() as u64,
        });
    }
}
