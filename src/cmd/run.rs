//! `portwatch run` and `portwatch demo`: the monitor as a service.
//!
//! The capture driver ([`super::capture`]) runs on its own thread with the
//! metrics [`Recorder`]; the main thread runs tokio: the HTTP server
//! (`export::http`) and the signals. SIGHUP loads and checks the new
//! configuration on the tokio side and hands the capture thread a ready
//! [`Policy`]; an invalid one never reaches it.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use super::capture::{Command, Driver, OnPrintError};
use super::input::Input;
use super::settings::RunSettings;
use super::signals::{Signal, Signals};
use super::{load, print, print_summary, Error, Status};
use crate::export::http::{router, HttpState, Readiness};
use crate::export::metrics::{Metrics, Recorder};
use crate::policy::Visibility;
use crate::time::Timestamp;

pub fn run(s: RunSettings) -> Result<Status, Error> {
    if let Some(banner) = &s.banner {
        if let Err(e) = print(&format!("{banner}\n")) {
            tracing::warn!(error = %e, "cannot print to stdout");
        }
    }
    let policy = Arc::new(load(&s.site)?.policy);
    let vis = Visibility::for_site(&policy, &s.sensors)?;
    let input = Input::open(&s.input)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Start {
            what: "starting the HTTP runtime",
            source: e,
        })?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(s.listen))
        .map_err(|e| Error::Listen {
            addr: s.listen,
            source: e,
        })?;
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    metrics.config_loaded(&policy, Timestamp::now());
    readiness.set_config_loaded();
    tracing::info!(
        site = %policy.site.name,
        model = %policy.model.id,
        input = %input.describe(),
        listen = %s.listen,
        "portwatch running; /metrics, /healthz, /-/ready"
    );

    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut driver = Driver::new(input, policy, vis, s.track);
    let rec = Recorder::new(&metrics, &driver.interfaces());
    driver = driver.with_recorder(rec);
    if s.print {
        driver = driver.with_printer(OnPrintError::Silence);
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
    };
    rt.block_on(supervise(listener, state, &s, tx, done_rx));
    let outcome = thread.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    let report = outcome.map_err(|_| Error::CapturePanicked)??;
    print_summary(&report, s.format);
    Ok(Status::Clean)
}

/// Serve HTTP and handle signals until SIGINT/SIGTERM or the capture dies.
async fn supervise(
    listener: tokio::net::TcpListener,
    state: HttpState,
    s: &RunSettings,
    tx: Sender<Command>,
    mut capture_done: tokio::sync::oneshot::Receiver<()>,
) {
    let metrics = state.metrics.clone();
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let mut signals = Signals::new(true);
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Signal::Stop(name) => {
                    tracing::info!(signal = name, "shutting down");
                    break;
                }
                Signal::Reload => reload(s, &metrics, &tx).await,
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

/// SIGHUP: load and check the files; only a valid policy reaches the
/// capture thread.
async fn reload(s: &RunSettings, metrics: &Metrics, tx: &Sender<Command>) {
    let site = s.site.clone();
    let sensors = s.sensors.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let l = load(&site)?;
        let vis = Visibility::for_site(&l.policy, &sensors)?;
        Ok::<_, Error>((l.policy, vis))
    })
    .await;
    let error = match loaded {
        Ok(Ok((policy, vis))) => {
            let policy = Arc::new(policy);
            metrics.config_loaded(&policy, Timestamp::now());
            tracing::info!(site = %policy.site.name, model = %policy.model.id, "configuration reloaded");
            let _ = tx.send(Command::Reload(policy, vis));
            return;
        }
        Ok(Err(e)) => e.one_line(),
        Err(e) => e.to_string(),
    };
    metrics.config_rejected();
    tracing::error!(error = %error, "reload failed; keeping the previous configuration");
}
