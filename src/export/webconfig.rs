//! `--web.config.file`: TLS and basic authentication for the HTTP
//! endpoints, in the YAML format Prometheus exporters share
//! (prometheus/exporter-toolkit):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths: to this file's directory
//!   key_file: server.key
//!   client_ca_file: ca.crt         # optional
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   min_version: TLS12             # optional: TLS12 or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hashes
//! ```
//!
//! Every problem is reported with file, line and field (exit 2).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use prometheus::IntCounter;
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha1::{Digest, Sha1};

use crate::diag::{parse_yaml, ConfigError, Diagnostics};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<String>>,
    client_auth_type: Option<Spanned<String>>,
    min_version: Option<Spanned<String>>,
}

/// The loaded web configuration.
#[derive(Clone)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.as_ref().map(|a| a.users.len()))
            .finish()
    }
}

/// How a client certificate is asked for (exporter-toolkit's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl WebConfig {
    /// Read and check `path`: every problem with its line and field.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            diagnostics: vec![crate::diag::Diagnostic {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        let raw: RawWebConfig = parse_yaml(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut d = Diagnostics::new(path);
        let tls = raw
            .tls_server_config
            .and_then(|t| tls_config(&t, base, &mut d));
        let mut users = BTreeMap::new();
        for (user, hash) in &raw.basic_auth_users {
            let field = format!("basic_auth_users.{user}");
            match hash.value.parse::<bcrypt::HashParts>() {
                Ok(_) => {
                    users.insert(user.clone(), hash.value.clone());
                }
                Err(e) => d.on(hash, field, format!("not a bcrypt hash: {e}")),
            }
        }
        let auth = (!users.is_empty()).then(|| BasicAuth::new(users));
        d.finish(WebConfig { tls, auth })
    }
}

fn tls_config(t: &RawTls, base: &Path, d: &mut Diagnostics) -> Option<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let field = |f: &str| format!("tls_server_config.{f}");
    let resolve = |s: &Spanned<String>| -> PathBuf { base.join(&s.value) };
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        let at = t.cert_file.as_ref().or(t.key_file.as_ref());
        let msg = "cert_file and key_file are both required for TLS";
        match at {
            Some(s) => d.on(s, field("cert_file"), msg),
            None => d.push_raw(1, 1, "tls_server_config".into(), msg.into()),
        }
        return None;
    };
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(resolve(cert))
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
    {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            d.on(cert, field("cert_file"), "no certificate in the file");
            return None;
        }
        Err(e) => {
            d.on(
                cert,
                field("cert_file"),
                format!("{}: {e}", resolve(cert).display()),
            );
            return None;
        }
    };
    let key_der = match PrivateKeyDer::from_pem_file(resolve(key)) {
        Ok(k) => k,
        Err(e) => {
            d.on(
                key,
                field("key_file"),
                format!("{}: {e}", resolve(key).display()),
            );
            return None;
        }
    };
    warn_if_world_readable(&resolve(key));
    let client_auth = match &t.client_auth_type {
        None => None,
        Some(s) => match s.value.as_str() {
            "NoClientCert" => Some(ClientAuth::NoClientCert),
            "VerifyClientCertIfGiven" => Some(ClientAuth::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Some(ClientAuth::RequireAndVerifyClientCert),
            other => {
                d.on(
                    s,
                    field("client_auth_type"),
                    format!("`{other}` is not supported: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"),
                );
                return None;
            }
        },
    };
    // exporter-toolkit: a client CA alone means RequireAndVerifyClientCert.
    let client_auth = match (client_auth, &t.client_ca_file) {
        (Some(a), _) => a,
        (None, Some(_)) => ClientAuth::RequireAndVerifyClientCert,
        (None, None) => ClientAuth::NoClientCert,
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_ref() {
        None => rustls::ALL_VERSIONS,
        Some(v) if v.value == "TLS12" => rustls::ALL_VERSIONS,
        Some(v) if v.value == "TLS13" => &[&rustls::version::TLS13],
        Some(v) => {
            d.on(v, field("min_version"), "expected TLS12 or TLS13");
            return None;
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
    {
        Ok(b) => b,
        Err(e) => {
            d.push_raw(1, 1, "tls_server_config".into(), e.to_string());
            return None;
        }
    };
    let builder = match (client_auth, &t.client_ca_file) {
        (ClientAuth::NoClientCert, _) => builder.with_no_client_auth(),
        (_, None) => {
            let s = t.client_auth_type.as_ref().expect("set when verifying");
            d.on(s, field("client_auth_type"), "needs client_ca_file");
            return None;
        }
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            let loaded = CertificateDer::pem_file_iter(resolve(ca))
                .and_then(|i| i.collect::<Result<Vec<_>, _>>());
            match loaded {
                Ok(cs) if !cs.is_empty() => {
                    for c in cs {
                        if let Err(e) = roots.add(c) {
                            d.on(ca, field("client_ca_file"), e.to_string());
                            return None;
                        }
                    }
                }
                Ok(_) => {
                    d.on(ca, field("client_ca_file"), "no certificate in the file");
                    return None;
                }
                Err(e) => {
                    d.on(
                        ca,
                        field("client_ca_file"),
                        format!("{}: {e}", resolve(ca).display()),
                    );
                    return None;
                }
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = match auth {
                ClientAuth::VerifyClientCertIfGiven => v.allow_unauthenticated(),
                _ => v,
            };
            match v.build() {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(e) => {
                    d.on(ca, field("client_ca_file"), e.to_string());
                    return None;
                }
            }
        }
    };
    match builder.with_single_cert(certs, key_der) {
        Ok(mut c) => {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(c))
        }
        Err(e) => {
            d.on(
                key,
                field("key_file"),
                format!("does not match cert_file: {e}"),
            );
            None
        }
    }
}

/// A private key any local user can read is as good as published: said at
/// every load, since the load goes on (exporter-toolkit does not check).
fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        tracing::warn!(
            file = ?path,
            mode = format!("{mode:o}"),
            "the TLS private key is readable by every user: chmod o-r it"
        );
    }
}

/// `basic_auth_users`: user name → bcrypt hash.
#[derive(Clone)]
pub struct BasicAuth {
    users: Arc<BTreeMap<String, String>>,
    /// Checked in place of an unknown user's hash, at the users' highest
    /// cost, so an unknown name takes as long as a wrong password
    /// (exporter-toolkit does the same).
    dummy: Arc<str>,
    /// Credentials already verified (a digest, never the password): bcrypt
    /// is slow by design and Prometheus sends the same ones every scrape.
    /// Bounded by clearing when full.
    verified: Arc<Mutex<HashSet<[u8; 20]>>>,
}

const VERIFIED_CAP: usize = 256;

/// What a request's credentials turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
    /// Not checked: as many checks as allowed were running or waiting.
    Busy,
}

/// The bound on bcrypt checks in progress: `running` at once on blocking
/// threads, `waiting` more queued; past that a check is not tried. Guesses
/// can then take at most `running` cores, and credentials already verified
/// never wait behind them.
pub struct Verifier {
    running: Arc<tokio::sync::Semaphore>,
    /// Checks running or waiting.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Checks run so far.
    ran: AtomicU64,
}

/// A place among the checks running or waiting, given back on drop (also
/// when the client goes away while its check waits or runs).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(queued: &Arc<AtomicUsize>, capacity: usize) -> Option<Slot> {
        let slot = Slot(queued.clone());
        (queued.fetch_add(1, Ordering::SeqCst) < capacity).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Verifier {
    pub fn new(running: usize, waiting: usize) -> Verifier {
        Verifier {
            running: Arc::new(tokio::sync::Semaphore::new(running.max(1))),
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: running.max(1) + waiting,
            ran: AtomicU64::new(0),
        }
    }

    /// Half the cores (at least one) checking, 16 waiting.
    pub fn for_this_machine() -> Verifier {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier::new(cores / 2, 16)
    }

    /// bcrypt checks run so far.
    pub fn ran(&self) -> u64 {
        self.ran.load(Ordering::SeqCst)
    }

    /// `bcrypt::verify(pass, hash)` within the bound; `None` when full.
    async fn verify(&self, pass: String, hash: Arc<str>) -> Option<bool> {
        let slot = Slot::take(&self.queued, self.capacity)?;
        let permit = self.running.clone().acquire_owned().await.ok()?;
        self.ran.fetch_add(1, Ordering::SeqCst);
        // Slot and permit go with the check: a client that leaves does not
        // free them while bcrypt still runs.
        let check = move || {
            let _held = (slot, permit);
            bcrypt::verify(pass, &hash).unwrap_or(false)
        };
        Some(tokio::task::spawn_blocking(check).await.unwrap_or(false))
    }
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let cost = (users.values())
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("portwatch: no such user", cost)
            .unwrap_or_else(|_| users.values().next().cloned().unwrap_or_default());
        BasicAuth {
            users: Arc::new(users),
            dummy: dummy.into(),
            verified: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Is the `Authorization` header value right? An unknown user costs a
    /// bcrypt check like a known one.
    pub async fn check(&self, header: Option<&str>, verifier: &Verifier) -> Verdict {
        let Some((user, pass)) = header.and_then(parse_basic) else {
            return Verdict::Refused;
        };
        let (known, hash): (bool, Arc<str>) = match self.users.get(&user) {
            Some(h) => (true, h.as_str().into()),
            None => (false, self.dummy.clone()),
        };
        let digest: [u8; 20] = {
            let mut h = Sha1::new();
            h.update(hash.as_bytes());
            h.update([0]);
            h.update(pass.as_bytes());
            h.finalize().into()
        };
        if known && self.verified.lock().is_ok_and(|v| v.contains(&digest)) {
            return Verdict::Accepted;
        }
        match verifier.verify(pass, hash).await {
            None => Verdict::Busy,
            Some(true) if known => {
                if let Ok(mut v) = self.verified.lock() {
                    if v.len() >= VERIFIED_CAP {
                        v.clear();
                    }
                    v.insert(digest);
                }
                Verdict::Accepted
            }
            Some(_) => Verdict::Refused,
        }
    }
}

fn parse_basic(h: &str) -> Option<(String, String)> {
    let b64 = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The web configuration in force, which SIGHUP replaces as a whole, and
/// the bound on password checks, which outlives it.
pub struct LiveWeb {
    current: RwLock<Arc<WebConfig>>,
    verifier: Verifier,
    throttled: IntCounter,
}

impl LiveWeb {
    /// `throttled` counts requests refused unchecked (the verifier was full).
    pub fn new(c: WebConfig, verifier: Verifier, throttled: IntCounter) -> LiveWeb {
        LiveWeb {
            current: RwLock::new(Arc::new(c)),
            verifier,
            throttled,
        }
    }

    pub fn get(&self) -> Arc<WebConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serve `c` from the next connection (TLS) and request (users) on.
    pub fn set(&self, c: WebConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
    }
}

/// Require basic auth on every route of `router` when the web
/// configuration in force has users.
pub fn protect(router: Router, web: Option<Arc<LiveWeb>>) -> Router {
    match web {
        Some(w) => router.layer(axum::middleware::from_fn_with_state(w, require_auth)),
        None => router,
    }
}

async fn require_auth(State(web): State<Arc<LiveWeb>>, req: Request, next: Next) -> Response {
    let Some(auth) = web.get().auth.clone() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.check(given, &web.verifier).await {
        Verdict::Accepted => next.run(req).await,
        Verdict::Refused => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"portwatch\"")],
            "Unauthorized\n",
        )
            .into_response(),
        Verdict::Busy => {
            web.throttled.inc();
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "Too many password checks in progress\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_tests::Scratch;

    fn load(yaml: &str) -> Result<WebConfig, ConfigError> {
        let dir = Scratch::new("webconfig");
        let p = dir.path().join(format!(
            "web-{:x}.yml",
            yaml.len() * 31 + yaml.as_bytes()[0] as usize
        ));
        std::fs::write(&p, yaml).unwrap();
        WebConfig::load(&p)
    }

    #[test]
    fn errors_are_located() {
        let e = load("basic_auth_users:\n  alice: notahash\n").unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(
            (d.line, d.field.as_str()),
            (2, "basic_auth_users.alice"),
            "{e}"
        );

        let e = load(
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
        )
        .unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!(
            (d.line, d.field.as_str()),
            (2, "tls_server_config.cert_file"),
            "{e}"
        );

        let e = load("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert_eq!(e.diagnostics[0].line, 2, "{e}");
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = load(&format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
        let auth = c.auth.unwrap();
        let v = Verifier::new(1, 0);
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let check = |h: Option<String>| {
            let (auth, v) = (&auth, &v);
            async move { auth.check(h.as_deref(), v).await }
        };
        use Verdict::*;
        assert_eq!(check(Some(header("prometheus", "s3cret"))).await, Accepted);
        assert_eq!(
            check(Some(header("prometheus", "s3cret"))).await,
            Accepted,
            "cached"
        );
        assert_eq!(check(Some(header("prometheus", "wrong"))).await, Refused);
        assert_eq!(check(Some(header("nobody", "s3cret"))).await, Refused);
        assert_eq!(check(None).await, Refused);
        assert_eq!(check(Some("Bearer x".into())).await, Refused);
    }

    fn header(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_check_at_the_users_cost() {
        let hash = bcrypt::hash("s3cret", 5).unwrap();
        let c = load(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = c.auth.unwrap();
        let cost = |h: &str| h.parse::<bcrypt::HashParts>().unwrap().get_cost();
        assert_eq!(cost(&auth.dummy), 5);
        let v = Verifier::new(1, 0);
        let unknown = auth.check(Some(&header("mallory", "s3cret")), &v).await;
        assert_eq!((unknown, v.ran()), (Verdict::Refused, 1));
        let wrong = auth.check(Some(&header("alice", "guess")), &v).await;
        assert_eq!((wrong, v.ran()), (Verdict::Refused, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_past_the_bound_are_not_tried() {
        let hash = bcrypt::hash("s3cret", 10).unwrap();
        let c = load(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = c.auth.unwrap();
        let v = Verifier::new(1, 1);
        let guess = header("alice", "guess");
        let (a, b, c) = tokio::join!(
            auth.check(Some(&guess), &v),
            auth.check(Some(&guess), &v),
            auth.check(Some(&guess), &v)
        );
        let mut got = [a, b, c];
        got.sort_by_key(|v| *v as u8);
        assert_eq!(got, [Verdict::Refused, Verdict::Refused, Verdict::Busy]);
        assert_eq!(v.ran(), 2);
        // The places are given back.
        let right = header("alice", "s3cret");
        assert_eq!(auth.check(Some(&right), &v).await, Verdict::Accepted);
    }
}
