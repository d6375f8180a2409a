//! The one way commands open sources: capture files read as fast as they
//! go (`replay`), paced replays (`run --replay`, `demo`), live interfaces
//! (`watch`, `run -i`), or no capture at all (`--follow` alone: node logs
//! only, on the wall clock).

use std::path::PathBuf;

use jiff::tz::TimeZone;

use crate::decode::Decap;
use crate::export::metrics::Recorder;
use crate::frame::FrameSink;
use crate::pipeline::Pipeline;
use crate::policy::{Policy, Visibility};
use crate::report::{Drops, SourceFacts, Stopped};
use crate::source::file::{FileFacts, MergedFiles, Savefile};
use crate::source::live::{InterfaceChange, InterfaceStats, LiveOptions, LiveSource, TunnelPorts};
use crate::source::records::{self, NodeInfo, RecordContext, RecordFile, RecordFormat, RecordItem};
use crate::source::replay::{Replay, ReplayOptions};
use crate::source::{Poll, Source, SourceError};
use crate::time::{Outside, TimeRange, Timestamp};

/// What to capture from.
pub(super) enum InputSpec {
    Files(Vec<PathBuf>),
    Paced {
        savefiles: Vec<Savefile>,
        opts: ReplayOptions,
    },
    Live {
        interfaces: Vec<String>,
        /// Named interfaces in promiscuous mode (`--no-promisc` clears it).
        promisc: bool,
    },
    /// No capture: `--follow` alone.
    NoCapture,
}

/// The opened source.
pub(super) enum Input {
    Files(MergedFiles),
    Paced(Replay),
    Live(LiveSource),
    NoCapture(NoFrames),
}

/// The source of no capture: never a frame, always idle.
pub(super) struct NoFrames;

impl Source for NoFrames {
    fn poll(&mut self, _: &mut dyn FnMut(&crate::frame::Frame<'_>)) -> Result<Poll, SourceError> {
        Ok(Poll::Idle)
    }
}

impl Input {
    /// [`Input::open`], a live capture passing the segments of `policy`'s
    /// required-edge ports too (evidence), and the encapsulated packets of `decap`'s encapsulations.
    pub fn open_for(spec: &InputSpec, policy: &Policy, decap: Decap) -> Result<Input, SourceError> {
        match spec {
            InputSpec::Live {
                interfaces,
                promisc,
            } => {
                let opts = LiveOptions {
                    evidence_ports: policy.required_ports(),
                    promisc: *promisc,
                    tunnels: TunnelPorts {
                        vxlan: decap.vxlan.as_slice().to_vec(),
                        other: [decap.geneve.as_slice(), decap.gre_in_udp.as_slice()].concat(),
                    },
                    ..LiveOptions::default()
                };
                Ok(Input::Live(LiveSource::open(interfaces, &opts)?))
            }
            other => Input::open(other),
        }
    }

    pub fn open(spec: &InputSpec) -> Result<Input, SourceError> {
        Ok(match spec {
            InputSpec::Files(paths) => Input::Files(MergedFiles::open(paths)?),
            InputSpec::Paced { savefiles, opts } => {
                Input::Paced(Replay::open(savefiles, opts.clone())?)
            }
            InputSpec::Live {
                interfaces,
                promisc,
            } => {
                let opts = LiveOptions {
                    promisc: *promisc,
                    ..LiveOptions::default()
                };
                Input::Live(LiveSource::open(interfaces, &opts)?)
            }
            InputSpec::NoCapture => Input::NoCapture(NoFrames),
        })
    }

    /// Interface label values, by frame slot.
    pub fn interfaces(&self) -> Vec<String> {
        match self {
            Input::Files(_) | Input::Paced(_) => vec!["replay".into()],
            Input::Live(l) => l.interfaces().to_vec(),
            Input::NoCapture(_) => Vec::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Input::Live(_))
    }

    /// Whether time is the wall clock's (a live capture, or none).
    pub fn on_wall_clock(&self) -> bool {
        matches!(self, Input::Live(_) | Input::NoCapture(_))
    }

    /// Whether there is a capture at all.
    pub fn captures(&self) -> bool {
        !matches!(self, Input::NoCapture(_))
    }

    /// [`Source::poll`] of [`Input::source`]; capture files with `sink`
    /// inlined into their record loop ([`MergedFiles::poll_with`]).
    pub fn poll_with<S: FrameSink>(&mut self, sink: &mut S) -> Result<Poll, SourceError> {
        match self {
            Input::Files(f) => f.poll_with(sink),
            other => other.source().poll(&mut |f| sink.frame(f)),
        }
    }

    pub fn source(&mut self) -> &mut dyn Source {
        match self {
            Input::Files(f) => f,
            Input::Paced(r) => r,
            Input::Live(l) => l,
            Input::NoCapture(n) => n,
        }
    }

    /// Stopping: the frames a live capture already holds (see
    /// [`LiveSource::flush`]); files and replays hold none.
    pub fn flush(
        &mut self,
        sink: &mut dyn FnMut(&crate::frame::Frame<'_>),
    ) -> Result<usize, SourceError> {
        match self {
            Input::Live(l) => l.flush(sink),
            _ => Ok(0),
        }
    }

    /// The clock windows are judged on: a paced replay's capture time, or
    /// the wall clock live. Files read flat out have no clock but their own
    /// frames.
    pub fn now(&self) -> Option<Timestamp> {
        match self {
            Input::Files(_) => None,
            Input::Paced(r) => r.now(),
            Input::Live(_) | Input::NoCapture(_) => Some(Timestamp::now()),
        }
    }

    /// A new policy: a live capture passes the segments of its required-edge
    /// ports from now on (an interface that refuses the new filter keeps
    /// the old one, and says so in the log).
    pub fn follow_policy(&mut self, policy: &Policy) {
        if let Input::Live(l) = self {
            if let Err(e) = l.set_evidence_ports(&policy.required_ports()) {
                tracing::warn!(error = %e, "capture filter not changed for the new required edges");
            }
        }
    }

    /// Interfaces lost or back since the last call, onto the gauges.
    pub fn sync_interfaces(&mut self, rec: &Recorder) {
        if let Input::Live(l) = self {
            for change in l.take_changes() {
                match change {
                    InterfaceChange::Lost { slot, .. } => rec.interface_lost(slot),
                    InterfaceChange::Restored { slot, .. } => rec.capture_up(slot, true),
                }
            }
        }
    }

    /// Copy the kernel's drop counters into the metrics, and their total
    /// into the pipeline (drops make a missing edge `not_observed`).
    pub fn sync_drops(&mut self, rec: Option<&mut Recorder>, pl: &mut Pipeline) {
        if let Input::Live(l) = self {
            match l.stats() {
                Ok(stats) => {
                    if let Some(rec) = rec {
                        for (i, s) in stats.iter().enumerate() {
                            rec.capture_drops(i, u64::from(s.dropped), u64::from(s.if_dropped));
                        }
                    }
                    let total = (stats.iter())
                        .map(|s| u64::from(s.dropped) + u64::from(s.if_dropped))
                        .sum();
                    pl.capture_drops(Timestamp::now(), total);
                }
                Err(e) => tracing::warn!(error = %e, "reading capture statistics failed"),
            }
        }
    }

    /// The capture counters of each live interface (none for files).
    pub fn live_stats(&mut self) -> Vec<InterfaceStats> {
        match self {
            Input::Live(l) => l.stats().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// What the report says about where the frames came from.
    pub fn facts(&mut self) -> Vec<SourceFacts> {
        match self {
            Input::Files(f) => f.facts().into_iter().map(file_facts).collect(),
            Input::Paced(r) => r.facts().into_iter().map(file_facts).collect(),
            Input::Live(l) => live_facts(l),
            Input::NoCapture(_) => Vec::new(),
        }
    }
}

fn file_facts(f: FileFacts) -> SourceFacts {
    SourceFacts {
        path: f.path,
        format: f.format.name().into(),
        link_types: f
            .linktypes
            .iter()
            .map(|l| format!("{}({})", l.name(), l.0))
            .collect(),
        packets: f.records,
        stopped: f.stopped.map(|s| Stopped {
            offset: s.offset,
            reason: s.reason,
        }),
        dropped: None,
        ..SourceFacts::default()
    }
}

fn live_facts(live: &mut LiveSource) -> Vec<SourceFacts> {
    let stats = live.stats().unwrap_or_default();
    live.interfaces()
        .iter()
        .zip(live.linktypes())
        .enumerate()
        .map(|(i, (name, lt))| SourceFacts {
            path: name.clone(),
            format: "live".into(),
            link_types: vec![format!("{}({})", lt.name(), lt.0)],
            packets: stats.get(i).map(|s| u64::from(s.received)).unwrap_or(0),
            stopped: None,
            dropped: Some(Drops {
                kernel: stats.get(i).map_or(0, |s| u64::from(s.dropped)),
                interface: stats.get(i).map_or(0, |s| u64::from(s.if_dropped)),
            }),
            ..SourceFacts::default()
        })
        .collect()
}

/// Record files with their format.
pub(super) type RecordPaths = Vec<(PathBuf, RecordFormat)>;

/// Paths split by content: capture files, and record files.
pub(super) fn split_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, RecordPaths), SourceError> {
    let (mut captures, mut records) = (Vec::new(), Vec::new());
    for p in paths {
        match records::detect_file(p)? {
            Some(f) => records.push((p.clone(), f)),
            None => captures.push(p.clone()),
        }
    }
    Ok((captures, records))
}

/// Record files (firewall logs) read in full; their items are fed to the
/// pipeline in time order, between the frames of the captures.
pub(super) struct Records {
    files: Vec<RecordFile>,
    items: std::iter::Peekable<std::vec::IntoIter<RecordItem>>,
}

impl Records {
    /// Read every file; the site gives each node's addresses and time zone.
    pub fn open(
        paths: &[(PathBuf, RecordFormat)],
        policy: &Policy,
        timezone: Option<(String, TimeZone)>,
        sensors: &[String],
    ) -> Result<Records, SourceError> {
        let ctx = record_context(policy, timezone, sensors);
        let mut files = Vec::with_capacity(paths.len());
        for (p, format) in paths {
            files.push(records::read_file(p, *format, &ctx)?);
        }
        // Stable: at equal times, files in the order given.
        let mut items: Vec<RecordItem> = files
            .iter_mut()
            .flat_map(|f| std::mem::take(&mut f.items))
            .collect();
        items.sort_by_key(RecordItem::ts);
        Ok(Records {
            files,
            items: items.into_iter().peekable(),
        })
    }

    /// Drop the items outside `range`; a record that carried a connection
    /// counts.
    pub fn keep_within(&mut self, range: TimeRange) -> Outside {
        let mut out = Outside::default();
        let items: Vec<RecordItem> =
            std::mem::replace(&mut self.items, Vec::new().into_iter().peekable())
                .filter(|i| {
                    let inside = range.contains(i.ts());
                    if !inside {
                        out.note(i.ts(), matches!(i, RecordItem::Observed(_)));
                    }
                    inside
                })
                .collect();
        self.items = items.into_iter().peekable();
        out
    }

    /// The time of the next item not yet fed.
    pub fn next_ts(&mut self) -> Option<Timestamp> {
        self.items.peek().map(RecordItem::ts)
    }

    /// Apply the items due by `until` (all of them if `None`).
    pub fn feed_until(&mut self, pl: &mut Pipeline, until: Option<Timestamp>) {
        while let Some(item) = self.items.next_if(|i| until.is_none_or(|u| i.ts() <= u)) {
            Records::feed(pl, item);
        }
    }

    /// One record's item into the pipeline.
    pub fn feed(pl: &mut Pipeline, item: RecordItem) {
        match item {
            RecordItem::Observed(o) => pl.observe(&o),
            RecordItem::Lost { at, .. } => pl.sensor_lost(at),
            RecordItem::Covered { at } => pl.covered(at),
        }
    }

    /// Which required edges the sources judge: a capture sees what its
    /// `--sensor` nodes (or the whole site) see; logs alone cover the edges
    /// touching their nodes, and flow logs those touching `flow_nodes`
    /// (the nodes owning their interfaces) unless `--sensor` named nodes.
    pub fn visibility(
        &self,
        vis: Visibility,
        captures: bool,
        flow_nodes: Option<Vec<String>>,
    ) -> Visibility {
        if captures || (self.files.is_empty() && flow_nodes.is_none()) {
            return vis;
        }
        let mut nodes = vis.nodes;
        let mut unjudged = None;
        if !vis.limited {
            if let Some(owners) = &flow_nodes {
                unjudged = Some(flow_coverage(owners));
            }
            for n in flow_nodes.into_iter().flatten() {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        for f in &self.files {
            match &f.sensor {
                Some(s) if !nodes.iter().any(|n| n == &**s) => nodes.push(s.to_string()),
                Some(_) => {}
                None => eprintln!(
                    "warning: {}: no node of the site owns its addresses and no --sensor names one: it covers no required edge",
                    crate::quote::log_field(&f.path)
                ),
            }
        }
        Visibility {
            nodes,
            limited: true,
            unjudged,
        }
    }

    /// What the report says about each file.
    pub fn facts(&self) -> Vec<SourceFacts> {
        self.files
            .iter()
            .map(|f| {
                SourceFacts {
                    path: f.path.clone(),
                    format: f.format.name().into(),
                    packets: f.records,
                    stopped: f.stopped.as_ref().map(|s| Stopped {
                        offset: s.offset,
                        reason: s.reason.clone(),
                    }),
                    ..SourceFacts::default()
                }
                .with_fidelity(
                    f.format.kind(),
                    f.sensor.as_deref().map(str::to_string),
                    f.counts.clone(),
                )
            })
            .collect()
    }
}

/// What record readers need of the site and the command line.
pub(super) fn record_context(
    policy: &Policy,
    timezone: Option<(String, TimeZone)>,
    sensors: &[String],
) -> RecordContext {
    RecordContext {
        nodes: (policy.site.nodes.iter())
            .map(|n| NodeInfo {
                name: n.name.as_str().into(),
                addresses: n.addresses.clone(),
                timezone: n.timezone.as_deref().and_then(|z| TimeZone::get(z).ok()),
            })
            .collect(),
        timezone,
        sensor: match sensors {
            [one] => Some(one.as_str().into()),
            _ => None,
        },
    }
}

/// Why a required edge outside the flow logs' coverage is not judged.
pub(super) fn flow_coverage(owners: &[String]) -> String {
    match owners {
        [] => "outside what the flow logs cover: no logged interface is a site node's".into(),
        _ => format!(
            "outside what the flow logs cover: the interfaces of {}",
            owners.join(", ")
        ),
    }
}
