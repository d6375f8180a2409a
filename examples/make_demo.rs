//! Writes `fixtures/demo.pcap`: five minutes of TCP control traffic on the
//! bundled `multi-node` site, deterministic (no clock, no randomness), with a
//! few findings among the expected flows:
//!
//! * scheduler -> central:4242 (a required edge) is refused with RST,
//! * a user reaches engine1:4747 directly (unexpected: only proxies may),
//! * engine2 -> engine1:3389 (unexpected, a port outside the model),
//! * a user reaches central:4244 (local-only port),
//! * 192.0.2.99, outside the inventory, probes proxy:22 (unknown host).
//!
//! Run: `cargo run --example make_demo [OUT]` (default fixtures/demo.pcap).

use etherparse::PacketBuilder;

/// 2026-01-01T00:00:00Z.
const START: u64 = 1_767_225_600;
const SPAN_SECS: u64 = 300;

/// One connection to generate: client, server, port, answer, period (s), phase (s).
struct Flow {
    client: [u8; 4],
    server: [u8; 4],
    port: u16,
    answer: Answer,
    every: u64,
    phase: u64,
}

#[derive(Clone, Copy)]
enum Answer {
    /// SYN, SYN-ACK, ACK, then FIN/ACK both ways one second later.
    Established,
    /// SYN answered by RST/ACK.
    Refused,
}

const PROXY: [u8; 4] = [192, 0, 2, 11];
const ENGINE1: [u8; 4] = [192, 0, 2, 21];
const ENGINE2: [u8; 4] = [192, 0, 2, 22];
const CENTRAL: [u8; 4] = [192, 0, 2, 10];
const SCHEDULER: [u8; 4] = [192, 0, 2, 31];
const LICENSE: [u8; 4] = [203, 0, 113, 50];
const FILESHARE: [u8; 4] = [203, 0, 113, 20];
const UNKNOWN: [u8; 4] = [192, 0, 2, 99];

fn user(n: u8) -> [u8; 4] {
    [198, 51, 100, n]
}

fn flows() -> Vec<Flow> {
    use Answer::*;
    let f = |client, server, port, answer, every, phase| Flow {
        client,
        server,
        port,
        answer,
        every,
        phase,
    };
    let mut v = vec![
        // Expected traffic.
        f(PROXY, ENGINE1, 4747, Established, 15, 2),
        f(PROXY, ENGINE2, 4747, Established, 15, 9),
        f(PROXY, CENTRAL, 4242, Established, 30, 4),
        f(ENGINE1, CENTRAL, 4242, Established, 30, 6),
        f(ENGINE2, CENTRAL, 4242, Established, 30, 8),
        f(CENTRAL, PROXY, 4242, Established, 45, 10),
        f(CENTRAL, ENGINE1, 4242, Established, 45, 12),
        f(CENTRAL, ENGINE2, 4242, Established, 45, 14),
        f(CENTRAL, SCHEDULER, 4242, Established, 45, 16),
        f(PROXY, ENGINE1, 4242, Established, 60, 18),
        f(SCHEDULER, CENTRAL, 5050, Established, 20, 3),
        f(CENTRAL, SCHEDULER, 5151, Established, 20, 13),
        f(CENTRAL, PROXY, 4243, Established, 60, 20),
        f(PROXY, CENTRAL, 4432, Established, 60, 22),
        f(ENGINE1, CENTRAL, 4432, Established, 60, 24),
        f(ENGINE2, CENTRAL, 4432, Established, 60, 26),
        f(SCHEDULER, CENTRAL, 4432, Established, 60, 28),
        f(CENTRAL, LICENSE, 443, Established, 120, 30),
        f(CENTRAL, FILESHARE, 445, Established, 40, 5),
        f(ENGINE1, FILESHARE, 445, Established, 40, 15),
        f(ENGINE2, FILESHARE, 445, Established, 40, 25),
        // Findings.
        f(SCHEDULER, CENTRAL, 4242, Refused, 30, 7),
        f(user(77), ENGINE1, 4747, Established, 90, 40),
        f(ENGINE2, ENGINE1, 3389, Refused, 100, 55),
        f(user(50), CENTRAL, 4244, Refused, 150, 70),
        f(UNKNOWN, PROXY, 22, Refused, 120, 95),
    ];
    // Users browsing the hub through the proxy.
    for n in 10..30u8 {
        v.push(f(user(n), PROXY, 443, Established, 25, n as u64 % 25));
    }
    v
}

struct Pcap {
    out: Vec<u8>,
}

impl Pcap {
    fn new() -> Pcap {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        for w in [0u32, 0, 65_535, 1] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        Pcap { out }
    }

    fn record(&mut self, micros: u64, frame: &[u8]) {
        let secs = (micros / 1_000_000) as u32;
        let usecs = (micros % 1_000_000) as u32;
        for w in [secs, usecs, frame.len() as u32, frame.len() as u32] {
            self.out.extend_from_slice(&w.to_le_bytes());
        }
        self.out.extend_from_slice(frame);
    }
}

fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    SynAck,
    Ack,
    FinAck,
    RstAck,
}

#[allow(clippy::too_many_arguments)]
fn segment(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    seq: u32,
    ack: u32,
    flags: Flags,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_240);
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::SynAck => b.syn().ack(ack),
        Flags::Ack => b.ack(ack),
        Flags::FinAck => b.fin().ack(ack),
        Flags::RstAck => b.rst().ack(ack),
    };
    let mut v = Vec::with_capacity(b.size(0));
    b.write(&mut v, &[]).expect("writing to a Vec");
    v
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/demo.pcap".into());
    // (time in µs, frame) for every packet, then sorted by time.
    let mut packets: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    let mut next_port: u16 = 40_000;
    let mut order = 0u32;
    for flow in flows() {
        let mut t = flow.phase;
        while t < SPAN_SECS {
            let sport = next_port;
            next_port = if next_port >= 60_999 {
                40_000
            } else {
                next_port + 1
            };
            let base = (START + t) * 1_000_000 + (order as u64 % 997) * 100;
            let (c, s, p) = (flow.client, flow.server, flow.port);
            let (cseq, sseq) = (1_000 + order * 7, 50_000 + order * 11);
            let mut push = |dt: u64, frame: Vec<u8>| {
                packets.push((base + dt, order, frame));
            };
            push(0, segment(c, sport, s, p, cseq, 0, Flags::Syn));
            match flow.answer {
                Answer::Established => {
                    push(300, segment(s, p, c, sport, sseq, cseq + 1, Flags::SynAck));
                    push(600, segment(c, sport, s, p, cseq + 1, sseq + 1, Flags::Ack));
                    push(
                        1_000_000,
                        segment(c, sport, s, p, cseq + 1, sseq + 1, Flags::FinAck),
                    );
                    push(
                        1_000_300,
                        segment(s, p, c, sport, sseq + 1, cseq + 2, Flags::FinAck),
                    );
                    push(
                        1_000_600,
                        segment(c, sport, s, p, cseq + 2, sseq + 2, Flags::Ack),
                    );
                }
                Answer::Refused => {
                    push(300, segment(s, p, c, sport, 0, cseq + 1, Flags::RstAck));
                }
            }
            order += 1;
            t += flow.every;
        }
    }
    packets.sort_by_key(|(t, o, _)| (*t, *o));
    let mut pcap = Pcap::new();
    for (t, _, frame) in &packets {
        pcap.record(*t, frame);
    }
    std::fs::write(&out, &pcap.out).unwrap_or_else(|e| panic!("{out}: {e}"));
    eprintln!("{out}: {} packets, {} bytes", packets.len(), pcap.out.len());
}
