//! Wiring: turns a parsed command line into work and an exit status.

use std::process::ExitCode;

use crate::cli::{Cli, Command, Format, SiteArgs};
use crate::config::{load_policy, LoadError, Loaded};
use crate::policy::Expectation;

/// Exit statuses, as documented in `--help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FINDINGS: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const TRUNCATED: u8 = 3;
}

/// Write to standard output. A closed pipe (`| head`) ends the program
/// quietly, as for other Unix tools, instead of panicking.
pub fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    out_with(|| o.write_all(text.as_bytes()).and_then(|_| o.flush()));
}

/// Runs `write` (to standard output) with the error handling of [`out`].
pub fn out_with(write: impl FnOnce() -> std::io::Result<()>) {
    if let Err(e) = write() {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(exit::BAD_INPUT.into());
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Check(site) => check(&site),
        Command::Expect { site, format } => expect(&site, format),
        Command::Replay(args) => crate::run::replay(args),
        Command::Watch(args) => crate::run::watch(args),
        Command::Run(args) => crate::daemon::run(args),
        Command::Demo(args) => crate::daemon::demo(args),
    };
    ExitCode::from(code)
}

/// Load the policy or print why not.
pub fn load(site: &SiteArgs) -> Result<Loaded, u8> {
    load_policy(&site.site, site.rules.as_deref()).map_err(|e| {
        report_load_error(&e);
        exit::BAD_INPUT
    })
}

pub fn report_load_error(e: &LoadError) {
    match e {
        LoadError::Config(c) => {
            let n = c.diagnostics.len();
            for d in &c.diagnostics {
                eprintln!("error: {d}");
            }
            eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
        }
        other => eprintln!("error: {other}"),
    }
}

fn check(site: &SiteArgs) -> u8 {
    match load(site) {
        Ok(l) => {
            let p = &l.policy;
            let required = p.edges.iter().filter(|e| e.required).count();
            out(&format!(
                "{}: site `{}` is valid against model `{}`: {} nodes, {} expected edges ({} required)\n",
                l.site_path.display(),
                p.site.name,
                p.model.id,
                p.site.nodes.len(),
                p.edges.len(),
                required
            ));
            exit::OK
        }
        Err(code) => code,
    }
}

fn expect(site: &SiteArgs, format: Format) -> u8 {
    let loaded = match load(site) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let e = Expectation::of(&loaded.policy);
    match format {
        Format::Table => out(&e.to_table()),
        Format::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&e).expect("serializable")
        )),
    }
    exit::OK
}
