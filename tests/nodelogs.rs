//! The same site seen two ways: `fixtures/nodelogs.pcap` replayed, and the
//! logs its five nodes would have written of the same traffic
//! (`fixtures/nodelogs/`: each node's `pfirewall.log` in its local time and
//! its 5156/5157 events as Winlogbeat ships them) replayed with the site.
//! Findings kind by kind (count and outcomes), connections by verdict, SYN
//! retransmissions and required edges are compared. Every difference must
//! be a row of [`expected_differences`], which says why (the README's
//! fidelity table); every row must be observed. The firewall logs alone,
//! the events alone and all of them together must each differ from the
//! capture in exactly these ways: an edge between two nodes is logged by
//! both ends (and a node's two logs both log it), and it counts once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::golden::{portwatch, Run};

const PCAP: &str = "fixtures/nodelogs.pcap";
const SITE: &str = "fixtures/nodelogs/site.yaml";
const NODES: [&str; 5] = ["proxy", "engine1", "engine2", "central", "scheduler"];

/// A finding as a report names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FindingId {
    kind: String,
    src: String,
    src_addr: String,
    dst: String,
    dst_addr: String,
    port: u64,
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}({}) -> {}({}):{}",
            self.kind, self.src, self.src_addr, self.dst, self.dst_addr, self.port
        )
    }
}

fn finding(
    kind: &str,
    src: &str,
    src_addr: &str,
    dst: &str,
    dst_addr: &str,
    port: u64,
) -> FindingId {
    FindingId {
        kind: kind.into(),
        src: src.into(),
        src_addr: src_addr.into(),
        dst: dst.into(),
        dst_addr: dst_addr.into(),
        port,
    }
}

/// What one report shows, in the terms compared.
#[derive(Debug, Default)]
struct Seen {
    /// Count, and the outcomes that occurred (`refused 5`, comma-separated).
    findings: BTreeMap<FindingId, (u64, String)>,
    connections: BTreeMap<String, u64>,
    retransmissions: u64,
    edges: BTreeMap<String, String>,
}

impl Seen {
    fn of(r: &Value) -> Seen {
        let s = |v: &Value| v.as_str().unwrap_or_else(|| panic!("{v}")).to_string();
        let findings = (r["findings"].as_array().expect("findings").iter())
            .map(|f| {
                let id = FindingId {
                    kind: s(&f["kind"]),
                    src: s(&f["src"]),
                    src_addr: s(&f["src_addr"]),
                    dst: s(&f["dst"]),
                    dst_addr: s(&f["dst_addr"]),
                    port: f["port"].as_u64().unwrap_or(0),
                };
                let outcomes = (f["outcomes"].as_object().into_iter().flatten())
                    .filter(|(_, n)| n.as_u64() > Some(0))
                    .map(|(o, n)| format!("{o} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (id, (f["count"].as_u64().unwrap_or(0), outcomes))
            })
            .collect();
        let connections = (r["summary"]["connections"]
            .as_object()
            .expect("connections"))
        .iter()
        .map(|(v, n)| (v.clone(), n.as_u64().expect("count")))
        .collect();
        let edges = (r["edges"].as_array().expect("edges").iter())
            .map(|e| {
                let edge = format!("{} -> {}:{}", s(&e["src"]), s(&e["dst"]), e["port"]);
                (edge, s(&e["state"]))
            })
            .collect();
        Seen {
            findings,
            connections,
            retransmissions: r["summary"]["syn_retransmissions"]
                .as_u64()
                .expect("retransmissions"),
            edges,
        }
    }
}

/// One way the logs' report differs from the capture's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    OnlyInCapture(FindingId),
    OnlyInLogs(FindingId),
    Count {
        finding: FindingId,
        capture: u64,
        logs: u64,
    },
    Outcomes {
        finding: FindingId,
        capture: String,
        logs: String,
    },
    Connections {
        verdict: String,
        capture: u64,
        logs: u64,
    },
    Retransmissions {
        capture: u64,
        logs: u64,
    },
    EdgeState {
        edge: String,
        capture: String,
        logs: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::OnlyInCapture(id) => write!(f, "only in the capture: {id}"),
            Difference::OnlyInLogs(id) => write!(f, "only in the logs: {id}"),
            Difference::Count {
                finding,
                capture,
                logs,
            } => write!(
                f,
                "{finding}: count {capture} in the capture, {logs} in the logs"
            ),
            Difference::Outcomes {
                finding,
                capture,
                logs,
            } => write!(
                f,
                "{finding}: outcomes `{capture}` in the capture, `{logs}` in the logs"
            ),
            Difference::Connections {
                verdict,
                capture,
                logs,
            } => write!(
                f,
                "{verdict} connections: {capture} in the capture, {logs} in the logs"
            ),
            Difference::Retransmissions { capture, logs } => {
                write!(
                    f,
                    "SYN retransmissions: {capture} in the capture, {logs} in the logs"
                )
            }
            Difference::EdgeState {
                edge,
                capture,
                logs,
            } => write!(
                f,
                "required edge {edge}: {capture} in the capture, {logs} in the logs"
            ),
        }
    }
}

fn differences(capture: &Seen, logs: &Seen) -> BTreeSet<Difference> {
    let mut out = BTreeSet::new();
    for (id, (count, outcomes)) in &capture.findings {
        match logs.findings.get(id) {
            None => {
                out.insert(Difference::OnlyInCapture(id.clone()));
            }
            Some((n, o)) => {
                if n != count {
                    out.insert(Difference::Count {
                        finding: id.clone(),
                        capture: *count,
                        logs: *n,
                    });
                }
                if o != outcomes {
                    out.insert(Difference::Outcomes {
                        finding: id.clone(),
                        capture: outcomes.clone(),
                        logs: o.clone(),
                    });
                }
            }
        }
    }
    for id in logs.findings.keys() {
        if !capture.findings.contains_key(id) {
            out.insert(Difference::OnlyInLogs(id.clone()));
        }
    }
    let verdicts: BTreeSet<&String> = capture
        .connections
        .keys()
        .chain(logs.connections.keys())
        .collect();
    for v in verdicts {
        let (c, l) = (
            capture.connections.get(v).copied().unwrap_or(0),
            logs.connections.get(v).copied().unwrap_or(0),
        );
        if c != l {
            out.insert(Difference::Connections {
                verdict: v.clone(),
                capture: c,
                logs: l,
            });
        }
    }
    if capture.retransmissions != logs.retransmissions {
        out.insert(Difference::Retransmissions {
            capture: capture.retransmissions,
            logs: logs.retransmissions,
        });
    }
    let edges: BTreeSet<&String> = capture.edges.keys().chain(logs.edges.keys()).collect();
    for e in edges {
        let state = |s: &Seen| s.edges.get(e).cloned().unwrap_or_else(|| "absent".into());
        let (c, l) = (state(capture), state(logs));
        if c != l {
            out.insert(Difference::EdgeState {
                edge: e.clone(),
                capture: c,
                logs: l,
            });
        }
    }
    out
}

/// Every way the node logs differ from the capture, with the reason (the
/// README's fidelity table, section "Windows nodes").
fn expected_differences() -> Vec<(Difference, &'static str)> {
    let outcomes = |f: FindingId, capture: &str, logs: &str| Difference::Outcomes {
        finding: f,
        capture: capture.into(),
        logs: logs.into(),
    };
    let fileshare = finding(
        "unknown_host",
        "unknown",
        "192.0.2.99",
        "fileshare",
        "203.0.113.20",
        445,
    );
    vec![
        (
            Difference::OnlyInCapture(finding(
                "blocked",
                "scheduler",
                "192.0.2.31",
                "central",
                "192.0.2.10",
                4242,
            )),
            "refusal by the host (RST, `refused`): logs no. central's firewall let the \
             attempts in (`permitted`); the RST after it is not logged, and a permitted \
             attempt on an expected edge is no finding",
        ),
        (
            Difference::OnlyInCapture(fileshare),
            "a node's log sees the connections of that node only: an unknown host reaching \
             an external touches no node",
        ),
        (
            Difference::Connections {
                verdict: "unknown_host".into(),
                capture: 10,
                logs: 5,
            },
            "as above: the unknown host's five attempts on the fileshare are in no node's log",
        ),
        (
            outcomes(
                finding(
                    "unexpected",
                    "corp-users",
                    "198.51.100.77",
                    "engine1",
                    "192.0.2.21",
                    4747,
                ),
                "established 5",
                "permitted 5",
            ),
            "completed handshake (`established`): logs no; the firewall's decision \
             (`permitted`) is what they see",
        ),
        (
            outcomes(
                finding(
                    "unexpected",
                    "engine2",
                    "192.0.2.22",
                    "engine1",
                    "192.0.2.21",
                    3389,
                ),
                "refused 5",
                "permitted 5",
            ),
            "refusal by the host (RST): logs no; both ends logged the attempt, counted once",
        ),
        (
            outcomes(
                finding(
                    "local_only",
                    "corp-users",
                    "198.51.100.50",
                    "central",
                    "192.0.2.10",
                    4244,
                ),
                "refused 5",
                "permitted 5",
            ),
            "refusal by the host (RST): logs no",
        ),
        (
            outcomes(
                finding(
                    "unknown_host",
                    "unknown",
                    "192.0.2.99",
                    "proxy",
                    "192.0.2.11",
                    22,
                ),
                "refused 5",
                "permitted 5",
            ),
            "refusal by the host (RST): logs no; the unknown host's attempts on a node are \
             in that node's log",
        ),
        (
            outcomes(
                finding(
                    "blocked",
                    "proxy",
                    "192.0.2.11",
                    "engine1",
                    "192.0.2.21",
                    4747,
                ),
                "unanswered 5",
                "denied 5",
            ),
            "the host firewall's decision (`denied`): packets no, logs yes. The silence the \
             capture sees is engine1's firewall dropping the SYNs; proxy's `permitted` (its \
             own firewall let the attempt out) and engine1's drops are one attempt",
        ),
        (
            Difference::Retransmissions {
                capture: 13,
                logs: 10,
            },
            "connection attempts: a firewall log writes one line per allowed connection and \
             one per dropped packet (the events likewise), so the three retransmitted SYNs \
             of attempts that then got through are not seen; the dropped ones are",
        ),
    ]
}

fn replay(files: &[String]) -> Run {
    let mut args = vec!["replay", "--format", "json", "--site", SITE];
    args.extend(files.iter().map(String::as_str));
    portwatch(&args)
}

fn logs(suffix: &str) -> Vec<String> {
    NODES
        .iter()
        .map(|n| format!("fixtures/nodelogs/{n}-{suffix}"))
        .collect()
}

#[test]
fn node_logs_give_the_captures_findings_but_where_the_fidelity_table_says() {
    let run = replay(&[PCAP.to_string()]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let capture = Seen::of(&run.json());
    // The capture has what the logs are compared on.
    for kind in ["unexpected", "local_only", "unknown_host", "blocked"] {
        assert!(
            capture.findings.keys().any(|f| f.kind == kind),
            "no {kind} finding in the capture"
        );
    }
    assert!(
        capture.edges.values().any(|s| s == "missing"),
        "{:?}",
        capture.edges
    );
    let expected: BTreeMap<Difference, &str> = expected_differences().into_iter().collect();

    let firewall = logs("pfirewall.log");
    let events = logs("wfp.ndjson");
    let all: Vec<String> = firewall.iter().chain(&events).cloned().collect();
    let mut failures = Vec::new();
    for (name, files) in [
        ("firewall logs", &firewall),
        ("events", &events),
        ("all logs", &all),
    ] {
        let run = replay(files);
        assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
        let r = run.json();
        let got = differences(&capture, &Seen::of(&r));
        for d in &got {
            if !expected.contains_key(d) {
                failures.push(format!("{name}: not in the table: {d}"));
            }
        }
        for d in expected.keys() {
            if !got.contains(d) {
                failures.push(format!("{name}: in the table, not observed: {d}"));
            }
        }
        // Each file found its node.
        let sources = r["capture"]["sources"].as_array().expect("sources");
        assert_eq!(sources.len(), files.len(), "{name}");
        for (src, file) in sources.iter().zip(files.iter()) {
            let node = NODES
                .iter()
                .find(|n| file.contains(&format!("/{n}-")))
                .expect("node file");
            assert_eq!(src["fidelity"]["sensor"], *node, "{name}: {file}");
            assert_eq!(
                src["fidelity"]["records"].get("ambiguous_inbound"),
                None,
                "{file}"
            );
        }
        // Both ends (and a node's two logs) of one connection: merged.
        assert!(
            r["capture"]["record_duplicates"].as_u64() > Some(0),
            "{name}: {}",
            r["capture"]
        );
    }
    assert!(
        failures.is_empty(),
        "the node logs differ from the capture otherwise than the table says:\n  {}",
        failures.join("\n  ")
    );
}

/// The table's rows are distinct and each has a reason.
#[test]
fn every_expected_difference_says_why() {
    let rows = expected_differences();
    let distinct: BTreeSet<&Difference> = rows.iter().map(|(d, _)| d).collect();
    assert_eq!(distinct.len(), rows.len());
    for (d, why) in &rows {
        assert!(why.len() > 20, "{d}: {why:?}");
    }
}

/// The capture and a node's firewall log replayed together: each
/// connection both saw is one attempt (the capture's count), and a log
/// line that denies what the capture saw established is listed under
/// `disagreements` with both kinds' outcomes, in the table and the HTML
/// page too. The unchanged log has none.
#[test]
fn a_capture_and_a_log_count_once_and_report_where_they_disagree() {
    let attempts = |r: &Value| -> u64 {
        (r["flows"].as_array().unwrap().iter())
            .map(|f| f["attempts"].as_u64().unwrap())
            .sum()
    };
    let capture = attempts(&replay(&[PCAP.to_string()]).json());
    let central = "fixtures/nodelogs/central-pfirewall.log".to_string();
    let both = replay(&[PCAP.to_string(), central.clone()]).json();
    assert_eq!(attempts(&both), capture);
    assert!(both["capture"]["kinds_joined"].as_u64().unwrap() > 0);
    assert!(
        both.get("disagreements").is_none(),
        "{}",
        both["disagreements"]
    );

    let dir = std::env::temp_dir().join(format!("portwatch-disagree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::read_to_string(&central).unwrap();
    let allowed = "ALLOW TCP 192.0.2.31 192.0.2.10 50553 4432";
    assert!(log.contains(allowed));
    let denied = dir.join("central-pfirewall.log");
    std::fs::write(
        &denied,
        log.replacen(allowed, "DROP TCP 192.0.2.31 192.0.2.10 50553 4432", 1),
    )
    .unwrap();
    let denied = denied.display().to_string();
    let files = [PCAP.to_string(), denied.clone()];
    let r = replay(&files).json();
    assert_eq!(attempts(&r), capture);
    let d = r["disagreements"].as_array().expect("disagreements");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (
            &d[0]["src"],
            &d[0]["dst"],
            &d[0]["port"],
            &d[0]["connections"]
        ),
        (
            &"scheduler".into(),
            &"central".into(),
            &4432.into(),
            &1.into()
        )
    );
    assert_eq!(
        d[0]["outcomes"],
        serde_json::json!({"packets": "established", "firewall_log": "denied"})
    );
    let mut args = vec!["replay", "--format", "table", "--site", SITE];
    args.extend(files.iter().map(String::as_str));
    let table = portwatch(&args).stdout;
    assert!(
        table.contains("SOURCES DISAGREE (1)")
            && table.contains("firewall_log=denied packets=established"),
        "{table}"
    );
    args[2] = "html";
    let html = portwatch(&args).stdout;
    assert!(
        html.contains("id=\"disagreements\""),
        "no disagreements section"
    );
    // The flat event log has it as one line.
    let events = dir.join("events.ndjson").display().to_string();
    args[2] = "json";
    args.extend(["--events", &events, "--events-format", "flat"]);
    assert_eq!(portwatch(&args).code, Some(1));
    let lines: Vec<Value> = (std::fs::read_to_string(&events).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["event"] == "disagreement")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (
            &lines[0]["src_port"],
            &lines[0]["dst_port"],
            &lines[0]["outcomes"]["firewall_log"]
        ),
        (&50553.into(), &4432.into(), &"denied".into())
    );
    // The ECS event log (the default) has it as one alert, its fields ECS's.
    let ecs = dir.join("events.ecs.ndjson").display().to_string();
    let n = args.len();
    args[n - 3] = &ecs;
    args[n - 1] = "ecs";
    assert_eq!(portwatch(&args).code, Some(1));
    let docs = crate::events::check_ecs(&std::fs::read_to_string(&ecs).unwrap());
    let lines: Vec<&Value> = (docs.iter())
        .filter(|d| d["event"]["action"] == "outcome-disagreement")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let d = lines[0];
    assert_eq!(
        (
            &d["event"]["kind"],
            &d["event"]["type"],
            &d["source"]["port"],
            &d["destination"]["port"],
            &d["portwatch"]["src"],
            &d["portwatch"]["outcomes"],
        ),
        (
            &"alert".into(),
            &serde_json::json!(["connection", "info"]),
            &50553.into(),
            &4432.into(),
            &"scheduler".into(),
            &serde_json::json!({"packets": "established", "firewall_log": "denied"}),
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
