//! The layers of `src/lib.rs`'s diagram hold: no module imports a module on
//! its own line of the diagram or above it. The order is written once, in
//! the diagram; this test reads it and every file of `src/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module → rank (0 is the bottom line), from the `layers:` block of the
/// crate docs.
fn layers(lib_rs: &str) -> BTreeMap<String, usize> {
    let lines: Vec<&str> = lib_rs
        .lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .skip_while(|l| *l != "layers:")
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(!lines.is_empty(), "no `layers:` block in src/lib.rs");
    let mut rank = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let names = line.split('│').next().unwrap_or("");
        for m in names.split_whitespace() {
            let dup = rank.insert(m.to_string(), lines.len() - 1 - i);
            assert!(dup.is_none(), "`{m}` is on two lines of the diagram");
        }
    }
    rank
}

/// The top-level modules a file's non-test code names with `crate::`,
/// with the line each is named on.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        // An inline test module ends the code that counts: tests may load
        // a policy through `config` whatever layer they test.
        if t == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim().starts_with("mod ") && n.trim().ends_with('{'))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let mut rest = t;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => {
                    // `crate::{a, b::c}`: the first segment of each path.
                    let group = group.split('}').next().unwrap_or("");
                    group
                        .split(',')
                        .filter_map(|p| p.trim().split("::").next())
                        .collect()
                }
                None => vec![rest
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or("")],
            };
            found.extend(
                names
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .map(|n| (i + 1, n.to_string())),
            );
        }
    }
    found
}

/// Files that are test modules as a whole (declared `#[cfg(test)] mod x;`).
fn is_test_file(path: &Path) -> bool {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    stem == "tests" || stem.ends_with("_tests") || stem == "proptests"
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every import that goes up or sideways, as `file:line: a imports b`.
fn violations(rank: &BTreeMap<String, usize>, files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (rel, text) in files {
        let module = rel
            .split('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_string();
        let Some(&own) = rank.get(&module) else {
            bad.push(format!("{rel}: module `{module}` is not in the diagram"));
            continue;
        };
        for (line, used) in imports(text) {
            if used == module {
                continue;
            }
            match rank.get(&used) {
                Some(&r) if r < own => {}
                Some(_) => bad.push(format!(
                    "src/{rel}:{line}: `{module}` imports `{used}`, which is not below it"
                )),
                None => bad.push(format!("src/{rel}:{line}: `{used}` is not in the diagram")),
            }
        }
    }
    bad
}

#[test]
fn no_module_imports_one_above_it() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let rank = layers(&lib);
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    for m in &declared {
        assert!(
            rank.contains_key(*m),
            "`{m}` is declared in lib.rs but not in its diagram"
        );
    }
    for m in rank.keys() {
        assert!(
            declared.contains(&m.as_str()),
            "`{m}` is in the diagram but not a module"
        );
    }

    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .filter(|p| !is_test_file(p))
        .map(|p| {
            let rel = p
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(p).unwrap())
        })
        .filter(|(rel, _)| rel != "lib.rs" && rel != "main.rs")
        .collect();
    assert!(files.len() > 30, "read only {} files of src/", files.len());
    let bad = violations(&rank, &files);
    assert!(
        bad.is_empty(),
        "imports against the layers of src/lib.rs:\n{}",
        bad.join("\n")
    );
}

/// The checker itself catches an upward import, a sideways one and a
/// grouped one, and lets test modules and comments be.
#[test]
fn the_checker_sees_upward_imports() {
    let rank = layers(
        "//! layers:\n//! cmd │ top\n//! report export │ out\n//! decode │ pure\n//! time │ clock\n//! ```",
    );
    let files = |text: &str| vec![("decode/x.rs".to_string(), text.to_string())];
    assert!(violations(&rank, &files("use crate::time::Timestamp;\n")).is_empty());
    assert!(violations(&rank, &files("// crate::cmd in a comment\n")).is_empty());
    assert!(violations(
        &rank,
        &files("fn f() {}\n#[cfg(test)]\nmod tests {\n use crate::cmd::x;\n}\n")
    )
    .is_empty());
    let up = violations(&rank, &files("use crate::{time::Timestamp, cmd::Error};\n"));
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(
        up[0].contains("src/decode/x.rs:1: `decode` imports `cmd`"),
        "{up:?}"
    );
    let sideways = vec![(
        "report/mod.rs".to_string(),
        "let m = crate::export::m();\n".to_string(),
    )];
    assert_eq!(violations(&rank, &sideways).len(), 1);
}

/// One module layout everywhere: a module with submodules is a folder with
/// `mod.rs`, never `x.rs` beside a folder `x/`.
#[test]
fn no_module_file_beside_its_folder() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let beside: Vec<String> = files
        .iter()
        .filter(|f| f.with_extension("").is_dir())
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        beside.is_empty(),
        "move each to its folder's mod.rs: {beside:?}"
    );
}

/// The build script names only files that exist in `rerun-if-changed`: a
/// missing one (`.git/packed-refs` when refs are not packed) makes cargo
/// rerun it, and relink the crate, on every build. Read from the newest
/// output of this crate's build script in the test binary's target dir.
#[test]
fn build_script_watches_only_files_that_exist() {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let outputs = std::fs::read_dir(profile.join("build"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("output")))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("PORTWATCH_REVISION")));
    let newest = outputs
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("the build script's output");
    let text = std::fs::read_to_string(&newest).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
        .filter(|p| !root.join(p).exists())
        .collect();
    assert!(missing.is_empty(), "{}: {missing:?}", newest.display());
}
