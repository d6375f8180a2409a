//! Documentation generated from the command line itself: shell completions
//! (`portwatch completions SHELL`) and man pages (`portwatch man DIR`, used
//! by packaging), so they never drift from `--help`.

use std::path::Path;

use clap::CommandFactory;

use crate::app::exit;
use crate::cli::Cli;

/// Print the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "portwatch", &mut out);
    crate::app::out(&String::from_utf8_lossy(&out));
    exit::OK
}

/// Write `portwatch.1` and one page per command (`portwatch-run.1`, …)
/// into `dir`.
pub fn man(dir: &Path) -> u8 {
    let r =
        std::fs::create_dir_all(dir).and_then(|_| clap_mangen::generate_to(Cli::command(), dir));
    match r {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            exit::BAD_INPUT
        }
    }
}
