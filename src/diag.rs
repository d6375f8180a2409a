//! Load-time problems in a rules or site file, each with the file, the
//! line and column, and the field path it concerns.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

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

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
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
}

impl Diagnostics {
    pub fn new(file: &Path) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            found: Vec::new(),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn at(&mut self, loc: &Location, field: impl Into<String>, message: impl Into<String>) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line: loc.line(),
            column: loc.column(),
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn on<T>(
        &mut self,
        value: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.at(&value.referenced, field, message);
    }

    pub fn push_raw(&mut self, line: u64, column: u64, field: String, message: String) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            field,
            message,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `Ok(value)` when nothing was found, otherwise every diagnostic sorted
    /// by position.
    pub fn finish<T>(mut self, value: T) -> Result<T, ConfigError> {
        if self.found.is_empty() {
            return Ok(value);
        }
        self.found.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError {
            diagnostics: self.found,
        })
    }
}

/// Parse YAML into the raw mirror type, turning a syntax or schema error
/// (unknown field, wrong type) into a located diagnostic: position from
/// serde-saphyr, field path from serde_path_to_error (block and flow style
/// alike). serde stops at the first such error; semantic checks after it
/// report everything at once.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    // serde_path_to_error tracks the field path as serde walks the value;
    // the error keeps only the position, so the path is kept aside.
    let mut path = None;
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.to_path_buf(),
                line,
                column,
                field: path
                    .filter(|p| p != ".")
                    .unwrap_or_else(|| "(value)".into()),
                message: schema_message(&e.to_string()),
            }],
        }
    })
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
