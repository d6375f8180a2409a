//! Why a frame could not be decoded. The set is closed so that `reason()`
//! can be a metric label and a report key.

use thiserror::Error;

use super::segment::BadFlags;

/// The protocol layer at which decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Link,
    Vlan,
    Ipv4,
    Ipv6,
    Ipv6Extension,
    Vxlan,
    Geneve,
    Gre,
    Erspan,
    Mpls,
    Tcp,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Vlan => "vlan",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Extension => "ipv6_ext",
            Layer::Vxlan => "vxlan",
            Layer::Geneve => "geneve",
            Layer::Gre => "gre",
            Layer::Erspan => "erspan",
            Layer::Mpls => "mpls",
            Layer::Tcp => "tcp",
        }
    }
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum DecodeError {
    #[error("unsupported link type {linktype}")]
    UnsupportedLinkType { linktype: u16 },
    #[error("{} header truncated: needed {needed} bytes, got {got}", layer.as_str())]
    Truncated {
        layer: Layer,
        needed: usize,
        got: usize,
    },
    #[error("{} header invalid: {what}", layer.as_str())]
    Invalid { layer: Layer, what: &'static str },
    #[error("more than {max} stacked VLAN tags")]
    TooManyVlanTags { max: usize },
    #[error("more than {max} nested encapsulations")]
    TooManyEncapsulations { max: usize },
    #[error("tcp flags invalid: {}", match .0 { BadFlags::SynRst => "SYN with RST", BadFlags::SynFin => "SYN with FIN" })]
    BadFlags(BadFlags),
    /// The capture record's timestamp is out of range (a sub-second
    /// field of a second or more); the frame is not decoded.
    #[error("record timestamp out of range")]
    InvalidTimestamp,
}

impl DecodeError {
    /// A bounded label: one value per variant and layer.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedLinkType { .. } => "unsupported_linktype",
            DecodeError::Truncated { layer, .. } => match layer {
                Layer::Link => "truncated_link",
                Layer::Vlan => "truncated_vlan",
                Layer::Ipv4 => "truncated_ipv4",
                Layer::Ipv6 => "truncated_ipv6",
                Layer::Ipv6Extension => "truncated_ipv6_ext",
                Layer::Vxlan => "truncated_vxlan",
                Layer::Geneve => "truncated_geneve",
                Layer::Gre => "truncated_gre",
                Layer::Erspan => "truncated_erspan",
                Layer::Mpls => "truncated_mpls",
                Layer::Tcp => "truncated_tcp",
            },
            DecodeError::Invalid { layer, .. } => match layer {
                Layer::Link => "invalid_link",
                Layer::Vlan => "invalid_vlan",
                Layer::Ipv4 => "invalid_ipv4",
                Layer::Ipv6 => "invalid_ipv6",
                Layer::Ipv6Extension => "invalid_ipv6_ext",
                Layer::Vxlan => "invalid_vxlan",
                Layer::Geneve => "invalid_geneve",
                Layer::Gre => "invalid_gre",
                Layer::Erspan => "invalid_erspan",
                Layer::Mpls => "invalid_mpls",
                Layer::Tcp => "invalid_tcp",
            },
            DecodeError::TooManyVlanTags { .. } => "too_many_vlan_tags",
            DecodeError::TooManyEncapsulations { .. } => "too_many_encapsulations",
            DecodeError::BadFlags(BadFlags::SynRst) => "tcp_syn_rst",
            DecodeError::BadFlags(BadFlags::SynFin) => "tcp_syn_fin",
            DecodeError::InvalidTimestamp => "invalid_timestamp",
        }
    }
}
