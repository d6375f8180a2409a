//! Pure decoding: frame bytes in, [`Decoded`] or [`DecodeError`] out.
//!
//! Invariants:
//! - never panics and never indexes out of bounds, on any input (all reads
//!   are `get`-based; proptests and a fuzz target check it);
//! - reads headers only: a snaplen-truncated frame decodes as long as the
//!   fixed 20-byte TCP header was captured (a 128-byte snaplen suffices);
//! - allocation-free; a fixed-offset pre-check ([`fast`]) rejects the common
//!   non-control TCP segments and must agree with the full decode;
//! - tunnels (GRE, VXLAN, IP-in-IP, MPLS, ...) are not opened: `NotTcp`/`NotIp`.

mod bytes;
mod error;
mod fast;
mod ip;
mod link;
mod segment;
mod tcp;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::{DecodeError, Layer};
pub use ip::MAX_IPV6_EXTENSIONS;
pub use link::MAX_VLAN_TAGS;
pub use segment::{Control, Decoded, Segment, Skip};

use crate::frame::LinkType;

/// Decode one frame of the given link type.
pub fn decode(linktype: LinkType, data: &[u8]) -> Result<Decoded, DecodeError> {
    if fast::is_not_control(linktype, data) {
        return Ok(Decoded::Skipped(Skip::NotControl));
    }
    decode_full(linktype, data)
}

/// The full decode, without the pre-check.
fn decode_full(linktype: LinkType, data: &[u8]) -> Result<Decoded, DecodeError> {
    let carried = match link::network(linktype, data)? {
        link::Network::Ipv4(ip) => ip::ipv4(ip)?,
        link::Network::Ipv6(ip) => ip::ipv6(ip)?,
        link::Network::Other => return Ok(Decoded::Skipped(Skip::NotIp)),
    };
    match carried {
        Ok(carried) => tcp::segment(carried.src, carried.dst, carried.tcp),
        Err(skip) => Ok(Decoded::Skipped(skip)),
    }
}
