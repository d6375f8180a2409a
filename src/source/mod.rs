//! I/O in: where frames come from. `file` reads pcap and pcapng savefiles,
//! `live` captures from interfaces through libpcap. Both hand the pipeline
//! the same [`Frame`], so a replay and a live capture give the same verdicts.
//! `records`, `flows` and `wfp` read node logs and flow logs into
//! observations; `follow` tails growing files for them (`--follow`).

pub mod file;
pub mod filter;
pub mod flows;
pub mod follow;
pub mod live;
pub mod records;
pub mod reorder;
pub mod replay;
pub mod wfp;

pub use crate::frame::{Frame, LinkType};

/// What one [`Source::poll`] call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Frames were delivered.
    Frames(usize),
    /// A live source had nothing within its timeout; the caller may expire
    /// state on the wall clock and poll again.
    Idle,
    /// No more frames will come (end of all files).
    End,
    /// A looping replay reached the end of its files and starts them
    /// again: the frames that follow are a new pass of the same capture,
    /// whose connections are not the ones still open from the last pass.
    Restarted,
}

/// A source of frames. Frames are lent to `sink` one at a time because they
/// borrow the source's buffer.
pub trait Source {
    fn poll(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError>;
}

/// Why a source could not be opened or read on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file ({what})")]
    NotACapture { path: String, what: String },
    #[error("{iface}: {what}")]
    Live { iface: String, what: String },
    /// A record file refused as a whole (its message names the file).
    #[error("{what}")]
    Refused { path: String, what: String },
}

/// A test that cannot run here (not root, a shared file missing) is
/// skipped with a note on a laptop; under `CI=true` it fails, since CI has
/// everything and a skip there would hide a regression.
#[cfg(test)]
pub(crate) fn skip_unless_ci(test: &str, why: impl std::fmt::Display) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: cannot run under CI=true: {why}"
    );
    eprintln!("skipping {test}: {why}");
}
