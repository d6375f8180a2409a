//! Pure state: the handshake table, the required-edge clocks and the
//! aggregates a report is made from. Time always comes in as an argument.

pub mod edges;
pub mod handshake;
pub mod tally;

pub use edges::{EdgeClock, EdgeState, Unobserved};
pub use handshake::{Eviction, FlowKey, HandshakeTable, Outcome, TableEvent, TrackConfig};

/// The map of the per-packet paths: foldhash is several times faster than
/// SipHash on these small keys, and its per-process random seed keeps
/// crafted flooding keys from colliding on purpose.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
