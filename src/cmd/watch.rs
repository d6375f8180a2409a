//! `portwatch watch`: the capture driver on live interfaces, followed
//! node logs and received flow records (the same collector as `run`'s),
//! findings printed as they happen, the closing report on stderr at Ctrl-C.

use super::capture::{Driver, OnPrintError};
use super::eventlog::{open_findings_pcap, EventLog};
use super::flowlisten::{self, FlowListen};
use super::follow::Follow;
use super::input::{Input, InputSpec};
use super::page::{report_page, signoff_now};
use super::settings::WatchSettings;
use super::{prepare, print_summary, privileges, signals, Error, Status};
use std::path::Path;

use crate::cli::{EventsFormat, Format, ReportFormat};

pub fn watch(s: WatchSettings) -> Result<Status, Error> {
    // Bound before dropping root (a port below 1024 needs it).
    let flow_sockets = flowlisten::bind(&s.flow_listen, s.flow_rcvbuf)?;
    let (policy, vis) = prepare(&s.site, &s.report.sensors, &[])?;
    let spec = match s.interfaces.is_empty() {
        true => InputSpec::NoCapture,
        false => InputSpec::Live {
            interfaces: s.interfaces.clone(),
            promisc: s.promisc,
        },
    };
    let input = Input::open_for(&spec, &policy, s.decap)?;
    let follow = (s.follow.as_ref())
        .map(|f| Follow::open(f, &policy, &s.report.sensors))
        .transpose()?;
    let r = &s.report;
    let events = EventLog::open(
        r.events.as_deref(),
        r.events_format,
        &r.sensors,
        s.track.capacity,
    )?;
    let conn_log = EventLog::open(
        s.evidence.conn_log.as_deref(),
        EventsFormat::Ecs,
        &r.sensors,
        1,
    )?;
    let findings_pcap = open_findings_pcap(&s.evidence, s.decap)?;
    // Before any thread starts: capabilities are per thread.
    let keep = match input.is_live() {
        true => privileges::LIVE_CAPS,
        false => &[],
    };
    let files: Vec<&Path> = events.file().into_iter().chain(conn_log.file()).collect();
    privileges::hand_over(&s.user, &files)?;
    privileges::drop_and_log(&s.user, keep)?;
    let (tx, rx) = std::sync::mpsc::channel();
    signals::stop_on_signal(tx, events.is_on() || conn_log.is_on());
    let following = s.follow.as_ref().map(|f| &f.paths);
    tracing::info!(interfaces = ?s.interfaces, follow = ?following, flow_listen = ?s.flow_listen, site = %policy.site.name, "capturing; Ctrl-C to stop");
    let mut driver = Driver::new(input, policy.clone(), vis, s.track);
    if let Some(f) = follow {
        driver = driver.with_follow(f);
    }
    if !s.flow_listen.is_empty() {
        driver = driver.with_flow_listen(FlowListen::start(flow_sockets)?);
    }
    let done = driver
        .with_decap(s.decap)
        .with_printer(OnPrintError::Stop, Box::new(std::io::stdout()))
        .with_events(events)
        .with_findings_pcap(findings_pcap)
        .with_conn_log(conn_log)
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
                subtitle(&s),
                None,
                Vec::new(),
                Some(signoff_now()),
            )?
        ),
    }
    done.events?;
    done.evidence?;
    Ok(Status::of(&done.report))
}

/// What the closing HTML report says it covers.
fn subtitle(s: &WatchSettings) -> String {
    let mut parts = Vec::new();
    if !s.interfaces.is_empty() {
        parts.push(format!("live capture on {}", s.interfaces.join(", ")));
    }
    if let Some(f) = &s.follow {
        let files: Vec<String> = f.paths.iter().map(|p| p.display().to_string()).collect();
        parts.push(format!("following {}", files.join(", ")));
    }
    if !s.flow_listen.is_empty() {
        let addrs: Vec<String> = s.flow_listen.iter().map(|a| a.to_string()).collect();
        parts.push(format!("flow records on udp {}", addrs.join(", ")));
    }
    parts.join("; ")
}
