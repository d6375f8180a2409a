//! Live capture against replay: the same frames, sent over a veth pair with
//! tcpreplay and watched by `portwatch watch`, give the same verdicts as
//! `portwatch replay` of the file they came from.
//!
//! Needs root (network namespaces, raw sockets), `ip` and `tcpreplay`;
//! without them it prints why and passes. Everything happens inside a
//! network namespace of its own (`pwtest-<pid>`) holding both ends of the
//! veth pair and a bridge: the frames (documentation addresses only) are
//! sent into one end, whose peer is the bridge's only port, and captured on
//! the bridge, as on a switch's mirror port. They are addressed to MACs
//! nobody in the namespace owns, so the bridge passes them up only in
//! promiscuous mode: a capture without it sees nothing. Nothing is routed
//! anywhere. The namespace, and with it the pair and the bridge, is
//! deleted on drop, even on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use portwatch::decode::{decode_wanting, Control, Decoded, RawTuple, Wanted};
use portwatch::source::live::{LiveOptions, LiveSource};
use portwatch::source::Source;
use serde_json::Value;

use crate::prereq::prerequisites;

const PORTWATCH: &str = env!("CARGO_BIN_EXE_portwatch");
const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Runs a command to completion; panics with its output if it fails.
fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd[0]));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, the veth pair in it and the watcher: all removed on drop.
struct Netns {
    name: String,
    watcher: Option<Child>,
    dir: PathBuf,
}

impl Netns {
    fn create() -> Netns {
        // Several tests of one process each get a namespace of their own
        // (interface names need not differ: each namespace has its own).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        let ns = Netns {
            name: format!("pwtest-{pid}-{n}"),
            watcher: None,
            dir: std::env::temp_dir().join(format!("portwatch-live-{pid}-{n}")),
        };
        std::fs::create_dir_all(&ns.dir).unwrap();
        sh(&["ip", "netns", "add", &ns.name]);
        // Both ends are created inside the namespace: nothing on the host
        // side, no bridge, no route out.
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "link",
            "add",
            &ns.port_if(),
            "type",
            "veth",
            "peer",
            "name",
            &ns.send_if(),
        ]);
        let bridge = ns.bridge();
        sh(&[
            "ip", "-n", &ns.name, "link", "add", &bridge, "type", "bridge",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "link",
            "set",
            &ns.port_if(),
            "master",
            &bridge,
        ]);
        for dev in [ns.port_if(), ns.send_if(), bridge, "lo".to_string()] {
            sh(&["ip", "-n", &ns.name, "link", "set", &dev, "up"]);
        }
        ns
    }

    /// The bridge: where `watch` captures, as on a mirror port. Frames for
    /// other MACs reach its capture only in promiscuous mode, which
    /// portwatch switches on (the test never does).
    fn capture_if(&self) -> String {
        self.bridge()
    }

    fn bridge(&self) -> String {
        format!("pwr{}", std::process::id())
    }

    /// The bridge's port: the peer of [`Netns::send_if`].
    fn port_if(&self) -> String {
        format!("pwa{}", std::process::id())
    }

    fn send_if(&self) -> String {
        format!("pwb{}", std::process::id())
    }

    /// A command run inside the namespace.
    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut child) = self.watcher.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespace deletes the veth pair in it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One TCP segment from `src` to `dst`, as an Ethernet frame.
#[derive(Clone, Copy)]
pub(crate) enum Flags {
    Syn,
    SynAck,
    Ack,
    Data,
    Fin,
    RstAck,
}

pub(crate) fn frame(
    src: (&str, u16),
    dst: (&str, u16),
    flags: Flags,
    vlan: Option<u16>,
) -> Vec<u8> {
    let (s, d): (std::net::IpAddr, std::net::IpAddr) =
        (src.0.parse().unwrap(), dst.0.parse().unwrap());
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER);
    let ip = match (vlan, s, d) {
        (None, std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            eth.ipv4(s.octets(), d.octets(), 64)
        }
        (None, std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            eth.ipv6(s.octets(), d.octets(), 64)
        }
        (Some(v), std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => eth
            .single_vlan(v.try_into().unwrap())
            .ipv4(s.octets(), d.octets(), 64),
        _ => unreachable!("no tagged IPv6 in this test"),
    };
    let tcp = ip.tcp(src.1, dst.1, 1000, 65535);
    let (tcp, payload): (_, &[u8]) = match flags {
        Flags::Syn => (tcp.syn(), b""),
        Flags::SynAck => (tcp.syn().ack(1001), b""),
        Flags::Ack => (tcp.ack(1001), b""),
        Flags::Data => (tcp.ack(1001).psh(), b"GET / HTTP/1.1\r\n\r\n"),
        Flags::Fin => (tcp.fin().ack(1001), b""),
        Flags::RstAck => (tcp.rst().ack(1001), b""),
    };
    let mut v = Vec::new();
    tcp.write(&mut v, payload).unwrap();
    v
}

/// A complete connection: handshake, some data, both FINs.
pub(crate) fn connection(
    out: &mut Vec<Vec<u8>>,
    c: (&str, u16),
    s: (&str, u16),
    vlan: Option<u16>,
) {
    out.push(frame(c, s, Flags::Syn, vlan));
    out.push(frame(s, c, Flags::SynAck, vlan));
    out.push(frame(c, s, Flags::Ack, vlan));
    out.push(frame(c, s, Flags::Data, vlan));
    out.push(frame(s, c, Flags::Data, vlan));
    out.push(frame(c, s, Flags::Ack, vlan));
    out.push(frame(c, s, Flags::Fin, vlan));
    out.push(frame(s, c, Flags::Fin, vlan));
}

/// The test capture (multi-node site): every SYN is answered, so no
/// outcome depends on the SYN timeout, which live capture judges on the
/// wall clock.
fn test_frames() -> Vec<Vec<u8>> {
    let mut f = Vec::new();
    // Expected: users to the proxy, proxy to engines, rim to central.
    connection(&mut f, ("198.51.100.7", 40001), ("192.0.2.11", 443), None);
    connection(&mut f, ("198.51.100.7", 40002), ("192.0.2.11", 443), None);
    connection(&mut f, ("192.0.2.11", 40003), ("192.0.2.21", 4747), None);
    connection(&mut f, ("192.0.2.21", 40004), ("192.0.2.10", 4242), None);
    connection(
        &mut f,
        ("192.0.2.10", 40005),
        ("192.0.2.22", 4444),
        Some(100),
    );
    connection(
        &mut f,
        ("2001:db8:100::5", 40006),
        ("2001:db8::10", 443),
        None,
    );
    // Unexpected: a user straight to an engine.
    connection(&mut f, ("198.51.100.8", 40007), ("192.0.2.22", 4747), None);
    // Local-only port reached from the network.
    connection(&mut f, ("198.51.100.9", 40008), ("192.0.2.11", 4244), None);
    // A refused expected edge, twice.
    for port in [40009, 40010] {
        f.push(frame(
            ("192.0.2.11", port),
            ("192.0.2.22", 4239),
            Flags::Syn,
            None,
        ));
        f.push(frame(
            ("192.0.2.22", 4239),
            ("192.0.2.11", port),
            Flags::RstAck,
            None,
        ));
    }
    f
}

/// The frames a millisecond apart.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let timed: Vec<(u32, Vec<u8>)> = (frames.iter().enumerate())
        .map(|(i, f)| (i as u32, f.clone()))
        .collect();
    write_pcap_at(path, &timed);
}

/// The frames at their times, in milliseconds from the start.
pub(crate) fn write_pcap_at(path: &Path, frames: &[(u32, Vec<u8>)]) {
    let mut v = Vec::new();
    v.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for (ms, f) in frames {
        v.extend_from_slice(&(1_767_225_600 + ms / 1000).to_le_bytes());
        v.extend_from_slice(&(ms % 1000 * 1000).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(f);
    }
    std::fs::write(path, v).unwrap();
}

/// The fields of a report that do not depend on timing: flows, findings,
/// connection counts.
fn verdicts(report: &Value) -> (Vec<String>, Vec<String>, String) {
    let pick = |v: &Value, fields: &[&str]| -> String {
        fields
            .iter()
            .map(|f| format!("{f}={}", v[f]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let list = |key: &str, fields: &[&str]| -> Vec<String> {
        let mut out: Vec<String> = report[key]
            .as_array()
            .unwrap_or_else(|| panic!("no `{key}` array in {report}"))
            .iter()
            .map(|v| pick(v, fields))
            .collect();
        out.sort();
        out
    };
    (
        list(
            "flows",
            &[
                "src", "dst", "port", "service", "verdict", "attempts", "outcomes",
            ],
        ),
        list("findings", &["kind", "src", "dst", "port", "count"]),
        report["summary"]["connections"].to_string(),
    )
}

/// Reads `stderr` lines into a channel from a thread.
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`, keeping every line read.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// How `tcpreplay` sends a file.
#[derive(Clone, Copy)]
enum Pace {
    /// As fast as it can.
    Top,
    /// At the pace of the file's timestamps.
    Captured,
}

/// What one `watch` on the bridge printed and reported.
struct Watched {
    /// Finding lines printed on stdout.
    printed: Vec<String>,
    /// The closing JSON report (stderr).
    report: Value,
    status: std::process::ExitStatus,
}

/// Runs `watch` on the bridge (with `extra` arguments) while `pcap` is sent
/// into it; stops it with SIGINT once `findings` lines were printed (and a
/// little more for the last FINs), or `within` after sending if they never
/// come. With `findings` 0, SIGINT comes as soon as the frames are sent.
fn watch_while_sending(
    ns: &mut Netns,
    extra: &[&str],
    pcap: &Path,
    pace: Pace,
    findings: usize,
    within: Duration,
) -> Watched {
    let mut child = ns
        .exec(PORTWATCH)
        .args(["watch", "-i", &ns.capture_if()])
        .args(["--site", "multi-node", "--format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let pid = child.id();
    ns.watcher = Some(child);
    let mut err_lines = Vec::new();
    assert!(
        wait_for(&err, &mut err_lines, "capturing", Duration::from_secs(10)),
        "watch did not start capturing:\n{}",
        err_lines.join("\n")
    );

    let mut send = ns.exec("tcpreplay");
    send.arg("-q");
    if let Pace::Top = pace {
        send.arg("--topspeed");
    }
    let sent = send.args(["-i", &ns.send_if()]).arg(pcap).output().unwrap();
    assert!(
        sent.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&sent.stderr)
    );

    // Each finding is printed live once; when all are, the frames have
    // been through the pipeline.
    let deadline = Instant::now() + within;
    let mut printed = Vec::new();
    while printed.len() < findings {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match out.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => break,
        }
    }
    if findings > 0 {
        std::thread::sleep(Duration::from_millis(500));
    }

    sh(&["kill", "-INT", &pid.to_string()]);
    let mut child = ns.watcher.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watch did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(line) = out.recv_timeout(Duration::from_millis(200)) {
        printed.push(line);
    }
    // The report is the last JSON object on stderr.
    while let Ok(line) = err.recv_timeout(Duration::from_secs(5)) {
        err_lines.push(line);
    }
    let start = err_lines
        .iter()
        .rposition(|l| l == "{")
        .unwrap_or_else(|| panic!("no JSON report on stderr:\n{}", err_lines.join("\n")));
    let report: Value = serde_json::from_str(&err_lines[start..].join("\n"))
        .unwrap_or_else(|e| panic!("{e}: {}", err_lines.join("\n")));
    Watched {
        printed,
        report,
        status,
    }
}

/// What `portwatch replay` of `pcap` reports, and its exit code.
fn replay_report(pcap: &Path) -> (Value, Option<i32>) {
    let replay = Command::new(PORTWATCH)
        .args(["replay", "--site", "multi-node", "--format", "json"])
        .arg(pcap)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&replay.stdout)
        .unwrap_or_else(|e| panic!("replay: {e}\n{}", String::from_utf8_lossy(&replay.stderr)));
    (report, replay.status.code())
}

/// The control packets a report's capture section counts.
fn control_packets(report: &Value) -> u64 {
    report["capture"]["control_packets"]
        .as_object()
        .unwrap_or_else(|| panic!("no capture.control_packets in {report:#}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn live_capture_over_veth_matches_replay() {
    // Root: a network namespace and a veth pair.
    if !prerequisites(
        "live_capture_over_veth_matches_replay",
        &["ip", "tcpreplay"],
    ) {
        return;
    }
    let mut ns = Netns::create();
    let pcap = ns.dir.join("live.pcap");
    write_pcap(&pcap, &test_frames());

    // What a replay of the file says.
    let (replayed, code) = replay_report(&pcap);
    assert_eq!(code, Some(1), "replay: findings expected");
    let expected_findings = replayed["findings"].as_array().unwrap().len();
    assert!(expected_findings >= 3, "{replayed:#}");

    // Watch the bridge, in promiscuous mode by default.
    let w = watch_while_sending(
        &mut ns,
        &[],
        &pcap,
        Pace::Top,
        expected_findings,
        Duration::from_secs(10),
    );
    assert_eq!(
        w.printed.len(),
        expected_findings,
        "live findings printed:\n{}",
        w.printed.join("\n")
    );
    assert_eq!(w.status.code(), Some(1), "{:#}", w.report);
    let live = &w.report;
    let (live_flows, live_findings, live_conns) = verdicts(live);
    let (flows, findings, conns) = verdicts(&replayed);
    assert_eq!(live_flows, flows, "flows differ");
    assert_eq!(live_findings, findings, "findings differ");
    assert_eq!(live_conns, conns, "summary.connections differ");
    // The kernel counted the control packets only (the filter), and none
    // was dropped.
    assert_eq!(
        control_packets(live),
        control_packets(&replayed),
        "{live:#}"
    );
}

/// SIGINT right after the last frame is sent: what the capture already
/// holds (a ring's batch not handed over yet) still goes through, so the
/// closing summary has every packet and finding a replay of the file has.
#[test]
fn watch_stopped_at_once_still_judges_the_frames_it_captured() {
    let test = "watch_stopped_at_once_still_judges_the_frames_it_captured";
    if !prerequisites(test, &["ip", "tcpreplay"]) {
        return;
    }
    let mut ns = Netns::create();
    let pcap = ns.dir.join("last.pcap");
    write_pcap(&pcap, &test_frames());
    let (replayed, _) = replay_report(&pcap);
    let (_, findings, _) = verdicts(&replayed);
    // Whether the stop finds frames not handed over yet is a race: five
    // rounds make a lost batch all but certain to show.
    for round in 0..5 {
        let w = watch_while_sending(&mut ns, &[], &pcap, Pace::Top, 0, Duration::ZERO);
        let live = &w.report;
        assert_eq!(
            control_packets(live),
            control_packets(&replayed),
            "round {round}: {live:#}"
        );
        let (_, live_findings, _) = verdicts(live);
        assert_eq!(live_findings, findings, "round {round}: findings differ");
        assert_eq!(w.status.code(), Some(1), "{live:#}");
    }
}

/// The premise of the tests on the bridge: with `--no-promisc` the same
/// frames are not seen at all (they are addressed to other hosts).
#[test]
fn live_bridge_is_blind_without_promiscuous_mode() {
    let test = "live_bridge_is_blind_without_promiscuous_mode";
    if !prerequisites(test, &["ip", "tcpreplay"]) {
        return;
    }
    let mut ns = Netns::create();
    let pcap = ns.dir.join("live.pcap");
    write_pcap(&pcap, &test_frames());
    let w = watch_while_sending(
        &mut ns,
        &["--no-promisc"],
        &pcap,
        Pace::Top,
        1,
        Duration::from_secs(2),
    );
    assert_eq!(control_packets(&w.report), 0, "{:#}", w.report);
    assert!(w.printed.is_empty(), "{}", w.printed.join("\n"));
    assert_eq!(w.status.code(), Some(0), "{:#}", w.report);
}

/// An expected connection dropped by a firewall: the SYN and three
/// retransmissions a second apart, nothing after. Watched live, the
/// attempt times out `unanswered` (a `blocked` finding); the replay of the
/// same packets, whose capture ends 3 s after the first SYN, judges it by
/// the same rule.
#[test]
fn live_and_replay_agree_on_a_drop_at_the_end_of_the_capture() {
    let test = "live_and_replay_agree_on_a_drop_at_the_end_of_the_capture";
    if !prerequisites(test, &["ip", "tcpreplay"]) {
        return;
    }
    let mut ns = Netns::create();
    let pcap = ns.dir.join("dropped.pcap");
    let syn = frame(
        ("192.0.2.21", 40100),
        ("192.0.2.10", 4242),
        Flags::Syn,
        None,
    );
    let timed: Vec<(u32, Vec<u8>)> = (0..4).map(|s| (s * 1000, syn.clone())).collect();
    write_pcap_at(&pcap, &timed);

    let (replayed, code) = replay_report(&pcap);
    let w = watch_while_sending(
        &mut ns,
        &[],
        &pcap,
        Pace::Captured,
        1,
        Duration::from_secs(10),
    );
    let (live_flows, live_findings, _) = verdicts(&w.report);
    let (flows, findings, _) = verdicts(&replayed);
    assert_eq!(live_flows, flows, "flows differ: {:#}", w.report);
    assert_eq!(live_findings, findings, "findings differ");
    assert_eq!(
        findings,
        ["kind=\"blocked\" src=\"engine1\" dst=\"central\" port=4242 count=1"],
        "{replayed:#}"
    );
    assert_eq!(
        code,
        Some(1),
        "a replay of a dropped connection has findings"
    );
    assert_eq!(w.status.code(), Some(1));
}

/// Two veth pairs in one namespace, watched together (`-i a -i b`): every
/// SYN goes over the second, every SYN-ACK over the first, so a capture that
/// read the interfaces one after the other would judge each SYN-ACK before
/// its SYN. In timestamp order, every handshake is established.
#[test]
fn live_two_interfaces_are_merged_in_timestamp_order() {
    let test = "live_two_interfaces_are_merged_in_timestamp_order";
    // Root: a network namespace and veth pairs.
    if !prerequisites(test, &["ip", "tcpreplay"]) {
        return;
    }
    let mut ns = Netns::create();
    let pid = std::process::id();
    let (cap2, send2) = (format!("pwc{pid}"), format!("pwd{pid}"));
    sh(&[
        "ip", "-n", &ns.name, "link", "add", &cap2, "type", "veth", "peer", "name", &send2,
    ]);
    for dev in [&cap2, &send2] {
        sh(&["ip", "-n", &ns.name, "link", "set", dev, "up"]);
    }
    sh(&["ip", "-n", &ns.name, "link", "set", &cap2, "promisc", "on"]);

    const N: u16 = 20;
    let (client, server) = ("192.0.2.11", ("192.0.2.21", 4747));
    let syns: Vec<Vec<u8>> = (0..N)
        .map(|i| frame((client, 41000 + i), server, Flags::Syn, None))
        .collect();
    let answers: Vec<Vec<u8>> = (0..N)
        .map(|i| frame(server, (client, 41000 + i), Flags::SynAck, None))
        .collect();
    let (syn_pcap, answer_pcap) = (ns.dir.join("syns.pcap"), ns.dir.join("answers.pcap"));
    write_pcap(&syn_pcap, &syns);
    write_pcap(&answer_pcap, &answers);

    let mut child = ns
        .exec(PORTWATCH)
        .args(["watch", "-i", &ns.capture_if(), "-i", &cap2])
        .args(["--site", "multi-node", "--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let watcher = child.id();
    ns.watcher = Some(child);
    let mut err_lines = Vec::new();
    assert!(
        wait_for(&err, &mut err_lines, "capturing", Duration::from_secs(10)),
        "watch did not start capturing:\n{}",
        err_lines.join("\n")
    );
    // The watcher is stopped while the frames arrive, so that both rings
    // hold theirs when it reads again: the SYNs first, on the second
    // interface; then the answers on the first.
    sh(&["kill", "-STOP", &watcher.to_string()]);
    for (iface, pcap) in [(&send2, &syn_pcap), (&ns.send_if(), &answer_pcap)] {
        let sent = ns
            .exec("tcpreplay")
            .args(["-q", "--topspeed", "-i", iface])
            .arg(pcap)
            .output()
            .unwrap();
        assert!(
            sent.status.success(),
            "tcpreplay: {}",
            String::from_utf8_lossy(&sent.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    sh(&["kill", "-CONT", &watcher.to_string()]);
    std::thread::sleep(Duration::from_millis(1500));
    sh(&["kill", "-INT", &watcher.to_string()]);
    let mut child = ns.watcher.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watch did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    while let Ok(line) = err.recv_timeout(Duration::from_secs(5)) {
        err_lines.push(line);
    }
    let start = err_lines
        .iter()
        .rposition(|l| l == "{")
        .unwrap_or_else(|| panic!("no JSON report on stderr:\n{}", err_lines.join("\n")));
    let live: Value = serde_json::from_str(&err_lines[start..].join("\n"))
        .unwrap_or_else(|e| panic!("{e}: {}", err_lines.join("\n")));
    let outcomes = &live["summary"]["outcomes"];
    assert_eq!(outcomes["established"], u64::from(N), "{live:#}");
    assert_eq!(live["summary"]["connections"]["expected"], u64::from(N));
    // Both interfaces report their drops (none here).
    for src in live["capture"]["sources"].as_array().unwrap() {
        assert_eq!(src["dropped"]["kernel"], 0, "{src}");
    }
}

/// Wants every non-control segment (decoded as `Control::Ack`).
struct Every;

impl Wanted for Every {
    fn wants(&self, _: &RawTuple<'_>) -> bool {
        true
    }
}

/// A reload that adds required edges widens the filter of a capture that
/// is already open: the data segments of a port pass once
/// `set_evidence_ports` names it, not before. A real TCP connection on
/// loopback, captured on `lo` (the test's own port, nothing else counted).
#[test]
fn evidence_ports_change_on_an_open_capture() {
    let test = "evidence_ports_change_on_an_open_capture";
    // Root: a raw socket on lo.
    if !prerequisites(test, &[]) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut src = LiveSource::open(&["lo".to_string()], &LiveOptions::default()).unwrap();
    // One connection writing five requests, each answered; then what the
    // capture saw of `port`: (data segments, control packets).
    let exchange = |src: &mut LiveSource| {
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        for _ in 0..5 {
            client.write_all(b"ping").unwrap();
            let mut got = [0; 4];
            server.read_exact(&mut got).unwrap();
        }
        drop((client, server));
        let (mut data, mut control) = (0, 0);
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            src.poll(&mut |f| {
                if let Ok(Decoded::Control(s)) = decode_wanting(f.linktype, f.data, &Every) {
                    if s.src_port == port || s.dst_port == port {
                        match s.control {
                            Control::Ack => data += 1,
                            _ => control += 1,
                        }
                    }
                }
            })
            .unwrap();
        }
        (data, control)
    };
    let (data, control) = exchange(&mut src);
    assert!(
        control >= 3 && data == 0,
        "control filter: {control} control packets, {data} data segments of port {port}"
    );
    src.set_evidence_ports(&[port]).unwrap();
    let (data, control) = exchange(&mut src);
    assert!(
        control >= 3 && data >= 5,
        "with port {port} as evidence: {control} control packets, {data} data segments"
    );
}

/// A health check on loopback to a port the model does not know (the
/// sensor's own /metrics, say) is no finding; `--strict-loopback` judges it.
/// No root needed: a replay of the frames.
#[test]
fn loopback_to_unknown_ports_is_no_finding_unless_strict() {
    let dir = std::env::temp_dir().join(format!("portwatch-loopback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("loopback.pcap");
    let mut frames = Vec::new();
    connection(&mut frames, ("127.0.0.1", 40100), ("127.0.0.1", 9479), None);
    write_pcap(&pcap, &frames);
    let (report, code) = replay_report(&pcap);
    assert_eq!(code, Some(0), "{report:#}");
    let strict = Command::new(PORTWATCH)
        .args([
            "replay",
            "--site",
            "multi-node",
            "--strict-loopback",
            "--format",
            "json",
        ])
        .arg(&pcap)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(strict.status.code(), Some(1), "strict: a finding");
    let strict: Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(strict["findings"][0]["kind"], "unexpected", "{strict:#}");
}

/// The HTML report's diagram draws each line in its legend's colour: the
/// stroke of every `class="line X"` path is the colour the page's legend
/// gives X (a blocked expected flow off the required edges included).
/// No root needed: a replay of the test frames.
#[test]
fn diagram_lines_are_drawn_in_their_legend_colours() {
    let dir = std::env::temp_dir().join(format!("portwatch-legend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("frames.pcap");
    write_pcap(&pcap, &test_frames());
    let out = Command::new(PORTWATCH)
        .args([
            "replay",
            "--site",
            "multi-node",
            "--format",
            "html",
            "--layout",
            "builtin",
        ])
        .arg(&pcap)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let page = String::from_utf8(out.stdout).unwrap();
    let legend = [
        "seen",
        "missing",
        "not_observed",
        "blocked",
        "unexpected",
        "local_only",
        "unknown_host",
    ];
    // The legend's colour of a class: its CSS rule `.X{color:#rrggbb}`.
    let colour = |class: &str| -> String {
        let rule = format!(".{class}{{color:");
        let at = page
            .find(&rule)
            .unwrap_or_else(|| panic!("no legend colour for {class}"));
        page[at + rule.len()..].chars().take(7).collect()
    };
    let mut checked = std::collections::BTreeSet::new();
    for group in page.split("<g id=\"").skip(1) {
        let Some(rest) = group.split_once("class=\"line ").map(|(_, r)| r) else {
            continue;
        };
        let class = rest.split('"').next().unwrap();
        let Some(last) = class.split(' ').next_back().filter(|c| legend.contains(c)) else {
            continue;
        };
        let stroke = rest
            .split_once("stroke=\"")
            .map(|(_, r)| r.split('"').next().unwrap())
            .unwrap_or_else(|| panic!("no stroke: {group}"));
        assert_eq!(stroke, colour(last), "line of class {class}: {group}");
        checked.insert(last);
    }
    for want in ["blocked", "unexpected", "local_only"] {
        assert!(checked.contains(want), "no {want} line drawn: {checked:?}");
    }
}
