//! Encapsulated frames through the pipeline: the same events and rows as
//! the plain frames, what was seen counted, and a SYN mirrored at both ends
//! applied once.

use std::path::Path;

use super::*;
use crate::config::load_policy;
use crate::frame::LinkType;

const PROXY: [u8; 4] = [192, 0, 2, 11];
const CENTRAL: [u8; 4] = [192, 0, 2, 10];
/// The mirror's own addresses: never classified.
const VTEP_A: [u8; 4] = [203, 0, 113, 1];
const VTEP_B: [u8; 4] = [203, 0, 113, 2];

fn pipeline() -> Pipeline {
    let policy = load_policy(Path::new("multi-node"), None).unwrap().policy;
    let mut pl = Pipeline::new(Arc::new(policy), TrackConfig::default());
    pl.record_events(true);
    pl
}

/// Proxy → central:4242 with TCP `flags` and sequence number `seq`.
fn inner(flags: u8, seq: u32, reply: bool) -> Vec<u8> {
    let (src, dst, sport, dport) = match reply {
        false => (PROXY, CENTRAL, 50_000, 4242),
        true => (CENTRAL, PROXY, 4242, 50_000),
    };
    let mut b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 1024);
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x10 != 0 {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

/// `frame` in VXLAN (VNI `vni`) between the two tunnel endpoints.
fn in_vxlan(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(frame);
    let b = etherparse::PacketBuilder::ethernet2([6; 6], [8; 6])
        .ipv4(VTEP_A, VTEP_B, 64)
        .udp(49_152, 4789);
    let mut v = Vec::new();
    b.write(&mut v, &payload).unwrap();
    v
}

fn ingest(pl: &mut Pipeline, ms: u64, data: &[u8]) -> Ingested {
    pl.ingest(&Frame {
        ts: Timestamp::from_secs_nanos(100 + ms / 1000, (ms % 1000) as u32 * 1_000_000),
        linktype: LinkType::ETHERNET,
        wire_len: data.len() as u32,
        data,
        interface: 0,
        ts_invalid: false,
    })
}

fn handshake() -> [Vec<u8>; 3] {
    [
        inner(0x02, 7, false),
        inner(0x12, 90, true),
        inner(0x10, 8, false),
    ]
}

/// Events without their encapsulation, to compare with the plain run.
fn bare(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Connection {
                ts,
                class,
                key,
                process,
                ..
            } => Event::Connection {
                ts,
                class,
                key,
                mirror: None,
                process,
            },
            Event::Outcome {
                ts,
                class,
                key,
                outcome,
                source,
                ..
            } => Event::Outcome {
                ts,
                class,
                key,
                outcome,
                mirror: None,
                source,
            },
            e => e,
        })
        .collect()
}

#[test]
fn an_encapsulated_handshake_gives_what_the_plain_one_gives() {
    let (mut plain, mut wrapped) = (pipeline(), pipeline());
    for (i, f) in handshake().iter().enumerate() {
        let ms = 10 * i as u64;
        assert_eq!(
            ingest(&mut plain, ms, f),
            ingest(&mut wrapped, ms, &in_vxlan(42, f))
        );
    }
    let events = wrapped.drain_events();
    let session = Encap {
        kind: EncapKind::Vxlan,
        session: Some(42),
    };
    let vxlan = Some(session);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Connection { mirror, .. } if *mirror == vxlan)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Outcome { mirror, .. } if *mirror == vxlan)));
    assert_eq!(bare(events), plain.drain_events());
    let row = |pl: &Pipeline| {
        let r = &pl.tally().rows()[0];
        (
            r.key,
            r.attempts,
            r.retransmissions,
            r.outcomes,
            r.first,
            r.last,
        )
    };
    assert_eq!(row(&wrapped), row(&plain));
    let s = wrapped.stats();
    assert_eq!(s.encapsulated(EncapKind::Vxlan), 3);
    assert_eq!(s.sessions.get(&session), Some(&3));
    assert_eq!(plain.stats().encapsulated, [0; EncapKind::ALL.len()]);
}

/// Data segments in VXLAN on ports nobody wants take the pre-check, and
/// are counted as the full decode counts them: frame, encapsulation and
/// session (the VNI, and a frame whose VXLAN header has no I flag under no
/// session).
#[test]
fn skipped_vxlan_segments_count_their_encapsulation_and_session() {
    let mut pl = pipeline();
    let [syn, ..] = handshake();
    ingest(&mut pl, 0, &in_vxlan(42, &syn));
    let mut data = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(PROXY, CENTRAL, 64)
        .tcp(50_001, 9_999, 7, 1024)
        .ack(1)
        .write(&mut data, &[0; 100])
        .unwrap();
    let mut no_vni = in_vxlan(42, &data);
    no_vni[42] = 0; // the VXLAN flags: I cleared
    for ms in 1..=5 {
        let got = ingest(&mut pl, ms, &in_vxlan(42, &data));
        assert_eq!(got, Ingested::Skipped(Skip::NotControl));
    }
    let got = ingest(&mut pl, 6, &no_vni);
    assert_eq!(got, Ingested::Skipped(Skip::NotControl));
    let s = pl.stats();
    assert_eq!((s.frames, s.skipped(Skip::NotControl)), (7, 6));
    assert_eq!(s.encapsulated(EncapKind::Vxlan), 7);
    let session = Encap {
        kind: EncapKind::Vxlan,
        session: Some(42),
    };
    assert_eq!(s.sessions.get(&session), Some(&6));
    assert_eq!(s.sessions.len(), 1);
}

/// Sessions are listed in order, at most [`MAX_MIRROR_SESSIONS`]: the
/// first ones seen; the frames of later ones are counted as dropped (and
/// still under their encapsulation).
#[test]
fn mirror_sessions_are_listed_in_order_up_to_their_cap() {
    let mut pl = pipeline();
    let extra = 6;
    let total = (MAX_MIRROR_SESSIONS + extra) as u32;
    let [syn, _, ack] = handshake();
    ingest(&mut pl, 0, &in_vxlan(total, &syn));
    for (ms, vni) in (0..total).rev().enumerate() {
        // Twice each, the second time from the list.
        for _ in 0..2 {
            ingest(&mut pl, 1 + ms as u64, &in_vxlan(vni, &ack));
        }
    }
    let s = pl.stats();
    let listed: Vec<(Option<u32>, u64)> =
        (s.sessions.iter()).map(|(e, n)| (e.session, *n)).collect();
    // The SYN's session came first (one frame), then 69 down to 7.
    let first_kept = total - MAX_MIRROR_SESSIONS as u32 + 1;
    let expected: Vec<(Option<u32>, u64)> = (first_kept..total)
        .map(|v| (Some(v), 2))
        .chain([(Some(total), 1)])
        .collect();
    assert_eq!(listed.len(), MAX_MIRROR_SESSIONS);
    assert_eq!(listed, expected);
    assert_eq!(s.sessions_dropped, 2 * (extra as u64 + 1));
    assert_eq!(s.encapsulated(EncapKind::Vxlan), 1 + 2 * u64::from(total));
}

/// A reload between the SYN and its answer keeps the attempt's mirror
/// session: the outcome event still names it.
#[test]
fn an_outcome_after_a_reload_keeps_its_mirror_session() {
    let mut pl = pipeline();
    let [syn, syn_ack, _] = handshake();
    ingest(&mut pl, 0, &in_vxlan(42, &syn));
    pl.swap_policy(pl.policy().clone());
    ingest(&mut pl, 10, &in_vxlan(42, &syn_ack));
    let vxlan = Some(Encap {
        kind: EncapKind::Vxlan,
        session: Some(42),
    });
    let outcomes: Vec<_> = (pl.drain_events().into_iter())
        .filter_map(|e| match e {
            Event::Outcome { mirror, .. } => Some(mirror),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, [vxlan]);
}

#[test]
fn a_syn_mirrored_at_both_ends_is_one_attempt_not_a_retransmission() {
    let mut pl = pipeline();
    let [syn, syn_ack, ack] = handshake();
    // Each packet twice: from the sender's mirror session and the receiver's.
    for (ms, f) in [(0, &syn), (10, &syn_ack), (20, &ack)] {
        ingest(&mut pl, ms, &in_vxlan(1, f));
        ingest(&mut pl, ms + 1, &in_vxlan(2, f));
    }
    let row = &pl.tally().rows()[0];
    assert_eq!((row.attempts, row.retransmissions), (1, 0));
    let connections = (pl.drain_events().iter())
        .filter(|e| matches!(e, Event::Connection { .. }))
        .count();
    assert_eq!(connections, 1);
    assert_eq!(pl.stats().mirror_duplicates, 2);
    assert_eq!(pl.stats().control(Control::Syn), 2);
    // A real retransmission, a second later, still counts as one.
    ingest(
        &mut pl,
        1_000 + MIRROR_DUPLICATE_WITHIN.as_millis() as u64,
        &in_vxlan(1, &syn),
    );
    assert_eq!(pl.tally().rows()[0].retransmissions, 1);
}

#[test]
fn a_vxlan_port_not_configured_is_counted_and_named() {
    let mut pl = pipeline();
    let f = in_vxlan(5, &handshake()[0]);
    let mut elsewhere = f.clone();
    // The UDP destination port (after Ethernet and a 20-byte IPv4 header).
    elsewhere[36..38].copy_from_slice(&8472u16.to_be_bytes());
    elsewhere[40..42].copy_from_slice(&[0, 0]); // no UDP checksum
    assert_eq!(
        ingest(&mut pl, 0, &elsewhere),
        Ingested::Skipped(Skip::UnconfiguredTunnel)
    );
    assert_eq!(
        pl.stats().unconfigured.get(&(EncapKind::Vxlan, 8472)),
        Some(&1)
    );
    pl.set_decap(Decap {
        vxlan: crate::decode::PortSet::new(&[8472]).unwrap(),
        ..Decap::STANDARD
    });
    assert_eq!(
        ingest(&mut pl, 10, &elsewhere),
        Ingested::Control(Control::Syn)
    );
    assert_eq!(
        ingest(&mut pl, 20, &f),
        Ingested::Skipped(Skip::UnconfiguredTunnel),
        "4789 is no longer configured"
    );
}
