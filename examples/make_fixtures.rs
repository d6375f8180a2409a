//! Writes the test fixtures: `cargo run --release --example make_fixtures -- fixtures/`.
//!
//! Deterministic: one fixed seed, one fixed base timestamp
//! (2026-01-05T09:00:00Z), no wall clock. Running it twice gives
//! byte-identical files; `tests/golden.rs` checks the committed fixtures
//! against a fresh run. Packets are built with `etherparse::PacketBuilder`
//! (IP and TCP); link headers (Ethernet, 802.1Q, 802.1ad, Linux cooked v1
//! and v2) and the pcap/pcapng containers are written here.
//!
//! The per-site captures derive their traffic from the port model applied to
//! the site (`portwatch::config::load_policy`, `Policy::edges`), so they
//! follow the model instead of a hand-written list.
//!
//! Besides the captures it writes `fixtures.tsv`: file, site and the exit
//! status `portwatch replay` must give for it, and under `nodelogs/` what
//! each node would have logged of `nodelogs.pcap` ([`nodelogs`]).
//!
//! [`mirrored_demo`] gives the demo capture as each kind of mirror session
//! delivers it (VXLAN, GENEVE, GRE, GRE-TEB, ERSPAN I/II/III, GRE-in-UDP,
//! MPLS); they are not committed: `tests/golden.rs` writes them at test
//! time, and `make_fixtures -- DIR --mirrored` writes them into DIR.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;
use portwatch::config::{load_policy, BUNDLED_SITES};
use portwatch::decode::EncapKind;
use portwatch::policy::{EndpointId, EndpointKind, Policy};

#[path = "make_fixtures/nodelogs.rs"]
pub mod nodelogs;

/// 2026-01-05T09:00:00Z.
pub const BASE_SECS: u64 = 1_767_603_600;
/// Length of the per-site captures: more than one 15-minute window.
pub const SITE_CAPTURE_SECS: u64 = 20 * 60;
const SEED: u64 = 0x0005_eed0_f1c7_u64;
const MICROS: u64 = 1_000_000;

/// One fixture file and what `portwatch replay` must make of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixture {
    pub file: String,
    pub site: String,
    pub exit: u8,
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fixtures"));
    if std::env::args().nth(2).as_deref() == Some("--mirrored") {
        for m in mirrors() {
            let file = dir.join(format!("demo-{}.pcap", m.as_str()));
            if let Err(e) = std::fs::write(&file, mirrored_demo(m)) {
                eprintln!("error: {}: {e}", file.display());
                std::process::exit(2);
            }
        }
        return;
    }
    match generate(&dir) {
        Ok(list) => {
            for f in &list {
                println!("{}\t{}\t{}", f.file, f.site, f.exit);
            }
        }
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            std::process::exit(2);
        }
    }
}

/// Write every fixture and `fixtures.tsv` into `dir`.
pub fn generate(dir: &Path) -> io::Result<Vec<Fixture>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let mut add = |file: &str, site: &str, exit: u8, bytes: Vec<u8>| -> io::Result<()> {
        std::fs::write(dir.join(file), bytes)?;
        out.push(Fixture {
            file: file.into(),
            site: site.into(),
            exit,
        });
        Ok(())
    };

    for (i, (name, _, _)) in BUNDLED_SITES.iter().enumerate() {
        let p = policy(name);
        let mut rng = Rng::new(SEED ^ (i as u64 + 1));
        let pkts = site_traffic(&p, &mut rng, None);
        add(
            &format!("site-{name}.pcap"),
            name,
            0,
            pcap(Link::Ethernet, &pkts),
        )?;
    }

    let mn = "multi-node";
    let mut rng = Rng::new(SEED ^ 0x100);
    add(
        "verdict-unexpected.pcap",
        mn,
        1,
        pcap(Link::Ethernet, &verdict_unexpected(&mut rng)),
    )?;
    add(
        "verdict-local-only.pcap",
        mn,
        1,
        pcap(Link::Ethernet, &verdict_local_only(&mut rng)),
    )?;
    add(
        "verdict-unknown-host.pcap",
        mn,
        1,
        pcap(Link::Ethernet, &verdict_unknown_host(&mut rng)),
    )?;
    add(
        "blocked-refused.pcap",
        mn,
        1,
        pcap(Link::Ethernet, &blocked_refused(&mut rng)),
    )?;
    add(
        "blocked-unanswered.pcap",
        mn,
        1,
        pcap(Link::Ethernet, &blocked_unanswered(&mut rng)),
    )?;
    {
        let p = policy(mn);
        let skip = edge_by_name(&p, "central", "scheduler", 5151);
        let mut rng = Rng::new(SEED ^ 0x200);
        let pkts = site_traffic(&p, &mut rng, Some(skip));
        add("missing-edge.pcap", mn, 1, pcap(Link::Ethernet, &pkts))?;
    }

    // The same traffic over every link layer (and over IPv6).
    let v4 = link_traffic(&mut Rng::new(SEED ^ 0x300), false);
    add("plain.pcap", mn, 0, pcap(Link::Ethernet, &v4))?;
    add("vlan.pcap", mn, 0, pcap(Link::Vlan, &v4))?;
    add("qinq.pcap", mn, 0, pcap(Link::QinQ, &v4))?;
    add("sll.pcap", mn, 0, pcap(Link::Sll, &v4))?;
    add("sll2.pcap", mn, 0, pcap(Link::Sll2, &v4))?;
    let v6 = link_traffic(&mut Rng::new(SEED ^ 0x300), true);
    add("ipv6.pcap", mn, 0, pcap(Link::Ethernet, &v6))?;
    add(
        "pcapng-two-interfaces.pcapng",
        mn,
        0,
        pcapng(&[Link::Ethernet, Link::Sll2], &v4),
    )?;

    let mut whole = pcap(Link::Ethernet, &v4);
    let cut = truncation_point(&whole);
    whole.truncate(cut);
    add("truncated.pcap", mn, 3, whole)?;

    let garbage = garbage_frames(&mut Rng::new(SEED ^ 0x400), &v4);
    add("garbage-frames.pcap", mn, 0, pcap(Link::Ethernet, &garbage))?;
    add(
        "one-way.pcap",
        mn,
        1,
        pcap(Link::Ethernet, &one_way(&mut Rng::new(SEED ^ 0x500))),
    )?;

    // Real traffic's shapes (each with its converse in the same capture).
    let shapes: [(&str, u8, Traffic); 6] = [
        ("long-lived.pcap", 1, long_lived),
        ("pre-existing.pcap", 1, pre_existing),
        ("asymmetric-pair.pcap", 1, asymmetric_pair),
        ("lost-syn-ack.pcap", 0, lost_syn_ack),
        ("stray-timestamp.pcap", 0, stray_timestamp),
        ("quiet-gap.pcap", 0, quiet_gap),
    ];
    for (i, (file, exit, make)) in shapes.into_iter().enumerate() {
        let pkts = make(&mut Rng::new(SEED ^ (0x700 + i as u64)));
        add(file, mn, exit, pcap(Link::Ethernet, &pkts))?;
    }

    let demo = demo(&mut Rng::new(SEED ^ 0x600));
    add("demo.pcap", mn, 1, pcap(Link::Ethernet, &demo))?;

    let (pkts, attempts) = nodelogs_traffic(&mut Rng::new(SEED ^ 0x800));
    add("nodelogs.pcap", mn, 1, pcap(Link::Ethernet, &pkts))?;
    let site = BUNDLED_SITES
        .iter()
        .find(|(name, _, _)| *name == mn)
        .map(|(_, _, text)| *text)
        .expect("multi-node is bundled");
    std::fs::create_dir_all(dir.join(nodelogs::DIR))?;
    for (file, bytes) in nodelogs::files(&policy(mn), site, &attempts) {
        std::fs::write(dir.join(nodelogs::DIR).join(file), bytes)?;
    }

    let mut tsv = String::from("# file\tsite\texit  (written by examples/make_fixtures.rs)\n");
    for f in &out {
        tsv.push_str(&format!("{}\t{}\t{}\n", f.file, f.site, f.exit));
    }
    std::fs::write(dir.join("fixtures.tsv"), tsv)?;
    Ok(out)
}

// ---------------------------------------------------------------- randomness

/// splitmix64: small, seeded, the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------- packets

/// A frame to write: an IP packet (wrapped in the file's link header at
/// write time) or raw link-layer bytes (garbage frames).
#[derive(Clone, Debug)]
enum Body {
    Ip(Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Pkt {
    /// Microseconds since [`BASE_SECS`].
    t: u64,
    body: Body,
    /// Which side sent it (for the cooked-capture packet type).
    outgoing: bool,
    /// pcapng interface.
    iface: u32,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

#[allow(clippy::too_many_arguments)]
fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families {src} {dst}"),
    };
    let mut b = ip.tcp(sport, dport, seq, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("write to Vec");
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    SynAck,
    Rst,
    Silence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    Fin,
    Rst,
    /// Long-lived: still open when the capture ends.
    Open,
}

/// One TCP connection attempt and what follows it.
#[derive(Clone, Copy, Debug)]
struct Session {
    client: IpAddr,
    server: IpAddr,
    port: u16,
    /// Start, microseconds since [`BASE_SECS`].
    start: u64,
    retransmissions: u32,
    answer: Answer,
    /// Request/response exchanges after the handshake.
    exchanges: u32,
    /// From the handshake to the close, microseconds.
    length: u64,
    close: Close,
    /// Only the client's packets are captured.
    one_way: bool,
    /// The first SYN-ACK is lost on its way back: the client sends its SYN
    /// again (same sequence number) and the server its SYN-ACK.
    lost_syn_ack: bool,
    /// Open before the capture started: no handshake in it, data only.
    preexisting: bool,
    iface: u32,
}

impl Session {
    fn new(client: IpAddr, server: IpAddr, port: u16, start: u64) -> Self {
        Session {
            client,
            server,
            port,
            start,
            retransmissions: 0,
            answer: Answer::SynAck,
            exchanges: 1,
            length: 2 * MICROS,
            close: Close::Fin,
            one_way: false,
            lost_syn_ack: false,
            preexisting: false,
            iface: 0,
        }
    }
}

/// One connection attempt as the nodes at its ends log it (see
/// [`nodelogs`]): both ends, the SYNs' times and how it was answered.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub port: u16,
    /// The client's initial sequence number (a dropped SYN's `tcpsyn`).
    pub isn: u32,
    /// Each SYN the client sent, microseconds since [`BASE_SECS`].
    pub syns: Vec<u64>,
    pub answer: Answer,
}

/// A capture under construction: packets, the attempts among them and the
/// ephemeral port counter.
struct Capture {
    pkts: Vec<Pkt>,
    attempts: Vec<Attempt>,
    next_port: u16,
}

impl Capture {
    fn new(rng: &mut Rng) -> Self {
        Capture {
            pkts: Vec::new(),
            attempts: Vec::new(),
            next_port: rng.range(49152, 50000) as u16,
        }
    }

    fn ephemeral(&mut self, rng: &mut Rng) -> u16 {
        let p = self.next_port;
        let step = rng.range(1, 40) as u16;
        self.next_port = if p > 65535 - step { 49152 } else { p + step };
        p
    }

    fn push(&mut self, t: u64, outgoing: bool, iface: u32, ip: Vec<u8>) {
        self.pkts.push(Pkt {
            t,
            body: Body::Ip(ip),
            outgoing,
            iface,
        });
    }

    fn session(&mut self, rng: &mut Rng, s: Session) {
        let cport = self.ephemeral(rng);
        let (c, sv, sp) = (s.client, s.server, s.port);
        let isn_c = rng.next() as u32;
        let isn_s = rng.next() as u32;
        let rtt = rng.range(200, 900);
        let mut t = s.start;
        let to_server = |cap: &mut Capture, t, seq, ack, flags, payload: &[u8]| {
            cap.push(
                t,
                true,
                s.iface,
                tcp(c, sv, cport, sp, seq, ack, flags, payload),
            );
        };
        let to_client = |cap: &mut Capture, t, seq, ack, flags, payload: &[u8]| {
            if !s.one_way {
                cap.push(
                    t,
                    false,
                    s.iface,
                    tcp(sv, c, sp, cport, seq, ack, flags, payload),
                );
            }
        };
        if s.preexisting {
            // Mid-connection: the handshake happened before the capture.
            return self.exchanges(rng, s, cport, t, isn_c, isn_s, rtt);
        }
        to_server(self, t, isn_c, None, SYN, &[]);
        let mut syns = vec![t];
        let mut backoff = MICROS;
        for _ in 0..s.retransmissions {
            t += backoff;
            backoff *= 2;
            to_server(self, t, isn_c, None, SYN, &[]);
            syns.push(t);
        }
        if s.lost_syn_ack {
            syns.push(t + MICROS);
        }
        self.attempts.push(Attempt {
            client: c,
            client_port: cport,
            server: sv,
            port: sp,
            isn: isn_c,
            syns,
            answer: s.answer,
        });
        match s.answer {
            Answer::Silence => return,
            Answer::Rst => {
                to_client(self, t + rtt, 0, Some(isn_c.wrapping_add(1)), RST, &[]);
                return;
            }
            Answer::SynAck => {}
        }
        to_client(self, t + rtt, isn_s, Some(isn_c.wrapping_add(1)), SYN, &[]);
        if s.lost_syn_ack {
            t += MICROS;
            to_server(self, t, isn_c, None, SYN, &[]);
            to_client(self, t + rtt, isn_s, Some(isn_c.wrapping_add(1)), SYN, &[]);
        }
        t += 2 * rtt;
        let (cs, ss) = (isn_c.wrapping_add(1), isn_s.wrapping_add(1));
        to_server(self, t, cs, Some(ss), 0, &[]);
        self.exchanges(rng, s, cport, t, cs, ss, rtt);
    }

    /// Request/response exchanges from `t` on, then the close.
    #[allow(clippy::too_many_arguments)]
    fn exchanges(
        &mut self,
        rng: &mut Rng,
        s: Session,
        cport: u16,
        mut t: u64,
        mut cs: u32,
        mut ss: u32,
        rtt: u64,
    ) {
        let (c, sv, sp) = (s.client, s.server, s.port);
        let to_server = |cap: &mut Capture, t, seq, ack, flags, payload: &[u8]| {
            cap.push(
                t,
                true,
                s.iface,
                tcp(c, sv, cport, sp, seq, ack, flags, payload),
            );
        };
        let to_client = |cap: &mut Capture, t, seq, ack, flags, payload: &[u8]| {
            if !s.one_way {
                cap.push(
                    t,
                    false,
                    s.iface,
                    tcp(sv, c, sp, cport, seq, ack, flags, payload),
                );
            }
        };
        let gap = s.length / (u64::from(s.exchanges) + 1);
        for _ in 0..s.exchanges {
            t += gap;
            let n = rng.range(8, 40) as usize;
            let req = rng.bytes(n);
            to_server(self, t, cs, Some(ss), PSH, &req);
            cs = cs.wrapping_add(req.len() as u32);
            let n = rng.range(8, 64) as usize;
            let resp = rng.bytes(n);
            to_client(self, t + rtt, ss, Some(cs), PSH, &resp);
            ss = ss.wrapping_add(resp.len() as u32);
            to_server(self, t + 2 * rtt, cs, Some(ss), 0, &[]);
        }
        t += gap;
        match s.close {
            Close::Open => {}
            Close::Rst => to_server(self, t, cs, Some(ss), RST, &[]),
            Close::Fin => {
                to_server(self, t, cs, Some(ss), FIN, &[]);
                cs = cs.wrapping_add(1);
                to_client(self, t + rtt, ss, Some(cs), FIN, &[]);
                to_server(self, t + 2 * rtt, cs, Some(ss.wrapping_add(1)), 0, &[]);
            }
        }
    }

    /// Packets in time order (stable for equal times).
    fn into_packets(self) -> Vec<Pkt> {
        self.into_parts().0
    }

    /// Packets in time order, and the attempts in the order they began.
    fn into_parts(mut self) -> (Vec<Pkt>, Vec<Attempt>) {
        self.pkts.sort_by_key(|p| p.t);
        self.attempts.sort_by_key(|a| a.syns[0]);
        (self.pkts, self.attempts)
    }
}

// --------------------------------------------------------------- addressing

fn policy(site: &str) -> Policy {
    load_policy(Path::new(site), None)
        .unwrap_or_else(|e| panic!("bundled site {site}: {e}"))
        .policy
}

fn edge_by_name(p: &Policy, src: &str, dst: &str, port: u16) -> usize {
    p.all_edges()
        .iter()
        .position(|e| {
            p.endpoint(e.src).name == src && p.endpoint(e.dst).name == dst && e.port == port
        })
        .unwrap_or_else(|| panic!("no edge {src} -> {dst}:{port} in {}", p.site.name))
}

/// The implicit user network's addresses when a site declares none.
const DEFAULT_USERS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);

/// The IPv4 address of an endpoint; user networks get one of a few hosts.
fn address(p: &Policy, id: EndpointId, rng: &mut Rng) -> IpAddr {
    let e = p.endpoint(id);
    match e.kind {
        EndpointKind::Node => *p.site.nodes[e.index]
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .expect("node has an IPv4 address"),
        EndpointKind::External => p.site.externals[e.index]
            .nets
            .iter()
            .find(|n| n.addr().is_ipv4())
            .expect("external has an IPv4 address")
            .addr(),
        EndpointKind::UserNetwork => {
            let base = p.site.user_networks[e.index]
                .cidrs
                .iter()
                .find_map(|n| match n.network() {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                })
                .unwrap_or(DEFAULT_USERS);
            let host = rng.range(20, 26) as u8;
            let o = base.octets();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], host))
        }
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

// The multi-node site's addresses (deploy/sites/multi-node.yaml).
const PROXY: [u8; 4] = [192, 0, 2, 11];
const ENGINE1: [u8; 4] = [192, 0, 2, 21];
const ENGINE2: [u8; 4] = [192, 0, 2, 22];
const CENTRAL: [u8; 4] = [192, 0, 2, 10];

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn secs(s: u64) -> u64 {
    s * MICROS
}

// ------------------------------------------------------------------ traffic

/// About 20 minutes of a site's normal traffic: every expected edge of the
/// model is used; required edges at least once per window (long-window ones
/// as one long-lived connection); user sessions; two SYN retransmissions
/// that then succeed. `skip` leaves one edge (index into `policy.all_edges()`) out.
fn site_traffic(p: &Policy, rng: &mut Rng, skip: Option<usize>) -> Vec<Pkt> {
    site_traffic_parts(p, rng, skip).0
}

/// [`site_traffic`] and its attempts.
fn site_traffic_parts(p: &Policy, rng: &mut Rng, skip: Option<usize>) -> (Vec<Pkt>, Vec<Attempt>) {
    let mut cap = Capture::new(rng);
    let end = secs(SITE_CAPTURE_SECS);
    let mut retransmit_user = true;
    let mut retransmit_node = true;
    for (i, e) in p.all_edges().iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let src = p.endpoint(e.src);
        let from_users = src.kind == EndpointKind::UserNetwork;
        let mut starts = Vec::new();
        let mut long_lived = false;
        if e.required && e.window.as_secs() > SITE_CAPTURE_SECS {
            long_lived = true;
            starts.push(rng.range(secs(1), secs(10)));
        } else if e.required {
            // Every ten minutes: no 15-minute window goes without one.
            let mut t = rng.range(secs(5), secs(60));
            while t < end - secs(60) {
                starts.push(t);
                t += secs(600) + rng.range(0, secs(20));
            }
        } else if from_users {
            let n = if e.port == 443 { 4 } else { 1 };
            for _ in 0..n {
                starts.push(rng.range(secs(10), end - secs(120)));
            }
            if e.port == 443 {
                // Users from the first to the last minute of the capture.
                starts.push(rng.range(secs(1), secs(10)));
                starts.push(rng.range(end - secs(50), end - secs(40)));
            }
        } else {
            starts.push(rng.range(secs(10), end - secs(60)));
        }
        for start in starts {
            let client = address(p, e.src, rng);
            let server = address(p, e.dst, rng);
            let mut s = Session::new(client, server, e.port, start);
            s.exchanges = rng.range(1, 3) as u32;
            s.length = rng.range(secs(1), secs(30));
            if rng.range(0, 10) == 0 {
                s.close = Close::Rst;
            }
            if long_lived {
                s.close = Close::Open;
                s.exchanges = 8;
                s.length = end - start - secs(30);
            }
            if from_users && retransmit_user {
                retransmit_user = false;
                s.retransmissions = 1;
            } else if e.required && !long_lived && retransmit_node {
                retransmit_node = false;
                s.retransmissions = 2;
            }
            cap.session(rng, s);
        }
    }
    // The last packet marks the capture's end.
    let (mut pkts, mut attempts) = cap.into_parts();
    pkts.retain(|p| p.t < end);
    attempts.retain(|a| a.syns[0] < end);
    (pkts, attempts)
}

/// A user reaching an engine's QES port directly; an engine opening the
/// proxy's QPS authentication port (4243), which only the central node uses.
fn verdict_unexpected(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    let user = v4(198, 51, 100, 7);
    cap.session(rng, Session::new(user, ip(PROXY), 443, secs(1)));
    cap.session(rng, Session::new(user, ip(ENGINE1), 4747, secs(3)));
    cap.session(rng, Session::new(ip(ENGINE1), ip(PROXY), 4243, secs(6)));
    cap.into_packets()
}

/// The proxy reaching QRS's certificate-unlock port 4570 on the central
/// node, a port the model keeps on localhost.
fn verdict_local_only(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    cap.session(rng, Session::new(ip(PROXY), ip(CENTRAL), 4242, secs(1)));
    cap.session(rng, Session::new(ip(PROXY), ip(CENTRAL), 4570, secs(4)));
    cap.into_packets()
}

/// A host outside the inventory and user networks reaching the proxy; an
/// engine reaching an undeclared address.
fn verdict_unknown_host(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    cap.session(
        rng,
        Session::new(v4(10, 20, 30, 40), ip(PROXY), 443, secs(1)),
    );
    cap.session(
        rng,
        Session::new(ip(ENGINE1), v4(203, 0, 113, 99), 443, secs(4)),
    );
    cap.into_packets()
}

/// An expected edge (proxy → engine1:4747) refused with RST.
fn blocked_refused(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    cap.session(rng, Session::new(ip(PROXY), ip(ENGINE2), 4747, secs(1)));
    let mut s = Session::new(ip(PROXY), ip(ENGINE1), 4747, secs(2));
    s.answer = Answer::Rst;
    cap.session(rng, s);
    cap.into_packets()
}

/// An expected edge whose SYN is retransmitted three times and never
/// answered, while other connections' SYN-ACKs are visible.
fn blocked_unanswered(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    cap.session(
        rng,
        Session::new(v4(198, 51, 100, 7), ip(PROXY), 443, secs(1)),
    );
    let mut s = Session::new(ip(PROXY), ip(ENGINE1), 4747, secs(2));
    s.retransmissions = 3;
    s.answer = Answer::Silence;
    cap.session(rng, s);
    let mut later = Session::new(ip(PROXY), ip(ENGINE2), 4747, secs(14));
    later.length = secs(5);
    cap.session(rng, later);
    cap.into_packets()
}

/// The capture `portwatch demo` replays (built into the binary): the
/// multi-node site's normal traffic with findings among it, every few
/// minutes: a refused required edge (scheduler → central:4242), a user
/// reaching engine1:4747 directly and engine2 → engine1:3389 (unexpected), a
/// user reaching central:4244 (local-only), and 192.0.2.99 → proxy:22
/// (unknown host).
fn demo(rng: &mut Rng) -> Vec<Pkt> {
    let p = policy("multi-node");
    let mut pkts = site_traffic(&p, rng, None);
    let mut cap = Capture::new(rng);
    findings_every_four_minutes(&mut cap, rng, &DEMO_FINDINGS);
    pkts.extend(cap.into_packets());
    pkts.sort_by_key(|p| p.t);
    pkts
}

/// The demo's findings: client, server, port, answer.
type Finding = ([u8; 4], [u8; 4], u16, Answer);
const DEMO_FINDINGS: [Finding; 5] = [
    ([192, 0, 2, 31], CENTRAL, 4242, Answer::Rst),
    ([198, 51, 100, 77], ENGINE1, 4747, Answer::SynAck),
    (ENGINE2, ENGINE1, 3389, Answer::Rst),
    ([198, 51, 100, 50], CENTRAL, 4244, Answer::Rst),
    ([192, 0, 2, 99], PROXY, 22, Answer::Rst),
];

/// Each finding five times, four minutes apart (from 30 s on), the
/// findings of one round 7 s apart; an unanswered one retransmits its SYN
/// twice (after 1 s and 2 s more: within the handshake table's SYN timeout,
/// so the capture sees one attempt).
fn findings_every_four_minutes(cap: &mut Capture, rng: &mut Rng, findings: &[Finding]) {
    for round in 0..5 {
        for (i, (client, server, port, answer)) in findings.iter().enumerate() {
            let mut s = Session::new(
                ip(*client),
                ip(*server),
                *port,
                secs(30 + 240 * round + 7 * i as u64),
            );
            s.answer = *answer;
            if *answer == Answer::Silence {
                s.retransmissions = 2;
            }
            cap.session(rng, s);
        }
    }
}

/// The fileshare of the multi-node site (an external).
const FILESHARE: [u8; 4] = [203, 0, 113, 20];

/// The traffic of `nodelogs.pcap` and of the node logs under
/// `fixtures/nodelogs/`: the multi-node site's normal traffic without the
/// required central → scheduler:5151 (missing), the demo's findings, and
/// five times each: proxy → engine1:4747 unanswered (engine1's firewall
/// drops it: blocked), and the unknown host 192.0.2.99 reaching the
/// fileshare on 445 (no node at either end).
fn nodelogs_traffic(rng: &mut Rng) -> (Vec<Pkt>, Vec<Attempt>) {
    let p = policy("multi-node");
    let skip = edge_by_name(&p, "central", "scheduler", 5151);
    let (mut pkts, mut attempts) = site_traffic_parts(&p, rng, Some(skip));
    let mut cap = Capture::new(rng);
    let mut findings = DEMO_FINDINGS.to_vec();
    findings.push((PROXY, ENGINE1, 4747, Answer::Silence));
    findings.push(([192, 0, 2, 99], FILESHARE, 445, Answer::SynAck));
    findings_every_four_minutes(&mut cap, rng, &findings);
    let (more, more_attempts) = cap.into_parts();
    pkts.extend(more);
    pkts.sort_by_key(|p| p.t);
    attempts.extend(more_attempts);
    attempts.sort_by_key(|a| a.syns[0]);
    (pkts, attempts)
}

/// The directory server and database of [`extra_legitimate_capture`]:
/// addresses the multi-node site file does not mention.
pub const DIRECTORY: [u8; 4] = [203, 0, 113, 60];
pub const DATABASE: [u8; 4] = [203, 0, 113, 70];

/// The multi-node site's normal traffic plus legitimate traffic its site
/// file does not mention: engine1 reaching a database on 1433, and every
/// node reaching a directory server on 389 (LDAP) and 636 (LDAPS) a few
/// times. Not a committed fixture: `tests/propose.rs` writes it at test
/// time, as a pcap file.
pub fn extra_legitimate_capture() -> Vec<u8> {
    let p = policy("multi-node");
    let mut rng = Rng::new(SEED ^ 0x700);
    let mut pkts = site_traffic(&p, &mut rng, None);
    let mut cap = Capture::new(&mut rng);
    let mut t = secs(20);
    for n in &p.site.nodes {
        let node = *n.addresses.iter().find(|a| a.is_ipv4()).expect("IPv4");
        for port in [389, 636] {
            for _ in 0..3 {
                cap.session(&mut rng, Session::new(node, ip(DIRECTORY), port, t));
                t += secs(37);
            }
        }
    }
    for i in 0..4 {
        let mut s = Session::new(ip(ENGINE1), ip(DATABASE), 1433, secs(60 + 240 * i));
        s.exchanges = 3;
        cap.session(&mut rng, s);
    }
    pkts.extend(cap.into_packets());
    pkts.sort_by_key(|p| p.t);
    pcap(Link::Ethernet, &pkts)
}

/// A host the multi-node site file does not mention.
pub const ROGUE: [u8; 4] = [192, 0, 2, 99];

/// The multi-node site's normal traffic plus what `propose` must not turn
/// into allowances: the rogue host connecting once to central:4242, a user
/// once to engine1:4747, twice to proxy:4747, engine1 three times to
/// proxy:3389 refused; and a user four times to engine2:4747, which is
/// proposed. Not a committed fixture: `tests/propose.rs` writes it at test
/// time, as a pcap file.
pub fn rogue_and_rare_capture() -> Vec<u8> {
    let p = policy("multi-node");
    let mut rng = Rng::new(SEED ^ 0x701);
    let mut pkts = site_traffic(&p, &mut rng, None);
    let mut cap = Capture::new(&mut rng);
    let user = v4(198, 51, 100, 7);
    cap.session(
        &mut rng,
        Session::new(ip(ROGUE), ip(CENTRAL), 4242, secs(100)),
    );
    cap.session(&mut rng, Session::new(user, ip(ENGINE1), 4747, secs(130)));
    for i in 0..2 {
        cap.session(
            &mut rng,
            Session::new(user, ip(PROXY), 4747, secs(150 + 60 * i)),
        );
    }
    for i in 0..3 {
        let mut s = Session::new(ip(ENGINE1), ip(PROXY), 3389, secs(160 + 60 * i));
        s.answer = Answer::Rst;
        cap.session(&mut rng, s);
    }
    for i in 0..4 {
        cap.session(
            &mut rng,
            Session::new(user, ip(ENGINE2), 4747, secs(200 + 60 * i)),
        );
    }
    pkts.extend(cap.into_packets());
    pkts.sort_by_key(|p| p.t);
    pcap(Link::Ethernet, &pkts)
}

/// Users on the central node's QPS (443 and 80), one SYN retransmission:
/// the traffic every link-layer fixture carries. Over IPv6 it uses the
/// multi-node site's IPv6 addresses (central 2001:db8::10, corp-users
/// 2001:db8:100::/48).
fn link_traffic(rng: &mut Rng, v6: bool) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    let central = if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10))
    } else {
        ip(CENTRAL)
    };
    let user = |h: u8| {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x100,
                0,
                0,
                0,
                0,
                u16::from(h),
            ))
        } else {
            v4(198, 51, 100, h)
        }
    };
    let mut iface = 0;
    for (i, (host, port, start)) in [(23, 443, 1), (24, 443, 2), (23, 80, 5), (25, 443, 9)]
        .into_iter()
        .enumerate()
    {
        let mut s = Session::new(user(host), central, port, secs(start));
        s.retransmissions = u32::from(i == 1);
        s.iface = iface;
        iface ^= 1;
        cap.session(rng, s);
    }
    cap.into_packets()
}

/// Where to cut a pcap file: in the middle of the record two thirds in.
fn truncation_point(file: &[u8]) -> usize {
    let mut at = 24;
    let mut records = Vec::new();
    while at + 16 <= file.len() {
        records.push(at);
        let caplen = u32::from_le_bytes(file[at + 8..at + 12].try_into().expect("4 bytes"));
        at += 16 + caplen as usize;
    }
    let r = records[records.len() * 2 / 3];
    r + 16 + 10
}

/// Valid traffic with hostile frames mixed in: random bytes, frames shorter
/// than an Ethernet header, IPv4 with a bad IHL, a bad IP version, a TCP
/// header with a bad data offset, an IPv4 packet behind the IPv6 Ethernet type.
fn garbage_frames(rng: &mut Rng, valid: &[Pkt]) -> Vec<Pkt> {
    let eth = |payload: &[u8], ethertype: u16| {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let sample = tcp(
        v4(198, 51, 100, 66),
        ip(CENTRAL),
        50000,
        443,
        1,
        None,
        SYN,
        &[],
    );
    let mut out = Vec::new();
    for (i, p) in valid.iter().enumerate() {
        out.push(p.clone());
        if i % 2 == 1 {
            continue;
        }
        let raw = match (i / 2) % 6 {
            0 => {
                let n = rng.range(0, 80) as usize;
                rng.bytes(n)
            }
            1 => {
                let n = rng.range(1, 14) as usize;
                rng.bytes(n)
            }
            2 => {
                let mut b = sample.clone();
                b[0] = 0x43; // IHL 3
                eth(&b, 0x0800)
            }
            3 => {
                let mut b = sample.clone();
                b[0] = 0x75; // version 7
                eth(&b, 0x0800)
            }
            4 => {
                let mut b = sample.clone();
                b[20 + 12] = 0x20; // TCP data offset 2
                eth(&b, 0x0800)
            }
            _ => {
                // An IPv4 packet announced as IPv6.
                eth(&sample, 0x86dd)
            }
        };
        out.push(Pkt {
            t: p.t + 1,
            body: Body::Raw(raw),
            outgoing: true,
            iface: 0,
        });
    }
    out
}

/// Only the client side is captured: two connections whose SYN is sent once
/// (outcome unknown: nothing shows an answer was due), one whose SYN is
/// retransmitted twice before the client gives up (unanswered).
fn one_way(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    let mut s = Session::new(v4(198, 51, 100, 33), ip(PROXY), 443, secs(1));
    s.one_way = true;
    s.retransmissions = 2;
    s.answer = Answer::Silence;
    cap.session(rng, s);
    // The capture goes on past the SYN timeout, so the attempt is judged.
    for (host, start) in [(31, 6), (32, 12)] {
        let mut s = Session::new(v4(198, 51, 100, host), ip(PROXY), 443, secs(start));
        s.one_way = true;
        cap.session(rng, s);
    }
    cap.into_packets()
}

// --------------------------------------------------- shapes of real traffic

/// A generator of one fixture's packets.
type Traffic = fn(&mut Rng) -> Vec<Pkt>;

/// Forty minutes in which the required edge proxy → central:4242 (QRS) is
/// carried by one pooled connection: one SYN at the start, data every
/// minute, never closed. The edge is in use all along. Every other
/// 15-minute required edge has no traffic at all: still missing.
fn long_lived(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    let mut s = Session::new(ip(PROXY), ip(CENTRAL), 4242, secs(5));
    s.close = Close::Open;
    s.exchanges = 40;
    s.length = secs(40 * 60);
    cap.session(rng, s);
    cap.into_packets()
}

/// Forty minutes of data on engine1 → central:4242 (QRS, required) over a
/// connection opened before the capture: no SYN, no SYN-ACK, data only.
/// The edge is in use; the other 15-minute required edges are missing.
fn pre_existing(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    let mut s = Session::new(ip(ENGINE1), ip(CENTRAL), 4242, secs(1));
    s.preexisting = true;
    s.close = Close::Open;
    s.exchanges = 40;
    s.length = secs(40 * 60);
    cap.session(rng, s);
    cap.into_packets()
}

/// Replies are visible for most of the capture (users on the proxy, proxy →
/// engine2), but proxy → engine1's replies take another path: its SYN is
/// sent twice, then the client ACKs and sends data (the handshake
/// completed: established, inferred). Converse: proxy → engine2:4747, whose
/// replies are visible, later really goes unanswered (blocked).
fn asymmetric_pair(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    for (host, start) in [(21, 1), (22, 3)] {
        cap.session(
            rng,
            Session::new(v4(198, 51, 100, host), ip(PROXY), 443, secs(start)),
        );
    }
    cap.session(rng, Session::new(ip(PROXY), ip(ENGINE2), 4747, secs(4)));
    let mut s = Session::new(ip(PROXY), ip(ENGINE1), 4747, secs(6));
    s.one_way = true;
    s.retransmissions = 1;
    s.exchanges = 3;
    s.length = secs(10);
    cap.session(rng, s);
    let mut s = Session::new(ip(PROXY), ip(ENGINE2), 4747, secs(20));
    s.retransmissions = 2;
    s.answer = Answer::Silence;
    cap.session(rng, s);
    cap.session(
        rng,
        Session::new(v4(198, 51, 100, 23), ip(PROXY), 443, secs(40)),
    );
    cap.into_packets()
}

/// SYN, SYN-ACK, the client's SYN again (the SYN-ACK was lost on its way
/// back), SYN-ACK again, ACK, data, FIN: one attempt, one retransmission.
fn lost_syn_ack(rng: &mut Rng) -> Vec<Pkt> {
    let mut cap = Capture::new(rng);
    let mut s = Session::new(ip(PROXY), ip(ENGINE1), 4747, secs(1));
    s.lost_syn_ack = true;
    cap.session(rng, s);
    cap.session(rng, Session::new(ip(PROXY), ip(ENGINE2), 4747, secs(5)));
    cap.into_packets()
}

/// The multi-node site's 20 minutes of normal traffic with one frame in the
/// middle stamped three years in the future (a capture host's bad clock).
fn stray_timestamp(rng: &mut Rng) -> Vec<Pkt> {
    let p = policy("multi-node");
    let mut pkts = site_traffic(&p, rng, None);
    let mid = pkts.len() / 2;
    pkts[mid].t += secs(3 * 365 * 86_400);
    pkts
}

/// The converse of a stray timestamp: the site's traffic with three quiet
/// hours in the middle. The frames after the gap confirm the new time, so
/// the clock advances (the span covers the gap, no anomaly); the traffic
/// after it is evidence again.
fn quiet_gap(rng: &mut Rng) -> Vec<Pkt> {
    let p = policy("multi-node");
    let mut pkts = site_traffic(&p, rng, None);
    for pkt in pkts.iter_mut().filter(|pkt| pkt.t >= secs(10 * 60)) {
        pkt.t += secs(3 * 3600);
    }
    pkts
}

// ------------------------------------------------------------- link layers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Ethernet, as a mirror session delivers it: wrapped.
    Mirror(EncapKind),
    Ethernet,
    /// 802.1Q, VLAN 100.
    Vlan,
    /// 802.1ad outer tag 200, 802.1Q inner tag 100.
    QinQ,
    /// Linux cooked capture v1 (link type 113).
    Sll,
    /// Linux cooked capture v2 (link type 276).
    Sll2,
}

impl Link {
    fn linktype(self) -> u16 {
        match self {
            Link::Ethernet | Link::Vlan | Link::QinQ | Link::Mirror(_) => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
        }
    }
}

/// A MAC address derived from an IP address (locally administered).
fn mac(ip: &[u8], version6: bool) -> [u8; 6] {
    let (a, b, c, d) = if version6 {
        (ip[20], ip[21], ip[22], ip[23])
    } else {
        (ip[12], ip[13], ip[14], ip[15])
    };
    [0x02, 0x00, a, b, c, d]
}

fn frame(link: Link, p: &Pkt) -> Vec<u8> {
    let ip = match &p.body {
        Body::Ip(_) if matches!(link, Link::Mirror(_)) => {
            let Link::Mirror(m) = link else {
                unreachable!()
            };
            return mirrored(m, &frame(Link::Ethernet, p));
        }
        Body::Raw(raw) => return raw.clone(),
        Body::Ip(ip) => ip,
    };
    let v6 = ip[0] >> 4 == 6;
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    let src_mac = mac(ip, v6);
    let dst_mac = if v6 {
        mac(&ip[16..], true)
    } else {
        mac(&ip[4..], false)
    };
    let mut f = Vec::with_capacity(ip.len() + 24);
    match link {
        Link::Ethernet | Link::Vlan | Link::QinQ | Link::Mirror(_) => {
            f.extend_from_slice(&dst_mac);
            f.extend_from_slice(&src_mac);
            if link == Link::QinQ {
                f.extend_from_slice(&0x88a8u16.to_be_bytes());
                f.extend_from_slice(&200u16.to_be_bytes());
            }
            if link != Link::Ethernet {
                f.extend_from_slice(&0x8100u16.to_be_bytes());
                f.extend_from_slice(&100u16.to_be_bytes());
            }
            f.extend_from_slice(&ethertype.to_be_bytes());
        }
        Link::Sll => {
            let packet_type: u16 = if p.outgoing { 4 } else { 0 };
            f.extend_from_slice(&packet_type.to_be_bytes());
            f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            f.extend_from_slice(&6u16.to_be_bytes());
            f.extend_from_slice(&src_mac);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&ethertype.to_be_bytes());
        }
        Link::Sll2 => {
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&2u32.to_be_bytes()); // interface index
            f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            f.push(if p.outgoing { 4 } else { 0 });
            f.push(6);
            f.extend_from_slice(&src_mac);
            f.extend_from_slice(&[0, 0]);
        }
    }
    f.extend_from_slice(ip);
    f
}

// ------------------------------------------------------------------ mirrors

/// The encapsulations a mirror session delivers frames in: all decode
/// opens but IP-in-IP (a router's, not a mirror's).
pub fn mirrors() -> impl Iterator<Item = EncapKind> {
    (EncapKind::ALL.into_iter()).filter(|k| *k != EncapKind::IpInIp)
}

/// The session every mirrored frame names (VNI, ERSPAN session id, GRE key).
pub const MIRROR_SESSION: u32 = 300;
/// The mirror's tunnel endpoints (198.18.0.0/15: no site uses it).
const VTEP_SRC: [u8; 4] = [198, 18, 0, 1];
const VTEP_DST: [u8; 4] = [198, 18, 0, 2];

/// The demo capture, each frame wrapped in `m` as a mirror delivers it.
pub fn mirrored_demo(m: EncapKind) -> Vec<u8> {
    pcap(Link::Mirror(m), &demo(&mut Rng::new(SEED ^ 0x600)))
}

/// `eth` (an Ethernet frame) in `m`, in Ethernet and IPv4 between the
/// tunnel endpoints (MPLS: in Ethernet directly).
fn mirrored(m: EncapKind, eth: &[u8]) -> Vec<u8> {
    let ip = &eth[14..];
    let ip_type: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    let session = MIRROR_SESSION;
    let outer = PacketBuilder::ethernet2([2, 0, 0, 0, 0xee, 1], [2, 0, 0, 0, 0xee, 2])
        .ipv4(VTEP_SRC, VTEP_DST, 64);
    let mut out = Vec::new();
    let udp = |out: &mut Vec<u8>, port: u16, payload: &[u8]| {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0xee, 1], [2, 0, 0, 0, 0xee, 2])
            .ipv4(VTEP_SRC, VTEP_DST, 64)
            .udp(49_152, port);
        b.write(out, payload).expect("Vec write");
    };
    let gre = |protocol: u16, key: Option<u32>, seq: Option<u32>, inner: &[u8]| {
        let flags = u16::from(key.is_some()) << 13 | u16::from(seq.is_some()) << 12;
        let mut g = [flags.to_be_bytes(), protocol.to_be_bytes()].concat();
        for v in [key, seq].into_iter().flatten() {
            g.extend_from_slice(&v.to_be_bytes());
        }
        [g, inner.to_vec()].concat()
    };
    let erspan = |version: u8| {
        let mut h = vec![version << 4, 0];
        h.extend_from_slice(&(session as u16).to_be_bytes());
        h.extend_from_slice(&[0; 4]);
        if version == 2 {
            // Timestamp, SGT, and the O flag: an 8-byte platform subheader follows.
            h.extend_from_slice(&[0, 0, 0, 1]);
            h.extend_from_slice(&[0; 8]);
        }
        [h, eth.to_vec()].concat()
    };
    let vni = (session << 8).to_be_bytes();
    const GRE: etherparse::IpNumber = etherparse::IpNumber::GRE;
    match m {
        EncapKind::Vxlan => udp(&mut out, 4789, &[&[8, 0, 0, 0], &vni[..], eth].concat()),
        EncapKind::Geneve => {
            // One 4-byte option (class 0x0102, type 3, one word of data).
            let option = [1, 2, 3, 1, 0xaa, 0xbb, 0xcc, 0xdd];
            udp(
                &mut out,
                6081,
                &[&[2, 0, 0x65, 0x58], &vni[..], &option, eth].concat(),
            )
        }
        EncapKind::GreInUdp => udp(&mut out, 4754, &gre(ip_type, None, None, ip)),
        EncapKind::Mpls => {
            out.extend_from_slice(&eth[..12]);
            out.extend_from_slice(&0x8847u16.to_be_bytes());
            out.extend_from_slice(&((1000 << 12) | 0x100 | 64u32).to_be_bytes());
            out.extend_from_slice(ip);
        }
        _ => {
            let (protocol, payload) = match m {
                EncapKind::Gre => (GRE, gre(ip_type, Some(session), None, ip)),
                EncapKind::GreTeb => (GRE, gre(0x6558, Some(session), None, eth)),
                EncapKind::ErspanI => (GRE, gre(0x88be, None, None, eth)),
                EncapKind::ErspanII => (GRE, gre(0x88be, None, Some(1), &erspan(1))),
                EncapKind::ErspanIII => (GRE, gre(0x22eb, None, Some(1), &erspan(2))),
                _ => (etherparse::IpNumber::IPV4, ip.to_vec()),
            };
            outer
                .write(&mut out, protocol, &payload)
                .expect("Vec write");
        }
    }
    out
}

// --------------------------------------------------------------- containers

const SNAPLEN: u32 = 262_144;

/// A little-endian microsecond pcap file (version 2.4).
fn pcap(link: Link, pkts: &[Pkt]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&SNAPLEN.to_le_bytes());
    out.extend_from_slice(&u32::from(link.linktype()).to_le_bytes());
    for p in pkts {
        let f = frame(link, p);
        let ts = BASE_SECS * MICROS + p.t;
        out.extend_from_slice(&((ts / MICROS) as u32).to_le_bytes());
        out.extend_from_slice(&((ts % MICROS) as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.write_all(&f).expect("Vec write");
    }
    out
}

/// A little-endian pcapng file: one section, one interface per entry of
/// `links` (microsecond resolution), each packet on its `iface`.
fn pcapng(links: &[Link], pkts: &[Pkt]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, btype: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        out.extend_from_slice(&btype.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(0, pad));
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
    block(&mut out, 0x0a0d_0d0a, &shb);
    for l in links {
        let mut idb = Vec::new();
        idb.extend_from_slice(&l.linktype().to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&SNAPLEN.to_le_bytes());
        block(&mut out, 1, &idb);
    }
    for p in pkts {
        let link = links[p.iface as usize];
        let f = frame(link, p);
        let ts = BASE_SECS * MICROS + p.t;
        let mut epb = Vec::new();
        epb.extend_from_slice(&p.iface.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f);
        block(&mut out, 6, &epb);
    }
    out
}
