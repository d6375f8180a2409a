//! Read-ahead: one thread per savefile reads the next chunks while the
//! pipeline works on the current one, so the kernel's copy of the file into
//! user memory runs on another core instead of between packets.
//!
//! Chunks are handed over whole, never copied again: each has [`HEAD`]
//! spare bytes in front, where [`super::Window`] puts the unconsumed end of
//! the previous chunk (a record cut in two) before parsing on. Buffers go
//! back to the thread for reuse, so a replay allocates a handful of them.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

/// Bytes read into a chunk at a time. Each chunk handed over wakes the
/// reader once, which costs microseconds on a virtual machine, so chunks are
/// large; but the buffers together stay near the size of a core's L2 cache
/// (measured: 256 KiB to 2 MiB, 768 KiB was fastest; benches/README.md).
pub(super) const CHUNK: usize = 768 << 10;
/// Spare room in front of each chunk for the previous chunk's unconsumed
/// end. Larger than any record of a common capture (a 9 KB jumbo frame);
/// a longer one (up to `MAX_PCAPNG_BLOCK`) takes the copying path.
pub(super) const HEAD: usize = 64 << 10;
/// Length of a chunk buffer: the head room, up to a page of slack so the
/// read can start on a page boundary ([`super::aligned`]), and the chunk.
const BUF_LEN: usize = HEAD + super::READ_ALIGN + CHUNK;
/// Chunks read but not yet taken: enough to keep the reader busy while the
/// pipeline handles one.
const IN_FLIGHT: usize = 2;
/// Chunk buffers a reader ever allocates: those in flight, the one it
/// fills and the one the window parses. Each comes back through
/// [`ReadAhead::give_back`] when the window moves on, so a replay touches
/// the same few hundred kilobytes all along instead of faulting in fresh
/// pages.
const BUFFERS: usize = IN_FLIGHT + 2;

enum Chunk {
    /// A chunk buffer, `k` bytes read at `at..` (`at` at least [`HEAD`]).
    Data(Vec<u8>, usize, usize),
    Failed(io::Error),
}

/// The receiving end of a reader thread. The thread ends at the end of the
/// file, on a read error (after handing over what it read), or when this
/// is dropped.
pub(super) struct ReadAhead {
    chunks: Receiver<Chunk>,
    spare: SyncSender<Vec<u8>>,
}

impl ReadAhead {
    /// Starts the reader thread on `file`.
    pub(super) fn spawn(mut file: Box<dyn Read + Send>) -> io::Result<ReadAhead> {
        let (tx, chunks) = sync_channel(IN_FLIGHT);
        let (spare, spare_rx) = sync_channel::<Vec<u8>>(BUFFERS);
        let mut allocated = 0;
        thread::Builder::new()
            .name("portwatch-read".into())
            .spawn(move || loop {
                let mut buf = match spare_rx.try_recv() {
                    Ok(buf) => buf,
                    Err(_) if allocated < BUFFERS => {
                        allocated += 1;
                        vec![0; BUF_LEN]
                    }
                    // Wait for the window to hand one back (or to close).
                    Err(_) => match spare_rx.recv() {
                        Ok(buf) => buf,
                        Err(_) => return,
                    },
                };
                let at = super::aligned(&buf, HEAD);
                let msg = loop {
                    match file.read(&mut buf[at..at + CHUNK]) {
                        Ok(0) => return, // the end: the channel closes
                        Ok(k) => break Chunk::Data(buf, at, k),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Chunk::Failed(e),
                    }
                };
                let failed = matches!(msg, Chunk::Failed(_));
                if tx.send(msg).is_err() || failed {
                    return; // the file was closed, or cannot be read on
                }
            })?;
        Ok(ReadAhead { chunks, spare })
    }

    /// The next chunk (a buffer with `k` bytes read at `at..`, `at` at
    /// least [`HEAD`]) as `(buffer, at, k)`, a read error, or `None` at the
    /// end of the file.
    pub(super) fn next(&mut self) -> Option<io::Result<(Vec<u8>, usize, usize)>> {
        match self.chunks.recv().ok()? {
            Chunk::Data(buf, at, k) => Some(Ok((buf, at, k))),
            Chunk::Failed(e) => Some(Err(e)),
        }
    }

    /// Hands a used buffer back for reuse (dropped if it is not a chunk
    /// buffer: the window's first, empty one, or one grown for a record
    /// longer than the head room). The channel holds every chunk buffer
    /// there is, so it is never full.
    pub(super) fn give_back(&self, buf: Vec<u8>) {
        if buf.len() == BUF_LEN {
            // Fails only once the reader has ended (end of file, error).
            let _ = self.spare.try_send(buf);
        }
    }
}
