//! The HTTP side of `portwatch run`: `/metrics` (Prometheus text format
//! 0.0.4), `/healthz` (the process is up) and `/-/ready` (a configuration is
//! loaded and the capture has started). Handlers only read atomics and
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

/// What `/-/ready` waits for.
#[derive(Debug, Default)]
pub struct Readiness {
    config_loaded: AtomicBool,
    capture_started: AtomicBool,
}

impl Readiness {
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::SeqCst);
    }

    pub fn set_capture_started(&self) {
        self.capture_started.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.config_loaded.load(Ordering::SeqCst) && self.capture_started.load(Ordering::SeqCst)
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

/// The links every page at `/` carries: (path, text).
pub const LINKS: &[(&str, &str)] = &[
    ("/metrics", "/metrics (Prometheus)"),
    ("/healthz", "/healthz"),
    ("/-/ready", "/-/ready"),
];

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/-/ready", get(ready))
        .route("/", get(index))
        .with_state(state)
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

async fn ready(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: configuration not loaded or capture not started\n",
        )
    }
}

async fn index(State(s): State<HttpState>) -> axum::response::Response {
    let page = match s.index {
        // Rendering may run Graphviz: off the async workers.
        Some(f) => tokio::task::spawn_blocking(move || f())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    match page {
        Some(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        None => {
            let links: Vec<&str> = LINKS.iter().map(|(p, _)| *p).collect();
            format!("portwatch: {}\n", links.join(" ")).into_response()
        }
    }
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
            metrics: Metrics::new(),
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
        assert!(body.contains("portwatch_config_reload_success"));
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let (status, _, body) = get(&state(), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok\n");
    }

    #[tokio::test]
    async fn ready_only_after_config_and_capture() {
        let s = state();
        assert_eq!(get(&s, "/-/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        s.readiness.set_config_loaded();
        assert_eq!(get(&s, "/-/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        s.readiness.set_capture_started();
        assert_eq!(get(&s, "/-/ready").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn index_serves_the_page_as_html_or_lists_the_endpoints() {
        let (status, _, body) = get(&state(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("/metrics") && body.contains("/-/ready"),
            "{body}"
        );
        let mut s = state();
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
}
