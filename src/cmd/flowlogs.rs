//! Flow log files given to `replay` among the captures: told apart by
//! content, read in full, and fed to the pipeline merged in time order
//! with the frames.

use std::path::PathBuf;

use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::report::{SourceFacts, Stopped};
use crate::source::flows::{self, FlowFile, FlowFormat, FlowItem};
use crate::source::SourceError;
use crate::time::Timestamp;

/// The flow logs of a replay and what is left of them to feed.
#[derive(Default)]
pub(super) struct FlowLogs {
    files: Vec<(String, FlowFormat, FlowFile)>,
    /// Every file's items, latest first (fed from the back).
    pending: Vec<FlowItem>,
}

impl FlowLogs {
    /// Split `paths` into captures (returned) and flow logs (read).
    pub fn split(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, FlowLogs), SourceError> {
        let mut captures = Vec::new();
        let mut logs = FlowLogs::default();
        for p in paths {
            match flows::detect_file(p)? {
                None => captures.push(p.clone()),
                Some(format) => {
                    let f = flows::read_file(p, format)?;
                    logs.pending.extend(f.items.iter().cloned());
                    logs.files.push((p.display().to_string(), format, f));
                }
            }
        }
        logs.pending.sort_by_key(|i| std::cmp::Reverse(i.ts()));
        Ok((captures, logs))
    }

    /// Feed the items due by `ts` (a frame's time), then `ts` is the frame's.
    pub fn feed_until(&mut self, pl: &mut Pipeline, ts: Timestamp) {
        while self.pending.last().is_some_and(|i| i.ts() <= ts) {
            if let Some(item) = self.pending.pop() {
                feed(pl, &item);
            }
        }
    }

    /// The time of the next item not yet fed.
    pub fn next_ts(&self) -> Option<Timestamp> {
        self.pending.last().map(FlowItem::ts)
    }

    pub fn feed_rest(&mut self, pl: &mut Pipeline) {
        while let Some(item) = self.pending.pop() {
            feed(pl, &item);
        }
    }

    /// The site's nodes whose addresses the flow logs' records carry, in
    /// site order. A flow log is written per network interface, so these
    /// are the nodes it watched: required edges between other nodes are not
    /// its to judge. (A node seen only as a logged node's peer counts too:
    /// `--sensor` names the watched nodes exactly.)
    pub fn nodes(&self, policy: &Policy) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        for (_, _, f) in &self.files {
            for item in &f.items {
                if let FlowItem::Observed(o) = item {
                    for ip in [o.key.client, o.key.server] {
                        if let p @ crate::policy::Peer::Endpoint(id) = policy.peer_of(ip) {
                            if policy.is_node(p) {
                                seen.insert(id);
                            }
                        }
                    }
                }
            }
        }
        seen.into_iter()
            .map(|id| policy.endpoint(id).name.to_string())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// What the report says of each flow log: records, fidelity, where it
    /// stopped.
    pub fn facts(&self) -> Vec<SourceFacts> {
        self.files
            .iter()
            .map(|(path, format, f)| {
                SourceFacts {
                    path: path.clone(),
                    format: format.name().into(),
                    packets: f.records,
                    stopped: f.stopped.as_ref().map(|s| Stopped {
                        offset: s.offset,
                        reason: s.reason.clone(),
                    }),
                    ..SourceFacts::default()
                }
                .with_fidelity(format.kind(), None, f.counts.clone())
            })
            .collect()
    }
}

fn feed(pl: &mut Pipeline, item: &FlowItem) {
    match item {
        FlowItem::Observed(o) => pl.observe(o),
        FlowItem::Gap { to, .. } => pl.sensor_lost(*to),
    }
}
