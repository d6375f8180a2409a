//! Pure decoding: frame bytes in, [`Decoded`] or [`DecodeError`] out.
//!
//! Invariants:
//! - never panics and never indexes out of bounds, on any input (all reads
//!   are `get`-based; proptests and a fuzz target check it);
//! - reads headers only: a snaplen-truncated frame decodes as long as the
//!   fixed 20-byte TCP header was captured (a 128-byte snaplen suffices);
//! - allocation-free; a fixed-offset pre-check ([`fast`]) rejects the common
//!   non-control TCP segments, bare or in a mirror session's VXLAN, and must
//!   agree with the full decode;
//! - a non-control segment (data, pure ACK) is decoded only when the caller
//!   wants one of its ports ([`Wanted`]); the pre-check reads the ports at
//!   fixed offsets, so unwanted ones still cost a few reads;
//! - encapsulations ([`tunnel`]: VXLAN, GENEVE, GRE, GRE-TEB, ERSPAN I/II/III,
//!   GRE-in-UDP, IP-in-IP, MPLS) are opened, at most [`MAX_ENCAPSULATIONS`]
//!   deep, and the inner frame decodes as a captured one would; the UDP
//!   ones only on the ports of [`Decap`]. The outer addresses are never
//!   reported: they belong to the mirror, not to the site.

mod bytes;
mod error;
mod fast;
mod ip;
mod link;
mod segment;
mod tcp;
mod tunnel;
mod udp;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tunnel_tests;

pub use error::{DecodeError, Layer};
pub use ip::MAX_IPV6_EXTENSIONS;
pub use link::MAX_VLAN_TAGS;
pub use segment::{BadFlags, Control, Decoded, Segment, Skip};
pub use tunnel::{
    Decap, Encap, EncapKind, Encaps, PortSet, MAX_ENCAPSULATIONS, MAX_MPLS_LABELS, MAX_TUNNEL_PORTS,
};
pub use udp::{datagram, Datagram};

use std::net::IpAddr;

use crate::frame::LinkType;

/// The addresses (4 or 16 bytes each) and ports of a TCP segment, as the
/// pre-check reads them.
#[derive(Clone, Copy, Debug)]
pub struct RawTuple<'a> {
    pub src: &'a [u8],
    pub dst: &'a [u8],
    pub src_port: u16,
    pub dst_port: u16,
}

impl RawTuple<'_> {
    /// [`flow_hash`] of this tuple.
    #[inline]
    pub fn hash(&self) -> u32 {
        flow_hash(self.src, self.dst, self.src_port, self.dst_port)
    }

    /// The same for both directions of a connection (the two ends' hashes
    /// combined by a commutative sum, then mixed).
    #[inline(always)]
    pub fn either_way_hash(&self) -> u32 {
        let port = |p: u16| u64::from(p).wrapping_mul(HASH_K);
        // Two IPv4 addresses (most segments asked on the per-packet path):
        // each end's one word, as the loop below would mix it.
        let h = match (<[u8; 4]>::try_from(self.src), <[u8; 4]>::try_from(self.dst)) {
            (Ok(s), Ok(d)) => mix(port(self.src_port), s).wrapping_add(mix(port(self.dst_port), d)),
            _ => {
                let end = |a: &[u8], p: u16| {
                    let mut h = port(p);
                    for c in a.chunks_exact(4) {
                        h = mix(h, [c[0], c[1], c[2], c[3]]);
                    }
                    h
                };
                end(self.src, self.src_port).wrapping_add(end(self.dst, self.dst_port))
            }
        };
        (h.wrapping_mul(HASH_K) >> 32) as u32
    }
}

/// The multiplier of the tuple hashes (the golden ratio's 64 bits).
const HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;

/// One address word mixed into a tuple hash.
#[inline(always)]
fn mix(h: u64, w: [u8; 4]) -> u64 {
    (h ^ u64::from(u32::from_be_bytes(w)))
        .wrapping_mul(HASH_K)
        .rotate_left(29)
}

/// A cheap, fixed hash of a directed 4-tuple (not for maps exposed to
/// crafted keys: only for filters whose worst case is a wasted decode).
#[inline(always)]
pub fn flow_hash(src: &[u8], dst: &[u8], src_port: u16, dst_port: u16) -> u32 {
    let mut h = (u64::from(src_port) << 16 | u64::from(dst_port)).wrapping_mul(HASH_K);
    // Two IPv4 addresses (most segments asked on the per-packet path): the
    // same two words the loop would mix, without its iterator.
    if let (Ok(s), Ok(d)) = (<[u8; 4]>::try_from(src), <[u8; 4]>::try_from(dst)) {
        return (mix(mix(h, s), d) >> 32) as u32;
    }
    for c in src.chunks_exact(4).chain(dst.chunks_exact(4)) {
        h = mix(h, [c[0], c[1], c[2], c[3]]);
    }
    (h >> 32) as u32
}

/// [`flow_hash`] of addresses as the decoder reports them.
#[inline]
pub fn flow_hash_of(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> u32 {
    let (s, d) = (octets(src), octets(dst));
    flow_hash(s.as_slice(), d.as_slice(), src_port, dst_port)
}

/// [`RawTuple::either_way_hash`] of addresses as the decoder reports them.
pub fn either_way_hash_of(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> u32 {
    let (s, d) = (octets(src), octets(dst));
    RawTuple {
        src: s.as_slice(),
        dst: d.as_slice(),
        src_port,
        dst_port,
    }
    .either_way_hash()
}

fn octets(a: IpAddr) -> Octets {
    match a {
        IpAddr::V4(a) => Octets::V4(a.octets()),
        IpAddr::V6(a) => Octets::V6(a.octets()),
    }
}

enum Octets {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Octets {
    fn as_slice(&self) -> &[u8] {
        match self {
            Octets::V4(a) => a,
            Octets::V6(a) => a,
        }
    }
}

/// Which non-control segments the caller wants decoded. Anything else is
/// `Skipped(NotControl)`.
pub trait Wanted {
    fn wants(&self, t: &RawTuple<'_>) -> bool;
}

/// Wants no non-control segment: control segments only.
pub struct ControlOnly;

impl Wanted for ControlOnly {
    #[inline]
    fn wants(&self, _: &RawTuple<'_>) -> bool {
        false
    }
}

/// Decode one frame of the given link type (control segments only).
pub fn decode(linktype: LinkType, data: &[u8]) -> Result<Decoded, DecodeError> {
    decode_wanting(linktype, data, &ControlOnly)
}

/// The pre-check alone: true only for a non-control TCP segment on ports
/// `wanted` declines, which [`decode_wanting`] would return as
/// `Skipped(NotControl)`; false defers to it.
#[inline(always)]
pub fn is_skipped(linktype: LinkType, data: &[u8], wanted: &impl Wanted) -> bool {
    fast::is_skipped(linktype, data, wanted)
}

/// Decode one frame; a non-control segment on ports `wanted` accepts comes
/// back as a [`Control::Ack`] segment. UDP tunnels on the standard ports.
#[inline]
pub fn decode_wanting(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
) -> Result<Decoded, DecodeError> {
    decode_frame(linktype, data, wanted, &Decap::STANDARD).0
}

/// [`decode_wanting`] with the UDP tunnel ports of `decap`; also says
/// which encapsulations were opened.
#[inline]
pub fn decode_frame(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
) -> (Result<Decoded, DecodeError>, Encaps) {
    let mut encaps = Encaps::default();
    if is_skipped(linktype, data, wanted) {
        return (Ok(Decoded::Skipped(Skip::NotControl)), encaps);
    }
    let r = decode_deferred(linktype, data, wanted, decap, &mut encaps);
    (r, encaps)
}

/// [`decode_frame`] of a frame [`is_skipped`] declined, the encapsulations
/// opened written to `encaps` (empty on entry): the pre-check of a mirror
/// session's VXLAN (out after two reads for other frames), a plain frame
/// at its fixed offsets (a control packet, most often), then the full
/// decode.
#[inline]
pub fn decode_deferred(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
    encaps: &mut Encaps,
) -> Result<Decoded, DecodeError> {
    if let Some(vxlan) = fast::vxlan_skipped(linktype, data, wanted, decap) {
        *encaps = Encaps::one(vxlan);
        return Ok(Decoded::Skipped(Skip::NotControl));
    }
    decode_checked(linktype, data, wanted, decap, encaps)
}

/// The pre-check of a mirror session's VXLAN alone: the encapsulation of a
/// frame [`decode_deferred`] would return as `Skipped(NotControl)` having
/// opened it, `None` to defer to [`decode_checked`].
#[inline]
pub fn vxlan_skipped(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
) -> Option<Encap> {
    fast::vxlan_skipped(linktype, data, wanted, decap)
}

/// [`decode_deferred`] of a frame both pre-checks ([`is_skipped`],
/// [`vxlan_skipped`]) declined.
#[inline]
pub fn decode_checked(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
    encaps: &mut Encaps,
) -> Result<Decoded, DecodeError> {
    if let Some(d) = fast::plain(linktype, data, wanted) {
        return Ok(d);
    }
    if let Some((d, vxlan)) = fast::vxlan_plain(linktype, data, wanted, decap) {
        *encaps = Encaps::one(vxlan);
        return Ok(d);
    }
    decode_full(linktype, data, wanted, decap, encaps)
}

/// The full decode, without the pre-check: through the link layer, then
/// IP and each encapsulation in turn down to TCP.
fn decode_full(
    linktype: LinkType,
    data: &[u8],
    wanted: &impl Wanted,
    decap: &Decap,
    encaps: &mut Encaps,
) -> Result<Decoded, DecodeError> {
    use tunnel::Next;
    let mut net = link::network(linktype, data)?;
    loop {
        let carried = match net {
            link::Network::Ipv4(ip) => ip::ipv4(ip)?.map(Ok),
            link::Network::Ipv6(ip) => ip::ipv6(ip)?.map(Ok),
            link::Network::Mpls(stack) => Ok(Err(tunnel::mpls(stack)?)),
            link::Network::Other => return Ok(Decoded::Skipped(Skip::NotIp)),
        };
        let next = match carried {
            Err(skip) => return Ok(Decoded::Skipped(skip)),
            // MPLS has no protocol field: the label stack says what follows.
            Ok(Err(next)) => next,
            Ok(Ok(c)) => match c.protocol {
                ip::PROTO_TCP => {
                    return tcp::segment(c.src, c.dst, c.payload, wanted, encaps.outer())
                }
                tunnel::PROTO_UDP => tunnel::udp(c.payload, decap)?,
                tunnel::PROTO_GRE => tunnel::gre(c.payload, EncapKind::Gre)?,
                p @ (tunnel::PROTO_IPIP | tunnel::PROTO_IPV6) => tunnel::ip_in_ip(p, c.payload),
                _ => return Ok(Decoded::Skipped(Skip::NotTcp)),
            },
        };
        match next {
            Next::Opened(encap, inner) => {
                encaps.push(encap)?;
                net = inner;
            }
            Next::Skipped(skip, unconfigured) => {
                encaps.unconfigured = unconfigured;
                return Ok(Decoded::Skipped(skip));
            }
        }
    }
}

/// [`decode_full`] on the standard ports, for the tests.
#[cfg(test)]
fn full(linktype: LinkType, data: &[u8], wanted: &impl Wanted) -> Result<Decoded, DecodeError> {
    decode_full(
        linktype,
        data,
        wanted,
        &Decap::STANDARD,
        &mut Encaps::default(),
    )
}
