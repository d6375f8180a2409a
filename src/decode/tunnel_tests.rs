//! Encapsulations: one inner SYN wrapped in each, as the RFCs lay the
//! headers out; bounds, unconfigured ports, malformed headers.

use std::net::{IpAddr, Ipv4Addr};

use super::tests::{ethernet, ipv4_packet, ipv6_packet, tcp_header, Ports, DPORT, SPORT};
use super::*;

/// The inner frame's addresses (the outer ones are `tests::V4_SRC/DST`).
const IN_SRC: [u8; 4] = [10, 9, 9, 1];
const IN_DST: [u8; 4] = [10, 9, 9, 2];
const SYN: u8 = 0x02;

/// An inner IPv4 packet carrying a TCP header with `flags`.
pub(super) fn inner_ip(flags: u8) -> Vec<u8> {
    let mut p = ipv4_packet(6, 0, &[], &tcp_header(flags));
    p[12..16].copy_from_slice(&IN_SRC);
    p[16..20].copy_from_slice(&IN_DST);
    p
}

pub(super) fn inner_eth(flags: u8) -> Vec<u8> {
    ethernet(0x0800, &inner_ip(flags))
}

pub(super) fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = 50_000u16.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    [u, payload.to_vec()].concat()
}

pub(super) fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut h = vec![0x08, 0, 0, 0];
    h.extend_from_slice(&(vni << 8).to_be_bytes());
    [h, inner.to_vec()].concat()
}

fn geneve(vni: u32, options: &[u8], protocol: u16, inner: &[u8]) -> Vec<u8> {
    let mut h = vec![(options.len() / 4) as u8, 0];
    h.extend_from_slice(&protocol.to_be_bytes());
    h.extend_from_slice(&(vni << 8).to_be_bytes());
    [h, options.to_vec(), inner.to_vec()].concat()
}

/// GRE with the optional fields whose values are given.
pub(super) fn gre(
    checksum: bool,
    key: Option<u32>,
    seq: Option<u32>,
    protocol: u16,
    inner: &[u8],
) -> Vec<u8> {
    let flags =
        u16::from(checksum) << 15 | u16::from(key.is_some()) << 13 | u16::from(seq.is_some()) << 12;
    let mut h = flags.to_be_bytes().to_vec();
    h.extend_from_slice(&protocol.to_be_bytes());
    if checksum {
        h.extend_from_slice(&[0xab, 0xcd, 0, 0]);
    }
    for v in [key, seq].into_iter().flatten() {
        h.extend_from_slice(&v.to_be_bytes());
    }
    [h, inner.to_vec()].concat()
}

/// ERSPAN II (version 1) or III (version 2, with the platform subheader
/// when `o`) header for `session`.
pub(super) fn erspan(version: u8, session: u16, o: bool, inner: &[u8]) -> Vec<u8> {
    let mut h = vec![version << 4, 0];
    h.extend_from_slice(&(session & 0x3ff).to_be_bytes());
    h.extend_from_slice(&[0; 4]);
    if version == 2 {
        h.extend_from_slice(&[0, 0, 0, u8::from(o)]);
        if o {
            h.extend_from_slice(&[0x11; 8]);
        }
    }
    [h, inner.to_vec()].concat()
}

fn mpls(labels: &[u32], inner: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let bottom = u32::from(i + 1 == labels.len()) << 8;
        h.extend_from_slice(&(l << 12 | bottom | 64).to_be_bytes());
    }
    [h, inner.to_vec()].concat()
}

/// The outer Ethernet + IPv4 frame carrying `payload` as `protocol`.
pub(super) fn outer(protocol: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(0x0800, &ipv4_packet(protocol, 0, &[], payload))
}

fn decoded(frame: &[u8], decap: &Decap) -> (Result<Decoded, DecodeError>, Encaps) {
    decode_frame(LinkType::ETHERNET, frame, &ControlOnly, decap)
}

fn inner_syn(mirror: Option<Encap>) -> Result<Decoded, DecodeError> {
    Ok(Decoded::Control(Segment {
        src: IpAddr::V4(Ipv4Addr::from(IN_SRC)),
        dst: IpAddr::V4(Ipv4Addr::from(IN_DST)),
        src_port: SPORT,
        dst_port: DPORT,
        control: Control::Syn,
        flags: SYN,
        seq: 1,
        mirror,
    }))
}

fn encap(kind: EncapKind, session: Option<u32>) -> Encap {
    Encap { kind, session }
}

/// Every encapsulation: the inner SYN comes out with the inner addresses
/// and the outermost encapsulation as its mirror, and only the layers
/// opened are listed.
#[test]
fn each_encapsulation_yields_the_inner_segment() {
    use EncapKind::*;
    let eth = inner_eth(SYN);
    let ip = inner_ip(SYN);
    let cases: Vec<(&str, Vec<u8>, Vec<Encap>)> = vec![
        (
            "vxlan",
            outer(17, &udp(4789, &vxlan(77, &eth))),
            vec![encap(Vxlan, Some(77))],
        ),
        (
            "geneve, options",
            outer(
                17,
                &udp(
                    6081,
                    &geneve(5, &[[0, 1, 2, 1], [9; 4]].concat(), 0x6558, &eth),
                ),
            ),
            vec![encap(Geneve, Some(5))],
        ),
        (
            "geneve, ip",
            outer(17, &udp(6081, &geneve(6, &[], 0x0800, &ip))),
            vec![encap(Geneve, Some(6))],
        ),
        (
            "gre",
            outer(47, &gre(false, None, None, 0x0800, &ip)),
            vec![encap(Gre, None)],
        ),
        (
            "gre, checksum, key, sequence",
            outer(47, &gre(true, Some(9), Some(3), 0x0800, &ip)),
            vec![encap(Gre, Some(9))],
        ),
        (
            "gre over ipv6",
            ethernet(
                0x86dd,
                &ipv6_packet(47, &gre(false, Some(4), None, 0x0800, &ip)),
            ),
            vec![encap(Gre, Some(4))],
        ),
        (
            "gre-teb",
            outer(47, &gre(false, None, None, 0x6558, &eth)),
            vec![encap(GreTeb, None)],
        ),
        (
            "erspan i",
            outer(47, &gre(false, None, None, 0x88be, &eth)),
            vec![encap(ErspanI, None)],
        ),
        (
            "erspan ii",
            outer(
                47,
                &gre(false, None, Some(1), 0x88be, &erspan(1, 300, false, &eth)),
            ),
            vec![encap(ErspanII, Some(300))],
        ),
        (
            "erspan iii",
            outer(
                47,
                &gre(false, None, Some(1), 0x22eb, &erspan(2, 1023, false, &eth)),
            ),
            vec![encap(ErspanIII, Some(1023))],
        ),
        (
            "erspan iii, subheader",
            outer(
                47,
                &gre(false, None, None, 0x22eb, &erspan(2, 2, true, &eth)),
            ),
            vec![encap(ErspanIII, Some(2))],
        ),
        (
            "gre-in-udp",
            outer(17, &udp(4754, &gre(false, None, None, 0x0800, &ip))),
            vec![encap(GreInUdp, None)],
        ),
        (
            "mpls",
            ethernet(0x8847, &mpls(&[100, 200, 300], &ip)),
            vec![encap(Mpls, None)],
        ),
        ("4in4", outer(4, &ip), vec![encap(IpInIp, None)]),
        (
            "vlan inside vxlan",
            outer(
                17,
                &udp(
                    4789,
                    &vxlan(
                        1,
                        &ethernet(0x8100, &[[0, 7, 8, 0].to_vec(), ip.clone()].concat()),
                    ),
                ),
            ),
            vec![encap(Vxlan, Some(1))],
        ),
        (
            "mpls over gre inside vxlan",
            outer(
                17,
                &udp(
                    4789,
                    &vxlan(
                        3,
                        &ethernet(
                            0x0800,
                            &ipv4_packet(
                                47,
                                0,
                                &[],
                                &gre(false, None, None, 0x8847, &mpls(&[16], &ip)),
                            ),
                        ),
                    ),
                ),
            ),
            vec![encap(Vxlan, Some(3)), encap(Gre, None), encap(Mpls, None)],
        ),
    ];
    for (name, frame, layers) in cases {
        let (got, encaps) = decoded(&frame, &Decap::STANDARD);
        assert_eq!(got, inner_syn(layers.first().copied()), "{name}");
        assert_eq!(encaps.iter().copied().collect::<Vec<_>>(), layers, "{name}");
        // Every shorter capture of it is an error or a skip, never a panic
        // and never a segment.
        for len in 0..frame.len() {
            let (cut, _) = decoded(&frame[..len], &Decap::STANDARD);
            assert!(
                !matches!(cut, Ok(Decoded::Control(_))),
                "{name} cut to {len}"
            );
        }
    }
}

#[test]
fn nesting_is_bounded() {
    let mut frame = inner_ip(SYN);
    for _ in 0..MAX_ENCAPSULATIONS {
        frame = ipv4_packet(47, 0, &[], &gre(false, None, None, 0x0800, &frame));
    }
    let frame = ethernet(0x0800, &frame);
    assert!(matches!(
        decoded(&frame, &Decap::STANDARD).0,
        Ok(Decoded::Control(_))
    ));
    let deeper = outer(47, &gre(false, None, None, 0x0800, &frame[14..]));
    let (got, encaps) = decoded(&deeper, &Decap::STANDARD);
    assert_eq!(got.map_err(|e| e.reason()), Err("too_many_encapsulations"));
    assert_eq!(encaps.iter().count(), MAX_ENCAPSULATIONS);
}

#[test]
fn udp_ports_are_configurable_and_a_tunnel_elsewhere_is_named() {
    let frame = outer(17, &udp(8472, &vxlan(9, &inner_eth(SYN))));
    let (got, encaps) = decoded(&frame, &Decap::STANDARD);
    assert_eq!(got, Ok(Decoded::Skipped(Skip::UnconfiguredTunnel)));
    assert_eq!(encaps.unconfigured, Some((EncapKind::Vxlan, 8472)));
    assert_eq!(encaps.outer(), None);
    let linux = Decap {
        vxlan: PortSet::new(&[4789, 8472]).expect("two ports"),
        ..Decap::STANDARD
    };
    assert_eq!(
        decoded(&frame, &linux).0,
        inner_syn(Some(encap(EncapKind::Vxlan, Some(9))))
    );
    // With no VXLAN port, the standard one is named too.
    let none = Decap {
        vxlan: PortSet::NONE,
        ..Decap::STANDARD
    };
    let standard = outer(17, &udp(4789, &vxlan(9, &inner_eth(SYN))));
    assert_eq!(
        decoded(&standard, &none).1.unconfigured,
        Some((EncapKind::Vxlan, 4789))
    );
    let geneve_elsewhere = outer(17, &udp(7000, &geneve(1, &[], 0x6558, &inner_eth(SYN))));
    assert_eq!(
        decoded(&geneve_elsewhere, &Decap::STANDARD).1.unconfigured,
        Some((EncapKind::Geneve, 7000))
    );
    // Plain UDP (DNS) is just not TCP.
    let dns = outer(17, &udp(53, &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    assert_eq!(
        decoded(&dns, &Decap::STANDARD),
        (Ok(Decoded::Skipped(Skip::NotTcp)), Encaps::default())
    );
    assert!(PortSet::new(&[1; MAX_TUNNEL_PORTS + 1]).is_none());
}

#[test]
fn malformed_encapsulations_are_counted_by_reason() {
    let eth = inner_eth(SYN);
    let cases = [
        (
            outer(
                17,
                &udp(
                    6081,
                    &[[0x40].to_vec(), geneve(1, &[], 0x6558, &eth)[1..].to_vec()].concat(),
                ),
            ),
            "invalid_geneve",
        ),
        // An option claiming more words than the options length holds.
        (
            outer(
                17,
                &udp(6081, &geneve(1, &[0, 1, 2, 5, 0, 0, 0, 0], 0x6558, &eth)),
            ),
            "invalid_geneve",
        ),
        (
            outer(
                47,
                &gre(false, None, Some(1), 0x88be, &erspan(2, 1, false, &eth)),
            ),
            "invalid_erspan",
        ),
        (outer(47, &[0x40, 0, 0x08, 0, 0, 0, 0, 0]), "invalid_gre"),
        (outer(47, &[0x20, 0, 0x08, 0, 0, 0]), "truncated_gre"),
        (outer(17, &udp(4789, &[8, 0, 0, 0, 0])), "truncated_vxlan"),
        (
            ethernet(0x8847, &mpls(&[1; MAX_MPLS_LABELS + 1], &inner_ip(SYN))),
            "invalid_mpls",
        ),
        (ethernet(0x8847, &[0, 0, 1]), "truncated_mpls"),
    ];
    for (frame, reason) in cases {
        let got = decoded(&frame, &Decap::STANDARD).0;
        assert_eq!(got.map_err(|e| e.reason()), Err(reason), "{frame:02x?}");
    }
}

#[test]
fn inner_non_control_segments_are_skipped_unless_wanted() {
    let ack = outer(17, &udp(4789, &vxlan(1, &inner_eth(0x10))));
    assert_eq!(
        decoded(&ack, &Decap::STANDARD).0,
        Ok(Decoded::Skipped(Skip::NotControl))
    );
    let (got, _) = decode_frame(LinkType::ETHERNET, &ack, &Ports(&[DPORT]), &Decap::STANDARD);
    assert!(matches!(got, Ok(Decoded::Control(s)) if s.control == Control::Ack));
}

#[test]
fn gre_version_1_and_unknown_payloads_are_skipped() {
    let pptp = outer(47, &[0x30, 0x01, 0x88, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        decoded(&pptp, &Decap::STANDARD).0,
        Ok(Decoded::Skipped(Skip::NotIp))
    );
    let arp_in_teb = outer(
        47,
        &gre(false, None, None, 0x6558, &ethernet(0x0806, &[0; 28])),
    );
    let (got, encaps) = decoded(&arp_in_teb, &Decap::STANDARD);
    assert_eq!(got, Ok(Decoded::Skipped(Skip::NotIp)));
    assert_eq!(encaps.outer(), Some(encap(EncapKind::GreTeb, None)));
    let udp_in_gre = outer(
        47,
        &gre(
            false,
            None,
            None,
            0x0800,
            &ipv4_packet(17, 0, &[], &udp(53, &[0; 4])),
        ),
    );
    assert_eq!(
        decoded(&udp_in_gre, &Decap::STANDARD).0,
        Ok(Decoded::Skipped(Skip::NotTcp))
    );
}
