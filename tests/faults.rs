//! What production throws at the process: full disks, hostile flags and
//! files, floods of findings, idle-connection floods, vanishing interfaces,
//! huge sites. Each test is bounded in time and cleans up what it creates.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{bin, fixture, TempDir};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Skip on a laptop without root; never on CI.
fn needs_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root, and CI has it"
    );
    eprintln!("skipping {test}: not root");
    false
}

fn portwatch(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn events_to_dev_full_fail_the_replay_with_status_4() {
    let pcap = fixture("demo.pcap");
    let o = portwatch(&[
        "replay",
        pcap.to_str().unwrap(),
        "--site",
        "multi-node",
        "--events",
        "/dev/full",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("event log incomplete: /dev/full"), "{err}");
    // The report itself is still printed in full.
    assert!(String::from_utf8_lossy(&o.stdout).contains("FINDINGS"));
}

/// A tmpfs with a few KiB left: the event log stops at a whole line, the
/// replay says so on stderr and exits 4.
#[test]
fn events_on_a_full_tmpfs_keep_whole_lines() {
    if !needs_root("events_on_a_full_tmpfs_keep_whole_lines") {
        return;
    }
    let dir = TempDir::new("fulltmpfs");
    let mnt = dir.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Umount(mnt.clone());
    // Leave about 6 KiB: fewer than the demo capture's events need.
    std::fs::write(mnt.join("filler"), vec![0u8; 58 * 1024]).unwrap();
    let events = mnt.join("events.jsonl");
    let pcap = fixture("demo.pcap");
    let o = portwatch(&[
        "replay",
        pcap.to_str().unwrap(),
        "--site",
        "multi-node",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("event log incomplete"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "partial last line");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("half a line in the log: {e}: {line}"));
    }
}

#[test]
fn hostile_flags_and_files_get_clear_errors_not_panics() {
    let pcap = fixture("demo.pcap");
    let p = pcap.to_str().unwrap();
    let started = Instant::now();
    let o = portwatch(&[
        "run",
        "--site",
        "multi-node",
        "--replay",
        p,
        "--speed",
        "1e-300",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--speed"), "{}", stderr(&o));
    let o = portwatch(&["replay", p, "--site", "multi-node", "--max-flows", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--max-flows"), "{}", stderr(&o));
    // An endless "site file": refused at the size limit, quickly.
    let o = portwatch(&["check", "--site", "/dev/urandom"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/dev/urandom: larger than 4194304 bytes"),
        "{}",
        stderr(&o)
    );
    let o = portwatch(&["check", "--site", "multi-node", "--rules", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/dev/zero: larger than"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
