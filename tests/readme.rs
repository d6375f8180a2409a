//! The README's console examples, run as written: every `$ COMMAND` of a
//! block marked `<!-- tests/readme.rs runs these commands … -->` runs in
//! bash from the repository's top, with the `portwatch` this test run built
//! first on `PATH` (the README has the reader put it there). The output
//! lines shown must appear in the command's output in that order (`…`
//! stands for lines left out), and a `$ echo $?` line gives the exit
//! status; without one, the command must exit 0.

use std::path::Path;
use std::process::Command;

const MARKER: &str = "<!-- tests/readme.rs runs these commands";

/// One command of a block and what the README shows for it.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    shown: Vec<String>,
    status: Option<i32>,
}

/// The examples of every marked block, with the README line of each command.
fn examples(readme: &str) -> Vec<Example> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out: Vec<Example> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with(MARKER) {
            i += 1;
            continue;
        }
        assert_eq!(lines.get(i + 1), Some(&"```console"), "line {}", i + 2);
        i += 2;
        while i < lines.len() && lines[i] != "```" {
            let l = lines[i];
            match (l.strip_prefix("$ "), out.last_mut()) {
                (Some("echo $?"), Some(prev)) => {
                    let status = lines[i + 1].trim().parse().expect("a status after echo $?");
                    prev.status = Some(status);
                    i += 1;
                }
                (Some(cmd), _) => out.push(Example {
                    line: i + 1,
                    command: cmd.to_string(),
                    shown: Vec::new(),
                    status: None,
                }),
                (None, Some(prev)) => prev.shown.push(l.to_string()),
                (None, None) => panic!("README line {}: output before any command", i + 1),
            }
            i += 1;
        }
        i += 1;
    }
    out
}

/// Where the shown lines (`…` skipped) stop matching `output` in order.
fn unmatched<'a>(shown: &'a [String], output: &str) -> Option<&'a str> {
    let mut rest = output.lines();
    (shown.iter())
        .filter(|l| l.as_str() != "…")
        .find(|want| !rest.any(|got| got.trim_end() == want.trim_end()))
        .map(String::as_str)
}

#[test]
fn readme_console_examples_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(examples.len() >= 3, "marked examples: {examples:?}");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_portwatch")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for e in &examples {
        let o = Command::new("bash")
            .args(["-c", &e.command])
            .current_dir(root)
            .env("PATH", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let want = e.status.unwrap_or(0);
        if o.status.code() != Some(want) {
            failures.push(format!(
                "README line {}: `{}` exited {:?}, the README says {want}:\n{}",
                e.line,
                e.command,
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ));
        } else if let Some(line) = unmatched(&e.shown, &stdout) {
            failures.push(format!(
                "README line {}: `{}` does not print, in this order, `{line}`:\n{stdout}",
                e.line, e.command
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The parser itself: commands, shown lines, statuses; and the matcher
/// refuses lines out of order.
#[test]
fn readme_examples_are_parsed_and_matched_in_order() {
    let text = "x\n<!-- tests/readme.rs runs these commands -->\n```console\n$ a\none\n…\ntwo\n$ b\n$ echo $?\n1\n```\n```console\n$ not marked\n```\n";
    let ex = examples(text);
    assert_eq!(ex.len(), 2, "{ex:?}");
    assert_eq!((ex[0].line, ex[0].command.as_str()), (4, "a"));
    assert_eq!(ex[0].shown, ["one", "…", "two"]);
    assert_eq!((ex[1].command.as_str(), ex[1].status), ("b", Some(1)));
    assert_eq!(unmatched(&ex[0].shown, "zero\none\nx\ntwo\n"), None);
    assert_eq!(unmatched(&ex[0].shown, "two\none\n"), Some("two"));
}
