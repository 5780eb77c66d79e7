//! The HTTP surface: `/metrics`, `/-/healthy`, `/-/ready` and the landing page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::{ExporterMetrics, TEXT_CONTENT_TYPE};
use crate::registry::TaskRegistry;
use crate::reload::ReloadHandle;

pub mod auth;
mod landing;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<ExporterMetrics>,
    /// What the landing page and the task pages show.
    pub registry: Arc<TaskRegistry>,
    /// Set once the registry is loaded and the poller runs.
    pub ready: Arc<AtomicBool>,
    pub telemetry_path: String,
    /// Where `POST /-/reload` goes; `None` answers 503.
    pub reload: Option<ReloadHandle>,
    /// Scrapes answered at once (`--web.max-requests`); `None`: no limit.
    pub scrapes: Option<Arc<tokio::sync::Semaphore>>,
    /// Relay mode's queues, for the landing page.
    pub relay: Option<Arc<crate::relay::Relay>>,
}

/// The largest body these routes let through; none of them reads a body.
pub const MAX_UNREAD_BODY: u64 = 1024;

/// The main listener's fixed routes, besides the telemetry path and the callback path. The flags
/// and the callback path are checked against this one list.
pub const FIXED_ROUTES: [&str; 5] = [LANDING, HEALTHY, READY, RELOAD, landing::TASK];
const LANDING: &str = "/";
const HEALTHY: &str = "/-/healthy";
const READY: &str = "/-/ready";
const RELOAD: &str = "/-/reload";
/// Routes that basic auth leaves open, for probes.
pub const OPEN_ROUTES: [&str; 2] = [HEALTHY, READY];

/// The router, apart from any socket so that tests can drive it with `oneshot`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(LANDING, get(landing::landing))
        .route(landing::TASK, get(landing::task))
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

/// Whether an `Accept-Encoding` header value takes gzip (RFC 9110 §12.5.3): `gzip` or `*` listed
/// with a weight above zero, and gzip not refused by name (`gzip;q=0`).
pub fn accepts_gzip(header_value: &str) -> bool {
    let mut star = false;
    for item in header_value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return weight > 0.0;
        }
        if coding == "*" {
            star = weight > 0.0;
        }
    }
    star
}

async fn metrics(State(state): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    let permit = match &state.scrapes {
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
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(accepts_gzip);
    let Ok(body) = state.metrics.scrape(gzip, permit).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics rendering failed\n").into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response();
    let headers = response.headers_mut();
    // Caches between the scraper and us must not hand a gzip body to a client that did not ask.
    headers.insert(header::VARY, header::HeaderValue::from_static("accept-encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
    }
    response
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(ready: bool) -> HttpState {
        let registry = Arc::new(TaskRegistry::new());
        HttpState {
            metrics: ExporterMetrics::new(registry.clone(), true),
            registry,
            ready: Arc::new(AtomicBool::new(ready)),
            telemetry_path: "/custom".into(),
            reload: None,
            scrapes: None,
            relay: None,
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

    #[test]
    fn accept_encoding_is_read_as_rfc_9110_says() {
        for (value, gzip) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("deflate, GZIP;q=0.5", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("gzip; q=0.000", false),
            ("*", true),
            ("*;q=0", false),
            ("gzip;q=0, *", false),
            ("br, *;q=0.1", true),
            ("", false),
        ] {
            assert_eq!(accepts_gzip(value), gzip, "{value:?}");
        }
    }

    #[tokio::test]
    async fn metrics_are_gzipped_only_when_asked() {
        use std::io::Read;
        let request = |encoding: Option<&str>| {
            let mut r = Request::get("/custom");
            if let Some(e) = encoding {
                r = r.header(header::ACCEPT_ENCODING, e);
            }
            r.body(Body::empty()).unwrap()
        };
        let plain = router(state(true)).oneshot(request(None)).await.unwrap();
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let plain = axum::body::to_bytes(plain.into_body(), 1 << 20).await.unwrap();
        let zipped = router(state(true))
            .oneshot(request(Some("gzip, deflate")))
            .await
            .unwrap();
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(zipped.headers()[header::VARY], "accept-encoding");
        assert_eq!(zipped.headers()[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);
        let zipped = axum::body::to_bytes(zipped.into_body(), 1 << 20).await.unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut text)
            .unwrap();
        // The process collector's values move between two renders; the families do not.
        let names = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("# TYPE"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&text), names(std::str::from_utf8(&plain).unwrap()));
        assert!(text.contains("tiw_exporter_build_info"));
        let refused = router(state(true)).oneshot(request(Some("gzip;q=0"))).await.unwrap();
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
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
