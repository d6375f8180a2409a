//! (server, client) address pairs whose replies this capture has shown.

use std::net::IpAddr;

use super::{FlowKey, MAX_REPLY_PAIRS};
use crate::map::FastMap;
use crate::time::Timestamp;

/// (server, client) address pairs whose replies this capture has shown: an
/// unanswered SYN between them is a real silence, not a blind spot. When
/// full, the older half (by last reply) is dropped and counted.
///
/// IPv4 pairs, nearly all of them, are one word: 16 bytes a bucket and one
/// hashed word, where a pair of `IpAddr` takes 48 bytes and hashes as two
/// tagged, length-prefixed slices.
#[derive(Default)]
pub(super) struct ReplyPairs {
    v4: FastMap<u64, Timestamp>,
    other: FastMap<(IpAddr, IpAddr), Timestamp>,
    dropped: u64,
}

/// Where a pair is kept.
enum Pair {
    V4(u64),
    Other((IpAddr, IpAddr)),
}

fn pair(server: IpAddr, client: IpAddr) -> Pair {
    match (server, client) {
        (IpAddr::V4(s), IpAddr::V4(c)) => {
            Pair::V4(u64::from(s.to_bits()) << 32 | u64::from(c.to_bits()))
        }
        _ => Pair::Other((server, client)),
    }
}

impl ReplyPairs {
    pub fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    /// Pairs forgotten because the set was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn note(&mut self, server: IpAddr, client: IpAddr, ts: Timestamp) {
        let p = pair(server, client);
        if self.len() >= MAX_REPLY_PAIRS && !self.has(&p) {
            self.forget_older_half();
        }
        let t = match p {
            Pair::V4(k) => self.v4.entry(k).or_insert(ts),
            Pair::Other(k) => self.other.entry(k).or_insert(ts),
        };
        *t = (*t).max(ts);
    }

    /// Whether the attempt's (server, client) pair has shown replies.
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.has(&pair(key.server, key.client))
    }

    fn has(&self, p: &Pair) -> bool {
        match p {
            Pair::V4(k) => self.v4.contains_key(k),
            Pair::Other(k) => self.other.contains_key(k),
        }
    }

    fn forget_older_half(&mut self) {
        let mut times: Vec<Timestamp> = self
            .v4
            .values()
            .chain(self.other.values())
            .copied()
            .collect();
        let (_, cut, _) = times.select_nth_unstable(MAX_REPLY_PAIRS / 2);
        let cut = *cut;
        let before = self.len();
        self.v4.retain(|_, t| *t > cut);
        self.other.retain(|_, t| *t > cut);
        self.dropped += (before - self.len()) as u64;
    }
}
