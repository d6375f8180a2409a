//! Which addresses a logged interface's records all share: a flow log is
//! written per network interface, and the interface's own address is an
//! end of each of its records. Pure: the site decides whose address it is.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Interfaces tracked per file; the records of any further interface are
/// counted (`untracked`) and decide nothing, so its log covers nothing.
pub const INTERFACE_CAPACITY: usize = 4096;

/// Longest interface id kept, in bytes (an Azure resource id is a few
/// hundred): the map is bounded in bytes too, whatever a line holds. The
/// records of a longer one are counted as `untracked`.
pub const MAX_INTERFACE_ID: usize = 1024;

/// The addresses at an end of every record of one interface so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ends {
    /// At most four (source, destination and the packet's own pair).
    pub common: Vec<IpAddr>,
    /// A record has had other ends than the first: until then the two
    /// ends of one conversation cannot be told apart.
    pub narrowed: bool,
}

impl Ends {
    /// Whether the addresses left changed.
    fn add(&mut self, ends: &[IpAddr]) -> bool {
        let before = self.common.len();
        self.common.retain(|a| ends.contains(a));
        let changed = self.common.len() < before;
        self.narrowed |= changed;
        changed
    }

    /// The addresses that can still be the interface's own, once told
    /// apart from its peers'; `None` while undecided.
    pub fn decided(&self) -> Option<&[IpAddr]> {
        self.narrowed.then_some(self.common.as_slice())
    }
}

/// The interfaces of one flow file, by the id the log gives them (AWS
/// `interface-id`, Azure NIC MAC or target resource; empty if none).
#[derive(Clone, Debug, Default)]
pub struct Interfaces {
    pub by_id: BTreeMap<String, Ends>,
    /// Records of interfaces beyond [`INTERFACE_CAPACITY`], or of an id
    /// longer than [`MAX_INTERFACE_ID`].
    pub untracked: u64,
    /// How often an interface's addresses narrowed: while it stands
    /// still, its owners are what they were (a followed log asks often).
    pub changes: u64,
}

impl Interfaces {
    /// A record of interface `id` between `ends` (unparsed ones left out).
    pub fn note(&mut self, id: &str, ends: &[IpAddr]) {
        if let Some(e) = self.by_id.get_mut(id) {
            self.changes += u64::from(e.add(ends));
            return;
        }
        if self.by_id.len() >= INTERFACE_CAPACITY || id.len() > MAX_INTERFACE_ID {
            self.untracked += 1;
            return;
        }
        let mut common = Vec::with_capacity(ends.len());
        for a in ends {
            if !common.contains(a) {
                common.push(*a);
            }
        }
        let ends = Ends {
            common,
            narrowed: false,
        };
        self.by_id.insert(id.to_string(), ends);
    }

    /// The owner of each decided interface, by `owner_of` its common
    /// addresses (none for the undecided and the unowned).
    pub fn owners<T>(&self, owner_of: impl Fn(&[IpAddr]) -> Option<T>) -> Vec<T> {
        (self.by_id.values())
            .filter_map(|e| e.decided().and_then(&owner_of))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_interface_is_decided_once_a_record_has_another_peer() {
        let mut i = Interfaces::default();
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        i.note("eni-1", &[a, b]);
        i.note("eni-1", &[b, a]);
        assert_eq!(i.by_id["eni-1"].decided(), None);
        assert_eq!(i.changes, 0);
        i.note("eni-1", &[c, a, c]);
        assert_eq!(i.by_id["eni-1"].decided(), Some(&[a][..]));
        assert_eq!(i.changes, 1);
        i.note("eni-1", &[a, c]);
        assert_eq!(i.changes, 1, "nothing narrowed");
        // A record of no end in common leaves no address at all.
        i.note("eni-1", &[b, c]);
        assert_eq!(i.by_id["eni-1"].decided(), Some(&[][..]));
    }

    #[test]
    fn interfaces_beyond_the_capacity_are_counted_not_tracked() {
        let mut i = Interfaces::default();
        let a = ip("10.0.0.1");
        for n in 0..INTERFACE_CAPACITY + 3 {
            i.note(&format!("eni-{n}"), &[a]);
        }
        i.note("eni-0", &[a]);
        assert_eq!(i.by_id.len(), INTERFACE_CAPACITY);
        assert_eq!(i.untracked, 3);
    }

    #[test]
    fn an_overlong_interface_id_is_counted_not_kept() {
        let mut i = Interfaces::default();
        let a = ip("10.0.0.1");
        i.note(&"e".repeat(MAX_INTERFACE_ID + 1), &[a]);
        i.note(&"e".repeat(MAX_INTERFACE_ID), &[a]);
        assert_eq!(i.by_id.len(), 1);
        assert_eq!(i.untracked, 1);
    }
}
