//! A single event of each finding reaches the pager: `run --replay` of a
//! capture holding one local-only probe, one unexpected attempt, one
//! unknown host, one refused and one unanswered attempt on expected edges
//! (each once), scraped by a real Prometheus with the shipped rules. Each
//! alert fires within one scrape interval plus one evaluation interval of
//! the sensor exporting the finding (README "Alerting": the figure this
//! test measures, with 1 s intervals), resolves when the sensor's finding
//! hold ends, and does not fire again for the same old event.
//!
//! Needs `/usr/bin/prometheus` (or `PORTWATCH_PROMETHEUS`); without it the
//! test says why and passes (fails under `CI=true`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::deploy::{deploy, need, prometheus_bin, query, start_prometheus};
use crate::live::{connection, frame, write_pcap_at, Flags};
use crate::util::{Daemon, TempDir};

const SCRAPE: Duration = Duration::from_secs(1);
const EVALUATION: Duration = Duration::from_secs(1);
/// `--finding-hold` of the sensor under test.
const HOLD: Duration = Duration::from_secs(6);
/// What polling adds to a measured delay: the test polls every 100 ms, and
/// a query or a scrape of a loaded machine takes its time.
const SLACK: Duration = Duration::from_millis(1500);

/// When the events come, in capture time (replayed at its pace): time for
/// Prometheus to scrape the sensor and evaluate the rules once before.
const LEAD_MS: u32 = 6000;

/// (finding label, the alert it fires).
const KINDS: [(&str, &str); 5] = [
    ("local_only", "PortwatchLocalOnlyPortReachedRemotely"),
    ("unexpected", "PortwatchUnexpectedConnection"),
    ("unknown_host", "PortwatchUnknownHost"),
    ("blocked_refused", "PortwatchExpectedEdgeBlocked"),
    ("blocked_unanswered", "PortwatchExpectedEdgeBlocked"),
];

/// One event of each kind on the multi-node site, [`LEAD_MS`] after an
/// expected connection (the sensor is scraped before the events).
fn events_pcap(path: &std::path::Path) {
    let mut f: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut lead = Vec::new();
    connection(
        &mut lead,
        ("198.51.100.7", 40001),
        ("192.0.2.11", 443),
        None,
    );
    f.extend(lead.into_iter().map(|fr| (0, fr)));
    let at = LEAD_MS;
    // corp-users -> central:4444, a port local to central.
    let c = ("198.51.100.9", 40002);
    f.push((at, frame(c, ("192.0.2.10", 4444), Flags::Syn, None)));
    f.push((at, frame(("192.0.2.10", 4444), c, Flags::RstAck, None)));
    // corp-users straight to an engine.
    let c = ("198.51.100.8", 40003);
    f.push((at, frame(c, ("192.0.2.22", 4747), Flags::Syn, None)));
    f.push((at, frame(("192.0.2.22", 4747), c, Flags::RstAck, None)));
    // A host outside the inventory.
    let c = ("192.0.2.99", 40004);
    f.push((at, frame(c, ("192.0.2.10", 4242), Flags::Syn, None)));
    f.push((at, frame(("192.0.2.10", 4242), c, Flags::RstAck, None)));
    // proxy -> engine2:4239 (expected) refused.
    let c = ("192.0.2.11", 40005);
    f.push((at, frame(c, ("192.0.2.22", 4239), Flags::Syn, None)));
    f.push((at, frame(("192.0.2.22", 4239), c, Flags::RstAck, None)));
    // engine1 -> central:4242 (expected) dropped: three retransmissions.
    let c = ("192.0.2.21", 40006);
    for s in 0..4 {
        f.push((
            at + s * 1000,
            frame(c, ("192.0.2.10", 4242), Flags::Syn, None),
        ));
    }
    write_pcap_at(path, &f);
}

/// Whether `expr` has a sample now.
fn has_result(prom: u16, expr: &str) -> bool {
    let v = query(prom, expr);
    v["data"]["result"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
}

/// The alerts firing now, by their `finding` label.
fn firing(prom: u16) -> BTreeMap<String, String> {
    let v = query(prom, "ALERTS{alertstate=\"firing\"}");
    assert_eq!(v["status"], "success", "{v}");
    (v["data"]["result"].as_array().into_iter().flatten())
        .filter_map(|r| {
            let m = &r["metric"];
            Some((
                m["finding"].as_str()?.to_string(),
                m["alertname"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The findings the sensor exports as active now.
fn active(d: &Daemon) -> Vec<String> {
    (d.metrics().lines())
        .filter(|l| l.starts_with("portwatch_finding_active{") && l.ends_with(" 1"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("finding=\"")?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

#[derive(Default, Debug)]
struct Seen {
    /// When a poll first saw the sensor export it, and when the poll
    /// before (which did not) began: the export lies between the two.
    exported: Option<Instant>,
    exported_after: Option<Instant>,
    fired: Option<Instant>,
    alert: Option<String>,
    resolved: Option<Instant>,
}

#[test]
fn a_single_event_of_each_finding_fires_its_alert_once() {
    let Some(_) = need(prometheus_bin(), "prometheus") else {
        return;
    };
    let tmp = TempDir::new("alerts");
    let pcap = tmp.0.join("events.pcap");
    events_pcap(&pcap);

    // The sensor listens first (a port of its own, reported in its log) and
    // waits for its capture on standard input; Prometheus scrapes it before
    // the capture comes, so it is scraping when the events come.
    let log = tmp.0.join("portwatch.log");
    let hold = format!("{}s", HOLD.as_secs());
    let mut d = Daemon::spawn_wrapped(
        &[],
        &[
            "run",
            "--site",
            "multi-node",
            "--replay",
            "-",
            "--finding-hold",
            &hold,
        ],
        std::process::Stdio::piped(),
        None,
        Some(&log),
    );
    let target = d.addr;
    assert_ne!(target.port(), 0, "{}", d.log_text());
    let prom = start_prometheus(&format!(
        "global:\n  scrape_interval: {}s\n  evaluation_interval: {}s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: portwatch\n    static_configs:\n      - targets: ['{target}']\n",
        SCRAPE.as_secs(),
        EVALUATION.as_secs(),
        deploy("prometheus/portwatch.rules.yml").display(),
    ));
    // Scraping (the target is not up yet: `portwatch:up` 0) and evaluating.
    let evaluating = Instant::now() + Duration::from_secs(30);
    while !has_result(prom.port, "portwatch:up") {
        assert!(
            Instant::now() < evaluating,
            "no rule evaluation in 30 s:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stdin = d.child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &std::fs::read(&pcap).unwrap()).unwrap();
    drop(stdin);
    let context = |seen: &BTreeMap<&str, Seen>| {
        format!(
            "{seen:#?}\n--- portwatch log ---\n{}\n--- prometheus log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            prom.log()
        )
    };

    // The measured delays are those of a running Prometheus: it has scraped
    // the sensor and evaluated the rules before the first event.
    let scraping = Instant::now() + Duration::from_millis(u64::from(LEAD_MS));
    while !has_result(prom.port, "portwatch:up == 1") {
        assert!(
            Instant::now() < scraping,
            "not scraped within {LEAD_MS} ms:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut unexported_at = Instant::now();
    assert!(
        active(&d).is_empty(),
        "events before the first scrape: raise LEAD_MS"
    );

    let mut seen: BTreeMap<&str, Seen> = KINDS.iter().map(|(k, _)| (*k, Seen::default())).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().any(|s| s.resolved.is_none()) {
        assert!(
            Instant::now() < deadline,
            "not every alert fired and resolved within 60 s:\n{}",
            context(&seen)
        );
        let polled = Instant::now();
        let exported = active(&d);
        let alerts = firing(prom.port);
        let now = Instant::now();
        for (kind, s) in seen.iter_mut() {
            if s.exported.is_none() && exported.iter().any(|e| e == kind) {
                s.exported = Some(now);
                s.exported_after = Some(unexported_at);
            }
            match (alerts.get(*kind), s.fired) {
                (Some(name), None) => {
                    s.fired = Some(now);
                    s.alert = Some(name.clone());
                }
                (None, Some(_)) if s.resolved.is_none() => s.resolved = Some(now),
                _ => {}
            }
        }
        unexported_at = polled;
        std::thread::sleep(Duration::from_millis(100));
    }

    for (kind, s) in &seen {
        let since = |t: Option<Instant>| {
            t.zip(s.exported)
                .map(|(t, e)| t.saturating_duration_since(e))
        };
        eprintln!(
            "{kind}: fired after {:?}, resolved after {:?}",
            since(s.fired),
            since(s.resolved)
        );
    }
    for (kind, alert) in KINDS {
        let s = &seen[kind];
        let (Some(exported), Some(after), Some(fired), Some(resolved)) =
            (s.exported, s.exported_after, s.fired, s.resolved)
        else {
            panic!("{kind}: {s:?}\n{}", context(&seen));
        };
        assert_eq!(s.alert.as_deref(), Some(alert), "{kind}");
        let delay = fired.saturating_duration_since(exported);
        assert!(
            delay <= SCRAPE + EVALUATION + SLACK,
            "{kind}: {alert} fired {delay:?} after the sensor exported it (at most {:?} + {:?} + {SLACK:?} polling)\n{}",
            SCRAPE,
            EVALUATION,
            context(&seen)
        );
        // Not before the hold, counted from the earliest the export can
        // have been (a poll under load takes a while); not long after it.
        let held = resolved.saturating_duration_since(exported);
        let held_at_most = resolved.saturating_duration_since(after);
        assert!(
            held_at_most >= HOLD
                && held <= HOLD + Duration::from_secs(1) + SCRAPE + EVALUATION + SLACK,
            "{kind}: resolved {held:?} after a poll saw it exported, {held_at_most:?} after \
             the poll before (hold {HOLD:?})\n{}",
            context(&seen)
        );
    }

    // The old events stay old: nothing fires again while the sensor runs on.
    let until = Instant::now() + HOLD + SCRAPE + EVALUATION;
    while Instant::now() < until {
        let again = firing(prom.port);
        assert!(
            KINDS.iter().all(|(k, _)| !again.contains_key(*k)),
            "fired again: {again:?}\n{}",
            context(&seen)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(d);
}
