//! Helpers: run the binary, talk plain HTTP/1.1 over loopback, bounded waits.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portwatch")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The arguments of the daemon most tests start: `run` on the multi-node
/// site, replaying the demo capture in a loop at `speed` times its pace,
/// then `extra`.
pub fn demo_run(speed: &str, extra: &[&str]) -> Vec<String> {
    let pcap = fixture("demo.pcap").display().to_string();
    let args = ["run", "--site", "multi-node", "--replay", &pcap, "--loop"];
    (args.iter().chain(&["--speed", speed]).chain(extra))
        .map(|a| a.to_string())
        .collect()
}

/// A port free right now on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "portwatch-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `portwatch`, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Start `portwatch <args> --listen <free port>`; stdout and stderr piped.
    pub fn start(args: &[impl AsRef<OsStr>]) -> Daemon {
        Daemon::spawn(args, Stdio::piped(), Stdio::piped())
    }

    /// Like `start`, but stdout and stderr go to `log` (a long run never
    /// blocks on a full pipe, and the log can be shown on failure).
    pub fn start_logged(args: &[impl AsRef<OsStr>], log: &Path) -> Daemon {
        let f = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        Daemon::spawn(args, f.try_clone().unwrap().into(), f.into())
    }

    pub fn spawn(args: &[impl AsRef<OsStr>], stdout: Stdio, stderr: Stdio) -> Daemon {
        Daemon::spawn_wrapped(&[], args, stdout, stderr)
    }

    /// Like `start_logged`, with `portwatch` run by `wrapper` (e.g.
    /// `["prlimit", "--nofile=64"]`), so limits apply to it alone.
    pub fn start_wrapped(wrapper: &[&str], args: &[impl AsRef<OsStr>], log: &Path) -> Daemon {
        let f = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        Daemon::spawn_wrapped(wrapper, args, f.try_clone().unwrap().into(), f.into())
    }

    fn spawn_wrapped(
        wrapper: &[&str],
        args: &[impl AsRef<OsStr>],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Daemon {
        let addr = free_addr();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(args)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        Daemon { child, addr }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Poll `/metrics` until `f` holds, or panic with the last scrape.
    pub fn wait_metrics(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.metrics();
            if f(&m) {
                return m;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("portwatch exited ({status}) while waiting for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/-/ready").map(|r| r.0) != Some(200) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("portwatch exited ({status}) before it was ready");
            }
            assert!(Instant::now() < deadline, "not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait (bounded) for the process to exit; returns status and stderr.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                let mut out = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    e.read_to_string(&mut err).unwrap();
                }
                if let Some(mut o) = self.child.stdout.take() {
                    o.read_to_string(&mut out).unwrap();
                }
                return (status, out, err);
            }
            assert!(Instant::now() < deadline, "did not exit within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET with `Connection: close`; `None` if nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, "")
}

/// [`http_get`] with more header lines (each ending in `\r\n`).
pub fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

/// The value of the first sample line starting with `prefix`.
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A test that cannot run here (no root, no promtool, no prometheus) says
/// why and returns; under `CI=true` it fails instead, since CI has them all
/// and a skip there would hide a regression.
pub fn skip(test: &str, why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: {why}; CI=true, so this is a failure, not a skip"
    );
    eprintln!("SKIPPED {test}: {why}");
}
