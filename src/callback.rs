//! The callback receiver: verify → parse → apply (SPEC §3).
//!
//! TIW POSTs `WhiteboardPushStarted` / `WhiteboardPushStopped` events. They are the fast path, but
//! can be forged, replayed, duplicated, reordered or lost, so every event goes through the same
//! checks, in this order, each failure with its own outcome and status and no state change:
//! body too large (413) → not JSON or wrong field types (400 `malformed`) → SdkAppId not configured
//! (403 `unknown_app`) → app has a key but the event is unsigned (401 `unsigned`) → Sign is not
//! MD5(key + ExpireTime), compared in constant time (401 `bad_signature`) → now > ExpireTime (401
//! `expired`). Then the registry applies each push event once per task (later copies are
//! `duplicate`); other event types are `ignored`. [`CallbackReceiver::process`] is pure apart from
//! the registry, so it is tested and fuzzed without HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::metrics::ExporterMetrics;
use crate::registry::{unix_now, CallbackApplied, FinishReason, Observation, PushEvent, TaskRegistry, TaskStatus};
use crate::store::StoreHandle;

pub const STARTED: &str = "WhiteboardPushStarted";
pub const STOPPED: &str = "WhiteboardPushStopped";

/// Largest value accepted for unix times, room ids and counts (u32: TRTC's room ids, times to 2106).
const MAX_U32: u64 = u32::MAX as u64;
/// An oversized body is read (and thrown away) up to this size before the 413, so that the
/// sender, still writing, gets the answer rather than a broken pipe; beyond it the connection closes.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// What became of one callback (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    Accepted,
    Duplicate,
    BadSignature,
    Expired,
    Unsigned,
    UnknownApp,
    Malformed,
    /// The body was larger than `callback.max_body_bytes` (counted as `malformed`, answered 413).
    TooLarge,
    Ignored,
}

impl CallbackOutcome {
    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            CallbackOutcome::Accepted => "accepted",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::BadSignature => "bad_signature",
            CallbackOutcome::Expired => "expired",
            CallbackOutcome::Unsigned => "unsigned",
            CallbackOutcome::UnknownApp => "unknown_app",
            CallbackOutcome::Malformed | CallbackOutcome::TooLarge => "malformed",
            CallbackOutcome::Ignored => "ignored",
        }
    }

    /// The HTTP status TIW gets. Only 200 stops TIW's retries.
    pub fn status(self) -> StatusCode {
        match self {
            CallbackOutcome::Accepted | CallbackOutcome::Duplicate | CallbackOutcome::Ignored => StatusCode::OK,
            CallbackOutcome::Malformed => StatusCode::BAD_REQUEST,
            CallbackOutcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CallbackOutcome::UnknownApp => StatusCode::FORBIDDEN,
            CallbackOutcome::Unsigned | CallbackOutcome::BadSignature | CallbackOutcome::Expired => {
                StatusCode::UNAUTHORIZED
            }
        }
    }
}

/// The result of processing one body.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// `WhiteboardPushStarted`, `WhiteboardPushStopped` or `other`.
    pub event_type: &'static str,
    pub outcome: CallbackOutcome,
    /// Why it was refused, for the debug log and the reply (never contains a key).
    pub reason: String,
    /// receive time − Timestamp, for verified push events.
    pub delay_seconds: Option<f64>,
}

/// `lowercase hex MD5(key + decimal ExpireTime)`, TIW's callback signature.
pub fn compute_sign(key: &str, expire_time: u64) -> String {
    let mut h = Md5::new();
    h.update(key.as_bytes());
    h.update(expire_time.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Whether `sign` is the signature of `expire_time` under `key`, compared in constant time.
pub fn verify_sign(key: &str, expire_time: u64, sign: &str) -> bool {
    compute_sign(key, expire_time).as_bytes().ct_eq(sign.as_bytes()).into()
}

/// The envelope, parsed in one pass; EventData is kept as raw JSON until the type is known.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "EventType")]
    event_type: String,
    #[serde(rename = "EventData", borrow)]
    event_data: &'a serde_json::value::RawValue,
    #[serde(rename = "SdkAppId")]
    sdk_app_id: u64,
    #[serde(rename = "Timestamp")]
    timestamp: u64,
    #[serde(rename = "ExpireTime", default)]
    expire_time: Option<u64>,
    #[serde(rename = "Sign", default)]
    sign: Option<String>,
}

#[derive(Deserialize)]
struct EventError {
    #[serde(rename = "Code", default)]
    code: Option<Value>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

/// EventData of both push events; which fields are required depends on the event.
#[derive(Deserialize)]
struct PushData {
    #[serde(rename = "TaskId")]
    task_id: String,
    #[serde(rename = "RoomId", default)]
    room_id: Option<u64>,
    #[serde(rename = "GroupId", default)]
    group_id: Option<String>,
    #[serde(rename = "PushUserId", default)]
    push_user_id: Option<String>,
    #[serde(rename = "FinishReason", default)]
    finish_reason: Option<String>,
    #[serde(rename = "PushStartTime", default)]
    push_start_time: Option<u64>,
    #[serde(rename = "PushStopTime", default)]
    push_stop_time: Option<u64>,
    #[serde(rename = "IMSyncTime", default)]
    im_sync_time: Option<u64>,
    #[serde(rename = "ExceptionCnt", default)]
    exception_cnt: Option<u64>,
    #[serde(rename = "Error", default)]
    error: Option<EventError>,
}

/// A push event that parsed and passed the field checks.
struct PushEventData {
    kind: PushEvent,
    task_id: String,
    observation: Observation,
    error: Option<(String, String)>,
}

fn parse_push(kind: PushEvent, data: &serde_json::value::RawValue) -> Result<PushEventData, String> {
    let d: PushData = serde_json::from_str(data.get()).map_err(|e| format!("EventData: {e}"))?;
    if !crate::registry::is_task_id(&d.task_id) {
        return Err("EventData.TaskId: expected a task id of 1 to 128 printable characters".into());
    }
    for (name, v) in [
        ("RoomId", d.room_id),
        ("PushStartTime", d.push_start_time),
        ("PushStopTime", d.push_stop_time),
        ("IMSyncTime", d.im_sync_time),
        ("ExceptionCnt", d.exception_cnt),
    ] {
        if v.is_some_and(|v| v > MAX_U32) {
            return Err(format!("EventData.{name}: out of range"));
        }
    }
    let finish_reason = match (kind, d.finish_reason.as_deref()) {
        (PushEvent::Stopped, Some(r)) => match FinishReason::from_tencent(r) {
            Some(r) => Some(r),
            None => {
                return Err(format!(
                    "EventData.FinishReason: expected AUTO, USER_CALL or EXCEPTION, got {:?}",
                    truncate(r, 32)
                ))
            }
        },
        (PushEvent::Stopped, None) => return Err("EventData.FinishReason: missing".into()),
        (PushEvent::Started, _) => None,
    };
    let as_i64 = |v: Option<u64>| v.map(|v| v as i64);
    let error = d.error.and_then(|e| {
        let code = match e.code? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some((code, e.message.unwrap_or_default()))
    });
    Ok(PushEventData {
        kind,
        task_id: d.task_id,
        observation: Observation {
            status: Some(match kind {
                PushEvent::Started => TaskStatus::Pushing,
                PushEvent::Stopped => TaskStatus::Stopped,
            }),
            finish_reason,
            room_id: as_i64(d.room_id),
            group_id: d.group_id,
            push_user_id: d.push_user_id,
            push_start_time: as_i64(d.push_start_time),
            push_stop_time: as_i64(d.push_stop_time),
            exception_cnt: d.exception_cnt,
            im_sync_time: as_i64(d.im_sync_time),
        },
        error,
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Receives callbacks for the configured apps.
pub struct CallbackReceiver {
    registry: Arc<TaskRegistry>,
    metrics: Arc<ExporterMetrics>,
    /// SdkAppId → callback key (`None`: unsigned callbacks accepted).
    /// SdkAppId → keys a signature may match (the key, and during a rotation the previous one);
    /// empty: unsigned callbacks accepted.
    keys: std::sync::RwLock<HashMap<u64, Vec<SecretString>>>,
    max_body_bytes: AtomicUsize,
    /// `callback.max_in_flight`, and how many are being handled now.
    max_in_flight: AtomicUsize,
    in_flight: AtomicUsize,
    /// How long a body may take to arrive, in milliseconds (`--web.read-timeout`).
    read_timeout_ms: AtomicU64,
    /// Where a taken event is made durable before it is answered 200.
    store: std::sync::OnceLock<StoreHandle>,
}

impl CallbackReceiver {
    pub fn new(config: &Config, registry: Arc<TaskRegistry>, metrics: Arc<ExporterMetrics>) -> Self {
        let receiver = CallbackReceiver {
            registry,
            metrics,
            keys: Default::default(),
            max_body_bytes: Default::default(),
            max_in_flight: Default::default(),
            in_flight: Default::default(),
            read_timeout_ms: AtomicU64::new(10_000),
            store: Default::default(),
        };
        receiver.reconfigure(config);
        receiver
    }

    /// Takes the apps, keys and body limit of a (re)loaded config.
    pub fn reconfigure(&self, config: &Config) {
        let keys = config
            .apps
            .iter()
            .map(|a| {
                (
                    a.sdk_app_id,
                    a.callback_key.iter().chain(&a.callback_key_previous).cloned().collect(),
                )
            })
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        self.max_body_bytes
            .store(config.callback.max_body_bytes, Ordering::Relaxed);
        self.max_in_flight
            .store(config.callback.max_in_flight, Ordering::Relaxed);
    }

    /// The largest body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.load(Ordering::Relaxed)
    }

    /// Sets how long a body may take to arrive before the request is answered 408.
    pub fn set_read_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        self.read_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// A slot among `callback.max_in_flight`, or `None` when all are taken.
    fn admit(&self) -> Option<InFlight<'_>> {
        let max = self.max_in_flight.load(Ordering::Relaxed);
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then(|| n + 1))
            .is_ok();
        // `then`, not `then_some`: a guard built and dropped on refusal would free a slot it never took.
        admitted.then(|| InFlight(&self.in_flight))
    }

    /// From now on, an event is answered 200 only once the store has it on disk.
    pub fn set_store(&self, store: StoreHandle) {
        let _ = self.store.set(store);
    }

    /// Verifies, parses and applies one body received at unix time `now`.
    pub fn process(&self, body: &[u8], now: f64) -> Processed {
        let refuse = |event_type, outcome, reason: String| Processed {
            event_type,
            outcome,
            reason,
            delay_seconds: None,
        };
        let max_body_bytes = self.max_body_bytes();
        if body.len() > max_body_bytes {
            return refuse(
                "other",
                CallbackOutcome::TooLarge,
                format!("body larger than {max_body_bytes} bytes"),
            );
        }
        // Label from a best-effort look at EventType, so even a malformed push event is counted as one.
        // One typed pass for the common case; only a body that fails it is looked at again, to
        // label a malformed push event with its type.
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => {
                let event_type = match serde_json::from_slice::<Value>(body) {
                    Ok(v) => match v.get("EventType").and_then(Value::as_str) {
                        Some(STARTED) => STARTED,
                        Some(STOPPED) => STOPPED,
                        _ => "other",
                    },
                    Err(_) => return refuse("other", CallbackOutcome::Malformed, format!("not JSON: {e}")),
                };
                return refuse(event_type, CallbackOutcome::Malformed, format!("{e}"));
            }
        };
        let (event_type, kind) = match envelope.event_type.as_str() {
            STARTED => (STARTED, Some(PushEvent::Started)),
            STOPPED => (STOPPED, Some(PushEvent::Stopped)),
            _ => ("other", None),
        };
        if !envelope.event_data.get().starts_with('{') {
            return refuse(
                event_type,
                CallbackOutcome::Malformed,
                "EventData: expected an object".into(),
            );
        }
        let push = match kind.map(|k| parse_push(k, envelope.event_data)) {
            Some(Ok(p)) => Some(p),
            Some(Err(reason)) => return refuse(event_type, CallbackOutcome::Malformed, reason),
            None => None,
        };
        let key = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&envelope.sdk_app_id)
            .cloned();
        let Some(key) = key else {
            return refuse(
                event_type,
                CallbackOutcome::UnknownApp,
                format!("SdkAppId {} is not configured", envelope.sdk_app_id),
            );
        };
        if !key.is_empty() {
            let (Some(expire_time), Some(sign)) = (envelope.expire_time, envelope.sign.as_deref()) else {
                return refuse(
                    event_type,
                    CallbackOutcome::Unsigned,
                    "the app has a callback key but the event has no Sign/ExpireTime".into(),
                );
            };
            if !key.iter().any(|k| verify_sign(k.expose_secret(), expire_time, sign)) {
                return refuse(
                    event_type,
                    CallbackOutcome::BadSignature,
                    "Sign does not match MD5(key + ExpireTime)".into(),
                );
            }
            if now > expire_time as f64 {
                return refuse(
                    event_type,
                    CallbackOutcome::Expired,
                    format!("ExpireTime {expire_time} has passed"),
                );
            }
        }
        let Some(push) = push else {
            return Processed {
                event_type,
                outcome: CallbackOutcome::Ignored,
                reason: String::new(),
                delay_seconds: None,
            };
        };
        let app = envelope.sdk_app_id;
        if let Some((code, message)) = &push.error {
            tracing::warn!(sdk_app_id = app, task_id = %push.task_id, code = %truncate(code, 64), message = %truncate(message, 200), "WhiteboardPushStopped reports an error");
        }
        let outcome = match self
            .registry
            .observe_callback(app, &push.task_id, push.kind, &push.observation)
        {
            CallbackApplied::Accepted(applied) => {
                if applied.ended {
                    tracing::debug!(sdk_app_id = app, task_id = %push.task_id, reason = ?push.observation.finish_reason, "task ended (callback)");
                }
                CallbackOutcome::Accepted
            }
            CallbackApplied::Duplicate => CallbackOutcome::Duplicate,
        };
        Processed {
            event_type,
            outcome,
            reason: String::new(),
            delay_seconds: Some((now - envelope.timestamp as f64).max(0.0)),
        }
    }

    /// Counts a processed callback on `/metrics`.
    fn record(&self, p: &Processed) {
        self.metrics
            .callbacks
            .with_label_values(&[p.event_type, p.outcome.label()])
            .inc();
        if let Some(delay) = p.delay_seconds {
            self.metrics
                .callback_delay
                .with_label_values(&[p.event_type])
                .observe(delay);
        }
    }
}

/// One admitted callback; gives its slot back when dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The callback route alone, mounted on the main router or on its own listener.
pub fn router(receiver: Arc<CallbackReceiver>, path: &str) -> Router {
    Router::new().route(path, post(handle)).with_state(receiver)
}

/// Reads at most `max` bytes; a longer body is drained up to [`DRAIN_LIMIT`] and refused.
async fn read_limited(body: Body, max: usize) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body broken off: {e}"))?;
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
        return Err(format!("body of {seen} bytes or more, larger than {max}"));
    }
    Ok(buf)
}

async fn handle(State(receiver): State<Arc<CallbackReceiver>>, body: Body) -> Response {
    // Past the cap, shed load at once: TIW delivers a refused event again, and the rest of the
    // server (scrapes above all) keeps its share of the machine.
    let Some(_slot) = receiver.admit() else {
        receiver.metrics.count_refused("callback", "overloaded");
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
    let deadline = Duration::from_millis(receiver.read_timeout_ms.load(Ordering::Relaxed));
    let read = match tokio::time::timeout(deadline, read_limited(body, receiver.max_body_bytes())).await {
        Ok(read) => read,
        Err(_) => {
            receiver.metrics.count_refused("callback", "body_timeout");
            tracing::debug!(timeout = ?deadline, "callback body did not arrive in time");
            return (
                [("connection", "close")],
                error_reply(StatusCode::REQUEST_TIMEOUT, "body did not arrive in time"),
            )
                .into_response();
        }
    };
    let processed = match read {
        Ok(bytes) => receiver.process(&bytes, unix_now()),
        Err(reason) => Processed {
            event_type: "other",
            outcome: CallbackOutcome::TooLarge,
            reason,
            delay_seconds: None,
        },
    };
    receiver.record(&processed);
    // Accepted or duplicate, the reply promises durability: a duplicate may be the retry of an
    // event whose first write failed.
    if matches!(
        processed.outcome,
        CallbackOutcome::Accepted | CallbackOutcome::Duplicate
    ) {
        if let Some(store) = receiver.store.get() {
            if store.flush().await.is_err() {
                return error_reply(StatusCode::SERVICE_UNAVAILABLE, "store unavailable, retry later");
            }
        }
    }
    let status = processed.outcome.status();
    if status == StatusCode::OK {
        (status, [("content-type", "application/json")], r#"{"error_code":0}"#).into_response()
    } else {
        tracing::debug!(event_type = processed.event_type, outcome = processed.outcome.label(), reason = %processed.reason, "callback refused");
        error_reply(status, processed.outcome.label())
    }
}

/// A refusal as TIW's callback replies are shaped: `{"error_code": <HTTP status>, "error_msg": ...}`.
fn error_reply(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error_code": status.as_u16(), "error_msg": message });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(registry: Arc<TaskRegistry>) -> CallbackReceiver {
        let yaml =
            "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7, callback_key: k}, {sdk_app_id: 8}]\n";
        let config = Config::from_yaml(yaml, &|_| None).unwrap();
        let metrics = ExporterMetrics::new(registry.clone(), true);
        CallbackReceiver::new(&config, registry, metrics)
    }

    #[test]
    fn stopped_with_an_error_keeps_its_reason() {
        let registry = Arc::new(TaskRegistry::new());
        let r = receiver(registry.clone());
        let body = serde_json::json!({
            "EventType": STOPPED, "SdkAppId": 8, "Timestamp": 1_700_000_000u64,
            "EventData": {"TaskId": "t1", "FinishReason": "EXCEPTION", "PushStartTime": 1_699_999_000u64,
                          "PushStopTime": 1_700_000_000u64, "ExceptionCnt": 3,
                          "Error": {"Code": "InternalError", "Message": "render process crashed"}}
        });
        let p = r.process(body.to_string().as_bytes(), 1_700_000_002.0);
        assert_eq!((p.event_type, p.outcome), (STOPPED, CallbackOutcome::Accepted));
        assert_eq!(p.delay_seconds, Some(2.0));
        let t = registry.get(8, "t1").unwrap();
        assert_eq!(
            (t.status, t.finish_reason, t.exception_cnt),
            (TaskStatus::Stopped, Some(FinishReason::Exception), 3)
        );
    }

    /// During a key rotation both keys are taken; afterwards only the new one.
    #[test]
    fn a_rotation_accepts_the_previous_key_until_it_is_removed() {
        let registry = Arc::new(TaskRegistry::new());
        let rotating = "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7, callback_key: new, callback_key_previous: old}]\n";
        let config = Config::from_yaml(rotating, &|_| None).unwrap();
        let r = CallbackReceiver::new(&config, registry.clone(), ExporterMetrics::new(registry, true));
        let event = |key: &str, task: &str| {
            format!(
                r#"{{"EventType":"WhiteboardPushStarted","SdkAppId":7,"Timestamp":1,"EventData":{{"TaskId":"{task}"}},"ExpireTime":9,"Sign":"{}"}}"#,
                compute_sign(key, 9)
            )
        };
        assert_eq!(
            r.process(event("old", "a").as_bytes(), 1.0).outcome,
            CallbackOutcome::Accepted
        );
        assert_eq!(
            r.process(event("new", "b").as_bytes(), 1.0).outcome,
            CallbackOutcome::Accepted
        );
        assert_eq!(
            r.process(event("other", "c").as_bytes(), 1.0).outcome,
            CallbackOutcome::BadSignature
        );
        let done = Config::from_yaml(&rotating.replace(", callback_key_previous: old", ""), &|_| None).unwrap();
        r.reconfigure(&done);
        assert_eq!(
            r.process(event("old", "d").as_bytes(), 1.0).outcome,
            CallbackOutcome::BadSignature
        );
        assert_eq!(
            r.process(event("new", "e").as_bytes(), 1.0).outcome,
            CallbackOutcome::Accepted
        );
        let orphan = Config::from_yaml(&rotating.replace("callback_key: new, ", ""), &|_| None).unwrap_err();
        assert!(
            orphan
                .to_string()
                .contains("apps[0].callback_key_previous: set without callback_key"),
            "{orphan}"
        );
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let r = receiver(Arc::new(TaskRegistry::new()));
        // Malformed beats unknown app; unknown app beats unsigned; unsigned beats everything after.
        let bad_app_and_shape = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":99,"Timestamp":1,"EventData":{}}"#;
        assert_eq!(
            r.process(bad_app_and_shape.as_bytes(), 0.0).outcome,
            CallbackOutcome::Malformed
        );
        let unknown = r#"{"EventType":"X","SdkAppId":99,"Timestamp":1,"EventData":{}}"#;
        assert_eq!(r.process(unknown.as_bytes(), 0.0).outcome, CallbackOutcome::UnknownApp);
        let unsigned = r#"{"EventType":"X","SdkAppId":7,"Timestamp":1,"EventData":{}}"#;
        assert_eq!(r.process(unsigned.as_bytes(), 0.0).outcome, CallbackOutcome::Unsigned);
        // A wrong signature on an expired event is a bad signature, not merely expired.
        let wrong = r#"{"EventType":"X","SdkAppId":7,"Timestamp":1,"EventData":{},"ExpireTime":5,"Sign":"00"}"#;
        assert_eq!(r.process(wrong.as_bytes(), 10.0).outcome, CallbackOutcome::BadSignature);
        let expired = format!(
            r#"{{"EventType":"X","SdkAppId":7,"Timestamp":1,"EventData":{{}},"ExpireTime":5,"Sign":"{}"}}"#,
            compute_sign("k", 5)
        );
        assert_eq!(r.process(expired.as_bytes(), 10.0).outcome, CallbackOutcome::Expired);
        assert_eq!(r.process(expired.as_bytes(), 5.0).outcome, CallbackOutcome::Ignored);
    }

    #[test]
    fn tencent_documented_sign_vector() {
        assert_eq!(
            compute_sign("Xz4ZgayTr7rMgWQrH", 1588040109),
            "a2dabb362a9b811c0e26953a6276a41c"
        );
        assert!(verify_sign(
            "Xz4ZgayTr7rMgWQrH",
            1588040109,
            "a2dabb362a9b811c0e26953a6276a41c"
        ));
        assert!(!verify_sign(
            "Xz4ZgayTr7rMgWQrH",
            1588040110,
            "a2dabb362a9b811c0e26953a6276a41c"
        ));
        assert!(!verify_sign(
            "Xz4ZgayTr7rMgWQrH",
            1588040109,
            "A2DABB362A9B811C0E26953A6276A41C"
        ));
        assert!(!verify_sign("Xz4ZgayTr7rMgWQrH", 1588040109, ""));
    }
}
