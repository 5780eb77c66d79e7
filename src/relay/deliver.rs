//! The delivery loops: one per app, each sending its app's oldest queued request to the backend
//! until it is taken (2xx) or refused for good (4xx but 408 and 429), waiting
//! `callback.forward.retry_initial`, doubled per failure up to `retry_max`, between failed attempts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::{Forwarded, Relay};

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx: the backend has it.
    Taken(u16),
    /// 4xx but 408 and 429: the backend will never take it.
    Refused(u16),
    /// Anything else (5xx, 3xx, 408, 429, a timeout, no connection): tried again later.
    Failed(String),
}

/// How a backend's status is taken.
pub fn classify(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Taken(status),
        408 | 429 => Attempt::Failed(status.to_string()),
        400..=499 => Attempt::Refused(status),
        _ => Attempt::Failed(status.to_string()),
    }
}

/// The HTTP client for backends: it adds no header of its own (reqwest's default `Accept: */*`
/// is left out: the backend must see what TIW sent) and follows no redirect (a request goes to
/// the URL the operator configured, or is retried).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(HeaderMap::new())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Only a TLS backend that cannot initialise fails here: fall back to the plain client.
        .unwrap_or_default()
}

/// Sends `request` to `url` as TIW sent it.
pub async fn attempt(client: &reqwest::Client, url: &Url, request: &Forwarded, timeout: Duration) -> Attempt {
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let sent = client
        .post(url.clone())
        .headers(headers)
        .timeout(timeout)
        .body(request.body.clone())
        .send()
        .await;
    match sent {
        Ok(answer) => classify(answer.status().as_u16()),
        Err(e) if e.is_timeout() => Attempt::Failed("timeout".into()),
        Err(e) if e.is_connect() => Attempt::Failed("connect".into()),
        Err(_) => Attempt::Failed("transport".into()),
    }
}

/// The wait after the `failures`-th failed attempt in a row.
pub fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let doubled = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(max)
}

/// Delivers `app`'s queue until `token` is cancelled.
async fn deliver_app(relay: Arc<Relay>, app: u64, client: reqwest::Client, token: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let (request, url) = match relay.next(app) {
            Ok(next) => next,
            Err(wake) => {
                tokio::select! {
                    _ = wake.notified() => continue,
                    _ = token.cancelled() => return,
                }
            }
        };
        let settings = relay.settings();
        let outcome = tokio::select! {
            outcome = attempt(&client, &url, &request, settings.timeout) => outcome,
            _ = token.cancelled() => return,
        };
        match outcome {
            Attempt::Taken(status) => {
                failures = 0;
                relay.delivered(app, request.seq, status);
            }
            Attempt::Refused(status) => {
                failures = 0;
                relay.dead_letter(app, request.seq, status);
            }
            Attempt::Failed(why) => {
                failures += 1;
                relay.failed(app, request.seq, &why);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        sdk_app_id = app,
                        seq = request.seq,
                        answer = %why,
                        failures,
                        "relaying a callback to the backend failed; retrying"
                    );
                }
                let wait = backoff(settings.retry_initial, settings.retry_max, failures);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = token.cancelled() => return,
                }
            }
        }
    }
}

/// Runs a delivery loop for every app that has a queue or a backend, starting new ones as reloads
/// add apps, until `token` is cancelled.
pub fn spawn(relay: Arc<Relay>, tracker: &TaskTracker, token: CancellationToken) {
    let client = client();
    tracker.spawn(async move {
        let workers = TaskTracker::new();
        let mut running = HashSet::new();
        loop {
            for app in relay.apps() {
                if running.insert(app) {
                    workers.spawn(deliver_app(relay.clone(), app, client.clone(), token.clone()));
                }
            }
            tokio::select! {
                _ = relay.apps_changed.notified() => {}
                _ = token.cancelled() => break,
            }
        }
        workers.close();
        workers.wait().await;
    });
}
