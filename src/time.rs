//! Capture time. Every expiry decision in portwatch is made on these
//! timestamps, passed in as arguments: a replay reads them from the file, a
//! live capture from the kernel. Only the commands (`cmd`) and
//! `source::live` (releasing reordered frames) read the wall clock.

use std::fmt;
use std::time::Duration;

/// Nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_secs_nanos(secs: u64, nanos: u32) -> Self {
        Timestamp(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(nanos as u64),
        )
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Seconds as a float, for reports and Prometheus timestamps.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn saturating_sub(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    /// The wall clock. Only `cmd` and `source::live` call this.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_secs_nanos(d.as_secs(), d.subsec_nanos())
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-01-02T03:04:05.000006Z`
    /// (humantime's format; a u64 of nanoseconds ends in 2554, well inside
    /// its range).
    ///
    /// Written into a fixed buffer, not through `fmt`: a report of other
    /// systems' traffic prints two for each of thousands of rows.
    pub fn rfc3339(self) -> String {
        let secs = self.0 / 1_000_000_000;
        let micros = self.0 % 1_000_000_000 / 1_000;
        let (year, month, day) = civil_date(secs / 86_400);
        let of_day = secs % 86_400;
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut b[0..4], year);
        put_digits(&mut b[5..7], month);
        put_digits(&mut b[8..10], day);
        put_digits(&mut b[11..13], of_day / 3_600);
        put_digits(&mut b[14..16], of_day / 60 % 60);
        put_digits(&mut b[17..19], of_day % 60);
        put_digits(&mut b[20..26], micros);
        // ASCII digits and separators: always UTF-8 (the lossy form walks
        // it as chunks, several times the cost).
        std::str::from_utf8(&b)
            .map(str::to_owned)
            .unwrap_or_default()
    }
}

/// Year, month and day of a day number (days since 1970-01-01), in the
/// proleptic Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so a leap day ends its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `n`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// `replay --since/--until`: the part of the data to audit, `since`
/// inclusive, `until` exclusive (either open). Frames and records outside
/// are skipped and counted; the span the edges are judged over is the
/// range's share of the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl TimeRange {
    /// No bound: everything is inside.
    pub fn is_open(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    #[inline]
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }

    /// A span of data cut to the range (`None` when they do not meet).
    pub fn clip(&self, span: (Timestamp, Timestamp)) -> Option<(Timestamp, Timestamp)> {
        let start = self.since.map_or(span.0, |s| span.0.max(s));
        let end = self.until.map_or(span.1, |u| span.1.min(u));
        (start <= end).then_some((start, end))
    }
}

/// What a [`TimeRange`] left out: how many, and the times they spanned
/// (with the span of what was kept, the whole data's span).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outside {
    pub count: u64,
    pub span: Option<(Timestamp, Timestamp)>,
}

impl Outside {
    /// One more left out, at `ts`; `counted`: whether it counts (a record
    /// that carried a connection, not a source's note of lost events).
    pub fn note(&mut self, ts: Timestamp, counted: bool) {
        self.count += u64::from(counted);
        self.span = Some(widen(self.span, (ts, ts)));
    }
}

/// The smallest span holding both.
pub fn widen(
    a: Option<(Timestamp, Timestamp)>,
    b: (Timestamp, Timestamp),
) -> (Timestamp, Timestamp) {
    match a {
        Some(a) => (a.0.min(b.0), a.1.max(b.1)),
        None => b,
    }
}

/// Why a `--since`/`--until` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeBoundError {
    #[error("`{0}`: expected an RFC 3339 time (2026-01-05T09:00:00Z, 2026-01-05T10:00:00+01:00) or a date (2026-01-05, midnight UTC)")]
    Syntax(String),
    #[error("`{0}`: before 1970 or too far ahead")]
    OutOfRange(String),
}

/// A `--since`/`--until` value: an RFC 3339 time with its offset (`Z` or
/// `±hh:mm`), or a plain date, meaning 00:00 UTC that day.
pub fn parse_time_bound(s: &str) -> Result<Timestamp, TimeBoundError> {
    let t = s.trim();
    let ts: jiff::Timestamp = match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) if t.len() == 10 => t
            .parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
            .ok_or_else(|| TimeBoundError::Syntax(s.into()))?,
        Err(_) => return Err(TimeBoundError::Syntax(s.into())),
    };
    let nanos =
        u64::try_from(ts.as_nanosecond()).map_err(|_| TimeBoundError::OutOfRange(s.into()))?;
    Ok(Timestamp(nanos))
}

/// How far ahead of the clock a frame may be and still move it at once;
/// also how far behind it a frame may be and still count as in order.
pub const JUMP_BOUND: Duration = Duration::from_secs(60);
/// Frames that must agree (within [`JUMP_BOUND`] of each other) before the
/// clock jumps to a far-away time: the far frame and two after it.
pub const CONFIRM_FRAMES: u64 = 3;

/// Capture time as frames report it, robust to stray timestamps.
///
/// - A frame at most [`JUMP_BOUND`] ahead moves the clock to its time.
/// - A frame further ahead is a suspect: the caller holds it, and the clock
///   jumps to its time only when [`CONFIRM_FRAMES`] frames in all agree with
///   it (a capture that went quiet for a while); then the held frames are
///   processed at their own times. If as many frames agree with the old
///   clock first, it was a stray timestamp (a bad clock, corruption): it is
///   counted as an anomaly and processed at the clock's time.
/// - A frame behind the clock never moves it back: within the bound it is
///   processed at the clock (several interfaces merged, a batch late);
///   further behind it is an anomaly. Only while the clock has not yet been
///   confirmed (the first frames) can frames far behind take it back, so a
///   stray first frame does not capture the clock either.
#[derive(Clone, Debug, Default)]
pub struct CaptureClock {
    now: Option<Timestamp>,
    first: Option<Timestamp>,
    /// Frames that agreed with the clock since it was last set by a jump.
    agreed: u64,
    suspect: Option<Suspect>,
    anomalies: u64,
}

#[derive(Clone, Copy, Debug)]
struct Suspect {
    first: Timestamp,
    last: Timestamp,
    frames: u64,
    /// Frames agreeing with the clock since the suspect appeared.
    against: u64,
}

/// What to do with a frame, and with the suspect frames held before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admit {
    /// The time to process this frame at; `None`: hold it (a suspect).
    pub at: Option<Timestamp>,
    pub held: Held,
}

impl Admit {
    /// Process the frame at `ts`; the suspects held (if any) stay held.
    pub fn at(ts: Timestamp) -> Admit {
        Admit {
            at: Some(ts),
            held: Held::Keep,
        }
    }
}

/// The fate of the frames held as suspects, decided by this frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Still undecided (or none held).
    Keep,
    /// The clock jumped to them: process each at its own time, before this
    /// frame.
    Confirmed,
    /// Strays: process them at the clock's time (they are anomalies).
    Rejected,
}

fn near(a: Timestamp, b: Timestamp) -> bool {
    a.0.abs_diff(b.0) <= JUMP_BOUND.as_nanos() as u64
}

impl CaptureClock {
    /// The common case of [`Self::admit`]: a frame in order and at most
    /// [`JUMP_BOUND`] ahead, with nothing suspect held. Takes it (the clock
    /// moves to `ts`, to be processed at `ts`) and says true; otherwise
    /// changes nothing.
    #[inline]
    pub fn admit_in_order(&mut self, ts: Timestamp) -> bool {
        if let (Some(now), None) = (&mut self.now, &self.suspect) {
            // One comparison: a `ts` before `now` wraps to far past the bound.
            if ts.0.wrapping_sub(now.0) <= JUMP_BOUND.as_nanos() as u64 {
                *now = ts;
                self.agreed += 1;
                return true;
            }
        }
        false
    }

    /// Take a frame's timestamp.
    pub fn admit(&mut self, ts: Timestamp) -> Admit {
        if self.admit_in_order(ts) {
            return Admit::at(ts);
        }
        let Some(now) = self.now else {
            self.now = Some(ts);
            self.first = Some(ts);
            self.agreed = 1;
            return Admit::at(ts);
        };
        if near(ts, now) {
            self.agreed += 1;
            let mut held = Held::Keep;
            if let Some(s) = &mut self.suspect {
                s.against += 1;
                if s.against >= CONFIRM_FRAMES {
                    self.anomalies += s.frames;
                    self.suspect = None;
                    held = Held::Rejected;
                }
            }
            if ts < self.first.unwrap_or(ts) {
                self.first = Some(ts);
            }
            let now = now.max(ts);
            self.now = Some(now);
            return Admit {
                at: Some(now),
                held,
            };
        }
        if ts < now && self.agreed >= CONFIRM_FRAMES {
            self.anomalies += 1;
            return Admit::at(now);
        }
        match &mut self.suspect {
            Some(s) if near(ts, s.last) => {
                s.frames += 1;
                s.first = s.first.min(ts);
                s.last = s.last.max(ts);
                if s.frames >= CONFIRM_FRAMES {
                    let s = *s;
                    self.suspect = None;
                    if s.last < now {
                        // The first frames were the strays.
                        self.anomalies += self.agreed;
                        self.first = Some(s.first);
                    }
                    self.now = Some(s.last);
                    self.agreed = s.frames;
                    return Admit {
                        at: Some(ts),
                        held: Held::Confirmed,
                    };
                }
                Admit {
                    at: None,
                    held: Held::Keep,
                }
            }
            _ => {
                let mut held = Held::Keep;
                if let Some(old) = self.suspect.take() {
                    self.anomalies += old.frames;
                    held = Held::Rejected;
                }
                self.suspect = Some(Suspect {
                    first: ts,
                    last: ts,
                    frames: 1,
                    against: 0,
                });
                Admit { at: None, held }
            }
        }
    }

    /// A record's time (a parsed log line, trusted): moves the clock
    /// forward and widens the span, never back.
    pub fn note_record(&mut self, ts: Timestamp) {
        self.now = Some(self.now.map_or(ts, |n| n.max(ts)));
        self.first = Some(self.first.map_or(ts, |f| f.min(ts)));
    }

    /// The capture ended: a suspect still held is a stray.
    pub fn end(&mut self) -> Held {
        match self.suspect.take() {
            Some(s) => {
                self.anomalies += s.frames;
                Held::Rejected
            }
            None => Held::Keep,
        }
    }

    pub fn now(&self) -> Option<Timestamp> {
        self.now
    }

    /// First and last time of the frames that set the clock: the capture's
    /// span without its anomalies.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        self.first.zip(self.now)
    }

    /// Frames that did not move the clock and never will: far behind it, or
    /// far ahead and contradicted by the frames after them (or by the end).
    pub fn anomalies(&self) -> u64 {
        self.anomalies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same text as humantime's RFC 3339 with microseconds.
    fn humantime_micros(t: Timestamp) -> String {
        let t = std::time::UNIX_EPOCH + Duration::from_nanos(t.0);
        humantime::format_rfc3339_micros(t).to_string()
    }

    #[test]
    fn rfc3339_is_humantimes_at_calendar_edges() {
        let day = 86_400;
        let edges = [
            0,
            day - 1,
            // 2000-02-29 (leap by 400), 2000-03-01, 2100-02-28 and
            // 2100-03-01 (2100 not leap)
            11_016 * day,
            11_017 * day - 1,
            11_017 * day,
            47_541 * day,
            47_540 * day + day - 1,
            // 2024-12-31T23:59:59, 2025-01-01, 2026-01-01
            1_735_689_599,
            1_735_689_600,
            1_767_225_600,
        ];
        for secs in edges {
            for nanos in [0, 999, 1_000, 123_456_789, 999_999_999] {
                let t = Timestamp::from_secs_nanos(secs, nanos);
                assert_eq!(t.rfc3339(), humantime_micros(t), "{secs}.{nanos}");
            }
        }
        let last = Timestamp(u64::MAX);
        assert_eq!(last.rfc3339(), humantime_micros(last));
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_is_humantimes(n in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(Timestamp(n).rfc3339(), humantime_micros(Timestamp(n)));
        }
    }

    fn s(n: u64) -> Timestamp {
        Timestamp::from_secs_nanos(n, 0)
    }

    #[test]
    fn time_bounds_parse_rfc3339_and_dates() {
        assert_eq!(parse_time_bound("1970-01-01T00:00:01Z"), Ok(s(1)));
        assert_eq!(
            parse_time_bound("2026-01-05T10:00:00+01:00"),
            parse_time_bound("2026-01-05T09:00:00Z")
        );
        assert_eq!(
            parse_time_bound("2026-01-05T09:00:00.5Z").unwrap().0 % 1_000_000_000,
            500_000_000
        );
        assert_eq!(
            parse_time_bound("2026-01-05"),
            parse_time_bound("2026-01-05T00:00:00Z")
        );
        for bad in ["", "yesterday", "2026-01-05T09:00:00", "2026-13-01", "-1h"] {
            assert!(
                matches!(parse_time_bound(bad), Err(TimeBoundError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_time_bound("1969-12-31T23:59:59Z"),
            Err(TimeBoundError::OutOfRange(_))
        ));
    }

    #[test]
    fn time_range_since_inclusive_until_exclusive() {
        let r = TimeRange {
            since: Some(s(10)),
            until: Some(s(20)),
        };
        assert!(!r.contains(s(9)));
        assert!(r.contains(s(10)));
        assert!(r.contains(Timestamp(s(20).0 - 1)));
        assert!(!r.contains(s(20)));
        assert!(TimeRange::default().contains(s(0)));
        assert!(TimeRange::default().is_open());
        let since = TimeRange {
            since: Some(s(10)),
            until: None,
        };
        assert!(since.contains(s(u32::MAX as u64)) && !since.contains(s(9)));
    }

    #[test]
    fn outside_counts_and_spans() {
        let mut o = Outside::default();
        o.note(s(30), true);
        o.note(s(5), false);
        assert_eq!(o.count, 1);
        assert_eq!(o.span, Some((s(5), s(30))));
        assert_eq!(widen(o.span, (s(10), s(40))), (s(5), s(40)));
        assert_eq!(widen(None, (s(10), s(40))), (s(10), s(40)));
    }

    #[test]
    fn time_range_clips_a_span() {
        let r = TimeRange {
            since: Some(s(10)),
            until: Some(s(20)),
        };
        assert_eq!(r.clip((s(0), s(100))), Some((s(10), s(20))));
        assert_eq!(r.clip((s(12), s(15))), Some((s(12), s(15))));
        assert_eq!(r.clip((s(25), s(30))), None);
        assert_eq!(TimeRange::default().clip((s(1), s(2))), Some((s(1), s(2))));
    }

    /// Feed frames; each comes back with the time it is processed at,
    /// held frames when their fate is decided (as the pipeline does).
    fn feed(c: &mut CaptureClock, secs: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut held = Vec::new();
        for t in secs {
            let a = c.admit(s(*t));
            let now = c.now().unwrap().0 / 1_000_000_000;
            match a.held {
                Held::Keep => {}
                Held::Confirmed => out.append(&mut held),
                Held::Rejected => out.extend(held.drain(..).map(|_| now)),
            }
            match a.at {
                Some(at) => out.push(at.0 / 1_000_000_000),
                None => held.push(*t),
            }
        }
        if c.end() == Held::Rejected {
            let now = c.now().unwrap().0 / 1_000_000_000;
            out.extend(held.drain(..).map(|_| now));
        }
        out
    }

    #[test]
    fn one_stray_frame_does_not_move_the_clock() {
        let year = 365 * 86_400;
        let mut c = CaptureClock::default();
        let at = feed(
            &mut c,
            &[1000, 1001, 1002 + 3 * year, 1003, 1004, 1005, 1006],
        );
        // The stray is processed at the clock once three frames contradict it.
        assert_eq!(at, [1000, 1001, 1003, 1004, 1005, 1005, 1006]);
        assert_eq!(c.anomalies(), 1);
        assert_eq!(c.span(), Some((s(1000), s(1006))));
    }

    #[test]
    fn a_real_gap_is_confirmed_by_the_frames_after_it() {
        let mut c = CaptureClock::default();
        let at = feed(&mut c, &[1000, 1001, 9000, 9001, 9002, 9003]);
        assert_eq!(at, [1000, 1001, 9000, 9001, 9002, 9003]);
        assert_eq!(c.anomalies(), 0);
        assert_eq!(c.span(), Some((s(1000), s(9003))));
    }

    #[test]
    fn frames_behind_never_move_it_back() {
        let mut c = CaptureClock::default();
        let at = feed(&mut c, &[1000, 1001, 1002, 1001, 10, 1003]);
        assert_eq!(at, [1000, 1001, 1002, 1002, 1002, 1003]);
        assert_eq!(c.anomalies(), 1);
        assert_eq!(c.span(), Some((s(1000), s(1003))));
    }

    #[test]
    fn a_stray_first_frame_is_outvoted() {
        let mut c = CaptureClock::default();
        let at = feed(&mut c, &[99_999_999, 1000, 1001, 1002, 1003]);
        assert_eq!(at[1..], [1000, 1001, 1002, 1003]);
        assert_eq!(c.anomalies(), 1);
        assert_eq!(c.span(), Some((s(1000), s(1003))));
    }

    #[test]
    fn an_unconfirmed_suspect_at_the_end_is_an_anomaly() {
        let mut c = CaptureClock::default();
        let at = feed(&mut c, &[1000, 1001, 1002, 5000]);
        assert_eq!(at, [1000, 1001, 1002, 1002]);
        assert_eq!(c.anomalies(), 1);
        assert_eq!(c.span(), Some((s(1000), s(1002))));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(Timestamp(0).rfc3339(), "1970-01-01T00:00:00.000000Z");
        let t = Timestamp::from_secs_nanos(1_700_000_000, 123_456_789);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20.123456Z");
        let leap = Timestamp::from_secs_nanos(951_782_400, 0); // 2000-02-29
        assert_eq!(leap.rfc3339(), "2000-02-29T00:00:00.000000Z");
        // The last instant a Timestamp holds.
        assert_eq!(Timestamp(u64::MAX).rfc3339(), "2554-07-21T23:34:33.709551Z");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp(5).saturating_sub(Timestamp(9)), Duration::ZERO);
        assert_eq!(
            Timestamp(u64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
    }
}
