//! Build facts for `--version` and `portwatch_build_info`: the git revision
//! (`unknown` outside a git checkout) and the compiler's version.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Ask cargo to rerun this script when `path` changes, if it exists.
fn watch(path: &str) -> bool {
    let exists = std::path::Path::new(path).exists();
    if exists {
        println!("cargo:rerun-if-changed={path}");
    }
    exists
}

fn main() {
    let revision = std::env::var("PORTWATCH_REVISION")
        .ok()
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustversion = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTWATCH_REVISION={revision}");
    println!("cargo:rustc-env=PORTWATCH_RUSTVERSION={rustversion}");
    println!("cargo:rerun-if-env-changed=PORTWATCH_REVISION");
    // Rebuild when HEAD moves (in a worktree .git is a file: ask git). A
    // path that does not exist (refs not packed, a branch only in
    // packed-refs) would make cargo rerun this script, and relink, on
    // every build: only existing files are named.
    let branch = output("git", &["symbolic-ref", "-q", "HEAD"]);
    for dir in ["--git-dir", "--git-common-dir"] {
        if let Some(dir) = output("git", &["rev-parse", dir]) {
            watch(&format!("{dir}/HEAD"));
            watch(&format!("{dir}/packed-refs"));
            if let Some(r) = &branch {
                // A branch only in packed-refs gets a loose file at its next
                // commit: its folder's listing changes then.
                let loose = format!("{dir}/{r}");
                if !watch(&loose) {
                    if let Some(folder) = std::path::Path::new(&loose).parent() {
                        watch(&folder.to_string_lossy());
                    }
                }
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
