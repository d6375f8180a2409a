//! pcap and pcapng savefiles, read with large buffered reads.
//!
//! This is a pure-Rust reader (libpcap is only used for live capture): one
//! buffer per file, filled with large reads, and records are parsed and
//! lent out where they lie in it, so reading copies each byte once (kernel
//! to buffer) and allocates nothing per packet. A file opened by path to
//! be read flat out is read ahead by a thread of its own ([`ahead`]), so
//! that copy overlaps the pipeline's work; other readers fill a buffer of
//! [`READ_BUFFER_BYTES`] on demand. Both give the same frames (tested).
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
//!   `if_tsresol` (powers of 10 and of 2) and `if_tsoffset`; a frame those
//!   options put outside 1970-01-02..2200-01-01, or past what a
//!   [`Timestamp`] holds, is flagged `ts_invalid` with the previous frame's
//!   time, and logged once per interface. Enhanced, Simple
//!   and the obsolete Packet Block carry frames; other blocks are skipped.
//!   Unlike libpcap 1.10 we do not give up when interfaces differ in link
//!   type or snaplen (tshark does not either): every frame carries its own
//!   interface's link type.
//!
//! Interface numbering: [`Frame::interface`] counts the file's interface
//! description blocks across all sections (0, 1, 2, …), so it is unique in
//! the file; a pcap file has interface 0. [`MergedFiles`] adds
//! `file index * MAX_INTERFACES_PER_FILE` so it is unique across files too.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use super::{Poll, Source, SourceError};
use crate::frame::{Frame, FrameSink, LinkType};
use crate::time::Timestamp;
use ahead::ReadAhead;

/// Size of the read buffer of a file read on demand. Large reads keep
/// replay I/O-cheap.
pub const READ_BUFFER_BYTES: usize = 128 << 10;
/// Reads land on an address that is a multiple of this (a page) in their
/// buffer: the kernel's copy from the page cache into a destination off a
/// 64-byte boundary ran 2 to 5 times slower on an AMD EPYC guest
/// (benches/README.md), and the allocator returns large buffers 16 bytes
/// past a page boundary.
const READ_ALIGN: usize = 4096;
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

#[derive(Clone, Copy, Debug)]
struct PcapState {
    endian: Endian,
    /// Nanoseconds per unit of the fraction field (1000 for µs, 1 for ns).
    frac_scale: u64,
    record_header_len: usize,
    lengths: Lengths,
    linktype: LinkType,
}

impl PcapState {
    /// Whether the sub-second field `frac` is below one second. (The
    /// product fits: `frac_scale` is 1 or 1000.)
    #[inline(always)]
    fn frac_in_range(&self, frac: u32) -> bool {
        u64::from(frac) * self.frac_scale < NANOS_PER_SEC
    }

    /// Whether this file's records may take the fast path at all: plain
    /// 16-byte headers, lengths not swapped, and its link type set up by
    /// the general path (`seen`). These hold per file, so they are asked
    /// once per poll, not per record.
    #[inline]
    fn fast(&self, seen: LinkType) -> bool {
        self.record_header_len == 16 && self.lengths == Lengths::Normal && self.linktype == seen
    }
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
    ts_invalid: bool,
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
struct Window {
    feed: Feed,
    buf: Vec<u8>,
    /// `buf[..pos]` is consumed, `buf[pos..len]` read but not yet consumed.
    pos: usize,
    len: usize,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("pos", &self.pos)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Where a [`Window`]'s bytes come from.
enum Feed {
    /// Read on demand into the window's own buffer.
    Direct(Box<dyn Read + Send>),
    /// Chunks read ahead by a thread ([`ahead`]).
    Ahead(ReadAhead),
}

impl Window {
    fn new(file: Box<dyn Read + Send>) -> Self {
        Window {
            feed: Feed::Direct(file),
            buf: vec![0; READ_BUFFER_BYTES + READ_ALIGN],
            pos: 0,
            len: 0,
        }
    }

    /// A window fed by a read-ahead thread (a file replayed flat out).
    fn ahead(file: Box<dyn Read + Send>) -> io::Result<Self> {
        Ok(Window {
            feed: Feed::Ahead(ReadAhead::spawn(file)?),
            buf: Vec::new(),
            pos: 0,
            len: 0,
        })
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
        let Window {
            feed,
            buf,
            pos,
            len,
        } = self;
        match feed {
            Feed::Direct(file) => {
                // The unconsumed bytes go just before a page boundary,
                // where the reads then start.
                if buf.len() < n + READ_ALIGN {
                    buf.resize(n + READ_ALIGN, 0);
                }
                let tail = *len - *pos;
                let start = aligned(buf, tail) - tail;
                buf.copy_within(*pos..*len, start);
                *pos = start;
                *len = start + tail;
                while *len - start < n {
                    match file.read(&mut buf[*len..]) {
                        Ok(0) => break,
                        Ok(k) => *len += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Feed::Ahead(ahead) => {
                while *len - *pos < n {
                    match ahead.next() {
                        None => break,
                        Some(chunk) => {
                            let old = splice(buf, pos, len, chunk?);
                            ahead.give_back(old);
                        }
                    }
                }
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

/// The first offset at or after `from` whose address in `buf` is a multiple
/// of [`READ_ALIGN`] (it may lie past the end of `buf`).
fn aligned(buf: &[u8], from: usize) -> usize {
    let addr = buf.as_ptr().addr().wrapping_add(from);
    from + (READ_ALIGN - addr % READ_ALIGN) % READ_ALIGN
}

/// Continues the unconsumed bytes `buf[pos..len]` with a read-ahead chunk
/// (`k` bytes at `at`, at least [`ahead::HEAD`]): they go in the chunk's
/// head room, and it becomes the buffer. Only unconsumed bytes longer than
/// the head room (a record larger than it, cut by the chunk's start) are
/// joined by copying the chunk instead. Returns the buffer no longer used.
fn splice(
    buf: &mut Vec<u8>,
    pos: &mut usize,
    len: &mut usize,
    (mut chunk, at, k): (Vec<u8>, usize, usize),
) -> Vec<u8> {
    let tail = *len - *pos;
    if tail <= at {
        let start = at - tail;
        chunk[start..at].copy_from_slice(&buf[*pos..*len]);
        *pos = start;
        *len = at + k;
        std::mem::replace(buf, chunk)
    } else {
        buf.copy_within(*pos..*len, 0);
        if buf.len() < tail + k {
            buf.resize(tail + k, 0);
        }
        buf[tail..tail + k].copy_from_slice(&chunk[at..at + k]);
        *pos = 0;
        *len = tail + k;
        chunk
    }
}

/// How a capture file is stored, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Plain,
    Gzip,
    Zstd,
}

impl Stored {
    fn of(head: &[u8]) -> Stored {
        match head {
            [0x1f, 0x8b, ..] => Stored::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Stored::Zstd,
            _ => Stored::Plain,
        }
    }
}

/// `file`, decompressed as it is read when it is gzip or zstd (captures
/// are usually stored so): no temporary file, and by magic rather than by
/// name, so `-` works too. Offsets in messages are then offsets in the
/// decompressed capture.
fn decompressed(mut file: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let stored = Stored::of(&head[..n]);
    if stored == Stored::Plain {
        return Ok(Box::new(Rejoined { head, n, file }));
    }
    let whole = io::Cursor::new(head[..n].to_vec()).chain(file);
    Ok(match stored {
        Stored::Plain => unreachable!("returned above"),
        // Multi-member: `cat a.gz b.gz` is one gzip file.
        Stored::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Stored::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
    })
}

/// A plain file whose first bytes were read to learn how it is stored.
/// They are handed back in the first read together with the file's next
/// bytes, so later reads of a chunk's size start at file offsets that are
/// multiples of it: a read 4 bytes off the page boundary made the kernel's
/// copy from the page cache about twice as slow (system time of `replay`
/// 42 → 86 ms on 2M header frames).
struct Rejoined {
    head: [u8; 4],
    n: usize,
    file: Box<dyn Read + Send>,
}

impl Read for Rejoined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.n == 0 {
            return self.file.read(buf);
        }
        let n = self.n.min(buf.len());
        buf[..n].copy_from_slice(&self.head[..n]);
        self.head.copy_within(n.., 0);
        self.n -= n;
        if self.n > 0 || n == buf.len() {
            return Ok(n);
        }
        // The head is out: fill the rest from the file in the same read.
        match self.file.read(&mut buf[n..]) {
            Ok(k) => Ok(n + k),
            // The head is delivered; the error comes again at the next read.
            Err(_) => Ok(n),
        }
    }
}

fn not_a_capture(path: &str, what: impl Into<String>) -> SourceError {
    SourceError::NotACapture {
        path: path.to_string(),
        what: what.into(),
    }
}

/// Where a savefile's bytes come from.
#[derive(Clone, Debug)]
pub enum Savefile {
    Path(std::path::PathBuf),
    /// Bytes built into the binary (the demo capture), under a display name.
    Embedded {
        name: &'static str,
        bytes: &'static [u8],
    },
    /// A file opened once ([`Savefile::held`]) and read from its start each
    /// time it is opened, never again by path: a looping replay reads it
    /// the same after the daemon dropped root, or after it was renamed or
    /// deleted.
    Held {
        path: std::path::PathBuf,
        file: std::sync::Arc<File>,
    },
}

impl PartialEq for Savefile {
    fn eq(&self, other: &Savefile) -> bool {
        match (self, other) {
            (Savefile::Path(a), Savefile::Path(b)) => a == b,
            (Savefile::Embedded { name, bytes }, Savefile::Embedded { name: n, bytes: b }) => {
                name == n && bytes == b
            }
            (Savefile::Held { file, .. }, Savefile::Held { file: f, .. }) => {
                std::sync::Arc::ptr_eq(file, f)
            }
            _ => false,
        }
    }
}

impl Eq for Savefile {}

impl std::fmt::Display for Savefile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Savefile::Path(p) | Savefile::Held { path: p, .. } => p.display().fmt(f),
            Savefile::Embedded { name, .. } => write!(f, "{name} (built in)"),
        }
    }
}

impl Savefile {
    /// A path opened now, as [`Savefile::Held`]; standard input (`-`),
    /// built-in bytes and held files as they are.
    pub fn held(&self) -> Result<Savefile, SourceError> {
        match self {
            Savefile::Path(p) if p.as_os_str() != "-" => Ok(Savefile::Held {
                path: p.clone(),
                file: std::sync::Arc::new(File::open(p).map_err(|source| SourceError::Io {
                    path: self.to_string(),
                    source,
                })?),
            }),
            other => Ok(other.clone()),
        }
    }
}

/// A held file read from its start with positioned reads: every reader of
/// it has its own offset, and none moves the descriptor's.
struct FromStart {
    file: std::sync::Arc<File>,
    at: u64,
}

impl Read for FromStart {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl FileSource {
    /// Opens a savefile and reads its file header (pcap) or first section
    /// header block (pcapng).
    pub fn open(path: impl AsRef<Path>) -> Result<FileSource, SourceError> {
        Self::open_savefile(&Savefile::Path(path.as_ref().to_path_buf()), true)
    }

    /// Opens a savefile from a path or from bytes built into the binary. A
    /// path is read ahead by a thread of its own if `read_ahead`, else on
    /// demand (no thread); built-in bytes are always read on demand.
    pub fn open_savefile(savefile: &Savefile, read_ahead: bool) -> Result<FileSource, SourceError> {
        let path = savefile.to_string();
        let io_err = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let window = |file: Box<dyn Read + Send>| match read_ahead {
            true => Window::ahead(file),
            false => Ok(Window::new(file)),
        };
        let win = match savefile {
            // `-`: standard input, e.g. `tcpdump -w - | portwatch replay -`.
            Savefile::Path(p) if p.as_os_str() == "-" => {
                window(decompressed(Box::new(io::stdin())).map_err(io_err)?)
            }
            Savefile::Path(p) => {
                let file = File::open(p).map_err(io_err)?;
                window(decompressed(Box::new(file)).map_err(io_err)?)
            }
            Savefile::Held { file, .. } => {
                let file = FromStart {
                    file: file.clone(),
                    at: 0,
                };
                window(decompressed(Box::new(file)).map_err(io_err)?)
            }
            Savefile::Embedded { bytes, .. } => Ok(Window::new(Box::new(io::Cursor::new(*bytes)))),
        }
        .map_err(io_err)?;
        Self::open_window(path, win)
    }

    /// Opens a savefile from any reader (`path` names it in messages and
    /// facts): the fuzz target feeds it bytes this way.
    pub fn open_reader(
        path: String,
        file: Box<dyn Read + Send>,
    ) -> Result<FileSource, SourceError> {
        Self::open_window(path, Window::new(file))
    }

    fn open_window(path: String, mut win: Window) -> Result<FileSource, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let (magic, n) = win.read_array::<4>().map_err(io_err)?;
        if n < 4 {
            return Err(not_a_capture(&path, format!("file is only {n} bytes long")));
        }
        let mut src = FileSource {
            path,
            win,
            offset: 4,
            kind: Kind::PcapNg(PcapNgState::new()),
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
            ts_invalid: c.ts_invalid,
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
        self.advance_buffered() || self.advance_general()
    }

    /// As [`FileSource::next_frame`], on the general path only: what the
    /// fast path is tested against.
    #[cfg(test)]
    fn next_frame_general(&mut self) -> Option<Frame<'_>> {
        self.current = None;
        if !self.ended && self.advance_general() {
            self.current_frame()
        } else {
            None
        }
    }

    /// `advance` for any record: reads (and refills) as it needs, keeps the
    /// facts, and records where and why a damaged file stops.
    fn advance_general(&mut self) -> bool {
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
                    // A frame whose own time is invalid carries a borrowed
                    // one: it is no time of the file.
                    if !c.ts_invalid {
                        self.first_ts.get_or_insert(c.ts);
                        self.last_ts = Some(c.ts);
                    }
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
        // A fraction of a second or more (0xFFFFFFFF µs is 71 minutes) is
        // damage, not time: the frame keeps the previous timestamp and is
        // counted as a decode error downstream.
        let ts_invalid = !st.frac_in_range(frac);
        let ts = match (ts_invalid, self.last_ts) {
            (false, _) => pcap_timestamp(secs, frac, st.frac_scale),
            (true, Some(last)) => last,
            (true, None) => pcap_timestamp(secs, 0, st.frac_scale),
        };
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
            ts_invalid,
        }))
    }

    fn io_error(&self, source: io::Error) -> SourceError {
        SourceError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// `frac_scale` is 1 or 1000, so nothing overflows.
fn pcap_timestamp(secs: u32, frac: u32, frac_scale: u64) -> Timestamp {
    Timestamp(u64::from(secs) * NANOS_PER_SEC + u64::from(frac) * frac_scale)
}

impl FileSource {
    /// What the fast record parsers read of this source, if it has a link
    /// type yet (the file's first record sets the facts up on the general
    /// path).
    #[inline]
    fn fast_view(&self) -> Option<Fast<'_>> {
        if self.ended {
            return None;
        }
        Some(Fast {
            buf: &self.win.buf[..self.win.len],
            linktype: self.last_linktype?,
            interface_base: self.interface_base,
        })
    }

    /// The record at `pos` on the fast path of the file's format.
    #[inline]
    fn buffered_record(&self, pos: usize) -> Option<(Current, &[u8], usize)> {
        let fast = self.fast_view()?;
        match &self.kind {
            Kind::Pcap(st) if !st.fast(fast.linktype) => None,
            Kind::Pcap(st) if st.endian == Endian::Big => fast.pcap_record::<true>(st, pos),
            Kind::Pcap(st) => fast.pcap_record::<false>(st, pos),
            Kind::PcapNg(st) if st.big_endian() => fast.pcapng_record::<true>(st, pos),
            Kind::PcapNg(st) => fast.pcapng_record::<false>(st, pos),
        }
    }

    /// Loads the next record as `current` if it is on the fast path;
    /// false leaves it to the general path.
    #[inline]
    fn advance_buffered(&mut self) -> bool {
        let pos = self.win.pos;
        let Some((c, _, next)) = self.buffered_record(pos) else {
            return false;
        };
        self.win.pos = next;
        self.offset += (next - pos) as u64;
        self.records += 1;
        self.last_ts = Some(c.ts);
        self.current = Some(c);
        true
    }

    /// Delivers up to `budget` frames straight from the buffer while the
    /// records are on the fast path (no refill, no `Step`, no per-record
    /// bookkeeping beyond the counters), none later than `until`; anything
    /// else is left to [`Self::advance`], so both paths give the same
    /// frames. `replay` spends most of its time here. The first frame
    /// later than `until` is loaded as `current`, as `advance` would.
    fn poll_buffered<S: FrameSink + ?Sized>(
        &mut self,
        sink: &mut S,
        budget: usize,
        until: Option<Timestamp>,
    ) -> usize {
        let start = self.win.pos;
        let Some(fast) = self.fast_view() else {
            return 0;
        };
        // The format (and a pcap file's byte order and fitness for the
        // fast path) is judged here once, not per record.
        let run = match &self.kind {
            Kind::Pcap(st) if !st.fast(fast.linktype) => return 0,
            Kind::Pcap(st) => {
                let st = *st;
                if st.endian == Endian::Big {
                    fast.run(start, sink, budget, until, |pos| {
                        fast.pcap_record::<true>(&st, pos)
                    })
                } else {
                    fast.run(start, sink, budget, until, |pos| {
                        fast.pcap_record::<false>(&st, pos)
                    })
                }
            }
            Kind::PcapNg(st) if st.big_endian() => fast.run(start, sink, budget, until, |pos| {
                fast.pcapng_record::<true>(st, pos)
            }),
            Kind::PcapNg(st) => fast.run(start, sink, budget, until, |pos| {
                fast.pcapng_record::<false>(st, pos)
            }),
        };
        let Run { pos, n, last, held } = run;
        if n > 0 {
            self.win.pos = pos;
            self.offset += (pos - start) as u64;
            self.records += n as u64;
            self.last_ts = last;
            self.current = None;
        }
        if let Some((c, next)) = held {
            self.win.pos = next;
            self.offset += (next - pos) as u64;
            self.records += 1;
            self.last_ts = Some(c.ts);
            self.current = Some(c);
        }
        n
    }
}

/// A 32-bit field in a byte order fixed at compile time (`BIG`: big-endian),
/// for the fast record parsers.
#[inline(always)]
fn u32_in<const BIG: bool>(b: [u8; 4]) -> u32 {
    if BIG {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// The part of a [`FileSource`] the fast record parsers read: the buffered
/// bytes, the link type of the last frame and the interface numbering.
/// Copied out once per poll, so the loop keeps them in registers across
/// the calls to the sink.
#[derive(Clone, Copy)]
struct Fast<'a> {
    buf: &'a [u8],
    linktype: LinkType,
    interface_base: u32,
}

/// Where [`Fast::run`] stopped: the next record's position, the frames
/// delivered, the last one's time, and a record parsed but held back (past
/// `until`).
struct Run {
    pos: usize,
    n: usize,
    last: Option<Timestamp>,
    held: Option<(Current, usize)>,
}

impl<'a> Fast<'a> {
    /// The pcap record at `pos` of the buffer, its bytes, and where the
    /// next one starts, if it lies whole in the buffer with its caplen
    /// within bounds and its time valid. `None` leaves it to
    /// `read_pcap_record`, which gives the same frame or stops. The caller
    /// has checked [`PcapState::fast`] for the file. `BIG`: the file is
    /// big-endian (`st.endian`), a constant of the loop instead of a test
    /// per field.
    #[inline(always)]
    fn pcap_record<const BIG: bool>(
        &self,
        st: &PcapState,
        pos: usize,
    ) -> Option<(Current, &'a [u8], usize)> {
        let (hdr, rest) = self.buf.get(pos..)?.split_first_chunk::<16>()?;
        let field = |i: usize| u32_in::<BIG>([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let caplen = field(8);
        let frac = field(4);
        if caplen > MAX_PCAP_CAPLEN || !st.frac_in_range(frac) {
            return None;
        }
        // Sliced from what follows the header: one length check.
        let data = rest.get(..caplen as usize)?;
        let start = pos + 16;
        let end = start + data.len();
        let c = Current {
            ts: pcap_timestamp(field(0), frac, st.frac_scale),
            linktype: st.linktype,
            wire_len: field(12),
            start,
            end,
            interface: self.interface_base,
            ts_invalid: false,
        };
        Some((c, data, end))
    }

    /// Hands the sink the records `record` parses from `pos` on, up to
    /// `budget`, stopping at the first it cannot parse or (held back) the
    /// first later than `until`.
    #[inline(always)]
    fn run<S: FrameSink + ?Sized>(
        &self,
        mut pos: usize,
        sink: &mut S,
        budget: usize,
        until: Option<Timestamp>,
        record: impl Fn(usize) -> Option<(Current, &'a [u8], usize)>,
    ) -> Run {
        let (mut n, mut last, mut held) = (0, Timestamp::ZERO, None);
        while n < budget {
            let Some((c, data, next)) = record(pos) else {
                break;
            };
            if until.is_some_and(|u| c.ts > u) {
                // Parsed already: loaded as `current` for the merge.
                held = Some((c, next));
                break;
            }
            sink.frame(&Frame {
                ts: c.ts,
                linktype: c.linktype,
                wire_len: c.wire_len,
                data,
                interface: c.interface,
                ts_invalid: c.ts_invalid,
            });
            last = c.ts;
            pos = next;
            n += 1;
        }
        let last = (n > 0).then_some(last);
        Run { pos, n, last, held }
    }
}

impl Source for FileSource {
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        self.poll_with(sink)
    }
}

impl FileSource {
    /// [`Source::poll`] with a sink the compiler can see: `replay`'s, whose
    /// work on each frame is then inlined into the record loop instead of
    /// called through a pointer.
    pub fn poll_with<S: FrameSink + ?Sized>(&mut self, sink: &mut S) -> Result<Poll, SourceError> {
        let mut n = 0;
        while n < BATCH_FRAMES {
            n += self.poll_buffered(sink, BATCH_FRAMES - n, None);
            if n == BATCH_FRAMES {
                break;
            }
            match self.next_frame() {
                Some(frame) => sink.frame(&frame),
                None => break,
            }
            n += 1;
        }
        Ok(if n == 0 { Poll::End } else { Poll::Frames(n) })
    }
}

mod ahead;
mod merge;
mod pcapng;
#[cfg(test)]
mod tests;

pub use merge::MergedFiles;
use pcapng::PcapNgState;
