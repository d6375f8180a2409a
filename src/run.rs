//! The replay and watch commands: sources into the pipeline, reports out.

use crate::app::exit;
use crate::cli::{ReplayArgs, WatchArgs};

pub fn replay(args: ReplayArgs) -> u8 {
    let _ = args;
    eprintln!("replay: not built yet");
    exit::BAD_INPUT
}

pub fn watch(args: WatchArgs) -> u8 {
    let _ = args;
    eprintln!("watch: not built yet");
    exit::BAD_INPUT
}
