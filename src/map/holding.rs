//! Entries held in the order they came, at most a limit: a slab of slots,
//! an index from the entry's key to its slot, and the holding order as a
//! list threaded through the slots. The flow records waiting for their
//! connection's other direction are held so, and the record merge's
//! pending connections ([`crate::state::merge`]).
//!
//! At a million lone SYNs a second the table stays at its cap and every
//! record is a miss, an insert and an eviction of the oldest. A map from
//! key to entry made each of those a probe among buckets of a few hundred
//! bytes (key and entry in every bucket, empty ones included), hashed with
//! SipHash, and a queue of keys in holding order (stale ones skipped).
//! Here the index holds 4-byte slots (a probe touches the control bytes
//! and, on a tag match, one entry), the key is derived from the entry
//! rather than stored twice, the order costs 8 bytes an entry and has no
//! stale records, and the slot the oldest frees is the one the next record
//! fills (reused newest-freed first, so the live entries stay dense).

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

type Slot = u32;

/// The end of the list.
const NIL: Slot = Slot::MAX;

/// An entry that knows its key.
pub(crate) trait Keyed {
    type Key: Hash + Eq;
    fn key(&self) -> Self::Key;
}

struct Node<V> {
    value: V,
    /// The key's hash, kept so that taking out the oldest or growing the
    /// index does not hash the key again.
    hash: u64,
    /// Neighbours in holding order: `prev` is older.
    prev: Slot,
    next: Slot,
}

/// Entries by key in holding order, at most `limit` at once: holding one
/// more releases the oldest.
pub(crate) struct Holding<V> {
    nodes: Vec<Option<Node<V>>>,
    /// Free slots below `nodes.len()`, the last freed last.
    free: Vec<Slot>,
    index: HashTable<Slot>,
    /// Per-process random seed, as [`crate::map::FastMap`]'s.
    hasher: foldhash::fast::RandomState,
    /// Oldest and newest.
    head: Slot,
    tail: Slot,
    limit: usize,
}

impl<V: Keyed> Holding<V> {
    /// Empty; grows with use, never past `limit` entries.
    pub fn new(limit: usize) -> Self {
        Holding {
            nodes: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            head: NIL,
            tail: NIL,
            limit: limit.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The most entries held at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The hash the index files `key` under: computed once by a caller
    /// that looks a key up and then holds it.
    #[inline]
    pub fn hash(&self, key: &V::Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The entry of `key` (whose [`Self::hash`] is `hash`), if one is held.
    #[inline]
    pub fn get_mut(&mut self, hash: u64, key: &V::Key) -> Option<&mut V> {
        let nodes = &self.nodes;
        let slot = *self
            .index
            .find(hash, |&s| same(live(nodes, s), hash, key))?;
        Some(&mut self.node_mut(slot).value)
    }

    /// Take out the entry of `key`, if one is held.
    pub fn take(&mut self, key: &V::Key) -> Option<V> {
        self.take_hashed(self.hash(key), key)
    }

    /// [`Self::take`] with the key's [`Self::hash`].
    pub fn take_hashed(&mut self, hash: u64, key: &V::Key) -> Option<V> {
        let nodes = &self.nodes;
        let found = self
            .index
            .find_entry(hash, |&s| same(live(nodes, s), hash, key))
            .ok()?;
        let (slot, _) = found.remove();
        Some(self.release(slot))
    }

    /// Hold `value`, whose key is not held, as the newest. At the limit the
    /// oldest is taken out first and returned.
    pub fn push(&mut self, value: V) -> Option<V> {
        let hash = self.hash(&value.key());
        self.push_hashed(hash, value)
    }

    /// [`Self::push`] with the value's key's [`Self::hash`].
    pub fn push_hashed(&mut self, hash: u64, value: V) -> Option<V> {
        let evicted = (self.len() >= self.limit)
            .then(|| self.pop_oldest())
            .flatten();
        self.hold_with(hash, || value);
        evicted
    }

    /// Hold the value `make` makes as the newest: its key (whose
    /// [`Self::hash`] is `hash`) is not held, and there is room (below
    /// [`Self::limit`]). The value is made where it is held (a large one
    /// is not moved in).
    #[inline]
    pub fn hold_with(&mut self, hash: u64, make: impl FnOnce() -> V) {
        debug_assert!(self.len() < self.limit);
        let slot = crate::map::vacant(&mut self.nodes, &mut self.free, self.limit);
        let prev = self.tail;
        let node = &mut self.nodes[slot as usize];
        *node = Some(Node {
            value: make(),
            hash,
            prev,
            next: NIL,
        });
        debug_assert_eq!(hash, self.hash(&live(&self.nodes, slot).value.key()));
        debug_assert!(self.not_held(hash, &live(&self.nodes, slot).value.key()));
        match prev {
            NIL => self.head = slot,
            tail => self.node_mut(tail).next = slot,
        }
        self.tail = slot;
        let nodes = &self.nodes;
        self.index
            .insert_unique(hash, slot, |&s| live(nodes, s).hash);
    }

    /// The oldest entry.
    pub fn oldest(&self) -> Option<&V> {
        (self.head != NIL).then(|| &live(&self.nodes, self.head).value)
    }

    /// The oldest entry, to change where it is held (before
    /// [`Self::drop_oldest`]: a large entry is not moved out).
    pub fn oldest_mut(&mut self) -> Option<&mut V> {
        match self.head {
            NIL => None,
            head => Some(&mut self.node_mut(head).value),
        }
    }

    /// Take out the oldest entry.
    pub fn pop_oldest(&mut self) -> Option<V> {
        let slot = self.unindex_oldest()?;
        Some(self.release(slot))
    }

    /// Drop the oldest entry where it is held.
    pub fn drop_oldest(&mut self) {
        if let Some(slot) = self.unindex_oldest() {
            self.unlink(slot);
            self.nodes[slot as usize] = None;
        }
    }

    /// Take the oldest entry's slot out of the index.
    fn unindex_oldest(&mut self) -> Option<Slot> {
        let slot = self.head;
        if slot == NIL {
            return None;
        }
        let hash = live(&self.nodes, slot).hash;
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        Some(slot)
    }

    /// Every entry, oldest first; the table is left empty.
    pub fn drain(&mut self) -> Vec<V> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(v) = self.pop_oldest() {
            out.push(v);
        }
        self.nodes = Vec::new();
        self.free = Vec::new();
        self.index = HashTable::new();
        out
    }

    /// Unlink a slot already out of the index, free it and move its
    /// entry out.
    fn release(&mut self, slot: Slot) -> V {
        self.unlink(slot);
        let n = self.nodes[slot as usize].take().expect("a live slot");
        n.value
    }

    /// Unlink a slot already out of the index from the order and free it
    /// (its entry is still there, for the caller to move out or drop).
    fn unlink(&mut self, slot: Slot) {
        let n = live(&self.nodes, slot);
        let (prev, next) = (n.prev, n.next);
        match prev {
            NIL => self.head = next,
            prev => self.node_mut(prev).next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.node_mut(next).prev = prev,
        }
        self.free.push(slot);
    }

    fn node_mut(&mut self, slot: Slot) -> &mut Node<V> {
        self.nodes[slot as usize].as_mut().expect("a live slot")
    }

    /// For a debug assertion: `key` is not held.
    fn not_held(&self, hash: u64, key: &V::Key) -> bool {
        let nodes = &self.nodes;
        self.index
            .find(hash, |&s| live(nodes, s).value.key() == *key)
            .is_none()
    }
}

impl<V> std::fmt::Debug for Holding<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holding")
            .field("len", &self.index.len())
            .field("limit", &self.limit)
            .finish()
    }
}

/// Whether `n` holds `key` (whose hash is `hash`): the whole hash first,
/// which rules out most other entries without deriving their key.
#[inline]
fn same<V: Keyed>(n: &Node<V>, hash: u64, key: &V::Key) -> bool {
    n.hash == hash && n.value.key() == *key
}

fn live<V>(nodes: &[Option<Node<V>>], slot: Slot) -> &Node<V> {
    nodes[slot as usize]
        .as_ref()
        .expect("indexed slots are live")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct E {
        key: u8,
        stamp: u32,
    }

    impl Keyed for E {
        type Key = u8;
        fn key(&self) -> u8 {
            self.key
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Take(u8),
        /// Take the key's entry if held, then hold a new one.
        Push(u8),
        PopOldest,
        /// Change the key's entry where it is held, if held.
        Touch(u8),
        /// Change the oldest where it is held, then drop it.
        DropOldest,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u8..24).prop_map(Op::Take),
            4 => (0u8..24).prop_map(Op::Push),
            1 => Just(Op::PopOldest),
            1 => (0u8..24).prop_map(Op::Touch),
            1 => Just(Op::DropOldest),
        ]
    }

    proptest! {
        /// The same entries come out, in the same order, as from a list
        /// kept in holding order and searched one by one.
        #[test]
        fn holds_as_a_list_in_holding_order(
            ops in proptest::collection::vec(op(), 0..400),
            limit in 1usize..12,
        ) {
            let mut h = Holding::new(limit);
            let mut model: Vec<E> = Vec::new();
            for (stamp, op) in (0u32..).zip(ops) {
                match op {
                    Op::Take(k) => {
                        let want = model.iter().position(|e| e.key == k).map(|i| model.remove(i));
                        prop_assert_eq!(h.take(&k), want);
                    }
                    Op::Push(k) => {
                        let want = model.iter().position(|e| e.key == k).map(|i| model.remove(i));
                        prop_assert_eq!(h.take(&k), want);
                        let e = E { key: k, stamp };
                        let evicted = (model.len() >= limit).then(|| model.remove(0));
                        model.push(e);
                        prop_assert_eq!(h.push(e), evicted);
                    }
                    Op::PopOldest => {
                        let want = (!model.is_empty()).then(|| model.remove(0));
                        prop_assert_eq!(h.pop_oldest(), want);
                    }
                    Op::Touch(k) => {
                        let hash = h.hash(&k);
                        let got = h.get_mut(hash, &k).map(|e| {
                            e.stamp += 1_000;
                            *e
                        });
                        let want = model.iter_mut().find(|e| e.key == k).map(|e| {
                            e.stamp += 1_000;
                            *e
                        });
                        prop_assert_eq!(got, want);
                    }
                    Op::DropOldest => {
                        if let Some(e) = h.oldest_mut() {
                            e.stamp += 1;
                        }
                        if let Some(first) = model.first_mut() {
                            first.stamp += 1;
                        }
                        h.drop_oldest();
                        if !model.is_empty() {
                            model.remove(0);
                        }
                    }
                }
                prop_assert_eq!(h.len(), model.len());
                prop_assert_eq!(h.oldest(), model.first());
                prop_assert!(h.nodes.len() <= limit);
            }
            prop_assert_eq!(h.drain(), model);
            prop_assert_eq!(h.len(), 0);
        }
    }

    #[test]
    fn the_slot_the_oldest_frees_is_the_next_filled() {
        let mut h = Holding::new(2);
        assert_eq!(h.push(E { key: 1, stamp: 0 }), None);
        assert_eq!(h.push(E { key: 2, stamp: 1 }), None);
        assert_eq!(h.push(E { key: 3, stamp: 2 }), Some(E { key: 1, stamp: 0 }));
        assert_eq!(h.nodes.len(), 2);
        assert_eq!(h.take(&2), Some(E { key: 2, stamp: 1 }));
        assert_eq!(h.take(&2), None);
        assert_eq!(h.oldest(), Some(&E { key: 3, stamp: 2 }));
    }
}
