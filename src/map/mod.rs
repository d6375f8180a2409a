//! The per-packet maps: their hasher, and where the slab tables (a slab
//! indexed by a hash table of slot numbers) put a new entry, and the
//! holding: entries in arrival order up to a limit.

pub(crate) mod holding;

/// The map of the per-packet paths: foldhash is several times faster than
/// SipHash on these small keys, and its per-process random seed keeps
/// crafted flooding keys from colliding on purpose.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A slot for `value` in a slab of at most `limit` entries, for the tables
/// that index a slab with a hash table of slot numbers: the last freed
/// slot first (so the live entries stay dense), else a new one at the end,
/// the slab doubling as `push` would but to fewer than `limit + 16` slots
/// (16 at least are reserved, so a small limit is passed).
#[inline]
pub fn place<T>(slab: &mut Vec<Option<T>>, free: &mut Vec<u32>, limit: usize, value: T) -> u32 {
    let slot = vacant(slab, free, limit);
    slab[slot as usize] = Some(value);
    slot
}

/// The empty slot [`place`] would fill, for a caller that makes a large
/// entry in it (rather than moving it in).
#[inline]
pub fn vacant<T>(slab: &mut Vec<Option<T>>, free: &mut Vec<u32>, limit: usize) -> u32 {
    match free.pop() {
        Some(slot) => slot,
        None => {
            if slab.len() == slab.capacity() {
                let room = limit.saturating_sub(slab.len());
                slab.reserve_exact(slab.len().clamp(16, room.max(16)));
            }
            slab.push(None);
            u32::try_from(slab.len() - 1).expect("fewer than 2^32 slots")
        }
    }
}
