//! `portwatch replay`: capture files read flat out through the pipeline,
//! then the audit report and an exit status for CI.

use super::eventlog::{decide_drained, open_findings_pcap, EventLog};
use super::flowlogs::FlowLogs;
use super::input::{split_files, Input, InputSpec, Records};
use super::page::{report_page, signoff_now};
use super::settings::ReplaySettings;
use super::{prepare, print, print_json, Error, Status};
use crate::cli::{EventsFormat, ReportFormat as Format};
use crate::frame::{Frame, FrameSink};
use crate::pipeline::Pipeline;
use crate::report::{Known, Report, Selection, SourceFacts};
use crate::source::filter::PacketFilter;
use crate::source::Poll;
use crate::time::{widen, Outside, Timestamp};

pub fn replay(s: ReplaySettings) -> Result<Status, Error> {
    let (policy, vis) = prepare(&s.site, &s.report.sensors, &[])?;
    let baseline = s.baseline.as_deref().map(read_baseline).transpose()?;
    let (captures, mut flows) = FlowLogs::split(&s.files, &policy)?;
    let (captures, logs) = split_files(&captures)?;
    let mut records = Records::open(&logs, &policy, s.timezone.clone(), &s.report.sensors)?;
    let range = s.range;
    let (flows_out, records_out) = match range.is_open() {
        true => Default::default(),
        false => (flows.keep_within(range), records.keep_within(range)),
    };
    let mut frames_out = Outside::default();
    let mut filter = match &s.filter {
        Some(expr) => Some(PacketFilter::new(expr).map_err(|e| Error::Usage(e.to_string()))?),
        None => None,
    };
    if filter.is_some() && !(logs.is_empty() && flows.is_empty()) {
        eprintln!(
            "warning: --filter applies to the frames of captures only, not to the records of logs"
        );
    }
    let mut filter_error = None;
    let selecting = !range.is_open() || filter.is_some();
    // One comparison a frame when none is given.
    let hooked = selecting || s.evidence.write_findings.is_some();
    let flow_nodes = (!flows.is_empty()).then(|| flows.nodes(&policy));
    let vis = records.visibility(vis, !captures.is_empty(), flow_nodes);
    // A filter can hide an edge's packets: its absence proves nothing.
    let vis = match filter.is_some() {
        true => {
            eprintln!("note: with --filter, required edges are not judged (the filter may leave out their packets)");
            crate::policy::Visibility {
                nodes: Vec::new(),
                limited: true,
                unjudged: None,
            }
        }
        false => vis,
    };
    let has_captures = !captures.is_empty();
    let mut input = Input::open(&InputSpec::Files(captures))?;
    let r = &s.report;
    let mut events = EventLog::open(
        r.events.as_deref(),
        r.events_format,
        &r.sensors,
        s.track.capacity,
    )?;
    let mut conn_log = EventLog::open(
        s.evidence.conn_log.as_deref(),
        EventsFormat::Ecs,
        &r.sensors,
        1,
    )?;
    let mut findings_pcap = open_findings_pcap(&s.evidence, s.decap)?;
    let mut pl = Pipeline::new(policy.clone(), s.track);
    pl.set_decap(s.decap);
    // A connection two kinds of source saw is one attempt.
    let log_kinds: std::collections::BTreeSet<_> = logs.iter().map(|(_, f)| f.kind()).collect();
    if usize::from(has_captures) + log_kinds.len() + usize::from(!flows.is_empty()) > 1 {
        pl.join_kinds();
    }
    // The findings' packets are decided by the events and ends.
    pl.record_events(events.is_on() || findings_pcap.is_some());
    pl.record_conns(conn_log.is_on() || findings_pcap.is_some());
    // When the next flow or record item is due: frames before it pass
    // with one comparison (a capture alone never feeds).
    let next_due =
        |flows: &FlowLogs, records: &mut Records| match (flows.next_ts(), records.next_ts()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    let mut due = next_due(&flows, &mut records);
    loop {
        // Nothing to select or write and nothing left to feed (a capture
        // alone, or every record fed): the frames go straight in, without
        // the checks below (8 instructions a frame).
        let poll = if !hooked && due.is_none() {
            input.poll_with(&mut Ingest(&mut pl))
        } else {
            input.source().poll(&mut |f| {
                if hooked {
                    if !range.contains(f.ts) {
                        frames_out.note(f.ts, true);
                        return;
                    }
                    if let Some(bpf) = &mut filter {
                        match bpf.passes(f) {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => {
                                filter_error.get_or_insert(e);
                                return;
                            }
                        }
                    }
                    if let Some(w) = &mut findings_pcap {
                        w.decide(pl.events(), pl.conns());
                        w.frame(f);
                    }
                }
                if due.is_some_and(|t| t <= f.ts) {
                    flows.feed_until(&mut pl, f.ts);
                    records.feed_until(&mut pl, Some(f.ts));
                    due = next_due(&flows, &mut records);
                }
                pl.ingest(f);
            })
        };
        decide_drained(&mut findings_pcap, &pl);
        events.write(&policy, &pl.drain_events());
        conn_log.write_conns(&policy, &pl.drain_conns());
        if let Some(e) = filter_error.take() {
            return Err(Error::Usage(e.to_string()));
        }
        if poll? == Poll::End {
            break;
        }
    }
    flows.feed_rest(&mut pl);
    records.feed_until(&mut pl, None);
    let span = pl.span();
    if let Some((_, end)) = span {
        pl.finish(end);
    }
    // The required edges are judged over the range's share of the data.
    let window = match range.is_open() {
        true => span,
        false => [frames_out.span, flows_out.span, records_out.span]
            .into_iter()
            .flatten()
            .fold(span, |all, s| Some(widen(all, s)))
            .and_then(|all| range.clip(all)),
    };
    decide_drained(&mut findings_pcap, &pl);
    let evidence = match &mut findings_pcap {
        Some(w) => {
            w.finish();
            eprintln!("note: --write-findings {}", w.summary());
            w.result()
        }
        None => Ok(()),
    };
    events.write(&policy, &pl.drain_events());
    conn_log.write_conns(&policy, &pl.drain_conns());
    if let Some((start, end)) = window {
        events.judge_edges(&pl, &vis, start, end);
    }
    let logged = events.finish().and(conn_log.finish());
    let mut facts: Vec<SourceFacts> = input.facts();
    facts.extend(flows.facts(&policy));
    facts.extend(records.facts());
    for f in &facts {
        if let Some(st) = &f.stopped {
            let what = if f.fidelity.is_some() {
                "records"
            } else {
                "packets"
            };
            eprintln!(
                "warning: {}: stopped at byte {} after {} {what}: {}; the report covers what was read",
                crate::quote::log_field(&f.path),
                st.offset,
                f.packets,
                crate::quote::log_field(&st.reason)
            );
        }
    }
    let mut report = Report::build(&pl, facts, window, &vis);
    if selecting {
        report.capture.selection = Some(Selection {
            since: range.since.map(Timestamp::rfc3339),
            until: range.until.map(Timestamp::rfc3339),
            frames_outside_range: frames_out.count,
            records_outside_range: flows_out.count + records_out.count,
            filter: filter.as_ref().map(|f| f.expr().to_string()),
            frames_filtered_out: filter.as_ref().map(PacketFilter::dropped),
        });
    }
    if let (Some(known), Some(path)) = (&baseline, &s.baseline) {
        report.against(known, &path.display().to_string());
    }
    for u in &report.capture.unconfigured_tunnels {
        eprintln!("warning: {}", u.warning());
    }
    // The report holds what it prints: free the tables before rendering.
    drop(pl);
    match s.report.format {
        Format::Table => print(&report.to_table())?,
        Format::Json => print_json(&report)?,
        Format::Html => {
            let files: Vec<String> = s.files.iter().map(|f| f.display().to_string()).collect();
            print(&report_page(
                &policy,
                &report,
                s.report.layout,
                format!("replay of {}", files.join(", ")),
                None,
                Vec::new(),
                Some(signoff_now()),
            )?)?
        }
    }
    logged?;
    evidence?;
    Ok(Status::of(&report))
}

/// The findings of a previous JSON report (`--baseline`).
fn read_baseline(path: &std::path::Path) -> Result<Known, Error> {
    let bad = |why: String| Error::Baseline {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    Known::parse(&text).map_err(|e| bad(e.to_string()))
}

/// The pipeline as the files' sink, its inline path inlined into their
/// record loop (see [`FrameSink`]).
struct Ingest<'a>(&'a mut Pipeline);

impl FrameSink for Ingest<'_> {
    #[inline(always)]
    fn frame(&mut self, frame: &Frame<'_>) {
        self.0.ingest(frame);
    }
}
