//! Load-time problems in a rules or site file, each with the file, the
//! line and column, and the field path it concerns.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use crate::quote::log_field;

/// One problem, pinned to a place in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// Field path such as `nodes[2].addresses[0]`.
    pub field: String,
    pub message: String,
}

/// One line whatever the file name or the values quoted in the message.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            log_field(&self.file.to_string_lossy()),
            self.line,
            self.column,
            log_field(&self.field),
            log_field(&self.message)
        )
    }
}

/// Every problem found in one load, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects diagnostics for one file while a loader walks it.
pub struct Diagnostics {
    file: PathBuf,
    found: Vec<Diagnostic>,
    /// Keys the parse renamed (see [`parse_yaml_all`]): positions read
    /// from the renamed text are moved back to the file's.
    shifts: Vec<Shift>,
}

/// A key renamed on `line` at `column`: what follows it on that line moved
/// by `delta` characters.
#[derive(Clone, Copy, Debug)]
struct Shift {
    line: u64,
    column: u64,
    delta: i64,
}

impl Diagnostics {
    pub fn new(file: &Path) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            found: Vec::new(),
            shifts: Vec::new(),
        }
    }

    /// The column in the file of `column` on `line` of the renamed text.
    fn unshift(&self, line: u64, column: u64) -> u64 {
        let moved: i64 = (self.shifts.iter())
            .filter(|s| s.line == line && s.column < column)
            .map(|s| s.delta)
            .sum();
        column.saturating_add_signed(-moved)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn at(&mut self, loc: &Location, field: impl Into<String>, message: impl Into<String>) {
        self.push_raw(loc.line(), loc.column(), field.into(), message.into());
    }

    pub fn on<T>(
        &mut self,
        value: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.at(&value.referenced, field, message);
    }

    /// Refuse `name` unless it is an identifier (see [`crate::name`]): the
    /// diagnostic points at the refused character in `text`, the file's text.
    pub fn name(&mut self, text: &str, name: &Spanned<String>, field: impl Into<String>) {
        if let Err(why) = crate::name::check(&name.value) {
            let index = match why {
                crate::name::Refusal::Char { index, .. } => index,
                _ => 0,
            };
            let at = &name.defined;
            // `text` is the file's: positions read from a renamed text are
            // moved back before the character is looked for.
            let start = self.unshift(at.line(), at.column());
            let (line, column) = crate::name::locate(text, at.line(), start, index);
            self.found.push(Diagnostic {
                file: self.file.clone(),
                line,
                column,
                field: field.into(),
                message: why.message(&name.value),
            });
        }
    }

    pub fn push_raw(&mut self, line: u64, column: u64, field: String, message: String) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line,
            column: self.unshift(line, column),
            field,
            message,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `Ok(value)` when nothing was found, otherwise every diagnostic sorted
    /// by position.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.found.is_empty() {
            return Ok(value);
        }
        Err(self.into_error())
    }

    /// Every diagnostic, sorted by position.
    pub fn into_error(mut self) -> ConfigError {
        self.found.sort_by_key(|d| (d.line, d.column));
        ConfigError {
            diagnostics: self.found,
        }
    }
}

/// Parse YAML into the raw mirror type; every problem is a located
/// diagnostic: position from serde-saphyr, field path from
/// serde_path_to_error (block and flow style alike). See [`parse_yaml_all`].
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let (value, d) = parse_yaml_all(file, text);
    match value {
        Some(v) => d.finish(v),
        None => Err(d.into_error()),
    }
}

/// At most this many schema errors are reported for one file.
const MAX_SCHEMA_ERRORS: usize = 64;

/// Parse YAML into the raw mirror type, collecting schema errors rather
/// than stopping at the first: serde stops at an unknown field, so the
/// field is reported, then read as the field it is a near miss of
/// (`adresses` as `addresses`) or blanked out, and the parse starts again.
/// Blanking keeps every byte offset, so later positions stay true. Any
/// other syntax or schema error ends the parse (`None`); so does an unknown
/// field in flow style, which cannot be cut out line by line. The
/// diagnostics returned go on collecting the loader's semantic problems.
pub fn parse_yaml_all<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> (Option<T>, Diagnostics) {
    let mut text = text.to_string();
    let mut d = Diagnostics::new(file);
    // Where a key was just renamed to its near miss: a duplicate key next
    // means the mapping has that field already, and the key is blanked.
    let mut renamed_at: Option<usize> = None;
    while d.found.len() < MAX_SCHEMA_ERRORS {
        let (e, path) = match attempt::<T>(&text) {
            Ok(v) => return (Some(v), d),
            Err(e) => *e,
        };
        let inner = innermost(&e);
        let offset = (e.location().and_then(|l| l.span().byte_offset()))
            .and_then(|o| usize::try_from(o).ok());
        if let (serde_saphyr::Error::DuplicateMappingKey { .. }, Some(at)) = (inner, renamed_at) {
            if blank_entry(&mut text, at) {
                renamed_at = None;
                continue;
            }
        }
        renamed_at = None;
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut message = schema_message(&e.to_string());
        let field = path
            .filter(|p| p != ".")
            .unwrap_or_else(|| "(value)".into());
        let repaired = match (inner, offset) {
            (
                serde_saphyr::Error::SerdeUnknownField {
                    field: key,
                    expected,
                    ..
                },
                Some(at),
            ) => match near_miss(key, expected) {
                Some(good) if rename_key(&mut text, at, key, good) => {
                    message.push_str(&format!("; did you mean `{good}`?"));
                    renamed_at = Some(at);
                    d.shifts.push(Shift {
                        line,
                        column,
                        delta: good.chars().count() as i64 - key.chars().count() as i64,
                    });
                    true
                }
                _ => blank_entry(&mut text, at),
            },
            _ => false,
        };
        d.push_raw(line, column, field, message);
        if !repaired {
            return (None, d);
        }
    }
    (None, d)
}

/// One strict parse; on failure the error and the field path it stopped at.
fn attempt<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, Box<(serde_saphyr::Error, Option<String>)>> {
    // serde_path_to_error tracks the field path as serde walks the value;
    // the error keeps only the position, so the path is kept aside.
    let mut path = None;
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| Box::new((e, path)))
}

fn innermost(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = e
    {
        e = error;
    }
    e
}

/// The expected field `key` is a typo of: one edit per four characters.
fn near_miss<'a>(key: &str, expected: &[&'a str]) -> Option<&'a str> {
    let limit = key.chars().count().div_ceil(4);
    let mut close = expected.iter().filter(|e| edit_distance(key, e) <= limit);
    match (close.next(), close.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Replace the key written plainly at byte `at` by `good`.
fn rename_key(text: &mut String, at: usize, key: &str, good: &str) -> bool {
    if text.get(at..at + key.len()) != Some(key) {
        return false;
    }
    text.replace_range(at..at + key.len(), good);
    true
}

/// Blank out, with spaces, the block-style mapping entry whose key starts
/// at byte `at`: the rest of its line and the lines indented deeper (or
/// list items at its own indent, which YAML allows under a key).
fn blank_entry(text: &mut String, at: usize) -> bool {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let lead = &text[line_start..at];
    if !lead.chars().all(|c| c == ' ' || c == '-') {
        return false;
    }
    let column = lead.len();
    let mut end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let mut next = end + 1;
    while next < text.len() {
        let line_end = text[next..].find('\n').map_or(text.len(), |i| next + i);
        let line = &text[next..line_end];
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        let inside = body.is_empty()
            || indent > column
            || (indent == column && (body == "-" || body.starts_with("- ")));
        if !inside {
            break;
        }
        if !body.is_empty() {
            end = line_end;
        }
        next = line_end + 1;
    }
    let blanked: String = (text[at..end].chars())
        .map(|c| match c {
            '\n' | '\r' => c.to_string(),
            _ => " ".repeat(c.len_utf8()),
        })
        .collect();
    text.replace_range(at..end, &blanked);
    true
}

/// serde-saphyr renders "error: line L column C: MESSAGE" then a snippet;
/// keep MESSAGE, since file and position are printed by us.
fn schema_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered);
    let after_prefix = first.strip_prefix("error: ").unwrap_or(first);
    match after_prefix.find(": ") {
        Some(i) if after_prefix.starts_with("line ") => after_prefix[i + 2..].to_string(),
        _ => after_prefix.to_string(),
    }
}

/// Parse a duration such as `15m`, `1h30m` or `90s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 90s, 15m, 1h"))?;
    if d.is_zero() {
        return Err(format!("`{s}`: a window must be longer than zero"));
    }
    Ok(d)
}

/// Parse a TCP port given as a number; 0 and > 65535 are refused.
pub fn parse_port(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(0) | Err(_) => Err(format!("port {n} is out of range 1-65535")),
        Ok(p) => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: String,
    }

    #[test]
    fn schema_error_names_file_line_and_field() {
        let e = parse_yaml::<T>(Path::new("x.yaml"), "name: a\nnmae: b\n").unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!((d.line, d.column), (2, 1));
        assert_eq!(d.field, "nmae");
        assert!(d.message.contains("unknown field `nmae`"), "{}", d.message);
        assert!(
            d.message.contains("name"),
            "valid names listed: {}",
            d.message
        );
        assert!(e.to_string().starts_with("x.yaml:2:1: nmae: "));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Site {
        site: String,
        nodes: Vec<Node>,
        #[serde(default)]
        allow: Vec<Allow>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Node {
        name: String,
        #[serde(default)]
        roles: Vec<u16>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Allow {
        from: String,
    }

    fn field(yaml: &str) -> (String, u64) {
        let e = parse_yaml::<Site>(Path::new("s.yaml"), yaml).unwrap_err();
        (e.diagnostics[0].field.clone(), e.diagnostics[0].line)
    }

    #[test]
    fn field_paths_of_schema_errors() {
        let nodes = "site: s\nnodes:\n  - name: a\n    roles: [1]\n  - name: b\n";
        // Block style, a comment on the way, list items at the key's indent.
        assert_eq!(
            field(&format!("{nodes}    # note\n    colour: red\n")),
            ("nodes[1].colour".into(), 7)
        );
        assert_eq!(
            field("site: s\nnodes:\n  - name: [a]\n"),
            ("nodes[0].name".into(), 3)
        );
        assert_eq!(
            field(&format!("{nodes}allow:\n- from: a\n  prot: 1\n")),
            ("allow[0].prot".into(), 8)
        );
        assert_eq!(field("site: [s]\nnodes: []\n"), ("site".into(), 1));
        // Flow style: the element itself, where indentation could only
        // have named the key.
        assert_eq!(
            field("site: s\nnodes:\n  - {name: a, roles: [1,\n     x]}\n"),
            ("nodes[0].roles[1]".into(), 4)
        );
    }

    fn all(yaml: &str) -> (bool, Vec<(u64, u64, String)>) {
        let (v, d) = parse_yaml_all::<Site>(Path::new("s.yaml"), yaml);
        let found = d.into_error().diagnostics;
        let found = found.into_iter().map(|d| (d.line, d.column, d.field));
        (v.is_some(), found.collect())
    }

    #[test]
    fn schema_errors_are_collected_past_unknown_fields() {
        // A near miss is read as the field; a block value under an unknown
        // key (list items at the key's indent too) is blanked out.
        let (parsed, found) = all(
            "site: s\nnodes:\n  - nme: a\n    shape:\n    - x\n    - {y: 1}\n    roles: [1]\n  - name: b\n    rols: [2]\nextra: 1\n",
        );
        assert!(parsed);
        let want = [
            (3, 5, "nodes[0].nme"),
            (4, 5, "nodes[0].shape"),
            (9, 5, "nodes[1].rols"),
            (10, 1, "extra"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(l, c, f)| (*l, *c, f.to_string()))
            .collect();
        assert_eq!(found, want);
        // A near miss of a field the mapping already has: skipped instead.
        let (parsed, found) = all("site: s\nnodes:\n  - roles: [1]\n    name: a\n    rols: [2]\n");
        assert!(parsed);
        assert_eq!(found, [(5, 5, "nodes[0].rols".to_string())]);
        // Flow style cannot be cut line by line: the parse stops there,
        // with what it found before.
        let (parsed, found) = all("site: s\nnodes:\n  - {name: a, colour: red}\n");
        assert!(!parsed);
        assert_eq!(found, [(3, 15, "nodes[0].colour".to_string())]);
        // Any other schema error ends the parse too.
        let (parsed, found) = all("site: s\nnodez: []\nnodes: [{name: [x]}]\n");
        assert!(!parsed);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn ports_and_durations() {
        assert_eq!(parse_port(443), Ok(443));
        assert!(parse_port(0).is_err());
        assert!(parse_port(65536).is_err());
        assert!(parse_port(-1).is_err());
        assert_eq!(
            parse_duration("15m"),
            Ok(std::time::Duration::from_secs(900))
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
