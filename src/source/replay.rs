//! Capture files replayed at capture pace (or `speed`× faster), optionally in
//! a loop: what `portwatch run --replay` and `portwatch demo` feed the
//! pipeline. Frames keep their capture timestamps, shifted forward by
//! `(span + LOOP_GAP)` on every loop so time never goes backwards, and are
//! delivered when the wall clock reaches them: a replay exercises the same
//! timeouts and windows as a live capture, on capture time.
//!
//! A looping replay opens its files once ([`Savefile::held`]) and reads them
//! from the start on every loop: no path is opened again, so a daemon that
//! dropped root after opening them (and can no longer open them by path)
//! loops all the same.

use crate::source::file::Savefile;
use std::time::{Duration, Instant};

use super::file::{FileFacts, MergedFiles};
use super::{Frame, Poll, Source, SourceError};
use crate::time::Timestamp;

/// Added to the file span between two loops.
pub const LOOP_GAP: Duration = Duration::from_secs(1);

/// Longest a single [`Source::poll`] sleeps waiting for the next frame, so
/// the caller stays responsive to reloads and shutdown.
pub const MAX_WAIT: Duration = Duration::from_millis(50);

/// A frame further ahead of the replay clock than this (capture time) is
/// not waited for: a stray far-future timestamp is delivered at once
/// without moving the pace, and a second one in a row (the capture really
/// jumps) restarts the pace from it. Either is logged.
pub const MAX_PACED_GAP: Duration = Duration::from_secs(3600);

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
    /// The files, held open when looping.
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
    loops: u64,
    /// The last frame was delivered unpaced, too far ahead of the clock.
    stray: bool,
    /// Reading the files again for the next loop failed (and was logged).
    reopen_failing: bool,
}

impl Replay {
    /// Opens every file now, so a bad path is reported before the daemon
    /// starts (and before it drops root); looping, the files stay open.
    /// `opts.speed` must be positive.
    pub fn open(savefiles: &[Savefile], opts: ReplayOptions) -> Result<Replay, SourceError> {
        let savefiles = match opts.looping {
            true => savefiles
                .iter()
                .map(Savefile::held)
                .collect::<Result<_, _>>()?,
            false => savefiles.to_vec(),
        };
        // Paced: reading ahead would buy nothing (and would start a thread).
        let files = MergedFiles::open_savefiles(&savefiles, false)?;
        Ok(Replay {
            savefiles,
            opts,
            files,
            shift: Duration::ZERO,
            anchor: None,
            span: None,
            next: None,
            loops: 0,
            stray: false,
            reopen_failing: false,
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
            t0.saturating_add(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO))
        })
    }

    /// At the end of the files: read them again from the start, one span
    /// later.
    fn restart(&mut self) -> Result<bool, SourceError> {
        let Some((first, last)) = self.span else {
            return Ok(false); // an empty capture: nothing to loop over
        };
        self.files = MergedFiles::open_savefiles(&self.savefiles, false)?;
        self.span = None;
        self.shift += last.saturating_sub(first) + LOOP_GAP;
        self.loops += 1;
        Ok(true)
    }
}

impl Source for Replay {
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        let Some(next) = self.files.next_ts() else {
            self.next = None;
            if !self.opts.looping {
                return Ok(Poll::End);
            }
            // A failed restart (a file truncated or being rewritten in
            // place, out of memory for a decoder) is retried, not fatal:
            // the daemon around it keeps serving.
            return Ok(match self.restart() {
                Ok(true) => {
                    self.reopen_failing = false;
                    Poll::Restarted
                }
                Ok(false) => Poll::End,
                Err(e) => {
                    if !self.reopen_failing {
                        tracing::warn!(error = %e, "cannot read the capture files again for the next loop; retrying");
                        self.reopen_failing = true;
                    }
                    std::thread::sleep(MAX_WAIT);
                    Poll::Idle
                }
            });
        };
        let shift = self.shift;
        let next = next.saturating_add(shift);
        self.next = Some(next);
        self.anchor.get_or_insert((next, Instant::now()));
        let mut due = self.due().unwrap_or(next);
        let ahead = next.saturating_sub(due);
        if ahead > MAX_PACED_GAP {
            if !self.stray {
                tracing::warn!(
                    frame = %next,
                    replay_clock = %due,
                    ahead = %humantime::format_duration(ahead),
                    "frame too far ahead of the replay clock to pace; delivered at once"
                );
                self.stray = true;
                return Ok(self.deliver_one(shift, sink));
            }
            tracing::warn!(
                from = %due,
                to = %next,
                "capture time jumps forward; pacing resumes from the new time"
            );
            self.anchor = Some((next, Instant::now()));
            due = next;
        } else if next > due {
            let wait = Duration::try_from_secs_f64(ahead.as_secs_f64() / self.opts.speed)
                .unwrap_or(MAX_WAIT);
            std::thread::sleep(wait.min(MAX_WAIT));
            return Ok(Poll::Idle);
        }
        self.stray = false;
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

impl Replay {
    /// The next frame alone, unpaced, shifted like the others. It stays out
    /// of the loop span, so a stray timestamp cannot stretch later loops.
    fn deliver_one(&mut self, shift: Duration, sink: &mut dyn FnMut(&Frame<'_>)) -> Poll {
        self.files.poll_one(&mut |f| {
            let mut shifted = *f;
            shifted.ts = f.ts.saturating_add(shift);
            sink(&shifted);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        let scratch = crate::scratch_tests::Scratch::new("replay-loops");
        let dir = scratch.path();
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
    }

    #[test]
    fn without_loop_the_replay_ends() {
        let scratch = crate::scratch_tests::Scratch::new("replay-ends");
        let dir = scratch.path();
        let path = dir.join("one.pcap");
        std::fs::write(&path, pcap_at(&[7])).unwrap();
        let mut r = Replay::open(&[Savefile::Path(path)], ReplayOptions::default()).unwrap();
        let mut n = 0;
        assert_eq!(r.poll(&mut |_| n += 1).unwrap(), Poll::Frames(1));
        assert_eq!(r.poll(&mut |_| n += 1).unwrap(), Poll::End);
        assert_eq!(n, 1);
    }

    /// A stray far-future timestamp is delivered at once without moving
    /// the pace; two in a row (a real jump) restart the pace from there.
    #[test]
    fn far_future_timestamps_do_not_stall_the_replay() {
        let scratch = crate::scratch_tests::Scratch::new("replay-far-future");
        let dir = scratch.path();
        let stray = dir.join("stray.pcap");
        std::fs::write(&stray, pcap_at(&[100, 101, 2_000_000_000, 102, 103])).unwrap();
        let jump = dir.join("jump.pcap");
        std::fs::write(&jump, pcap_at(&[100, 2_000_000_000, 2_000_000_001])).unwrap();
        let opts = ReplayOptions {
            speed: 10.0,
            looping: false,
        };
        let run = |path: &std::path::Path| {
            let mut r = Replay::open(&[Savefile::Path(path.into())], opts.clone()).unwrap();
            let mut seen = Vec::new();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                let p = r.poll(&mut |f| seen.push(f.ts.as_nanos() / 1_000_000_000));
                if p.unwrap() == Poll::End {
                    break;
                }
            }
            (seen, start.elapsed(), r.now().unwrap())
        };
        let (seen, took, now) = run(&stray);
        assert_eq!(seen, [100, 101, 2_000_000_000, 102, 103]);
        assert!(took < Duration::from_secs(2), "{took:?}");
        // The stray frame did not move the replay clock.
        assert!(now < Timestamp::from_secs_nanos(1_000, 0), "{now}");
        let (seen, took, now) = run(&jump);
        assert_eq!(seen, [100, 2_000_000_000, 2_000_000_001]);
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(now >= Timestamp::from_secs_nanos(2_000_000_000, 0), "{now}");
    }

    /// A loop reads its files from the descriptors opened at the start:
    /// a file the process could no longer open by path (gone here; root's
    /// after a privilege drop in `tests/privileges.rs`) loops all the same.
    #[test]
    fn loops_read_the_files_opened_at_the_start() {
        let scratch = crate::scratch_tests::Scratch::new("replay-opened");
        let dir = scratch.path();
        let path = dir.join("one.pcap");
        std::fs::write(&path, pcap_at(&[7])).unwrap();
        let opts = ReplayOptions {
            speed: 1000.0,
            looping: true,
        };
        let mut r = Replay::open(&[Savefile::Path(path.clone())], opts).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while n < 3 && Instant::now() < deadline {
            assert!(!r.reopen_failing);
            r.poll(&mut |_| n += 1).unwrap();
        }
        assert_eq!(n, 3);
        assert_eq!(r.loops(), 2);
        assert_eq!(r.facts()[0].path, path.display().to_string());
    }

    /// A loop whose file no longer reads as a capture (cut to nothing while
    /// being rewritten) waits and retries instead of failing the capture.
    #[test]
    fn a_failed_restart_is_retried_not_fatal() {
        let scratch = crate::scratch_tests::Scratch::new("replay-restart");
        let dir = scratch.path();
        let path = dir.join("one.pcap");
        std::fs::write(&path, pcap_at(&[7])).unwrap();
        let opts = ReplayOptions {
            speed: 1000.0,
            looping: true,
        };
        let mut r = Replay::open(&[Savefile::Path(path.clone())], opts).unwrap();
        let mut n = 0;
        assert_eq!(r.poll(&mut |_| n += 1).unwrap(), Poll::Frames(1));
        // Truncated in place: the held descriptor sees it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        for _ in 0..3 {
            assert_eq!(r.poll(&mut |_| n += 1).unwrap(), Poll::Idle);
        }
        assert!(r.reopen_failing);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(&pcap_at(&[7]))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while n < 2 && Instant::now() < deadline {
            r.poll(&mut |_| n += 1).unwrap();
        }
        assert_eq!(n, 2);
        assert_eq!(r.loops(), 1);
    }
}
