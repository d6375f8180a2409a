//! IPv4 and IPv6 (with extension headers). Invariants: the IP total or
//! payload length only ever shortens what is read (it drops link padding);
//! a snaplen-truncated payload is never an error unless the TCP header
//! itself is cut. Non-first fragments carry no TCP header and are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bytes::{array, be16, u8_at};
use super::error::{DecodeError, Layer};
use super::segment::Skip;

pub(super) const IPV4_MIN_LEN: usize = 20;
pub(super) const IPV6_LEN: usize = 40;
pub(super) const PROTO_TCP: u8 = 6;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// IPv6 extension headers we walk through.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
const EXT_MOBILITY: u8 = 135;
const EXT_HIP: u8 = 139;
const EXT_SHIM6: u8 = 140;
const FRAGMENT_HEADER_LEN: usize = 8;
/// Most extension headers walked before giving up.
pub const MAX_IPV6_EXTENSIONS: usize = 16;

/// An IP payload with the addresses it travels between.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Carried<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The protocol number (IPv6: the first that is not an extension header).
    pub protocol: u8,
    /// From the payload's header to the end of the IP packet (or of the capture).
    pub payload: &'a [u8],
}

pub(super) fn ipv4(data: &[u8]) -> Result<Result<Carried<'_>, Skip>, DecodeError> {
    let invalid = |what| DecodeError::Invalid {
        layer: Layer::Ipv4,
        what,
    };
    let header: [u8; IPV4_MIN_LEN] = array(data, 0).ok_or(DecodeError::Truncated {
        layer: Layer::Ipv4,
        needed: IPV4_MIN_LEN,
        got: data.len(),
    })?;
    if header[0] >> 4 != 4 {
        return Err(invalid("version is not 4"));
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_LEN {
        return Err(invalid("header length (IHL) below 5"));
    }
    if data.len() < header_len {
        return Err(DecodeError::Truncated {
            layer: Layer::Ipv4,
            needed: header_len,
            got: data.len(),
        });
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    // 0 is what TSO/LRO offload leaves in captures: the length is unknown.
    let end = match total_len {
        0 => data.len(),
        n if n < header_len => return Err(invalid("total length below header length")),
        n => n.min(data.len()),
    };
    if u16::from_be_bytes([header[6], header[7]]) & IPV4_OFFSET_MASK != 0 {
        return Ok(Err(Skip::Fragment));
    }
    let src: [u8; 4] = [header[12], header[13], header[14], header[15]];
    let dst: [u8; 4] = [header[16], header[17], header[18], header[19]];
    Ok(Ok(Carried {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        protocol: header[9],
        payload: data.get(header_len..end).unwrap_or_default(),
    }))
}

pub(super) fn ipv6(data: &[u8]) -> Result<Result<Carried<'_>, Skip>, DecodeError> {
    let header: [u8; IPV6_LEN] = array(data, 0).ok_or(DecodeError::Truncated {
        layer: Layer::Ipv6,
        needed: IPV6_LEN,
        got: data.len(),
    })?;
    if header[0] >> 4 != 6 {
        return Err(DecodeError::Invalid {
            layer: Layer::Ipv6,
            what: "version is not 6",
        });
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    // 0: jumbogram or offloaded send; use what was captured.
    let end = match payload_len {
        0 => data.len(),
        n => (IPV6_LEN + n).min(data.len()),
    };
    let mut next = header[6];
    let mut rest = data.get(IPV6_LEN..end).unwrap_or_default();
    let mut walked = 0;
    loop {
        let len = match next {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_MOBILITY | EXT_HIP | EXT_SHIM6 => {
                u8_at(rest, 1).map(|n| (usize::from(n) + 1) * 8)
            }
            EXT_AH => u8_at(rest, 1).map(|n| (usize::from(n) + 2) * 4),
            EXT_FRAGMENT => Some(FRAGMENT_HEADER_LEN),
            // TCP, UDP, GRE, ESP (50), no next header (59), ICMPv6, ...
            _ => break,
        };
        if walked == MAX_IPV6_EXTENSIONS {
            return Err(DecodeError::Invalid {
                layer: Layer::Ipv6Extension,
                what: "too many extension headers",
            });
        }
        walked += 1;
        let truncated = DecodeError::Truncated {
            layer: Layer::Ipv6Extension,
            needed: len.unwrap_or(2),
            got: rest.len(),
        };
        let len = len.ok_or(truncated)?;
        if rest.len() < len {
            return Err(truncated);
        }
        if next == EXT_FRAGMENT && be16(rest, 2).unwrap_or_default() & 0xfff8 != 0 {
            return Ok(Err(Skip::Fragment));
        }
        next = u8_at(rest, 0).ok_or(truncated)?;
        rest = rest.get(len..).unwrap_or_default();
    }
    let src: [u8; 16] = array(&header, 8).unwrap_or_default();
    let dst: [u8; 16] = array(&header, 24).unwrap_or_default();
    Ok(Ok(Carried {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        payload: rest,
    }))
}
