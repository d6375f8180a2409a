//! Privilege drop: `run` and `watch` started as root continue as `--user`
//! (default `nobody`) with only the capabilities they need, read from
//! `/proc/PID/status` of the running process (every thread). Root only;
//! skipped otherwise (a failure under `CI=true`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, fixture, sample, Daemon, TempDir};

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

fn root() -> bool {
    let is_root = nix::unistd::Uid::effective().is_root();
    if !is_root {
        crate::util::skip("privileges", "not root");
    }
    is_root
}

fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// (Uid fields, Gid fields, CapPrm, CapEff, CapBnd, NoNewPrivs) of one status file.
fn status(path: &str) -> (Vec<u32>, Vec<u32>, u64, u64, u64, String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap_or_else(|| panic!("no {k} in {path}"))
            .trim()
            .to_string()
    };
    let ids = |k: &str| {
        field(k)
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let hex = |k: &str| u64::from_str_radix(&field(k), 16).unwrap();
    (
        ids("Uid"),
        ids("Gid"),
        hex("CapPrm"),
        hex("CapEff"),
        hex("CapBnd"),
        field("NoNewPrivs"),
    )
}

/// Every thread of `pid` runs as `nobody` with exactly `caps`.
fn assert_dropped(pid: u32, caps: u64) {
    let (uid, gid) = nobody();
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        tasks.len() > 1,
        "the capture and HTTP threads exist: {tasks:?}"
    );
    for t in std::iter::once(String::new()).chain(tasks.iter().map(|t| format!("/task/{t}"))) {
        let path = format!("/proc/{pid}{t}/status");
        let (uids, gids, prm, eff, bnd, nnp) = status(&path);
        assert_eq!(uids, [uid; 4], "{path}: Uid");
        assert_eq!(gids, [gid; 4], "{path}: Gid");
        assert_eq!(eff, caps, "{path}: CapEff {eff:x}");
        assert_eq!(prm, caps, "{path}: CapPrm {prm:x}");
        assert_eq!(bnd, caps, "{path}: CapBnd {bnd:x}");
        assert_eq!(nnp, "1", "{path}: NoNewPrivs");
    }
}

#[test]
fn root_started_run_captures_as_nobody_with_net_caps_only() {
    if !root() {
        return;
    }
    let mut d = Daemon::start(&["run", "--site", "multi-node", "-i", "lo"]);
    d.wait_ready();
    assert_dropped(d.child.id(), CAP_NET_RAW | CAP_NET_ADMIN);
    // Still capturing and serving after the switch.
    let m = d.wait_metrics("packets counted on lo", |m| {
        m.contains("portwatch_capture_up{interface=\"lo\"} 1")
    });
    assert!(
        m.contains("portwatch_packets_total{interface=\"lo\""),
        "{m}"
    );
}

#[test]
fn root_started_replay_keeps_no_capability() {
    if !root() {
        return;
    }
    // Large enough (8 MB) that a thread started to read it before the
    // drop would still be alive, blocked on its buffers, when checked.
    let path = long_capture(100);
    let pcap = path.display().to_string();
    let mut d = Daemon::start(&["run", "--site", "multi-node", "--replay", &pcap, "--loop"]);
    d.wait_ready();
    assert_dropped(d.child.id(), 0);
    drop(d);
    let _ = std::fs::remove_file(&path);
}

/// `run --replay FILE --loop` started as root with `--user nobody`, FILE
/// readable by root only: every loop reads it again (from the descriptor
/// opened before the switch). It used to stop after the first pass, `cannot
/// reopen the capture files for the next loop`, retried forever.
#[test]
fn root_started_replay_loops_over_a_file_only_root_can_open() {
    if !root() {
        return;
    }
    let dir = TempDir::new("priv-loop");
    let pcap = dir.0.join("demo.pcap");
    std::fs::copy(fixture("demo.pcap"), &pcap).unwrap();
    std::fs::set_permissions(&pcap, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let frames = 1008.0; // capinfos -c fixtures/demo.pcap
    let log = dir.0.join("portwatch.log");
    let p = pcap.display().to_string();
    let args = [
        "run",
        "--site",
        "multi-node",
        "--replay",
        &p,
        "--loop",
        "--speed",
        "2000",
    ];
    let mut d = Daemon::start_logged(&args, &log);
    d.wait_ready();
    let packets = |m: &str| sample(m, "portwatch_packets_total").unwrap_or(0.0);
    d.wait_metrics("a third pass over the file", |m| packets(m) > 2.0 * frames);
    assert_dropped(d.child.id(), 0);
    drop(d);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("dropped root privileges"), "{text}");
    assert!(!text.contains("for the next loop"), "{text}");
}

fn lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

fn wait_for(d: &mut Daemon, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(d.alive(), "exited while waiting for {what}");
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Root-started `run --events DIR/events.jsonl` as `nobody`, DIR root's
/// (as `install -d /var/log/portwatch` makes it): the log becomes nobody's;
/// moved away with nothing in its place, SIGHUP keeps writing to the moved
/// file; moved away by logrotate's `create` (a new file with the old one's
/// owner and mode), SIGHUP goes on in the new one. No line is lost either
/// way; they used to be (`Permission denied` on reopen, every later line).
#[test]
fn root_started_run_reopens_its_event_log_as_nobody() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !root() {
        return;
    }
    let dir = TempDir::new("priv-events");
    std::fs::set_permissions(&dir.0, PermissionsExt::from_mode(0o755)).unwrap();
    let log = dir.0.join("events.jsonl");
    let stderr = dir.0.join("portwatch.log");
    let ev = log.display().to_string();
    let mut d = Daemon::start_logged(&crate::util::demo_run("50", &["--events", &ev]), &stderr);
    d.wait_ready();
    let (uid, gid) = nobody();
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, gid),
        "the event log is nobody's"
    );
    wait_for(&mut d, "lines in the event log", || lines(&log) > 2);

    // Moved away, nothing in its place: nobody cannot make a file in DIR.
    let moved = dir.0.join("events.jsonl.1");
    std::fs::rename(&log, &moved).unwrap();
    let before = lines(&moved);
    d.signal("HUP");
    let text = || std::fs::read_to_string(&stderr).unwrap_or_default();
    wait_for(&mut d, "the failed reopen logged", || {
        text().contains("still writing to the file open before")
    });
    wait_for(&mut d, "lines in the moved file", || {
        lines(&moved) > before + 2
    });

    // logrotate `create`: a new file like the old one.
    let rotated = dir.0.join("events.jsonl.2");
    std::fs::rename(&moved, &rotated).unwrap();
    std::fs::write(&log, "").unwrap();
    std::os::unix::fs::chown(&log, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&log, PermissionsExt::from_mode(meta.mode() & 0o7777)).unwrap();
    d.signal("HUP");
    wait_for(&mut d, "lines in the new event log", || lines(&log) > 2);
    let m = d.metrics();
    assert_eq!(
        sample(&m, "portwatch_event_log_write_errors_total"),
        Some(0.0),
        "lines lost"
    );
    drop(d);
    let text = text();
    assert!(text.contains("event log reopened"), "{text}");
    assert!(
        text.contains("the event log's directory does not let the user make a new file"),
        "{text}"
    );
    assert!(!text.contains("lines are lost"), "{text}");
}

/// `demo.pcap` (little-endian, microseconds) `copies` times over, each copy
/// later than the one before, in a file of this test's own.
fn long_capture(copies: u32) -> std::path::PathBuf {
    let demo = std::fs::read(fixture("demo.pcap")).unwrap();
    let (header, mut rest) = demo.split_at(24);
    let mut records = Vec::new();
    while rest.len() >= 16 {
        let caplen = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        records.push(&rest[..16 + caplen]);
        rest = &rest[16 + caplen..];
    }
    let secs = |r: &[u8]| u32::from_le_bytes(r[0..4].try_into().unwrap());
    let span = secs(records[records.len() - 1]) - secs(records[0]) + 1;
    let mut out = header.to_vec();
    for k in 0..copies {
        for r in &records {
            out.extend_from_slice(&(secs(r) + k * span).to_le_bytes());
            out.extend_from_slice(&r[4..]);
        }
    }
    let path = std::env::temp_dir().join(format!("portwatch-priv-{}.pcap", std::process::id()));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn root_started_watch_captures_as_nobody() {
    if !root() {
        return;
    }
    let mut child = Command::new(bin())
        .args(["watch", "--site", "multi-node", "-i", "lo"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (uid, _) = nobody();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Wait for the switch (and for the signal thread to exist).
    while status(&format!("/proc/{pid}/status")).0 != [uid; 4]
        || std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count()
            < 2
    {
        assert!(child.try_wait().unwrap().is_none(), "watch exited");
        assert!(Instant::now() < deadline, "watch did not switch to nobody");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_dropped(pid, CAP_NET_RAW | CAP_NET_ADMIN);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_missing_user_is_a_clear_error() {
    if !root() {
        return;
    }
    let user = format!("portwatch-no-such-user-{}", std::process::id());
    let out = Command::new(bin())
        .args(["run", "--site", "multi-node", "-i", "lo", "--user", &user])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("--user {user}: no such user")),
        "{err}"
    );
}
