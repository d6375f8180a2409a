//! The state `run --state-dir` keeps over a restart, as written to disk:
//! required-edge evidence, findings with their first and last sighting,
//! and which findings were already reported. Versioned JSON, checked
//! against the site and model it was written under, and bounded by the
//! capacities of the tables it snapshots; a file that fails any check is
//! a [`StateError`] with a reason, never a panic.
//!
//! Names, not indices: edges and findings are stored by endpoint names and
//! addresses, and matched against the policy in force when read back.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::tally::{FindingKind, FINDINGS_PER_KIND};
use crate::observation::Outcome;
use crate::policy::{FileRole, Policy, MAX_REQUIRED_EDGES};

/// What the `format` field says: this is a portwatch state file.
pub const FORMAT: &str = "portwatch-state";
/// Bumped on any change of the fields below; another version is set aside.
pub const VERSION: u32 = 1;
/// Most reported-finding keys kept (the printed and logged findings' cap).
pub const MAX_REPORTED: usize = 10_000;
/// Most finding alert series kept (the metrics' own cap on them).
pub const MAX_ALERTS: usize = 4096;
/// Largest file read back: the tables at their caps fit well inside.
pub const MAX_BYTES: u64 = 64 << 20;

/// The site and model revision a state belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub site: String,
    pub model: String,
    /// SHA-256 of the model file (empty for a policy compiled from text).
    pub model_sha256: String,
}

impl Identity {
    pub fn of(p: &Policy) -> Identity {
        let model_sha256 = (p.sources.iter())
            .find(|f| f.role == FileRole::Model)
            .map(|f| f.sha256.clone())
            .unwrap_or_default();
        Identity {
            site: p.site.name.clone(),
            model: p.model.id.clone(),
            model_sha256,
        }
    }
}

/// Evidence of one required edge, by endpoint names and port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedEdge {
    pub src: String,
    pub dst: String,
    pub port: u16,
    /// First and last evidence (capture time, ns since the epoch).
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub count: u64,
    /// Judged missing when written: stays missing until evidence comes.
    pub missing: bool,
}

/// One finding row: its addresses are classified again when read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedFinding {
    pub kind: FindingKind,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub port: u16,
    pub count: u64,
    pub outcomes: [u64; Outcome::COUNT],
    pub filters: Vec<u64>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The ticket of the site acceptance that held when it occurred.
    #[serde(default)]
    pub accepted: Option<String>,
}

/// A finding already reported (printed, logged as an alert): how many of
/// its occurrences were counted, so the next is not reported as new.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedReport {
    pub kind: FindingKind,
    pub src: String,
    pub dst: String,
    pub port: u16,
    /// A site acceptance held: counted apart from the same finding
    /// unaccepted (reported again once the acceptance expires).
    #[serde(default)]
    pub accepted: bool,
    pub occurrences: u64,
}

/// A finding's alert series (`portwatch_finding_active`), by its labels:
/// the time of its latest occurrence (its last-seen gauge), and while the
/// gauge is held at 1, the wall-clock time that occurrence was handled (the
/// hold runs on the wall clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedAlert {
    pub src: String,
    pub dst: String,
    pub port: String,
    pub service: String,
    pub finding: String,
    /// The `accepted` label: `true` or `false`.
    #[serde(default = "not_accepted")]
    pub accepted: String,
    pub last_seen: f64,
    pub held_since_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub format: String,
    pub version: u32,
    pub identity: Identity,
    /// When it was written (capture time).
    pub written_ns: u64,
    /// The last time the capture was seen to drop packets.
    pub drops_ns: Option<u64>,
    pub edges: Vec<SavedEdge>,
    pub findings: Vec<SavedFinding>,
    pub reported: Vec<SavedReport>,
    /// The finding alert series of the metrics.
    #[serde(default)]
    pub alerts: Vec<SavedAlert>,
}

fn not_accepted() -> String {
    "false".to_string()
}

/// Why a state file is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("{size} bytes, more than the {max} a state file may have")]
    TooLarge { size: u64, max: u64 },
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("not valid JSON of a state file: {0}")]
    Corrupt(String),
    #[error("not a portwatch state file (format {found:?})")]
    Foreign { found: String },
    #[error("format version {found}, this portwatch reads version {VERSION}")]
    Version { found: u64 },
    #[error("written for site {found:?}, this is site {want:?}")]
    OtherSite { found: String, want: String },
    #[error("written for model {found}, this is model {want}")]
    OtherModel { found: String, want: String },
    #[error("{what}: {n} entries, more than the {max} its table holds")]
    TooMany {
        what: &'static str,
        n: usize,
        max: usize,
    },
}

/// Every reason a state file is set aside: [`StateError::reason`], and a
/// file that cannot be read at all.
pub const REJECT_REASONS: [&str; 9] = [
    "too_large",
    "truncated",
    "corrupt",
    "foreign",
    "version",
    "other_site",
    "other_model",
    "too_many",
    UNREADABLE,
];
/// A state file that exists but cannot be read.
pub const UNREADABLE: &str = "unreadable";

impl StateError {
    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StateError::TooLarge { .. } => "too_large",
            StateError::Truncated(_) => "truncated",
            StateError::Corrupt(_) => "corrupt",
            StateError::Foreign { .. } => "foreign",
            StateError::Version { .. } => "version",
            StateError::OtherSite { .. } => "other_site",
            StateError::OtherModel { .. } => "other_model",
            StateError::TooMany { .. } => "too_many",
        }
    }
}

/// The fields read first, so a file of another version is told apart from
/// a corrupt one.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

impl Saved {
    pub fn new(identity: Identity, written_ns: u64) -> Saved {
        Saved {
            format: FORMAT.to_string(),
            version: VERSION,
            identity,
            written_ns,
            drops_ns: None,
            edges: Vec::new(),
            findings: Vec::new(),
            reported: Vec::new(),
            alerts: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Read `bytes` back for `want`: the format, its version, the site and
    /// model revision and the sizes are all checked.
    pub fn decode(bytes: &[u8], want: &Identity) -> Result<Saved, StateError> {
        let size = bytes.len() as u64;
        if size > MAX_BYTES {
            return Err(StateError::TooLarge {
                size,
                max: MAX_BYTES,
            });
        }
        let header: Header = serde_json::from_slice(bytes).map_err(json_error)?;
        match header.format {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            other => {
                return Err(StateError::Foreign {
                    found: other.map(|v| v.to_string()).unwrap_or_default(),
                })
            }
        }
        let version = header.version.and_then(|v| v.as_u64()).unwrap_or(0);
        if version != u64::from(VERSION) {
            return Err(StateError::Version { found: version });
        }
        let saved: Saved = serde_json::from_slice(bytes).map_err(json_error)?;
        saved.check(want)?;
        Ok(saved)
    }

    fn check(&self, want: &Identity) -> Result<(), StateError> {
        let found = &self.identity;
        if found.site != want.site {
            return Err(StateError::OtherSite {
                found: found.site.clone(),
                want: want.site.clone(),
            });
        }
        if found.model != want.model || found.model_sha256 != want.model_sha256 {
            let show = |i: &Identity| format!("{} (sha256 {})", i.model, i.model_sha256);
            return Err(StateError::OtherModel {
                found: show(found),
                want: show(want),
            });
        }
        let caps = [
            ("edges", self.edges.len(), MAX_REQUIRED_EDGES),
            (
                "findings",
                self.findings.len(),
                FINDINGS_PER_KIND * FindingKind::ALL.len(),
            ),
            ("reported", self.reported.len(), MAX_REPORTED),
            ("alerts", self.alerts.len(), MAX_ALERTS),
        ];
        for (what, n, max) in caps {
            if n > max {
                return Err(StateError::TooMany { what, n, max });
            }
        }
        Ok(())
    }
}

fn json_error(e: serde_json::Error) -> StateError {
    match e.is_eof() {
        true => StateError::Truncated(e.to_string()),
        false => StateError::Corrupt(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            site: "multi-node".into(),
            model: "qlik-sense-enterprise".into(),
            model_sha256: "ab".into(),
        }
    }

    fn sample() -> Saved {
        let mut s = Saved::new(identity(), 7_000_000_000);
        s.drops_ns = Some(5);
        s.edges.push(SavedEdge {
            src: "proxy".into(),
            dst: "central".into(),
            port: 4242,
            first_ns: Some(1),
            last_ns: Some(2),
            count: 3,
            missing: false,
        });
        s.findings.push(SavedFinding {
            kind: FindingKind::Unexpected,
            src_addr: "198.51.100.7".parse().unwrap(),
            dst_addr: "192.0.2.11".parse().unwrap(),
            port: 4747,
            count: 2,
            outcomes: [1, 0, 0, 1, 0, 0],
            filters: vec![],
            first_ns: 1,
            last_ns: 9,
            accepted: None,
        });
        s.reported.push(SavedReport {
            kind: FindingKind::Unexpected,
            src: "corp-users".into(),
            dst: "proxy".into(),
            port: 4747,
            accepted: false,
            occurrences: 2,
        });
        s.alerts.push(SavedAlert {
            src: "corp-users".into(),
            dst: "proxy".into(),
            port: "4747".into(),
            service: "qes".into(),
            finding: "unexpected".into(),
            accepted: "false".into(),
            last_seen: 9e-9,
            held_since_ns: Some(11),
        });
        s
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let s = sample();
        assert_eq!(Saved::decode(&s.encode(), &identity()), Ok(s));
    }

    #[test]
    fn bad_files_are_errors_with_their_reason() {
        let good = sample().encode();
        let reason = |bytes: &[u8]| Saved::decode(bytes, &identity()).unwrap_err().reason();
        assert_eq!(reason(&good[..good.len() / 2]), "truncated");
        assert_eq!(reason(b"\x00\x01garbage"), "corrupt");
        assert_eq!(reason(b"{\"format\": \"something-else\"}"), "foreign");
        assert_eq!(reason(b"[1, 2]"), "foreign");
        let text = String::from_utf8(good.clone()).unwrap();
        let v2 = text.replacen("\"version\":1", "\"version\":2", 1);
        assert_eq!(reason(v2.as_bytes()), "version");
        let other = text.replacen("\"multi-node\"", "\"single-node\"", 1);
        assert_eq!(reason(other.as_bytes()), "other_site");
        let revised = text.replacen("\"model_sha256\":\"ab\"", "\"model_sha256\":\"cd\"", 1);
        assert_eq!(reason(revised.as_bytes()), "other_model");
        let extra = text.replacen("\"drops_ns\"", "\"surprise\":1,\"drops_ns\"", 1);
        assert_eq!(reason(extra.as_bytes()), "corrupt");
        let big = vec![b' '; MAX_BYTES as usize + 1];
        assert_eq!(reason(&big), "too_large");
    }

    #[test]
    fn more_entries_than_the_tables_hold_are_refused() {
        let mut s = sample();
        let r = s.reported[0].clone();
        s.reported = vec![r; MAX_REPORTED + 1];
        let e = Saved::decode(&s.encode(), &identity()).unwrap_err();
        assert_eq!(e.reason(), "too_many");
        assert!(REJECT_REASONS.contains(&e.reason()));
        assert!(e.to_string().starts_with("reported: 10001 entries"), "{e}");
    }
}
