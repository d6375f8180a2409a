//! pcap and pcapng savefiles, read with large buffered reads.
//!
//! This is a pure-Rust reader (libpcap is only used for live capture): one
//! buffer of [`READ_BUFFER_BYTES`] per file, filled with large reads, and
//! records are parsed and lent out where they lie in it, so reading copies
//! each byte once (kernel to buffer) and allocates nothing per packet.
//!
//! Invariants:
//! * Hostile bytes never panic and never make us allocate more than
//!   [`MAX_PCAPNG_BLOCK`] bytes: a pcap record larger than
//!   [`MAX_PCAP_CAPLEN`] or a pcapng block larger than [`MAX_PCAPNG_BLOCK`]
//!   stops the file.
//! * A damaged file is not an error: the reader delivers every record before
//!   the damage, then ends and records a [`Stopped`] saying how many records
//!   it read, at which byte offset it stopped, and why.
//! * A file that is not a capture at all (bad magic, unsupported version, a
//!   broken first section header) is refused by `open` with
//!   [`SourceError::NotACapture`].
//!
//! Formats accepted, following libpcap 1.10 where it and tshark disagree:
//! * pcap with magic `a1b2c3d4` (µs), `a1b23c4d` (ns) and Kuznetzov's
//!   "modified" `a1b2cd34` (µs, 24-byte record headers), in either byte order;
//!   version 2.0 to 2.4 (libpcap refuses 2.5 and 1.x; tshark reads 2.5). As in
//!   libpcap, versions before 2.3 store caplen and len the other way round,
//!   and 2.3 files are swapped when caplen > len.
//! * The pcap link-type field: the upper four bits (FCS length) and the
//!   FCS-present bit are masked off; the low 16 bits are the link type. A
//!   non-zero reserved field (bits 16–25) refuses the file, as tshark does
//!   (`libpcap__linktype-reserved-field-not-zero.pcap`; libpcap opens it but
//!   then cannot use link type 0x300000 either).
//! * pcapng 1.x: any number of sections, each in its own byte order; any
//!   number of interfaces per section, each with its own link type, snaplen,
//!   `if_tsresol` (powers of 10 and of 2) and `if_tsoffset`. Enhanced, Simple
//!   and the obsolete Packet Block carry frames; other blocks are skipped.
//!   Unlike libpcap 1.10 we do not give up when interfaces differ in link
//!   type or snaplen (tshark does not either): every frame carries its own
//!   interface's link type.
//!
//! Interface numbering: [`Frame::interface`] counts the file's interface
//! description blocks across all sections (0, 1, 2, …), so it is unique in
//! the file; a pcap file has interface 0. [`MergedFiles`] adds
//! `file index * MAX_INTERFACES_PER_FILE` so it is unique across files too.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use super::{Frame, LinkType, Poll, Source, SourceError};
use crate::time::Timestamp;

/// Size of each file's read buffer. Large reads keep replay I/O-cheap.
pub const READ_BUFFER_BYTES: usize = 128 << 10;
/// A pcap record claiming more captured bytes than this stops the file.
/// It is libpcap's own limit (`MAXIMUM_SNAPLEN`, 262144).
pub const MAX_PCAP_CAPLEN: u32 = 256 * 1024;
/// A pcapng block longer than this stops the file (libpcap uses the same
/// 16 MiB bound for blocks).
pub const MAX_PCAPNG_BLOCK: u32 = 16 * 1024 * 1024;
/// Most frames one [`Source::poll`] call delivers.
pub const BATCH_FRAMES: usize = 4096;
/// Interfaces one file may declare; more stops the file. Also the stride of
/// interface numbers between files in [`MergedFiles`].
pub const MAX_INTERFACES_PER_FILE: u32 = 1 << 16;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;
/// Bits 16–25 of the pcap link-type field must be zero.
const PCAP_LINKTYPE_RESERVED: u32 = 0x03FF_0000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The savefile format of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Pcap,
    PcapNg,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::PcapNg => "pcapng",
        }
    }
}

/// Why and where a file stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Records delivered before the damage.
    pub records: u64,
    /// Byte offset of the record or block that could not be read.
    pub offset: u64,
    pub reason: String,
}

/// What was learnt about one file while reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    pub path: String,
    pub format: Format,
    /// Link types of the frames read, ascending.
    pub linktypes: Vec<LinkType>,
    pub records: u64,
    pub first_ts: Option<Timestamp>,
    pub last_ts: Option<Timestamp>,
    /// `Some` if the file was damaged and reading stopped early.
    pub stopped: Option<Stopped>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        }
    }

    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }

    fn u64(self, b: &[u8]) -> u64 {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        match self {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        }
    }
}

/// How a pcap file stores caplen and len (libpcap's `lengths_swapped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lengths {
    Normal,
    Swapped,
    SwappedIfCaplenGreater,
}

#[derive(Debug)]
struct PcapState {
    endian: Endian,
    /// Nanoseconds per unit of the fraction field (1000 for µs, 1 for ns).
    frac_scale: u64,
    record_header_len: usize,
    lengths: Lengths,
    linktype: LinkType,
}

/// A pcapng interface: its link type and how to turn its ticks into ns.
#[derive(Debug)]
struct Interface {
    linktype: LinkType,
    snaplen: u32,
    /// Ticks per second (`if_tsresol`).
    ticks_per_sec: u128,
    /// `Some(n)` when one tick is exactly `n` nanoseconds: the fast path.
    ns_per_tick: Option<u64>,
    /// `if_tsoffset`, in nanoseconds.
    offset_ns: i128,
    /// Running number of this IDB in the file.
    seq: u32,
}

impl Interface {
    fn new(linktype: LinkType, snaplen: u32, seq: u32) -> Self {
        Interface {
            linktype,
            snaplen,
            ticks_per_sec: 1_000_000,
            ns_per_tick: Some(1_000),
            offset_ns: 0,
            seq,
        }
    }

    fn set_tsresol(&mut self, v: u8) {
        let exp = u32::from(v & 0x7F);
        let ticks = if v & 0x80 != 0 {
            1u128 << exp
        } else {
            10u128.checked_pow(exp).unwrap_or(u128::MAX)
        };
        self.ticks_per_sec = ticks;
        self.ns_per_tick = if u128::from(NANOS_PER_SEC) % ticks == 0 {
            Some((u128::from(NANOS_PER_SEC) / ticks) as u64)
        } else {
            None
        };
    }

    fn timestamp(&self, ticks: u64) -> Timestamp {
        let ns = match self.ns_per_tick {
            Some(n) if self.offset_ns == 0 => return Timestamp(ticks.saturating_mul(n)),
            Some(n) => i128::from(ticks) * i128::from(n),
            None => (u128::from(ticks) * u128::from(NANOS_PER_SEC) / self.ticks_per_sec) as i128,
        };
        Timestamp((ns + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64)
    }
}

#[derive(Debug)]
struct PcapNgState {
    endian: Endian,
    /// Interfaces of the current section.
    interfaces: Vec<Interface>,
    /// IDBs seen in the whole file.
    seen: u32,
}

#[derive(Debug)]
enum Kind {
    Pcap(PcapState),
    PcapNg(PcapNgState),
}

/// The record currently in `FileSource::buf`.
#[derive(Clone, Copy, Debug)]
struct Current {
    ts: Timestamp,
    linktype: LinkType,
    wire_len: u32,
    start: usize,
    end: usize,
    interface: u32,
}

/// What reading one record led to.
enum Step {
    Record(Current),
    /// A block with no frame (pcapng): read on.
    Skip,
    End,
    Stop {
        offset: u64,
        reason: String,
    },
}

/// One pcap or pcapng savefile.
#[derive(Debug)]
pub struct FileSource {
    path: String,
    win: Window,
    /// Bytes consumed so far.
    offset: u64,
    kind: Kind,
    current: Option<Current>,
    records: u64,
    first_ts: Option<Timestamp>,
    last_ts: Option<Timestamp>,
    linktypes: BTreeSet<LinkType>,
    last_linktype: Option<LinkType>,
    stopped: Option<Stopped>,
    ended: bool,
    interface_base: u32,
}

/// A file read through one large buffer. [`Window::take`] consumes bytes
/// and says where they lie in `buf`, so records are parsed in place.
#[derive(Debug)]
struct Window {
    file: File,
    buf: Vec<u8>,
    /// `buf[..pos]` is consumed, `buf[pos..len]` read but not yet consumed.
    pos: usize,
    len: usize,
}

impl Window {
    fn new(file: File) -> Self {
        Window {
            file,
            buf: vec![0; READ_BUFFER_BYTES],
            pos: 0,
            len: 0,
        }
    }

    /// Consumes up to `n` bytes and returns their place in `buf`, valid
    /// until the next call; shorter than `n` only at the end of the file.
    #[inline]
    fn take(&mut self, n: usize) -> io::Result<Range<usize>> {
        if self.len - self.pos < n {
            self.refill(n)?;
        }
        let start = self.pos;
        let end = start + n.min(self.len - start);
        self.pos = end;
        Ok(start..end)
    }

    /// Moves the unconsumed bytes to the front and reads until at least `n`
    /// are there or the file ends. The buffer grows only for a record
    /// larger than it (up to [`MAX_PCAPNG_BLOCK`]).
    #[cold]
    fn refill(&mut self, n: usize) -> io::Result<()> {
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        while self.len < n {
            match self.file.read(&mut self.buf[self.len..]) {
                Ok(0) => break,
                Ok(k) => self.len += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Consumes up to `N` bytes and copies them out; returns how many.
    fn read_array<const N: usize>(&mut self) -> io::Result<([u8; N], usize)> {
        let r = self.take(N)?;
        let mut out = [0u8; N];
        out[..r.len()].copy_from_slice(&self.buf[r.clone()]);
        Ok((out, r.len()))
    }
}

fn not_a_capture(path: &str, what: impl Into<String>) -> SourceError {
    SourceError::NotACapture {
        path: path.to_string(),
        what: what.into(),
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl FileSource {
    /// Opens a savefile and reads its file header (pcap) or first section
    /// header block (pcapng).
    pub fn open(path: impl AsRef<Path>) -> Result<FileSource, SourceError> {
        let path_ref = path.as_ref();
        let path = path_ref.display().to_string();
        let io_err = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(path_ref).map_err(io_err)?;
        let mut win = Window::new(file);
        let (magic, n) = win.read_array::<4>().map_err(io_err)?;
        if n < 4 {
            return Err(not_a_capture(&path, format!("file is only {n} bytes long")));
        }
        let mut src = FileSource {
            path,
            win,
            offset: 4,
            kind: Kind::PcapNg(PcapNgState {
                endian: Endian::Little,
                interfaces: Vec::new(),
                seen: 0,
            }),
            current: None,
            records: 0,
            first_ts: None,
            last_ts: None,
            linktypes: BTreeSet::new(),
            last_linktype: None,
            stopped: None,
            ended: false,
            interface_base: 0,
        };
        if u32::from_le_bytes(magic) == PCAPNG_SHB {
            let (head, n) = src.win.read_array::<8>().map_err(|e| src.io_error(e))?;
            if n < head.len() {
                return Err(not_a_capture(&src.path, "truncated section header block"));
            }
            match src.read_shb(0, head).map_err(|e| src.io_error(e))? {
                Ok(()) => {}
                Err(reason) => return Err(not_a_capture(&src.path, reason)),
            }
        } else {
            src.kind = Kind::Pcap(src.read_pcap_header(magic)?);
        }
        Ok(src)
    }

    fn read_pcap_header(&mut self, magic: [u8; 4]) -> Result<PcapState, SourceError> {
        let (endian, frac_scale, record_header_len) = match u32::from_le_bytes(magic) {
            0xA1B2_C3D4 => (Endian::Little, 1_000, 16),
            0xD4C3_B2A1 => (Endian::Big, 1_000, 16),
            0xA1B2_3C4D => (Endian::Little, 1, 16),
            0x4D3C_B2A1 => (Endian::Big, 1, 16),
            0xA1B2_CD34 => (Endian::Little, 1_000, 24),
            0x34CD_B2A1 => (Endian::Big, 1_000, 24),
            m => {
                return Err(not_a_capture(
                    &self.path,
                    format!("unknown magic 0x{m:08x}"),
                ))
            }
        };
        let (rest, n) = self.win.read_array::<20>().map_err(|e| self.io_error(e))?;
        if n < rest.len() {
            return Err(not_a_capture(&self.path, "truncated pcap file header"));
        }
        self.offset += 20;
        let (major, minor) = (endian.u16(&rest[0..2]), endian.u16(&rest[2..4]));
        if major != 2 || minor > 4 {
            return Err(not_a_capture(
                &self.path,
                format!("pcap version {major}.{minor} unsupported (2.0 to 2.4 are)"),
            ));
        }
        let field = endian.u32(&rest[16..20]);
        if field & PCAP_LINKTYPE_RESERVED != 0 {
            return Err(not_a_capture(
                &self.path,
                format!("link-type field 0x{field:08x}: reserved bits not zero"),
            ));
        }
        let lengths = match minor {
            0..=2 => Lengths::Swapped,
            3 => Lengths::SwappedIfCaplenGreater,
            _ => Lengths::Normal,
        };
        Ok(PcapState {
            endian,
            frac_scale,
            record_header_len,
            lengths,
            linktype: LinkType((field & 0xFFFF) as u16),
        })
    }

    /// Reads the rest of a section header block starting at `at`, whose
    /// type is consumed and whose length and byte-order magic are `head`.
    /// The outer error is I/O; the inner one a damaged block.
    fn read_shb(&mut self, at: u64, head: [u8; 8]) -> io::Result<Result<(), String>> {
        let endian = if u32::from_le_bytes([head[4], head[5], head[6], head[7]])
            == PCAPNG_BYTE_ORDER_MAGIC
        {
            Endian::Little
        } else if u32::from_be_bytes([head[4], head[5], head[6], head[7]])
            == PCAPNG_BYTE_ORDER_MAGIC
        {
            Endian::Big
        } else {
            return Ok(Err("section header block: bad byte-order magic".into()));
        };
        let total = endian.u32(&head[0..4]);
        if total < 28 || total % 4 != 0 || total > MAX_PCAPNG_BLOCK {
            return Ok(Err(format!("section header block length {total} invalid")));
        }
        let rest = total as usize - 12;
        let r = self.win.take(rest)?;
        let n = r.len();
        if n < rest {
            return Ok(Err(format!(
                "truncated section header block: {} of {total} bytes",
                n + 12
            )));
        }
        let body = &self.win.buf[r];
        let trailer = endian.u32(&body[rest - 4..]);
        if trailer != total {
            return Ok(Err(format!(
                "block length {total} in header and {trailer} in trailer differ"
            )));
        }
        let (major, minor) = (endian.u16(&body[0..2]), endian.u16(&body[2..4]));
        if major != 1 {
            return Ok(Err(format!("pcapng version {major}.{minor} unsupported")));
        }
        self.offset = at + u64::from(total);
        self.kind = Kind::PcapNg(PcapNgState {
            endian,
            interfaces: Vec::new(),
            seen: match &self.kind {
                Kind::PcapNg(s) => s.seen,
                Kind::Pcap(_) => 0,
            },
        });
        Ok(Ok(()))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn format(&self) -> Format {
        match self.kind {
            Kind::Pcap(_) => Format::Pcap,
            Kind::PcapNg(_) => Format::PcapNg,
        }
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// `Some` once the file stopped early on damage.
    pub fn stopped(&self) -> Option<&Stopped> {
        self.stopped.as_ref()
    }

    /// True once the last record was read (cleanly or not).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    pub fn facts(&self) -> FileFacts {
        FileFacts {
            path: self.path.clone(),
            format: self.format(),
            linktypes: self.linktypes.iter().copied().collect(),
            records: self.records,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            stopped: self.stopped.clone(),
        }
    }

    /// The record loaded by the last successful [`FileSource::advance`].
    fn current_frame(&self) -> Option<Frame<'_>> {
        let c = self.current?;
        Some(Frame {
            ts: c.ts,
            linktype: c.linktype,
            wire_len: c.wire_len,
            data: &self.win.buf[c.start..c.end],
            interface: c.interface,
        })
    }

    /// Reads the next frame, or `None` at the end of the file (clean or on
    /// damage; see [`FileSource::stopped`]).
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.advance() {
            self.current_frame()
        } else {
            None
        }
    }

    /// Loads the next record into the buffer; false at the end.
    fn advance(&mut self) -> bool {
        self.current = None;
        if self.ended {
            return false;
        }
        loop {
            let step = match self.kind {
                Kind::Pcap(_) => self.read_pcap_record(),
                Kind::PcapNg(_) => self.read_pcapng_block(),
            };
            let step = step.unwrap_or_else(|e| Step::Stop {
                offset: self.offset,
                reason: format!("read error: {e}"),
            });
            match step {
                Step::Record(c) => {
                    self.records += 1;
                    if self.first_ts.is_none() {
                        self.first_ts = Some(c.ts);
                    }
                    self.last_ts = Some(c.ts);
                    if self.last_linktype != Some(c.linktype) {
                        self.linktypes.insert(c.linktype);
                        self.last_linktype = Some(c.linktype);
                    }
                    self.current = Some(c);
                    return true;
                }
                Step::Skip => continue,
                Step::End => {
                    self.ended = true;
                    return false;
                }
                Step::Stop { offset, reason } => {
                    self.ended = true;
                    self.stopped = Some(Stopped {
                        records: self.records,
                        offset,
                        reason,
                    });
                    return false;
                }
            }
        }
    }

    fn read_pcap_record(&mut self) -> io::Result<Step> {
        let Kind::Pcap(st) = &self.kind else {
            return Ok(Step::End);
        };
        let at = self.offset;
        let hl = st.record_header_len;
        let r = self.win.take(hl)?;
        let n = r.len();
        if n == 0 {
            return Ok(Step::End);
        }
        if n < hl {
            return Ok(Step::Stop {
                offset: at,
                reason: format!("truncated record header: {n} of {hl} bytes"),
            });
        }
        let e = st.endian;
        let hdr = &self.win.buf[r];
        let secs = e.u32(&hdr[0..4]);
        let frac = e.u32(&hdr[4..8]);
        let (mut caplen, mut len) = (e.u32(&hdr[8..12]), e.u32(&hdr[12..16]));
        let swap = match st.lengths {
            Lengths::Normal => false,
            Lengths::Swapped => true,
            Lengths::SwappedIfCaplenGreater => caplen > len,
        };
        if swap {
            std::mem::swap(&mut caplen, &mut len);
        }
        if caplen > MAX_PCAP_CAPLEN {
            return Ok(Step::Stop {
                offset: at,
                reason: format!("record caplen {caplen} larger than {MAX_PCAP_CAPLEN}"),
            });
        }
        let ts = pcap_timestamp(secs, frac, st.frac_scale);
        let linktype = st.linktype;
        let cl = caplen as usize;
        let data = self.win.take(cl)?;
        let got = data.len();
        if got < cl {
            return Ok(Step::Stop {
                offset: at,
                reason: format!("truncated record: caplen {caplen}, only {got} bytes left"),
            });
        }
        self.offset = at + (hl + cl) as u64;
        Ok(Step::Record(Current {
            ts,
            linktype,
            wire_len: len,
            start: data.start,
            end: data.end,
            interface: self.interface_base,
        }))
    }

    fn read_pcapng_block(&mut self) -> io::Result<Step> {
        let at = self.offset;
        let (hdr, n) = self.win.read_array::<8>()?;
        if n == 0 {
            return Ok(Step::End);
        }
        if n < hdr.len() {
            return Ok(Step::Stop {
                offset: at,
                reason: format!("truncated block header: {n} of 8 bytes"),
            });
        }
        if u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) == PCAPNG_SHB {
            return self.read_next_shb(at, [hdr[4], hdr[5], hdr[6], hdr[7]]);
        }
        let Kind::PcapNg(st) = &self.kind else {
            return Ok(Step::End);
        };
        let e = st.endian;
        let btype = e.u32(&hdr[0..4]);
        let total = e.u32(&hdr[4..8]);
        if total < 12 || total % 4 != 0 {
            return Ok(Step::Stop {
                offset: at,
                reason: format!("block type {btype}: length {total} invalid"),
            });
        }
        if total > MAX_PCAPNG_BLOCK {
            return Ok(Step::Stop {
                offset: at,
                reason: format!(
                    "block type {btype}: length {total} larger than {MAX_PCAPNG_BLOCK}"
                ),
            });
        }
        let rest = total as usize - 8;
        let r = self.win.take(rest)?;
        let got = r.len();
        if got < rest {
            return Ok(Step::Stop {
                offset: at,
                reason: format!("truncated block type {btype}: {} of {total} bytes", got + 8),
            });
        }
        let block = &self.win.buf[r.clone()];
        let trailer = e.u32(&block[rest - 4..rest]);
        if trailer != total {
            return Ok(Step::Stop {
                offset: at,
                reason: format!(
                    "block type {btype}: length {total} in header and {trailer} in trailer differ"
                ),
            });
        }
        self.offset = at + u64::from(total);
        let body_len = rest - 4;
        let Kind::PcapNg(st) = &mut self.kind else {
            return Ok(Step::End);
        };
        let body = &self.win.buf[r.start..r.start + body_len];
        let base = r.start;
        let stop = |reason: String| Ok(Step::Stop { offset: at, reason });
        match btype {
            PCAPNG_IDB => {
                if body.len() < 8 {
                    return stop("interface description block too short".into());
                }
                if st.seen >= MAX_INTERFACES_PER_FILE {
                    return stop(format!("more than {MAX_INTERFACES_PER_FILE} interfaces"));
                }
                let mut iface =
                    Interface::new(LinkType(e.u16(&body[0..2])), e.u32(&body[4..8]), st.seen);
                let mut pos = 8;
                while pos + 4 <= body.len() {
                    let code = e.u16(&body[pos..pos + 2]);
                    let olen = e.u16(&body[pos + 2..pos + 4]) as usize;
                    let v = pos + 4;
                    if code == OPT_END || v + olen > body.len() {
                        break;
                    }
                    match (code, olen) {
                        (OPT_IF_TSRESOL, 1) => iface.set_tsresol(body[v]),
                        (OPT_IF_TSOFFSET, 8) => {
                            let secs = e.u64(&body[v..v + 8]) as i64;
                            iface.offset_ns = i128::from(secs) * i128::from(NANOS_PER_SEC);
                        }
                        _ => {}
                    }
                    pos = v + pad4(olen);
                }
                st.seen += 1;
                st.interfaces.push(iface);
                Ok(Step::Skip)
            }
            PCAPNG_EPB | PCAPNG_PB => {
                if body.len() < 20 {
                    return stop(format!("block type {btype} too short"));
                }
                let id = if btype == PCAPNG_EPB {
                    e.u32(&body[0..4])
                } else {
                    u32::from(e.u16(&body[0..2]))
                };
                let ticks = (u64::from(e.u32(&body[4..8])) << 32) | u64::from(e.u32(&body[8..12]));
                let caplen = e.u32(&body[12..16]);
                let wire_len = e.u32(&body[16..20]);
                if caplen as usize > body.len() - 20 {
                    return stop(format!(
                        "block type {btype}: caplen {caplen} exceeds the block ({} bytes of data)",
                        body.len() - 20
                    ));
                }
                let Some(iface) = st.interfaces.get(id as usize) else {
                    return stop(format!("packet on undeclared interface {id}"));
                };
                Ok(Step::Record(Current {
                    ts: iface.timestamp(ticks),
                    linktype: iface.linktype,
                    wire_len,
                    start: base + 20,
                    end: base + 20 + caplen as usize,
                    interface: self.interface_base + iface.seq,
                }))
            }
            PCAPNG_SPB => {
                if body.len() < 4 {
                    return stop("simple packet block too short".into());
                }
                let Some(iface) = st.interfaces.first() else {
                    return stop("simple packet block before any interface".into());
                };
                let wire_len = e.u32(&body[0..4]);
                let mut caplen = (wire_len as usize).min(body.len() - 4);
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                Ok(Step::Record(Current {
                    // A simple packet block has no timestamp: keep the last.
                    ts: self.last_ts.unwrap_or(Timestamp::ZERO),
                    linktype: iface.linktype,
                    wire_len,
                    start: base + 4,
                    end: base + 4 + caplen,
                    interface: self.interface_base + iface.seq,
                }))
            }
            _ => Ok(Step::Skip),
        }
    }

    /// A new section starts at `at`; `len` are its (raw) length bytes.
    fn read_next_shb(&mut self, at: u64, len: [u8; 4]) -> io::Result<Step> {
        let (bom, n) = self.win.read_array::<4>()?;
        if n < 4 {
            return Ok(Step::Stop {
                offset: at,
                reason: "truncated section header block".into(),
            });
        }
        let head = [
            len[0], len[1], len[2], len[3], bom[0], bom[1], bom[2], bom[3],
        ];
        match self.read_shb(at, head)? {
            Ok(()) => Ok(Step::Skip),
            Err(reason) => Ok(Step::Stop { offset: at, reason }),
        }
    }

    fn io_error(&self, source: io::Error) -> SourceError {
        SourceError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn pcap_timestamp(secs: u32, frac: u32, frac_scale: u64) -> Timestamp {
    Timestamp(u64::from(secs) * NANOS_PER_SEC + u64::from(frac).saturating_mul(frac_scale))
}

impl FileSource {
    /// Delivers up to `budget` frames of a plain pcap file straight from
    /// the buffer while whole, sane records lie in it: no refill, no
    /// `Step`, no per-record bookkeeping beyond the counters. Anything else
    /// (the first record, a refill, the modified or swapped formats, a
    /// record `read_pcap_record` would stop on) is left to [`Self::advance`],
    /// so both paths give the same frames; `replay` spends most of its
    /// time here.
    fn poll_buffered_pcap(&mut self, sink: &mut dyn FnMut(&Frame<'_>), budget: usize) -> usize {
        let Kind::Pcap(st) = &self.kind else {
            return 0;
        };
        if self.ended
            || st.record_header_len != 16
            || st.lengths != Lengths::Normal
            || self.last_linktype != Some(st.linktype)
        {
            return 0;
        }
        let (e, scale, linktype, interface) =
            (st.endian, st.frac_scale, st.linktype, self.interface_base);
        let (buf, start, len) = (&self.win.buf, self.win.pos, self.win.len);
        let (mut pos, mut n, mut last) = (start, 0, None);
        while n < budget {
            let Some(hdr) = buf.get(pos..pos + 16) else {
                break;
            };
            let caplen = e.u32(&hdr[8..12]);
            let end = pos + 16 + caplen as usize;
            if caplen > MAX_PCAP_CAPLEN || end > len {
                break;
            }
            let ts = pcap_timestamp(e.u32(&hdr[0..4]), e.u32(&hdr[4..8]), scale);
            sink(&Frame {
                ts,
                linktype,
                wire_len: e.u32(&hdr[12..16]),
                data: &buf[pos + 16..end],
                interface,
            });
            last = Some(ts);
            pos = end;
            n += 1;
        }
        if n > 0 {
            self.win.pos = pos;
            self.offset += (pos - start) as u64;
            self.records += n as u64;
            self.last_ts = last;
            self.current = None;
        }
        n
    }
}

impl Source for FileSource {
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        let mut n = 0;
        while n < BATCH_FRAMES {
            n += self.poll_buffered_pcap(sink, BATCH_FRAMES - n);
            if n == BATCH_FRAMES {
                break;
            }
            match self.next_frame() {
                Some(frame) => sink(&frame),
                None => break,
            }
            n += 1;
        }
        Ok(if n == 0 { Poll::End } else { Poll::Frames(n) })
    }
}

/// Several savefiles read as one, in timestamp order: a k-way merge over
/// one [`FileSource`] per file. Frames with equal timestamps come in the
/// order of the paths given. A file that stops early on damage is recorded
/// in its [`FileFacts`] and the others go on.
///
/// `Frame::interface` is `file index * MAX_INTERFACES_PER_FILE` plus the
/// interface number within the file.
#[derive(Debug)]
pub struct MergedFiles {
    files: Vec<FileSource>,
    /// Files whose current record is loaded, keyed by that record's time.
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
    primed: bool,
}

impl MergedFiles {
    /// Opens every file; the first that cannot be opened is the error (it
    /// names the file).
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<MergedFiles, SourceError> {
        let mut files = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            let mut f = FileSource::open(p)?;
            f.interface_base = u32::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(MAX_INTERFACES_PER_FILE))
                .ok_or_else(|| not_a_capture(f.path(), "too many files"))?;
            files.push(f);
        }
        Ok(MergedFiles {
            heap: BinaryHeap::with_capacity(files.len()),
            files,
            primed: false,
        })
    }

    pub fn files(&self) -> &[FileSource] {
        &self.files
    }

    /// Facts about each file, in the order the paths were given.
    pub fn facts(&self) -> Vec<FileFacts> {
        self.files.iter().map(FileSource::facts).collect()
    }
}

impl Source for MergedFiles {
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        // One file needs no merge heap (the common replay): read it directly.
        if let (false, [file]) = (self.primed, self.files.as_mut_slice()) {
            return file.poll(sink);
        }
        Ok(self.poll_until(None, sink))
    }
}

impl MergedFiles {
    /// The timestamp of the next frame, or `None` at the end of all files.
    pub fn next_ts(&mut self) -> Option<Timestamp> {
        self.prime();
        self.heap.peek().map(|Reverse((ts, _))| *ts)
    }

    fn prime(&mut self) {
        if !self.primed {
            self.primed = true;
            for (i, f) in self.files.iter_mut().enumerate() {
                if f.advance() {
                    if let Some(c) = f.current {
                        self.heap.push(Reverse((c.ts, i)));
                    }
                }
            }
        }
    }

    /// Deliver up to a batch of frames, stopping before the first one later
    /// than `until` (if given): [`Poll::Idle`] when that frame is not due yet.
    pub fn poll_until(
        &mut self,
        until: Option<Timestamp>,
        sink: &mut dyn FnMut(&Frame<'_>),
    ) -> Poll {
        self.prime();
        let mut n = 0;
        while n < BATCH_FRAMES {
            let Some(mut top) = self.heap.peek_mut() else {
                break;
            };
            if until.is_some_and(|u| top.0 .0 > u) {
                return if n == 0 { Poll::Idle } else { Poll::Frames(n) };
            }
            let i = top.0 .1;
            let file = &mut self.files[i];
            if let Some(frame) = file.current_frame() {
                sink(&frame);
                n += 1;
            }
            match file.advance().then_some(file.current).flatten() {
                Some(c) => top.0 = (c.ts, i),
                None => {
                    std::collections::binary_heap::PeekMut::pop(top);
                }
            }
        }
        if n == 0 {
            Poll::End
        } else {
            Poll::Frames(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// One frame as read, owned.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Got {
        ts: u64,
        linktype: u16,
        wire_len: u32,
        data: Vec<u8>,
        interface: u32,
    }

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portwatch-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn drain(src: &mut dyn Source) -> Vec<Got> {
        let mut out = Vec::new();
        loop {
            let mut sink = |f: &Frame<'_>| {
                out.push(Got {
                    ts: f.ts.0,
                    linktype: f.linktype.0,
                    wire_len: f.wire_len,
                    data: f.data.to_vec(),
                    interface: f.interface,
                })
            };
            match src.poll(&mut sink).unwrap() {
                Poll::Frames(_) => {}
                Poll::End => return out,
                Poll::Idle => panic!("a file never idles"),
            }
        }
    }

    fn read(name: &str, bytes: &[u8]) -> (Vec<Got>, FileFacts) {
        let mut src = FileSource::open(temp(name, bytes)).unwrap();
        let got = drain(&mut src);
        (got, src.facts())
    }

    fn put16(v: &mut Vec<u8>, big: bool, x: u16) {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    fn put32(v: &mut Vec<u8>, big: bool, x: u32) {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        });
    }

    fn pcap_header(big: bool, magic: u32, version: (u16, u16), linktype_field: u32) -> Vec<u8> {
        let mut v = Vec::new();
        put32(&mut v, big, magic);
        put16(&mut v, big, version.0);
        put16(&mut v, big, version.1);
        put32(&mut v, big, 0);
        put32(&mut v, big, 0);
        put32(&mut v, big, 65535);
        put32(&mut v, big, linktype_field);
        v
    }

    fn pcap_record(v: &mut Vec<u8>, big: bool, secs: u32, frac: u32, data: &[u8], wire: u32) {
        put32(v, big, secs);
        put32(v, big, frac);
        put32(v, big, data.len() as u32);
        put32(v, big, wire);
        v.extend_from_slice(data);
    }

    fn block(big: bool, btype: u32, body: &[u8]) -> Vec<u8> {
        let total = (12 + pad4(body.len())) as u32;
        let mut v = Vec::new();
        put32(&mut v, big, btype);
        put32(&mut v, big, total);
        v.extend_from_slice(body);
        v.resize(8 + pad4(body.len()), 0);
        put32(&mut v, big, total);
        v
    }

    fn shb(big: bool) -> Vec<u8> {
        let mut b = Vec::new();
        put32(&mut b, big, PCAPNG_BYTE_ORDER_MAGIC);
        put16(&mut b, big, 1);
        put16(&mut b, big, 0);
        b.extend_from_slice(&[0xFF; 8]); // section length: unknown
        block(big, PCAPNG_SHB, &b)
    }

    fn idb(
        big: bool,
        linktype: u16,
        snaplen: u32,
        tsresol: Option<u8>,
        tsoffset: Option<i64>,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        put16(&mut b, big, linktype);
        put16(&mut b, big, 0);
        put32(&mut b, big, snaplen);
        if let Some(r) = tsresol {
            put16(&mut b, big, OPT_IF_TSRESOL);
            put16(&mut b, big, 1);
            b.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            put16(&mut b, big, OPT_IF_TSOFFSET);
            put16(&mut b, big, 8);
            b.extend_from_slice(&if big {
                o.to_be_bytes()
            } else {
                o.to_le_bytes()
            });
        }
        put16(&mut b, big, OPT_END);
        put16(&mut b, big, 0);
        block(big, PCAPNG_IDB, &b)
    }

    fn epb(big: bool, iface: u32, ticks: u64, data: &[u8], wire: u32) -> Vec<u8> {
        let mut b = Vec::new();
        put32(&mut b, big, iface);
        put32(&mut b, big, (ticks >> 32) as u32);
        put32(&mut b, big, ticks as u32);
        put32(&mut b, big, data.len() as u32);
        put32(&mut b, big, wire);
        b.extend_from_slice(data);
        block(big, PCAPNG_EPB, &b)
    }

    fn spb(big: bool, data: &[u8], wire: u32) -> Vec<u8> {
        let mut b = Vec::new();
        put32(&mut b, big, wire);
        b.extend_from_slice(data);
        block(big, PCAPNG_SPB, &b)
    }

    fn pb(big: bool, iface: u16, ticks: u64, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        put16(&mut b, big, iface);
        put16(&mut b, big, 0);
        put32(&mut b, big, (ticks >> 32) as u32);
        put32(&mut b, big, ticks as u32);
        put32(&mut b, big, data.len() as u32);
        put32(&mut b, big, data.len() as u32);
        b.extend_from_slice(data);
        block(big, PCAPNG_PB, &b)
    }

    fn not_a_capture_what(bytes: &[u8], name: &str) -> String {
        match FileSource::open(temp(name, bytes)) {
            Err(SourceError::NotACapture { what, .. }) => what,
            other => panic!("{name}: expected NotACapture, got {other:?}"),
        }
    }

    #[test]
    fn pcap_microseconds_little_endian() {
        let mut f = pcap_header(false, 0xA1B2_C3D4, (2, 4), 1);
        pcap_record(&mut f, false, 1_700_000_000, 123_456, b"abc", 60);
        pcap_record(&mut f, false, 1_700_000_001, 999_999, b"", 0);
        let (got, facts) = read("us.pcap", &f);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ts, 1_700_000_000_123_456_000);
        assert_eq!((got[0].linktype, got[0].wire_len), (1, 60));
        assert_eq!(got[0].data, b"abc");
        assert_eq!(got[1].ts, 1_700_000_001_999_999_000);
        assert_eq!(facts.format, Format::Pcap);
        assert_eq!(facts.records, 2);
        assert_eq!(facts.linktypes, vec![LinkType::ETHERNET]);
        assert_eq!(facts.first_ts, Some(Timestamp(1_700_000_000_123_456_000)));
        assert_eq!(facts.last_ts, Some(Timestamp(1_700_000_001_999_999_000)));
        assert_eq!(facts.stopped, None);
    }

    #[test]
    fn pcap_nanoseconds_big_endian() {
        let mut f = pcap_header(true, 0xA1B2_3C4D, (2, 4), 101);
        pcap_record(&mut f, true, 1_700_000_000, 123_456_789, &[0x45; 20], 40);
        let (got, _) = read("ns-be.pcap", &f);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ts, 1_700_000_000_123_456_789);
        assert_eq!((got[0].linktype, got[0].wire_len), (101, 40));
        assert_eq!(got[0].data, [0x45; 20]);
    }

    #[test]
    fn pcap_written_by_libpcap_reads_back() {
        let path = temp("libpcap-written.pcap", b"");
        {
            let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
            let mut save = cap.savefile(&path).unwrap();
            for i in 0..3u8 {
                let header = pcap::PacketHeader {
                    ts: libc_timeval(1_600_000_000 + i64::from(i), 250_000),
                    caplen: 4,
                    len: 100,
                };
                save.write(&pcap::Packet::new(&header, &[i; 4]));
            }
            save.flush().unwrap();
        }
        let mut src = FileSource::open(&path).unwrap();
        let got = drain(&mut src);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].ts, 1_600_000_002_250_000_000);
        assert_eq!((got[2].wire_len, got[2].data.clone()), (100, vec![2; 4]));
    }

    fn libc_timeval(sec: i64, usec: i64) -> libc::timeval {
        libc::timeval {
            tv_sec: sec as _,
            tv_usec: usec as _,
        }
    }

    #[test]
    fn pcap_modified_format_has_24_byte_records() {
        let mut f = pcap_header(false, 0xA1B2_CD34, (2, 4), 1);
        pcap_record(&mut f, false, 10, 5, b"", 0);
        // Turn the 16-byte header into a 24-byte one: caplen 2, then the
        // modified fields, then the data.
        f.truncate(24 + 8);
        put32(&mut f, false, 2);
        put32(&mut f, false, 2);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(b"hi");
        let (got, facts) = read("modified.pcap", &f);
        assert_eq!(got.len(), 1, "{facts:?}");
        assert_eq!(
            (got[0].ts, got[0].data.clone()),
            (10_000_005_000, b"hi".to_vec())
        );
    }

    #[test]
    fn pcap_old_versions_swap_caplen_and_len() {
        let mut f = pcap_header(false, 0xA1B2_C3D4, (2, 2), 1);
        // Version 2.2 writes len first, then caplen.
        put32(&mut f, false, 1);
        put32(&mut f, false, 0);
        put32(&mut f, false, 500);
        put32(&mut f, false, 3);
        f.extend_from_slice(b"xyz");
        let (got, _) = read("v22.pcap", &f);
        assert_eq!(
            (got[0].wire_len, got[0].data.clone()),
            (500, b"xyz".to_vec())
        );
    }

    #[test]
    fn pcap_linktype_fcs_bits_are_masked_and_reserved_bits_refused() {
        let mut f = pcap_header(false, 0xA1B2_C3D4, (2, 4), 0x3000_0001);
        pcap_record(&mut f, false, 1, 0, b"x", 1);
        let (got, facts) = read("fcs.pcap", &f);
        assert_eq!(got[0].linktype, 1);
        assert_eq!(facts.linktypes, vec![LinkType::ETHERNET]);
        let f = pcap_header(false, 0xA1B2_C3D4, (2, 4), 0x0030_0000);
        let what = not_a_capture_what(&f, "reserved.pcap");
        assert!(what.contains("reserved"), "{what}");
    }

    #[test]
    fn not_captures_are_refused_at_open() {
        let what = not_a_capture_what(&pcap_header(false, 0xA1B2_C3D4, (2, 5), 1), "v25.pcap");
        assert!(what.contains("2.5"), "{what}");
        not_a_capture_what(&pcap_header(false, 0xA1B2_C3D4, (1, 4), 1), "v14.pcap");
        not_a_capture_what(b"GET / HTTP/1.1\r\n\r\n", "http.txt");
        not_a_capture_what(b"ab", "tiny");
        not_a_capture_what(
            &pcap_header(true, 0xA1B2_C3D4, (2, 4), 1)[..20],
            "short-header.pcap",
        );
        let mut ng = shb(false);
        ng[12] = 2; // major version 2
        let what = not_a_capture_what(&ng, "ng-v2.pcapng");
        assert!(what.contains("version"), "{what}");
        let mut ng = shb(false);
        let n = ng.len();
        ng[n - 4] ^= 4; // trailer length differs
        not_a_capture_what(&ng, "ng-trailer.pcapng");
        match FileSource::open("/nonexistent/portwatch.pcap") {
            Err(SourceError::Io { path, .. }) => assert!(path.contains("nonexistent")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pcapng_sections_interfaces_resolutions_and_block_kinds() {
        let mut f = shb(false);
        f.extend(idb(false, 1, 0, None, None)); // µs
        f.extend(idb(false, 101, 65535, Some(9), Some(100))); // ns, +100 s
        f.extend(epb(false, 0, 1_700_000_000_123_456, b"eth", 64));
        f.extend(epb(false, 1, 1_700_000_000_123_456_789, b"raw", 3));
        f.extend(block(false, 5, &[0; 8])); // interface statistics: skipped
        f.extend(shb(true));
        f.extend(idb(true, 113, 2, Some(0x80 | 10), None)); // 2^-10 s, snaplen 2
        f.extend(epb(true, 0, (5 << 10) | 512, b"sll", 80)); // 5.5 s
        f.extend(spb(true, b"simple", 6)); // cut to snaplen 2
        f.extend(pb(true, 0, 7 << 10, b"old"));
        let (got, facts) = read("two-sections.pcapng", &f);
        assert_eq!(facts.stopped, None);
        let summary: Vec<_> = got
            .iter()
            .map(|g| (g.ts, g.linktype, g.interface, g.wire_len, g.data.as_slice()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1_700_000_000_123_456_000, 1, 0, 64, &b"eth"[..]),
                (1_700_000_100_123_456_789, 101, 1, 3, &b"raw"[..]),
                (5_500_000_000, 113, 2, 80, &b"sll"[..]),
                (5_500_000_000, 113, 2, 6, &b"si"[..]),
                (7_000_000_000, 113, 2, 3, &b"old"[..]),
            ]
        );
        assert_eq!(facts.format, Format::PcapNg);
        assert_eq!(
            facts.linktypes,
            vec![LinkType(1), LinkType(101), LinkType(113)]
        );
        assert_eq!(facts.records, 5);
    }

    #[test]
    fn pcapng_power_of_two_resolution_is_exact() {
        let mut iface = Interface::new(LinkType::ETHERNET, 0, 0);
        iface.set_tsresol(0x80 | 30);
        assert_eq!(iface.timestamp(3 << 29), Timestamp(1_500_000_000));
        iface.set_tsresol(0x80 | 127);
        assert_eq!(iface.timestamp(u64::MAX), Timestamp(0));
        iface.set_tsresol(127); // 10^-127: absurd, must not panic
        assert_eq!(iface.timestamp(u64::MAX), Timestamp(0));
        iface.set_tsresol(0);
        iface.offset_ns = -5_000_000_000;
        assert_eq!(iface.timestamp(2), Timestamp(0));
        assert_eq!(iface.timestamp(u64::MAX), Timestamp(u64::MAX));
    }

    #[test]
    fn truncated_mid_record_delivers_what_came_before() {
        let mut f = pcap_header(false, 0xA1B2_C3D4, (2, 4), 1);
        for i in 0..3 {
            pcap_record(&mut f, false, i, 0, &[i as u8; 50], 50);
        }
        f.truncate(f.len() - 10);
        let (got, facts) = read("cut.pcap", &f);
        assert_eq!(got.len(), 2);
        let stopped = facts.stopped.expect("must record the truncation");
        assert_eq!(stopped.records, 2);
        assert_eq!(stopped.offset, 24 + 2 * 66);
        assert!(stopped.reason.contains("truncated"), "{}", stopped.reason);

        let mut ng = shb(false);
        ng.extend(idb(false, 1, 0, None, None));
        ng.extend(epb(false, 0, 1, b"one", 3));
        let at = ng.len() as u64;
        ng.extend(epb(false, 0, 2, b"two", 3));
        ng.truncate(ng.len() - 1);
        let (got, facts) = read("cut.pcapng", &ng);
        assert_eq!(got.len(), 1);
        assert_eq!(facts.stopped.unwrap().offset, at);
    }

    #[test]
    fn garbage_and_hostile_lengths_stop_without_panic_or_huge_allocation() {
        let mut f = pcap_header(false, 0xA1B2_C3D4, (2, 4), 1);
        f.extend_from_slice(&[0xFF; 40]);
        let (got, facts) = read("garbage.pcap", &f);
        assert!(got.is_empty());
        let stopped = facts.stopped.unwrap();
        assert_eq!((stopped.records, stopped.offset), (0, 24));
        assert!(stopped.reason.contains("caplen"), "{}", stopped.reason);

        let mut ng = shb(false);
        ng.extend(idb(false, 1, 0, None, None));
        ng.extend_from_slice(&[6, 0, 0, 0, 0xF0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        let (got, facts) = read("huge-block.pcapng", &ng);
        assert!(got.is_empty());
        assert!(facts.stopped.unwrap().reason.contains("length"));

        // EPB claims more data than its block holds.
        let mut ng = shb(false);
        ng.extend(idb(false, 1, 0, None, None));
        let mut bad = epb(false, 0, 1, b"abcd", 4);
        bad[20..24].copy_from_slice(&1000u32.to_le_bytes());
        ng.extend(bad);
        let (_, facts) = read("epb-caplen.pcapng", &ng);
        assert!(facts.stopped.unwrap().reason.contains("caplen"));

        // A packet on an interface never declared, and a bad magic mid-file.
        let mut ng = shb(false);
        ng.extend(epb(false, 0, 1, b"x", 1));
        let (_, facts) = read("no-idb.pcapng", &ng);
        assert!(facts.stopped.unwrap().reason.contains("interface"));
        let mut ng = shb(false);
        ng.extend(idb(false, 1, 0, None, None));
        ng.extend(shb(false));
        let n = ng.len();
        ng[n - 20..n - 16].copy_from_slice(b"junk");
        let (_, facts) = read("bad-bom.pcapng", &ng);
        assert!(facts.stopped.unwrap().reason.contains("magic"));

        // Random bytes behind valid headers: never a panic.
        let mut seed = 0x1234_5678_u32;
        for round in 0..200 {
            let mut f = if round % 2 == 0 {
                pcap_header(false, 0xA1B2_C3D4, (2, 4), 1)
            } else {
                let mut ng = shb(round % 4 == 1);
                ng.extend(idb(round % 4 == 1, 1, 0, None, None));
                ng
            };
            for _ in 0..(round * 7 % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                f.push(if seed % 3 == 0 { 0 } else { seed as u8 });
            }
            let _ = read("random", &f);
        }
    }

    #[test]
    fn poll_delivers_batches_then_end() {
        let mut f = pcap_header(false, 0xA1B2_C3D4, (2, 4), 1);
        for i in 0..5000 {
            pcap_record(&mut f, false, i, 0, b"", 0);
        }
        let mut src = FileSource::open(temp("batches.pcap", &f)).unwrap();
        let mut n = 0;
        let mut count = |_: &Frame<'_>| n += 1;
        assert_eq!(src.poll(&mut count).unwrap(), Poll::Frames(BATCH_FRAMES));
        assert_eq!(
            src.poll(&mut count).unwrap(),
            Poll::Frames(5000 - BATCH_FRAMES)
        );
        assert_eq!(src.poll(&mut count).unwrap(), Poll::End);
        assert_eq!(src.poll(&mut count).unwrap(), Poll::End);
        assert_eq!(n, 5000);
    }

    #[test]
    fn merge_orders_by_time_and_keeps_going_past_a_damaged_file() {
        let mut a = pcap_header(false, 0xA1B2_C3D4, (2, 4), 1);
        for s in [1, 4, 4, 9] {
            pcap_record(&mut a, false, s, 0, b"a", 1);
        }
        let mut b = shb(true);
        b.extend(idb(true, 1, 0, None, None));
        b.extend(idb(true, 113, 0, None, None));
        for (iface, s) in [(0, 2), (1, 4), (0, 5), (1, 10)] {
            b.extend(epb(true, iface, s * 1_000_000, b"b", 1));
        }
        let mut c = pcap_header(false, 0xA1B2_3C4D, (2, 4), 101);
        pcap_record(&mut c, false, 3, 0, b"c", 1);
        pcap_record(&mut c, false, 6, 0, b"c", 1);
        c.truncate(c.len() - 1);
        let paths = [
            temp("m-a.pcap", &a),
            temp("m-b.pcapng", &b),
            temp("m-c.pcap", &c),
        ];
        let mut merged = MergedFiles::open(&paths).unwrap();
        let got = drain(&mut merged);
        let order: Vec<_> = got
            .iter()
            .map(|g| (g.ts / 1_000_000_000, g.data[0], g.interface))
            .collect();
        let m = MAX_INTERFACES_PER_FILE;
        assert_eq!(
            order,
            vec![
                (1, b'a', 0),
                (2, b'b', m),
                (3, b'c', 2 * m),
                (4, b'a', 0),
                (4, b'a', 0),
                (4, b'b', m + 1),
                (5, b'b', m),
                (9, b'a', 0),
                (10, b'b', m + 1),
            ]
        );
        let facts = merged.facts();
        assert_eq!(facts[0].records, 4);
        assert_eq!(facts[1].format, Format::PcapNg);
        assert_eq!(facts[1].linktypes, vec![LinkType(1), LinkType(113)]);
        assert_eq!(facts[1].first_ts, Some(Timestamp(2_000_000_000)));
        assert_eq!(facts[1].last_ts, Some(Timestamp(10_000_000_000)));
        assert_eq!(facts[2].records, 1);
        assert_eq!(facts[2].stopped.as_ref().unwrap().records, 1);
        assert!(facts[0].stopped.is_none() && facts[1].stopped.is_none());

        let missing = [paths[0].clone(), PathBuf::from("/nonexistent/x.pcap")];
        let err = MergedFiles::open(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x.pcap"), "{err}");
        let junk = [paths[0].clone(), temp("m-junk", b"not a capture at all")];
        let err = MergedFiles::open(&junk).unwrap_err().to_string();
        assert!(
            err.contains("m-junk") && err.contains("not a pcap"),
            "{err}"
        );
    }

    /// Files where our count differs from an oracle: (file, our count, why).
    /// Each entry is checked both ways: our count must be the one given, and
    /// if the difference goes away the test says so.
    ///
    /// `libpcap__linktype-reserved-field-not-zero.pcap` is not here: libpcap
    /// opens it but reads nothing (tcpdump: unknown data link type 3145728),
    /// tshark refuses it, and so do we.
    const KNOWN_DIFFERENCES: &[(&str, Option<u64>, &str)] = &[
        (
            "libpcap__pcap-invalid-version-2.pcap",
            None,
            "pcap version 2.5: tshark reads it, we refuse it as libpcap 1.10 does",
        ),
        (
            "pcapng-testgen__be__difficult__test202.pcapng",
            Some(8),
            "tshark 4.0 shows each of the 3 pcapng Custom Blocks (0xbad, 0x40000bad) as a frame; capinfos counts 8 like us",
        ),
        (
            "pcapng-testgen__le__advanced__test102.pcapng",
            Some(5),
            "tshark 4.0 shows each of the 3 pcapng Custom Blocks (0xbad, 0x40000bad) as a frame; capinfos counts 5 like us",
        ),
    ];

    /// libpcap 1.10 stops reading a pcapng file at the first interface whose
    /// link type or snaplen differs from the first one (corpus MANIFEST.md);
    /// for these files tshark's count is the oracle.
    const LIBPCAP_STOPS_ON_MIXED_INTERFACES: &[&str] = &[
        "pcapng-testgen__be__difficult__test202.pcapng",
        "pcapng-testgen__le__advanced__test102.pcapng",
        "pcapng-testgen__le__basic__test005.pcapng",
        "pcapng-testgen__le__basic__test006.pcapng",
        "zeek__ldap__modify-request.pcapng",
    ];

    #[test]
    fn corpus_counts_match_libpcap_and_tshark() {
        let dir = Path::new("../shared/pcaps/corpus");
        let Ok(tsv) = std::fs::read_to_string(dir.join("ORACLE_FILES.tsv")) else {
            eprintln!("skipping corpus test: {} not found", dir.display());
            return;
        };
        let mut lines = tsv.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (c_file, c_lp, c_ts, c_ts_err) = (
            col("file"),
            col("libpcap_packets"),
            col("tshark_packets"),
            col("tshark_stderr"),
        );
        let mut oracle = HashMap::new();
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            let get = |c: usize| f.get(c).copied().unwrap_or("");
            oracle.insert(
                get(c_file).to_string(),
                (
                    get(c_lp).parse::<u64>().ok(),
                    get(c_ts).parse::<u64>().ok(),
                    get(c_ts_err).is_empty(),
                ),
            );
        }
        let mut failures = Vec::new();
        let mut known_seen = Vec::new();
        let mut checked = 0;
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
            .collect();
        names.sort();
        for name in &names {
            let path = dir.join(name);
            let ours = match FileSource::open(&path) {
                Ok(mut src) => {
                    let got = drain(&mut src);
                    assert_eq!(got.len() as u64, src.records());
                    Some(src.records())
                }
                Err(SourceError::NotACapture { .. }) => None,
                Err(e) => panic!("{name}: {e}"),
            };
            let Some(&(lp, ts, ts_full)) = oracle.get(name) else {
                failures.push(format!("{name}: not in ORACLE_FILES.tsv"));
                continue;
            };
            let libpcap_opens = pcap::Capture::from_file(&path).is_ok();
            let mut expect = Vec::new();
            if LIBPCAP_STOPS_ON_MIXED_INTERFACES.contains(&name.as_str()) {
                expect.push(("tshark", ts));
            } else {
                if libpcap_opens && lp.is_some() {
                    expect.push(("libpcap", lp));
                }
                if ts_full && ts.is_some() {
                    expect.push(("tshark", ts));
                }
            }
            if libpcap_opens && lp.is_none() {
                // libpcap opened it but read nothing usable (tcpdump failed).
                expect.push(("libpcap (opens, reads nothing)", None));
            }
            for (who, want) in expect {
                checked += 1;
                if ours != want {
                    if let Some((_, known, why)) =
                        KNOWN_DIFFERENCES.iter().find(|(n, ..)| n == name)
                    {
                        if ours != *known {
                            failures.push(format!(
                                "{name}: ours {ours:?}, known difference says {known:?}"
                            ));
                        }
                        known_seen.push(name.clone());
                        eprintln!("{name}: ours {ours:?}, {who} {want:?}: known: {why}");
                    } else {
                        failures.push(format!("{name}: ours {ours:?}, {who} {want:?}"));
                    }
                }
            }
        }
        for (name, _, why) in KNOWN_DIFFERENCES {
            if !known_seen.iter().any(|n| n == name) && names.iter().any(|n| n == name) {
                failures.push(format!(
                    "{name}: listed as a known difference ({why}) but matches"
                ));
            }
        }
        assert!(checked > 100, "only {checked} comparisons");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// `poll` (with its buffered pcap path) and `next_frame` (the general
    /// path) give the same frames and the same facts, on every corpus file
    /// and every fixture, truncated and damaged ones included.
    #[test]
    fn buffered_poll_equals_frame_by_frame() {
        type Owned = (Timestamp, LinkType, u32, Vec<u8>, u32);
        let own = |f: &Frame<'_>| -> Owned {
            (f.ts, f.linktype, f.wire_len, f.data.to_vec(), f.interface)
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for dir in ["../shared/pcaps/corpus", "fixtures"] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                paths.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng")),
                );
            }
        }
        assert!(
            paths.len() > 20,
            "corpus or fixtures missing: {} files",
            paths.len()
        );
        for path in paths {
            let Ok(mut a) = FileSource::open(&path) else {
                continue;
            };
            let mut polled = Vec::new();
            while let Ok(Poll::Frames(_)) = a.poll(&mut |f| polled.push(own(f))) {}
            let mut b = FileSource::open(&path).unwrap();
            let mut stepped = Vec::new();
            while let Some(f) = b.next_frame() {
                stepped.push(own(&f));
            }
            assert_eq!(polled.len(), stepped.len(), "{}", path.display());
            assert!(polled == stepped, "{}: frames differ", path.display());
            assert_eq!(a.facts(), b.facts(), "{}", path.display());
        }
    }
}
