//! `portwatch run` and `portwatch demo`: the monitor as a service.
//!
//! Wiring only. One capture thread owns the source, the [`Pipeline`] and
//! the metrics [`Recorder`]: frames are decoded, classified and counted
//! there, synchronously, and nothing it does waits on HTTP. The main thread
//! runs tokio: the HTTP server (`export::http`), and the signals. It talks
//! to the capture thread over a channel ([`Command`]): SIGHUP loads and
//! checks the new configuration on the tokio side and hands the capture
//! thread a ready [`Policy`]; an invalid one never reaches it.
//!
//! Unix only (signals). Time: a replay runs on capture time (paced by `source::replay`), a live
//! capture on the wall clock; expiry and required-edge windows follow it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{exit, load};
use crate::cli::{DemoArgs, Format, RunArgs, SiteArgs, TrackArgs};
use crate::config::{load_policy, LoadError};
use crate::export::findings::FindingPrinter;
use crate::export::http::{router, HttpState, Readiness};
use crate::export::metrics::{Metrics, Recorder};
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::report::{Report, SourceFacts, Visibility};
use crate::source::file::Savefile;
use crate::source::live::{LiveOptions, LiveSource};
use crate::source::replay::{Replay, ReplayOptions};
use crate::source::{Poll, Source};
use crate::state::TrackConfig;
use crate::time::Timestamp;

/// The demo capture (see fixtures/README.md), built into the binary.
pub const DEMO_PCAP: &[u8] = include_bytes!("../fixtures/demo.pcap");
/// The bundled site the demo capture was made for.
pub const DEMO_SITE: &str = "multi-node";

/// How often gauges (flow table, edge missing, capture drops) are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// What the daemon captures from.
enum InputSpec {
    Replay {
        savefiles: Vec<Savefile>,
        opts: ReplayOptions,
    },
    Live {
        interfaces: Vec<String>,
    },
}

/// Validated settings shared by `run` and `demo`.
struct Settings {
    site: SiteArgs,
    input: InputSpec,
    listen: SocketAddr,
    track: TrackConfig,
    sensors: Vec<String>,
    print: bool,
    format: Format,
}

pub fn run(args: RunArgs) -> u8 {
    let input = if args.replay.is_empty() {
        InputSpec::Live {
            interfaces: args.interfaces,
        }
    } else {
        InputSpec::Replay {
            savefiles: args.replay.into_iter().map(Savefile::Path).collect(),
            opts: ReplayOptions {
                speed: args.speed,
                looping: args.looping,
            },
        }
    };
    serve(Settings {
        site: args.site,
        input,
        listen: args.listen,
        track: TrackConfig::from(&args.track),
        sensors: args.sensors,
        print: args.print,
        format: args.format,
    })
}

pub fn demo(args: DemoArgs) -> u8 {
    println!(
        "portwatch demo: site `{DEMO_SITE}`, bundled capture looped at {}x; metrics on http://{}/metrics; Ctrl-C to stop",
        args.speed, args.listen
    );
    serve(Settings {
        site: SiteArgs {
            site: PathBuf::from(DEMO_SITE),
            rules: None,
        },
        input: InputSpec::Replay {
            savefiles: vec![Savefile::Embedded {
                name: "demo.pcap",
                bytes: DEMO_PCAP,
            }],
            opts: ReplayOptions {
                speed: args.speed,
                looping: true,
            },
        },
        listen: args.listen,
        track: TrackConfig::from(&TrackArgs {
            max_flows: 65_536,
            syn_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(2 * 3600),
        }),
        sensors: Vec::new(),
        print: true,
        format: Format::Table,
    })
}

/// Messages from the tokio side to the capture thread.
enum Command {
    Reload(Arc<Policy>, Visibility),
    Stop,
}

fn serve(s: Settings) -> u8 {
    let policy = match load(&s.site) {
        Ok(l) => Arc::new(l.policy),
        Err(code) => return code,
    };
    let vis = match Visibility::for_site(&policy, &s.sensors) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let input = match Input::open(&s.input) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the HTTP runtime: {e}");
            return exit::BAD_INPUT;
        }
    };
    let listener = match rt.block_on(tokio::net::TcpListener::bind(s.listen)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", s.listen);
            return exit::BAD_INPUT;
        }
    };
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
    let capture = Capture::new(input, policy.clone(), vis, &s, &metrics);
    let ready = readiness.clone();
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let r = capture.run(rx, &ready);
            let _ = done_tx.send(());
            r
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: starting the capture thread: {e}");
            return exit::BAD_INPUT;
        }
    };

    let state = HttpState {
        metrics: metrics.clone(),
        readiness,
    };
    let code = rt.block_on(supervise(listener, state, &s, tx, done_rx));
    let outcome = thread.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(Ok(report)) => {
            eprintln!();
            match s.format {
                Format::Table => eprint!("{}", report.to_table()),
                Format::Json => eprintln!("{}", report.to_json()),
            }
            code
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            exit::BAD_INPUT
        }
        Err(_) => {
            eprintln!("error: the capture thread panicked");
            exit::BAD_INPUT
        }
    }
}

/// Serve HTTP and handle signals until SIGINT/SIGTERM or the capture dies.
async fn supervise(
    listener: tokio::net::TcpListener,
    state: HttpState,
    s: &Settings,
    tx: Sender<Command>,
    mut capture_done: tokio::sync::oneshot::Receiver<()>,
) -> u8 {
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
    let mut signals = Signals::new();
    let code = loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Signal::Stop(name) => {
                    tracing::info!(signal = name, "shutting down");
                    break exit::OK;
                }
                Signal::Reload => reload(s, &metrics, &tx).await,
            },
            _ = &mut capture_done => {
                // The capture thread only ends by itself on a source error.
                break exit::BAD_INPUT;
            }
        }
    };
    let _ = tx.send(Command::Stop);
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    code
}

/// SIGHUP: load and check the files; only a valid policy reaches the
/// capture thread.
async fn reload(s: &Settings, metrics: &Metrics, tx: &Sender<Command>) {
    let (site, rules) = (s.site.site.clone(), s.site.rules.clone());
    let sensors = s.sensors.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let l = load_policy(&site, rules.as_deref()).map_err(|e| describe_load_error(&e))?;
        let vis = Visibility::for_site(&l.policy, &sensors)?;
        Ok::<_, String>((l.policy, vis))
    })
    .await;
    match loaded {
        Ok(Ok((policy, vis))) => {
            let policy = Arc::new(policy);
            metrics.config_loaded(&policy, Timestamp::now());
            tracing::info!(site = %policy.site.name, model = %policy.model.id, "configuration reloaded");
            let _ = tx.send(Command::Reload(policy, vis));
        }
        Ok(Err(e)) => {
            metrics.config_rejected();
            tracing::error!(error = %e, "reload failed; keeping the previous configuration");
        }
        Err(e) => {
            metrics.config_rejected();
            tracing::error!(error = %e, "reload failed; keeping the previous configuration");
        }
    }
}

fn describe_load_error(e: &LoadError) -> String {
    match e {
        LoadError::Config(c) => c
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

enum Signal {
    Stop(&'static str),
    Reload,
}

/// SIGINT, SIGTERM and SIGHUP as one stream.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup()).ok();
        if hup.is_none() {
            tracing::warn!("cannot handle SIGHUP: reload disabled");
        }
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            hup,
        }
    }

    async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Stop("SIGINT"),
            _ = recv(&mut self.term) => Signal::Stop("SIGTERM"),
            _ = recv(&mut self.hup) => Signal::Reload,
        }
    }
}

/// The opened source.
enum Input {
    Replay(Replay),
    Live(LiveSource),
}

impl Input {
    fn open(spec: &InputSpec) -> Result<Input, String> {
        match spec {
            InputSpec::Replay { savefiles, opts } => Replay::open(savefiles, opts.clone())
                .map(Input::Replay)
                .map_err(|e| e.to_string()),
            InputSpec::Live { interfaces } => LiveSource::open(interfaces, &LiveOptions::default())
                .map(Input::Live)
                .map_err(|e| e.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Input::Replay(_) => "replay".into(),
            Input::Live(l) => l.interfaces().join(","),
        }
    }

    /// Interface label values, by frame slot.
    fn interfaces(&self) -> Vec<String> {
        match self {
            Input::Replay(_) => vec!["replay".into()],
            Input::Live(l) => l.interfaces().to_vec(),
        }
    }

    fn is_live(&self) -> bool {
        !matches!(self, Input::Replay(_))
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Input::Replay(r) => r,
            Input::Live(l) => l,
        }
    }

    /// The clock windows are judged on: the replay's capture time, or the
    /// wall clock live.
    fn now(&self) -> Option<Timestamp> {
        match self {
            Input::Replay(r) => r.now(),
            Input::Live(_) => Some(Timestamp::now()),
        }
    }

    fn sync_drops(&mut self, rec: &mut Recorder, pl: &mut Pipeline) {
        match self {
            Input::Replay(_) => {}
            Input::Live(l) => match l.stats() {
                Ok(stats) => {
                    for (i, s) in stats.iter().enumerate() {
                        rec.capture_drops(i, u64::from(s.dropped), u64::from(s.if_dropped));
                    }
                    let total = stats
                        .iter()
                        .map(|s| u64::from(s.dropped) + u64::from(s.if_dropped));
                    pl.capture_drops(Timestamp::now(), total.sum());
                }
                Err(e) => tracing::warn!(error = %e, "reading capture statistics failed"),
            },
        }
    }

    fn facts(&mut self) -> Vec<SourceFacts> {
        match self {
            Input::Replay(r) => r
                .facts()
                .into_iter()
                .map(crate::run::source_facts)
                .collect(),
            Input::Live(l) => crate::run::live_facts(l),
        }
    }
}

/// Everything the capture thread owns.
struct Capture {
    input: Input,
    pl: Pipeline,
    rec: Recorder,
    vis: Visibility,
    printer: Option<FindingPrinter>,
    /// Start of observation: first frame of a replay, start time live.
    since: Option<Timestamp>,
    /// The source ended (a replay without --loop): time stands still at
    /// its last frame.
    ended: bool,
    end_ts: Option<Timestamp>,
}

impl Capture {
    fn new(
        input: Input,
        policy: Arc<Policy>,
        vis: Visibility,
        s: &Settings,
        metrics: &Metrics,
    ) -> Capture {
        let mut rec = Recorder::new(metrics, &input.interfaces());
        rec.set_policy(&policy, &vis);
        let mut pl = Pipeline::new(policy, s.track);
        pl.record_events(true);
        Capture {
            since: input.is_live().then(Timestamp::now),
            input,
            pl,
            rec,
            vis,
            printer: s.print.then(FindingPrinter::default),
            ended: false,
            end_ts: None,
        }
    }

    /// The current time on the capture's clock.
    fn now(&self) -> Option<Timestamp> {
        match self.ended {
            true => self.end_ts,
            false => self.input.now(),
        }
    }

    fn run(mut self, rx: Receiver<Command>, ready: &Readiness) -> Result<Report, String> {
        let slots = self.input.interfaces().len();
        for i in 0..slots {
            self.rec.capture_up(i, true);
        }
        ready.set_capture_started();
        let mut next_tick = Instant::now();
        loop {
            let cmd = match self.ended {
                // Nothing to capture: wait for a command, waking to tick.
                true => match rx.recv_timeout(TICK) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Command::Stop),
                },
                false => match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => Some(Command::Stop),
                },
            };
            match cmd {
                Some(Command::Stop) => break,
                Some(Command::Reload(p, vis)) => self.reload(p, vis),
                None => {}
            }
            if !self.ended {
                if let Err(e) = self.step(slots) {
                    for i in 0..slots {
                        self.rec.capture_up(i, false);
                    }
                    tracing::error!(error = %e, "capture failed");
                    return Err(e);
                }
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
        let end = self.now().unwrap_or_else(Timestamp::now);
        self.pl.finish(end);
        self.drain();
        self.tick();
        let facts = self.input.facts();
        let window = self.since.map(|s| (s, end.max(s)));
        Ok(Report::build(&self.pl, facts, window, &self.vis))
    }

    /// One poll of the source.
    fn step(&mut self, slots: usize) -> Result<(), String> {
        let Capture { input, pl, rec, .. } = self;
        let live = input.is_live();
        let poll = input.source().poll(&mut |f| {
            let what = pl.ingest(f);
            let slot = if live { f.interface as usize } else { 0 };
            rec.packet(slot, what);
        });
        if self.since.is_none() {
            self.since = self.pl.span().map(|(first, _)| first);
        }
        match poll.map_err(|e| e.to_string())? {
            Poll::Frames(_) => {}
            Poll::Idle => {
                if let Some(now) = self.input.now() {
                    self.pl.advance(now);
                }
            }
            Poll::End => {
                self.end_ts = self.pl.span().map(|(_, end)| end).or(self.input.now());
                if let Some(end) = self.end_ts {
                    self.pl.finish(end);
                }
                self.ended = true;
                for i in 0..slots {
                    self.rec.capture_up(i, false);
                }
                tracing::info!("replay finished; still serving until SIGINT/SIGTERM");
            }
        }
        self.drain();
        Ok(())
    }

    fn drain(&mut self) {
        let events = self.pl.drain_events();
        if events.is_empty() {
            return;
        }
        let policy = self.pl.policy().clone();
        for e in &events {
            self.rec.observe(&policy, e);
            if let Some(p) = &mut self.printer {
                p.print(&policy, e);
            }
        }
        if self.printer.is_some() {
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
    }

    fn tick(&mut self) {
        self.input.sync_drops(&mut self.rec, &mut self.pl);
        if let (Some(since), Some(now)) = (self.since, self.now()) {
            self.rec.tick(&self.pl, since, now.max(since));
        }
    }

    /// Switch to a new policy, keeping the handshake table: attempts still
    /// pending are judged under the new policy when their answer comes;
    /// required-edge evidence is carried over by endpoint names and port.
    fn reload(&mut self, policy: Arc<Policy>, vis: Visibility) {
        self.drain();
        self.pl.swap_policy(policy.clone());
        self.vis = vis;
        self.rec.set_policy(&policy, &self.vis);
        self.tick();
    }
}
