//! Names in site and model files are identifiers: they become metric
//! labels, firewall rule names, file headers and log fields, so a name may
//! only use characters no output format treats specially.

/// The longest name accepted, in characters.
pub const MAX_LEN: usize = 128;

/// The documented character set, for messages and `--help`.
pub const CHARSET: &str =
    "ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 128 characters";

/// Why a name is refused: the character and its index (in characters), or
/// its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Char { index: usize, ch: char },
    Empty,
    TooLong { len: usize },
}

impl Refusal {
    /// The message, with the name and character as they are: a diagnostic
    /// is printed as one log field.
    pub fn message(&self, name: &str) -> String {
        match self {
            Refusal::Char { ch, .. } => format!(
                "`{name}`: character {ch} (U+{:04X}) is not allowed in a name; names use {CHARSET}",
                *ch as u32
            ),
            Refusal::Empty => format!("a name may not be empty; names use {CHARSET}"),
            Refusal::TooLong { len } => {
                format!("a name of {len} characters is too long; names use {CHARSET}")
            }
        }
    }
}

/// `Err` with the first thing wrong with `name`, if anything.
pub fn check(name: &str) -> Result<(), Refusal> {
    for (index, ch) in name.chars().enumerate() {
        let ok = ch.is_ascii_alphanumeric() || (index > 0 && matches!(ch, '.' | '_' | '-'));
        if !ok {
            return Err(Refusal::Char { index, ch });
        }
    }
    match name.chars().count() {
        0 => Err(Refusal::Empty),
        len if len > MAX_LEN => Err(Refusal::TooLong { len }),
        _ => Ok(()),
    }
}

/// Where the `index`-th character of the scalar written at `line` and
/// `column` (both from 1, in characters) of `text` is. A plain, single- or
/// double-quoted scalar on one line is followed character by character
/// (escapes and doubled quotes count as one); anything else (a block or
/// folded scalar, an alias) gives the scalar's own position.
pub fn locate(text: &str, line: u64, column: u64, index: usize) -> (u64, u64) {
    let start = (line, column);
    let Some(source) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return start;
    };
    // The rest of the line: a scalar that goes on past it is not followed.
    let mut cs = (source.chars())
        .skip(column.saturating_sub(1) as usize)
        .peekable();
    let quote = match cs.peek() {
        Some(q @ ('\'' | '"')) => Some(*q),
        Some('*' | '&' | '!' | '|' | '>') | None => return start,
        _ => None,
    };
    let mut col = start.1;
    if quote.is_some() {
        cs.next();
        col += 1;
    }
    for _ in 0..index {
        let Some(c) = cs.next() else { return start };
        col += 1;
        match (quote, c) {
            (Some('\''), '\'') => {
                cs.next();
                col += 1;
            }
            (Some('"'), '\\') => {
                let digits = match cs.next() {
                    Some('x') => 2,
                    Some('u') => 4,
                    Some('U') => 8,
                    _ => 0,
                };
                col += 1 + digits;
                cs.by_ref().take(digits as usize).for_each(drop);
            }
            _ => {}
        }
    }
    (start.0, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_pass_and_the_first_bad_character_is_named() {
        for ok in [
            "central",
            "proxy-engine2",
            "qlik-sense-enterprise",
            "a.b_c",
            "9",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check("site\ntable inet backdoor"),
            Err(Refusal::Char { index: 4, ch: '\n' })
        );
        assert_eq!(check("-x"), Err(Refusal::Char { index: 0, ch: '-' }));
        assert_eq!(
            check("it\u{2019}s"),
            Err(Refusal::Char {
                index: 2,
                ch: '\u{2019}'
            })
        );
        assert_eq!(check(""), Err(Refusal::Empty));
        assert_eq!(check(&"a".repeat(129)), Err(Refusal::TooLong { len: 129 }));
    }

    fn position(yaml: &str, index: usize) -> (u64, u64) {
        #[derive(serde::Deserialize)]
        struct Doc {
            name: serde_saphyr::Spanned<String>,
        }
        let d: Doc = serde_saphyr::from_str(yaml).unwrap();
        locate(yaml, d.name.defined.line(), d.name.defined.column(), index)
    }

    #[test]
    fn the_character_is_found_in_plain_and_quoted_scalars() {
        assert_eq!(position("name: ab$c\n", 2), (1, 9));
        assert_eq!(position("name: 'a''b$'\n", 3), (1, 12));
        assert_eq!(position("\nname: \"a\\nb\"\n", 1), (2, 9));
        assert_eq!(position("name: \"a\\u2019b\\n\"\n", 3), (1, 16));
        // Past a line break of a block scalar: the scalar's own position.
        let (line, _) = position("name: |\n  a\n  b\n", 2);
        assert_eq!(line, 2);
    }
}
