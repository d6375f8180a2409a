//! Writes a large, deterministic capture for `benches/replay_vs_tcpdump.sh`.
//!
//! ```text
//! make_bench_capture OUT PACKETS [SEED] [--snaplen N] [--flood] [--pcapng] [--vxlan]
//!                    [--foreign | --mixed]
//! make_bench_capture --print-filter [--vxlan]
//! ```
//!
//! The traffic is that of the bundled `multi-node` site: about 500 TCP
//! connections open at a time between its nodes and its user network (IPv4
//! and some IPv6, about one connection in eight VLAN-tagged), each a SYN,
//! SYN-ACK, 40 to 110 data/ACK segments and two FINs, so about 5% of the
//! packets are control packets. A few connections break the port model
//! (unexpected flows, a refused required edge, a local-only port, an unknown
//! host), and about 1% of the packets are UDP and 0.2% ARP.
//!
//! Frames have realistic wire lengths: 66-byte ACKs, 74-byte SYNs, client
//! requests of 266 to 566 bytes, 1514-byte data segments and, one data
//! segment in 50, a 9014-byte jumbo frame. `--snaplen N` (default 128, a
//! header-only sensor) is how much of each frame the file stores: the
//! record's `len` is the wire length, `caplen` at most N. `--snaplen 262144`
//! stores whole frames, as dumpcap and tcpdump do by default.
//!
//! `--flood` adds a scan on top: 2.5% of the packets are SYNs from 65,536
//! addresses of 10.1.0.0/16 (outside the inventory) to the site's nodes on
//! random ports, and 2.5% their answers (SYN-ACK, or RST one time in three),
//! so 9 to 10% of all packets are control packets and the handshake table,
//! flow rows and findings all reach their caps. Answered scan connections
//! stay open (no FIN), as in a SYN flood that completes handshakes.
//!
//! `--foreign` writes other systems' traffic instead, as a sensor on a
//! shared segment sees it: IPv4 over Ethernet between 25 client hosts
//! (172.16.1.1 to .25) and 25 server hosts (172.16.2.1 to .25), none in the
//! site's inventory, so every SYN is an unknown host's. 5,000 connections
//! are open at a time (those of the first packets opened before the
//! capture), 60% short (2 to 20 data/ACK segments), 40% long (40 to 154);
//! server ports 443 (40%), 80, 22, 5432, 6379, 8080,
//! 9090 and 3306 (6.5% each), and for 8% of the connections a random port
//! from 1024 up, one in five of them refused (RST). About 8% of the packets
//! are control packets; the server sends 1514-byte segments four times in
//! five, shorter ones otherwise, the client ACKs and short requests (no
//! jumbo frames): whole frames average about 680 bytes.
//!
//! `--mixed` interleaves the two: one packet in ten is the site's traffic
//! (the default shape, with `--flood` if given), the other nine other
//! systems' (`--foreign`).
//!
//! `--pcapng` writes pcapng (one section, one Ethernet interface, µs
//! timestamps, Enhanced Packet Blocks), as dumpcap does, instead of pcap.
//! Timestamps advance 1 to 39 µs per packet; the seed also moves the client
//! ports, so files made with different seeds merge without colliding.
//!
//! `--vxlan` wraps every frame as a cloud mirror session delivers it: outer
//! Ethernet, IPv4 between two tunnel endpoints outside the site, UDP to port
//! 4789 and a VXLAN header (VNI 7), 50 bytes in front of the frame; the
//! snaplen then cuts the outer frame.
//!
//! `--print-filter` prints the libpcap filter `portwatch watch` installs
//! (`source::live::control_filter`), so tcpdump can be given the same one;
//! with `--vxlan`, the clause of `source::live::tunnel_filter` that selects
//! VXLAN datagrams whose inner frame may hold a control segment.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

const DEFAULT_SNAPLEN: usize = 128;
const ACTIVE: usize = 512;
const START_SECS: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

const PROXY: [u8; 4] = [192, 0, 2, 11];
const ENGINE1: [u8; 4] = [192, 0, 2, 21];
const ENGINE2: [u8; 4] = [192, 0, 2, 22];
const CENTRAL: [u8; 4] = [192, 0, 2, 10];
const SCHEDULER: [u8; 4] = [192, 0, 2, 31];
const UNKNOWN_HOST: [u8; 4] = [203, 0, 113, 77];
const CENTRAL_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// xorshift64*: deterministic and fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Syn,
    SynAck,
    Data(u32),
    ClientFin,
    ServerFin,
    Rst,
    Done,
}

struct Conn {
    client: Addr,
    server: Addr,
    cport: u16,
    sport: u16,
    vlan: Option<u16>,
    stage: Stage,
    /// SYN answered by RST.
    refused: bool,
    cseq: u32,
    sseq: u32,
}

fn user_v4(rng: &mut Rng) -> Addr {
    Addr::V4([198, 51, 100, 1 + rng.below(200) as u8])
}

fn node(rng: &mut Rng) -> [u8; 4] {
    [PROXY, ENGINE1, ENGINE2, SCHEDULER][rng.below(4) as usize]
}

fn new_conn(rng: &mut Rng, serial: u64, port_base: u64) -> Conn {
    let v4 = Addr::V4;
    let pick = rng.below(1000);
    let (client, server, sport, refused) = match pick {
        0..=399 => (user_v4(rng), v4(PROXY), 443, false),
        400..=499 => (user_v4(rng), v4(CENTRAL), 443, false),
        500..=579 => {
            let mut a = [
                0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            a[15] = 1 + rng.below(50) as u8;
            (Addr::V6(a), Addr::V6(CENTRAL_V6), 443, false)
        }
        580..=729 => {
            let e = if rng.below(2) == 0 { ENGINE1 } else { ENGINE2 };
            (v4(PROXY), v4(e), 4747, false)
        }
        730..=829 => (v4(node(rng)), v4(CENTRAL), 4242, false),
        830..=879 => (v4(CENTRAL), v4(node(rng)), 4242, false),
        880..=899 => (v4(CENTRAL), v4(node(rng)), 4444, false),
        900..=929 => (v4(node(rng)), v4(CENTRAL), 4432, false),
        // Findings: an unexpected flow, a refused required edge, a
        // local-only port reached from the network, an unknown host.
        930..=949 => (user_v4(rng), v4(ENGINE1), 4747, false),
        950..=969 => (v4(PROXY), v4(ENGINE2), 4239, true),
        970..=984 => (user_v4(rng), v4(PROXY), 4244, false),
        _ => (v4(UNKNOWN_HOST), v4(PROXY), 443, false),
    };
    Conn {
        client,
        server,
        cport: 32768 + ((serial + port_base) % 28000) as u16,
        sport,
        vlan: (serial % 8 == 0).then_some(100),
        stage: Stage::Syn,
        refused,
        cseq: rng.next() as u32,
        sseq: rng.next() as u32,
    }
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// The output file: a pcap or pcapng stream of records.
struct Writer {
    out: BufWriter<File>,
    /// Headers of the frame being written; the payload after them is a
    /// fixed pattern up to the wire length or the snaplen.
    frame: Vec<u8>,
    snaplen: usize,
    pcapng: bool,
    /// Wrap each frame in VXLAN (`--vxlan`).
    vxlan: bool,
}

/// VXLAN's outer headers: Ethernet, IPv4, UDP and the VXLAN header.
const VXLAN_OUTER: usize = 14 + 20 + 8 + 8;
const VTEP_SRC: [u8; 4] = [203, 0, 113, 201];
const VTEP_DST: [u8; 4] = [203, 0, 113, 202];

impl Writer {
    fn header(&mut self) -> std::io::Result<()> {
        if self.pcapng {
            // Section header block: no options, section length unknown.
            let mut shb = Vec::with_capacity(28);
            shb.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
            shb.extend_from_slice(&28u32.to_le_bytes());
            shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
            shb.extend_from_slice(&1u16.to_le_bytes());
            shb.extend_from_slice(&0u16.to_le_bytes());
            shb.extend_from_slice(&u64::MAX.to_le_bytes());
            shb.extend_from_slice(&28u32.to_le_bytes());
            // Interface description block: Ethernet, the snaplen, µs.
            let mut idb = Vec::with_capacity(20);
            idb.extend_from_slice(&1u32.to_le_bytes());
            idb.extend_from_slice(&20u32.to_le_bytes());
            idb.extend_from_slice(&1u16.to_le_bytes());
            idb.extend_from_slice(&0u16.to_le_bytes());
            idb.extend_from_slice(&(self.snaplen as u32).to_le_bytes());
            idb.extend_from_slice(&20u32.to_le_bytes());
            self.out.write_all(&shb)?;
            self.out.write_all(&idb)
        } else {
            // pcap header: µs, version 2.4, Ethernet.
            let mut head = Vec::with_capacity(24);
            head.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
            head.extend_from_slice(&2u16.to_le_bytes());
            head.extend_from_slice(&4u16.to_le_bytes());
            head.extend_from_slice(&[0; 8]);
            head.extend_from_slice(&(self.snaplen as u32).to_le_bytes());
            head.extend_from_slice(&1u32.to_le_bytes());
            self.out.write_all(&head)
        }
    }

    /// Puts VXLAN's outer headers in front of the frame built so far, for
    /// an inner frame of `inner_len` bytes on the wire; returns the outer
    /// wire length.
    fn wrap_vxlan(&mut self, inner_len: usize) -> usize {
        let mut outer = Vec::with_capacity(VXLAN_OUTER + self.frame.len());
        ethernet(&mut outer, None, 0x0800);
        ip(
            &mut outer,
            Addr::V4(VTEP_SRC),
            Addr::V4(VTEP_DST),
            17,
            16 + inner_len,
        );
        outer.extend_from_slice(&49_152u16.to_be_bytes());
        outer.extend_from_slice(&4789u16.to_be_bytes());
        outer.extend_from_slice(&((16 + inner_len) as u16).to_be_bytes());
        outer.extend_from_slice(&[0, 0]); // no UDP checksum, as VTEPs send
        outer.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 7, 0]); // VNI 7
        outer.extend_from_slice(&self.frame);
        self.frame = outer;
        VXLAN_OUTER + inner_len
    }

    fn record(&mut self, ts_us: u64, wire_len: usize) -> std::io::Result<()> {
        let wire_len = if self.vxlan {
            self.wrap_vxlan(wire_len)
        } else {
            wire_len
        };
        let cap = wire_len.min(self.snaplen);
        let headers = self.frame.len().min(cap);
        if self.pcapng {
            let padded = (cap + 3) & !3;
            let total = (32 + padded) as u32;
            let mut hdr = [0u8; 28];
            hdr[0..4].copy_from_slice(&6u32.to_le_bytes());
            hdr[4..8].copy_from_slice(&total.to_le_bytes());
            // interface 0 (bytes 8..12 stay zero)
            hdr[12..16].copy_from_slice(&((ts_us >> 32) as u32).to_le_bytes());
            hdr[16..20].copy_from_slice(&(ts_us as u32).to_le_bytes());
            hdr[20..24].copy_from_slice(&(cap as u32).to_le_bytes());
            hdr[24..28].copy_from_slice(&(wire_len as u32).to_le_bytes());
            self.out.write_all(&hdr)?;
            self.out.write_all(&self.frame[..headers])?;
            self.out.write_all(&PAYLOAD[..padded - headers])?;
            self.out.write_all(&total.to_le_bytes())
        } else {
            let mut hdr = [0u8; 16];
            hdr[0..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
            hdr[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
            hdr[8..12].copy_from_slice(&(cap as u32).to_le_bytes());
            hdr[12..16].copy_from_slice(&(wire_len as u32).to_le_bytes());
            self.out.write_all(&hdr)?;
            self.out.write_all(&self.frame[..headers])?;
            self.out.write_all(&PAYLOAD[..cap - headers])
        }
    }
}

/// Payload bytes after the headers: larger than any frame written.
static PAYLOAD: [u8; 9216] = {
    let mut p = [0u8; 9216];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    p
};

fn ethernet(f: &mut Vec<u8>, vlan: Option<u16>, ethertype: u16) {
    f.clear();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    if let Some(v) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Appends an IP header for `l4_len` bytes of `proto` payload.
fn ip(f: &mut Vec<u8>, src: Addr, dst: Addr, proto: u8, l4_len: usize) {
    match (src, dst) {
        (Addr::V4(s), Addr::V4(d)) => {
            let start = f.len();
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s);
            f.extend_from_slice(&d);
            let c = ipv4_checksum(&f[start..]);
            f[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
        }
        (Addr::V6(s), Addr::V6(d)) => {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s);
            f.extend_from_slice(&d);
        }
        _ => unreachable!("mixed address families"),
    }
}

/// Writes one TCP segment of `conn` from the client (`from_client`) or the
/// server, with `payload` bytes of data; returns the wire length.
fn tcp(f: &mut Vec<u8>, c: &Conn, from_client: bool, flags: u8, payload: usize) -> usize {
    let (src, dst, sp, dp, seq, ack) = if from_client {
        (c.client, c.server, c.cport, c.sport, c.cseq, c.sseq)
    } else {
        (c.server, c.client, c.sport, c.cport, c.sseq, c.cseq)
    };
    let ethertype = match src {
        Addr::V4(_) => 0x0800,
        Addr::V6(_) => 0x86dd,
    };
    // SYNs carry MSS, SACK-permitted, timestamps and window scale; the
    // rest carry timestamps.
    let opts: &[u8] = if flags & SYN != 0 {
        &[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ]
    } else {
        &[1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1]
    };
    let tcp_len = 20 + opts.len();
    ethernet(f, c.vlan, ethertype);
    ip(f, src, dst, 6, tcp_len + payload);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&if flags & ACK != 0 { ack } else { 0 }.to_be_bytes());
    f.extend_from_slice(&[((tcp_len / 4) as u8) << 4, flags]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum (unset), urgent
    f.extend_from_slice(opts);
    f.len() + payload
}

fn udp(f: &mut Vec<u8>, rng: &mut Rng) -> usize {
    let payload = 40;
    ethernet(f, None, 0x0800);
    ip(f, Addr::V4(node(rng)), Addr::V4(CENTRAL), 17, 8 + payload);
    f.extend_from_slice(&(50_000 + rng.below(10_000) as u16).to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.len() + payload
}

fn arp(f: &mut Vec<u8>, rng: &mut Rng) -> usize {
    ethernet(f, None, 0x0806);
    f[0..6].copy_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&node(rng));
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&CENTRAL);
    60 // padded to the Ethernet minimum
}

/// Emits the next segment of `c` and moves it on; returns the wire length.
fn step(f: &mut Vec<u8>, c: &mut Conn, rng: &mut Rng) -> usize {
    match c.stage {
        Stage::Syn => {
            c.stage = if c.refused { Stage::Rst } else { Stage::SynAck };
            tcp(f, c, true, SYN, 0)
        }
        Stage::SynAck => {
            c.cseq = c.cseq.wrapping_add(1);
            c.stage = Stage::Data(40 + rng.below(71) as u32);
            tcp(f, c, false, SYN | ACK, 0)
        }
        Stage::Rst => {
            c.cseq = c.cseq.wrapping_add(1);
            c.stage = Stage::Done;
            tcp(f, c, false, RST | ACK, 0)
        }
        Stage::Data(n) => {
            c.stage = if n <= 1 {
                Stage::ClientFin
            } else {
                Stage::Data(n - 1)
            };
            if n % 2 == 0 {
                // Server sends a full segment (one in 50 a jumbo frame);
                // the client ACKs it next.
                let len = if rng.below(50) == 0 { 8948 } else { 1448 };
                let w = tcp(f, c, false, ACK | PSH, len);
                c.sseq = c.sseq.wrapping_add(len as u32);
                w
            } else if n % 7 == 3 {
                // A short client request.
                let len = 200 + rng.below(300) as usize;
                let w = tcp(f, c, true, ACK | PSH, len);
                c.cseq = c.cseq.wrapping_add(len as u32);
                w
            } else {
                tcp(f, c, true, ACK, 0)
            }
        }
        Stage::ClientFin => {
            c.stage = Stage::ServerFin;
            let w = tcp(f, c, true, FIN | ACK, 0);
            c.cseq = c.cseq.wrapping_add(1);
            w
        }
        Stage::ServerFin => {
            c.stage = Stage::Done;
            tcp(f, c, false, FIN | ACK, 0)
        }
        Stage::Done => unreachable!("finished connections are replaced"),
    }
}

/// The scan `--flood` adds: SYNs to random node ports from 10.1.0.0/16,
/// answered later from a ring of pending attempts.
struct Flood {
    pending: Vec<Conn>,
    next: usize,
}

const FLOOD_PENDING: usize = 4096;

impl Flood {
    fn syn(&mut self, f: &mut Vec<u8>, rng: &mut Rng) -> usize {
        let r = rng.next();
        let client = Addr::V4([10, 1, (r >> 8) as u8, r as u8]);
        let server = Addr::V4(match (r >> 16) % 5 {
            0 => PROXY,
            1 => ENGINE1,
            2 => ENGINE2,
            3 => CENTRAL,
            _ => SCHEDULER,
        });
        let c = Conn {
            client,
            server,
            cport: 1024 + ((r >> 24) % 60000) as u16,
            sport: 1 + ((r >> 40) % 65535) as u16,
            vlan: None,
            stage: Stage::SynAck,
            refused: (r >> 56) % 3 == 0,
            cseq: (r >> 8) as u32,
            sseq: r as u32,
        };
        let w = tcp(f, &c, true, SYN, 0);
        if self.pending.len() < FLOOD_PENDING {
            self.pending.push(c);
        } else {
            self.pending[self.next] = c;
            self.next = (self.next + 1) % FLOOD_PENDING;
        }
        w
    }

    /// Answers a pending attempt (SYN-ACK, or RST when refused); `None`
    /// when none is pending.
    fn answer(&mut self, f: &mut Vec<u8>, rng: &mut Rng) -> Option<usize> {
        if self.pending.is_empty() {
            return None;
        }
        let i = rng.below(self.pending.len() as u64) as usize;
        let mut c = self.pending.swap_remove(i);
        self.next = self.next.min(self.pending.len().saturating_sub(1));
        c.cseq = c.cseq.wrapping_add(1);
        let flags = if c.refused { RST | ACK } else { SYN | ACK };
        Some(tcp(f, &c, false, flags, 0))
    }
}

/// Other systems' traffic (`--foreign`): connections between hosts
/// outside the site.
struct Foreign {
    conns: Vec<Conn>,
    serial: u64,
}

const FOREIGN_ACTIVE: usize = 5000;
const FOREIGN_HOSTS: u64 = 25;

impl Foreign {
    fn new(rng: &mut Rng) -> Self {
        let mut f = Foreign {
            conns: Vec::with_capacity(FOREIGN_ACTIVE),
            serial: 0,
        };
        // Open before the capture starts, somewhere in their data, as in
        // the steady state from the first packet: a connection is open at
        // a given instant in proportion to its length (hence the rejection).
        while f.conns.len() < FOREIGN_ACTIVE {
            let mut c = f.new_conn(rng);
            let n = u64::from(c.sseq & 0xff);
            if rng.below(160) >= n + 4 {
                continue;
            }
            c.stage = Stage::Data(1 + rng.below(n) as u32);
            f.conns.push(c);
        }
        f
    }

    fn new_conn(&mut self, rng: &mut Rng) -> Conn {
        self.serial += 1;
        let client = Addr::V4([172, 16, 1, 1 + rng.below(FOREIGN_HOSTS) as u8]);
        let server = Addr::V4([172, 16, 2, 1 + rng.below(FOREIGN_HOSTS) as u8]);
        let pick = rng.below(1000);
        let sport = match pick {
            0..=399 => 443,
            400..=464 => 80,
            465..=529 => 22,
            530..=594 => 5432,
            595..=659 => 6379,
            660..=724 => 8080,
            725..=789 => 9090,
            790..=919 => 3306,
            _ => 1024 + rng.below(64_512) as u16,
        };
        let refused = pick >= 984;
        let data = if rng.below(10) < 6 {
            2 + rng.below(19)
        } else {
            40 + rng.below(115)
        };
        Conn {
            client,
            server,
            cport: 1024 + (self.serial % 64_000) as u16,
            sport,
            vlan: None,
            stage: Stage::Syn,
            refused,
            cseq: rng.next() as u32,
            sseq: (rng.next() as u32 & !0xff) | data as u32,
        }
    }

    /// Emits the next segment of one of the open connections.
    fn next(&mut self, f: &mut Vec<u8>, rng: &mut Rng) -> usize {
        let i = rng.below(FOREIGN_ACTIVE as u64) as usize;
        let c = &mut self.conns[i];
        let wire = match c.stage {
            Stage::SynAck => {
                // The number of data segments rides in the low byte of the
                // server's initial sequence number.
                let n = c.sseq & 0xff;
                c.cseq = c.cseq.wrapping_add(1);
                c.stage = Stage::Data(n);
                tcp(f, c, false, SYN | ACK, 0)
            }
            Stage::Data(n) => {
                c.stage = if n <= 1 {
                    Stage::ClientFin
                } else {
                    Stage::Data(n - 1)
                };
                if n % 2 == 0 {
                    let len = if rng.below(5) != 0 {
                        1448
                    } else {
                        1 + rng.below(1447) as usize
                    };
                    let w = tcp(f, c, false, ACK | PSH, len);
                    c.sseq = c.sseq.wrapping_add(len as u32);
                    w
                } else if n % 7 == 3 {
                    let len = 200 + rng.below(300) as usize;
                    let w = tcp(f, c, true, ACK | PSH, len);
                    c.cseq = c.cseq.wrapping_add(len as u32);
                    w
                } else {
                    tcp(f, c, true, ACK, 0)
                }
            }
            _ => step(f, c, rng),
        };
        if self.conns[i].stage == Stage::Done {
            self.conns[i] = self.new_conn(rng);
        }
        wire
    }
}

/// What traffic the file holds.
#[derive(Clone, Copy, PartialEq)]
enum Traffic {
    Site,
    Foreign,
    /// One packet in ten the site's, the rest foreign.
    Mixed,
}

struct Options {
    path: String,
    packets: u64,
    seed: u64,
    snaplen: usize,
    flood: bool,
    pcapng: bool,
    vxlan: bool,
    traffic: Traffic,
}

fn run(o: &Options) -> std::io::Result<()> {
    let file = File::create(&o.path)?;
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        frame: Vec::with_capacity(256),
        snaplen: o.snaplen,
        pcapng: o.pcapng,
        vxlan: o.vxlan,
    };
    w.header()?;

    let mut rng = Rng(o.seed | 1);
    let port_base = o.seed.wrapping_mul(7919) % 28000;
    let mut serial = 0u64;
    let mut conns: Vec<Conn> = (0..ACTIVE)
        .map(|_| {
            serial += 1;
            new_conn(&mut rng, serial, port_base)
        })
        .collect();
    let mut flood = Flood {
        pending: Vec::with_capacity(FLOOD_PENDING),
        next: 0,
    };
    let mut foreign = (o.traffic != Traffic::Site).then(|| Foreign::new(&mut rng));
    let mut ts_us = START_SECS * 1_000_000;
    for _ in 0..o.packets {
        ts_us += 1 + rng.below(39);
        if let Some(foreign) = foreign.as_mut() {
            if o.traffic == Traffic::Foreign || rng.below(10) != 0 {
                let wire = foreign.next(&mut w.frame, &mut rng);
                w.record(ts_us, wire)?;
                continue;
            }
        }
        let pick = rng.below(1000);
        let scan = if !o.flood {
            None
        } else if pick >= 975 {
            Some(flood.syn(&mut w.frame, &mut rng))
        } else if pick >= 950 {
            flood.answer(&mut w.frame, &mut rng)
        } else {
            None
        };
        let wire = if let Some(wire) = scan {
            wire
        } else if pick < 10 {
            udp(&mut w.frame, &mut rng)
        } else if pick < 12 {
            arp(&mut w.frame, &mut rng)
        } else {
            let i = rng.below(ACTIVE as u64) as usize;
            let wire = step(&mut w.frame, &mut conns[i], &mut rng);
            if conns[i].stage == Stage::Done {
                serial += 1;
                conns[i] = new_conn(&mut rng, serial, port_base);
            }
            wire
        };
        w.record(ts_us, wire)?;
    }
    w.out.flush()
}

fn parse(args: &[String]) -> Option<Options> {
    let mut positional = Vec::new();
    let mut o = Options {
        path: String::new(),
        packets: 0,
        seed: 42,
        snaplen: DEFAULT_SNAPLEN,
        flood: false,
        pcapng: false,
        vxlan: false,
        traffic: Traffic::Site,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--snaplen" => o.snaplen = it.next()?.parse().ok().filter(|&n| n >= 64)?,
            "--flood" => o.flood = true,
            "--pcapng" => o.pcapng = true,
            "--vxlan" => o.vxlan = true,
            "--foreign" if o.traffic == Traffic::Site => o.traffic = Traffic::Foreign,
            "--mixed" if o.traffic == Traffic::Site => o.traffic = Traffic::Mixed,
            _ if a.starts_with("--") => return None,
            _ => positional.push(a),
        }
    }
    match positional.as_slice() {
        [path, packets, rest @ ..] if rest.len() <= 1 => {
            o.path = path.to_string();
            o.packets = packets.parse().ok()?;
            if let Some(seed) = rest.first() {
                o.seed = seed.parse().ok()?;
            }
            Some(o)
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print-filter") {
        println!("{}", print_filter(args.get(1).map(String::as_str)));
        return ExitCode::SUCCESS;
    }
    let Some(o) = parse(&args) else {
        eprintln!(
            "usage: make_bench_capture OUT PACKETS [SEED] [--snaplen N] [--flood] [--pcapng] [--vxlan] [--foreign | --mixed] | --print-filter [--vxlan]"
        );
        return ExitCode::from(2);
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {e}", o.path);
            ExitCode::from(2)
        }
    }
}

/// The filter tcpdump is given: the one `portwatch watch` installs for the
/// shape's control packets.
fn print_filter(opt: Option<&str>) -> String {
    use portwatch::source::live::{control_filter, tunnel_filter, TunnelPorts};
    match opt {
        Some("--vxlan") => {
            let vxlan = TunnelPorts {
                vxlan: vec![4789],
                other: Vec::new(),
            };
            tunnel_filter(&vxlan, &[]).swap_remove(0)
        }
        _ => control_filter().to_string(),
    }
}
