//! The HTTP side of `portwatch run`: `/metrics` (Prometheus text format
//! 0.0.4), `/healthz` (the process is up) and `/-/ready` (a configuration is
//! loaded, the capture has started and delivered its first frame). Handlers only read atomics and
//! render the registry: a scrape never waits on the capture thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What `/-/ready` waits for. The first frame is part of it: a capture
/// that sees nothing (wrong interface, a mirror port without promiscuous
/// mode) must not look healthy.
#[derive(Debug, Default)]
pub struct Readiness {
    config_loaded: AtomicBool,
    capture_started: AtomicBool,
    first_frame: AtomicBool,
}

impl Readiness {
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::SeqCst);
    }

    pub fn set_capture_started(&self) {
        self.capture_started.store(true, Ordering::SeqCst);
    }

    pub fn set_first_frame(&self) {
        self.first_frame.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.waiting_for().is_none()
    }

    /// What readiness still waits for, if anything.
    pub fn waiting_for(&self) -> Option<&'static str> {
        let done = |f: &AtomicBool| f.load(Ordering::SeqCst);
        if !done(&self.config_loaded) {
            Some("configuration not loaded")
        } else if !done(&self.capture_started) {
            Some("capture not started")
        } else if !done(&self.first_frame) {
            Some("no frame captured yet (check -i, the mirror port, --no-promisc)")
        } else {
            None
        }
    }
}

/// Renders the page served at `/` (the live report), when there is one.
pub type IndexPage = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Shared with every handler.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    /// The live report page; without it `/` lists the endpoints.
    pub index: Option<IndexPage>,
}

/// Where `/metrics` is served unless `--web.telemetry-path` says otherwise.
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";

/// The links every page at `/` carries, with the metrics at
/// `telemetry_path`: (href, text).
pub fn links(telemetry_path: &str) -> Vec<(String, String)> {
    vec![
        (
            telemetry_path.to_string(),
            format!("{telemetry_path} (Prometheus)"),
        ),
        ("/healthz".into(), "/healthz".into()),
        ("/-/ready".into(), "/-/ready".into()),
    ]
}

pub fn router(state: HttpState) -> Router {
    router_at(state, DEFAULT_TELEMETRY_PATH)
}

/// The endpoints, with the metrics at `telemetry_path`.
pub fn router_at(state: HttpState, telemetry_path: &str) -> Router {
    let page = landing_page(telemetry_path);
    Router::new()
        .route(telemetry_path, get(metrics))
        .route("/healthz", get(healthz))
        .route("/-/ready", get(ready))
        .route("/", get(move |state| index(state, page.clone())))
        .with_state(state)
}

/// A minimal page linking the endpoints (the same links as the live report).
fn landing_page(telemetry_path: &str) -> String {
    let attr = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let items: String = links(telemetry_path)
        .iter()
        .map(|(href, text)| format!("<li><a href=\"{}\">{}</a></li>\n", attr(href), attr(text)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>portwatch</title></head>\n\
<body><h1>portwatch</h1><ul>\n{items}</ul><p>portwatch {}</p></body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn ready(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.readiness.waiting_for() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// `/`: the live report when `run` has one, else the page linking the
/// endpoints.
async fn index(State(s): State<HttpState>, landing: String) -> axum::response::Response {
    let page = match s.index {
        // Rendering may run Graphviz: off the async workers.
        Some(f) => tokio::task::spawn_blocking(move || f())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    axum::response::Html(page.unwrap_or(landing)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn state() -> HttpState {
        HttpState {
            metrics: Metrics::new().with_process_metrics(),
            readiness: Arc::new(Readiness::default()),
            index: None,
        }
    }

    async fn get(s: &HttpState, path: &str) -> (StatusCode, Option<String>, String) {
        let resp = router(s.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_is_prometheus_text() {
        let s = state();
        let (status, ctype, body) = get(&s, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype.as_deref(), Some(METRICS_CONTENT_TYPE));
        assert!(body.contains("# TYPE portwatch_build_info gauge"), "{body}");
        assert!(body.contains("portwatch_config_last_reload_successful"));
        assert!(body.contains(&format!(
            "portwatch_build_info{{revision=\"{}\",rustversion=\"{}\",version=\"{}\"}} 1",
            env!("PORTWATCH_REVISION"),
            env!("PORTWATCH_RUSTVERSION"),
            env!("CARGO_PKG_VERSION")
        )));
        #[cfg(target_os = "linux")]
        for m in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(body.contains(&format!("# TYPE {m} ")), "{m} missing");
        }
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let (status, _, body) = get(&state(), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok\n");
    }

    #[tokio::test]
    async fn ready_only_after_config_capture_and_first_frame() {
        let s = state();
        assert_eq!(get(&s, "/-/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        s.readiness.set_config_loaded();
        assert_eq!(get(&s, "/-/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        s.readiness.set_capture_started();
        let (status, _, body) = get(&s, "/-/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no frame captured yet"), "{body}");
        s.readiness.set_first_frame();
        assert_eq!(get(&s, "/-/ready").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn index_serves_the_live_page_or_links_the_endpoints() {
        let (status, _, body) = get(&state(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("href=\"/metrics\"") && body.contains("href=\"/-/ready\""),
            "{body}"
        );
        // A live page with nothing to show yet: the landing page.
        let mut s = state();
        s.index = Some(Arc::new(|| None));
        assert!(get(&s, "/").await.2.contains("href=\"/healthz\""));
        s.index = Some(Arc::new(|| {
            Some("<!DOCTYPE html><p>report</p>".to_string())
        }));
        let (status, ctype, body) = get(&s, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype.as_deref(), Some("text/html; charset=utf-8"));
        assert!(body.contains("<p>report</p>"));
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        assert_eq!(get(&state(), "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn telemetry_path_moves_the_metrics_and_the_page_links_it() {
        let resp = router_at(state(), "/probe")
            .oneshot(Request::get("/probe").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (status, ctype, page) = {
            let resp = router_at(state(), "/probe")
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, ctype, String::from_utf8(body.to_vec()).unwrap())
        };
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.unwrap().to_str().unwrap().starts_with("text/html"));
        assert!(page.contains("href=\"/probe\""), "{page}");
        assert_eq!(get(&state(), "/probe").await.0, StatusCode::NOT_FOUND);
    }
}
