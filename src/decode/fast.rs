//! The pre-check: most captured TCP segments are data or pure ACKs, and the
//! pipeline only wants control segments. For the common layouts (Ethernet
//! with at most one 802.1Q tag, Linux SLL/SLL2, raw IP; unfragmented IPv4,
//! options allowed; IPv6 with TCP as the next header) it reads the TCP flags
//! at a computed offset with a few bounds-checked reads.
//!
//! Invariant (tested by proptest): [`is_skipped`] returns `true` only
//! when the full decode would return `Ok(Skipped(NotControl))`; for anything
//! else, including every error, it returns `false` and the caller defers to
//! the full decode.

use super::bytes::{be16, u8_at};
use super::ip::{IPV4_MIN_LEN, IPV6_LEN, PROTO_TCP};
use super::link::{
    ETHERNET_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, SLL2_LEN, SLL_LEN, VLAN_TAG_LEN,
};
use super::tcp::{CONTROL_FLAGS, TCP_MIN_LEN};
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

/// The source and destination addresses and the fixed TCP header, if the
/// frame is one of the common layouts and is well-formed up to and
/// including it.
#[inline(always)]
fn tcp_header(linktype: LinkType, data: &[u8]) -> Option<(&[u8], &[u8], &[u8; TCP_MIN_LEN])> {
    let (version, ip) = match linktype {
        LinkType::ETHERNET => match be16(data, 12)? {
            ETHERTYPE_VLAN => (
                be16(data, ETHERNET_LEN + 2)?,
                data.get(ETHERNET_LEN + VLAN_TAG_LEN..)?,
            ),
            ethertype => (ethertype, data.get(ETHERNET_LEN..)?),
        },
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
        ETHERTYPE_IPV4 => (ip.get(12..16)?, ip.get(16..20)?, ipv4_payload(ip)?),
        ETHERTYPE_IPV6 => (ip.get(8..24)?, ip.get(24..40)?, ipv6_payload(ip)?),
        _ => return None,
    };
    let tcp = tcp.first_chunk::<TCP_MIN_LEN>()?;
    if tcp[12] >> 4 < 5 {
        return None;
    }
    Some((src, dst, tcp))
}

#[inline(always)]
fn ipv4_payload(ip: &[u8]) -> Option<&[u8]> {
    let first = u8_at(ip, 0)?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < IPV4_MIN_LEN || ip.len() < header_len {
        return None;
    }
    if u8_at(ip, 9)? != PROTO_TCP || be16(ip, 6)? & 0x1fff != 0 {
        return None;
    }
    let end = match usize::from(be16(ip, 2)?) {
        0 => ip.len(),
        n if n < header_len => return None,
        n => n.min(ip.len()),
    };
    ip.get(header_len..end)
}

#[inline]
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
