//! Real-time recording tasks (`StartOnlineRecord`) in domain terms: their states, finish reasons
//! and what one `DescribeOnlineRecord` answer says (design §2, "Real-time recording"). Plain types,
//! no I/O, as [`crate::task`] is for push tasks.
//!
//! Source for every value: the Go SDK's `tiw/v20190919/models.go` (`DescribeOnlineRecordResponseParams`,
//! `VideoInfo`, `OmittedDuration`, `Interrupt`) and tccli's `DescribeOnlineRecord` examples.

use serde::{Deserialize, Serialize};

use crate::task::{keep_first, Failure};

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

impl RecordFacts {
    /// Folds one report in, as [`crate::task::Facts::absorb`] does for push: identities and times
    /// are kept as first known; the status only moves forward, except between RECORDING and PAUSED,
    /// where the latest report wins (a recording goes back and forth); the figures that only grow
    /// (ExceptionCnt, interrupts, pauses, the replay's length) never decrease; the result's videos
    /// are taken as the latest report lists them. An end takes the report's reason (FAILED for a
    /// failed task), and a documented reason replaces OTHER.
    pub fn absorb(&mut self, report: &RecordFacts) {
        fn grow<T: Ord + Copy>(slot: &mut Option<T>, v: Option<T>) {
            if let Some(v) = v {
                *slot = Some(slot.map_or(v, |old| old.max(v)));
            }
        }
        keep_first(&mut self.room_id, report.room_id.filter(|r| *r != 0).as_ref());
        keep_first(&mut self.group_id, report.group_id.as_ref().filter(|g| !g.is_empty()));
        keep_first(
            &mut self.record_user_id,
            report.record_user_id.as_ref().filter(|u| !u.is_empty()),
        );
        keep_first(
            &mut self.record_start_time,
            report.record_start_time.filter(|t| *t > 0).as_ref(),
        );
        keep_first(
            &mut self.record_stop_time,
            report.record_stop_time.filter(|t| *t > 0).as_ref(),
        );
        keep_first(&mut self.failure, report.failure.as_ref());
        grow(&mut self.exception_cnt, report.exception_cnt);
        grow(&mut self.stream_interrupts, report.stream_interrupts);
        grow(&mut self.paused_ms, report.paused_ms);
        grow(&mut self.total_time_ms, report.total_time_ms);
        if report.videos.is_some() {
            (self.video_bytes, self.videos) = (report.video_bytes, report.videos);
        }
        let (now, next) = (self.status, report.status);
        let back_and_forth = now != next && now.rank() == 2 && next.rank() == 2;
        if next.rank() > now.rank() || back_and_forth {
            self.status = next;
        }
        if self.status.is_ended() {
            let said = match report.status {
                RecordStatus::Failed => Some(RecordFinishReason::Failed),
                s if s.is_ended() => report.finish_reason,
                _ => None,
            };
            match (self.finish_reason, said) {
                (None | Some(RecordFinishReason::Other), Some(reason)) => self.finish_reason = Some(reason),
                (None, None) => self.finish_reason = Some(RecordFinishReason::Other),
                _ => {}
            }
        }
    }
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

    fn report(status: RecordStatus) -> RecordFacts {
        RecordFacts {
            status,
            ..Default::default()
        }
    }

    /// Forward only, but RECORDING and PAUSED back and forth; figures that only grow never
    /// shrink; the reason of the end, OTHER replaced by a documented one, FAILED for a failure.
    #[test]
    fn a_recording_absorbs_its_reports() {
        let mut f = RecordFacts::default();
        f.absorb(&RecordFacts {
            room_id: Some(880528),
            record_user_id: Some("tic_record_user_880528_1".into()),
            exception_cnt: Some(2),
            ..report(RecordStatus::Recording)
        });
        f.absorb(&report(RecordStatus::Paused));
        assert_eq!(f.status, RecordStatus::Paused);
        f.absorb(&RecordFacts {
            exception_cnt: Some(1),
            paused_ms: Some(60_000),
            ..report(RecordStatus::Recording)
        });
        assert_eq!(
            (f.status, f.exception_cnt, f.paused_ms),
            (RecordStatus::Recording, Some(2), Some(60_000))
        );
        f.absorb(&RecordFacts {
            room_id: Some(1),
            ..report(RecordStatus::Prepared)
        });
        assert_eq!(
            (f.status, f.room_id),
            (RecordStatus::Recording, Some(880528)),
            "never back"
        );
        // Ended without a documented reason, then the documented one arrives with FINISHED.
        f.absorb(&report(RecordStatus::Stopped));
        assert_eq!(f.finish_reason, Some(RecordFinishReason::Other));
        f.absorb(&report(RecordStatus::Paused));
        assert_eq!(f.status, RecordStatus::Stopped, "an ended recording does not resume");
        f.absorb(&RecordFacts {
            finish_reason: Some(RecordFinishReason::ForceStop),
            videos: Some(2),
            video_bytes: Some(4096),
            ..report(RecordStatus::Finished)
        });
        assert_eq!(
            (f.status, f.finish_reason, f.videos, f.video_bytes),
            (
                RecordStatus::Finished,
                Some(RecordFinishReason::ForceStop),
                Some(2),
                Some(4096)
            )
        );
        f.absorb(&RecordFacts {
            finish_reason: Some(RecordFinishReason::Auto),
            ..report(RecordStatus::Finished)
        });
        assert_eq!(
            f.finish_reason,
            Some(RecordFinishReason::ForceStop),
            "a documented reason stays"
        );
        let mut failed = RecordFacts::default();
        failed.absorb(&report(RecordStatus::Failed));
        assert_eq!(failed.finish_reason, Some(RecordFinishReason::Failed));
    }

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
