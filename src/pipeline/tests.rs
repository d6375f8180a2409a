//! The pipeline on frames built here: what `ingest` counts, the events a
//! handshake produces, time moving on, and evidence carried over a reload.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::classify::Verdict;
use crate::config::load_policy;
use crate::frame::LinkType;
use crate::state::EdgeState;

const PROXY: [u8; 4] = [192, 0, 2, 11];
const CENTRAL: [u8; 4] = [192, 0, 2, 10];
const USER: [u8; 4] = [198, 51, 100, 7];
/// Proxy → central on the repository port: a required edge of multi-node
/// (optional edges have no `EdgeId`, so no evidence clock).
const QRS_PORT: u16 = 4242;

fn multi_node() -> Arc<Policy> {
    Arc::new(load_policy(Path::new("multi-node"), None).unwrap().policy)
}

fn track() -> TrackConfig {
    TrackConfig {
        capacity: 64,
        syn_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(60),
    }
}

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    SynAck,
    Rst,
    Ack,
}

/// An Ethernet/IPv4/TCP frame.
fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: Flags) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 1024);
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::SynAck => b.syn().ack(1001),
        Flags::Rst => b.rst().ack(1001),
        Flags::Ack => b.ack(1001),
    };
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

fn ingest(pl: &mut Pipeline, secs: u64, data: &[u8]) -> Ingested {
    pl.ingest(&Frame {
        ts: Timestamp::from_secs_nanos(secs, 0),
        linktype: LinkType::ETHERNET,
        wire_len: data.len() as u32,
        data,
        interface: 0,
        ts_invalid: false,
    })
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs_nanos(secs, 0)
}

fn expected_edge(p: &Policy) -> EdgeId {
    let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
    p.find_edge(p.peer_of(ip(PROXY)), p.peer_of(ip(CENTRAL)), QRS_PORT)
        .expect("proxy → central:4242 is a required edge of multi-node")
}

#[test]
fn ingest_says_what_each_frame_was_and_counts_it() {
    let mut pl = Pipeline::new(multi_node(), track());
    let syn = tcp(PROXY, 50_000, CENTRAL, QRS_PORT, Flags::Syn);
    assert_eq!(ingest(&mut pl, 10, &syn), Ingested::Control(Control::Syn));
    let ack = tcp(PROXY, 50_000, CENTRAL, QRS_PORT, Flags::Ack);
    assert_eq!(
        ingest(&mut pl, 11, &ack),
        Ingested::Skipped(Skip::NotControl)
    );
    assert_eq!(ingest(&mut pl, 12, &syn[..20]), Ingested::Malformed);
    let s = pl.stats();
    assert_eq!(s.frames, 3);
    assert_eq!(s.control(Control::Syn), 1);
    assert_eq!(s.skipped(Skip::NotControl), 1);
    assert_eq!(s.malformed(), 1);
    assert_eq!(pl.span(), Some((at(10), at(12))));
}

#[test]
fn span_covers_frames_out_of_order() {
    let mut pl = Pipeline::new(multi_node(), track());
    let syn = tcp(PROXY, 50_000, CENTRAL, QRS_PORT, Flags::Syn);
    for t in [20, 5, 30, 10] {
        ingest(&mut pl, t, &syn);
    }
    assert_eq!(pl.span(), Some((at(5), at(30))));
}

#[test]
fn an_expected_handshake_gives_evidence_a_connection_and_its_outcome() {
    let p = multi_node();
    let edge = expected_edge(&p);
    let mut pl = Pipeline::new(p, track());
    pl.record_events(true);
    ingest(
        &mut pl,
        100,
        &tcp(PROXY, 50_000, CENTRAL, QRS_PORT, Flags::Syn),
    );
    ingest(
        &mut pl,
        100,
        &tcp(CENTRAL, QRS_PORT, PROXY, 50_000, Flags::SynAck),
    );
    let events = pl.drain_events();
    assert!(
        matches!(events[0], Event::Evidence { edge: e, .. } if e == edge),
        "{events:?}"
    );
    match &events[1] {
        Event::Connection { class, key, .. } => {
            assert_eq!(class.verdict, Verdict::Expected);
            assert_eq!(class.edge(), Some(edge));
            assert_eq!(key.server_port, QRS_PORT);
        }
        other => panic!("not a connection: {other:?}"),
    }
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Outcome {
                outcome: Outcome::Established,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(pl.drain_events().is_empty(), "drained");
    assert_eq!(pl.clock().first_last(edge), Some((at(100), at(100))));
    let row = &pl.tally().rows()[0];
    assert_eq!((row.attempts, row.key.verdict), (1, Verdict::Expected));
}

#[test]
fn a_refused_and_an_unanswered_attempt_are_judged() {
    let mut pl = Pipeline::new(multi_node(), track());
    pl.record_events(true);
    ingest(
        &mut pl,
        100,
        &tcp(PROXY, 50_001, CENTRAL, QRS_PORT, Flags::Syn),
    );
    ingest(
        &mut pl,
        100,
        &tcp(CENTRAL, QRS_PORT, PROXY, 50_001, Flags::Rst),
    );
    // A user SYN, retransmitted, never answered: unexpected, then unanswered
    // once time passes the SYN timeout.
    let user = tcp(USER, 50_002, CENTRAL, QRS_PORT, Flags::Syn);
    ingest(&mut pl, 101, &user);
    ingest(&mut pl, 102, &user);
    pl.advance(at(110));
    let outcomes: Vec<(Verdict, Outcome)> = pl
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Outcome { class, outcome, .. } => Some((class.verdict, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (Verdict::Expected, Outcome::Refused),
            (Verdict::Unexpected, Outcome::Unanswered)
        ]
    );
}

#[test]
fn finish_judges_what_is_pending_and_events_are_off_by_default() {
    let mut pl = Pipeline::new(multi_node(), track());
    ingest(
        &mut pl,
        100,
        &tcp(PROXY, 50_003, CENTRAL, QRS_PORT, Flags::Syn),
    );
    assert_eq!(pl.table().len(), 1);
    pl.finish(at(100));
    assert!(pl.table().is_empty());
    assert_eq!(pl.tally().rows()[0].outcomes.iter().sum::<u64>(), 1);
    assert!(pl.drain_events().is_empty(), "not recorded unless asked");
}

/// A reload keeps what was seen of each required edge, matched by endpoint
/// names and port even when the new site numbers its edges differently.
#[test]
fn carry_evidence_matches_edges_by_name_across_a_reordered_site() {
    let old_p = multi_node();
    let old_edge = expected_edge(&old_p);
    let mut old = Pipeline::new(old_p.clone(), track());
    let syn = tcp(PROXY, 50_004, CENTRAL, QRS_PORT, Flags::Syn);
    ingest(&mut old, 100, &syn);
    ingest(
        &mut old,
        130,
        &tcp(PROXY, 50_005, CENTRAL, QRS_PORT, Flags::Syn),
    );
    assert_eq!(old.clock().count(old_edge), 2);

    // The same site with the nodes in another order and engine2 gone.
    let text = include_str!("../../deploy/sites/multi-node.yaml");
    let nodes = text.find("nodes:\n").unwrap() + "nodes:\n".len();
    let block = |name: &str| {
        let start = text.find(&format!("  - name: {name}\n")).unwrap();
        let end = text[start + 4..]
            .find("  - name:")
            .map_or(text.len(), |e| start + 4 + e);
        let end = end.min(
            text[start..]
                .find("user_networks:")
                .map_or(text.len(), |e| start + e),
        );
        &text[start..end]
    };
    let reordered = format!(
        "{}{}{}{}{}{}",
        &text[..nodes],
        block("scheduler"),
        block("central"),
        block("engine1"),
        block("proxy"),
        &text[text.find("user_networks:").unwrap()..]
    );
    let dir = std::env::temp_dir().join(format!("portwatch-carry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.yaml");
    std::fs::write(&site, reordered).unwrap();
    let new_p = Arc::new(load_policy(&site, None).unwrap().policy);
    let _ = std::fs::remove_dir_all(&dir);
    let new_edge = expected_edge(&new_p);
    assert_ne!(new_edge, old_edge, "the test needs the edge renumbered");
    assert_eq!(new_p.site.nodes.len(), old_p.site.nodes.len() - 1);

    let mut new = Pipeline::new(new_p.clone(), track());
    new.carry_evidence(&old);
    assert_eq!(new.clock().first_last(new_edge), Some((at(100), at(130))));
    assert_eq!(new.clock().count(new_edge), 2);
    // Edges of engine2 are gone; no other edge got evidence it never had.
    let with_evidence = (0..new_p.edges.len() as u32)
        .filter(|i| new.clock().first_last(EdgeId(*i)).is_some())
        .count();
    assert_eq!(with_evidence, 1);
}

/// A reload keeps the handshake table: an attempt pending at the reload is
/// judged under the new policy when its answer comes, and a connection
/// open across it stays evidence for the new policy's edge.
#[test]
fn swap_policy_keeps_pending_attempts_and_open_connections() {
    let old_p = multi_node();
    let mut pl = Pipeline::new(old_p.clone(), track());
    pl.record_events(true);
    const ENGINE1: [u8; 4] = [192, 0, 2, 21];
    const ENGINE_PORT: u16 = 4747;
    // Open across the reload: proxy -> central:4242 (required).
    ingest(&mut pl, 100, &tcp(PROXY, 50_010, CENTRAL, 4242, Flags::Syn));
    ingest(
        &mut pl,
        100,
        &tcp(CENTRAL, 4242, PROXY, 50_010, Flags::SynAck),
    );
    // Pending at the reload: a user straight to an engine, unexpected now.
    ingest(
        &mut pl,
        101,
        &tcp(USER, 50_011, ENGINE1, ENGINE_PORT, Flags::Syn),
    );
    assert_eq!(pl.table().len(), 2);
    pl.drain_events();

    // The new site allows users to reach engine1's QES.
    let text = include_str!("../../deploy/sites/multi-node.yaml");
    let dir = std::env::temp_dir().join(format!("portwatch-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.yaml");
    let allow = "allow:\n  - from: corp-users\n    to: engine1\n    port: 4747\n";
    std::fs::write(&site, format!("{text}{allow}")).unwrap();
    let new_p = Arc::new(load_policy(&site, None).unwrap().policy);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!pl.verdicts().is_empty());
    pl.swap_policy(new_p.clone());
    assert_eq!(pl.table().len(), 2, "the table survives the reload");
    // The old policy's verdicts go with it: the pending attempt's answer
    // below is judged under the new one.
    assert!(pl.verdicts().is_empty());

    ingest(
        &mut pl,
        101,
        &tcp(ENGINE1, ENGINE_PORT, USER, 50_011, Flags::SynAck),
    );
    let outcomes: Vec<(Verdict, Outcome)> = pl
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Outcome { class, outcome, .. } => Some((class.verdict, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, vec![(Verdict::Expected, Outcome::Established)]);
    assert_eq!(pl.tally().by_outcome[Outcome::Established.index()], 1);
    assert!(pl.tally().findings().is_empty());

    // Hours later, the connection opened before the reload still proves
    // its edge under the new policy.
    let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
    let edge = new_p
        .find_edge(new_p.peer_of(ip(PROXY)), new_p.peer_of(ip(CENTRAL)), 4242)
        .unwrap();
    assert_eq!(pl.clock().open_count(edge), 1);
    let window = new_p.edge(edge).window;
    assert_eq!(
        pl.clock().state(edge, window, at(100), at(100 + 4 * 3600)),
        EdgeState::Seen
    );
}

/// A frame flagged with a bad timestamp counts as a decode error by
/// reason and neither widens the span nor advances time.
#[test]
fn invalid_timestamp_is_a_decode_error_and_moves_nothing() {
    let mut pl = Pipeline::new(multi_node(), TrackConfig::default());
    let frame = |ts: u64, ts_invalid: bool| Frame {
        ts: Timestamp(ts),
        linktype: LinkType::ETHERNET,
        wire_len: 0,
        data: &[],
        interface: 0,
        ts_invalid,
    };
    assert_eq!(pl.ingest(&frame(10, true)), Ingested::Malformed);
    assert_eq!(pl.span(), None);
    pl.ingest(&frame(1_000, false));
    assert_eq!(pl.ingest(&frame(u64::MAX, true)), Ingested::Malformed);
    assert_eq!(pl.span(), Some((Timestamp(1_000), Timestamp(1_000))));
    assert_eq!(pl.stats().errors.get("invalid_timestamp"), Some(&2));
    assert_eq!(pl.stats().frames, 3);
}

/// A firewall log's records go through the same classification, tallies
/// and evidence as packets: a permitted attempt is evidence of its edge, a
/// denied one on an expected edge is a `blocked` finding citing its filter,
/// and neither is counted as established.
#[test]
fn record_observations_meet_packets_in_the_tallies() {
    use crate::observation::{FlowKey, Observation, Outcome, SourceKind};
    let p = multi_node();
    let edge = expected_edge(&p);
    let mut pl = Pipeline::new(p.clone(), track());
    pl.record_events(true);
    let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
    let key = |sport| FlowKey {
        client: ip(PROXY),
        client_port: sport,
        server: ip(CENTRAL),
        server_port: QRS_PORT,
    };
    let permitted = Observation::record(
        at(10),
        key(50_000),
        Outcome::Permitted,
        SourceKind::FirewallLog,
    );
    pl.observe(&permitted);
    let mut denied =
        Observation::record(at(20), key(50_001), Outcome::Denied, SourceKind::WfpEvents);
    denied.filter = Some(67_890);
    pl.observe(&denied);
    // Outcomes wait for the merge window (another record of the same
    // connection may decide them); the end of the sources settles them.
    assert_eq!(pl.tally().by_outcome, [0; Outcome::COUNT]);
    pl.finish(at(20));

    let t = pl.tally();
    assert_eq!(t.by_verdict[Verdict::Expected as usize], 2);
    assert_eq!(t.by_outcome[Outcome::Permitted.index()], 1);
    assert_eq!(t.by_outcome[Outcome::Denied.index()], 1);
    assert_eq!(t.by_outcome[Outcome::Established.index()], 0);
    let [f] = t.findings() else {
        panic!("{:?}", t.findings())
    };
    assert_eq!(f.key.kind, crate::state::tally::FindingKind::Blocked);
    assert_eq!(f.filters, [67_890]);
    assert_eq!(pl.clock().first_last(edge), Some((at(10), at(20))));
    assert_eq!(pl.span(), Some((at(10), at(20))));
    let outcomes: Vec<Outcome> = pl
        .drain_events()
        .iter()
        .filter_map(|e| match e {
            Event::Outcome { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, [Outcome::Permitted, Outcome::Denied]);

    // Lost events in the window: the edge cannot be declared missing.
    pl.sensor_lost(at(30));
    let w = Duration::from_secs(60);
    assert_eq!(
        pl.clock().state(edge, w, at(0), at(85)),
        EdgeState::NotObserved
    );
}

/// An edge between two nodes is logged by both ends, each node may keep a
/// firewall log and audit events, and a firewall log writes a line per
/// dropped SYN: all of it is one attempt, one `blocked` finding, one piece
/// of evidence, the repeated drops retransmissions. The responder's drop
/// decides the outcome whichever end's record comes first.
#[test]
fn both_ends_logging_one_connection_count_it_once() {
    use crate::observation::{FlowKey, Observation, Outcome, SourceKind};
    use crate::state::tally::FindingKind;
    let p = multi_node();
    let edge = expected_edge(&p);
    let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
    let key = FlowKey {
        client: ip(PROXY),
        client_port: 50_000,
        server: ip(CENTRAL),
        server_port: QRS_PORT,
    };
    let rec = |secs, outcome, node: &str, kind| {
        let mut o = Observation::record(at(secs), key, outcome, kind);
        o.sensor = Some(node.into());
        o
    };
    let (fw, wfp) = (SourceKind::FirewallLog, SourceKind::WfpEvents);
    let mut records = vec![
        rec(10, Outcome::Permitted, "proxy", fw),
        rec(10, Outcome::Permitted, "proxy", wfp),
    ];
    for t in [10, 11, 13, 17] {
        records.push(rec(t, Outcome::Denied, "central", fw));
        let mut w = rec(t, Outcome::Denied, "central", wfp);
        w.filter = Some(87_617);
        records.push(w);
    }
    let responder_first: Vec<Observation> = {
        let mut r: Vec<Observation> = records.iter().rev().cloned().collect();
        r.sort_by_key(|o| o.ts);
        r
    };
    for recs in [records, responder_first] {
        let mut pl = Pipeline::new(p.clone(), track());
        pl.record_events(true);
        for r in &recs {
            pl.observe(r);
        }
        // A record of another connection 40 s on: the window has passed.
        let later = FlowKey {
            client_port: 50_001,
            ..key
        };
        pl.observe(&Observation::record(at(50), later, Outcome::Permitted, fw));
        assert_eq!(pl.record_merge().duplicates(), 9);
        let t = pl.tally();
        assert_eq!(t.by_outcome[Outcome::Denied.index()], 1, "settled");
        pl.finish(at(50));

        let t = pl.tally();
        assert_eq!(t.by_verdict[Verdict::Expected as usize], 2);
        assert_eq!(t.by_outcome[Outcome::Denied.index()], 1);
        assert_eq!(t.by_outcome[Outcome::Permitted.index()], 1);
        assert_eq!(t.retransmissions, 3);
        let [f] = t.findings() else {
            panic!("{:?}", t.findings())
        };
        assert_eq!((f.key.kind, f.count), (FindingKind::Blocked, 1));
        assert_eq!(f.filters, [87_617]);
        assert_eq!(pl.clock().count(edge), 2, "one piece of evidence each");
        let events = pl.drain_events();
        let connections = (events.iter())
            .filter(|e| matches!(e, Event::Connection { .. }))
            .count();
        let outcomes: Vec<Outcome> = (events.iter())
            .filter_map(|e| match e {
                Event::Outcome { outcome, .. } => Some(*outcome),
                _ => None,
            })
            .collect();
        assert_eq!(connections, 2);
        assert_eq!(outcomes, [Outcome::Denied, Outcome::Permitted]);
    }
}

/// One process reading a capture and a node's firewall log: the
/// connection both saw is one attempt; when the log says denied what the
/// capture saw established, both outcomes stand and a disagreement is
/// reported, once. A connection they agree on is no disagreement, and
/// without `join_kinds` the two kinds count apart.
#[test]
fn two_kinds_count_a_connection_once_and_report_their_disagreement() {
    use crate::observation::{FlowKey, Observation, Outcome, SensorKind, SourceKind};
    let run = |join: bool| {
        let mut pl = Pipeline::new(multi_node(), track());
        pl.record_events(true);
        if join {
            pl.join_kinds();
        }
        let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
        let key = |sport| FlowKey {
            client: ip(PROXY),
            client_port: sport,
            server: ip(CENTRAL),
            server_port: QRS_PORT,
        };
        // The log's record (whole seconds) comes before the SYN.
        let log = |sport, outcome| {
            Observation::record(at(10), key(sport), outcome, SourceKind::FirewallLog)
        };
        pl.observe(&log(50_000, Outcome::Denied));
        pl.observe(&log(50_001, Outcome::Permitted));
        for sport in [50_000, 50_001] {
            ingest(
                &mut pl,
                10,
                &tcp(PROXY, sport, CENTRAL, QRS_PORT, Flags::Syn),
            );
            ingest(
                &mut pl,
                10,
                &tcp(CENTRAL, QRS_PORT, PROXY, sport, Flags::SynAck),
            );
        }
        pl.finish(at(11));
        pl
    };
    let mut pl = run(true);
    let t = pl.tally();
    assert_eq!(t.by_verdict[Verdict::Expected as usize], 2);
    assert_eq!(t.by_outcome[Outcome::Established.index()], 2);
    assert_eq!(t.by_outcome[Outcome::Denied.index()], 1);
    assert_eq!(t.by_outcome[Outcome::Permitted.index()], 1);
    let [d] = t.disagreements() else {
        panic!("{:?}", t.disagreements())
    };
    assert_eq!(d.count, 1);
    assert_eq!(
        (d.key.established, d.key.other, d.key.outcome),
        (
            SensorKind::Packets,
            SensorKind::FirewallLog,
            Outcome::Denied
        )
    );
    assert_eq!(pl.kind_join().joined(), 2);
    let events = pl.drain_events();
    let connections = (events.iter())
        .filter(|e| matches!(e, Event::Connection { .. }))
        .count();
    assert_eq!(connections, 2);
    let disagreed: Vec<u16> = (events.iter())
        .filter_map(|e| match e {
            Event::Disagreement { key, .. } => Some(key.client_port),
            _ => None,
        })
        .collect();
    assert_eq!(disagreed, [50_000]);

    let apart = run(false);
    assert_eq!(apart.tally().by_verdict[Verdict::Expected as usize], 4);
    assert!(apart.tally().disagreements().is_empty());
}

/// A record attempt keeps its classification until its outcome settles,
/// but the site's acceptance is asked again at the outcome's time: the
/// multi-node site accepts corp-users → central:3389 to the end of
/// 2027-06-30, so an attempt 10 s before that is accepted and the denial
/// that decides it 5 s after is not.
#[test]
fn a_settled_record_outcome_is_accepted_as_at_its_own_time() {
    let end = 1_814_400_000; // 2027-07-01T00:00:00Z
    let key = FlowKey {
        client: IpAddr::from(USER),
        client_port: 50_000,
        server: IpAddr::from(CENTRAL),
        server_port: 3389,
    };
    let fw = SourceKind::FirewallLog;
    let mut pl = Pipeline::new(multi_node(), track());
    pl.record_events(true);
    let at = |s| Timestamp::from_secs_nanos(s, 0);
    pl.observe(&Observation::record(
        at(end - 10),
        key,
        Outcome::Permitted,
        fw,
    ));
    pl.observe(&Observation::record(at(end + 5), key, Outcome::Denied, fw));
    pl.finish(at(end + 60));
    let events = pl.drain_events();
    let attempt = events.iter().find_map(|e| match e {
        Event::Connection { class, .. } => Some(class),
        _ => None,
    });
    let outcome = events.iter().find_map(|e| match e {
        Event::Outcome { class, outcome, .. } => Some((class, *outcome)),
        _ => None,
    });
    let (attempt, (outcome, o)) = (attempt.unwrap(), outcome.unwrap());
    assert_eq!(o, Outcome::Denied);
    assert!(attempt.accepted.is_some(), "{attempt:?}");
    assert!(outcome.accepted.is_none(), "{outcome:?}");
    assert_eq!(
        Classification {
            accepted: None,
            ..attempt.clone()
        },
        *outcome
    );
}
