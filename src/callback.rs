//! The callback receiver: verify → parse → apply (SPEC §3).
//!
//! TIW POSTs `WhiteboardPushStarted` / `WhiteboardPushStopped` events. They are the fast path, but
//! can be forged, replayed, duplicated, reordered or lost, so every event goes through the same
//! checks, in SPEC §3's order, each failure with its own outcome and status and no state change:
//! body too large (413) → not the JSON envelope (400 `malformed`) → SdkAppId not configured (403
//! `unknown_app`) → event type: any other TIW feature's event is answered 200 `ignored` *before*
//! any signature check (each feature signs with its own key) → the app has no key and does not
//! allow unsigned events, or has a key and the event is unsigned (401 `unsigned`) → Sign is not
//! MD5(key + ExpireTime), compared in constant time (401 `bad_signature`) → now > ExpireTime (401
//! `expired`) → push fields (400 `malformed`) → the registry applies each push event once per task
//! (later copies are `duplicate`) as a *claim* that the next poll confirms. A new task when
//! `retention.max_tasks` are tracked is answered 503 so TIW retries it.
//! [`CallbackReceiver::process`] is pure apart from the registry, so it is tested and fuzzed
//! without HTTP.

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
use crate::registry::{CallbackApplied, TaskRegistry};
use crate::store::StoreHandle;
use crate::task::{is_task_id, truncate, unix_now, FinishReason, Observation, PushEvent, TaskStatus};

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
    /// A new task while `retention.max_tasks` are tracked: answered 503 so TIW retries; counted in
    /// `tiw_exporter_tasks_dropped_total{reason="limit"}`, not as a callback outcome.
    Full,
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
            CallbackOutcome::Full => "",
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
            CallbackOutcome::Full => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The result of processing one body.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// The configured app the body names, or 0 when it names none (`sdk_app_id=""`).
    pub sdk_app_id: u64,
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
    if !is_task_id(&d.task_id) {
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
    // SPEC §3: only TaskId is required. A Stopped without FinishReason, or with a value Tencent
    // does not document, still ends the task: OTHER until the confirming poll says better.
    let finish_reason = match kind {
        PushEvent::Stopped => Some(FinishReason::of_stop(d.finish_reason.as_deref())),
        PushEvent::Started => None,
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
            truncated: 0,
        }
        .bounded(),
        error,
    })
}

/// How one app's push events are verified.
#[derive(Clone, Default)]
struct AppKeys {
    /// Keys a signature may match: the key, and during a rotation the previous one.
    keys: Vec<SecretString>,
    /// No key: accept unsigned push events (`allow_unsigned_callbacks`).
    allow_unsigned: bool,
}

/// Receives callbacks for the configured apps.
pub struct CallbackReceiver {
    registry: Arc<TaskRegistry>,
    metrics: Arc<ExporterMetrics>,
    /// How each configured app's push events are verified.
    keys: std::sync::RwLock<HashMap<u64, AppKeys>>,
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
                let keys = AppKeys {
                    keys: a.callback_key.iter().chain(&a.callback_key_previous).cloned().collect(),
                    allow_unsigned: a.allow_unsigned_callbacks,
                };
                (a.sdk_app_id, keys)
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
        let refuse = |sdk_app_id, event_type, outcome, reason: String| Processed {
            sdk_app_id,
            event_type,
            outcome,
            reason,
            delay_seconds: None,
        };
        let max_body_bytes = self.max_body_bytes();
        if body.len() > max_body_bytes {
            return refuse(
                0,
                "other",
                CallbackOutcome::TooLarge,
                format!("body larger than {max_body_bytes} bytes"),
            );
        }
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
                    Err(_) => return refuse(0, "other", CallbackOutcome::Malformed, format!("not JSON: {e}")),
                };
                return refuse(0, event_type, CallbackOutcome::Malformed, format!("{e}"));
            }
        };
        let (event_type, kind) = match envelope.event_type.as_str() {
            STARTED => (STARTED, Some(PushEvent::Started)),
            STOPPED => (STOPPED, Some(PushEvent::Stopped)),
            _ => ("other", None),
        };
        if !envelope.event_data.get().starts_with('{') {
            return refuse(
                0,
                event_type,
                CallbackOutcome::Malformed,
                "EventData: expected an object".into(),
            );
        }
        let app = envelope.sdk_app_id;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(&app).cloned();
        let Some(keys) = keys else {
            return refuse(
                0,
                event_type,
                CallbackOutcome::UnknownApp,
                format!("SdkAppId {app} is not configured"),
            );
        };
        // Another TIW feature's event (transcoding, recording, ...) is signed with that feature's
        // own key (SetTranscodeCallbackKey, ...): taken and ignored without a signature check.
        let Some(kind) = kind else {
            return refuse(app, event_type, CallbackOutcome::Ignored, String::new());
        };
        match (keys.keys.is_empty(), envelope.expire_time, envelope.sign.as_deref()) {
            (true, _, _) if keys.allow_unsigned => {}
            (true, _, _) => {
                return refuse(
                    app,
                    event_type,
                    CallbackOutcome::Unsigned,
                    "the app has no callback_key and does not set allow_unsigned_callbacks".into(),
                )
            }
            (false, Some(expire_time), Some(sign)) => {
                if !keys
                    .keys
                    .iter()
                    .any(|k| verify_sign(k.expose_secret(), expire_time, sign))
                {
                    return refuse(
                        app,
                        event_type,
                        CallbackOutcome::BadSignature,
                        "Sign does not match MD5(key + ExpireTime)".into(),
                    );
                }
                if now > expire_time as f64 {
                    return refuse(
                        app,
                        event_type,
                        CallbackOutcome::Expired,
                        format!("ExpireTime {expire_time} has passed"),
                    );
                }
            }
            (false, _, _) => {
                return refuse(
                    app,
                    event_type,
                    CallbackOutcome::Unsigned,
                    "the app has a callback key but the event has no Sign/ExpireTime".into(),
                )
            }
        }
        let push = match parse_push(kind, envelope.event_data) {
            Ok(p) => p,
            Err(reason) => return refuse(app, event_type, CallbackOutcome::Malformed, reason),
        };
        if push.observation.truncated > 0 {
            self.metrics.count_truncated("callback", push.observation.truncated);
        }
        if let Some((code, message)) = &push.error {
            tracing::warn!(sdk_app_id = app, task_id = %push.task_id, code = %truncate(code, 64), error_message = %truncate(message, 200), "WhiteboardPushStopped reports an error");
        }
        let outcome = match self
            .registry
            .observe_callback(app, &push.task_id, push.kind, &push.observation)
        {
            CallbackApplied::Accepted { ended } => {
                if ended {
                    tracing::debug!(sdk_app_id = app, task_id = %push.task_id, reason = ?push.observation.finish_reason, "task ended (callback claim, to be confirmed)");
                }
                CallbackOutcome::Accepted
            }
            CallbackApplied::Duplicate => CallbackOutcome::Duplicate,
            CallbackApplied::Full => {
                return refuse(
                    app,
                    event_type,
                    CallbackOutcome::Full,
                    "retention.max_tasks tasks are tracked".into(),
                )
            }
        };
        Processed {
            sdk_app_id: app,
            event_type,
            outcome,
            reason: String::new(),
            delay_seconds: Some((now - envelope.timestamp as f64).max(0.0)),
        }
    }

    /// Counts a processed callback on `/metrics`.
    fn record(&self, p: &Processed) {
        if p.outcome == CallbackOutcome::Full {
            self.metrics.count_dropped(p.sdk_app_id, "limit");
        } else {
            self.metrics
                .count_callback(p.sdk_app_id, p.event_type, p.outcome.label());
        }
        if let Some(delay) = p.delay_seconds {
            self.metrics
                .callback_delay
                .with_label_values(&[p.event_type])
                .observe(delay);
        }
    }
}

/// Says which apps take unsigned push events, and which can take no callback at all.
pub fn log_trust(config: &Config) {
    for app in &config.apps {
        match (&app.callback_key, app.allow_unsigned_callbacks) {
            (Some(_), _) => {}
            (None, true) => tracing::warn!(
                sdk_app_id = app.sdk_app_id,
                "this app accepts unsigned push callbacks (allow_unsigned_callbacks): anyone who finds the callback URL can claim tasks for it"
            ),
            (None, false) => tracing::info!(
                sdk_app_id = app.sdk_app_id,
                "this app has no callback_key: its push callbacks are refused as unsigned and it is watched by polling alone"
            ),
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
            }
        }
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
    if processed.outcome == CallbackOutcome::Full {
        return (
            [("retry-after", "5")],
            error_reply(status, "too many tracked tasks (retention.max_tasks), retry later"),
        )
            .into_response();
    }
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
        let yaml = "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7, callback_key: k}, {sdk_app_id: 8, allow_unsigned_callbacks: true}, {sdk_app_id: 9}]\n";
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
        let outcome = |body: &str, now: f64| r.process(body.as_bytes(), now).outcome;
        assert_eq!(outcome("{not json", 0.0), CallbackOutcome::Malformed);
        // The envelope comes first, then the app: an unknown app's push fields are never read.
        let bad_app_and_shape = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":99,"Timestamp":1,"EventData":{}}"#;
        assert_eq!(outcome(bad_app_and_shape, 0.0), CallbackOutcome::UnknownApp);
        // Another feature's event is ignored before any signature check, signed or not.
        let other =
            r#"{"EventType":"TranscodeFinished","SdkAppId":7,"Timestamp":1,"EventData":{},"ExpireTime":5,"Sign":"00"}"#;
        assert_eq!(outcome(other, 0.0), CallbackOutcome::Ignored);
        let unsigned = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":7,"Timestamp":1,"EventData":{}}"#;
        assert_eq!(outcome(unsigned, 0.0), CallbackOutcome::Unsigned);
        // An app without a key refuses unsigned push events unless it allows them.
        let no_key = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":9,"Timestamp":1,"EventData":{"TaskId":"a"}}"#;
        assert_eq!(outcome(no_key, 0.0), CallbackOutcome::Unsigned);
        let allowed = no_key.replace("\"SdkAppId\":9", "\"SdkAppId\":8");
        assert_eq!(outcome(&allowed, 0.0), CallbackOutcome::Accepted);
        // A wrong signature on an expired event is a bad signature, not merely expired.
        let wrong = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":7,"Timestamp":1,"EventData":{},"ExpireTime":5,"Sign":"00"}"#;
        assert_eq!(outcome(wrong, 10.0), CallbackOutcome::BadSignature);
        let signed = |data: &str| {
            format!(
                r#"{{"EventType":"WhiteboardPushStopped","SdkAppId":7,"Timestamp":1,"EventData":{data},"ExpireTime":5,"Sign":"{}"}}"#,
                compute_sign("k", 5)
            )
        };
        assert_eq!(outcome(&signed("{}"), 10.0), CallbackOutcome::Expired);
        // Push fields are read only once the signature holds.
        assert_eq!(outcome(&signed("{}"), 5.0), CallbackOutcome::Malformed);
        assert_eq!(outcome(&signed(r#"{"TaskId":"t"}"#), 5.0), CallbackOutcome::Accepted);
        assert_eq!(outcome(&signed(r#"{"TaskId":"t"}"#), 5.0), CallbackOutcome::Duplicate);
    }

    /// SPEC §3: only TaskId is required; a Stopped without FinishReason, or with one Tencent does
    /// not document, ends the task with reason OTHER.
    #[test]
    fn a_stop_without_a_documented_reason_is_other() {
        let registry = Arc::new(TaskRegistry::new());
        let r = receiver(registry.clone());
        for (id, data) in [
            ("n1", r#"{"TaskId":"n1"}"#),
            ("n2", r#"{"TaskId":"n2","FinishReason":"RENDER_CRASHED"}"#),
            ("n3", r#"{"TaskId":"n3","FinishReason":""}"#),
        ] {
            let body =
                format!(r#"{{"EventType":"WhiteboardPushStopped","SdkAppId":8,"Timestamp":1,"EventData":{data}}}"#);
            assert_eq!(
                r.process(body.as_bytes(), 1.0).outcome,
                CallbackOutcome::Accepted,
                "{data}"
            );
            let t = registry.get(8, id).unwrap();
            assert_eq!(
                (t.status, t.finish_reason),
                (TaskStatus::Stopped, Some(FinishReason::Other))
            );
        }
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
