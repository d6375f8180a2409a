//! `run --follow`: a node's `pfirewall.log` read as it grows, by a real
//! daemon on loopback. A writer appends lines (some split across writes),
//! rotates the log to `.old` twice back to back and truncates it once;
//! `/metrics` and the event log count every line exactly once. Also: a
//! followed EVTX file is refused, and `watch --follow` alone prints what
//! the log shows. An AWS VPC flow log followed as it is written gives what
//! `replay` of the whole file gives.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{bin, closing_summary, poll_until, sample, Daemon, TempDir};
use crate::windows::site;

const HEADER: &str = "#Version: 1.5\r\n#Software: Microsoft Windows Firewall\r\n#Time Format: Local\r\n\
#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path\r\n";

/// Lines `from..to`: the proxy (192.0.2.11) opening QRS on central, each
/// from its own client port, one second apart (local time, Berlin).
fn lines(from: u16, to: u16) -> String {
    (from..to)
        .map(|i| {
            let (m, s) = (i / 60, i % 60);
            format!(
                "2026-01-05 10:{m:02}:{s:02} ALLOW TCP 192.0.2.11 192.0.2.10 {} 4242 0 - 0 0 0 - - - SEND\r\n",
                40_000 + i
            )
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Write `text` in two pieces, the cut inside a line.
fn append_split(path: &Path, text: &str) {
    let cut = text.len() / 2 + 7;
    append(path, &text[..cut]);
    append(path, &text[cut..]);
}

fn rotate(path: &Path) {
    let mut old = path.as_os_str().to_owned();
    old.push(".old");
    std::fs::rename(path, PathBuf::from(old)).unwrap();
}

/// How often the daemon looks at a followed file.
const POLL: Duration = Duration::from_millis(250);

const OBSERVED: &str =
    r#"portwatch_records_total{format="pfirewall",node="proxy",reason="observed"}"#;

fn changes(m: &str, change: &str) -> f64 {
    sample(
        m,
        &format!(r#"portwatch_followed_file_changes_total{{change="{change}",node="proxy"}}"#),
    )
    .unwrap_or(0.0)
}

/// The required-edge series exported.
fn edges(m: &str) -> Vec<String> {
    (m.lines())
        .filter(|l| l.starts_with("portwatch_edge_window_seconds{"))
        .map(str::to_string)
        .collect()
}

/// Wait until the daemon has counted `n` lines as observed.
fn caught_up(d: &mut Daemon, n: u16) {
    d.wait_metrics(&format!("{n} records observed"), |m| {
        sample(m, OBSERVED) == Some(f64::from(n))
    });
}

#[test]
fn run_follow_counts_every_line_once_through_rotations_and_truncation() {
    let dir = TempDir::new("follow-run");
    let site = site(&dir.0, Some("Europe/Berlin"));
    let log = dir.0.join("pfirewall.log");
    let events = dir.0.join("events.ndjson");
    let mut d = Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        site.as_os_str(),
        "--follow".as_ref(),
        log.as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
        "--events-format".as_ref(),
        "flat".as_ref(),
    ]);
    // Up, and waiting for a log that is not there yet: no node, so no
    // required edge is judged.
    let m = d.wait_metrics("the missing log", |m| {
        sample(
            m,
            r#"portwatch_followed_file_changes_total{change="missing",node="unknown"}"#,
        ) == Some(1.0)
    });
    assert_eq!(edges(&m), Vec::<String>::new());

    // The writer: the log appears.
    append_split(&log, &format!("{HEADER}{}", lines(0, 40)));
    caught_up(&mut d, 40);
    // Lines, then two rotations back to back: whether the daemon looks in
    // between or not, the lines of the first file not read yet are read
    // through its descriptor, those of the second from `.old`.
    append_split(&log, &lines(40, 60));
    rotate(&log);
    append_split(&log, &format!("{HEADER}{}", lines(60, 90)));
    rotate(&log);
    append(&log, &format!("{HEADER}{}", lines(90, 100)));
    caught_up(&mut d, 100);
    // Truncated (copytruncate), then written again from the start.
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    d.wait_metrics("the truncation", |m| changes(m, "truncated") == 1.0);
    append_split(&log, &format!("{HEADER}{}", lines(100, 130)));
    caught_up(&mut d, 130);

    // Nothing more comes: more looks at the files count nothing twice.
    std::thread::sleep(POLL * 3);
    let m = d.metrics();
    assert_eq!(sample(&m, OBSERVED), Some(130.0), "{m}");
    let total: f64 = (m.lines())
        .filter(|l| l.starts_with("portwatch_records_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 130.0, "every record was observed:\n{m}");
    assert_eq!(changes(&m, "rotated"), 2.0, "{m}");
    // The log named its node: the required edges touching it are judged.
    let judged = edges(&m);
    assert!(!judged.is_empty(), "{m}");
    assert!(
        judged.iter().all(|e| e.contains(r#""proxy""#)),
        "only the proxy's edges: {judged:?}"
    );
    assert_eq!(changes(&m, "truncated"), 1.0, "{m}");
    assert_eq!(
        sample(
            &m,
            r#"portwatch_connections_total{dst="central",port="4242",service="qrs",src="proxy",verdict="expected"}"#
        ),
        Some(130.0),
        "{m}"
    );

    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    // The event log: one connection and one outcome per line, each line's
    // client port once.
    let text = std::fs::read_to_string(&events).unwrap();
    let mut per_port: BTreeMap<(String, u64), u32> = BTreeMap::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let kind = v["event"].as_str().unwrap().to_string();
        if kind == "connection" || kind == "outcome" {
            *per_port
                .entry((kind, v["src_port"].as_u64().unwrap()))
                .or_default() += 1;
        }
    }
    for kind in ["connection", "outcome"] {
        let ports: Vec<u64> = (per_port.iter())
            .filter(|((k, _), _)| k == kind)
            .map(|((_, p), n)| {
                assert_eq!(*n, 1, "{kind} of port {p} logged {n} times");
                *p
            })
            .collect();
        let want: Vec<u64> = (40_000..40_130).collect();
        assert_eq!(ports, want, "{kind} events");
    }
    // The closing summary: the log, its node, its records.
    assert!(
        stderr.contains("pfirewall.log (pfirewall): 130 records"),
        "{stderr}"
    );
    assert!(stderr.contains("(node proxy)"), "{stderr}");
    assert!(stderr.contains("records: observed=130"), "{stderr}");
}

#[test]
fn an_evtx_file_or_too_many_files_cannot_be_followed() {
    let dir = TempDir::new("follow-evtx");
    let evtx = dir.0.join("Security.evtx");
    std::fs::write(&evtx, b"ElfFile\0 and more that does not matter").unwrap();
    for cmd in ["run", "watch"] {
        let out = Command::new(bin())
            .args([cmd, "--site", "multi-node", "--follow"])
            .arg(&evtx)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("EVTX file cannot be followed"), "{cmd}: {err}");
    }
    // At most 64 files.
    let many: Vec<PathBuf> = (0..65).map(|i| dir.0.join(format!("{i}.log"))).collect();
    let out = Command::new(bin())
        .args(["watch", "--site", "multi-node", "--follow"])
        .args(&many)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 64 files"), "{err}");
    // A gzip flow log is written whole: refused, naming the file.
    let gz = dir.0.join("vpc.log.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    let out = Command::new(bin())
        .args(["run", "--site", "multi-node", "--follow"])
        .arg(&gz)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("vpc.log.gz: a gzip file cannot be followed"),
        "{err}"
    );
}

/// A followed path not there at start that appears as a gzip file or an
/// Azure flow log is refused as one there at start is: said once, naming
/// the file, and nothing of it read (it was read as text, `unknown_format`).
#[test]
fn a_file_appearing_as_gzip_or_an_azure_flow_log_is_refused() {
    let dir = TempDir::new("follow-refused-later");
    let gz = dir.0.join("later.log.gz");
    let azure = dir.0.join("PT1H.json");
    let mut d = Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        "multi-node".as_ref(),
        "--follow".as_ref(),
        gz.as_os_str(),
        azure.as_os_str(),
    ]);
    d.wait_metrics("both waited for", |m| {
        sample(
            m,
            r#"portwatch_followed_file_changes_total{change="missing",node="unknown"}"#,
        ) == Some(2.0)
    });
    let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
    bytes.extend(b"\nnot text\nat all\n");
    std::fs::write(&gz, &bytes).unwrap();
    let blob = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors/azure/elastic_integrations_vnet_sample_logs_testdata.json");
    std::fs::copy(blob, &azure).unwrap();
    let change = |m: &str, c: &str| {
        sample(
            m,
            &format!(r#"portwatch_followed_file_changes_total{{change="{c}",node="unknown"}}"#),
        )
    };
    d.wait_metrics("both refused", |m| {
        change(m, "gzip") == Some(1.0) && change(m, "azure_flow_log") == Some(1.0)
    });
    // Looked at again, said no more.
    std::thread::sleep(POLL * 4);
    append(&gz, "more\n");
    std::thread::sleep(POLL * 4);
    let m = d.metrics();
    assert_eq!(change(&m, "gzip"), Some(1.0), "{m}");
    assert!(!m.contains("unknown_format"), "{m}");
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    for (file, why) in [
        ("later.log.gz", "a gzip file cannot be followed"),
        ("PT1H.json", "an Azure flow log cannot be followed"),
    ] {
        let said: Vec<&str> = (stderr.lines()).filter(|l| l.contains(why)).collect();
        assert_eq!(said.len(), 1, "{file}: {stderr}");
        assert!(said[0].contains(file), "{file}: {stderr}");
    }
}

/// A VPC flow log: the tcp-flags sample, then the default format's sample
/// after its header (a header again in the middle), with NODATA and
/// SKIPDATA records.
fn vpc_log() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sensors/vpcflow");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    format!(
        "{}version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
         bytes start end action log-status\n{}",
        read("awsdocs_v3_tcp_flags.log"),
        read("awsdocs_v2_default.log")
    )
}

/// The connection and outcome events of a flat event log: what was
/// observed, whatever the order.
fn observed_events(path: &Path) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for l in std::fs::read_to_string(path).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["event"] == "connection" || v["event"] == "outcome" {
            let key = ["event", "verdict", "outcome", "src_addr", "src_port"]
                .into_iter()
                .chain(["dst_addr", "dst_port"])
                .map(|k| v[k].to_string())
                .collect::<Vec<_>>()
                .join(" ");
            *seen.entry(key).or_default() += 1;
        }
    }
    seen
}

#[test]
fn run_follow_reads_a_growing_vpc_flow_log_as_replay_reads_it_whole() {
    let dir = TempDir::new("follow-vpc");
    let whole = dir.0.join("whole.log");
    let text = vpc_log();
    std::fs::write(&whole, &text).unwrap();
    let replay_events = dir.0.join("replay.ndjson");
    let replay = crate::golden::portwatch(&[
        "replay",
        "--format",
        "json",
        "--site",
        "multi-node",
        "--events",
        replay_events.to_str().unwrap(),
        "--events-format",
        "flat",
        whole.to_str().unwrap(),
    ]);
    let report = replay.json();
    let counts = report["capture"]["sources"][0]["fidelity"]["records"].clone();
    let want = counts.as_object().expect("record counts").clone();
    assert!(want["observed"].as_u64() > Some(0), "{counts}");

    let log = dir.0.join("vpc.log");
    let events = dir.0.join("events.ndjson");
    let mut d = Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        "multi-node".as_ref(),
        "--follow".as_ref(),
        log.as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
        "--events-format".as_ref(),
        "flat".as_ref(),
    ]);
    // Not there yet when following starts: read from its start.
    let missing = r#"portwatch_followed_file_changes_total{change="missing",node="unknown"}"#;
    d.wait_metrics("the missing log", |m| sample(m, missing) == Some(1.0));
    // Written in pieces, cut inside lines, while the daemon reads it.
    for piece in text.as_bytes().chunks(97) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let series = |reason: &str| {
        format!(r#"portwatch_records_total{{format="vpc_flow",node="unknown",reason="{reason}"}}"#)
    };
    let m = d.wait_metrics("the connections observed", |m| {
        sample(m, &series("observed")).map(|n| n as u64) == want["observed"].as_u64()
    });
    for (reason, n) in &want {
        assert_eq!(
            sample(&m, &series(reason)).map(|n| n as u64),
            n.as_u64(),
            "{reason}:\n{m}"
        );
    }
    for (reason, n) in [("header_again", 1), ("nodata", 1), ("skipdata", 1)] {
        assert_eq!(want[reason].as_u64(), Some(n), "{counts}");
    }
    assert_eq!(
        sample(&m, r#"portwatch_sensor_source_info{sensor_kind="flow"}"#),
        Some(1.0),
        "{m}"
    );
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    let followed = observed_events(&events);
    assert!(!followed.is_empty());
    assert_eq!(followed, observed_events(&replay_events));
}

/// Runs `watch` (its stdout into `dir`/stdout) until it prints `needle` or
/// `within` passes, then stops it with SIGINT: what it printed, and its exit.
fn watch_until(
    mut watch: Command,
    dir: &Path,
    needle: &str,
    within: Duration,
) -> (String, std::process::Output) {
    let out = dir.join("stdout");
    let mut child = watch
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let printed = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("watch exited ({status}) before printing {needle}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stopped = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    (printed, child.wait_with_output().unwrap())
}

#[test]
fn watch_follow_alone_prints_the_logs_findings() {
    let dir = TempDir::new("follow-watch");
    let site = site(&dir.0, None);
    let log = dir.0.join("pfirewall.log");
    // Already there: read from its start (--follow-from start); the proxy
    // opening a port the model does not have on central.
    append(
        &log,
        &format!(
            "{HEADER}2026-01-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 40000 9999 0 - 0 0 0 - - - SEND\r\n"
        ),
    );
    let mut watch = Command::new(bin());
    watch
        .args(["watch", "--site"])
        .arg(&site)
        .arg("--follow")
        .arg(&log)
        .args(["--follow-from", "start", "--timezone", "UTC"]);
    let (printed, done) = watch_until(watch, &dir.0, "unexpected", Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(printed.contains("unexpected"), "{printed}\n{stderr}");
    assert!(printed.contains("192.0.2.11"), "{printed}");
    assert_eq!(done.status.code(), Some(1), "a finding: {stderr}");
}

/// A record appended just before SIGINT is read at the stop: its finding
/// is in the closing report (the file is looked at every 250 ms, so
/// without that last read it would be missed).
#[test]
fn watch_follow_reads_what_was_appended_before_the_stop() {
    let dir = TempDir::new("follow-watch-stop");
    let site = site(&dir.0, None);
    let log = dir.0.join("pfirewall.log");
    let finding = |port: u16| {
        format!("2026-01-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 40000 {port} 0 - 0 0 0 - - - SEND\r\n")
    };
    append(&log, &format!("{HEADER}{}", finding(9999)));
    let out = dir.0.join("stdout");
    let child = Command::new(bin())
        .args(["watch", "--site"])
        .arg(&site)
        .arg("--follow")
        .arg(&log)
        .args(["--follow-from", "start", "--timezone", "UTC"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll_until("the first finding printed", Duration::from_secs(20), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("9999"))
    });
    append(&log, &finding(9998));
    let stopped = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("port 9999 ["), "{stderr}");
    assert!(
        stderr.contains("port 9998 ["),
        "the last record's finding: {stderr}"
    );
    assert_eq!(done.status.code(), Some(1), "{stderr}");
}

#[test]
fn watch_follow_prints_a_vpc_flow_logs_findings_and_counts() {
    let dir = TempDir::new("follow-vpc-watch");
    let log = dir.0.join("vpc.log");
    std::fs::write(&log, vpc_log()).unwrap();
    let mut watch = Command::new(bin());
    watch
        .args(["watch", "--site", "multi-node", "--follow"])
        .arg(&log)
        .args(["--follow-from", "start"]);
    // The connections' joins go out after their wait; then the finding.
    let (printed, done) = watch_until(watch, &dir.0, "52.213.180.42", Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(printed.contains("unknown_host"), "{printed}\n{stderr}");
    assert_eq!(done.status.code(), Some(1), "a finding: {stderr}");
    // The closing summary: the format, the header again and the gaps.
    assert!(stderr.contains("vpc.log (vpc_flow): "), "{stderr}");
    for want in ["header_again=1", "nodata=1", "skipdata=1"] {
        assert!(stderr.contains(want), "no {want} in {stderr}");
    }
}

/// A VPC record read just before SIGTERM, whose connection's other
/// direction is not logged yet (held up to 5 s for it), goes out at the
/// stop: its unknown-host finding is in the closing report.
#[test]
fn run_follow_releases_a_held_vpc_record_at_the_stop() {
    let dir = TempDir::new("follow-vpc-stop");
    let log = dir.0.join("vpc.log");
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10;
    std::fs::write(
        &log,
        format!(
            "version interface-id srcaddr dstaddr srcport dstport protocol start end action log-status\n\
             3 eni-c 52.213.180.42 192.0.2.10 50001 443 6 {t} {t} ACCEPT OK\n"
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        "multi-node".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--follow".as_ref(),
        log.as_os_str(),
        "--follow-from".as_ref(),
        "start".as_ref(),
    ]);
    let held = r#"portwatch_records_total{format="vpc_flow",node="central",reason="tcp"}"#;
    d.wait_metrics("the record read and held", |m| sample(m, held) == Some(1.0));
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    let r = closing_summary(&stderr);
    let unknown = (r["findings"].as_array().expect("findings").iter())
        .filter(|f| f["kind"] == "unknown_host" && f["src_addr"] == "52.213.180.42")
        .count();
    assert_eq!(unknown, 1, "{r}");
}

/// Each listed edge `src->dst:port` of a report: its state and reason.
fn edge_verdicts(r: &Value) -> BTreeMap<String, (String, String)> {
    (r["edges"].as_array().expect("edges").iter())
        .map(|e| {
            let k = format!("{}->{}:{}", e["src"], e["dst"], e["port"]).replace('"', "");
            let s = |f: &str| e[f].as_str().unwrap_or_default().to_string();
            (k, (s("state"), s("reason")))
        })
        .collect()
}

/// A VPC flow log of engine1's interface covers engine1, not the peers its
/// records carry: `run --follow` of the growing log judges only engine1's
/// edges (proxy -> engine1:4747, 1 s window, is `missing`) and lists
/// central's engine2 -> central:4242 as `not_observed`, outside what the
/// log covers, as `replay` of the whole file does.
#[test]
fn run_follow_of_a_vpc_flow_log_covers_the_owner_of_its_interface_as_replay_does() {
    let dir = TempDir::new("follow-vpc-cover");
    let base = std::fs::read_to_string(crate::golden::root().join("deploy/sites/multi-node.yaml"))
        .expect("the multi-node site");
    let site = dir.0.join("site.yaml");
    std::fs::write(
        &site,
        format!(
            "{base}overrides:\n  - from: engine2\n    to: central\n    port: 4242\n    window: 1s\n  \
             - from: proxy\n    to: engine1\n    port: 4747\n    required: true\n    window: 1s\n"
        ),
    )
    .unwrap();
    let site = site.to_str().unwrap();
    // Ten seconds of engine1's interface: central and proxy are its peers
    // (on a port no edge is about), engine1 the end of every record.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10;
    let mut text = String::from(
        "version interface-id srcaddr dstaddr srcport dstport protocol start end action log-status\n",
    );
    for (dt, src, dst, sport, dport) in [
        (0, "192.0.2.21", "192.0.2.10", 50001, 5555),
        (0, "192.0.2.10", "192.0.2.21", 5555, 50001),
        (10, "192.0.2.11", "192.0.2.21", 50002, 5555),
    ] {
        let t = t0 + dt;
        text += &format!("3 eni-e {src} {dst} {sport} {dport} 6 {t} {t} ACCEPT OK\n");
    }
    let whole = dir.0.join("whole.log");
    std::fs::write(&whole, &text).unwrap();
    let replay = crate::golden::portwatch(&[
        "replay",
        "--format",
        "json",
        "--site",
        site,
        whole.to_str().unwrap(),
    ]);
    assert!(matches!(replay.code, Some(0 | 1)), "{}", replay.stderr);
    let replayed = edge_verdicts(&replay.json());

    let log = dir.0.join("vpc.log");
    let mut d = Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        site.as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--follow".as_ref(),
        log.as_os_str(),
    ]);
    let missing = r#"portwatch_followed_file_changes_total{change="missing",node="unknown"}"#;
    d.wait_metrics("the missing log", |m| sample(m, missing) == Some(1.0));
    append_split(&log, &text);
    // Once the joins are out, every observation has been fed.
    let observed = |m: &str| -> f64 {
        (m.lines())
            .filter(|l| l.starts_with("portwatch_records_total{"))
            .filter(|l| l.contains(r#"format="vpc_flow""#) && l.contains(r#"reason="observed""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let m = d.wait_metrics("the two connections observed", |m| observed(m) == 2.0);
    let judged = edges(&m);
    assert!(
        judged.iter().all(|e| e.contains(r#""engine1""#)),
        "only engine1's edges: {judged:?}"
    );
    // Longer than the 1 s windows.
    std::thread::sleep(Duration::from_millis(1500));
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");
    let followed = edge_verdicts(&closing_summary(&stderr));

    let outside = (
        "not_observed".to_string(),
        "outside what the flow logs cover: the interfaces of engine1".to_string(),
    );
    for (name, got) in [("replay", &replayed), ("run --follow", &followed)] {
        assert_eq!(
            got.get("proxy->engine1:4747").map(|v| v.0.as_str()),
            Some("missing"),
            "{name}: {got:?}"
        );
        assert_eq!(
            got.get("engine2->central:4242"),
            Some(&outside),
            "{name}: {got:?}"
        );
    }
    assert_eq!(
        followed.keys().collect::<Vec<_>>(),
        replayed.keys().collect::<Vec<_>>(),
        "the same required edges listed"
    );
}
