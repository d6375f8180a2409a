//! UDP datagrams, for readers of captured export traffic (NetFlow, IPFIX):
//! through the link layer and IP to the UDP payload. Apart from the
//! control-segment path: a plain capture never comes here.

use std::net::IpAddr;

use super::bytes::be16;
use super::ip;
use super::link::{self, Network};
use crate::frame::LinkType;

const UDP_LEN: usize = 8;

/// One UDP datagram as captured: its ends and its payload (cut to the UDP
/// length, or to what was captured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// The UDP datagram a frame carries, or `None` (not IP, not UDP, a
/// fragment after the first, broken headers).
pub fn datagram(linktype: LinkType, data: &[u8]) -> Option<Datagram<'_>> {
    let carried = match link::network(linktype, data).ok()? {
        Network::Ipv4(b) => ip::ipv4(b).ok()?.ok()?,
        Network::Ipv6(b) => ip::ipv6(b).ok()?.ok()?,
        Network::Mpls(_) | Network::Other => return None,
    };
    if carried.protocol != super::tunnel::PROTO_UDP {
        return None;
    }
    let u = carried.payload;
    let src_port = be16(u, 0)?;
    let dst_port = be16(u, 2)?;
    let len = usize::from(be16(u, 4)?);
    let end = if len >= UDP_LEN {
        len.min(u.len())
    } else {
        u.len()
    };
    Some(Datagram {
        src: carried.src,
        src_port,
        dst: carried.dst,
        dst_port,
        payload: u.get(UDP_LEN..end)?,
    })
}
