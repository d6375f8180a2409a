//! The hasher of the per-packet maps, shared by `policy` and `state`.

/// The map of the per-packet paths: foldhash is several times faster than
/// SipHash on these small keys, and its per-process random seed keeps
/// crafted flooding keys from colliding on purpose.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
