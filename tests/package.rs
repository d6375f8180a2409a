//! The Debian package: built with cargo-deb (`deploy/debian/build-deb`,
//! packaging the binary this test run built), installed with `dpkg -i`,
//! then `portwatch --version`, `man -w portwatch`, the bundled sites and
//! completions, `systemd-analyze verify` on the installed unit, and removed.
//!
//! Needs root, cargo-deb, man-db and systemd-analyze; skipped without them
//! on a laptop, a failure under `CI=true` (`.ci/deps --test` installs them).

use std::path::Path;
use std::process::Command;

use crate::deploy::repo;
use crate::util::TempDir;

/// util's skip, true so a test can `&& skip(..)` and return.
fn skip(why: &str) -> bool {
    crate::util::skip("package", why);
    true
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn has(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes the package even when an assertion fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "portwatch"]).output();
    }
}

#[test]
fn deb_installs_runs_and_its_unit_verifies() {
    if !nix::unistd::Uid::effective().is_root() && skip("not root: cannot dpkg -i") {
        return;
    }
    for (tool, arg) in [
        ("cargo-deb", "--version"),
        ("man", "--version"),
        ("systemd-analyze", "--version"),
        ("dpkg-deb", "--version"),
    ] {
        if !has(tool, arg) && skip(&format!("{tool} is not installed")) {
            return;
        }
    }
    // Never replace a portwatch installed by someone else on this machine.
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "portwatch"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&status.stdout).contains("ok installed") {
        skip("a portwatch package is already installed here");
        return;
    }

    let tmp = TempDir::new("deb");
    let debug_bin = Path::new(env!("CARGO_BIN_EXE_portwatch"));
    assert!(
        debug_bin.ends_with("debug/portwatch"),
        "{}",
        debug_bin.display()
    );
    run(Command::new(repo().join("deploy/debian/build-deb"))
        .args(["--profile", "dev", "--no-build", "--fast", "-o"])
        .arg(&tmp.0));
    let deb = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in [
        "./usr/bin/portwatch",
        "./usr/lib/systemd/system/portwatch.service",
        "./etc/default/portwatch",
        "./usr/share/portwatch/rules/qlik-sense-enterprise.yaml",
        "./usr/share/portwatch/sites/multi-node.yaml",
        // deploy/victoriametrics/prometheus.yml loads it from here.
        "./usr/share/portwatch/victoriametrics/portwatch.fleet.rules.yml",
        "./usr/share/portwatch/victoriametrics/portwatch.global.rules.yml",
        "./usr/share/portwatch/grafana/portwatch-fleet.json",
        "./usr/share/man/man1/portwatch.1.gz",
        "./usr/share/man/man1/portwatch-run.1.gz",
        "./usr/share/bash-completion/completions/portwatch",
        "./usr/share/zsh/vendor-completions/_portwatch",
        "./usr/share/fish/vendor_completions.d/portwatch.fish",
        "./usr/share/doc/portwatch/copyright",
        // The alert rules' runbook_url points here.
        "./usr/share/doc/portwatch/deploy.md",
    ] {
        assert!(listing.contains(f), "{f} not in the package:\n{listing}");
    }

    run(Command::new("dpkg").arg("-i").arg(&deb));
    let _installed = Installed;
    let version = run(Command::new("/usr/bin/portwatch").arg("--version"));
    assert!(
        version.starts_with(&format!(
            "portwatch {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    let man = run(Command::new("man").args(["-w", "portwatch"]));
    assert!(
        man.trim().ends_with("/usr/share/man/man1/portwatch.1.gz"),
        "{man}"
    );
    let check = run(Command::new("/usr/bin/portwatch").args([
        "check",
        "--site",
        "/usr/share/portwatch/sites/multi-node.yaml",
        "--rules",
        "/usr/share/portwatch/rules/qlik-sense-enterprise.yaml",
    ]));
    assert!(check.contains("is valid"), "{check}");
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/portwatch.service").unwrap();
    assert!(
        unit.contains("EnvironmentFile=-/etc/default/portwatch"),
        "{unit}"
    );
    assert!(unit.contains("ExecStart=/usr/bin/portwatch run "), "{unit}");
    let out = Command::new("systemd-analyze")
        .args(["verify", "/usr/lib/systemd/system/portwatch.service"])
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only lines about our unit: verify also loads units it pulls in,
    // which a container may lack.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("portwatch.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{text}");

    drop(_installed);
    assert!(
        !Path::new("/usr/bin/portwatch").exists(),
        "still installed after purge"
    );
}

/// Without root or cargo-deb: the completion scripts parse in their shells
/// and the man pages are roff that `man` renders.
#[test]
fn completions_and_man_pages_are_valid() {
    let bin = env!("CARGO_BIN_EXE_portwatch");
    for (shell, check) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let script = run(Command::new(bin).args(["completions", shell]));
        assert!(script.contains("portwatch"), "{shell}: {script:.200}");
        if !has(check, "--version")
            && skip(&format!(
                "{check} not installed; {shell} completion not parsed"
            ))
        {
            continue;
        }
        let tmp = TempDir::new(&format!("completion-{shell}"));
        let f = tmp.0.join("completion");
        std::fs::write(&f, &script).unwrap();
        let arg = if shell == "fish" {
            "--no-execute"
        } else {
            "-n"
        };
        run(Command::new(check).arg(arg).arg(&f));
    }
    let tmp = TempDir::new("man");
    run(Command::new(bin).arg("man").arg(&tmp.0));
    for page in [
        "portwatch.1",
        "portwatch-run.1",
        "portwatch-replay.1",
        "portwatch-completions.1",
    ] {
        let text = std::fs::read_to_string(tmp.0.join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: not roff"
        );
    }
    let run_page = std::fs::read_to_string(tmp.0.join("portwatch-run.1")).unwrap();
    assert!(
        run_page.contains("web.config.file"),
        "the run page documents its flags"
    );
    if has("man", "--version") {
        let out = run(Command::new("man")
            .arg("-l")
            .arg(tmp.0.join("portwatch.1"))
            .env("MANPAGER", "cat"));
        assert!(out.contains("portwatch"), "{out:.300}");
    }
}
