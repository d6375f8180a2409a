//! What production throws at the process: full disks, hostile flags and
//! files, floods of findings, idle-connection floods, vanishing interfaces,
//! huge sites. Each test is bounded in time and cleans up what it creates.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::prereq::prerequisites;
use crate::util::{bin, bound, demo_run, fixture, Daemon, TempDir};

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
    if !prerequisites("events_on_a_full_tmpfs_keep_whole_lines", &[]) {
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

/// A file size limit stops the event log partway through a batch, as a
/// full disk does: the whole lines that fit are kept (they used to be cut
/// away with the rest of their batch), the file ends on a whole line, and
/// the lines counted as lost are exactly the ones missing.
#[test]
fn events_past_a_file_size_limit_keep_the_lines_that_fit() {
    let test = "events_past_a_file_size_limit_keep_the_lines_that_fit";
    if !crate::prereq::needs(test, false, &["prlimit"]) {
        return;
    }
    let dir = TempDir::new("fsize");
    let pcap = fixture("demo.pcap");
    let events = |name: &str| dir.0.join(name).display().to_string();
    let (all_path, cut_path) = (events("all.jsonl"), events("cut.jsonl"));
    let args = |path: &str| {
        let pcap = pcap.display().to_string();
        ["replay", &pcap, "--site", "multi-node", "--events", path].map(str::to_string)
    };
    let o = Command::new(bin()).args(args(&all_path)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let all = std::fs::read_to_string(&all_path).unwrap();
    let longest = all.lines().map(str::len).max().unwrap() + 1;
    let limit = all.len() / 2;
    assert!(limit > 2 * longest, "{limit} bytes, lines up to {longest}");
    // SIGXFSZ ignored (kept through exec): past the limit a write fails
    // (EFBIG) instead of killing the process.
    let o = Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\""])
        .arg(limit.to_string())
        .arg(bin())
        .args(args(&cut_path))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    let cut = std::fs::read_to_string(&cut_path).unwrap();
    assert!(
        cut.len() <= limit && cut.len() > limit - longest,
        "{} of {limit} bytes kept (lines up to {longest}):\n{err}",
        cut.len()
    );
    assert!(
        all.starts_with(&cut) && cut.ends_with('\n'),
        "not whole lines"
    );
    let lost = all.lines().count() - cut.lines().count();
    assert!(
        err.contains(&format!(" {lost} line(s) not logged")),
        "{lost} lines lost:\n{err}"
    );
}

/// `run` on a tmpfs that fills up and frees again: the failure and the
/// recovery are each logged once, the lost lines are counted, and lines
/// reach the file again (the recovery used to go unlogged).
#[test]
fn a_full_disk_that_frees_up_logs_the_recovery() {
    let test = "a_full_disk_that_frees_up_logs_the_recovery";
    if !prerequisites(test, &[]) {
        return;
    }
    let dir = TempDir::new("recovery");
    let mnt = dir.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
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
    let filler = mnt.join("filler");
    // Fills the whole 4 MiB (ENOSPC); freed later, room for the rest of the test.
    let _ = std::fs::write(&filler, vec![0u8; 8 << 20]);
    assert!(std::fs::metadata(&filler).unwrap().len() > 0);
    let events = mnt.join("events.jsonl");
    let log = dir.0.join("portwatch.log");
    let ev = events.display().to_string();
    let mut d = Daemon::start_logged(&demo_run("50", &["--events", &ev]), &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_log = |d: &mut Daemon, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !read_log().contains(what) {
            assert!(d.alive(), "exited:\n{}", read_log());
            assert!(Instant::now() < deadline, "no `{what}`:\n{}", read_log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let failed = "writing the event log failed";
    let recovered = "writing the event log works again";
    wait_log(&mut d, failed);
    let lost = |m: &str| crate::util::sample(m, "portwatch_event_log_write_errors_total");
    d.wait_metrics("lost lines counted", |m| lost(m).is_some_and(|n| n > 0.0));
    std::fs::remove_file(&filler).unwrap();
    wait_log(&mut d, recovered);
    let size = std::fs::metadata(&events).unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&events).unwrap().len() <= size {
        assert!(Instant::now() < deadline, "no lines after the recovery");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    let text = read_log();
    assert_eq!(text.matches(failed).count(), 1, "{text}");
    assert_eq!(text.matches(recovered).count(), 1, "{text}");
    let lines = std::fs::read_to_string(&events).unwrap();
    for line in lines.lines() {
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
    assert!(started.elapsed() < bound(Duration::from_secs(20)));
}

/// A pcap of `n` SYNs from pseudo-random spoofed sources outside the site
/// to the multi-node proxy, ending just before `before` (seconds).
fn spoofed_flood(n: u32, before: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for w in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let src = [100, 64 | ((x >> 24) as u8 & 0x3f), (x >> 8) as u8, x as u8];
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, [192, 0, 2, 11], 64)
            .tcp(1024 + (x % 60_000) as u16, 443, x, 65535)
            .syn()
            .write(&mut frame, &[])
            .unwrap();
        let (secs, usecs) = (before - 2, i % 1_000_000);
        for w in [secs, usecs, frame.len() as u32, frame.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    out
}

fn replay_json(files: &[&std::path::Path]) -> serde_json::Value {
    let mut cmd = Command::new(bin());
    cmd.arg("replay").args(files);
    let o = cmd
        .args(["--site", "multi-node", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// 10,000 spoofed SYNs before the demo traffic: every genuine blocked,
/// unexpected and local-only finding is still reported, the flood is one
/// folded finding with exact counts, and the summary counts every attempt.
#[test]
fn a_spoofed_flood_keeps_every_genuine_finding() {
    let dir = TempDir::new("flood");
    let demo = fixture("demo.pcap");
    let first_secs = {
        let b = std::fs::read(&demo).unwrap();
        u32::from_le_bytes(b[24..28].try_into().unwrap())
    };
    let flood = dir.0.join("flood.pcap");
    std::fs::write(&flood, spoofed_flood(10_000, first_secs)).unwrap();
    let alone = replay_json(&[&demo]);
    let both = replay_json(&[&flood, &demo]);
    let genuine = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        let f = r["findings"].as_array().unwrap();
        f.iter()
            .filter(|f| {
                ["blocked", "unexpected", "local_only"].contains(&f["kind"].as_str().unwrap())
            })
            .cloned()
            .collect()
    };
    assert_eq!(genuine(&alone).len(), 4);
    assert_eq!(genuine(&both), genuine(&alone));
    let folded: Vec<_> = both["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("folded").is_some())
        .collect();
    assert_eq!(folded.len(), 1, "{folded:?}");
    let unknown_alone = alone["summary"]["connections"]["unknown_host"]
        .as_u64()
        .unwrap();
    assert_eq!(
        both["summary"]["connections"]["unknown_host"]
            .as_u64()
            .unwrap(),
        unknown_alone + 10_000
    );
    // Rows (500 per source group) plus the folded attempts cover them all.
    let rows: u64 = both["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "unknown_host" && f.get("folded").is_none())
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    let folded_attempts = folded[0]["folded"]["attempts"].as_u64().unwrap();
    assert_eq!(rows + folded_attempts, unknown_alone + 10_000);
    assert_eq!(both["summary"]["findings"]["blocked"], 1);
}

/// A child process killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(c: &mut Child) -> bool {
    matches!(c.0.try_wait(), Ok(None))
}

/// `run` replaying the demo capture in a loop under `prlimit --nofile=N`,
/// its output in `log`; returns once `/-/ready` answers 200.
fn run_demo_under_nofile(nofile: u32, log: &std::path::Path) -> Daemon {
    let limit = format!("--nofile={nofile}");
    let mut d = Daemon::start_wrapped(&["prlimit", &limit], &demo_run("1000", &[]), log);
    d.wait_ready();
    d
}

/// 1,100 idle connections to the metrics port of a daemon limited to 1024
/// descriptors: a scrape still answers within a second, the replay keeps
/// running (its loop reopens the capture file), nothing is fatal.
#[test]
fn idle_connection_flood_under_nofile_1024() {
    let dir = TempDir::new("idleflood");
    let mut child = run_demo_under_nofile(1024, &dir.0.join("log"));
    let addr = child.addr;
    let packets = |m: &str| crate::util::sample(m, "portwatch_packets_total{").unwrap_or(0.0);
    let before = packets(&crate::util::http_get(addr, "/metrics").unwrap().1);
    let idle: Vec<_> = (0..1_100)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    assert!(
        idle.len() >= 1_000,
        "only {} connections opened",
        idle.len()
    );
    // The daemon has taken the flood off its accept queue (kept or closed
    // at the cap) before the scrapes are timed.
    crate::util::poll_until("the flood accepted", Duration::from_secs(30), || {
        crate::util::accept_queue(&mut Command::new("ss"), addr) == Some(0)
    });
    for _ in 0..3 {
        let t = Instant::now();
        let got = crate::util::http_get(addr, "/metrics");
        let took = t.elapsed();
        let (status, body) = got.expect("no answer to a scrape under the flood");
        assert_eq!(status, 200);
        assert!(took < bound(Duration::from_secs(1)), "scrape took {took:?}");
        assert!(body.contains("portwatch_http_connections_rejected_total"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The capture side kept going through the flood (the looping replay
    // read its file again) and the process is up.
    let m = child.wait_metrics(&format!("more than {before} packets"), |m| {
        packets(m) > before
    });
    assert!(crate::util::sample(&m, "portwatch_capture_up").unwrap_or(0.0) == 1.0);
    assert!(child.alive(), "the daemon died");
    drop(idle);
}

/// The shipped unit leaves the HTTP connection cap well below its
/// descriptor limit, so the capture always has descriptors left.
#[test]
fn systemd_unit_descriptor_limit_fits_the_http_cap() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/portwatch.service"),
    )
    .unwrap();
    let nofile: usize = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE= in the unit")
        .trim()
        .parse()
        .unwrap();
    let cap = portwatch::export::serve::MAX_CONNECTIONS;
    assert!(
        nofile >= 4 * cap,
        "LimitNOFILE={nofile} vs {cap} connections"
    );
    assert!(unit.contains(&format!("at most {cap} connections")));
}

/// A veth pair in the root namespace with names unique to this process,
/// deleted on drop. No addresses, no traffic.
struct Veth(String);

impl Veth {
    fn add(name: &str, peer: &str) -> bool {
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        ok(&["link", "add", name, "type", "veth", "peer", "name", peer])
            && ok(&["link", "set", name, "up"])
            && ok(&["link", "set", peer, "up"])
    }

    fn del(name: &str) {
        let _ = Command::new("ip")
            .args(["link", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        Veth::del(&self.0);
    }
}

/// The interface `run` captures on is deleted and re-created: the process
/// stays up, capture_up goes 1 -> 0 -> 1, the loss is counted, and metrics
/// are served throughout.
#[test]
fn a_vanished_interface_is_reopened_when_it_returns() {
    if !prerequisites("a_vanished_interface_is_reopened_when_it_returns", &[]) {
        return;
    }
    let pid = std::process::id() % 1_000_000;
    let (a, b) = (format!("pw9a{pid}"), format!("pw9b{pid}"));
    assert!(Veth::add(&a, &b), "cannot create a veth pair");
    let _veth = Veth(a.clone());
    let dir = TempDir::new("ifgone");
    let log_path = dir.0.join("log");
    let mut child = Daemon::start_logged(&["run", "--site", "multi-node", "-i", &a], &log_path);
    let addr = child.addr;
    let up = format!("portwatch_capture_up{{interface=\"{a}\"}}");
    let lost = format!("portwatch_capture_interface_lost_total{{interface=\"{a}\"}}");
    // Waits for the gauge, asserting that every scrape on the way answers.
    let mut wait_up = |want: f64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                child.alive(),
                "portwatch exited: {}",
                std::fs::read_to_string(&log_path).unwrap()
            );
            let m = crate::util::http_get(addr, "/metrics").map(|r| r.1);
            if let Some(m) = &m {
                if crate::util::sample(m, &up) == Some(want) {
                    return m.clone();
                }
            }
            assert!(Instant::now() < deadline, "{what}: last scrape {m:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_up(1.0, "capture up");
    Veth::del(&a);
    let m = wait_up(0.0, "capture down after the interface was deleted");
    assert_eq!(crate::util::sample(&m, &lost), Some(1.0));
    assert_eq!(
        crate::util::http_get(addr, "/healthz").map(|r| r.0),
        Some(200)
    );
    assert!(Veth::add(&a, &b), "cannot re-create the veth pair");
    let m = wait_up(1.0, "capture up again after the interface returned");
    assert_eq!(crate::util::sample(&m, &lost), Some(1.0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("capture interface lost"), "{log}");
    assert!(log.contains("capture interface back"), "{log}");
}

/// A site of `n` nodes: one central node, the rest proxies, engines and
/// schedulers in turn, on 10.0.0.0/8 addresses.
fn big_site(n: usize) -> String {
    let mut s = String::from("site: big\nmodel: qlik-sense-enterprise\nnodes:\n");
    s.push_str("  - name: central\n    addresses: [10.255.255.1]\n    roles: [central]\n");
    for i in 1..n {
        let role = ["proxy", "engine", "scheduler"][i % 3];
        s.push_str(&format!(
            "  - name: n{i}\n    addresses: [10.{}.{}.{}]\n    roles: [{role}]\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    s.push_str("user_networks:\n  - name: users\n    cidrs: [198.51.100.0/24]\n");
    s
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 1,000 nodes: `check` and `run` start within 2 s and 128 MiB (the
/// million optional node pairs are not built); a reload to 10,000 nodes
/// works, one past the node limit is refused and the old site keeps
/// serving.
#[test]
fn a_thousand_node_site_within_bounds_and_reloads_that_never_kill() {
    let dir = TempDir::new("bigsite");
    let site = dir.0.join("site.yaml");
    std::fs::write(&site, big_site(1_000)).unwrap();
    let site_arg = site.to_str().unwrap();

    let t = Instant::now();
    let child = Command::new(bin())
        .args(["check", "--site", site_arg])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1000 nodes, 1119215 expected edges (3663 required)"),
        "{out}"
    );
    assert!(took < bound(Duration::from_secs(2)), "check took {took:?}");

    let pcap = fixture("demo.pcap").display().to_string();
    let t = Instant::now();
    let mut child = Daemon::spawn(
        &[
            "run", "--site", site_arg, "--loop", "--speed", "100", "--replay", &pcap,
        ],
        std::process::Stdio::null(),
    );
    let addr = child.addr;
    let pid = child.child.id();
    while crate::util::http_get(addr, "/-/ready").map(|r| r.0) != Some(200) {
        assert!(
            child.alive() && t.elapsed() < Duration::from_secs(20),
            "never ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    assert!(took < bound(Duration::from_secs(2)), "start took {took:?}");
    let rss = peak_rss_kib(pid);
    assert!(rss < 128 * 1024, "start: peak RSS {rss} KiB");

    let reload = |child: &mut Daemon, nodes: usize, want: f64| {
        std::fs::write(&site, big_site(nodes)).unwrap();
        let before = crate::util::http_get(addr, "/metrics").unwrap().1;
        let failures_before =
            crate::util::sample(&before, "portwatch_config_reload_failures_total");
        let loaded_before = crate::util::sample(
            &before,
            "portwatch_config_last_reload_success_timestamp_seconds",
        );
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let t = Instant::now();
        loop {
            assert!(child.alive(), "the daemon died reloading {nodes} nodes");
            let m = crate::util::http_get(addr, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            let nodes_seen = m
                .lines()
                .filter(|l| l.starts_with("portwatch_node_info{"))
                .count();
            let failures = crate::util::sample(&m, "portwatch_config_reload_failures_total");
            let loaded =
                crate::util::sample(&m, "portwatch_config_last_reload_success_timestamp_seconds");
            // A scrape reads the gauges one after the other, so it may
            // catch a reload half published: wait until both are visible.
            let successful = crate::util::sample(&m, "portwatch_config_last_reload_successful");
            let done = if want == 1.0 {
                loaded > loaded_before && nodes_seen == nodes
            } else {
                failures > failures_before && successful == Some(0.0)
            };
            if done {
                assert_eq!(successful, Some(want));
                return (t.elapsed(), m);
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "reload to {nodes} nodes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (took, _) = reload(&mut child, 1_000, 1.0);
    assert!(took < bound(Duration::from_secs(2)), "reload took {took:?}");
    assert!(
        peak_rss_kib(pid) < 128 * 1024,
        "reload: peak RSS {} KiB",
        peak_rss_kib(pid)
    );
    reload(&mut child, 10_000, 1.0);
    let (_, m) = reload(&mut child, 10_001, 0.0);
    // The 10,000-node site keeps serving.
    let nodes_seen = m
        .lines()
        .filter(|l| l.starts_with("portwatch_node_info{"))
        .count();
    assert_eq!(nodes_seen, 10_000);
    assert!(child.alive());
}

/// Under a descriptor limit (prlimit 64) below what the default
/// connection cap would need, the cap is lowered to fit: a flood of idle
/// connections never takes the descriptors the capture needs (the looping
/// replay reopens its file every loop), and a scrape still answers.
#[test]
fn a_low_descriptor_limit_never_starves_the_capture() {
    let dir = TempDir::new("emfile");
    let log_path = dir.0.join("log");
    let mut child = run_demo_under_nofile(64, &log_path);
    let addr = child.addr;
    let packets = |m: &str| crate::util::sample(m, "portwatch_packets_total{").unwrap_or(0.0);
    let before = packets(&crate::util::http_get(addr, "/metrics").unwrap().1);
    let idle: Vec<_> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let got = crate::util::http_get(addr, "/metrics");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(child.alive(), "the daemon died: {log}");
        assert_eq!(got.map(|r| r.0), Some(200), "{log}");
        assert!(
            t.elapsed() < bound(Duration::from_secs(1)),
            "scrape took {:?}",
            t.elapsed()
        );
    }
    let m = child.wait_metrics(&format!("more than {before} packets"), |m| {
        packets(m) > before
    });
    assert_eq!(crate::util::sample(&m, "portwatch_capture_up"), Some(1.0));
    drop(idle);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("HTTP connection cap lowered"), "{log}");
    assert!(!log.contains("capture failed"), "{log}");
}

/// A pcap record whose microsecond field is 0xFFFFFFFF (71 minutes): a
/// decode error by reason that does not stretch the capture, so a clean
/// capture stays clean (it used to make required edges look missing).
#[test]
fn an_out_of_range_fraction_does_not_stretch_the_capture() {
    let dir = TempDir::new("badfrac");
    let clean = fixture("site-multi-node.pcap");
    let mut bytes = std::fs::read(&clean).unwrap();
    // Walk the records (little-endian µs pcap) to the last one.
    let mut at = 24;
    let mut last = at;
    while at + 16 <= bytes.len() {
        last = at;
        at += 16 + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    }
    bytes[last + 4..last + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let damaged = dir.0.join("damaged.pcap");
    std::fs::write(&damaged, &bytes).unwrap();
    let run = |f: &std::path::Path| {
        let o = Command::new(bin())
            .arg("replay")
            .arg(f)
            .args(["--site", "multi-node", "--format", "json"])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), r)
    };
    let (code_clean, clean) = run(&clean);
    let (code, r) = run(&damaged);
    assert_eq!(code_clean, Some(0));
    assert_eq!(code, Some(0), "{}", r["summary"]);
    assert_eq!(r["capture"]["decode_errors"]["invalid_timestamp"], 1);
    assert!(
        r["capture"]["duration_seconds"].as_f64().unwrap()
            <= clean["capture"]["duration_seconds"].as_f64().unwrap()
    );
    assert_eq!(r["capture"]["packets"], clean["capture"]["packets"]);
}

/// A pcapng block: type, body padded to 4 bytes, lengths (little-endian).
fn pcapng_block(btype: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    body.resize(body.len().div_ceil(4) * 4, 0);
    let total = (body.len() + 12) as u32;
    let mut b = btype.to_le_bytes().to_vec();
    b.extend(total.to_le_bytes());
    b.extend(body);
    b.extend(total.to_le_bytes());
    b
}

/// An Ethernet interface with an `if_tsresol` and an `if_tsoffset`.
fn pcapng_idb(tsresol: u8, tsoffset: i64) -> Vec<u8> {
    let mut b = vec![1, 0, 0, 0, 0, 0, 4, 0]; // Ethernet, snaplen 262144
    b.extend([9, 0, 1, 0, tsresol, 0, 0, 0]);
    b.extend([14, 0, 8, 0]);
    b.extend(tsoffset.to_le_bytes());
    b.extend([0, 0, 0, 0]);
    pcapng_block(1, &b)
}

fn pcapng_epb(iface: u32, ticks: u64, data: &[u8]) -> Vec<u8> {
    let mut b = iface.to_le_bytes().to_vec();
    b.extend(((ticks >> 32) as u32).to_le_bytes());
    b.extend((ticks as u32).to_le_bytes());
    b.extend((data.len() as u32).to_le_bytes());
    b.extend((data.len() as u32).to_le_bytes());
    b.extend(data);
    pcapng_block(6, &b)
}

/// `site-multi-node.pcap` as pcapng, plus frames on two interfaces whose
/// `if_tsresol`/`if_tsoffset` put them in 1970 and past 2554: each such
/// interface is warned about once, its frames are counted as
/// `invalid_timestamp` and stretch nothing (they used to be clamped to one
/// instant in 1970 or 2554, silently).
#[test]
fn pcapng_time_options_out_of_range_are_warned_and_counted() {
    let dir = TempDir::new("tsresol");
    let clean = fixture("site-multi-node.pcap");
    let bytes = std::fs::read(&clean).unwrap();
    let mut ng = pcapng_block(
        0x0A0D_0D0A,
        &[
            0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
    );
    ng.extend(pcapng_idb(6, 0)); // 0: µs, as the pcap
    ng.extend(pcapng_idb(12, 0)); // 1: ps, so all of u64 is in 1970
    ng.extend(pcapng_idb(9, i64::MAX / 2)); // 2: an offset of centuries
    let mut at = 24;
    let mut frame = Vec::new();
    while at + 16 <= bytes.len() {
        let u = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let (secs, usecs, caplen) = (u(at), u(at + 4), u(at + 8) as usize);
        frame = bytes[at + 16..at + 16 + caplen].to_vec();
        ng.extend(pcapng_epb(
            0,
            u64::from(secs) * 1_000_000 + u64::from(usecs),
            &frame,
        ));
        at += 16 + caplen;
    }
    for i in 0..3 {
        ng.extend(pcapng_epb(1, 1_700_000_000_000_000 + i, &frame));
        ng.extend(pcapng_epb(2, i, &frame));
    }
    let damaged = dir.0.join("extremes.pcapng");
    std::fs::write(&damaged, &ng).unwrap();
    let run = |f: &std::path::Path| {
        let o = Command::new(bin())
            .arg("replay")
            .arg(f)
            .args(["--site", "multi-node", "--format", "json"])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), r, stderr(&o))
    };
    let (code_clean, clean, _) = run(&clean);
    let (code, r, err) = run(&damaged);
    assert_eq!(code_clean, Some(0));
    assert_eq!(code, Some(0), "{}\n{err}", r["summary"]);
    assert_eq!(
        r["capture"]["decode_errors"]["invalid_timestamp"], 6,
        "{err}"
    );
    assert_eq!(
        r["capture"]["packets"].as_u64().unwrap(),
        clean["capture"]["packets"].as_u64().unwrap() + 6
    );
    assert_eq!(
        r["capture"]["duration_seconds"],
        clean["capture"]["duration_seconds"]
    );
    assert_eq!(r["summary"], clean["summary"]);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("if_tsresol/if_tsoffset put frames outside"))
        .collect();
    assert_eq!(warned.len(), 2, "once per interface:\n{err}");
    assert!(warned[0].contains("interface=1"), "{err}");
    assert!(warned[1].contains("interface=2"), "{err}");
}

/// `watch` on an interface that is deleted and re-created: it keeps
/// capturing, logs the gap, and stops on SIGINT with its summary.
#[test]
fn watch_survives_a_vanished_interface() {
    if !prerequisites("watch_survives_a_vanished_interface", &[]) {
        return;
    }
    let pid = std::process::id() % 1_000_000;
    let (a, b) = (format!("pw9w{pid}"), format!("pw9x{pid}"));
    assert!(Veth::add(&a, &b), "cannot create a veth pair");
    let _veth = Veth(a.clone());
    let dir = TempDir::new("watchgone");
    let log_path = dir.0.join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Child(
        Command::new(bin())
            .args(["watch", "--site", "multi-node", "-i", &a])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let wait_log = |child: &mut Child, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap();
            if log.contains(what) {
                return;
            }
            assert!(alive(child), "watch exited: {log}");
            assert!(Instant::now() < deadline, "no {what:?} in {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_log(&mut child, "capturing");
    Veth::del(&a);
    wait_log(&mut child, "capture interface lost");
    assert!(Veth::add(&a, &b));
    wait_log(&mut child, "capture interface back");
    let ok = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "watch did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("SUMMARY"), "{log}");
}
