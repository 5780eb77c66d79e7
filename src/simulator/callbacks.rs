//! The simulator's side of TIW callbacks: when a task starts or stops it POSTs a signed
//! `WhiteboardPushStarted` / `WhiteboardPushStopped` to the app's registered URL (a recording's
//! `OnlineRecord…` events to the recording feature's URL, with its key), retrying failed
//! deliveries like TIW, with knobs that drop, duplicate, delay and reorder events.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{unix_now, Shared, SimStatus, SimTask};
use crate::callback::{compute_sign, STARTED, STOPPED};

/// How long a signature stays valid after it is made.
pub const SIGN_VALIDITY_SECS: u64 = 300;

/// How callbacks are delivered. Probabilities are 0.0..=1.0.
#[derive(Debug, Clone)]
pub struct CallbackKnobs {
    /// Probability that an event is never sent.
    pub drop: f64,
    /// Probability that an event is sent twice.
    pub duplicate: f64,
    /// Delay before every delivery.
    pub delay: Duration,
    /// Probability that an event is held back by an extra 0.2–1 s, so that later ones overtake it.
    pub reorder: f64,
    /// Pause between attempts when a delivery is not answered 200 (TIW: 5 s).
    pub retry_every: Duration,
    /// Attempts after the first (TIW: 5).
    pub retries: u32,
}

impl Default for CallbackKnobs {
    fn default() -> Self {
        CallbackKnobs {
            drop: 0.0,
            duplicate: 0.0,
            delay: Duration::ZERO,
            reorder: 0.0,
            retry_every: Duration::from_secs(5),
            retries: 5,
        }
    }
}

/// Counts of the sender.
#[derive(Debug, Clone, Default)]
pub struct CallbackStats {
    /// Events produced by task transitions.
    pub events: u64,
    /// Events dropped by the `drop` knob.
    pub dropped: u64,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Deliveries answered 200.
    pub delivered: u64,
    /// Deliveries given up after every retry.
    pub failed: u64,
    /// Events not sent because the app has no callback URL.
    pub no_url: u64,
}

/// One event waiting to be sent: everything but ExpireTime and Sign, which are added per attempt.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub app: u64,
    pub body: Value,
    /// The key another TIW feature signs its events with (each feature has its own:
    /// SetTranscodeCallbackKey, SetOnlineRecordCallbackKey); `None`: the app's push key.
    pub key: Option<String>,
    /// A real-time recording event: sent to the recording feature's own URL, signed with its own
    /// key (SetOnlineRecordCallback, SetOnlineRecordCallbackKey).
    pub record: bool,
}

/// The event a transition of `task` from `before` produces, if any. Failed tasks produce none:
/// TIW documents no callback for them, and polling reports them.
pub(crate) fn event_for(before: SimStatus, task: &SimTask) -> Option<Pending> {
    let (event_type, data) = match (before, task.status) {
        (SimStatus::Prepared, SimStatus::Pushing) => (
            STARTED,
            json!({
                "TaskId": task.task_id,
                "RoomId": task.room_id,
                "PushUserId": task.push_user_id,
                "PushStartTime": task.push_start_time,
            }),
        ),
        (SimStatus::Prepared | SimStatus::Pushing, SimStatus::Stopped) => (
            STOPPED,
            json!({
                "TaskId": task.task_id,
                "RoomId": task.room_id,
                "GroupId": task.group_id,
                "PushUserId": task.push_user_id,
                "FinishReason": task.finish_reason.unwrap_or("AUTO"),
                "PushStartTime": task.push_start_time,
                "PushStopTime": task.push_stop_time,
                "IMSyncTime": task.im_sync_time,
                "ExceptionCnt": task.exception_cnt,
            }),
        ),
        _ => return None,
    };
    let body = json!({
        "EventType": event_type,
        "EventData": data,
        "SdkAppId": task.sdk_app_id,
        "Timestamp": unix_now(),
    });
    Some(Pending {
        app: task.sdk_app_id,
        body,
        key: None,
        record: false,
    })
}

/// Adds `ExpireTime` and `Sign` to an event body as TIW does for an app with a callback key.
pub fn sign_event(mut body: Value, key: &str, expire_time: u64) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("ExpireTime".into(), json!(expire_time));
        obj.insert("Sign".into(), json!(compute_sign(key, expire_time)));
    }
    body
}

pub(crate) fn channel() -> (mpsc::UnboundedSender<Pending>, mpsc::UnboundedReceiver<Pending>) {
    mpsc::unbounded_channel()
}

/// Delivers events until the channel closes.
pub(crate) async fn run(shared: std::sync::Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    while let Some(event) = rx.recv().await {
        let knobs = shared.callback_knobs();
        shared.callback_stats_mut().events += 1;
        let (drop, copies, hold) = {
            let mut rng = rand::rng();
            let drop = rng.random_bool(knobs.drop.clamp(0.0, 1.0));
            let copies = if rng.random_bool(knobs.duplicate.clamp(0.0, 1.0)) {
                2
            } else {
                1
            };
            let hold = if rng.random_bool(knobs.reorder.clamp(0.0, 1.0)) {
                Duration::from_millis(rng.random_range(200..=1000))
            } else {
                Duration::ZERO
            };
            (drop, copies, hold)
        };
        if drop {
            shared.callback_stats_mut().dropped += 1;
            continue;
        }
        for _ in 0..copies {
            let (shared, http, event, knobs) = (shared.clone(), http.clone(), event.clone(), knobs.clone());
            tokio::spawn(async move {
                tokio::time::sleep(knobs.delay + hold).await;
                deliver(&shared, &http, event, &knobs).await;
            });
        }
    }
}

async fn deliver(shared: &Shared, http: &reqwest::Client, event: Pending, knobs: &CallbackKnobs) {
    for attempt in 0..=knobs.retries {
        if attempt > 0 {
            tokio::time::sleep(knobs.retry_every).await;
        }
        let (url, feature_key) = {
            let world = shared.world();
            let callbacks = if event.record {
                &world.record_callbacks
            } else {
                &world.callbacks
            };
            callbacks.get(&event.app).cloned().unwrap_or_default()
        };
        let key = event.key.clone().unwrap_or(feature_key);
        if url.is_empty() {
            shared.callback_stats_mut().no_url += 1;
            return;
        }
        let body = if key.is_empty() {
            event.body.clone()
        } else {
            sign_event(event.body.clone(), &key, unix_now() as u64 + SIGN_VALIDITY_SECS)
        };
        shared.callback_stats_mut().attempts += 1;
        let bytes = body.to_string();
        let request = http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(bytes.clone());
        let ok = request.send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            shared.callback_stats_mut().delivered += 1;
            if let Some(log) = shared.acknowledged.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                log.push((event.app, bytes.into_bytes()));
            }
            return;
        }
    }
    shared.callback_stats_mut().failed += 1;
}
