//! Recent classifications by (source, destination, port): a control packet
//! of a pair seen lately skips the policy's lookups, and a new attempt its
//! tally's.

use std::net::IpAddr;

use crate::classify::{accept_at, classify, Classification};
use crate::decode::flow_hash_of;
use crate::policy::Policy;
use crate::state::tally::RowId;
use crate::time::Timestamp;

/// Slots of [`Verdicts`]: about 100 KiB. The pairs of a site repeat
/// within a few hundred attempts; a scan's mostly do not, and only costs
/// misses.
pub const VERDICT_SLOTS: usize = 1024;

/// One remembered classification.
pub struct Remembered {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    /// As [`classify`] made it, with the acceptance of the last lookup
    /// (each lookup sets it again at its own time).
    pub class: Classification,
    /// Where the last attempt of these addresses went in the tally: a hint
    /// that [`crate::state::tally::Tally::attempt_hinted`] checks.
    pub row: RowId,
}

/// Direct-mapped by a hash of the three: a new pair overwrites the one in
/// its slot. Holds for one policy: emptied when it changes.
pub struct Verdicts {
    slots: Box<[Option<Remembered>]>,
    hits: u64,
    misses: u64,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            slots: (0..VERDICT_SLOTS).map(|_| None).collect(),
            hits: 0,
            misses: 0,
        }
    }
}

impl Verdicts {
    /// Lookups answered from a slot.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that classified (and took the slot).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Pairs held (at most [`VERDICT_SLOTS`]).
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every pair (the policy changed); the counts stay.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// [`crate::classify::classify_at`] of `src` to `dst:port` at `ts`
    /// under `p` (the policy every lookup since the last clear was made
    /// under), with its tally hint. A miss classifies with `make` (which
    /// must answer as [`classify`] does) and takes the slot.
    #[inline]
    pub fn get(
        &mut self,
        p: &Policy,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        ts: Timestamp,
        make: impl FnOnce() -> Classification,
    ) -> &mut Remembered {
        let i = flow_hash_of(src, dst, 0, port) as usize % VERDICT_SLOTS;
        let slot = &mut self.slots[i];
        let hit = matches!(slot, Some(r) if r.port == port && r.src == src && r.dst == dst);
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        if !hit {
            // Another pair's: it gives way.
            *slot = None;
        }
        let r = slot.get_or_insert_with(|| Remembered {
            src,
            dst,
            port,
            class: make(),
            row: RowId::NONE,
        });
        // The rest depends on the policy and the addresses alone.
        accept_at(p, &mut r.class, src, dst, ts);
        r
    }

    /// [`Verdicts::get`], classifying with [`classify`] on a miss.
    #[inline]
    pub fn classify_at(
        &mut self,
        p: &Policy,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        ts: Timestamp,
    ) -> &mut Remembered {
        self.get(p, src, dst, port, ts, || classify(p, src, dst, port))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::classify::classify_at;
    use crate::config::load_policy;
    use crate::site::{AcceptEnd, Acceptance};

    /// multi-node, with users accepted on engine1's QES until 2030.
    fn policy() -> Policy {
        let mut p = load_policy(Path::new("multi-node"), None).unwrap().policy;
        p.site.accepted = vec![Acceptance::for_test(
            AcceptEnd::Net("198.51.100.0/24".parse().unwrap()),
            AcceptEnd::Name("engine1".into()),
            4747,
            "2030-01-01",
        )];
        p
    }

    /// Nodes, a user, an unknown host and loopback, to every port the
    /// model names and some it does not.
    fn triples(p: &Policy) -> Vec<(IpAddr, IpAddr, u16)> {
        let addrs: Vec<IpAddr> = [
            "192.0.2.10",
            "192.0.2.11",
            "192.0.2.21",
            "198.51.100.7",
            "100.64.0.1",
            "127.0.0.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let mut ports = p.required_ports();
        ports.extend([443, 4747, 4242, 22, 9999]);
        let mut v = Vec::new();
        for &s in &addrs {
            for &d in &addrs {
                v.extend(ports.iter().map(|&port| (s, d, port)));
            }
        }
        v
    }

    /// A hit answers as classifying again would, acceptance at the
    /// lookup's own time included.
    #[test]
    fn answers_as_classify_at_on_hits_and_misses() {
        let p = policy();
        let mut v = Verdicts::default();
        let before = Timestamp::from_secs_nanos(1_700_000_000, 0);
        let after = Timestamp::from_secs_nanos(2_000_000_000, 0);
        let all = triples(&p);
        assert!(all.len() < VERDICT_SLOTS);
        let mut accepted = 0;
        for ts in [before, after, before] {
            for &(s, d, port) in &all {
                let c = &v.classify_at(&p, s, d, port, ts).class;
                assert_eq!(*c, classify_at(&p, s, d, port, ts), "{s} {d} {port}");
                accepted += usize::from(c.accepted.is_some());
            }
        }
        assert!(accepted > 0, "the acceptance was asked");
        // Slots taken by more than one triple miss again.
        let n = all.len() as u64;
        assert_eq!(v.hits() + v.misses(), 3 * n);
        assert!(v.misses() >= v.len() as u64);
        assert!(v.hits() >= n, "{} hits of {}", v.hits(), 3 * n);
    }

    /// More pairs than slots: the count stays at the slots, each lookup is
    /// a hit or a miss, and what was overwritten is classified again.
    #[test]
    fn bounded_by_its_slots() {
        let p = policy();
        let mut v = Verdicts::default();
        let ts = Timestamp::from_secs_nanos(1, 0);
        let dst: IpAddr = "192.0.2.21".parse().unwrap();
        let n = 4 * VERDICT_SLOTS as u32;
        for i in 0..n {
            let src = IpAddr::from((0x6440_0000u32 + i).to_be_bytes());
            let c = &v.classify_at(&p, src, dst, 4747, ts).class;
            assert_eq!(*c, classify_at(&p, src, dst, 4747, ts));
        }
        assert!(v.len() <= VERDICT_SLOTS);
        assert_eq!(v.misses(), u64::from(n));
        let src = IpAddr::from(0x6440_0000u32.to_be_bytes());
        v.classify_at(&p, src, dst, 4747, ts);
        let hits = v.hits();
        v.classify_at(&p, src, dst, 4747, ts);
        assert_eq!(v.hits(), hits + 1, "the second lookup of a pair hits");
    }

    #[test]
    fn clear_forgets_every_pair() {
        let p = policy();
        let mut v = Verdicts::default();
        let ts = Timestamp::from_secs_nanos(1, 0);
        let (s, d) = (
            "198.51.100.7".parse().unwrap(),
            "192.0.2.21".parse().unwrap(),
        );
        v.classify_at(&p, s, d, 4747, ts);
        assert_eq!(v.len(), 1);
        v.clear();
        assert!(v.is_empty());
        v.classify_at(&p, s, d, 4747, ts);
        assert_eq!((v.hits(), v.misses()), (0, 2));
    }
}
