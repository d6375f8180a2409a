//! The capture driver shared by `watch` and `run`/`demo`: it owns the
//! source, the [`Pipeline`] and, for `run`, the metrics [`Recorder`], and
//! runs on one thread until told to stop. Frames are decoded, classified
//! and counted synchronously; nothing here waits on HTTP. `watch` is the
//! driver with a printer and a closing report; `run` adds metrics, HTTP
//! and reload around it (commands arrive over a channel).
//!
//! Time: a paced replay runs on capture time, a live capture on the wall
//! clock; expiry and required-edge windows follow it.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::eventlog::{decide_drained, EventLog};
use super::flowlisten::FlowListen;
use super::follow::Follow;
use super::input::Input;
use super::page::Snapshot;
use super::statedir::{self, StateDir};
use super::Error;
use crate::decode::{Decap, EncapKind};
use crate::export::evidence::FindingsPcap;
use crate::export::findings::FindingPrinter;
use crate::export::http::Readiness;
use crate::export::metrics::Recorder;
use crate::frame::Frame;
use crate::observation::SensorKind;
use crate::pipeline::Pipeline;
use crate::policy::{Policy, Visibility};
use crate::report::{Report, SourceFacts, UnconfiguredTunnel};
use crate::source::follow::{POLL_EVERY, READ_PER_POLL};
use crate::source::live::InterfaceStats;
use crate::source::Poll;
use crate::state::TrackConfig;
use crate::time::Timestamp;

/// How often gauges (flow table, edge missing, capture drops) are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// How long the loop waits for a command between two looks at followed
/// files when there is no capture to wait on.
const FOLLOW_WAIT: Duration = Duration::from_millis(50);

/// Most polls of a followed file or the flow queue at the stop: a file
/// written faster than it is read must not keep the process from ending.
const FINISH_POLLS: usize = 64;

/// How long a live interface may deliver nothing before it is logged as
/// silent.
const SILENT_AFTER: Duration = Duration::from_secs(30);

/// Whether the capture has delivered a frame. A capture that sees nothing
/// must not look healthy: `/-/ready` waits for the first frame, and a live
/// interface that received nothing for [`SILENT_AFTER`] is logged once.
struct Heard {
    any: bool,
    /// Per live interface: received a frame, or was logged silent.
    settled: Vec<bool>,
    since: Instant,
}

impl Heard {
    fn new(slots: usize) -> Heard {
        Heard {
            any: false,
            settled: vec![false; slots],
            since: Instant::now(),
        }
    }

    /// Of interfaces with libpcap counters `stats`: those that received
    /// nothing for [`SILENT_AFTER`], each named once.
    fn newly_silent(&mut self, stats: &[InterfaceStats]) -> Vec<String> {
        let late = self.since.elapsed() >= SILENT_AFTER;
        let mut out = Vec::new();
        for (settled, s) in self.settled.iter_mut().zip(stats) {
            if *settled || (s.received == 0 && !late) {
                continue;
            }
            *settled = true;
            if s.received == 0 {
                out.push(s.iface.clone());
            }
        }
        out
    }
}

/// Messages to the capture thread.
pub(super) enum Command {
    Reload(Arc<Policy>, Visibility),
    /// SIGHUP: reopen the event log (logrotate).
    Reopen,
    Stop,
}

/// The commands waiting, coalesced: however many SIGHUPs queued up while
/// a poll blocked, one reopen and the newest policy are applied, and a stop
/// is never behind them.
#[derive(Default)]
struct Pending {
    stop: bool,
    reload: Option<(Arc<Policy>, Visibility)>,
    reopen: bool,
}

impl Pending {
    /// `first` (if any) and everything else already in `rx`.
    fn take(first: Option<Command>, rx: &Receiver<Command>) -> Pending {
        let mut p = Pending::default();
        let mut next = first;
        loop {
            let cmd = match next.take() {
                Some(c) => c,
                None => match rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => return p,
                    Err(TryRecvError::Disconnected) => Command::Stop,
                },
            };
            match cmd {
                Command::Stop => {
                    p.stop = true;
                    return p;
                }
                Command::Reload(policy, vis) => p.reload = Some((policy, vis)),
                Command::Reopen => p.reopen = true,
            }
        }
    }
}

/// What a failed write of a finding to stdout does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnPrintError {
    /// End the capture: quietly for a closed pipe (`watch | head`), with
    /// the error otherwise.
    Stop,
    /// Stop printing, say so once in the log, keep capturing (`run --print`:
    /// the daemon's job is /metrics).
    Silence,
}

struct Printer {
    findings: FindingPrinter,
    on_error: OnPrintError,
    out: Box<dyn Write + Send>,
}

/// `--state-dir`: where the state goes, and when next.
struct Keeper {
    dir: StateDir,
    every: Duration,
    next: Instant,
    /// Findings reported when last written: a new one is written at the
    /// next tick, so a crash soon after cannot make it new again.
    reported: usize,
}

/// What a capture that ran to its end leaves: the report, and whether the
/// event log got every event and `--write-findings` every packet (reported
/// after the report).
pub(super) struct Finished {
    pub report: Report,
    pub events: Result<(), Error>,
    pub evidence: Result<(), Error>,
}

pub(super) struct Driver {
    input: Input,
    pl: Pipeline,
    vis: Visibility,
    /// The visibility of the command line and site; `vis` adds the nodes
    /// of followed logs to it.
    base_vis: Visibility,
    /// Node logs followed as they grow (`--follow`).
    follow: Option<Follow>,
    /// A followed file has more to read at once.
    follow_more: bool,
    /// NetFlow/IPFIX received over UDP (`--flow-listen`).
    flow: Option<FlowListen>,
    /// The flow queue has more at once.
    flow_more: bool,
    rec: Option<Recorder>,
    printer: Option<Printer>,
    events: EventLog,
    /// `--conn-log`: one line per connection at its end.
    conn_log: EventLog,
    /// `--write-findings`: the packets of connections with findings.
    findings_pcap: Option<FindingsPcap>,
    /// Start of observation: first frame of a replay, start time live.
    since: Option<Timestamp>,
    /// The source ended (a replay without --loop): time stands still at
    /// its last frame.
    ended: bool,
    end_ts: Option<Timestamp>,
    /// Stdout was closed under an [`OnPrintError::Stop`] printer.
    stdout_closed: bool,
    /// Where each tick leaves the report so far (the live page).
    snapshot: Option<Arc<Snapshot>>,
    /// Print each interface's capture counters to stderr at the end.
    closing_counters: bool,
    heard: Heard,
    /// Unconfigured tunnel ports already warned of (bounded by the
    /// pipeline's own cap on them).
    warned: BTreeSet<(EncapKind, u16)>,
    state: Option<Keeper>,
}

/// One frame into the pipeline, its packet counted and, when findings'
/// packets are written, offered to that file.
fn ingest(
    pl: &mut Pipeline,
    rec: Option<&mut Recorder>,
    findings_pcap: &mut Option<FindingsPcap>,
    live: bool,
    f: &Frame<'_>,
) {
    if let Some(w) = findings_pcap {
        w.decide(pl.events(), pl.conns());
        w.frame(f);
    }
    let what = pl.ingest(f);
    if let Some(rec) = rec {
        let slot = if live { f.interface as usize } else { 0 };
        rec.packet(slot, what);
    }
}

impl Driver {
    pub fn new(input: Input, policy: Arc<Policy>, vis: Visibility, track: TrackConfig) -> Driver {
        let mut pl = Pipeline::new(policy, track);
        pl.record_events(true);
        let live_slots = match input.is_live() {
            true => input.interfaces().len(),
            false => 0,
        };
        Driver {
            since: input.on_wall_clock().then(Timestamp::now),
            input,
            pl,
            base_vis: vis.clone(),
            vis,
            follow: None,
            follow_more: false,
            flow: None,
            flow_more: false,
            rec: None,
            printer: None,
            events: EventLog::off(),
            conn_log: EventLog::off(),
            findings_pcap: None,
            ended: false,
            end_ts: None,
            stdout_closed: false,
            snapshot: None,
            closing_counters: false,
            heard: Heard::new(live_slots),
            warned: BTreeSet::new(),
            state: None,
        }
    }

    /// Keep the state in `dir` (`run --state-dir`): read back when the
    /// capture starts, written every `every` and when it stops.
    pub fn with_state(mut self, dir: StateDir, every: Duration) -> Driver {
        self.state = Some(Keeper {
            dir,
            every,
            next: Instant::now() + every,
            reported: 0,
        });
        self
    }

    /// Open the UDP encapsulations on the ports of `decap`.
    pub fn with_decap(mut self, decap: Decap) -> Driver {
        self.pl.set_decap(decap);
        self
    }

    /// Leave the report so far in `snapshot` at the ticks it is wanted.
    pub fn with_snapshot(mut self, snapshot: Arc<Snapshot>) -> Driver {
        self.snapshot = Some(snapshot);
        self
    }

    /// At the end, print each live interface's counters (received, kernel
    /// drops) to stderr, as tcpdump does, so the two can be compared.
    pub fn with_closing_counters(mut self) -> Driver {
        self.closing_counters = true;
        self
    }

    /// Follow node logs (`--follow`): their records go into the pipeline
    /// beside the packets; without a capture, the edges judged are those
    /// of the logs' nodes.
    pub fn with_follow(mut self, follow: Follow) -> Driver {
        // Logs of two formats, or beside packets or flow records: kinds
        // to join.
        if self.input.captures() || self.flow.is_some() || follow.files() > 1 {
            self.pl.join_kinds();
        }
        self.follow = Some(follow);
        self.rejudge();
        self
    }

    /// Receive flow records (`--flow-listen`): into the pipeline beside
    /// the packets; without a capture, the edges judged are those of the
    /// nodes the records carry.
    pub fn with_flow_listen(mut self, flow: FlowListen) -> Driver {
        if self.input.captures() || self.follow.is_some() {
            self.pl.join_kinds();
        }
        self.flow = Some(flow);
        self.rejudge();
        self
    }

    /// A source added: the edges judged again, and the metrics told.
    fn rejudge(&mut self) {
        self.vis = self.judged();
        if let Some(rec) = &mut self.rec {
            rec.set_policy(self.pl.policy(), &self.vis);
        }
    }

    /// The edges judged: the command line's, widened by the followed
    /// logs' nodes and the flow records' nodes.
    fn judged(&self) -> Visibility {
        let captures = self.input.captures();
        let mut v = self.base_vis.clone();
        if let Some(f) = &self.follow {
            v = f.visibility(v, captures);
        }
        if let Some(f) = &self.flow {
            v = f.visibility(v, captures);
        }
        v
    }

    /// Count into `rec` (the daemon's metrics).
    pub fn with_recorder(mut self, mut rec: Recorder) -> Driver {
        rec.set_policy(self.pl.policy(), &self.vis);
        if self.input.captures() {
            rec.source_read(SensorKind::Packets);
        }
        if self.flow.is_some() {
            rec.source_read(SensorKind::Flow);
        }
        self.rec = Some(rec);
        self
    }

    /// Print findings to `out` (stdout) as they happen.
    pub fn with_printer(mut self, on_error: OnPrintError, out: Box<dyn Write + Send>) -> Driver {
        self.printer = Some(Printer {
            findings: FindingPrinter::default(),
            on_error,
            out,
        });
        self
    }

    pub fn with_events(mut self, events: EventLog) -> Driver {
        self.events = events;
        self
    }

    /// Write each connection's end to `log` (`--conn-log`).
    pub fn with_conn_log(mut self, log: EventLog) -> Driver {
        self.pl
            .record_conns(log.is_on() || self.findings_pcap.is_some());
        self.conn_log = log;
        self
    }

    /// Write the packets of connections with findings (`--write-findings`).
    pub fn with_findings_pcap(mut self, w: Option<FindingsPcap>) -> Driver {
        self.pl.record_conns(w.is_some() || self.conn_log.is_on());
        self.findings_pcap = w;
        self
    }

    /// Interface label values, by frame slot.
    pub fn interfaces(&self) -> Vec<String> {
        self.input.interfaces()
    }

    /// The current time on the capture's clock.
    fn now(&self) -> Option<Timestamp> {
        match self.ended {
            true => self.end_ts,
            false => self.input.now(),
        }
    }

    /// Capture until [`Command::Stop`] (or the channel closes, or a
    /// stopping printer finds stdout closed), then close the books: the
    /// report of everything seen.
    pub fn run(
        mut self,
        rx: &Receiver<Command>,
        ready: Option<&Readiness>,
    ) -> Result<Finished, Error> {
        self.restore_state();
        let slots = self.input.interfaces().len();
        self.capture_up(slots, true);
        if let Some(r) = ready {
            r.set_capture_started();
        }
        let mut next_tick = Instant::now();
        loop {
            // Nothing to capture: wait for a command, waking to tick (or
            // to look at the followed files).
            let wait = match (self.ended, self.input.captures()) {
                (true, _) => Some(TICK),
                (false, false) if !self.follow_more && !self.flow_more => Some(FOLLOW_WAIT),
                (false, _) => None,
            };
            let first = match wait {
                Some(t) => match rx.recv_timeout(t) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Command::Stop),
                },
                None => None,
            };
            let pending = Pending::take(first, rx);
            if pending.stop {
                break;
            }
            if let Some((p, vis)) = pending.reload {
                self.reload(p, vis)?;
            }
            if pending.reopen {
                self.events.reopen();
                self.conn_log.reopen();
            }
            if !self.ended {
                let heard = self.heard.any;
                if let Err(e) = self.step(slots) {
                    if matches!(e, Error::Capture(_)) {
                        self.capture_up(slots, false);
                        tracing::error!(error = %e, "capture failed");
                    }
                    return Err(e);
                }
                if let (false, true, Some(r)) = (heard, self.heard.any, ready) {
                    r.set_first_frame();
                }
            }
            if self.stdout_closed {
                break;
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
        if !self.ended {
            self.flush_capture();
        }
        self.finish_follow();
        self.finish_flow();
        let end = self.now().unwrap_or_else(Timestamp::now);
        self.pl.finish(end);
        self.drain()?;
        self.tick();
        self.save_state();
        let events = self.events.finish().and(self.conn_log.finish());
        let evidence = match &mut self.findings_pcap {
            Some(w) => {
                w.finish();
                tracing::info!("--write-findings {}", w.summary());
                w.result().map_err(Error::from)
            }
            None => Ok(()),
        };
        if let Some(rec) = &self.rec {
            rec.metrics().event_log_errors(self.lines_lost());
            if let Some(w) = &self.findings_pcap {
                rec.metrics().findings_not_written(&w.stats());
            }
        }
        if self.closing_counters {
            for s in self.input.live_stats() {
                eprintln!("{s}");
            }
        }
        let facts = self.facts();
        let window = self.since.map(|s| (s, end.max(s)));
        Ok(Finished {
            report: Report::build(&self.pl, facts, window, &self.vis),
            events,
            evidence,
        })
    }

    /// What the report says about the sources: the capture's, then each
    /// followed file's.
    fn facts(&mut self) -> Vec<SourceFacts> {
        let mut facts = self.input.facts();
        if let Some(f) = &self.follow {
            facts.extend(f.facts());
        }
        if let Some(f) = &self.flow {
            facts.push(f.facts());
        }
        facts
    }

    /// Read what is new in the followed files into the pipeline; a log
    /// whose node was just found widens what is judged.
    fn follow(&mut self) {
        let Driver {
            follow, pl, rec, ..
        } = self;
        let Some(f) = follow else {
            return;
        };
        let polled = f.poll(Instant::now(), pl, rec.as_mut());
        self.follow_more = polled.more;
        self.heard.any |= polled.records > 0;
        if f.take_new_nodes() {
            self.rejudge();
        }
    }

    /// Decode the flow datagrams that arrived into the pipeline.
    fn flow(&mut self) {
        let Driver { flow, pl, rec, .. } = self;
        let Some(f) = flow else {
            return;
        };
        let polled = f.poll(pl, rec.as_mut());
        self.flow_more = polled.more;
        self.heard.any |= polled.datagrams > 0;
        if f.take_new_nodes() {
            self.rejudge();
        }
    }

    fn capture_up(&mut self, slots: usize, up: bool) {
        if let Some(rec) = &mut self.rec {
            for i in 0..slots {
                rec.capture_up(i, up);
            }
        }
    }

    /// Stopped: the frames the live capture already holds still go
    /// through, so the findings of its last packets reach the closing
    /// summary and the event log.
    fn flush_capture(&mut self) {
        let Driver {
            input,
            pl,
            rec,
            findings_pcap,
            ..
        } = self;
        let live = input.is_live();
        let flushed = input.flush(&mut |f| ingest(pl, rec.as_mut(), findings_pcap, live, f));
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "reading the capture's last frames failed");
        }
    }

    /// Stopped: what the followed logs hold is read now, and the lines
    /// waiting for their node or for their connection's other direction go
    /// out as if their waits had ended; else a record written just before
    /// the stop would miss the closing report.
    fn finish_follow(&mut self) {
        let Driver {
            follow, pl, rec, ..
        } = self;
        let Some(f) = follow else {
            return;
        };
        // A look is due once the poll interval has passed.
        let read = Instant::now() + POLL_EVERY;
        if f.finish(read, FINISH_POLLS, pl, rec.as_mut()) {
            tracing::warn!(
                polls = FINISH_POLLS,
                bytes_a_poll = READ_PER_POLL,
                "stopped with more of a followed file unread; the closing report covers what was read"
            );
        }
        if f.take_new_nodes() {
            self.rejudge();
        }
    }

    /// Stopped: the flow datagrams already received are decoded, then
    /// everything the collector holds is settled.
    fn finish_flow(&mut self) {
        let Driver { flow, pl, rec, .. } = self;
        let Some(f) = flow else {
            return;
        };
        for _ in 0..FINISH_POLLS {
            if !f.poll(pl, rec.as_mut()).more {
                break;
            }
        }
        f.finish(pl);
        if f.take_new_nodes() {
            self.rejudge();
        }
    }

    /// One poll of the source.
    fn step(&mut self, slots: usize) -> Result<(), Error> {
        let Driver {
            input,
            pl,
            rec,
            findings_pcap,
            ..
        } = self;
        let live = input.is_live();
        let poll = input
            .source()
            .poll(&mut |f| ingest(pl, rec.as_mut(), findings_pcap, live, f));
        if let Some(rec) = &self.rec {
            self.input.sync_interfaces(rec);
        }
        self.follow();
        self.flow();
        if self.since.is_none() {
            self.since = self.pl.span().map(|(first, _)| first);
        }
        self.warn_unconfigured();
        match poll.map_err(Error::Capture)? {
            Poll::Frames(n) => self.heard.any |= n > 0,
            Poll::Idle => {
                if let Some(now) = self.input.now() {
                    self.pl.advance(now);
                }
            }
            Poll::Restarted => {
                if let Some((_, end)) = self.pl.span() {
                    self.pl.restart_capture(end);
                }
            }
            Poll::End => {
                self.end_ts = self.pl.span().map(|(_, end)| end).or(self.input.now());
                if let Some(end) = self.end_ts {
                    self.pl.finish(end);
                }
                self.ended = true;
                self.capture_up(slots, false);
                tracing::info!("replay finished; still serving until SIGINT/SIGTERM");
            }
        }
        self.drain()
    }

    /// Hand the pipeline's events to the metrics, the printer and the
    /// event log.
    /// Name each UDP port carrying an unopened tunnel once.
    fn warn_unconfigured(&mut self) {
        let seen = &self.pl.stats().unconfigured;
        if seen.len() == self.warned.len() {
            return;
        }
        for (&(kind, port), &frames) in seen {
            if self.warned.insert((kind, port)) {
                let u = UnconfiguredTunnel {
                    kind: kind.as_str(),
                    port,
                    frames,
                };
                tracing::warn!("{}", u.warning());
            }
        }
    }

    fn drain(&mut self) -> Result<(), Error> {
        decide_drained(&mut self.findings_pcap, &self.pl);
        let conns = self.pl.drain_conns();
        self.conn_log.write_conns(self.pl.policy(), &conns);
        let events = self.pl.drain_events();
        if events.is_empty() {
            return Ok(());
        }
        let policy = self.pl.policy().clone();
        if let Some(rec) = &mut self.rec {
            let wall = Instant::now();
            for e in &events {
                rec.observe(&policy, e, wall);
            }
        }
        if let Some(p) = &mut self.printer {
            let written = events
                .iter()
                .try_for_each(|e| p.findings.write(&mut p.out, &policy, e))
                .and_then(|_| p.out.flush());
            if let Err(e) = written {
                match p.on_error {
                    OnPrintError::Stop if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        self.printer = None;
                        self.stdout_closed = true;
                    }
                    OnPrintError::Stop => return Err(Error::Stdout(e)),
                    OnPrintError::Silence => {
                        tracing::warn!(error = %e, "cannot print findings to stdout; printing stopped, capture and metrics go on");
                        self.printer = None;
                    }
                }
            }
        }
        self.events.write(&policy, &events);
        Ok(())
    }

    /// Read the state kept in `--state-dir` back, if there is one to take.
    fn restore_state(&mut self) {
        let Some(k) = &self.state else {
            return;
        };
        let want = crate::state::saved::Identity::of(self.pl.policy());
        let loaded = k.dir.load(&want, Timestamp::now());
        if let Some(rec) = &self.rec {
            rec.metrics().state_kept();
            if let statedir::Loaded::SetAside(reason) = loaded {
                rec.metrics().state_rejected(reason);
            }
        }
        let Some(saved) = loaded.saved() else {
            return;
        };
        let file = k.dir.path();
        let reporters = statedir::Reporters {
            events: &mut self.events,
            printed: self.printer.as_mut().map(|p| &mut p.findings.due),
            rec: self.rec.as_mut(),
        };
        statedir::restore(&saved, &file, &mut self.pl, reporters);
        let reported = self.reported();
        if let Some(k) = &mut self.state {
            k.reported = reported;
        }
    }

    /// Write the state to `--state-dir` now.
    fn save_state(&mut self) {
        if self.state.is_none() {
            return;
        }
        let now = self.now().unwrap_or_else(Timestamp::now);
        let since = self.since.unwrap_or(now).min(now);
        let reporters = statedir::Reporters {
            events: &mut self.events,
            printed: self.printer.as_mut().map(|p| &mut p.findings.due),
            rec: self.rec.as_mut(),
        };
        let saved = statedir::snapshot(&self.pl, &self.vis, (since, now), reporters);
        let reported = self.reported();
        if let Some(k) = &mut self.state {
            let ok = k.dir.write(&saved);
            if let Some(rec) = &self.rec {
                rec.metrics().state_written(ok, Timestamp::now());
            }
            k.next = Instant::now() + k.every;
            k.reported = reported;
        }
    }

    /// Distinct findings reported so far (logged, printed, or with an
    /// alert series), and edges reported missing.
    fn reported(&mut self) -> usize {
        let logged =
            (self.events.formatter()).map_or(0, |f| f.occurrences().len() + f.missing_count());
        let printed = self.printer.as_ref().map_or(0, |p| p.findings.due.len());
        let alerts = self.rec.as_ref().map_or(0, |r| r.alert_series());
        logged.max(printed) + alerts
    }

    /// Once a second: gauges, missing-edge alerts, the event log flushed.
    fn tick(&mut self) {
        let now = self.now();
        if self.heard.settled.contains(&false) {
            let stats = self.input.live_stats();
            for name in self.heard.newly_silent(&stats) {
                tracing::warn!(
                    interface = %name,
                    after = ?SILENT_AFTER,
                    "no frame captured on this interface: wrong interface, a mirror port not delivering, or promiscuous mode off (--no-promisc)"
                );
            }
        }
        self.input.sync_drops(self.rec.as_mut(), &mut self.pl);
        if let Some(rec) = &mut self.rec {
            rec.expire_findings(Instant::now());
            if let (Some(since), Some(now)) = (self.since, now) {
                rec.tick(&self.pl, since, now.max(since));
            }
        }
        if let (Some(since), Some(now)) = (self.since, now) {
            self.events
                .judge_edges(&self.pl, &self.vis, since, now.max(since));
        }
        self.events.flush();
        self.conn_log.flush();
        if let Some(w) = &mut self.findings_pcap {
            w.flush();
        }
        if let Some(rec) = &self.rec {
            rec.metrics().event_log_errors(self.lines_lost());
            if let Some(w) = &self.findings_pcap {
                rec.metrics().findings_not_written(&w.stats());
            }
        }
        let reported = match self.state.is_some() {
            true => self.reported(),
            false => 0,
        };
        if (self.state.as_ref()).is_some_and(|k| Instant::now() >= k.next || reported != k.reported)
        {
            self.save_state();
        }
        if let (Some(snapshot), Some(since), Some(now)) = (self.snapshot.clone(), self.since, now) {
            if snapshot.wanted() {
                let window = Some((since, now.max(since)));
                let facts = self.facts();
                let report = Report::build(&self.pl, facts, window, &self.vis);
                snapshot.put(self.pl.policy().clone(), report);
            }
        }
    }

    /// Lines of the event log and the conn log not written so far.
    fn lines_lost(&self) -> u64 {
        self.events.lost() + self.conn_log.lost()
    }

    /// Switch to a new policy, keeping the handshake table: attempts still
    /// pending are judged under the new policy when their answer comes, open
    /// connections stay evidence; required-edge evidence is carried over by
    /// endpoint names and port.
    fn reload(&mut self, policy: Arc<Policy>, vis: Visibility) -> Result<(), Error> {
        self.drain()?;
        self.input.follow_policy(&policy);
        self.pl.swap_policy(policy.clone());
        self.base_vis = vis.clone();
        self.vis = vis;
        if let Some(f) = &mut self.follow {
            f.set_policy(&policy);
        }
        self.vis = self.judged();
        if let Some(rec) = &mut self.rec {
            rec.set_policy(&policy, &self.vis);
        }
        self.events.set_policy(&policy);
        self.tick();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, Sender};

    use super::super::input::InputSpec;
    use super::super::settings::DEMO_PCAP;
    use super::*;
    use crate::config::load_policy;
    use crate::source::file::Savefile;
    use crate::source::replay::ReplayOptions;

    /// A stdout whose reader is gone; counts the writes tried.
    struct Closed(Arc<AtomicUsize>);

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The demo capture, replayed as fast as pacing allows, printing to a
    /// closed stdout; runs on its own thread.
    fn demo(
        on_error: OnPrintError,
    ) -> (
        Sender<Command>,
        Arc<AtomicUsize>,
        std::sync::mpsc::Receiver<Result<Report, Error>>,
    ) {
        let policy = Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy);
        let input = Input::open(&InputSpec::Paced {
            savefiles: vec![Savefile::Embedded {
                name: "demo.pcap",
                bytes: DEMO_PCAP,
            }],
            opts: ReplayOptions {
                speed: 1e6,
                looping: false,
            },
        })
        .unwrap();
        let tries = Arc::new(AtomicUsize::new(0));
        let driver = Driver::new(input, policy, Visibility::default(), TrackConfig::default())
            .with_printer(on_error, Box::new(Closed(tries.clone())));
        let (tx, rx) = channel();
        let (done_tx, done) = channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(driver.run(&rx, None).map(|done| done.report));
        });
        (tx, tries, done)
    }

    #[test]
    fn a_closed_stdout_ends_a_stopping_printer_with_its_report() {
        let (_keep_open, tries, done) = demo(OnPrintError::Stop);
        let report = done
            .recv_timeout(Duration::from_secs(30))
            .expect("the capture ends by itself")
            .expect("a closed pipe is no error");
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert!(
            report.has_findings(),
            "the finding it could not print is counted"
        );
    }

    #[test]
    fn a_closed_stdout_only_silences_a_silencing_printer() {
        let (tx, tries, done) = demo(OnPrintError::Silence);
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            done.try_recv().is_err(),
            "the capture goes on without its printer"
        );
        tx.send(Command::Stop).unwrap();
        let report = done
            .recv_timeout(Duration::from_secs(30))
            .expect("stops when told")
            .expect("no error");
        assert_eq!(
            tries.load(Ordering::SeqCst),
            1,
            "printing stopped at the first failure"
        );
        assert_eq!(
            report.capture.packets, 1008,
            "the whole demo capture was read"
        );
        assert!(report.has_findings());
    }

    #[test]
    fn queued_commands_coalesce_and_a_stop_goes_first() {
        let policy = Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy);
        let (tx, rx) = channel();
        for _ in 0..500 {
            tx.send(Command::Reopen).unwrap();
            tx.send(Command::Reload(policy.clone(), Visibility::default()))
                .unwrap();
        }
        let p = Pending::take(None, &rx);
        assert!(!p.stop && p.reopen && p.reload.is_some());
        assert!(rx.try_recv().is_err(), "all taken at once");
        for _ in 0..500 {
            tx.send(Command::Reload(policy.clone(), Visibility::default()))
                .unwrap();
        }
        tx.send(Command::Stop).unwrap();
        assert!(Pending::take(None, &rx).stop);
        drop(tx);
        assert!(Pending::take(None, &rx).stop, "a closed channel stops");
    }
}
