//! Pure decoding: frame bytes in, [`Decoded`] or [`DecodeError`] out. Never
//! panics on hostile input; reads headers only (a 128-byte snaplen suffices).

mod error;
mod segment;

pub use error::{DecodeError, Layer};
pub use segment::{Control, Decoded, Segment, Skip};

use crate::source::LinkType;

/// Decode one frame of the given link type.
pub fn decode(linktype: LinkType, data: &[u8]) -> Result<Decoded, DecodeError> {
    let _ = (linktype, data);
    Err(DecodeError::UnsupportedLinkType {
        linktype: linktype.0,
    })
}
