use std::io::Cursor;

use super::ndjson::{parse_line, MAX_LINE};
use super::read::{lines, sniff, Shape};
use super::*;
use crate::source::SourceError;

/// A 5157 of the OTRF covenant sample (`_wfp_only.ndjson`, line 10) with its
/// `Message` left out: NXLog's flat shape through Logstash.
const FLAT_5157: &str = r#"{"EventTime":"2020-08-06 01:20:24","@timestamp":"2020-08-06T05:20:26.672Z","EventID":5157,"Hostname":"WORKSTATION6.theshire.local","Direction":"%%14592","SourceAddress":"172.18.39.5","SourcePort":"54359","DestAddress":"172.18.39.6","DestPort":"50115","Protocol":"6","LayerName":"%%14610","LayerRTID":"44","FilterRTID":"69408","Application":"\\device\\harddiskvolume2\\windows\\system32\\services.exe","ProcessId":"732"}"#;

/// The same event as Winlogbeat ships it (ECS, `winlog.event_data.*`,
/// strings for every value, `@timestamp` the event's creation time).
const ECS_5157: &str = r#"{"@timestamp":"2020-08-06T05:20:24.000Z","event":{"code":"5157","kind":"event","provider":"Microsoft-Windows-Security-Auditing"},"host":{"name":"WORKSTATION6.theshire.local"},"winlog":{"channel":"Security","computer_name":"WORKSTATION6.theshire.local","event_id":"5157","task":"Filtering Platform Connection","event_data":{"ProcessID":"732","Application":"\\device\\harddiskvolume2\\windows\\system32\\services.exe","Direction":"%%14592","SourceAddress":"172.18.39.5","SourcePort":"54359","DestAddress":"172.18.39.6","DestPort":"50115","Protocol":"6","FilterRTID":"69408","LayerName":"%%14610","LayerRTID":"44","RemoteUserID":"S-1-0-0","RemoteMachineID":"S-1-0-0"}}}"#;

fn ep(s: &str) -> Endpoint {
    let sa: std::net::SocketAddr = s.parse().unwrap();
    Endpoint {
        addr: sa.ip(),
        port: sa.port(),
    }
}

fn ts(s: &str) -> Timestamp {
    instant(s).unwrap()
}

#[test]
fn the_flat_nxlog_shape_reads_every_field_and_takes_the_zoned_time() {
    let e = parse_line(FLAT_5157.as_bytes()).unwrap().unwrap();
    assert_eq!(e.id, EventId::Blocked);
    assert_eq!(e.host.as_deref(), Some("WORKSTATION6.theshire.local"));
    assert_eq!(e.direction, Direction::Inbound);
    assert_eq!(e.layer, Layer::ReceiveAccept);
    assert_eq!(e.source, ep("172.18.39.5:54359"));
    assert_eq!(e.dest, ep("172.18.39.6:50115"));
    assert_eq!(e.protocol, 6);
    assert_eq!(e.pid, Some(732));
    assert_eq!(e.filter_rtid, Some(69408));
    assert!(e.application.unwrap().ends_with("\\services.exe"));
    // EventTime has no offset: Logstash's @timestamp is the only zoned time.
    assert_eq!(e.time, ts("2020-08-06T05:20:26.672Z"));
    assert_eq!(e.clock, Clock::Shipped);
}

#[test]
fn the_ecs_shape_gives_the_same_event() {
    let flat = parse_line(FLAT_5157.as_bytes()).unwrap().unwrap();
    let ecs = parse_line(ECS_5157.as_bytes()).unwrap().unwrap();
    assert_eq!(ecs.clock, Clock::Created);
    assert_eq!(ecs.time, ts("2020-08-06T05:20:24Z"));
    let same_but_time = WfpEvent {
        time: flat.time,
        clock: flat.clock,
        ..ecs
    };
    assert_eq!(same_but_time, flat);
}

#[test]
fn a_time_with_an_offset_is_used_and_one_without_is_refused() {
    let with = FLAT_5157.replace(
        r#""EventTime":"2020-08-06 01:20:24""#,
        r#""EventTime":"2020-08-06T01:20:24-04:00""#,
    );
    let e = parse_line(with.as_bytes()).unwrap().unwrap();
    assert_eq!(
        (e.time, e.clock),
        (ts("2020-08-06T05:20:24Z"), Clock::Created)
    );
    let without = FLAT_5157.replace(r#""@timestamp":"2020-08-06T05:20:26.672Z","#, "");
    assert_eq!(
        parse_line(without.as_bytes()),
        Err(Reason::TimeWithoutOffset)
    );
}

#[test]
fn other_events_are_not_errors_and_bad_ones_name_their_reason() {
    assert_eq!(parse_line(br#"{"EventID":4624,"Hostname":"a"}"#), Ok(None));
    assert_eq!(parse_line(b"   "), Ok(None));
    assert_eq!(parse_line(b"not json"), Err(Reason::NotJson));
    assert_eq!(parse_line(b"[1,2]"), Err(Reason::NotJson));
    assert_eq!(parse_line(br#"{"Hostname":"a"}"#), Err(Reason::NoEventId));
    let no_port = FLAT_5157.replace(r#""DestPort":"50115","#, "");
    assert_eq!(
        parse_line(no_port.as_bytes()),
        Err(Reason::MissingField(Field::DestPort))
    );
    let bad_addr = FLAT_5157.replace("172.18.39.5", "172.18.39.500");
    assert_eq!(
        parse_line(bad_addr.as_bytes()),
        Err(Reason::BadField(Field::SourceAddress))
    );
    let bad_port = FLAT_5157.replace(r#""54359""#, r#""70000""#);
    assert_eq!(
        parse_line(bad_port.as_bytes()),
        Err(Reason::BadField(Field::SourcePort))
    );
    let bad_dir = FLAT_5157.replace("%%14592", "%%99999");
    assert_eq!(
        parse_line(bad_dir.as_bytes()),
        Err(Reason::BadField(Field::Direction))
    );
    let long = vec![b' '; MAX_LINE + 1];
    assert_eq!(parse_line(&long), Err(Reason::LineTooLong));
}

#[test]
fn garbage_lines_are_counted_and_a_cut_last_line_stops_the_file() {
    let cut = &FLAT_5157[..FLAT_5157.len() / 2];
    let text = format!("{FLAT_5157}\ngarbage\n\n{ECS_5157}\n{cut}");
    let mut tally = Tally::default();
    let stop = lines(Cursor::new(text.as_bytes()), &mut |r| tally.count(&r)).unwrap();
    assert_eq!(tally.of(EventId::Blocked), 2);
    assert_eq!(tally.bad.get(&Reason::NotJson), Some(&1));
    assert_eq!(tally.other, 1, "the blank line");
    let (offset, why) = stop.expect("a cut last line is reported");
    assert_eq!(offset as usize, text.len() - cut.len());
    assert!(why.contains("cut short"), "{why}");
    // A complete last line without a newline is read, not a stop.
    let mut tally = Tally::default();
    let stop = lines(Cursor::new(FLAT_5157.as_bytes()), &mut |r| tally.count(&r)).unwrap();
    assert_eq!((stop, tally.of(EventId::Blocked)), (None, 1));
}

#[test]
fn an_overlong_line_is_skipped_to_its_end() {
    let text = format!("{{\"x\":\"{}\"}}\n{FLAT_5157}\n", "a".repeat(MAX_LINE * 3));
    let mut tally = Tally::default();
    let stop = lines(Cursor::new(text.as_bytes()), &mut |r| tally.count(&r)).unwrap();
    assert_eq!(stop, None);
    assert_eq!(tally.bad.get(&Reason::LineTooLong), Some(&1));
    assert_eq!(tally.of(EventId::Blocked), 1);
}

#[test]
fn shapes_are_told_by_content() {
    assert_eq!(sniff(b"ElfFile\0rest"), Some(Shape::Evtx));
    assert_eq!(sniff(b"\xEF\xBB\xBF\n {\"a\":1}"), Some(Shape::Ndjson));
    assert_eq!(sniff(b"#Version: 1.5\n"), None);
    assert_eq!(sniff(b"\xd4\xc3\xb2\xa1"), None);
}

/// A pretty-printed JSON document is refused by name, not read line by
/// line with every line counted `not_json`; the same object on one line
/// is read as one.
#[test]
fn a_pretty_printed_document_is_refused_not_read_as_lines() {
    let dir = std::env::temp_dir().join(format!("portwatch-wfp-pretty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let event = serde_json::json!({
        "EventID": 5156,
        "TimeCreated": "2026-01-05T09:00:00Z",
        "SourceAddress": "192.0.2.21",
        "DestAddress": "192.0.2.10",
    });
    let (pretty, compact) = (dir.join("pretty.json"), dir.join("compact.ndjson"));
    std::fs::write(&pretty, serde_json::to_string_pretty(&event).unwrap()).unwrap();
    std::fs::write(&compact, format!("{event}\n")).unwrap();
    let refused = super::read::read(&pretty).unwrap_err();
    assert!(
        matches!(&refused, SourceError::Refused { what, .. } if what.contains("pretty-printed")),
        "{refused}"
    );
    let read = super::read::read(&compact).expect("one event a line is NDJSON");
    assert_eq!(read.shape, Shape::Ndjson);
    let t = &read.tally;
    assert_eq!(t.events.values().sum::<u64>() + t.other + t.bad_total(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn event(dir: Direction, layer: Layer, src: &str, dst: &str) -> WfpEvent {
    WfpEvent {
        id: EventId::Permitted,
        time: Timestamp(0),
        clock: Clock::Created,
        host: Some("h".into()),
        direction: dir,
        layer,
        source: ep(src),
        dest: ep(dst),
        protocol: 6,
        application: None,
        pid: None,
        filter_rtid: None,
    }
}

#[test]
fn outbound_connect_and_packet_layers_need_nothing_learnt() {
    let mut s = Sides::new();
    let out = event(
        Direction::Outbound,
        Layer::Connect,
        "10.0.0.1:50000",
        "10.0.0.2:443",
    );
    let e = s.orient(&out).unwrap();
    assert_eq!((e.initiator, e.responder), (out.source, out.dest));
    assert!(e.node_initiated);
    let drop = event(
        Direction::Inbound,
        Layer::Transport,
        "10.0.0.9:40000",
        "10.0.0.1:3389",
    );
    let e = s.orient(&drop).unwrap();
    assert_eq!((e.initiator, e.responder), (drop.source, drop.dest));
    assert!(!e.node_initiated);
    let icmp = event(
        Direction::Inbound,
        Layer::IcmpError,
        "10.0.0.9:53",
        "10.0.0.1:5000",
    );
    assert_eq!(s.orient(&icmp), Err(Unresolved::Layer));
}

#[test]
fn inbound_events_follow_the_hosts_own_convention() {
    // Windows 10 and later: the remote initiator is the source.
    let mut s = Sides::new();
    let first = event(
        Direction::Inbound,
        Layer::ReceiveAccept,
        "10.0.0.9:40000",
        "10.0.0.1:443",
    );
    assert_eq!(
        s.orient(&first),
        Err(Unresolved::Ambiguous),
        "nothing known yet"
    );
    s.node_address("h", "10.0.0.1".parse().unwrap());
    let e = s.orient(&first).unwrap();
    assert_eq!((e.initiator, e.responder), (first.source, first.dest));
    // Learnt: a loopback event with no Connect of its own now follows it.
    let lo = event(
        Direction::Inbound,
        Layer::ReceiveAccept,
        "127.0.0.1:50001",
        "127.0.0.1:80",
    );
    assert_eq!(s.orient(&lo).unwrap().responder, lo.dest);

    // Windows 7: the local listener is the source; learnt from the Connect
    // the same host logged for the same loopback connection.
    let mut s = Sides::new();
    let connect = event(
        Direction::Outbound,
        Layer::Connect,
        "127.0.0.1:49271",
        "127.0.0.2:3389",
    );
    let accept = event(
        Direction::Inbound,
        Layer::ReceiveAccept,
        "127.0.0.2:3389",
        "127.0.0.1:49271",
    );
    s.orient(&connect).unwrap();
    let e = s.orient(&accept).unwrap();
    assert_eq!((e.initiator, e.responder), (accept.dest, accept.source));
    assert!(!e.node_initiated);
}

#[test]
fn sides_stay_bounded() {
    let mut s = Sides::new();
    for i in 0..(sides::MAX_HOSTS + 10) {
        let mut e = event(
            Direction::Outbound,
            Layer::Connect,
            "10.0.0.1:50000",
            "10.0.0.2:443",
        );
        e.host = Some(format!("h{i}"));
        s.orient(&e).unwrap();
    }
    assert_eq!(s.forgotten, 10);
    let mut s = Sides::new();
    for p in 0..(sides::MAX_OPENED as u16 + 5) {
        let e = event(
            Direction::Outbound,
            Layer::Connect,
            "10.0.0.1:1",
            "10.0.0.2:443",
        );
        s.orient(&WfpEvent {
            source: Endpoint {
                port: p,
                ..e.source
            },
            ..e
        })
        .unwrap();
    }
    assert_eq!(s.forgotten, 5);
}

#[test]
fn events_become_observations_with_their_fate_filter_and_process() {
    use crate::observation::{Initiator, Outcome, SourceKind};
    use observe::{observation, Skipped};
    let blocked = parse_line(FLAT_5157.as_bytes()).unwrap().unwrap();
    let mut s = Sides::new();
    s.node_address(
        "WORKSTATION6.theshire.local",
        "172.18.39.6".parse().unwrap(),
    );
    let ends = s.orient(&blocked);
    let o = observation(&blocked, ends, Some("w6".into())).unwrap();
    assert_eq!(o.outcome(), Some(Outcome::Denied));
    assert_eq!(
        (o.source, o.initiator),
        (SourceKind::WfpEvents, Initiator::Logged)
    );
    assert_eq!(
        (o.key.client, o.key.client_port),
        (blocked.source.addr, 54359)
    );
    assert_eq!(
        (o.key.server, o.key.server_port),
        (blocked.dest.addr, 50115)
    );
    assert_eq!(o.filter, Some(69408));
    assert_eq!(o.process.pid, Some(732));
    assert!(o.process.executable.unwrap().ends_with("\\services.exe"));
    assert_eq!(o.sensor.as_deref(), Some("w6"));
    // A permitted connection cites no filter as its cause.
    let permitted = WfpEvent {
        id: EventId::Permitted,
        ..blocked.clone()
    };
    let o = observation(&permitted, s.orient(&permitted), None).unwrap();
    assert_eq!((o.outcome(), o.filter), (Some(Outcome::Permitted), None));
    let udp = WfpEvent {
        protocol: 17,
        ..blocked.clone()
    };
    assert_eq!(
        observation(&udp, s.orient(&udp), None),
        Err(Skipped::NotTcp)
    );
    let drop = event(
        Direction::Inbound,
        Layer::Transport,
        "10.0.0.9:40000",
        "10.0.0.1:3389",
    );
    let drop = WfpEvent {
        id: EventId::Dropped,
        pid: Some(0),
        filter_rtid: Some(0),
        ..drop
    };
    let o = observation(&drop, s.orient(&drop), None).unwrap();
    assert_eq!(
        o.initiator,
        Initiator::Inferred,
        "a packet's sender, guessed"
    );
    assert_eq!(
        (o.process.pid, o.filter),
        (None, None),
        "pid 0, filter 0: none"
    );
}

#[test]
fn the_sensor_is_the_node_the_host_name_or_the_local_address_names() {
    use observe::sensor;
    let a: Vec<std::net::IpAddr> = vec!["192.0.2.10".parse().unwrap()];
    let b: Vec<std::net::IpAddr> = vec!["192.0.2.11".parse().unwrap()];
    let nodes = [("central", &a[..]), ("rim", &b[..])];
    let it = || nodes.iter().copied();
    assert_eq!(
        sensor(Some("CENTRAL.corp.example"), None, it()),
        Some("central")
    );
    assert_eq!(sensor(Some("rim"), Some(a[0]), it()), Some("rim"));
    assert_eq!(sensor(Some("other.corp"), Some(b[0]), it()), Some("rim"));
    assert_eq!(sensor(None, Some("10.1.1.1".parse().unwrap()), it()), None);
}
