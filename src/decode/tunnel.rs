//! Encapsulations opened to reach the mirrored frame inside: VXLAN and
//! GENEVE (UDP, on configured ports), GRE (checksum, key, sequence) with
//! IPv4, IPv6, transparent Ethernet bridging, ERSPAN I/II/III or MPLS
//! inside, GRE-in-UDP, IP-in-IP and MPLS label stacks.
//!
//! Invariants: each function reads one header and says what follows it
//! ([`Opened`]) or why nothing does ([`Skip`]); nesting is bounded by the
//! caller ([`MAX_ENCAPSULATIONS`]); every read is bounds-checked.

use super::bytes::{be16, be32, u8_at};
use super::error::{DecodeError, Layer};
use super::link::{self, Network, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::segment::Skip;
use crate::frame::LinkType;

/// Most encapsulations opened around one frame (a mirror session's VXLAN
/// around an MPLS core's label stack around GRE is already rare).
pub const MAX_ENCAPSULATIONS: usize = 3;
/// Most ports configured per UDP encapsulation.
pub const MAX_TUNNEL_PORTS: usize = 8;
/// Most MPLS labels popped before giving up.
pub const MAX_MPLS_LABELS: usize = 8;

pub(super) const PROTO_IPIP: u8 = 4;
pub(super) const PROTO_IPV6: u8 = 41;
pub(super) const PROTO_UDP: u8 = 17;
pub(super) const PROTO_GRE: u8 = 47;

pub(super) const UDP_LEN: usize = 8;
pub(super) const VXLAN_LEN: usize = 8;
pub(super) const VXLAN_FLAG_VNI: u8 = 0x08;
const GENEVE_LEN: usize = 8;
const GRE_MIN_LEN: usize = 4;
const GRE_CHECKSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQUENCE: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;
const ERSPAN_II_LEN: usize = 8;
const ERSPAN_III_LEN: usize = 12;
const ERSPAN_III_SUBHEADER_LEN: usize = 8;
const MPLS_LABEL_LEN: usize = 4;

pub(super) const ETHERTYPE_TEB: u16 = 0x6558;
pub(super) const ETHERTYPE_ERSPAN: u16 = 0x88be;
pub(super) const ETHERTYPE_ERSPAN_III: u16 = 0x22eb;
pub(super) const ETHERTYPE_MPLS: u16 = 0x8847;
pub(super) const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;

/// An encapsulation decode opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EncapKind {
    Vxlan,
    Geneve,
    /// GRE carrying IP (over IPv4 or IPv6).
    Gre,
    /// GRE carrying Ethernet (transparent Ethernet bridging, 0x6558).
    GreTeb,
    ErspanI,
    ErspanII,
    ErspanIII,
    /// GRE inside UDP (RFC 8086).
    GreInUdp,
    /// IPv4 or IPv6 directly inside IPv4 or IPv6 (4in4, 6in4, 4in6, 6in6).
    IpInIp,
    Mpls,
}

impl EncapKind {
    pub const ALL: [EncapKind; 10] = [
        EncapKind::Vxlan,
        EncapKind::Geneve,
        EncapKind::Gre,
        EncapKind::GreTeb,
        EncapKind::ErspanI,
        EncapKind::ErspanII,
        EncapKind::ErspanIII,
        EncapKind::GreInUdp,
        EncapKind::IpInIp,
        EncapKind::Mpls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EncapKind::Vxlan => "vxlan",
            EncapKind::Geneve => "geneve",
            EncapKind::Gre => "gre",
            EncapKind::GreTeb => "gre_teb",
            EncapKind::ErspanI => "erspan_i",
            EncapKind::ErspanII => "erspan_ii",
            EncapKind::ErspanIII => "erspan_iii",
            EncapKind::GreInUdp => "gre_in_udp",
            EncapKind::IpInIp => "ip_in_ip",
            EncapKind::Mpls => "mpls",
        }
    }
}

/// One encapsulation a frame travelled in, and the session it names: the
/// VXLAN or GENEVE virtual network id, the ERSPAN session id, the GRE key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Encap {
    pub kind: EncapKind,
    pub session: Option<u32>,
}

/// The encapsulations opened around one frame, outermost first, and the
/// port of a UDP tunnel found on a port not configured for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encaps {
    layers: [Option<Encap>; MAX_ENCAPSULATIONS],
    /// Set with `Skip::UnconfiguredTunnel`.
    pub unconfigured: Option<(EncapKind, u16)>,
}

impl Encaps {
    pub fn iter(&self) -> impl Iterator<Item = &Encap> {
        self.layers.iter().flatten()
    }

    /// Just `e` (what a frame in one encapsulation comes out with).
    pub(super) fn one(e: Encap) -> Encaps {
        let mut layers = [None; MAX_ENCAPSULATIONS];
        layers[0] = Some(e);
        Encaps {
            layers,
            unconfigured: None,
        }
    }

    /// Whether nothing was opened and no tunnel found on another port.
    #[inline]
    pub fn is_empty(&self) -> bool {
        // Layers are filled outermost first.
        self.layers[0].is_none() && self.unconfigured.is_none()
    }

    /// The outermost encapsulation: the mirror session's.
    pub fn outer(&self) -> Option<Encap> {
        self.layers[0]
    }

    pub(super) fn push(&mut self, e: Encap) -> Result<(), DecodeError> {
        let free = self.layers.iter_mut().find(|l| l.is_none());
        *free.ok_or(DecodeError::TooManyEncapsulations {
            max: MAX_ENCAPSULATIONS,
        })? = Some(e);
        Ok(())
    }
}

/// Up to [`MAX_TUNNEL_PORTS`] UDP ports (a fixed array: decode allocates
/// nothing, and the standard set is a constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSet {
    ports: [u16; MAX_TUNNEL_PORTS],
    len: u8,
}

impl PortSet {
    pub const NONE: PortSet = PortSet {
        ports: [0; MAX_TUNNEL_PORTS],
        len: 0,
    };

    pub const fn one(port: u16) -> PortSet {
        let mut s = PortSet::NONE;
        s.ports[0] = port;
        s.len = 1;
        s
    }

    /// `None` if there are more than [`MAX_TUNNEL_PORTS`].
    pub fn new(ports: &[u16]) -> Option<PortSet> {
        let mut s = PortSet::NONE;
        s.ports.get_mut(..ports.len())?.copy_from_slice(ports);
        s.len = ports.len() as u8;
        Some(s)
    }

    pub fn as_slice(&self) -> &[u16] {
        self.ports.get(..usize::from(self.len)).unwrap_or_default()
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        // Every frame of a mirror session asks: a loop over the few ports
        // set, not a call.
        let len = usize::from(self.len);
        self.ports.iter().take(len).any(|&p| p == port)
    }
}

/// The UDP destination ports of each UDP encapsulation. GRE, ERSPAN,
/// IP-in-IP and MPLS need no port and are always opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decap {
    pub vxlan: PortSet,
    pub geneve: PortSet,
    pub gre_in_udp: PortSet,
}

impl Decap {
    /// The IANA ports: VXLAN 4789, GENEVE 6081, GRE-in-UDP 4754.
    pub const STANDARD: Decap = Decap {
        vxlan: PortSet::one(4789),
        geneve: PortSet::one(6081),
        gre_in_udp: PortSet::one(4754),
    };
}

impl Default for Decap {
    fn default() -> Self {
        Decap::STANDARD
    }
}

/// What an encapsulation header leads to.
pub(super) enum Next<'a> {
    Opened(Encap, Network<'a>),
    Skipped(Skip, Option<(EncapKind, u16)>),
}

fn opened(kind: EncapKind, session: Option<u32>, net: Network<'_>) -> Next<'_> {
    Next::Opened(Encap { kind, session }, net)
}

fn truncated(layer: Layer, needed: usize, data: &[u8]) -> DecodeError {
    DecodeError::Truncated {
        layer,
        needed,
        got: data.len(),
    }
}

fn invalid(layer: Layer, what: &'static str) -> DecodeError {
    DecodeError::Invalid { layer, what }
}

fn rest(data: &[u8], at: usize) -> &[u8] {
    data.get(at..).unwrap_or_default()
}

/// An inner Ethernet frame (VLAN tags and all, as a captured one).
fn ethernet(data: &[u8]) -> Result<Network<'_>, DecodeError> {
    link::network(LinkType::ETHERNET, data)
}

/// A UDP datagram: a tunnel on a configured port is opened; one that looks
/// like VXLAN or GENEVE elsewhere is skipped under its own reason. A UDP
/// header cut by the snaplen is just UDP (it cannot be told apart).
pub(super) fn udp<'a>(data: &'a [u8], decap: &Decap) -> Result<Next<'a>, DecodeError> {
    let Some(port) = be16(data, 2) else {
        return Ok(Next::Skipped(Skip::NotTcp, None));
    };
    let payload = rest(data, UDP_LEN);
    if decap.vxlan.contains(port) {
        vxlan(payload)
    } else if decap.geneve.contains(port) {
        geneve(payload)
    } else if decap.gre_in_udp.contains(port) {
        gre(payload, EncapKind::GreInUdp)
    } else {
        let looks = if looks_like_vxlan(payload) {
            Some((EncapKind::Vxlan, port))
        } else if looks_like_geneve(payload) {
            Some((EncapKind::Geneve, port))
        } else {
            None
        };
        let skip = if looks.is_some() {
            Skip::UnconfiguredTunnel
        } else {
            Skip::NotTcp
        };
        Ok(Next::Skipped(skip, looks))
    }
}

/// RFC 7348: flags (I set), 24 reserved bits, VNI, 8 reserved bits; then
/// Ethernet.
fn vxlan(data: &[u8]) -> Result<Next<'_>, DecodeError> {
    let vni = be32(data, 4).ok_or(truncated(Layer::Vxlan, VXLAN_LEN, data))?;
    let flags = u8_at(data, 0).unwrap_or_default();
    let session = (flags & VXLAN_FLAG_VNI != 0).then_some(vni >> 8);
    Ok(opened(
        EncapKind::Vxlan,
        session,
        ethernet(rest(data, VXLAN_LEN))?,
    ))
}

/// The VXLAN header exactly as RFC 7348 sets it (I flag only, reserved
/// bits zero) and an inner Ethernet frame carrying IP or a VLAN tag.
fn looks_like_vxlan(data: &[u8]) -> bool {
    be32(data, 0) == Some(u32::from(VXLAN_FLAG_VNI) << 24)
        && u8_at(data, 7) == Some(0)
        && be16(data, VXLAN_LEN + 12).is_some_and(is_inner_ethertype)
}

fn is_inner_ethertype(t: u16) -> bool {
    matches!(t, ETHERTYPE_IPV4 | ETHERTYPE_IPV6) || link::is_vlan(t)
}

/// RFC 8926: version 0, options length in words, O and C flags, protocol,
/// VNI; options (TLVs) walked to check they fill their length exactly.
fn geneve(data: &[u8]) -> Result<Next<'_>, DecodeError> {
    let head = be32(data, 0).ok_or(truncated(Layer::Geneve, GENEVE_LEN, data))?;
    let vni = be32(data, 4).ok_or(truncated(Layer::Geneve, GENEVE_LEN, data))? >> 8;
    if head >> 30 != 0 {
        return Err(invalid(Layer::Geneve, "version is not 0"));
    }
    let len = GENEVE_LEN + ((head >> 24) & 0x3f) as usize * 4;
    let options = data
        .get(GENEVE_LEN..len)
        .ok_or(truncated(Layer::Geneve, len, data))?;
    let mut at = 0;
    while at < options.len() {
        let words = u8_at(options, at + 3).map(|b| usize::from(b & 0x1f));
        let Some(words) = words else {
            return Err(invalid(Layer::Geneve, "option header past the options"));
        };
        at += 4 + words * 4;
    }
    if at != options.len() {
        return Err(invalid(Layer::Geneve, "option past the options length"));
    }
    let inner = rest(data, len);
    let net = match (head & 0xffff) as u16 {
        ETHERTYPE_TEB => ethernet(inner)?,
        ETHERTYPE_IPV4 => Network::Ipv4(inner),
        ETHERTYPE_IPV6 => Network::Ipv6(inner),
        _ => return Ok(Next::Skipped(Skip::NotIp, None)),
    };
    Ok(opened(EncapKind::Geneve, Some(vni), net))
}

fn looks_like_geneve(data: &[u8]) -> bool {
    // Version 0, reserved bits clear, Ethernet inside, reserved byte zero.
    be16(data, 0).is_some_and(|h| h & 0xc03f == 0)
        && be16(data, 2) == Some(ETHERTYPE_TEB)
        && u8_at(data, 7) == Some(0)
}

/// GRE version 0 (RFC 2784/2890): optional checksum, key and sequence
/// number, then what the protocol type names. Version 1 (PPTP) carries
/// PPP, not a mirror: skipped. Source routing (RFC 1701) is refused.
pub(super) fn gre(data: &[u8], kind: EncapKind) -> Result<Next<'_>, DecodeError> {
    let flags = be16(data, 0).ok_or(truncated(Layer::Gre, GRE_MIN_LEN, data))?;
    let protocol = be16(data, 2).ok_or(truncated(Layer::Gre, GRE_MIN_LEN, data))?;
    if flags & GRE_VERSION != 0 {
        return Ok(Next::Skipped(Skip::NotIp, None));
    }
    if flags & GRE_ROUTING != 0 {
        return Err(invalid(Layer::Gre, "source routing present"));
    }
    let mut len = GRE_MIN_LEN;
    if flags & GRE_CHECKSUM != 0 {
        len += 4;
    }
    let key = if flags & GRE_KEY != 0 {
        len += 4;
        Some(be32(data, len - 4).ok_or(truncated(Layer::Gre, len, data))?)
    } else {
        None
    };
    let sequenced = flags & GRE_SEQUENCE != 0;
    if sequenced {
        len += 4;
    }
    if data.len() < len {
        return Err(truncated(Layer::Gre, len, data));
    }
    let inner = rest(data, len);
    // Inside UDP the port names the encapsulation; otherwise what GRE carries.
    let named = |k: EncapKind| if kind == EncapKind::GreInUdp { kind } else { k };
    Ok(match protocol {
        ETHERTYPE_IPV4 => opened(named(EncapKind::Gre), key, Network::Ipv4(inner)),
        ETHERTYPE_IPV6 => opened(named(EncapKind::Gre), key, Network::Ipv6(inner)),
        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => {
            opened(named(EncapKind::Gre), key, Network::Mpls(inner))
        }
        ETHERTYPE_TEB => opened(named(EncapKind::GreTeb), key, ethernet(inner)?),
        // Type II has the sequence number; type I has neither it nor a header.
        ETHERTYPE_ERSPAN if sequenced => erspan(inner, 1, ERSPAN_II_LEN, EncapKind::ErspanII)?,
        ETHERTYPE_ERSPAN => opened(EncapKind::ErspanI, key, ethernet(inner)?),
        ETHERTYPE_ERSPAN_III => erspan(inner, 2, ERSPAN_III_LEN, EncapKind::ErspanIII)?,
        _ => Next::Skipped(Skip::NotIp, None),
    })
}

/// ERSPAN II (version 1, 8 bytes) or III (version 2, 12 bytes plus an
/// 8-byte platform subheader when the O flag is set): version and VLAN,
/// then class of service, flags and the 10-bit session id.
fn erspan(data: &[u8], version: u8, len: usize, kind: EncapKind) -> Result<Next<'_>, DecodeError> {
    if data.len() < len {
        return Err(truncated(Layer::Erspan, len, data));
    }
    if u8_at(data, 0).map(|b| b >> 4) != Some(version) {
        return Err(invalid(
            Layer::Erspan,
            "version does not match the GRE type",
        ));
    }
    let session = be16(data, 2).map(|s| u32::from(s & 0x03ff));
    let mut len = len;
    if kind == EncapKind::ErspanIII && u8_at(data, 11).is_some_and(|b| b & 1 != 0) {
        len += ERSPAN_III_SUBHEADER_LEN;
        if data.len() < len {
            return Err(truncated(Layer::Erspan, len, data));
        }
    }
    Ok(opened(kind, session, ethernet(rest(data, len))?))
}

/// IPv4 or IPv6 directly inside IP (protocol 4 or 41).
pub(super) fn ip_in_ip(proto: u8, data: &[u8]) -> Next<'_> {
    let net = if proto == PROTO_IPIP {
        Network::Ipv4(data)
    } else {
        Network::Ipv6(data)
    };
    opened(EncapKind::IpInIp, None, net)
}

/// An MPLS label stack (RFC 3032): labels up to the bottom-of-stack bit,
/// then IPv4 or IPv6 told by the first nibble. Anything else (a
/// pseudowire's control word, Ethernet) is not opened.
pub(super) fn mpls(data: &[u8]) -> Result<Next<'_>, DecodeError> {
    for i in 0..MAX_MPLS_LABELS {
        let at = i * MPLS_LABEL_LEN;
        let entry = be32(data, at).ok_or(truncated(Layer::Mpls, at + MPLS_LABEL_LEN, data))?;
        if entry & 0x100 != 0 {
            let inner = rest(data, at + MPLS_LABEL_LEN);
            let net = match u8_at(inner, 0).map(|b| b >> 4) {
                Some(4) => Network::Ipv4(inner),
                Some(6) => Network::Ipv6(inner),
                Some(_) => return Ok(Next::Skipped(Skip::NotIp, None)),
                None => return Err(truncated(Layer::Mpls, at + MPLS_LABEL_LEN + 1, data)),
            };
            return Ok(opened(EncapKind::Mpls, None, net));
        }
    }
    Err(invalid(Layer::Mpls, "label stack deeper than the limit"))
}
