//! The HTTP surface: `/metrics`, `/-/healthy`, `/-/ready` and the landing page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::{ExporterMetrics, REVISION, TEXT_CONTENT_TYPE, VERSION};
use crate::reload::ReloadHandle;

pub mod auth;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<ExporterMetrics>,
    /// Set once the registry is loaded and the poller runs.
    pub ready: Arc<AtomicBool>,
    pub telemetry_path: String,
    /// Where `POST /-/reload` goes; `None` answers 503.
    pub reload: Option<ReloadHandle>,
    /// Scrapes answered at once (`--web.max-requests`); `None`: no limit.
    pub scrapes: Option<Arc<tokio::sync::Semaphore>>,
}

/// The largest body these routes let through; none of them reads a body.
pub const MAX_UNREAD_BODY: u64 = 1024;

/// The main listener's fixed routes, besides the telemetry path and the callback path. The flags
/// and the callback path are checked against this one list.
pub const FIXED_ROUTES: [&str; 4] = [LANDING, HEALTHY, READY, RELOAD];
const LANDING: &str = "/";
const HEALTHY: &str = "/-/healthy";
const READY: &str = "/-/ready";
const RELOAD: &str = "/-/reload";
/// Routes that basic auth leaves open, for probes.
pub const OPEN_ROUTES: [&str; 2] = [HEALTHY, READY];

/// The router, apart from any socket so that tests can drive it with `oneshot`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(LANDING, get(landing))
        .route(&state.telemetry_path, get(metrics))
        .route(HEALTHY, get(|| async { "Healthy\n" }))
        .route(READY, get(ready))
        .route(RELOAD, axum::routing::post(reload).get(reload_hint))
        .layer(axum::middleware::from_fn(refuse_bodies))
        .with_state(state)
}

/// These routes read no body: one declared larger than [`MAX_UNREAD_BODY`] is refused with 413
/// before any handler runs. (A body sent without a length is never read; the connection closes
/// after the reply.)
async fn refuse_bodies(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_UNREAD_BODY => (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            format!("this endpoint takes no body (at most {MAX_UNREAD_BODY} bytes are ignored)\n"),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let _permit = match &state.scrapes {
        Some(scrapes) => match scrapes.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                state.metrics.http.refused("metrics", "overloaded");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "too many concurrent scrapes; see --web.max-requests\n",
                )
                    .into_response();
            }
        },
        None => None,
    };
    let m = state.metrics.clone();
    // Rendering a large registry is CPU work; keep it off the async workers.
    match tokio::task::spawn_blocking(move || m.render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics rendering failed\n").into_response(),
    }
}

async fn reload(State(state): State<HttpState>) -> Response {
    let Some(handle) = state.reload else {
        return (StatusCode::SERVICE_UNAVAILABLE, "reload is not available here\n").into_response();
    };
    match handle.reload().await {
        Ok(summary) => (StatusCode::OK, format!("configuration reloaded: {summary}\n")).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("configuration refused, the previous one stays in force:\n{e}\n"),
        )
            .into_response(),
    }
}

async fn reload_hint() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "Only POST reloads the configuration: curl -X POST http://<exporter>/-/reload\n",
    )
        .into_response()
}

async fn ready(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Not ready\n").into_response()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn landing(State(state): State<HttpState>) -> Html<String> {
    let path = escape(&state.telemetry_path);
    Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>TIW Push Exporter</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}}code{{background:#eee;padding:0 .2em}}</style>
</head><body>
<h1>TIW Push Exporter</h1>
<p>Prometheus exporter for Tencent Cloud Interactive Whiteboard whiteboard-push tasks.
Version <code>{VERSION}</code>, revision <code>{REVISION}</code>.</p>
<ul>
<li><a href="{path}">Metrics</a> — task status, durations, exceptions and exporter health (polled in the background; a scrape never calls Tencent)</li>
<li><a href="/-/healthy">Health</a></li>
<li><a href="/-/ready">Readiness</a></li>
<li><code>POST /-/reload</code> (or SIGHUP) reloads the configuration file</li>
</ul>
</body></html>
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TaskRegistry;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(ready: bool) -> HttpState {
        HttpState {
            metrics: ExporterMetrics::new(Arc::new(TaskRegistry::new()), true),
            ready: Arc::new(AtomicBool::new(ready)),
            telemetry_path: "/custom".into(),
            reload: None,
            scrapes: None,
        }
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String, String) {
        let res = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn scrapes_past_max_requests_get_503_and_are_counted() {
        let mut full = state(true);
        full.scrapes = Some(Arc::new(tokio::sync::Semaphore::new(0)));
        let metrics = full.metrics.clone();
        let (s, _, body) = get(router(full), "/custom").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("--web.max-requests"), "{body}");
        let refused = metrics.http.refused_count("metrics", "overloaded");
        assert_eq!(refused, 1);
        let mut free = state(true);
        free.scrapes = Some(Arc::new(tokio::sync::Semaphore::new(1)));
        assert_eq!(get(router(free), "/custom").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn routes() {
        let (s, ct, body) = get(router(state(true)), "/custom").await;
        assert_eq!((s, ct.as_str()), (StatusCode::OK, TEXT_CONTENT_TYPE));
        assert!(body.contains("tiw_exporter_build_info"));
        assert_eq!(get(router(state(true)), "/metrics").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(router(state(false)), "/-/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(router(state(true)), "/-/ready").await.0, StatusCode::OK);
        assert_eq!(get(router(state(true)), "/-/healthy").await.0, StatusCode::OK);
        let (s, _, hint) = get(router(state(true)), "/-/reload").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(hint.contains("POST"));
        let (s, _, body) = get(router(state(true)), "/").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains(r#"href="/custom""#));
    }
}
