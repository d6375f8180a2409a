//! Why a command stopped short, and the exit status that says so.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::exit;
use super::privileges::PrivilegeError;
use crate::config::LoadError;
use crate::diag::ConfigError;
use crate::policy::UnknownSensor;
use crate::propose::Shortfall;
use crate::quote::log_field;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument clap's parsers accept but the command cannot use.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Sensor(#[from] UnknownSensor),
    #[error(transparent)]
    Node(#[from] crate::firewall::NoSuchNode),
    /// `--layout dot` without a working Graphviz.
    #[error("--layout dot: {0}")]
    Layout(#[from] crate::export::graphviz::GraphvizError),
    /// A capture file or interface that cannot be opened or read.
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{}: {source}", path.display())]
    Events { path: PathBuf, source: io::Error },
    /// `--state-dir`: cannot be made, or not writable (by the service user).
    #[error("state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: io::Error },
    /// The event log lost events (disk full, I/O error); it holds whole
    /// lines only, and the report was still printed.
    #[error("event log incomplete: {0}")]
    EventLog(#[from] crate::export::eventlog::EventLogError),
    /// `--write-findings` lost packets (disk full, I/O error); the report
    /// was still printed.
    #[error("--write-findings incomplete: {0}")]
    Evidence(#[from] crate::export::evidence::EvidenceError),
    /// Not a closed pipe: that ends a command quietly.
    #[error("writing to standard output: {0}")]
    Stdout(#[source] io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("{what}: {source}")]
    Start {
        what: &'static str,
        source: io::Error,
    },
    /// The capture stopped by itself while running.
    #[error("capture failed: {0}")]
    Capture(#[source] SourceError),
    #[error("the capture thread panicked")]
    CapturePanicked,
    /// `--web.config.file`: every problem, located.
    #[error(transparent)]
    WebConfig(ConfigError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// A file or directory the command writes (`man DIR`).
    #[error("{}: {source}", path.display())]
    Output { path: PathBuf, source: io::Error },
    /// `replay --baseline`: the file cannot be read or is not a report.
    #[error("--baseline {}: {why}", crate::quote::log_field(&path.to_string_lossy()))]
    Baseline { path: PathBuf, why: String },
    /// `propose`: the captures hold too little to infer from.
    #[error(transparent)]
    Shortfall(#[from] Shortfall),
    /// `report`: the store cannot be reached, refuses, or answers nonsense.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `report`: the store has no series of the site in the range.
    #[error("the store at {url} has no series of site {site:?} (portwatch_site_info) in the {range} before {at}: check --site-name and --range")]
    NoSite {
        url: String,
        site: String,
        range: String,
        at: String,
    },
    /// `propose` built a site that does not compile: a bug, not bad input.
    #[error("the proposed site does not compile (a bug in propose): {0}")]
    Proposal(#[source] ConfigError),
}

impl Error {
    /// The exit status, as documented in `--help`.
    pub fn code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::Load(_)
            | Error::Sensor(_)
            | Error::Node(_)
            | Error::Layout(_)
            | Error::Source(_)
            | Error::Events { .. }
            | Error::StateDir { .. }
            | Error::WebConfig(_)
            | Error::Privileges(_)
            | Error::Output { .. }
            | Error::Baseline { .. }
            | Error::Shortfall(_)
            | Error::Store(_)
            | Error::NoSite { .. } => exit::BAD_INPUT,
            Error::Stdout(_)
            | Error::Listen { .. }
            | Error::Start { .. }
            | Error::Capture(_)
            | Error::EventLog(_)
            | Error::Evidence(_)
            | Error::CapturePanicked
            | Error::Proposal(_) => exit::RUNTIME,
        }
    }

    /// Say what went wrong on stderr: every problem of a bad file.
    pub fn report(&self) {
        match self {
            Error::Load(LoadError::Config(c)) | Error::WebConfig(c) => {
                let n = c.diagnostics.len();
                for d in &c.diagnostics {
                    eprintln!("error: {d}");
                }
                eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
            }
            // Paths and names inside the message stay on its one line.
            other => eprintln!("error: {}", log_field(&other.to_string())),
        }
    }

    /// One line, for logs (a rejected reload).
    pub fn one_line(&self) -> String {
        match self {
            Error::Load(LoadError::Config(c)) => c
                .diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
}
