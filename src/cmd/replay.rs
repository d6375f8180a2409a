//! `portwatch replay`: capture files read flat out through the pipeline,
//! then the audit report and an exit status for CI.

use super::eventlog::EventLog;
use super::flowlogs::FlowLogs;
use super::input::{split_files, Input, InputSpec, Records};
use super::page::report_page;
use super::settings::ReplaySettings;
use super::{prepare, print, print_json, Error, Status};
use crate::cli::ReportFormat as Format;
use crate::pipeline::Pipeline;
use crate::report::{Report, SourceFacts};
use crate::source::Poll;

pub fn replay(s: ReplaySettings) -> Result<Status, Error> {
    let (policy, vis) = prepare(&s.site, &s.report.sensors, &[])?;
    let (captures, mut flows) = FlowLogs::split(&s.files)?;
    let (captures, logs) = split_files(&captures)?;
    let mut records = Records::open(&logs, &policy, s.timezone.clone(), &s.report.sensors)?;
    let flow_nodes = (!flows.is_empty()).then(|| flows.nodes(&policy));
    let vis = records.visibility(vis, !captures.is_empty(), flow_nodes);
    let mut input = Input::open(&InputSpec::Files(captures))?;
    let r = &s.report;
    let mut events = EventLog::open(
        r.events.as_deref(),
        r.events_format,
        &r.sensors,
        s.track.capacity,
    )?;
    let mut pl = Pipeline::new(policy.clone(), s.track);
    pl.set_decap(s.decap);
    pl.record_events(events.is_on());
    // When the next flow or record item is due: frames before it pass
    // with one comparison (a capture alone never feeds).
    let next_due =
        |flows: &FlowLogs, records: &mut Records| match (flows.next_ts(), records.next_ts()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    let mut due = next_due(&flows, &mut records);
    loop {
        let poll = input.source().poll(&mut |f| {
            if due.is_some_and(|t| t <= f.ts) {
                flows.feed_until(&mut pl, f.ts);
                records.feed_until(&mut pl, Some(f.ts));
                due = next_due(&flows, &mut records);
            }
            pl.ingest(f);
        });
        events.write(&policy, &pl.drain_events());
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
    events.write(&policy, &pl.drain_events());
    if let Some((start, end)) = span {
        events.judge_edges(&pl, &vis, start, end);
    }
    let logged = events.finish();
    let mut facts: Vec<SourceFacts> = input.facts();
    facts.extend(flows.facts());
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
                f.path, st.offset, f.packets, st.reason
            );
        }
    }
    let report = Report::build(&pl, facts, span, &vis);
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
            )?)?
        }
    }
    logged?;
    Ok(Status::of(&report))
}
