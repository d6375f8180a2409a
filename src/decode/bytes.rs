//! Bounds-checked big-endian reads. Every read in `decode` goes through
//! these (or `slice::get`), so no input can index out of bounds.

#[inline]
pub(super) fn u8_at(data: &[u8], at: usize) -> Option<u8> {
    data.get(at).copied()
}

#[inline]
pub(super) fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(array(data, at)?))
}

#[inline]
pub(super) fn be32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(array(data, at)?))
}

#[inline]
pub(super) fn array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}
