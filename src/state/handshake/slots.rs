//! The handshake table's storage: entries in a slab of stable slots, an
//! index from key to slot, and the two eviction orders as lists threaded
//! through the slots.
//!
//! A slot is 4 bytes where a key is 38: the index stores slots only (5
//! bytes a bucket with its control byte, where a map from key to entry
//! stores both in every bucket, empty ones included), and the expiry
//! records name their entry by slot. The lists cost 16 bytes an entry and
//! need no compaction: an entry leaves them when it leaves the table.
//! Slots are reused newest-freed first, so the live entries stay dense.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// Where an entry lives while it is in the table.
pub(super) type Slot = u32;

/// The end of a list.
const NIL: Slot = Slot::MAX;

/// One of the two eviction orders a slot can be linked into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// Creation order: new entries are appended.
    Created = 0,
    /// The order in which entries became open.
    Opened = 1,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: Slot,
    next: Slot,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

#[derive(Clone, Copy, Debug)]
struct Ends {
    head: Slot,
    tail: Slot,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

struct Node<K, V> {
    key: K,
    value: V,
    /// Per [`Order`]: the neighbours, and whether the node is in that list.
    links: [Link; 2],
    linked: [bool; 2],
}

/// Entries by key, at most `limit` at once (the caller evicts first).
pub(super) struct Slots<K, V> {
    nodes: Vec<Option<Node<K, V>>>,
    /// Free slots below `nodes.len()`, the last freed last.
    free: Vec<Slot>,
    index: HashTable<Slot>,
    /// Per-process random seed, as [`crate::map::FastMap`]'s.
    hasher: foldhash::fast::RandomState,
    ends: [Ends; 2],
    limit: usize,
}

impl<K: Hash + Eq, V> Slots<K, V> {
    /// Empty; grows with use, never past `limit` slots.
    pub fn new(limit: usize) -> Self {
        Slots {
            nodes: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            ends: [EMPTY; 2],
            limit: limit.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn find(&self, key: &K) -> Option<Slot> {
        let hash = self.hasher.hash_one(key);
        let nodes = &self.nodes;
        self.index
            .find(hash, |&s| node(nodes, s).is_some_and(|n| n.key == *key))
            .copied()
    }

    /// Add an entry whose key is not in the table, last in creation order.
    pub fn insert(&mut self, key: K, value: V) -> Slot {
        let hash = self.hasher.hash_one(&key);
        let new = Node {
            key,
            value,
            links: [UNLINKED; 2],
            linked: [false; 2],
        };
        let slot = crate::map::place(&mut self.nodes, &mut self.free, self.limit, new);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            hasher.hash_one(&node(nodes, s).expect("indexed slots are live").key)
        });
        self.push_back(Order::Created, slot);
        slot
    }

    /// Take the entry out of the table and both lists.
    pub fn remove(&mut self, slot: Slot) -> (K, V) {
        self.unlink(Order::Created, slot);
        self.unlink(Order::Opened, slot);
        let n = self.nodes[slot as usize].take().expect("a live slot");
        let hash = self.hasher.hash_one(&n.key);
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        self.free.push(slot);
        (n.key, n.value)
    }

    /// The key and entry in `slot`, if it holds one.
    pub fn get(&self, slot: Slot) -> Option<(&K, &V)> {
        node(&self.nodes, slot).map(|n| (&n.key, &n.value))
    }

    pub fn get_mut(&mut self, slot: Slot) -> Option<(&K, &mut V)> {
        self.nodes
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .map(|n| (&n.key, &mut n.value))
    }

    /// The entry of a slot known to be live.
    pub fn value(&self, slot: Slot) -> &V {
        self.get(slot).expect("a live slot").1
    }

    pub fn value_mut(&mut self, slot: Slot) -> &mut V {
        self.get_mut(slot).expect("a live slot").1
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &K, &V)> {
        self.nodes.iter().zip(0..).filter_map(|(n, slot)| {
            let n = n.as_ref()?;
            Some((slot, &n.key, &n.value))
        })
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.as_mut().map(|n| (&n.key, &mut n.value)))
    }

    /// The oldest entry of a list.
    pub fn front(&self, order: Order) -> Option<Slot> {
        let head = self.ends[order as usize].head;
        (head != NIL).then_some(head)
    }

    /// Append a live entry that is not in the list.
    pub fn push_back(&mut self, order: Order, slot: Slot) {
        let i = order as usize;
        let tail = self.ends[i].tail;
        let n = self.node_mut(slot);
        debug_assert!(!n.linked[i]);
        n.links[i] = Link {
            prev: tail,
            next: NIL,
        };
        n.linked[i] = true;
        match tail {
            NIL => self.ends[i].head = slot,
            _ => self.node_mut(tail).links[i].next = slot,
        }
        self.ends[i].tail = slot;
    }

    /// Take a live entry out of a list (if it is in it); it stays in the table.
    pub fn unlink(&mut self, order: Order, slot: Slot) {
        let i = order as usize;
        let n = self.node_mut(slot);
        if !n.linked[i] {
            return;
        }
        n.linked[i] = false;
        let Link { prev, next } = std::mem::replace(&mut n.links[i], UNLINKED);
        match prev {
            NIL => self.ends[i].head = next,
            _ => self.node_mut(prev).links[i].next = next,
        }
        match next {
            NIL => self.ends[i].tail = prev,
            _ => self.node_mut(next).links[i].prev = prev,
        }
    }

    fn node_mut(&mut self, slot: Slot) -> &mut Node<K, V> {
        self.nodes[slot as usize].as_mut().expect("a live slot")
    }
}

fn node<K, V>(nodes: &[Option<Node<K, V>>], slot: Slot) -> Option<&Node<K, V>> {
    nodes.get(slot as usize).and_then(Option::as_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(s: &Slots<u32, ()>, o: Order) -> Vec<u32> {
        let mut keys = Vec::new();
        let mut at = s.front(o);
        while let Some(slot) = at {
            let n = node(&s.nodes, slot).unwrap();
            keys.push(n.key);
            at = (n.links[o as usize].next != NIL).then_some(n.links[o as usize].next);
        }
        keys
    }

    #[test]
    fn slots_are_reused_and_lists_follow_removals() {
        let mut s: Slots<u32, ()> = Slots::new(4);
        let a = s.insert(10, ());
        let b = s.insert(11, ());
        let c = s.insert(12, ());
        s.push_back(Order::Opened, b);
        s.push_back(Order::Opened, a);
        assert_eq!(order(&s, Order::Created), [10, 11, 12]);
        assert_eq!(order(&s, Order::Opened), [11, 10]);
        s.unlink(Order::Created, b);
        assert_eq!(order(&s, Order::Created), [10, 12]);
        assert_eq!(s.remove(b), (11, ()));
        assert_eq!(order(&s, Order::Opened), [10]);
        assert_eq!(s.find(&11), None);
        // The freed slot is the next one used.
        assert_eq!(s.insert(13, ()), b);
        assert_eq!(order(&s, Order::Created), [10, 12, 13]);
        assert_eq!(
            (s.find(&10), s.find(&12), s.find(&13)),
            (Some(a), Some(c), Some(b))
        );
        assert_eq!(s.len(), 3);
        s.remove(a);
        s.remove(c);
        assert_eq!(order(&s, Order::Created), [13]);
        assert_eq!(order(&s, Order::Opened), Vec::<u32>::new());
        assert_eq!(s.iter().map(|(_, k, _)| *k).collect::<Vec<_>>(), [13]);
    }
}
