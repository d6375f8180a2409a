//! The `portwatch` binary: parse arguments, set up logging, run.

use clap::Parser;
use portwatch::cli::{Cli, LogFormat, LogLevel};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.log_level);
    portwatch::app::run(cli)
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
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
