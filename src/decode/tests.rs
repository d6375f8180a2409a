//! Unit tests: one frame per layout and per rule, plus truncation loops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, PacketBuilderStep, TcpHeader};

use super::*;

pub(super) const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub(super) const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub(super) const V4_SRC: [u8; 4] = [10, 0, 0, 1];
pub(super) const V4_DST: [u8; 4] = [10, 0, 0, 2];
pub(super) const V6_SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(super) const V6_DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub(super) const SPORT: u16 = 40000;
pub(super) const DPORT: u16 = 443;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_RST: u8 = 0x04;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;

pub(super) fn write(builder: PacketBuilderStep<TcpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("builder writes");
    out
}

pub(super) fn eth_v4() -> PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(V4_SRC, V4_DST, 64)
}

pub(super) fn eth_v6() -> PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(V6_SRC, V6_DST, 64)
}

/// A 20-byte TCP header with the given flags byte.
pub(super) fn tcp_header(flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&SPORT.to_be_bytes());
    h[2..4].copy_from_slice(&DPORT.to_be_bytes());
    h[7] = 1; // sequence number 1, as the builder frames below
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) followed by `payload`.
pub(super) fn ipv4_packet(protocol: u8, frag: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x40 | (header_len / 4) as u8;
    p[2..4].copy_from_slice(&((header_len + payload.len()) as u16).to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&V4_SRC);
    p[16..20].copy_from_slice(&V4_DST);
    p.extend_from_slice(options);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 header whose next header is `next`, followed by `payload`.
pub(super) fn ipv6_packet(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&V6_SRC);
    p[24..40].copy_from_slice(&V6_DST);
    p.extend_from_slice(payload);
    p
}

pub(super) fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6];
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&protocol.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = protocol.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn with_prefix(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    [prefix, payload].concat()
}

fn v4(flags: u8) -> Vec<u8> {
    ipv4_packet(6, 0, &[], &tcp_header(flags))
}

fn v6(flags: u8) -> Vec<u8> {
    ipv6_packet(6, &tcp_header(flags))
}

fn seg_v4(control: Control, flags: u8) -> Decoded {
    Decoded::Control(Segment {
        src: IpAddr::V4(Ipv4Addr::from(V4_SRC)),
        dst: IpAddr::V4(Ipv4Addr::from(V4_DST)),
        src_port: SPORT,
        dst_port: DPORT,
        control,
        flags,
        seq: 1,
        mirror: None,
    })
}

fn seg_v6(control: Control, flags: u8) -> Decoded {
    Decoded::Control(Segment {
        src: IpAddr::V6(Ipv6Addr::from(V6_SRC)),
        dst: IpAddr::V6(Ipv6Addr::from(V6_DST)),
        src_port: SPORT,
        dst_port: DPORT,
        control,
        flags,
        seq: 1,
        mirror: None,
    })
}

fn skipped(skip: Skip) -> Result<Decoded, DecodeError> {
    Ok(Decoded::Skipped(skip))
}

fn truncated_layer(r: Result<Decoded, DecodeError>) -> Option<Layer> {
    match r {
        Err(DecodeError::Truncated { layer, needed, got }) => {
            assert!(got < needed, "{needed} > {got}");
            Some(layer)
        }
        _ => None,
    }
}

#[test]
fn control_classification_follows_flag_precedence() {
    let cases = [
        (TCP_SYN, Some(Control::Syn)),
        (TCP_SYN | 0xc0, Some(Control::Syn)), // ECE+CWR ride along
        (TCP_SYN | TCP_ACK, Some(Control::SynAck)),
        (TCP_RST, Some(Control::Rst)),
        (TCP_RST | TCP_ACK, Some(Control::Rst)),
        (TCP_RST | TCP_FIN, Some(Control::Rst)),
        (TCP_FIN | TCP_ACK, Some(Control::Fin)),
        (TCP_FIN, Some(Control::Fin)),
        (TCP_ACK, None),
        (TCP_ACK | TCP_PSH, None),
        (0, None),
    ];
    for (flags, want) in cases {
        let frame = ethernet(0x0800, &v4(flags));
        let want = match want {
            Some(control) => Ok(seg_v4(control, flags)),
            None => skipped(Skip::NotControl),
        };
        assert_eq!(
            decode(LinkType::ETHERNET, &frame),
            want,
            "flags {flags:#04x}"
        );
    }
}

#[test]
fn builder_frames_decode() {
    let syn = write(eth_v4().tcp(SPORT, DPORT, 1, 1000).syn(), &[]);
    assert_eq!(
        decode(LinkType::ETHERNET, &syn),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    let synack = write(eth_v6().tcp(SPORT, DPORT, 1, 1000).syn().ack(5), &[]);
    assert_eq!(
        decode(LinkType::ETHERNET, &synack),
        Ok(seg_v6(Control::SynAck, TCP_SYN | TCP_ACK))
    );
    let rst = write(eth_v4().tcp(SPORT, DPORT, 1, 0).rst(), &[]);
    assert_eq!(
        decode(LinkType::ETHERNET, &rst),
        Ok(seg_v4(Control::Rst, TCP_RST))
    );
    let fin = write(eth_v6().tcp(SPORT, DPORT, 1, 0).fin().ack(9), &[1, 2, 3]);
    assert_eq!(
        decode(LinkType::ETHERNET, &fin),
        Ok(seg_v6(Control::Fin, TCP_FIN | TCP_ACK))
    );
    let ack = write(eth_v4().tcp(SPORT, DPORT, 1, 0).ack(9), &[0; 100]);
    assert_eq!(decode(LinkType::ETHERNET, &ack), skipped(Skip::NotControl));
    let raw = write(
        PacketBuilder::ipv4(V4_SRC, V4_DST, 1)
            .tcp(SPORT, DPORT, 1, 0)
            .syn(),
        &[],
    );
    assert_eq!(
        decode(LinkType::RAW, &raw),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
}

#[test]
fn vlan_tags_are_skipped_up_to_the_limit() {
    let vid = |v: u16| v.try_into().expect("valid vlan id");
    let single = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(vid(10))
        .ipv4(V4_SRC, V4_DST, 64)
        .tcp(SPORT, DPORT, 1, 0)
        .syn();
    assert_eq!(
        decode(LinkType::ETHERNET, &write(single, &[])),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    let double = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .double_vlan(vid(10), vid(20))
        .ipv6(V6_SRC, V6_DST, 64)
        .tcp(SPORT, DPORT, 1, 0)
        .syn();
    assert_eq!(
        decode(LinkType::ETHERNET, &write(double, &[])),
        Ok(seg_v6(Control::Syn, TCP_SYN))
    );
    // Hand-stacked tags of every accepted type, innermost 802.1Q.
    for tpid in [0x88a8u16, 0x9100, 0x9200, 0x8100] {
        for tags in 1..=MAX_VLAN_TAGS + 1 {
            let mut payload = Vec::new();
            for i in 0..tags {
                let next = if i + 1 == tags { 0x0800 } else { 0x8100 };
                payload.extend_from_slice(&[0, 10]);
                payload.extend_from_slice(&u16::to_be_bytes(next));
            }
            payload.extend_from_slice(&v4(TCP_SYN));
            let got = decode(LinkType::ETHERNET, &ethernet(tpid, &payload));
            if tags <= MAX_VLAN_TAGS {
                assert_eq!(got, Ok(seg_v4(Control::Syn, TCP_SYN)), "{tpid:#x} x{tags}");
            } else {
                assert_eq!(got, Err(DecodeError::TooManyVlanTags { max: 8 }));
            }
        }
    }
}

#[test]
fn link_types_find_the_network_header() {
    let syn4 = Ok(seg_v4(Control::Syn, TCP_SYN));
    let syn6 = Ok(seg_v6(Control::Syn, TCP_SYN));
    let cases: Vec<(LinkType, Vec<u8>, Result<Decoded, DecodeError>)> = vec![
        (LinkType::LINUX_SLL, sll(0x0800, &v4(TCP_SYN)), syn4),
        (LinkType::LINUX_SLL, sll(0x86dd, &v6(TCP_SYN)), syn6),
        (
            LinkType::LINUX_SLL,
            sll(0x0806, &[0; 28]),
            skipped(Skip::NotIp),
        ),
        (LinkType::LINUX_SLL2, sll2(0x0800, &v4(TCP_SYN)), syn4),
        (LinkType::LINUX_SLL2, sll2(0x86dd, &v6(TCP_SYN)), syn6),
        (
            LinkType::NULL,
            with_prefix(&[2, 0, 0, 0], &v4(TCP_SYN)),
            syn4,
        ),
        (
            LinkType::NULL,
            with_prefix(&[0, 0, 0, 2], &v4(TCP_SYN)),
            syn4,
        ),
        (
            LinkType::NULL,
            with_prefix(&[30, 0, 0, 0], &v6(TCP_SYN)),
            syn6,
        ),
        (
            LinkType::NULL,
            with_prefix(&[0, 0, 0, 24], &v6(TCP_SYN)),
            syn6,
        ),
        (
            LinkType::NULL,
            with_prefix(&[28, 0, 0, 0], &v6(TCP_SYN)),
            syn6,
        ),
        (
            LinkType::NULL,
            with_prefix(&[10, 0, 0, 0], &v6(TCP_SYN)),
            syn6,
        ),
        (
            LinkType::NULL,
            with_prefix(&[7, 0, 0, 0], &v4(TCP_SYN)),
            skipped(Skip::NotIp),
        ),
        (
            LinkType::LOOP,
            with_prefix(&[0, 0, 0, 2], &v4(TCP_SYN)),
            syn4,
        ),
        (
            LinkType::LOOP,
            with_prefix(&[0, 0, 0, 24], &v6(TCP_SYN)),
            syn6,
        ),
        (
            LinkType::LOOP,
            with_prefix(&[2, 0, 0, 0], &v4(TCP_SYN)),
            skipped(Skip::NotIp),
        ),
        (LinkType::RAW, v4(TCP_SYN), syn4),
        (LinkType::RAW, v6(TCP_SYN), syn6),
        (LinkType::RAW_BSD, v4(TCP_SYN), syn4),
        (LinkType::RAW_OPENBSD, v6(TCP_SYN), syn6),
        (LinkType::IPV4, v4(TCP_SYN), syn4),
        (LinkType::IPV6, v6(TCP_SYN), syn6),
        (
            LinkType::IPV4,
            v6(TCP_SYN),
            Err(DecodeError::Invalid {
                layer: Layer::Ipv4,
                what: "version is not 4",
            }),
        ),
        (
            LinkType::RAW,
            with_prefix(&[0x50], &v4(TCP_SYN)),
            Err(DecodeError::Invalid {
                layer: Layer::Link,
                what: "raw IP version is neither 4 nor 6",
            }),
        ),
        (
            LinkType(147),
            v4(TCP_SYN),
            Err(DecodeError::UnsupportedLinkType { linktype: 147 }),
        ),
    ];
    for (linktype, frame, want) in cases {
        assert_eq!(decode(linktype, &frame), want, "{linktype:?} {frame:02x?}");
    }
}

#[test]
fn ipv4_rules() {
    let eth = |p: Vec<u8>| ethernet(0x0800, &p);
    let syn = tcp_header(TCP_SYN);
    let invalid = |what| {
        Err(DecodeError::Invalid {
            layer: Layer::Ipv4,
            what,
        })
    };
    // Options of every length are skipped.
    for words in 1..=10 {
        let frame = eth(ipv4_packet(6, 0, &vec![1; words * 4], &syn));
        assert_eq!(
            decode(LinkType::ETHERNET, &frame),
            Ok(seg_v4(Control::Syn, TCP_SYN))
        );
    }
    // First fragment (MF, offset 0) is decoded; later ones are skipped.
    let first = eth(ipv4_packet(6, 0x2000, &[], &syn));
    assert_eq!(
        decode(LinkType::ETHERNET, &first),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    for frag in [0x0001, 0x2001, 0x1fff, 0x0100] {
        let later = eth(ipv4_packet(6, frag, &[], &syn));
        assert_eq!(decode(LinkType::ETHERNET, &later), skipped(Skip::Fragment));
    }
    // DF is not a fragment.
    let df = eth(ipv4_packet(6, 0x4000, &[], &syn));
    assert_eq!(
        decode(LinkType::ETHERNET, &df),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    // Bad IHL, bad version, total length below the header.
    let mut bad_ihl = ipv4_packet(6, 0, &[], &syn);
    bad_ihl[0] = 0x44;
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(bad_ihl)),
        invalid("header length (IHL) below 5")
    );
    let mut bad_version = ipv4_packet(6, 0, &[], &syn);
    bad_version[0] = 0x65;
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(bad_version)),
        invalid("version is not 4")
    );
    let mut short_total = ipv4_packet(6, 0, &[], &syn);
    short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(short_total)),
        invalid("total length below header length")
    );
    // Total length 0 (offload): use what was captured.
    let mut tso = ipv4_packet(6, 0, &[], &syn);
    tso[2..4].copy_from_slice(&[0, 0]);
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(tso)),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    // A total length that ends inside the TCP header cuts it.
    let mut cut = ipv4_packet(6, 0, &[], &syn);
    cut[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(cut)),
        Err(DecodeError::Truncated {
            layer: Layer::Tcp,
            needed: 20,
            got: 10
        })
    );
    // Snaplen cut after the TCP header, and link padding after the packet.
    let mut long = ipv4_packet(6, 0, &[], &[syn.clone(), vec![0; 1000]].concat());
    long.truncate(40);
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(long)),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    let padded = [eth(ipv4_packet(6, 0, &[], &syn)), vec![0xff; 6]].concat();
    assert_eq!(
        decode(LinkType::ETHERNET, &padded),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    // Not TCP.
    let udp = eth(ipv4_packet(17, 0, &[], &[0; 8]));
    assert_eq!(decode(LinkType::ETHERNET, &udp), skipped(Skip::NotTcp));
}

/// An extension header of `len` bytes (multiple of 8) pointing at `next`.
fn ext(next: u8, len: usize) -> Vec<u8> {
    let mut h = vec![0u8; len];
    h[0] = next;
    h[1] = (len / 8 - 1) as u8;
    h
}

fn fragment_header(next: u8, offset_field: u16) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&offset_field.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 42]);
    h
}

#[test]
fn ipv6_extension_headers() {
    let eth = |p: Vec<u8>| ethernet(0x86dd, &p);
    let syn = tcp_header(TCP_SYN);
    let ok = Ok(seg_v6(Control::Syn, TCP_SYN));
    // Hop-by-hop, then a first fragment (M set), then TCP.
    let first = [ext(44, 8), fragment_header(6, 0x0001), syn.clone()].concat();
    assert_eq!(decode(LinkType::ETHERNET, &eth(ipv6_packet(0, &first))), ok);
    // Hop-by-hop, then a later fragment.
    let later = [ext(44, 8), fragment_header(6, 0x0008), syn.clone()].concat();
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(ipv6_packet(0, &later))),
        skipped(Skip::Fragment)
    );
    // Routing, destination options, mobility, HIP, shim6, then TCP.
    let chain = [
        ext(60, 24),
        ext(135, 8),
        ext(139, 16),
        ext(140, 8),
        ext(6, 8),
        syn.clone(),
    ]
    .concat();
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(ipv6_packet(43, &chain))),
        ok
    );
    // AH counts its length in 4-byte units, minus 2: 24 bytes here.
    let mut ah = vec![6, 4];
    ah.extend_from_slice(&[0; 22]);
    let ah = [ah, syn.clone()].concat();
    assert_eq!(decode(LinkType::ETHERNET, &eth(ipv6_packet(51, &ah))), ok);
    // ESP, no next header, UDP.
    for next in [50, 59, 17] {
        let frame = eth(ipv6_packet(next, &syn));
        assert_eq!(decode(LinkType::ETHERNET, &frame), skipped(Skip::NotTcp));
    }
    // A loop of destination options is cut off.
    let many: Vec<u8> = (0..=MAX_IPV6_EXTENSIONS).flat_map(|_| ext(60, 8)).collect();
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(ipv6_packet(60, &many))),
        Err(DecodeError::Invalid {
            layer: Layer::Ipv6Extension,
            what: "too many extension headers"
        })
    );
    // Bad version.
    let mut bad = ipv6_packet(6, &syn);
    bad[0] = 0x40;
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(bad)),
        Err(DecodeError::Invalid {
            layer: Layer::Ipv6,
            what: "version is not 6"
        })
    );
    // The payload length bounds the walk: an extension beyond it is cut.
    let mut short = ipv6_packet(0, &[ext(6, 8), syn.clone()].concat());
    short[4..6].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(
        truncated_layer(decode(LinkType::ETHERNET, &eth(short))),
        Some(Layer::Ipv6Extension)
    );
}

fn pppoe(ppp_protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x11, 0, 0x0f, 0x07];
    p.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    p.extend_from_slice(&ppp_protocol.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn snap(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0xaa, 0xaa, 0x03, 0, 0, 0];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    ethernet(p.len() as u16, &p)
}

#[test]
fn pppoe_and_snap_are_opened() {
    let qinq_pppoe = [
        vec![0, 1, 0x81, 0x00, 0, 2, 0x88, 0x64],
        pppoe(0x0021, &v4(TCP_SYN)),
    ]
    .concat();
    let frame = ethernet(0x88a8, &qinq_pppoe);
    assert_eq!(
        decode(LinkType::ETHERNET, &frame),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    let frame = ethernet(0x8864, &pppoe(0x0057, &v6(TCP_SYN)));
    assert_eq!(
        decode(LinkType::ETHERNET, &frame),
        Ok(seg_v6(Control::Syn, TCP_SYN))
    );
    let lcp = ethernet(0x8864, &pppoe(0xc021, &[1, 2, 3, 4]));
    assert_eq!(decode(LinkType::ETHERNET, &lcp), skipped(Skip::NotIp));
    let frame = snap(0x0800, &v4(TCP_SYN));
    assert_eq!(
        decode(LinkType::ETHERNET, &frame),
        Ok(seg_v4(Control::Syn, TCP_SYN))
    );
    let stp = ethernet(38, &[0x42, 0x42, 0x03, 0, 0, 0]);
    assert_eq!(decode(LinkType::ETHERNET, &stp), skipped(Skip::NotIp));
    let mut other_oui = snap(0x0800, &v4(TCP_SYN));
    other_oui[17] = 0x0c;
    assert_eq!(decode(LinkType::ETHERNET, &other_oui), skipped(Skip::NotIp));
    use Layer::*;
    let frame = ethernet(0x8864, &pppoe(0x0021, &v4(TCP_SYN)));
    assert_truncations(
        LinkType::ETHERNET,
        &frame,
        &[(22, Link), (42, Ipv4), (62, Tcp)],
    );
    let frame = snap(0x86dd, &v6(TCP_SYN));
    assert_truncations(
        LinkType::ETHERNET,
        &frame,
        &[(22, Link), (62, Ipv6), (82, Tcp)],
    );
}

#[test]
fn non_ip_and_non_tcp_are_skipped() {
    let arp = ethernet(0x0806, &[0; 28]);
    assert_eq!(decode(LinkType::ETHERNET, &arp), skipped(Skip::NotIp));
    let llc = ethernet(0x0026, &[0x42; 38]);
    assert_eq!(decode(LinkType::ETHERNET, &llc), skipped(Skip::NotIp));
    let builder = eth_v4().udp(53, 53);
    let mut udp = Vec::new();
    builder.write(&mut udp, &[0; 12]).expect("builder writes");
    assert_eq!(decode(LinkType::ETHERNET, &udp), skipped(Skip::NotTcp));
    let mut bad_offset = tcp_header(TCP_SYN);
    bad_offset[12] = 4 << 4;
    assert_eq!(
        decode(
            LinkType::ETHERNET,
            &ethernet(0x0800, &ipv4_packet(6, 0, &[], &bad_offset))
        ),
        Err(DecodeError::Invalid {
            layer: Layer::Tcp,
            what: "data offset below 5"
        })
    );
}

/// Every prefix of a valid frame fails with `Truncated` at the layer the
/// cut falls in; the whole frame decodes.
fn assert_truncations(linktype: LinkType, frame: &[u8], layers: &[(usize, Layer)]) {
    let mut start = 0;
    for &(end, layer) in layers {
        for len in start..end {
            let got = decode(linktype, frame.get(..len).unwrap_or_default());
            assert_eq!(
                truncated_layer(got),
                Some(layer),
                "{linktype:?} len {len}: {got:?}"
            );
        }
        start = end;
    }
    assert_eq!(start, frame.len());
    assert!(matches!(decode(linktype, frame), Ok(Decoded::Control(_))));
}

#[test]
fn truncation_names_the_layer() {
    use Layer::*;
    let v4_syn = ethernet(0x0800, &v4(TCP_SYN));
    assert_truncations(
        LinkType::ETHERNET,
        &v4_syn,
        &[(14, Link), (34, Ipv4), (54, Tcp)],
    );
    let opts = ethernet(0x0800, &ipv4_packet(6, 0, &[1; 8], &tcp_header(TCP_SYN)));
    assert_truncations(
        LinkType::ETHERNET,
        &opts,
        &[(14, Link), (42, Ipv4), (62, Tcp)],
    );
    let vlan = write(
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .double_vlan(1.try_into().expect("vid"), 2.try_into().expect("vid"))
            .ipv6(V6_SRC, V6_DST, 1)
            .tcp(1, 2, 3, 4)
            .syn(),
        &[],
    );
    assert_truncations(
        LinkType::ETHERNET,
        &vlan,
        &[(14, Link), (22, Vlan), (62, Ipv6), (82, Tcp)],
    );
    let ext6 = ethernet(
        0x86dd,
        &ipv6_packet(
            0,
            &[ext(44, 16), fragment_header(6, 1), tcp_header(TCP_SYN)].concat(),
        ),
    );
    assert_truncations(
        LinkType::ETHERNET,
        &ext6,
        &[(14, Link), (54, Ipv6), (78, Ipv6Extension), (98, Tcp)],
    );
    let sll_frame = sll(0x0800, &v4(TCP_RST));
    assert_truncations(
        LinkType::LINUX_SLL,
        &sll_frame,
        &[(16, Link), (36, Ipv4), (56, Tcp)],
    );
    let sll2_frame = sll2(0x86dd, &v6(TCP_FIN));
    assert_truncations(
        LinkType::LINUX_SLL2,
        &sll2_frame,
        &[(20, Link), (60, Ipv6), (80, Tcp)],
    );
    let null = with_prefix(&[2, 0, 0, 0], &v4(TCP_SYN));
    assert_truncations(LinkType::NULL, &null, &[(4, Link), (24, Ipv4), (44, Tcp)]);
    let raw = v6(TCP_SYN);
    assert_truncations(LinkType::RAW, &raw, &[(1, Link), (40, Ipv6), (60, Tcp)]);
    assert_truncations(LinkType::IPV4, &v4(TCP_SYN), &[(20, Ipv4), (40, Tcp)]);
}

#[test]
fn fast_path_takes_the_common_non_control_frames() {
    let ack = |b: PacketBuilderStep<TcpHeader>| write(b.ack(1), &[0; 64]);
    let vid = 7.try_into().expect("vid");
    let frames = [
        (LinkType::ETHERNET, ack(eth_v4().tcp(1, 2, 3, 4))),
        (LinkType::ETHERNET, ack(eth_v6().tcp(1, 2, 3, 4))),
        (
            LinkType::ETHERNET,
            ack(PacketBuilder::ethernet2(MAC_A, MAC_B)
                .single_vlan(vid)
                .ipv4(V4_SRC, V4_DST, 1)
                .tcp(1, 2, 3, 4)),
        ),
        (LinkType::LINUX_SLL, sll(0x0800, &v4(TCP_ACK))),
        (LinkType::LINUX_SLL2, sll2(0x86dd, &v6(TCP_ACK))),
        (LinkType::RAW, v4(TCP_ACK | TCP_PSH)),
        (LinkType::RAW_BSD, v6(TCP_ACK)),
        (
            LinkType::ETHERNET,
            ethernet(0x0800, &ipv4_packet(6, 0, &[1; 12], &tcp_header(TCP_ACK))),
        ),
    ];
    for (linktype, frame) in frames {
        assert!(
            fast::is_skipped(linktype, &frame, &ControlOnly),
            "{linktype:?}"
        );
        assert_eq!(
            full(linktype, &frame, &ControlOnly),
            skipped(Skip::NotControl)
        );
        // Wanted ports go the full way and come back as ACK segments.
        assert!(!fast::is_skipped(linktype, &frame, &Every));
        assert!(matches!(
            decode_wanting(linktype, &frame, &Every),
            Ok(Decoded::Control(Segment {
                control: Control::Ack,
                ..
            }))
        ));
    }
    // Control segments always go the full way.
    assert!(!fast::is_skipped(
        LinkType::ETHERNET,
        &ethernet(0x0800, &v4(TCP_SYN)),
        &ControlOnly
    ));
}

/// Wants every segment.
struct Every;

impl Wanted for Every {
    fn wants(&self, _: &RawTuple<'_>) -> bool {
        true
    }
}

/// Wants the segments that have one of these ports at either end.
pub(super) struct Ports<'a>(pub &'a [u16]);

impl Wanted for Ports<'_> {
    fn wants(&self, t: &RawTuple<'_>) -> bool {
        self.0.contains(&t.src_port) || self.0.contains(&t.dst_port)
    }
}

#[test]
fn syn_with_rst_or_fin_is_a_counted_error_not_an_attempt() {
    for (flags, reason) in [
        (TCP_SYN | TCP_RST, "tcp_syn_rst"),
        (TCP_SYN | TCP_RST | TCP_ACK, "tcp_syn_rst"),
        (TCP_SYN | TCP_FIN, "tcp_syn_fin"),
        (TCP_SYN | TCP_FIN | TCP_ACK, "tcp_syn_fin"),
    ] {
        let got = decode(LinkType::ETHERNET, &ethernet(0x0800, &v4(flags)));
        assert_eq!(got.map_err(|e| e.reason()), Err(reason), "{flags:#04x}");
    }
}

#[test]
fn reasons_are_bounded_labels() {
    let errors = [
        (
            DecodeError::UnsupportedLinkType { linktype: 9 },
            "unsupported_linktype",
        ),
        (
            DecodeError::Truncated {
                layer: Layer::Ipv6Extension,
                needed: 8,
                got: 2,
            },
            "truncated_ipv6_ext",
        ),
        (
            DecodeError::Invalid {
                layer: Layer::Tcp,
                what: "data offset below 5",
            },
            "invalid_tcp",
        ),
        (
            DecodeError::TooManyVlanTags { max: 8 },
            "too_many_vlan_tags",
        ),
        (DecodeError::InvalidTimestamp, "invalid_timestamp"),
    ];
    for (error, reason) in errors {
        assert_eq!(error.reason(), reason);
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn either_way_hash_is_the_same_both_ways_and_differs_by_port() {
    let (a, b) = ([192u8, 0, 2, 1], [192u8, 0, 2, 2]);
    let t = |s: &[u8; 4], d: &[u8; 4], sp, dp| {
        RawTuple {
            src: s,
            dst: d,
            src_port: sp,
            dst_port: dp,
        }
        .either_way_hash()
    };
    assert_eq!(t(&a, &b, 40000, 443), t(&b, &a, 443, 40000));
    assert_ne!(t(&a, &b, 40000, 443), t(&a, &b, 40001, 443));
}
