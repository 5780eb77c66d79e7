//! The callback route over HTTP: reading the body within its size and time limits, admission
//! (`callback.max_in_flight`) once it has arrived, and the reply — 200 only once the event's effect
//! is on disk.
//!
//! A body declared larger than `callback.max_body_bytes` is refused 413 before a byte of it is
//! read, and a request takes a processing slot only once its whole body is here, within
//! [`CALLBACK_BODY_TIMEOUT`]: connections that declare a body and send nothing hold no slot, so
//! they cannot make TIW's real callbacks wait or fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{CallbackOutcome, CallbackReceiver, Processed};
use crate::relay::NotQueued;
use crate::task::unix_now;

/// An oversized body is read (and thrown away) up to this size before the 413, so that the
/// sender, still writing, gets the answer rather than a broken pipe; beyond it the connection closes.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// How long a callback body may take to arrive once its head has (at most `--web.read-timeout`).
/// TIW's bodies are a few hundred bytes, sent with the head.
pub const CALLBACK_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One admitted callback; gives its slot back when dropped.
pub(super) struct InFlight<'a>(pub(super) &'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The callback route alone, mounted on the main router or on its own listener.
pub fn router(receiver: Arc<CallbackReceiver>, path: &str) -> Router {
    Router::new().route(path, post(handle)).with_state(receiver)
}

/// Why a body could not be read whole.
enum BodyError {
    /// Longer than `callback.max_body_bytes`: 413.
    TooLarge(String),
    /// The body itself is broken (a bad chunk size, a connection cut mid-body): 400 `malformed`.
    Broken(String),
}

/// Reads at most `max` bytes; a longer body is drained up to [`DRAIN_LIMIT`] and refused.
async fn read_limited(body: Body, max: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(format!("body broken off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge(format!(
            "body of {seen} bytes or more, larger than {max}"
        )));
    }
    Ok(buf)
}

async fn handle(State(receiver): State<Arc<CallbackReceiver>>, request: Request) -> Response {
    let max = receiver.max_body_bytes();
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let processed = Processed {
            sdk_app_id: 0,
            event_type: "other",
            outcome: CallbackOutcome::TooLarge,
            reason: format!(
                "declared body of {} bytes, larger than {max}",
                declared.unwrap_or_default()
            ),
            delay_seconds: None,
            task_id: None,
            finish_reason: None,
        };
        receiver.record(&processed);
        receiver.remember(&processed, StatusCode::PAYLOAD_TOO_LARGE, None);
        return (
            [("connection", "close")],
            error_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body larger than callback.max_body_bytes",
            ),
        )
            .into_response();
    }
    // Relay mode keeps the headers TIW sent, to send them on with the body.
    let relay = receiver.relay.as_ref().filter(|r| r.enabled()).cloned();
    let headers = relay.as_ref().map(|_| request.headers().clone());
    let deadline = receiver.read_timeout.min(CALLBACK_BODY_TIMEOUT);
    let read = match tokio::time::timeout(deadline, read_limited(request.into_body(), max)).await {
        Ok(read) => read,
        Err(_) => {
            receiver.metrics.http.refused("callback", "body_timeout");
            tracing::debug!(timeout = ?deadline, "callback body did not arrive in time");
            return (
                [("connection", "close")],
                error_reply(StatusCode::REQUEST_TIMEOUT, "body did not arrive in time"),
            )
                .into_response();
        }
    };
    // Past the cap, shed load at once: TIW delivers a refused event again, and the rest of the
    // server (scrapes above all) keeps its share of the machine.
    let Some(_slot) = receiver.admit() else {
        receiver.metrics.http.refused("callback", "overloaded");
        // Closing the connection gives its slot (--web.max-connections) back at once.
        return (
            [("retry-after", "1"), ("connection", "close")],
            error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many callbacks at once, retry later",
            ),
        )
            .into_response();
    };
    // Relay mode: queued for the app's backend before the exporter looks at it, whatever it
    // makes of it; answered 200 once the queue entry is on disk (below).
    let relayed = match (&relay, &read, &headers) {
        (Some(relay), Ok(bytes), Some(headers)) => match relay.enqueue(headers, bytes) {
            Ok(_) => true,
            Err(NotQueued::NotRelayed) => false,
            Err(NotQueued::Full(app)) => {
                if let Some(suppressed) = receiver.refusal_to_log(app, "forward_queue_full") {
                    tracing::warn!(
                        sdk_app_id = app,
                        refused_since_last_line = suppressed,
                        "callback relay queue full (callback.forward.max_queue or max_queue_bytes): answered 503, TIW retries; is the backend down?"
                    );
                }
                return (
                    [("retry-after", "5")],
                    error_reply(StatusCode::SERVICE_UNAVAILABLE, "relay queue full, retry later"),
                )
                    .into_response();
            }
        },
        _ => false,
    };
    let processed = match read {
        Ok(bytes) => receiver.process(&bytes, unix_now()),
        Err(e) => {
            let (outcome, reason) = match e {
                BodyError::TooLarge(reason) => (CallbackOutcome::TooLarge, reason),
                BodyError::Broken(reason) => (CallbackOutcome::Malformed, reason),
            };
            Processed {
                sdk_app_id: 0,
                event_type: "other",
                outcome,
                reason,
                delay_seconds: None,
                task_id: None,
                finish_reason: None,
            }
        }
    };
    receiver.record(&processed);
    // Accepted or duplicate, the reply promises durability: a duplicate may be the retry of an
    // event whose first write failed. A relayed request is answered 200 once its queue entry (and
    // the exporter's own change) is on disk, whatever the exporter made of it: the backend's answer
    // comes later, so the relay takes over TIW's retries.
    if relayed
        || matches!(
            processed.outcome,
            CallbackOutcome::Accepted | CallbackOutcome::Duplicate
        )
    {
        if let Some(store) = &receiver.store {
            if store.flush().await.is_err() {
                let why = "the store could not write it: not acknowledged, TIW retries";
                receiver.remember(&processed, StatusCode::SERVICE_UNAVAILABLE, Some(why));
                return error_reply(StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry later");
            }
        }
    }
    let own = processed.outcome.status();
    let status = if relayed { StatusCode::OK } else { own };
    let relayed_note = relayed.then(|| match own {
        StatusCode::OK => "relayed to the backend".to_string(),
        _ => format!(
            "relayed to the backend; the exporter itself refused it ({} {}): {}",
            own.as_u16(),
            processed.outcome.label(),
            processed.reason
        ),
    });
    receiver.remember(&processed, status, relayed_note.as_deref());
    if processed.outcome == CallbackOutcome::Full && !relayed {
        return (
            [("retry-after", "5")],
            error_reply(status, "too many tracked tasks (retention.max_tasks), retry later"),
        )
            .into_response();
    }
    if own == StatusCode::OK {
        if processed.outcome == CallbackOutcome::Accepted && receiver.first_for_app(processed.sdk_app_id) {
            tracing::info!(
                sdk_app_id = processed.sdk_app_id,
                event_type = processed.event_type,
                task_id = processed.task_id.as_deref().unwrap_or(""),
                relayed,
                "first callback accepted for this app: TIW reaches the exporter and the key matches"
            );
        }
    } else if let Some(suppressed) = receiver.refusal_to_log(processed.sdk_app_id, processed.outcome.label()) {
        // At info, so that a wrong key shows in the log at once; at most once a minute per app and
        // outcome. The reason is the receiver's own words: never a key, a Sign or the body. A
        // relayed request is answered 200 all the same (`relayed=true`).
        tracing::info!(
            sdk_app_id = processed.sdk_app_id,
            event_type = processed.event_type,
            outcome = processed.outcome.label(),
            status = status.as_u16(),
            reason = %processed.reason,
            refused_since_last_line = suppressed,
            relayed,
            "callback refused"
        );
    }
    if status == StatusCode::OK {
        (status, [("content-type", "application/json")], r#"{"error_code":0}"#).into_response()
    } else {
        error_reply(status, processed.outcome.label())
    }
}

/// A refusal as TIW's callback replies are shaped: `{"error_code": <HTTP status>, "error_msg": ...}`.
fn error_reply(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error_code": status.as_u16(), "error_msg": message });
    (status, axum::Json(body)).into_response()
}
