//! Real-time recording tasks (`StartOnlineRecord`) in domain terms: their states, finish reasons
//! and what one `DescribeOnlineRecord` answer says (design §2, "Real-time recording"). Plain types,
//! no I/O, as [`crate::task`] is for push tasks.
//!
//! Source for every value: the Go SDK's `tiw/v20190919/models.go` (`DescribeOnlineRecordResponseParams`,
//! `VideoInfo`, `OmittedDuration`, `Interrupt`) and tccli's `DescribeOnlineRecord` examples.

use serde::{Deserialize, Serialize};

use crate::task::Failure;

/// `Status` of a recording task, plus FAILED (DescribeOnlineRecord answers `FailedOperation.Record`)
/// and UNKNOWN (not read yet).
///
/// PREPARED: joining the room, starting the recorder; RECORDING; PAUSED (PauseOnlineRecord);
/// STOPPED: recording over, "正在处理并上传视频" (the video is processed and uploaded); FINISHED: the
/// result is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RecordStatus {
    Prepared,
    Recording,
    Paused,
    Stopped,
    Finished,
    Failed,
    #[default]
    Unknown,
}

impl RecordStatus {
    pub const ALL: [RecordStatus; 7] = [
        RecordStatus::Prepared,
        RecordStatus::Recording,
        RecordStatus::Paused,
        RecordStatus::Stopped,
        RecordStatus::Finished,
        RecordStatus::Failed,
        RecordStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Prepared => "PREPARED",
            RecordStatus::Recording => "RECORDING",
            RecordStatus::Paused => "PAUSED",
            RecordStatus::Stopped => "STOPPED",
            RecordStatus::Finished => "FINISHED",
            RecordStatus::Failed => "FAILED",
            RecordStatus::Unknown => "UNKNOWN",
        }
    }

    /// Tencent's `Status`; anything else says nothing the exporter can act on.
    pub fn from_tencent(s: &str) -> Option<RecordStatus> {
        match s {
            "PREPARED" => Some(RecordStatus::Prepared),
            "RECORDING" => Some(RecordStatus::Recording),
            "PAUSED" => Some(RecordStatus::Paused),
            "STOPPED" => Some(RecordStatus::Stopped),
            "FINISHED" => Some(RecordStatus::Finished),
            _ => None,
        }
    }

    /// How far along the task is. RECORDING and PAUSED share a rank: a recording goes back and
    /// forth between them (PauseOnlineRecord, ResumeOnlineRecord).
    pub fn rank(self) -> u8 {
        match self {
            RecordStatus::Unknown => 0,
            RecordStatus::Prepared => 1,
            RecordStatus::Recording | RecordStatus::Paused => 2,
            RecordStatus::Stopped => 3,
            RecordStatus::Finished | RecordStatus::Failed => 4,
        }
    }

    /// The recording is over (the upload may still be under way: STOPPED).
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            RecordStatus::Stopped | RecordStatus::Finished | RecordStatus::Failed
        )
    }

    /// Nothing more will change: the result is there, or never will be.
    pub fn is_final(self) -> bool {
        matches!(self, RecordStatus::Finished | RecordStatus::Failed)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a recording ended: Tencent's four `FinishReason`s, FAILED for a task that failed, OTHER for
/// an end whose reason is missing or undocumented.
///
/// AUTO: nothing was sent in the room for a long time (`AutoStopTimeout`, 300 s by default);
/// USER_CALL: StopOnlineRecord; EXCEPTION: the recording ended abnormally; FORCE_STOP: paused for over
/// 90 minutes, or recording for over 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordFinishReason {
    Auto,
    UserCall,
    Exception,
    ForceStop,
    Failed,
    Other,
}

impl RecordFinishReason {
    pub const ALL: [RecordFinishReason; 6] = [
        RecordFinishReason::Auto,
        RecordFinishReason::UserCall,
        RecordFinishReason::Exception,
        RecordFinishReason::ForceStop,
        RecordFinishReason::Failed,
        RecordFinishReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordFinishReason::Auto => "AUTO",
            RecordFinishReason::UserCall => "USER_CALL",
            RecordFinishReason::Exception => "EXCEPTION",
            RecordFinishReason::ForceStop => "FORCE_STOP",
            RecordFinishReason::Failed => "FAILED",
            RecordFinishReason::Other => "OTHER",
        }
    }

    /// The reason of an end: a documented value, else OTHER.
    pub fn of_end(s: Option<&str>) -> RecordFinishReason {
        match s {
            Some("AUTO") => RecordFinishReason::Auto,
            Some("USER_CALL") => RecordFinishReason::UserCall,
            Some("EXCEPTION") => RecordFinishReason::Exception,
            Some("FORCE_STOP") => RecordFinishReason::ForceStop,
            _ => RecordFinishReason::Other,
        }
    }

    /// An end that may have cost a class its recording.
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            RecordFinishReason::Exception | RecordFinishReason::ForceStop | RecordFinishReason::Failed
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What one DescribeOnlineRecord answer (or a recording callback) says about a task. `Unknown` and
/// `None` mean "not said".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordFacts {
    #[serde(default)]
    pub status: RecordStatus,
    pub finish_reason: Option<RecordFinishReason>,
    pub room_id: Option<i64>,
    pub group_id: Option<String>,
    pub record_user_id: Option<String>,
    /// Unix seconds.
    pub record_start_time: Option<i64>,
    pub record_stop_time: Option<i64>,
    /// `TotalTime`: the length of the replay, in milliseconds.
    pub total_time_ms: Option<i64>,
    pub exception_cnt: Option<u64>,
    /// Sum of `VideoInfos[].VideoSize`, bytes, and how many videos there are.
    pub video_bytes: Option<u64>,
    pub videos: Option<u64>,
    /// Sum of `ResumeTime − PauseTime` over `OmittedDurations`, milliseconds. Tencent fills
    /// `OmittedDurations` only when video concatenation is on ("只有开启视频拼接功能的时候，这个参数才是
    /// 有效的"): without it, nothing is said.
    pub paused_ms: Option<i64>,
    /// Sum of `Interrupts[].Count`: stream interruptions over every user.
    pub stream_interrupts: Option<u64>,
    /// Why it failed (`FailedOperation.Record`), as Tencent said it.
    #[serde(default)]
    pub failure: Option<Box<Failure>>,
}

/// One answer of DescribeOnlineRecord, in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordAnswer {
    /// A success reply (its `Status` may be missing: then nothing is said of the state).
    State(RecordFacts),
    /// `FailedOperation.Record`: the task failed; Tencent's message says why.
    Failed(String),
    /// `InvalidParameter.TaskNotFound`.
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_read_as_tencent_writes_them() {
        for s in RecordStatus::ALL {
            if !matches!(s, RecordStatus::Failed | RecordStatus::Unknown) {
                assert_eq!(RecordStatus::from_tencent(s.as_str()), Some(s));
            }
        }
        assert_eq!(RecordStatus::from_tencent("recording"), None);
        assert_eq!(RecordStatus::Recording.rank(), RecordStatus::Paused.rank());
        assert!(RecordStatus::Stopped.is_ended() && !RecordStatus::Stopped.is_final());
        for r in RecordFinishReason::ALL {
            if !matches!(r, RecordFinishReason::Failed | RecordFinishReason::Other) {
                assert_eq!(RecordFinishReason::of_end(Some(r.as_str())), r);
            }
        }
        assert_eq!(RecordFinishReason::of_end(Some("")), RecordFinishReason::Other);
        assert_eq!(RecordFinishReason::of_end(None), RecordFinishReason::Other);
    }
}
