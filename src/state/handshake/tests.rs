use super::*;

const C: &str = "192.0.2.11";
const S: &str = "192.0.2.10";

fn seg(src: &str, sport: u16, dst: &str, dport: u16, control: Control) -> Segment {
    Segment {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        control,
        flags: match control {
            Control::Syn => 0x02,
            Control::SynAck => 0x12,
            Control::Rst => 0x04,
            Control::Fin => 0x11,
            Control::Ack => 0x10,
        },
        seq: 0,
        mirror: None,
    }
}

/// A segment with a given sequence number.
fn with_seq(mut s: Segment, seq: u32) -> Segment {
    s.seq = seq;
    s
}

fn syn(sport: u16) -> Segment {
    seg(C, sport, S, 4242, Control::Syn)
}

fn reply(sport: u16, control: Control) -> Segment {
    seg(S, 4242, C, sport, control)
}

fn ms(n: u64) -> Timestamp {
    Timestamp(n * 1_000_000)
}

/// Feed (time in ms, segment) pairs, then finish at `end`; return events
/// with tags numbered in attempt order.
fn run(
    cfg: TrackConfig,
    input: &[(u64, Segment)],
    end: u64,
) -> (Vec<TableEvent<u32>>, HandshakeTable<u32>) {
    let mut t = HandshakeTable::new(cfg);
    let mut events = Vec::new();
    let mut next = 0;
    for (at, s) in input {
        t.expire(ms(*at), &mut |e| events.push(e));
        t.observe(
            ms(*at),
            s,
            |_| {
                next += 1;
                next - 1
            },
            &mut |e| events.push(e),
        );
    }
    t.finish(ms(end), &mut |e| events.push(e));
    (events, t)
}

fn outcomes(events: &[TableEvent<u32>]) -> Vec<(u32, Outcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            TableEvent::Resolved { tag, outcome, .. } => Some((*tag, *outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn syn_ack_establishes_and_fin_is_activity() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, syn(50000)),
            (1, reply(50000, Control::SynAck)),
            (90, syn_fin(50000)),
        ],
        10_000,
    );
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Established)]);
    assert!(ev.contains(&TableEvent::Activity { tag: 0 }));
}

fn syn_fin(sport: u16) -> Segment {
    let mut s = seg(C, sport, S, 4242, Control::Fin);
    s.flags = 0x01; // a FIN without ACK: no handshake is implied
    s
}

#[test]
fn rst_from_listener_refuses_rst_from_client_is_unknown() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, syn(50000)),
            (1, reply(50000, Control::Rst)),
            (2, syn(50001)),
            (3, seg(C, 50001, S, 4242, Control::Rst)),
        ],
        10_000,
    );
    assert_eq!(
        outcomes(&ev),
        vec![(0, Outcome::Refused), (1, Outcome::Unknown)]
    );
}

#[test]
fn retransmitted_syn_without_answer_is_unanswered_even_one_way() {
    let (ev, t) = run(
        TrackConfig::default(),
        &[(0, syn(50000)), (1000, syn(50000))],
        60_000,
    );
    assert!(!t.replies_visible());
    assert!(ev.contains(&TableEvent::Retransmission { tag: 0 }));
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Unanswered)]);
}

#[test]
fn single_syn_is_unknown_without_replies_and_unanswered_with_them() {
    let (ev, _) = run(TrackConfig::default(), &[(0, syn(50000))], 60_000);
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Unknown)]);

    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, syn(50001)),
            (1, reply(50001, Control::SynAck)),
            (10, syn(50000)),
        ],
        60_000,
    );
    assert_eq!(
        outcomes(&ev),
        vec![(0, Outcome::Established), (1, Outcome::Unanswered)]
    );
}

/// The end of a capture judges a waiting attempt as its timeout would:
/// the same packets give the same outcome wherever the capture stops.
#[test]
fn capture_ending_before_the_timeout_judges_as_the_timeout_would() {
    for end in [1500, 60_000] {
        let (ev, _) = run(
            TrackConfig::default(),
            &[
                (0, syn(50001)),
                (1, reply(50001, Control::SynAck)),
                (10, syn(50000)),
                (1010, syn(50000)),
            ],
            end,
        );
        assert_eq!(
            outcomes(&ev),
            vec![(0, Outcome::Established), (1, Outcome::Unanswered)],
            "capture ending at {end} ms"
        );
        // A lone SYN on a pair that never replied proves nothing, either way.
        let (ev, _) = run(TrackConfig::default(), &[(10, syn(50000))], end);
        assert_eq!(outcomes(&ev), vec![(0, Outcome::Unknown)], "end {end} ms");
        // A lone SYN on a pair whose replies are visible: unanswered, either way.
        let (ev, _) = run(
            TrackConfig::default(),
            &[
                (0, syn(50001)),
                (1, reply(50001, Control::SynAck)),
                (10, syn(50000)),
            ],
            end,
        );
        assert_eq!(outcomes(&ev)[1], (1, Outcome::Unanswered), "end {end} ms");
    }
}

#[test]
fn capacity_evicts_the_oldest_attempt_and_counts_it() {
    let cfg = TrackConfig {
        capacity: 2,
        ..TrackConfig::default()
    };
    let (ev, t) = run(
        cfg,
        &[
            (0, syn(1)),
            (1, syn(2)),
            (2, syn(3)),
            (3, reply(2, Control::SynAck)),
        ],
        10,
    );
    assert_eq!(t.evictions(Eviction::CapacityHalfOpen), 1);
    assert_eq!(outcomes(&ev)[0], (0, Outcome::Unknown));
    assert!(outcomes(&ev).contains(&(1, Outcome::Established)));
    assert_eq!(t.peak(), 2);
}

#[test]
fn idle_open_connections_are_evicted_by_packet_time() {
    let cfg = TrackConfig {
        idle_timeout: Duration::from_secs(60),
        ..TrackConfig::default()
    };
    let (_, t) = run(
        cfg,
        &[
            (0, syn(1)),
            (1, reply(1, Control::SynAck)),
            (61_000, syn(2)),
        ],
        61_500,
    );
    assert_eq!(t.evictions(Eviction::Idle), 1);
}

#[test]
fn fin_without_a_tracked_connection_is_untracked() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[(0, reply(50000, Control::Fin))],
        10,
    );
    assert!(matches!(ev[0], TableEvent::Untracked { .. }));
}

#[test]
fn reused_tuple_after_close_is_a_new_attempt() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, syn(7)),
            (1, reply(7, Control::SynAck)),
            (2, reply(7, Control::Rst)),
            // Even with the same initial sequence number: it closed.
            (3, syn(7)),
            (4, reply(7, Control::SynAck)),
        ],
        10,
    );
    assert_eq!(
        outcomes(&ev),
        vec![(0, Outcome::Established), (1, Outcome::Established)]
    );
}

#[test]
fn same_input_same_events() {
    let input: Vec<(u64, Segment)> = (0..500u16)
        .map(|i| {
            (
                u64::from(i) * 7,
                if i % 3 == 0 {
                    reply(i / 3, Control::SynAck)
                } else {
                    syn(i)
                },
            )
        })
        .collect();
    let cfg = TrackConfig {
        capacity: 64,
        ..TrackConfig::default()
    };
    let a = run(cfg, &input, 100_000).0;
    let b = run(cfg, &input, 100_000).0;
    assert_eq!(a, b);
}

mod scheduled_expiry {
    //! `expire` visits only entries that may be due; it must remove and
    //! report exactly what a sweep over every entry would, in the same
    //! order, whatever the timestamps do (backwards jumps included).
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Segment { at: u64, port: u16, control: u8 },
        Expire { at: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..20_000, 0u16..12, 0u8..6).prop_map(|(at, port, control)| Op::Segment { at, port, control }),
            1 => (0u64..20_000).prop_map(|at| Op::Expire { at }),
        ]
    }

    fn segment(port: u16, control: u8) -> Segment {
        let sport = 40_000 + port;
        match control {
            0 => syn(sport),
            1 => reply(sport, Control::SynAck),
            2 => reply(sport, Control::Rst),
            3 => seg(C, sport, S, 4242, Control::Rst),
            4 => reply(sport, Control::Fin),
            _ => seg(C, sport, S, 4242, Control::Fin),
        }
    }

    proptest! {
        #[test]
        fn expire_agrees_with_a_full_sweep(
            ops in proptest::collection::vec(op(), 1..200),
            capacity in 1usize..8,
            syn_ms in prop_oneof![Just(0u64), 1u64..5_000],
            idle_ms in prop_oneof![Just(0u64), 1u64..10_000],
        ) {
            let cfg = TrackConfig {
                capacity,
                syn_timeout: Duration::from_millis(syn_ms),
                idle_timeout: Duration::from_millis(idle_ms),
            };
            let mut fast: HandshakeTable<u32> = HandshakeTable::new(cfg);
            let mut slow: HandshakeTable<u32> = HandshakeTable::new(cfg);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (mut na, mut nb) = (0, 0);
            for op in &ops {
                match *op {
                    Op::Segment { at, port, control } => {
                        let s = segment(port, control);
                        fast.observe(ms(at), &s, |_| { na += 1; na }, &mut |e| a.push(e));
                        slow.observe(ms(at), &s, |_| { nb += 1; nb }, &mut |e| b.push(e));
                    }
                    Op::Expire { at } => {
                        fast.expire(ms(at), &mut |e| a.push(e));
                        slow.expire_by_sweep(ms(at), &mut |e| b.push(e));
                    }
                }
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(fast.len(), slow.len());
                prop_assert_eq!(fast.evictions(Eviction::Idle), slow.evictions(Eviction::Idle));
                prop_assert!(fast.due.len() <= 2 * capacity.max(16) + 1);
            }
        }
    }
}

#[test]
fn fin_from_both_ends_closes_the_entry() {
    let cfg = TrackConfig {
        idle_timeout: Duration::from_secs(60),
        ..TrackConfig::default()
    };
    let (ev, t) = run(
        cfg,
        &[
            (0, syn(1)),
            (1, reply(1, Control::SynAck)),
            (10, seg(C, 1, S, 4242, Control::Fin)),
            (11, reply(1, Control::Fin)),
            // A retransmitted FIN after the close is not new activity.
            (12, reply(1, Control::Fin)),
            (10_000, syn(2)),
            (10_001, reply(2, Control::SynAck)),
        ],
        200_000,
    );
    let activity = ev
        .iter()
        .filter(|e| matches!(e, TableEvent::Activity { tag: 0 }))
        .count();
    assert_eq!(activity, 2);
    // Closed, so it lingered and left instead of being evicted as idle;
    // only connection 2 (never closed) idles out.
    assert_eq!(t.evictions(Eviction::Idle), 1);
}

fn attempts(events: &[TableEvent<u32>]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, TableEvent::Attempt { .. }))
        .count()
}

fn inferred(events: &[TableEvent<u32>]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, TableEvent::Resolved { inferred: true, .. }))
        .count()
}

#[test]
fn syn_again_after_a_lost_syn_ack_is_a_retransmission_of_the_same_attempt() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, with_seq(syn(7), 1000)),
            (1, reply(7, Control::SynAck)),
            // The SYN-ACK was lost on its way back: the client retries.
            (1000, with_seq(syn(7), 1000)),
            (1001, reply(7, Control::SynAck)),
            (1002, seg(C, 7, S, 4242, Control::Ack)),
        ],
        10_000,
    );
    assert_eq!(attempts(&ev), 1);
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Established)]);
    assert!(ev.contains(&TableEvent::Retransmission { tag: 0 }));
}

#[test]
fn syn_with_another_sequence_number_on_an_open_tuple_is_a_new_attempt() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, with_seq(syn(7), 1000)),
            (1, reply(7, Control::SynAck)),
            (500, with_seq(syn(7), 99_000)),
            (501, reply(7, Control::SynAck)),
        ],
        10_000,
    );
    assert_eq!(attempts(&ev), 2);
    assert!(ev.contains(&TableEvent::Closed { tag: 0 }));
}

#[test]
fn client_ack_after_its_syn_proves_the_handshake() {
    let (ev, t) = run(
        TrackConfig::default(),
        &[
            (0, syn(7)),
            // The SYN-ACK took another path; the client retried once.
            (1000, syn(7)),
            (1001, seg(C, 7, S, 4242, Control::Ack)),
        ],
        60_000,
    );
    assert!(!t.replies_visible());
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Established)]);
    assert_eq!(inferred(&ev), 1);
}

#[test]
fn a_segment_without_ack_does_not_prove_a_handshake() {
    let mut bare = seg(C, 7, S, 4242, Control::Ack);
    bare.flags = 0x08; // PSH only
    let (ev, _) = run(
        TrackConfig::default(),
        &[(0, syn(7)), (1000, syn(7)), (1001, bare)],
        60_000,
    );
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Unanswered)]);
}

#[test]
fn unanswered_needs_replies_visible_for_that_pair() {
    const OTHER: &str = "192.0.2.99";
    let (ev, t) = run(
        TrackConfig::default(),
        &[
            // Replies from S to another client are visible ...
            (0, seg(OTHER, 5, S, 4242, Control::Syn)),
            (1, seg(S, 4242, OTHER, 5, Control::SynAck)),
            // ... but not to C: its single SYN's silence proves nothing.
            (10, syn(7)),
        ],
        60_000,
    );
    assert!(t.replies_visible());
    assert_eq!(
        outcomes(&ev),
        vec![(0, Outcome::Established), (1, Outcome::Unknown)]
    );
}

#[test]
fn simultaneous_open_is_one_attempt_on_the_first_syns_port() {
    let (ev, _) = run(
        TrackConfig::default(),
        &[
            (0, syn(7)),
            // The other end's SYN crosses it: from S:4242 to C:7.
            (0, seg(S, 4242, C, 7, Control::Syn)),
            (1, seg(C, 7, S, 4242, Control::SynAck)),
            (1, reply(7, Control::SynAck)),
        ],
        10_000,
    );
    assert_eq!(attempts(&ev), 1);
    assert!(matches!(
        ev[0],
        TableEvent::Attempt {
            key: FlowKey {
                server_port: 4242,
                ..
            },
            ..
        }
    ));
    assert_eq!(outcomes(&ev), vec![(0, Outcome::Established)]);
}

#[test]
fn a_syn_flood_evicts_half_open_attempts_before_open_connections() {
    let cfg = TrackConfig {
        capacity: 8,
        ..TrackConfig::default()
    };
    let mut input = Vec::new();
    // Four long-lived connections, then a flood of 100 SYNs.
    for p in 0..4u16 {
        input.push((u64::from(p), syn(p)));
        input.push((u64::from(p), reply(p, Control::SynAck)));
    }
    for p in 100..200u16 {
        input.push((10, syn(p)));
    }
    let (ev, t) = run(cfg, &input, 20);
    assert_eq!(t.evictions(Eviction::CapacityOpen), 0);
    assert_eq!(t.evictions(Eviction::CapacityHalfOpen), 100 - 4);
    assert!(!ev.iter().any(|e| matches!(e, TableEvent::Closed { .. })));
    // With nothing half-open left, an open connection is the one to go.
    let mut input: Vec<(u64, Segment)> = (0..9u16)
        .flat_map(|p| [(0, syn(p)), (1, reply(p, Control::SynAck))])
        .collect();
    input.push((2, syn(50)));
    let (ev, t) = run(cfg, &input, 3);
    assert_eq!(t.evictions(Eviction::CapacityOpen), 2);
    assert!(ev.contains(&TableEvent::Closed { tag: 0 }));
}

mod one_connection {
    //! Any interleaving of one connection's packets, with retransmissions
    //! of either side's SYN: exactly one attempt per SYN sequence number.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn one_attempt_per_syn_sequence_number(
            order in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
            extra_syns in 0usize..4,
            extra_syn_acks in 0usize..4,
            gap_ms in 0u64..5,
        ) {
            let isn = 77_000;
            // SYN first (the attempt), then the rest in any order.
            let mut rest: Vec<Segment> = vec![
                with_seq(reply(7, Control::SynAck), 5_000),
                seg(C, 7, S, 4242, Control::Ack),
                seg(C, 7, S, 4242, Control::Ack),
                reply(7, Control::Ack),
                with_seq(syn(7), isn),
                with_seq(reply(7, Control::SynAck), 5_000),
                seg(C, 7, S, 4242, Control::Ack),
            ];
            rest.extend((0..extra_syns).map(|_| with_seq(syn(7), isn)));
            rest.extend((0..extra_syn_acks).map(|_| with_seq(reply(7, Control::SynAck), 5_000)));
            let mut input = vec![(0, with_seq(syn(7), isn))];
            for (i, at) in order.iter().enumerate() {
                input.push(((i as u64 + 1) * gap_ms, rest[*at]));
            }
            for (i, s) in rest[7..].iter().enumerate() {
                input.push(((i as u64 + 8) * gap_ms, *s));
            }
            let (ev, _) = run(TrackConfig::default(), &input, 100_000);
            prop_assert_eq!(attempts(&ev), 1);
            prop_assert_eq!(outcomes(&ev), vec![(0, Outcome::Established)]);
            // A second connection on the same tuple with a new ISN after a close.
            input.push((1_000, reply(7, Control::Rst)));
            input.push((1_001, with_seq(syn(7), isn + 1)));
            input.push((1_002, with_seq(syn(7), isn + 1)));
            let (ev, _) = run(TrackConfig::default(), &input, 100_000);
            prop_assert_eq!(attempts(&ev), 2);
        }
    }
}

#[test]
fn visible_pair_silence_gets_one_more_timeout_for_the_clients_ack() {
    let visible = [(0, syn(1)), (1, reply(1, Control::SynAck)), (10, syn(2))];
    // No SYN-ACK for port 2; the client's data at 5 s (in the grace)
    // proves the handshake: only the capture lost the SYN-ACK.
    let mut input = visible.to_vec();
    input.push((5_000, seg(C, 2, S, 4242, Control::Ack)));
    let (ev, t) = run(TrackConfig::default(), &input, 60_000);
    assert_eq!(
        outcomes(&ev),
        vec![(0, Outcome::Established), (1, Outcome::Established)]
    );
    assert_eq!(inferred(&ev), 1);
    assert!(!t.pending_on(4242));
    // Silence through the grace too: unanswered.
    let (ev, _) = run(TrackConfig::default(), &visible, 60_000);
    assert_eq!(
        outcomes(&ev),
        vec![(0, Outcome::Established), (1, Outcome::Unanswered)]
    );
}

/// Feed (time in ms, segment) pairs with ends reported, finish at `end`:
/// each [`TableEvent::Ended`] as (tag, close, outcome, controls, start ms,
/// last ms).
fn ends(
    cfg: TrackConfig,
    input: &[(u64, Segment)],
    end: u64,
) -> Vec<(u32, Close, Outcome, [u32; 2], u64, u64)> {
    let mut t = HandshakeTable::new(cfg);
    t.report_ends(true);
    let mut events = Vec::new();
    let mut next = 0;
    for (at, s) in input {
        t.expire(ms(*at), &mut |e| events.push(e));
        let tag = |_: &FlowKey| {
            next += 1;
            next - 1
        };
        t.observe(ms(*at), s, tag, &mut |e| events.push(e));
    }
    t.finish(ms(end), &mut |e| events.push(e));
    let ms_of = |t: Timestamp| t.as_nanos() / 1_000_000;
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TableEvent::Ended { tag, ending: n, .. } => Some((
                *tag,
                n.close,
                n.outcome,
                n.controls,
                ms_of(n.start),
                ms_of(n.last),
            )),
            _ => None,
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out
}

/// With ends reported, every attempt ends exactly once, with how it
/// closed (FIN, RST by either side, SYN or idle timeout, the capture's
/// end), its outcome, first SYN, last segment and control packets each way.
#[test]
fn each_attempt_ends_once_with_its_close_reason() {
    let cfg = TrackConfig {
        capacity: 64,
        syn_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(60),
    };
    let c = |sport, control| seg(C, sport, S, 4242, control);
    let input = [
        (0, syn(1)),
        (10, reply(1, Control::SynAck)),
        (20, c(1, Control::Fin)),
        (30, reply(1, Control::Fin)),
        (100, syn(2)),
        (110, reply(2, Control::SynAck)),
        (120, c(2, Control::Rst)),
        (200, syn(3)),
        (210, reply(3, Control::SynAck)),
        (220, reply(3, Control::Rst)),
        (300, syn(4)),
        (310, reply(4, Control::Rst)),
        (400, syn(5)),
        (1400, syn(5)),
        (500, syn(6)),
        (510, reply(6, Control::SynAck)),
        (30_000, syn(7)),
        (30_010, reply(7, Control::SynAck)),
        (69_000, syn(8)),
    ];
    let mut input = input.to_vec();
    input.sort_by_key(|i| i.0);
    use Close::*;
    use Outcome::*;
    assert_eq!(
        ends(cfg, &input, 70_000),
        vec![
            (0, Fin, Established, [2, 2], 0, 30),
            (1, RstClient, Established, [2, 1], 100, 120),
            (2, RstServer, Established, [1, 2], 200, 220),
            (3, RstServer, Refused, [1, 1], 300, 310),
            (4, SynTimeout, Unanswered, [2, 0], 400, 1400),
            (5, IdleTimeout, Established, [1, 1], 500, 510),
            (6, CaptureEnd, Established, [1, 1], 30_000, 30_010),
            (7, CaptureEnd, Unanswered, [1, 0], 69_000, 69_000),
        ]
    );
}

/// An entry pushed out of a full table, or replaced by a new SYN on its
/// 4-tuple, ends as `evicted` or `reused`; none ends twice, and with ends
/// not asked for, none is sent.
#[test]
fn evicted_and_reused_entries_end_once() {
    let one = TrackConfig {
        capacity: 1,
        ..TrackConfig::default()
    };
    let input = [(0, syn(1)), (10, syn(2))];
    assert_eq!(
        ends(one, &input, 20),
        vec![
            (0, Close::Evicted, Outcome::Unknown, [1, 0], 0, 0),
            (1, Close::CaptureEnd, Outcome::Unknown, [1, 0], 10, 10),
        ]
    );
    let input = [
        (0, syn(1)),
        (5, reply(1, Control::SynAck)),
        (10, with_seq(syn(1), 99)),
    ];
    assert_eq!(
        ends(TrackConfig::default(), &input, 20),
        vec![
            (0, Close::Reused, Outcome::Established, [1, 1], 0, 5),
            (1, Close::CaptureEnd, Outcome::Unanswered, [1, 0], 10, 10),
        ]
    );
    let (events, _) = run(TrackConfig::default(), &input, 20);
    assert!(!events.iter().any(|e| matches!(e, TableEvent::Ended { .. })));
}

/// A looped replay's next pass sends the same SYN again: after `restart`
/// it is a new attempt, and the connection left open closed at the seam.
#[test]
fn after_a_restart_the_same_syn_is_a_new_attempt() {
    let mut t = HandshakeTable::new(TrackConfig::default());
    let mut events = Vec::new();
    let mut next = 0u32;
    let mut pass = |t: &mut HandshakeTable<u32>, start: u64, events: &mut Vec<_>| {
        for (at, s) in [(start, syn(7)), (start + 1, reply(7, Control::SynAck))] {
            let tag = |_: &FlowKey| {
                next += 1;
                next - 1
            };
            t.observe(ms(at), &with_seq(s, 99), tag, &mut |e| events.push(e));
        }
    };
    pass(&mut t, 0, &mut events);
    t.restart(ms(10), &mut |e| events.push(e));
    assert!(
        matches!(events[..], [.., TableEvent::Closed { tag: 0 }]),
        "{events:?}"
    );
    pass(&mut t, 20, &mut events);
    let retransmitted = events
        .iter()
        .any(|e| matches!(e, TableEvent::Retransmission { .. }));
    assert!(!retransmitted, "{events:?}");
    assert_eq!(
        outcomes(&events),
        [(0, Outcome::Established), (1, Outcome::Established)]
    );
}
