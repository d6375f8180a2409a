use std::path::Path;

use super::*;
use crate::config::load_policy;

fn policy(site: &str) -> Policy {
    load_policy(Path::new(site), None).unwrap().policy
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn verdict_table_multi_node() {
    let p = policy("multi-node");
    // (src, dst, port, verdict, src label, dst label, service)
    let cases = [
        (
            "198.51.100.7",
            "192.0.2.11",
            443,
            Verdict::Expected,
            "corp-users",
            "proxy",
            "qps",
        ),
        (
            "192.0.2.11",
            "192.0.2.21",
            4747,
            Verdict::Expected,
            "proxy",
            "engine1",
            "qes",
        ),
        (
            "192.0.2.31",
            "192.0.2.10",
            5050,
            Verdict::Expected,
            "scheduler",
            "central",
            "qss-manager",
        ),
        (
            "192.0.2.10",
            "192.0.2.31",
            5151,
            Verdict::Expected,
            "central",
            "scheduler",
            "qss-worker",
        ),
        (
            "192.0.2.21",
            "192.0.2.10",
            4432,
            Verdict::Expected,
            "engine1",
            "central",
            "qrd",
        ),
        (
            "192.0.2.10",
            "203.0.113.20",
            445,
            Verdict::Expected,
            "central",
            "fileshare",
            "smb",
        ),
        // A user reaching an engine directly.
        (
            "198.51.100.7",
            "192.0.2.21",
            4747,
            Verdict::Unexpected,
            "corp-users",
            "engine1",
            "qes",
        ),
        // An engine opening the proxy's REST API.
        (
            "192.0.2.21",
            "192.0.2.11",
            4243,
            Verdict::Unexpected,
            "engine1",
            "proxy",
            "qps",
        ),
        // Scheduler direction reversed.
        (
            "192.0.2.10",
            "192.0.2.31",
            5050,
            Verdict::Unexpected,
            "central",
            "scheduler",
            "qss-manager",
        ),
        // A port the model does not know.
        (
            "192.0.2.11",
            "192.0.2.10",
            3389,
            Verdict::Unexpected,
            "proxy",
            "central",
            "other",
        ),
        // Local-only ports reached from another host.
        (
            "192.0.2.11",
            "192.0.2.10",
            4570,
            Verdict::LocalOnly,
            "proxy",
            "central",
            "qrs",
        ),
        (
            "192.0.2.21",
            "192.0.2.10",
            4444,
            Verdict::LocalOnly,
            "engine1",
            "central",
            "qrs",
        ),
        (
            "198.51.100.9",
            "192.0.2.21",
            9032,
            Verdict::LocalOnly,
            "corp-users",
            "engine1",
            "about",
        ),
        // 4444 is site-reachable on rim nodes only from the central QRS.
        (
            "192.0.2.10",
            "192.0.2.21",
            4444,
            Verdict::Expected,
            "central",
            "engine1",
            "qrs",
        ),
        (
            "192.0.2.11",
            "192.0.2.21",
            4444,
            Verdict::Unexpected,
            "proxy",
            "engine1",
            "qrs",
        ),
        // Same host.
        (
            "127.0.0.1",
            "127.0.0.1",
            4444,
            Verdict::Expected,
            "localhost",
            "localhost",
            "qrs",
        ),
        (
            "192.0.2.10",
            "192.0.2.10",
            4570,
            Verdict::Expected,
            "central",
            "central",
            "qrs",
        ),
        // Outside every declared network.
        (
            "10.9.9.9",
            "192.0.2.11",
            443,
            Verdict::UnknownHost,
            "unknown",
            "proxy",
            "qps",
        ),
        (
            "192.0.2.21",
            "8.8.8.8",
            443,
            Verdict::UnknownHost,
            "engine1",
            "unknown",
            "other",
        ),
        // IPv6 address of the central node.
        (
            "2001:db8:100::5",
            "2001:db8::10",
            443,
            Verdict::Expected,
            "corp-users",
            "central",
            "qps",
        ),
    ];
    for (s, d, port, verdict, sl, dl, svc) in cases {
        let c = classify(&p, ip(s), ip(d), port);
        assert_eq!(
            (
                c.verdict,
                p.peer_name(c.src),
                p.peer_name(c.dst),
                &*c.service
            ),
            (verdict, sl, dl, svc),
            "{s} -> {d}:{port}"
        );
        assert!(!explain(&p, &c).is_empty());
    }
}

#[test]
fn implicit_users_network_makes_undeclared_hosts_users() {
    // single-node declares no user networks: anything not a node is a user,
    // so a node reaching an undeclared host is unexpected, not unknown.
    let p = policy("single-node");
    let c = classify(&p, ip("192.0.2.10"), ip("203.0.113.99"), 443);
    assert_eq!(c.verdict, Verdict::Unexpected);
    assert_eq!(p.peer_name(c.dst), "users");
    let c = classify(&p, ip("203.0.113.99"), ip("192.0.2.10"), 443);
    assert_eq!(c.verdict, Verdict::Expected);
}

#[test]
fn explanations_cite_the_rule() {
    let p = policy("multi-node");
    let c = classify(&p, ip("192.0.2.11"), ip("192.0.2.10"), 4570);
    let text = explain(&p, &c);
    assert!(
        text.contains("Ports used internally within a node"),
        "{text}"
    );
    let c = classify(&p, ip("10.9.9.9"), ip("192.0.2.11"), 443);
    assert!(explain(&p, &c).contains("the source is not"));
}

/// The site's `monitoring` list: its scrapers reach every node's sensor
/// port as `expected` (service `portwatch`); anyone else, or another port,
/// stays a finding; a bad entry is located.
#[test]
fn monitoring_scrapers_are_expected_on_the_sensor_port_only() {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sites/multi-node.yaml"),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("portwatch-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |extra: &str| {
        let f = dir.join(format!("site-{}.yaml", extra.len()));
        std::fs::write(&f, format!("{base}\n{extra}")).unwrap();
        load_policy(&f, None)
    };
    let p = load("monitoring:\n  from: [192.0.2.250, corp-users]\n  port: 9100\n")
        .unwrap()
        .policy;
    let scrape = |src: &str, port: u16| classify(&p, ip(src), ip("192.0.2.10"), port);
    let c = scrape("192.0.2.250", 9100);
    assert_eq!(c.verdict, Verdict::Expected, "{}", explain(&p, &c));
    assert_eq!(
        (p.peer_name(c.src), &*c.service),
        ("monitoring", "portwatch")
    );
    assert!(
        explain(&p, &c).contains("monitoring"),
        "{}",
        explain(&p, &c)
    );
    assert_eq!(scrape("198.51.100.7", 9100).verdict, Verdict::Expected);
    assert_ne!(scrape("192.0.2.250", 9101).verdict, Verdict::Expected);
    assert_ne!(scrape("192.0.2.251", 9100).verdict, Verdict::Expected);
    assert_eq!(p.port_label(9100), Some(9100));
    // Not declared: the same scrape is a finding, as before.
    let plain = policy("multi-node");
    assert_ne!(
        classify(&plain, ip("192.0.2.250"), ip("192.0.2.10"), 9100).verdict,
        Verdict::Expected
    );
    let err = load("monitoring:\n  from: [nonsense-name]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("monitoring.from[0]") && err.contains("nonsense-name"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Loopback to a port the model does not know is no finding unless the
/// strict view is asked for; the sensor's own listener never is.
#[test]
fn loopback_and_the_sensors_own_listener_are_not_findings() {
    let mut p = policy("multi-node");
    let lo = ip("127.0.0.1");
    let c = classify(&p, lo, lo, 9479);
    assert_eq!((c.verdict, c.basis), (Verdict::Expected, Basis::Loopback));
    p.own.strict_loopback = true;
    assert_eq!(classify(&p, lo, lo, 9479).verdict, Verdict::Unexpected);

    // corp-users scraping central's port 9477, which the site does not
    // declare for monitoring: unexpected, unless it is this sensor's listener.
    let (user, central) = (ip("198.51.100.7"), ip("192.0.2.10"));
    assert_eq!(
        classify(&p, user, central, 9477).verdict,
        Verdict::Unexpected
    );
    assert_eq!(classify(&p, lo, lo, 9477).verdict, Verdict::Unexpected);
    p.own.listeners = vec![(central, 9477), (lo, 9477)];
    for src in [user, lo] {
        let dst = if src == lo { lo } else { central };
        let c = classify(&p, src, dst, 9477);
        assert_eq!(
            (c.verdict, c.basis),
            (Verdict::Expected, Basis::Sensor),
            "{src}"
        );
    }
    assert_eq!(
        classify(&p, user, central, 9478).verdict,
        Verdict::Unexpected
    );
}
