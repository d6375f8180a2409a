//! SIGINT, SIGTERM and (for `run`) SIGHUP as one stream. Unix only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use tokio::signal::unix::{signal, Signal as Stream, SignalKind};

use super::capture::Command;

pub(super) enum Signal {
    Stop(&'static str),
    Reload,
}

pub(super) struct Signals {
    term: Option<Stream>,
    hup: Option<Stream>,
    early: Option<Early>,
}

/// Flags set by SIGINT, SIGTERM and SIGHUP from the first instant of
/// `run`, before tokio (started after the capture is open and privileges
/// are dropped) can listen: a signal then neither kills the process by its
/// default action nor is lost.
#[derive(Clone, Default)]
pub(super) struct Early {
    stop: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Early {
    /// Install the handlers; a signal whose handler cannot be installed
    /// keeps its default action (logged).
    pub fn install() -> Early {
        let e = Early::default();
        let hooks = [(SIGINT, &e.stop), (SIGTERM, &e.stop), (SIGHUP, &e.hup)];
        for (sig, flag) in hooks {
            if let Err(err) = signal_hook::flag::register(sig, Arc::clone(flag)) {
                tracing::warn!(signal = sig, error = %err, "cannot handle the signal early");
            }
        }
        e
    }

    /// What arrived before tokio listened; a stop wins.
    fn take(self) -> Option<Signal> {
        if self.stop.load(Ordering::SeqCst) {
            return Some(Signal::Stop("a signal at start"));
        }
        self.hup.load(Ordering::SeqCst).then_some(Signal::Reload)
    }
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
            early: None,
        }
    }

    /// Also deliver what `early` caught before these streams existed.
    pub fn after(mut self, early: Early) -> Self {
        self.early = Some(early);
        self
    }

    /// The next signal; a stop comes before any reload waiting with it.
    pub async fn next(&mut self) -> Signal {
        // Once: later signals reach both the flags and the streams.
        if let Some(s) = self.early.take().and_then(|e| e.take()) {
            return s;
        }
        async fn recv(s: &mut Option<Stream>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            biased;
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
