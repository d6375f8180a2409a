//! `portwatch report --prometheus`: the audit report drawn from a real
//! Prometheus with the shipped rules, fed by two packet sensors of
//! different coverage (one sees the whole site, one only the central
//! node), gives the required-edge states and the findings (kinds, edges)
//! that `replay` of the site's capture gives. Then the store's errors, and
//! TLS with basic auth against a Prometheus started with
//! `--web.config.file`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy::{deploy, prometheus_bin, start_prometheus_with, PromGuard};
use crate::util::{bin, skip, split_demo, Daemon, TempDir};

const CENTRAL: &str = "192.0.2.10";
const ENGINE1: &str = "192.0.2.21";

fn portwatch(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("portwatch")
}

/// Required edges as (src, dst, port, state).
fn edge_states(r: &Value) -> Vec<(String, String, u64, String)> {
    (r["edges"].as_array().unwrap().iter())
        .map(|e| {
            (
                e["src"].as_str().unwrap().into(),
                e["dst"].as_str().unwrap().into(),
                e["port"].as_u64().unwrap(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Findings as (kind, src, dst, port), once each; a port the model does
/// not know (service `other`) is 0, as the store's `other` label.
fn finding_edges(r: &Value) -> BTreeSet<(String, String, String, u64)> {
    (r["findings"].as_array().unwrap().iter())
        .map(|f| {
            let port = match f["service"] == "other" {
                true => 0,
                false => f["port"].as_u64().unwrap(),
            };
            (
                f["kind"].as_str().unwrap().into(),
                f["src"].as_str().unwrap().into(),
                f["dst"].as_str().unwrap().into(),
                port,
            )
        })
        .collect()
}

/// The findings other than missing edges (those replay cannot share with a
/// store whose sensors each judge a part of the site).
fn not_missing(r: &Value) -> BTreeSet<(String, String, String, u64)> {
    (finding_edges(r).into_iter())
        .filter(|f| f.0 != "missing")
        .collect()
}

/// Each sensor as (scraped, covering).
fn sensor_states(r: &Value) -> Vec<(bool, bool)> {
    (r["sensors"].as_array().into_iter().flatten())
        .map(|s| (s["up"] == true, s["covering"] == true))
        .collect()
}

/// Two looping sensors of the site capture: `span` sees it all, `central`
/// only its node's part.
fn sensors(tmp: &Path, site_pcap: &str) -> Vec<Daemon> {
    let central = split_demo(
        tmp,
        "central",
        &format!("host {CENTRAL} and not {}", unused()),
    );
    [
        ("span", site_pcap.to_string(), None),
        ("central", central, Some("central")),
    ]
    .into_iter()
    .map(|(name, pcap, node)| {
        let mut args = vec![
            "run",
            "--site",
            "multi-node",
            "--replay",
            &pcap,
            "--loop",
            "--speed",
            "200",
        ];
        if let Some(n) = node {
            args.extend(["--sensor", n]);
        }
        let mut d = Daemon::start_logged(&args, &tmp.join(format!("{name}.log")));
        d.wait_ready();
        d
    })
    .collect()
}

/// engine1 -> central:4242, cut from every capture: a missing edge.
fn unused() -> String {
    format!(
        "((src host {ENGINE1} and dst host {CENTRAL} and dst port 4242) or \
         (src host {CENTRAL} and dst host {ENGINE1} and src port 4242))"
    )
}

fn prometheus(sensors: &[Daemon], web_config: Option<&Path>) -> PromGuard {
    let targets: Vec<String> = sensors.iter().map(|d| format!("'{}'", d.addr)).collect();
    start_prometheus_with(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: portwatch\n    static_configs:\n      - targets: [{}]\n",
            deploy("prometheus/portwatch.rules.yml").display(),
            targets.join(", ")
        ),
        web_config,
    )
}

fn have_tools(test: &str) -> bool {
    if prometheus_bin().is_none() || !crate::prereq::have("tcpdump") {
        skip(test, "prometheus and tcpdump are needed");
        return false;
    }
    true
}

/// Runs `report` until `done` holds of its output, for at most 90 s.
fn report_until(args: &[&str], what: &str, done: impl Fn(&Output) -> bool) -> Output {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = portwatch(args);
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held; last: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
}

#[test]
fn the_report_from_the_store_agrees_with_the_replay_of_the_site() {
    if !have_tools("report::the_report_from_the_store_agrees_with_the_replay_of_the_site") {
        return;
    }
    let tmp = TempDir::new("report");
    let site_pcap = split_demo(&tmp.0, "site", &format!("not {}", unused()));
    let replay = portwatch(&[
        "replay",
        "--site",
        "multi-node",
        &site_pcap,
        "--format",
        "json",
    ]);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let want: Value = serde_json::from_slice(&replay.stdout).unwrap();
    // The comparison means something: a missing edge, findings of four kinds.
    assert!(edge_states(&want).iter().any(|e| e.3 == "missing"));
    let kinds: BTreeSet<String> = finding_edges(&want).into_iter().map(|f| f.0).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");

    let sensors = sensors(&tmp.0, &site_pcap);
    let prom = prometheus(&sensors, None);
    let url = format!("http://127.0.0.1:{}", prom.port);
    let args = [
        "report",
        "--prometheus",
        &url,
        "--site",
        "multi-node",
        "--format",
        "json",
    ];
    let out = report_until(&args, "the store's report matching the replay", |out| {
        let Ok(got) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        edge_states(&got) == edge_states(&want)
            && finding_edges(&got) == finding_edges(&want)
            && sensor_states(&got) == [(true, true), (true, true)]
    });
    assert_eq!(out.status.code(), Some(1), "findings: exit 1, as replay");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["store"]["site"], "multi-node");
    assert!((got["findings"].as_array().unwrap().iter())
        .filter(|f| f["kind"] != "missing")
        .all(|f| f["count"].as_u64().unwrap() >= 1));

    // The same report as a table and as the HTML page with the diagram.
    let html = portwatch(&[
        "report",
        "--prometheus",
        &url,
        "--site",
        "multi-node",
        "--format",
        "html",
        "--layout",
        "builtin",
    ]);
    let page = String::from_utf8_lossy(&html.stdout);
    assert_eq!(html.status.code(), Some(1));
    assert!(
        page.contains("<svg") && page.contains("Store and sensors (2)"),
        "{page}"
    );
    let table = portwatch(&["report", "--prometheus", &url, "--site", "multi-node"]);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with(&format!("STORE {url}")));

    // A site the store does not know, a wrong path, nobody listening: exit 2.
    let nosite = portwatch(&[
        "report",
        "--prometheus",
        &url,
        "--site",
        "multi-node",
        "--site-name",
        "elsewhere",
    ]);
    let err = String::from_utf8_lossy(&nosite.stderr);
    assert_eq!(nosite.status.code(), Some(2), "{err}");
    assert!(err.contains("no series of site \"elsewhere\""), "{err}");
    let path = portwatch(&[
        "report",
        "--prometheus",
        &format!("{url}/nowhere"),
        "--site",
        "multi-node",
    ]);
    let err = String::from_utf8_lossy(&path.stderr);
    assert_eq!(path.status.code(), Some(2), "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    let port = prom.port;
    drop(prom);
    let gone = portwatch(&[
        "report",
        "--prometheus",
        &format!("http://127.0.0.1:{port}"),
        "--site",
        "multi-node",
    ]);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(gone.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach the store"), "{err}");
}

#[test]
fn the_report_asks_a_store_over_tls_with_basic_auth() {
    let test = "report::the_report_asks_a_store_over_tls_with_basic_auth";
    if !have_tools(test) || !crate::prereq::needs(test, false, &["openssl"]) {
        return;
    }
    let tmp = TempDir::new("report-tls");
    crate::webconfig::make_certs(&tmp.0);
    let hash = bcrypt::hash("audit-secret", 6).unwrap();
    let web = tmp.0.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {0}/server.crt\n  key_file: {0}/server.key\n\
             basic_auth_users:\n  auditor: '{hash}'\n",
            tmp.0.display()
        ),
    )
    .unwrap();
    let pw = tmp.0.join("password");
    std::fs::write(&pw, "audit-secret\n").unwrap();
    let wrong = tmp.0.join("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    let site_pcap = split_demo(&tmp.0, "site", &format!("not {}", unused()));
    let sensors = sensors(&tmp.0, &site_pcap);
    let prom = prometheus(&sensors, Some(&web));
    let url = format!("https://127.0.0.1:{}", prom.port);
    let ca = tmp.0.join("ca.crt").display().to_string();
    let (pw, wrong) = (pw.display().to_string(), wrong.display().to_string());
    // `report` over TLS as auditor, the password read from `pwfile`.
    fn with<'a>(url: &'a str, ca: &'a str, pwfile: &'a str) -> Vec<&'a str> {
        vec![
            "report",
            "--prometheus",
            url,
            "--site",
            "multi-node",
            "--format",
            "json",
            "--ca-file",
            ca,
            "--basic-auth-user",
            "auditor",
            "--basic-auth-password-file",
            pwfile,
        ]
    }
    // Prometheus scrapes itself nothing over TLS: the sensors' series arrive
    // after a few scrapes.
    let out = report_until(
        &with(&url, &ca, &pw),
        "a report over TLS with both sensors",
        |o| {
            let sensors = serde_json::from_slice::<Value>(&o.stdout)
                .map(|r| r["sensors"].as_array().map_or(0, Vec::len));
            o.status.code() == Some(1) && sensors.ok() == Some(2)
        },
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["store"]["url"], url.as_str());
    let bad = portwatch(&with(&url, &ca, &wrong));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    // Without the test CA the certificate is not trusted.
    let untrusted = portwatch(&["report", "--prometheus", &url, "--site", "multi-node"]);
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(2), "{err}");
    assert!(err.contains("TLS") || err.contains("--ca-file"), "{err}");
}

/// The reasons' first word of the store's `not_observed` edges, by edge.
fn reasons(r: &Value) -> BTreeSet<(String, String, u64, String)> {
    (r["edges"].as_array().unwrap().iter())
        .filter(|e| e["state"] == "not_observed")
        .map(|e| {
            let why = e["reason"]
                .as_str()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap();
            (
                e["src"].as_str().unwrap().into(),
                e["dst"].as_str().unwrap().into(),
                e["port"].as_u64().unwrap(),
                why.to_string(),
            )
        })
        .collect()
}

/// `report --prometheus` against the fleet's VictoriaMetrics, per site
/// (`tests/fleet_store.rs` calls it on its running fleet): the same report
/// as against the site's own Prometheus; the required-edge states the
/// fleet's sensors imply; the findings (kinds, edges) of `replay` of what
/// the site's sensors read, and for proxy-engine, whose two sensors both
/// see the whole site, the states of that replay too.
pub(crate) fn fleet_reports_agree(fleet: &crate::fleet_store::Fleet) {
    for s in &fleet.sites {
        let site = s.site_file.display().to_string();
        let report = |url: &str| {
            let out = portwatch(&[
                "report",
                "--prometheus",
                url,
                "--site",
                &site,
                "--format",
                "json",
            ]);
            let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("{}: {e}: {}", s.site, String::from_utf8_lossy(&out.stderr))
            });
            // Exit 1 with findings, 0 without: replay's CI gate.
            let findings = !r["findings"].as_array().unwrap().is_empty();
            assert_eq!(out.status.code(), Some(findings as i32), "{}", s.site);
            r
        };
        // Findings other than missing edges: those of the replays of what
        // the sensors read: the packet sensor's capture, and the capture
        // the flow sensor's records were made from (softflowd).
        let replayed = |pcap: &Path| -> BTreeSet<_> {
            let out = portwatch(&[
                "replay",
                "--site",
                &site,
                &pcap.display().to_string(),
                "--format",
                "json",
            ]);
            not_missing(&serde_json::from_slice::<Value>(&out.stdout).unwrap())
        };
        let all: BTreeSet<_> = (replayed(&s.captures[0]).into_iter())
            .chain(replayed(&s.captures[1]))
            .collect();
        let local = format!("http://127.0.0.1:{}", s.prom.port);
        let (mut stored, mut own) = (Value::Null, Value::Null);
        // The store lags its site by a remote-write batch, and the flow
        // sensor counts a record's outcome (softflowd's refused attempts:
        // blocked) when its merge window ends, 30 s after the record came.
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            (stored, own) = (report(&fleet.vm.url()), report(&local));
            if edge_states(&stored) == edge_states(&own)
                && finding_edges(&stored) == finding_edges(&own)
                && not_missing(&stored) == all
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(edge_states(&stored), edge_states(&own), "{}", s.site);
        assert_eq!(finding_edges(&stored), finding_edges(&own), "{}", s.site);
        let found = not_missing(&stored);
        assert_eq!(found, all, "{}", s.site);
        assert_eq!(sensor_states(&stored).len(), 2, "{}", stored["sensors"]);
        let kinds: BTreeSet<&str> = (stored["sensors"].as_array().unwrap().iter())
            .flat_map(|x| x["kinds"].as_array().unwrap().iter())
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(kinds, BTreeSet::from(["flow", "packets"]), "{}", s.site);

        let state_count = |st: &str| edge_states(&stored).iter().filter(|e| e.3 == st).count();
        let why: BTreeSet<_> = reasons(&stored);
        match s.site.as_str() {
            "multi-node" => {
                let missing: Vec<_> = (edge_states(&stored).into_iter())
                    .filter(|e| e.3 == "missing")
                    .map(|e| (e.0, e.1, e.2))
                    .collect();
                assert_eq!(missing, [("proxy".into(), "central".into(), 4432)]);
                let unverifiable: Vec<_> = why.iter().filter(|w| w.3 == "unverifiable").collect();
                assert_eq!(
                    unverifiable,
                    [&(
                        "engine1".into(),
                        "central".into(),
                        4242,
                        "unverifiable".into()
                    )]
                );
                // The other 8 edges touch neither the proxy nor engine1.
                assert_eq!(why.iter().filter(|w| w.3 == "unwatched").count(), 8);
                assert_eq!(state_count("seen"), 4);
                // Unexpected twice, local-only, unknown host (seen by both
                // sensors: once), scheduler -> central:4242 refused (blocked,
                // by the flow sensor only).
                assert_eq!(found.len(), 5, "{found:?}");
                assert!(
                    found.contains(&("blocked".into(), "scheduler".into(), "central".into(), 4242)),
                    "{found:?}"
                );
            }
            _ => {
                let out = portwatch(&[
                    "replay",
                    "--site",
                    &site,
                    &s.captures[0].display().to_string(),
                    "--format",
                    "json",
                ]);
                let want: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(edge_states(&stored), edge_states(&want), "{}", s.site);
                assert_eq!(state_count("seen"), 3);
            }
        }
    }
}

/// `report --prometheus` against the Prometheus of `tests/mixed.rs` (a
/// packet sensor and two node-log sensors of multi-node): the missing and
/// the unverifiable edge, and the disagreement of the capture (established)
/// and engine1's firewall log (denied) on engine1 -> central:4242.
pub(crate) fn mixed_report_agrees(prom_port: u16, site: &str) {
    let url = format!("http://127.0.0.1:{prom_port}");
    let out = portwatch(&[
        "report",
        "--prometheus",
        &url,
        "--site",
        site,
        "--format",
        "json",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "a missing edge is a finding");
    let state = |src: &str, dst: &str, port: u64| {
        (edge_states(&r).into_iter())
            .find(|e| (e.0.as_str(), e.1.as_str(), e.2) == (src, dst, port))
            .map(|e| e.3)
    };
    assert_eq!(
        state("scheduler", "central", 5050).as_deref(),
        Some("missing")
    );
    assert!(reasons(&r).contains(&(
        "engine2".into(),
        "central".into(),
        4242,
        "unverifiable".into()
    )));
    let d: Vec<(String, u64, Value)> = (r["disagreements"].as_array().unwrap().iter())
        .map(|d| {
            (
                format!(
                    "{}->{}",
                    d["src"].as_str().unwrap(),
                    d["dst"].as_str().unwrap()
                ),
                d["port"].as_u64().unwrap(),
                d["outcomes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        d,
        [(
            "engine1->central".to_string(),
            4242,
            serde_json::json!({"packets": "established", "firewall_log": "denied"})
        )],
        "{}",
        r["disagreements"]
    );
    assert!(r["disagreements"][0]["connections"].as_u64().unwrap() >= 1);
    let kinds: BTreeSet<&str> = (r["sensors"].as_array().unwrap().iter())
        .flat_map(|x| x["kinds"].as_array().unwrap().iter())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(kinds, BTreeSet::from(["firewall_log", "packets"]));
}
