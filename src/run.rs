//! The replay and watch commands: sources into the pipeline, reports out.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::app::{exit, load, out, out_with};
use crate::cli::{Format, ReplayArgs, SiteArgs, TrackArgs, WatchArgs};
use crate::export::events::write_event;
use crate::export::findings::FindingPrinter;
use crate::pipeline::{Event, Pipeline};
use crate::policy::Policy;
use crate::report::{Report, SourceFacts, Stopped, Visibility};
use crate::source::file::{FileFacts, MergedFiles};
use crate::source::live::{LiveOptions, LiveSource};
use crate::source::{Poll, Source};
use crate::state::TrackConfig;
use crate::time::Timestamp;

impl From<&TrackArgs> for TrackConfig {
    fn from(a: &TrackArgs) -> Self {
        TrackConfig {
            capacity: a.max_flows.max(1),
            syn_timeout: a.syn_timeout,
            idle_timeout: a.idle_timeout,
        }
    }
}

/// Load the site (and rules) and check `--sensor` against it.
fn prepare(site: &SiteArgs, sensors: &[String]) -> Result<(Arc<Policy>, Visibility), u8> {
    let policy = Arc::new(load(site)?.policy);
    let vis = Visibility::for_site(&policy, sensors).map_err(|e| {
        eprintln!("error: {e}");
        exit::BAD_INPUT
    })?;
    Ok((policy, vis))
}

fn open_events(path: Option<&Path>) -> Result<Option<BufWriter<File>>, u8> {
    path.map(|p| {
        File::create(p).map(BufWriter::new).map_err(|e| {
            eprintln!("error: {}: {e}", p.display());
            exit::BAD_INPUT
        })
    })
    .transpose()
}

fn write_events(out: &mut Option<BufWriter<File>>, p: &Policy, events: &[Event]) {
    if let Some(w) = out {
        for e in events {
            if let Err(err) = write_event(w, p, e) {
                tracing::warn!(error = %err, "event log write failed; event log disabled");
                *out = None;
                return;
            }
        }
    }
}

pub(crate) fn source_facts(f: FileFacts) -> SourceFacts {
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
    }
}

fn print_report(r: &Report, format: Format) {
    match format {
        Format::Table => out(&r.to_table()),
        Format::Json => out_with(|| {
            r.write_json(std::io::BufWriter::with_capacity(
                64 << 10,
                std::io::stdout().lock(),
            ))
        }),
    }
}

fn status(r: &Report) -> u8 {
    if r.capture.truncated {
        exit::TRUNCATED
    } else if r.has_findings() {
        exit::FINDINGS
    } else {
        exit::OK
    }
}

pub fn replay(args: ReplayArgs) -> u8 {
    let (policy, vis) = match prepare(&args.site, &args.report.sensors) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut files = match MergedFiles::open(&args.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let mut events = match open_events(args.report.events.as_deref()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let mut pl = Pipeline::new(policy.clone(), TrackConfig::from(&args.track));
    pl.record_events(events.is_some());
    loop {
        let poll = files.poll(&mut |f| {
            pl.ingest(f);
        });
        write_events(&mut events, &policy, &pl.drain_events());
        match poll {
            Ok(Poll::End) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return exit::BAD_INPUT;
            }
        }
    }
    let span = pl.span();
    if let Some((_, end)) = span {
        pl.finish(end);
    }
    write_events(&mut events, &policy, &pl.drain_events());
    if let Some(mut w) = events {
        let _ = w.flush();
    }
    let facts: Vec<SourceFacts> = files.facts().into_iter().map(source_facts).collect();
    for f in &facts {
        if let Some(s) = &f.stopped {
            eprintln!(
                "warning: {}: stopped at byte {} after {} packets: {}; the report covers what was read",
                f.path, s.offset, f.packets, s.reason
            );
        }
    }
    let report = Report::build(&pl, facts, span, &vis);
    // The report holds what it prints: free the tables before rendering.
    drop(pl);
    print_report(&report, args.report.format);
    status(&report)
}

/// Set by Ctrl-C or SIGTERM.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(_) => return,
        };
        rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).ok();
                let term = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

pub fn watch(args: WatchArgs) -> u8 {
    let (policy, vis) = match prepare(&args.site, &args.report.sensors) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut live = match LiveSource::open(&args.interfaces, &LiveOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let mut events = match open_events(args.report.events.as_deref()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let stop = stop_flag();
    let started = Timestamp::now();
    let mut pl = Pipeline::new(policy.clone(), TrackConfig::from(&args.track));
    pl.record_events(true);
    let mut printer = FindingPrinter::default();
    tracing::info!(interfaces = ?args.interfaces, site = %policy.site.name, "capturing; Ctrl-C to stop");
    while !stop.load(Ordering::SeqCst) {
        match live.poll(&mut |f| {
            pl.ingest(f);
        }) {
            Ok(Poll::Idle) => pl.advance(Timestamp::now()),
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return exit::BAD_INPUT;
            }
        }
        let batch = pl.drain_events();
        for e in &batch {
            printer.print(&policy, e);
        }
        write_events(&mut events, &policy, &batch);
        let _ = std::io::stdout().flush();
    }
    let now = Timestamp::now();
    pl.finish(now);
    let batch = pl.drain_events();
    write_events(&mut events, &policy, &batch);
    if let Some(mut w) = events {
        let _ = w.flush();
    }
    for s in live.stats().unwrap_or_default() {
        eprintln!("{s}");
    }
    let sources = live_facts(&mut live);
    let report = Report::build(&pl, sources, Some((started, now)), &vis);
    eprintln!();
    match args.report.format {
        Format::Table => eprint!("{}", report.to_table()),
        Format::Json => eprintln!("{}", report.to_json()),
    }
    status(&report)
}

pub(crate) fn live_facts(live: &mut LiveSource) -> Vec<SourceFacts> {
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
        })
        .collect()
}
