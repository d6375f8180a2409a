//! Evidence kept per connection: `replay --conn-log` on a capture of known
//! connections (each way of closing one) writes one ECS line per
//! connection with its close reason, outcome, span, control packets and
//! Community ID; `--write-findings` writes the packets of exactly the
//! connections behind the report's findings, within its cap.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::util::{bin, TempDir};

/// 2026-01-05T09:00:00Z.
const BASE_SECS: u64 = 1_767_603_600;
const PROXY: [u8; 4] = [192, 0, 2, 11];
const ENGINE1: [u8; 4] = [192, 0, 2, 21];
const ENGINE2: [u8; 4] = [192, 0, 2, 22];
/// A user's machine, outside the site.
const USER: [u8; 4] = [198, 51, 100, 77];

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// One packet: milliseconds after [`BASE_SECS`], from (address, port) to
/// (address, port), TCP flags, payload length.
type Pkt = (u64, ([u8; 4], u16), ([u8; 4], u16), u8, usize);

/// A connection of the capture and how the conn log must close it.
struct Known {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    close: &'static str,
    outcome: &'static str,
    verdict: &'static str,
    /// Control packets (SYN, SYN-ACK, FIN, RST) from client and server.
    controls: [u64; 2],
    packets: Vec<Pkt>,
}

/// A handshake at `t` ms, then `rest` (ms after `t`, from the client?,
/// flags, payload length).
fn conn(
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    t: u64,
    rest: &[(u64, bool, u8, usize)],
) -> Vec<Pkt> {
    let mut v = vec![
        (t, client, server, SYN, 0),
        (t + 1, server, client, SYN | ACK, 0),
        (t + 2, client, server, ACK, 0),
    ];
    for &(dt, from_client, flags, len) in rest {
        let (a, b) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        v.push((t + dt, a, b, flags, len));
    }
    v
}

/// The capture's connections: FIN, RST by the client, RST by the server,
/// refused, unanswered (a retried SYN), still open at the end, and two
/// findings (a user reaching an engine directly, engine to engine on RDP).
fn known() -> Vec<Known> {
    let k = |client, server, close, outcome, verdict, controls, packets| Known {
        client,
        server,
        close,
        outcome,
        verdict,
        controls,
        packets,
    };
    let data = |dt, from_client| (dt, from_client, ACK, 100);
    vec![
        k(
            (PROXY, 50001),
            (ENGINE1, 4747),
            "fin",
            "established",
            "expected",
            [2, 2],
            conn(
                (PROXY, 50001),
                (ENGINE1, 4747),
                1_000,
                &[
                    data(10, true),
                    data(20, false),
                    (30, true, FIN | ACK, 0),
                    (31, false, FIN | ACK, 0),
                    (32, true, ACK, 0),
                ],
            ),
        ),
        k(
            (PROXY, 50002),
            (ENGINE2, 4747),
            "rst_client",
            "established",
            "expected",
            [2, 1],
            conn(
                (PROXY, 50002),
                (ENGINE2, 4747),
                2_000,
                &[data(10, true), (20, true, RST, 0)],
            ),
        ),
        k(
            (PROXY, 50003),
            (ENGINE1, 4747),
            "rst_server",
            "established",
            "expected",
            [1, 2],
            conn(
                (PROXY, 50003),
                (ENGINE1, 4747),
                3_000,
                &[data(10, true), (20, false, RST | ACK, 0)],
            ),
        ),
        k(
            (PROXY, 50004),
            (ENGINE2, 4747),
            "rst_server",
            "refused",
            "expected",
            [1, 1],
            vec![
                (4_000, (PROXY, 50004), (ENGINE2, 4747), SYN, 0),
                (4_001, (ENGINE2, 4747), (PROXY, 50004), RST | ACK, 0),
            ],
        ),
        k(
            (PROXY, 50005),
            (ENGINE1, 4747),
            "syn_timeout",
            "unanswered",
            "expected",
            [2, 0],
            vec![
                (5_000, (PROXY, 50005), (ENGINE1, 4747), SYN, 0),
                (6_000, (PROXY, 50005), (ENGINE1, 4747), SYN, 0),
            ],
        ),
        k(
            (PROXY, 50006),
            (ENGINE2, 4747),
            "capture_end",
            "established",
            "expected",
            [1, 1],
            conn(
                (PROXY, 50006),
                (ENGINE2, 4747),
                7_000,
                &[data(13_000, true)],
            ),
        ),
        k(
            (USER, 50007),
            (ENGINE1, 4747),
            "fin",
            "established",
            "unexpected",
            [2, 2],
            conn(
                (USER, 50007),
                (ENGINE1, 4747),
                8_000,
                &[
                    data(10, true),
                    (20, false, FIN | ACK, 0),
                    (21, true, FIN | ACK, 0),
                ],
            ),
        ),
        k(
            (ENGINE2, 50008),
            (ENGINE1, 3389),
            "rst_server",
            "refused",
            "unexpected",
            [1, 1],
            vec![
                (9_000, (ENGINE2, 50008), (ENGINE1, 3389), SYN, 0),
                (9_001, (ENGINE1, 3389), (ENGINE2, 50008), RST | ACK, 0),
            ],
        ),
    ]
}

/// Every packet of `conns` in time order, as an Ethernet pcap.
fn pcap(conns: &[Known]) -> Vec<u8> {
    let mut pkts: Vec<Pkt> = conns.iter().flat_map(|c| c.packets.clone()).collect();
    pkts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for w in [0u32, 0, 262_144, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for (t, (sa, sp), (da, dp), flags, len) in pkts {
        let mut b =
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, sa[3]], [2, 0, 0, 0, 0, da[3]])
                .ipv4(sa, da, 64)
                // One sequence number per sender: a SYN sent again is a retransmission.
                .tcp(sp, dp, u32::from(sp) << 8, 64240);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        if flags & ACK != 0 {
            b = b.ack(1);
        }
        let mut frame = Vec::new();
        b.write(&mut frame, &vec![0x61; len]).unwrap();
        let (secs, usecs) = (BASE_SECS + t / 1000, (t % 1000) * 1000);
        for w in [
            secs as u32,
            usecs as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    out
}

/// Community ID v1 (seed 0) of a TCP flow, computed here from the
/// specification, independently of portwatch's own.
fn community_id(a: IpAddr, ap: u16, b: IpAddr, bp: u16) -> String {
    let bytes = |ip: IpAddr| match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let (mut x, mut y) = ((bytes(a), ap), (bytes(b), bp));
    if x > y {
        std::mem::swap(&mut x, &mut y);
    }
    let mut h = Sha1::new();
    h.update([0u8, 0]);
    h.update(&x.0);
    h.update(&y.0);
    h.update([6u8, 0]);
    h.update(x.1.to_be_bytes());
    h.update(y.1.to_be_bytes());
    let digest = h.finalize();
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The helper above reproduces the published TCP vectors.
fn check_community_id_helper() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/community-id/baseline_deflt.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        crate::util::skip(
            "community id vectors",
            &format!("{} is missing", path.display()),
        );
        return;
    };
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    let tcp: Vec<&Value> = vectors.iter().filter(|v| v["proto"] == 6).collect();
    assert!(!tcp.is_empty());
    for v in tcp {
        let ip = |k: &str| v[k].as_str().unwrap().parse::<IpAddr>().unwrap();
        let port = |k: &str| v[k].as_u64().unwrap() as u16;
        let got = community_id(ip("saddr"), port("sport"), ip("daddr"), port("dport"));
        assert_eq!(got, v["communityid"].as_str().unwrap(), "{v}");
    }
}

fn replay(args: &[&str]) -> std::process::Output {
    let o = Command::new(bin())
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// One conn log line per connection, each closed as it was: FIN, RST by
/// the client, RST by the server (open and refusing), SYN timeout, open
/// at the end of the capture; with its outcome, verdict, control packets
/// each way, span, Community ID, and the flow id of its connection line
/// in `--events`; every field an ECS field of its type.
#[test]
fn conn_log_has_one_line_per_connection_with_its_close_reason() {
    check_community_id_helper();
    let dir = TempDir::new("connlog");
    let conns = known();
    let cap = dir.0.join("known.pcap");
    std::fs::write(&cap, pcap(&conns)).unwrap();
    let (log, events) = (dir.0.join("conn.jsonl"), dir.0.join("events.jsonl"));
    let s = |p: &Path| p.display().to_string();
    replay(&[
        &s(&cap),
        "--site",
        "multi-node",
        "--format",
        "json",
        "--conn-log",
        &s(&log),
        "--events",
        &s(&events),
    ]);
    let text = std::fs::read_to_string(&log).unwrap();
    let docs = crate::events::check_ecs(&text);
    assert_eq!(docs.len(), conns.len(), "one line per connection:\n{text}");
    let attempts: BTreeMap<String, Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|d| d["event"]["action"] == "connection-attempt")
        .map(|d| (d["portwatch"]["flow_id"].as_str().unwrap().to_string(), d))
        .collect();
    for c in &conns {
        let (cip, sip) = (ip(c.client.0), ip(c.server.0));
        let d = docs
            .iter()
            .find(|d| d["source"]["port"] == c.client.1 && d["source"]["ip"] == cip.to_string())
            .unwrap_or_else(|| panic!("no line for {:?}:\n{text}", c.client));
        let pw = &d["portwatch"];
        assert_eq!(d["destination"]["ip"], sip.to_string(), "{d}");
        assert_eq!(d["destination"]["port"], c.server.1, "{d}");
        assert_eq!(pw["close"], c.close, "{d}");
        assert_eq!(pw["outcome"], c.outcome, "{d}");
        assert_eq!(pw["verdict"], c.verdict, "{d}");
        assert_eq!(pw["source_kind"], "packets", "{d}");
        assert_eq!(pw["control_packets"]["client"], c.controls[0], "{d}");
        assert_eq!(pw["control_packets"]["server"], c.controls[1], "{d}");
        assert_eq!(d["event"]["action"], "connection-end");
        assert_eq!(d["event"]["type"], serde_json::json!(["connection", "end"]));
        let want = community_id(cip, c.client.1, sip, c.server.1);
        assert_eq!(d["network"]["community_id"], want.as_str(), "{d}");
        // From the first SYN to the last packet the table saw (the SYN
        // timeout's: its last SYN; an open one's: its last control packet).
        let first = c.packets.first().unwrap().0;
        let last = c
            .packets
            .iter()
            .filter(|p| p.3 & (SYN | FIN | RST) != 0)
            .map(|p| p.0)
            .max()
            .unwrap();
        assert_eq!(d["event"]["duration"], (last - first) * 1_000_000, "{d}");
        let flow = pw["flow_id"].as_str().unwrap();
        let attempt = attempts
            .get(flow)
            .unwrap_or_else(|| panic!("no connection line has flow id {flow}"));
        assert_eq!(attempt["source"], d["source"]);
    }
}

/// A node's firewall log in `replay --conn-log`: one line per connection
/// the report counts, each the record's (`close: record`), with its node
/// as `portwatch.sensor` and no packet counts (a log has none).
#[test]
fn conn_log_of_a_firewall_log_has_a_line_per_connection_counted() {
    let dir = TempDir::new("connlog-records");
    let log = dir.0.join("conn.jsonl");
    let o = replay(&[
        "fixtures/nodelogs/engine1-pfirewall.log",
        "--site",
        "fixtures/nodelogs/site.yaml",
        "--format",
        "json",
        "--conn-log",
        &log.display().to_string(),
    ]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let counted: u64 = report["summary"]["connections"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let docs = crate::events::check_ecs(&std::fs::read_to_string(&log).unwrap());
    assert!(counted > 0);
    assert_eq!(docs.len() as u64, counted);
    for d in &docs {
        let pw = &d["portwatch"];
        assert_eq!(pw["close"], "record", "{d}");
        assert_eq!(pw["source_kind"], "firewall_log", "{d}");
        assert_eq!(pw["sensor"], "engine1", "{d}");
        assert!(pw.get("control_packets").is_none(), "{d}");
        assert!(["permitted", "denied"].contains(&pw["outcome"].as_str().unwrap()));
    }
}

/// A packet as tshark reads it: src, sport, dst, dport, SYN without ACK.
type Seen = (String, u16, String, u16, bool);

/// Each packet tshark reads from `file`.
fn tshark_packets(file: &Path) -> Option<Vec<Seen>> {
    let o = Command::new("tshark")
        .args(["-r", &file.display().to_string(), "-T", "fields"])
        .args([
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ])
        .args(["-e", "tcp.flags.syn", "-e", "tcp.flags.ack"])
        .output()
        .ok()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let flag = |s: &str| s == "1" || s == "True";
    Some(
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let syn = flag(f[4]) && !flag(f[5]);
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                    f[3].parse().unwrap(),
                    syn,
                )
            })
            .collect(),
    )
}

/// `replay` of a capture of `conns` on multi-node with `--write-findings`
/// and `extra`: the findings file's path and the run's output.
fn write_findings(
    dir: &TempDir,
    conns: &[Known],
    extra: &[&str],
) -> (std::path::PathBuf, std::process::Output) {
    let cap = dir.0.join("known.pcap");
    std::fs::write(&cap, pcap(conns)).unwrap();
    let out = dir.0.join("findings.pcap");
    let s = |p: &Path| p.display().to_string();
    let (cap_arg, out_arg) = (s(&cap), s(&out));
    let mut args = vec![
        cap_arg.as_str(),
        "--site",
        "multi-node",
        "--write-findings",
        out_arg.as_str(),
    ];
    args.extend_from_slice(extra);
    (out, replay(&args))
}

/// `--write-findings`: tshark finds in the file exactly the connections
/// that raised the report's findings (unexpected, refused and unanswered
/// expected edges), each from its SYN on with every packet the capture
/// has of it, and no packet of any other connection; their (client,
/// server, port) are the report's findings.
#[test]
fn write_findings_holds_exactly_the_findings_connections_from_their_syn() {
    let dir = TempDir::new("findings-pcap");
    let conns = known();
    let (out, o) = write_findings(&dir, &conns, &["--format", "json"]);
    let Some(pkts) = tshark_packets(&out) else {
        return crate::util::skip("write_findings", "tshark is not installed");
    };
    // The connections with a finding, by their client's port.
    let finding =
        |c: &Known| c.verdict != "expected" || ["refused", "unanswered"].contains(&c.outcome);
    let want: BTreeMap<u16, &Known> = conns
        .iter()
        .filter(|c| finding(c))
        .map(|c| (c.client.1, c))
        .collect();
    assert_eq!(want.len(), 4);
    let mut got: BTreeMap<u16, Vec<bool>> = BTreeMap::new();
    for (src, sport, dst, dport, syn) in &pkts {
        let c = conns
            .iter()
            .find(|c| {
                let (cip, sip) = (ip(c.client.0).to_string(), ip(c.server.0).to_string());
                (src, *sport, dst, *dport) == (&cip, c.client.1, &sip, c.server.1)
                    || (src, *sport, dst, *dport) == (&sip, c.server.1, &cip, c.client.1)
            })
            .unwrap_or_else(|| {
                panic!("a packet of no known connection: {src}:{sport} -> {dst}:{dport}")
            });
        got.entry(c.client.1).or_default().push(*syn);
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{pkts:?}"
    );
    for (port, syns) in &got {
        assert!(syns[0], "client port {port}: the first packet is its SYN");
        assert_eq!(
            syns.len(),
            want[port].packets.len(),
            "client port {port}: every packet"
        );
    }
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings: std::collections::BTreeSet<(String, String, u64)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] != "missing")
        .map(|f| {
            let a = |k: &str| f[k].as_str().unwrap().to_string();
            (a("src_addr"), a("dst_addr"), f["port"].as_u64().unwrap())
        })
        .collect();
    let written: std::collections::BTreeSet<(String, String, u64)> = want
        .values()
        .map(|c| {
            (
                ip(c.client.0).to_string(),
                ip(c.server.0).to_string(),
                u64::from(c.server.1),
            )
        })
        .collect();
    assert_eq!(findings, written);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let total: usize = want.values().map(|c| c.packets.len()).sum();
    assert!(
        stderr.contains(&format!(
            "{total} packet(s) of 4 connection(s) with findings written"
        )),
        "{stderr}"
    );
}

/// `--write-findings-max`: the file stops at the cap (a whole packet
/// short of it at most), tshark reads it, and the packets left out are
/// counted on stderr.
#[test]
fn write_findings_stops_at_its_cap_and_counts_the_rest() {
    let dir = TempDir::new("findings-cap");
    let (out, o) = write_findings(&dir, &known(), &["--write-findings-max", "500"]);
    let len = std::fs::metadata(&out).unwrap().len();
    assert!(len <= 500 && len > 24, "{len} bytes");
    let Some(pkts) = tshark_packets(&out) else {
        return crate::util::skip("write_findings_cap", "tshark is not installed");
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    let total = 12;
    let not = format!("{} not written past the 500-byte cap", total - pkts.len());
    assert!(!pkts.is_empty() && pkts.len() < total, "{}", pkts.len());
    assert!(stderr.contains(&not), "{not}: {stderr}");
}

/// A `--write-findings` file that cannot be written (`/dev/full`): the
/// report is still printed, the error names the file, and the exit status
/// is 4, as for an event log that could not be written.
#[test]
fn write_findings_write_errors_exit_4() {
    if !Path::new("/dev/full").exists() {
        return crate::util::skip("write_findings_write_errors", "no /dev/full");
    }
    let dir = TempDir::new("findings-full");
    let cap = dir.0.join("known.pcap");
    std::fs::write(&cap, pcap(&known())).unwrap();
    let o = Command::new(bin())
        .arg("replay")
        .arg(&cap)
        .args(["--site", "multi-node", "--format", "json"])
        .args(["--write-findings", "/dev/full"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("error: --write-findings incomplete: /dev/full: "),
        "{stderr}"
    );
    assert!(stderr.contains("writing failed ("), "{stderr}");
    let report: Value = serde_json::from_slice(&o.stdout).expect("the report, printed");
    assert!(report["findings"].as_array().is_some_and(|f| !f.is_empty()));
}

/// `run --write-findings` on a full disk (`/dev/full`): the packets lost
/// are counted in a metric by reason (a closed set), as the event log's
/// lines are, and capture goes on.
#[test]
fn run_counts_the_findings_packets_it_could_not_write() {
    if !Path::new("/dev/full").exists() {
        return crate::util::skip("write_findings_metric", "no /dev/full");
    }
    let args = crate::util::demo_run("100", &["--write-findings", "/dev/full"]);
    let mut d = crate::util::Daemon::start(&args);
    let lost = |m: &str, why: &str| {
        crate::util::sample(
            m,
            &format!("portwatch_findings_packets_not_written_total{{reason=\"{why}\"}}"),
        )
    };
    let m = d.wait_metrics("findings' packets not written", |m| {
        lost(m, "write_error").is_some_and(|v| v > 0.0)
    });
    assert_eq!(lost(&m, "over_cap"), Some(0.0), "{m}");
    assert_eq!(lost(&m, "other_link_type"), Some(0.0), "{m}");
    assert_eq!(d.get("/-/ready").map(|r| r.0), Some(200));
    d.signal("TERM");
    let (_, _, err) = d.wait_exit();
    assert!(err.contains("--write-findings incomplete"), "{err}");
}
