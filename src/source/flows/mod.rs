//! Flow records as sensors: AWS VPC Flow Logs and Azure VNet / NSG flow
//! logs. A reader turns a file into [`Observation`]s (one per connection
//! it can place) and the gaps its source declares; they meet the packets'
//! observations in the pipeline. Bad records are counted by reason, never
//! fatal; a file cut short says where it stopped.
//!
//! A flow record is not a handshake: each reader derives outcomes only as
//! far as its source allows (see [`vpc`] and [`azure`], and the fidelity of
//! their [`SourceKind`]).

pub mod azure;
mod interfaces;
pub mod netflow;
pub mod vpc;

pub use interfaces::{Ends, Interfaces, INTERFACE_CAPACITY, MAX_INTERFACE_ID};

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use crate::observation::{FlowKey, Initiator, Observation, SourceKind};
use crate::source::SourceError;
use crate::time::Timestamp;

/// The flow log formats, told apart by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowFormat {
    /// AWS VPC Flow Logs: space-separated fields, the default version 2
    /// format or the fields its header line names.
    VpcFlowLog,
    /// Azure VNet flow logs and NSG flow logs (JSON).
    AzureFlowLog,
}

impl FlowFormat {
    pub fn kind(self) -> SourceKind {
        match self {
            FlowFormat::VpcFlowLog => SourceKind::VpcFlowLog,
            FlowFormat::AzureFlowLog => SourceKind::AzureFlowLog,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FlowFormat::VpcFlowLog => "vpc-flow-log",
            FlowFormat::AzureFlowLog => "azure-flow-log",
        }
    }

    /// The format of a file whose (decompressed) text starts with `head`;
    /// `None` for anything else.
    pub fn detect(head: &[u8]) -> Option<FlowFormat> {
        let text = String::from_utf8_lossy(head);
        let t = text.trim_start();
        if t.starts_with('{') {
            const MARKS: [&str; 4] = [
                "flowLogVersion",
                "FlowLogFlowEvent",
                "NetworkSecurityGroupFlowEvent",
                "flowTuples",
            ];
            return MARKS
                .iter()
                .any(|m| t.contains(m))
                .then_some(FlowFormat::AzureFlowLog);
        }
        let first = t.lines().next().unwrap_or("");
        vpc::looks_like(first).then_some(FlowFormat::VpcFlowLog)
    }
}

/// Where and why a flow file stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStop {
    /// Byte offset (of the decompressed text) of the first byte not read.
    pub offset: u64,
    pub reason: String,
}

/// One item of a flow file.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowItem {
    Observed(Observation),
    /// The source declares it did not record this interval (AWS `NODATA`,
    /// `SKIPDATA`, an exporter's sequence gap): required edges are not
    /// judged missing over it.
    Gap {
        from: Timestamp,
        to: Timestamp,
        /// The declared exporter (its position in the site's `exporters:`)
        /// whose records were lost, once the site tells it: only the edges
        /// it covers go unjudged. `None`: every edge (a flow log's gap, an
        /// undeclared exporter's).
        exporter: Option<usize>,
    },
}

impl FlowItem {
    pub fn ts(&self) -> Timestamp {
        match self {
            FlowItem::Observed(o) => o.ts,
            FlowItem::Gap { to, .. } => *to,
        }
    }
}

/// A flow file read in full.
#[derive(Clone, Debug, Default)]
pub struct FlowFile {
    /// In time order.
    pub items: Vec<FlowItem>,
    /// Records read (data lines, tuples).
    pub records: u64,
    /// Records by what was made of them: a closed set of reasons per
    /// reader (`observed`, `not_tcp`, `malformed_...`, ...).
    pub counts: BTreeMap<&'static str, u64>,
    /// Denied connections by the rule that denied them (Azure).
    pub denied_by: BTreeMap<String, u64>,
    /// The addresses at an end of every record, per logged interface: its
    /// owner's (see [`Ends`]).
    pub interfaces: Interfaces,
    pub stopped: Option<FlowStop>,
}

impl FlowFile {
    fn count(&mut self, reason: &'static str) {
        *self.counts.entry(reason).or_insert(0) += 1;
    }

    fn observe(&mut self, obs: Observation) {
        self.count("observed");
        self.items.push(FlowItem::Observed(obs));
    }

    fn sort(&mut self) {
        self.items.sort_by_key(FlowItem::ts);
    }

    pub fn observations(&self) -> impl Iterator<Item = &Observation> {
        self.items.iter().filter_map(|i| match i {
            FlowItem::Observed(o) => Some(o),
            FlowItem::Gap { .. } => None,
        })
    }
}

/// A connection's key with the record's source as `client` when
/// `forward`, else the other way round.
fn key(src: (IpAddr, u16), dst: (IpAddr, u16), forward: bool) -> FlowKey {
    let ((client, client_port), (server, server_port)) =
        if forward { (src, dst) } else { (dst, src) };
    FlowKey {
        client,
        client_port,
        server,
        server_port,
    }
}

/// Which end initiated, from ports alone: the lower port is the service.
fn by_ports(src_port: u16, dst_port: u16) -> (bool, Initiator) {
    (src_port >= dst_port, Initiator::Inferred)
}

pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The bytes of a file, gunzipped when gzip (AWS delivers `.log.gz`); a
/// stream cut short keeps what it gave, with the reason.
fn decompressed(bytes: Vec<u8>) -> (Vec<u8>, Option<String>) {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return (bytes, None);
    }
    let mut out = Vec::new();
    let mut gz = flate2::read::MultiGzDecoder::new(&bytes[..]);
    let mut buf = [0u8; 64 * 1024];
    loop {
        match gz.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(format!("gzip stream: {e}"))),
        }
    }
}

/// A line's (or a tuple's) fields, split on the stack (this is done for
/// every one): the first `N` kept, all counted.
pub(crate) struct Fields<'a, const N: usize> {
    kept: [&'a str; N],
    len: usize,
}

impl<'a, const N: usize> Fields<'a, N> {
    pub fn of(parts: impl Iterator<Item = &'a str>) -> Self {
        let mut kept = [""; N];
        let mut len = 0;
        for f in parts {
            if let Some(slot) = kept.get_mut(len) {
                *slot = f;
            }
            len += 1;
        }
        Fields { kept, len }
    }

    /// How many fields there are (kept or not).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fields kept.
    pub fn kept(&self) -> &[&'a str] {
        &self.kept[..self.len.min(N)]
    }

    pub fn get(&self, i: usize) -> Option<&'a str> {
        self.kept().get(i).copied()
    }
}

/// The flow format of the file at `path`, by its first bytes.
pub fn detect_file(path: &Path) -> Result<Option<FlowFormat>, SourceError> {
    if path.as_os_str() == "-" {
        return Ok(None);
    }
    let io_err = |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    };
    let read_head = |n: u64| -> Result<Vec<u8>, SourceError> {
        let mut head = Vec::with_capacity(512);
        std::fs::File::open(path)
            .map_err(io_err)?
            .take(n)
            .read_to_end(&mut head)
            .map_err(io_err)?;
        if head.starts_with(&GZIP_MAGIC) {
            let mut plain = Vec::with_capacity(512);
            let file = std::fs::File::open(path).map_err(io_err)?;
            // A short or broken stream gives what it has: detection only.
            let _ = flate2::read::MultiGzDecoder::new(file)
                .take(n)
                .read_to_end(&mut plain);
            head = plain;
        }
        Ok(head)
    };
    let head = read_head(512)?;
    let format = FlowFormat::detect(&head);
    // A pretty-printed document may name its kind further in.
    if format.is_none() && azure::json_shape(&head) == Some(azure::JsonShape::Document) {
        return Ok(FlowFormat::detect(&read_head(DOCUMENT_HEAD)?));
    }
    Ok(format)
}

/// Bytes of a JSON document over lines looked at for its kind.
pub const DOCUMENT_HEAD: u64 = 64 * 1024;

/// Read the flow file at `path` (of `format`) in full.
pub fn read_file(path: &Path, format: FlowFormat) -> Result<FlowFile, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(read(format, bytes))
}

/// Read a flow file's bytes (plain or gzip).
pub fn read(format: FlowFormat, bytes: Vec<u8>) -> FlowFile {
    let (text, cut) = decompressed(bytes);
    let mut f = match format {
        FlowFormat::VpcFlowLog => vpc::read(&text),
        FlowFormat::AzureFlowLog => azure::read(&text),
    };
    if let (None, Some(reason)) = (&f.stopped, cut) {
        f.stopped = Some(FlowStop {
            offset: text.len() as u64,
            reason,
        });
    }
    f.sort();
    f
}
