//! Typed TIW actions (design §2). Tencent's field names stay as Tencent spells them on the wire;
//! every reply field is optional because Tencent may leave any of them out or send null.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::client::{ApiError, Client, ErrorKind};
use super::ratelimit::Permit;
use crate::census::TaskType;
use crate::task::{plausible, Answer, Facts, FinishReason, TaskStatus};

pub const DESCRIBE_WHITEBOARD_PUSH: &str = "DescribeWhiteboardPush";
pub const DESCRIBE_RUNNING_TASKS: &str = "DescribeRunningTasks";
pub const DESCRIBE_WHITEBOARD_PUSH_CALLBACK: &str = "DescribeWhiteboardPushCallback";
pub const SET_WHITEBOARD_PUSH_CALLBACK: &str = "SetWhiteboardPushCallback";
pub const SET_WHITEBOARD_PUSH_CALLBACK_KEY: &str = "SetWhiteboardPushCallbackKey";
pub const DESCRIBE_ONLINE_RECORD_CALLBACK: &str = "DescribeOnlineRecordCallback";
pub const SET_ONLINE_RECORD_CALLBACK: &str = "SetOnlineRecordCallback";
pub const SET_ONLINE_RECORD_CALLBACK_KEY: &str = "SetOnlineRecordCallbackKey";

/// Largest page DescribeRunningTasks allows.
pub const RUNNING_TASKS_PAGE: i64 = 500;

/// `SdkAppId` and `TaskId`: the request of DescribeWhiteboardPush and of DescribeOnlineRecord.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRequest {
    #[serde(rename = "SdkAppId")]
    pub sdk_app_id: u64,
    #[serde(rename = "TaskId")]
    pub task_id: String,
}

/// Reply of DescribeWhiteboardPush.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WhiteboardPush {
    #[serde(
        rename = "TaskId",
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// PREPARED, PUSHING or STOPPED.
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// AUTO, USER_CALL or EXCEPTION.
    #[serde(rename = "FinishReason", default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(
        rename = "RoomId",
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<i64>,
    #[serde(
        rename = "GroupId",
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_id: Option<String>,
    #[serde(
        rename = "PushUserId",
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub push_user_id: Option<String>,
    #[serde(
        rename = "PushStartTime",
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub push_start_time: Option<i64>,
    #[serde(
        rename = "PushStopTime",
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub push_stop_time: Option<i64>,
    #[serde(
        rename = "ExceptionCnt",
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub exception_cnt: Option<i64>,
    #[serde(
        rename = "IMSyncTime",
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub im_sync_time: Option<i64>,
    #[serde(rename = "Backup", default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(rename = "RequestId", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescribeRunningTasksRequest {
    /// Capital `ID` in this action, unlike the others.
    #[serde(rename = "SdkAppID")]
    pub sdk_app_id: u64,
    #[serde(rename = "TaskType")]
    pub task_type: String,
    #[serde(rename = "Offset")]
    pub offset: i64,
    #[serde(rename = "Limit")]
    pub limit: i64,
}

/// Reply of DescribeRunningTasks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunningTasks {
    #[serde(rename = "Total", default, deserialize_with = "lenient_i64")]
    pub total: Option<i64>,
    #[serde(rename = "Tasks", default)]
    pub tasks: Option<Vec<RunningTask>>,
    #[serde(rename = "RequestId", default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunningTask {
    #[serde(rename = "SdkAppID", default, deserialize_with = "lenient_i64")]
    pub sdk_app_id: Option<i64>,
    #[serde(rename = "TaskID", default, deserialize_with = "lenient_string")]
    pub task_id: Option<String>,
    #[serde(rename = "TaskType", default)]
    pub task_type: Option<String>,
    /// `2023-03-14 15:00:00`, Beijing time.
    #[serde(rename = "CreateTime", default)]
    pub create_time: Option<String>,
    /// QUEUED, PROCESSING or FINISHED.
    #[serde(rename = "Status", default)]
    pub status: Option<String>,
    #[serde(rename = "RoomID", default, deserialize_with = "lenient_i64")]
    pub room_id: Option<i64>,
}

impl RunningTask {
    /// Whether the item is of `task_type` (an item that does not say is taken for one: the list
    /// was asked for that type).
    pub fn is_of(&self, task_type: TaskType) -> bool {
        self.task_type.as_deref().is_none_or(|ty| ty == task_type.as_str())
    }
}

/// Reply of DescribeWhiteboardPushCallback (and of DescribeOnlineRecordCallback, the same fields).
/// Its Debug hides the key.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PushCallback {
    #[serde(rename = "Callback", default)]
    pub callback: Option<String>,
    #[serde(rename = "CallbackKey", default)]
    pub callback_key: Option<String>,
    #[serde(rename = "RequestId", default)]
    pub request_id: Option<String>,
}

impl std::fmt::Debug for PushCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCallback")
            .field("callback", &self.callback)
            .field("callback_key", &self.callback_key.as_ref().map(|_| "[REDACTED]"))
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// A reply that carries nothing but its RequestId.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {
    #[serde(rename = "RequestId", default)]
    pub request_id: Option<String>,
}

/// An integer that may arrive as a JSON number, a numeric string or null.
pub(super) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        I(i64),
        F(f64),
        S(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        None => None,
        Some(N::I(i)) => Some(i),
        Some(N::F(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        Some(N::F(_)) => return Err(serde::de::Error::custom("expected an integer")),
        Some(N::S(s)) if s.is_empty() => None,
        Some(N::S(s)) => Some(
            s.trim()
                .parse()
                .map_err(|_| serde::de::Error::custom("expected an integer"))?,
        ),
    })
}

/// An identifier that may arrive as a string, a number or null.
pub(super) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Signed(i64),
        Unsigned(u64),
    }
    Ok(match Option::<Id>::deserialize(d)? {
        None => None,
        Some(Id::Text(s)) => Some(s),
        Some(Id::Signed(i)) => Some(i.to_string()),
        Some(Id::Unsigned(u)) => Some(u.to_string()),
    })
}

/// An answer and the RequestId it came with (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub answer: Answer,
    pub request_id: String,
}

impl WhiteboardPush {
    /// The reply in domain terms. A reply with `Status` missing, null or empty is [`Answer::NoStatus`];
    /// a STOPPED with an empty or undocumented `FinishReason` stopped for reason `OTHER` (design §4);
    /// numbers outside what Tencent can send are unknown.
    pub fn answer(&self) -> Answer {
        let status = match self.status.as_deref() {
            None | Some("") => return Answer::NoStatus(self.request_id.clone().unwrap_or_default()),
            // An undocumented status says nothing the registry can act on.
            Some(s) => TaskStatus::from_tencent(s).unwrap_or(TaskStatus::Unknown),
        };
        Answer::State(
            Facts {
                status,
                finish_reason: match status {
                    TaskStatus::Stopped => Some(FinishReason::of_stop(self.finish_reason.as_deref())),
                    _ => None,
                },
                room_id: plausible(self.room_id),
                group_id: self.group_id.clone(),
                push_user_id: self.push_user_id.clone(),
                push_start_time: plausible(self.push_start_time),
                push_stop_time: plausible(self.push_stop_time),
                exception_cnt: plausible(self.exception_cnt).map(|n| n as u64),
                im_sync_time: plausible(self.im_sync_time),
                failure: None,
                truncated: 0,
            }
            .bounded(),
        )
    }
}

/// The TIW actions of one app.
#[derive(Clone)]
pub struct TiwClient {
    pub sdk_app_id: u64,
    pub(super) client: Client,
}

impl TiwClient {
    pub fn new(sdk_app_id: u64, client: Client) -> Self {
        TiwClient { sdk_app_id, client }
    }

    /// Waits for the next send turn of DescribeWhiteboardPush in this app's budget, so that the
    /// caller can choose which task to read when the request can actually go.
    pub async fn read_turn(&self) -> Permit {
        self.client.turn(DESCRIBE_WHITEBOARD_PUSH).await
    }

    /// DescribeWhiteboardPush as the poller needs it: task-level answers (state, failed, not
    /// found, no status) are `Ok`; `Err` is everything that says nothing about the task. The
    /// first attempt goes out in `turn` when given ([`TiwClient::read_turn`]).
    pub async fn read_task(&self, task_id: &str, turn: Option<Permit>) -> Result<Answered, ApiError> {
        match self.describe_whiteboard_push_in_turn(task_id, turn).await {
            Ok(reply) => Ok(Answered {
                answer: reply.answer(),
                request_id: reply.request_id.clone().unwrap_or_default(),
            }),
            Err(ApiError::Tencent {
                code,
                message,
                request_id,
            }) if matches!(
                ErrorKind::of_code(&code),
                ErrorKind::TaskFailed | ErrorKind::TaskNotFound
            ) =>
            {
                let answer = match ErrorKind::of_code(&code) {
                    ErrorKind::TaskFailed => Answer::Failed(message),
                    _ => Answer::NotFound,
                };
                Ok(Answered { answer, request_id })
            }
            Err(e) => Err(e),
        }
    }

    /// DescribeWhiteboardPush for one task.
    pub async fn describe_whiteboard_push(&self, task_id: &str) -> Result<WhiteboardPush, ApiError> {
        self.describe_whiteboard_push_in_turn(task_id, None).await
    }

    /// DescribeWhiteboardPush for one task, its first attempt in `turn` when given.
    async fn describe_whiteboard_push_in_turn(
        &self,
        task_id: &str,
        turn: Option<Permit>,
    ) -> Result<WhiteboardPush, ApiError> {
        let req = TaskRequest {
            sdk_app_id: self.sdk_app_id,
            task_id: task_id.to_string(),
        };
        self.client.call_in_turn(DESCRIBE_WHITEBOARD_PUSH, &req, turn).await
    }

    /// One page of DescribeRunningTasks for tasks of `task_type`.
    pub async fn describe_running_tasks(
        &self,
        task_type: TaskType,
        offset: i64,
        limit: i64,
    ) -> Result<RunningTasks, ApiError> {
        self.describe_running_tasks_in_turn(task_type, offset, limit, None)
            .await
    }

    /// One page of DescribeRunningTasks, its first attempt in `turn` when given.
    async fn describe_running_tasks_in_turn(
        &self,
        task_type: TaskType,
        offset: i64,
        limit: i64,
        turn: Option<Permit>,
    ) -> Result<RunningTasks, ApiError> {
        let req = DescribeRunningTasksRequest {
            sdk_app_id: self.sdk_app_id,
            task_type: task_type.as_str().into(),
            offset,
            limit: limit.clamp(1, RUNNING_TASKS_PAGE),
        };
        self.client.call_in_turn(DESCRIBE_RUNNING_TASKS, &req, turn).await
    }

    /// One page of DescribeRunningTasks sent only in spare budget: when a turn is free and no
    /// other list waits for one (discovery's passes go first). Looks again every 50 ms for up to
    /// `patience`; `None` when no turn came.
    pub async fn describe_running_tasks_spare(
        &self,
        task_type: TaskType,
        offset: i64,
        limit: i64,
        patience: Duration,
    ) -> Option<Result<RunningTasks, ApiError>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(turn) = self.client.spare_turn(DESCRIBE_RUNNING_TASKS) {
                return Some(
                    self.describe_running_tasks_in_turn(task_type, offset, limit, Some(turn))
                        .await,
                );
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The feature's callback URL and key: DescribeWhiteboardPushCallback or
    /// DescribeOnlineRecordCallback.
    pub async fn describe_callback(&self, feature: Feature) -> Result<PushCallback, ApiError> {
        let [describe, _, _] = feature.actions();
        self.client
            .call(describe, &serde_json::json!({ "SdkAppId": self.sdk_app_id }))
            .await
    }

    /// SetWhiteboardPushCallback or SetOnlineRecordCallback; an empty URL deletes the callback.
    pub async fn set_callback(&self, feature: Feature, url: &str) -> Result<Empty, ApiError> {
        let [_, set_url, _] = feature.actions();
        self.client
            .call(
                set_url,
                &serde_json::json!({ "SdkAppId": self.sdk_app_id, "Callback": url }),
            )
            .await
    }

    /// SetWhiteboardPushCallbackKey or SetOnlineRecordCallbackKey; an empty key deletes it.
    pub async fn set_callback_key(&self, feature: Feature, key: &str) -> Result<Empty, ApiError> {
        let [_, _, set_key] = feature.actions();
        self.client
            .call(
                set_key,
                &serde_json::json!({ "SdkAppId": self.sdk_app_id, "CallbackKey": key }),
            )
            .await
    }
}

/// A TIW feature with its own callback URL and key: whiteboard push, or real-time recording
/// (Tencent sets each per feature: `SetWhiteboardPushCallback`, `SetOnlineRecordCallback`, … in the Go
/// SDK's client.go; the replies have the same `Callback` and `CallbackKey`, tccli's examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Push,
    Record,
}

impl Feature {
    /// Its describe, set-URL and set-key actions.
    pub fn actions(self) -> [&'static str; 3] {
        match self {
            Feature::Push => [
                DESCRIBE_WHITEBOARD_PUSH_CALLBACK,
                SET_WHITEBOARD_PUSH_CALLBACK,
                SET_WHITEBOARD_PUSH_CALLBACK_KEY,
            ],
            Feature::Record => [
                DESCRIBE_ONLINE_RECORD_CALLBACK,
                SET_ONLINE_RECORD_CALLBACK,
                SET_ONLINE_RECORD_CALLBACK_KEY,
            ],
        }
    }

    /// `push` or `record`, as `--feature` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Push => "push",
            Feature::Record => "record",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencentcloud::client::decode_reply;

    fn fixtures() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/tencent-doc-examples.json")).unwrap()
    }

    fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
        decode_reply("fixture", 200, v.to_string().as_bytes())
    }

    #[test]
    fn documented_replies_parse() {
        let f = fixtures();
        let p: WhiteboardPush = decode(&f["DescribeWhiteboardPush"]["reply_stopped"]).unwrap();
        assert_eq!(p.status.as_deref(), Some("STOPPED"));
        assert_eq!(p.finish_reason.as_deref(), Some("USER_CALL"));
        assert_eq!(p.room_id, Some(880528));
        assert_eq!(p.group_id.as_deref(), Some("880528"));
        assert_eq!(p.push_stop_time, Some(1610591759));
        let p: WhiteboardPush = decode(&f["DescribeWhiteboardPush"]["reply_backup_null"]).unwrap();
        assert_eq!(p.backup, None);
        assert_eq!(p.exception_cnt, Some(2));
        let p: WhiteboardPush = decode(&f["DescribeWhiteboardPush"]["reply_only_request_id"]).unwrap();
        assert_eq!(p.status, None);
        assert!(p.request_id.is_some());
        assert!(matches!(p.answer(), Answer::NoStatus(id) if p.request_id.as_deref() == Some(id.as_str())));
        let e = decode::<WhiteboardPush>(&f["DescribeWhiteboardPush"]["reply_task_failed"]).unwrap_err();
        assert_eq!(e.code(), Some("FailedOperation.WhiteboardPush"));
        let r: RunningTasks = decode(&f["DescribeRunningTasks"]["reply"]).unwrap();
        assert_eq!(r.total, Some(1));
        let t = &r.tasks.as_ref().unwrap()[0];
        assert_eq!(t.task_id.as_deref(), Some("bj0mt2l23osdj300hl30"));
        assert_eq!(t.room_id, Some(1253));
        let c: PushCallback = decode(&f["DescribeWhiteboardPushCallback"]["reply"]).unwrap();
        assert_eq!(c.callback_key.as_deref(), Some("6vg9G7Fd"));
        let _: Empty = decode(&f["SetWhiteboardPushCallbackKey"]["reply"]).unwrap();
        let e = decode::<Empty>(&f["error_envelope"]).unwrap_err();
        assert_eq!(e.code(), Some("AuthFailure.SignatureFailure"));
    }

    #[test]
    fn requests_serialise_with_tencents_names() {
        let f = fixtures();
        let req = TaskRequest {
            sdk_app_id: 1400000001,
            task_id: "ghucnligqtgtvk2624mb".into(),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            f["DescribeWhiteboardPush"]["request"]
        );
        let req = DescribeRunningTasksRequest {
            sdk_app_id: 1400000001,
            task_type: "WhiteboardPush".into(),
            offset: 0,
            limit: 500,
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            f["DescribeRunningTasks"]["request"]
        );
    }

    /// design §4: a STOPPED whose reason is empty or undocumented stopped for reason OTHER; a
    /// Status of "" or null is no status at all.
    #[test]
    fn stopped_without_a_documented_reason_is_other() {
        let answer = |v: serde_json::Value| {
            decode::<WhiteboardPush>(&serde_json::json!({ "Response": v }))
                .unwrap()
                .answer()
        };
        for reason in [
            serde_json::json!(""),
            serde_json::json!(null),
            serde_json::json!("CRASHED"),
        ] {
            let Answer::State(o) = answer(serde_json::json!({"Status": "STOPPED", "FinishReason": reason})) else {
                panic!("a state")
            };
            assert_eq!(o.finish_reason, Some(FinishReason::Other));
        }
        let Answer::State(o) = answer(serde_json::json!({"Status": "STOPPED", "FinishReason": "EXCEPTION"})) else {
            panic!("a state")
        };
        assert_eq!(o.finish_reason, Some(FinishReason::Exception));
        let Answer::State(o) = answer(serde_json::json!({"Status": "PUSHING", "FinishReason": ""})) else {
            panic!("a state")
        };
        assert_eq!((o.status, o.finish_reason), (TaskStatus::Pushing, None));
        assert!(matches!(
            answer(serde_json::json!({"Status": null, "RoomId": 3})),
            Answer::NoStatus(_)
        ));
        assert!(matches!(answer(serde_json::json!({"Status": ""})), Answer::NoStatus(_)));
    }

    /// Found by `cargo fuzz` (fuzz/regressions/api_reply): a PushStartTime beyond 2⁵³ was
    /// exported as an integer no float64 sample can hold.
    #[test]
    fn implausible_numbers_from_a_poll_are_unknown() {
        let reply: WhiteboardPush = serde_json::from_value(serde_json::json!({
            "Status": "PUSHING", "PushStartTime": 16105911610591759i64, "RoomId": -3, "ExceptionCnt": 5_000_000_000i64,
            "IMSyncTime": 1610591726
        }))
        .unwrap();
        let Answer::State(obs) = reply.answer() else {
            panic!("a state")
        };
        assert_eq!(
            (obs.push_start_time, obs.room_id, obs.exception_cnt, obs.im_sync_time),
            (None, None, None, Some(1610591726))
        );
        assert_eq!(obs.status, TaskStatus::Pushing);
    }

    #[test]
    fn nulls_strings_and_missing_fields_are_tolerated() {
        let v = serde_json::json!({"Response": {"TaskId": null, "RoomId": "42", "ExceptionCnt": null, "GroupId": 7, "PushStartTime": 1.0e9}});
        let p: WhiteboardPush = decode(&v).unwrap();
        assert_eq!(p.room_id, Some(42));
        assert_eq!(p.group_id.as_deref(), Some("7"));
        assert_eq!(p.push_start_time, Some(1_000_000_000));
        assert_eq!(p.exception_cnt, None);
        let v = serde_json::json!({"Response": {"RoomId": "abc"}});
        assert!(decode::<WhiteboardPush>(&v).is_err());
    }
}
