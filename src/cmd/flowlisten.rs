//! `run --flow-listen ADDR:PORT`: NetFlow v5, v9 and IPFIX received over
//! UDP. One thread per socket receives datagrams into a bounded queue
//! ([`QUEUE_DATAGRAMS`]; a full queue drops and counts them); the capture
//! thread drains it, decodes ([`Collector`]) and feeds the observations to
//! the same pipeline as the packets and followed logs. Records are counted
//! in `portwatch_records_total{node="unknown",format="flow_export",reason}`
//! (the exporter's address is never a label).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::Error;
use crate::export::metrics::Recorder;
use crate::pipeline::Pipeline;
use crate::policy::{Peer, Visibility};
use crate::report::SourceFacts;
use crate::source::flows::netflow::Collector;
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

/// Bind every `--flow-listen` address (all or nothing).
pub(super) fn bind(addrs: &[SocketAddr]) -> Result<Bound, Error> {
    addrs
        .iter()
        .map(|&addr| {
            UdpSocket::bind(addr)
                .and_then(|s| s.set_read_timeout(Some(STOP_CHECK)).map(|()| (addr, s)))
                .map_err(|e| Error::Listen { addr, source: e })
        })
        .collect::<Result<_, _>>()
        .map(Bound)
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
    /// The site's nodes the records carried (bounded by the site).
    nodes: Vec<String>,
    new_nodes: bool,
}

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
            collector: Collector::new(),
            dropped,
            stop,
            addrs,
            items: Vec::new(),
            reported: Default::default(),
            reported_drops: 0,
            nodes: Vec::new(),
            new_nodes: false,
        })
    }

    /// Decode what has arrived into the pipeline and the metrics.
    pub fn poll(&mut self, pl: &mut Pipeline, rec: Option<&mut Recorder>) -> Polled {
        let mut polled = Polled::default();
        while polled.datagrams < BATCH {
            let Ok(d) = self.rx.try_recv() else { break };
            polled.datagrams += 1;
            self.collector
                .packet(d.from, d.at, &d.bytes, &mut self.items);
        }
        polled.more = polled.datagrams == BATCH;
        self.collector.expire(Timestamp::now(), &mut self.items);
        self.feed(pl);
        if let Some(rec) = rec {
            self.report(rec);
        }
        polled
    }

    /// The counts since the last report into the metrics.
    fn report(&mut self, rec: &mut Recorder) {
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
    }

    /// Everything still held is settled (the daemon stops).
    pub fn finish(&mut self, pl: &mut Pipeline) {
        self.collector.finish(&mut self.items);
        self.feed(pl);
    }

    fn feed(&mut self, pl: &mut Pipeline) {
        let policy = pl.policy().clone();
        for item in self.items.drain(..) {
            match item {
                FlowItem::Observed(o) => {
                    for ip in [o.key.client, o.key.server] {
                        if let p @ Peer::Endpoint(id) = policy.peer_of(ip) {
                            let name = &policy.endpoint(id).name;
                            if policy.is_node(p) && !self.nodes.iter().any(|n| **n == **name) {
                                self.nodes.push(name.to_string());
                                self.new_nodes = true;
                            }
                        }
                    }
                    pl.observe(&o)
                }
                FlowItem::Gap { to, .. } => pl.sensor_lost(to),
            }
        }
    }

    /// Whether the records named a node not named before, since the last call.
    pub fn take_new_nodes(&mut self) -> bool {
        std::mem::take(&mut self.new_nodes)
    }

    /// Which required edges are judged: a capture of the whole site sees
    /// them all; otherwise the exporters cover the site's nodes their
    /// records carry (as a flow log given to `replay` without `--sensor`),
    /// added to those named otherwise.
    pub fn visibility(&self, vis: Visibility, captures: bool) -> Visibility {
        if captures && !vis.limited {
            return vis;
        }
        let mut nodes = vis.nodes;
        for n in &self.nodes {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        Visibility {
            nodes,
            limited: true,
        }
    }

    /// What the report says of the collector.
    pub fn facts(&self) -> SourceFacts {
        let mut counts = self.collector.counts.clone();
        let drops = self.dropped.load(Ordering::Relaxed);
        if drops > 0 {
            counts.insert("queue_full", drops);
        }
        let addrs: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        SourceFacts {
            path: format!("udp:{}", addrs.join(",")),
            format: "netflow-ipfix".into(),
            packets: self.collector.records,
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
