use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::load_policy;
use crate::decode::{Control, Segment};
use crate::state::TrackConfig;

fn multi_node() -> Arc<Policy> {
    Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy)
}

fn series(m: &Metrics) -> Vec<String> {
    m.render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn seg(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, control: Control) -> Segment {
    Segment {
        src,
        dst,
        src_port: sport,
        dst_port: dport,
        control,
        flags: match control {
            Control::Syn => 0x02,
            Control::SynAck => 0x12,
            Control::Rst => 0x14,
            Control::Fin => 0x11,
            Control::Ack => 0x10,
        },
        seq: 0,
        mirror: None,
    }
}

/// Every source probes the same 40 ports (some the model names, most
/// not), spread over three nodes; every other probe is refused, the rest go
/// unanswered. A quarter of the sources are in the user network, the rest
/// unknown; every source address is new.
fn scan(pl: &mut Pipeline, rec: &mut Recorder, sources: std::ops::Range<u32>, ts: &mut Timestamp) {
    let nodes: Vec<IpAddr> = ["192.0.2.11", "192.0.2.21", "192.0.2.10"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let named = [443u16, 4242, 4747, 4244, 5050, 22, 3389];
    let ports: Vec<u16> = (0..40u16)
        .map(|k| match named.get(k as usize) {
            Some(p) => *p,
            None => 1 + ((k as u32 * 1637) % 65_535) as u16,
        })
        .collect();
    let p = pl.policy().clone();
    for i in sources {
        let src = match i % 4 {
            0 => IpAddr::V4(Ipv4Addr::from(0xC633_6400 | (i & 0xff))), // 198.51.100.x: corp-users
            _ => IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)),          // 10.x: unknown
        };
        for (k, &port) in ports.iter().enumerate() {
            let dst = nodes[k % nodes.len()];
            *ts = ts.saturating_add(Duration::from_micros(100));
            let sport = 1024 + (i as u16 % 1000) * 40 + k as u16;
            pl.process(*ts, &seg(src, sport, dst, port, Control::Syn));
            rec.packet(0, Ingested::Control(Control::Syn));
            if k % 2 == 0 {
                pl.process(*ts, &seg(dst, port, src, sport, Control::Rst));
                rec.packet(0, Ingested::Control(Control::Rst));
            }
        }
        for e in pl.drain_events() {
            rec.observe(&p, &e, std::time::Instant::now());
        }
    }
}

/// A port scan from thousands of addresses over many ports adds no series
/// beyond what the policy bounds: no address or unnamed port becomes a label.
#[test]
fn scan_keeps_series_bounded() {
    let p = multi_node();
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["eth0".to_string()]);
    rec.set_policy(&p, &Visibility::default());
    let mut pl = Pipeline::new(
        p.clone(),
        TrackConfig {
            capacity: 4096,
            ..TrackConfig::default()
        },
    );
    pl.record_events(true);
    let start = Timestamp::from_secs_nanos(1_700_000_000, 0);
    let mut ts = start;
    scan(&mut pl, &mut rec, 0..1_000, &mut ts);
    rec.tick(&pl, start, ts);
    let after_1k = series(&m).len();
    scan(&mut pl, &mut rec, 1_000..5_000, &mut ts);
    pl.finish(ts);
    for e in pl.drain_events() {
        rec.observe(&p, &e, std::time::Instant::now());
    }
    rec.tick(&pl, start, ts);
    let all = series(&m);
    // 5,000 sources x 40 ports = 200,000 SYNs.
    let syns: f64 = all
        .iter()
        .filter(|l| l.starts_with("portwatch_connections_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(syns, 200_000.0);
    // 4,000 more addresses, 160,000 more probes: not one more series.
    assert_eq!(all.len(), after_1k, "series grew with sources");
    assert!(all.len() < 150, "{} series:\n{}", all.len(), all.join("\n"));
    for l in &all {
        assert!(!l.contains("\"10.") && !l.contains("198.51.100."), "{l}");
    }
    let flows: Vec<&String> = all
        .iter()
        .filter(|l| l.starts_with("portwatch_connections_total{"))
        .collect();
    assert!(flows.iter().any(|l| l.contains("port=\"other\"")));
    assert!(flows.iter().any(|l| l.contains("src=\"unknown\"")));
    assert!(all.iter().any(|l| l
        .starts_with("portwatch_flow_table_evictions_total{reason=\"capacity_half_open\"}")
        && !l.ends_with(" 0")));
}

#[test]
fn connection_outcome_and_edge_series() {
    let p = multi_node();
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    rec.set_policy(&p, &Visibility::default());
    m.config_loaded(&p, Timestamp::from_secs_nanos(5, 0));
    let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
    pl.record_events(true);
    let proxy: IpAddr = "192.0.2.11".parse().unwrap();
    let central: IpAddr = "192.0.2.10".parse().unwrap();
    let t = Timestamp::from_secs_nanos(1_700_000_000, 0);
    // proxy -> central:4242 (QRS) is a required edge of the model.
    pl.process(t, &seg(proxy, 50000, central, 4242, Control::Syn));
    pl.process(t, &seg(central, 4242, proxy, 50000, Control::SynAck));
    for e in pl.drain_events() {
        rec.observe(&p, &e, std::time::Instant::now());
    }
    rec.tick(&pl, t, t);
    let text = m.render();
    assert!(text.contains(
        "portwatch_connections_total{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"proxy\",verdict=\"expected\"} 1"
    ), "{text}");
    assert!(text.contains(
        "portwatch_handshakes_total{dst=\"central\",outcome=\"established\",port=\"4242\",sensor_kind=\"packets\",service=\"qrs\",src=\"proxy\"} 1"
    ), "{text}");
    assert!(text.contains(
        "portwatch_edge_last_seen_timestamp_seconds{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"proxy\"} 1700000000"
    ), "{text}");
    assert!(
        text.contains("portwatch_site_info{model=\"qlik-sense-enterprise\",site=\"multi-node\"} 1")
    );
    assert!(text.contains("portwatch_node_info{node=\"engine1\",roles=\"engine\"} 1"));
    assert!(text.contains("portwatch_config_last_reload_successful 1"));
    assert!(text.contains(&format!(
        "portwatch_build_info{{revision=\"{}\",rustversion=\"{}\",version=\"{}\"}} 1",
        env!("PORTWATCH_REVISION"),
        env!("PORTWATCH_RUSTVERSION"),
        env!("CARGO_PKG_VERSION")
    )));
    // Within the default window (15 min) nothing is missing; after two
    // hours without evidence, every required edge is but the one whose
    // connection is still open; once it closes, that one too.
    let missing = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| l.starts_with("portwatch_edge_missing{") && l.ends_with(" 1"))
            .count()
    };
    rec.tick(&pl, t, t.saturating_add(Duration::from_secs(60)));
    assert_eq!(missing(&m), 0);
    rec.tick(&pl, t, t.saturating_add(Duration::from_secs(7200)));
    let edges = m
        .render()
        .lines()
        .filter(|l| l.starts_with("portwatch_edge_missing{"))
        .count();
    assert!(edges > 0);
    assert_eq!(missing(&m), edges - 1);
    let later = t.saturating_add(Duration::from_secs(7200));
    pl.process(later, &seg(central, 4242, proxy, 50000, Control::Rst));
    rec.tick(&pl, t, later.saturating_add(Duration::from_secs(3600)));
    assert_eq!(missing(&m), edges);
}

#[test]
fn reload_rejected_keeps_site_and_counts() {
    let p = multi_node();
    let m = Metrics::new();
    m.config_loaded(&p, Timestamp::from_secs_nanos(5, 0));
    m.config_rejected();
    let text = m.render();
    assert!(text.contains("portwatch_config_last_reload_successful 0"));
    assert!(text.contains("portwatch_config_reload_failures_total 1"));
    assert!(text.contains("site=\"multi-node\""));
}

#[test]
fn drops_follow_libpcap_totals() {
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["eth0".to_string()]);
    rec.capture_drops(0, 5, 1);
    rec.capture_drops(0, 7, 1);
    let text = m.render();
    assert!(text.contains(
        "portwatch_capture_dropped_packets_total{interface=\"eth0\",where=\"kernel\"} 7"
    ));
    assert!(text.contains(
        "portwatch_capture_dropped_packets_total{interface=\"eth0\",where=\"interface\"} 1"
    ));
}

/// Per flow exporter: a series at 0 once named, then the running totals;
/// none without a flow listener (a replay's metrics).
#[test]
fn flow_exporter_counts_add_up_under_their_label() {
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    assert!(!m
        .render()
        .contains("portwatch_flow_export_datagrams_total{"));
    rec.flow_exporter("core-switch", ExporterCounts::default());
    let zero = series(&m);
    for name in ["datagrams", "lost_records", "lost_packets"] {
        let line = format!("portwatch_flow_export_{name}_total{{exporter=\"core-switch\"}} 0");
        assert!(zero.contains(&line), "{zero:?}");
    }
    let n = ExporterCounts {
        datagrams: 3,
        lost_records: 7,
        lost_packets: 0,
    };
    rec.flow_exporter("core-switch", n);
    rec.flow_exporter("core-switch", n);
    rec.flow_exporter(
        "undeclared",
        ExporterCounts {
            lost_packets: 2,
            ..ExporterCounts::default()
        },
    );
    let text = series(&m);
    for line in [
        "portwatch_flow_export_datagrams_total{exporter=\"core-switch\"} 6",
        "portwatch_flow_export_lost_records_total{exporter=\"core-switch\"} 14",
        "portwatch_flow_export_lost_packets_total{exporter=\"undeclared\"} 2",
    ] {
        assert!(text.contains(&line.to_string()), "{line}: {text:?}");
    }
}

/// One finding's gauge: 1 from its first occurrence (no earlier sample is
/// needed for an alert), 0 once the hold has passed on the wall clock, and
/// 1 again only with a new occurrence.
#[test]
fn a_finding_gauge_is_held_then_falls_back_to_zero() {
    let p = multi_node();
    let m = Metrics::new();
    let hold = Duration::from_secs(60);
    let mut rec = Recorder::new(&m, &["eth0".to_string()]).with_finding_hold(hold);
    rec.set_policy(&p, &Visibility::default());
    let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
    pl.record_events(true);
    let user: IpAddr = "198.51.100.9".parse().unwrap();
    let central: IpAddr = "192.0.2.10".parse().unwrap();
    let gauge = "portwatch_finding_active{accepted=\"false\",dst=\"central\",finding=\"local_only\",port=\"4444\",service=\"qrs\",src=\"corp-users\"}";
    let value = |m: &Metrics| {
        series(m)
            .into_iter()
            .find_map(|l| l.strip_prefix(gauge).map(|v| v.trim().to_string()))
    };
    let probe = |pl: &mut Pipeline, rec: &mut Recorder, sport: u16, wall: Instant| {
        let t = Timestamp::from_secs_nanos(1_700_000_000, 0);
        pl.process(t, &seg(user, sport, central, 4444, Control::Syn));
        for e in pl.drain_events() {
            rec.observe(&p, &e, wall);
        }
    };
    assert_eq!(value(&m), None, "no series before the finding");
    let wall = Instant::now();
    probe(&mut pl, &mut rec, 50_000, wall);
    assert_eq!(value(&m).as_deref(), Some("1"));
    rec.expire_findings(wall + hold - Duration::from_millis(1));
    assert_eq!(value(&m).as_deref(), Some("1"), "held");
    rec.expire_findings(wall + hold);
    assert_eq!(value(&m).as_deref(), Some("0"), "the hold has passed");
    rec.expire_findings(wall + hold * 10);
    assert_eq!(value(&m).as_deref(), Some("0"), "the old event stays old");
    probe(&mut pl, &mut rec, 50_001, wall + hold * 11);
    assert_eq!(value(&m).as_deref(), Some("1"), "a new occurrence");
}

/// A finding's alert series over a restart: held at 1 for what is left of
/// its hold (the downtime counts), with its last-seen time; past the hold
/// at 0; labels the policy cannot give are refused.
#[test]
fn a_finding_gauge_is_held_over_a_restart() {
    let p = multi_node();
    let hold = Duration::from_secs(60);
    let gauge = "portwatch_finding_active{accepted=\"false\",dst=\"central\",finding=\"local_only\",port=\"4444\",service=\"qrs\",src=\"corp-users\"}";
    let last = "portwatch_finding_last_seen_timestamp_seconds{accepted=\"false\",dst=\"central\",finding=\"local_only\",port=\"4444\",service=\"qrs\",src=\"corp-users\"}";
    let value = |m: &Metrics, name: &str| {
        series(m)
            .into_iter()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let recorder = |m: &Metrics| {
        let mut rec = Recorder::new(m, &["eth0".to_string()]).with_finding_hold(hold);
        rec.set_policy(&p, &Visibility::default());
        rec
    };
    // Before: the finding at wall `w0`, saved 10 s later (system time `t0`).
    let m = Metrics::new();
    let mut rec = recorder(&m);
    let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
    pl.record_events(true);
    let (user, central): (IpAddr, IpAddr) = (
        "198.51.100.9".parse().unwrap(),
        "192.0.2.10".parse().unwrap(),
    );
    pl.process(
        Timestamp::from_secs_nanos(1_700_000_000, 0),
        &seg(user, 50_000, central, 4444, Control::Syn),
    );
    let w0 = Instant::now();
    for e in pl.drain_events() {
        rec.observe(&p, &e, w0);
    }
    let t0 = Timestamp::from_secs_nanos(1_800_000_000, 0);
    let saved = rec.saved_alerts(w0 + Duration::from_secs(10), t0);
    assert_eq!(saved.len(), 1);
    // After a restart 5 s later: 45 s of the hold are left.
    let m = Metrics::new();
    let mut rec = recorder(&m);
    let w1 = Instant::now() + hold;
    let t1 = t0.saturating_add(Duration::from_secs(5));
    assert!(rec.restore_alert(&p, &saved[0], w1, t1));
    assert_eq!(value(&m, gauge).as_deref(), Some("1"));
    assert_eq!(value(&m, last).as_deref(), Some("1700000000"));
    rec.expire_findings(w1 + Duration::from_secs(45) - Duration::from_millis(1));
    assert_eq!(value(&m, gauge).as_deref(), Some("1"), "held");
    rec.expire_findings(w1 + Duration::from_secs(45));
    assert_eq!(
        value(&m, gauge).as_deref(),
        Some("0"),
        "the hold has passed"
    );
    // Restarted after the hold: the series at 0, its time kept.
    let m = Metrics::new();
    let mut rec = recorder(&m);
    assert!(rec.restore_alert(&p, &saved[0], w1, t0.saturating_add(hold)));
    assert_eq!(value(&m, gauge).as_deref(), Some("0"));
    assert_eq!(value(&m, last).as_deref(), Some("1700000000"));
    // Labels the policy cannot give are not made series.
    for bad in [
        SavedAlert {
            src: "evil\"}".into(),
            ..saved[0].clone()
        },
        SavedAlert {
            port: "31337".into(),
            ..saved[0].clone()
        },
        SavedAlert {
            service: "ssh".into(),
            ..saved[0].clone()
        },
        SavedAlert {
            finding: "missing".into(),
            ..saved[0].clone()
        },
        SavedAlert {
            accepted: "maybe".into(),
            ..saved[0].clone()
        },
    ] {
        assert!(!rec.restore_alert(&p, &bad, w1, t1), "{bad:?}");
    }
    assert_eq!(alerting::MAX_SERIES, crate::state::saved::MAX_ALERTS);
}

/// A refusal an acceptance covers is counted among the handshakes and,
/// apart, among the accepted ones; a refusal it does not cover is not.
#[test]
fn accepted_refusals_are_counted_apart() {
    use crate::site::{AcceptEnd, Acceptance};
    let mut p = load_policy(Path::new("multi-node"), None).unwrap().policy;
    p.site.accepted = vec![Acceptance::for_test(
        AcceptEnd::Name("proxy".into()),
        AcceptEnd::Name("central".into()),
        4242,
        "2030-01-01",
    )];
    let p = Arc::new(p);
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    rec.set_policy(&p, &Visibility::default());
    let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
    pl.record_events(true);
    let central: IpAddr = "192.0.2.10".parse().unwrap();
    let t = Timestamp::from_secs_nanos(1_700_000_000, 0);
    for (client, port) in [("192.0.2.11", 50000), ("192.0.2.31", 50001)] {
        let client: IpAddr = client.parse().unwrap();
        pl.process(t, &seg(client, port, central, 4242, Control::Syn));
        pl.process(t, &seg(central, 4242, client, port, Control::Rst));
    }
    for e in pl.drain_events() {
        rec.observe(&p, &e, std::time::Instant::now());
    }
    let all = series(&m);
    let of = |name: &str| -> Vec<&String> { all.iter().filter(|l| l.starts_with(name)).collect() };
    let refused = of("portwatch_handshakes_total{");
    assert_eq!(refused.len(), 2, "{all:#?}");
    assert_eq!(
        of("portwatch_accepted_handshakes_total{"),
        ["portwatch_accepted_handshakes_total{dst=\"central\",outcome=\"refused\",port=\"4242\",service=\"qrs\",src=\"proxy\"} 1"],
        "{all:#?}"
    );
}

/// Outcomes are counted by the kind of source that told them, and each
/// kind read is named once in `portwatch_sensor_source_info`.
#[test]
fn outcomes_carry_their_sensor_kind() {
    use crate::observation::{FlowKey, Observation, SourceKind};
    let p = multi_node();
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    rec.set_policy(&p, &Visibility::default());
    let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
    pl.record_events(true);
    let (proxy, central): (IpAddr, IpAddr) =
        ("192.0.2.11".parse().unwrap(), "192.0.2.10".parse().unwrap());
    let t = Timestamp::from_secs_nanos(1_700_000_000, 0);
    pl.process(t, &seg(proxy, 50000, central, 4242, Control::Syn));
    pl.process(t, &seg(central, 4242, proxy, 50000, Control::SynAck));
    let key = FlowKey {
        client: proxy,
        client_port: 50001,
        server: central,
        server_port: 4242,
    };
    pl.observe(&Observation::record(
        t,
        key,
        Outcome::Denied,
        SourceKind::FirewallLog,
    ));
    pl.finish(t);
    for e in pl.drain_events() {
        rec.observe(&p, &e, std::time::Instant::now());
    }
    let all = series(&m);
    let edge = "port=\"4242\",sensor_kind";
    let of = |prefix: &str| -> Vec<&String> {
        (all.iter())
            .filter(|l| l.starts_with(prefix) && l.contains(edge))
            .collect()
    };
    assert_eq!(
        of("portwatch_handshakes_total{dst=\"central\""),
        [
            "portwatch_handshakes_total{dst=\"central\",outcome=\"denied\",port=\"4242\",sensor_kind=\"firewall_log\",service=\"qrs\",src=\"proxy\"} 1",
            "portwatch_handshakes_total{dst=\"central\",outcome=\"established\",port=\"4242\",sensor_kind=\"packets\",service=\"qrs\",src=\"proxy\"} 1",
        ],
        "{all:#?}"
    );
    let info: Vec<&String> = (all.iter())
        .filter(|l| l.starts_with("portwatch_sensor_source_info"))
        .collect();
    assert_eq!(
        info,
        [
            "portwatch_sensor_source_info{sensor_kind=\"firewall_log\"} 1",
            "portwatch_sensor_source_info{sensor_kind=\"packets\"} 1",
        ]
    );
}

/// A connection a capture saw established and a firewall log says was
/// denied, in one process: counted once as an attempt, each outcome under
/// its kind, and once as a disagreement.
#[test]
fn a_disagreement_of_two_kinds_is_counted() {
    use crate::observation::{FlowKey, Observation, SourceKind};
    let p = multi_node();
    let m = Metrics::new();
    let mut rec = Recorder::new(&m, &["replay".to_string()]);
    rec.set_policy(&p, &Visibility::default());
    let mut pl = Pipeline::new(p.clone(), TrackConfig::default());
    pl.record_events(true);
    pl.join_kinds();
    let (proxy, central): (IpAddr, IpAddr) =
        ("192.0.2.11".parse().unwrap(), "192.0.2.10".parse().unwrap());
    let t = Timestamp::from_secs_nanos(1_700_000_000, 0);
    pl.process(t, &seg(proxy, 50000, central, 4242, Control::Syn));
    pl.process(t, &seg(central, 4242, proxy, 50000, Control::SynAck));
    let key = FlowKey {
        client: proxy,
        client_port: 50000,
        server: central,
        server_port: 4242,
    };
    let denied = Observation::record(t, key, Outcome::Denied, SourceKind::FirewallLog);
    pl.observe(&denied);
    pl.finish(t);
    for e in pl.drain_events() {
        rec.observe(&p, &e, std::time::Instant::now());
    }
    let all = series(&m);
    let has = |l: &str| all.iter().any(|s| s == l);
    assert!(has("portwatch_outcome_disagreements_total{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"proxy\"} 1"), "{all:#?}");
    assert!(has("portwatch_connections_total{dst=\"central\",port=\"4242\",service=\"qrs\",src=\"proxy\",verdict=\"expected\"} 1"), "{all:#?}");
    assert!(has("portwatch_handshakes_total{dst=\"central\",outcome=\"denied\",port=\"4242\",sensor_kind=\"firewall_log\",service=\"qrs\",src=\"proxy\"} 1"), "{all:#?}");
}
