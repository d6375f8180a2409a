//! The reader on the real samples of `../shared/sensors/firewall` (counts
//! from its SOURCE.md, three lines of each checked by hand) and on logs
//! written here for what the samples lack: `pid`, UTF-16, DST, damage.

use std::path::PathBuf;

use super::super::NodeInfo;
use super::*;
use crate::observation::Initiator;

fn sample(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sensors/firewall")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn utc() -> RecordContext {
    RecordContext {
        timezone: Some(("UTC".into(), TimeZone::UTC)),
        ..RecordContext::default()
    }
}

fn at(s: &str) -> Timestamp {
    let t: jiff::Timestamp = s.parse().unwrap();
    Timestamp(t.as_nanosecond() as u64)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn observations(f: &RecordFile) -> Vec<&Observation> {
    f.items
        .iter()
        .filter_map(|i| match i {
            RecordItem::Observed(o) => Some(o),
            RecordItem::Lost { .. } | RecordItem::Covered { .. } => None,
        })
        .collect()
}

fn find(f: &RecordFile, client_port: u16) -> &Observation {
    observations(f)
        .into_iter()
        .find(|o| o.key.client_port == client_port)
        .unwrap_or_else(|| panic!("no observation from port {client_port}"))
}

fn counts(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

const HEADER: &str = "#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n";
const FIELDS: &str = "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype icmpcode info path";

#[test]
fn plaso_sample_counts_by_action_and_three_lines() {
    let f = read(
        "plaso".into(),
        &sample("plaso_windows_firewall.log"),
        &utc(),
    )
    .unwrap();
    assert_eq!(f.records, 15);
    // SOURCE.md: DROP UDP 4, DROP TCP 4, DROP ICMP 1, OPEN 2, CLOSE 3, INFO-EVENTS-LOST 1.
    assert_eq!(
        f.actions,
        counts(&[
            ("close", 3),
            ("drop", 9),
            ("info_events_lost", 1),
            ("open", 2)
        ])
    );
    // The four TCP drops are segments (A, AP, FA) of connections, not
    // attempts; of the three CLOSE lines one is TCP.
    assert_eq!(
        f.counts,
        counts(&[
            ("connection_closed", 1),
            ("events_lost", 59),
            ("not_an_attempt", 4),
            ("not_tcp", 4 + 1 + 1 + 2),
            ("observed", 1),
        ])
    );
    assert_eq!(f.stopped, None);
    // 1. `2005-04-11 08:09:29 OPEN TCP 123.45.78.90 123.156.78.90 1606 445 ... -`
    let o = find(&f, 1606);
    assert_eq!(o.ts, at("2005-04-11T08:09:29Z"));
    assert_eq!(
        (o.key.client, o.key.server, o.key.server_port),
        (ip("123.45.78.90"), ip("123.156.78.90"), 445)
    );
    assert_eq!(o.outcome(), Some(Outcome::Permitted));
    assert_eq!(
        (o.initiator, o.source),
        (Initiator::Logged, SourceKind::FirewallLog)
    );
    // 2. `2005-04-11 08:52:26 INFO-EVENTS-LOST ... 59 -`
    assert!(f.items.contains(&RecordItem::Lost {
        at: at("2005-04-11T08:52:26Z"),
        events: 59
    }));
    // 3. `2005-04-11 08:48:46 DROP TCP 123.45.78.90 123.156.78.90 80 1693 40 A ...`:
    // the server's ACK to port 1693 dropped, no attempt of port 80 made.
    assert!(observations(&f).iter().all(|o| o.key.client_port != 80));
    assert_eq!(observations(&f).len(), 1);
}

#[test]
fn betahydri_sample_counts_by_action_and_three_lines() {
    let ctx = RecordContext {
        nodes: vec![NodeInfo {
            name: "laptop".into(),
            addresses: vec![ip("192.168.178.51"), ip("2a01:110:20:10::4a9")],
            timezone: Some(tz("Europe/Berlin")),
        }],
        ..RecordContext::default()
    };
    let f = read("beta".into(), &sample("BetaHydri_pfirewall.log"), &ctx).unwrap();
    // SOURCE.md: 16,809 entries: DROP UDP 11,688, ALLOW UDP 3,672,
    // ALLOW TCP 1,366, ALLOW ICMP 49, ALLOW "2" 32, INFO-EVENTS-LOST 2.
    assert_eq!(f.records, 16_809);
    assert_eq!(
        f.actions,
        counts(&[
            ("allow", 1_366 + 3_672 + 49 + 32),
            ("drop", 11_688),
            ("info_events_lost", 2)
        ])
    );
    assert_eq!(
        f.counts,
        counts(&[
            ("events_lost", 7 + 1),
            ("not_tcp", 11_688 + 3_672 + 49 + 32),
            ("observed", 1_366),
        ])
    );
    assert_eq!(f.sensor.as_deref(), Some("laptop"));
    // 1. `2021-06-22 12:19:44 ALLOW TCP 192.168.178.51 64.39.104.113 52978 443 ... SEND`
    //    (CEST, UTC+2)
    let o = find(&f, 52978);
    assert_eq!(o.ts, at("2021-06-22T10:19:44Z"));
    assert_eq!(
        (o.key.client, o.key.server),
        (ip("192.168.178.51"), ip("64.39.104.113"))
    );
    assert_eq!(o.key.server_port, 443);
    assert_eq!(o.outcome(), Some(Outcome::Permitted));
    assert_eq!(o.sensor.as_deref(), Some("laptop"));
    // 2. `2021-06-22 12:20:25 ALLOW TCP 2a01:110:2001:d:fe::1a 2a01:110:20:10::4a9 62188 3389 ... RECEIVE`:
    //    inbound, the remote end initiated.
    let o = find(&f, 62188);
    assert_eq!(o.ts, at("2021-06-22T10:20:25Z"));
    assert_eq!(o.key.client, ip("2a01:110:2001:d:fe::1a"));
    assert_eq!(
        (o.key.server, o.key.server_port),
        (ip("2a01:110:20:10::4a9"), 3389)
    );
    // 3. `2021-06-22 12:58:48 ALLOW TCP 2a01:110:20:10::4a9 2a01:110:3100:c:fe::18 52921 389 ... SEND`:
    //    the last TCP line, the last observation.
    let last = observations(&f).last().copied().unwrap();
    assert_eq!(last, find(&f, 52921));
    assert_eq!(last.ts, at("2021-06-22T10:58:48Z"));
    assert_eq!(
        (last.key.server, last.key.server_port),
        (ip("2a01:110:3100:c:fe::18"), 389)
    );
    assert!(f.items.windows(2).all(|w| w[0].ts() <= w[1].ts()));
}

#[test]
fn a_pid_column_gives_the_process_and_utf16_reads_as_utf8() {
    let log = format!(
        "{HEADER}{FIELDS} pid\n\
         2026-01-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND 4312\n\
         2026-01-05 10:00:01 DROP TCP 198.51.100.7 192.0.2.10 50001 4747 52 S 1 0 8192 - - - RECEIVE 4\n"
    );
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(log.encode_utf16().flat_map(u16::to_le_bytes));
    for bytes in [log.as_bytes().to_vec(), utf16] {
        let f = read("log".into(), &bytes, &utc()).unwrap();
        let o = observations(&f);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].process.pid, Some(4312));
        assert_eq!(o[1].outcome(), Some(Outcome::Denied));
        assert_eq!(o[1].ts, at("2026-01-05T10:00:01Z"));
    }
}

/// Damage is counted by reason and the rest is read: an unknown column,
/// garbage lines, a UTF-16 log without its byte-order mark; a last line
/// with no end says where the file stopped.
#[test]
fn bad_input_is_counted_by_reason_never_fatal() {
    let log = format!(
        "{HEADER}{FIELDS} colour\n\
         garbage\n\
         2026-01-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND red\n\
         2026-13-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND red\n\
         2026-01-05 10:00:02 ALLOW TCP 192.0.2.300 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND red\n\
         2026-01-05 10:00:03 ALLOW TCP 192.0.2.11 192.0.2.10 50000 99999 0 - 0 0 0 - - - SEND red\n\
         2026-01-05 10:00:04 BLESS TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND red\n\
         2026-01-05 10:00:05 ALLOW TCP 192.0.2.11 192.0.2.10 50003 4242 0 - 0 0 0 - - - SE"
    );
    let no_bom: Vec<u8> = log.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let f = read("log".into(), &no_bom, &utc()).unwrap();
    assert_eq!(
        f.counts,
        counts(&[
            ("malformed_address", 1),
            ("malformed_field_count", 1),
            ("malformed_port", 1),
            ("malformed_time", 1),
            ("observed", 1),
            ("unknown_action", 1),
            ("unknown_field", 1),
            ("utf16_without_bom", 1),
        ])
    );
    let stop = f.stopped.expect("the cut line is where it stopped");
    let cut = log.rfind("2026-01-05 10:00:05").unwrap();
    assert_eq!(stop.offset, 2 * cut as u64);
}

#[test]
fn a_log_with_no_time_zone_is_refused_naming_both_ways_to_give_one() {
    let log = format!(
        "{HEADER}{FIELDS}\n2026-01-05 10:00:00 ALLOW TCP 192.0.2.11 192.0.2.10 50000 4242 0 - 0 0 0 - - - SEND\n"
    );
    let ctx = RecordContext {
        nodes: vec![NodeInfo {
            name: "proxy".into(),
            addresses: vec![ip("192.0.2.11")],
            timezone: None,
        }],
        ..RecordContext::default()
    };
    let e = read("c:/pfirewall.log".into(), log.as_bytes(), &ctx).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("c:/pfirewall.log: "), "{msg}");
    for needle in ["node `proxy`", "timezone:", "--timezone"] {
        assert!(msg.contains(needle), "{msg}");
    }
}

/// Europe/Berlin: 2021-03-28 02:00 CET jumped to 03:00 CEST (a gap);
/// 2021-10-31 03:00 CEST went back to 02:00 CET (an overlap).
#[test]
fn dst_gaps_and_overlaps_have_a_defined_answer() {
    let berlin = tz("Europe/Berlin");
    let local = |s: &str| -> DateTime { s.parse().unwrap() };
    // In the gap: read with the offset before it (+01:00).
    assert_eq!(
        resolve(&berlin, local("2021-03-28T02:30:00"), None),
        Some(at("2021-03-28T01:30:00Z"))
    );
    // In the overlap: the earlier instant (+02:00) ...
    let first = resolve(&berlin, local("2021-10-31T02:10:00"), None).unwrap();
    assert_eq!(first, at("2021-10-31T00:10:00Z"));
    let later = resolve(&berlin, local("2021-10-31T02:50:00"), Some(first)).unwrap();
    assert_eq!(later, at("2021-10-31T00:50:00Z"));
    // ... until the log, written in order, has to be in the second pass.
    let again = resolve(&berlin, local("2021-10-31T02:10:00"), Some(later)).unwrap();
    assert_eq!(again, at("2021-10-31T01:10:00Z"));

    // Through a whole file the same way.
    let lines = ["02:10:00", "02:50:00", "02:10:00", "02:40:00"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "2021-10-31 {t} ALLOW TCP 192.0.2.11 192.0.2.10 {} 4242 0 - 0 0 0 - - - SEND\n",
                50_000 + i
            )
        })
        .collect::<String>();
    let ctx = RecordContext {
        timezone: Some(("Europe/Berlin".into(), berlin)),
        ..RecordContext::default()
    };
    let f = read(
        "log".into(),
        format!("{HEADER}{FIELDS}\n{lines}").as_bytes(),
        &ctx,
    )
    .unwrap();
    let ts: Vec<Timestamp> = observations(&f).iter().map(|o| o.ts).collect();
    assert_eq!(
        ts,
        [
            at("2021-10-31T00:10:00Z"),
            at("2021-10-31T00:50:00Z"),
            at("2021-10-31T01:10:00Z"),
            at("2021-10-31T01:40:00Z"),
        ]
    );
}

#[test]
fn detected_by_content() {
    assert_eq!(
        super::super::RecordFormat::detect(&sample("plaso_windows_firewall.log")[..200]),
        Some(RecordFormat::FirewallLog)
    );
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(HEADER.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert_eq!(
        RecordFormat::detect(&utf16),
        Some(RecordFormat::FirewallLog)
    );
    let pcap = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/plain.pcap"))
        .unwrap();
    assert_eq!(RecordFormat::detect(&pcap[..64]), None);
}
