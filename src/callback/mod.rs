//! The callback receiver: verify → parse → apply (design §3).
//!
//! TIW POSTs `WhiteboardPushStarted` / `WhiteboardPushStopped` events. They are the fast path, but
//! can be forged, replayed, duplicated, reordered or lost, so every event goes through the same
//! checks, in design §3's order, each failure with its own outcome and status and no state change:
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::instruments::CallbackSinks;
use crate::recordings::{RecordClaim, RecordRegistry};
use crate::registry::{CallbackApplied, TaskRegistry};
use crate::relay::Relay;
use crate::store::StoreHandle;
use crate::task::{is_task_id, truncate, Facts, Failure, FinishReason, PushEvent, TaskStatus};

mod http;
#[cfg(test)]
mod tests;

pub use http::router;
use http::InFlight;

pub const STARTED: &str = "WhiteboardPushStarted";
/// The real-time recording feature's events (Tencent's "Real-Time Recording Event" page).
pub const RECORD_EVENTS: [&str; 3] = ["OnlineRecordStarted", "OnlineRecordStopped", "OnlineRecordFinished"];
pub const STOPPED: &str = "WhiteboardPushStopped";

/// Largest value accepted for unix times, room ids and counts (u32: TRTC's room ids, times to 2106).
const MAX_U32: u64 = u32::MAX as u64;

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
    /// A task id Tencent answered TaskNotFound for (and that was dropped), named again: answered
    /// 200 (a made-up id is not worth TIW's retries), no API call made.
    Contradicted,
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
            CallbackOutcome::Contradicted => "contradicted",
            CallbackOutcome::Full => "",
        }
    }

    /// The HTTP status TIW gets. Only 200 stops TIW's retries.
    pub fn status(self) -> StatusCode {
        match self {
            CallbackOutcome::Accepted
            | CallbackOutcome::Duplicate
            | CallbackOutcome::Ignored
            | CallbackOutcome::Contradicted => StatusCode::OK,
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
    /// The task a verified push event names (`None` before the signature is verified).
    pub task_id: Option<String>,
    /// The FinishReason a verified Stopped event claims.
    pub finish_reason: Option<FinishReason>,
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
    facts: Facts,
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
    // design §3: only TaskId is required. A Stopped without FinishReason, or with a value Tencent
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
        facts: Facts {
            status: match kind {
                PushEvent::Started => TaskStatus::Pushing,
                PushEvent::Stopped => TaskStatus::Stopped,
            },
            finish_reason,
            room_id: as_i64(d.room_id),
            group_id: d.group_id,
            push_user_id: d.push_user_id,
            push_start_time: as_i64(d.push_start_time),
            push_stop_time: as_i64(d.push_stop_time),
            exception_cnt: d.exception_cnt,
            im_sync_time: as_i64(d.im_sync_time),
            failure: error
                .as_ref()
                .map(|(code, message)| Box::new(Failure::new(code, message))),
            truncated: 0,
        }
        .bounded(),
        error,
    })
}

/// What a recording event's EventData must say: which task (its other fields are the API's to
/// confirm).
#[derive(Deserialize)]
struct RecordEventData {
    #[serde(rename = "TaskId")]
    task_id: String,
}

/// The signature checks of design §3 with `keys`: an app without a key takes unsigned events only
/// with `allow_unsigned`; Sign must be MD5(key + ExpireTime) for one of the keys, compared in
/// constant time, and ExpireTime not passed at `now`.
fn check_sign(
    keys: &[SecretString],
    allow_unsigned: bool,
    envelope: &Envelope,
    now: f64,
) -> Result<(), (CallbackOutcome, String)> {
    match (keys.is_empty(), envelope.expire_time, envelope.sign.as_deref()) {
        (true, _, _) if allow_unsigned => Ok(()),
        (true, _, _) => Err((
            CallbackOutcome::Unsigned,
            "the app has no callback_key and does not set allow_unsigned_callbacks".into(),
        )),
        (false, Some(expire_time), Some(sign)) => {
            if !keys.iter().any(|k| verify_sign(k.expose_secret(), expire_time, sign)) {
                return Err((
                    CallbackOutcome::BadSignature,
                    "Sign does not match MD5(key + ExpireTime)".into(),
                ));
            }
            if now > expire_time as f64 {
                return Err((CallbackOutcome::Expired, format!("ExpireTime {expire_time} has passed")));
            }
            Ok(())
        }
        (false, _, _) => Err((
            CallbackOutcome::Unsigned,
            "the app has a callback key but the event has no Sign/ExpireTime".into(),
        )),
    }
}

/// How one app's push events are verified.
#[derive(Clone, Default)]
struct AppKeys {
    /// Keys a signature may match: the key, and during a rotation the previous one.
    keys: Vec<SecretString>,
    /// No key: accept unsigned push events (`allow_unsigned_callbacks`).
    allow_unsigned: bool,
    /// The recording feature's key (`record_callback_key`), when the app's recordings are tracked:
    /// then `OnlineRecord…` events are verified with it and put the recording's read first.
    record_keys: Vec<SecretString>,
}

/// Receives callbacks for the configured apps.
pub struct CallbackReceiver {
    registry: Arc<TaskRegistry>,
    metrics: CallbackSinks,
    /// How each configured app's push events are verified.
    keys: std::sync::RwLock<HashMap<u64, AppKeys>>,
    max_body_bytes: AtomicUsize,
    /// `callback.max_in_flight`, and how many are being handled now.
    max_in_flight: AtomicUsize,
    in_flight: AtomicUsize,
    /// How long a body may take to arrive (`--web.read-timeout`).
    read_timeout: Duration,
    /// Where a taken event is made durable before it is answered 200 (`None`: no store, as in
    /// unit tests and the fuzz targets).
    store: Option<StoreHandle>,
    /// Relay mode: requests of apps with `callback_forward_url` are queued for their backend.
    relay: Option<Arc<Relay>>,
    /// The recording tasks, for the recording feature's events (`None`: they are ignored).
    records: Option<Arc<RecordRegistry>>,
}

impl CallbackReceiver {
    /// A receiver that answers as soon as an event is applied: no store, a 10 s body deadline.
    pub fn new(config: &Config, registry: Arc<TaskRegistry>, metrics: CallbackSinks) -> Self {
        Self::build(config, registry, metrics, (None, None), Duration::from_secs(10))
    }

    /// The serving receiver: an event is answered 200 only once `store` has it on disk (and, in
    /// relay mode, `relay`'s queue entry for it), and a body must arrive within `read_timeout`.
    pub fn durable(
        config: &Config,
        registry: Arc<TaskRegistry>,
        metrics: CallbackSinks,
        (store, relay): (StoreHandle, Arc<Relay>),
        read_timeout: Duration,
    ) -> Self {
        Self::build(config, registry, metrics, (Some(store), Some(relay)), read_timeout)
    }

    fn build(
        config: &Config,
        registry: Arc<TaskRegistry>,
        metrics: CallbackSinks,
        (store, relay): (Option<StoreHandle>, Option<Arc<Relay>>),
        read_timeout: Duration,
    ) -> Self {
        let receiver = CallbackReceiver {
            registry,
            metrics,
            keys: Default::default(),
            max_body_bytes: Default::default(),
            max_in_flight: Default::default(),
            in_flight: Default::default(),
            read_timeout: read_timeout.max(Duration::from_millis(1)),
            store,
            relay,
            records: None,
        };
        receiver.reconfigure(config);
        receiver
    }

    /// Takes the recording feature's events for the apps that track recordings
    /// (`record: true` and `record_callback_key`), into `records`.
    pub fn with_records(self, records: Arc<RecordRegistry>) -> Self {
        CallbackReceiver {
            records: Some(records),
            ..self
        }
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
                    record_keys: a.record_callback_key.iter().filter(|_| a.record).cloned().collect(),
                };
                (a.sdk_app_id, keys)
            })
            .collect();
        self.metrics.callbacks.configured(
            config
                .apps
                .iter()
                .map(|a| (a.sdk_app_id, a.callback_key.is_some() || a.allow_unsigned_callbacks)),
        );
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        self.max_body_bytes
            .store(config.callback.max_body_bytes, Ordering::Relaxed);
        self.max_in_flight
            .store(config.callback.max_in_flight, Ordering::Relaxed);
        if let Some(relay) = &self.relay {
            relay.reconfigure(config);
        }
    }

    /// The largest body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.load(Ordering::Relaxed)
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

    /// Verifies, parses and applies one body received at unix time `now`.
    pub fn process(&self, body: &[u8], now: f64) -> Processed {
        let refuse = |sdk_app_id, event_type, outcome, reason: String| Processed {
            sdk_app_id,
            event_type,
            outcome,
            reason,
            delay_seconds: None,
            task_id: None,
            finish_reason: None,
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
        // The recording feature's events, for an app whose recordings are tracked and whose
        // recording key is known: verified with that key, they put the recording's read first.
        if let (Some(records), Some(event_type), false) = (
            &self.records,
            RECORD_EVENTS.iter().find(|e| **e == envelope.event_type),
            keys.record_keys.is_empty(),
        ) {
            if let Err((outcome, reason)) = check_sign(&keys.record_keys, false, &envelope, now) {
                return refuse(app, event_type, outcome, reason);
            }
            let task_id = match serde_json::from_str::<RecordEventData>(envelope.event_data.get()) {
                Ok(d) if is_task_id(&d.task_id) => d.task_id,
                Ok(_) => {
                    return refuse(
                        app,
                        event_type,
                        CallbackOutcome::Malformed,
                        "TaskId: not a task id".into(),
                    )
                }
                Err(e) => return refuse(app, event_type, CallbackOutcome::Malformed, format!("EventData: {e}")),
            };
            let outcome = match records.claimed(app, &task_id) {
                RecordClaim::Taken => CallbackOutcome::Accepted,
                RecordClaim::Refuted => CallbackOutcome::Contradicted,
                RecordClaim::Full => {
                    return Processed {
                        task_id: Some(task_id),
                        ..refuse(
                            app,
                            event_type,
                            CallbackOutcome::Full,
                            "too many recordings only callbacks named wait for the API to confirm them, or retention.max_tasks".into(),
                        )
                    }
                }
            };
            return Processed {
                sdk_app_id: app,
                event_type,
                outcome,
                reason: String::new(),
                delay_seconds: Some((now - envelope.timestamp as f64).max(0.0)),
                task_id: Some(task_id),
                finish_reason: None,
            };
        }
        // Another TIW feature's event (transcoding, recording, ...) is signed with that feature's
        // own key (SetTranscodeCallbackKey, ...): taken and ignored without a signature check.
        let Some(kind) = kind else {
            return refuse(app, event_type, CallbackOutcome::Ignored, String::new());
        };
        if let Err((outcome, reason)) = check_sign(&keys.keys, keys.allow_unsigned, &envelope, now) {
            return refuse(app, event_type, outcome, reason);
        }
        let push = match parse_push(kind, envelope.event_data) {
            Ok(p) => p,
            Err(reason) => return refuse(app, event_type, CallbackOutcome::Malformed, reason),
        };
        self.metrics.tasks.truncated("callback", push.facts.truncated);
        if let Some((code, message)) = &push.error {
            tracing::warn!(sdk_app_id = app, task_id = %push.task_id, code = %truncate(code, 64), error_message = %truncate(message, 200), "WhiteboardPushStopped reports an error");
        }
        let outcome = match self
            .registry
            .observe_callback(app, &push.task_id, push.kind, &push.facts)
        {
            CallbackApplied::Accepted { ended } => {
                if ended {
                    tracing::debug!(sdk_app_id = app, task_id = %push.task_id, reason = ?push.facts.finish_reason, "task ended (callback claim, to be confirmed)");
                }
                CallbackOutcome::Accepted
            }
            CallbackApplied::Duplicate => CallbackOutcome::Duplicate,
            CallbackApplied::Refuted => CallbackOutcome::Contradicted,
            CallbackApplied::Full => {
                return Processed {
                    task_id: Some(push.task_id),
                    ..refuse(
                        app,
                        event_type,
                        CallbackOutcome::Full,
                        "retention.max_tasks tasks are tracked, or callback.max_unconfirmed_tasks tasks only callbacks named wait for the API to confirm them".into(),
                    )
                }
            }
        };
        Processed {
            sdk_app_id: app,
            event_type,
            outcome,
            reason: String::new(),
            delay_seconds: Some((now - envelope.timestamp as f64).max(0.0)),
            task_id: Some(push.task_id),
            finish_reason: push.facts.finish_reason,
        }
    }

    /// Counts a processed callback on `/metrics`.
    fn record(&self, p: &Processed) {
        if p.outcome == CallbackOutcome::Full {
            self.metrics.tasks.dropped(p.sdk_app_id, "limit");
        } else {
            self.metrics
                .callbacks
                .received(p.sdk_app_id, p.event_type, p.outcome.label());
        }
        if let Some(delay) = p.delay_seconds {
            self.metrics.callbacks.delayed(p.event_type, delay);
        }
    }

    /// True for the first accepted callback of `sdk_app_id` in this process.
    fn first_for_app(&self, sdk_app_id: u64) -> bool {
        self.metrics.recent.first(sdk_app_id, "accepted callback")
    }

    /// Whether to log this refusal now (see [`crate::recent::RecentEvents::refusal_to_log`]).
    fn refusal_to_log(&self, sdk_app_id: u64, outcome: &'static str) -> Option<u64> {
        let outcome = if outcome.is_empty() { "full" } else { outcome };
        self.metrics.recent.refusal_to_log(sdk_app_id, outcome)
    }

    /// Keeps a callback for the landing page with the status it was answered (`why` when that
    /// differs from what processing said, as when the store could not take it).
    fn remember(&self, p: &Processed, status: StatusCode, why: Option<&str>) {
        self.metrics.recent.callback(crate::recent::RecentCallback {
            at: crate::task::unix_now(),
            sdk_app_id: p.sdk_app_id,
            event_type: p.event_type,
            finish_reason: p.finish_reason.map(FinishReason::as_str),
            task_id: p.task_id.clone(),
            outcome: match p.outcome {
                CallbackOutcome::Full => "full",
                CallbackOutcome::TooLarge => "too_large",
                other => other.label(),
            },
            status: status.as_u16(),
            reason: why.map(str::to_string).unwrap_or_else(|| p.reason.clone()),
        });
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
