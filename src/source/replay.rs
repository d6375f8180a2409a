//! Capture files replayed at capture pace (or `speed`× faster), optionally in
//! a loop: what `portwatch run --replay` and `portwatch demo` feed the
//! pipeline. Frames keep their capture timestamps, shifted forward by
//! `(span + LOOP_GAP)` on every loop so time never goes backwards, and are
//! delivered when the wall clock reaches them: a replay exercises the same
//! timeouts and windows as a live capture, on capture time.

use crate::source::file::Savefile;
use std::time::{Duration, Instant};

use super::file::{FileFacts, MergedFiles};
use super::{Frame, Poll, Source, SourceError};
use crate::time::{Timestamp, JUMP_BOUND};

/// Added to the file span between two loops.
pub const LOOP_GAP: Duration = Duration::from_secs(1);

/// Longest a single [`Source::poll`] sleeps waiting for the next frame, so
/// the caller stays responsive to reloads and shutdown.
pub const MAX_WAIT: Duration = Duration::from_millis(50);

#[derive(Clone, Debug, PartialEq)]
pub struct ReplayOptions {
    /// Capture pace multiplier: 1.0 is real time, 10.0 ten times faster.
    pub speed: f64,
    /// Start again at the end, shifting timestamps forward.
    pub looping: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            speed: 1.0,
            looping: false,
        }
    }
}

pub struct Replay {
    savefiles: Vec<Savefile>,
    opts: ReplayOptions,
    files: MergedFiles,
    /// Added to every frame timestamp of the current loop.
    shift: Duration,
    /// A shifted capture time and the wall instant it was due at: the pace
    /// is kept against this pair. The shifted timeline is continuous over
    /// loops, so the anchor is set once.
    anchor: Option<(Timestamp, Instant)>,
    /// First and last unshifted timestamps of the current loop.
    span: Option<(Timestamp, Timestamp)>,
    /// The (shifted) time of the next frame not yet delivered: `now` stays
    /// short of it, so expiry on the replay's clock never judges an attempt
    /// before a frame that is already in the file (a SYN retransmission).
    next: Option<Timestamp>,
    /// The last frame delivered was far ahead of the pace (see `poll`).
    jumped: bool,
    loops: u64,
}

impl Replay {
    /// Opens every file now, so a bad path is reported before the daemon
    /// starts. `opts.speed` must be positive.
    pub fn open(savefiles: &[Savefile], opts: ReplayOptions) -> Result<Replay, SourceError> {
        let files = MergedFiles::open_savefiles(savefiles)?;
        Ok(Replay {
            savefiles: savefiles.to_vec(),
            opts,
            files,
            shift: Duration::ZERO,
            anchor: None,
            span: None,
            next: None,
            jumped: false,
            loops: 0,
        })
    }

    /// Completed loops so far.
    pub fn loops(&self) -> u64 {
        self.loops
    }

    /// Facts of the files of the current loop.
    pub fn facts(&self) -> Vec<FileFacts> {
        self.files.facts()
    }

    /// The (shifted) capture time the wall clock has reached: the replay's
    /// "now", for expiry and required-edge windows. `None` before the first
    /// frame.
    pub fn now(&self) -> Option<Timestamp> {
        self.due().map(|due| match self.next {
            Some(next) => due.min(Timestamp(next.0.saturating_sub(1))),
            None => due,
        })
    }

    /// The capture time the wall clock has reached, at the replay's pace.
    fn due(&self) -> Option<Timestamp> {
        self.anchor.map(|(t0, w0)| {
            let secs = (w0.elapsed().as_secs_f64() * self.opts.speed).min(1e12);
            t0.saturating_add(Duration::from_secs_f64(secs))
        })
    }

    /// At the end of the files: open them again one span later.
    fn restart(&mut self) -> Result<bool, SourceError> {
        let Some((first, last)) = self.span.take() else {
            return Ok(false); // an empty capture: nothing to loop over
        };
        self.files = MergedFiles::open_savefiles(&self.savefiles)?;
        self.shift += last.saturating_sub(first) + LOOP_GAP;
        self.loops += 1;
        Ok(true)
    }
}

impl Source for Replay {
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        let Some(next) = self.files.next_ts() else {
            self.next = None;
            return Ok(if self.opts.looping && self.restart()? {
                Poll::Idle
            } else {
                Poll::End
            });
        };
        let shift = self.shift;
        let next = next.saturating_add(shift);
        self.next = Some(next);
        self.anchor.get_or_insert((next, Instant::now()));
        let mut due = self.due().unwrap_or(next);
        if next.saturating_sub(due) > JUMP_BOUND {
            // Far ahead: a stray timestamp (the frames after it are back in
            // time; the pipeline's clock judges it) or a real gap, known as
            // one when the next frame is far ahead again: then pace from it.
            if std::mem::replace(&mut self.jumped, true) {
                self.anchor = Some((next, Instant::now()));
            }
            due = next;
        } else {
            self.jumped = false;
        }
        if next > due {
            let wait = next.saturating_sub(due).div_f64(self.opts.speed);
            std::thread::sleep(wait.min(MAX_WAIT));
            return Ok(Poll::Idle);
        }
        let until = Timestamp(due.0.saturating_sub(shift.as_nanos() as u64));
        let span = &mut self.span;
        let poll = self.files.poll_until(Some(until), &mut |f| {
            *span = Some(match *span {
                None => (f.ts, f.ts),
                Some((a, b)) => (a.min(f.ts), b.max(f.ts)),
            });
            let mut shifted = *f;
            shifted.ts = f.ts.saturating_add(shift);
            sink(&shifted);
        });
        Ok(poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny pcap with frames at the given seconds (contents irrelevant).
    fn pcap_at(secs: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        for w in [0u32, 0, 65535, 1] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for s in secs {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&14u32.to_le_bytes());
            out.extend_from_slice(&14u32.to_le_bytes());
            out.extend_from_slice(&[0u8; 14]);
        }
        out
    }

    #[test]
    fn loops_shift_time_forward_and_keep_pace() {
        let dir = std::env::temp_dir().join(format!("portwatch-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two.pcap");
        std::fs::write(&path, pcap_at(&[100, 101])).unwrap();
        let opts = ReplayOptions {
            speed: 50.0,
            looping: true,
        };
        let mut r = Replay::open(&[Savefile::Path(path)], opts).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 6 && Instant::now() < deadline {
            r.poll(&mut |f| seen.push(f.ts.as_nanos() / 1_000_000_000))
                .unwrap();
        }
        // Span 1 s + 1 s gap: each loop starts 2 s after the previous one.
        assert_eq!(seen, [100, 101, 102, 103, 104, 105]);
        assert_eq!(r.loops(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_loop_the_replay_ends() {
        let dir = std::env::temp_dir().join(format!("portwatch-replay1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("one.pcap");
        std::fs::write(&path, pcap_at(&[7])).unwrap();
        let mut r = Replay::open(&[Savefile::Path(path)], ReplayOptions::default()).unwrap();
        let mut n = 0;
        assert_eq!(r.poll(&mut |_| n += 1).unwrap(), Poll::Frames(1));
        assert_eq!(r.poll(&mut |_| n += 1).unwrap(), Poll::End);
        assert_eq!(n, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
