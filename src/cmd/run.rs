//! `portwatch run` and `portwatch demo`: the monitor as a service.
//!
//! The capture driver ([`super::capture`]) runs on its own thread with the
//! metrics [`Recorder`]; the main thread runs tokio: the HTTP server
//! (`export::http`) and the signals. SIGHUP loads and checks the new
//! configuration on the tokio side and hands the capture thread a ready
//! [`Policy`]; an invalid one never reaches it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use super::capture::{Command, Driver, OnPrintError};
use super::eventlog::{open_findings_pcap, EventLog};
use super::flowlisten::{self, FlowListen};
use super::follow::{Follow, FollowSpec};
use super::input::{Input, InputSpec};
use super::page::{live_page, Snapshot};
use super::privileges;
use super::settings::RunSettings;
use super::signals::{Early, Signal, Signals};
use super::statedir::StateDir;
use super::{prepare, print, print_summary, Error, Status};
use crate::cli::EventsFormat;
use crate::export::http::{links, router_at, HttpState, Readiness};
use crate::export::metrics::{Metrics, Recorder};
use crate::export::serve::{descriptor_limit, serve, Limits};
use crate::export::webconfig::{protect, LiveWeb, Verifier, WebConfig};
use crate::source::file::Savefile;
use crate::time::Timestamp;

pub fn run(mut s: RunSettings) -> Result<Status, Error> {
    // First: a SIGHUP or SIGTERM while starting must not kill the process.
    let early = Early::install();
    if let Some(banner) = &s.banner {
        if let Err(e) = print(&format!("{banner}\n")) {
            tracing::warn!(error = %e, "cannot print to stdout");
        }
    }
    // Bound first, before dropping root (a port below 1024 needs it) and
    // before any thread starts (capabilities are per thread); from here on
    // the addresses are the bound ones (port 0: the port the system chose),
    // so the site knows the sensor's own listeners.
    let listeners = bind_all(&s.listen)?;
    let flow_sockets = flowlisten::bind(&s.flow_listen, s.flow_rcvbuf)?;
    s.listen = listeners.iter().map(|(addr, _)| *addr).collect();
    let (policy, vis) = prepare(&s.site, &s.sensors, &s.listen)?;
    let web = s
        .web_config
        .as_deref()
        .map(WebConfig::load)
        .transpose()
        .map_err(Error::WebConfig)?;
    let input = Input::open_for(&s.input, &policy, s.decap)?;
    let follow = (s.follow.as_ref())
        .map(|f| Follow::open(f, &policy, &s.sensors))
        .transpose()?;
    let events = EventLog::open(
        s.events.as_deref(),
        s.events_format,
        &s.sensors,
        s.track.capacity,
    )?;
    let conn_log = EventLog::open(
        s.evidence.conn_log.as_deref(),
        EventsFormat::Ecs,
        &s.sensors,
        1,
    )?;
    let state = (s.state.as_ref())
        .map(|(dir, _)| StateDir::open(dir))
        .transpose()?;
    let findings_pcap = open_findings_pcap(&s.evidence, s.decap)?;
    if let Some(user) = &s.user {
        let files: Vec<&Path> = events.file().into_iter().chain(conn_log.file()).collect();
        privileges::hand_over(user, &files)?;
        if let Some(st) = &state {
            privileges::hand_over_dir(user, st.dir(), st.made())?;
        }
        let keep = match input.is_live() {
            true => privileges::LIVE_CAPS,
            false => &[],
        };
        privileges::drop_and_log(user, keep)?;
    }
    if let Some(st) = &state {
        st.check_writable()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Start {
            what: "starting the HTTP runtime",
            source: e,
        })?;
    let listeners = {
        let _in_runtime = rt.enter();
        listeners
            .into_iter()
            .map(|(addr, l)| {
                tokio::net::TcpListener::from_std(l).map_err(|e| Error::Listen { addr, source: e })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let metrics = Metrics::new().with_process_metrics();
    let readiness = Arc::new(Readiness::default());
    metrics.config_loaded(&policy, Timestamp::now());
    readiness.set_config_loaded();
    tracing::info!(
        site = %policy.site.name,
        model = %policy.model.id,
        input = %input.interfaces().join(","),
        follow = ?s.follow.as_ref().map(|f| &f.paths),
        flow_listen = ?s.flow_listen,
        listen = ?s.listen,
        tls = web.as_ref().is_some_and(|w| w.tls.is_some()),
        basic_auth = web.as_ref().is_some_and(|w| w.auth.is_some()),
        "portwatch running; {}, /healthz, /-/ready",
        s.telemetry_path
    );

    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut driver = Driver::new(input, policy, vis, s.track).with_decap(s.decap);
    if let Some(f) = follow {
        driver = driver.with_follow(f);
    }
    if !s.flow_listen.is_empty() {
        driver = driver.with_flow_listen(FlowListen::start(flow_sockets)?);
    }
    let rec = Recorder::new(&metrics, &driver.interfaces()).with_finding_hold(s.finding_hold);
    driver = driver
        .with_recorder(rec)
        .with_events(events)
        .with_findings_pcap(findings_pcap)
        .with_conn_log(conn_log);
    if let (Some(st), Some((_, every))) = (state, &s.state) {
        driver = driver.with_state(st, *every);
    }
    if s.print {
        driver = driver.with_printer(OnPrintError::Silence, Box::new(std::io::stdout()));
    }
    let snapshot = Arc::new(Snapshot::default());
    driver = driver.with_snapshot(snapshot.clone());
    let mut subtitle = live_subtitle(&s.input, s.follow.as_ref());
    if !s.flow_listen.is_empty() {
        let addrs: Vec<String> = s.flow_listen.iter().map(|a| a.to_string()).collect();
        subtitle = format!("{subtitle}; flow records on udp {}", addrs.join(", "));
    }
    let ready = readiness.clone();
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let r = driver.run(&rx, Some(&ready));
            let _ = done_tx.send(());
            r
        })
        .map_err(|e| Error::Start {
            what: "starting the capture thread",
            source: e,
        })?;

    let state = HttpState {
        metrics: metrics.clone(),
        readiness,
        index: Some(live_page(snapshot, subtitle, links(&s.telemetry_path))),
    };
    rt.block_on(supervise(listeners, web, state, &s, tx, done_rx, early));
    let outcome = thread.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    let done = outcome.map_err(|_| Error::CapturePanicked)??;
    print_summary(&done.report, s.format);
    // The daemon's event log failures are counted in its metric as they
    // happen; they do not turn a clean stop into a failure.
    if let Err(e) = done.events {
        tracing::warn!(error = %e, "event log incomplete");
    }
    if let Err(e) = done.evidence {
        tracing::warn!(error = %e, "--write-findings incomplete");
    }
    Ok(Status::Clean)
}

/// Bind every `--web.listen-address` (all or nothing), each with the
/// address it got (port 0 takes a free port), logged as `listening on
/// ADDR` in the order given.
fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, Error> {
    addrs
        .iter()
        .map(|&addr| {
            let bound = std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok((l.local_addr()?, l))
            });
            let (local, l) = bound.map_err(|e| Error::Listen { addr, source: e })?;
            tracing::info!("listening on {local}");
            Ok((local, l))
        })
        .collect()
}

/// Serve HTTP and handle signals until SIGINT/SIGTERM or the capture dies.
async fn supervise(
    listeners: Vec<tokio::net::TcpListener>,
    web: Option<WebConfig>,
    state: HttpState,
    s: &RunSettings,
    tx: Sender<Command>,
    mut capture_done: tokio::sync::oneshot::Receiver<()>,
    early: Early,
) {
    let metrics = state.metrics.clone();
    let (stop_http, stopped) = tokio::sync::watch::channel(());
    let web = web.map(|w| {
        let throttled = metrics.faults.http_auth_throttled.clone();
        Arc::new(LiveWeb::new(w, Verifier::for_this_machine(), throttled))
    });
    let app = protect(router_at(state, &s.telemetry_path), web.clone());
    let limits = Limits::for_descriptor_limit(descriptor_limit());
    if limits.max_connections < Limits::default().max_connections {
        tracing::info!(
            max_connections = limits.max_connections,
            "HTTP connection cap lowered to leave file descriptors for the capture"
        );
    }
    let faults = metrics.faults.clone();
    let server = tokio::spawn(serve(listeners, app, web.clone(), limits, faults, stopped));
    let mut signals = Signals::new(true).after(early);
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Signal::Stop(name) => {
                    tracing::info!(signal = name, "shutting down");
                    break;
                }
                Signal::Reload => {
                    let _ = tx.send(Command::Reopen);
                    reload(s, &metrics, &tx, web.as_deref()).await
                }
            },
            // The capture thread only ends by itself on an error, which
            // its result carries.
            _ = &mut capture_done => break,
        }
    }
    let _ = tx.send(Command::Stop);
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// SIGHUP: load and check the files (site, rules, web configuration); only
/// when all are valid do they replace the ones in force, the policy on the
/// capture thread and the web configuration from the next connection and
/// request on.
async fn reload(s: &RunSettings, metrics: &Metrics, tx: &Sender<Command>, web: Option<&LiveWeb>) {
    let (site, sensors, listen) = (s.site.clone(), s.sensors.clone(), s.listen.clone());
    let web_file = s.web_config.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let (policy, vis) = prepare(&site, &sensors, &listen)?;
        let web =
            (web_file.as_deref().map(WebConfig::load).transpose()).map_err(Error::WebConfig)?;
        Ok::<_, Error>((policy, vis, web))
    })
    .await;
    let error = match loaded {
        Ok(Ok((policy, vis, new_web))) => {
            metrics.config_loaded(&policy, Timestamp::now());
            tracing::info!(site = %policy.site.name, model = %policy.model.id, "configuration reloaded");
            let _ = tx.send(Command::Reload(policy, vis));
            if let (Some(live), Some(w)) = (web, new_web) {
                live.set(w);
            }
            return;
        }
        Ok(Err(e)) => e.one_line(),
        Err(e) => e.to_string(),
    };
    metrics.config_rejected();
    tracing::error!(error = %error, "reload failed; keeping the previous configuration");
}

/// What the live page says it shows.
fn live_subtitle(spec: &InputSpec, follow: Option<&FollowSpec>) -> String {
    let input = capture_subtitle(spec);
    match follow {
        None => input,
        Some(f) => {
            let files: Vec<String> = f.paths.iter().map(|p| p.display().to_string()).collect();
            let following = format!("following {}", files.join(", "));
            match spec {
                InputSpec::NoCapture => format!("live: {following}"),
                _ => format!("{input}; {following}"),
            }
        }
    }
}

fn capture_subtitle(spec: &InputSpec) -> String {
    match spec {
        InputSpec::Paced { savefiles, opts } => format!(
            "live: replay of {} at {}x{}",
            savefiles
                .iter()
                .map(|f| match f {
                    Savefile::Path(p) | Savefile::Held { path: p, .. } => p.display().to_string(),
                    Savefile::Embedded { name, .. } => name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            opts.speed,
            if opts.looping { ", looping" } else { "" }
        ),
        InputSpec::Live {
            interfaces,
            promisc,
        } => format!(
            "live capture on {}{}",
            interfaces.join(", "),
            if *promisc { "" } else { " (not promiscuous)" }
        ),
        InputSpec::Files(files) => format!("replay of {} files", files.len()),
        InputSpec::NoCapture => "no capture".into(),
    }
}
