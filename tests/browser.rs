//! The HTML report in a real browser: headless Chromium loads the report of
//! the demo fixture (both diagram layouts) and the live page of
//! `run --replay … --loop`; the screenshot is not blank, and the DOM holds
//! every node, every required edge and every finding of the fixture's
//! golden report. Chromium only ever loads a file:// page or 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::prereq::needs;
use crate::util::{demo_run, fixture, http_get, Daemon, TempDir};

const PORTWATCH: &str = env!("CARGO_BIN_EXE_portwatch");

/// Chromium with a fresh profile and nothing that reaches the network.
fn chromium(dir: &Path, args: &[&str], url: &str) -> std::process::Output {
    let profile = dir.join(format!(
        "profile-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let out = Command::new("timeout")
        .args(["120", "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dump_dom(dir: &Path, url: &str) -> String {
    String::from_utf8(chromium(dir, &["--dump-dom"], url).stdout).unwrap()
}

/// Take a screenshot and check it is not blank: enough of it differs from
/// its most common colour, in enough different colours.
fn screenshot_not_blank(dir: &Path, url: &str, name: &str) {
    let png = dir.join(name);
    chromium(dir, &[&format!("--screenshot={}", png.display())], url);
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut counts = std::collections::HashMap::<&[u8], usize>::new();
    for p in buf[..info.buffer_size()].chunks(px) {
        *counts.entry(&p[..3]).or_default() += 1;
    }
    let total = (info.width * info.height) as usize;
    let background = counts.values().max().copied().unwrap_or(0);
    let other = total - background;
    assert!(
        other * 100 / total >= 5 && counts.len() >= 50,
        "{name} looks blank: {other} of {total} pixels differ from the background, {} colours",
        counts.len()
    );
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every node, required edge and finding of the golden report is in the DOM.
/// The static report has exactly the golden findings; the live page may
/// have more (a looping replay keeps judging windows).
fn assert_dom_holds(dom: &str, golden: &Value, what: &str, exact: bool) {
    let site = golden["summary"]["site"].as_str().unwrap();
    let mut nodes: Vec<String> = portwatch::config::load_policy(Path::new(site), None)
        .unwrap()
        .policy
        .endpoints
        .iter()
        .map(|e| e.name.clone())
        .collect();
    for f in golden["findings"].as_array().unwrap() {
        for end in ["src", "dst"] {
            nodes.push(f[end].as_str().unwrap().to_string());
        }
    }
    for n in &nodes {
        assert!(
            dom.contains(&format!("id=\"node:{n}\"")),
            "{what}: no node {n}"
        );
    }
    let edges = golden["edges"].as_array().unwrap();
    for e in edges {
        let key = format!(
            "{}:{}:{}",
            e["src"].as_str().unwrap(),
            e["dst"].as_str().unwrap(),
            e["port"]
        );
        assert!(
            dom.contains(&format!("id=\"edge:{key}\"")),
            "{what}: edge {key} not drawn"
        );
        assert!(
            dom.contains(&format!("data-edge=\"{key}\"")),
            "{what}: edge {key} not listed"
        );
    }
    let findings = golden["findings"].as_array().unwrap();
    for f in findings {
        let key = format!(
            "{}:{}:{}:{}",
            f["kind"].as_str().unwrap(),
            f["src"].as_str().unwrap(),
            f["dst"].as_str().unwrap(),
            f["port"]
        );
        assert!(
            dom.contains(&format!("data-finding=\"{key}\"")),
            "{what}: finding {key} missing"
        );
        // Unexpected, local-only and unknown-host flows are drawn too.
        if ["unexpected", "local_only", "unknown_host"].contains(&f["kind"].as_str().unwrap()) {
            let line = format!(
                "id=\"flow:{}:{}:{}\"",
                f["kind"].as_str().unwrap(),
                f["src"].as_str().unwrap(),
                f["dst"].as_str().unwrap()
            );
            assert!(dom.contains(&line), "{what}: {line} not drawn");
        }
    }
    let rows = dom.matches("class=\"row finding\"").count();
    if exact {
        assert_eq!(rows, findings.len(), "{what}: finding rows");
    } else {
        assert!(rows >= findings.len(), "{what}: finding rows");
    }
}

/// Nothing on the page is fetched from anywhere.
fn assert_self_contained(html: &str) {
    for bad in [
        "<script src",
        "<link",
        "<img",
        "<iframe",
        "@import",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!html.contains(bad), "the page references `{bad}`");
    }
    for (i, _) in html.match_indices("url(") {
        assert!(
            html[i..].starts_with("url(#"),
            "external url(): {}",
            &html[i..i + 40]
        );
    }
}

fn replay_html(layout: &str, path: Option<&str>) -> std::process::Output {
    let mut c = Command::new(PORTWATCH);
    c.args([
        "replay",
        "--site",
        "multi-node",
        "--format",
        "html",
        "--layout",
        layout,
    ])
    .arg(fixture("demo.pcap"));
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().unwrap()
}

#[test]
fn html_report_is_self_contained_and_holds_the_golden_report_without_a_browser() {
    let golden = golden("demo.expected.json");
    // An empty PATH: no Graphviz, so `auto` falls back to the own layout
    // and says why; `dot` refuses.
    let out = replay_html("auto", Some(""));
    assert_eq!(out.status.code(), Some(1));
    let html = String::from_utf8(out.stdout).unwrap();
    assert_self_contained(&html);
    assert!(
        html.contains("Layout: portwatch's own layered layout")
            && html.contains("`dot` is not installed"),
        "the page says which layout and why"
    );
    assert_dom_holds(&html, &golden, "html text", true);
    for section in [
        "id=\"summary\"",
        "id=\"diagram\"",
        "id=\"findings\"",
        "id=\"edges\"",
        "id=\"capture\"",
    ] {
        assert!(html.contains(section), "{section}");
    }
    // Findings are grouped by kind, in the report's order.
    let kinds: Vec<&str> = html
        .match_indices("<tbody data-kind=\"")
        .map(|(i, m)| html[i + m.len()..].split('"').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["unexpected", "local_only", "unknown_host", "blocked"]
    );
    assert!(html.contains("fixtures/demo.pcap (pcap, EN10MB(1)): 1008 packets"));

    let out = replay_html("dot", Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layout dot: `dot` is not installed"));
}

/// Every fixture's HTML report holds its golden report (own layout: no
/// Graphviz needed, so this runs everywhere).
#[test]
fn html_report_of_every_fixture_holds_its_golden_report() {
    let list = std::fs::read_to_string(fixture("fixtures.tsv")).unwrap();
    let mut checked = 0;
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let (file, site) = match line.split('\t').collect::<Vec<_>>()[..] {
            [f, s, _] => (f, s),
            _ => continue,
        };
        let stem = file.rsplit_once('.').unwrap().0;
        let golden = golden(&format!("{stem}.expected.json"));
        let out = Command::new(PORTWATCH)
            .args([
                "replay", "--site", site, "--format", "html", "--layout", "builtin",
            ])
            .arg(fixture(file))
            .output()
            .unwrap();
        let html = String::from_utf8(out.stdout).unwrap();
        assert_self_contained(&html);
        assert_dom_holds(&html, &golden, file, true);
        for e in golden["edges"].as_array().unwrap() {
            // Each required edge is drawn in its state's class (or blocked).
            let id = format!(
                "id=\"edge:{}:{}:{}\" class=\"line ",
                e["src"].as_str().unwrap(),
                e["dst"].as_str().unwrap(),
                e["port"]
            );
            let at = html.find(&id).unwrap_or_else(|| panic!("{file}: {id}"));
            let class = html[at + id.len()..].split('"').next().unwrap();
            assert!(
                class == e["state"].as_str().unwrap() || class == "blocked",
                "{file}: {id}{class}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} fixtures");
}

#[test]
fn browser_html_report_of_the_demo_fixture_holds_every_node_edge_and_finding() {
    if !needs(
        "browser report test",
        false,
        &["chromium", "dot", "timeout"],
    ) {
        return;
    }
    let dir = TempDir::new("browser-report");
    let golden = golden("demo.expected.json");
    for layout in ["dot", "builtin"] {
        let out = Command::new(PORTWATCH)
            .args([
                "replay",
                "--site",
                "multi-node",
                "--format",
                "html",
                "--layout",
                layout,
            ])
            .arg(fixture("demo.pcap"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "findings: exit 1");
        let html = String::from_utf8(out.stdout).unwrap();
        assert_self_contained(&html);
        let want = if layout == "dot" {
            "Layout: Graphviz dot"
        } else {
            "Layout: portwatch"
        };
        assert!(
            html.contains(want),
            "{layout}: the page says how it was laid out"
        );
        let file = dir.0.join(format!("report-{layout}.html"));
        std::fs::write(&file, &html).unwrap();
        let url = format!("file://{}", file.display());
        let dom = dump_dom(&dir.0, &url);
        assert!(dom.contains("<svg"), "{layout}: no diagram");
        assert_dom_holds(&dom, &golden, layout, true);
        screenshot_not_blank(&dir.0, &url, &format!("report-{layout}.png"));
    }
}

#[test]
fn browser_live_page_of_run_holds_every_node_edge_and_finding() {
    if !needs("browser live page test", false, &["chromium", "timeout"]) {
        return;
    }
    let dir = TempDir::new("browser-live");
    let golden = golden("demo.expected.json");
    let d = Daemon::start(&demo_run("200", &[]));
    // Wait until a whole pass of the capture is on the page.
    let findings = golden["findings"].as_array().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = http_get(d.addr, "/").map(|(_, b)| b).unwrap_or_default();
        if body.matches("class=\"row finding\"").count() >= findings {
            assert!(
                body.contains("http-equiv=\"refresh\""),
                "the live page refreshes itself"
            );
            for link in [
                "href=\"/metrics\"",
                "href=\"/healthz\"",
                "href=\"/-/ready\"",
            ] {
                assert!(body.contains(link), "{link}");
            }
            assert_self_contained(&body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live page never showed every finding:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let url = format!("http://{}/", d.addr);
    let dom = dump_dom(&dir.0, &url);
    assert_dom_holds(&dom, &golden, "live page", false);
    screenshot_not_blank(&dir.0, &url, "live.png");
}

#[test]
fn expect_format_dot_is_graphviz_with_every_expected_edge() {
    let out = Command::new(PORTWATCH)
        .args(["expect", "--site", "multi-node", "--format", "dot"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dot = String::from_utf8(out.stdout).unwrap();
    let json = Command::new(PORTWATCH)
        .args(["expect", "--site", "multi-node", "--format", "json"])
        .output()
        .unwrap();
    let exp: Value = serde_json::from_slice(&json.stdout).unwrap();
    for e in exp["edges"].as_array().unwrap() {
        let id = format!(
            "id=\"edge:{}:{}:{}\"",
            e["src"].as_str().unwrap(),
            e["dst"].as_str().unwrap(),
            e["port"]
        );
        assert!(dot.contains(&id), "{id}");
    }
    if !needs("expect --format dot through Graphviz", false, &["dot"]) {
        return;
    }
    use std::io::Write;
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let svg = child.wait_with_output().unwrap();
    assert!(
        svg.status.success(),
        "{}",
        String::from_utf8_lossy(&svg.stderr)
    );
    let svg = String::from_utf8(svg.stdout).unwrap();
    assert!(svg.contains("id=\"node:central\"") && svg.contains("id=\"edge:proxy:central:4242\""));
}

/// The site of a newcomer's audit: the central node, two proxies, three
/// engines and a scheduler.
const SEVEN_NODES: &str = "site: seven\nnodes:\n  - {name: central, addresses: [192.0.2.10], roles: [central]}\n  - {name: proxy1, addresses: [192.0.2.11], roles: [proxy]}\n  - {name: proxy2, addresses: [192.0.2.12], roles: [proxy]}\n  - {name: engine1, addresses: [192.0.2.21], roles: [engine]}\n  - {name: engine2, addresses: [192.0.2.22], roles: [engine]}\n  - {name: engine3, addresses: [192.0.2.23], roles: [engine]}\n  - {name: scheduler, addresses: [192.0.2.31], roles: [scheduler]}\nuser_networks:\n  - {name: corp-users, cidrs: [198.51.100.0/24]}\n";

/// Why a required edge is `not_observed` is on the page, as the JSON
/// report says it: in its own column and as the row's hover text in the
/// edge table, and in the diagram line's hover text. Those lines are
/// faint (a switch hides them) and their table is folded while other
/// edges have a verdict. A 7-node site in headless Chromium, both layouts.
#[test]
fn browser_html_report_says_why_an_edge_is_not_observed() {
    if !needs(
        "browser report test",
        false,
        &["chromium", "dot", "timeout"],
    ) {
        return;
    }
    let dir = TempDir::new("browser-not-observed");
    let site = dir.0.join("seven.yaml");
    std::fs::write(&site, SEVEN_NODES).unwrap();
    let replay = |format: &str, layout: &str| {
        let out = Command::new(PORTWATCH)
            .args(["replay", "--site"])
            .arg(&site)
            .args(["--format", format, "--layout", layout])
            .arg(fixture("verdict-local-only.pcap"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "findings: exit 1");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&replay("json", "builtin")).unwrap();
    let edges = json["edges"].as_array().unwrap();
    let quiet: Vec<&Value> = (edges.iter())
        .filter(|e| e["state"] == "not_observed")
        .collect();
    assert!(
        quiet.len() >= 10 && quiet.len() < edges.len(),
        "most edges not observed, one seen: {edges:?}"
    );
    for layout in ["dot", "builtin"] {
        let file = dir.0.join(format!("seven-{layout}.html"));
        std::fs::write(&file, replay("html", layout)).unwrap();
        let dom = dump_dom(&dir.0, &format!("file://{}", file.display()));
        // Folded, since one edge has a verdict; the switch is there.
        assert!(dom.contains("<details id=\"not-observed\">"), "{layout}");
        assert!(dom.contains("id=\"hide-not-observed\""), "{layout}");
        for e in &quiet {
            let reason = e["reason"].as_str().expect("a reason in the JSON");
            let key = format!(
                "{}:{}:{}",
                e["src"].as_str().unwrap(),
                e["dst"].as_str().unwrap(),
                e["port"]
            );
            let row = element(&dom, &format!("data-edge=\"{key}\""), "</tr>");
            assert!(
                row.contains(&format!("title=\"{reason}\"")),
                "{layout} {key}: {row}"
            );
            assert!(
                row.contains(&format!("<td class=\"reason\">{reason}</td>")),
                "{layout} {key}: {row}"
            );
            let line = element(&dom, &format!("id=\"edge:{key}\""), "</g>");
            assert!(line.contains(reason), "{layout} {key}: diagram line {line}");
            assert!(line.contains("not_observed"), "{layout} {key}: {line}");
        }
    }
}

/// From `start` to the first `end` after it.
fn element<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let at = dom.find(start).unwrap_or_else(|| panic!("no {start}"));
    let len = dom[at..].find(end).unwrap_or(dom.len() - at);
    &dom[at..at + len]
}
