//! Graphviz's `dot`, when installed, lays out the site diagram: its
//! layered layout with crossing reduction and edge routing is better than
//! anything worth writing here. Absent or failing, the caller falls back
//! to the report's own simple layout and says so.

use std::io::Write;
use std::process::{Command, Stdio};

/// Why `dot` gave no SVG.
#[derive(Debug, thiserror::Error)]
pub enum GraphvizError {
    #[error("`dot` is not installed (Debian package graphviz)")]
    NotFound,
    #[error("`dot` failed: {0}")]
    Failed(String),
}

/// The version line `dot -V` prints, if `dot` runs.
pub fn version() -> Option<String> {
    let out = Command::new("dot").arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    out.status.success().then(|| text.trim().to_string())
}

/// Lay out DOT text as SVG: the `<svg>` element alone, without the XML
/// prolog and doctype, ready to embed in HTML.
pub fn svg(dot: &str) -> Result<String, GraphvizError> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => GraphvizError::NotFound,
            _ => GraphvizError::Failed(e.to_string()),
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = dot.to_string();
    // Written from a thread: dot may start writing before it has read all.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| GraphvizError::Failed(e.to_string()))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(GraphvizError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let svg = String::from_utf8_lossy(&out.stdout);
    match svg.find("<svg") {
        Some(i) => Ok(svg[i..].to_string()),
        None => Err(GraphvizError::Failed("no <svg> in its output".into())),
    }
}
