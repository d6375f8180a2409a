//! Deploy artifacts are part of the product: the Prometheus rules and their
//! unit tests pass `promtool`, the example scrape config is valid, every
//! dashboard panel and every rule expression is accepted by a real
//! Prometheus, and the systemd unit keeps its least-privilege settings.
//!
//! Needs `prometheus` and `promtool` (Debian package `prometheus`; override
//! the paths with `PORTWATCH_PROMETHEUS` / `PORTWATCH_PROMTOOL`). Without
//! them the tests that need them print why and pass.
//!
//! `start_prometheus` and `query` are written for reuse by the end-to-end
//! test that scrapes a running `portwatch run`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tool from the environment override, or its Debian path, if present.
pub(crate) fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let p = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    p.is_file().then_some(p)
}

pub fn prometheus_bin() -> Option<PathBuf> {
    tool("PORTWATCH_PROMETHEUS", "/usr/bin/prometheus")
}

pub fn promtool_bin() -> Option<PathBuf> {
    tool("PORTWATCH_PROMTOOL", "/usr/bin/promtool")
}

/// Returns the binary, or says on stderr why the calling test is skipped
/// (and fails under `CI=true`, see `util::skip`).
pub(crate) fn need(bin: Option<PathBuf>, name: &str) -> Option<PathBuf> {
    if bin.is_none() {
        crate::util::skip(
            name,
            &format!("{name} not installed (apt-get install prometheus); deploy checks not run"),
        );
    }
    bin
}

/// A fresh, empty directory under the system temp dir; removed by its owner.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "portwatch-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ---------------------------------------------------------------------------
// A real Prometheus for the duration of a test.

/// A running Prometheus on loopback; killed and its directory removed on drop.
pub struct PromGuard {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl PromGuard {
    /// Prometheus' own log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PromGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start `/usr/bin/prometheus` with `config_yaml` (written as
/// `<dir>/prometheus.yml`, so relative `rule_files` resolve against the temp
/// dir: use absolute paths) and wait until `/-/ready` answers. Panics if
/// Prometheus is missing or not ready within 30 s; check `prometheus_bin()`
/// first to skip instead.
pub fn start_prometheus(config_yaml: &str) -> PromGuard {
    start_prometheus_with(config_yaml, None)
}

/// [`start_prometheus`] with `--web.config.file=<web_config>` (TLS): ready
/// once it answers at all (a plain request gets its 400).
pub fn start_prometheus_with(config_yaml: &str, web_config: Option<&Path>) -> PromGuard {
    let bin = prometheus_bin().expect("prometheus binary (see prometheus_bin)");
    let mut last_log = String::new();
    // The port is free when chosen but could be taken before Prometheus binds
    // it: try a few.
    for _ in 0..3 {
        let dir = temp_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create log");
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .args(web_config.map(|w| format!("--web.config.file={}", w.display())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let mut guard = PromGuard { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = guard.child.try_wait() {
                last_log = format!("prometheus exited with {status}:\n{}", guard.log());
                break;
            }
            match http_get(port, "/-/ready") {
                Ok((200, _)) => return guard,
                Ok(_) if web_config.is_some() => return guard,
                _ => {}
            }
            if Instant::now() > deadline {
                panic!("prometheus not ready in 30 s:\n{}", guard.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("prometheus did not start:\n{last_log}");
}

/// `GET /api/v1/query?query=<expr>` (instant query, now): the JSON answer,
/// whether it is a success or an error.
pub fn query(port: u16, expr: &str) -> Value {
    let path = format!("/api/v1/query?query={}", url_encode(expr));
    let (status, body) = http_get(port, &path).unwrap_or_else(|e| panic!("query {expr}: {e}"));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("query {expr}: HTTP {status}, not JSON ({e}): {body}"))
}

/// Any other API path, e.g. `/api/v1/rules`: the JSON answer.
pub fn api(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: HTTP {status}, not JSON ({e}): {body}"))
}

/// A minimal HTTP GET over loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> std::io::Result<String> {
    let bad = || std::io::Error::other("bad chunked body");
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or_else(bad)?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or_else(bad)?);
        rest = after.get(size + 2..).ok_or_else(bad)?;
    }
}

pub(crate) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn assert_success(port: u16, what: &str, expr: &str) {
    let v = query(port, expr);
    assert_eq!(
        v["status"], "success",
        "{what}: Prometheus rejected\n  {expr}\n  {}",
        v["error"]
    );
}

// ---------------------------------------------------------------------------
// The files.

pub(crate) fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str::<Value>(&read(path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (name, expr, rule) for every rule of portwatch.rules.yml.
pub(crate) fn rules() -> Vec<(String, String, Value)> {
    let doc = yaml(&deploy("prometheus/portwatch.rules.yml"));
    let mut out = Vec::new();
    for g in doc["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("alert or record");
            let expr = r["expr"].as_str().expect("expr");
            out.push((name.to_string(), expr.to_string(), r.clone()));
        }
    }
    out
}

fn alerts() -> Vec<(String, Value)> {
    rules()
        .into_iter()
        .filter(|(_, _, r)| r.get("alert").is_some())
        .map(|(n, _, r)| (n, r))
        .collect()
}

pub(crate) fn dashboard() -> Value {
    let path = deploy("grafana/portwatch-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
pub(crate) fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(ps: &'a Value, out: &mut Vec<&'a Value>) {
        for p in ps.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Grafana's variables replaced by values Prometheus accepts.
pub(crate) fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for (var, val) in [
        ("${site}", ".*"),
        ("$site", ".*"),
        ("$instance", ".*"),
        ("${__rate_interval}", "1m"),
        ("$__rate_interval", "1m"),
        ("${__range}", "1h"),
        ("$__range", "1h"),
        ("${__interval}", "1m"),
        ("$__interval", "1m"),
    ] {
        s = s.replace(var, val);
    }
    assert!(!s.contains('$'), "unsubstituted variable in {expr}");
    s
}

/// (panel title, expr) for every query of the dashboard.
pub(crate) fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            out.push((title, t["expr"].as_str().unwrap_or("").to_string()));
        }
    }
    out
}

fn run(bin: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------
// promtool

#[test]
fn promtool_check_rules() {
    let Some(promtool) = need(promtool_bin(), "promtool") else {
        return;
    };
    let (ok, out) = run(
        &promtool,
        &["check", "rules", "deploy/prometheus/portwatch.rules.yml"],
    );
    assert!(ok, "promtool check rules:\n{out}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some(promtool) = need(promtool_bin(), "promtool") else {
        return;
    };
    let (ok, out) = run(
        &promtool,
        &[
            "test",
            "rules",
            "deploy/prometheus/portwatch.rules.test.yml",
        ],
    );
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn promtool_check_config() {
    let Some(promtool) = need(promtool_bin(), "promtool") else {
        return;
    };
    let (ok, out) = run(
        &promtool,
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
    assert!(ok, "promtool check config:\n{out}");
}

// ---------------------------------------------------------------------------
// The rules as files: what the runbook promises, without any tool.

#[test]
fn every_alert_has_severity_and_runbook_annotations() {
    let alerts = alerts();
    let readme = read(&deploy("README.md"));
    assert!(alerts.len() >= 10, "only {} alerts", alerts.len());
    for (name, r) in &alerts {
        assert!(
            name.starts_with("Portwatch"),
            "{name}: alerts are named Portwatch*"
        );
        let sev = r["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{name}: severity {sev:?} is not critical|warning|info"
        );
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        let description = r["annotations"]["description"].as_str().unwrap_or("");
        assert!(!summary.is_empty(), "{name}: no summary");
        assert!(!summary.contains("{{"), "{name}: the summary is static");
        assert!(
            description.contains("{{"),
            "{name}: the description is templated"
        );
        assert!(
            description.contains("What to do"),
            "{name}: the description must say what to do"
        );
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or("");
        let anchor = url
            .strip_prefix("file:///usr/share/doc/portwatch/deploy.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not deploy/README.md#…"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: anchor");
        assert!(
            readme.lines().any(|l| l == format!("### {name}")),
            "{name}: no `### {name}` section in deploy/README.md for its runbook_url"
        );
    }
    // The scrape job is named once, in the `portwatch:up` recording rule.
    let rules = read(&deploy("prometheus/portwatch.rules.yml"));
    let code: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let named: Vec<&&str> = code.iter().filter(|l| l.contains("job=")).collect();
    assert_eq!(named.len(), 1, "the job is named more than once: {named:?}");
    assert!(named[0].contains("up{job=\"portwatch\"}"), "{named:?}");
}

/// Every alert has a case where it fires and one where it does not in
/// portwatch.rules.test.yml.
#[test]
fn every_alert_has_firing_and_quiet_unit_tests() {
    let doc = yaml(&deploy("prometheus/portwatch.rules.test.yml"));
    let (mut fires, mut quiet) = (Vec::<String>::new(), Vec::<String>::new());
    for t in doc["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_string();
            match a["exp_alerts"].as_array() {
                Some(v) if !v.is_empty() => fires.push(name),
                _ => quiet.push(name),
            }
        }
        for q in t["promql_expr_test"].as_array().into_iter().flatten() {
            let expr = q["expr"].as_str().unwrap_or("");
            let samples = q["exp_samples"].as_array().map_or(0, |v| v.len());
            if let Some(rest) = expr.strip_prefix("ALERTS{alertname=\"") {
                if samples > 0 && expr.contains("alertstate=\"firing\"") {
                    fires.push(rest.split('"').next().unwrap_or("").to_string());
                }
            }
        }
    }
    // The pending-then-firing case for RequiredEdgeMissing queries all states.
    let docs = read(&deploy("prometheus/portwatch.rules.test.yml"));
    for (name, _) in alerts() {
        let firing_sample = format!("alertname=\"{name}\",alertstate=\"firing\"");
        assert!(
            fires.contains(&name) || docs.contains(&firing_sample),
            "{name}: no unit test where it fires"
        );
        assert!(
            quiet.contains(&name),
            "{name}: no unit test where it stays quiet"
        );
    }
}

// ---------------------------------------------------------------------------
// The dashboard.

#[test]
fn dashboard_panels_use_the_datasource_variable() {
    let dash = dashboard();
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource", "a `datasource` variable");
    assert_eq!(ds["query"], "prometheus", "of Prometheus data sources");
    let site = var("site");
    assert_eq!(site["type"], "query", "a `site` query variable");
    assert_eq!(site["datasource"]["uid"], "${datasource}");
    let q = site["query"]["query"].as_str().or(site["query"].as_str());
    assert_eq!(q, Some("label_values(portwatch_site_info, site)"));

    let mut n = 0;
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        if p["type"] == "row" {
            assert!(p.get("targets").is_none(), "row {title} has queries");
            continue;
        }
        n += 1;
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title}: datasource"
        );
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title}: no queries"));
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {title}: target datasource"
            );
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "panel {title}: empty expr");
        }
    }
    assert!(n >= 10, "only {n} panels");
}

#[test]
fn dashboard_ids_are_unique() {
    let dash = dashboard();
    let mut ids: Vec<i64> = panels(&dash)
        .iter()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate panel ids");
}

/// Every dashboard query and every rule expression is accepted by a real
/// Prometheus that also loads the rules (so recording-rule names exist).
#[test]
fn every_expression_is_valid_promql() {
    let Some(_) = need(prometheus_bin(), "prometheus") else {
        return;
    };
    let rules_path = deploy("prometheus/portwatch.rules.yml");
    let prom = start_prometheus(&format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs: []\n",
        rules_path.display()
    ));

    let dash = dashboard();
    let exprs = dashboard_exprs(&dash);
    assert!(!exprs.is_empty());
    for (title, expr) in &exprs {
        assert_success(prom.port, &format!("panel {title}"), &substitute(expr));
    }
    // The site variable's metric.
    assert_success(prom.port, "variable site", "portwatch_site_info");
    for (name, expr, _) in rules() {
        assert_success(prom.port, &format!("rule {name}"), &expr);
    }

    // Prometheus loaded every rule and evaluates them without error.
    let want = rules().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = api(prom.port, "/api/v1/rules");
        let all: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        assert_eq!(
            all.len(),
            want,
            "rules loaded by Prometheus:\n{}",
            prom.log()
        );
        let evaluated = all
            .iter()
            .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z");
        if evaluated {
            for r in &all {
                assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
            }
            break;
        }
        assert!(Instant::now() < deadline, "rules not evaluated in 20 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The harness itself: a wrong expression is reported as an error.
#[test]
fn query_reports_invalid_promql() {
    let Some(_) = need(prometheus_bin(), "prometheus") else {
        return;
    };
    let prom = start_prometheus("scrape_configs: []\n");
    assert_eq!(query(prom.port, "vector(1)")["status"], "success");
    let v = query(prom.port, "sum by (a) (rate(x[5m])");
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["errorType"], "bad_data");
}

// ---------------------------------------------------------------------------
// Grafana provisioning, without Grafana: the files point where the README
// says to put the dashboard.

/// The text after `lead` up to the next backtick, in `text` with its
/// whitespace collapsed (the README wraps lines).
fn quoted_after(text: &str, lead: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = flat
        .find(lead)
        .unwrap_or_else(|| panic!("deploy/README.md no longer says {lead:?}"));
    let rest = &flat[at + lead.len()..];
    rest[..rest.find('`').expect("closing backtick")].to_string()
}

#[test]
fn grafana_provisioning_points_at_the_documented_dashboard_dir() {
    let readme = read(&deploy("README.md"));
    // Where the README puts the JSON (the directory Grafana must read).
    let documented = quoted_after(&readme, "Put `grafana/portwatch-dashboard.json` in `");
    let prov = yaml(&deploy("grafana/provisioning/dashboards/portwatch.yml"));
    assert_eq!(prov["apiVersion"], 1);
    let providers = prov["providers"].as_array().expect("providers");
    assert_eq!(providers.len(), 1, "one provider");
    let p = &providers[0];
    assert_eq!(p["type"], "file");
    let path = p["options"]["path"].as_str().expect("options.path");
    assert!(path.starts_with('/'), "absolute path: {path}");
    assert_eq!(
        path.trim_end_matches('/'),
        documented.trim_end_matches('/'),
        "provider path vs deploy/README.md"
    );

    // Lay the files out as the README says, under a scratch root, and let
    // the provider's path find the dashboard there.
    let scratch = crate::util::TempDir::new("grafana");
    let root = &scratch.0;
    let install = |from: &str, to: &str| {
        let dst = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(deploy(from), &dst).unwrap_or_else(|e| panic!("{from}: {e}"));
    };
    for kind in ["datasources", "dashboards"] {
        let file = format!("grafana/provisioning/{kind}/portwatch.yml");
        assert!(readme.contains(&format!("`{file}`")), "README names {file}");
        install(
            &file,
            &format!("/etc/grafana/provisioning/{kind}/portwatch.yml"),
        );
    }
    install(
        "grafana/portwatch-dashboard.json",
        &format!("{documented}/portwatch-dashboard.json"),
    );
    let installed = root.join("etc/grafana/provisioning/dashboards/portwatch.yml");
    let prov = yaml(&installed);
    let dir = root.join(
        prov["providers"][0]["options"]["path"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
    );
    let found: Vec<Value> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&read(&p)).unwrap())
        .collect();
    assert_eq!(found.len(), 1, "one dashboard JSON in {documented}");
    let dash = &found[0];
    assert_eq!(dash, &dashboard());
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title"
    );

    // The datasource the dashboard's `datasource` variable can pick, with
    // the scrape interval the example config uses ($__rate_interval).
    let ds = yaml(&deploy("grafana/provisioning/datasources/portwatch.yml"));
    let ds = &ds["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    let scrape = yaml(&deploy("prometheus/prometheus.yml"));
    let interval = scrape["scrape_configs"][0]["scrape_interval"]
        .as_str()
        .or(scrape["global"]["scrape_interval"].as_str());
    assert_eq!(ds["jsonData"]["timeInterval"].as_str(), interval);
}

// ---------------------------------------------------------------------------
// systemd

fn unit() -> String {
    read(&deploy("systemd/portwatch.service"))
}

/// The directive's values, across all its lines.
fn directive(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn systemd_unit_is_least_privilege() {
    let u = unit();
    let one = |k: &str| directive(&u, k).join(" ");
    assert!(
        one("DynamicUser") == "yes" || !one("User").is_empty() && one("User") != "root",
        "runs as an unprivileged user"
    );
    for cap in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let mut v: Vec<String> = one(cap).split_whitespace().map(str::to_string).collect();
        v.sort();
        assert_eq!(v, ["CAP_NET_ADMIN", "CAP_NET_RAW"], "{cap}");
    }
    for (k, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(one(k), want, "{k}");
    }
    let mut af: Vec<String> = one("RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    af.sort();
    assert_eq!(
        af,
        ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"]
    );
    assert!(one("SystemCallFilter").contains("@system-service"));
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    let exec = one("ExecStart");
    assert!(
        exec.contains(" run --site ${PORTWATCH_SITE} $PORTWATCH_OPTS"),
        "{exec}"
    );
    let env = one("Environment");
    assert!(env.contains("PORTWATCH_SITE=/etc/portwatch/"), "{env}");
    assert!(env.contains("--listen 127.0.0.1:9477"), "{env}");
    assert_eq!(one("EnvironmentFile"), "-/etc/default/portwatch");
}

/// Every `--events` path the deployment docs suggest (deploy/README.md, the
/// packaged /etc/default/portwatch, the unit) is one the unit lets the
/// service write under `ProtectSystem=strict`: in its `LogsDirectory=`
/// (`/var/log/…`, the service user's) or a `ReadWritePaths=`. It used to be
/// `/var/log/portwatch`, read-only there.
#[test]
fn suggested_event_log_paths_are_writable_under_the_unit() {
    let u = unit();
    assert_eq!(directive(&u, "ProtectSystem"), ["strict"]);
    let mut writable: Vec<String> = directive(&u, "LogsDirectory")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|d| format!("/var/log/{d}/"))
        .collect();
    writable.extend(
        directive(&u, "ReadWritePaths")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|d| format!("{}/", d.trim_start_matches('-').trim_end_matches('/'))),
    );
    assert!(
        writable.contains(&"/var/log/portwatch/".to_string()),
        "{writable:?}"
    );
    let mut suggested = Vec::new();
    for doc in [
        "README.md",
        "debian/portwatch.default",
        "systemd/portwatch.service",
    ] {
        let text = read(&deploy(doc));
        for (i, _) in text.match_indices("--events ") {
            let path: String = text[i + "--events ".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '`' | ')' | ';'))
                .collect();
            if path.starts_with('/') {
                suggested.push((doc, path));
            }
        }
    }
    assert!(suggested.len() >= 3, "{suggested:?}");
    for (doc, path) in &suggested {
        assert!(
            writable.iter().any(|w| path.starts_with(w.as_str())),
            "{doc}: --events {path} is not writable under the unit ({writable:?})"
        );
    }
}

/// The unit keeps state over restarts where it may write it: every
/// `--state-dir` the deployment files suggest (the unit's own default among
/// them) is in the unit's `StateDirectory=` (`/var/lib/…`, the service
/// user's under `ProtectSystem=strict`) or a `ReadWritePaths=`.
#[test]
fn suggested_state_dirs_are_writable_under_the_unit() {
    let u = unit();
    let mut writable: Vec<String> = directive(&u, "StateDirectory")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|d| format!("/var/lib/{d}"))
        .collect();
    writable.extend(
        directive(&u, "ReadWritePaths")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|d| d.trim_start_matches('-').trim_end_matches('/').to_string()),
    );
    let env = directive(&u, "Environment").join("\n");
    assert!(env.contains("--state-dir /var/lib/portwatch"), "{env}");
    let mut suggested = Vec::new();
    for doc in [
        "README.md",
        "debian/portwatch.default",
        "systemd/portwatch.service",
    ] {
        let text = read(&deploy(doc));
        for (i, _) in text.match_indices("--state-dir ") {
            let path: String = text[i + "--state-dir ".len()..]
                .chars()
                .take_while(|c| {
                    !c.is_whitespace() && !matches!(c, '"' | '`' | ')' | ';' | ',' | ':')
                })
                .collect();
            if path.starts_with('/') {
                suggested.push((doc, path.trim_end_matches('/').to_string()));
            }
        }
    }
    assert!(suggested.len() >= 3, "{suggested:?}");
    for (doc, path) in &suggested {
        assert!(
            writable
                .iter()
                .any(|w| path == w || path.starts_with(&format!("{w}/"))),
            "{doc}: --state-dir {path} is not writable under the unit ({writable:?})"
        );
    }
}

/// `systemd-analyze verify`, where systemd is installed, with ExecStart
/// pointed at the built binary (verify insists the binary exists).
#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = tool("PORTWATCH_SYSTEMD_ANALYZE", "/usr/bin/systemd-analyze") else {
        return crate::util::skip(
            "deploy::systemd_unit_verifies",
            "systemd-analyze not installed (.ci/deps installs systemd)",
        );
    };
    let dir = temp_dir("systemd");
    let bin = env!("CARGO_BIN_EXE_portwatch");
    let text = unit().replace("/usr/local/bin/portwatch", bin);
    let path = dir.join("portwatch.service");
    std::fs::write(&path, text).expect("write unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines about the unit itself; verify also checks units it pulls in
    // (e.g. network-online.target), which a container may not have.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("portwatch.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{text}");
}

/// Times in UTC (sensors in several time zones, one timeline), a sensor
/// variable the sensor-health panels follow, and units that name what is
/// counted (connections/s, not requests/s).
#[test]
fn dashboard_is_utc_with_a_sensor_variable_and_counted_units() {
    let dash = dashboard();
    assert_eq!(dash["timezone"], "utc");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    let inst = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an `instance` (sensor) variable");
    assert_eq!(inst["includeAll"], true);
    assert!(inst["definition"].as_str().unwrap().contains("instance"));
    let mut follows = 0;
    for p in panels(&dash) {
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        assert!(!unit.contains("req"), "{}: unit {unit}", p["title"]);
        if p["targets"].to_string().contains("$instance") {
            follows += 1;
        }
    }
    assert!(follows >= 5, "only {follows} panels follow $instance");
    let by_title = |t: &str| panels(&dash).into_iter().find(|p| p["title"] == t).unwrap();
    assert_eq!(
        by_title("Connections by verdict")["fieldConfig"]["defaults"]["unit"],
        "suffix: connections/s"
    );
}
