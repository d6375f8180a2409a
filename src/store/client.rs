//! Instant queries to a Prometheus-compatible query API over HTTP/1.1, one
//! connection a query, TLS by rustls and basic auth as Prometheus' own
//! `basic_auth` (user, password file) and `tls_config.ca_file` do it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite};

use super::answer::{parse, AnswerError, Sample, MAX_ANSWER_BYTES};
use crate::time::Timestamp;

/// How long one query may take, connection and TLS included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the system's CA bundle is on Debian, Fedora/RHEL and Alpine/BSD:
/// the roots for HTTPS without `--ca-file`.
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How to reach the store.
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    /// `http(s)://host[:port][/prefix]`: the query API is under the prefix.
    pub url: String,
    pub basic_auth_user: Option<String>,
    /// The password is read from a file, never from the command line.
    pub basic_auth_password_file: Option<PathBuf>,
    /// PEM roots that sign the store's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--prometheus `{url}`: {why}")]
    Url { url: String, why: &'static str },
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--ca-file {}: {why}", path.display())]
    Ca { path: PathBuf, why: String },
    #[error("HTTPS needs --ca-file: no system CA bundle found (looked in {})", SYSTEM_CA_FILES.join(", "))]
    NoRoots,
    #[error("cannot reach the store at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the store at {url} did not answer within {}s", QUERY_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("the store at {url} answered HTTP {status}{hint}: {detail}")]
    Http {
        url: String,
        status: u16,
        hint: &'static str,
        detail: String,
    },
    #[error("the store at {url}: {source}")]
    Answer {
        url: String,
        #[source]
        source: AnswerError,
    },
    #[error("cannot start the HTTP client: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A store to ask: its address, credentials and TLS roots, checked once.
pub struct Store {
    /// The URL as given, without credentials (for messages and the report).
    pub url: String,
    tls: Option<tokio_rustls::TlsConnector>,
    host: String,
    port: u16,
    prefix: String,
    authorization: Option<String>,
    rt: tokio::runtime::Runtime,
}

impl Store {
    pub fn open(c: &StoreConfig) -> Result<Store, StoreError> {
        let bad = |why| StoreError::Url {
            url: c.url.clone(),
            why,
        };
        let uri: Uri = c.url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("expected http:// or https://")),
        };
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad(
                "credentials go in --basic-auth-user and --basic-auth-password-file",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not part of the store's address"));
        }
        let host = auth.host().trim_matches(['[', ']']).to_string();
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match https {
            true => Some(connector(c.ca_file.as_ref())?),
            false => None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        Ok(Store {
            url: c.url.clone(),
            tls,
            host,
            port,
            prefix: uri.path().trim_end_matches('/').to_string(),
            authorization: authorization(c)?,
            rt,
        })
    }

    /// The instant vector `expr` evaluates to at `at`.
    pub fn query(&self, expr: &str, at: Timestamp) -> Result<Vec<Sample>, StoreError> {
        let nanos = at.as_nanos();
        let path = format!(
            "{}/api/v1/query?query={}&time={}.{:09}",
            self.prefix,
            url_encode(expr),
            nanos / 1_000_000_000,
            nanos % 1_000_000_000
        );
        let answer = self
            .rt
            .block_on(async { tokio::time::timeout(QUERY_TIMEOUT, self.get(&path)).await });
        let (status, body) = match answer {
            Ok(r) => r?,
            Err(_) => {
                return Err(StoreError::Timeout {
                    url: self.url.clone(),
                })
            }
        };
        match parse(&body) {
            Ok(samples) if status == StatusCode::OK => Ok(samples),
            Err(source) if status == StatusCode::OK => Err(StoreError::Answer {
                url: self.url.clone(),
                source,
            }),
            answer => Err(StoreError::Http {
                url: self.url.clone(),
                status: status.as_u16(),
                hint: hint(status),
                detail: match answer {
                    Err(AnswerError::Api { kind, message }) => format!("{kind}: {message}"),
                    _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                },
            }),
        }
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), StoreError> {
        let unreachable = |why: String| StoreError::Unreachable {
            url: self.url.clone(),
            why,
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let host = match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        };
        let mut req = Request::get(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("portwatch/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let r = match &self.tls {
            None => exchange(tcp, req).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| unreachable(e.to_string()))?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS: {e}")))?;
                exchange(s, req).await
            }
        };
        r.map_err(unreachable)
    }
}

/// One request on a fresh HTTP/1.1 connection; the body up to its cap.
async fn exchange<S>(io: S, req: Request<Empty<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (check --basic-auth-user and --basic-auth-password-file)"
        }
        StatusCode::NOT_FOUND => " (is the URL the query API's base, without /api/v1?)",
        _ => "",
    }
}

/// `Basic base64(user:password)`, the password read from its file (one
/// line; a final newline is not part of it).
fn authorization(c: &StoreConfig) -> Result<Option<String>, StoreError> {
    use base64::Engine;
    let Some(user) = &c.basic_auth_user else {
        return Ok(None);
    };
    let password = match &c.basic_auth_password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| StoreError::File {
                what: "--basic-auth-password-file",
                path: path.clone(),
                source,
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        None => String::new(),
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok(Some(format!("Basic {token}")))
}

fn connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path = match ca_file {
        Some(p) => p.clone(),
        None => (SYSTEM_CA_FILES.iter())
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(StoreError::NoRoots)?,
    };
    let bad = |why: String| StoreError::Ca {
        path: path.clone(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Percent-encoding of a query parameter: all but RFC 3986's unreserved.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str) -> Result<Store, StoreError> {
        Store::open(&StoreConfig {
            url: url.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_store_address_is_checked_before_any_query() {
        for (url, why) in [
            ("localhost:9090", "expected http:// or https://"),
            ("ftp://x", "expected http:// or https://"),
            ("http://u:p@x:9090", "credentials go in"),
            ("http://x:9090/?a=b", "a query string"),
        ] {
            let e = open(url).err().expect(url).to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
        let s = open("http://[::1]:8428/select/0/prometheus/").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 8428));
        assert_eq!(s.prefix, "/select/0/prometheus");
        assert_eq!(open("http://vm").unwrap().port, 80);
    }

    #[test]
    fn a_query_is_percent_encoded() {
        assert_eq!(
            url_encode("up{site=\"a b\"}[5m]"),
            "up%7Bsite%3D%22a%20b%22%7D%5B5m%5D"
        );
    }

    #[test]
    fn basic_auth_reads_the_password_file_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("portwatch-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let c = StoreConfig {
            url: "http://x".into(),
            basic_auth_user: Some("auditor".into()),
            basic_auth_password_file: Some(f),
            ca_file: None,
        };
        let got = authorization(&c).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // base64("auditor:s3cret")
        assert_eq!(got.as_deref(), Some("Basic YXVkaXRvcjpzM2NyZXQ="));
    }

    #[test]
    fn an_unreachable_store_is_an_error_naming_it() {
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = open(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = s.query("up", Timestamp(0)).unwrap_err();
        assert!(matches!(e, StoreError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
