//! `--write-findings FILE`: the packets of every connection that raised a
//! finding, in a pcap file, from its SYN on.
//!
//! - **Held.** A finding is often decided after the SYN (a `blocked` one at
//!   the answer or the SYN timeout), so the first packets of each new
//!   connection are held ([`HELD_PACKETS`] a connection, [`HELD_BYTES`] in
//!   all, the oldest connection dropped beyond, counted) until the
//!   pipeline's events decide: a finding writes them and marks the
//!   connection, whose later packets are written as they come; anything
//!   else drops them. A connection's end forgets it.
//! - **Bounded.** At most [`MARKED_FLOWS`] connections marked at once (the
//!   oldest forgotten, counted), and at most `cap` bytes in the file: it
//!   stops at the cap, and every packet after is counted, not written
//!   (the first evidence is what an investigation starts from).
//! - **Format.** Classic pcap with nanosecond timestamps, the capture's link
//!   type (of the first packet written; packets of another link type are
//!   counted, not written), snaplen 262144; each packet keeps its captured
//!   and wire lengths. Within a connection packets are in order; a
//!   connection held until its finding is written after packets of others.
//! - **Whole records.** Records are buffered whole and each flush is one
//!   write; a write that stops short (a full disk) keeps the whole records
//!   that fit and the file is cut back after the last of them, as the event
//!   log keeps whole lines. A packet counts as written once it reached the
//!   file; the others are counted lost (`write_errors`), and a file header
//!   that did not reach it is written again with the next record.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::classify::Classification;
use crate::decode::{decode_frame, Decap, Decoded, RawTuple, Wanted};
use crate::frame::{Frame, LinkType};
use crate::pipeline::{ConnEnd, Event};
use crate::state::tally::FindingKind;
use crate::state::{FastMap, FlowKey, Outcome};
use crate::time::Timestamp;

/// Packets held per connection until its finding is decided.
pub const HELD_PACKETS: usize = 16;
/// Bytes held in all (captured bytes).
pub const HELD_BYTES: usize = 8 << 20;
/// Connections whose packets are written as they come.
pub const MARKED_FLOWS: usize = 65_536;
/// The default `--write-findings-max`.
pub const DEFAULT_CAP: u64 = 100_000_000;
const SNAPLEN: u32 = 262_144;
/// Classic pcap, nanosecond timestamps.
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const FILE_HEADER: u64 = 24;
const RECORD_HEADER: u64 = 16;

/// What was and was not written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvidenceStats {
    pub packets: u64,
    /// Connections with a finding whose packets were (or would have been)
    /// written.
    pub connections: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// Packets not written because the file reached its cap.
    pub over_cap: u64,
    /// Connections whose held packets were dropped to stay in bounds.
    pub held_dropped: u64,
    /// Marked connections forgotten to stay in bounds.
    pub marked_dropped: u64,
    /// Packets of a link type other than the file's.
    pub other_link_type: u64,
    /// Packets lost to write errors.
    pub write_errors: u64,
}

/// `--write-findings` could not write everything: for the closing message
/// and the exit status, as the event log's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {lost} packet(s) not written; first error: {first}")]
pub struct EvidenceError {
    pub path: String,
    /// Packets that did not reach the file.
    pub lost: u64,
    pub first: String,
}

/// Why a packet meant for the file is not in it: a closed set (the
/// `reason` of `portwatch_findings_packets_not_written_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotWritten {
    /// A write failed (a full disk).
    WriteError,
    /// The file reached `--write-findings-max`.
    OverCap,
    /// Of a link type other than the file's.
    OtherLinkType,
}

impl NotWritten {
    pub const ALL: [NotWritten; 3] = [
        NotWritten::WriteError,
        NotWritten::OverCap,
        NotWritten::OtherLinkType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotWritten::WriteError => "write_error",
            NotWritten::OverCap => "over_cap",
            NotWritten::OtherLinkType => "other_link_type",
        }
    }
}

impl EvidenceStats {
    /// Packets not written for `why`, so far.
    pub fn not_written(&self, why: NotWritten) -> u64 {
        match why {
            NotWritten::WriteError => self.write_errors,
            NotWritten::OverCap => self.over_cap,
            NotWritten::OtherLinkType => self.other_link_type,
        }
    }
}

/// Where the records go: a file, cut back after a short write.
pub(crate) trait Sink: Write + Send {
    /// Cut the output back to `len` bytes and write on from there.
    fn cut(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for File {
    fn cut(&mut self, len: u64) -> io::Result<()> {
        // A device such as /dev/full cannot be cut: nothing reached it.
        let cut = self.set_len(len);
        self.seek(SeekFrom::Start(len))?;
        cut
    }
}

/// Buffered bytes past this are written at once (besides `flush`).
const BUFFER: usize = 64 << 10;

/// Write `buf`, whole records ending at `ends`, as far as it goes: the
/// bytes of the whole records that reached `w`, how many records they
/// are, and the error that stopped the rest.
fn write_records(w: &mut impl Write, buf: &[u8], ends: &[usize]) -> (usize, usize, io::Result<()>) {
    let (n, r) = super::eventlog::write_some(w, buf);
    let records = ends.partition_point(|&e| e <= n);
    let kept = records.checked_sub(1).map_or(0, |i| ends[i]);
    (kept, records, r)
}

struct Held {
    key: FlowKey,
    frames: Vec<Owned>,
}

struct Owned {
    linktype: LinkType,
    ts: Timestamp,
    wire_len: u32,
    data: Vec<u8>,
}

impl Owned {
    fn of(f: &Frame<'_>) -> Owned {
        Owned {
            linktype: f.linktype,
            ts: f.ts,
            wire_len: f.wire_len,
            data: f.data.to_vec(),
        }
    }
}

/// Every TCP segment is wanted: a connection's data too.
struct All;

impl Wanted for All {
    fn wants(&self, _: &RawTuple<'_>) -> bool {
        true
    }
}

pub struct FindingsPcap {
    path: PathBuf,
    out: Box<dyn Sink>,
    /// Whole records not yet written; `ends[i]` is where the i-th ends.
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// The first buffered record carries the file header.
    header_buffered: bool,
    header_in_file: bool,
    linktype: Option<LinkType>,
    cap: u64,
    full: bool,
    /// The first write error, once there was one.
    first_error: Option<String>,
    decap: Decap,
    /// Held packets by connection, in the order connections began.
    held: FastMap<FlowKey, Held>,
    held_order: VecDeque<FlowKey>,
    held_bytes: usize,
    marked: FastMap<FlowKey, ()>,
    marked_order: VecDeque<FlowKey>,
    /// How many of the pipeline's events and connection ends were looked at
    /// since they were last drained.
    seen: (usize, usize),
    stats: EvidenceStats,
}

impl FindingsPcap {
    /// Create (or truncate) `path`; at most `cap` bytes will be written.
    pub fn create(path: &Path, cap: u64, decap: Decap) -> io::Result<FindingsPcap> {
        let file = File::create(path)?;
        Ok(FindingsPcap::to_sink(path, Box::new(file), cap, decap))
    }

    fn to_sink(path: &Path, out: Box<dyn Sink>, cap: u64, decap: Decap) -> FindingsPcap {
        FindingsPcap {
            path: path.to_path_buf(),
            out,
            buf: Vec::new(),
            ends: Vec::new(),
            header_buffered: false,
            header_in_file: false,
            linktype: None,
            cap,
            full: false,
            first_error: None,
            decap,
            held: FastMap::default(),
            held_order: VecDeque::new(),
            held_bytes: 0,
            marked: FastMap::default(),
            marked_order: VecDeque::new(),
            seen: (0, 0),
            stats: EvidenceStats::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> EvidenceStats {
        self.stats
    }

    /// A frame before the pipeline takes it: written if its connection is
    /// marked, held if it is new (a SYN) or held already.
    pub fn frame(&mut self, f: &Frame<'_>) {
        let (Ok(Decoded::Control(seg)), _) = decode_frame(f.linktype, f.data, &All, &self.decap)
        else {
            return;
        };
        let keys = [FlowKey::from_client(&seg), FlowKey::from_server(&seg)];
        if keys.iter().any(|k| self.marked.contains_key(k)) {
            return self.write(f);
        }
        let held = keys.iter().find(|k| self.held.contains_key(k));
        if let Some(h) = held.and_then(|k| self.held.get_mut(k)) {
            if h.frames.len() < HELD_PACKETS {
                self.held_bytes += f.data.len();
                h.frames.push(Owned::of(f));
                self.bound_held();
            }
            return;
        }
        if seg.control == crate::decode::Control::Syn {
            let key = keys[0];
            self.held_bytes += f.data.len();
            let frames = vec![Owned::of(f)];
            self.held.insert(key, Held { key, frames });
            self.held_order.push_back(key);
            self.bound_held();
        }
    }

    /// Look at the pipeline's events and connection ends not looked at yet
    /// (since the last [`FindingsPcap::drained`]): a finding writes its
    /// connection's held packets and marks it; an outcome without one, or
    /// an end, forgets it.
    pub fn decide(&mut self, events: &[Event], ends: &[ConnEnd]) {
        let (e0, c0) = self.seen;
        for e in events.get(e0..).unwrap_or_default() {
            match e {
                Event::Connection { class, key, .. } if finding(class, None) => self.mark(key),
                Event::Outcome {
                    class,
                    key,
                    outcome,
                    ..
                } => match finding(class, Some(*outcome)) {
                    true => self.mark(key),
                    false => self.forget_held(key),
                },
                _ => {}
            }
        }
        for c in ends.get(c0..).unwrap_or_default() {
            self.forget_held(&c.key);
            self.marked.remove(&c.key);
        }
        self.seen = (events.len(), ends.len());
    }

    /// The pipeline's events and ends were drained: count from the start.
    pub fn drained(&mut self) {
        self.seen = (0, 0);
    }

    /// Write what is buffered to the file (once a second in `run`, and
    /// when the buffer fills): the whole records that reach it count as
    /// written, the file is cut back after the last of them, the rest are
    /// lost.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let (kept, records, r) = write_records(&mut self.out, &self.buf, &self.ends);
        let r = r.and_then(|()| self.out.flush());
        if records > 0 {
            self.stats.packets += records as u64;
            self.stats.bytes += kept as u64;
            self.header_in_file |= self.header_buffered;
        }
        if let Err(e) = r {
            if kept < self.buf.len() {
                // Whatever part of a record went out is cut away.
                let _ = self.out.cut(self.stats.bytes);
            }
            self.failed(&e, (self.ends.len() - records) as u64);
        }
        self.buf.clear();
        self.ends.clear();
        self.header_buffered = false;
    }

    /// A line for stderr or the log: what was and was not written.
    pub fn summary(&self) -> String {
        let st = &self.stats;
        let mut s = format!(
            "{}: {} packet(s) of {} connection(s) with findings written ({} bytes)",
            crate::quote::log_field(&self.path.display().to_string()),
            st.packets,
            st.connections,
            st.bytes
        );
        let left = [
            (
                st.over_cap,
                format!("not written past the {}-byte cap", self.cap),
            ),
            (
                st.held_dropped,
                "connection(s)' first packets dropped to stay in bounds".into(),
            ),
            (
                st.marked_dropped,
                "connection(s) forgotten to stay in bounds".into(),
            ),
            (
                st.other_link_type,
                "packet(s) of another link type not written".into(),
            ),
            (st.write_errors, "packet(s) lost to write errors".into()),
        ];
        for (n, what) in left {
            if n > 0 {
                s.push_str(&format!("; {n} {what}"));
            }
        }
        if let Some(e) = &self.first_error {
            s.push_str(&format!("; writing failed ({e}): the file is incomplete"));
        }
        s
    }

    /// Flush to the file; the stats of what was written.
    pub fn finish(&mut self) -> EvidenceStats {
        self.flush();
        self.stats
    }

    /// After [`FindingsPcap::finish`]: whether every packet meant for the
    /// file reached it.
    pub fn result(&self) -> Result<(), EvidenceError> {
        match &self.first_error {
            None => Ok(()),
            Some(first) => Err(EvidenceError {
                path: self.path.display().to_string(),
                lost: self.stats.write_errors,
                first: first.clone(),
            }),
        }
    }

    fn mark(&mut self, key: &FlowKey) {
        if self.marked.contains_key(key) {
            return;
        }
        self.stats.connections += 1;
        if let Some(h) = self.held.remove(key) {
            self.held_bytes -= h.frames.iter().map(|o| o.data.len()).sum::<usize>();
            for o in &h.frames {
                self.write_owned(o);
            }
        }
        self.marked.insert(*key, ());
        self.marked_order.push_back(*key);
        while self.marked.len() > MARKED_FLOWS {
            let Some(old) = self.marked_order.pop_front() else {
                break;
            };
            if self.marked.remove(&old).is_some() {
                self.stats.marked_dropped += 1;
            }
        }
        // Forgotten keys leave stale entries: keep the queue bounded too.
        if self.marked_order.len() > 2 * MARKED_FLOWS {
            let marked = &self.marked;
            self.marked_order.retain(|k| marked.contains_key(k));
        }
    }

    fn forget_held(&mut self, key: &FlowKey) {
        if let Some(h) = self.held.remove(key) {
            self.held_bytes -= h.frames.iter().map(|o| o.data.len()).sum::<usize>();
        }
        if self.held_order.len() > 2 * self.held.len() + 64 {
            let held = &self.held;
            self.held_order.retain(|k| held.contains_key(k));
        }
    }

    /// Drop the oldest connections' held packets while over the bounds.
    fn bound_held(&mut self) {
        while self.held_bytes > HELD_BYTES || self.held.len() > MARKED_FLOWS {
            let Some(old) = self.held_order.pop_front() else {
                break;
            };
            if let Some(h) = self.held.remove(&old) {
                self.held_bytes -= h.frames.iter().map(|o| o.data.len()).sum::<usize>();
                self.stats.held_dropped += 1;
                debug_assert_eq!(h.key, old);
            }
        }
    }

    fn write(&mut self, f: &Frame<'_>) {
        self.record(f.linktype, f.ts, f.wire_len, f.data);
    }

    fn write_owned(&mut self, o: &Owned) {
        self.record(o.linktype, o.ts, o.wire_len, &o.data);
    }

    fn record(&mut self, linktype: LinkType, ts: Timestamp, wire_len: u32, data: &[u8]) {
        if self.linktype.is_some_and(|l| l != linktype) {
            self.stats.other_link_type += 1;
            return;
        }
        // The header goes with the first record until it reached the file.
        let header = match self.header_in_file || self.header_buffered {
            true => 0,
            false => FILE_HEADER,
        };
        let len = header + RECORD_HEADER + data.len() as u64;
        if self.full || self.stats.bytes + self.buf.len() as u64 + len > self.cap {
            self.full = true;
            self.stats.over_cap += 1;
            return;
        }
        self.linktype.get_or_insert(linktype);
        let buf = &mut self.buf;
        if header > 0 {
            self.header_buffered = true;
            for w in [
                MAGIC_NANOS,
                0x0004_0002,
                0,
                0,
                SNAPLEN,
                u32::from(linktype.0),
            ] {
                buf.extend_from_slice(&w.to_le_bytes());
            }
        }
        let nanos = ts.as_nanos();
        let secs = u32::try_from(nanos / 1_000_000_000).unwrap_or(u32::MAX);
        let sub = (nanos % 1_000_000_000) as u32;
        for w in [secs, sub, data.len() as u32, wire_len] {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        buf.extend_from_slice(data);
        self.ends.push(buf.len());
        if buf.len() >= BUFFER {
            self.flush();
        }
    }

    fn failed(&mut self, e: &io::Error, packets: u64) {
        self.stats.write_errors += packets;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
            tracing::error!(file = %self.path.display(), error = %e, "writing the findings' packets failed; capture goes on");
        }
    }
}

/// Whether an attempt (`outcome` `None`) or its outcome raises a finding,
/// as the tally counts them.
fn finding(c: &Classification, outcome: Option<Outcome>) -> bool {
    match (FindingKind::of(c.verdict), outcome) {
        (Some(_), None) => true,
        (None, Some(o)) => o.is_blocked() && c.is_site_edge(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Control;
    use crate::scratch_tests::Scratch;

    const BASE: u64 = 1_767_603_600_000_000_000;

    /// An Ethernet frame of a TCP segment.
    fn frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, c: Control) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 7, 1000);
        let b = match c {
            Control::Syn => b.syn(),
            Control::SynAck => b.syn().ack(8),
            Control::Rst => b.rst(),
            Control::Fin => b.fin().ack(1),
            Control::Ack => b.ack(1),
        };
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn feed(p: &mut FindingsPcap, ms: u64, data: &[u8]) {
        p.frame(&Frame {
            ts: Timestamp(BASE + ms * 1_000_000),
            linktype: LinkType::ETHERNET,
            wire_len: data.len() as u32,
            data,
            interface: 0,
            ts_invalid: false,
        });
    }

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            client: [10, 0, 0, 1].into(),
            client_port: sport,
            server: [10, 0, 0, 2].into(),
            server_port: 80,
        }
    }

    /// Held packets of a connection are written when it is marked, its
    /// later packets as they come, nothing of another; the cap stops the
    /// file and counts what did not fit.
    #[test]
    fn held_packets_are_written_on_a_finding_and_the_cap_stops_the_file() {
        let scratch = Scratch::new("evidence-cap");
        let path = scratch.path().join("findings.pcap");
        let syn = frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, Control::Syn);
        let per = RECORD_HEADER + syn.len() as u64;
        // Room for the header and three packets.
        let mut p = FindingsPcap::create(&path, FILE_HEADER + 3 * per, Decap::STANDARD).unwrap();
        feed(&mut p, 0, &syn);
        feed(
            &mut p,
            1,
            &frame([10, 0, 0, 2], 80, [10, 0, 0, 1], 1000, Control::SynAck),
        );
        let other = frame([10, 0, 0, 1], 1001, [10, 0, 0, 2], 80, Control::Syn);
        feed(&mut p, 2, &other);
        assert_eq!(p.stats().packets, 0, "held until decided");
        p.mark(&key(1000));
        assert_eq!(p.stats().packets, 0, "buffered, not in the file yet");
        p.flush();
        assert_eq!(p.stats().packets, 2);
        p.forget_held(&key(1001));
        feed(
            &mut p,
            3,
            &frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, Control::Ack),
        );
        feed(
            &mut p,
            4,
            &frame([10, 0, 0, 1], 1001, [10, 0, 0, 2], 80, Control::Ack),
        );
        feed(
            &mut p,
            5,
            &frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, Control::Fin),
        );
        let st = p.finish();
        assert_eq!((st.packets, st.over_cap, st.connections), (3, 1, 1));
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, st.bytes);
        assert!(len <= FILE_HEADER + 3 * per);
    }

    /// A file that cannot be written (`/dev/full`: the buffer's flush
    /// fails) is an error naming it, not a quiet summary.
    #[test]
    fn a_failed_flush_is_an_error() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return crate::source::skip_unless_ci("a_failed_flush_is_an_error", "no /dev/full");
        }
        let mut p = FindingsPcap::create(full, DEFAULT_CAP, Decap::STANDARD).unwrap();
        feed(
            &mut p,
            0,
            &frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, Control::Syn),
        );
        p.mark(&key(1000));
        assert_eq!(p.result(), Ok(()), "buffered, not written yet");
        let st = p.finish();
        let e = p.result().unwrap_err();
        assert!(e.lost == 1 && e.path == "/dev/full", "{e:?}");
        assert_eq!((st.packets, st.bytes, st.write_errors), (0, 0, 1));
        assert!(p.summary().contains("the file is incomplete"));
    }

    /// A disk with `room` bytes, taking at most `chunk` a write, then
    /// failing as a full disk does; shared with the test.
    #[derive(Clone, Default)]
    struct Disk(std::sync::Arc<std::sync::Mutex<(Vec<u8>, usize, usize)>>);

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut d = self.0.lock().unwrap();
            let n = buf.len().min(d.1.saturating_sub(d.0.len())).min(d.2);
            if n == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            d.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Disk {
        fn cut(&mut self, len: u64) -> io::Result<()> {
            self.0.lock().unwrap().0.truncate(len as usize);
            Ok(())
        }
    }

    impl Disk {
        fn room(&self, room: usize) {
            let mut d = self.0.lock().unwrap();
            (d.1, d.2) = (room, 7);
        }
        fn got(&self) -> Vec<u8> {
            self.0.lock().unwrap().0.clone()
        }
    }

    /// The records of a pcap file, checked whole: its header, then each
    /// record to the last byte.
    fn pcap_records(b: &[u8]) -> usize {
        assert_eq!(b[..4], MAGIC_NANOS.to_le_bytes(), "a file header first");
        let (mut at, mut n) = (FILE_HEADER as usize, 0);
        while at < b.len() {
            let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            at += RECORD_HEADER as usize + len;
            n += 1;
        }
        assert_eq!(at, b.len(), "no half record");
        n
    }

    /// A findings file writing onto `disk`.
    fn onto(disk: &Disk) -> FindingsPcap {
        FindingsPcap::to_sink(
            Path::new("disk"),
            Box::new(disk.clone()),
            DEFAULT_CAP,
            Decap::STANDARD,
        )
    }

    /// A write that stops short keeps the whole records that fit: the file
    /// is cut back after them, only those count as written, the rest are
    /// lost; a header that did not fit goes with the next record.
    #[test]
    fn a_short_write_keeps_whole_records() {
        let syn = frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, Control::Syn);
        let ack = frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, Control::Ack);
        let per = RECORD_HEADER as usize + syn.len();
        assert_eq!(syn.len(), ack.len());
        let disk = Disk::default();
        disk.room(FILE_HEADER as usize + per + per / 2);
        let mut p = onto(&disk);
        feed(&mut p, 0, &syn);
        p.mark(&key(1000));
        feed(&mut p, 1, &ack);
        feed(&mut p, 2, &ack);
        p.flush();
        let st = p.stats();
        assert_eq!((st.packets, st.write_errors), (1, 2));
        assert_eq!(st.bytes, disk.got().len() as u64);
        assert_eq!(pcap_records(&disk.got()), 1);
        assert_eq!(p.result().unwrap_err().lost, 2);
        // Room again: later records follow, with no second header.
        disk.room(1 << 20);
        feed(&mut p, 3, &ack);
        let st = p.finish();
        assert_eq!((st.packets, st.write_errors), (2, 2));
        assert_eq!(pcap_records(&disk.got()), 2);
        // Not even the header fits: it is written again with the next one.
        let disk = Disk::default();
        disk.room(10);
        let mut p = onto(&disk);
        feed(&mut p, 0, &syn);
        p.mark(&key(1000));
        p.flush();
        assert!(disk.got().is_empty());
        disk.room(1 << 20);
        feed(&mut p, 1, &ack);
        let st = p.finish();
        assert_eq!((st.packets, st.write_errors), (1, 1));
        assert_eq!(pcap_records(&disk.got()), 1);
    }

    /// Held packets stay within their bounds: per connection, and the
    /// oldest connection's dropped (counted) past the byte budget.
    #[test]
    fn held_packets_are_bounded() {
        let scratch = Scratch::new("evidence-held");
        let path = scratch.path().join("findings.pcap");
        let mut p = FindingsPcap::create(&path, DEFAULT_CAP, Decap::STANDARD).unwrap();
        for i in 0..HELD_PACKETS as u64 + 5 {
            let c = if i == 0 { Control::Syn } else { Control::Ack };
            feed(&mut p, i, &frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, c));
        }
        assert_eq!(p.held[&key(1000)].frames.len(), HELD_PACKETS);
        let big = vec![0u8; 1 << 20];
        let syn = frame([10, 0, 0, 1], 2000, [10, 0, 0, 2], 80, Control::Syn);
        for i in 0..(HELD_BYTES >> 20) as u16 + 2 {
            let mut f = frame([10, 0, 0, 1], 2000 + i, [10, 0, 0, 2], 80, Control::Syn);
            f.extend_from_slice(&big[..(1 << 20) - syn.len()]);
            feed(&mut p, 100, &f);
        }
        assert!(p.held_bytes <= HELD_BYTES);
        assert!(p.stats().held_dropped >= 2);
        assert!(!p.held.contains_key(&key(1000)), "the oldest went first");
    }
}
