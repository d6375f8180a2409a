//! What a source hands the decoder: one captured [`Frame`] and its
//! [`LinkType`]. Below both `source` and `decode`, so neither reaches into
//! the other.

use crate::time::Timestamp;

/// A link-layer header type, as numbered by tcpdump.org's LINKTYPE_ registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkType(pub u16);

impl LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP, version read from the first nibble (also DLT 12/14 on some systems).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: like NULL but the family is big-endian.
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);
    /// DLT_RAW as numbered on some BSDs; savefiles carry it now and then.
    pub const RAW_BSD: LinkType = LinkType(12);
    pub const RAW_OPENBSD: LinkType = LinkType(14);

    /// Every link type `decode` opens (the fuzz target and proptests walk it).
    pub const SUPPORTED: [LinkType; 10] = [
        LinkType::NULL,
        LinkType::ETHERNET,
        LinkType::RAW,
        LinkType::LOOP,
        LinkType::LINUX_SLL,
        LinkType::IPV4,
        LinkType::IPV6,
        LinkType::LINUX_SLL2,
        LinkType::RAW_BSD,
        LinkType::RAW_OPENBSD,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LinkType::NULL => "NULL",
            LinkType::ETHERNET => "EN10MB",
            LinkType::RAW | LinkType::RAW_BSD | LinkType::RAW_OPENBSD => "RAW",
            LinkType::LOOP => "LOOP",
            LinkType::LINUX_SLL => "LINUX_SLL",
            LinkType::IPV4 => "IPV4",
            LinkType::IPV6 => "IPV6",
            LinkType::LINUX_SLL2 => "LINUX_SLL2",
            _ => "other",
        }
    }
}

/// One captured frame, borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    pub linktype: LinkType,
    /// Bytes on the wire; `data.len()` is what was captured.
    pub wire_len: u32,
    pub data: &'a [u8],
    /// Which interface of the source (pcapng interface index, or the position
    /// of `-i` on the command line).
    pub interface: u32,
    /// The record's own timestamp was out of range (a sub-second field of a
    /// second or more): `ts` is then the previous frame's, and the pipeline
    /// counts the frame as a decode error without letting it move time.
    pub ts_invalid: bool,
}

/// What takes the frames a source reads. Any closure is one; a type of
/// its own (`replay`'s pipeline) has its work inlined into the source's
/// record loop, which a closure's is not always.
pub trait FrameSink {
    fn frame(&mut self, frame: &Frame<'_>);
}

impl<F: FnMut(&Frame<'_>) + ?Sized> FrameSink for F {
    #[inline(always)]
    fn frame(&mut self, frame: &Frame<'_>) {
        self(frame)
    }
}
