//! `--web.config.file` end to end: a CA and a server certificate made here
//! with `openssl`, a bcrypt user, `portwatch run` serving over TLS; curl
//! without or with a wrong password gets 401, with the right one 200; a
//! real Prometheus scrapes through TLS with basic auth (and a job without
//! credentials is refused). Plus the other exporter flags.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::deploy::{prometheus_bin, query, start_prometheus};
use crate::prereq::needs;
use crate::util::{bin, demo_run, fixture, skip, Daemon, TempDir};

/// openssl and curl on PATH, or skip `test` (fail under CI).
fn have_tls_tools(test: &str) -> bool {
    needs(test, false, &["openssl", "curl"])
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
pub(crate) fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=portwatch test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// HTTP status of an HTTPS GET with curl, trusting the test CA.
fn curl_status(dir: &Path, url: &str, user: Option<&str>) -> u16 {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "--cacert",
    ])
    .arg(dir.join("ca.crt"))
    .arg(url);
    if let Some(u) = user {
        c.args(["-u", u]);
    }
    let out = c.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn wait_https(dir: &Path, url: &str, d: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_status(dir, url, None) == 0 {
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("portwatch exited ({st})");
        }
        assert!(Instant::now() < deadline, "no HTTPS answer at {url}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_and_basic_auth_with_a_real_prometheus() {
    let test = "webconfig::tls_and_basic_auth_with_a_real_prometheus";
    if !have_tls_tools(test) {
        return;
    }
    let Some(_) = prometheus_bin() else {
        return skip(test, "prometheus is not installed");
    };
    let tmp = TempDir::new("webconfig");
    let dir = &tmp.0;
    make_certs(dir);
    let hash = bcrypt::hash("scrape-secret", 6).unwrap();
    let web = dir.join("web.yml");
    // Relative paths resolve against the web config's directory.
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let webs = web.display().to_string();
    let mut pw = Daemon::start(&demo_run(
        "50",
        &["--web.config.file", &webs, "--web.telemetry-path", "/probe"],
    ));
    let base = format!("https://{}", pw.addr);
    wait_https(dir, &format!("{base}/healthz"), &mut pw);

    assert_eq!(curl_status(dir, &format!("{base}/probe"), None), 401);
    assert_eq!(
        curl_status(dir, &format!("{base}/probe"), Some("prometheus:wrong")),
        401
    );
    assert_eq!(
        curl_status(dir, &format!("{base}/probe"), Some("other:scrape-secret")),
        401
    );
    assert_eq!(
        curl_status(
            dir,
            &format!("{base}/probe"),
            Some("prometheus:scrape-secret")
        ),
        200
    );
    assert_eq!(
        curl_status(
            dir,
            &format!("{base}/metrics"),
            Some("prometheus:scrape-secret")
        ),
        404
    );
    // Plain HTTP on the TLS port gets no metrics.
    assert!(!matches!(pw.get("/probe"), Some((200, _))));
    // The HTTP limits hold on TLS listeners too: 300 silent connections
    // (past the cap of 256, stuck before their handshake) make room for a
    // scrape instead of blocking it.
    let idle: Vec<_> = (0..300)
        .map(|_| std::net::TcpStream::connect(pw.addr).unwrap())
        .collect();
    let t = Instant::now();
    assert_eq!(
        curl_status(
            dir,
            &format!("{base}/probe"),
            Some("prometheus:scrape-secret")
        ),
        200
    );
    assert!(
        t.elapsed() < crate::util::bound(Duration::from_secs(3)),
        "{:?}",
        t.elapsed()
    );
    drop(idle);

    let ca = dir.join("ca.crt").display().to_string();
    let job = |name: &str, auth: bool| {
        let mut j = format!(
            "  - job_name: {name}\n    scheme: https\n    metrics_path: /probe\n    tls_config:\n      ca_file: {ca}\n"
        );
        if auth {
            j += "    basic_auth:\n      username: prometheus\n      password: scrape-secret\n";
        }
        j + &format!("    static_configs:\n      - targets: ['{}']\n", pw.addr)
    };
    let prom = start_prometheus(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("tls-auth", true),
        job("tls-no-auth", false)
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = |expr: &str| {
            query(prom.port, expr)["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        };
        let ok = v("up{job=\"tls-auth\"}").as_deref() == Some("1")
            && v("up{job=\"tls-no-auth\"}").as_deref() == Some("0")
            && v("sum(portwatch_packets_total{job=\"tls-auth\"})")
                .is_some_and(|n| n.parse::<f64>().unwrap_or(0.0) > 0.0);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape as expected; log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let targets = crate::deploy::api(prom.port, "/api/v1/targets");
    let no_auth = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["labels"]["job"] == "tls-no-auth")
        .unwrap();
    assert!(
        no_auth["lastError"].as_str().unwrap_or("").contains("401"),
        "{no_auth}"
    );
}

#[test]
fn web_config_errors_are_located_and_exit_2() {
    let tmp = TempDir::new("webconfig-bad");
    let web = tmp.0.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\nbasic_auth_users:\n  alice: plaintext\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "--site", "multi-node", "--replay"])
        .arg(fixture("demo.pcap"))
        .arg("--web.config.file")
        .arg(&web)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let w = web.display();
    assert!(
        err.contains(&format!("{w}:2:")) && err.contains("tls_server_config.cert_file"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{w}:5:")) && err.contains("basic_auth_users.alice"),
        "{err}"
    );
}

#[test]
fn several_listen_addresses_and_a_landing_page() {
    let pcap = fixture("demo.pcap").display().to_string();
    let mut d = Daemon::start(&[
        "run",
        "--site",
        "multi-node",
        "--replay",
        &pcap,
        "--loop",
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    // Daemon::start adds `--listen 127.0.0.1:0` (the alias) as a second
    // address; each gets a port of its own, logged in order.
    d.wait_ready();
    assert_eq!(d.listening.len(), 2, "{:?}", d.listening);
    assert_eq!(d.listening[1], d.addr);
    assert_ne!(d.listening[0], d.addr);
    for addr in d.listening.clone() {
        let (status, page) = crate::util::http_get(addr, "/").unwrap();
        assert_eq!(status, 200);
        for link in [
            "href=\"/metrics\"",
            "href=\"/healthz\"",
            "href=\"/-/ready\"",
        ] {
            assert!(page.contains(link), "{page}");
        }
    }
}

/// An `Authorization: Basic` header line for `user:pass`.
fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Authorization: Basic {b64}\r\n")
}

/// Status and time of one plain-HTTP GET with `user:pass`.
fn timed_get(addr: std::net::SocketAddr, path: &str, user: &str, pass: &str) -> (u16, Duration) {
    let t = Instant::now();
    let status = crate::util::http_get_with(addr, path, &basic(user, pass)).map_or(0, |r| r.0);
    (status, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Basic auth against guessing: an unknown user costs a bcrypt check like a
/// wrong password (no confirming names by timing), and 200 wrong guesses
/// kept in flight neither starve an authenticated scraper (its credentials
/// are verified once, then cached) nor take more than the bounded checks;
/// the guesses past the bound are answered 429 and counted.
#[test]
fn guesses_in_flight_neither_starve_a_scrape_nor_tell_users_apart() {
    let tmp = TempDir::new("webconfig-guess");
    let web = tmp.0.join("web.yml");
    // Cost 10: what htpasswd -B and the exporter-toolkit docs use.
    let hash = bcrypt::hash("scrape-secret", 10).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let webs = web.display().to_string();
    let mut d = Daemon::start(&demo_run("50", &["--web.config.file", &webs]));
    let addr = d.addr;
    let deadline = Instant::now() + Duration::from_secs(30);
    while timed_get(addr, "/-/ready", "prometheus", "scrape-secret").0 != 200 {
        assert!(d.alive() && Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let wrong: Vec<_> = (0..5)
        .map(|_| timed_get(addr, "/metrics", "prometheus", "guess"))
        .collect();
    let unknown: Vec<_> = (0..5)
        .map(|_| timed_get(addr, "/metrics", "nobody", "guess"))
        .collect();
    assert!(wrong.iter().chain(&unknown).all(|r| r.0 == 401));
    let (wrong, unknown) = (
        median(wrong.iter().map(|r| r.1).collect()),
        median(unknown.iter().map(|r| r.1).collect()),
    );
    assert!(
        unknown * 2 > wrong,
        "an unknown user answers in {unknown:?}, a wrong password in {wrong:?}"
    );

    let scrape = || {
        let r = timed_get(addr, "/metrics", "prometheus", "scrape-secret");
        std::thread::sleep(Duration::from_millis(100));
        r
    };
    let idle: Vec<_> = (0..5).map(|_| scrape()).collect();
    let idle = median(idle.iter().map(|r| r.1).collect());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let guessers: Vec<_> = (0..200)
        .map(|i| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let user = if i % 2 == 0 { "prometheus" } else { "admin" };
                    let status = timed_get(addr, "/metrics", user, &format!("guess{i}")).0;
                    statuses.push(status);
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Refused unchecked: come back soon; else at once.
                    if status == 429 {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                statuses
            })
        })
        .collect();
    // The guessing is under way: as many answers as guessers.
    crate::util::poll_until("200 guesses answered", Duration::from_secs(60), || {
        answered.load(std::sync::atomic::Ordering::SeqCst) >= 200
    });
    let scrapes: Vec<_> = (0..5).map(|_| scrape()).collect();
    let threads = std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse::<u32>().ok())
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses: Vec<u16> = guessers
        .into_iter()
        .flat_map(|g| g.join().unwrap())
        .collect();
    assert!(scrapes.iter().all(|r| r.0 == 200), "{scrapes:?}");
    // Main, capture, one async worker, the bounded checks and a few idle
    // blocking threads; not a thread per guess.
    assert!(threads < 24, "{threads} threads under 200 guesses");
    // Measured here because it is the promise: under 0.1 s. The machine
    // is shared, so the median of five, and when even an idle scrape is
    // slow (other work on the cores) five times that instead.
    let took = median(scrapes.iter().map(|r| r.1).collect());
    let bound = Duration::from_millis(100).max(idle * 5);
    assert!(
        took < bound,
        "a scrape under 200 guesses took {took:?} (idle {idle:?}): {scrapes:?}"
    );
    // 0: no answer in time (the client side's 200 threads on a shared
    // machine); never 200.
    assert!(
        statuses.iter().all(|s| [0, 401, 429].contains(s)),
        "a guess was let in: {statuses:?}"
    );
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled > 0, "no guess was throttled");
    let m = crate::util::http_get_with(addr, "/metrics", &basic("prometheus", "scrape-secret"))
        .unwrap()
        .1;
    assert!(
        crate::util::sample(&m, "portwatch_http_auth_throttled_total")
            .is_some_and(|n| n >= throttled as f64),
        "throttled guesses not counted"
    );
}

/// The status and body of an HTTPS GET with curl, trusting `ca`.
fn curl_get(ca: &Path, url: &str, user: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([url, "-u", user])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// SIGHUP re-reads the web configuration with the certificate and key it
/// names: a rotated certificate is served and a changed password is the
/// only one let in; an invalid file is refused, counted, and the previous
/// certificate and users keep serving. A key every user can read is
/// warned about at start.
#[test]
fn sighup_rereads_certificate_key_and_users_keeping_them_when_invalid() {
    if !have_tls_tools(
        "webconfig::sighup_rereads_certificate_key_and_users_keeping_them_when_invalid",
    ) {
        return;
    }
    let tmp = TempDir::new("webconfig-reload");
    let dir = &tmp.0;
    make_certs(dir);
    let next = dir.join("next");
    std::fs::create_dir(&next).unwrap();
    make_certs(&next);
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let web = dir.join("web.yml");
    let config = |pass: &str| {
        let hash = bcrypt::hash(pass, 4).unwrap();
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        )
    };
    std::fs::write(&web, config("first")).unwrap();
    let log = dir.join("portwatch.log");
    let webs = web.display().to_string();
    let mut d = Daemon::start_logged(&demo_run("50", &["--web.config.file", &webs]), &log);
    let url = format!("https://{}/metrics", d.addr);
    wait_https(dir, &url, &mut d);
    let (old_ca, new_ca) = (dir.join("ca.crt"), next.join("ca.crt"));
    assert_eq!(curl_get(&old_ca, &url, "prometheus:first").0, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("readable by every user"), "{text}");

    // Rotate: a certificate from another CA, a new password.
    for f in ["server.crt", "server.key"] {
        std::fs::copy(next.join(f), dir.join(f)).unwrap();
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Started as root, the daemon reloads as `nobody` (--user): the key is
    // its own, as a deployment would make it.
    if crate::prereq::is_root() {
        let ok = Command::new("chown")
            .arg("nobody")
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    std::fs::write(&web, config("second")).unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_get(&new_ca, &url, "prometheus:second").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the new certificate and password never served; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        curl_get(&old_ca, &url, "prometheus:second").0,
        0,
        "old certificate still served"
    );
    assert_eq!(
        curl_get(&new_ca, &url, "prometheus:first").0,
        401,
        "old password still let in"
    );

    // An invalid file: refused, counted, the rotated configuration stays.
    std::fs::write(&web, "basic_auth_users:\n  prometheus: plaintext\n").unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let (status, m) = curl_get(&new_ca, &url, "prometheus:second");
        assert_eq!(status, 200, "the previous configuration stopped serving");
        if crate::util::sample(&m, "portwatch_config_reload_failures_total") == Some(1.0)
            && m.contains("portwatch_config_last_reload_successful 0")
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the refused reload is not in the metrics:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(m.contains("portwatch_packets_total"), "{m}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("reload failed") && text.contains("basic_auth_users.prometheus"),
        "{text}"
    );
}
