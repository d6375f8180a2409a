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

    /// The IPv4 case of `flow_hash` mixes what the loop over all address
    /// words mixes: filters keyed by it decide the same.
    #[test]
    fn flow_hash_is_the_loop_over_address_words(
        v4 in any::<([u8; 4], [u8; 4])>(),
        v6 in any::<([u8; 16], [u8; 16])>(),
        ports in any::<(u16, u16)>(),
    ) {
        fn by_words(src: &[u8], dst: &[u8], src_port: u16, dst_port: u16) -> u32 {
            const K: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut h = (u64::from(src_port) << 16 | u64::from(dst_port)).wrapping_mul(K);
            for c in src.chunks_exact(4).chain(dst.chunks_exact(4)) {
                let w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                h = (h ^ u64::from(w)).wrapping_mul(K).rotate_left(29);
            }
            (h >> 32) as u32
        }
        /// `RawTuple::either_way_hash` as the loop over each end's words.
        fn either_way_by_words(src: &[u8], dst: &[u8], src_port: u16, dst_port: u16) -> u32 {
            const K: u64 = 0x9e37_79b9_7f4a_7c15;
            let end = |a: &[u8], p: u16| {
                let mut h = u64::from(p).wrapping_mul(K);
                for c in a.chunks_exact(4) {
                    let w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    h = (h ^ u64::from(w)).wrapping_mul(K).rotate_left(29);
                }
                h
            };
            let h = end(src, src_port).wrapping_add(end(dst, dst_port));
            (h.wrapping_mul(K) >> 32) as u32
        }
        let (sp, dp) = ports;
        prop_assert_eq!(flow_hash(&v4.0, &v4.1, sp, dp), by_words(&v4.0, &v4.1, sp, dp));
        prop_assert_eq!(flow_hash(&v6.0, &v6.1, sp, dp), by_words(&v6.0, &v6.1, sp, dp));
        for (src, dst) in [(&v4.0[..], &v4.1[..]), (&v6.0[..], &v6.1[..])] {
            let t = RawTuple { src, dst, src_port: sp, dst_port: dp };
            prop_assert_eq!(t.either_way_hash(), either_way_by_words(src, dst, sp, dp));
        }
    }

    /// The usual frame's reading of the TCP header (one length check) gives
    /// what the layer-by-layer reading gives, total lengths near the
    /// fixed headers' included.
    #[test]
    fn usual_tcp_header_is_the_layered_one(
        (_, mut frame) in mutated_frame(),
        total in prop_oneof![0u16..64, any::<u16>()],
        set_total in any::<bool>(),
    ) {
        if set_total && frame.len() >= 18 {
            frame[16..18].copy_from_slice(&total.to_be_bytes());
        }
        if let Some(usual) = frame.first_chunk().and_then(fast::ethernet_ipv4_tcp) {
            prop_assert_eq!(Some(usual), fast::layered(LinkType::ETHERNET, &frame));
        }
    }

    #[test]
    fn plain_decode_defers_or_agrees((linktype, frame) in mutated_frame(), port in prop_oneof![Just(443u16), any::<u16>()]) {
        let ports = [port];
        for wanted in [&Ports(&[]), &Ports(&ports)] {
            if let Some(d) = fast::plain(linktype, &frame, wanted) {
                prop_assert_eq!(Ok(d), full(linktype, &frame, wanted));
            }
        }
    }
}

/// Every flags byte in each plain layout (Ethernet, 802.1Q, IPv4 with
/// options, IPv6, raw IP): the fixed-offset decode takes the frame, and
/// gives what the full decode gives, unless the flags are an error.
#[test]
fn plain_decode_takes_the_plain_layouts() {
    let ports = [super::tests::DPORT];
    for flags in 0..=u8::MAX {
        let tcp = [tcp_header(flags), vec![0xab; 16]].concat();
        let v4 = ipv4_packet(6, 0, &[1; 8], &tcp);
        let v6 = ipv6_packet(6, &tcp);
        let tagged = [vec![0, 5, 0x08, 0x00], v4.clone()].concat();
        let frames = [
            (LinkType::ETHERNET, ethernet(0x0800, &v4)),
            (LinkType::ETHERNET, ethernet(0x86dd, &v6)),
            (LinkType::ETHERNET, ethernet(0x8100, &tagged)),
            (LinkType::RAW, v4.clone()),
            (LinkType::RAW, v6),
        ];
        for (lt, frame) in frames {
            for wanted in [&Ports(&[]), &Ports(&ports)] {
                let whole = full(lt, &frame, wanted);
                let plain = fast::plain(lt, &frame, wanted);
                match tcp::bad_flags(flags) {
                    Some(_) => assert_eq!(plain, None, "{flags:#x}"),
                    None => assert_eq!(plain.map(Ok), Some(whole), "{flags:#x}"),
                }
            }
        }
    }
}

/// A VXLAN frame as a mirror session sends it, in the layouts the
/// pre-check knows and a few it defers on: outer tag (none, 802.1Q,
/// QinQ), outer IPv4 options, UDP port, VXLAN flags and VNI, inner frame
/// (IPv4, IPv6, tagged IPv4, QinQ-tagged IPv4) and TCP flags and ports.
/// Returns the frame and whether it is one of the known layouts.
fn vxlan_frame() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let flags = prop_oneof![
        Just(0x10u8),
        Just(0x18),
        Just(0x02),
        Just(0x11),
        any::<u8>()
    ];
    let port = prop_oneof![Just(4789u16), Just(8472), any::<u16>()];
    let vxlan_flags = prop_oneof![Just(0x08u8), Just(0), any::<u8>()];
    (
        (flags, any::<u16>(), 0usize..4),
        (0usize..3, 0usize..3, port),
        (vxlan_flags, any::<u32>()),
    )
        .prop_map(
            |((flags, sport, inner), (tag, words, dport), (vflags, vni))| {
                let mut tcp = [tcp_header(flags), vec![0xab; 16]].concat();
                tcp[0..2].copy_from_slice(&sport.to_be_bytes());
                let tagged = |tpid: u16, ip: &[u8]| {
                    let mut t = vec![0, 5, 0x08, 0x00];
                    t.extend_from_slice(ip);
                    ethernet(tpid, &t)
                };
                let v4 = ipv4_packet(6, 0, &[], &tcp);
                let inner_frame = match inner {
                    0 => ethernet(0x0800, &v4),
                    1 => ethernet(0x86dd, &ipv6_packet(6, &tcp)),
                    2 => tagged(0x8100, &v4),
                    _ => tagged(0x88a8, &v4),
                };
                let mut vx = vxlan(vni & 0xff_ffff, &inner_frame);
                vx[0] = vflags;
                let ip = ipv4_packet(17, 0, &vec![1; words * 4], &udp(dport, &vx));
                let frame = match tag {
                    0 => ethernet(0x0800, &ip),
                    1 => tagged(0x8100, &ip),
                    _ => tagged(0x88a8, &ip),
                };
                (frame, tag < 2 && inner < 3)
            },
        )
}

/// VXLAN on the standard port, on 8472 instead, or on both.
fn decap() -> impl Strategy<Value = Decap> {
    let on = |ports: &[u16]| Decap {
        vxlan: PortSet::new(ports).expect("within the bound"),
        ..Decap::STANDARD
    };
    proptest::sample::select(vec![Decap::STANDARD, on(&[8472]), on(&[4789, 8472])])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The VXLAN pre-check skips only what the full decode skips, with the
    /// same encapsulation and VNI; on the known layouts it skips every
    /// non-control segment on an unwanted port.
    #[test]
    fn vxlan_pre_check_agrees_with_full_decode(
        (frame, known) in vxlan_frame(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        decap in decap(),
    ) {
        let mut frame = frame;
        let pristine = edits.is_empty() && cut.is_none();
        for (at, byte) in edits {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        if let Some(cut) = cut {
            frame.truncate(cut.index(frame.len() + 1));
        }
        let lt = LinkType::ETHERNET;
        let ports = [40000u16];
        for wanted in [&Ports(&[]), &Ports(&ports)] {
            let mut encaps = Encaps::default();
            let full = decode_full(lt, &frame, wanted, &decap, &mut encaps);
            let pre = fast::vxlan_skipped(lt, &frame, wanted, &decap);
            if let Some(e) = pre {
                prop_assert_eq!(full, Ok(Decoded::Skipped(Skip::NotControl)));
                prop_assert_eq!(encaps, Encaps::one(e));
            }
            prop_assert_eq!(decode_frame(lt, &frame, wanted, &decap), (full, encaps));
            let skipped = full == Ok(Decoded::Skipped(Skip::NotControl));
            if pristine && known && skipped && encaps.outer().is_some() {
                prop_assert!(pre.is_some(), "a known layout decoded in full");
            }
            let plain = fast::vxlan_plain(lt, &frame, wanted, &decap);
            if let Some((d, e)) = plain {
                prop_assert_eq!(full, Ok(d));
                prop_assert_eq!(encaps, Encaps::one(e));
            }
            let control = matches!(full, Ok(Decoded::Control(_)));
            if pristine && known && control && encaps.outer().is_some() {
                prop_assert!(plain.is_some(), "a known layout's control segment decoded in full");
            }
        }
    }
}
