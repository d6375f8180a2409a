//! Golden reports: `portwatch replay --format json --site SITE fixtures/FILE`
//! for every fixture listed in `fixtures/fixtures.tsv`, compared with
//! `fixtures/<name>.expected.json`; and the generator reproduces the
//! committed fixtures byte for byte.
//!
//! `UPDATE_GOLDEN=1 cargo test --test main golden` rewrites the goldens.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "../examples/make_fixtures.rs"]
#[allow(dead_code)]
pub mod generator;

/// One line of `fixtures/fixtures.tsv`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub file: String,
    pub site: String,
    pub exit: i32,
}

/// What one replay gave.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{}", self.stdout))
    }
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(root().join("fixtures/fixtures.tsv"))
        .expect("fixtures/fixtures.tsv readable");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "fixtures.tsv line {l:?}: want file, site, exit");
            Entry {
                file: f[0].into(),
                site: f[1].into(),
                exit: f[2].parse().expect("exit code"),
            }
        })
        .collect()
}

/// `portwatch ARGS...` run from the crate root.
pub fn portwatch(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_portwatch"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("portwatch runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Replay one fixture (path relative to the crate root, so the report
/// does not depend on where the checkout lives).
pub fn replay(site: &str, file: &str) -> Run {
    let path = format!("fixtures/{file}");
    portwatch(&["replay", "--format", "json", "--site", site, &path])
}

/// Replay a fixture by file name, with the site from the manifest.
pub fn replay_fixture(file: &str) -> (Entry, Run) {
    let e = manifest()
        .into_iter()
        .find(|e| e.file == file)
        .unwrap_or_else(|| panic!("{file} not in fixtures/fixtures.tsv"));
    let run = replay(&e.site, &e.file);
    (e, run)
}

fn golden_path(file: &str) -> PathBuf {
    let stem = file
        .strip_suffix(".pcapng")
        .or_else(|| file.strip_suffix(".pcap"))
        .unwrap_or(file);
    root()
        .join("fixtures")
        .join(format!("{stem}.expected.json"))
}

/// Paths where two JSON values differ, `$`-rooted, at most `max`.
pub fn json_diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, max: usize) {
    if out.len() >= max || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => json_diff(u, v, &p, out, max),
                    (u, v) => out.push(format!("{p}: {u:?} != {v:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_diff(u, v, &format!("{path}[{i}]"), out, max);
            }
            if x.len() != y.len() {
                out.push(format!("{path}: length {} != {}", x.len(), y.len()));
            }
        }
        _ => out.push(format!("{path}: {a} != {b}")),
    }
}

#[test]
fn golden_reports() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0");
    let mut failures = Vec::new();
    for e in manifest() {
        let run = replay(&e.site, &e.file);
        assert!(
            !run.stderr.contains("panicked"),
            "{}: panic:\n{}",
            e.file,
            run.stderr
        );
        if run.code != Some(e.exit) {
            failures.push(format!(
                "{}: exit {:?}, want {} (stderr: {})",
                e.file,
                run.code,
                e.exit,
                run.stderr.trim()
            ));
        }
        let golden = golden_path(&e.file);
        if update {
            std::fs::write(&golden, &run.stdout).expect("golden writable");
            continue;
        }
        let want: Value = match std::fs::read_to_string(&golden) {
            Ok(t) => serde_json::from_str(&t).expect("golden is JSON"),
            Err(err) => {
                failures.push(format!(
                    "{}: {err}; run UPDATE_GOLDEN=1 cargo test --test main golden",
                    golden.display()
                ));
                continue;
            }
        };
        let got = run.json();
        let mut diff = Vec::new();
        json_diff(&want, &got, "$", &mut diff, 12);
        if !diff.is_empty() {
            failures.push(format!(
                "{} differs from {} (golden != now):\n  {}",
                e.file,
                golden.display(),
                diff.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(if the change is intended: UPDATE_GOLDEN=1 cargo test --test main golden)",
        failures.join("\n")
    );
}

/// Every capture in fixtures/ is in the manifest and has a golden.
#[test]
fn golden_manifest_lists_every_fixture() {
    let listed: Vec<String> = manifest().into_iter().map(|e| e.file).collect();
    for entry in std::fs::read_dir(root().join("fixtures")).expect("fixtures/") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if name.ends_with(".pcap") || name.ends_with(".pcapng") {
            assert!(listed.contains(&name), "{name} is not in fixtures.tsv");
        }
        if let Some(stem) = name.strip_suffix(".expected.json") {
            assert!(
                listed
                    .iter()
                    .any(|f| golden_path(f).ends_with(format!("{stem}.expected.json"))),
                "{name} belongs to no fixture"
            );
        }
    }
}

/// The committed fixtures are exactly what the generator writes now.
#[test]
fn golden_generator_is_deterministic() {
    let dir = std::env::temp_dir().join(format!("portwatch-fixtures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let made = generator::generate(&dir).expect("generator runs");
    let committed = root().join("fixtures");
    let mut names: Vec<String> = made.iter().map(|f| f.file.clone()).collect();
    names.push("fixtures.tsv".into());
    names.extend(generator::nodelogs::names());
    for name in &names {
        let fresh = std::fs::read(dir.join(name)).expect("generated");
        let old =
            std::fs::read(committed.join(name)).unwrap_or_else(|e| panic!("fixtures/{name}: {e}"));
        assert!(
            fresh == old,
            "fixtures/{name} differs from a fresh run of examples/make_fixtures.rs; \
             regenerate: cargo run --release --example make_fixtures -- fixtures/ \
             && UPDATE_GOLDEN=1 cargo test --test main golden"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The demo capture as each mirror session delivers it (written at test
/// time by the generator, never committed): the report is the demo's
/// golden but for the capture section, which counts every frame under its
/// encapsulation and names the session.
#[test]
fn mirrored_demos_give_the_demo_report() {
    let dir = crate::util::TempDir::new("mirrored");
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_path("demo.pcap")).expect("demo golden"),
    )
    .expect("JSON");
    let mut failures = Vec::new();
    for m in generator::mirrors() {
        let kind = m.as_str();
        let path = dir.0.join(format!("demo-{kind}.pcap"));
        std::fs::write(&path, generator::mirrored_demo(m)).expect("temp dir writable");
        let run = portwatch(&[
            "replay",
            "--format",
            "json",
            "--site",
            "multi-node",
            path.to_str().expect("utf-8 path"),
        ]);
        assert_eq!(run.code, Some(1), "{kind}: {}", run.stderr);
        let mut got = run.json();
        let c = got["capture"].take();
        let packets = &want["capture"]["packets"];
        assert_eq!(&c["packets"], packets, "{kind}");
        assert_eq!(&c["encapsulations"][kind], packets, "{kind}: {c}");
        assert_eq!(
            c["control_packets"], want["capture"]["control_packets"],
            "{kind}"
        );
        assert_eq!(
            c["skipped_packets"], want["capture"]["skipped_packets"],
            "{kind}"
        );
        let named = c["mirror_sessions"].as_array().map_or(0, Vec::len);
        let has_session = !matches!(kind, "erspan_i" | "gre_in_udp" | "mpls");
        assert_eq!(named, usize::from(has_session), "{kind}: {c}");
        if has_session {
            let s = &c["mirror_sessions"][0];
            assert_eq!(
                (&s["session"], &s["frames"]),
                (&generator::MIRROR_SESSION.into(), packets)
            );
        }
        let mut want = want.clone();
        want["capture"].take();
        let mut diff = Vec::new();
        json_diff(&want, &got, "$", &mut diff, 8);
        if !diff.is_empty() {
            failures.push(format!("{kind}:\n  {}", diff.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
