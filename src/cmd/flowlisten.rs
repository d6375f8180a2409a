//! `run --flow-listen ADDR:PORT`: NetFlow v5, v9 and IPFIX received over
//! UDP. One thread per socket receives datagrams into a bounded queue
//! ([`QUEUE_DATAGRAMS`]; a full queue drops and counts them); the capture
//! thread drains it, decodes ([`Collector`]) and feeds the observations to
//! the same pipeline as the packets and followed logs. Records are counted
//! in `portwatch_records_total{node="unknown",format="flow_export",reason}`
//! (the exporter's address is never a label).
//!
//! Coverage: a datagram from an exporter the site declares (`exporters:`)
//! covers what the declaration names; records from an address no
//! declaration names cover the site's nodes they carry, and the address is
//! logged once and counted (`undeclared_exporter`, per datagram). A
//! sequence gap of a declared exporter leaves only the required edges it
//! covers unjudged over the gap's window; one of an undeclared exporter,
//! every edge.
//!
//! Per exporter, datagrams and losses are counted under its declared name,
//! or `undeclared` (`portwatch_flow_export_*_total{exporter}`).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::flowlogs::{exporter_names, ExporterTotals};
use super::Error;
use crate::export::metrics::{ExporterCounts, Recorder};
use crate::observation::Observation;
use crate::pipeline::Pipeline;
use crate::policy::{EdgeId, Policy, Visibility};
use crate::report::SourceFacts;
use crate::site::exporter_index;
use crate::source::flows::netflow::{Collector, Origin, Version};
use crate::source::flows::FlowItem;
use crate::time::Timestamp;

/// Datagrams waiting for the capture thread; beyond, dropped and counted.
pub const QUEUE_DATAGRAMS: usize = 16 * 1024;
/// Datagrams decoded per poll before the driver looks at its commands.
const BATCH: usize = 4096;
/// The largest datagram read (UDP's own limit).
const MAX_DATAGRAM: usize = 65_535;
/// How often a receiving thread looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// The `format` label of export records.
pub const FORMAT: &str = "flow_export";

struct Datagram {
    from: IpAddr,
    at: Timestamp,
    bytes: Vec<u8>,
}

/// The bound sockets, not yet receiving (bound before root is dropped).
pub(super) struct Bound(Vec<(SocketAddr, UdpSocket)>);

/// Bind every `--flow-listen` address (all or nothing), each socket with
/// a receive buffer of `rcvbuf` bytes asked.
pub(super) fn bind(addrs: &[SocketAddr], rcvbuf: usize) -> Result<Bound, Error> {
    addrs
        .iter()
        .map(|&addr| {
            let s = UdpSocket::bind(addr)
                .and_then(|s| s.set_read_timeout(Some(STOP_CHECK)).map(|()| s))
                .map_err(|e| Error::Listen { addr, source: e })?;
            receive_buffer(&s, addr, rcvbuf);
            Ok((addr, s))
        })
        .collect::<Result<_, _>>()
        .map(Bound)
}

/// Ask for a receive buffer of `want` bytes; past `net.core.rmem_max`,
/// force it (SO_RCVBUFFORCE, which needs CAP_NET_ADMIN: root, before the
/// privileges are dropped). What the kernel granted is logged.
fn receive_buffer(s: &UdpSocket, addr: SocketAddr, want: usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if want == 0 {
        return;
    }
    // Linux reports twice the size granted (its bookkeeping included).
    let granted = || getsockopt(s, sockopt::RcvBuf).unwrap_or(0) / 2;
    let _ = setsockopt(s, sockopt::RcvBuf, &want);
    let mut forced = false;
    if granted() < want {
        forced = setsockopt(s, sockopt::RcvBufForce, &want).is_ok();
    }
    let got = granted();
    if got < want {
        tracing::warn!(
            %addr, asked = want, granted = got,
            "--flow-listen: receive buffer capped by net.core.rmem_max (raise it, or start as root); bursts may be lost"
        );
    } else {
        tracing::info!(%addr, asked = want, granted = got, forced, "--flow-listen: receive buffer");
    }
}

pub(super) struct FlowListen {
    rx: Receiver<Datagram>,
    collector: Collector,
    /// Datagrams the full queue dropped.
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    items: Vec<FlowItem>,
    /// Counts already handed to the metrics.
    reported: std::collections::BTreeMap<&'static str, u64>,
    reported_drops: u64,
    cover: Cover,
    new_nodes: bool,
    /// Undeclared exporters logged (at most [`MAX_UNDECLARED_LOGGED`]).
    undeclared: std::collections::BTreeSet<IpAddr>,
    /// Datagrams from undeclared exporters.
    undeclared_datagrams: u64,
    reported_undeclared: u64,
    /// The policy the per-exporter state below is indexed by.
    policy: Option<Arc<Policy>>,
    /// Not yet in the metrics, per declared exporter (by position in the
    /// site's `exporters:`) and, last, the undeclared ones.
    pending: Vec<ExporterCounts>,
    /// The per-exporter series exist (at 0) for `policy`.
    labelled: bool,
    /// Per exporter since the start, for the closing report.
    totals: ExporterTotals,
    gap_edges: GapEdges,
}

/// Undeclared exporter addresses logged once each; beyond, not logged.
const MAX_UNDECLARED_LOGGED: usize = 1024;

/// What one poll did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Polled {
    pub datagrams: usize,
    /// The queue has more at once.
    pub more: bool,
}

impl FlowListen {
    /// Start receiving on the bound sockets.
    pub fn start(bound: Bound) -> Result<FlowListen, Error> {
        let (tx, rx) = sync_channel(QUEUE_DATAGRAMS);
        let mut collector = Collector::new();
        collector.origins = Some(Vec::new());
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        for (addr, socket) in bound.0 {
            addrs.push(addr);
            let (tx, dropped, stop) = (tx.clone(), dropped.clone(), stop.clone());
            std::thread::Builder::new()
                .name("flow-listen".into())
                .spawn(move || receive(&socket, &tx, &dropped, &stop))
                .map_err(|e| Error::Start {
                    what: "starting a --flow-listen thread",
                    source: e,
                })?;
        }
        Ok(FlowListen {
            rx,
            collector,
            dropped,
            stop,
            addrs,
            items: Vec::new(),
            reported: Default::default(),
            reported_drops: 0,
            cover: Cover::default(),
            new_nodes: false,
            undeclared: Default::default(),
            undeclared_datagrams: 0,
            reported_undeclared: 0,
            policy: None,
            pending: Vec::new(),
            labelled: false,
            totals: ExporterTotals::default(),
            gap_edges: GapEdges::default(),
        })
    }

    /// Index the per-exporter state by `policy` (at start and after a
    /// reload; what is pending was reported under the one before).
    fn follow_policy(&mut self, policy: &Arc<Policy>) {
        if self.policy.as_ref().is_some_and(|p| Arc::ptr_eq(p, policy)) {
            return;
        }
        let n = policy.site.exporters.len();
        self.pending = vec![ExporterCounts::default(); n + 1];
        self.gap_edges = GapEdges::default();
        self.cover.new_policy();
        self.labelled = false;
        self.policy = Some(policy.clone());
    }

    /// The pending counts of the declared exporter at `index`, or of the
    /// undeclared ones.
    fn pending(&mut self, index: Option<usize>) -> &mut ExporterCounts {
        let last = self.pending.len() - 1;
        &mut self.pending[index.unwrap_or(last).min(last)]
    }

    /// Decode what has arrived into the pipeline and the metrics.
    pub fn poll(&mut self, pl: &mut Pipeline, rec: Option<&mut Recorder>) -> Polled {
        let mut polled = Polled::default();
        self.follow_policy(pl.policy());
        while polled.datagrams < BATCH {
            let Ok(d) = self.rx.try_recv() else { break };
            polled.datagrams += 1;
            self.sender(pl.policy(), d.from, Version::domain(&d.bytes));
            self.collector
                .packet(d.from, d.at, &d.bytes, &mut self.items);
        }
        polled.more = polled.datagrams == BATCH;
        self.collector.expire(Timestamp::now(), &mut self.items);
        self.feed(pl);
        if let Some(policy) = &self.policy {
            self.totals.add(policy, &self.pending);
        }
        match rec {
            Some(rec) => self.report(rec),
            None => self.pending.fill(ExporterCounts::default()),
        }
        polled
    }

    /// A datagram's sender: a declared exporter heard first covers its
    /// declared set; an undeclared one is counted, and logged once.
    fn sender(&mut self, policy: &Policy, from: IpAddr, domain: Option<u32>) {
        let before = self.cover.nodes.len();
        let index = self.cover.sender(policy, from, domain);
        self.new_nodes |= self.cover.nodes.len() > before;
        self.pending(index).datagrams += 1;
        if index.is_none() {
            self.undeclared_datagrams += 1;
            if self.undeclared.len() < MAX_UNDECLARED_LOGGED && self.undeclared.insert(from) {
                tracing::warn!(
                    exporter = %from,
                    domain = ?domain,
                    "--flow-listen: an exporter the site does not declare (exporters:); its records cover the nodes they carry"
                );
            }
        }
    }

    /// The counts since the last report into the metrics.
    fn report(&mut self, rec: &mut Recorder) {
        if let Some(policy) = self.policy.clone() {
            for (name, n) in exporter_names(&policy).zip(&mut self.pending) {
                if self.labelled && *n == ExporterCounts::default() {
                    continue;
                }
                rec.flow_exporter(name, std::mem::take(n));
            }
            self.labelled = true;
        }
        for (&reason, &n) in &self.collector.counts {
            let before = self.reported.insert(reason, n).unwrap_or(0);
            if n > before {
                rec.records_n(FORMAT, reason, n - before);
            }
        }
        let drops = self.dropped.load(Ordering::Relaxed);
        if drops > self.reported_drops {
            rec.records_n(FORMAT, "queue_full", drops - self.reported_drops);
            self.reported_drops = drops;
        }
        let n = self.undeclared_datagrams - self.reported_undeclared;
        if n > 0 {
            rec.records_n(FORMAT, UNDECLARED_REASON, n);
            self.reported_undeclared = self.undeclared_datagrams;
        }
    }

    /// Everything still held is settled (the daemon stops).
    pub fn finish(&mut self, pl: &mut Pipeline) {
        self.collector.finish(&mut self.items);
        self.feed(pl);
    }

    fn feed(&mut self, pl: &mut Pipeline) {
        let policy = pl.policy().clone();
        self.follow_policy(&policy);
        let origins = self.collector.origins.as_mut().map(std::mem::take);
        let mut origins = origins.unwrap_or_default().into_iter();
        let mut exporter = ExporterIndex::default();
        for item in std::mem::take(&mut self.items) {
            let Some(from) = origins.next() else {
                debug_assert!(false, "an item without its origin");
                continue;
            };
            let index = exporter.of(&policy, &from);
            match item {
                FlowItem::Observed(o) => {
                    let before = self.cover.nodes.len();
                    self.cover.observed(&policy, index, &o);
                    self.new_nodes |= self.cover.nodes.len() > before;
                    pl.observe(&o)
                }
                FlowItem::Gap { to, .. } => self.gap(pl, &policy, from, index, to),
            }
        }
    }

    /// A sequence gap: counted under its exporter; the edges a declared
    /// exporter covers (every edge, for an undeclared one) cannot be
    /// missing over a window that holds it.
    fn gap(
        &mut self,
        pl: &mut Pipeline,
        policy: &Policy,
        from: Origin,
        index: Option<usize>,
        at: Timestamp,
    ) {
        let n = self.pending(index);
        n.lost_records += from.lost.records;
        n.lost_packets += from.lost.packets;
        self.gap_edges.lost(pl, policy, index, at);
    }

    /// Whether the records named a node not named before, since the last call.
    pub fn take_new_nodes(&mut self) -> bool {
        std::mem::take(&mut self.new_nodes)
    }

    /// Which required edges are judged: a capture of the whole site sees
    /// them all; otherwise the declared exporters heard from cover what
    /// the site says, and undeclared ones the site's nodes their records
    /// carry (as a flow log given to `replay` without `--sensor`), added
    /// to those named otherwise.
    pub fn visibility(&self, vis: Visibility, captures: bool) -> Visibility {
        if captures && !vis.limited {
            return vis;
        }
        let mut nodes = vis.nodes;
        for n in &self.cover.nodes {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        Visibility {
            nodes,
            limited: true,
            unjudged: None,
        }
    }

    /// What the report says of the collector.
    pub fn facts(&self) -> SourceFacts {
        let mut counts = self.collector.counts.clone();
        if self.undeclared_datagrams > 0 {
            counts.insert(UNDECLARED_REASON, self.undeclared_datagrams);
        }
        let drops = self.dropped.load(Ordering::Relaxed);
        if drops > 0 {
            counts.insert("queue_full", drops);
        }
        let addrs: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        SourceFacts {
            path: format!("udp:{}", addrs.join(",")),
            format: "netflow-ipfix".into(),
            packets: self.collector.records,
            exporters: (self.policy.as_ref())
                .map(|p| self.totals.facts(p, &self.pending))
                .unwrap_or_default(),
            ..SourceFacts::default()
        }
        .with_fidelity(crate::observation::SourceKind::FlowExport, None, counts)
    }
}

impl Drop for FlowListen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The site's endpoints export datagrams cover (`run --flow-listen`, and
/// `replay` of a capture of them): a declared exporter heard from covers
/// what the site says; an undeclared one, the site's nodes its records
/// carry. Bounded by the site.
#[derive(Debug, Default)]
pub(super) struct Cover {
    /// In the order first covered.
    pub nodes: Vec<String>,
    /// Declared exporters heard from, by position in `exporters:`.
    heard: std::collections::BTreeSet<usize>,
    /// Address pairs of undeclared exporters' records whose nodes are in
    /// `nodes` already, direct-mapped ([`CARRIED_SLOTS`], made on first
    /// use): a record of a pair seen before asks the policy nothing (a
    /// collision only asks again). Valid for one policy.
    carried: Vec<Option<(IpAddr, IpAddr)>>,
}

/// Slots of [`Cover`]'s address pairs: every record of an undeclared
/// exporter looks here, and a site's traffic is mostly between few pairs.
const CARRIED_SLOTS: usize = 1024;

impl Cover {
    /// A datagram from `from` (observation `domain`): the position of the
    /// declared exporter it is from, whose cover it adds when first heard.
    pub fn sender(&mut self, policy: &Policy, from: IpAddr, domain: Option<u32>) -> Option<usize> {
        let index = exporter_index(&policy.site.exporters, from, domain)?;
        if self.heard.insert(index) {
            let x = &policy.site.exporters[index];
            tracing::info!(exporter = %x.name, "first datagram of a declared exporter");
            for n in policy.exporter_covers(x) {
                self.add(n);
            }
        }
        Some(index)
    }

    /// An observation from the exporter at `index` (none: undeclared,
    /// whose records cover the nodes they carry).
    pub fn observed(&mut self, policy: &Policy, index: Option<usize>, o: &Observation) {
        if index.is_some() {
            return;
        }
        let pair = (o.key.client, o.key.server);
        if self.carried.is_empty() {
            self.carried = vec![None; CARRIED_SLOTS];
        }
        let slot = &mut self.carried[carried_slot(pair)];
        if *slot == Some(pair) {
            return;
        }
        *slot = Some(pair);
        for id in policy.nodes_carried(o) {
            self.add(policy.endpoint(id).name.clone());
        }
    }

    /// Another policy is in force: its nodes are asked of again.
    pub fn new_policy(&mut self) {
        self.carried.clear();
    }

    fn add(&mut self, name: String) {
        if !self.nodes.contains(&name) {
            self.nodes.push(name);
        }
    }
}

/// The slot of an address pair in [`Cover`]'s direct-mapped pairs.
fn carried_slot((a, b): (IpAddr, IpAddr)) -> usize {
    use crate::observation::address_bits;
    // A multiplicative mix, not a keyed hash: the slots are a cache's,
    // which crafted pairs can only make miss.
    let x = address_bits(a) ^ address_bits(b).rotate_left(47);
    let h = ((x >> 64) as u64 ^ x as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 54) as usize % CARRIED_SLOTS
}

/// The required edges each declared exporter covers (by position in the
/// site's `exporters:`), found once one of its gaps needs them. Bounded by
/// the site; a new site starts it anew.
#[derive(Default)]
pub(super) struct GapEdges(Vec<Option<Vec<EdgeId>>>);

impl GapEdges {
    /// A sequence gap up to `at` of the declared exporter at `index`
    /// leaves only the edges it covers unjudged; of any other, every edge.
    pub fn lost(
        &mut self,
        pl: &mut Pipeline,
        policy: &Policy,
        index: Option<usize>,
        at: Timestamp,
    ) {
        let declared = index.and_then(|i| Some((i, policy.site.exporters.get(i)?)));
        let Some((i, x)) = declared else {
            return pl.sensor_lost(at);
        };
        if self.0.len() <= i {
            self.0.resize(policy.site.exporters.len(), None);
        }
        let edges = self.0[i].get_or_insert_with(|| policy.exporter_edges(x));
        pl.exporter_lost(edges, at);
    }
}

/// The declared exporter an item's origin names, looked up once per run
/// of items from one exporter and domain (a datagram's records), not per
/// record.
#[derive(Default)]
pub(super) struct ExporterIndex {
    last: Option<(IpAddr, Option<u32>, Option<usize>)>,
}

impl ExporterIndex {
    /// The position in the site's `exporters:` of the one `from` names.
    pub fn of(&mut self, policy: &Policy, from: &Origin) -> Option<usize> {
        match self.last {
            Some((a, d, i)) if a == from.exporter && d == from.domain => i,
            _ => {
                let i = exporter_index(&policy.site.exporters, from.exporter, from.domain);
                self.last = Some((from.exporter, from.domain, i));
                i
            }
        }
    }
}

/// The `reason` label of datagrams from exporters the site does not declare.
pub(super) const UNDECLARED_REASON: &str = "undeclared_exporter";

/// A receiving thread: datagrams into the queue until told to stop.
fn receive(socket: &UdpSocket, tx: &SyncSender<Datagram>, dropped: &AtomicU64, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "--flow-listen: receive failed");
                std::thread::sleep(STOP_CHECK);
                continue;
            }
        };
        let d = Datagram {
            from: from.ip(),
            at: Timestamp::now(),
            bytes: buf[..n].to_vec(),
        };
        match tx.try_send(d) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
