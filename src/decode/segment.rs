//! The closed result of decoding one frame: a TCP control segment, or the
//! reason the frame carries none.

use std::net::IpAddr;

use super::tunnel::Encap;

/// What a TCP segment does to a handshake. Flags are reduced to this so that
/// the rest of the pipeline matches exhaustively instead of testing bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Control {
    /// SYN without ACK: a connection attempt (other flags may ride along).
    Syn,
    /// SYN with ACK: the listener accepted.
    SynAck,
    /// RST (without SYN): refusal, or an abort of an open connection.
    Rst,
    /// FIN (without SYN or RST): an orderly close.
    Fin,
    /// None of SYN, RST, FIN: data or a pure ACK. Decoded only on ports the
    /// caller asked for (required edges, attempts waiting for an answer).
    Ack,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Syn => "syn",
            Control::SynAck => "syn_ack",
            Control::Rst => "rst",
            Control::Fin => "fin",
            Control::Ack => "ack",
        }
    }
}

/// A TCP control segment with the facts the tracker needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub control: Control,
    /// The raw TCP flags byte (CWR..FIN) that `control` was reduced from.
    /// The pipeline decides on `control` only; the decoder tests check the
    /// two agree.
    pub flags: u8,
    /// The sequence number: a SYN's tells a retransmission from a new attempt.
    pub seq: u32,
    /// The outermost encapsulation it arrived in (the mirror session), if any.
    pub mirror: Option<Encap>,
}

impl Segment {
    /// Whether the ACK flag is set.
    pub fn has_ack(&self) -> bool {
        self.flags & 0x10 != 0
    }
}

/// Flag combinations no TCP stack sends in a handshake: counted as decode
/// errors, never taken as an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BadFlags {
    SynRst,
    SynFin,
}

/// A well-formed frame that carries no TCP control segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP, but not TCP (UDP, ICMP, ...).
    NotTcp,
    /// TCP without SYN, RST or FIN: data and pure ACKs.
    NotControl,
    /// An IP fragment with a non-zero offset: no TCP header in it.
    Fragment,
    /// UDP that looks like VXLAN or GENEVE on a port not configured for it.
    UnconfiguredTunnel,
}

impl Skip {
    pub const ALL: [Skip; 5] = [
        Skip::NotIp,
        Skip::NotTcp,
        Skip::NotControl,
        Skip::Fragment,
        Skip::UnconfiguredTunnel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotIp => "not_ip",
            Skip::NotTcp => "not_tcp",
            Skip::NotControl => "not_control",
            Skip::Fragment => "fragment",
            Skip::UnconfiguredTunnel => "unconfigured_tunnel",
        }
    }
}

/// The outcome of decoding a frame that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Control(Segment),
    Skipped(Skip),
}
