//! Raw command-line arguments ([`crate::cli`]) become validated settings
//! here, in one place (ripgrep's low and high arguments): clap checks each
//! value's syntax, this checks what the commands need of them together.
//! Files are read later, by the commands.

use crate::export::metrics::DEFAULT_FINDING_HOLD;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::follow::FollowSpec;
use super::input::InputSpec;
use super::Error;
use crate::cli::{
    CheckArgs, Cli, Command, EventsFormat, EvidenceArgs, ExpectFormat, FirewallArgs, FollowArgs,
    FollowFrom, Format, ProposeFormat, ReportArgs, SiteArgs, StoreReportArgs, TrackArgs,
};
use crate::decode::Decap;
use crate::export::http::DEFAULT_TELEMETRY_PATH;
use crate::source::file::Savefile;
use crate::source::follow::StartAt;
use crate::source::replay::ReplayOptions;
use crate::state::TrackConfig;
use crate::time::TimeRange;

/// A command with validated settings.
pub enum Task {
    Check(CheckArgs),
    Expect {
        site: SiteArgs,
        format: ExpectFormat,
        node: Option<String>,
    },
    Firewall(FirewallArgs),
    Replay(ReplaySettings),
    Watch(WatchSettings),
    /// `run` and `demo`: the demo is a run with bundled settings.
    Run(RunSettings),
    Completions(clap_complete::Shell),
    Man(PathBuf),
    Propose(ProposeSettings),
    /// `report`: the audit report drawn from the metrics store.
    Report(StoreReportArgs),
}

/// What `propose` starts from.
pub enum ProposeBase {
    /// A site to patch.
    Site(SiteArgs),
    /// A model only: infer a whole site, named `name`.
    Model { model: String, name: String },
}

pub struct ProposeSettings {
    pub files: Vec<PathBuf>,
    pub base: ProposeBase,
    pub track: TrackConfig,
    /// The UDP tunnel ports opened.
    pub decap: Decap,
    pub format: ProposeFormat,
    /// `--min-attempts`, `--min-days`.
    pub thresholds: crate::propose::Thresholds,
}

pub struct ReplaySettings {
    pub files: Vec<PathBuf>,
    /// `--timezone`, resolved.
    pub timezone: Option<(String, jiff::tz::TimeZone)>,
    pub site: SiteArgs,
    pub track: TrackConfig,
    /// The UDP tunnel ports opened.
    pub decap: Decap,
    pub report: ReportArgs,
    /// `--since`/`--until`.
    pub range: TimeRange,
    /// `--filter`, or the words after `--`.
    pub filter: Option<String>,
    pub evidence: EvidenceArgs,
    /// `--baseline`: a previous JSON report.
    pub baseline: Option<PathBuf>,
}

pub struct WatchSettings {
    /// None: `--follow` alone.
    pub interfaces: Vec<String>,
    /// `--follow`: node logs read as they grow.
    pub(super) follow: Option<FollowSpec>,
    /// `--flow-listen`: UDP addresses receiving NetFlow/IPFIX.
    pub flow_listen: Vec<SocketAddr>,
    /// `--flow-rcvbuf`: each socket's receive buffer asked, in bytes.
    pub flow_rcvbuf: usize,
    /// Named interfaces in promiscuous mode.
    pub promisc: bool,
    pub site: SiteArgs,
    pub track: TrackConfig,
    /// The UDP tunnel ports opened.
    pub decap: Decap,
    pub report: ReportArgs,
    pub evidence: EvidenceArgs,
    /// Who to become when started as root.
    pub user: String,
}

pub struct RunSettings {
    pub site: SiteArgs,
    pub(super) input: InputSpec,
    /// `--follow`: node logs read as they grow.
    pub(super) follow: Option<FollowSpec>,
    /// `--flow-listen`: UDP addresses receiving NetFlow/IPFIX.
    pub flow_listen: Vec<SocketAddr>,
    /// `--flow-rcvbuf`: each socket's receive buffer asked, in bytes.
    pub flow_rcvbuf: usize,
    pub listen: Vec<SocketAddr>,
    /// `--web.config.file`: TLS and basic auth.
    pub web_config: Option<PathBuf>,
    pub telemetry_path: String,
    pub track: TrackConfig,
    /// The UDP tunnel ports opened.
    pub decap: Decap,
    /// How long a finding's alert gauge stays 1 after its latest occurrence.
    pub finding_hold: std::time::Duration,
    pub sensors: Vec<String>,
    pub print: bool,
    pub format: Format,
    pub events: Option<PathBuf>,
    pub events_format: EventsFormat,
    pub evidence: EvidenceArgs,
    /// Who to become when started as root (`None`: the demo stays as is).
    pub user: Option<String>,
    /// A line printed on stdout before starting (`demo`).
    pub banner: Option<String>,
    /// `--state-dir` and `--state-interval`.
    pub state: Option<(PathBuf, std::time::Duration)>,
}

/// The demo capture (see fixtures/README.md), built into the binary.
pub const DEMO_PCAP: &[u8] = include_bytes!("../../fixtures/demo.pcap");
/// The bundled site the demo capture was made for.
pub const DEMO_SITE: &str = "multi-node";

impl Task {
    pub fn from_cli(cli: Cli) -> Result<Task, Error> {
        Ok(match cli.command {
            Command::Check(a) => Task::Check(a),
            Command::Expect { site, format, node } => Task::Expect { site, format, node },
            Command::Firewall(a) => Task::Firewall(a),
            Command::Report(a) => Task::Report(a),
            Command::Replay(a) if a.since.zip(a.until).is_some_and(|(s, u)| s >= u) => {
                return Err(Error::Usage("--since must be before --until".into()))
            }
            Command::Replay(a) => Task::Replay(ReplaySettings {
                filter: a.filter.or_else(|| {
                    (!a.filter_words.is_empty()).then(|| a.filter_words.join(" "))
                }),
                range: TimeRange {
                    since: a.since,
                    until: a.until,
                },
                track: track(&a.track)?,
                decap: a.track.decap.decap(),
                timezone: a.timezone.map(time_zone).transpose()?,
                files: a.files,
                site: a.site,
                report: a.report,
                evidence: a.evidence,
                baseline: a.baseline,
            }),
            Command::Watch(a) => Task::Watch(WatchSettings {
                follow: follow(a.follow, a.follow_opts)?,
                flow_listen: a.flow_listen,
                flow_rcvbuf: a.flow_rcvbuf,
                track: track(&a.track)?,
                decap: a.track.decap.decap(),
                interfaces: a.interfaces,
                promisc: !a.no_promisc,
                site: a.site,
                report: a.report,
                evidence: a.evidence,
                user: a.user,
            }),
            Command::Run(a) if a.looping && a.replay.iter().any(|p| p.as_os_str() == "-") => {
                return Err(Error::Usage(
                    "--loop cannot replay standard input (`-`) again".into(),
                ))
            }
            Command::Run(a) => Task::Run(RunSettings {
                track: track(&a.track)?,
                decap: a.track.decap.decap(),
                input: if !a.replay.is_empty() {
                    InputSpec::Paced {
                        savefiles: a.replay.into_iter().map(Savefile::Path).collect(),
                        opts: ReplayOptions {
                            speed: a.speed,
                            looping: a.looping,
                        },
                    }
                } else if a.interfaces.is_empty() {
                    InputSpec::NoCapture
                } else {
                    InputSpec::Live {
                        interfaces: a.interfaces,
                        promisc: !a.no_promisc,
                    }
                },
                follow: follow(a.follow, a.follow_opts)?,
                flow_listen: a.flow_listen,
                flow_rcvbuf: a.flow_rcvbuf,
                site: a.site,
                listen: a.web.listen,
                web_config: a.web.config_file,
                telemetry_path: a.web.telemetry_path,
                sensors: a.sensors,
                finding_hold: a.finding_hold,
                print: a.print,
                format: a.format,
                events: a.events,
                events_format: a.events_format,
                evidence: a.evidence,
                user: Some(a.user),
                banner: None,
                state: a.state_dir.map(|d| (d, a.state_interval)),
            }),
            Command::Demo(a) => Task::Run(RunSettings {
                banner: Some(format!(
                    "portwatch demo: site `{DEMO_SITE}`, bundled capture looped at {}x; report on http://{}/, metrics on http://{}/metrics; Ctrl-C to stop",
                    a.speed, a.listen, a.listen
                )),
                site: SiteArgs {
                    site: Path::new(DEMO_SITE).to_path_buf(),
                    rules: None,
                    strict_loopback: false,
                },
                input: InputSpec::Paced {
                    savefiles: vec![Savefile::Embedded {
                        name: "demo.pcap",
                        bytes: DEMO_PCAP,
                    }],
                    opts: ReplayOptions {
                        speed: a.speed,
                        looping: true,
                    },
                },
                listen: vec![a.listen],
                follow: None,
                flow_listen: Vec::new(),
                flow_rcvbuf: 0,
                web_config: None,
                telemetry_path: DEFAULT_TELEMETRY_PATH.into(),
                track: TrackConfig::default(),
                decap: Decap::STANDARD,
                finding_hold: DEFAULT_FINDING_HOLD,
                sensors: Vec::new(),
                print: true,
                format: Format::Table,
                events: None,
                events_format: EventsFormat::Ecs,
                evidence: EvidenceArgs::default(),
                user: None,
                state: None,
            }),
            Command::Completions { shell } => Task::Completions(shell),
            Command::Man { dir } => Task::Man(dir),
            Command::Propose(a) => Task::Propose(ProposeSettings {
                track: track(&a.track)?,
                decap: a.track.decap.decap(),
                base: match (a.site, a.model) {
                    (Some(site), None) => ProposeBase::Site(SiteArgs {
                        site,
                        rules: a.rules,
                        strict_loopback: false,
                    }),
                    (None, Some(model)) => ProposeBase::Model {
                        model,
                        name: a.name.unwrap_or_else(|| "proposed".into()),
                    },
                    // clap requires exactly one of them.
                    _ => {
                        return Err(Error::Usage(
                            "give --site FILE (a patch) or --model MODEL (a whole site)".into(),
                        ))
                    }
                },
                files: a.files,
                format: a.format,
                thresholds: crate::propose::Thresholds {
                    min_attempts: a.min_attempts,
                    min_days: a.min_days,
                },
            }),
        })
    }
}

/// `--follow` and its options.
fn follow(paths: Vec<PathBuf>, a: FollowArgs) -> Result<Option<FollowSpec>, Error> {
    if paths.is_empty() {
        return Ok(None);
    }
    Ok(Some(FollowSpec {
        paths,
        start_at: match a.follow_from {
            FollowFrom::End => StartAt::End,
            FollowFrom::Start => StartAt::Start,
        },
        timezone: a.timezone.map(time_zone).transpose()?,
    }))
}

/// `--timezone`: an IANA name the bundled database knows.
fn time_zone(name: String) -> Result<(String, jiff::tz::TimeZone), Error> {
    match jiff::tz::TimeZone::get(&name) {
        Ok(tz) => Ok((name, tz)),
        Err(e) => Err(Error::Usage(format!(
            "--timezone {name}: not an IANA time zone name ({e})"
        ))),
    }
}

fn track(a: &TrackArgs) -> Result<TrackConfig, Error> {
    if a.max_flows == 0 {
        return Err(Error::Usage(
            "--max-flows 0: at least one connection attempt must be tracked".into(),
        ));
    }
    Ok(TrackConfig {
        capacity: a.max_flows,
        syn_timeout: a.syn_timeout,
        idle_timeout: a.idle_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    fn task(args: &[&str]) -> Result<Task, Error> {
        Task::from_cli(Cli::try_parse_from(args).expect("clap accepts it"))
    }

    #[test]
    fn max_flows_zero_is_an_error_not_one() {
        // clap's parser refuses it (see cli.rs); this check backs it up.
        let args = ["portwatch", "replay", "x.pcap", "--site", "multi-node"];
        assert!(Cli::try_parse_from(args.iter().chain(&["--max-flows", "0"])).is_err());
        let e = track(&TrackArgs {
            max_flows: 0,
            syn_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(3),
            decap: Default::default(),
        })
        .map(|_| ())
        .expect_err("refused");
        assert_eq!(e.code(), super::super::exit::BAD_INPUT);
        assert!(e.to_string().contains("--max-flows 0"), "{e}");
        match task(&[
            "portwatch",
            "replay",
            "x.pcap",
            "--site",
            "multi-node",
            "--max-flows",
            "1",
        ]) {
            Ok(Task::Replay(s)) => assert_eq!(s.track.capacity, 1),
            _ => panic!("--max-flows 1 is valid"),
        }
    }

    #[test]
    fn demo_uses_the_documented_defaults() {
        let Ok(Task::Run(demo)) = task(&["portwatch", "demo"]) else {
            panic!("demo is a run");
        };
        let Ok(Task::Run(run)) = task(&[
            "portwatch",
            "run",
            "--site",
            "multi-node",
            "--replay",
            "x.pcap",
        ]) else {
            panic!("run");
        };
        assert_eq!(demo.track, run.track);
        assert!(demo.print && demo.banner.is_some());
    }
}
