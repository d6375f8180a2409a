//! The commands, one module each, above every pipeline stage. Each takes
//! validated [`settings`] and returns a [`Status`] or an [`Error`]; `main`
//! turns either into the exit status. Nothing here or below exits the
//! process.
//!
//! `watch` and `run`/`demo` share one capture driver ([`capture`]), one
//! signal handler ([`signals`]) and one way to open sources ([`input`]).

mod capture;
mod check;
mod error;
mod eventlog;
mod expect;
mod firewall;
mod flowlisten;
mod flowlogs;
mod follow;
mod input;
mod manual;
mod page;
pub mod privileges;
mod propose;
mod replay;
mod report;
mod run;
pub mod settings;
mod signals;
mod statedir;
mod watch;

use std::io::Write;
use std::sync::Arc;

pub use error::Error;
pub use settings::{Task, DEMO_PCAP, DEMO_SITE};

use crate::cli::{Cli, Format, SiteArgs};
use crate::config::{load_policy, Loaded};
use crate::policy::{Policy, Visibility};
use crate::report::Report;
use crate::time::Timestamp;

/// Exit statuses, as documented in `--help` and README.md.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FINDINGS: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const TRUNCATED: u8 = 3;
    /// The work could not go on: an address in use, a capture that died, a
    /// failed write to stdout (other than a closed pipe).
    pub const RUNTIME: u8 = 4;
}

/// How a command that ran to its end went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No findings (`check`: the files are valid; `run`: stopped by a signal).
    Clean,
    Findings,
    /// A capture file was truncated or corrupt; the report covers what was read.
    Truncated,
}

impl Status {
    pub fn code(self) -> u8 {
        match self {
            Status::Clean => exit::OK,
            Status::Findings => exit::FINDINGS,
            Status::Truncated => exit::TRUNCATED,
        }
    }

    fn of(r: &Report) -> Status {
        if r.capture.truncated {
            Status::Truncated
        } else if r.has_findings() {
            Status::Findings
        } else {
            Status::Clean
        }
    }
}

/// Validate the command line and run the command it names.
pub fn run(cli: Cli) -> Result<Status, Error> {
    match Task::from_cli(cli)? {
        Task::Check(a) => check::check(&a, Timestamp::now()),
        Task::Expect { site, format, node } => expect::expect(&site, format, node.as_deref()),
        Task::Firewall(a) => firewall::firewall(&a),
        Task::Replay(s) => replay::replay(s),
        Task::Watch(s) => watch::watch(s),
        Task::Run(s) => run::run(s),
        Task::Completions(shell) => manual::completions(shell),
        Task::Man(dir) => manual::man(&dir),
        Task::Propose(s) => propose::propose(s),
        Task::Report(a) => report::report(&a, Timestamp::now()),
    }
}

/// Load the site (and rules).
fn load(site: &SiteArgs) -> Result<Loaded, Error> {
    Ok(load_policy(&site.site, site.rules.as_deref())?)
}

/// Load the site (and rules) and check `--sensor` against it.
/// The policy of `site` as the sensor judges it: with its own listeners
/// (`listening`, for `run`) and the loopback view.
fn prepare(
    site: &SiteArgs,
    sensors: &[String],
    listening: &[std::net::SocketAddr],
) -> Result<(Arc<Policy>, Visibility), Error> {
    let mut policy = load(site)?.policy;
    policy.own.strict_loopback = site.strict_loopback;
    policy.own.listeners = own_listeners(&policy, sensors, listening);
    let policy = Arc::new(policy);
    let vis = Visibility::for_site(&policy, sensors)?;
    Ok((policy, vis))
}

/// Each listening socket as (address, port); an unspecified address
/// stands for loopback and the `--sensor` nodes' addresses.
fn own_listeners(
    p: &Policy,
    sensors: &[String],
    listening: &[std::net::SocketAddr],
) -> Vec<(std::net::IpAddr, u16)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mine: Vec<IpAddr> = (p.site.nodes.iter())
        .filter(|n| sensors.contains(&n.name))
        .flat_map(|n| n.addresses.iter().copied())
        .chain([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ])
        .collect();
    let mut out = Vec::new();
    for l in listening {
        match l.ip().is_unspecified() {
            true => out.extend(mine.iter().map(|a| (*a, l.port()))),
            false => out.push((l.ip(), l.port())),
        }
    }
    out
}

/// Write to standard output. A closed pipe (`| head`) is not an error: the
/// reader has what it wanted, and the command ends with the status its
/// work earned, whether or not the output fitted in the pipe.
fn print(text: &str) -> Result<(), Error> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Stdout(e)),
        _ => Ok(()),
    }
}

/// The JSON report to standard output as it is serialized (a report at the
/// row and finding caps is about 10 MB), with [`print`]'s closed pipe rule.
fn print_json(r: &Report) -> Result<(), Error> {
    let o = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    match r.write_json(o) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Stdout(e)),
        _ => Ok(()),
    }
}

/// The closing summary of `watch` and `run`, on stderr.
fn print_summary(r: &Report, format: Format) {
    eprintln!();
    match format {
        Format::Table => eprint!("{}", r.to_table()),
        Format::Json => eprintln!("{}", r.to_json()),
    }
}
