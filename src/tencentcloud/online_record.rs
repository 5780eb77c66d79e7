//! DescribeOnlineRecord: a real-time recording task's state and result, wire → domain
//! ([`crate::recording`]). Fields as the Go SDK's `DescribeOnlineRecordResponseParams` spells them;
//! every one optional, as Tencent may leave any out or send null.

use serde::{Deserialize, Serialize};

use super::client::{ApiError, ErrorKind};
use super::ratelimit::Permit;
use super::tiw::{lenient_i64, lenient_string, TaskRequest, TiwClient};
use crate::recording::{RecordAnswer, RecordFacts, RecordFinishReason, RecordStatus};
use crate::task::plausible;

pub const DESCRIBE_ONLINE_RECORD: &str = "DescribeOnlineRecord";

/// Reply of DescribeOnlineRecord (the Go SDK's `DescribeOnlineRecordResponseParams`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OnlineRecord {
    #[serde(rename = "TaskId", default, deserialize_with = "lenient_string")]
    pub task_id: Option<String>,
    /// PREPARED, RECORDING, PAUSED, STOPPED or FINISHED.
    #[serde(rename = "Status", default)]
    pub status: Option<String>,
    /// AUTO, USER_CALL, EXCEPTION or FORCE_STOP.
    #[serde(rename = "FinishReason", default)]
    pub finish_reason: Option<String>,
    #[serde(rename = "RoomId", default, deserialize_with = "lenient_i64")]
    pub room_id: Option<i64>,
    #[serde(rename = "GroupId", default, deserialize_with = "lenient_string")]
    pub group_id: Option<String>,
    #[serde(rename = "RecordUserId", default, deserialize_with = "lenient_string")]
    pub record_user_id: Option<String>,
    #[serde(rename = "RecordStartTime", default, deserialize_with = "lenient_i64")]
    pub record_start_time: Option<i64>,
    #[serde(rename = "RecordStopTime", default, deserialize_with = "lenient_i64")]
    pub record_stop_time: Option<i64>,
    /// Milliseconds.
    #[serde(rename = "TotalTime", default, deserialize_with = "lenient_i64")]
    pub total_time: Option<i64>,
    #[serde(rename = "ExceptionCnt", default, deserialize_with = "lenient_i64")]
    pub exception_cnt: Option<i64>,
    #[serde(rename = "OmittedDurations", default)]
    pub omitted_durations: Option<Vec<OmittedDuration>>,
    #[serde(rename = "VideoInfos", default)]
    pub video_infos: Option<Vec<VideoInfo>>,
    #[serde(rename = "ReplayUrl", default)]
    pub replay_url: Option<String>,
    #[serde(rename = "Interrupts", default)]
    pub interrupts: Option<Vec<Interrupt>>,
    #[serde(rename = "RequestId", default)]
    pub request_id: Option<String>,
}

/// A pause of a recording (`OmittedDuration`), milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OmittedDuration {
    #[serde(rename = "VideoTime", default, deserialize_with = "lenient_i64")]
    pub video_time: Option<i64>,
    #[serde(rename = "PauseTime", default, deserialize_with = "lenient_i64")]
    pub pause_time: Option<i64>,
    #[serde(rename = "ResumeTime", default, deserialize_with = "lenient_i64")]
    pub resume_time: Option<i64>,
}

/// One video of a recording's result (`VideoInfo`); only what the exporter reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VideoInfo {
    /// Bytes.
    #[serde(rename = "VideoSize", default, deserialize_with = "lenient_i64")]
    pub video_size: Option<i64>,
    /// Milliseconds.
    #[serde(rename = "VideoDuration", default, deserialize_with = "lenient_i64")]
    pub video_duration: Option<i64>,
    /// 0 camera, 1 screen share, 2 whiteboard, 3 mixed stream, 4 audio only (mp3).
    #[serde(rename = "VideoType", default, deserialize_with = "lenient_i64")]
    pub video_type: Option<i64>,
}

/// Stream interruptions of one user (`Interrupt`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Interrupt {
    #[serde(rename = "UserId", default, deserialize_with = "lenient_string")]
    pub user_id: Option<String>,
    #[serde(rename = "Count", default, deserialize_with = "lenient_i64")]
    pub count: Option<i64>,
}

impl OnlineRecord {
    /// The reply in domain terms. Numbers outside what Tencent can send are unknown; an end with an
    /// empty or undocumented `FinishReason` ended for reason OTHER; sums over the lists skip
    /// implausible entries (a pause that resumes before it began, a negative size).
    pub fn answer(&self) -> RecordAnswer {
        let status = self
            .status
            .as_deref()
            .and_then(RecordStatus::from_tencent)
            .unwrap_or(RecordStatus::Unknown);
        let sum = |values: Vec<i64>| values.into_iter().filter(|v| *v >= 0).sum::<i64>();
        let videos = self.video_infos.as_ref();
        let big = |v: Option<i64>| v.filter(|v| (0..=MAX_PLAUSIBLE).contains(v));
        RecordAnswer::State(RecordFacts {
            status,
            finish_reason: status
                .is_ended()
                .then(|| RecordFinishReason::of_end(self.finish_reason.as_deref())),
            room_id: plausible(self.room_id),
            group_id: self.group_id.clone(),
            record_user_id: self.record_user_id.clone(),
            record_start_time: plausible(self.record_start_time),
            record_stop_time: plausible(self.record_stop_time),
            total_time_ms: big(self.total_time),
            exception_cnt: plausible(self.exception_cnt).map(|n| n as u64),
            video_bytes: videos.map(|v| sum(v.iter().filter_map(|v| big(v.video_size)).collect()) as u64),
            videos: videos.map(|v| v.len() as u64),
            paused_ms: self.omitted_durations.as_ref().map(|d| {
                sum(d
                    .iter()
                    .filter_map(|d| Some(big(d.resume_time)? - big(d.pause_time)?))
                    .collect())
            }),
            stream_interrupts: self
                .interrupts
                .as_ref()
                .map(|i| sum(i.iter().filter_map(|i| plausible(i.count)).collect()) as u64),
            failure: None,
        })
    }
}

/// The largest byte count or millisecond figure taken from a reply: 2⁵³, past which Prometheus'
/// float64 samples lose integers.
const MAX_PLAUSIBLE: i64 = 1 << 53;

/// A DescribeOnlineRecord answer and the RequestId it came with (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordAnswered {
    pub answer: RecordAnswer,
    pub request_id: String,
}

impl TiwClient {
    /// A turn of the app's DescribeOnlineRecord budget (its own 20/s).
    pub async fn record_turn(&self) -> Permit {
        self.client.turn(DESCRIBE_ONLINE_RECORD).await
    }

    /// DescribeOnlineRecord as the poller needs it: task-level answers (state, failed, not found)
    /// are `Ok`; `Err` is everything that says nothing about the task. `FailedOperation.Record` is
    /// this action's failed task (tccli's example "查询录制失败的实时录制任务" answers it with the
    /// reason in its Message).
    pub async fn read_record(&self, task_id: &str, turn: Option<Permit>) -> Result<RecordAnswered, ApiError> {
        let req = TaskRequest {
            sdk_app_id: self.sdk_app_id,
            task_id: task_id.to_string(),
        };
        match self
            .client
            .call_in_turn::<_, OnlineRecord>(DESCRIBE_ONLINE_RECORD, &req, turn)
            .await
        {
            Ok(reply) => Ok(RecordAnswered {
                answer: reply.answer(),
                request_id: reply.request_id.clone().unwrap_or_default(),
            }),
            Err(ApiError::Tencent {
                code,
                message,
                request_id,
                ..
            }) if code == "FailedOperation.Record" => Ok(RecordAnswered {
                answer: RecordAnswer::Failed(message),
                request_id,
            }),
            Err(ApiError::Tencent { code, request_id, .. }) if ErrorKind::of_code(&code) == ErrorKind::TaskNotFound => {
                Ok(RecordAnswered {
                    answer: RecordAnswer::NotFound,
                    request_id,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencentcloud::client::decode_reply;

    fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
        decode_reply("fixture", 200, v.to_string().as_bytes())
    }

    /// Tencent's two DescribeOnlineRecord examples (tccli), through the client's envelope decoding.
    #[test]
    fn documented_online_record_replies_parse() {
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/online-record-examples.json")).unwrap();
        let r: OnlineRecord = decode(&f["reply_finished"]).unwrap();
        let RecordAnswer::State(facts) = r.answer() else {
            panic!("a FINISHED reply is a state")
        };
        assert_eq!(facts.status, RecordStatus::Finished);
        assert_eq!(facts.finish_reason, Some(RecordFinishReason::UserCall));
        assert_eq!(
            (facts.room_id, facts.group_id.as_deref()),
            (Some(880528), Some("880528"))
        );
        assert_eq!(facts.record_user_id.as_deref(), Some("tic_record_user_880528_test-01"));
        assert_eq!(
            (facts.record_start_time, facts.record_stop_time),
            (Some(1568949369), Some(1568949392))
        );
        assert_eq!((facts.total_time_ms, facts.exception_cnt), (Some(18317), Some(0)));
        // Four videos: 593418 + 765545 + 402038 + 226337 bytes.
        assert_eq!((facts.video_bytes, facts.videos), (Some(1_987_338), Some(4)));
        assert_eq!((facts.paused_ms, facts.stream_interrupts), (Some(0), Some(0)));
        assert_eq!(r.request_id.as_deref(), Some("d290f1ee-6c54-4b01-90e6-d701748f0851"));
        match decode::<OnlineRecord>(&f["reply_failed"]) {
            Err(ApiError::Tencent { code, message, .. }) => {
                assert_eq!(code, "FailedOperation.Record");
                assert!(message.starts_with("code: 40004, msg: "), "{message}");
            }
            other => panic!("the failed example is Tencent's error envelope: {other:?}"),
        }
    }

    /// Pauses, interrupts and odd values: sums skip what Tencent cannot mean, RECORDING has no
    /// finish reason, an end without one is OTHER.
    #[test]
    fn online_record_figures_are_summed_and_bounded() {
        let r: OnlineRecord = serde_json::from_value(serde_json::json!({
            "Status": "STOPPED", "FinishReason": "FORCE_STOP",
            "OmittedDurations": [
                {"VideoTime": 1000, "PauseTime": 5000, "ResumeTime": 65000},
                {"VideoTime": 2000, "PauseTime": 90000, "ResumeTime": 80000},
                {"VideoTime": 3000, "PauseTime": 100000, "ResumeTime": null}
            ],
            "Interrupts": [{"UserId": "a", "Count": 2}, {"UserId": "b", "Count": "3"}, {"UserId": "c", "Count": -1}],
            "VideoInfos": [{"VideoSize": 10}, {"VideoSize": -5}, {"VideoSize": null}],
            "TotalTime": "120000", "RequestId": "r"
        }))
        .unwrap();
        let RecordAnswer::State(f) = r.answer() else { panic!() };
        assert_eq!(
            (f.status, f.finish_reason),
            (RecordStatus::Stopped, Some(RecordFinishReason::ForceStop))
        );
        assert_eq!(f.paused_ms, Some(60_000));
        assert_eq!(f.stream_interrupts, Some(5));
        assert_eq!((f.video_bytes, f.videos), (Some(10), Some(3)));
        assert_eq!(f.total_time_ms, Some(120_000));
        let r: OnlineRecord =
            serde_json::from_value(serde_json::json!({"Status": "RECORDING", "FinishReason": "AUTO"})).unwrap();
        let RecordAnswer::State(f) = r.answer() else { panic!() };
        assert_eq!(
            (f.status, f.finish_reason, f.paused_ms),
            (RecordStatus::Recording, None, None)
        );
        let r: OnlineRecord =
            serde_json::from_value(serde_json::json!({"Status": "FINISHED", "FinishReason": ""})).unwrap();
        let RecordAnswer::State(f) = r.answer() else { panic!() };
        assert_eq!(f.finish_reason, Some(RecordFinishReason::Other));
        let r: OnlineRecord = serde_json::from_value(serde_json::json!({"Status": "ARCHIVED"})).unwrap();
        let RecordAnswer::State(f) = r.answer() else { panic!() };
        assert_eq!(f.status, RecordStatus::Unknown);
    }
}
