//! Accepted deviations: a flow the policy does not allow (or an expected
//! flow that is blocked) that the site owner knows of and accepts until a
//! date, with a reason, a ticket and an owner. Unlike `allow:`, an accepted
//! flow is still a finding: it is counted and shown, marked accepted, and
//! does not alert until its acceptance expires. Expiry is judged on the
//! event's time, passed in.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Pos;
use crate::time::Timestamp;

/// Most entries of `accepted:`: each finding is matched against all of
/// them, so the list is bounded.
pub const MAX_ACCEPTANCES: usize = 1_000;

/// One end of an accepted flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptEnd {
    /// A node, user network or external endpoint of the site.
    Name(String),
    /// An address or CIDR block: a host outside the site, or one address
    /// of an endpoint.
    Net(IpNet),
}

impl AcceptEnd {
    /// Whether an end named `name` at `addr` is this end.
    pub fn matches(&self, name: &str, addr: IpAddr) -> bool {
        match self {
            AcceptEnd::Name(n) => n == name,
            AcceptEnd::Net(net) => net.contains(&addr.to_canonical()) || net.contains(&addr),
        }
    }

    /// As written in the site file (a CIDR of one address as the address).
    pub fn label(&self) -> String {
        match self {
            AcceptEnd::Name(n) => n.clone(),
            AcceptEnd::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
            AcceptEnd::Net(n) => n.to_string(),
        }
    }
}

/// An entry of the site's `accepted:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptance {
    pub from: AcceptEnd,
    pub to: AcceptEnd,
    pub port: u16,
    /// Free text from the site file: data, quoted wherever written.
    pub reason: String,
    pub ticket: String,
    pub owner: String,
    /// The last day it holds, `YYYY-MM-DD` (UTC).
    pub expires: String,
    /// 00:00 UTC the day after `expires`: the first instant it no longer
    /// holds.
    pub until: Timestamp,
    pub pos: Pos,
    /// Index in the list, for field paths such as `accepted[2]`.
    pub index: usize,
}

impl Acceptance {
    /// An entry of `from` to `to` on `port` through `expires` (a date), with
    /// placeholder text and position: what tests accept flows with.
    #[cfg(test)]
    pub fn for_test(from: AcceptEnd, to: AcceptEnd, port: u16, expires: &str) -> Acceptance {
        let date: jiff::civil::Date = expires.parse().unwrap();
        Acceptance {
            from,
            to,
            port,
            reason: "r".into(),
            ticket: "CHG-1".into(),
            owner: "o".into(),
            expires: expires.into(),
            until: end_of(date).unwrap(),
            pos: Pos { line: 1, column: 1 },
            index: 0,
        }
    }

    /// Whether it still holds at `ts`: through the whole of its last day.
    pub fn holds_at(&self, ts: Timestamp) -> bool {
        ts < self.until
    }

    /// Whether it names the flow from `src` (named, at an address) to
    /// `dst` on `port`, whatever the time.
    pub fn covers(
        &self,
        (src, src_addr): (&str, IpAddr),
        (dst, dst_addr): (&str, IpAddr),
        port: u16,
    ) -> bool {
        self.port == port && self.from.matches(src, src_addr) && self.to.matches(dst, dst_addr)
    }

    /// `from -> to:port`, as written.
    pub fn flow_label(&self) -> String {
        format!("{} -> {}:{}", self.from.label(), self.to.label(), self.port)
    }
}

/// The timestamp at which an acceptance expiring on `date` (its last day)
/// stops holding: 00:00 UTC the next day. `None` for a date past what a
/// timestamp holds.
pub fn end_of(date: jiff::civil::Date) -> Option<Timestamp> {
    let next = date.tomorrow().ok()?;
    let z = next.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    let nanos = u64::try_from(z.timestamp().as_nanosecond()).ok()?;
    Some(Timestamp(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acceptance(from: AcceptEnd, to: &str, port: u16, expires: &str) -> Acceptance {
        Acceptance::for_test(from, AcceptEnd::Name(to.into()), port, expires)
    }

    fn at(s: &str) -> Timestamp {
        crate::time::parse_time_bound(s).unwrap()
    }

    #[test]
    fn an_acceptance_holds_through_its_last_day_and_not_after() {
        let a = acceptance(AcceptEnd::Name("u".into()), "e", 4747, "2027-03-31");
        assert!(a.holds_at(at("2027-03-30T12:00:00Z")), "before the date");
        assert!(a.holds_at(at("2027-03-31T00:00:00Z")), "at the date");
        assert!(
            a.holds_at(at("2027-03-31T23:59:59.999999999Z")),
            "its last instant"
        );
        assert!(!a.holds_at(at("2027-04-01T00:00:00Z")), "the day after");
        assert!(!a.holds_at(at("2028-01-01T00:00:00Z")), "long after");
    }

    #[test]
    fn an_acceptance_covers_its_flow_by_name_or_address() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let named = acceptance(
            AcceptEnd::Name("corp".into()),
            "engine1",
            4747,
            "2027-01-01",
        );
        let user = ("corp", ip("198.51.100.7"));
        assert!(named.covers(user, ("engine1", ip("192.0.2.21")), 4747));
        assert!(
            !named.covers(user, ("engine1", ip("192.0.2.21")), 4242),
            "port"
        );
        assert!(
            !named.covers(user, ("engine2", ip("192.0.2.22")), 4747),
            "dst"
        );
        assert!(!named.covers(
            ("other", ip("198.51.100.7")),
            ("engine1", ip("192.0.2.21")),
            4747
        ));

        let net = AcceptEnd::Net("100.64.0.0/10".parse().unwrap());
        let by_net = acceptance(net, "engine1", 4747, "2027-01-01");
        let engine = ("engine1", ip("192.0.2.21"));
        assert!(by_net.covers(("unknown", ip("100.64.1.2")), engine, 4747));
        assert!(!by_net.covers(("unknown", ip("100.128.0.1")), engine, 4747));
        // An IPv4 address seen as IPv4-mapped IPv6 is the same host.
        assert!(by_net.covers(("unknown", ip("::ffff:100.64.1.2")), engine, 4747));
        assert_eq!(by_net.flow_label(), "100.64.0.0/10 -> engine1:4747");
    }

    #[test]
    fn the_end_of_a_date_is_midnight_utc_after_it() {
        let d: jiff::civil::Date = "2026-12-31".parse().unwrap();
        assert_eq!(end_of(d), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(end_of(jiff::civil::Date::MAX), None);
    }
}
