//! Live capture through libpcap.
//!
//! One libpcap handle per interface, all in non-blocking mode, waited on
//! together with one `mio` poll. [`LiveSource::poll`] therefore returns
//! [`Poll::Idle`] after [`LiveOptions::timeout`] on a quiet link and never
//! hangs: libpcap 1.10's blocking read on a TPACKET_V3 ring may not return
//! at all on a quiet interface despite its timeout.
//!
//! The kernel filter ([`control_filter`]) passes only TCP segments with SYN,
//! RST or FIN set (plus IPv6 packets with an extension header, left to user
//! space to judge), so a busy link costs the monitor only its control
//! packets; encapsulated packets of the enabled encapsulations pass too
//! ([`tunnel_filter`]), VXLAN only where its inner frame may matter.
//!
//! Frame timestamps are the kernel's, in nanoseconds where libpcap offers
//! them (Linux), microseconds elsewhere. `Frame::interface` is the position
//! of the interface in the list given to [`LiveSource::open`].
//!
//! An interface that goes away while capturing (a deleted veth, a NIC
//! unplugged) is not an error: its slot is marked down, logged, reported by
//! [`LiveSource::take_changes`], and reopened with backoff
//! ([`REOPEN_BACKOFF_MIN`] doubling up to [`REOPEN_BACKOFF_MAX`]) until it
//! is back. The other interfaces capture on meanwhile.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use super::reorder::Reorder;
use super::{Poll, Source, SourceError};
use crate::frame::{Frame, LinkType};
use crate::time::Timestamp;

/// Most frames one interface delivers in one [`LiveSource::poll`] call.
pub const BATCH_FRAMES: usize = 4096;

/// How each interface is opened. Defaults come from load tests at about
/// 300k control packets per second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    /// Bytes kept of each frame. Default 128: enough for Ethernet, two VLAN
    /// tags, an IPv6 header with some extension headers and a TCP header with
    /// options. A snaplen of 65535 dropped about 3% at the test rate.
    pub snaplen: u32,
    /// Kernel ring buffer per interface, in bytes. Default 64 MiB: with it and
    /// non-immediate mode the test dropped nothing.
    pub buffer_size: u32,
    /// How long the kernel may hold packets before handing over a batch, and
    /// how long [`LiveSource::poll`] waits before returning [`Poll::Idle`].
    /// Default 100 ms.
    pub timeout: Duration,
    /// Deliver each packet as it arrives instead of in batches. Default
    /// false: immediate mode cost 7 to 55 times more CPU in the test.
    pub immediate: bool,
    /// TCP ports whose every segment passes the filter, not only control
    /// segments: the ports of required edges, whose data and ACKs are
    /// evidence (also of connections open before the capture). Default none.
    pub evidence_ports: Vec<u16>,
    /// Put named interfaces into promiscuous mode, so frames addressed to
    /// other hosts (a switch's mirror port, a bridge) are seen. Default
    /// true. `any` has no promiscuous mode and is opened without it.
    pub promisc: bool,
    /// The UDP ports of the tunnels whose packets pass the filter.
    /// Default: the standard ports.
    pub tunnels: TunnelPorts,
}

/// The UDP destination ports of the encapsulations decode opens (as
/// `decode::Decap` has them; plain lists here, `source` being beside
/// `decode`, not above it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPorts {
    /// VXLAN: passed only when the inner frame may matter.
    pub vxlan: Vec<u16>,
    /// GENEVE and GRE-in-UDP: passed whole.
    pub other: Vec<u16>,
}

impl Default for TunnelPorts {
    /// VXLAN 4789; GENEVE 6081 and GRE-in-UDP 4754.
    fn default() -> Self {
        TunnelPorts {
            vxlan: vec![4789],
            other: vec![6081, 4754],
        }
    }
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            snaplen: 128,
            buffer_size: 64 * 1024 * 1024,
            timeout: Duration::from_millis(100),
            immediate: false,
            evidence_ports: Vec::new(),
            promisc: true,
            tunnels: TunnelPorts::default(),
        }
    }
}

/// Capture counters of one interface, as libpcap reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceStats {
    pub iface: String,
    /// Packets that passed the filter (libpcap `ps_recv`).
    pub received: u32,
    /// Dropped by the kernel for lack of buffer space (`ps_drop`).
    pub dropped: u32,
    /// Dropped by the interface or its driver (`ps_ifdrop`).
    pub if_dropped: u32,
}

/// As tcpdump says it when it stops, so the two can be read side by side.
impl std::fmt::Display for InterfaceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} packets received by filter, {} dropped by kernel, {} dropped by interface",
            self.iface, self.received, self.dropped, self.if_dropped
        )
    }
}

const ETHERTYPE_FILTER_BASE: &str = "(ip and tcp[tcpflags] & (tcp-syn|tcp-rst|tcp-fin) != 0) \
or (ip6 and ((ip6[6] == 6 and ip6[53] & 0x07 != 0) \
or ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 \
or ip6[6] == 60 or ip6[6] == 135 or ip6[6] == 139 or ip6[6] == 140))";

/// The control-packet filter for Ethernet, untagged and behind one or two
/// 802.1Q/802.1ad tags.
///
/// IPv4: `tcp[tcpflags]` with SYN, RST or FIN (first fragments only, as
/// later fragments carry no TCP header). IPv6: libpcap's `tcp[]` does not
/// reach IPv6, so `ip6[6] == 6 and ip6[53] & 0x07 != 0` tests the flags of a
/// TCP header right after the fixed header; packets whose next header is an
/// extension header (hop-by-hop, routing, fragment, AH, destination options,
/// mobility, HIP, shim6) pass so user space decides.
///
/// Each `vlan` keyword shifts the offsets for the rest of the expression, so
/// the double-tag case nests inside the single-tag one. On Linux live
/// captures libpcap compiles the first `vlan` to the kernel's VLAN-tag
/// extension, as the kernel strips the outer tag before the filter runs.
pub fn control_filter() -> &'static str {
    static FILTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FILTER.get_or_init(|| {
        format!(
            "({b}) or (vlan and (({b}) or (vlan and ({b}))))",
            b = ETHERTYPE_FILTER_BASE
        )
    })
}

/// The filter for a link type: [`control_filter`] for Ethernet, the same
/// without the `vlan` clauses for link types libpcap has no VLAN support for
/// (Linux cooked SLL/SLL2, raw IP, loopback).
pub fn control_filter_for(linktype: LinkType) -> &'static str {
    if linktype == LinkType::ETHERNET {
        control_filter()
    } else {
        ETHERTYPE_FILTER_BASE
    }
}

/// [`control_filter_for`], plus every TCP segment to or from `ports` (at
/// most 64 are named; beyond that, control segments only, as before), plus
/// the encapsulated packets of the tunnels ([`tunnel_filter`]).
pub fn filter_for(linktype: LinkType, ports: &[u16], tunnels: &TunnelPorts) -> String {
    let ports = if ports.len() > 64 { &[][..] } else { ports };
    let named = ports.iter().map(|p| format!("tcp port {p}"));
    let terms: Vec<String> = std::iter::once(ETHERTYPE_FILTER_BASE.to_string())
        .chain(named)
        .chain(tunnel_filter(tunnels, ports))
        .collect();
    let base = terms.join(" or ");
    if linktype == LinkType::ETHERNET {
        format!("({base}) or (vlan and (({base}) or (vlan and ({base}))))")
    } else {
        base
    }
}

/// The encapsulated packets the kernel passes: VXLAN only where its inner
/// frame may matter (not inner IPv4 without a TCP control segment or an
/// evidence port: the common mirror load is dropped in the kernel); GENEVE
/// (options make the inner offset variable), GRE-in-UDP, GRE and ERSPAN
/// (IP protocol 47), IP-in-IP and MPLS whole, for user space to open.
/// Offsets are written out rather than with libpcap's `geneve`/`mpls`
/// keywords, which shift every later offset of the expression.
pub fn tunnel_filter(tunnels: &TunnelPorts, evidence_ports: &[u16]) -> Vec<String> {
    // In a VXLAN datagram: inner Ethernet type at 28, inner IPv4 at 30.
    let tcp = "30 + ((udp[30] & 0x0f) << 2)";
    let evidence: String = (evidence_ports.iter())
        .map(|p| format!(" or udp[{tcp}:2] == {p} or udp[{tcp} + 2:2] == {p}"))
        .collect();
    let vxlan = tunnels.vxlan.iter().map(|p| {
        format!(
            "(udp dst port {p} and (udp[28:2] != 0x0800 or (udp[39] == 6 \
             and udp[36:2] & 0x1fff == 0 and (udp[{tcp} + 13] & 0x07 != 0{evidence}))))"
        )
    });
    let udp = tunnels.other.iter().map(|p| format!("udp dst port {p}"));
    let fixed = [
        "ip proto 47 or ip6 proto 47",
        "ip proto 4 or ip proto 41 or ip6 proto 4 or ip6 proto 41",
        "ether proto 0x8847 or ether proto 0x8848",
    ];
    vxlan
        .chain(udp)
        .chain(fixed.iter().map(|s| s.to_string()))
        .collect()
}

/// First wait before reopening a lost interface.
pub const REOPEN_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two reopen attempts.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

struct Capture {
    cap: pcap::Capture<pcap::Active>,
    linktype: LinkType,
    /// Whether the header's `tv_usec` holds nanoseconds.
    nanos: bool,
}

/// One interface: capturing, or lost and waiting to be reopened.
struct Slot {
    cap: Option<Capture>,
    /// The last link type opened (kept while down).
    linktype: LinkType,
    down_since: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// Counters of handles closed before: libpcap's restart at zero.
    base: (u32, u32, u32),
}

/// An interface went away or came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceChange {
    Lost { slot: usize, error: String },
    Restored { slot: usize, down_for: Duration },
}

/// Live capture on one or more interfaces.
pub struct LiveSource {
    names: Vec<String>,
    slots: Vec<Slot>,
    poller: mio::Poll,
    events: Events,
    timeout: Duration,
    /// With several interfaces: frames put back in timestamp order.
    reorder: Option<Reorder>,
    opts: LiveOptions,
    changes: Vec<InterfaceChange>,
}

/// How long frames of several interfaces are held before they are released
/// in timestamp order, beyond the capture timeout (the longest a ring holds
/// a frame back).
const REORDER_MARGIN: Duration = Duration::from_millis(50);

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("interfaces", &self.names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn live_error(iface: &str, what: impl std::fmt::Display) -> SourceError {
    SourceError::Live {
        iface: iface.to_string(),
        what: what.to_string(),
    }
}

fn register(poller: &mio::Poll, c: &Capture, slot: usize, name: &str) -> Result<(), SourceError> {
    poller
        .registry()
        .register(
            &mut SourceFd(&c.cap.as_raw_fd()),
            Token(slot),
            Interest::READABLE,
        )
        .map_err(|e| live_error(name, format!("cannot poll its descriptor: {e}")))
}

fn open_one(name: &str, opts: &LiveOptions) -> Result<Capture, SourceError> {
    let err = |what: pcap::Error| live_error(name, what);
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let timeout_ms = clamp(u32::try_from(opts.timeout.as_millis()).unwrap_or(u32::MAX)).max(1);
    let inactive = pcap::Capture::from_device(name)
        .map_err(err)?
        .snaplen(clamp(opts.snaplen))
        .buffer_size(clamp(opts.buffer_size))
        .timeout(timeout_ms)
        .immediate_mode(opts.immediate)
        .promisc(opts.promisc && name != "any");
    // libpcap on Linux supports nanosecond live timestamps; elsewhere we
    // keep the default microseconds, as we cannot ask libpcap (safely)
    // whether the request was honoured.
    let nanos = cfg!(target_os = "linux");
    let inactive = if nanos {
        inactive.precision(pcap::Precision::Nano)
    } else {
        inactive
    };
    let mut cap = inactive.open().map_err(err)?;
    // `any` gives LINUX_SLL, which loses the interface index; SLL2 keeps it.
    if cap.get_datalink() == pcap::Linktype::LINUX_SLL {
        let sll2 = pcap::Linktype(i32::from(LinkType::LINUX_SLL2.0));
        if cap.list_datalinks().is_ok_and(|l| l.contains(&sll2)) {
            let _ = cap.set_datalink(sll2);
        }
    }
    // libpcap reports DLT values; they equal the LINKTYPE values except for
    // raw IP (DLT 12, or 14 on OpenBSD), which `LinkType` also knows.
    let linktype = LinkType(cap.get_datalink().0 as u16);
    cap.filter(
        &filter_for(linktype, &opts.evidence_ports, &opts.tunnels),
        true,
    )
    .map_err(err)?;
    let cap = cap.setnonblock().map_err(err)?;
    Ok(Capture {
        cap,
        linktype,
        nanos,
    })
}

impl LiveSource {
    /// Opens every interface (`any` included) with the control filter.
    pub fn open(ifaces: &[String], opts: &LiveOptions) -> Result<LiveSource, SourceError> {
        if ifaces.is_empty() {
            return Err(live_error("-", "no interface given"));
        }
        let poller = mio::Poll::new().map_err(|e| live_error(&ifaces[0], e))?;
        let mut slots = Vec::with_capacity(ifaces.len());
        let now = Instant::now();
        for (i, name) in ifaces.iter().enumerate() {
            let c = open_one(name, opts)?;
            register(&poller, &c, i, name)?;
            slots.push(Slot {
                linktype: c.linktype,
                cap: Some(c),
                down_since: now,
                retry_at: now,
                backoff: REOPEN_BACKOFF_MIN,
                base: (0, 0, 0),
            });
        }
        Ok(LiveSource {
            names: ifaces.to_vec(),
            slots,
            poller,
            events: Events::with_capacity(ifaces.len().max(1)),
            timeout: opts.timeout,
            reorder: (ifaces.len() > 1).then(|| Reorder::new(opts.timeout + REORDER_MARGIN)),
            opts: opts.clone(),
            changes: Vec::new(),
        })
    }

    /// Interfaces lost and restored since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<InterfaceChange> {
        std::mem::take(&mut self.changes)
    }

    /// Whether interface `slot` is capturing now.
    pub fn is_up(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|s| s.cap.is_some())
    }

    /// Close a failed handle; it is reopened by [`Self::reopen_due`].
    fn lose(&mut self, i: usize, error: String) {
        let slot = &mut self.slots[i];
        let Some(mut c) = slot.cap.take() else {
            return;
        };
        let _ = self
            .poller
            .registry()
            .deregister(&mut SourceFd(&c.cap.as_raw_fd()));
        if let Ok(s) = c.cap.stats() {
            slot.base.0 = slot.base.0.wrapping_add(s.received);
            slot.base.1 = slot.base.1.wrapping_add(s.dropped);
            slot.base.2 = slot.base.2.wrapping_add(s.if_dropped);
        }
        let now = Instant::now();
        slot.down_since = now;
        slot.backoff = REOPEN_BACKOFF_MIN;
        slot.retry_at = now + slot.backoff;
        tracing::warn!(interface = %self.names[i], %error, "capture interface lost; reopening with backoff");
        self.changes.push(InterfaceChange::Lost { slot: i, error });
    }

    /// Try to reopen lost interfaces whose backoff has passed.
    fn reopen_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.cap.is_some() || slot.retry_at > now {
                continue;
            }
            let name = &self.names[i];
            let opened = open_one(name, &self.opts)
                .and_then(|c| register(&self.poller, &c, i, name).map(|()| c));
            let slot = &mut self.slots[i];
            match opened {
                Ok(c) => {
                    let down_for = slot.down_since.elapsed();
                    slot.linktype = c.linktype;
                    slot.cap = Some(c);
                    tracing::info!(
                        interface = %name,
                        down_for = %humantime::format_duration(Duration::from_millis(down_for.as_millis() as u64)),
                        "capture interface back"
                    );
                    self.changes
                        .push(InterfaceChange::Restored { slot: i, down_for });
                }
                Err(e) => {
                    slot.backoff = (slot.backoff * 2).min(REOPEN_BACKOFF_MAX);
                    slot.retry_at = now + slot.backoff;
                    tracing::debug!(interface = %name, error = %e, "interface not back yet");
                }
            }
        }
    }

    /// Passes the non-control segments of `ports` from now on (a reload
    /// that changed the required edges), on every open interface and on
    /// those reopened later. An interface whose filter cannot be changed
    /// keeps its old one; the first such error is returned.
    pub fn set_evidence_ports(&mut self, ports: &[u16]) -> Result<(), SourceError> {
        if self.opts.evidence_ports == ports {
            return Ok(());
        }
        self.opts.evidence_ports = ports.to_vec();
        let mut first = Ok(());
        for (slot, name) in self.slots.iter_mut().zip(&self.names) {
            if let Some(c) = &mut slot.cap {
                if let Err(e) = c
                    .cap
                    .filter(&filter_for(c.linktype, ports, &self.opts.tunnels), true)
                {
                    first = first.and(Err(live_error(name, e)));
                }
            }
        }
        first
    }

    /// Interface names, indexed by `Frame::interface`.
    pub fn interfaces(&self) -> &[String] {
        &self.names
    }

    /// The link type of each interface, indexed by `Frame::interface`.
    pub fn linktypes(&self) -> Vec<LinkType> {
        self.slots.iter().map(|s| s.linktype).collect()
    }

    /// libpcap's counters for each interface, summed over reopens.
    pub fn stats(&mut self) -> Result<Vec<InterfaceStats>, SourceError> {
        self.slots
            .iter_mut()
            .zip(&self.names)
            .map(|(slot, name)| {
                let (r, d, i) = slot.base;
                let now = match &mut slot.cap {
                    Some(c) => c.cap.stats().map_err(|e| live_error(name, e))?,
                    None => pcap::Stat {
                        received: 0,
                        dropped: 0,
                        if_dropped: 0,
                    },
                };
                Ok(InterfaceStats {
                    iface: name.clone(),
                    received: r.wrapping_add(now.received),
                    dropped: d.wrapping_add(now.dropped),
                    if_dropped: i.wrapping_add(now.if_dropped),
                })
            })
            .collect()
    }

    /// Reads what is ready on every interface without waiting. An
    /// interface that fails is marked lost, not an error.
    fn drain(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<usize, SourceError> {
        let mut total = 0;
        let mut lost = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = &mut slot.cap else {
                continue;
            };
            for _ in 0..BATCH_FRAMES {
                match c.cap.next_packet() {
                    Ok(p) => {
                        let (secs, frac) = (p.header.ts.tv_sec, p.header.ts.tv_usec);
                        let nanos = if c.nanos {
                            frac
                        } else {
                            frac.saturating_mul(1000)
                        };
                        let ts_invalid = !(0..1_000_000_000).contains(&nanos);
                        let frame = Frame {
                            ts: Timestamp::from_secs_nanos(
                                u64::try_from(secs).unwrap_or(0),
                                u32::try_from(nanos).unwrap_or(0),
                            ),
                            linktype: c.linktype,
                            wire_len: p.header.len,
                            data: p.data,
                            interface: i as u32,
                            ts_invalid,
                        };
                        sink(&frame);
                        total += 1;
                    }
                    Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => break,
                    Err(e) => {
                        lost.push((i, e.to_string()));
                        break;
                    }
                }
            }
        }
        for (i, error) in lost {
            self.lose(i, error);
        }
        Ok(total)
    }
}

impl LiveSource {
    /// [`Source::poll`] over several interfaces: what is read goes through
    /// the [`Reorder`] buffer, and what is due comes out in timestamp order.
    fn poll_ordered(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        let mut reorder = self.reorder.take().expect("several interfaces");
        let result = self.poll_into(&mut reorder, sink);
        self.reorder = Some(reorder);
        result
    }

    /// The capture stops: hand `sink` what the rings captured until now and
    /// every frame the reorder buffer holds, in timestamp order. A ring
    /// hands a batch over up to the capture timeout late, so this reads
    /// for that long.
    pub fn flush(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<usize, SourceError> {
        let until = Instant::now() + self.timeout;
        let mut reorder = self.reorder.take();
        let mut n = 0;
        loop {
            n += match &mut reorder {
                Some(r) => {
                    self.drain(&mut |f| r.push(f))?;
                    0
                }
                None => self.drain(sink)?,
            };
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            self.wait(left)?;
        }
        if let Some(r) = &mut reorder {
            n += r.release_all(sink);
        }
        self.reorder = reorder;
        Ok(n)
    }

    /// Wait up to `timeout` for an interface to become readable; false
    /// when a signal interrupted the wait.
    fn wait(&mut self, timeout: Duration) -> Result<bool, SourceError> {
        match self.poller.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(live_error(&self.names.join(","), e)),
        }
    }

    fn poll_into(
        &mut self,
        reorder: &mut Reorder,
        sink: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<Poll, SourceError> {
        self.drain(&mut |f| reorder.push(f))?;
        let n = reorder.release(Timestamp::now(), sink);
        if n > 0 {
            return Ok(Poll::Frames(n));
        }
        let wait = match reorder.next_due() {
            Some(due) => due.saturating_sub(Timestamp::now()).min(self.timeout),
            None => self.timeout,
        };
        if !self.wait(wait)? {
            return Ok(Poll::Idle); // interrupted by a signal
        }
        self.drain(&mut |f| reorder.push(f))?;
        let n = reorder.release(Timestamp::now(), sink);
        Ok(if n > 0 { Poll::Frames(n) } else { Poll::Idle })
    }
}

impl Source for LiveSource {
    /// Delivers what is ready; if nothing is, waits up to the timeout for any
    /// interface to become readable, then returns `Frames` or `Idle`.
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        self.reopen_due();
        if self.reorder.is_some() {
            return self.poll_ordered(sink);
        }
        let n = self.drain(sink)?;
        if n > 0 {
            return Ok(Poll::Frames(n));
        }
        if !self.wait(self.timeout)? {
            return Ok(Poll::Idle); // interrupted by a signal
        }
        let n = self.drain(sink)?;
        Ok(if n > 0 { Poll::Frames(n) } else { Poll::Idle })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::time::Instant;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const V4_A: [u8; 4] = [192, 0, 2, 1];
    const V4_B: [u8; 4] = [192, 0, 2, 2];
    const V6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    #[derive(Clone, Copy, Debug)]
    enum Flags {
        Syn,
        SynAck,
        Rst,
        Fin,
        Ack,
        Data,
    }

    fn v4(flags: Flags) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .tcp(40000, 443, 1000, 65535);
        tcp_flags(b, flags)
    }

    fn v6(flags: Flags) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(V6_A, V6_B, 64)
            .tcp(40000, 443, 1000, 65535);
        tcp_flags(b, flags)
    }

    fn tcp_flags(b: etherparse::PacketBuilderStep<etherparse::TcpHeader>, flags: Flags) -> Vec<u8> {
        let (b, payload): (_, &[u8]) = match flags {
            Flags::Syn => (b.syn(), b""),
            Flags::SynAck => (b.syn().ack(1), b""),
            Flags::Rst => (b.rst(), b""),
            Flags::Fin => (b.fin().ack(1), b""),
            Flags::Ack => (b.ack(1), b""),
            Flags::Data => (b.ack(1).psh(), b"GET / HTTP/1.1\r\n\r\n"),
        };
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Inserts 802.1Q/802.1ad tags (outermost first) after the MAC addresses.
    fn tagged(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
        let mut v = frame[..12].to_vec();
        for (i, tpid) in tpids.iter().enumerate() {
            v.extend_from_slice(&tpid.to_be_bytes());
            v.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        v.extend_from_slice(&frame[12..]);
        v
    }

    /// An IPv6 frame with an 8-byte hop-by-hop header before its TCP header.
    fn with_hop_by_hop(frame: &[u8]) -> Vec<u8> {
        let mut v = frame[..54].to_vec();
        v[14 + 6] = 0; // next header: hop-by-hop
        let plen = u16::from_be_bytes([v[18], v[19]]) + 8;
        v[18..20].copy_from_slice(&plen.to_be_bytes());
        v.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP; PadN
        v.extend_from_slice(&frame[54..]);
        v
    }

    fn udp() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_A, V4_B, 64)
            .udp(5353, 53)
            .write(&mut v, b"query")
            .unwrap();
        v
    }

    #[test]
    fn control_filter_passes_control_segments_only() {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let bpf = dead.compile(control_filter(), true).unwrap();
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("v4 syn", v4(Flags::Syn), true),
            ("v4 syn-ack", v4(Flags::SynAck), true),
            ("v4 rst", v4(Flags::Rst), true),
            ("v4 fin", v4(Flags::Fin), true),
            ("v4 ack", v4(Flags::Ack), false),
            ("v4 data", v4(Flags::Data), false),
            ("v6 syn", v6(Flags::Syn), true),
            ("v6 rst", v6(Flags::Rst), true),
            ("v6 ack", v6(Flags::Ack), false),
            ("v6 data", v6(Flags::Data), false),
            ("v6 hop-by-hop syn", with_hop_by_hop(&v6(Flags::Syn)), true),
            ("802.1Q v4 syn", tagged(&v4(Flags::Syn), &[0x8100]), true),
            ("802.1Q v6 syn", tagged(&v6(Flags::Syn), &[0x8100]), true),
            ("802.1Q v4 ack", tagged(&v4(Flags::Ack), &[0x8100]), false),
            ("802.1Q v6 ack", tagged(&v6(Flags::Ack), &[0x8100]), false),
            ("802.1ad v4 syn", tagged(&v4(Flags::Syn), &[0x88a8]), true),
            (
                "QinQ v4 syn",
                tagged(&v4(Flags::Syn), &[0x88a8, 0x8100]),
                true,
            ),
            (
                "QinQ v6 syn",
                tagged(&v6(Flags::Syn), &[0x88a8, 0x8100]),
                true,
            ),
            (
                "QinQ v4 ack",
                tagged(&v4(Flags::Ack), &[0x88a8, 0x8100]),
                false,
            ),
            (
                "double 802.1Q v4 rst",
                tagged(&v4(Flags::Rst), &[0x8100, 0x8100]),
                true,
            ),
            ("udp", udp(), false),
            ("802.1Q udp", tagged(&udp(), &[0x8100]), false),
        ];
        let wrong: Vec<_> = cases
            .iter()
            .filter(|(_, frame, pass)| bpf.filter(frame) != *pass)
            .map(|(name, _, pass)| format!("{name}: expected pass={pass}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn control_filter_compiles_for_cooked_and_raw_link_types() {
        // libpcap handles are opened with DLT values: raw IP is DLT 12 here.
        for lt in [
            LinkType::ETHERNET,
            LinkType::LINUX_SLL,
            LinkType::LINUX_SLL2,
            LinkType::RAW_BSD,
            LinkType::NULL,
            LinkType::IPV4,
            LinkType::IPV6,
        ] {
            let dead = pcap::Capture::dead(pcap::Linktype(i32::from(lt.0))).unwrap();
            if let Err(e) = dead.compile(control_filter_for(lt), true) {
                panic!("{}: {e}", lt.name());
            }
        }
        // On raw IP the filter sees the IP header first.
        let dead = pcap::Capture::dead(pcap::Linktype(i32::from(LinkType::RAW_BSD.0))).unwrap();
        let bpf = dead
            .compile(control_filter_for(LinkType::RAW_BSD), true)
            .unwrap();
        assert!(bpf.filter(&v4(Flags::Syn)[14..]));
        assert!(bpf.filter(&v6(Flags::Rst)[14..]));
        assert!(!bpf.filter(&v4(Flags::Ack)[14..]));
        assert!(!bpf.filter(&v6(Flags::Ack)[14..]));
    }

    #[test]
    fn evidence_ports_pass_data_segments_on_them_only() {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let bpf = dead
            .compile(
                &filter_for(LinkType::ETHERNET, &[443, 4242], &TunnelPorts::default()),
                true,
            )
            .unwrap();
        // The test frames run 40000 -> 443.
        assert!(bpf.filter(&v4(Flags::Data)));
        assert!(bpf.filter(&v6(Flags::Ack)));
        assert!(bpf.filter(&tagged(&v4(Flags::Ack), &[0x8100])));
        assert!(bpf.filter(&v4(Flags::Syn)));
        let other = dead
            .compile(
                &filter_for(LinkType::ETHERNET, &[4242], &TunnelPorts::default()),
                true,
            )
            .unwrap();
        assert!(!other.filter(&v4(Flags::Data)));
        assert!(other.filter(&v4(Flags::Rst)));
        for lt in [LinkType::LINUX_SLL2, LinkType::RAW_BSD] {
            let dead = pcap::Capture::dead(pcap::Linktype(i32::from(lt.0))).unwrap();
            assert!(dead
                .compile(&filter_for(lt, &[4242], &TunnelPorts::default()), true)
                .is_ok());
        }
    }

    /// `inner` in UDP to `port` with a VXLAN header (VNI 7), or in GRE
    /// (ERSPAN I) when `port` is `None`.
    fn wrapped(port: Option<u16>, inner: &[u8]) -> Vec<u8> {
        let outer =
            PacketBuilder::ethernet2(MAC_B, MAC_A).ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64);
        let mut v = Vec::new();
        match port {
            Some(p) => {
                let payload = [&[8, 0, 0, 0, 0, 0, 7, 0][..], inner].concat();
                outer.udp(49_152, p).write(&mut v, &payload).unwrap();
            }
            None => {
                let payload = [&[0, 0, 0x88, 0xbe][..], inner].concat();
                outer
                    .write(&mut v, etherparse::IpNumber::GRE, &payload)
                    .unwrap();
            }
        }
        v
    }

    #[test]
    fn encapsulated_control_segments_pass_and_vxlan_data_does_not() {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let bpf = dead
            .compile(
                &filter_for(LinkType::ETHERNET, &[4242], &TunnelPorts::default()),
                true,
            )
            .unwrap();
        let data_on = |port: u16| {
            let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(V4_A, V4_B, 64)
                .tcp(40000, port, 1000, 65535);
            tcp_flags(b, Flags::Data)
        };
        let cases = [
            ("vxlan syn", wrapped(Some(4789), &v4(Flags::Syn)), true),
            ("vxlan rst", wrapped(Some(4789), &v4(Flags::Rst)), true),
            ("vxlan data", wrapped(Some(4789), &v4(Flags::Data)), false),
            (
                "vxlan data, evidence port",
                wrapped(Some(4789), &data_on(4242)),
                true,
            ),
            (
                "vxlan, inner ipv6 (user space decides)",
                wrapped(Some(4789), &v6(Flags::Ack)),
                true,
            ),
            (
                "vxlan syn on an unconfigured port",
                wrapped(Some(8472), &v4(Flags::Syn)),
                false,
            ),
            (
                "erspan i data (gre passes whole)",
                wrapped(None, &v4(Flags::Data)),
                true,
            ),
            ("geneve port", wrapped(Some(6081), &v4(Flags::Data)), true),
            (
                "vxlan syn behind a vlan tag",
                tagged(&wrapped(Some(4789), &v4(Flags::Syn)), &[0x8100]),
                true,
            ),
        ];
        let wrong: Vec<_> = (cases.iter())
            .filter(|(_, frame, pass)| bpf.filter(frame) != *pass)
            .map(|(name, _, pass)| format!("{name}: want {pass}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
        let linux = TunnelPorts {
            vxlan: vec![8472],
            ..TunnelPorts::default()
        };
        let bpf = dead
            .compile(&filter_for(LinkType::ETHERNET, &[], &linux), true)
            .unwrap();
        assert!(bpf.filter(&wrapped(Some(8472), &v4(Flags::Syn))));
        assert!(!bpf.filter(&wrapped(Some(4789), &v4(Flags::Syn))));
    }

    #[test]
    fn defaults_are_the_measured_ones() {
        let o = LiveOptions::default();
        assert_eq!(o.snaplen, 128);
        assert_eq!(o.buffer_size, 64 << 20);
        assert_eq!(o.timeout, Duration::from_millis(100));
        assert!(!o.immediate);
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
    }

    /// TCP flags of an Ethernet frame on `lo`, with the source/destination port.
    fn tcp_of(data: &[u8]) -> Option<(bool, bool, u16, u16)> {
        let p = etherparse::LaxSlicedPacket::from_ethernet(data).ok()?;
        match p.transport? {
            etherparse::TransportSlice::Tcp(t) => {
                Some((t.syn(), t.rst(), t.source_port(), t.destination_port()))
            }
            _ => None,
        }
    }

    /// Needs root: captures on `lo` while connecting to a closed port on
    /// 127.0.0.1, which answers with a RST. No other address is touched.
    #[test]
    fn live_loopback_sees_syn_and_rst_and_idles() {
        let test = "live capture test";
        if !is_root() {
            return crate::source::skip_unless_ci(test, "not root");
        }
        let mut src = match LiveSource::open(&["lo".to_string()], &LiveOptions::default()) {
            Ok(s) => s,
            Err(e) => return crate::source::skip_unless_ci(test, e),
        };
        assert_eq!(src.interfaces(), ["lo".to_string()]);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_secs(1),
        );
        assert!(refused.is_err(), "port {port} unexpectedly open");
        let (mut syn, mut rst) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(syn && rst) && Instant::now() < deadline {
            let mut sink = |f: &Frame<'_>| {
                assert_eq!(f.interface, 0);
                if let Some((s, r, sp, dp)) = tcp_of(f.data) {
                    syn |= s && dp == port;
                    rst |= r && sp == port;
                }
            };
            src.poll(&mut sink).unwrap();
        }
        assert!(syn && rst, "syn {syn}, rst {rst}");

        // Quiet (as far as control packets go): poll returns Idle, quickly.
        let start = Instant::now();
        let mut idle = false;
        while !idle && start.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            idle = src.poll(&mut |_| {}).unwrap() == Poll::Idle;
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "poll took {:?}",
                t.elapsed()
            );
        }
        assert!(idle, "never idle");
        let stats = src.stats().unwrap();
        assert_eq!(stats[0].iface, "lo");
        assert!(stats[0].received >= 2, "{stats:?}");
    }

    #[test]
    fn opening_a_missing_interface_names_it() {
        let err = LiveSource::open(&["pw-no-such-if0".to_string()], &LiveOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pw-no-such-if0"), "{err}");
    }
}
