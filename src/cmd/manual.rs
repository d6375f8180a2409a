//! Documentation generated from the command line itself: shell completions
//! (`portwatch completions SHELL`) and man pages (`portwatch man DIR`, used
//! by packaging), so they never drift from `--help`.

use std::path::Path;

use clap::CommandFactory;

use super::{print, Error, Status};
use crate::cli::Cli;

/// Print the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<Status, Error> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "portwatch", &mut out);
    print(&String::from_utf8_lossy(&out))?;
    Ok(Status::Clean)
}

/// Write `portwatch.1` and one page per command (`portwatch-run.1`, …)
/// into `dir`.
pub fn man(dir: &Path) -> Result<Status, Error> {
    std::fs::create_dir_all(dir)
        .and_then(|_| clap_mangen::generate_to(Cli::command(), dir))
        .map_err(|e| Error::Output {
            path: dir.to_path_buf(),
            source: e,
        })?;
    Ok(Status::Clean)
}
