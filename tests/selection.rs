//! `replay --since/--until` and `--filter`: the part of the data audited,
//! against tshark on the same range and tcpdump with the same expression;
//! records of node logs outside the range; bad bounds and filters; the HTML
//! report's flows behind `unknown` outcomes.

use std::process::Command;

use serde_json::Value;

use crate::golden::portwatch;

const DEMO: &str = "fixtures/demo.pcap";
const SINCE: &str = "2026-01-05T09:05:00Z";
const UNTIL: &str = "2026-01-05T09:12:00Z";
/// The same bounds in seconds since the epoch.
const SINCE_EPOCH: u64 = 1_767_603_900;
const UNTIL_EPOCH: u64 = 1_767_604_320;

/// Frames of `file` tshark selects with `filter` (None: tshark missing).
fn tshark_count(file: &str, filter: &str) -> Option<u64> {
    let out = Command::new("tshark")
        .args([
            "-r",
            file,
            "-Y",
            filter,
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .current_dir(crate::golden::root())
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "tshark -Y {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

fn report(args: &[&str]) -> Value {
    let mut all = vec!["replay", "--format", "json"];
    all.extend(args);
    let run = portwatch(&all);
    assert!(
        matches!(run.code, Some(0 | 1)),
        "{all:?}: {:?} {}",
        run.code,
        run.stderr
    );
    run.json()
}

#[test]
fn since_until_audit_what_tshark_selects_in_the_range() {
    let range = format!("frame.time_epoch >= {SINCE_EPOCH} && frame.time_epoch < {UNTIL_EPOCH}");
    let Some(inside) = tshark_count(DEMO, &range) else {
        return crate::util::skip("since_until", "no tshark");
    };
    let all = tshark_count(DEMO, "frame").unwrap();
    assert!(inside > 0 && inside < all, "the range cuts the capture");
    let r = report(&[
        "--site",
        "multi-node",
        "--since",
        SINCE,
        "--until",
        UNTIL,
        DEMO,
    ]);
    let c = &r["capture"];
    let sel = &c["selection"];
    assert_eq!(sel["since"], "2026-01-05T09:05:00.000000Z");
    assert_eq!(sel["until"], "2026-01-05T09:12:00.000000Z");
    assert_eq!(sel["frames_outside_range"], all - inside, "{sel}");
    assert_eq!(sel["records_outside_range"], 0);
    assert_eq!(c["packets"], inside);
    for (control, flags) in [
        ("syn", "tcp.flags.syn == 1 && tcp.flags.ack == 0"),
        ("syn_ack", "tcp.flags.syn == 1 && tcp.flags.ack == 1"),
        ("rst", "tcp.flags.reset == 1"),
    ] {
        let want = tshark_count(DEMO, &format!("{range} && {flags}")).unwrap();
        assert_eq!(c["control_packets"][control], want, "{control}");
    }
    let first = c["first_seen"].as_str().unwrap();
    let last = c["last_seen"].as_str().unwrap();
    assert!(
        first >= SINCE && last < UNTIL,
        "{first} to {last} outside the range"
    );
    // The whole capture, for contrast: nothing left out, no selection shown.
    let whole = report(&["--site", "multi-node", DEMO]);
    assert!(whole["capture"].get("selection").is_none());
    assert_eq!(whole["capture"]["packets"], all);
}

#[test]
fn since_skips_node_log_records_before_it_and_counts_them() {
    // central's log is in its local time, UTC+1 in January.
    let log = "fixtures/nodelogs/central-pfirewall.log";
    let text = std::fs::read_to_string(crate::golden::root().join(log)).unwrap();
    let before = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" TCP "))
        .filter(|l| l.get(11..19).is_some_and(|t| t < "10:10:00"))
        .count() as u64;
    let total = text.lines().filter(|l| l.contains(" TCP ")).count() as u64;
    assert!(before > 0 && before < total);
    let r = report(&[
        "--site",
        "fixtures/nodelogs/site.yaml",
        "--since",
        "2026-01-05T09:10:00Z",
        log,
    ]);
    let sel = &r["capture"]["selection"];
    assert_eq!(sel["records_outside_range"], before, "{sel}");
    assert_eq!(sel["frames_outside_range"], 0);
    assert!(sel["until"].is_null());
    let first = r["capture"]["first_seen"].as_str().unwrap();
    assert!(first >= "2026-01-05T09:10:00Z", "{first}");
}

#[test]
fn bad_time_bounds_are_usage_errors() {
    for args in [
        vec!["--since", "yesterday"],
        vec!["--until", "2026-01-05T09:00:00"],
        vec!["--since", UNTIL, "--until", SINCE],
        vec!["--since", SINCE, "--until", SINCE],
    ] {
        let mut all = vec!["replay", "--site", "multi-node", DEMO];
        all.extend(&args);
        let run = portwatch(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("--since") || run.stderr.contains("--until"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// Packets of `file` tcpdump passes with `expr` (None: no tcpdump).
fn tcpdump_count(file: &str, expr: &str) -> Option<u64> {
    let mut args = vec!["-nn", "-r", file];
    args.extend((!expr.is_empty()).then_some(expr));
    let out = Command::new("tcpdump")
        .args(&args)
        .current_dir(crate::golden::root())
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "tcpdump {expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

#[test]
fn filter_audits_the_frames_tcpdump_passes() {
    let expr = "tcp port 4242";
    let Some(passed) = tcpdump_count(DEMO, expr) else {
        return crate::util::skip("filter", "no tcpdump");
    };
    let all = tcpdump_count(DEMO, "").unwrap();
    let syns = tcpdump_count(
        DEMO,
        &format!("{expr} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"),
    )
    .unwrap();
    assert!(passed > 0 && passed < all && syns > 0);
    let by_flag = report(&["--site", "multi-node", "--filter", expr, DEMO]);
    let trailing = report(&["--site", "multi-node", DEMO, "--", "tcp", "port", "4242"]);
    for r in [&by_flag, &trailing] {
        let c = &r["capture"];
        assert_eq!(c["selection"]["filter"], expr);
        assert_eq!(c["selection"]["frames_filtered_out"], all - passed);
        assert_eq!(c["packets"], passed);
        assert_eq!(c["control_packets"]["syn"], syns);
        for f in r["flows"].as_array().unwrap() {
            assert_eq!(f["port"], 4242, "{f}");
        }
        // What the filter left out proves nothing missing: no edge judged.
        assert_eq!(
            r["edges"].as_array().map(Vec::len),
            Some(0),
            "{}",
            r["edges"]
        );
    }
    assert_eq!(by_flag, trailing);
    let unfiltered = report(&["--site", "multi-node", DEMO]);
    assert!(!unfiltered["edges"].as_array().unwrap().is_empty());
}

#[test]
fn bad_filter_is_exit_2_naming_it_and_libpcaps_error() {
    let run = portwatch(&[
        "replay",
        "--site",
        "multi-node",
        "--filter",
        "tcp portt 4242",
        DEMO,
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("`tcp portt 4242`"), "{}", run.stderr);
    assert!(run.stderr.contains("syntax error"), "{}", run.stderr);
}

#[test]
fn html_lists_the_flows_behind_unknown_outcomes() {
    // SYNs only: no reply is seen, so attempts end unknown.
    let args = |format| {
        vec![
            "replay",
            "--site",
            "multi-node",
            "--format",
            format,
            DEMO,
            "--",
            "tcp[tcpflags] & tcp-ack == 0",
        ]
    };
    let json = portwatch(&args("json")).json();
    let unknown: Vec<&Value> = (json["flows"].as_array().unwrap().iter())
        .filter(|f| f["outcomes"]["unknown"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(!unknown.is_empty(), "{}", json["summary"]);
    let html = portwatch(&args("html")).stdout;
    let start = html
        .find("<section id=\"unknown-flows\">")
        .expect("unknown-flows section");
    let section = &html[start..start + html[start..].find("</section>").unwrap()];
    assert_eq!(section.matches("<tr class=\"row\">").count(), unknown.len());
    for f in unknown {
        let row = format!(
            "<tr class=\"row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            f["src"].as_str().unwrap(),
            f["dst"].as_str().unwrap(),
            f["port"],
            f["service"].as_str().unwrap(),
            f["verdict"].as_str().unwrap(),
            f["outcomes"]["unknown"]
        );
        assert!(section.contains(&row), "no row {row}");
    }
    // A capture with replies has no unknown outcome and no such section.
    let whole = portwatch(&["replay", "--site", "multi-node", "--format", "html", DEMO]);
    assert!(!whole.stdout.contains("unknown-flows"));
}

#[test]
fn html_signoff_block_names_files_hashes_span_and_version() {
    let site = "fixtures/nodelogs/site.yaml";
    let run = portwatch(&[
        "replay",
        "--site",
        site,
        "--format",
        "html",
        "--since",
        SINCE,
        "fixtures/nodelogs.pcap",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let html = run.stdout;
    let start = html
        .find("<section id=\"signoff\">")
        .expect("sign-off section");
    let block = &html[start..start + html[start..].find("</section>").unwrap()];
    let json = portwatch(&[
        "replay",
        "--site",
        site,
        "--format",
        "json",
        "fixtures/nodelogs.pcap",
    ])
    .json();
    let files = json["provenance"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0]["role"], "site");
    assert_eq!(files[0]["path"], site);
    assert_eq!(files[1]["role"], "model");
    for f in files {
        let path = f["path"].as_str().unwrap();
        let bytes = std::fs::read(crate::golden::root().join(path)).unwrap();
        let want = sha256_hex(&bytes);
        assert_eq!(f["sha256"], want.as_str(), "{path}");
        assert!(
            block.contains(&format!("{path} (SHA-256 {want})")),
            "{block}"
        );
    }
    for needle in [
        "<th>run by</th>",
        "<th>run at</th>",
        "<th>span</th>",
        "from 2026-01-05T09:05:00.000000Z until the end (exclusive)",
        &format!("<th>portwatch</th><td>{}</td>", env!("CARGO_PKG_VERSION")),
        "Reviewed by (name)",
        "Signature",
    ] {
        assert!(block.contains(needle), "no {needle} in {block}");
    }
}

/// SHA-256 by `sha256sum`, the tool an auditor checks with.
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
