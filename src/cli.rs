//! Command line: clap's raw arguments, and `--help`. Each value's syntax is
//! checked here; `cmd::settings` turns them into validated settings, and
//! the commands read the files.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit status:
  0  no findings (check: the files are valid)
  1  findings: unexpected, local-only or unknown-host flows, blocked or missing edges
  2  bad input: unreadable or invalid rules, site or capture file, bad arguments
  3  a capture file is truncated or corrupt: the report covers what was read
  4  runtime failure: the capture failed, writing to stdout failed
A closed stdout (`| head`) is no failure: the command stops quietly with the status above.";

#[derive(Debug, Parser)]
#[command(
    name = "portwatch",
    version,
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a site file (and rules file): every problem, with file, line and field.
    #[command(after_help = EXIT_CODES)]
    Check(SiteArgs),
    /// Print the ports each node needs open and every expected edge.
    Expect {
        #[command(flatten)]
        site: SiteArgs,
        /// Output format: an aligned table, or JSON for scripts.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Audit pcap/pcapng files against the site: a report, and an exit status for CI.
    #[command(after_help = EXIT_CODES)]
    Replay(ReplayArgs),
    /// Capture live on interfaces and print findings as they happen, until Ctrl-C.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Run as a monitor: live capture (or a paced replay), Prometheus metrics over HTTP.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Try it out: the bundled multi-node site and capture, replayed in a loop, with metrics.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
}

/// Where `run` and `demo` serve HTTP unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

const RUN_HELP: &str = "\
HTTP endpoints (default 127.0.0.1:9477):
  /metrics   Prometheus text format; metric reference in README.md (Metrics)
  /healthz   200 while the process is up
  /-/ready   200 once the configuration is loaded and the capture has started

Signals:
  SIGINT, SIGTERM  stop; the summary of what was seen goes to stderr
  SIGHUP           reload the site and rules files; if the new files are invalid the
                   old configuration keeps running (portwatch_config_reload_success 0)

Time: required-edge windows run on capture time for --replay, on the wall clock live.

Exit status:
  0  stopped by a signal
  2  bad input: invalid site or rules, unreadable capture, bad arguments
  4  runtime failure: address in use, the capture failed or its thread died

A closed stdout stops --print (logged once); capture and /metrics go on.";

const DEMO_HELP: &str = "\
The demo site is the bundled `multi-node` example; the capture holds a few minutes of
its traffic with some findings (an unexpected flow, a refused expected edge). Findings
are printed as they happen; metrics are served as by `portwatch run`. Ctrl-C to stop.

Try: curl -s 127.0.0.1:9477/metrics | grep ^portwatch_connections_total";

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["interfaces", "replay"])))]
pub struct RunArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// Interface to capture on; repeat for several, or `any`.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Instead of capturing, replay these pcap/pcapng files at capture pace.
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with = "interfaces")]
    pub replay: Vec<PathBuf>,
    /// Replay N times faster than captured (e.g. 10, or 0.5 for half speed).
    #[arg(long, default_value_t = 1.0, value_name = "N", requires = "replay", value_parser = parse_speed)]
    pub speed: f64,
    /// Replay the files again and again; timestamps keep increasing.
    #[arg(long = "loop", requires = "replay")]
    pub looping: bool,
    /// Address to serve /metrics, /healthz and /-/ready on.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub track: TrackArgs,
    /// The node(s) being watched: only required edges touching them are
    /// exported. Default: the capture sees the whole site.
    #[arg(long = "sensor", value_name = "NODE")]
    pub sensors: Vec<String>,
    /// Print findings to stdout as they happen.
    #[arg(long)]
    pub print: bool,
    /// Format of the closing summary (on stderr).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve /metrics, /healthz and /-/ready on.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Replay N times faster than captured.
    #[arg(long, default_value_t = 10.0, value_name = "N", value_parser = parse_speed)]
    pub speed: f64,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!(
            "`{s}`: expected a number above 0 and at most 1000000"
        )),
    }
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
}

#[derive(Debug, Args, Clone)]
pub struct TrackArgs {
    /// Most connection attempts tracked at once (at least 1); the oldest is
    /// evicted beyond it.
    #[arg(long, default_value_t = 65_536, value_name = "N")]
    pub max_flows: usize,
    /// How long a SYN waits for an answer before the attempt counts as unanswered.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub syn_timeout: std::time::Duration,
    /// How long an established connection is kept without a control packet.
    #[arg(long, default_value = "2h", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng), merged in timestamp order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub site: SiteArgs,
    #[command(flatten)]
    pub track: TrackArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Interface to capture on; repeat for several, or `any`.
    #[arg(short = 'i', long = "interface", required = true, value_name = "IFACE")]
    pub interfaces: Vec<String>,
    #[command(flatten)]
    pub site: SiteArgs,
    #[command(flatten)]
    pub track: TrackArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// What `replay` and `watch` report, and for which sensor.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The node(s) the capture is taken on: only required edges touching
    /// them are judged. Default: the capture sees the whole site (a SPAN).
    #[arg(long = "sensor", value_name = "NODE")]
    pub sensors: Vec<String>,
    /// Report format: an aligned table, or JSON (the documented report
    /// shape). `watch` prints it to stderr when stopped.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write one JSON event per line (connection attempts and outcomes) to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::diag::parse_duration(s)
}
