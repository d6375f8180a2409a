//! Pure state: the handshake table, the records of one connection merged,
//! one connection seen by two kinds of source joined, the required-edge
//! clocks and the aggregates a report is made from. Time always comes in
//! as an argument.

pub mod edges;
pub mod handshake;
pub mod kinds;
pub mod merge;
pub mod saved;
pub mod tally;

pub use edges::{EdgeClock, EdgeState, Unobserved};
pub use handshake::{
    Close, Ending, Eviction, FlowKey, HandshakeTable, Outcome, TableEvent, TrackConfig,
    PORT_PENDING, PORT_REQUIRED,
};

pub use crate::map::FastMap;
