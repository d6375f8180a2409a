//! Pure decoding: frame bytes in, [`Decoded`] or [`DecodeError`] out.
//!
//! Invariants:
//! - never panics and never indexes out of bounds, on any input (all reads
//!   are `get`-based; proptests and a fuzz target check it);
//! - reads headers only: a snaplen-truncated frame decodes as long as the
//!   fixed 20-byte TCP header was captured (a 128-byte snaplen suffices);
//! - allocation-free; a fixed-offset pre-check ([`fast`]) rejects the common
//!   non-control TCP segments and must agree with the full decode;
//! - a non-control segment (data, pure ACK) is decoded only when the caller
//!   wants one of its ports ([`Wanted`]); the pre-check reads the ports at
//!   fixed offsets, so unwanted ones still cost a few reads;
//! - tunnels (GRE, VXLAN, IP-in-IP, MPLS, ...) are not opened: `NotTcp`/`NotIp`.

mod bytes;
mod error;
mod fast;
mod ip;
mod link;
mod segment;
mod tcp;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::{DecodeError, Layer};
pub use ip::MAX_IPV6_EXTENSIONS;
pub use link::MAX_VLAN_TAGS;
pub use segment::{BadFlags, Control, Decoded, Segment, Skip};

use crate::source::LinkType;

/// Which non-control segments the caller wants decoded, by port: `(source
/// port, destination port) -> bool`. Anything else is `Skipped(NotControl)`.
pub trait Wanted {
    fn wants(&self, src_port: u16, dst_port: u16) -> bool;
}

/// Wants no non-control segment: control segments only.
pub struct ControlOnly;

impl Wanted for ControlOnly {
    #[inline]
    fn wants(&self, _: u16, _: u16) -> bool {
        false
    }
}

/// Decode one frame of the given link type (control segments only).
pub fn decode(linktype: LinkType, data: &[u8]) -> Result<Decoded, DecodeError> {
    decode_wanting(linktype, data, &ControlOnly)
}

/// Decode one frame; a non-control segment on ports `wanted` accepts comes
/// back as a [`Control::Ack`] segment.
#[inline]
pub fn decode_wanting(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
) -> Result<Decoded, DecodeError> {
    if fast::is_skipped(linktype, data, wanted) {
        return Ok(Decoded::Skipped(Skip::NotControl));
    }
    decode_full(linktype, data, wanted)
}

/// The full decode, without the pre-check.
fn decode_full(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
) -> Result<Decoded, DecodeError> {
    let carried = match link::network(linktype, data)? {
        link::Network::Ipv4(ip) => ip::ipv4(ip)?,
        link::Network::Ipv6(ip) => ip::ipv6(ip)?,
        link::Network::Other => return Ok(Decoded::Skipped(Skip::NotIp)),
    };
    match carried {
        Ok(carried) => tcp::segment(carried.src, carried.dst, carried.tcp, wanted),
        Err(skip) => Ok(Decoded::Skipped(skip)),
    }
}
