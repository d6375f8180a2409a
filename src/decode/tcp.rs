//! TCP: ports and flags, reduced to a [`Control`]. We require the whole
//! 20-byte fixed header with a data offset of at least 5, as tcpdump does
//! before it prints flags; options and payload are never needed.

use std::net::IpAddr;

use super::bytes::{be16, be32, u8_at};
use super::error::{DecodeError, Layer};
use super::segment::{BadFlags, Control, Decoded, Segment, Skip};
use super::tunnel::Encap;
use super::{octets, RawTuple, Wanted};

pub(super) const TCP_MIN_LEN: usize = 20;
pub(super) const FIN: u8 = 0x01;
pub(super) const SYN: u8 = 0x02;
pub(super) const RST: u8 = 0x04;
pub(super) const ACK: u8 = 0x10;
/// The flags that make a segment a control segment.
pub(super) const CONTROL_FLAGS: u8 = SYN | RST | FIN;

pub(super) fn segment(
    src: IpAddr,
    dst: IpAddr,
    tcp: &[u8],
    wanted: &impl Wanted,
    mirror: Option<Encap>,
) -> Result<Decoded, DecodeError> {
    if tcp.len() < TCP_MIN_LEN {
        return Err(DecodeError::Truncated {
            layer: Layer::Tcp,
            needed: TCP_MIN_LEN,
            got: tcp.len(),
        });
    }
    let field = |read: Option<u16>| read.unwrap_or_default();
    if u8_at(tcp, 12).unwrap_or_default() >> 4 < 5 {
        return Err(DecodeError::Invalid {
            layer: Layer::Tcp,
            what: "data offset below 5",
        });
    }
    let flags = u8_at(tcp, 13).unwrap_or_default();
    let (src_port, dst_port) = (field(be16(tcp, 0)), field(be16(tcp, 2)));
    if let Some(bad) = bad_flags(flags) {
        return Err(DecodeError::BadFlags(bad));
    }
    let control = match control(flags) {
        Some(c) => c,
        None if wanted.wants(&RawTuple {
            src: octets(src).as_slice(),
            dst: octets(dst).as_slice(),
            src_port,
            dst_port,
        }) =>
        {
            Control::Ack
        }
        None => return Ok(Decoded::Skipped(Skip::NotControl)),
    };
    Ok(Decoded::Control(Segment {
        src,
        dst,
        src_port,
        dst_port,
        control,
        flags,
        seq: be32(tcp, 4).unwrap_or_default(),
        mirror,
    }))
}

/// SYN with RST or FIN: no handshake sends it (scanners and broken stacks do).
pub(super) fn bad_flags(flags: u8) -> Option<BadFlags> {
    match (flags & SYN != 0, flags & RST != 0, flags & FIN != 0) {
        (true, true, _) => Some(BadFlags::SynRst),
        (true, false, true) => Some(BadFlags::SynFin),
        _ => None,
    }
}

/// SYN decides first (with or without ACK), then RST, then FIN.
pub(super) fn control(flags: u8) -> Option<Control> {
    if flags & SYN != 0 {
        Some(if flags & ACK != 0 {
            Control::SynAck
        } else {
            Control::Syn
        })
    } else if flags & RST != 0 {
        Some(Control::Rst)
    } else if flags & FIN != 0 {
        Some(Control::Fin)
    } else {
        None
    }
}
