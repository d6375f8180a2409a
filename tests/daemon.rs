//! `portwatch run` and `portwatch demo` as a user runs them: the binary,
//! real sockets on loopback, real signals. Every wait has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{demo_run, fixture, replay_ended, sample, Daemon, TempDir};

fn demo_pcap() -> String {
    fixture("demo.pcap").display().to_string()
}

/// `run` on the multi-node site, replaying the demo capture in a loop at 100x.
fn demo_loop() -> Daemon {
    Daemon::start(&demo_run("100", &[]))
}

/// `--listen 127.0.0.1:0`: the system picks a free port and `run` logs it,
/// `listening on ADDR`, then serves there. Every test daemon starts so
/// (`util::Daemon`), instead of on a port found free beforehand, which
/// another test could take before the daemon bound it.
#[test]
fn port_0_is_bound_logged_and_served() {
    let mut d = demo_loop();
    assert_ne!(d.addr.port(), 0, "{}", d.log_text());
    assert_eq!(d.listening, [d.addr]);
    d.wait_ready();
    let log = d.log_text();
    assert!(log.contains(&format!("listening on {}", d.addr)), "{log}");
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));
}

fn promtool() -> Option<&'static str> {
    let ok = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some("promtool")
}

/// A real scrape of a running daemon passes `promtool check metrics` with
/// no complaint at all (lint included).
#[test]
fn promtool_accepts_a_live_scrape() {
    let Some(promtool) = promtool() else {
        crate::util::skip(
            "promtool_accepts_a_live_scrape",
            "promtool not installed (apt-get install prometheus)",
        );
        return;
    };
    let mut d = demo_loop();
    let m = d.wait_metrics("findings and handshakes", |m| {
        m.contains("verdict=\"unexpected\"")
            && m.contains("outcome=\"refused\"")
            && m.contains("portwatch_edge_last_seen_timestamp_seconds{")
    });
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed: {said}\n{m}");
    assert_eq!(said.trim(), "", "promtool complained:\n{said}");
}

/// The endpoints over a real socket, and the contract's label values.
#[test]
fn run_replay_serves_endpoints_and_contract_labels() {
    let mut d = demo_loop();
    d.wait_ready();
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));
    let m = d.wait_metrics("all verdicts", |m| {
        ["unexpected", "local_only", "unknown_host", "expected"]
            .iter()
            .all(|v| m.contains(&format!("verdict=\"{v}\"")))
    });
    for needle in [
        // 3389 is outside the model: labelled `other`, never the number.
        "portwatch_connections_total{dst=\"engine1\",port=\"other\",service=\"other\",src=\"engine2\",verdict=\"unexpected\"}",
        "src=\"unknown\"",
        "portwatch_handshakes_total{dst=\"central\",outcome=\"refused\",port=\"4242\",sensor_kind=\"packets\",service=\"qrs\",src=\"scheduler\"}",
        "portwatch_sensor_source_info{sensor_kind=\"packets\"} 1",
        "portwatch_packets_total{interface=\"replay\",result=\"control\"}",
        "portwatch_capture_up{interface=\"replay\"} 1",
        "portwatch_edge_window_seconds{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"scheduler\"} 900",
        "portwatch_site_info{model=\"qlik-sense-enterprise\",site=\"multi-node\"} 1",
        "portwatch_node_info{node=\"central\",roles=\"central\"} 1",
        "portwatch_flow_table_entries",
        "portwatch_flow_table_evictions_total{reason=\"capacity_half_open\"}",
        "portwatch_flow_table_evictions_total{reason=\"capacity_open\"}",
        "portwatch_timestamp_anomalies_total 0",
        "portwatch_capture_dropped_packets_total{interface=\"replay\",where=\"kernel\"} 0",
        "portwatch_config_last_reload_successful 1",
        "portwatch_config_last_reload_success_timestamp_seconds",
        "portwatch_build_info{revision=",
    ] {
        assert!(m.contains(needle), "missing {needle}:\n{m}");
    }
    assert!(!m.contains("port=\"3389\""), "{m}");
}

/// Looping shifts time forward: the last-seen timestamps keep increasing
/// past the end of the file.
#[test]
fn loop_keeps_capture_time_increasing() {
    let pcap = demo_pcap();
    let mut d = Daemon::start(&demo_run("200", &[]));
    let key = "portwatch_edge_last_seen_timestamp_seconds{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"proxy\"}";
    let end_of_file = {
        let mut f = portwatch::source::file::FileSource::open(&pcap).unwrap();
        while f.next_frame().is_some() {}
        f.facts().last_ts.unwrap().as_secs_f64()
    };
    d.wait_metrics("a second loop", |m| {
        sample(m, key).is_some_and(|v| v > end_of_file)
    });
}

/// Each pass of a loop counts its connections, the capture's first one
/// too: long-lived.pcap is one connection (its first frame a SYN) never
/// closed, which a table kept over the loop's seam took the next pass's
/// identical SYN for a retransmission of, counting it once in all.
#[test]
fn every_loop_counts_a_connection_left_open_at_its_end() {
    let pcap = fixture("long-lived.pcap").display().to_string();
    // 40 minutes of capture: about a second a pass.
    let mut d = Daemon::start(&[
        "run",
        "--site",
        "multi-node",
        "--replay",
        &pcap,
        "--loop",
        "--speed",
        "2400",
    ]);
    let conns = "portwatch_connections_total{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"proxy\",verdict=\"expected\"}";
    d.wait_metrics("a third pass counting the connection", |m| {
        sample(m, conns).is_some_and(|v| v >= 3.0)
    });
}

/// Without --loop the replay ends, capture_up drops to 0, and the daemon
/// keeps serving what it counted.
#[test]
fn replay_without_loop_ends_and_keeps_serving() {
    let pcap = demo_pcap();
    let mut d = Daemon::start(&[
        "run",
        "--site",
        "multi-node",
        "--replay",
        &pcap,
        "--speed",
        "1000",
    ]);
    let m = d.wait_replay_end();
    assert!(sample(
        &m,
        "portwatch_packets_total{interface=\"replay\",result=\"control\"}"
    )
    .is_some_and(|v| v > 100.0));
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));
}

/// SIGHUP with a broken site keeps the old configuration (counted), a fixed
/// one is loaded.
#[test]
fn sighup_reload_keeps_old_config_on_error() {
    let dir = TempDir::new("sighup");
    let site = dir.0.join("site.yaml");
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sites/multi-node.yaml"),
    )
    .unwrap();
    std::fs::write(&site, &good).unwrap();
    let pcap = demo_pcap();
    let site_arg = site.display().to_string();
    let mut d = Daemon::start(&[
        "run", "--site", &site_arg, "--replay", &pcap, "--loop", "--speed", "50",
    ]);
    d.wait_ready();
    let before = "portwatch_site_info{model=\"qlik-sense-enterprise\",site=\"multi-node\"} 1";
    d.wait_metrics("site info", |m| m.contains(before));

    std::fs::write(
        &site,
        "site: multi-node\nnodes: [ {name: x, addresses: [not-an-ip]} ]\n",
    )
    .unwrap();
    d.signal("HUP");
    let m = d.wait_metrics("failed reload", |m| {
        m.contains("portwatch_config_last_reload_successful 0")
    });
    assert!(m.contains(before), "old site dropped:\n{m}");
    assert_eq!(
        sample(&m, "portwatch_config_reload_failures_total"),
        Some(1.0)
    );
    assert_eq!(d.get("/-/ready").map(|r| r.0), Some(200));
    // Still capturing under the old policy.
    let packets = |m: &str| {
        sample(
            m,
            "portwatch_packets_total{interface=\"replay\",result=\"control\"}",
        )
        .unwrap_or(0.0)
    };
    let n = packets(&m);
    d.wait_metrics("more packets after the failed reload", |m| packets(m) > n);

    std::fs::write(
        &site,
        good.replace("site: multi-node", "site: multi-node-renamed"),
    )
    .unwrap();
    d.signal("HUP");
    let m = d.wait_metrics("successful reload", |m| {
        m.contains("portwatch_config_last_reload_successful 1")
            && m.contains("site=\"multi-node-renamed\"")
    });
    assert!(!m.contains(before), "old site_info series kept:\n{m}");
    let n = packets(&m);
    d.wait_metrics("packets under the new policy", |m| packets(m) > n);
}

/// SIGTERM: clean exit 0 with the summary on stderr.
#[test]
fn sigterm_stops_cleanly_with_summary() {
    let mut d = demo_loop();
    d.wait_ready();
    d.wait_metrics("some traffic", |m| m.contains("verdict=\"expected\""));
    d.signal("TERM");
    let (status, _out, err) = d.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{err}");
    assert!(err.contains("shutting down"), "{err}");
    assert!(
        err.contains("SUMMARY (site multi-node"),
        "no summary on stderr:\n{err}"
    );
}

/// A bad site is refused up front with exit 2 (bad input), an address in
/// use with exit 4 (runtime failure).
#[test]
fn run_refuses_bad_input() {
    let pcap = demo_pcap();
    let out = Command::new(crate::util::bin())
        .args(["run", "--site", "/nonexistent/site.yaml", "--replay", &pcap])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(crate::util::bin())
        .args([
            "run",
            "--site",
            "multi-node",
            "--replay",
            &pcap,
            "--listen",
            &addr,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    let out = Command::new(crate::util::bin())
        .args([
            "run",
            "--site",
            "multi-node",
            "--speed",
            "0",
            "--replay",
            &pcap,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `demo` prints findings as they happen and serves metrics.
#[test]
fn demo_prints_findings_and_serves_metrics() {
    let mut d = Daemon::start(&["demo", "--speed", "100"]);
    let stdout = d.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !(seen.iter().any(|l: &String| l.contains("unexpected"))
        && seen.iter().any(|l| l.contains("blocked")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no findings printed within 30 s:\n{}", seen.join("\n")),
        }
    }
    d.wait_metrics("demo metrics", |m| m.contains("site=\"multi-node\""));
}

/// The shapes of real traffic give the true answer in `run`'s metrics too
/// (the report side is `scenarios`): a long-lived or pre-existing
/// connection keeps its required edge from `missing`, a one-way pair whose
/// client ACKs is established, a SYN repeated after a lost SYN-ACK is one
/// attempt.
#[test]
fn run_metrics_follow_the_real_traffic_shapes() {
    let edge = |src: &str, dst: &str, port: u16, service: &str| {
        format!("portwatch_edge_missing{{dst=\"{dst}\",port=\"{port}\",service=\"{service}\",src=\"{src}\"}}")
    };
    let flow = |metric: &str, src: &str, dst: &str, port: u16, label: &str| {
        format!("portwatch_{metric}{{dst=\"{dst}\",{label},port=\"{port}\",sensor_kind=\"packets\",service=\"qes\",src=\"{src}\"}}")
    };
    // (fixture, [(series, value; None: absent)])
    type Want = Vec<(String, Option<f64>)>;
    let cases: Vec<(&str, Want)> = vec![
        (
            "long-lived.pcap",
            vec![
                (edge("proxy", "central", 4242, "qrs"), Some(0.0)),
                (edge("engine1", "central", 4242, "qrs"), Some(1.0)),
            ],
        ),
        (
            "pre-existing.pcap",
            vec![
                (edge("engine1", "central", 4242, "qrs"), Some(0.0)),
                (edge("engine2", "central", 4242, "qrs"), Some(1.0)),
            ],
        ),
        (
            "asymmetric-pair.pcap",
            vec![
                (
                    flow("handshakes_total", "proxy", "engine1", 4747, "outcome=\"established\""),
                    Some(1.0),
                ),
                (
                    flow("handshakes_total", "proxy", "engine1", 4747, "outcome=\"unanswered\""),
                    None,
                ),
                (
                    flow("handshakes_total", "proxy", "engine2", 4747, "outcome=\"unanswered\""),
                    Some(1.0),
                ),
            ],
        ),
        (
            "stray-timestamp.pcap",
            vec![
                ("portwatch_timestamp_anomalies_total".to_string(), Some(1.0)),
                (edge("proxy", "central", 4242, "qrs"), Some(0.0)),
                (edge("central", "scheduler", 5151, "qss-worker"), Some(0.0)),
            ],
        ),
        (
            "lost-syn-ack.pcap",
            vec![(
                "portwatch_connections_total{dst=\"engine1\",port=\"4747\",service=\"qes\",src=\"proxy\",verdict=\"expected\"}".to_string(),
                Some(1.0),
            )],
        ),
    ];
    for (file, want) in cases {
        let pcap = fixture(file).display().to_string();
        let mut d = Daemon::start(&[
            "run",
            "--site",
            "multi-node",
            "--replay",
            &pcap,
            "--speed",
            "10000",
        ]);
        d.wait_replay_end();
        // The gauges follow at the next tick after the end: polled for,
        // and the last scrape shown if they never come.
        d.wait_metrics(&format!("{file}: {want:?}"), |m| {
            want.iter()
                .all(|(series, value)| sample(m, series) == *value)
        });
    }
}

/// The counters of running totals kept across reloads (the flow table's
/// evictions, packets, timestamp anomalies) equal the closing report's
/// after SIGHUPs during and after a replay that evicts: a reload must not
/// add a total again.
#[test]
fn reloads_mid_flood_keep_every_counter_equal_to_the_report() {
    let pcap = demo_pcap();
    let mut d = Daemon::start(&[
        "run",
        "--site",
        "multi-node",
        "--replay",
        &pcap,
        "--speed",
        "300",
        "--max-flows",
        "1",
        "--format",
        "json",
    ]);
    d.wait_ready();
    let reloaded = |m: &str| {
        sample(m, "portwatch_config_last_reload_success_timestamp_seconds").unwrap_or(0.0)
    };
    let mut during = 0;
    loop {
        let m = d.metrics();
        if replay_ended(&m) {
            break;
        }
        let before = reloaded(&m);
        d.signal("HUP");
        during += 1;
        d.wait_metrics("a reload", |m| reloaded(m) > before);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(during >= 3, "only {during} reloads during the replay");
    for _ in 0..3 {
        let before = reloaded(&d.metrics());
        // Timestamps are seconds: a reload within the same second is not
        // told apart by the gauge, so wait it out.
        std::thread::sleep(Duration::from_millis(1100));
        d.signal("HUP");
        d.wait_metrics("a reload after the replay", |m| reloaded(m) > before);
    }
    // The last tick after the last reload has published every packet of
    // the capture (1008: capinfos -c fixtures/demo.pcap).
    let packets = |m: &str| -> f64 {
        (m.lines())
            .filter(|l| l.starts_with("portwatch_packets_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let m = d.wait_metrics("every packet counted", |m| packets(m) == 1008.0);
    d.signal("TERM");
    let (status, _, err) = d.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{err}");
    let json = &err[err.find("\n{").expect("a JSON summary on stderr")..];
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let capture = &report["capture"];
    let evictions = capture["flow_table"]["evictions"].as_object().unwrap();
    let total: u64 = evictions.values().map(|v| v.as_u64().unwrap()).sum();
    assert!(total > 10, "the replay should evict: {evictions:?}");
    for (reason, n) in evictions {
        let metric = format!("portwatch_flow_table_evictions_total{{reason=\"{reason}\"}}");
        assert_eq!(
            sample(&m, &metric),
            Some(n.as_u64().unwrap() as f64),
            "{metric}"
        );
    }
    let packets: f64 = (m.lines())
        .filter(|l| l.starts_with("portwatch_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(packets, capture["packets"].as_u64().unwrap() as f64);
    assert_eq!(
        sample(&m, "portwatch_timestamp_anomalies_total"),
        capture["timestamp_anomalies"].as_u64().map(|n| n as f64)
    );
}

/// Hundreds of SIGHUPs queue reloads faster than a quiet capture polls;
/// a SIGTERM after them is still handled at once (the queue is coalesced,
/// a stop goes first), not after every reload in turn.
#[test]
fn a_stop_after_a_storm_of_reloads_is_handled_at_once() {
    // At 1x the demo capture is quiet: a poll waits for the next frame.
    let mut d = Daemon::start(&demo_run("1", &[]));
    d.wait_ready();
    let pid = d.child.id() as libc::pid_t;
    let storm = Instant::now();
    let mut sent = 0;
    while storm.elapsed() < Duration::from_secs(2) {
        // SAFETY: kill(2) on our own child, which has not been reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        sent += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    let reloads = sample(&d.metrics(), "portwatch_config_last_reload_successful");
    assert_eq!(reloads, Some(1.0));
    let t = Instant::now();
    d.signal("TERM");
    let (status, _, err) = d.wait_exit();
    let took = t.elapsed();
    assert!(status.success(), "exit {status}; stderr:\n{err}");
    // Handled within a second; the rest is the closing report and exit.
    assert!(
        took < crate::util::bound(Duration::from_secs(2)),
        "{sent} SIGHUPs, then SIGTERM took {took:?}"
    );
}

/// `run` reading its capture from a pipe that stays empty: still starting.
fn starting_on_stdin() -> Daemon {
    let d = Daemon::spawn_wrapped(
        &[],
        &[
            "run",
            "--site",
            "multi-node",
            "--replay",
            "-",
            "--speed",
            "1000",
        ],
        Stdio::piped(),
        Some(Stdio::null()),
        None,
    );
    // The handlers are there while it starts (SigCgt bit 0: SIGHUP).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0);
        if caught & 1 != 0 {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "no SIGHUP handler while starting"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A SIGHUP while `run` starts does not kill it (it reloads once started);
/// a SIGTERM then ends it cleanly with exit 0, not by the signal.
#[test]
fn signals_while_starting_neither_kill_nor_fail() {
    let demo = std::fs::read(fixture("demo.pcap")).unwrap();
    for (sig, want_running) in [("HUP", true), ("TERM", false)] {
        let mut d = starting_on_stdin();
        d.signal(sig);
        std::thread::sleep(Duration::from_millis(100));
        let mut stdin = d.child.stdin.take().unwrap();
        // A closed pipe here means it died of the signal.
        let _ = stdin.write_all(&demo);
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                break Some(st);
            }
            if want_running && Instant::now() > deadline - Duration::from_secs(15) {
                break None;
            }
            assert!(Instant::now() < deadline, "SIG{sig}: did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        if want_running {
            assert_eq!(status, None, "SIGHUP while starting ended the process");
            d.signal("TERM");
            let (status, _, err) = d.wait_exit();
            assert!(status.success(), "{err}");
            assert!(
                err.contains("configuration reloaded"),
                "the early SIGHUP was not acted on:\n{err}"
            );
        } else {
            assert_eq!(status.unwrap().code(), Some(0), "SIGTERM while starting");
        }
    }
}
