//! Sensors of two kinds, one site, one real Prometheus with the shipped
//! rules. On multi-node (two required edges overridden to a 2 s window):
//!
//! - packets: `run --sensor engine1 --replay` of engine1's share of the
//!   demo capture, looped;
//! - a node-log sensor following engine1's and the scheduler's firewall
//!   logs, which the test writes as it runs (wall-clock times): engine1's
//!   log allows its connections to central:443 and drops those to
//!   central:4242, which the capture sees established;
//! - a second node-log sensor following engine2's log, which says it lost
//!   events.
//!
//! Then:
//! - engine1 -> central:443, seen by both kinds, counts once: the site's
//!   rate is the larger sensor's, not their sum;
//! - scheduler -> central:5050, judged only by the healthy log sensor,
//!   which did not see it: missing, one covering sensor;
//! - engine2 -> central:4242, judged only by the sensor that lost events:
//!   unverifiable (missing, no covering sensor);
//! - engine1 -> central:4242: `portwatch:edge_disagreement:site` 1, the
//!   packet sensor's own central -> engine1:4242 0;
//! - `portwatch report --prometheus` shows these states and the
//!   disagreement (`report::mixed_report_agrees`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::deploy::{deploy, http_get, prometheus_bin, start_prometheus, url_encode};
use crate::util::{fixture, skip, tcpdump_cut, Daemon, TempDir};

const HEADER: &str = "#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n\
#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path\n";

/// A firewall log line at the current time (UTC: the sensors are given
/// `--timezone UTC`).
fn line(action: &str, src: &str, dst: &str, sport: u32, dport: u16) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = portwatch::time::Timestamp::from_secs_nanos(now, 0).rfc3339();
    // 2026-01-05T09:14:41.000000Z -> 2026-01-05 09:14:41
    let (date, time) = (&t[..10], &t[11..19]);
    format!("{date} {time} {action} TCP {src} {dst} {sport} {dport} 0 - 0 0 0 - - - SEND\n")
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Values of `expr` at `time` (the server's now if `None`), by labels.
fn at(port: u16, expr: &str, time: Option<f64>) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut path = format!("/api/v1/query?query={}", url_encode(expr));
    if let Some(t) = time {
        path.push_str(&format!("&time={t}"));
    }
    let (_, body) = http_get(port, &path).unwrap_or_else(|e| panic!("query {expr}: {e}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{expr}: {v}");
    (v["data"]["result"].as_array().into_iter().flatten())
        .map(|s| {
            let labels = (s["metric"].as_object().into_iter().flatten())
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let value = s["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect()
}

fn one(port: u16, expr: &str) -> Option<f64> {
    match at(port, expr, None).as_slice() {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

#[test]
fn a_packet_and_a_node_log_sensor_make_one_site_verdict() {
    let test = "mixed::a_packet_and_a_node_log_sensor_make_one_site_verdict";
    if prometheus_bin().is_none() || !crate::prereq::have("tcpdump") {
        return skip(test, "prometheus and tcpdump are needed");
    }
    let tmp = TempDir::new("mixed");
    let (central, engine1, engine2, scheduler) =
        ("192.0.2.10", "192.0.2.21", "192.0.2.22", "192.0.2.31");
    let base = std::fs::read_to_string(deploy("sites/multi-node.yaml")).unwrap();
    let site = tmp.0.join("site.yaml");
    std::fs::write(
        &site,
        format!(
            "{base}overrides:\n  - from: scheduler\n    to: central\n    port: 5050\n    window: 2s\n\
             \x20 - from: engine2\n    to: central\n    port: 4242\n    window: 2s\n"
        ),
    )
    .unwrap();
    let site = site.display().to_string();
    let pcap = tmp.0.join("engine1.pcap");
    tcpdump_cut(&fixture("demo.pcap"), &pcap, &format!("host {engine1}"));

    // The logs, each naming its node from its first line.
    let (e1, sch, e2) = (
        tmp.0.join("engine1-pfirewall.log"),
        tmp.0.join("scheduler-pfirewall.log"),
        tmp.0.join("engine2-pfirewall.log"),
    );
    append(
        &e1,
        &format!("{HEADER}{}", line("ALLOW", engine1, central, 40000, 443)),
    );
    append(
        &sch,
        &format!("{HEADER}{}", line("ALLOW", scheduler, central, 40001, 4242)),
    );
    let lost = line("ALLOW", engine2, central, 40002, 4432);
    let lost = format!(
        "{HEADER}{lost}{} INFO-EVENTS-LOST - - - - - - - - - - - - 59 -\n",
        &lost[..19]
    );
    append(&e2, &lost);

    let log = |n: &str| tmp.0.join(format!("{n}.out"));
    let run = |extra: &[&str], out: &str| {
        let mut args = vec!["run", "--site", site.as_str()];
        args.extend_from_slice(extra);
        Daemon::start_logged(&args, &log(out))
    };
    let pcap = pcap.display().to_string();
    let (e1s, schs, e2s) = (
        e1.display().to_string(),
        sch.display().to_string(),
        e2.display().to_string(),
    );
    let follow = ["--timezone", "UTC", "--follow-from", "start", "--follow"];
    let mut sensors = [
        run(
            &[
                "--sensor", "engine1", "--replay", &pcap, "--loop", "--speed", "200",
            ],
            "packets",
        ),
        run(
            &[&follow[..], &[e1s.as_str(), schs.as_str()]].concat(),
            "logs",
        ),
        run(&[&follow[..], &[e2s.as_str()]].concat(), "lossy"),
    ];
    for s in &mut sensors {
        s.wait_ready();
    }
    let [packets, logs, lossy] = sensors.each_ref().map(|d| d.addr.to_string());

    // engine1's log goes on: its connections to central:443 allowed, to
    // central:4242 dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, e1) = (stop.clone(), e1.clone());
        std::thread::spawn(move || {
            let mut port = 41000;
            while !stop.load(Ordering::Relaxed) {
                let text = [
                    line("ALLOW", engine1, central, port, 443),
                    line("DROP", engine1, central, port + 1, 4242),
                ]
                .concat();
                append(&e1, &text);
                port += 2;
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    let prom = start_prometheus(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: portwatch\n    static_configs:\n      - targets: ['{packets}', '{logs}', '{lossy}']\n",
        deploy("prometheus/portwatch.rules.yml").display(),
    ));
    let edge = |src: &str, dst: &str, port: u16| {
        format!("site=\"multi-node\",src=\"{src}\",dst=\"{dst}\",port=\"{port}\"")
    };
    let (e1_qps, e1_qrs) = (
        edge("engine1", "central", 443),
        edge("engine1", "central", 4242),
    );
    let (sch_mgr, e2_qrs) = (
        edge("scheduler", "central", 5050),
        edge("engine2", "central", 4242),
    );
    let want: Vec<(String, f64)> = vec![
        ("count(portwatch:up == 1)".into(), 3.0),
        (format!("portwatch:sensor_covering{{instance=\"{packets}\"}}"), 1.0),
        (format!("portwatch:sensor_covering{{instance=\"{logs}\"}}"), 1.0),
        (
            format!("count(portwatch:sensor_covering{{instance=\"{lossy}\"}}) or vector(0)"),
            0.0,
        ),
        // Both kinds saw engine1 -> central:443.
        (
            "count(rate(portwatch_connections_total{src=\"engine1\",dst=\"central\",port=\"443\"}[5m]) > 0)"
                .to_string(),
            2.0,
        ),
        // Missing: one covering sensor judges it and did not see it.
        (format!("portwatch:edge_missing:site{{{sch_mgr}}}"), 1.0),
        (format!("portwatch:edge_covering_sensors:count{{{sch_mgr}}}"), 1.0),
        // Unverifiable: missing, and its only sensor lost events.
        (format!("portwatch:edge_missing:site{{{e2_qrs}}}"), 1.0),
        (format!("portwatch:edge_covering_sensors:count{{{e2_qrs}}}"), 0.0),
        // The capture saw engine1 -> central:4242 established, the log denied.
        (format!("portwatch:edge_disagreement:site{{{e1_qrs}}}"), 1.0),
        (
            format!("portwatch:edge_disagreement:site{{{}}}", edge("central", "engine1", 4242)),
            0.0,
        ),
        (
            format!("sum(portwatch:handshakes_by_kind:rate5m{{{e1_qrs},outcome=\"denied\",sensor_kind=\"firewall_log\"}}) > bool 0"),
            1.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let wrong: Vec<String> = (want.iter())
            .filter_map(|(q, w)| {
                let got = one(prom.port, q);
                (got != Some(*w)).then(|| format!("{q}: got {got:?}, want {w}"))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            let outs: Vec<String> = ["packets", "logs", "lossy"]
                .iter()
                .map(|n| std::fs::read_to_string(log(n)).unwrap_or_default())
                .collect();
            panic!(
                "the site verdict never settled:\n{}\n--- prometheus ---\n{}\n--- sensors ---\n{}",
                wrong.join("\n"),
                prom.log(),
                outs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Counted once: at the rule's own evaluation time, the site's rate is
    // the larger sensor's, and less than their sum.
    let rule = format!("portwatch:connections:rate5m{{{e1_qps},verdict=\"expected\"}}");
    let [(_, t)] = at(prom.port, &format!("timestamp({rule})"), None)[..] else {
        panic!("no {rule}");
    };
    let [(_, site_rate)] = at(prom.port, &rule, Some(t))[..] else {
        panic!("no {rule} at {t}");
    };
    let raw = "rate(portwatch_connections_total{src=\"engine1\",dst=\"central\",port=\"443\",verdict=\"expected\"}[5m])";
    let per_sensor: Vec<f64> = at(prom.port, raw, Some(t))
        .iter()
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(per_sensor.len(), 2, "{per_sensor:?}");
    let max = per_sensor.iter().cloned().fold(0.0, f64::max);
    let sum: f64 = per_sensor.iter().sum();
    assert!(per_sensor.iter().all(|v| *v > 0.0), "{per_sensor:?}");
    assert!(
        (site_rate - max).abs() < 1e-9,
        "site {site_rate}, sensors {per_sensor:?}"
    );
    assert!(site_rate < sum, "site {site_rate}, sensors {per_sensor:?}");

    // The report drawn from the store says the same.
    crate::report::mixed_report_agrees(prom.port, &site);

    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}
