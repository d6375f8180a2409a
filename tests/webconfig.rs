//! `--web.config.file` end to end: a CA and a server certificate made here
//! with `openssl`, a bcrypt user, `portwatch run` serving over TLS; curl
//! without or with a wrong password gets 401, with the right one 200; a
//! real Prometheus scrapes through TLS with basic auth (and a job without
//! credentials is refused). Plus the other exporter flags.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::deploy::{prometheus_bin, query, start_prometheus};
use crate::util::{bin, demo_run, fixture, free_addr, Daemon, TempDir};

/// `name` on PATH, or skip (fail under CI).
fn have(name: &str) -> bool {
    let ok = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed"
        );
        eprintln!("SKIP: {name} not installed");
    }
    ok
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
fn make_certs(dir: &Path) {
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
    if !have("openssl") || !have("curl") {
        return;
    }
    let Some(_) = prometheus_bin() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus is not installed"
        );
        eprintln!("SKIP: prometheus not installed");
        return;
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
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
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
        .args(["--web.listen-address", &free_addr().to_string()])
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
    let a = free_addr();
    let pcap = fixture("demo.pcap").display().to_string();
    let mut d = Daemon::start(&[
        "run",
        "--site",
        "multi-node",
        "--replay",
        &pcap,
        "--loop",
        "--web.listen-address",
        &a.to_string(),
    ]);
    // Daemon::start adds `--listen <free port>` (the alias) as a second address.
    d.wait_ready();
    for addr in [a, d.addr] {
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
