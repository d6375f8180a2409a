//! Accepted deviations and `replay --baseline`: the capture with two
//! unexpected flows (`fixtures/verdict-unexpected.pcap`, 2026-01-05)
//! replayed against the multi-node site with an acceptance of one of them
//! that holds on the day, one that expired the day before, and none; what
//! the report (JSON, table, HTML), the ECS events and the finding metrics
//! say of each; and a replay against a baseline report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::golden::{portwatch, root, Run};
use crate::util::TempDir;
use portwatch::config::load_policy;
use portwatch::export::metrics::{Metrics, Recorder};
use portwatch::pipeline::Pipeline;
use portwatch::policy::Visibility;
use portwatch::source::file::MergedFiles;
use portwatch::source::{Poll, Source};
use portwatch::state::TrackConfig;

const PCAP: &str = "fixtures/verdict-unexpected.pcap";

/// A test's directory, removed when dropped, with the site file in it.
struct SiteDir {
    dir: TempDir,
    site: PathBuf,
}

impl SiteDir {
    fn join(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

/// The multi-node site with `corp-users -> engine1:4747` accepted until
/// `expires` (none if `None`), an acceptance by address that always holds
/// (`engine1 -> proxy:4243`) and one that matches nothing.
fn site(name: &str, expires: Option<&str>) -> SiteDir {
    let base = std::fs::read_to_string(root().join("deploy/sites/multi-node.yaml")).unwrap();
    let base = base.split("\naccepted:").next().unwrap().trim_end();
    let mut text = format!("{base}\naccepted:\n");
    if let Some(date) = expires {
        text.push_str(&format!(
            "  - from: corp-users\n    to: engine1\n    port: 4747\n    reason: \"engine probe <script>alert(1)</script>\"\n    \
             ticket: CHG-123\n    owner: qlik-admins\n    expires: {date}\n"
        ));
    }
    text.push_str(
        "  - from: 203.0.113.99\n    to: central\n    port: 3389\n    reason: jump host\n    ticket: CHG-9\n    \
         owner: ops\n    expires: 2030-01-01\n  \
         - from: 192.0.2.21\n    to: proxy\n    port: 4243\n    reason: health check\n    ticket: CHG-7\n    \
         owner: ops\n    expires: 2030-01-01\n",
    );
    let dir = TempDir::new(&format!("accepted-{name}"));
    let path = dir.0.join("site.yaml");
    std::fs::write(&path, text).unwrap();
    SiteDir { dir, site: path }
}

fn replay(site: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["replay", PCAP, "--site", site.to_str().unwrap()];
    args.extend(extra);
    portwatch(&args)
}

fn finding<'a>(r: &'a Value, src: &str) -> &'a Value {
    (r["findings"].as_array().unwrap().iter())
        .find(|f| f["src"] == src)
        .unwrap_or_else(|| panic!("no finding from {src}: {r}"))
}

/// The ECS finding line of the flow from `src` (an alert or an event).
fn ecs_finding(events: &Path, src: &str) -> Value {
    let text = std::fs::read_to_string(events).unwrap();
    (text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()))
    .find(|d| d["portwatch"]["finding"] == "unexpected" && d["portwatch"]["src"] == src)
    .unwrap_or_else(|| panic!("no finding line from {src}:\n{text}"))
}

/// The `portwatch_finding_active` series of the flow from `src`, by the
/// library as the daemon wires it.
fn finding_series(site: &Path, src: &str) -> Vec<String> {
    let policy = Arc::new(load_policy(site, None).unwrap().policy);
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    rec.set_policy(&policy, &Visibility::default());
    let mut pl = Pipeline::new(policy.clone(), TrackConfig::default());
    pl.record_events(true);
    let mut files = MergedFiles::open(&[root().join(PCAP)]).unwrap();
    let wall = std::time::Instant::now();
    loop {
        let poll = files.poll(&mut |f| {
            pl.ingest(f);
        });
        for e in pl.drain_events() {
            rec.observe(&policy, &e, wall);
        }
        if poll.unwrap() == Poll::End {
            break;
        }
    }
    let want = format!("src=\"{src}\"");
    (m.render().lines())
        .filter(|l| l.starts_with("portwatch_finding_active{") && l.contains(&want))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_acceptance_that_holds_on_the_day_marks_the_finding_everywhere() {
    let dir = site("holds", Some("2026-01-05"));
    let (site, events) = (dir.site.clone(), dir.join("events.json"));
    let run = replay(
        &site,
        &["--format", "json", "--events", events.to_str().unwrap()],
    );
    // Both findings are accepted: nothing counts for the exit status.
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["summary"]["findings"]["unexpected"], 2, "still counted");
    let f = finding(&r, "corp-users");
    assert_eq!(f["accepted"]["ticket"], "CHG-123");
    assert_eq!(f["accepted"]["owner"], "qlik-admins");
    assert_eq!(f["accepted"]["expires"], "2026-01-05");
    assert_eq!(
        finding(&r, "engine1")["accepted"]["ticket"],
        "CHG-7",
        "by address"
    );
    let uses = r["acceptances"].as_array().unwrap();
    assert_eq!(
        (
            uses[0]["findings"].as_u64(),
            uses[0]["occurrences"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(uses[1]["flow"], "203.0.113.99 -> central:3389");
    assert_eq!(
        (
            uses[1]["findings"].as_u64(),
            uses[1]["findings_after_expiry"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(uses[2]["findings"], 1);

    let doc = ecs_finding(&events, "corp-users");
    assert_eq!(
        doc["event"]["kind"], "event",
        "an accepted finding is no alert: {doc}"
    );
    assert_eq!(doc["portwatch"]["accepted"]["ticket"], "CHG-123");
    assert_eq!(doc["portwatch"]["accepted"]["expires"], "2026-01-05");

    let series = finding_series(&site, "corp-users");
    assert_eq!(series.len(), 1, "{series:?}");
    assert!(series[0].contains("accepted=\"true\""), "{series:?}");

    let table = replay(&site, &[]).stdout;
    assert!(
        table.contains("ACCEPTED until 2026-01-05 under CHG-123 (owner qlik-admins)"),
        "{table}"
    );
    assert!(
        table.contains("accepted[1] 203.0.113.99 -> central:3389 CHG-9 until 2030-01-01: matched no finding in the input"),
        "{table}"
    );
    let html = replay(&site, &["--format", "html"]).stdout;
    assert!(
        html.contains("<span class=\"accepted\" data-ticket=\"CHG-123\">"),
        "{html}"
    );
    assert!(html.contains("engine probe &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !html.contains("<script>alert(1)"),
        "the reason is text, not markup"
    );
    assert!(html.contains("<tr class=\"acceptance unused\"><td>accepted[1]</td>"));
}

#[test]
fn an_expired_acceptance_alerts_again() {
    let dir = site("expired", Some("2026-01-04"));
    let (site, events) = (dir.site.clone(), dir.join("events.json"));
    let run = replay(
        &site,
        &["--format", "json", "--events", events.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let r = run.json();
    let f = finding(&r, "corp-users");
    assert!(f.get("accepted").is_none(), "{f}");
    assert_eq!(r["acceptances"][0]["findings"], 0);
    assert_eq!(r["acceptances"][0]["findings_after_expiry"], 1);
    let doc = ecs_finding(&events, "corp-users");
    assert_eq!(doc["event"]["kind"], "alert");
    assert!(doc["portwatch"].get("accepted").is_none(), "{doc}");
    let series = finding_series(&site, "corp-users");
    assert!(
        series.len() == 1 && series[0].contains("accepted=\"false\""),
        "{series:?}"
    );
}

/// The HTML summary tiles say how many findings are accepted, and only
/// those no acceptance covers make a tile red (what alerts).
#[test]
fn html_summary_tiles_tell_accepted_findings_apart() {
    let tile = |html: &str, key: &str| -> String {
        let at = html
            .find(&format!("data-count=\"{key}\""))
            .unwrap_or_else(|| panic!("no {key} tile: {html}"));
        let start = html[..at].rfind("<div").unwrap();
        let end = at + html[at..].find("</div>").unwrap();
        html[start..end].to_string()
    };
    let all = site("tiles-all", Some("2026-01-05"));
    let html = replay(&all.site, &["--format", "html"]).stdout;
    assert_eq!(
        tile(&html, "findings"),
        "<div class=\"tile\" data-count=\"findings\"><b>2</b><small>findings, 2 accepted</small>"
    );
    assert_eq!(
        tile(&html, "unexpected"),
        "<div class=\"tile\" data-count=\"unexpected\"><b>2</b><small>unexpected, 2 accepted</small>"
    );
    // Expired: corp-users' finding alerts again (engine1's is accepted by address).
    let one = site("tiles-one", Some("2026-01-04"));
    let html = replay(&one.site, &["--format", "html"]).stdout;
    assert_eq!(
        tile(&html, "findings"),
        "<div class=\"tile bad\" data-count=\"findings\"><b>2</b><small>findings, 1 accepted</small>"
    );
}

/// The conn log's record of an accepted connection names the acceptance;
/// one whose acceptance expired does not.
#[test]
fn the_conn_log_names_the_acceptance() {
    let record = |name: &str, expires: &str| -> Value {
        let dir = site(name, Some(expires));
        let (site, log) = (dir.site.clone(), dir.join("conns.json"));
        let run = replay(&site, &["--conn-log", log.to_str().unwrap()]);
        assert!(run.code.is_some(), "{}", run.stderr);
        let text = std::fs::read_to_string(&log).unwrap();
        (text.lines())
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|d| d["portwatch"]["src"] == "corp-users" && d["destination"]["port"] == 4747)
            .unwrap_or_else(|| panic!("no conn record corp-users -> engine1:4747:\n{text}"))
    };
    let doc = record("conns-holds", "2026-01-05");
    assert_eq!(doc["event"]["action"], "connection-end", "{doc}");
    assert_eq!(doc["portwatch"]["accepted"]["ticket"], "CHG-123", "{doc}");
    assert_eq!(doc["portwatch"]["accepted"]["expires"], "2026-01-05");
    let doc = record("conns-expired", "2026-01-04");
    assert!(doc["portwatch"].get("accepted").is_none(), "{doc}");
}

#[test]
fn without_an_acceptance_the_finding_is_as_before() {
    let dir = site("none", None);
    let (site, events) = (dir.site.clone(), dir.join("events.json"));
    let run = replay(
        &site,
        &["--format", "json", "--events", events.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(1));
    let r = run.json();
    assert!(finding(&r, "corp-users").get("accepted").is_none());
    assert_eq!(ecs_finding(&events, "corp-users")["event"]["kind"], "alert");
    assert_eq!(r["acceptances"].as_array().unwrap().len(), 2);
}

#[test]
fn a_baseline_leaves_out_the_findings_it_has() {
    let dir = site("baseline", None);
    let site = dir.site.clone();
    let first = replay(&site, &["--format", "json"]);
    let mut old = first.json();
    let all_edges = old["edges"].clone();
    // The baseline knows one of the two findings.
    old["findings"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["src"] == "engine1");
    let path = dir.join("old.json");
    std::fs::write(&path, old.to_string()).unwrap();

    let run = replay(
        &site,
        &["--format", "json", "--baseline", path.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(1), "the new finding counts");
    let r = run.json();
    let srcs: Vec<&str> = (r["findings"].as_array().unwrap().iter())
        .map(|f| f["src"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, ["corp-users"]);
    assert_eq!(r["baseline"]["known"], 1);
    assert_eq!(r["baseline"]["new"], 1);
    assert_eq!(r["summary"]["findings"]["unexpected"], 1);
    assert_eq!(r["edges"], all_edges, "required edges in full");
    let table = replay(&site, &["--baseline", path.to_str().unwrap()]).stdout;
    assert!(
        table.contains("already known, left out: 1 (unexpected=1)"),
        "{table}"
    );

    let html = replay(
        &site,
        &["--format", "html", "--baseline", path.to_str().unwrap()],
    )
    .stdout;
    assert!(html.contains("already known there, left out: 1."), "{html}");

    // Against itself: nothing new, exit 0.
    let same = dir.join("same.json");
    std::fs::write(&same, &first.stdout).unwrap();
    let run = replay(
        &site,
        &["--format", "json", "--baseline", same.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json()["baseline"]["known"], 2);

    // Not a report: bad input.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"flows\": []}").unwrap();
    let run = replay(&site, &["--baseline", bad.to_str().unwrap()]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--baseline") && run.stderr.contains("not a portwatch JSON report"),
        "{}",
        run.stderr
    );
}
