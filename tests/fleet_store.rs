//! Many sites, one store: two sites, each watched by a packet sensor
//! (`run --sensor --replay --loop` of its node's share of a capture) and a
//! flow sensor (softflowd exporting the capture as IPFIX to `run
//! --flow-listen`, a declared exporter covering one node), each site scraped
//! by its own Prometheus set up as deploy/victoriametrics/prometheus.yml
//! says: the shipped rules, an external label, remote write of the rules'
//! series into one VictoriaMetrics. On VictoriaMetrics:
//!
//! - every query of deploy/grafana/portwatch-fleet.json answers, for each
//!   site what that site's own Prometheus answers;
//! - the fleet overview counts the required edges per state per site:
//!   multi-node 4 seen, 1 missing (proxy -> central:4432, cut from the proxy
//!   sensor's capture, the only sensor that judges it, which covers it),
//!   1 unverifiable (engine1 -> central:4242, cut from the export, judged
//!   only by the flow sensor, which cannot vouch for an absence: a lossy
//!   relay between softflowd and the sensor drops its third datagram, a
//!   sequence gap counted as lost records);
//!   proxy-engine 3 seen, each judged by both its sensors and counted once;
//! - the unknown host on the proxy, seen by both sensors of multi-node, is
//!   one finding;
//! - `portwatch report --prometheus` against VictoriaMetrics gives, per
//!   site, the report it gives against the site's Prometheus, with these
//!   states and the findings of `replay` of the sensors' captures
//!   (`report::fleet_reports_agree`), the same ones: the flow sensor's
//!   blocked scheduler -> central:4242 too (softflowd exports each refused
//!   attempt as a SYN record and an ACK,RST record back), once the merge
//!   window of its records ended, 30 s after they came;
//! - vmalert with deploy/victoriametrics/portwatch.global.rules.yml fires
//!   the missing and the unverifiable edge's alerts, and
//!   PortwatchSiteNotReporting once a site's Prometheus is stopped.
//!
//! [`start_fleet`] leaves the set-up running for other tests to query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy::{
    dashboard_exprs, deploy, free_port, http_get, prometheus_bin, start_prometheus, substitute,
    temp_dir, tool, url_encode, yaml, PromGuard,
};
use crate::netflow::{free_udp_port, softflowd, Relay};
use crate::util::{fixture, skip, tcpdump_cut, Daemon, TempDir};

pub fn victoria_metrics_bin() -> Option<PathBuf> {
    tool("PORTWATCH_VICTORIA_METRICS", "/usr/bin/victoria-metrics")
}

pub fn vmalert_bin() -> Option<PathBuf> {
    tool("PORTWATCH_VMALERT", "/usr/bin/vmalert")
}

/// `src -> dst:port` by address, for tcpdump filters.
struct Cut(&'static str, &'static str, u16);

impl Cut {
    /// Packets of the connections `src -> dst:port`, both directions.
    fn filter(&self) -> String {
        let Cut(c, s, p) = self;
        format!(
            "((src host {c} and dst host {s} and dst port {p}) or \
             (src host {s} and dst host {c} and src port {p}))"
        )
    }
}

/// One site of the fleet: a bundled site file with `extra` appended, its
/// capture, what its packet sensor sees and what its flow exporter covers.
struct SiteSpec {
    site: &'static str,
    pcap: &'static str,
    extra: &'static str,
    packet_node: &'static str,
    packet_filter: String,
    flow_filter: String,
    /// The export datagram (from 0) the network between softflowd and the
    /// flow sensor loses.
    drop_datagram: Option<usize>,
}

/// multi-node: the proxy's packet sensor does not see proxy -> central:4432;
/// the export misses engine1 -> central:4242 (whose 2 s window the flow
/// sensor's clock outlasts at once).
fn multi_node() -> SiteSpec {
    let (proxy, central, engine1) = ("192.0.2.11", "192.0.2.10", "192.0.2.21");
    SiteSpec {
        site: "multi-node",
        pcap: "demo.pcap",
        extra: "overrides:\n  - from: engine1\n    to: central\n    port: 4242\n    window: 2s\n\
                exporters:\n  - name: core-switch\n    address: 127.0.0.1\n    covers: [engine1]\n",
        packet_node: "proxy",
        packet_filter: format!(
            "host {proxy} and not {}",
            Cut(proxy, central, 4432).filter()
        ),
        flow_filter: format!("not {}", Cut(engine1, central, 4242).filter()),
        drop_datagram: Some(2),
    }
}

/// proxy-engine: both sensors see everything of both nodes.
fn proxy_engine() -> SiteSpec {
    SiteSpec {
        site: "proxy-engine",
        pcap: "site-proxy-engine.pcap",
        extra: "exporters:\n  - name: core-switch\n    address: 127.0.0.1\n    covers: [proxy-engine]\n",
        packet_node: "central",
        packet_filter: "tcp".into(),
        flow_filter: "tcp".into(),
        drop_datagram: None,
    }
}

// ---------------------------------------------------------------------------
// VictoriaMetrics and vmalert for the duration of a test.

/// A child process on a loopback port with its own scratch directory;
/// killed and the directory removed on drop.
pub struct Served {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    name: &'static str,
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start `bin` with `args(dir, port)` and wait until `/health` answers 200.
fn serve(name: &'static str, bin: &Path, args: impl Fn(&Path, u16) -> Vec<String>) -> Served {
    let mut last = String::new();
    // A free port can be taken before the child binds it: try a few.
    for _ in 0..3 {
        let dir = temp_dir(name);
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let port = free_port();
        let child = Command::new(bin)
            .args(args(&dir, port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let mut s = Served {
            child,
            port,
            dir,
            name,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                last = format!("{name} exited with {status}:\n{}", s.log());
                break;
            }
            if let Ok((200, _)) = http_get(port, "/health") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not healthy in 30 s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("{name} did not start:\n{last}");
}

/// Single-node VictoriaMetrics as deploy/README.md runs it, on a scratch
/// storage path. Queries see samples up to now (no latency offset), so a
/// test compares it with a Prometheus at the same instant.
pub fn start_victoria_metrics() -> Served {
    let bin = victoria_metrics_bin().expect("victoria-metrics (see victoria_metrics_bin)");
    serve("victoria-metrics", &bin, |dir, port| {
        vec![
            format!("-storageDataPath={}", dir.join("data").display()),
            "-retentionPeriod=1d".into(),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-search.latencyOffset=0s".into(),
            "-loggerLevel=WARN".into(),
        ]
    })
}

/// vmalert evaluating `rules` every second against `vm`, notifying a port
/// nobody listens on (the test reads the alerts from vmalert's API). A
/// series counts as present for 5 s after its last sample (the sites
/// evaluate every second), not the default 5 minutes.
pub fn start_vmalert(rules: &Path, vm: &Served) -> Served {
    let bin = vmalert_bin().expect("vmalert (see vmalert_bin)");
    let datasource = vm.url();
    let nobody = free_port();
    serve("vmalert", &bin, |_, port| {
        vec![
            format!("-rule={}", rules.display()),
            format!("-datasource.url={datasource}"),
            format!("-notifier.url=http://127.0.0.1:{nobody}"),
            "-evaluationInterval=1s".into(),
            "-datasource.queryStep=5s".into(),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-loggerLevel=WARN".into(),
        ]
    })
}

// ---------------------------------------------------------------------------
// The fleet.

/// One site of a running fleet: its sensors and its Prometheus.
pub struct FleetSite {
    pub site: String,
    /// The site's Prometheus (`prom.port`): scrapes the sensors, evaluates
    /// the rules, remote-writes to the store.
    pub prom: PromGuard,
    /// The packet sensor, then the flow sensor.
    pub sensors: Vec<Daemon>,
    /// The site file the sensors run with.
    pub site_file: PathBuf,
    /// What the packet sensor replays, then what softflowd exported.
    pub captures: Vec<PathBuf>,
}

/// Two sites writing to one VictoriaMetrics (`vm.url()`, Prometheus API
/// under `/api/v1/`). Everything stops and is removed on drop.
pub struct Fleet {
    pub sites: Vec<FleetSite>,
    pub vm: Served,
    pub tmp: TempDir,
}

impl Fleet {
    pub fn site(&self, name: &str) -> &FleetSite {
        self.sites.iter().find(|s| s.site == name).expect("a site")
    }
}

/// Whether the fleet can run here; a skip names what is missing (and
/// fails under `CI=true`).
pub fn fleet_prerequisites(test: &str) -> bool {
    let tools = [
        ("prometheus", prometheus_bin().is_some()),
        ("victoria-metrics", victoria_metrics_bin().is_some()),
        ("vmalert", vmalert_bin().is_some()),
        ("softflowd", crate::prereq::have("softflowd")),
        ("softflowctl", crate::prereq::have("softflowctl")),
        ("tcpdump", crate::prereq::have("tcpdump")),
    ];
    let missing: Vec<&str> = (tools.iter().filter(|(_, ok)| !ok))
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(test, &format!("needs {missing:?} (.ci/deps)"));
    false
}

/// deploy/victoriametrics/prometheus.yml as shipped, with this site's
/// external label, sensors, rule files, store and 1 s intervals.
fn site_prometheus_config(site: &str, targets: &[String], vm: &Served) -> String {
    let mut c = yaml(&deploy("victoriametrics/prometheus.yml"));
    c["global"]["scrape_interval"] = "1s".into();
    c["global"]["evaluation_interval"] = "1s".into();
    c["global"]["external_labels"]["prometheus"] = format!("prom-{site}").into();
    c["rule_files"] = serde_json::json!([
        deploy("prometheus/portwatch.rules.yml"),
        deploy("victoriametrics/portwatch.fleet.rules.yml"),
    ]);
    c["scrape_configs"][0]["static_configs"][0]["targets"] = serde_json::json!(targets);
    c["remote_write"][0]["url"] = format!("{}/api/v1/write", vm.url()).into();
    // Send each batch within a second, not the default 5 s.
    c["remote_write"][0]["queue_config"] = serde_json::json!({"batch_send_deadline": "1s"});
    // JSON is YAML.
    c.to_string()
}

fn start_site(spec: &SiteSpec, tmp: &Path, vm: &Served) -> FleetSite {
    let base = std::fs::read_to_string(deploy(&format!("sites/{}.yaml", spec.site)))
        .expect("a bundled site");
    let site_file = tmp.join(format!("{}.yaml", spec.site));
    std::fs::write(&site_file, format!("{base}{}", spec.extra)).unwrap();
    let packets_pcap = tmp.join(format!("{}-packets.pcap", spec.site));
    tcpdump_cut(&fixture(spec.pcap), &packets_pcap, &spec.packet_filter);
    let flows_pcap = tmp.join(format!("{}-flows.pcap", spec.site));
    tcpdump_cut(&fixture(spec.pcap), &flows_pcap, &spec.flow_filter);

    let site_arg = site_file.display().to_string();
    let mut packets = Daemon::start_logged(
        &[
            "run",
            "--site",
            &site_arg,
            "--sensor",
            spec.packet_node,
            "--replay",
            &packets_pcap.display().to_string(),
            "--loop",
            "--speed",
            "200",
        ],
        &tmp.join(format!("{}-packets.log", spec.site)),
    );
    let udp = free_udp_port();
    let mut flows = Daemon::start_logged(
        &[
            "run",
            "--site",
            &site_arg,
            "--flow-listen",
            &format!("127.0.0.1:{udp}"),
        ],
        &tmp.join(format!("{}-flows.log", spec.site)),
    );
    packets.wait_ready();
    // Serving: its UDP socket was bound before (it is ready only once a
    // record arrived).
    flows.wait_metrics("the flow sensor up", |m| m.contains("portwatch_build_info"));
    let relay = Relay::start(udp, spec.drop_datagram.unwrap_or(usize::MAX));
    softflowd(tmp, &flows_pcap, relay.port, "10");
    let sent = relay.stop();
    if let Some(i) = spec.drop_datagram {
        // A later datagram shows the gap.
        assert!(
            sent.len() > i + 1,
            "{}: {} datagrams",
            spec.site,
            sent.len()
        );
    }
    let targets = [packets.addr.to_string(), flows.addr.to_string()];
    let prom = start_prometheus(&site_prometheus_config(spec.site, &targets, vm));
    FleetSite {
        site: spec.site.to_string(),
        prom,
        sensors: vec![packets, flows],
        site_file,
        captures: vec![packets_pcap, flows_pcap],
    }
}

/// Start VictoriaMetrics and both sites. Returns once the sites' verdicts
/// are in the store (the missing edge has been judged missing, so the
/// states settled); check [`fleet_prerequisites`] first.
pub fn start_fleet() -> Fleet {
    let tmp = TempDir::new("fleet-store");
    let vm = start_victoria_metrics();
    let sites: Vec<FleetSite> = [multi_node(), proxy_engine()]
        .iter()
        .map(|s| start_site(s, &tmp.0, &vm))
        .collect();
    let fleet = Fleet { sites, vm, tmp };
    let settled = "count(portwatch:edge_missing:site{site=\"multi-node\"} == 1) == 2 \
                   and on () count(portwatch:edge_missing:site{site=\"proxy-engine\"}) == 3";
    wait_for(&fleet, "both sites' verdicts in the store", || {
        matches!(values(fleet.vm.port, settled, None).as_slice(), [(_, 2.0)])
    });
    fleet
}

/// Poll `f` for up to 120 s; on failure show every log of the fleet.
fn wait_for(fleet: &Fleet, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        if Instant::now() > deadline {
            panic!("{what}: not within 120 s\n{}", logs(fleet));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn logs(fleet: &Fleet) -> String {
    let mut out = format!("--- victoria-metrics ---\n{}", fleet.vm.log());
    for s in &fleet.sites {
        out += &format!(
            "--- prometheus {} ({}, {:?}) ---\n{}",
            s.site,
            s.site_file.display(),
            s.captures,
            s.prom.log()
        );
        for d in &s.sensors {
            out += &format!("--- sensor {} {} ---\n{}", s.site, d.addr, d.log_text());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Queries.

/// A series' labels, without the name and the external label (which only
/// the store's copy carries).
type Labels = BTreeMap<String, String>;

/// `/api/v1/query` at `time` (or now) on any Prometheus-compatible API:
/// (labels, value) per series, sorted; panics on an error answer.
pub fn values(port: u16, expr: &str, time: Option<f64>) -> Vec<(Labels, f64)> {
    let at = time.map_or(String::new(), |t| format!("&time={t:.3}"));
    let path = format!("/api/v1/query?query={}{at}", url_encode(expr));
    let (status, body) = http_get(port, &path).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{expr}: HTTP {status}, not JSON ({e}): {body}"));
    assert_eq!(v["status"], "success", "{expr}: {v}");
    let mut out: Vec<(Labels, f64)> = (v["data"]["result"].as_array().into_iter().flatten())
        .map(|s| {
            let labels = (s["metric"].as_object().into_iter().flatten())
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "prometheus"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let value = s["value"][1].as_str().and_then(|x| x.parse().ok());
            (labels, value.unwrap_or(f64::NAN))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The fleet overview's count for `state` at `site`, from `port`.
fn overview(port: u16, site: &str, state: &str, at: f64) -> Option<f64> {
    let dash = fleet_dashboard();
    let exprs = dashboard_exprs(&dash);
    (exprs.iter())
        .filter(|(t, _)| t == "Required edges per site and state")
        .flat_map(|(_, e)| values(port, &substitute(e), Some(at)))
        .find(|(l, _)| l.get("site").map(String::as_str) == Some(site) && l["state"] == state)
        .map(|(_, v)| v)
}

pub fn fleet_dashboard() -> Value {
    let path = deploy("grafana/portwatch-fleet.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn two_sites_two_sensor_kinds_one_victoriametrics() {
    if !fleet_prerequisites("fleet_store::two_sites") {
        return;
    }
    let mut fleet = start_fleet();
    let vm = fleet.vm.port;
    let sites = ["multi-node", "proxy-engine"];

    // The overview per site and state, as the test's sensors imply.
    let want = [
        ("multi-node", "seen", 4.0),
        ("multi-node", "missing", 1.0),
        ("multi-node", "unverifiable", 1.0),
        ("proxy-engine", "seen", 3.0),
        ("proxy-engine", "missing", 0.0),
        ("proxy-engine", "unverifiable", 0.0),
    ];
    wait_for(&fleet, "the fleet overview", || {
        let at = now() - 1.0;
        want.iter()
            .all(|(s, st, n)| overview(vm, s, st, at) == Some(*n))
    });

    // Which edges: the missing one is covered, the unverifiable one not.
    let missing = values(
        vm,
        "portwatch:edge_covering_sensors:count and on (site, src, dst, port, service) \
         (portwatch:edge_missing:site == 1)",
        None,
    );
    let edges: BTreeSet<String> = (missing.iter())
        .map(|(l, v)| {
            format!(
                "{} {}->{}:{} covering {v}",
                l["site"], l["src"], l["dst"], l["port"]
            )
        })
        .collect();
    assert_eq!(
        edges,
        BTreeSet::from([
            "multi-node engine1->central:4242 covering 0".to_string(),
            "multi-node proxy->central:4432 covering 1".to_string(),
        ])
    );

    // Why: the proxy's packet sensor covers, multi-node's flow sensor lost
    // records (the relay dropped a datagram) and does not.
    let a = fleet.site("multi-node").prom.port;
    let [packets, flows] = [0, 1].map(|i| fleet.site("multi-node").sensors[i].addr.to_string());
    let covering = |inst: &str| {
        !values(
            a,
            &format!("portwatch:sensor_covering{{instance=\"{inst}\"}}"),
            None,
        )
        .is_empty()
    };
    assert!(covering(&packets), "the packet sensor covers");
    assert!(
        !covering(&flows),
        "the flow sensor covers: the datagram the relay dropped was not counted lost"
    );
    let lost = values(a, "portwatch:sensor_records_lost:1h", None);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].0.get("instance"), Some(&flows), "{lost:?}");

    // Two sensors of two kinds per site.
    let kinds: BTreeSet<String> = (fleet_dashboard_exprs("Sensors per site and kind").iter())
        .flat_map(|e| values(vm, e, None))
        .filter_map(|(l, v)| Some(format!("{} {} {v}", l["site"], l.get("sensor_kind")?)))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(
            [
                "multi-node flow 1",
                "multi-node packets 1",
                "proxy-engine flow 1",
                "proxy-engine packets 1"
            ]
            .map(String::from)
        )
    );

    // proxy-engine: each required edge is judged by both sensors, and is
    // one edge in the store.
    let b = fleet.site("proxy-engine").prom.port;
    let per_sensor = values(
        b,
        "count by (src, dst, port) (portwatch_edge_missing)",
        None,
    );
    assert_eq!(per_sensor.len(), 3, "{per_sensor:?}");
    assert!(per_sensor.iter().all(|(_, n)| *n == 2.0), "{per_sensor:?}");
    let stored = values(
        vm,
        "portwatch:edge_missing:site{site=\"proxy-engine\"}",
        None,
    );
    assert_eq!(stored.len(), 3, "{stored:?}");

    // multi-node: the unknown host on the proxy, seen by both sensors, is
    // one finding.
    let both = values(
        a,
        "portwatch_finding_active{finding=\"unknown_host\",dst=\"proxy\"} == 1",
        None,
    );
    assert_eq!(both.len(), 2, "both sensors: {both:?}");
    let findings = (fleet_dashboard_exprs("Findings by site").into_iter())
        .flat_map(|e| values(vm, &e, None))
        .find(|(l, _)| l["site"] == "multi-node" && l["finding"] == "unknown_host");
    assert_eq!(findings.map(|(_, v)| v), Some(1.0));

    // Only the rules' series and the info series left the sites.
    let raw = values(
        vm,
        "count by (name) (label_replace({__name__=~\"portwatch_.+\",\
         __name__!~\"portwatch_(site|build|sensor_source)_info\"}, \"name\", \"$1\", \"__name__\", \"(.+)\"))",
        None,
    );
    assert_eq!(raw, vec![], "raw series in the store");
    let up = values(vm, "count(up)", None);
    assert_eq!(
        up.first().map(|u| u.1),
        Some(4.0),
        "up of the 4 sensors only"
    );

    // Every fleet dashboard query answers, for each site what the site's
    // own Prometheus answers at the same instant.
    wait_for(&fleet, "the dashboard's answers", || {
        dashboard_agrees(&fleet, &sites)
    });

    // `portwatch report --prometheus` against the store, per site.
    crate::report::fleet_reports_agree(&fleet);

    // The global alerts in vmalert, against the store.
    global_alerts_fire(&mut fleet);
}

fn fleet_dashboard_exprs(title: &str) -> Vec<String> {
    (dashboard_exprs(&fleet_dashboard()).into_iter())
        .filter(|(t, _)| t == title)
        .map(|(_, e)| substitute(&e))
        .collect()
}

/// Every query of the fleet dashboard gives, per site, on the store what it
/// gives on that site's Prometheus; the per-site panels name both sites.
fn dashboard_agrees(fleet: &Fleet, sites: &[&str]) -> bool {
    let at = now() - 2.0;
    let exprs = dashboard_exprs(&fleet_dashboard());
    assert!(exprs.len() >= 6, "{exprs:?}");
    let mut ok = true;
    for (title, expr) in &exprs {
        let expr = substitute(expr);
        let stored = values(fleet.vm.port, &expr, Some(at));
        for s in &fleet.sites {
            let local = values(s.prom.port, &expr, Some(at));
            let mine: Vec<&(Labels, f64)> = (stored.iter())
                .filter(|(l, _)| l.get("site") == Some(&s.site))
                .collect();
            let theirs: Vec<&(Labels, f64)> = local.iter().collect();
            let same = mine.len() == theirs.len()
                && mine
                    .iter()
                    .zip(&theirs)
                    .all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() <= 1e-9 * x.1.abs().max(1.0));
            if !same {
                eprintln!("{title} at {}: store {mine:?}, site {theirs:?}", s.site);
                ok = false;
            }
        }
        let named: BTreeSet<&str> = (stored.iter())
            .filter_map(|(l, _)| l.get("site").map(String::as_str))
            .collect();
        let per_site = !title.starts_with("Missing");
        if per_site && !sites.iter().all(|s| named.contains(s)) {
            eprintln!("{title}: sites {named:?}");
            ok = false;
        }
    }
    ok
}

/// The shipped global rules, with `for:` cut to 0 s (the test cannot wait
/// the 5–15 minutes), in vmalert against the store.
fn global_alerts_fire(fleet: &mut Fleet) {
    let vmalert = vmalert_bin().expect("vmalert");
    let shipped = deploy("victoriametrics/portwatch.global.rules.yml");
    let dry = Command::new(&vmalert)
        .arg("-dryRun")
        .arg(format!("-rule={}", shipped.display()))
        .output()
        .expect("vmalert -dryRun");
    assert!(
        dry.status.success(),
        "vmalert -dryRun: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let text = std::fs::read_to_string(&shipped).unwrap();
    let quick: String = (text.lines())
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 0s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rules = fleet.tmp.0.join("portwatch.global.rules.yml");
    std::fs::write(&rules, quick).unwrap();
    let alerter = start_vmalert(&rules, &fleet.vm);
    let firing = |alerter: &Served| -> BTreeSet<String> {
        let (_, body) = http_get(alerter.port, "/api/v1/alerts").unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        (v["data"]["alerts"].as_array().into_iter().flatten())
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let l = &a["labels"];
                let edge = match l["src"].as_str() {
                    Some(src) => format!(" {src}->{}:{}", l["dst"], l["port"]).replace('"', ""),
                    None => String::new(),
                };
                format!("{} {}{edge}", a["name"], l["site"]).replace('"', "")
            })
            .collect()
    };
    let want = BTreeSet::from([
        "PortwatchRequiredEdgeMissing multi-node proxy->central:4432".to_string(),
        "PortwatchRequiredEdgeUnverifiable multi-node engine1->central:4242".to_string(),
    ]);
    let mut last = BTreeSet::new();
    wait_for(fleet, "the global alerts", || {
        last = firing(&alerter);
        last == want
    });

    // A site whose Prometheus stops: only the global layer can tell.
    let gone = fleet.sites.pop().expect("two sites");
    let name = gone.site.clone();
    drop(gone);
    let want = format!("PortwatchSiteNotReporting {name}");
    wait_for(fleet, "PortwatchSiteNotReporting", || {
        last = firing(&alerter);
        last.contains(&want)
    });
    assert!(
        !last.iter().any(|a| a.contains("NotReporting multi-node")),
        "{last:?}"
    );
    drop(alerter);
}

/// The fleet dashboard follows the site dashboard's conventions: a
/// `datasource` variable every panel and query uses, a multi-value `site`
/// variable from portwatch_site_info, unique ids, UTC.
#[test]
fn fleet_dashboard_has_the_site_dashboards_conventions() {
    let dash = fleet_dashboard();
    assert_eq!(dash["timezone"], "utc");
    assert_ne!(dash["uid"], crate::deploy::dashboard()["uid"]);
    let vars = dash["templating"]["list"].as_array().expect("variables");
    let var = |n: &str| vars.iter().find(|v| v["name"] == n).expect(n).clone();
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let site = var("site");
    assert_eq!(site["multi"], true);
    assert_eq!(site["includeAll"], true);
    assert_eq!(
        site["query"]["query"],
        "label_values(portwatch_site_info, site)"
    );
    let mut ids = BTreeSet::new();
    for p in crate::deploy::panels(&dash) {
        assert!(ids.insert(p["id"].as_i64().expect("id")), "duplicate id");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                t["expr"].as_str().unwrap_or("").contains("$site"),
                "{}: follows $site",
                p["title"]
            );
        }
    }
    let titles: BTreeSet<String> = (dashboard_exprs(&dash).into_iter())
        .map(|(t, _)| t)
        .collect();
    for t in [
        "Required edges per site and state",
        "Findings by site",
        "Sensors per site and kind",
    ] {
        assert!(titles.contains(t), "no panel {t}");
    }
}

/// The record names of a rules file.
fn records(rel: &str) -> BTreeSet<String> {
    let doc = yaml(&deploy(rel));
    (doc["groups"].as_array().expect("groups").iter())
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect()
}

/// The `portwatch…` metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("portwatch") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The global alerts read only what a site ships to the store (the rules'
/// records and portwatch_site_info), and meet the site alerts' standards:
/// severity, a static summary, a templated description that says what to
/// do, a runbook section in deploy/README.md.
#[test]
fn global_alerts_read_only_shipped_series_and_have_runbooks() {
    let mut shipped = records("prometheus/portwatch.rules.yml");
    shipped.extend(records("victoriametrics/portwatch.fleet.rules.yml"));
    shipped.insert("portwatch_site_info".into());
    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    let doc = yaml(&deploy("victoriametrics/portwatch.global.rules.yml"));
    let rules: Vec<&Value> = (doc["groups"].as_array().expect("groups").iter())
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .collect();
    assert!(rules.len() >= 2, "{rules:?}");
    for r in rules {
        let name = r["alert"].as_str().expect("alerts only");
        let expr = r["expr"].as_str().expect("expr");
        let read = metric_names(expr);
        assert!(!read.is_empty(), "{name}: reads no portwatch series");
        for m in &read {
            assert!(shipped.contains(m), "{name} reads {m}, which no site ships");
        }
        let sev = r["labels"]["severity"].as_str().unwrap_or("");
        assert!(["critical", "warning", "info"].contains(&sev), "{name}");
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        assert!(!summary.is_empty() && !summary.contains("{{"), "{name}");
        let description = r["annotations"]["description"].as_str().unwrap_or("");
        assert!(description.contains("{{ $labels.site }}"), "{name}");
        assert!(description.contains("What to do"), "{name}");
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or("");
        assert_eq!(
            url,
            format!(
                "file:///usr/share/doc/portwatch/deploy.md#{}",
                name.to_lowercase()
            )
        );
        assert!(readme.lines().any(|l| l == format!("### {name}")), "{name}");
    }
}

/// The site-side records for the store pass `promtool check rules`.
#[test]
fn promtool_checks_the_fleet_records() {
    let Some(promtool) = crate::deploy::need(crate::deploy::promtool_bin(), "promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(deploy("victoriametrics/portwatch.fleet.rules.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
