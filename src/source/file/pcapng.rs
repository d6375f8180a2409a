//! The pcapng side of [`FileSource`]: sections, interfaces and the blocks
//! that carry frames.

use std::io;

use super::*;

/// Frame times an interface's own `if_tsresol`/`if_tsoffset` may give, in
/// ns since 1970: from 1970-01-02 to 2200-01-01. Outside it the options are
/// wrong (a resolution read with the wrong exponent, an offset of centuries)
/// and every frame would pile up at one instant in 1970 or 2554.
pub(super) const SANE_TIMES: std::ops::Range<u64> =
    86_400 * NANOS_PER_SEC..7_258_118_400 * NANOS_PER_SEC;

/// A pcapng interface: its link type and how to turn its ticks into ns.
#[derive(Debug)]
pub(super) struct Interface {
    linktype: LinkType,
    snaplen: u32,
    /// Ticks per second (`if_tsresol`); `None` when it does not fit in a
    /// `u128` (10^-39 s or finer): no tick of it can be turned into a time.
    ticks_per_sec: Option<u128>,
    /// `Some(n)` when one tick is exactly `n` nanoseconds: the fast path.
    ns_per_tick: Option<u64>,
    /// `if_tsoffset`, in nanoseconds.
    pub(super) offset_ns: i128,
    /// The times a frame may take: any (`0..=u64::MAX`) with the default
    /// resolution and no offset, [`SANE_TIMES`] once the interface sets
    /// either option.
    lowest: u64,
    highest: u64,
    /// Running number of this IDB in the file.
    seq: u32,
    /// A frame out of range was reported (once per interface).
    warned: bool,
}

impl Interface {
    pub(super) fn new(linktype: LinkType, snaplen: u32, seq: u32) -> Self {
        Interface {
            linktype,
            snaplen,
            ticks_per_sec: Some(1_000_000),
            ns_per_tick: Some(1_000),
            offset_ns: 0,
            lowest: 0,
            highest: u64::MAX,
            seq,
            warned: false,
        }
    }

    pub(super) fn set_tsresol(&mut self, v: u8) {
        let exp = u32::from(v & 0x7F);
        let ticks = if v & 0x80 != 0 {
            Some(1u128 << exp)
        } else {
            10u128.checked_pow(exp)
        };
        self.ticks_per_sec = ticks;
        self.ns_per_tick = match ticks {
            Some(t) if u128::from(NANOS_PER_SEC) % t == 0 => {
                Some((u128::from(NANOS_PER_SEC) / t) as u64)
            }
            _ => None,
        };
        self.keep_sane();
    }

    pub(super) fn set_tsoffset(&mut self, secs: i64) {
        self.offset_ns = i128::from(secs) * i128::from(NANOS_PER_SEC);
        self.keep_sane();
    }

    /// The interface sets its own clock: frames must land in [`SANE_TIMES`].
    fn keep_sane(&mut self) {
        self.lowest = SANE_TIMES.start;
        self.highest = SANE_TIMES.end - 1;
    }

    /// The frame time of `ticks`, or `None` when it is outside the times
    /// this interface may give (see [`SANE_TIMES`]) or beyond what a
    /// [`Timestamp`] holds. The common case (a whole number of nanoseconds
    /// a tick, no offset) inline; the others (128-bit arithmetic) out of
    /// the per-record path.
    #[inline]
    pub(super) fn timestamp(&self, ticks: u64) -> Option<Timestamp> {
        let ns = match self.ns_per_tick {
            Some(n) if self.offset_ns == 0 => ticks.checked_mul(n)?,
            _ => self.timestamp_general(ticks)?,
        };
        (self.lowest <= ns && ns <= self.highest).then_some(Timestamp(ns))
    }

    #[cold]
    fn timestamp_general(&self, ticks: u64) -> Option<u64> {
        let ns = match self.ns_per_tick {
            Some(n) => i128::from(ticks) * i128::from(n),
            None => (u128::from(ticks) * u128::from(NANOS_PER_SEC) / self.ticks_per_sec?) as i128,
        };
        u64::try_from(ns + self.offset_ns).ok()
    }

    /// Say once that this interface's frames fall out of range (`ticks`:
    /// the first such frame's), naming the options that put them there.
    #[cold]
    fn warn_out_of_range(&mut self, path: &str, ticks: u64) {
        if std::mem::replace(&mut self.warned, true) {
            return;
        }
        let resolution = match self.ticks_per_sec {
            Some(t) => format!("{t} ticks/s"),
            None => "finer than 10^-38 s".to_string(),
        };
        tracing::warn!(
            file = %crate::quote::log_field(path),
            interface = self.seq,
            resolution = %resolution,
            offset_s = self.offset_ns / i128::from(NANOS_PER_SEC),
            ticks,
            "pcapng interface: if_tsresol/if_tsoffset put frames outside 1970-01-02..2200-01-01; \
             they are counted as invalid_timestamp and do not move time"
        );
    }
}

#[derive(Debug)]
pub(super) struct PcapNgState {
    endian: Endian,
    /// Interfaces of the current section.
    interfaces: Vec<Interface>,
    /// IDBs seen in the whole file.
    seen: u32,
}

impl PcapNgState {
    /// The current section is big-endian (the choice of
    /// `Fast::pcapng_record`).
    pub(super) fn big_endian(&self) -> bool {
        self.endian == Endian::Big
    }

    /// Before the first section header is read.
    pub(super) fn new() -> Self {
        PcapNgState {
            endian: Endian::Little,
            interfaces: Vec::new(),
            seen: 0,
        }
    }
}

impl FileSource {
    /// Reads the rest of a section header block starting at `at`, whose
    /// type is consumed and whose length and byte-order magic are `head`.
    /// The outer error is I/O; the inner one a damaged block.
    pub(super) fn read_shb(&mut self, at: u64, head: [u8; 8]) -> io::Result<Result<(), String>> {
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

    pub(super) fn read_pcapng_block(&mut self) -> io::Result<Step> {
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
                        (OPT_IF_TSOFFSET, 8) => iface.set_tsoffset(e.u64(&body[v..v + 8]) as i64),
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
                let Some(iface) = st.interfaces.get_mut(id as usize) else {
                    return stop(format!("packet on undeclared interface {id}"));
                };
                // Out of range: counted downstream, and the previous
                // frame's time kept (as for a pcap record's bad fraction).
                let (ts, ts_invalid) = match iface.timestamp(ticks) {
                    Some(ts) => (ts, false),
                    None => {
                        iface.warn_out_of_range(&self.path, ticks);
                        (self.last_ts.unwrap_or(Timestamp::ZERO), true)
                    }
                };
                Ok(Step::Record(Current {
                    ts,
                    linktype: iface.linktype,
                    wire_len,
                    start: base + 20,
                    end: base + 20 + caplen as usize,
                    interface: self.interface_base + iface.seq,
                    ts_invalid,
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
                    ts_invalid: false,
                }))
            }
            _ => Ok(Step::Skip),
        }
    }

    /// A new section starts at `at`; `len` are its (raw) length bytes.
    pub(super) fn read_next_shb(&mut self, at: u64, len: [u8; 4]) -> io::Result<Step> {
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
}

impl<'a> Fast<'a> {
    /// The pcapng twin of `pcap_record`: an Enhanced Packet Block at `pos`
    /// that lies whole in the buffer, is sane, and is on an interface of
    /// the link type of the last frame. Any other block is left to
    /// `read_pcapng_block`, which gives the same frame or stops. `BIG`: the
    /// section is big-endian (`st.endian`).
    #[inline(always)]
    pub(super) fn pcapng_record<const BIG: bool>(
        &self,
        st: &PcapNgState,
        pos: usize,
    ) -> Option<(Current, &'a [u8], usize)> {
        let buf = self.buf;
        let hdr: &[u8; 28] = buf.get(pos..)?.first_chunk()?;
        let at = |i: usize| u32_in::<BIG>([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let total = at(4) as usize;
        let end = pos + total;
        if at(0) != PCAPNG_EPB || total < 32 || total % 4 != 0 || end > buf.len() {
            return None;
        }
        let caplen = at(20) as usize;
        let iface = st.interfaces.get(at(8) as usize)?;
        if caplen > total - 32
            || iface.linktype != self.linktype
            || u32_in::<BIG>(*buf[end - 4..].first_chunk()?) as usize != total
        {
            return None;
        }
        let ticks = (u64::from(at(12)) << 32) | u64::from(at(16));
        let (start, data_end) = (pos + 28, pos + 28 + caplen);
        // Out of range: left to the general path, which flags it.
        let c = Current {
            ts: iface.timestamp(ticks)?,
            linktype: self.linktype,
            wire_len: at(24),
            start,
            end: data_end,
            interface: self.interface_base + iface.seq,
            ts_invalid: false,
        };
        Some((c, buf.get(start..data_end)?, end))
    }
}
