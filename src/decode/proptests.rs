//! Properties: decode is total (never panics) on any bytes for any link
//! type, and the fast pre-check agrees with the full decode.

use proptest::prelude::*;

use super::tests::{ethernet, ipv4_packet, ipv6_packet, tcp_header, Ports};
use super::tunnel_tests::{erspan, gre, outer, udp, vxlan};
use super::*;

/// The supported link types, plus one (DOCSIS) that must be refused cleanly.
fn linktypes() -> Vec<LinkType> {
    let mut v = LinkType::SUPPORTED.to_vec();
    v.push(LinkType(147));
    v
}

fn linktype() -> impl Strategy<Value = LinkType> {
    prop_oneof![
        proptest::sample::select(linktypes()),
        any::<u16>().prop_map(LinkType),
    ]
}

/// Valid frames of the layouts the fast path knows and some it does not
/// (encapsulations among them), mostly non-control, so that mutations land
/// near its decisions and in every tunnel header.
fn base_frame() -> impl Strategy<Value = (LinkType, Vec<u8>)> {
    let flags = prop_oneof![
        Just(0x10u8),
        Just(0x18),
        Just(0x02),
        Just(0x11),
        any::<u8>()
    ];
    let words = 0usize..4;
    (flags, words, 0usize..9).prop_map(|(flags, words, layout)| {
        let tcp = [tcp_header(flags), vec![0xab; 16]].concat();
        let v4 = ipv4_packet(6, 0, &vec![1; words * 4], &tcp);
        let v6 = ipv6_packet(6, &tcp);
        match layout {
            0 => (LinkType::ETHERNET, ethernet(0x0800, &v4)),
            1 => (LinkType::ETHERNET, ethernet(0x86dd, &v6)),
            2 => {
                let mut tagged = vec![0, 5, 0x08, 0x00];
                tagged.extend_from_slice(&v4);
                (LinkType::ETHERNET, ethernet(0x8100, &tagged))
            }
            3 => (LinkType::RAW, v6),
            // Encapsulated: the inner frame is one of the above.
            4 => (
                LinkType::ETHERNET,
                outer(17, &udp(4789, &vxlan(7, &ethernet(0x0800, &v4)))),
            ),
            5 => (
                LinkType::ETHERNET,
                outer(47, &gre(true, Some(3), Some(9), 0x86dd, &v6)),
            ),
            6 => (
                LinkType::ETHERNET,
                outer(
                    47,
                    &gre(
                        false,
                        None,
                        Some(1),
                        0x22eb,
                        &erspan(2, 5, words % 2 == 1, &ethernet(0x0800, &v4)),
                    ),
                ),
            ),
            7 => (
                LinkType::ETHERNET,
                outer(
                    17,
                    &udp(
                        4754,
                        &gre(
                            false,
                            None,
                            None,
                            0x8847,
                            &[[0, 1, 0x11, 64].to_vec(), v4].concat(),
                        ),
                    ),
                ),
            ),
            _ => (
                LinkType::ETHERNET,
                outer(
                    17,
                    &udp(
                        6081,
                        &[
                            [1, 0, 0x65, 0x58, 0, 0, 1, 0, 1, 2, 3, 0].to_vec(),
                            ethernet(0x86dd, &v6),
                        ]
                        .concat(),
                    ),
                ),
            ),
        }
    })
}

/// A base frame with a few bytes overwritten and maybe truncated, read as
/// its own link type or (sometimes) another one.
fn mutated_frame() -> impl Strategy<Value = (LinkType, Vec<u8>)> {
    (
        base_frame(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
        linktype(),
    )
        .prop_map(|((own, mut frame), edits, cut, truncate, other)| {
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            if truncate {
                frame.truncate(cut.index(frame.len() + 1));
            }
            (
                if truncate && frame.len() % 5 == 0 {
                    other
                } else {
                    own
                },
                frame,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decode_never_panics(linktype in linktype(), data in proptest::collection::vec(any::<u8>(), 0..160)) {
        let _ = decode(linktype, &data);
        for len in 0..data.len() {
            let _ = decode(linktype, &data[..len]);
        }
    }

    #[test]
    fn mutated_frames_never_panic((linktype, frame) in mutated_frame()) {
        for lt in linktypes() {
            let _ = decode(lt, &frame);
        }
        let _ = decode(linktype, &frame);
    }

    #[test]
    fn fast_path_defers_or_agrees((linktype, frame) in mutated_frame(), port in prop_oneof![Just(443u16), any::<u16>()]) {
        let ports = [port];
        for wanted in [&Ports(&[]), &Ports(&ports)] {
            if fast::is_skipped(linktype, &frame, wanted) {
                prop_assert_eq!(full(linktype, &frame, wanted), Ok(Decoded::Skipped(Skip::NotControl)));
            }
            prop_assert_eq!(decode_wanting(linktype, &frame, wanted), full(linktype, &frame, wanted));
        }
    }

    #[test]
    fn fast_path_agrees_on_random_bytes(linktype in linktype(), data in proptest::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(decode(linktype, &data), full(linktype, &data, &ControlOnly));
    }
}
