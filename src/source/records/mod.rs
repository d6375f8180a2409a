//! Record sources: the logs a node keeps of its own connections (the
//! Windows Firewall log). A reader turns each record into an
//! [`Observation`] directly; they meet the packets' observations in the
//! pipeline. Bad records are counted by reason, never fatal; a file cut
//! short says where it stopped.

pub mod follow;
pub mod pfirewall;
pub mod text;
pub mod wfp;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::observation::{Observation, SourceKind};
use crate::source::SourceError;
use crate::time::Timestamp;

/// The formats a record file can have, told apart by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// `pfirewall.log`: `#Fields:` header, one line per record.
    FirewallLog,
    /// Filtering Platform audit events: `.evtx`, or NDJSON (Winlogbeat
    /// ECS, flat NXLog).
    WfpEvents,
    /// An AWS VPC flow log followed as it grows (`--follow`); `replay`
    /// reads it as a flow log ([`crate::source::flows`]), never as this.
    VpcFlow,
}

impl RecordFormat {
    pub fn kind(self) -> SourceKind {
        match self {
            RecordFormat::FirewallLog => SourceKind::FirewallLog,
            RecordFormat::WfpEvents => SourceKind::WfpEvents,
            RecordFormat::VpcFlow => SourceKind::VpcFlowLog,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordFormat::FirewallLog => "pfirewall",
            RecordFormat::WfpEvents => "wfp_events",
            RecordFormat::VpcFlow => "vpc_flow",
        }
    }

    /// The format of a file starting with `head` (its first few hundred
    /// bytes), if it is a record file; `None` for anything else (a
    /// capture, or not ours).
    pub fn detect(head: &[u8]) -> Option<RecordFormat> {
        let text = text::decode_head(head);
        let t = text.trim_start();
        if t.starts_with("#Version:") || t.starts_with("#Software:") || t.starts_with("#Fields:") {
            return Some(RecordFormat::FirewallLog);
        }
        crate::source::wfp::read::sniff(head).map(|_| RecordFormat::WfpEvents)
    }
}

/// What readers need of the site: each node's name, addresses and time
/// zone, and the command line's `--timezone` and `--sensor`.
#[derive(Clone, Debug, Default)]
pub struct RecordContext {
    pub nodes: Vec<NodeInfo>,
    /// `--timezone`: for a log whose node has no `timezone:`.
    pub timezone: Option<(String, TimeZone)>,
    /// `--sensor`, when it names one node: the node of a log whose
    /// addresses match none.
    pub sensor: Option<Arc<str>>,
}

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: Arc<str>,
    pub addresses: Vec<IpAddr>,
    /// The site file's `timezone:` (an IANA name), resolved.
    pub timezone: Option<TimeZone>,
}

impl RecordContext {
    /// The node owning `addr`.
    pub fn node_of(&self, addr: IpAddr) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.addresses.contains(&addr))
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| &*n.name == name)
    }
}

/// Where and why a record file stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordStop {
    /// Byte offset of the first record not read.
    pub offset: u64,
    pub reason: String,
}

/// One item of a record file, in time order.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordItem {
    Observed(Observation),
    /// The sensor lost events here (its own count of them).
    Lost {
        at: Timestamp,
        events: u64,
    },
    /// The source was alive at `at` (a line that gave no observation,
    /// such as UDP): its span reaches this far.
    Covered {
        at: Timestamp,
    },
}

impl RecordItem {
    pub fn ts(&self) -> Timestamp {
        match self {
            RecordItem::Observed(o) => o.ts,
            RecordItem::Lost { at, .. } | RecordItem::Covered { at } => *at,
        }
    }
}

/// One record of a followed file (`--follow`): the node whose record it
/// is, if known, what was made of it (a closed set of reasons: the same
/// as in [`RecordFile::counts`]), and what it gives the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    pub node: Option<Arc<str>>,
    pub reason: &'static str,
    pub item: Option<RecordItem>,
}

impl Counted {
    pub fn new(node: Option<Arc<str>>, reason: &'static str, item: Option<RecordItem>) -> Counted {
        Counted { node, reason, item }
    }
}

/// A record file read in full.
#[derive(Clone, Debug)]
pub struct RecordFile {
    pub path: String,
    pub format: RecordFormat,
    /// The node whose log it is, if found.
    pub sensor: Option<Arc<str>>,
    /// In time order.
    pub items: Vec<RecordItem>,
    /// Records (lines) read, data lines only.
    pub records: u64,
    /// Records by the action the source logged (`allow`, `drop`, ...).
    pub actions: BTreeMap<&'static str, u64>,
    /// Records by what was made of them: a closed set of reasons.
    pub counts: BTreeMap<&'static str, u64>,
    pub stopped: Option<RecordStop>,
}

/// Why a record file was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "{path}: a Windows Firewall log is in the node's local time, and its time zone is not known{node}: \
         give the node `timezone:` (an IANA name such as Europe/Berlin) in the site file, or --timezone"
    )]
    NoTimeZone { path: String, node: String },
}

impl From<RecordError> for SourceError {
    fn from(e: RecordError) -> Self {
        SourceError::Refused {
            path: match &e {
                RecordError::NoTimeZone { path, .. } => path.clone(),
            },
            what: e.to_string(),
        }
    }
}

/// The record format of the file at `path`, by its first bytes.
pub fn detect_file(path: &Path) -> Result<Option<RecordFormat>, SourceError> {
    use std::io::Read;
    if path.as_os_str() == "-" {
        return Ok(None);
    }
    let io_err = |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .map_err(io_err)?
        .take(512)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    Ok(RecordFormat::detect(&head))
}

/// Read the record file at `path` (of `format`) in full.
pub fn read_file(
    path: &Path,
    format: RecordFormat,
    ctx: &RecordContext,
) -> Result<RecordFile, SourceError> {
    match format {
        // EVTX is read chunk by chunk, NDJSON line by line, from the file.
        RecordFormat::WfpEvents => return wfp::read_file(path, ctx),
        RecordFormat::VpcFlow => {
            return Err(SourceError::Refused {
                path: path.display().to_string(),
                what: "a VPC flow log is read as a flow log, not a node log".into(),
            })
        }
        RecordFormat::FirewallLog => {}
    }
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
        path: name.clone(),
        source,
    })?;
    Ok(pfirewall::read(name, &bytes, ctx)?)
}
