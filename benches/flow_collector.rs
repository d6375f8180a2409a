//! `run --flow-listen` over loopback: the recorded NetFlow v5 packet of
//! `../shared/sensors/netflow/akvorado_nfv5.pcap` (29 records) sent again
//! and again, each with the next sequence number, to a `portwatch run`
//! started for it; prints the records decoded per second and the drops.
//! Not a timed test: it never fails on speed.
//!
//! `cargo bench --bench flow_collector` (PACKETS=N, default 200000;
//! SYN=1 makes every TCP record a lone SYN of a new connection, so each
//! goes through the pipeline as an attempt too; RATE=N sends N records a
//! second, evenly, instead of as fast as the socket takes them: whether
//! the collector keeps up with a given rate is its drops at that rate,
//! not its records/s under a flood). The decoder alone, in
//! this process and without sockets, first: its records/s on the same
//! packets.
//!
//! `PCAP=FILE` writes the packets it would send (as Ethernet frames, one
//! every `29 / RATE` s, `RATE` 1000000 unless set) to a pcap file instead
//! and stops: an export capture for `portwatch replay` under a profiler.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PCAP_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;
const ETH_IP_UDP: usize = 42;
const V5_HEADER: usize = 24;
const V5_RECORD: usize = 48;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wait until `sent` records are due at `rate` a second since `start`:
/// sleeps for most of a wait, spins for the rest (a sleep overshoots).
fn pace(start: Instant, sent: u64, rate: u64) {
    let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > Duration::from_millis(2) {
            std::thread::sleep(due - now - Duration::from_millis(1));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// `portwatch_records_total{format="flow_export"}` by reason.
fn records(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("portwatch_records_total{") && l.contains("flow_export"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_string();
            let v = l.rsplit(' ').next()?.parse().ok()?;
            Some((reason, v))
        })
        .collect()
}

/// The packet as sent: sequence number `i * count`, and with `syn` every
/// record a lone SYN from its own client port.
fn prepare(packet: &mut [u8], count: u64, i: u64, syn: bool) {
    let seq = (i * count) as u32;
    packet[16..20].copy_from_slice(&seq.to_be_bytes());
    if syn {
        for r in 0..count as usize {
            let at = V5_HEADER + r * V5_RECORD;
            packet[at + 37] = 0x02;
            let port = (1024 + (i * count + r as u64) % 60_000) as u16;
            packet[at + 32..at + 34].copy_from_slice(&port.to_be_bytes());
        }
    }
}

/// `Collector::packet` on the same packets, in this process.
fn decoder_alone(packet: &[u8], count: u64, packets: u64, syn: bool) {
    use portwatch::source::flows::netflow::Collector;
    use portwatch::time::Timestamp;
    let mut p = packet.to_vec();
    let mut c = Collector::new();
    let mut out = Vec::new();
    let exporter = std::net::IpAddr::from([127, 0, 0, 1]);
    let start = Instant::now();
    for i in 0..packets {
        prepare(&mut p, count, i, syn);
        let now = Timestamp::from_secs_nanos(1_700_000_000 + i / 100_000, 0);
        c.packet(exporter, now, &p, &mut out);
        out.clear();
    }
    c.finish(&mut out);
    let t = start.elapsed().as_secs_f64();
    println!(
        "decoder alone, v5: {} records in {t:.2} s: {:.0} records/s ({} observations)",
        c.records,
        c.records as f64 / t,
        out.len()
    );
    // NetFlow v9: the data packet of the samples (4 records of 23 fields),
    // after its template.
    let template = sample_payload("akvorado_template.pcap");
    let data = sample_payload("akvorado_data.pcap");
    let mut c = Collector::new();
    c.packet(exporter, Timestamp::ZERO, &template, &mut out);
    let start = Instant::now();
    for _ in 0..packets {
        c.packet(exporter, Timestamp::ZERO, &data, &mut out);
        out.clear();
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "decoder alone, v9: {} records in {t:.2} s: {:.0} records/s",
        c.records,
        c.records as f64 / t
    );
}

/// The packets as a pcap file at `path`, `rate` records a second, each
/// behind the sample's own Ethernet, IPv4 and UDP headers.
fn write_pcap(path: &str, packet: &[u8], count: u64, packets: u64, syn: bool, rate: u64) {
    let frame = sample_frame("akvorado_nfv5.pcap");
    let mut p = packet.to_vec();
    let mut out =
        Vec::with_capacity(PCAP_HEADER + packets as usize * (RECORD_HEADER + frame.len()));
    out.extend_from_slice(&frame_file_header(&frame));
    let start_ns = 1_700_000_000u64 * 1_000_000_000;
    for i in 0..packets {
        prepare(&mut p, count, i, syn);
        let ns = start_ns + i * count * 1_000_000_000 / rate;
        let len = (ETH_IP_UDP + p.len()) as u32;
        out.extend_from_slice(&((ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame[PCAP_HEADER + RECORD_HEADER..][..ETH_IP_UDP]);
        out.extend_from_slice(&p);
    }
    std::fs::write(path, out).expect("the pcap written");
    println!(
        "wrote {packets} packets ({} records) to {path}",
        packets * count
    );
}

/// The sample's pcap file header (the first 24 bytes of `file`).
fn frame_file_header(file: &[u8]) -> [u8; PCAP_HEADER] {
    file[..PCAP_HEADER].try_into().expect("a pcap header")
}

/// A sample's file: pcap header, one record header, the frame.
fn sample_frame(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors/netflow")
        .join(name);
    std::fs::read(&p).expect("a netflow sample")
}

/// The UDP payload of a sample's single packet.
fn sample_payload(name: &str) -> Vec<u8> {
    let file = sample_frame(name);
    file[PCAP_HEADER + RECORD_HEADER + ETH_IP_UDP..].to_vec()
}

fn main() {
    let packets = env_u64("PACKETS", 200_000);
    let syn = env_u64("SYN", 0) == 1;
    let rate = env_u64("RATE", 0);
    let mut packet = sample_payload("akvorado_nfv5.pcap");
    let count = u64::from(u16::from_be_bytes([packet[2], packet[3]]));
    if let Ok(path) = std::env::var("PCAP") {
        let rate = if rate > 0 { rate } else { 1_000_000 };
        return write_pcap(&path, &packet, count, packets, syn, rate);
    }
    decoder_alone(&packet, count, packets, syn);
    let (udp, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_portwatch"))
        .args(["run", "--site", "multi-node", "--flow-listen"])
        .arg(format!("127.0.0.1:{udp}"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{http}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("portwatch runs");
    let up = Instant::now();
    while scrape(http).is_none() {
        assert!(up.elapsed() < Duration::from_secs(30), "portwatch not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tx = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let start = Instant::now();
    for i in 0..packets {
        prepare(&mut packet, count, i, syn);
        let _ = tx.send_to(&packet, ("127.0.0.1", udp));
        if rate > 0 {
            pace(start, (i + 1) * count, rate);
        }
    }
    let sent_in = start.elapsed();
    // Wait until the counts stop moving for a second.
    let (mut last, mut last_change) = (-1.0, Instant::now());
    let mut by_reason = Vec::new();
    while last_change.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        by_reason = records(&scrape(http).unwrap_or_default());
        // Reasons of records only: datagrams (the queue's, undeclared
        // exporters'), losses and the joins' evictions (their records are
        // counted `observed`) are counted apart.
        let total: f64 = (by_reason.iter())
            .filter(|(r, _)| {
                !["queue_full", "undeclared_exporter", "join_evicted"].contains(&r.as_str())
                    && !r.starts_with("lost_")
            })
            .map(|(_, v)| v)
            .sum();
        if total != last {
            last = total;
            last_change = Instant::now();
        }
    }
    let busy = last_change
        .duration_since(start)
        .saturating_sub(Duration::from_millis(100));
    let threads = thread_cpu(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let get = |name: &str| {
        (by_reason.iter())
            .find(|(r, _)| r == name)
            .map_or(0.0, |(_, v)| *v)
    };
    let sent = (packets * count) as f64;
    println!(
        "sent {packets} packets ({sent} records) in {:.2} s; decoded {last} records in {:.2} s: {:.0} records/s",
        sent_in.as_secs_f64(),
        busy.as_secs_f64(),
        last / busy.as_secs_f64()
    );
    println!(
        "drops: {} datagrams at the full queue, {} records lost by sequence gaps (queue and socket); {} records not settled yet (held for their other half, the joins at most {}, or not decoded)",
        get("queue_full"),
        get("lost_records"),
        sent - last - get("lost_records"),
        portwatch::source::flows::netflow::MAX_JOINS
    );
    println!("by reason: {by_reason:?}");
    // Whether it kept up on one core: the busiest thread's CPU time.
    let total: f64 = threads.iter().map(|(_, t)| t).sum();
    if let Some((name, t)) = threads.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        println!(
            "daemon CPU since start: {total:.2} s in all, busiest thread {name} {t:.2} s (of {:.2} s sending and draining)",
            busy.as_secs_f64()
        );
    }
}

/// Each thread of process `pid`: its name and CPU time (user + system,
/// seconds) from /proc; empty where /proc cannot be read.
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            // The name is in parentheses and may hold spaces.
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_string();
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
            Some((name, ticks / tick))
        })
        .collect()
}
