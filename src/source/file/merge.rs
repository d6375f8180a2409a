//! Several capture files read as one, in timestamp order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use super::{
    not_a_capture, FileFacts, FileSource, Savefile, BATCH_FRAMES, MAX_INTERFACES_PER_FILE,
};
use crate::frame::{Frame, FrameSink};
use crate::source::{Poll, Source, SourceError};
use crate::time::Timestamp;

/// Most files read ahead, each by a thread of its own: one, so a merge
/// reads its files on demand on the pipeline's thread, which then parses
/// records its own core has just copied. Read ahead, each record's first
/// bytes came from another core's cache, and with four whole-frame files
/// the pipeline's thread alone took longer than the whole merge on demand
/// (benches/README.md, "The read path on whole frames").
pub const MAX_READ_AHEAD_FILES: usize = 1;

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
    /// Opens every file, to be read flat out (a single file read ahead by a
    /// thread of its own, several on demand: [`MAX_READ_AHEAD_FILES`]); the
    /// first that cannot be opened is the error (it names the file).
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<MergedFiles, SourceError> {
        let savefiles: Vec<Savefile> = paths
            .iter()
            .map(|p| Savefile::Path(p.as_ref().to_path_buf()))
            .collect();
        Self::open_savefiles(&savefiles, true)
    }

    /// As [`MergedFiles::open`], for paths or built-in captures;
    /// `read_ahead: false` starts no thread (a paced replay, which opens
    /// its files before the daemon drops root: capabilities are per
    /// thread, and a thread started before the drop would keep them).
    pub fn open_savefiles(
        savefiles: &[Savefile],
        read_ahead: bool,
    ) -> Result<MergedFiles, SourceError> {
        let read_ahead = read_ahead && savefiles.len() <= MAX_READ_AHEAD_FILES;
        let mut files = Vec::with_capacity(savefiles.len());
        for (i, p) in savefiles.iter().enumerate() {
            let mut f = FileSource::open_savefile(p, read_ahead)?;
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
        self.poll_with(sink)
    }
}

impl MergedFiles {
    /// [`Source::poll`] with a sink the compiler can see (see
    /// [`FileSource::poll_with`]).
    pub fn poll_with<S: FrameSink + ?Sized>(&mut self, sink: &mut S) -> Result<Poll, SourceError> {
        // One file needs no merge heap (the common replay): read it directly.
        if let (false, [file]) = (self.primed, self.files.as_mut_slice()) {
            return file.poll_with(sink);
        }
        Ok(self.poll_bounded(None, BATCH_FRAMES, sink))
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
    ///
    /// The file with the earliest frame delivers it, then every following
    /// frame that still comes before the other files' next ones, on its
    /// buffered fast path; only where the files interleave does each frame
    /// go through the heap.
    pub fn poll_until(
        &mut self,
        until: Option<Timestamp>,
        sink: &mut dyn FnMut(&Frame<'_>),
    ) -> Poll {
        self.poll_bounded(until, BATCH_FRAMES, sink)
    }

    /// Deliver the next frame only, whatever its timestamp.
    pub fn poll_one(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Poll {
        self.poll_bounded(None, 1, sink)
    }

    fn poll_bounded<S: FrameSink + ?Sized>(
        &mut self,
        until: Option<Timestamp>,
        max: usize,
        sink: &mut S,
    ) -> Poll {
        self.prime();
        let mut n = 0;
        while n < max {
            let Some(&Reverse((ts, i))) = self.heap.peek() else {
                break;
            };
            if until.is_some_and(|u| ts > u) {
                return if n == 0 { Poll::Idle } else { Poll::Frames(n) };
            }
            self.heap.pop();
            let file = &mut self.files[i];
            if let Some(frame) = file.current_frame() {
                sink.frame(&frame);
                n += 1;
            }
            file.current = None;
            // Frames of this file that come before the next file's frame
            // (at an equal time, only if this file was given first).
            let limit = match self.heap.peek() {
                None => Some(until),
                Some(&Reverse((t, j))) if i < j => Some(Some(t)),
                Some(&Reverse((t, _))) => t.0.checked_sub(1).map(|t| Some(Timestamp(t))),
            };
            if let Some(limit) = limit {
                let limit = match (limit, until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                n += file.poll_buffered(sink, max - n, limit);
            }
            // The run's first later frame is loaded already, or the next
            // record needs the general path.
            if file.current.is_none() {
                file.advance();
            }
            if let Some(c) = file.current {
                self.heap.push(Reverse((c.ts, i)));
            }
        }
        if n == 0 {
            Poll::End
        } else {
            Poll::Frames(n)
        }
    }
}
