//! A closed stdout: `replay | head` ends quietly with the report's status;
//! `run --print` stops printing and keeps serving `/metrics`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, demo_run, fixture, sample, Daemon, TempDir};

fn replay_args() -> Vec<String> {
    vec![
        "replay".into(),
        fixture("demo.pcap").display().to_string(),
        "--site".into(),
        "multi-node".into(),
    ]
}

/// The status and report of a replay whose stdout is read to the end.
fn replay_read_fully() -> (Option<i32>, String) {
    let out = Command::new(bin()).args(replay_args()).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn replay_into_a_closed_pipe_is_quiet_and_keeps_its_status() {
    let (status, report) = replay_read_fully();
    assert_eq!(status, Some(1), "the demo capture has findings");
    assert!(report.lines().count() > 3, "{report}");

    // Closed before the report is written: every write fails with EPIPE.
    let mut child = Command::new(bin())
        .args(replay_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), status, "stderr:\n{err}");
    assert!(err.is_empty(), "not quiet:\n{err}");

    // As a user types it.
    let line = format!(
        "{} {} | head -3; exit ${{PIPESTATUS[0]}}",
        bin(),
        replay_args().join(" ")
    );
    let out = Command::new("bash").args(["-c", &line]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), status, "stderr:\n{err}");
    assert!(err.is_empty(), "not quiet:\n{err}");
    let head: Vec<&str> = report.lines().take(3).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        head
    );
}

#[test]
fn expect_and_check_into_a_closed_pipe_are_quiet() {
    for cmd in ["expect", "check"] {
        let mut child = Command::new(bin())
            .args([cmd, "--site", "multi-node"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{cmd}: stderr:\n{err}");
        assert!(err.is_empty(), "{cmd}: not quiet:\n{err}");
    }
}

/// `run --print` with its stdout closed: the printing stops (said once in
/// the log), the capture and `/metrics` go on, SIGTERM still exits 0.
#[test]
fn run_print_with_stdout_closed_keeps_serving_metrics() {
    let tmp = TempDir::new("closed-stdout");
    let log = tmp.0.join("stderr.log");
    let mut d = Daemon::spawn_wrapped(
        &[],
        &demo_run("100", &["--print"]),
        Stdio::null(),
        Some(Stdio::piped()),
        Some(&log),
    );
    drop(d.child.stdout.take());

    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = "printing stopped";
    while !std::fs::read_to_string(&log).unwrap().contains(stopped) {
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "exited:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "no `{stopped}` in the log within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = |m: &str| sample(m, "portwatch_packets_total").unwrap_or(0.0);
    let before = total(&d.wait_metrics("packets counted", |m| total(m) > 0.0));
    d.wait_metrics("packets still counted after stdout closed", |m| {
        total(m) > before
    });
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon must keep running"
    );

    d.signal("TERM");
    let (status, _, _) = d.wait_exit();
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches(stopped).count(), 1, "logged once:\n{text}");
    assert!(
        text.contains("SUMMARY"),
        "the summary still goes to stderr:\n{text}"
    );
}
