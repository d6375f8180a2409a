//! Capture time. Every expiry decision in portwatch is made on these
//! timestamps, passed in as arguments: a replay reads them from the file, a
//! live capture from the kernel. Only the commands (`cmd`) read the wall
//! clock, for a live capture's idle expiry and the daemon's timestamps.

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

    /// The wall clock. Only `cmd` calls this.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_secs_nanos(d.as_secs(), d.subsec_nanos())
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-01-02T03:04:05.000006Z`
    /// (humantime's format; a u64 of nanoseconds ends in 2554, well inside
    /// its range).
    pub fn rfc3339(self) -> String {
        let t = std::time::UNIX_EPOCH + Duration::from_nanos(self.0);
        humantime::format_rfc3339_micros(t).to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
