//! Link layers: strip the link header (and any VLAN tags, PPPoE session
//! header or 802.3 LLC/SNAP header) and say which network protocol follows.
//! Invariant: the returned slice starts at the network header; nothing past
//! it has been looked at, except the version nibble for raw-IP link types.

use super::bytes::{be16, u8_at};
use super::error::{DecodeError, Layer};
use crate::frame::LinkType;

pub(super) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(super) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer tag.
pub(super) const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer tag).
pub(super) const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Pre-standard QinQ outer tags.
const ETHERTYPE_QINQ_9100: u16 = 0x9100;
const ETHERTYPE_QINQ_9200: u16 = 0x9200;

/// PPPoE session stage, followed by a PPP protocol number.
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const PPPOE_LEN: usize = 6;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// Type/length values up to this are an 802.3 length, not an Ethernet type.
const MAX_8023_LENGTH: u16 = 1500;
/// LLC (DSAP, SSAP, control) announcing SNAP, then the OUI and Ethernet type.
const LLC_SNAP: &[u8] = &[0xaa, 0xaa, 0x03];
const SNAP_LEN: usize = 8;

pub(super) const ETHERNET_LEN: usize = 14;
pub(super) const VLAN_TAG_LEN: usize = 4;
pub(super) const SLL_LEN: usize = 16;
pub(super) const SLL2_LEN: usize = 20;
const LOOPBACK_LEN: usize = 4;

/// Most stacked VLAN tags accepted; real networks use one or two.
pub const MAX_VLAN_TAGS: usize = 8;

/// BSD address families for the NULL and LOOP link types.
const AF_INET: u32 = 2;
/// AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD and Darwin respectively.
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

/// The network layer found behind the link header.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Network<'a> {
    Ipv4(&'a [u8]),
    Ipv6(&'a [u8]),
    /// An MPLS label stack.
    Mpls(&'a [u8]),
    /// Not IP (ARP, LLDP, ...).
    Other,
}

pub(super) fn network(linktype: LinkType, data: &[u8]) -> Result<Network<'_>, DecodeError> {
    match linktype {
        LinkType::ETHERNET => ethernet(data),
        LinkType::LINUX_SLL => {
            let protocol = be16(data, 14).ok_or(truncated(SLL_LEN, data))?;
            ethertype_payload(protocol, rest(data, SLL_LEN))
        }
        LinkType::LINUX_SLL2 => {
            if data.len() < SLL2_LEN {
                return Err(truncated(SLL2_LEN, data));
            }
            let protocol = be16(data, 0).ok_or(truncated(SLL2_LEN, data))?;
            ethertype_payload(protocol, rest(data, SLL2_LEN))
        }
        LinkType::RAW | LinkType::RAW_BSD | LinkType::RAW_OPENBSD => {
            match u8_at(data, 0).map(|b| b >> 4) {
                Some(4) => Ok(Network::Ipv4(data)),
                Some(6) => Ok(Network::Ipv6(data)),
                Some(_) => Err(DecodeError::Invalid {
                    layer: Layer::Link,
                    what: "raw IP version is neither 4 nor 6",
                }),
                None => Err(truncated(1, data)),
            }
        }
        LinkType::IPV4 => Ok(Network::Ipv4(data)),
        LinkType::IPV6 => Ok(Network::Ipv6(data)),
        LinkType::NULL | LinkType::LOOP => {
            let bytes: [u8; 4] =
                super::bytes::array(data, 0).ok_or(truncated(LOOPBACK_LEN, data))?;
            let family = if linktype == LinkType::LOOP {
                u32::from_be_bytes(bytes)
            } else {
                // Host byte order of the capturing machine: families are
                // small, so a value with high bits set was written swapped.
                let le = u32::from_le_bytes(bytes);
                if le > 0xffff {
                    le.swap_bytes()
                } else {
                    le
                }
            };
            let payload = rest(data, LOOPBACK_LEN);
            Ok(match family {
                AF_INET => Network::Ipv4(payload),
                f if AF_INET6.contains(&f) => Network::Ipv6(payload),
                _ => Network::Other,
            })
        }
        LinkType(other) => Err(DecodeError::UnsupportedLinkType { linktype: other }),
    }
}

/// Dispatch on an Ethernet type, skipping up to [`MAX_VLAN_TAGS`] tags
/// and a PPPoE session header.
fn ethertype_payload(mut ethertype: u16, mut data: &[u8]) -> Result<Network<'_>, DecodeError> {
    let mut tags = 0;
    while is_vlan(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(DecodeError::TooManyVlanTags { max: MAX_VLAN_TAGS });
        }
        tags += 1;
        ethertype = be16(data, 2).ok_or(DecodeError::Truncated {
            layer: Layer::Vlan,
            needed: VLAN_TAG_LEN,
            got: data.len(),
        })?;
        data = rest(data, VLAN_TAG_LEN);
    }
    Ok(match ethertype {
        ETHERTYPE_IPV4 => Network::Ipv4(data),
        ETHERTYPE_IPV6 => Network::Ipv6(data),
        super::tunnel::ETHERTYPE_MPLS | super::tunnel::ETHERTYPE_MPLS_MULTICAST => {
            Network::Mpls(data)
        }
        ETHERTYPE_PPPOE_SESSION => {
            let protocol = be16(data, PPPOE_LEN).ok_or(truncated(PPPOE_LEN + 2, data))?;
            let ip = rest(data, PPPOE_LEN + 2);
            match protocol {
                PPP_IPV4 => Network::Ipv4(ip),
                PPP_IPV6 => Network::Ipv6(ip),
                _ => Network::Other,
            }
        }
        _ => Network::Other,
    })
}

/// An Ethernet frame: Ethernet II, or 802.3 with an LLC/SNAP header that
/// carries an Ethernet type (other 802.3 LLC frames are not IP).
fn ethernet(data: &[u8]) -> Result<Network<'_>, DecodeError> {
    let ethertype = be16(data, 12).ok_or(truncated(ETHERNET_LEN, data))?;
    let payload = rest(data, ETHERNET_LEN);
    if ethertype > MAX_8023_LENGTH {
        return ethertype_payload(ethertype, payload);
    }
    match payload.get(..3) {
        Some(LLC_SNAP) => {}
        Some(_) => return Ok(Network::Other),
        None => return Err(truncated(ETHERNET_LEN + SNAP_LEN, data)),
    }
    let snap =
        super::bytes::array::<5>(payload, 3).ok_or(truncated(ETHERNET_LEN + SNAP_LEN, data))?;
    match snap {
        [0, 0, 0, hi, lo] => {
            ethertype_payload(u16::from_be_bytes([hi, lo]), rest(payload, SNAP_LEN))
        }
        _ => Ok(Network::Other),
    }
}

pub(super) fn is_vlan(ethertype: u16) -> bool {
    matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_9100 | ETHERTYPE_QINQ_9200
    )
}

/// The bytes after a header whose length has already been checked.
fn rest(data: &[u8], header_len: usize) -> &[u8] {
    data.get(header_len..).unwrap_or_default()
}

fn truncated(needed: usize, data: &[u8]) -> DecodeError {
    DecodeError::Truncated {
        layer: Layer::Link,
        needed,
        got: data.len(),
    }
}
