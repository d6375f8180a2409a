//! `portwatch watch`: the capture driver on live interfaces, findings
//! printed as they happen, the closing report on stderr at Ctrl-C.

use super::capture::{Driver, OnPrintError};
use super::eventlog::EventLog;
use super::input::{Input, InputSpec};
use super::page::report_page;
use super::settings::WatchSettings;
use super::{prepare, print_summary, privileges, signals, Error, Status};
use crate::cli::{Format, ReportFormat};

pub fn watch(s: WatchSettings) -> Result<Status, Error> {
    let (policy, vis) = prepare(&s.site, &s.report.sensors, &[])?;
    let input = Input::open_for(
        &InputSpec::Live {
            interfaces: s.interfaces.clone(),
            promisc: s.promisc,
        },
        &policy,
        s.decap,
    )?;
    let r = &s.report;
    let events = EventLog::open(
        r.events.as_deref(),
        r.events_format,
        &r.sensors,
        s.track.capacity,
    )?;
    // Before any thread starts: capabilities are per thread.
    privileges::drop_and_log(&s.user, privileges::LIVE_CAPS)?;
    let (tx, rx) = std::sync::mpsc::channel();
    signals::stop_on_signal(tx, events.is_on());
    tracing::info!(interfaces = ?s.interfaces, site = %policy.site.name, "capturing; Ctrl-C to stop");
    let done = Driver::new(input, policy.clone(), vis, s.track)
        .with_decap(s.decap)
        .with_printer(OnPrintError::Stop, Box::new(std::io::stdout()))
        .with_events(events)
        .with_closing_counters()
        .run(&rx, None)?;
    match s.report.format {
        ReportFormat::Table => print_summary(&done.report, Format::Table),
        ReportFormat::Json => print_summary(&done.report, Format::Json),
        ReportFormat::Html => eprint!(
            "{}",
            report_page(
                &policy,
                &done.report,
                s.report.layout,
                format!("live capture on {}", s.interfaces.join(", ")),
                None,
                Vec::new(),
            )?
        ),
    }
    done.events?;
    Ok(Status::of(&done.report))
}
