//! Proposals drawn from traffic, for review: site entries (nodes, user
//! networks, externals, allowances) that would explain what a capture shows.
//! Pure: it reads the flows an [`Observer`] kept from the pipeline's events
//! and a policy; the `propose` command does the reading and printing.
//!
//! A proposal is never applied by portwatch. Its document is a site file
//! (`--model`) or a patch (`--site`): a YAML mapping whose keys (`nodes`,
//! `user_networks`, `externals`, `allow`) are lists to append to the site
//! file's lists of the same name.

mod infer;
mod observe;
mod patch;
mod render;
mod review;
mod roles;

pub use infer::{covering_cidrs, infer, Inferred, Mode};
pub use observe::{FlowId, FlowStats, Gaps, Observer, MAX_FLOWS};
pub use patch::{allow_entries, compile, empty_site, patched_site, Allowances, MAX_SUSPICIOUS};
pub use review::{edge_gaps, left_out};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::state::tally::FindingKind;
use crate::time::Timestamp;

/// Why a capture holds too little to infer from: what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    #[error(
        "no connection attempts (TCP SYN) in {frames} frames: nothing to infer from; the \
         capture needs the start of connections"
    )]
    NoSyn { frames: u64 },
    #[error(
        "{syns} SYNs but no SYN-ACKs seen: a one-way capture (only clients' packets) cannot \
         show which addresses accept connections; capture both directions"
    )]
    NoSynAck { syns: u64 },
    #[error(
        "no connection attempt was answered with SYN-ACK: no established connection to infer from"
    )]
    NoEstablished,
    #[error(
        "no address accepted a connection on a port of the model's roles (such as 4242 for \
         QRS or 443 for QPS): nothing to make a node of"
    )]
    NoNode,
}

/// An entry and the evidence for it (YAML comments; a list in JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposed<T> {
    pub entry: T,
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    pub name: String,
    pub addresses: Vec<String>,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkEntry {
    pub name: String,
    pub cidrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalEntry {
    pub name: String,
    pub addresses: Vec<String>,
    pub services: Vec<String>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowEntry {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub reason: String,
}

/// What the traffic showed of one proposed allowance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowEvidence {
    pub attempts: u64,
    pub established: u64,
    pub source_addresses: usize,
    pub first_seen: String,
    pub last_seen: String,
}

/// How much traffic an allowance needs before it is proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Fewest attempts per (source, destination, port), at least 1.
    pub min_attempts: u64,
    /// Fewest calendar days (UTC) from the first attempt to the last, both
    /// counted, at least 1.
    pub min_days: u64,
}

impl Thresholds {
    /// `--min-attempts 3 --min-days 1`: one attempt, or two, is no pattern.
    pub const DEFAULT: Thresholds = Thresholds {
        min_attempts: 3,
        min_days: 1,
    };
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::DEFAULT
    }
}

/// Why an observation is held back for review instead of proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suspicion {
    /// A host the site does not know connected in: never declared from
    /// traffic alone, whatever its count.
    UnknownHost,
    /// Never established: refused or unanswered only.
    RefusedOnly,
    /// One attempt.
    Single,
    /// Fewer attempts than `--min-attempts`.
    FewAttempts,
    /// Over fewer days than `--min-days`.
    FewDays,
}

impl Suspicion {
    pub fn as_str(self) -> &'static str {
        match self {
            Suspicion::UnknownHost => "unknown_host",
            Suspicion::RefusedOnly => "refused_only",
            Suspicion::Single => "single",
            Suspicion::FewAttempts => "few_attempts",
            Suspicion::FewDays => "few_days",
        }
    }
}

/// An observation listed for review, never proposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suspicious {
    pub reason: Suspicion,
    /// The source endpoint, or the address of a host the site does not know.
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub attempts: u64,
    pub established: u64,
    pub source_addresses: usize,
    pub days: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub why: String,
}

/// A required edge and how long it went without evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EdgeGap {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub window_seconds: u64,
    pub evidence: u64,
    /// Longest time between two consecutive pieces of evidence.
    pub longest_gap_seconds: Option<u64>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

/// A finding a replay against the proposed site would still report, and
/// why the proposal does not make it go away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub kind: FindingKind,
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub count: u64,
    pub why: String,
}

/// The captures a proposal was drawn from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceSummary {
    pub captures: Vec<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub attempts: u64,
    pub established: u64,
}

impl SourceSummary {
    pub fn of(
        captures: Vec<String>,
        span: Option<(Timestamp, Timestamp)>,
        flows: &BTreeMap<FlowId, FlowStats>,
    ) -> Self {
        SourceSummary {
            captures,
            first_seen: span.map(|s| s.0.rfc3339()),
            last_seen: span.map(|s| s.1.rfc3339()),
            attempts: flows.values().map(|f| f.attempts).sum(),
            established: flows.values().map(FlowStats::established).sum(),
        }
    }
}

/// Site file or patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Patch,
    Site,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub kind: Kind,
    /// The site patched, or the name given to the inferred site.
    pub site: String,
    pub model: String,
    /// What it was drawn from.
    pub source: SourceSummary,
    pub nodes: Vec<Proposed<NodeEntry>>,
    pub user_networks: Vec<Proposed<NetworkEntry>>,
    pub externals: Vec<Proposed<ExternalEntry>>,
    pub allow: Vec<Proposed<AllowEntry>>,
    #[serde(skip)]
    pub allow_evidence: Vec<AllowEvidence>,
    pub required_edges: Vec<EdgeGap>,
    /// Held back for review: never part of the document.
    pub suspicious: Vec<Suspicious>,
    pub left_out: Vec<LeftOut>,
    pub notes: Vec<String>,
}

impl Proposal {
    pub fn to_yaml(&self) -> String {
        render::yaml(self)
    }

    pub fn to_json(&self) -> String {
        render::json(self)
    }
}
