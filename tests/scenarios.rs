//! What each scenario fixture must show, independently of its golden: a
//! golden regenerated from a bug still fails here.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::golden::{manifest, replay_fixture};

use portwatch::config::load_policy;
use portwatch::policy::{EndpointKind, Expectation};

fn report(file: &str) -> Value {
    let (e, run) = replay_fixture(file);
    assert_eq!(run.code, Some(e.exit), "{file}: stderr {}", run.stderr);
    run.json()
}

fn findings<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn is(f: &Value, src: &str, dst: &str, port: u64) -> bool {
    f["src"] == src && f["dst"] == dst && f["port"] == port
}

#[test]
fn site_fixtures_are_clean_and_use_every_edge() {
    for e in manifest().iter().filter(|e| e.file.starts_with("site-")) {
        let r = report(&e.file);
        assert_eq!(r["findings"], Value::Array(vec![]), "{}", e.file);
        assert!(r["capture"]["duration_seconds"].as_f64().unwrap() > 15.0 * 60.0);
        for edge in r["edges"].as_array().unwrap() {
            assert_eq!(edge["state"], "seen", "{}: {edge}", e.file);
        }
        assert!(r["summary"]["syn_retransmissions"].as_u64().unwrap() >= 1);
        // Every edge the model expects at this site carries traffic.
        let p = load_policy(Path::new(&e.site), None).unwrap().policy;
        let flows: BTreeSet<(String, String, u64)> = r["flows"]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|f| assert_eq!(f["verdict"], "expected", "{}: {f}", e.file))
            .map(|f| {
                (
                    f["src"].as_str().unwrap().to_string(),
                    f["dst"].as_str().unwrap().to_string(),
                    f["port"].as_u64().unwrap(),
                )
            })
            .collect();
        for x in Expectation::of(&p).edges {
            let key = (x.src.clone(), x.dst.clone(), u64::from(x.port));
            assert!(flows.contains(&key), "{}: no traffic on {key:?}", e.file);
        }
        assert!(p.endpoints.iter().any(|x| x.kind == EndpointKind::Node));
    }
}

#[test]
fn verdict_unexpected_user_to_engine_and_engine_to_proxy_auth() {
    let r = report("verdict-unexpected.pcap");
    let f = findings(&r, "unexpected");
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().any(|f| is(f, "corp-users", "engine1", 4747)));
    assert!(f.iter().any(|f| is(f, "engine1", "proxy", 4243)));
    assert_eq!(r["findings"].as_array().unwrap().len(), 2);
}

#[test]
fn verdict_local_only_cites_internal_ports() {
    let r = report("verdict-local-only.pcap");
    let all = r["findings"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let f = &all[0];
    assert_eq!(f["kind"], "local_only");
    assert!(is(f, "proxy", "central", 4570), "{f}");
    assert!(
        f["explanation"]
            .as_str()
            .unwrap()
            .contains("Ports used internally within a node"),
        "{f}"
    );
}

#[test]
fn verdict_unknown_host_both_directions() {
    let r = report("verdict-unknown-host.pcap");
    let f = findings(&r, "unknown_host");
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f
        .iter()
        .any(|f| is(f, "unknown", "proxy", 443) && f["src_addr"] == "10.20.30.40"));
    // An undeclared destination: the model has no edge to it, and the
    // address belongs to no endpoint, so unknown_host (not unexpected).
    assert!(f
        .iter()
        .any(|f| is(f, "engine1", "unknown", 443) && f["dst_addr"] == "203.0.113.99"));
}

#[test]
fn blocked_refused_counts_the_rst() {
    let r = report("blocked-refused.pcap");
    let f = findings(&r, "blocked");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(is(f[0], "proxy", "engine1", 4747));
    assert!(f[0]["outcomes"]["refused"].as_u64().unwrap() >= 1);
    assert_eq!(r["summary"]["outcomes"]["established"], 1);
}

#[test]
fn blocked_unanswered_after_three_retransmissions() {
    let r = report("blocked-unanswered.pcap");
    assert_eq!(r["capture"]["replies_visible"], true);
    let f = findings(&r, "blocked");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(is(f[0], "proxy", "engine1", 4747));
    assert_eq!(f[0]["outcomes"]["unanswered"], 1);
    let flow = r["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| is(x, "proxy", "engine1", 4747))
        .expect("flow row");
    assert_eq!(flow["syn_retransmissions"], 3);
}

#[test]
fn missing_edge_is_the_only_finding() {
    let r = report("missing-edge.pcap");
    let all = r["findings"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["kind"], "missing");
    assert!(is(&all[0], "central", "scheduler", 5151));
    for e in r["edges"].as_array().unwrap() {
        let want = if is(e, "central", "scheduler", 5151) {
            "missing"
        } else {
            "seen"
        };
        assert_eq!(e["state"], want, "{e}");
    }
}

#[test]
fn one_way_capture_outcomes() {
    let r = report("one-way.pcap");
    assert_eq!(r["capture"]["replies_visible"], false);
    let o = &r["summary"]["outcomes"];
    // The two single SYNs are followed by the client's ACK and data: the
    // handshakes completed, though no SYN-ACK is in the capture.
    assert_eq!(o["established"], 2, "{o}");
    assert_eq!(r["summary"]["established_inferred"], 2);
    assert_eq!(o["unknown"], 0, "{o}");
    assert_eq!(o["unanswered"], 1, "{o}");
}

#[test]
fn truncated_exits_3_and_says_where() {
    let r = report("truncated.pcap");
    let src = &r["capture"]["sources"][0];
    assert!(src["stopped"].is_object(), "{src}");
    assert!(src["stopped"]["reason"]
        .as_str()
        .unwrap()
        .contains("truncated"));
    assert_eq!(r["capture"]["truncated"], true);
    let plain = report("plain.pcap");
    let (got, all) = (
        src["packets"].as_u64().unwrap(),
        plain["capture"]["packets"].as_u64().unwrap(),
    );
    assert!(got > 0 && got < all, "{got} of {all}");
}

#[test]
fn garbage_frames_are_counted_not_fatal() {
    let r = report("garbage-frames.pcap");
    let errors = r["capture"]["decode_errors"].as_object().unwrap();
    assert!(!errors.is_empty());
    assert!(errors.values().map(|v| v.as_u64().unwrap()).sum::<u64>() >= 10);
    assert_eq!(r["flows"], report("plain.pcap")["flows"]);
}

#[test]
fn pcapng_two_interfaces_lists_both_link_types() {
    let r = report("pcapng-two-interfaces.pcapng");
    let src = &r["capture"]["sources"][0];
    assert_eq!(src["format"], "pcapng");
    assert_eq!(
        src["link_types"],
        serde_json::json!(["EN10MB(1)", "LINUX_SLL2(276)"])
    );
    assert_eq!(r["flows"], report("plain.pcap")["flows"]);
}

/// The same traffic over other link layers (and IPv6) gives the same
/// flows and counts as over plain Ethernet.
#[test]
fn link_layers_and_ipv6_give_the_same_flows() {
    let plain = report("plain.pcap");
    assert!(!plain["flows"].as_array().unwrap().is_empty());
    for file in [
        "vlan.pcap",
        "qinq.pcap",
        "sll.pcap",
        "sll2.pcap",
        "ipv6.pcap",
    ] {
        let r = report(file);
        assert_eq!(r["flows"], plain["flows"], "{file}");
        assert_eq!(r["summary"], plain["summary"], "{file}");
        assert_eq!(
            r["capture"]["control_packets"], plain["capture"]["control_packets"],
            "{file}"
        );
        assert_eq!(
            r["capture"]["decode_errors"],
            serde_json::json!({}),
            "{file}"
        );
    }
    let v6 = report("ipv6.pcap");
    let f = &v6["findings"];
    assert_eq!(f, &serde_json::json!([]));
}

fn edge<'a>(r: &'a Value, src: &str, dst: &str, port: u64) -> &'a Value {
    r["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| is(e, src, dst, port))
        .unwrap_or_else(|| panic!("no edge {src} -> {dst}:{port}"))
}

fn flow<'a>(r: &'a Value, src: &str, dst: &str, port: u64) -> &'a Value {
    r["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| is(f, src, dst, port))
        .unwrap_or_else(|| panic!("no flow {src} -> {dst}:{port}"))
}

#[test]
fn long_lived_connection_is_evidence_while_open() {
    let r = report("long-lived.pcap");
    assert!(r["capture"]["duration_seconds"].as_f64().unwrap() > 35.0 * 60.0);
    // One SYN at the start, 40 minutes ago: the 15-minute edge is in use.
    let e = edge(&r, "proxy", "central", 4242);
    assert_eq!(e["state"], "seen", "{e}");
    assert_eq!(e["open_connections"], 1, "{e}");
    assert_eq!(flow(&r, "proxy", "central", 4242)["attempts"], 1);
    // Converse: a required edge with no traffic at all is still missing.
    assert_eq!(edge(&r, "engine1", "central", 4242)["state"], "missing");
    let missing = findings(&r, "missing");
    assert!(missing.iter().any(|f| is(f, "engine1", "central", 4242)));
    assert!(!missing.iter().any(|f| is(f, "proxy", "central", 4242)));
}

#[test]
fn pre_existing_connection_data_is_evidence() {
    let r = report("pre-existing.pcap");
    let e = edge(&r, "engine1", "central", 4242);
    assert_eq!(e["state"], "seen", "{e}");
    assert!(e["evidence"].as_u64().unwrap() >= 30, "{e}");
    // No handshake in the capture: no attempt either.
    assert_eq!(r["flows"], Value::Array(vec![]));
    assert_eq!(r["capture"]["control_packets"]["syn"], 0);
    assert_eq!(edge(&r, "engine2", "central", 4242)["state"], "missing");
}

#[test]
fn one_way_pair_with_client_ack_is_established_not_blocked() {
    let r = report("asymmetric-pair.pcap");
    assert_eq!(r["capture"]["replies_visible"], true);
    let f = flow(&r, "proxy", "engine1", 4747);
    assert_eq!(f["attempts"], 1, "{f}");
    assert_eq!(f["syn_retransmissions"], 1, "{f}");
    assert_eq!(f["outcomes"]["established"], 1, "{f}");
    assert_eq!(f["established_inferred"], 1, "{f}");
    assert_eq!(r["summary"]["established_inferred"], 1);
    // Converse: a pair whose replies are visible and that really goes
    // unanswered is still blocked.
    let blocked = findings(&r, "blocked");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert!(is(blocked[0], "proxy", "engine2", 4747));
    assert_eq!(blocked[0]["outcomes"]["unanswered"], 1);
}

#[test]
fn syn_again_after_a_lost_syn_ack_is_one_attempt() {
    let r = report("lost-syn-ack.pcap");
    let f = flow(&r, "proxy", "engine1", 4747);
    assert_eq!(f["attempts"], 1, "{f}");
    assert_eq!(f["syn_retransmissions"], 1, "{f}");
    assert_eq!(f["outcomes"]["established"], 1, "{f}");
    assert_eq!(r["summary"]["connections"]["expected"], 2);
    assert_eq!(r["capture"]["control_packets"]["syn"], 3);
}

#[test]
fn a_stray_timestamp_does_not_move_the_clock() {
    let r = report("stray-timestamp.pcap");
    assert_eq!(r["capture"]["timestamp_anomalies"], 1);
    let d = r["capture"]["duration_seconds"].as_f64().unwrap();
    assert!(d > 15.0 * 60.0 && d < 21.0 * 60.0, "{d}");
    assert!(r["capture"]["last_seen"]
        .as_str()
        .unwrap()
        .starts_with("2026-01-05T"));
    assert_eq!(r["findings"], Value::Array(vec![]));
    for e in r["edges"].as_array().unwrap() {
        assert_eq!(e["state"], "seen", "{e}");
    }
    // Apart from the clock, the same verdicts as the site's plain traffic.
    assert_eq!(r["summary"]["outcomes"]["unknown"], 0);
    assert_eq!(r["summary"]["outcomes"]["unanswered"], 0);
}

#[test]
fn a_real_quiet_gap_moves_the_clock() {
    let r = report("quiet-gap.pcap");
    assert_eq!(r["capture"]["timestamp_anomalies"], 0);
    let d = r["capture"]["duration_seconds"].as_f64().unwrap();
    assert!(d > 3.0 * 3600.0, "{d}");
}
