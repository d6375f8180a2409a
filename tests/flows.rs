//! Flow logs in `replay`: a scenario capture turned into an AWS VPC flow
//! log (its SYN, SYN-ACK and RST packets as version-3 records with
//! `tcp-flags`, by tshark) gives the capture's findings; the samples of
//! `../shared/sensors/` replay with their fidelity in the report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::golden::{portwatch, replay_fixture};
use crate::prereq::needs;
use crate::util::{fixture, tshark, TempDir};

const HEADER: &str =
    "version srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status";

/// The control packets of `pcap` as VPC flow log records: one per packet,
/// in the 60-second interval holding it.
fn vpc_log_of(pcap: &Path) -> String {
    let fields = [
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.flags",
    ];
    let mut args = vec![
        "-Y",
        "tcp.flags.syn == 1 || tcp.flags.reset == 1",
        "-T",
        "fields",
    ];
    args.extend(fields.iter().flat_map(|f| ["-e", *f]));
    let mut log = format!("{HEADER}\n");
    for line in tshark(pcap, &args).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let secs: u64 = f[0].split('.').next().unwrap().parse().unwrap();
        let start = secs - secs % 60;
        let (src, dst) = (f[1].to_string() + f[2], f[3].to_string() + f[4]);
        let flags = u8::from_str_radix(f[7].trim_start_matches("0x"), 16).unwrap();
        log += &format!(
            "3 {src} {dst} {} {} 6 {start} {} ACCEPT {} OK\n",
            f[5],
            f[6],
            start + 60,
            flags & 0x17
        );
    }
    log
}

fn finding_set(r: &Value, kinds: &[&str]) -> BTreeSet<String> {
    r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| kinds.iter().any(|k| f["kind"] == *k))
        .map(|f| format!("{} {}->{}:{}", f["kind"], f["src"], f["dst"], f["port"]))
        .collect()
}

#[test]
fn a_vpc_flow_log_of_each_verdict_scenario_gives_its_findings() {
    if !needs("flows::vpc_log_of_scenarios", false, &["tshark"]) {
        return;
    }
    let dir = TempDir::new("flows");
    let kinds = ["unexpected", "local_only", "unknown_host"];
    for file in [
        "verdict-unexpected.pcap",
        "verdict-local-only.pcap",
        "verdict-unknown-host.pcap",
    ] {
        let (e, pcap_run) = replay_fixture(file);
        let want = finding_set(&pcap_run.json(), &kinds);
        assert!(!want.is_empty(), "{file}: the capture has findings");
        let log: PathBuf = dir.0.join(format!("{file}.log"));
        std::fs::write(&log, vpc_log_of(&fixture(file))).unwrap();
        let run = portwatch(&[
            "replay",
            "--format",
            "json",
            "--site",
            &e.site,
            log.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(e.exit), "{file}: {}", run.stderr);
        let r = run.json();
        assert_eq!(finding_set(&r, &kinds), want, "{file}");
        let src = &r["capture"]["sources"][0];
        assert_eq!(src["format"], "vpc-flow-log", "{src}");
        assert_eq!(src["fidelity"]["kind"], "vpc_flow_log", "{src}");
        assert!(
            src["fidelity"]["records"]["observed"].as_u64() > Some(0),
            "{src}"
        );
    }
}

#[test]
fn samples_replay_with_their_fidelity_in_the_report() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sensors");
    let vpc = shared.join("vpcflow/awsdocs_v2_default.log");
    let azure = shared.join("azure/elastic_integrations_vnet_sample_logs_testdata.json");
    let run = portwatch(&[
        "replay",
        "--site",
        "multi-node",
        vpc.to_str().unwrap(),
        azure.to_str().unwrap(),
    ]);
    // Their addresses belong to no node of the site: unknown hosts.
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    for want in [
        "(vpc-flow-log): 7 records",
        "vpc_flow_log: outcomes established refused permitted denied; blind to attempts filter process",
        "nodata=1",
        "skipdata=1",
        "(azure-flow-log): 19 records",
        "azure_flow_log: outcomes established permitted denied; blind to attempts host_rst filter process losses",
        "outcomes: denied=10 established=5 permitted=2",
    ] {
        assert!(run.stdout.contains(want), "no {want:?} in\n{}", run.stdout);
    }
    for not in ["holds no packets", "no SYN-ACK seen"] {
        assert!(!run.stdout.contains(not), "{not:?} in\n{}", run.stdout);
    }
}

/// A flow log covers the node owning its interface (the one address at an
/// end of every record), not the peers its records carry: engine1's log
/// names central, but central's edges with engine2 are not its to judge,
/// so they cannot be `missing` on its word.
#[test]
fn a_flow_log_judges_only_the_edges_of_the_node_owning_its_interface() {
    let dir = TempDir::new("flows-coverage");
    let mut log = String::from(
        "version interface-id srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status\n",
    );
    // engine1 (192.0.2.21) with central (192.0.2.10) and proxy (192.0.2.11),
    // over three hours.
    for t in [1_767_603_600u64, 1_767_607_200, 1_767_610_800] {
        for (peer, port) in [("192.0.2.10", 4242), ("192.0.2.11", 4747)] {
            let end = t + 60;
            let (c, s) = if port == 4242 {
                ("192.0.2.21", peer)
            } else {
                (peer, "192.0.2.21")
            };
            log += &format!("3 eni-e1 {c} {s} 50001 {port} 6 {t} {end} ACCEPT 2 OK\n");
            log += &format!("3 eni-e1 {s} {c} {port} 50001 6 {t} {end} ACCEPT 18 OK\n");
        }
    }
    let path = dir.0.join("engine1.log");
    std::fs::write(&path, log).unwrap();
    let run_json = |extra: &[&str]| {
        let mut args = vec!["replay", "--format", "json", "--site", "multi-node"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        portwatch(&args).json()
    };
    let judged = |extra: &[&str]| {
        let r = run_json(extra);
        let edges: Vec<(String, String, String, String)> =
            (r["edges"].as_array().expect("edges").iter())
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("src"), s("dst"), e["port"].to_string(), s("state"))
                })
                .collect();
        edges
    };
    let edges = judged(&[]);
    let state = |src: &str, dst: &str, port: &str| {
        (edges.iter())
            .find(|(s, d, p, _)| s == src && d == dst && p == port)
            .map(|e| e.3.clone())
    };
    // Its own: one edge seen, one with no record in its window.
    assert_eq!(
        state("engine1", "central", "4242").as_deref(),
        Some("seen"),
        "{edges:?}"
    );
    assert_eq!(
        state("engine1", "central", "4432").as_deref(),
        Some("missing"),
        "{edges:?}"
    );
    // Its peer central's edge with engine2: listed, not judged.
    assert_eq!(
        state("central", "engine2", "4242").as_deref(),
        Some("not_observed"),
        "{edges:?}"
    );
    let reason = (run_json(&[])["edges"].as_array().unwrap().iter())
        .find(|e| e["src"] == "central" && e["dst"] == "engine2" && e["port"] == 4242)
        .map(|e| e["reason"].to_string());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("the interfaces of engine1")),
        "{reason:?}"
    );
    for (src, dst, _, st) in &edges {
        assert!(
            src == "engine1" || dst == "engine1" || st == "not_observed",
            "{src} -> {dst} ({st}) judged on engine1's log"
        );
    }
    // --sensor names the watched nodes exactly.
    let edges = judged(&["--sensor", "engine2"]);
    assert!(
        edges
            .iter()
            .all(|(s, d, _, _)| s == "engine2" || d == "engine2"),
        "{edges:?}"
    );
}

/// A VPC flow row lasts to its records' latest `end` (the SYN-ACK's
/// record ends later than the SYN's), as a flow export row does.
#[test]
fn a_vpc_flow_rows_last_seen_is_its_records_end() {
    let dir = TempDir::new("flows-end");
    let log = "version interface-id srcaddr dstaddr srcport dstport protocol start end action tcp-flags log-status\n\
               3 eni-e1 192.0.2.21 192.0.2.10 50001 4242 6 1767603600 1767603645 ACCEPT 2 OK\n\
               3 eni-e1 192.0.2.10 192.0.2.21 4242 50001 6 1767603600 1767603650 ACCEPT 18 OK\n";
    let path = dir.0.join("engine1.log");
    std::fs::write(&path, log).unwrap();
    let run = portwatch(&[
        "replay",
        "--format",
        "json",
        "--site",
        "multi-node",
        path.to_str().unwrap(),
    ]);
    let r = run.json();
    let row = (r["flows"].as_array().expect("flows").iter())
        .find(|f| f["src"] == "engine1" && f["dst"] == "central" && f["port"] == 4242)
        .unwrap_or_else(|| panic!("no row in {r}"));
    assert_eq!(row["first_seen"], "2026-01-05T09:00:00.000000Z", "{row}");
    assert_eq!(row["last_seen"], "2026-01-05T09:00:50.000000Z", "{row}");
}

fn netflow_sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors/netflow")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn samples_replay_as_export_captures_with_their_record_counts() {
    // Template before data (SOURCE.md): one decoder for the files, in order.
    let files = [
        ("akvorado_nfv5.pcap", 29),
        ("akvorado_template.pcap", 0),
        ("akvorado_data.pcap", 4),
        ("akvorado_options-template.pcap", 0),
        ("akvorado_options-data.pcap", 4),
    ];
    let paths: Vec<String> = files.iter().map(|(f, _)| netflow_sample(f)).collect();
    let mut args = vec!["replay", "--format", "json", "--site", "multi-node"];
    args.extend(paths.iter().map(String::as_str));
    let run = portwatch(&args);
    assert!(matches!(run.code, Some(0 | 1)), "{}", run.stderr);
    let r = run.json();
    let sources = r["capture"]["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), files.len(), "{sources:?}");
    for (s, (name, records)) in sources.iter().zip(files) {
        assert!(s["path"].as_str().unwrap().ends_with(name), "{s}");
        assert_eq!(s["format"], "netflow-ipfix-capture", "{s}");
        assert_eq!(s["fidelity"]["kind"], "flow_export", "{s}");
        assert_eq!(s["packets"], records, "{name}: records");
    }
    // v5: 22 TCP records of connections open before (no SYN), 7 UDP.
    let v5 = &sources[0]["fidelity"]["records"];
    assert_eq!(v5["no_syn"], 22, "{v5}");
    assert_eq!(v5["not_tcp"], 7, "{v5}");
    let opts = &sources[4]["fidelity"]["records"];
    assert_eq!(opts["options_record"], 4, "{opts}");
    // No record opened a connection: nothing observed, no finding.
    assert_eq!(
        r["findings"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r["findings"]
    );
}
