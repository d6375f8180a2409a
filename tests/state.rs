//! `run --state-dir`: a daemon killed with SIGKILL mid-run and started again
//! on the same directory goes on from the state it last wrote. It follows
//! the proxy's firewall log (lines written by the test, stamped with the
//! wall clock, which is the daemon's clock too), so no root is needed.
//!
//! Three required edges touch the proxy; the site shortens their windows:
//! proxy -> central:4242 (30 s) has evidence in the first run only,
//! proxy -> central:4432 (3 s) never has any and goes missing in the first
//! run, central -> proxy:4242 is optional in the first run and required
//! with a 4 s window in the second, where it has no evidence: its going
//! missing shows the second run has watched longer than a whole window of
//! the 3 s edge. Every wait polls for a condition, with a deadline.
//!
//! Reported as new once: the event log's alert for the finding has
//! occurrence 1 only once, the edge missing before the kill is not alerted
//! again, and the finding's `portwatch_finding_active` series is at 1 from
//! the restart on (its alert keeps firing instead of resolving and firing
//! again).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{sample, Daemon, TempDir};

const HEADER: &str = "#Version: 1.5\r\n#Software: Microsoft Windows Firewall\r\n#Time Format: Local\r\n\
#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path\r\n";

const EVIDENCED: &str = r#"{dst="central",port="4242",service="qrs",src="proxy"}"#;
const NEVER: &str = r#"{dst="central",port="4432",service="qrd",src="proxy"}"#;
const LATE: &str = r#"{dst="proxy",port="4242",service="qrs",src="central"}"#;
const ACTIVE: &str = r#"portwatch_finding_active{accepted="false",dst="proxy",finding="unexpected",port="4747",service="qes",src="corp-users"}"#;
const FINDING_SEEN: &str = r#"portwatch_finding_last_seen_timestamp_seconds{accepted="false",dst="proxy",finding="unexpected",port="4747",service="qes",src="corp-users"}"#;
const UNEXPECTED: &str = r#"portwatch_connections_total{dst="proxy",port="4747",service="qes",src="corp-users",verdict="unexpected"}"#;

/// The multi-node site with the windows above; `late` makes central ->
/// proxy:4242 required with a 4 s window, else optional.
fn site(dir: &Path, late: bool) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sites/multi-node.yaml"),
    )
    .unwrap();
    let third = match late {
        true => "window: 4s",
        false => "required: false",
    };
    let text = format!(
        "{text}\noverrides:\n\
         \x20 - {{from: proxy, to: central, port: 4242, window: 30s}}\n\
         \x20 - {{from: proxy, to: central, port: 4432, window: 3s}}\n\
         \x20 - {{from: central, to: proxy, port: 4242, {third}}}\n"
    );
    let p = dir.join(format!("site-{late}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// A firewall log line of the proxy, stamped now (UTC).
fn line(action_src_dst_port: (&str, &str, &str, u16), client_port: u16, path: &str) -> String {
    let (action, src, dst, port) = action_src_dst_port;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp = now.trim_end_matches('Z').replacen('T', " ", 1);
    format!("{stamp} {action} TCP {src} {dst} {client_port} {port} 0 - 0 0 0 - - - {path}\r\n")
}

fn append(path: &Path, text: &str) {
    let mut f = (OpenOptions::new().create(true).append(true).open(path)).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The proxy opening QRS on central: evidence of the 30 s edge.
fn evidence(client_port: u16) -> String {
    line(
        ("ALLOW", "192.0.2.11", "192.0.2.10", 4242),
        client_port,
        "SEND",
    )
}

/// A user reaching the engine port of the proxy: an `unexpected` finding.
fn intrusion(client_port: u16) -> String {
    line(
        ("ALLOW", "198.51.100.7", "192.0.2.11", 4747),
        client_port,
        "RECEIVE",
    )
}

fn start(site: &Path, log: &Path, events: &Path, state: &Path) -> Daemon {
    Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        site.as_os_str(),
        "--follow".as_ref(),
        log.as_os_str(),
        // The test may write the log before the daemon first looks.
        "--follow-from".as_ref(),
        "start".as_ref(),
        "--timezone".as_ref(),
        "UTC".as_ref(),
        "--events".as_ref(),
        events.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--state-interval".as_ref(),
        "1s".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
    ])
}

/// Poll `f` until it gives a value (deadline 60 s; the machine may be busy).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The event log's alert lines, as (action, portwatch.dst, portwatch.port,
/// occurrence).
fn alerts(events: &Path) -> Vec<(String, String, u64, u64)> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    (text.lines())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"]["kind"] == "alert")
        .map(|v| {
            let pw = &v["portwatch"];
            (
                v["event"]["action"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}>{}",
                    pw["src"].as_str().unwrap_or("?"),
                    pw["dst"].as_str().unwrap_or("?")
                ),
                // Edges name their port, findings their destination's.
                (pw["port"].as_u64())
                    .or(v["destination"]["port"].as_u64())
                    .unwrap_or(0),
                pw["occurrence"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn count(alerts: &[(String, String, u64, u64)], action: &str, port: u64, occurrence: u64) -> usize {
    (alerts.iter())
        .filter(|a| a.0 == action && a.2 == port && a.3 == occurrence)
        .count()
}

#[test]
fn a_sigkilled_daemon_restarts_from_its_state_dir() {
    let dir = TempDir::new("state-restart");
    let events = dir.0.join("events.ndjson");
    // Made by the daemon (and given to the user it runs as).
    let state = dir.0.join("state");
    let state_file = state.join("state.json");

    // First run: evidence of one edge, one finding, one edge missing.
    let log1 = dir.0.join("run1.log");
    let mut d = start(&site(&dir.0, false), &log1, &events, &state);
    append(
        &log1,
        &format!("{HEADER}{}{}", evidence(40_001), intrusion(40_002)),
    );
    let m = d.wait_metrics("the evidence, the finding, the missing edge", |m| {
        sample(m, UNEXPECTED) == Some(1.0)
            && sample(m, &format!("portwatch_edge_missing{NEVER}")) == Some(1.0)
            && sample(
                m,
                &format!("portwatch_edge_last_seen_timestamp_seconds{EVIDENCED}"),
            )
            .is_some_and(|v| v > 0.0)
    });
    let last_seen = sample(
        &m,
        &format!("portwatch_edge_last_seen_timestamp_seconds{EVIDENCED}"),
    );
    let finding_seen = sample(&m, FINDING_SEEN);
    assert_eq!(sample(&m, ACTIVE), Some(1.0), "{m}");
    // A state write that holds all three.
    wait_for(
        "a state write with the finding and the missing edge",
        || {
            let v: Value = serde_json::from_slice(&std::fs::read(&state_file).ok()?).ok()?;
            let edges = v["edges"].as_array()?;
            let missing = edges
                .iter()
                .any(|e| e["port"] == 4432 && e["missing"] == true);
            let seen = edges
                .iter()
                .any(|e| e["port"] == 4242 && e["last_ns"].is_u64());
            let reported = v["reported"].as_array()?.iter().any(|r| r["port"] == 4747);
            let found = v["findings"].as_array()?.iter().any(|f| f["port"] == 4747);
            let alert = v["alerts"].as_array()?.iter().any(|a| a["port"] == "4747");
            (missing && seen && reported && found && alert).then_some(())
        },
    );
    let m = d.metrics();
    assert!(
        sample(&m, r#"portwatch_state_writes_total{result="written"}"#).is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"portwatch_state_writes_total{result="failed"}"#),
        Some(0.0),
        "{m}"
    );
    assert!(
        sample(&m, "portwatch_state_last_write_timestamp_seconds").is_some_and(|t| t > 1e9),
        "{m}"
    );
    d.signal("KILL");
    let (status, _, log) = d.wait_exit();
    assert_eq!(status.code(), None, "killed by a signal: {log}");
    let first = alerts(&events);
    assert_eq!(
        count(&first, "unexpected-connection", 4747, 1),
        1,
        "{first:?}"
    );
    assert_eq!(
        count(&first, "required-edge-missing", 4432, 0),
        1,
        "{first:?}"
    );

    // Second run, same directory, a new log: the finding happens again.
    let log2 = dir.0.join("run2.log");
    let mut d = start(&site(&dir.0, true), &log2, &events, &state);
    // Before anything new: the finding's alert series is back, held at 1
    // with its time (its alert goes on firing, it does not fire anew).
    let m = d.wait_metrics("the finding's series", |m| sample(m, ACTIVE).is_some());
    assert_eq!(sample(&m, ACTIVE), Some(1.0), "{m}");
    assert_eq!(sample(&m, FINDING_SEEN), finding_seen, "{m}");
    append(&log2, &format!("{HEADER}{}", intrusion(40_003)));
    // Judged once the log names its node: the restored evidence is the
    // edge's last-seen time from then on (none came in this run).
    let m = d.wait_metrics("the finding again, the edges judged", |m| {
        sample(m, UNEXPECTED) == Some(1.0)
            && sample(m, &format!("portwatch_edge_missing{NEVER}")) == Some(1.0)
            && sample(
                m,
                &format!("portwatch_edge_last_seen_timestamp_seconds{EVIDENCED}"),
            )
            .is_some_and(|v| v > 0.0)
    });
    // The evidence of the first run is the edge's, no new evidence came.
    assert_eq!(
        sample(
            &m,
            &format!("portwatch_edge_last_seen_timestamp_seconds{EVIDENCED}")
        ),
        last_seen,
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("portwatch_edge_missing{EVIDENCED}")),
        Some(0.0),
        "{m}"
    );
    // Missing before the restart, still missing: no evidence came since.
    assert_eq!(
        sample(&m, &format!("portwatch_edge_missing{NEVER}")),
        Some(1.0),
        "{m}"
    );
    let text = d.log_text();
    assert!(text.contains("state restored"), "{text}");
    // A whole window of the 3 s edge has passed once the 4 s edge, never
    // seen, is missing.
    d.wait_metrics("the 4 s edge missing", |m| {
        sample(m, &format!("portwatch_edge_missing{LATE}")) == Some(1.0)
    });
    d.signal("TERM");
    let (status, _, stderr) = d.wait_exit();
    assert!(status.success(), "{stderr}");

    let all = alerts(&events);
    assert_eq!(
        count(&all, "unexpected-connection", 4747, 1),
        1,
        "the finding was reported as new once: {all:?}"
    );
    assert_eq!(
        count(&all, "required-edge-missing", 4432, 0),
        1,
        "the edge missing before the restart was not reported again: {all:?}"
    );
    assert_eq!(
        (all.iter())
            .filter(|a| a.0 == "required-edge-missing" && a.1 == "central>proxy")
            .count(),
        1,
        "{all:?}"
    );
    assert_eq!(
        (all.iter())
            .filter(|a| a.0 == "required-edge-missing" && a.1 == "proxy>central" && a.2 == 4242)
            .count(),
        0,
        "the edge with evidence in its window is not missing: {all:?}"
    );
    // The closing report: the finding's two occurrences, the first one's
    // time kept; the edge seen on the first run's evidence.
    let json_start = stderr.find("\n{").unwrap_or_else(|| panic!("{stderr}")) + 1;
    let report: Value = serde_json::Deserializer::from_str(&stderr[json_start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    let finding = (report["findings"].as_array().unwrap().iter())
        .find(|f| f["port"] == 4747)
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(finding["count"], 2, "{finding}");
    let edge = (report["edges"].as_array().unwrap().iter())
        .find(|e| e["src"] == "proxy" && e["dst"] == "central" && e["port"] == 4242)
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(edge["state"], "seen", "{edge}");
}

/// A state file that cannot be taken is named in one log line and set
/// aside; the daemon starts all the same.
#[test]
fn a_corrupt_state_file_is_set_aside_not_fatal() {
    let dir = TempDir::new("state-corrupt");
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("state.json"),
        b"{\"format\":\"portwatch-state\",\"version\":1,\"ident",
    )
    .unwrap();
    // Started as root, the daemon runs as nobody: the directory must be
    // that user's (as systemd's StateDirectory= makes it).
    if nix::unistd::Uid::effective().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    }
    let log = dir.0.join("run.log");
    let events = dir.0.join("events.ndjson");
    let d = start(&site(&dir.0, false), &log, &events, &state);
    let line = wait_for("the log line on the state file", || {
        let text = d.log_text();
        (text.lines())
            .find(|l| l.contains("state file not used"))
            .map(str::to_string)
    });
    assert!(
        line.contains("state.json") && line.contains("truncated"),
        "{line}"
    );
    let aside: Vec<String> = (std::fs::read_dir(&state).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    // Counted by reason; it goes on writing its own state there.
    let mut d = d;
    d.wait_metrics("the rejection counted", |m| {
        sample(
            m,
            r#"portwatch_state_files_rejected_total{reason="truncated"}"#,
        ) == Some(1.0)
            && sample(
                m,
                r#"portwatch_state_files_rejected_total{reason="other_model"}"#,
            ) == Some(0.0)
    });
    wait_for("a new state file", || {
        state.join("state.json").exists().then_some(())
    });
}

/// Started as root, `run` goes on as `--user` (nobody): an existing state
/// directory that user cannot write is bad input at start (exit 2, the
/// directory named), not a surprise at the first write; it is not given
/// away either (only a directory `run` made itself is).
#[test]
fn a_state_dir_the_user_cannot_write_is_refused_at_start() {
    if !nix::unistd::Uid::effective().is_root() {
        crate::util::skip(
            "a_state_dir_the_user_cannot_write_is_refused_at_start",
            "needs root (the switch to --user nobody)",
        );
        return;
    }
    let dir = TempDir::new("state-unwritable");
    let state = dir.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let pcap = crate::util::fixture("demo.pcap");
    let d = Daemon::start(&[
        "run".as_ref(),
        "--site".as_ref(),
        "multi-node".as_ref(),
        "--replay".as_ref(),
        pcap.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    let (status, _, stderr) = d.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let line = (stderr.lines())
        .find(|l| l.contains("state directory"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains(&*state.to_string_lossy()) && line.contains("ermission denied"),
        "{line}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), 0, "still root's");
}
