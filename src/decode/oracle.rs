//! etherparse as the oracle of the hand-written IP and TCP layers, on
//! random Ethernet frames (IPv4 or IPv6, maybe VLAN-tagged, random
//! addresses, ports, flags, TCP option words, payload and snaplen).
//!
//! Wherever etherparse slices a whole TCP header, `decode` must give the
//! same addresses, ports and flags. The one place they part is by design:
//! `decode` needs only the fixed 20 bytes of TCP (a header-only snaplen
//! may cut the options), etherparse the whole header with its options;
//! there `decode` must still read the segment. The layers stay
//! hand-written because of this and because of what the benchmark showed
//! (see benches/README.md, "etherparse").

use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, PacketBuilder, TransportSlice};
use proptest::prelude::*;

use super::tcp::control;
use super::*;

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    vlan: Option<u16>,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    flags: u8,
    option_words: u8,
    payload: usize,
    cut: prop::sample::Index,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::option::of(0u16..4095),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        (any::<u16>(), any::<u16>(), any::<u8>()),
        0u8..=10,
        0usize..64,
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(v6, vlan, src, dst, (sport, dport, flags), option_words, payload, cut)| Spec {
                v6,
                vlan,
                src,
                dst,
                sport,
                dport,
                flags,
                option_words,
                payload,
                cut,
            },
        )
}

/// The frame, the offset of its TCP header, and its addresses.
fn build(s: &Spec) -> (Vec<u8>, usize, IpAddr, IpAddr) {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let (ip, src, dst) = match (s.v6, s.vlan) {
        (false, None) => {
            let (a, b) = (
                [s.src[0], s.src[1], s.src[2], s.src[3]],
                [s.dst[0], s.dst[1], s.dst[2], s.dst[3]],
            );
            (eth.ipv4(a, b, 64), IpAddr::from(a), IpAddr::from(b))
        }
        (false, Some(v)) => {
            let (a, b) = (
                [s.src[0], s.src[1], s.src[2], s.src[3]],
                [s.dst[0], s.dst[1], s.dst[2], s.dst[3]],
            );
            let tagged = eth.single_vlan(v.try_into().expect("vid"));
            (tagged.ipv4(a, b, 64), IpAddr::from(a), IpAddr::from(b))
        }
        (true, None) => (
            eth.ipv6(s.src, s.dst, 64),
            IpAddr::from(s.src),
            IpAddr::from(s.dst),
        ),
        (true, Some(v)) => {
            let tagged = eth.single_vlan(v.try_into().expect("vid"));
            (
                tagged.ipv6(s.src, s.dst, 64),
                IpAddr::from(s.src),
                IpAddr::from(s.dst),
            )
        }
    };
    let options = vec![1u8; 4 * usize::from(s.option_words)]; // NOP padding
    let tcp = ip
        .tcp(s.sport, s.dport, 7, 1024)
        .options_raw(&options)
        .expect("options are whole words");
    let mut frame = Vec::new();
    tcp.write(&mut frame, &vec![0xab; s.payload])
        .expect("write");
    let ip_start = 14 + if s.vlan.is_some() { 4 } else { 0 };
    let tcp_start = ip_start + if s.v6 { 40 } else { 20 };
    // The flags byte as drawn (the builder's own are all clear).
    frame[tcp_start + 13] = s.flags;
    (frame, tcp_start, src, dst)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn etherparse_is_the_oracle_of_the_ip_and_tcp_layers(s in spec()) {
        let (mut frame, tcp_start, src, dst) = build(&s);
        frame.truncate(s.cut.index(frame.len() + 1));
        let ours = decode(LinkType::ETHERNET, &frame);
        // SYN with RST or FIN is refused whatever else (a decode error).
        let expected = |flags: u8, c: Option<Control>, sport: u16, dport: u16| match c {
            _ if flags & 0x02 != 0 && flags & 0x04 != 0 => Err(DecodeError::BadFlags(BadFlags::SynRst)),
            _ if flags & 0x02 != 0 && flags & 0x01 != 0 => Err(DecodeError::BadFlags(BadFlags::SynFin)),
            Some(control) => Ok(Decoded::Control(Segment { src, dst, src_port: sport, dst_port: dport, control, flags, seq: 7, mirror: None })),
            None => Ok(Decoded::Skipped(Skip::NotControl)),
        };
        let theirs = LaxSlicedPacket::from_ethernet(&frame).ok();
        let tcp = theirs.as_ref().and_then(|p| match (&p.net, &p.transport) {
            (Some(LaxNetSlice::Ipv4(_) | LaxNetSlice::Ipv6(_)), Some(TransportSlice::Tcp(t))) => Some(t),
            _ => None,
        });
        match tcp {
            Some(t) => {
                // The reduction rule (SYN, then RST, then FIN) on etherparse's bits.
                let c = match (t.syn(), t.ack(), t.rst(), t.fin()) {
                    (true, true, _, _) => Some(Control::SynAck),
                    (true, false, _, _) => Some(Control::Syn),
                    (false, _, true, _) => Some(Control::Rst),
                    (false, _, false, true) => Some(Control::Fin),
                    _ => None,
                };
                let flags = t.header_slice()[13];
                prop_assert_eq!(ours, expected(flags, c, t.source_port(), t.destination_port()));
            }
            // etherparse stops short of a whole TCP header.
            None if frame.len() >= tcp_start + 20 => {
                // Only the options are cut: decode reads the fixed header.
                prop_assert!(frame.len() < tcp_start + 20 + 4 * usize::from(s.option_words));
                prop_assert_eq!(ours, expected(s.flags, control(s.flags), s.sport, s.dport));
            }
            None => prop_assert!(
                matches!(ours, Err(DecodeError::Truncated { .. })),
                "{} of {} bytes: {:?}", frame.len(), tcp_start + 20, ours
            ),
        }
    }
}
