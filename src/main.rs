//! The `portwatch` binary: parse arguments, set up logging, run the
//! command, turn its result into the exit status. The only place that
//! exits.

use std::process::ExitCode;

use clap::Parser;
use portwatch::cli::{Cli, LogFormat, LogLevel};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.log_level);
    match portwatch::cmd::run(cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(e) => {
            e.report();
            ExitCode::from(e.code())
        }
    }
}

fn init_tracing(format: LogFormat, level: Option<LogLevel>) {
    // --log-level wins over RUST_LOG, which wins over the default.
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l.as_str()),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.fmt_fields(one_line_fields()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Text logs write each field through `quote::log_field`: a path or name
/// with a line break cannot forge a log line.
fn one_line_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = portwatch::quote::log_field(&text);
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{name}={text}"),
        }
    })
    .delimited(" ")
}
