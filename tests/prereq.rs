//! What a test needs from the machine: root, tools. On a laptop without
//! them the test is skipped with a note; under `CI=true` it fails instead
//! ([`crate::util::skip`]).

use std::process::{Command, Stdio};

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `test` can run: root when `root`, and every tool.
pub fn needs(test: &str, root: bool, tools: &[&str]) -> bool {
    let missing: Vec<String> = (root && !is_root())
        .then(|| "root".to_string())
        .into_iter()
        .chain(tools.iter().filter(|t| !have(t)).map(|t| t.to_string()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    crate::util::skip(test, &format!("needs {missing:?}"));
    false
}

/// Root and these tools.
pub fn prerequisites(test: &str, tools: &[&str]) -> bool {
    needs(test, true, tools)
}
