//! The event log as a SIEM reads it: every ECS field portwatch writes
//! exists in ECS (`../shared/ecs/fields.csv`) with a matching JSON type,
//! categorisation values are ones ECS allows (`allowed_values.json`),
//! Community IDs match the flow, flow ids join a connection to its
//! outcome, findings are alerts; and the file is appended to, flushed while
//! running and reopened on SIGHUP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{bin, demo_run, fixture, skip, Daemon, TempDir};

fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    skip("events", &format!("{} is missing", p.display()));
    None
}

/// ECS field name -> ECS type, from ECS's generated field list.
fn ecs_fields(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (fi, ti) = (
        header.iter().position(|h| *h == "Field").unwrap(),
        header.iter().position(|h| *h == "Type").unwrap(),
    );
    // Field names and types never contain commas or quotes; later columns may.
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c.len() > ti)
        .map(|c| (c[fi].to_string(), c[ti].to_string()))
        .collect()
}

/// Every leaf of `v` as (dotted path, value); arrays are leaves.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = match prefix.is_empty() {
                    true => k.clone(),
                    false => format!("{prefix}.{k}"),
                };
                flatten(&p, v, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

/// Does a JSON value have the ECS type `ty`?
fn type_matches(ty: &str, v: &Value) -> Result<(), String> {
    if let Value::Array(items) = v {
        // ECS: any field may hold an array of values of its type.
        return items.iter().try_for_each(|i| type_matches(ty, i));
    }
    let ok = match ty {
        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" => v.is_string(),
        "long" | "integer" | "short" | "byte" | "unsigned_long" => v.is_u64() || v.is_i64(),
        "float" | "double" | "scaled_float" | "half_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        "ip" => v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
        "date" => v.as_str().is_some_and(is_rfc3339_with_zone),
        other => return Err(format!("type {other} not expected for a leaf")),
    };
    match ok {
        true => Ok(()),
        false => Err(format!("{v} is not an ECS {ty}")),
    }
}

fn is_rfc3339_with_zone(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    s.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s.ends_with('Z') || s[19..].contains('+') || s[19..].contains('-'))
}

/// Check every line against ECS; returns the parsed documents.
pub fn check_ecs(lines: &str) -> Vec<Value> {
    let Some(fields_csv) = shared("ecs/fields.csv") else {
        return parse_lines(lines);
    };
    let allowed_path = shared("ecs/allowed_values.json").unwrap();
    let fields = ecs_fields(&fields_csv);
    let allowed: Value =
        serde_json::from_str(&std::fs::read_to_string(allowed_path).unwrap()).unwrap();
    let allowed_set = |k: &str| -> BTreeSet<String> {
        allowed[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (kinds, categories, types, outcomes) = (
        allowed_set("event.kind"),
        allowed_set("event.category"),
        allowed_set("event.type"),
        allowed_set("event.outcome"),
    );
    let docs = parse_lines(lines);
    let mut seen_fields = BTreeSet::new();
    for d in &docs {
        let mut leaves = Vec::new();
        flatten("", d, &mut leaves);
        for (name, v) in &leaves {
            if name.starts_with("portwatch.") {
                continue;
            }
            let ty = fields
                .get(name)
                .unwrap_or_else(|| panic!("`{name}` is not an ECS field: {d}"));
            type_matches(ty, v).unwrap_or_else(|e| panic!("`{name}`: {e}: {d}"));
            seen_fields.insert(name.clone());
        }
        let strs = |k: &str| -> Vec<String> {
            match &d["event"][k] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
                Value::Null => vec![],
                other => panic!("event.{k}: {other}"),
            }
        };
        let kind = strs("kind");
        assert_eq!(kind.len(), 1, "{d}");
        assert!(kinds.contains(&kind[0]), "event.kind {kind:?}");
        let cats = strs("category");
        assert_eq!(cats, ["network"], "{d}");
        assert!(cats.iter().all(|c| categories.contains(c)));
        for o in strs("outcome") {
            assert!(outcomes.contains(&o), "event.outcome {o}");
        }
        for t in strs("type") {
            assert!(types.contains(&t), "event.type {t}");
            for c in &cats {
                let expected = &allowed["event.category expected event.type"][c];
                assert!(
                    expected.as_array().unwrap().iter().any(|e| e == &t),
                    "event.type {t} is not expected with category {c}: {d}"
                );
            }
        }
    }
    for f in [
        "@timestamp",
        "ecs.version",
        "event.kind",
        "event.category",
        "event.type",
        "event.outcome",
        "event.action",
        "event.id",
        "source.ip",
        "source.port",
        "destination.ip",
        "destination.port",
        "network.transport",
        "network.type",
        "network.community_id",
        "observer.name",
        "observer.hostname",
        "rule.name",
        "rule.ruleset",
        "rule.description",
        "related.ip",
    ] {
        assert!(seen_fields.contains(f), "no line has {f}");
    }
    docs
}

fn parse_lines(lines: &str) -> Vec<Value> {
    lines
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {e}: {l}"))
        })
        .collect()
}

/// Flow ids join each outcome to its connection line; Community IDs are
/// those of the 5-tuple.
fn check_flows(docs: &[Value]) {
    let mut open: BTreeMap<String, &Value> = BTreeMap::new();
    let mut joined = 0;
    for d in docs {
        let action = d["event"]["action"].as_str().unwrap();
        if d["source"].is_object() {
            let ip = |k: &str| d[k]["ip"].as_str().unwrap().parse::<IpAddr>().unwrap();
            let port = |k: &str| d[k]["port"].as_u64().unwrap() as u16;
            let want = portwatch::export::community_id::community_id_v1(
                6,
                ip("source"),
                ip("destination"),
                port("source"),
                port("destination"),
            );
            assert_eq!(d["network"]["community_id"], want.as_str(), "{d}");
        }
        let flow = d["portwatch"]["flow_id"].as_str().map(str::to_string);
        match action {
            "connection-attempt" => {
                assert_eq!(d["event"]["kind"], "event");
                let f = flow.expect("a connection line has a flow id");
                assert!(open.insert(f, d).is_none(), "flow id reused: {d}");
            }
            a if a.starts_with("connection-") => {
                assert_eq!(d["event"]["kind"], "event");
                let f = flow.expect("an outcome line has a flow id");
                let c = open
                    .remove(&f)
                    .unwrap_or_else(|| panic!("no connection for {d}"));
                assert_eq!(c["source"], d["source"]);
                assert_eq!(c["destination"], d["destination"]);
                joined += 1;
            }
            "expected-flow-blocked" => {
                assert_eq!(d["event"]["kind"], "alert");
                assert_eq!(d["portwatch"]["finding"], "blocked");
                assert_eq!(d["portwatch"]["verdict"], "expected");
            }
            _ => {}
        }
    }
    assert!(joined > 10, "only {joined} outcomes joined");
}

/// `run --events -` on the demo capture: ECS lines on stdout.
#[test]
fn run_events_stdout_are_ecs_documents() {
    let dir = TempDir::new("events-stdout");
    let stdout = dir.0.join("stdout");
    let pcap = fixture("demo.pcap").display().to_string();
    // Standard output to a file: a pipe nobody reads would fill up.
    let mut d = Daemon::spawn(
        &[
            "run",
            "--site",
            "multi-node",
            "--replay",
            &pcap,
            "--speed",
            "1000",
            "--events",
            "-",
            "--sensor",
            "central",
        ],
        std::fs::File::create(&stdout).unwrap().into(),
    );
    d.wait_replay_end();
    d.signal("TERM");
    let (status, _, err) = d.wait_exit();
    assert!(status.success(), "{err}");
    let docs = check_ecs(&std::fs::read_to_string(&stdout).unwrap());
    check_flows(&docs);
    assert!(
        docs.iter()
            .any(|d| d["event"]["action"] == "expected-flow-blocked"),
        "the demo's refused expected edge is a blocked alert"
    );
    assert!(docs.iter().all(|d| d["observer"]["name"] == "central"));
    assert!(docs
        .iter()
        .any(|d| d["portwatch"]["verdict"] == "unexpected" && d["event"]["kind"] == "event"));
}

/// Every finding kind is an `alert` document with its rule, verdict and
/// explanation, deduplicated as the printed findings are: the 1st, 10th,
/// 100th… occurrence of each (kind, src, dst, port), as many as the
/// report's count of that finding allows.
#[test]
fn every_finding_kind_is_an_alert_deduplicated_like_printed_findings() {
    let dir = TempDir::new("events-alerts");
    let ecs = dir.0.join("ecs.jsonl");
    let out = Command::new(bin())
        .args([
            "replay",
            "--site",
            "multi-node",
            "--format",
            "json",
            "--events",
        ])
        .arg(&ecs)
        .arg(fixture("demo.pcap"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let Some(docs) = shared("ecs").map(|_| check_ecs(&std::fs::read_to_string(&ecs).unwrap()))
    else {
        return;
    };
    type Key = (String, String, String, u64);
    let mut alerts: BTreeMap<Key, Vec<u64>> = BTreeMap::new();
    for d in docs.iter().filter(|d| d["event"]["kind"] == "alert") {
        let pw = &d["portwatch"];
        let finding = pw["finding"].as_str().unwrap().to_string();
        if finding == "missing" {
            continue;
        }
        assert!(d["rule"]["name"].is_string(), "no rule.name: {d}");
        assert!(
            d["rule"]["description"].is_string(),
            "no rule.description: {d}"
        );
        assert!(pw["verdict"].is_string(), "no portwatch.verdict: {d}");
        assert!(d["message"].as_str().is_some_and(|m| m.len() > 20), "{d}");
        let key = (
            finding,
            pw["src"].as_str().unwrap().to_string(),
            pw["dst"].as_str().unwrap().to_string(),
            d["destination"]["port"].as_u64().unwrap(),
        );
        alerts
            .entry(key)
            .or_default()
            .push(pw["occurrence"].as_u64().unwrap());
    }
    let mut want: BTreeMap<Key, Vec<u64>> = BTreeMap::new();
    for f in report["findings"].as_array().unwrap() {
        let kind = f["kind"].as_str().unwrap();
        if kind == "missing" {
            continue;
        }
        let count = f["count"].as_u64().unwrap();
        let due: Vec<u64> = std::iter::successors(Some(1u64), |n| Some(n * 10))
            .take_while(|n| *n <= count)
            .collect();
        let key = (
            kind.to_string(),
            f["src"].as_str().unwrap().to_string(),
            f["dst"].as_str().unwrap().to_string(),
            f["port"].as_u64().unwrap(),
        );
        want.insert(key, due);
    }
    let kinds: BTreeSet<&str> = want.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["blocked", "local_only", "unexpected", "unknown_host"]),
        "the demo capture has every finding kind"
    );
    assert_eq!(alerts, want, "alert documents per finding");
}

/// A required edge nobody used is a `missing` alert; the flat shape is
/// still there behind `--events-format flat`.
#[test]
fn missing_edges_are_alerts_and_flat_shape_remains() {
    let dir = TempDir::new("events-missing");
    let ecs = dir.0.join("ecs.jsonl");
    let st = Command::new(bin())
        .args(["replay", "--site", "multi-node", "--events"])
        .arg(&ecs)
        .arg(fixture("missing-edge.pcap"))
        .output()
        .unwrap();
    assert_eq!(
        st.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let docs = check_ecs(&std::fs::read_to_string(&ecs).unwrap());
    let missing: Vec<&Value> = docs
        .iter()
        .filter(|d| d["portwatch"]["finding"] == "missing")
        .collect();
    assert!(!missing.is_empty(), "no missing alert");
    for m in &missing {
        assert_eq!(m["event"]["kind"], "alert");
        assert_eq!(m["event"]["action"], "required-edge-missing");
        assert!(m["portwatch"]["window_seconds"].as_u64().unwrap() > 0);
    }

    let flat = dir.0.join("flat.jsonl");
    let st = Command::new(bin())
        .args([
            "replay",
            "--site",
            "multi-node",
            "--events-format",
            "flat",
            "--events",
        ])
        .arg(&flat)
        .arg(fixture("missing-edge.pcap"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let lines = parse_lines(&std::fs::read_to_string(&flat).unwrap());
    assert!(!lines.is_empty());
    assert!(lines
        .iter()
        .all(|l| l["event"] == "connection" || l["event"] == "outcome"));
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Appended, not truncated; lines reach the file while the daemon runs;
/// after logrotate moves the file, SIGHUP makes a new one.
#[test]
fn run_events_file_appends_flushes_and_reopens_on_sighup() {
    let dir = TempDir::new("events-hup");
    // Started as root, `run` continues as `nobody` (--user): like
    // /var/log/portwatch, the directory must let that user make the new file.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let log = dir.0.join("events.jsonl");
    std::fs::write(&log, "{\"kept\":true}\n").unwrap();
    let logs = log.display().to_string();
    let mut d = Daemon::start(&demo_run("50", &["--events", &logs]));
    d.wait_ready();
    // Flushed while running, at least once a second.
    wait_for("lines in the event log", || count_lines(&log) > 5);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("{\"kept\":true}\n"),
        "truncated: {text:.200}"
    );

    let rotated = dir.0.join("events.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.signal("HUP");
    wait_for("a new event log after SIGHUP", || count_lines(&log) > 2);
    d.signal("TERM");
    let (status, _, err) = d.wait_exit();
    assert!(status.success(), "{err}");
    for p in [&log, &rotated] {
        let text = std::fs::read_to_string(p).unwrap();
        // Whole lines only, in both files.
        assert!(text.ends_with('\n'), "{}", p.display());
        parse_lines(&text);
    }
    assert!(err.contains("event log reopened"), "{err}");
}

/// `tcpdump -w - | portwatch replay -`: standard input as a capture gives
/// the report the file gives.
#[test]
fn replay_reads_a_capture_from_stdin() {
    if !crate::prereq::have("tcpdump") {
        return skip(
            "events::replay_reads_a_capture_from_stdin",
            "tcpdump is not installed",
        );
    }
    let pcap = fixture("demo.pcap");
    let direct = Command::new(bin())
        .args(["replay", "--site", "multi-node", "--format", "json"])
        .arg(&pcap)
        .output()
        .unwrap();
    let shell = format!(
        "tcpdump -r '{}' -w - 2>/dev/null | '{}' replay - --site multi-node --format json",
        pcap.display(),
        bin()
    );
    let piped = Command::new("sh").args(["-c", &shell]).output().unwrap();
    assert_eq!(
        piped.status.code(),
        direct.status.code(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let strip = |out: &[u8]| {
        let mut v: Value = serde_json::from_slice(out).unwrap();
        for s in v["capture"]["sources"].as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("path");
        }
        v
    };
    let (a, b) = (strip(&direct.stdout), strip(&piped.stdout));
    assert_eq!(a, b);
    assert!(a["findings"].as_array().is_some_and(|f| !f.is_empty()));
}

/// A full disk (`/dev/full`): the lost lines are logged and counted in a
/// metric, and capture and the exporter go on.
#[test]
fn event_log_write_errors_are_counted_and_capture_goes_on() {
    if !Path::new("/dev/full").exists() {
        return skip(
            "events::event_log_write_errors_are_counted_and_capture_goes_on",
            "no /dev/full",
        );
    }
    let mut d = Daemon::start(&demo_run("100", &["--events", "/dev/full"]));
    let m = d.wait_metrics("event log write errors", |m| {
        crate::util::sample(m, "portwatch_event_log_write_errors_total").is_some_and(|v| v > 0.0)
    });
    let packets = |m: &str| {
        crate::util::sample(
            m,
            "portwatch_packets_total{interface=\"replay\",result=\"control\"}",
        )
    };
    let before = packets(&m).unwrap();
    d.wait_metrics("capture going on", |m| {
        packets(m).is_some_and(|p| p > before)
    });
    assert_eq!(d.get("/-/ready").map(|r| r.0), Some(200));
    d.signal("TERM");
    let (status, _, err) = d.wait_exit();
    assert!(status.success(), "{err}");
    assert_eq!(
        err.matches("writing the event log failed").count(),
        1,
        "logged once: {err}"
    );
}
