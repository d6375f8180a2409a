//! NetFlow v5, v9 and IPFIX from a real exporter: softflowd reads each scenario fixture and
//! exports it in v5, v9 and IPFIX to `run --flow-listen`: the same
//! unexpected, local-only and unknown-host findings as `replay` of the
//! fixture, and per flow row the outcomes the fidelity table allows, each
//! difference named in [`DIFFERENCES`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::golden::replay_fixture;
use crate::prereq::needs;
use crate::util::{bin, closing_summary, fixture, poll_until, sample, tshark, Daemon, TempDir};

/// Where softflowd's export differs from the capture, per flow row:
/// (capture's outcomes, export's outcomes, why). None on these scenarios:
/// each connection's SYN, and its SYN-ACK or RST, are in the records'
/// flags. A difference that appears must be named here, and an entry that
/// no longer appears must go (the test checks both).
const DIFFERENCES: &[(&str, &str, &str)] = &[];

const SCENARIOS: [&str; 5] = [
    "verdict-unexpected.pcap",
    "verdict-local-only.pcap",
    "verdict-unknown-host.pcap",
    "blocked-refused.pcap",
    "blocked-unanswered.pcap",
];

const FINDING_KINDS: [&str; 3] = ["unexpected", "local_only", "unknown_host"];

fn finding_set(r: &Value) -> BTreeSet<String> {
    r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| FINDING_KINDS.iter().any(|k| f["kind"] == *k))
        .map(|f| format!("{} {}->{}:{}", f["kind"], f["src"], f["dst"], f["port"]))
        .collect()
}

/// Per flow row (src, dst, port): its non-zero outcomes.
fn rows(r: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for f in r["flows"].as_array().expect("flows") {
        let key = format!("{}->{}:{}", f["src"], f["dst"], f["port"]);
        let outcomes: BTreeSet<String> = (f["outcomes"].as_object().expect("outcomes"))
            .iter()
            .filter(|(_, n)| n.as_u64() > Some(0))
            .map(|(o, _)| o.clone())
            .collect();
        out.insert(key, outcomes);
    }
    out
}

/// `run --site <site> --flow-listen 127.0.0.1:<port> <extra>`, serving: its
/// UDP sockets are bound before its metrics answer.
fn flow_daemon(site: &str, port: u16, extra: &[&str]) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["run", "--site", site, "--flow-listen", &listen];
    args.extend_from_slice(extra);
    let mut d = Daemon::start(&args);
    d.wait_metrics("the daemon up", |m| m.contains("portwatch_build_info"));
    d
}

pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// softflowd reads `pcap` and exports version `v` to `port`; its flows are
/// expired (sent) through its control socket once it has read the file.
pub(crate) fn softflowd(dir: &Path, pcap: &Path, port: u16, v: &str) {
    softflowd_with(dir, pcap, port, v, &[]);
}

/// [`softflowd`] with `extra` arguments.
fn softflowd_with(dir: &Path, pcap: &Path, port: u16, v: &str, extra: &[&str]) {
    let ctl = dir.join(format!("softflowd-{v}.ctl"));
    let pid = dir.join(format!("softflowd-{v}.pid"));
    let mut child = Command::new("softflowd")
        .args(["-d", "-r"])
        .arg(pcap)
        .args(["-n", &format!("127.0.0.1:{port}"), "-v", v])
        .args(extra)
        .arg("-p")
        .arg(&pid)
        .arg("-c")
        .arg(&ctl)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("softflowd runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut expired = false;
    while !expired {
        assert!(Instant::now() < deadline, "softflowd: no flow expired");
        std::thread::sleep(Duration::from_millis(200));
        if !ctl.exists() {
            continue;
        }
        let out = Command::new("softflowctl")
            .arg("-c")
            .arg(&ctl)
            .arg("expire-all")
            .output()
            .expect("softflowctl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        expired = text.contains("Expired") && !text.contains("Expired 0 flows");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = Command::new("softflowctl")
                .arg("-c")
                .arg(&ctl)
                .arg("shutdown")
                .output();
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A lossy network between an exporter and the collector: each datagram
/// sent to `port` goes on to the collector's port, but the `drop`-th (from
/// 0). Stop it once the exporter is done.
pub(crate) struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

impl Relay {
    pub(crate) fn start(to: u16, drop: usize) -> Relay {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if seen.len() != drop {
                            sock.send_to(&buf[..n], ("127.0.0.1", to)).unwrap();
                        }
                        seen.push(buf[..n].to_vec());
                    }
                    // Idle: what was sent before the stop has been relayed.
                    Err(_) if stopped.load(Ordering::Relaxed) => return seen,
                    Err(_) => {}
                }
            }
        });
        Relay {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Every datagram the exporter sent, the dropped one too.
    pub(crate) fn stop(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The data records of each IPFIX message, by the lengths its templates
/// give (fixed-length fields, as softflowd's).
pub(crate) fn ipfix_records(messages: &[Vec<u8>]) -> Vec<usize> {
    let be16 = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    let mut lens: BTreeMap<usize, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for m in messages {
        assert_eq!(be16(m, 0), 10, "IPFIX");
        let (mut at, end, mut n) = (16, be16(m, 2), 0);
        while at + 4 <= end {
            let (id, len) = (be16(m, at), be16(m, at + 2));
            let body = &m[at + 4..at + len];
            if id == 2 || id == 3 {
                let mut t = 0;
                while t + 4 <= body.len() {
                    let (tid, fields) = (be16(body, t), be16(body, t + 2));
                    t += if id == 3 { 6 } else { 4 };
                    let mut rec = 0;
                    for _ in 0..fields {
                        rec += be16(body, t + 2);
                        t += if body[t] & 0x80 != 0 { 8 } else { 4 };
                    }
                    lens.insert(tid, rec);
                }
            } else if id >= 256 {
                n += body.len() / lens[&id];
            }
            at += len;
        }
        out.push(n);
    }
    out
}

#[test]
fn softflowd_exports_of_each_scenario_give_the_captures_findings() {
    if !needs(
        "netflow::softflowd_exports",
        false,
        &["softflowd", "softflowctl"],
    ) {
        return;
    }
    let dir = TempDir::new("netflow-softflowd");
    let mut differences: BTreeSet<(String, String)> = BTreeSet::new();
    for file in SCENARIOS {
        let (e, pcap_run) = replay_fixture(file);
        let want = pcap_run.json();
        for v in ["5", "9", "10"] {
            let port = free_udp_port();
            let mut d = flow_daemon(&e.site, port, &["--format", "json"]);
            softflowd(&dir.0, &fixture(file), port, v);
            d.wait_metrics("the exported records", |m| {
                sample(
                    m,
                    r#"portwatch_records_total{format="flow_export",node="unknown",reason="observed"}"#,
                )
                .is_some()
            });
            // The other direction's record may wait out the join.
            std::thread::sleep(Duration::from_millis(300));
            d.signal("TERM");
            let (status, _, stderr) = d.wait_exit();
            assert!(status.success(), "{file} v{v}: {stderr}");
            let got = closing_summary(&stderr);
            assert_eq!(
                finding_set(&got),
                finding_set(&want),
                "{file} exported as v{v}"
            );
            let (a, b) = (rows(&want), rows(&got));
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{file} v{v}: flow rows"
            );
            for (k, outs) in &a {
                let theirs = &b[k];
                if outs == theirs {
                    continue;
                }
                let pair = (
                    outs.iter().cloned().collect::<Vec<_>>().join("+"),
                    theirs.iter().cloned().collect::<Vec<_>>().join("+"),
                );
                assert!(
                    DIFFERENCES
                        .iter()
                        .any(|(c, x, _)| (*c, *x) == (pair.0.as_str(), pair.1.as_str())),
                    "{file} v{v} {k}: capture {} export {}: not in DIFFERENCES",
                    pair.0,
                    pair.1
                );
                differences.insert(pair);
            }
        }
    }
    let named: BTreeSet<(String, String)> = (DIFFERENCES.iter())
        .map(|(c, x, _)| (c.to_string(), x.to_string()))
        .collect();
    assert_eq!(differences, named, "DIFFERENCES names exactly those seen");
}

/// The multi-node site with two short required edges: engine2 -> central
/// (4242) and proxy -> engine1 (4747), neither in the scenario's traffic;
/// `exporters` appended as given.
fn coverage_site(dir: &Path, exporters: &str) -> String {
    let base = std::fs::read_to_string(crate::golden::root().join("deploy/sites/multi-node.yaml"))
        .expect("the multi-node site");
    let text = format!(
        "{base}overrides:\n  - from: engine2\n    to: central\n    port: 4242\n    window: 1s\n  \
         - from: proxy\n    to: engine1\n    port: 4747\n    required: true\n    window: 1s\n{exporters}"
    );
    let path = dir.join(format!("site-{}.yaml", exporters.len()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The state of each judged edge `src->dst:port` in a report.
fn edge_states(r: &Value) -> BTreeMap<String, String> {
    (r["edges"].as_array().expect("edges").iter())
        .map(|e| {
            let k = format!("{}->{}:{}", e["src"], e["dst"], e["port"]).replace('"', "");
            (k, e["state"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// tcpdump writing the UDP datagrams to a loopback port into a capture.
struct Tcpdump(std::process::Child);

impl Tcpdump {
    /// Capturing once this returns.
    fn start(path: &Path, port: u16) -> Tcpdump {
        use std::io::BufRead;
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "-w"])
            .arg(path)
            .args(["udp", "dst", "port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump runs");
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let n = err.read_line(&mut line).unwrap();
            assert!(n > 0, "tcpdump ended before capturing");
        }
        // Drained, so that its closing lines find a reader.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Tcpdump(child)
    }

    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let killed = Command::new("kill").args(["-INT", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "tcpdump stopped");
        self.0.wait().unwrap();
    }
}

/// softflowd exports `verdict-unexpected.pcap` (corp-users, proxy and
/// engine1 only) as v9 to a `run --flow-listen` of `site` (the datagrams
/// captured into `capture` when given); the closing report and the last
/// metrics.
fn export_scenario(dir: &Path, site: &str, capture: Option<&Path>) -> (Value, String) {
    let port = free_udp_port();
    let tcpdump = capture.map(|path| Tcpdump::start(path, port));
    let mut d = flow_daemon(site, port, &["--format", "json"]);
    softflowd(dir, &fixture("verdict-unexpected.pcap"), port, "9");
    let m = d.wait_metrics("the exported records", |m| {
        sample(
            m,
            r#"portwatch_records_total{format="flow_export",node="unknown",reason="observed"}"#,
        )
        .is_some()
    });
    // Longer than the 1 s windows, and the join.
    std::thread::sleep(Duration::from_millis(1500));
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    if let Some(t) = tcpdump {
        t.stop();
    }
    (closing_summary(&stderr), m)
}

/// A declared exporter covers exactly what the site says: a required edge
/// between its nodes that no record shows is `missing`; one between nodes
/// outside its coverage is not judged, though its records carry those
/// nodes. Undeclared, the same exporter covers the nodes its records carry
/// (and is counted as undeclared).
#[test]
fn a_declared_exporter_covers_what_the_site_says() {
    if !needs(
        "netflow::declared_exporter",
        false,
        &["softflowd", "softflowctl"],
    ) {
        return;
    }
    let dir = TempDir::new("netflow-coverage");
    let declared = coverage_site(
        &dir.0,
        "exporters:\n  - name: core-switch\n    address: 127.0.0.1\n    covers: [engine2, central]\n",
    );
    let (r, m) = export_scenario(&dir.0, &declared, None);
    let states = edge_states(&r);
    assert_eq!(
        states.get("engine2->central:4242").map(String::as_str),
        Some("missing"),
        "{states:?}"
    );
    assert_eq!(states.get("proxy->engine1:4747"), None, "{states:?}");
    assert_eq!(
        sample(
            &m,
            r#"portwatch_records_total{format="flow_export",node="unknown",reason="undeclared_exporter"}"#
        ),
        None
    );

    let undeclared = coverage_site(&dir.0, "");
    let (r, m) = export_scenario(&dir.0, &undeclared, None);
    let states = edge_states(&r);
    assert_eq!(
        states.get("proxy->engine1:4747").map(String::as_str),
        Some("missing"),
        "{states:?}"
    );
    assert_eq!(states.get("engine2->central:4242"), None, "{states:?}");
    assert!(
        sample(
            &m,
            r#"portwatch_records_total{format="flow_export",node="unknown",reason="undeclared_exporter"}"#
        )
        .is_some_and(|n| n > 0.0),
        "{m}"
    );
}

/// `replay` of a capture of the export datagrams covers as `run
/// --flow-listen` does: the declared exporter covers engine2 and central,
/// so the required edge proxy -> engine1, which its records carry, is
/// `not_observed` (an undeclared exporter's records would make it
/// `missing`), and every edge run judged has the same state.
#[test]
fn replay_of_an_export_capture_covers_as_the_site_declares() {
    if !needs(
        "netflow::replay_export_capture",
        true,
        &["softflowd", "softflowctl", "tcpdump"],
    ) {
        return;
    }
    let dir = TempDir::new("netflow-replay-cover");
    let declared = coverage_site(
        &dir.0,
        "exporters:\n  - name: core-switch\n    address: 127.0.0.1\n    covers: [engine2, central]\n",
    );
    let pcap = dir.0.join("export.pcap");
    let (r, _) = export_scenario(&dir.0, &declared, Some(&pcap));
    let run = edge_states(&r);
    let replay_states = |site: &str| {
        let out = Command::new(bin())
            .args(["replay", "--format", "json", "--site", site])
            .arg(&pcap)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
        let r: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert_eq!(
            r["capture"]["sources"][0]["format"], "netflow-ipfix-capture",
            "{r}"
        );
        edge_states(&r)
    };
    let replayed = replay_states(&declared);
    assert_eq!(
        replayed.get("proxy->engine1:4747").map(String::as_str),
        Some("not_observed"),
        "{replayed:?}"
    );
    assert_eq!(run.get("proxy->engine1:4747"), None, "{run:?}");
    for (edge, state) in &run {
        assert_eq!(replayed.get(edge), Some(state), "{edge}: {replayed:?}");
    }
    // Undeclared, the same records cover the nodes they carry.
    let undeclared = replay_states(&coverage_site(&dir.0, ""));
    assert_eq!(
        undeclared.get("proxy->engine1:4747").map(String::as_str),
        Some("missing"),
        "{undeclared:?}"
    );
}

/// A NetFlow v5 export packet: sequence `seq`, one UDP record (counted
/// `not_tcp`, no observation).
fn v5_packet(seq: u32) -> Vec<u8> {
    let mut r = [0u8; 48];
    r[0..4].copy_from_slice(&[192, 0, 2, 22]);
    r[4..8].copy_from_slice(&[192, 0, 2, 10]);
    r[32..34].copy_from_slice(&5353u16.to_be_bytes());
    r[34..36].copy_from_slice(&53u16.to_be_bytes());
    r[38] = 17;
    v5_datagram(seq, 1_700_000_000_000, &r)
}

/// A NetFlow v5 export packet of one record: sequence `seq`, sent at
/// `unix_ms`, its router up for 60 s.
fn v5_datagram(seq: u32, unix_ms: u64, record: &[u8; 48]) -> Vec<u8> {
    let secs = u32::try_from(unix_ms / 1000).unwrap();
    let nanos = u32::try_from(unix_ms % 1000 * 1_000_000).unwrap();
    let mut b = Vec::with_capacity(24 + 48);
    b.extend_from_slice(&5u16.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes()); // records
    b.extend_from_slice(&60_000u32.to_be_bytes()); // uptime, ms
    b.extend_from_slice(&secs.to_be_bytes());
    b.extend_from_slice(&nanos.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&[0; 4]); // engine type and id, sampling
    b.extend_from_slice(record);
    b
}

/// A NetFlow v9 export packet of source id `source`: sequence `seq`, one
/// template and no data.
fn v9_packet(seq: u32, source: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&9u16.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes()); // records in the packet
    b.extend_from_slice(&60_000u32.to_be_bytes());
    b.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&source.to_be_bytes());
    // Template flowset: id 0, length 12; template 256 of one field
    // (sourceIPv4Address, 4 bytes).
    for w in [0u16, 12, 256, 1, 8, 4] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b
}

/// Sequence gaps show up under the exporter's name in the site: a v5
/// exporter skipping 4 records and a v9 observation domain of the same
/// address skipping 2 packets, each counted under its own declaration;
/// nothing under `undeclared`; the closing report lists the same.
#[test]
fn a_sequence_gap_is_counted_under_the_exporters_declared_name() {
    let dir = TempDir::new("netflow-lost");
    let site = coverage_site(
        &dir.0,
        "exporters:\n  - name: edge-v5\n    address: 127.0.0.1\n    covers: [proxy]\n  \
         - name: core-v9\n    address: 127.0.0.1\n    observation_domain: 7\n    covers: [engine2]\n",
    );
    let port = free_udp_port();
    let mut d = flow_daemon(&site, port, &["--format", "json"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{port}");
    // v5 counts records: 0 (1 record), then 5: 4 lost. v9 counts packets:
    // 10, then 13: 2 lost.
    for p in [
        v5_packet(0),
        v9_packet(10, 7),
        v5_packet(5),
        v9_packet(13, 7),
    ] {
        sock.send_to(&p, &to).unwrap();
    }
    let lost = |m: &str, what: &str, name: &str| {
        sample(
            m,
            &format!("portwatch_flow_export_{what}_total{{exporter=\"{name}\"}}"),
        )
    };
    let m = d.wait_metrics("both gaps counted", |m| {
        lost(m, "lost_records", "edge-v5").is_some_and(|n| n > 0.0)
            && lost(m, "lost_packets", "core-v9").is_some_and(|n| n > 0.0)
    });
    assert_eq!(lost(&m, "lost_records", "edge-v5"), Some(4.0), "{m}");
    assert_eq!(lost(&m, "lost_packets", "edge-v5"), Some(0.0), "{m}");
    assert_eq!(lost(&m, "lost_packets", "core-v9"), Some(2.0), "{m}");
    assert_eq!(lost(&m, "lost_records", "core-v9"), Some(0.0), "{m}");
    assert_eq!(lost(&m, "datagrams", "edge-v5"), Some(2.0), "{m}");
    assert_eq!(lost(&m, "datagrams", "core-v9"), Some(2.0), "{m}");
    assert_eq!(lost(&m, "datagrams", "undeclared"), Some(0.0), "{m}");
    assert!(
        !m.contains("exporter=\"127.0.0.1\""),
        "an address as a label: {m}"
    );
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    // The closing report lists them as replay of a capture of them does.
    let r = closing_summary(&stderr);
    assert_eq!(
        r["capture"]["sources"][0]["exporters"],
        serde_json::json!([
            {"name": "edge-v5", "datagrams": 2, "lost_records": 4, "lost_packets": 0},
            {"name": "core-v9", "datagrams": 2, "lost_records": 0, "lost_packets": 2},
            {"name": "undeclared", "datagrams": 0, "lost_records": 0, "lost_packets": 0},
        ]),
        "{r}"
    );
}

/// softflowd -v 10 numbers each IPFIX message by the flow records through
/// it (RFC 7011: before it), so every message whose count differs from the
/// one before looked like lost records. Of demo.pcap (messages of 24, 32,
/// ..., 6 records) under the exporter's declared name: nothing lost, the
/// rule recognised; with the third datagram dropped on the way, that
/// message's records lost, no more.
#[test]
fn softflowd_ipfix_loses_no_records_unless_a_datagram_is_dropped() {
    if !needs(
        "netflow::softflowd_ipfix_sequence",
        false,
        &["softflowd", "softflowctl"],
    ) {
        return;
    }
    let dir = TempDir::new("netflow-ipfix-seq");
    let site = coverage_site(
        &dir.0,
        "exporters:\n  - name: core-switch\n    address: 127.0.0.1\n    covers: [engine2]\n",
    );
    for drop in [None, Some(2)] {
        let port = free_udp_port();
        let mut d = flow_daemon(&site, port, &[]);
        let relay = Relay::start(port, drop.unwrap_or(usize::MAX));
        softflowd(&dir.0, &fixture("demo.pcap"), relay.port, "10");
        let sent = relay.stop();
        let records = ipfix_records(&sent);
        assert!(records.len() > 4, "{records:?}");
        let delivered = sent.len() - usize::from(drop.is_some());
        let m = d.wait_metrics("every datagram counted", |m| {
            sample(
                m,
                r#"portwatch_flow_export_datagrams_total{exporter="core-switch"}"#,
            ) == Some(delivered as f64)
        });
        let lost = sample(
            &m,
            r#"portwatch_flow_export_lost_records_total{exporter="core-switch"}"#,
        );
        let want = drop.map_or(0, |i| records[i]);
        assert_eq!(
            lost,
            Some(want as f64),
            "dropped {drop:?} of {records:?}: {m}"
        );
        assert_eq!(
            sample(
                &m,
                r#"portwatch_records_total{format="flow_export",node="unknown",reason="sequence_rule_switched"}"#
            ),
            Some(1.0),
            "{m}"
        );
        d.signal("TERM");
        let (status, _, stderr) = d.wait_exit();
        assert!(status.success(), "{stderr}");
        assert!(
            stderr.contains("numbers its messages by another rule"),
            "{stderr}"
        );
    }
}

/// Whether `watch` printed a line for the report finding `f`: its kind,
/// `SRC (addr) -> DST (addr:PORT)`.
fn printed(lines: &str, f: &Value) -> bool {
    let s = |k: &str| {
        f[k].as_str()
            .map(str::to_string)
            .unwrap_or(f[k].to_string())
    };
    let (kind, src, dst, port) = (s("kind"), s("src"), s("dst"), s("port"));
    lines.lines().any(|l| {
        let mut w = l.split_whitespace().skip(1);
        w.next() == Some(kind.as_str())
            && w.next() == Some(src.as_str())
            && l.contains(&format!(" -> {dst} ("))
            && l.contains(&format!(":{port}) "))
    })
}

/// `watch --flow-listen` is the same collector as `run`'s: softflowd
/// exports each verdict scenario (IPFIX) to it on loopback, and it prints
/// a line for every unexpected, local-only and unknown-host finding
/// `replay` of the capture reports, no other such line, and closes with
/// the same findings.
#[test]
fn watch_flow_listen_prints_the_exported_findings() {
    if !needs(
        "netflow::watch_flow_listen",
        false,
        &["softflowd", "softflowctl"],
    ) {
        return;
    }
    let dir = TempDir::new("netflow-watch");
    for file in [
        "verdict-unexpected.pcap",
        "verdict-local-only.pcap",
        "verdict-unknown-host.pcap",
    ] {
        let (e, pcap_run) = replay_fixture(file);
        let want = pcap_run.json();
        let wanted: Vec<&Value> = (want["findings"].as_array().expect("findings").iter())
            .filter(|f| FINDING_KINDS.iter().any(|k| f["kind"] == *k))
            .collect();
        assert!(!wanted.is_empty(), "{file}: no finding to print");
        let port = free_udp_port();
        let out = dir.0.join(format!("{file}.stdout"));
        let err = dir.0.join(format!("{file}.stderr"));
        let mut child = Command::new(bin())
            .args([
                "watch",
                "--site",
                &e.site,
                "--format",
                "json",
                "--flow-listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        // Bound before it logs that it captures; softflowd's first
        // datagram would be lost to a socket not yet there.
        poll_until("watch capturing", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{file}: watch exited ({status}) before capturing");
            }
            std::fs::read_to_string(&err).is_ok_and(|t| t.contains("capturing"))
        });
        softflowd(&dir.0, &fixture(file), port, "10");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if wanted.iter().all(|f| printed(&text, f)) || Instant::now() > deadline {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{file}: watch exited ({status}) before printing");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The other direction's record may wait out the join.
        std::thread::sleep(Duration::from_millis(300));
        let stopped = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(&err).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        for f in &wanted {
            assert!(
                printed(&text, f),
                "{file}: not printed: {f}\n{text}\n{stderr}"
            );
        }
        for l in text.lines() {
            let kind = l.split_whitespace().nth(1).unwrap_or_default();
            if FINDING_KINDS.contains(&kind) {
                assert!(
                    wanted.iter().any(|f| printed(l, f)),
                    "{file}: printed, not in the capture's report: {l}"
                );
            }
        }
        assert_eq!(
            finding_set(&closing_summary(&stderr)),
            finding_set(&want),
            "{file}"
        );
        assert_eq!(status.code(), Some(1), "{file}: findings: {stderr}");
    }
}

/// A sequence gap unjudges only the gapped exporter's edges: exporter
/// `edge-v5` (proxy, engine1) keeps losing records while `core-v9`
/// (engine2, central) loses none. At the stop, proxy -> engine1:4747
/// (edge-v5's, 1 s window) is `not_observed` for the gap, and
/// engine2 -> central:4242 (core-v9's, 1 s window) is `missing`: a gap of
/// one exporter says nothing of what another covers.
#[test]
fn a_gap_leaves_other_exporters_edges_missing() {
    let dir = TempDir::new("netflow-gap-coverage");
    let site = coverage_site(&dir.0, TWO_EXPORTERS);
    let port = free_udp_port();
    let mut d = flow_daemon(&site, port, &["--format", "json"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{port}");
    sock.send_to(&v9_packet(10, 7), &to).unwrap();
    sock.send_to(&v9_packet(11, 7), &to).unwrap();
    // edge-v5 skips 4 records in every packet, until the daemon stops;
    // the observation outlasts the 1 s windows meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (stop, to) = (stop.clone(), to.clone());
        std::thread::spawn(move || {
            let mut seq = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sock.send_to(&v5_packet(seq), &to);
                seq += 5;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    d.wait_metrics("edge-v5's losses", |m| {
        sample(
            m,
            r#"portwatch_flow_export_lost_records_total{exporter="edge-v5"}"#,
        )
        .is_some_and(|n| n > 0.0)
    });
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    assert!(status.success(), "{stderr}");
    let r = closing_summary(&stderr);
    only_edge_v5s_edge_unjudged(&r);
}

/// edge-v5 (a v5 exporter) covering proxy and engine1, core-v9 (a v9
/// observation domain of the same address) engine2 and central.
const TWO_EXPORTERS: &str = "exporters:\n  - name: edge-v5\n    address: 127.0.0.1\n    covers: [proxy, engine1]\n  \
     - name: core-v9\n    address: 127.0.0.1\n    observation_domain: 7\n    covers: [engine2, central]\n";

/// A report of `coverage_site` with [`TWO_EXPORTERS`], where only
/// edge-v5 lost records: its edge proxy -> engine1:4747 is `not_observed`
/// for its gap; engine2 -> central:4242 is `missing`.
fn only_edge_v5s_edge_unjudged(r: &Value) {
    let states = edge_states(r);
    assert_eq!(
        states.get("engine2->central:4242").map(String::as_str),
        Some("missing"),
        "{states:?}"
    );
    assert_eq!(
        states.get("proxy->engine1:4747").map(String::as_str),
        Some("not_observed"),
        "{states:?}"
    );
    let reason = (r["edges"].as_array().unwrap().iter())
        .find(|e| e["src"] == "proxy" && e["dst"] == "engine1" && e["port"] == 4747)
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("flow exporter"), "{reason}");
}

/// An Ethernet frame of one UDP datagram 127.0.0.1:40000 -> :4739.
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&4739u16.to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Milliseconds since 1970 of a report's RFC 3339 time.
fn unix_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a time: {v}"));
    let out = Command::new("date")
        .args(["-u", "-d", s, "+%s%3N"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The time of each connection's last packet in `pcap` (tshark), by its
/// unordered 4-tuple, Unix milliseconds.
fn last_packets(pcap: &Path) -> BTreeMap<String, i64> {
    let fields = [
        "frame.time_epoch",
        "ip.src",
        "tcp.srcport",
        "ip.dst",
        "tcp.dstport",
    ];
    let mut args = vec!["-Y", "tcp", "-T", "fields"];
    args.extend(fields.iter().flat_map(|f| ["-e", *f]));
    let mut last = BTreeMap::new();
    for l in tshark(pcap, &args).lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let ms = (f[0].parse::<f64>().unwrap() * 1000.0).floor() as i64;
        let t = last.entry(conn_id(f[1], f[2], f[3], f[4])).or_insert(ms);
        *t = (*t).max(ms);
    }
    last
}

/// A connection's unordered 4-tuple.
fn conn_id(a: &str, ap: &str, b: &str, bp: &str) -> String {
    let (x, y) = (format!("{a}:{ap}"), format!("{b}:{bp}"));
    if x <= y {
        format!("{x} {y}")
    } else {
        format!("{y} {x}")
    }
}

/// softflowd's IPFIX records carry flowStartSysUpTime and flowEndSysUpTime,
/// the init time only in its options record: `replay` of a capture of its
/// export places each flow row where the fixture's own replay does (the
/// export took well under a second; the fixture spans over three hours),
/// and its last time at the record's end: the last packet of the row's
/// connections in the fixture (tshark; the fixture's conn log says which
/// connections are the row's). `-a`: softflowd keeps the capture's clock
/// (else its uptime counts from its own start, and the capture's times are
/// lost to it).
#[test]
fn replay_of_softflowds_ipfix_export_keeps_the_captures_times() {
    if !needs(
        "netflow::softflowd_ipfix_times",
        false,
        &["softflowd", "softflowctl", "tshark"],
    ) {
        return;
    }
    let file = "quiet-gap.pcap";
    let dir = TempDir::new("netflow-ipfix-times");
    let relay = Relay::start(free_udp_port(), usize::MAX);
    softflowd_with(&dir.0, &fixture(file), relay.port, "10", &["-a"]);
    let frames: Vec<(u32, Vec<u8>)> = (relay.stop().iter().enumerate())
        .map(|(i, d)| (i as u32, udp_frame(d)))
        .collect();
    assert!(frames.len() > 1, "{} datagrams", frames.len());
    let export = dir.0.join("export.pcap");
    crate::live::write_pcap_at(&export, &frames);
    let (e, _) = replay_fixture(file);
    let conns = dir.0.join("conn.ndjson");
    let pcap_run = crate::golden::portwatch(&[
        "replay",
        "--format",
        "json",
        "--site",
        &e.site,
        "--conn-log",
        conns.to_str().unwrap(),
        fixture(file).to_str().unwrap(),
    ]);
    assert!(matches!(pcap_run.code, Some(0 | 1)), "{}", pcap_run.stderr);
    let want = pcap_run.json();
    let run = crate::golden::portwatch(&[
        "replay",
        "--format",
        "json",
        "--site",
        &e.site,
        export.to_str().unwrap(),
    ]);
    assert!(matches!(run.code, Some(0 | 1)), "{}", run.stderr);
    let got = run.json();
    let source = &got["capture"]["sources"][0]["fidelity"]["records"];
    assert_eq!(source.get("time_from_export"), None, "{source}");
    assert_eq!(source.get("time_implausible"), None, "{source}");
    let times = |r: &Value| -> BTreeMap<String, (i64, i64)> {
        (r["flows"].as_array().expect("flows").iter())
            .map(|f| {
                let k = format!("{}->{}:{}", f["src"], f["dst"], f["port"]);
                (k, (unix_ms(&f["first_seen"]), unix_ms(&f["last_seen"])))
            })
            .collect()
    };
    let (a, b) = (times(&want), times(&got));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "flow rows"
    );
    let span = |t: &BTreeMap<String, (i64, i64)>| {
        t.values().map(|v| v.1).max().unwrap() - t.values().map(|v| v.0).min().unwrap()
    };
    assert!(span(&a) > 3_600_000, "fixture spans {} ms", span(&a));
    // Each row's last packet: the latest of its connections'.
    let packets = last_packets(&fixture(file));
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for l in std::fs::read_to_string(&conns).unwrap().lines() {
        let c: Value = serde_json::from_str(l).unwrap();
        let (pw, s, d) = (&c["portwatch"], &c["source"], &c["destination"]);
        let row = format!("{}->{}:{}", pw["src"], pw["dst"], d["port"]);
        let id = conn_id(
            s["ip"].as_str().unwrap(),
            &s["port"].to_string(),
            d["ip"].as_str().unwrap(),
            &d["port"].to_string(),
        );
        let t = packets[&id];
        let e = last.entry(row).or_insert(t);
        *e = (*e).max(t);
    }
    let mut later = 0;
    for (k, (first, start)) in &a {
        let (f, l) = b[k];
        // softflowd keeps milliseconds; the capture microseconds.
        assert!(
            (f - first).abs() <= 1,
            "{k} first: capture {first} export {f}"
        );
        let end = last[k];
        assert!(
            (l - end).abs() <= 1,
            "{k} last: last packet {end} export {l}"
        );
        later += usize::from(end > start + 1);
    }
    assert!(later > 0, "no row's last packet is after its last SYN");
}

/// A NetFlow v5 export packet sent `ms` after the capture's start (as
/// [`crate::live::write_pcap_at`] counts): sequence `seq`, one TCP SYN
/// corp-users -> proxy:443 at that time.
fn v5_syn_at(seq: u32, ms: u32) -> Vec<u8> {
    let mut r = [0u8; 48];
    r[0..4].copy_from_slice(&[198, 51, 100, 7]);
    r[4..8].copy_from_slice(&[192, 0, 2, 11]);
    r[16..20].copy_from_slice(&1u32.to_be_bytes()); // packets
    r[24..28].copy_from_slice(&60_000u32.to_be_bytes()); // first, uptime
    r[28..32].copy_from_slice(&60_000u32.to_be_bytes()); // last
    r[32..34].copy_from_slice(&50_000u16.to_be_bytes());
    r[34..36].copy_from_slice(&443u16.to_be_bytes());
    r[37] = 0x02; // SYN
    r[38] = 6;
    v5_datagram(seq, 1_767_225_600_000 + u64::from(ms), &r)
}

/// `replay` of a capture of two exporters' datagrams judges a sequence
/// gap as `run --flow-listen` does (see
/// [`a_gap_leaves_other_exporters_edges_missing`]): `edge-v5` (proxy,
/// engine1) loses 4 records half a second before the capture ends, and
/// only its edge proxy -> engine1:4747 is `not_observed` for the gap;
/// `core-v9`'s engine2 -> central:4242, with no gap, is `missing`.
#[test]
fn replay_of_an_export_capture_unjudges_only_the_gapped_exporters_edges() {
    let dir = TempDir::new("netflow-replay-gap");
    let site = coverage_site(&dir.0, TWO_EXPORTERS);
    // v5 numbers records: 0 (one), then 5 (4 lost), then 6.
    let datagrams = [
        (0, v9_packet(10, 7)),
        (0, v5_syn_at(0, 0)),
        (1000, v9_packet(11, 7)),
        (2000, v9_packet(12, 7)),
        (2500, v5_syn_at(5, 2500)),
        (3000, v9_packet(13, 7)),
        (3000, v5_syn_at(6, 3000)),
    ];
    let frames: Vec<(u32, Vec<u8>)> = (datagrams.iter())
        .map(|(ms, d)| (*ms, udp_frame(d)))
        .collect();
    let export = dir.0.join("export.pcap");
    crate::live::write_pcap_at(&export, &frames);
    let run = crate::golden::portwatch(&[
        "replay",
        "--format",
        "json",
        "--site",
        &site,
        export.to_str().unwrap(),
    ]);
    assert!(matches!(run.code, Some(0 | 1)), "{}", run.stderr);
    let r = run.json();
    let source = &r["capture"]["sources"][0];
    assert_eq!(source["format"], "netflow-ipfix-capture", "{r}");
    assert_eq!(source["fidelity"]["records"]["lost_records"], 4, "{source}");
    only_edge_v5s_edge_unjudged(&r);
}

/// `replay` of a capture of export datagrams lists each exporter's losses
/// as `run --flow-listen` counts them
/// (`portwatch_flow_export_lost_*_total{exporter}`): under the declared
/// name, or `undeclared` (a v5 stream from an address whose declaration
/// names a v9 observation domain), in the JSON and the table; with the
/// datagrams of each, those of undeclared exporters counted
/// (`undeclared_exporter`) as run counts them.
#[test]
fn replay_of_an_export_capture_lists_losses_per_exporter() {
    let dir = TempDir::new("netflow-replay-lost");
    let site = coverage_site(
        &dir.0,
        "exporters:\n  - name: core-v9\n    address: 127.0.0.1\n    observation_domain: 7\n    covers: [engine2, central]\n",
    );
    // v9 numbers packets: 10, then 13 (2 lost); v5 records: 0, then 5 (4).
    let datagrams = [
        (0, v9_packet(10, 7)),
        (0, v5_syn_at(0, 0)),
        (1000, v9_packet(13, 7)),
        (2000, v5_syn_at(5, 2000)),
    ];
    let frames: Vec<(u32, Vec<u8>)> = (datagrams.iter())
        .map(|(ms, d)| (*ms, udp_frame(d)))
        .collect();
    let export = dir.0.join("export.pcap");
    crate::live::write_pcap_at(&export, &frames);
    let replay = |format: &str| {
        let run = crate::golden::portwatch(&[
            "replay",
            "--format",
            format,
            "--site",
            &site,
            export.to_str().unwrap(),
        ]);
        assert!(matches!(run.code, Some(0 | 1)), "{}", run.stderr);
        run
    };
    let r = replay("json").json();
    let source = &r["capture"]["sources"][0];
    assert_eq!(source["fidelity"]["records"]["lost_records"], 4, "{source}");
    assert_eq!(source["fidelity"]["records"]["lost_packets"], 2, "{source}");
    assert_eq!(
        source["fidelity"]["records"]["undeclared_exporter"], 2,
        "{source}"
    );
    assert_eq!(
        source["exporters"],
        serde_json::json!([
            {"name": "core-v9", "datagrams": 2, "lost_records": 0, "lost_packets": 2},
            {"name": "undeclared", "datagrams": 2, "lost_records": 4, "lost_packets": 0},
        ]),
        "{source}"
    );
    let table = replay("table").stdout;
    for line in [
        "    exporter core-v9: 2 datagrams, 0 records lost, 2 packets lost",
        "    exporter undeclared: 2 datagrams, 4 records lost, 0 packets lost",
    ] {
        assert!(table.lines().any(|l| l == line), "{line}\n{table}");
    }
}
