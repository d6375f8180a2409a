//! A file of WFP events as a [`RecordFile`]: each event oriented
//! ([`Sides`], seeded with the logging node's addresses from the site),
//! its sensor found ([`observe::sensor`]), TCP events as observations and
//! the rest as coverage, in time order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{Counted, RecordContext, RecordFile, RecordFormat, RecordItem, RecordStop};
use crate::source::wfp::ndjson::parse_line;
use crate::source::wfp::observe::{self, local_end, observation};
use crate::source::wfp::read::{read, WfpFile};
use crate::source::wfp::{EventId, Sides, WfpEvent};
use crate::source::SourceError;

/// Read the WFP events file at `path` (EVTX or NDJSON).
pub fn read_file(path: &Path, ctx: &RecordContext) -> Result<RecordFile, SourceError> {
    Ok(records(read(path)?, ctx))
}

/// The records of a file read in full.
pub fn records(f: WfpFile, ctx: &RecordContext) -> RecordFile {
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (reason, n) in &f.tally.bad {
        *counts.entry(reason.kind()).or_default() += n;
    }
    if f.tally.other > 0 {
        counts.insert("other_event", f.tally.other);
    }
    let mut actions: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut follow = Follow::default();
    let mut sensor: Option<Arc<str>> = None;
    let mut items = Vec::with_capacity(f.events.len());
    for e in &f.events {
        *actions.entry(action(e.id)).or_default() += 1;
        let c = follow.event(e, ctx);
        sensor = sensor.or_else(|| c.node.clone());
        *counts.entry(c.reason).or_default() += 1;
        items.extend(c.item);
    }
    // Stable: events of one instant stay in the log's order.
    items.sort_by_key(RecordItem::ts);
    let records = f.tally.events.values().sum::<u64>() + f.tally.other + f.tally.bad_total();
    RecordFile {
        path: f.path,
        format: RecordFormat::WfpEvents,
        sensor,
        items,
        records,
        actions,
        counts,
        stopped: f.stopped.map(|s| RecordStop {
            offset: s.offset,
            reason: s.reason,
        }),
    }
}

/// Events oriented one after the other, each logging node's addresses
/// given to [`Sides`] the first time its host name names a site node: for a
/// file read in full, and for NDJSON followed as it grows (`--follow`).
#[derive(Default)]
pub struct Follow {
    sides: Sides,
    seeded: Vec<String>,
}

impl Follow {
    /// One event: its node (its host name's, else the owner of its local
    /// end, else `--sensor`) and what it gives.
    pub fn event(&mut self, e: &WfpEvent, ctx: &RecordContext) -> Counted {
        let named = self.seed(e, ctx);
        let ends = self.sides.orient(e);
        let node = named.or_else(|| {
            let local = ends.as_ref().ok().map(local_end);
            let nodes = ctx.nodes.iter().map(|n| (&*n.name, &n.addresses[..]));
            observe::sensor(None, local, nodes).and_then(|n| ctx.node(n).map(|n| n.name.clone()))
        });
        let node = node.or_else(|| ctx.sensor.clone());
        match observation(e, ends, node.clone()) {
            Ok(o) => Counted::new(node, "observed", Some(RecordItem::Observed(o))),
            Err(skip) => Counted::new(
                node,
                skip.as_str(),
                Some(RecordItem::Covered { at: e.time }),
            ),
        }
    }

    /// One NDJSON line (`history`: read for orientation only); a blank
    /// line gives nothing.
    pub fn line(
        &mut self,
        line: &[u8],
        history: bool,
        ctx: &RecordContext,
        out: &mut Vec<Counted>,
    ) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let c = match parse_line(line) {
            Ok(Some(e)) => self.event(&e, ctx),
            Ok(None) => Counted::new(None, "other_event", None),
            Err(r) => Counted::new(None, r.kind(), None),
        };
        if !history {
            out.push(c);
        }
    }

    /// The node the event's host name names; its addresses are given to
    /// `sides` the first time, so inbound events of that host are oriented.
    fn seed(&mut self, e: &WfpEvent, ctx: &RecordContext) -> Option<Arc<str>> {
        let host = e.host.as_deref()?;
        let nodes = ctx.nodes.iter().map(|n| (&*n.name, &n.addresses[..]));
        let name = observe::sensor(Some(host), None, nodes)?;
        let node = ctx.node(name)?;
        if !self.seeded.iter().any(|h| h == host)
            && self.seeded.len() < crate::source::wfp::sides::MAX_HOSTS
        {
            self.seeded.push(host.to_string());
            for a in &node.addresses {
                self.sides.node_address(host, *a);
            }
        }
        Some(node.name.clone())
    }
}

fn action(id: EventId) -> &'static str {
    match id {
        EventId::Permitted => "5156_permitted",
        EventId::Blocked => "5157_blocked",
        EventId::Dropped => "5152_dropped",
    }
}
