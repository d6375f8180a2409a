//! The pre-check: most captured TCP segments are data or pure ACKs, and the
//! pipeline only wants control segments. For the common layouts (Ethernet
//! with at most one 802.1Q tag, Linux SLL/SLL2, raw IP; unfragmented IPv4,
//! options allowed; IPv6 with TCP as the next header) it reads the TCP flags
//! at a computed offset with a few bounds-checked reads.
//!
//! A mirror session's VXLAN (outer Ethernet with at most one 802.1Q tag,
//! IPv4, UDP to a configured VXLAN port) around one of those layouts gets
//! the same treatment ([`vxlan_skipped`]).
//!
//! Invariant (tested by proptest): [`is_skipped`] returns `true`, and
//! [`vxlan_skipped`] an encapsulation, only when the full decode would
//! return `Ok(Skipped(NotControl))` (having opened that encapsulation); for
//! anything else, including every error, they return `false` or `None` and
//! the caller defers to the full decode. [`plain`] returns `Some` only with
//! what the full decode returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bytes::{array, be16, u8_at};
use super::ip::{IPV4_MIN_LEN, IPV6_LEN, PROTO_TCP};
use super::link::{
    ETHERNET_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, SLL2_LEN, SLL_LEN, VLAN_TAG_LEN,
};
use super::segment::{Control, Decoded, Segment, Skip};
use super::tcp::{bad_flags, control, CONTROL_FLAGS, TCP_MIN_LEN};
use super::tunnel::{Decap, Encap, EncapKind, PROTO_UDP, UDP_LEN, VXLAN_FLAG_VNI, VXLAN_LEN};
use super::{RawTuple, Wanted};
use crate::frame::LinkType;

/// A non-control segment on ports the caller does not want.
#[inline(always)]
pub(super) fn is_skipped(linktype: LinkType, data: &[u8], wanted: &impl Wanted) -> bool {
    let Some((src, dst, tcp)) = tcp_header(linktype, data) else {
        return false;
    };
    tcp[13] & CONTROL_FLAGS == 0
        && !wanted.wants(&RawTuple {
            src,
            dst,
            src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        })
}

/// A frame of the pre-check's layouts decoded at its fixed offsets, as the
/// full decode would (control packets are most of the frames the pre-check
/// declines, and the full decode walks every layer again to reach the same
/// header); `None` for anything else, errors included, which the full
/// decode reports.
#[inline]
pub(super) fn plain(linktype: LinkType, data: &[u8], wanted: &impl Wanted) -> Option<Decoded> {
    let (src, dst, tcp) = tcp_header(linktype, data)?;
    let flags = tcp[13];
    if bad_flags(flags).is_some() {
        return None;
    }
    let tuple = RawTuple {
        src,
        dst,
        src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
    };
    let control = match control(flags) {
        Some(c) => c,
        None if wanted.wants(&tuple) => Control::Ack,
        None => return Some(Decoded::Skipped(Skip::NotControl)),
    };
    Some(Decoded::Control(Segment {
        src: address(src)?,
        dst: address(dst)?,
        src_port: tuple.src_port,
        dst_port: tuple.dst_port,
        control,
        flags,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        mirror: None,
    }))
}

/// An address of 4 or 16 bytes, as [`tcp_header`] returns them.
#[inline]
fn address(b: &[u8]) -> Option<IpAddr> {
    Some(match b.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)),
    })
}

/// A non-control segment on ports the caller does not want, inside VXLAN
/// on one of `decap`'s ports: the encapsulation the full decode opens
/// (its VNI as the session), for the caller to count as that decode would.
#[inline(always)]
pub(super) fn vxlan_skipped(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
) -> Option<Encap> {
    // Most frames that come here are plain control segments: out after two
    // reads (Ethernet type, IPv4 protocol), the rest checked in full below.
    if linktype != LinkType::ETHERNET {
        return None;
    }
    let protocol_at = match be16(data, 12)? {
        ETHERTYPE_IPV4 => ETHERNET_LEN + 9,
        ETHERTYPE_VLAN => ETHERNET_LEN + VLAN_TAG_LEN + 9,
        _ => return None,
    };
    if u8_at(data, protocol_at)? != PROTO_UDP {
        return None;
    }
    vxlan_inner_skipped(data, wanted, decap)
}

#[inline(never)]
fn vxlan_inner_skipped(data: &[u8], wanted: &impl Wanted, decap: &Decap) -> Option<Encap> {
    let (encap, inner) = vxlan_inner(data, decap)?;
    is_skipped(LinkType::ETHERNET, inner, wanted).then_some(encap)
}

/// A control segment (or a wanted one) in a mirror session's VXLAN of the
/// layouts [`vxlan_skipped`] reads, decoded at fixed offsets as the full
/// decode would, with the encapsulation it opened; `None` for anything
/// else, which the full decode reports.
#[inline(never)]
pub(super) fn vxlan_plain(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
) -> Option<(Decoded, Encap)> {
    if linktype != LinkType::ETHERNET {
        return None;
    }
    let (encap, inner) = vxlan_inner(data, decap)?;
    match plain(LinkType::ETHERNET, inner, wanted)? {
        Decoded::Control(seg) => Some((
            Decoded::Control(Segment {
                mirror: Some(encap),
                ..seg
            }),
            encap,
        )),
        skipped => Some((skipped, encap)),
    }
}

/// The VXLAN encapsulation of an Ethernet frame (at most one 802.1Q tag,
/// unfragmented IPv4, UDP to a port of `decap`), and the inner frame.
#[inline(always)]
fn vxlan_inner<'a>(data: &'a [u8], decap: &Decap) -> Option<(Encap, &'a [u8])> {
    let (ETHERTYPE_IPV4, ip) = ethernet(data)? else {
        return None;
    };
    let udp = ipv4_payload(ip, PROTO_UDP)?;
    if !decap.vxlan.contains(be16(udp, 2)?) {
        return None;
    }
    let vxlan = udp.get(UDP_LEN..)?;
    let head: [u8; VXLAN_LEN] = array(vxlan, 0)?;
    let vni = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) >> 8;
    let session = (head[0] & VXLAN_FLAG_VNI != 0).then_some(vni);
    let inner = vxlan.get(VXLAN_LEN..)?;
    let encap = Encap {
        kind: EncapKind::Vxlan,
        session,
    };
    Some((encap, inner))
}

/// The Ethernet type after at most one 802.1Q tag, and what follows it.
#[inline(always)]
fn ethernet(data: &[u8]) -> Option<(u16, &[u8])> {
    Some(match be16(data, 12)? {
        ETHERTYPE_VLAN => (
            be16(data, ETHERNET_LEN + 2)?,
            data.get(ETHERNET_LEN + VLAN_TAG_LEN..)?,
        ),
        ethertype => (ethertype, data.get(ETHERNET_LEN..)?),
    })
}

/// What [`tcp_header`] returns: the source and destination addresses (4 or
/// 16 bytes) and the fixed TCP header.
type TcpHeader<'a> = (&'a [u8], &'a [u8], &'a [u8; TCP_MIN_LEN]);

/// Ethernet, IPv4 without options and the fixed TCP header.
const ETHERNET_IPV4_TCP: usize = ETHERNET_LEN + IPV4_MIN_LEN + TCP_MIN_LEN;

/// The source and destination addresses and the fixed TCP header, if the
/// frame is one of the common layouts and is well-formed up to and
/// including it.
#[inline(always)]
fn tcp_header(linktype: LinkType, data: &[u8]) -> Option<TcpHeader<'_>> {
    // The usual frame first, read after one length check; anything it
    // declines takes the layer-by-layer way, which gives the same answer.
    let usual = match linktype {
        LinkType::ETHERNET => data.first_chunk().and_then(ethernet_ipv4_tcp),
        _ => None,
    };
    let (src, dst, tcp) = match usual {
        Some(header) => header,
        None => layered(linktype, data)?,
    };
    if tcp[12] >> 4 < 5 {
        return None;
    }
    Some((src, dst, tcp))
}

/// [`tcp_header`] of an untagged Ethernet frame carrying unfragmented IPv4
/// without options (version and header length byte 0x45) and TCP, whose
/// total length (0 for "as captured", as `ipv4_payload` takes it) leaves
/// room for the fixed TCP header; `None` for anything else.
#[inline(always)]
pub(super) fn ethernet_ipv4_tcp(h: &[u8; ETHERNET_IPV4_TCP]) -> Option<TcpHeader<'_>> {
    const IP: usize = ETHERNET_LEN;
    const TCP: usize = IP + IPV4_MIN_LEN;
    let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let total = usize::from(be16(IP + 2));
    let usual = be16(12) == ETHERTYPE_IPV4
        && h[IP] == 0x45
        && h[IP + 9] == PROTO_TCP
        && be16(IP + 6) & 0x1fff == 0
        && (total == 0 || total >= IPV4_MIN_LEN + TCP_MIN_LEN);
    if !usual {
        return None;
    }
    let (_, tcp) = h.split_last_chunk::<TCP_MIN_LEN>()?;
    Some((&h[IP + 12..IP + 16], &h[IP + 16..TCP], tcp))
}

/// [`tcp_header`] for every layout it reads, layer by layer (before the
/// TCP data offset check).
#[inline(always)]
pub(super) fn layered(linktype: LinkType, data: &[u8]) -> Option<TcpHeader<'_>> {
    let (version, ip) = match linktype {
        LinkType::ETHERNET => ethernet(data)?,
        LinkType::LINUX_SLL => (be16(data, 14)?, data.get(SLL_LEN..)?),
        LinkType::LINUX_SLL2 => (be16(data, 0)?, data.get(SLL2_LEN..)?),
        LinkType::RAW | LinkType::RAW_BSD | LinkType::RAW_OPENBSD => match u8_at(data, 0)? >> 4 {
            4 => (ETHERTYPE_IPV4, data),
            6 => (ETHERTYPE_IPV6, data),
            _ => return None,
        },
        _ => return None,
    };
    let (src, dst, tcp) = match version {
        ETHERTYPE_IPV4 => (
            ip.get(12..16)?,
            ip.get(16..20)?,
            ipv4_payload(ip, PROTO_TCP)?,
        ),
        ETHERTYPE_IPV6 => (ip.get(8..24)?, ip.get(24..40)?, ipv6_payload(ip)?),
        _ => return None,
    };
    Some((src, dst, tcp.first_chunk::<TCP_MIN_LEN>()?))
}

/// The payload of an unfragmented IPv4 packet carrying `protocol`.
#[inline(always)]
fn ipv4_payload(ip: &[u8], protocol: u8) -> Option<&[u8]> {
    let first = u8_at(ip, 0)?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < IPV4_MIN_LEN || ip.len() < header_len {
        return None;
    }
    if u8_at(ip, 9)? != protocol || be16(ip, 6)? & 0x1fff != 0 {
        return None;
    }
    let end = match usize::from(be16(ip, 2)?) {
        0 => ip.len(),
        n if n < header_len => return None,
        n => n.min(ip.len()),
    };
    ip.get(header_len..end)
}

#[inline(always)]
fn ipv6_payload(ip: &[u8]) -> Option<&[u8]> {
    if ip.len() < IPV6_LEN || u8_at(ip, 0)? >> 4 != 6 || u8_at(ip, 6)? != PROTO_TCP {
        return None;
    }
    let end = match usize::from(be16(ip, 4)?) {
        0 => ip.len(),
        n => (IPV6_LEN + n).min(ip.len()),
    };
    ip.get(IPV6_LEN..end)
}
