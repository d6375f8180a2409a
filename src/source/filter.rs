//! `replay --filter`: a tcpdump expression, compiled by libpcap for each
//! link type the files carry (as tcpdump does for its one file), and run
//! on each frame before it is decoded. Frames it does not pass are counted.
//! Records of logs are not packets: the filter does not apply to them.

use crate::frame::{Frame, LinkType};

/// Link types one filter compiles for at most (a merged replay of many
/// files rarely holds more than two).
pub const MAX_LINK_TYPES: usize = 16;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// libpcap could not compile it for this link type.
    #[error("packet filter `{expr}` for link type {}({}): {why}", linktype.name(), linktype.0)]
    Compile {
        expr: String,
        linktype: LinkType,
        why: String,
    },
    #[error("packet filter `{expr}`: files of more than {MAX_LINK_TYPES} link types")]
    TooManyLinkTypes { expr: String },
}

/// An expression and its programs, one per link type met so far.
pub struct PacketFilter {
    expr: String,
    programs: Vec<(LinkType, pcap::BpfProgram)>,
    dropped: u64,
}

impl PacketFilter {
    /// Check the expression by compiling it for Ethernet (the other link
    /// types compile when a frame of theirs comes).
    pub fn new(expr: &str) -> Result<PacketFilter, FilterError> {
        let mut f = PacketFilter {
            expr: expr.to_string(),
            programs: Vec::new(),
            dropped: 0,
        };
        f.program(LinkType::ETHERNET)?;
        Ok(f)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Frames the filter did not pass.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether the frame passes (counted when not).
    pub fn passes(&mut self, f: &Frame<'_>) -> Result<bool, FilterError> {
        let pass = self.program(f.linktype)?.filter(f.data);
        self.dropped += u64::from(!pass);
        Ok(pass)
    }

    fn program(&mut self, lt: LinkType) -> Result<&pcap::BpfProgram, FilterError> {
        let i = match self.programs.iter().position(|(l, _)| *l == lt) {
            Some(i) => i,
            None => {
                if self.programs.len() >= MAX_LINK_TYPES {
                    return Err(FilterError::TooManyLinkTypes {
                        expr: self.expr.clone(),
                    });
                }
                let compile_error = |why: String| FilterError::Compile {
                    expr: self.expr.clone(),
                    linktype: lt,
                    why,
                };
                // libpcap opens handles by DLT value: the same as the
                // LINKTYPE value but for raw IP, DLT 12 here.
                let dlt = match lt {
                    LinkType::RAW | LinkType::RAW_OPENBSD => LinkType::RAW_BSD,
                    other => other,
                };
                let dead = pcap::Capture::dead(pcap::Linktype(i32::from(dlt.0)))
                    .map_err(|e| compile_error(e.to_string()))?;
                let bpf = dead
                    .compile(&self.expr, true)
                    .map_err(|e| compile_error(e.to_string()))?;
                self.programs.push((lt, bpf));
                self.programs.len() - 1
            }
        };
        Ok(&self.programs[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn syn(dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .tcp(40000, dport, 1, 1024)
            .syn()
            .write(&mut v, &[])
            .unwrap();
        v
    }

    fn frame(data: &[u8], linktype: LinkType) -> Frame<'_> {
        Frame {
            ts: Timestamp::ZERO,
            linktype,
            wire_len: data.len() as u32,
            data,
            interface: 0,
            ts_invalid: false,
        }
    }

    #[test]
    fn filter_passes_what_the_expression_selects_and_counts_the_rest() {
        let mut f = PacketFilter::new("tcp port 4242").unwrap();
        let (a, b) = (syn(4242), syn(4747));
        assert!(f.passes(&frame(&a, LinkType::ETHERNET)).unwrap());
        assert!(!f.passes(&frame(&b, LinkType::ETHERNET)).unwrap());
        assert!(!f.passes(&frame(&b, LinkType::ETHERNET)).unwrap());
        assert_eq!(f.dropped(), 2);
        // Raw IP: the same expression, compiled for that link type.
        assert!(f.passes(&frame(&a[14..], LinkType::RAW)).unwrap());
        assert!(!f.passes(&frame(&b[14..], LinkType::RAW)).unwrap());
        assert_eq!(f.dropped(), 3);
    }

    #[test]
    fn bad_expression_names_itself_and_libpcaps_error() {
        let e = PacketFilter::new("tcp portt 4242").err().unwrap();
        let text = e.to_string();
        assert!(text.contains("`tcp portt 4242`"), "{text}");
        assert!(text.contains("EN10MB(1)"), "{text}");
        assert!(matches!(e, FilterError::Compile { .. }));
    }

    #[test]
    fn expression_a_link_type_cannot_take_fails_on_its_first_frame() {
        let mut f = PacketFilter::new("ether host 01:01:01:01:01:01").unwrap();
        let a = syn(4242);
        assert!(f.passes(&frame(&a, LinkType::ETHERNET)).unwrap());
        assert!(matches!(
            f.passes(&frame(&a[14..], LinkType::RAW)),
            Err(FilterError::Compile { .. })
        ));
    }
}
