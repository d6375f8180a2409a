//! Text logs as Windows writes them: UTF-8 (with or without a byte-order
//! mark) or UTF-16 little-endian, which should have one.

/// How a text file was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16LeBom,
    /// UTF-16 LE without its byte-order mark: read all the same (every
    /// other byte of ASCII text is zero), and counted.
    Utf16LeNoBom,
}

/// A file's text, with what it takes to say where a line was in bytes.
#[derive(Clone, Debug)]
pub struct Text {
    pub text: String,
    pub encoding: Encoding,
    /// A trailing byte that is half a UTF-16 unit: the file was cut.
    pub odd_byte: bool,
    /// Characters that were not valid in the encoding (replaced).
    pub invalid: u64,
}

impl Text {
    /// The byte offset in the file of text offset `at`.
    pub fn byte_offset(&self, at: usize) -> u64 {
        let before = &self.text[..at.min(self.text.len())];
        match self.encoding {
            Encoding::Utf8 => before.len() as u64,
            Encoding::Utf8Bom => 3 + before.len() as u64,
            Encoding::Utf16LeBom => 2 + 2 * before.encode_utf16().count() as u64,
            Encoding::Utf16LeNoBom => 2 * before.encode_utf16().count() as u64,
        }
    }
}

fn is_utf16le_without_bom(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] != 0 && b[1] == 0
}

/// Decode a whole file.
pub fn decode(bytes: &[u8]) -> Text {
    let (encoding, body) = if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        (Encoding::Utf16LeBom, rest)
    } else if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        (Encoding::Utf8Bom, rest)
    } else if is_utf16le_without_bom(bytes) {
        (Encoding::Utf16LeNoBom, bytes)
    } else {
        (Encoding::Utf8, bytes)
    };
    let (text, invalid) = decode_as(encoding, body);
    Text {
        text,
        encoding,
        odd_byte: encoding.is_utf16() && body.len() % 2 == 1,
        invalid,
    }
}

impl Encoding {
    pub fn is_utf16(self) -> bool {
        matches!(self, Encoding::Utf16LeBom | Encoding::Utf16LeNoBom)
    }

    /// Bytes of the byte-order mark.
    pub fn bom_len(self) -> usize {
        match self {
            Encoding::Utf8 | Encoding::Utf16LeNoBom => 0,
            Encoding::Utf8Bom => 3,
            Encoding::Utf16LeBom => 2,
        }
    }

    /// The encoding of a file starting with `head`, once enough of it is
    /// there to tell (a byte-order mark may be cut): `None` to wait for
    /// more bytes.
    pub fn sniff(head: &[u8]) -> Option<Encoding> {
        if head.starts_with(&[0xFF, 0xFE]) {
            return Some(Encoding::Utf16LeBom);
        }
        if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
            return Some(Encoding::Utf8Bom);
        }
        if head.len() < 3 && [0xEF, 0xBB, 0xBF].starts_with(head) || head.len() < 2 {
            return None;
        }
        Some(match is_utf16le_without_bom(head) {
            true => Encoding::Utf16LeNoBom,
            false => Encoding::Utf8,
        })
    }
}

/// Text encoded as `encoding`, without its byte-order mark; the characters
/// that were not valid in it (replaced).
pub fn decode_as(encoding: Encoding, body: &[u8]) -> (String, u64) {
    match encoding {
        Encoding::Utf16LeBom | Encoding::Utf16LeNoBom => {
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let mut invalid = 0;
            let text = char::decode_utf16(units)
                .map(|c| {
                    c.unwrap_or_else(|_| {
                        invalid += 1;
                        char::REPLACEMENT_CHARACTER
                    })
                })
                .collect();
            (text, invalid)
        }
        Encoding::Utf8 | Encoding::Utf8Bom => {
            let text = String::from_utf8_lossy(body).into_owned();
            let invalid = text.matches(char::REPLACEMENT_CHARACTER).count() as u64;
            (text, invalid)
        }
    }
}

/// The start of a file as text, for detection (lossy).
pub fn decode_head(head: &[u8]) -> String {
    let n = head.len() & !1;
    decode(
        &head[..if is_utf16le_without_bom(head) || head.starts_with(&[0xFF, 0xFE]) {
            n
        } else {
            head.len()
        }],
    )
    .text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str, bom: bool) -> Vec<u8> {
        let mut b = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
        b.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        b
    }

    #[test]
    fn utf16_with_and_without_bom_and_utf8_read_alike() {
        let s = "#Version: 1.5\nline\n";
        for (bytes, enc) in [
            (utf16(s, true), Encoding::Utf16LeBom),
            (utf16(s, false), Encoding::Utf16LeNoBom),
            (s.as_bytes().to_vec(), Encoding::Utf8),
            (
                [&[0xEF, 0xBB, 0xBF][..], s.as_bytes()].concat(),
                Encoding::Utf8Bom,
            ),
        ] {
            let t = decode(&bytes);
            assert_eq!((t.text.as_str(), t.encoding), (s, enc));
            assert_eq!(t.byte_offset(s.len()), bytes.len() as u64);
        }
        let mut cut = utf16(s, true);
        cut.push(b'x');
        assert!(decode(&cut).odd_byte);
    }
}
