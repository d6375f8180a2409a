//! Command line: clap's raw arguments, and `--help`. Each value's syntax is
//! checked here; `cmd::settings` turns them into validated settings, and
//! the commands read the files.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::decode::{Decap, PortSet, MAX_TUNNEL_PORTS};
use crate::time::{parse_time_bound, Timestamp};

const EXIT_CODES: &str = "\
Exit status:
  0  no findings (check: the files are valid)
  1  findings: unexpected, local-only or unknown-host flows, blocked or missing edges
     (not those the site's `accepted:` list accepts, nor with --baseline those it has)
  2  bad input: unreadable or invalid rules, site or capture file, bad arguments
  3  a capture file is truncated or corrupt: the report covers what was read
  4  runtime failure: the capture failed, writing to stdout failed, or (replay,
     watch) the --events file could not be written in full: it holds whole lines only;
     or the --write-findings file could not be written in full

A closed stdout (`| head`) is not a failure: the command stops quietly, with
the status its work earned (replay: the report's).";

#[derive(Debug, Parser)]
#[command(
    name = "portwatch",
    version = VERSION,
    about = "Passive TCP compliance monitor: checks observed connections against a product's port model",
    long_about = "portwatch watches TCP control packets (SYN, SYN-ACK, RST, FIN) live or in pcap/pcapng \
files, classifies every new connection against a port model (bundled: Qlik Sense Enterprise) and a \
site inventory, and reports unexpected flows, local-only ports reached from other hosts, unknown hosts, \
blocked expected flows and missing required edges.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Least severe log messages shown on stderr [default: info, or RUST_LOG when set].
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a site file (and rules file): every problem, with file, line and field;
    /// when valid, the services each node runs and where they come from, and
    /// warnings on accepted deviations (expired, expiring soon, matching nothing).
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Print the ports each node needs open and every expected edge.
    Expect {
        #[command(flatten)]
        site: SiteArgs,
        /// Output format: an aligned table, JSON for scripts, or a Graphviz
        /// graph (`| dot -Tsvg > site.svg`).
        #[arg(long, value_enum, default_value_t = ExpectFormat::Table)]
        format: ExpectFormat,
        /// Only this node: its ports and the edges it is an end of.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Audit pcap/pcapng files, flow logs and Windows Firewall logs against the site: a report, and an exit status for CI.
    #[command(after_help = EXIT_CODES)]
    Replay(ReplayArgs),
    /// Capture live on interfaces (or follow node logs) and print findings as they happen, until Ctrl-C.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Run as a monitor: live capture (or a paced replay, or followed node logs), Prometheus metrics over HTTP.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Try it out: the bundled multi-node site and capture, replayed in a loop, with metrics.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
    /// Print a shell completion script (e.g. `portwatch completions bash > /etc/bash_completion.d/portwatch`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into DIR (for packaging).
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Propose site entries from traffic, for review: a patch for --site, or a whole site for --model.
    #[command(after_help = PROPOSE_HELP)]
    Propose(ProposeArgs),
    /// Print the host firewall rules the model implies for one node (nftables or PowerShell).
    #[command(after_help = FIREWALL_HELP)]
    Firewall(FirewallArgs),
    /// The audit report of a site drawn from the metrics store (Prometheus, VictoriaMetrics) instead of a capture.
    #[command(after_help = REPORT_HELP)]
    Report(StoreReportArgs),
}

const REPORT_HELP: &str = "\
The store is asked instant queries at --at for the series a fleet store keeps: the
shipped recording rules (portwatch:*), portwatch_site_info and up. The site file
gives the required edges and the diagram; the store gives their states:
  seen          the site's edge_missing is 0 and some sensor has evidence
  missing       edge_missing is 1 and a covering sensor vouches for it
  not_observed  unverifiable (missing, but no covering sensor), unwatched (no
                sensor reports it now), or not yet watched for a whole window
Findings are the unexpected, local-only and unknown-host connections and the
blocked expected edges with series in --range before --at, and the missing
edges; their counts are estimated from the 5-minute rates the store keeps (a
series that exists counts at least 1). Disagreements: the edges
portwatch:edge_disagreement:site flagged in the range, with the kinds of sensor
on each side. The store keeps no addresses, no flow rows and no acceptances:
those parts of a replay's report are empty.

HTTPS: the store's certificate is checked against --ca-file, else the system's
CA bundle. Basic auth as Prometheus' basic_auth: the user, and the password
read from a file (never given on the command line).

Exit status:
  0  no findings
  1  findings (as replay: a CI gate)
  2  bad input: bad arguments or site file; the store unreachable, refusing
     (HTTP 4xx/5xx, basic auth) or holding no series of the site
  4  writing to stdout failed";

#[derive(Debug, Args)]
pub struct StoreReportArgs {
    /// The store's query API base URL: http(s)://HOST:PORT[/PREFIX], e.g.
    /// http://prometheus:9090 or http://victoria-metrics:8428.
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// Site inventory: a YAML file, or the name of a bundled example site;
    /// its required edges and diagram.
    #[arg(long, value_name = "FILE")]
    pub site: PathBuf,
    /// Port model file; default: the bundled model the site names.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// The `site` label of the site's series in the store; default: the
    /// site file's `name`.
    #[arg(long, value_name = "NAME")]
    pub site_name: Option<String>,
    /// The time the report is as of: RFC 3339 (2024-05-01T12:00:00Z) or
    /// Unix seconds; default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub at: Option<Timestamp>,
    /// How far back from --at findings are gathered and counted.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_range)]
    pub range: std::time::Duration,
    /// Report format, as replay's.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// How the HTML report's diagram is laid out, as replay's.
    #[arg(long, value_enum, default_value_t = DiagramLayout::Auto)]
    pub layout: DiagramLayout,
    /// Basic auth towards the store: the user name.
    #[arg(long, value_name = "USER", requires = "basic_auth_password_file")]
    pub basic_auth_user: Option<String>,
    /// Basic auth towards the store: a file holding the password (a final
    /// newline is not part of it).
    #[arg(long, value_name = "FILE", requires = "basic_auth_user")]
    pub basic_auth_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the store's HTTPS certificate;
    /// default: the system's CA bundle.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `--at`: RFC 3339, or Unix seconds (with a fraction).
fn parse_at(s: &str) -> Result<Timestamp, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return match (0.0..1e11).contains(&secs) {
            true => Ok(Timestamp((secs * 1e9) as u64)),
            false => Err(format!("`{s}`: Unix seconds out of range")),
        };
    }
    parse_time_bound(s).map_err(|e| format!("{e}, or Unix seconds"))
}

/// `--range`: from a minute (the rules' resolution) to a year.
fn parse_range(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::diag::parse_duration(s)?;
    match (std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(366 * 86_400))
        .contains(&d)
    {
        true => Ok(d),
        false => Err(format!("`{s}`: from 1m to 366d")),
    }
}

const FIREWALL_HELP: &str = "\
Inbound: allow every expected edge into the node from the addresses that may open it,
keep the model's local-only ports closed to other hosts, drop (and log) everything
else on the ports the model assigns to the node (its services' listeners, the site's
edges into it). Other ports are left alone, those the model knows on other nodes too
unless --block-all-model-ports. Every rule cites the model rule and the vendor page
section.

  nftables    one table, `table inet portwatch`: load with `nft -f FILE`
              (replaces only that table), check with `nft -c -f FILE`
  powershell  a script for change control, rules in the group \"portwatch <site>\":
              -Stage Audit (default: allow rules in force, block rules added
              disabled, allowed and dropped connections logged) or -Stage
              Enforce; -WhatIf, -Confirm; -Profile (default Any), -PolicyStore
              (default PersistentStore, or a GPO as DOMAIN\\NAME); each run exports
              the group's current rules to -BackupDirectory (CliXml), adds the
              new rules, then removes the old ones.
              With --enable-logging, also Set-NetFirewallProfile (log allowed
              and blocked, 32 MB) and auditpol for \"Filtering Platform
              Connection\" (5156/5157); \"Packet Drop\" (5152) is left commented
              out, with its volume warning";

#[derive(Debug, Args)]
pub struct FirewallArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// The node whose firewall to write.
    #[arg(long, value_name = "NODE")]
    pub node: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FirewallFormat::Nftables)]
    pub format: FirewallFormat,
    /// Which traffic of the node to filter.
    #[arg(long, value_enum, default_value_t = FirewallDirection::In)]
    pub direction: FirewallDirection,
    /// Also make the node a sensor (powershell only): the firewall log of
    /// allowed and dropped connections, and the Filtering Platform audit
    /// events 5156/5157 in the Security log.
    #[arg(long)]
    pub enable_logging: bool,
    /// Also drop on the ports the model knows but does not assign to the
    /// node (80, 443, 445 on an engine); by default those are left alone.
    #[arg(long)]
    pub block_all_model_ports: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallFormat {
    Nftables,
    Powershell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallDirection {
    In,
    Out,
    Both,
}

/// Who `run` and `watch` become when started as root (`--user`).
pub const DEFAULT_USER: &str = "nobody";

/// `--version`: the version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("PORTWATCH_REVISION"),
    ")"
);

/// Where `run` and `demo` serve HTTP unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

const RUN_HELP: &str = "\
HTTP endpoints (default 127.0.0.1:9477; TLS and basic auth with --web.config.file):
  /          the HTML report of what was seen so far (as replay --format html),
             reloading itself every 5 s, with links to the endpoints
  /metrics   Prometheus text format (--web.telemetry-path); metric reference in README.md
  /healthz   200 while the process is up
  /-/ready   200 once the configuration is loaded and the capture has delivered its
             first frame (503 says what it waits for)

Findings (unexpected, local-only, unknown host, blocked) set
portwatch_finding_active to 1 for --finding-hold after their latest occurrence:
the shipped alerts fire on it within one scrape plus one evaluation interval.
At most 256 open connections over all listen addresses (the oldest idle one
makes room); the TLS handshake and a request header must arrive within 5 s.

Named interfaces are captured in promiscuous mode (a mirror port, a bridge);
--no-promisc opts out; `any` never is. An interface that has received nothing
30 s after start is logged. An interface that goes away is reopened with backoff
(capture_up 0 meanwhile).

Signals:
  SIGINT, SIGTERM  stop; the summary of what was seen goes to stderr
  SIGHUP           reload the site, rules and --web.config.file (with its certificate and
                   key); if any is invalid the old configuration keeps running
                   (portwatch_config_last_reload_successful 0); the --events file is
                   reopened (logrotate)

Time: required-edge windows run on capture time for --replay, on the wall clock live.

Exit status:
  0  stopped by a signal
  2  bad input: invalid site or rules, unreadable capture, bad arguments
  4  runtime failure: address in use, the capture failed or its thread died

A closed stdout stops --print (logged once); capture and /metrics go on.";

const DEMO_HELP: &str = "\
The demo site is the bundled `multi-node` example; the capture holds a few minutes of
its traffic with some findings (an unexpected flow, a refused expected edge). Findings
are printed as they happen; the live report (/) and metrics are served as by
`portwatch run`. Ctrl-C to stop.

Try: open http://127.0.0.1:9477/ in a browser, or
     curl -s 127.0.0.1:9477/metrics | grep ^portwatch_connections_total";

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["interfaces", "replay", "follow", "flow_listen"])))]
pub struct RunArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// Interface to capture on; repeat for several, or `any`.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Instead of capturing, replay these pcap/pcapng files at capture pace.
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with = "interfaces")]
    pub replay: Vec<PathBuf>,
    /// Leave named interfaces out of promiscuous mode: only frames
    /// addressed to this host are seen (not a mirror port's). `any` never is.
    #[arg(long, conflicts_with = "replay")]
    pub no_promisc: bool,
    /// Replay N times faster than captured (e.g. 10, or 0.5 for half speed).
    #[arg(long, default_value_t = 1.0, value_name = "N", requires = "replay", value_parser = parse_speed)]
    pub speed: f64,
    /// Replay the files again and again; timestamps keep increasing, and each
    /// pass counts its connections anew (those left open close at its end).
    #[arg(long = "loop", requires = "replay")]
    pub looping: bool,
    /// Node logs to follow as they grow (firewall logs, WFP NDJSON), with -i or alone.
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with = "replay", long_help = FOLLOW_HELP)]
    pub follow: Vec<PathBuf>,
    #[command(flatten)]
    pub follow_opts: FollowArgs,
    /// Receive NetFlow v5, v9 and IPFIX on this UDP address; repeat for
    /// several, with -i, --follow or alone.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "replay", long_help = FLOW_LISTEN_HELP)]
    pub flow_listen: Vec<std::net::SocketAddr>,
    /// The receive buffer asked of each --flow-listen socket, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, requires = "flow_listen", long_help = FLOW_RCVBUF_HELP)]
    pub flow_rcvbuf: usize,
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub track: TrackArgs,
    /// The node(s) being watched: only required edges touching them are
    /// exported. Default: the capture sees the whole site.
    #[arg(long = "sensor", value_name = "NODE")]
    pub sensors: Vec<String>,
    /// Print findings to stdout as they happen.
    #[arg(long)]
    pub print: bool,
    /// How long a finding's portwatch_finding_active gauge stays 1 after its
    /// latest occurrence (the finding alerts fire on it). Longer than the
    /// Prometheus scrape interval, or a single event may not be scraped.
    #[arg(long, default_value = "5m", value_parser = parse_timeout, value_name = "DURATION")]
    pub finding_hold: std::time::Duration,
    /// Started as root: once the capture and sockets are open, run as this
    /// user, keeping only CAP_NET_RAW and CAP_NET_ADMIN (none for --replay).
    /// An --events file owned by root becomes this user's, so that SIGHUP
    /// can reopen it. `root` keeps root.
    #[arg(long, default_value = DEFAULT_USER, value_name = "USER")]
    pub user: String,
    /// Write one JSON event per line (connection attempts, outcomes,
    /// findings) to this file, appended, flushed every second, reopened on
    /// SIGHUP; `-` for standard output. Failed writes keep whole lines, are
    /// counted (portwatch_event_log_write_errors_total) and never stop capture.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Shape of the event lines: Elastic Common Schema, or portwatch's flat objects.
    #[arg(long, value_enum, default_value_t = EventsFormat::Ecs, value_name = "FORMAT")]
    pub events_format: EventsFormat,
    #[command(flatten)]
    pub evidence: EvidenceArgs,
    /// Keep state over restarts in DIR/state.json (DIR is made if missing and
    /// must be writable by --user): required-edge evidence, findings with
    /// their first and last sighting, and which were already reported. Read
    /// back at start; a bad or foreign file is logged and set aside.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How often the state is written to --state-dir (also at once after a
    /// new finding is reported, and at a clean stop).
    #[arg(long, default_value = "30s", value_parser = parse_state_interval, value_name = "DURATION", requires = "state_dir")]
    pub state_interval: std::time::Duration,
    /// Format of the closing summary (on stderr).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The HTTP side of `run`, with the flag names Prometheus exporters share.
#[derive(Debug, Args, Clone)]
pub struct WebArgs {
    /// Address to serve the endpoints on; repeat for several. Each is
    /// logged as `listening on ADDR` once bound (port 0: a free port).
    #[arg(
        long = "web.listen-address",
        visible_alias = "listen",
        default_value = DEFAULT_LISTEN,
        value_name = "ADDR"
    )]
    pub listen: Vec<std::net::SocketAddr>,
    /// TLS and basic authentication (exporter-toolkit's web configuration
    /// YAML); read again on SIGHUP.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Path under which to expose the metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_name = "PATH", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    let reserved = ["/", "/healthz", "/-/ready"];
    match s.starts_with('/') && !reserved.contains(&s) && !s.contains(['{', '}', '*', ' ']) {
        true => Ok(s.to_string()),
        false => Err(format!(
            "`{s}`: expected a path starting with `/`, other than / /healthz /-/ready, without {{ }} * or spaces"
        )),
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve the live report (/), /metrics, /healthz and /-/ready on.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Replay N times faster than captured.
    #[arg(long, default_value_t = 10.0, value_name = "N", value_parser = parse_speed)]
    pub speed: f64,
}

/// Bounds of `--speed`: slower than 1/1000 would make a one-second gap wait
/// a quarter of an hour; faster than a million is no pacing at all.
pub const SPEED_RANGE: (f64, f64) = (0.001, 1e6);

fn parse_speed(s: &str) -> Result<f64, String> {
    let (lo, hi) = SPEED_RANGE;
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: expected a number from {lo} to {hi}")),
    }
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// Warn about accepted deviations (the site's `accepted:` list) whose
    /// last day is within this many days from today (UTC).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub expiry_warning_days: u32,
}

#[derive(Debug, Args, Clone)]
pub struct SiteArgs {
    /// Site inventory: a YAML file, or the name of a bundled example site
    /// (single-node, multi-node, dmz-proxy, proxy-engine, ha-proxy-engine,
    /// ha-proxy-engine-scheduler, ha-engine, scale-out).
    #[arg(long, value_name = "FILE")]
    pub site: PathBuf,
    /// Port model file; default: the bundled model the site names.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Judge loopback connections to ports the model does not know (by
    /// default they are not findings: local tools, health checks).
    #[arg(long)]
    pub strict_loopback: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TrackArgs {
    /// Most connection attempts tracked at once (1 to 16777216); the oldest
    /// is evicted beyond it.
    #[arg(long, default_value_t = 65_536, value_name = "N", value_parser = parse_max_flows)]
    pub max_flows: usize,
    /// How long a SYN waits for an answer before the attempt counts as unanswered.
    #[arg(long, default_value = "3s", value_parser = parse_timeout, value_name = "DURATION")]
    pub syn_timeout: std::time::Duration,
    /// How long an established connection is kept without a control packet.
    #[arg(long, default_value = "2h", value_parser = parse_timeout, value_name = "DURATION")]
    pub idle_timeout: std::time::Duration,
    #[command(flatten)]
    pub decap: DecapArgs,
}

/// The UDP ports of the UDP encapsulations (as Zeek's `vxlan_ports`).
#[derive(Debug, Args, Clone)]
pub struct DecapArgs {
    /// UDP destination ports opened as VXLAN (comma-separated, at most 8;
    /// `none`: VXLAN is not opened).
    #[arg(long, default_value = "4789", value_name = "PORTS", value_parser = parse_ports)]
    pub vxlan_ports: PortSet,
    /// UDP destination ports opened as GENEVE (comma-separated, or `none`).
    #[arg(long, default_value = "6081", value_name = "PORTS", value_parser = parse_ports)]
    pub geneve_ports: PortSet,
    /// UDP destination ports opened as GRE-in-UDP (comma-separated, or `none`).
    #[arg(long, default_value = "4754", value_name = "PORTS", value_parser = parse_ports)]
    pub gre_udp_ports: PortSet,
}

impl Default for DecapArgs {
    fn default() -> Self {
        let d = Decap::STANDARD;
        DecapArgs {
            vxlan_ports: d.vxlan,
            geneve_ports: d.geneve,
            gre_udp_ports: d.gre_in_udp,
        }
    }
}

impl DecapArgs {
    pub fn decap(&self) -> Decap {
        Decap {
            vxlan: self.vxlan_ports,
            geneve: self.geneve_ports,
            gre_in_udp: self.gre_udp_ports,
        }
    }
}

fn parse_ports(s: &str) -> Result<PortSet, String> {
    if s.trim() == "none" {
        return Ok(PortSet::NONE);
    }
    let ports: Vec<u16> = (s.split(','))
        .map(|p| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{p}`: expected a UDP port from 1 to 65535")),
        })
        .collect::<Result<_, _>>()?;
    PortSet::new(&ports).ok_or(format!("`{s}`: at most {MAX_TUNNEL_PORTS} ports"))
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng, also gzip- or zstd-compressed), flow
    /// logs (AWS VPC Flow Logs, plain or gzip; Azure VNet or NSG flow logs)
    /// and Windows Firewall logs (pfirewall.log), in any mix, told apart by
    /// content and merged in timestamp order; `-` reads a capture from
    /// standard input (`tcpdump -w - | portwatch replay - …`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Time zone (IANA name, e.g. Europe/Berlin) of firewall logs whose node
    /// has no `timezone:` in the site file. A firewall log with neither is
    /// refused: its times are local.
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Audit only what happened at or after TIME: RFC 3339 with its offset
    /// (2026-01-05T09:00:00Z, 2026-01-05T10:00:00+01:00) or a date
    /// (2026-01-05: 00:00 UTC). Frames and records before it are skipped
    /// and counted; required edges are judged over the range only.
    #[arg(long, value_name = "TIME", value_parser = parse_time_bound)]
    pub since: Option<Timestamp>,
    /// Audit only what happened before TIME (exclusive), as --since.
    #[arg(long, value_name = "TIME", value_parser = parse_time_bound)]
    pub until: Option<Timestamp>,
    /// Audit only the frames this packet filter passes (tcpdump's syntax,
    /// compiled by libpcap for each file's link type, e.g. `tcp port 4242`);
    /// the others are skipped and counted. Also given as trailing words
    /// after `--`. Records of logs are not packets: it does not apply to them.
    #[arg(long, value_name = "EXPR", conflicts_with = "filter_words")]
    pub filter: Option<String>,
    /// The packet filter as tcpdump takes it: words after `--`.
    #[arg(last = true, value_name = "EXPR")]
    pub filter_words: Vec<String>,
    /// A previous report of `replay --format json`: list only the findings
    /// it does not have, and say how many it had. Required edges are
    /// reported in full; the exit status counts the new findings only.
    #[arg(long, value_name = "REPORT.json")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub site: SiteArgs,
    #[command(flatten)]
    pub track: TrackArgs,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub evidence: EvidenceArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["interfaces", "follow", "flow_listen"])))]
pub struct WatchArgs {
    /// Interface to capture on; repeat for several, or `any`.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Node logs to follow as they grow (firewall logs, WFP NDJSON), with -i or alone.
    #[arg(long, num_args = 1.., value_name = "FILE", long_help = FOLLOW_HELP)]
    pub follow: Vec<PathBuf>,
    #[command(flatten)]
    pub follow_opts: FollowArgs,
    /// Receive NetFlow v5, v9 and IPFIX on this UDP address; repeat for
    /// several, with -i, --follow or alone.
    #[arg(long, value_name = "ADDR:PORT", long_help = FLOW_LISTEN_HELP)]
    pub flow_listen: Vec<std::net::SocketAddr>,
    /// The receive buffer asked of each --flow-listen socket, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, requires = "flow_listen", long_help = FLOW_RCVBUF_HELP)]
    pub flow_rcvbuf: usize,
    /// Leave named interfaces out of promiscuous mode: only frames
    /// addressed to this host are seen (not a mirror port's). `any` never is.
    #[arg(long)]
    pub no_promisc: bool,
    /// Started as root: once the capture is open, run as this user, keeping
    /// only CAP_NET_RAW and CAP_NET_ADMIN. An --events file owned by root
    /// becomes this user's, so that SIGHUP can reopen it. `root` keeps root.
    #[arg(long, default_value = DEFAULT_USER, value_name = "USER")]
    pub user: String,
    #[command(flatten)]
    pub site: SiteArgs,
    #[command(flatten)]
    pub track: TrackArgs,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub evidence: EvidenceArgs,
}

/// How `--follow` reads its files (`run`, `watch`).
#[derive(Debug, Args, Clone)]
pub struct FollowArgs {
    /// Where a followed file that is already there is read from: `end`,
    /// only what is written from now on (as `tail -F`; its header and node
    /// are still read), or `start`, what it holds too. A file that appears
    /// later, or after a rotation or truncation, is read from its start.
    #[arg(long, value_enum, default_value_t = FollowFrom::End, value_name = "WHERE", requires = "follow")]
    pub follow_from: FollowFrom,
    /// Time zone (IANA name, e.g. Europe/Berlin) of followed firewall logs
    /// whose node has no `timezone:` in the site file; without either, their
    /// lines are counted (no_time_zone), not observed.
    #[arg(long, value_name = "ZONE", requires = "follow")]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FollowFrom {
    End,
    Start,
}

/// `--flow-listen` in `run --help` and `watch --help`.
pub const FLOW_LISTEN_HELP: &str = "Receive NetFlow v5, v9 and IPFIX export packets on this \
UDP address (e.g. 0.0.0.0:2055 or [::]:4739); repeat for several, with -i, --follow or \
alone. Templates are kept per exporter and observation domain; a data set waits 30 s for \
its template, then is dropped and counted. A sequence-number gap is lost records: required \
edges are not judged missing over it. Each connection's records (one per direction, or \
a biflow) give its outcome from their TCP flags. Without a capture, the edges judged are \
those an exporter covers and those of --sensor nodes: an exporter the site declares \
(exporters: name, address, observation_domain, covers) covers what it declares; any other \
covers the site's nodes its records carry, and is logged once and counted \
(reason=\"undeclared_exporter\"). In `run`, records are counted in \
portwatch_records_total{format=\"flow_export\",reason}, and datagrams and losses per \
exporter in portwatch_flow_export_{datagrams,lost_records,lost_packets}_total{exporter} \
(its declared name, or undeclared).";

/// `--flow-rcvbuf` in `run --help` and `watch --help`.
pub const FLOW_RCVBUF_HELP: &str = "The receive buffer (SO_RCVBUF) asked of each --flow-listen \
socket, in bytes (default 8 MiB): exporters send in bursts, and a datagram that finds the buffer \
full is lost before portwatch sees it. The kernel caps the size at net.core.rmem_max; started as \
root, portwatch asks past the cap (SO_RCVBUFFORCE) before dropping privileges. The size the \
kernel granted is logged at start.";

/// `--follow` in `run --help` and `watch --help`.
pub const FOLLOW_HELP: &str = "Node logs to follow as they grow, with -i or alone: \
Windows Firewall logs (pfirewall.log), Filtering Platform events as NDJSON \
(Winlogbeat, NXLog) and AWS VPC flow logs as plain text (format vpc_flow), told apart \
by content.

Read as `tail -F` does: a file rotated to FILE.old is read to its end before the new \
FILE (one rotated twice between two looks is read from FILE.old), a truncated file again \
from its start, a file not there yet is waited for (logged once). Only whole lines are \
read; a line longer than 64 KiB is skipped and counted. Files are looked at every 250 ms; \
at most 64.

Each log's node is found as replay finds it (its addresses, the events' host names, \
else --sensor); a firewall log's time zone is its node's `timezone:`, else --timezone. \
Records are counted in portwatch_records_total{node,format,reason}. Without -i (or with \
--sensor), the required edges judged include those of the logs' nodes; a VPC flow log's, \
without --sensor, are the nodes owning its interfaces, as replay tells them.

EVTX files, gzip files, Azure flow logs and JSON documents over several lines \
(pretty-printed) cannot be followed (they are not written line by line): refused, exit \
status 2. Replay them, or follow the NDJSON a shipper writes.";

/// What `replay` and `watch` report, and for which sensor.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The node(s) the capture is taken on: only required edges touching
    /// them are judged. Default: the capture sees the whole site (a SPAN).
    #[arg(long = "sensor", value_name = "NODE")]
    pub sensors: Vec<String>,
    /// Report format: an aligned table, JSON (the documented report
    /// shape), or one self-contained HTML page with the site diagram.
    /// `watch` prints it to stderr when stopped.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// How the HTML report's diagram is laid out: Graphviz `dot` when it is
    /// installed, else portwatch's own layered layout (auto); or either.
    #[arg(long, value_enum, default_value_t = DiagramLayout::Auto)]
    pub layout: DiagramLayout,
    /// Also write one JSON event per line (connection attempts, outcomes,
    /// findings) to this file, appended; `-` for standard output. If writes
    /// fail (disk full), the file keeps whole lines and the command ends
    /// with exit status 4.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Shape of the event lines: Elastic Common Schema, or portwatch's flat objects.
    #[arg(long, value_enum, default_value_t = EventsFormat::Ecs, value_name = "FORMAT")]
    pub events_format: EventsFormat,
}

/// What `replay`, `watch` and `run` keep of each connection.
#[derive(Debug, Args, Clone)]
pub struct EvidenceArgs {
    /// Write one ECS line per connection at its end to FILE, appended
    /// (`-`: standard output): 4-tuple, Community ID, start and duration,
    /// close reason (fin, rst_client, rst_server, syn_timeout,
    /// idle_timeout, evicted, reused, capture_end; record for log and flow
    /// records), outcome, verdict, the kind of source, and from packets
    /// the control packets (SYN, SYN-ACK, FIN, RST) each way; data packets
    /// and bytes are not counted. Written as --events is (whole lines,
    /// reopened on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub conn_log: Option<PathBuf>,
    /// Write the packets of every connection that raised a finding to FILE
    /// (pcap with the capture's link type, created or truncated), from its
    /// SYN on: the first 16 packets of each new connection are held (8 MiB
    /// in all) until its finding is decided, later ones written as they
    /// come. The file stops at --write-findings-max; what did not fit is
    /// counted (stderr, or the log and metrics for `run`). The file holds
    /// whole records only: a write error (disk full) keeps those that fit,
    /// and ends replay and watch with exit status 4, after the report.
    #[arg(long, value_name = "FILE")]
    pub write_findings: Option<PathBuf>,
    /// Most bytes --write-findings writes: a number with an optional k, M
    /// or G (powers of 1000).
    #[arg(long, default_value = "100M", value_name = "SIZE", value_parser = parse_size, requires = "write_findings")]
    pub write_findings_max: u64,
}

/// `--write-findings-max`: bytes, with an optional k, M or G (powers of
/// 1000), at least a pcap header and one packet header.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000),
        Some((i, 'M')) => (&t[..i], 1_000_000),
        Some((i, 'G')) => (&t[..i], 1_000_000_000),
        _ => (t, 1),
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(unit)) {
        Some(n) if n >= 40 => Ok(n),
        _ => Err(format!(
            "`{s}`: expected a size of at least 40 bytes, e.g. 100M, 2G, 500k or 65536"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsFormat {
    Ecs,
    Flat,
}

impl From<EventsFormat> for crate::export::eventlog::EventsFormat {
    fn from(f: EventsFormat) -> Self {
        match f {
            EventsFormat::Ecs => Self::Ecs,
            EventsFormat::Flat => Self::Flat,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExpectFormat {
    Table,
    Json,
    Dot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagramLayout {
    Auto,
    Dot,
    Builtin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Most `--max-flows`: each tracked attempt costs about 100 bytes.
pub const MAX_FLOWS_LIMIT: usize = 1 << 24;

fn parse_max_flows(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_FLOWS_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}`: expected a whole number from 1 to {MAX_FLOWS_LIMIT}"
        )),
    }
}

/// Longest `--syn-timeout` / `--idle-timeout`.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// From a second (the driver's tick) to a day.
fn parse_state_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::diag::parse_duration(s)?;
    match (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86_400)).contains(&d)
    {
        true => Ok(d),
        false => Err(format!("`{s}`: from 1s to 1d")),
    }
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::diag::parse_duration(s)?;
    if d > MAX_TIMEOUT {
        return Err(format!("`{s}`: at most 30 days"));
    }
    Ok(d)
}

impl Default for EvidenceArgs {
    fn default() -> Self {
        EvidenceArgs {
            conn_log: None,
            write_findings: None,
            write_findings_max: crate::export::evidence::DEFAULT_CAP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sizes_take_decimal_units_and_refuse_what_cannot_hold_a_packet() {
        assert_eq!(parse_size("100M"), Ok(100_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("500k"), Ok(500_000));
        assert_eq!(parse_size("65536"), Ok(65_536));
        for bad in ["", "M", "39", "1.5M", "-1", "99999999999G", "10T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("portwatch").chain(args.iter().copied()))
    }

    /// Out-of-range numbers are refused by the parser with the flag named,
    /// before anything runs (a tiny --speed used to panic the replay).
    #[test]
    fn flags_out_of_range_are_refused_at_parse_time() {
        let run = ["run", "--site", "multi-node", "--replay", "x.pcap"];
        let bad = [
            ("--speed", "1e-300"),
            ("--speed", "0"),
            ("--speed", "-1"),
            ("--speed", "NaN"),
            ("--speed", "inf"),
            ("--speed", "1e7"),
            ("--max-flows", "0"),
            ("--max-flows", "99999999999999999999999"),
            ("--max-flows", "20000000"),
            ("--syn-timeout", "0s"),
            ("--syn-timeout", "100y"),
            ("--idle-timeout", "99999999999999999999y"),
        ];
        for (flag, value) in bad {
            let arg = format!("{flag}={value}");
            let args: Vec<&str> = run.iter().copied().chain([arg.as_str()]).collect();
            let e = parse(&args).expect_err(&arg);
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{arg}: {e}"
            );
            assert!(e.to_string().contains(flag), "{arg}: {e}");
        }
        let ok: Vec<&str> = run
            .iter()
            .copied()
            .chain([
                "--speed",
                "0.001",
                "--max-flows",
                "1",
                "--idle-timeout",
                "30d",
            ])
            .collect();
        assert!(parse(&ok).is_ok());
        let demo = parse(&["demo", "--speed", "1e-300"]).unwrap_err();
        assert_eq!(demo.kind(), clap::error::ErrorKind::ValueValidation);
    }
}

const PROPOSE_HELP: &str = "\
With --site, prints a patch: nodes for addresses that accept connections on a model
role's ports, externals and user networks for the other addresses, and one `allow`
entry per source, destination and port of unexpected flows that were established
at least --min-attempts times over at least --min-days days; evidence in comments.
Apply it by appending each list to the site file's list of the same name. With
--model, prints a whole site file inferred from the traffic. Never allowed:
local-only ports. Listed as suspicious, for review, and never proposed: flows below
--min-attempts (a single attempt too) or --min-days, flows never established
(refused or unanswered only), and hosts the site does not know that connect in
(no external is proposed for them). Both directions of the traffic are needed
(SYN-ACKs show who listens).

Exit status:
  0  a proposal was printed
  2  bad input, or too little in the capture to infer from (the error says what)
  3  a capture file is truncated or corrupt: the proposal covers what was read
  4  runtime failure: writing to stdout failed";

/// `propose`: captures in, a site file or patch out.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("base").required(true).args(["site", "model"])))]
pub struct ProposeArgs {
    /// Capture files (pcap or pcapng, also gzip- or zstd-compressed), merged
    /// in timestamp order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Site to propose additions to (a file or a bundled example's name).
    #[arg(long, value_name = "FILE")]
    pub site: Option<PathBuf>,
    /// Port model file for --site; default: the bundled model the site names.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub rules: Option<PathBuf>,
    /// No site yet: infer a whole site for this model (a bundled model's id,
    /// e.g. qlik-sense-enterprise, or a rules file).
    #[arg(long, value_name = "MODEL", conflicts_with = "site")]
    pub model: Option<String>,
    /// Name of the inferred site (with --model; default `proposed`).
    #[arg(long, value_name = "NAME", conflicts_with = "site")]
    pub name: Option<String>,
    #[command(flatten)]
    pub track: TrackArgs,
    /// Output: YAML with the evidence in comments, or JSON with the document
    /// and the evidence side by side.
    #[arg(long, value_enum, default_value_t = ProposeFormat::Yaml)]
    pub format: ProposeFormat,
    /// Fewest connection attempts (per source, destination and port) an
    /// allowance needs; fewer are listed as suspicious.
    #[arg(long, value_name = "N", default_value_t = crate::propose::Thresholds::DEFAULT.min_attempts,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_attempts: u64,
    /// Fewest calendar days (UTC) from an allowance's first attempt to its
    /// last, both counted; fewer are listed as suspicious.
    #[arg(long, value_name = "DAYS", default_value_t = crate::propose::Thresholds::DEFAULT.min_days,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_days: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProposeFormat {
    Yaml,
    Json,
}
