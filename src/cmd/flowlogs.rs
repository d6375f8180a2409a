//! Flow log files given to `replay` among the captures: told apart by
//! content, read in full, and fed to the pipeline merged in time order
//! with the frames.
//!
//! A capture of NetFlow/IPFIX export traffic is a flow source too: a pcap
//! or pcapng file whose first [`EXPORT_PROBE_FRAMES`] frames (or all, if
//! fewer) are each a UDP datagram with a v5, v9 or IPFIX header. Its
//! datagrams go through one decoder shared by all such files of the
//! replay, in the order given (a template in one file serves the data of
//! the next), each with its sender as the exporter and its frame's time;
//! any other frame in it is counted (`not_export`). A capture that mixes
//! export traffic with other packets is read as packets. A sequence gap
//! of a declared exporter leaves only the edges it covers unjudged, as in
//! `run --flow-listen`; the report lists each capture's datagrams and
//! losses per exporter, by its declared name or `undeclared`, as run's
//! metrics do, and counts the datagrams of undeclared exporters
//! (`undeclared_exporter`) as run does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::flowlisten::{Cover, ExporterIndex, GapEdges, UNDECLARED_REASON};
use crate::decode;
use crate::export::metrics::ExporterCounts;
use crate::observation::SourceKind;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::report::{ExporterFacts, SourceFacts, Stopped};
use crate::site::UNDECLARED;
use crate::source::file::{FileSource, Savefile};
use crate::source::flows::netflow::{Collector, Version};
use crate::source::flows::{self, FlowFile, FlowItem};
use crate::source::SourceError;
use crate::time::{Outside, TimeRange, Timestamp};

/// Frames looked at to tell a capture of export traffic.
pub const EXPORT_PROBE_FRAMES: usize = 32;

/// One flow file of a replay.
struct LogFile {
    path: String,
    format: &'static str,
    kind: SourceKind,
    file: FlowFile,
    /// A capture of export packets: per declared exporter (by position in
    /// the site's `exporters:`), then the undeclared ones. Empty otherwise.
    exporters: Vec<ExporterCounts>,
}

/// The flow logs of a replay and what is left of them to feed.
#[derive(Default)]
pub(super) struct FlowLogs {
    files: Vec<LogFile>,
    /// Every file's items, latest first (fed from the back).
    pending: Vec<FlowItem>,
    /// What the captures of export packets cover, by run's rule.
    export_cover: Cover,
    gap_edges: GapEdges,
}

impl FlowLogs {
    /// Split `paths` into captures (returned) and flow logs (read).
    pub fn split(
        paths: &[PathBuf],
        policy: &Policy,
    ) -> Result<(Vec<PathBuf>, FlowLogs), SourceError> {
        let mut captures = Vec::new();
        let mut logs = FlowLogs::default();
        let mut collector = Collector::new();
        collector.origins = Some(Vec::new());
        for p in paths {
            match flows::detect_file(p)? {
                None if is_export_capture(p)? => {
                    let mut exporters =
                        vec![ExporterCounts::default(); policy.site.exporters.len() + 1];
                    let cover = &mut logs.export_cover;
                    let f = read_export_capture(p, &mut collector, policy, cover, &mut exporters)?;
                    logs.pending.extend(f.items.iter().cloned());
                    logs.files.push(LogFile {
                        path: p.display().to_string(),
                        format: EXPORT_FORMAT,
                        kind: SourceKind::FlowExport,
                        file: f,
                        exporters,
                    });
                }
                None => captures.push(p.clone()),
                Some(format) => {
                    let f = flows::read_file(p, format)?;
                    logs.pending.extend(f.items.iter().cloned());
                    logs.files.push(LogFile {
                        path: p.display().to_string(),
                        format: format.name(),
                        kind: format.kind(),
                        file: f,
                        exporters: Vec::new(),
                    });
                }
            }
        }
        // What waited (a direction for the other, a set for its template)
        // belongs to the last export file.
        let mut rest = Vec::new();
        let before = collector.counts.clone();
        collector.finish(&mut rest);
        if let Some(last) = (logs.files.iter_mut())
            .rev()
            .find(|f| f.kind == SourceKind::FlowExport)
        {
            let cover = &mut logs.export_cover;
            cover_items(
                &mut collector,
                policy,
                cover,
                &mut last.exporters,
                &mut rest,
            );
            let f = &mut last.file;
            add_since(&mut f.counts, &before, &collector.counts);
            logs.pending.extend(rest.iter().cloned());
            f.items.extend(rest);
        }
        logs.pending.sort_by_key(|i| std::cmp::Reverse(i.ts()));
        Ok((captures, logs))
    }

    /// Drop the items outside `range`; a record that carried a connection
    /// counts.
    pub fn keep_within(&mut self, range: TimeRange) -> Outside {
        let mut out = Outside::default();
        self.pending.retain(|i| {
            let inside = range.contains(i.ts());
            if !inside {
                out.note(i.ts(), matches!(i, FlowItem::Observed(_)));
            }
            inside
        });
        out
    }

    /// Feed the items due by `ts` (a frame's time), then `ts` is the frame's.
    pub fn feed_until(&mut self, pl: &mut Pipeline, ts: Timestamp) {
        while self.pending.last().is_some_and(|i| i.ts() <= ts) {
            if let Some(item) = self.pending.pop() {
                self.feed(pl, &item);
            }
        }
    }

    /// The time of the next item not yet fed.
    pub fn next_ts(&self) -> Option<Timestamp> {
        self.pending.last().map(FlowItem::ts)
    }

    pub fn feed_rest(&mut self, pl: &mut Pipeline) {
        while let Some(item) = self.pending.pop() {
            self.feed(pl, &item);
        }
    }

    /// A gap is judged as `run --flow-listen` judges it.
    fn feed(&mut self, pl: &mut Pipeline, item: &FlowItem) {
        match item {
            FlowItem::Observed(o) => pl.observe(o),
            FlowItem::Gap { to, exporter, .. } => {
                let policy = pl.policy().clone();
                self.gap_edges.lost(pl, &policy, *exporter, *to);
            }
        }
    }

    /// The site's nodes the flow logs cover, in site order. A flow log is
    /// written per network interface and covers the node owning it: the
    /// one whose address is an end of every record of the interface (none
    /// while all its records have the same two ends, nor when no node of
    /// the site has that address). A capture of export packets covers as
    /// `run --flow-listen` does (see [`Cover`]).
    pub fn nodes(&self, policy: &Policy) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        for LogFile {
            path,
            kind,
            file: f,
            ..
        } in &self.files
        {
            if *kind == SourceKind::FlowExport {
                continue;
            }
            seen.extend(f.interfaces.owners(|a| policy.interface_owner(a)));
            if f.interfaces.untracked > 0 {
                eprintln!(
                    "warning: {}: {} records of interfaces beyond the first {}, or of an id over {} bytes, cover nothing",
                    crate::quote::log_field(path),
                    f.interfaces.untracked,
                    flows::INTERFACE_CAPACITY,
                    flows::MAX_INTERFACE_ID
                );
            }
        }
        let mut nodes: Vec<String> = (seen.into_iter())
            .map(|id| policy.endpoint(id).name.to_string())
            .collect();
        for n in &self.export_cover.nodes {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        nodes
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// What the report says of each flow log: records, fidelity, where it
    /// stopped.
    pub fn facts(&self, policy: &Policy) -> Vec<SourceFacts> {
        let names: Vec<&str> = exporter_names(policy).collect();
        self.files
            .iter()
            .map(|l| {
                let f = &l.file;
                SourceFacts {
                    path: l.path.clone(),
                    format: l.format.into(),
                    packets: f.records,
                    stopped: f.stopped.as_ref().map(|s| Stopped {
                        offset: s.offset,
                        reason: s.reason.clone(),
                    }),
                    exporters: (names.iter().zip(&l.exporters))
                        .map(|(name, n)| exporter_facts(name, n))
                        .collect(),
                    ..SourceFacts::default()
                }
                .with_fidelity(l.kind, None, f.counts.clone())
            })
            .collect()
    }
}

/// One exporter's line of the report, for `replay` and `run` alike.
fn exporter_facts(name: &str, n: &ExporterCounts) -> ExporterFacts {
    ExporterFacts {
        name: name.to_string(),
        datagrams: n.datagrams,
        lost_records: n.lost_records,
        lost_packets: n.lost_packets,
    }
}

/// Exporter names `run --flow-listen` keeps totals of: every name of a few
/// reloaded sites, and `undeclared`.
pub const MAX_EXPORTER_TOTALS: usize = 4 * (crate::site::MAX_DECLARED_EXPORTERS + 1);

/// What `run --flow-listen` heard of each exporter since it started, by
/// name, across site reloads (the metrics' counts, for its closing report).
/// Bounded by [`MAX_EXPORTER_TOTALS`]; a name past it is not kept, its
/// datagrams counted in `left_out` and logged once.
#[derive(Debug, Default)]
pub(super) struct ExporterTotals {
    by_name: BTreeMap<String, ExporterCounts>,
    pub left_out: u64,
}

impl ExporterTotals {
    /// Add `counts`: per exporter `policy` declares (by position), then
    /// the undeclared ones.
    pub fn add(&mut self, policy: &Policy, counts: &[ExporterCounts]) {
        for (name, n) in exporter_names(policy).zip(counts) {
            if *n == ExporterCounts::default() {
                continue;
            }
            let room = self.by_name.len() < MAX_EXPORTER_TOTALS;
            match self.by_name.get_mut(name) {
                Some(t) => t.add(*n),
                None if room => {
                    self.by_name.insert(name.to_string(), *n);
                }
                None => {
                    if self.left_out == 0 {
                        tracing::warn!(
                            cap = MAX_EXPORTER_TOTALS,
                            "--flow-listen: more exporter names than the closing report keeps; the metrics count them all"
                        );
                    }
                    self.left_out += n.datagrams;
                }
            }
        }
    }

    /// The report's list: every exporter `policy` declares, then those
    /// only an earlier site declared, then `undeclared`; `pending` (as
    /// for [`Self::add`]) counted in.
    pub fn facts(&self, policy: &Policy, pending: &[ExporterCounts]) -> Vec<ExporterFacts> {
        let total = |name: &str, n: Option<&ExporterCounts>| {
            let mut t = self.by_name.get(name).copied().unwrap_or_default();
            t.add(n.copied().unwrap_or_default());
            exporter_facts(name, &t)
        };
        let declared = policy.site.exporters.iter().enumerate();
        let mut out: Vec<ExporterFacts> = declared
            .map(|(i, x)| total(&x.name, pending.get(i)))
            .collect();
        let earlier = (self.by_name.iter())
            .filter(|(name, _)| {
                name.as_str() != UNDECLARED
                    && !policy.site.exporters.iter().any(|x| &x.name == *name)
            })
            .map(|(name, n)| exporter_facts(name, n));
        out.extend(earlier);
        let undeclared = pending.get(policy.site.exporters.len());
        out.push(total(UNDECLARED, undeclared));
        out
    }
}

/// The exporters' names in the order per-exporter counts are kept: each
/// the site declares, then `undeclared`.
pub(super) fn exporter_names(policy: &Policy) -> impl Iterator<Item = &str> {
    (policy.site.exporters.iter().map(|x| x.name.as_str())).chain(std::iter::once(UNDECLARED))
}

/// The format name of a capture of export traffic.
const EXPORT_FORMAT: &str = "netflow-ipfix-capture";

/// Whether the capture at `path` holds export traffic only (see the module
/// documentation). A file that is not a capture is left to the capture
/// reader to refuse.
fn is_export_capture(path: &Path) -> Result<bool, SourceError> {
    if path.as_os_str() == "-" {
        return Ok(false);
    }
    // Read on demand, no read-ahead thread: a few frames are looked at.
    let probe = Savefile::Path(path.to_path_buf());
    let mut file = match FileSource::open_savefile(&probe, false) {
        Ok(f) => f,
        Err(SourceError::NotACapture { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut seen = 0;
    while seen < EXPORT_PROBE_FRAMES {
        let Some(f) = file.next_frame() else { break };
        seen += 1;
        let export = decode::datagram(f.linktype, f.data)
            .is_some_and(|d| Version::detect(d.payload).is_some());
        if !export {
            return Ok(false);
        }
    }
    Ok(seen > 0)
}

/// Every export datagram of the capture at `path` through `collector`,
/// its sender and items into `cover`, its datagrams and losses into
/// `exporters` (see [`LogFile::exporters`]); its other frames counted.
fn read_export_capture(
    path: &Path,
    collector: &mut Collector,
    policy: &Policy,
    cover: &mut Cover,
    exporters: &mut [ExporterCounts],
) -> Result<FlowFile, SourceError> {
    let mut file = FileSource::open(path)?;
    let mut f = FlowFile::default();
    let records = collector.records;
    let before = collector.counts.clone();
    let (mut not_export, mut undeclared) = (0u64, 0u64);
    let last = exporters.len().saturating_sub(1);
    while let Some(frame) = file.next_frame() {
        match decode::datagram(frame.linktype, frame.data) {
            Some(d) => {
                let i = cover.sender(policy, d.src, Version::domain(d.payload));
                undeclared += u64::from(i.is_none());
                if let Some(n) = exporters.get_mut(i.unwrap_or(last)) {
                    n.datagrams += 1;
                }
                collector.packet(d.src, frame.ts, d.payload, &mut f.items);
            }
            None => not_export += 1,
        }
    }
    // A connection's two directions are in one capture.
    collector.settle_joins(&mut f.items);
    cover_items(collector, policy, cover, exporters, &mut f.items);
    for (reason, n) in [("not_export", not_export), (UNDECLARED_REASON, undeclared)] {
        if n > 0 {
            *collector.counts.entry(reason).or_insert(0) += n;
        }
    }
    f.records = collector.records - records;
    add_since(&mut f.counts, &before, &collector.counts);
    f.stopped = file.stopped().map(|s| flows::FlowStop {
        offset: s.offset,
        reason: s.reason.clone(),
    });
    Ok(f)
}

/// The records of `items` (all the collector put out since the last call,
/// whose origins it holds) into `cover`; each gap told its declared
/// exporter and counted under it in `exporters` (the undeclared last).
fn cover_items(
    collector: &mut Collector,
    policy: &Policy,
    cover: &mut Cover,
    exporters: &mut [ExporterCounts],
    items: &mut [FlowItem],
) {
    let origins = collector.origins.as_mut().map(std::mem::take);
    let mut index = ExporterIndex::default();
    let undeclared = exporters.len().saturating_sub(1);
    for (item, from) in items.iter_mut().zip(origins.unwrap_or_default()) {
        let i = index.of(policy, &from);
        match item {
            FlowItem::Observed(o) => cover.observed(policy, i, o),
            FlowItem::Gap { exporter, .. } => {
                *exporter = i;
                if let Some(n) = exporters.get_mut(i.unwrap_or(undeclared)) {
                    n.lost_records += from.lost.records;
                    n.lost_packets += from.lost.packets;
                }
            }
        }
    }
}

/// Add to `to` what `after` counts beyond `before`.
fn add_since(
    to: &mut BTreeMap<&'static str, u64>,
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) {
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 {
            *to.entry(k).or_insert(0) += d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multi-node site with `exporters` (name, covered node) declared.
    fn site(exporters: &[(&str, &str)]) -> Policy {
        let base = std::fs::read_to_string("deploy/sites/multi-node.yaml").unwrap();
        let mut text = format!("{base}exporters:\n");
        for (name, covers) in exporters {
            text += &format!("  - name: {name}\n    address: 192.0.2.200\n    observation_domain: {}\n    covers: [{covers}]\n", text.len());
        }
        let dir = std::env::temp_dir().join(format!("portwatch-totals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.yaml", exporters[0].0));
        std::fs::write(&path, text).unwrap();
        let policy = crate::config::load_policy(&path, None).unwrap().policy;
        let _ = std::fs::remove_dir_all(&dir);
        policy
    }

    fn counts(datagrams: u64, lost_records: u64) -> ExporterCounts {
        ExporterCounts {
            datagrams,
            lost_records,
            lost_packets: 0,
        }
    }

    fn line(name: &str, datagrams: u64, lost_records: u64) -> ExporterFacts {
        exporter_facts(name, &counts(datagrams, lost_records))
    }

    /// Counts add up by name across a reload; an exporter only the earlier
    /// site declared keeps its line, after the current site's; what is
    /// pending is counted in.
    #[test]
    fn exporter_totals_sum_by_name_across_a_reload() {
        let a = site(&[("edge", "proxy"), ("core", "engine1")]);
        let b = site(&[("core", "engine1"), ("spine", "central")]);
        let mut t = ExporterTotals::default();
        t.add(&a, &[counts(3, 1), counts(2, 0), counts(1, 0)]);
        t.add(&b, &[counts(4, 2), ExporterCounts::default(), counts(1, 5)]);
        let pending = [
            ExporterCounts::default(),
            counts(1, 0),
            ExporterCounts::default(),
        ];
        assert_eq!(
            t.facts(&b, &pending),
            vec![
                line("core", 6, 2),
                line("spine", 1, 0),
                line("edge", 3, 1),
                line(UNDECLARED, 2, 5),
            ]
        );
        assert_eq!(t.left_out, 0);
    }
}
