//! SIGINT, SIGTERM and (for `run`) SIGHUP as one stream. Unix only.

use std::sync::mpsc::Sender;

use tokio::signal::unix::{signal, Signal as Stream, SignalKind};

use super::capture::Command;

pub(super) enum Signal {
    Stop(&'static str),
    Reload,
}

pub(super) struct Signals {
    term: Option<Stream>,
    hup: Option<Stream>,
}

impl Signals {
    /// Listen for SIGINT and SIGTERM, and for SIGHUP if `reload` (without
    /// it SIGHUP keeps its default action). Must be called inside tokio.
    pub fn new(reload: bool) -> Self {
        let hup = reload.then(|| signal(SignalKind::hangup()).ok()).flatten();
        if reload && hup.is_none() {
            tracing::warn!("cannot handle SIGHUP: reload disabled");
        }
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            hup,
        }
    }

    pub async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<Stream>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Stop("SIGINT"),
            _ = recv(&mut self.term) => Signal::Stop("SIGTERM"),
            _ = recv(&mut self.hup) => Signal::Reload,
        }
    }
}

/// For a command without tokio of its own (`watch`): a thread that sends
/// [`Command::Stop`] on SIGINT or SIGTERM, and [`Command::Reopen`] on
/// SIGHUP when `reopen` (the event log, for logrotate).
pub(super) fn stop_on_signal(tx: Sender<Command>, reopen: bool) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let mut signals = Signals::new(reopen);
            loop {
                match signals.next().await {
                    Signal::Stop(name) => {
                        tracing::debug!(signal = name, "stopping");
                        break;
                    }
                    Signal::Reload => {
                        let _ = tx.send(Command::Reopen);
                    }
                }
            }
        });
        let _ = tx.send(Command::Stop);
    });
}
