//! The HTTP server loop for every `--web.listen-address` (plain or TLS), with the limits a long-running exporter needs
//! against idle-connection floods (README "Limits and faults"):
//!
//! * a header-read timeout: a connection that does not finish its TLS
//!   handshake (with TLS) and send a whole request header in time is closed;
//! * a cap on open connections: past it, the oldest connection that is not
//!   serving a request is closed to make room (so a scrape gets in even
//!   while the cap is held by idle sockets), and if every connection is busy
//!   the new one is closed at once and counted;
//! * accept errors (e.g. out of descriptors) are logged at most every
//!   [`ACCEPT_ERROR_LOG_INTERVAL`], counted, and followed by a short pause:
//!   never fatal.
//!
//! With the cap well below the descriptor limit, the HTTP side cannot take
//! the descriptors the capture needs.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::metrics::Faults;
use super::webconfig::LiveWeb;

/// Default: most connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Default: how long a client may take to send a request header.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Accept errors are logged at most this often (all are counted).
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error, so running out of descriptors is not a
/// busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Descriptors kept out of the HTTP side's reach: capture handles, capture
/// files (a looping replay reopens them), the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 32;

impl Limits {
    /// The defaults, with the connection cap lowered to half of what the
    /// descriptor limit leaves after [`RESERVED_DESCRIPTORS`], so HTTP can
    /// never take the descriptors the capture needs.
    pub fn for_descriptor_limit(nofile: Option<u64>) -> Limits {
        let mut l = Limits::default();
        if let Some(n) = nofile {
            let room =
                usize::try_from(n.saturating_sub(RESERVED_DESCRIPTORS) / 2).unwrap_or(usize::MAX);
            l.max_connections = l.max_connections.min(room).max(1);
        }
        l
    }
}

/// The soft limit on open files (`ulimit -n`), from /proc on Linux.
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One open connection, as the cap sees it.
struct Conn {
    id: u64,
    busy: Arc<AtomicBool>,
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: VecDeque<Conn>,
}

impl Table {
    /// Make room for one more under `max`: close the oldest idle
    /// connection if needed. False if every connection is busy.
    fn admit(&mut self, max: usize) -> bool {
        if self.open.len() < max.max(1) {
            return true;
        }
        match self
            .open
            .iter()
            .position(|c| !c.busy.load(Ordering::SeqCst))
        {
            Some(i) => {
                if let Some(c) = self.open.remove(i) {
                    c.close.notify_one();
                }
                true
            }
            None => false,
        }
    }

    fn add(&mut self) -> (u64, Arc<AtomicBool>, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let (busy, close) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        self.open.push_back(Conn {
            id,
            busy: busy.clone(),
            close: close.clone(),
        });
        (id, busy, close)
    }

    fn remove(&mut self, id: u64) {
        self.open.retain(|c| c.id != id);
    }
}

/// Serve `router` on every listener (over TLS when the web configuration
/// in force at each accept has it) until `stop` changes or its sender is
/// dropped. The connection cap is shared by all listeners: descriptors are
/// one pool.
pub async fn serve(
    listeners: Vec<TcpListener>,
    router: Router,
    web: Option<Arc<LiveWeb>>,
    limits: Limits,
    faults: Faults,
    stop: tokio::sync::watch::Receiver<()>,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let mut stop = stop.clone();
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        loops.spawn(accept_loop(
            listener,
            router.clone(),
            web.clone(),
            limits,
            faults.clone(),
            table.clone(),
            shutdown,
        ));
    }
    while loops.join_next().await.is_some() {}
}

/// Accept on one listener until `shutdown` completes; never fails.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<LiveWeb>>,
    limits: Limits,
    faults: Faults,
    table: Arc<Mutex<Table>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut last_logged: Option<Instant> = None;
    let mut suppressed = 0u64;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                faults.http_accept_errors.inc();
                if last_logged.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(error = %e, suppressed, "HTTP accept failed; still serving");
                    last_logged = Some(Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let admitted = {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            t.admit(limits.max_connections).then(|| t.add())
        };
        let Some((id, busy, close)) = admitted else {
            faults.http_rejected.inc();
            drop(stream);
            continue;
        };
        let router = router.clone();
        // The certificate in force now (SIGHUP may have replaced it).
        let tls = (web.as_ref())
            .and_then(|w| w.get().tls.clone())
            .map(TlsAcceptor::from);
        let table = table.clone();
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // A connection still in its TLS handshake is idle: the cap may
            // close it, and it gets the header timeout to finish.
            let served = async {
                match tls {
                    None => serve_connection(stream, router, busy, timeout).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => serve_connection(s, router, busy, timeout).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                _ = close.notified() => {
                    tracing::debug!("idle HTTP connection closed to make room");
                }
            }
            table.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        });
    }
}

/// HTTP/1.1 on one connection, marked busy while a request is served.
async fn serve_connection<S>(stream: S, router: Router, busy: Arc<AtomicBool>, timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(router);
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        busy.store(true, Ordering::SeqCst);
        let call = hyper::service::Service::call(&svc, req);
        let busy = busy.clone();
        async move {
            let r = call.await;
            busy.store(false, Ordering::SeqCst);
            r
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::http::{router, HttpState, Readiness};
    use crate::export::metrics::Metrics;
    use std::io::{Read, Write};

    fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Idle connections beyond the cap make room for a scrape; a
    /// connection that sends no header is closed after the timeout.
    #[test]
    fn idle_connections_neither_block_a_scrape_nor_stay_forever() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let metrics = Metrics::new();
        let state = HttpState {
            metrics: metrics.clone(),
            readiness: Arc::new(Readiness::default()),
            index: None,
        };
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(500),
        };
        let (stop, stopped) = tokio::sync::watch::channel(());
        let server = rt.spawn(serve(
            vec![listener],
            router(state),
            None,
            limits,
            metrics.faults.clone(),
            stopped,
        ));
        let idle: Vec<_> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let t = Instant::now();
        let reply = scrape(addr).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // The header timeout closes an idle connection: reads see EOF.
        let mut last = idle.into_iter().last().unwrap();
        last.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let t = Instant::now();
        let n = last.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let _ = stop.send(());
        rt.block_on(server).unwrap();
    }

    #[test]
    fn the_cap_leaves_descriptors_for_the_capture() {
        assert_eq!(
            Limits::for_descriptor_limit(None).max_connections,
            MAX_CONNECTIONS
        );
        assert_eq!(
            Limits::for_descriptor_limit(Some(8192)).max_connections,
            MAX_CONNECTIONS
        );
        assert_eq!(
            Limits::for_descriptor_limit(Some(1024)).max_connections,
            MAX_CONNECTIONS
        );
        assert_eq!(Limits::for_descriptor_limit(Some(64)).max_connections, 16);
        assert_eq!(Limits::for_descriptor_limit(Some(3)).max_connections, 1);
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn the_cap_closes_the_oldest_idle_connection_first() {
        let mut t = Table::default();
        let (a, ..) = t.add();
        let (_, busy_b, _) = t.add();
        busy_b.store(true, Ordering::SeqCst);
        assert!(t.admit(2));
        assert_eq!(t.open.len(), 1);
        assert_ne!(t.open[0].id, a, "the idle, older one went");
        assert!(!t.admit(1), "all busy: the new connection is refused");
    }
}
