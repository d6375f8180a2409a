//! Windows nodes' own logs as sensors: `replay` of `pfirewall.log` files
//! written here for a node of the multi-node site, alone and mixed with a
//! capture: findings, blocked edges citing the firewall, coverage of the
//! node's edges, lost events, time zones, and exit statuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{bin, fixture, TempDir};

const HEADER: &str = "#Version: 1.5\r\n#Software: Microsoft Windows Firewall\r\n#Time Format: Local\r\n\
#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path\r\n";

/// The multi-node site with `timezone:` on the proxy node.
pub fn site(dir: &Path, timezone: Option<&str>) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sites/multi-node.yaml"),
    )
    .unwrap();
    let tz = timezone.map_or(String::new(), |z| format!("\n    timezone: {z}"));
    let text = text.replacen(
        "    services: [qps, qrs, qsd]",
        &format!("    services: [qps, qrs, qsd]{tz}"),
        1,
    );
    let p = dir.join("site.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The proxy's log (192.0.2.11), Berlin winter time (UTC+1): 10:00 local
/// is 09:00Z.
fn proxy_log(extra: &str) -> String {
    let lines = [
        "2026-01-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND",
        "2026-01-05 10:00:05 DROP TCP 192.0.2.11 192.0.2.10 50001 4432 52 S 1 0 8192 - - - SEND",
        "2026-01-05 10:00:10 ALLOW TCP 198.51.100.7 192.0.2.11 50002 443 0 - 0 0 0 - - - RECEIVE",
        "2026-01-05 10:00:20 ALLOW TCP 198.51.100.7 192.0.2.11 50003 4747 0 - 0 0 0 - - - RECEIVE",
        "2026-01-05 11:25:00 ALLOW TCP 192.0.2.11 192.0.2.10 50004 4242 0 - 0 0 0 - - - SEND",
        "2026-01-05 11:30:00 ALLOW UDP 192.0.2.11 192.0.2.10 50005 53 0 - - - - - - - SEND",
    ];
    format!("{HEADER}{}\r\n{extra}", lines.join("\r\n"))
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn replay(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let out = Command::new(bin())
        .arg("replay")
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stderr))
}

fn edge_states(r: &Value) -> Vec<(String, String, u64, String)> {
    r["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("src"), s("dst"), e["port"].as_u64().unwrap(), s("state"))
        })
        .collect()
}

fn edge(src: &str, dst: &str, port: u64, state: &str) -> (String, String, u64, String) {
    (src.into(), dst.into(), port, state.into())
}

#[test]
fn a_node_log_alone_gives_findings_blocked_edges_and_covers_its_node() {
    let dir = TempDir::new("pfw-alone");
    let site = site(&dir.0, Some("Europe/Berlin"));
    let log = dir.0.join("pfirewall.log");
    std::fs::write(&log, proxy_log("")).unwrap();
    let run = replay(&[&log, &"--site", &site, &"--format", &"json"]);
    assert_eq!(run.code, Some(1), "findings: {}", run.stderr);
    let r = json(&run);

    let src = &r["capture"]["sources"][0];
    assert_eq!(src["format"], "pfirewall");
    assert_eq!(src["fidelity"]["kind"], "firewall_log");
    assert_eq!(src["fidelity"]["sensor"], "proxy");
    assert_eq!(src["fidelity"]["handshake"], false);
    assert_eq!(src["fidelity"]["records"]["observed"], 5);
    assert_eq!(src["fidelity"]["records"]["not_tcp"], 1);
    assert_eq!(r["capture"]["first_seen"], "2026-01-05T09:00:00.000000Z");
    assert_eq!(r["capture"]["last_seen"], "2026-01-05T10:30:00.000000Z");
    // A firewall log tells permitted and denied, never established.
    assert_eq!(
        r["summary"]["outcomes"],
        serde_json::json!({"denied": 1, "permitted": 4})
    );

    let blocked: Vec<&Value> = (r["findings"].as_array().unwrap().iter())
        .filter(|f| f["kind"] == "blocked")
        .collect();
    let [b] = blocked[..] else {
        panic!("{blocked:?}")
    };
    assert_eq!(
        (&b["src"], &b["dst"], &b["port"]),
        (&"proxy".into(), &"central".into(), &4432.into())
    );
    let why = b["explanation"].as_str().unwrap();
    assert!(
        why.starts_with("blocked: denied by the node's firewall 1x"),
        "{why}"
    );
    assert!(
        (r["findings"].as_array().unwrap().iter())
            .any(|f| f["kind"] == "unexpected" && f["dst"] == "proxy" && f["port"] == 4747),
        "{}",
        r["findings"]
    );

    // The proxy's log covers the proxy's required edges only; the span
    // (90 minutes) judges them.
    assert_eq!(
        edge_states(&r),
        [
            edge("central", "proxy", 4242, "missing"),
            edge("proxy", "central", 4242, "seen"),
            edge("proxy", "central", 4432, "missing"),
        ]
    );

    // The table and the HTML page show the source's fidelity.
    let table = replay(&[&log, &"--site", &site]);
    assert!(
        table.stdout.contains("(pfirewall): 6 records"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains(
            "firewall_log (node proxy): outcomes permitted denied; blind to handshake host_rst"
        ),
        "{}",
        table.stdout
    );
    let html = replay(&[&log, &"--site", &site, &"--format", &"html"]);
    assert!(
        html.stdout.contains("<th>fidelity</th><td>sees attempts"),
        "no fidelity row"
    );
}

/// Lost events in a window: the log cannot prove an edge missing there.
#[test]
fn lost_events_make_missing_edges_not_observed() {
    let dir = TempDir::new("pfw-lost");
    let site = site(&dir.0, Some("Europe/Berlin"));
    let log = dir.0.join("pfirewall.log");
    let lost = "2026-01-05 11:20:00 INFO-EVENTS-LOST - - - - - - - - - - - - 3 -\r\n";
    std::fs::write(&log, proxy_log(&format!("\r\n{lost}"))).unwrap();
    let r = json(&replay(&[&log, &"--site", &site, &"--format", &"json"]));
    assert_eq!(
        r["capture"]["sources"][0]["fidelity"]["records"]["events_lost"],
        3
    );
    assert_eq!(
        edge_states(&r),
        [
            edge("central", "proxy", 4242, "not_observed"),
            edge("proxy", "central", 4242, "seen"),
            edge("proxy", "central", 4432, "not_observed"),
        ]
    );
}

/// A log and a capture in one replay, merged in time order: both sources in
/// the report, each outcome from the source that can tell it.
#[test]
fn logs_and_captures_mix() {
    let dir = TempDir::new("pfw-mix");
    let site = site(&dir.0, None);
    let log = dir.0.join("pfirewall.log");
    std::fs::write(&log, proxy_log("")).unwrap();
    let pcap = fixture("blocked-refused.pcap");
    let run = replay(&[
        &pcap,
        &log,
        &"--site",
        &site,
        &"--timezone",
        &"Europe/Berlin",
        &"--format",
        &"json",
    ]);
    let r = json(&run);
    let sources = r["capture"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["format"], "pcap");
    assert!(sources[0].get("fidelity").is_none());
    assert_eq!(sources[1]["fidelity"]["sensor"], "proxy");
    let o = &r["summary"]["outcomes"];
    assert_eq!(
        (o["established"].as_u64(), o["refused"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (o["permitted"].as_u64(), o["denied"].as_u64()),
        (Some(4), Some(1))
    );
    // The capture (09:00:01Z to 09:00:03Z) falls within the log's span.
    assert_eq!(r["capture"]["first_seen"], "2026-01-05T09:00:00.000000Z");
}

#[test]
fn a_log_without_a_time_zone_is_refused_and_a_cut_log_exits_3() {
    let dir = TempDir::new("pfw-bad");
    let site = site(&dir.0, None);
    let log = dir.0.join("pfirewall.log");
    std::fs::write(&log, proxy_log("")).unwrap();
    let run = replay(&[&log, &"--site", &site]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    for needle in ["pfirewall.log", "node `proxy`", "timezone:", "--timezone"] {
        assert!(run.stderr.contains(needle), "{}", run.stderr);
    }
    let bad = replay(&[&log, &"--site", &site, &"--timezone", &"Mars/Olympus"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--timezone Mars/Olympus"),
        "{}",
        bad.stderr
    );

    let mut text = proxy_log("");
    text.push_str("\r\n2026-01-05 11:31:00 ALLOW TCP 192.0.2.11 192.0");
    std::fs::write(&log, &text).unwrap();
    let run = replay(&[
        &log,
        &"--site",
        &site,
        &"--timezone",
        &"Europe/Berlin",
        &"--format",
        &"json",
    ]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let r = json(&run);
    let cut = text.rfind("2026-01-05 11:31:00").unwrap();
    assert_eq!(r["capture"]["sources"][0]["stopped"]["offset"], cut as u64);
    assert_eq!(r["capture"]["truncated"], true);
    assert!(run.stderr.contains("stopped at byte"), "{}", run.stderr);
}

/// A node's `timezone:` must be an IANA name: a bad one names file, line
/// and field, and exits 2.
#[test]
fn a_bad_timezone_in_the_site_file_is_located() {
    let dir = TempDir::new("pfw-site");
    let site = site(&dir.0, Some("Europe/Atlantis"));
    let out = Command::new(bin())
        .args(["check", "--site"])
        .arg(&site)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodes[0].timezone"), "{err}");
    assert!(err.contains("site.yaml:"), "{err}");
}
