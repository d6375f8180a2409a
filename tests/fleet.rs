//! Many sensors, one site: three `portwatch run` node sensors (`--sensor`
//! central, proxy, engine1), each replaying only what its node sees of the
//! demo capture (split with tcpdump), scraped by one real Prometheus with
//! the shipped rules. The site verdict combines them:
//!
//! - engine1 -> central:4242, used by nobody (cut from every capture): both
//!   sensors that can see it say missing, so the site says missing, and two
//!   covering sensors vouch for it;
//! - proxy -> central:4242, cut from proxy's capture only (a blind spot):
//!   the proxy sensor says missing, central saw it, so the site says seen;
//! - central -> engine1:4242, seen by both: seen.
//!
//! How drops qualify a verdict (`PortwatchRequiredEdgeUnverifiable`) is
//! pinned by the promtool unit tests, where drop counters can be written.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy::{deploy, prometheus_bin, query, start_prometheus};
use crate::util::{skip, split_demo, Daemon, TempDir};

const CENTRAL: &str = "192.0.2.10";
const PROXY: &str = "192.0.2.11";
const ENGINE1: &str = "192.0.2.21";

/// Packets of the connections `client -> server:port`, both directions.
fn edge(client: &str, server: &str, port: u16) -> String {
    format!(
        "((src host {client} and dst host {server} and dst port {port}) or \
         (src host {server} and dst host {client} and src port {port}))"
    )
}

fn series(port: u16, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let v: Value = query(port, expr);
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            (labels, s["value"][1].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

fn one(port: u16, expr: &str) -> Option<f64> {
    match series(port, expr).as_slice() {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

#[test]
fn three_sensors_one_prometheus_one_site_verdict() {
    if prometheus_bin().is_none() || !crate::prereq::have("tcpdump") {
        return skip(
            "fleet::three_sensors_one_prometheus_one_site_verdict",
            "prometheus and tcpdump are needed",
        );
    }
    let tmp = TempDir::new("fleet");
    let unused = edge(ENGINE1, CENTRAL, 4242);
    let blind = edge(PROXY, CENTRAL, 4242);
    let captures = [
        (
            "central",
            split_demo(
                &tmp.0,
                "central",
                &format!("host {CENTRAL} and not {unused}"),
            ),
        ),
        (
            "proxy",
            split_demo(
                &tmp.0,
                "proxy",
                &format!("host {PROXY} and not {unused} and not {blind}"),
            ),
        ),
        (
            "engine1",
            split_demo(
                &tmp.0,
                "engine1",
                &format!("host {ENGINE1} and not {unused}"),
            ),
        ),
    ];
    let mut sensors: Vec<(String, Daemon)> = captures
        .iter()
        .map(|(node, pcap)| {
            let log = tmp.0.join(format!("{node}.log"));
            let d = Daemon::start_logged(
                &[
                    "run",
                    "--site",
                    "multi-node",
                    "--sensor",
                    node,
                    "--replay",
                    pcap,
                    "--loop",
                    "--speed",
                    "200",
                ],
                &log,
            );
            (node.to_string(), d)
        })
        .collect();
    for (_, d) in &mut sensors {
        d.wait_ready();
    }
    let targets: Vec<String> = sensors
        .iter()
        .map(|(_, d)| format!("'{}'", d.addr))
        .collect();
    let instance: BTreeMap<String, String> = sensors
        .iter()
        .map(|(n, d)| (n.clone(), d.addr.to_string()))
        .collect();
    let prom = start_prometheus(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: portwatch\n    static_configs:\n      - targets: [{}]\n",
        deploy("prometheus/portwatch.rules.yml").display(),
        targets.join(", ")
    ));
    let site = |src: &str, dst: &str| {
        format!("portwatch:edge_missing:site{{site=\"multi-node\",src=\"{src}\",dst=\"{dst}\",port=\"4242\"}}")
    };
    let per_sensor = |node: &str, src: &str, dst: &str| {
        format!(
            "portwatch_edge_missing{{instance=\"{}\",src=\"{src}\",dst=\"{dst}\",port=\"4242\"}}",
            instance[node]
        )
    };
    let want: Vec<(String, f64)> = vec![
        ("count(portwatch:up == 1)".into(), 3.0),
        (site("engine1", "central"), 1.0),
        (per_sensor("central", "engine1", "central"), 1.0),
        (per_sensor("engine1", "engine1", "central"), 1.0),
        (
            "portwatch:edge_covering_sensors:count{src=\"engine1\",dst=\"central\",port=\"4242\"}"
                .into(),
            2.0,
        ),
        (per_sensor("proxy", "proxy", "central"), 1.0),
        (per_sensor("central", "proxy", "central"), 0.0),
        (site("proxy", "central"), 0.0),
        (site("central", "engine1"), 0.0),
        // The proxy sensor does not judge engine1's edges: only two report it.
        (
            "count(portwatch_edge_missing{src=\"engine1\",dst=\"central\",port=\"4242\"})".into(),
            2.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: Vec<(String, Option<f64>)> = want
            .iter()
            .map(|(q, _)| (q.clone(), one(prom.port, q)))
            .collect();
        let wrong: Vec<String> = got
            .iter()
            .zip(&want)
            .filter(|((_, g), (_, w))| *g != Some(*w))
            .map(|((q, g), (_, w))| format!("{q}: got {g:?}, want {w}"))
            .collect();
        if wrong.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = captures
                .iter()
                .map(|(n, _)| {
                    std::fs::read_to_string(tmp.0.join(format!("{n}.log"))).unwrap_or_default()
                })
                .collect();
            panic!(
                "site verdicts never settled:\n{}\n--- prometheus ---\n{}\n--- sensors ---\n{}",
                wrong.join("\n"),
                prom.log(),
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
