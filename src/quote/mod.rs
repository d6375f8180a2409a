//! Text from site files, captures and logs into the formats portwatch
//! writes: one function per format, so that no name, path or reason can
//! become code in a generated file or forge a line of a log.
//!
//! | format                          | function                  |
//! |---------------------------------|---------------------------|
//! | nftables string (`comment "…"`) | [`nft_string`]            |
//! | PowerShell single-quoted string | [`powershell_string`]     |
//! | YAML scalar                     | [`yaml_scalar`]           |
//! | `#` comment (nft, PowerShell, YAML, shell) | [`comment`]    |
//! | shell word                      | [`shell_word`]            |
//! | HTML and SVG text or double-quoted attribute | [`html`]     |
//! | field of a text log or table    | [`log_field`]             |
//!
//! Pure; the property tests in `quote/tests.rs` (YAML, PowerShell, shell,
//! HTML, log) and `tests/firewall.rs` (nftables, loaded by `nft`) parse the
//! output with each format's own reader.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters that end or break a line, or reorder what a reader sees, in
/// one of the formats or terminals: C0 and C1 controls, DEL, NEL and the
/// Unicode line and paragraph separators (YAML 1.1 line breaks), the
/// byte-order mark, bidirectional overrides and isolates, and the two
/// non-characters YAML refuses.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line of text: `\` and every unsafe character written as an escape
/// (`\n`, `\t`, `\\`, `\u{2028}`), everything else as it is. Reversible, so
/// two different texts never print alike.
pub fn log_field(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    escape(&mut out, s, None, |out, c| {
        let _ = write!(out, "\\u{{{c:x}}}");
    });
    Cow::Owned(out)
}

/// `s` onto `out` with `\`, `quote` and every unsafe character escaped by
/// a backslash: the C escapes for line feed, carriage return and tab,
/// `unicode` for the other code points (the one thing YAML and the log
/// write differently).
fn escape(out: &mut String, s: &str, quote: Option<char>, unicode: impl Fn(&mut String, u32)) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if Some(c) == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_unsafe(c) => unicode(out, c as u32),
            c => out.push(c),
        }
    }
}

/// A `#` comment line (without its line break) for nftables, PowerShell,
/// YAML and shell files: all four end such a comment at a line break and
/// at nothing else, and [`log_field`] leaves none.
pub fn comment(s: &str) -> String {
    format!("# {}", log_field(s))
}

/// nftables' limit on a rule comment (NFTNL_UDATA_COMMENT_MAXLEN, less the
/// terminating NUL).
pub const NFT_COMMENT_MAX: usize = 127;

/// An nftables double-quoted string, at most [`NFT_COMMENT_MAX`] bytes
/// inside the quotes. nft strings have no escapes: `"` becomes `'`, and
/// unsafe characters are written as [`log_field`] writes them.
pub fn nft_string(s: &str) -> String {
    let text = log_field(s).replace('"', "'");
    format!("\"{}\"", truncate(&text, NFT_COMMENT_MAX))
}

/// At most `max` bytes, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The characters PowerShell takes for a single quote: `'` and the
/// typographic ones (U+2018 to U+201B).
pub fn is_powershell_single_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}')
}

/// A PowerShell single-quoted (verbatim) string whose value is exactly
/// `s`: each quote character, typographic ones included, is doubled; no `$`
/// or backtick is special there.
pub fn powershell_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if is_powershell_single_quote(c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A YAML double-quoted scalar whose value is exactly `s`: `"`, `\` and
/// every unsafe character escaped, so the scalar is one line of printable
/// characters (YAML 1.1 and 1.2 readers alike).
pub fn yaml_scalar(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    escape(&mut out, s, Some('"'), |out, c| {
        let _ = write!(out, "\\u{c:04x}");
    });
    out.push('"');
    out
}

/// A word for a POSIX shell (bash, zsh, dash) that the shell reads back as
/// exactly `s`: as it is when it holds only characters no shell treats
/// specially, single-quoted otherwise (`'` as `'\''`). Text with unsafe
/// characters uses bash and zsh's `$'…'` so the word stays on one line. A
/// NUL cannot be part of an argument: it is written as `\0`, which ends the
/// word there.
pub fn shell_word(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    if !s.chars().any(is_unsafe) {
        return Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            c if is_unsafe(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Text or a double-quoted attribute value in HTML and SVG: `&`, `<`, `>`
/// and `"` as entities. This is maud's escaping, which the report's
/// templates (`report::html`, `report::diagram`) apply to every value they
/// splice, so the property test of this function is theirs too.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = maud::Escaper::new(&mut out).write_str(s);
    out
}

#[cfg(test)]
pub(crate) mod tests;
