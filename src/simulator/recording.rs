//! Real-time recording tasks as Tencent runs them, for DescribeOnlineRecord and the `OnlineRecord`
//! running list. Every behaviour names its source:
//! - states PREPARED → RECORDING ⇄ PAUSED → STOPPED (processing and uploading the video) →
//!   FINISHED, and the four finish reasons: the Go SDK's `DescribeOnlineRecordResponseParams`
//!   (tiw/v20190919/models.go);
//! - FORCE_STOP after a pause of over 90 minutes or a recording of over 24 hours: the same
//!   `FinishReason` doc ("暂停超过90分钟或者录制总时长超过24小时");
//! - AUTO after `AutoStopTimeout` (300 s by default) without upstream: `StartOnlineRecordRequest`;
//! - a failed task answers `FailedOperation.Record` with the reason in its Message, and the reply
//!   of a FINISHED task carries `VideoInfos`, `OmittedDurations`, `Interrupts`: tccli's two
//!   DescribeOnlineRecord examples (tests/fixtures/online-record-examples.json);
//! - `InvalidParameter.TaskNotFound` for an unknown id: the Go SDK's DescribeOnlineRecord error list.
//!
//! What no source says, chosen here and not relied on by the exporter: how DescribeRunningTasks
//! lists a recording in each state. PREPARED is listed QUEUED, RECORDING, PAUSED and STOPPED
//! PROCESSING (the task is still at work until its result exists), FINISHED and failed ones
//! FINISHED only with `SimConfig::list_finished`.

use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Value};

use super::reply::{envelope, error};
use super::{unix_now, Shared, Simulator, World};

/// The longest pause Tencent lets a recording take before it stops it (FORCE_STOP).
pub const MAX_PAUSE: Duration = Duration::from_secs(90 * 60);
/// The longest recording Tencent lets run (FORCE_STOP).
pub const MAX_RECORDING: Duration = Duration::from_secs(24 * 3600);

/// Unix milliseconds now (pauses are timed to the millisecond, as `OmittedDurations` reports them).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Status of a simulated recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimRecordStatus {
    Prepared,
    Recording,
    Paused,
    /// Recording over; the video is being processed and uploaded.
    Stopped,
    Finished,
    /// DescribeOnlineRecord answers `FailedOperation.Record`.
    Failed,
}

impl SimRecordStatus {
    /// Preparing, recording or paused.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            SimRecordStatus::Prepared | SimRecordStatus::Recording | SimRecordStatus::Paused
        )
    }

    /// Nothing more will happen to it.
    pub fn is_over(self) -> bool {
        matches!(self, SimRecordStatus::Finished | SimRecordStatus::Failed)
    }

    fn as_tencent(self) -> &'static str {
        match self {
            SimRecordStatus::Prepared => "PREPARED",
            SimRecordStatus::Recording => "RECORDING",
            SimRecordStatus::Paused => "PAUSED",
            SimRecordStatus::Stopped => "STOPPED",
            SimRecordStatus::Finished | SimRecordStatus::Failed => "FINISHED",
        }
    }

    /// How the running list shows it (see the module doc: the simulator's choice).
    pub(crate) fn listed(self) -> &'static str {
        match self {
            SimRecordStatus::Prepared => "QUEUED",
            SimRecordStatus::Recording | SimRecordStatus::Paused | SimRecordStatus::Stopped => "PROCESSING",
            SimRecordStatus::Finished | SimRecordStatus::Failed => "FINISHED",
        }
    }
}

/// One simulated recording task, with Tencent's fields.
#[derive(Debug, Clone)]
pub struct SimRecord {
    pub task_id: String,
    pub sdk_app_id: u64,
    pub room_id: i64,
    pub group_id: String,
    pub record_user_id: String,
    pub status: SimRecordStatus,
    /// AUTO, USER_CALL, EXCEPTION or FORCE_STOP once stopped.
    pub finish_reason: Option<&'static str>,
    pub record_start_time: i64,
    pub record_stop_time: i64,
    pub exception_cnt: i64,
    /// Pauses: unix milliseconds paused and resumed (`None` while paused).
    pub pauses: Vec<(i64, Option<i64>)>,
    /// Stream interruptions per user.
    pub interrupts: Vec<(String, i64)>,
    /// The result's videos once FINISHED: (bytes, milliseconds, VideoType).
    pub videos: Vec<(i64, i64, i64)>,
    pub create_time: i64,
    pub failed_message: String,
    /// Drives the task when it runs on its own (demo); `None` for tasks a test moves by hand.
    pub plan: Option<RecordPlan>,
    pub(crate) created: std::time::Instant,
}

/// The course of one recording, relative to its creation: prepare, record (with a pause in the
/// middle if `pause_for` is set), end for `reason` (or fail), upload.
#[derive(Debug, Clone, Copy)]
pub struct RecordPlan {
    pub prepare_for: Duration,
    pub record_for: Duration,
    pub pause_for: Option<Duration>,
    /// AUTO, USER_CALL, EXCEPTION or FORCE_STOP; `None`: fails while preparing.
    pub reason: Option<&'static str>,
    pub upload_for: Duration,
    pub exceptions: i64,
    pub interrupts: i64,
}

impl SimRecord {
    fn new(sdk_app_id: u64, room_id: i64, task_id: String) -> SimRecord {
        SimRecord {
            record_user_id: format!("tic_record_user_{room_id}_{}", &task_id[..4]),
            task_id,
            sdk_app_id,
            room_id,
            group_id: room_id.to_string(),
            status: SimRecordStatus::Prepared,
            finish_reason: None,
            record_start_time: 0,
            record_stop_time: 0,
            exception_cnt: 0,
            pauses: Vec::new(),
            interrupts: Vec::new(),
            videos: Vec::new(),
            create_time: unix_now(),
            failed_message: String::new(),
            plan: None,
            created: std::time::Instant::now(),
        }
    }

    /// Milliseconds of the replay: recorded time, pauses left out.
    fn total_time_ms(&self) -> i64 {
        if self.record_start_time == 0 {
            return 0;
        }
        let end = if self.record_stop_time > 0 {
            self.record_stop_time
        } else {
            unix_now()
        };
        let paused: i64 = self.pauses.iter().map(|(p, r)| r.unwrap_or(end * 1000) - p).sum();
        ((end - self.record_start_time) * 1000 - paused).max(0)
    }

    /// The DescribeOnlineRecord reply of this task (not of a failed one: that is an error).
    fn reply(&self) -> Value {
        let stopped = matches!(self.status, SimRecordStatus::Stopped | SimRecordStatus::Finished);
        let finished = self.status == SimRecordStatus::Finished;
        json!({
            "TaskId": self.task_id,
            "Status": self.status.as_tencent(),
            "FinishReason": self.finish_reason.filter(|_| stopped).unwrap_or(""),
            "RoomId": self.room_id,
            "GroupId": self.group_id,
            "RecordUserId": self.record_user_id,
            "RecordStartTime": self.record_start_time,
            "RecordStopTime": self.record_stop_time,
            "TotalTime": self.total_time_ms(),
            "ExceptionCnt": self.exception_cnt,
            "OmittedDurations": self.pauses.iter().filter_map(|(p, r)| Some(json!({
                "VideoTime": (p / 1000 - self.record_start_time).max(0) * 1000,
                "PauseTime": p,
                "ResumeTime": (*r)?,
            }))).collect::<Vec<_>>(),
            "VideoInfos": if finished { self.videos.iter().enumerate().map(|(i, (size, ms, ty))| json!({
                "VideoPlayTime": 0,
                "VideoSize": size,
                "VideoFormat": if *ty == 4 { "mp3" } else { "mp4" },
                "VideoDuration": ms,
                "VideoUrl": format!("http://online-recording.file.myqcloud.com/{}/{i}.mp4", self.task_id),
                "VideoId": format!("{}{i}", self.task_id),
                "VideoType": ty,
                "UserId": "",
                "Width": 1280,
                "Height": 720,
            })).collect::<Vec<_>>() } else { Vec::new() },
            "ReplayUrl": null,
            "Interrupts": self.interrupts.iter().map(|(u, n)| json!({"UserId": u, "Count": n})).collect::<Vec<_>>(),
        })
    }
}

/// The events a move of `t` from `before` produces, as Tencent's "Real-Time Recording
/// Event" page documents them: `OnlineRecordStarted` and `OnlineRecordStopped` (TaskId, RoomId,
/// RecordUserId) and `OnlineRecordFinished` with the result. A failed task produces none (the
/// page documents no event for it). `TotalTime` is sent in milliseconds, as DescribeOnlineRecord
/// answers it: the event page calls it "a Unix timestamp in seconds", which cannot be right for a
/// length.
fn events_for(before: SimRecordStatus, t: &SimRecord) -> Vec<super::callbacks::Pending> {
    use SimRecordStatus::*;
    let short = || json!({"TaskId": t.task_id, "RoomId": t.room_id, "RecordUserId": t.record_user_id});
    // Every event the move passes, in order (a tick may take a task through several states).
    let mut events = Vec::new();
    if before == Prepared && t.status != Failed && t.record_start_time > 0 {
        events.push(("OnlineRecordStarted", short()));
    }
    if before.is_active() && matches!(t.status, Stopped | Finished) {
        events.push(("OnlineRecordStopped", short()));
    }
    if before != Finished && t.status == Finished {
        let mut data = t.reply();
        if let Some(obj) = data.as_object_mut() {
            obj.remove("Status");
            obj.remove("ReplayUrl");
        }
        events.push(("OnlineRecordFinished", data));
    }
    events
        .into_iter()
        .map(|(event_type, data)| super::callbacks::Pending {
            app: t.sdk_app_id,
            body: json!({
                "EventType": event_type,
                "EventData": data,
                "SdkAppId": t.sdk_app_id,
                "Timestamp": unix_now(),
            }),
            key: None,
            record: true,
        })
        .collect()
}

/// Moves `t` with `f`, then as Tencent's limits would (FORCE_STOP), and sends the events the move
/// produced: the one way a recording changes, by hand, by its plan or when it is read.
pub(crate) fn move_record(shared: &Shared, t: &mut SimRecord, f: impl FnOnce(&mut SimRecord)) {
    let before = t.status;
    f(t);
    lifecycle::enforce_limits(t, shared.config.record_limits, now_ms());
    for event in events_for(before, t) {
        shared.send(Some(event));
    }
}

/// Moves a recording by hand: what StartOnlineRecord's service, Pause/Resume/StopOnlineRecord and
/// Tencent's own limits do to it.
pub mod lifecycle {
    use super::*;

    /// The recorder joined and records.
    pub fn start(t: &mut SimRecord) {
        if t.status == SimRecordStatus::Prepared {
            t.status = SimRecordStatus::Recording;
            t.record_start_time = unix_now();
        }
    }

    /// PauseOnlineRecord.
    pub fn pause(t: &mut SimRecord) {
        if t.status == SimRecordStatus::Recording {
            t.status = SimRecordStatus::Paused;
            t.pauses.push((now_ms(), None));
        }
    }

    /// ResumeOnlineRecord.
    pub fn resume(t: &mut SimRecord) {
        if t.status == SimRecordStatus::Paused {
            t.status = SimRecordStatus::Recording;
            if let Some(last) = t.pauses.last_mut() {
                last.1 = Some(now_ms());
            }
        }
    }

    /// The recording ends for `reason` (AUTO, USER_CALL, EXCEPTION, FORCE_STOP); the upload begins.
    pub fn stop(t: &mut SimRecord, reason: &'static str) {
        if matches!(
            t.status,
            SimRecordStatus::Prepared | SimRecordStatus::Recording | SimRecordStatus::Paused
        ) {
            if t.status == SimRecordStatus::Paused {
                resume(t);
            }
            t.status = SimRecordStatus::Stopped;
            t.finish_reason = Some(reason);
            t.record_stop_time = unix_now();
        }
    }

    /// The upload is done: the result's videos exist.
    pub fn finish(t: &mut SimRecord) {
        if t.status == SimRecordStatus::Stopped {
            t.status = SimRecordStatus::Finished;
            let ms = t.total_time_ms();
            // A whiteboard video and a mixed stream, ~40 KB per second each after the container's header.
            let bytes = 4096 + ms * 40;
            t.videos = vec![(bytes, ms, 2), (bytes, ms, 3)];
        }
    }

    /// The task fails (`FailedOperation.Record`, e.g. "im login failed").
    pub fn fail(t: &mut SimRecord, message: &str) {
        if !matches!(t.status, SimRecordStatus::Finished) {
            t.status = SimRecordStatus::Failed;
            t.failed_message = message.to_string();
        }
    }

    /// Tencent's limits: FORCE_STOP after a pause over [`MAX_PAUSE`] or a recording over
    /// [`MAX_RECORDING`] (both shortened by the simulator's `record_limits` for tests).
    pub fn enforce_limits(t: &mut SimRecord, (max_pause, max_recording): (Duration, Duration), now_ms: i64) {
        let paused_too_long = t.status == SimRecordStatus::Paused
            && t.pauses
                .last()
                .is_some_and(|(p, _)| now_ms - p > max_pause.as_millis() as i64);
        let too_long = matches!(t.status, SimRecordStatus::Recording | SimRecordStatus::Paused)
            && now_ms - t.record_start_time * 1000 > max_recording.as_millis() as i64;
        if paused_too_long || too_long {
            stop(t, "FORCE_STOP");
        }
    }
}

/// Moves a planned recording to where its plan says it is at `now`.
pub(crate) fn advance(t: &mut SimRecord, now: std::time::Instant) {
    let Some(plan) = t.plan else { return };
    let age = now.duration_since(t.created);
    if t.status == SimRecordStatus::Prepared && age >= plan.prepare_for {
        match plan.reason {
            // The message of tccli's failed example.
            None => lifecycle::fail(
                t,
                "code: 40004, msg: im login failed with code 6206, desc UserSig expired",
            ),
            Some(_) => lifecycle::start(t),
        }
    }
    let recorded = age.saturating_sub(plan.prepare_for);
    if matches!(t.status, SimRecordStatus::Recording | SimRecordStatus::Paused) {
        if let Some(pause) = plan.pause_for {
            let from = plan.record_for / 2;
            if t.status == SimRecordStatus::Recording && recorded >= from && t.pauses.is_empty() {
                lifecycle::pause(t);
            } else if t.status == SimRecordStatus::Paused && recorded >= from + pause {
                lifecycle::resume(t);
            }
        }
        let share = (recorded.as_secs_f64() / plan.record_for.as_secs_f64().max(0.001)).min(1.0);
        t.exception_cnt = t.exception_cnt.max((plan.exceptions as f64 * share).floor() as i64);
        let interrupted = (plan.interrupts as f64 * share).floor() as i64;
        if interrupted > 0 {
            t.interrupts = vec![(format!("teacher_{}", t.room_id), interrupted)];
        }
        let length = plan.record_for + plan.pause_for.unwrap_or_default();
        if recorded >= length {
            lifecycle::stop(t, plan.reason.unwrap_or("AUTO"));
        }
    }
    let length = plan.prepare_for + plan.record_for + plan.pause_for.unwrap_or_default();
    if t.status == SimRecordStatus::Stopped && age >= length + plan.upload_for {
        lifecycle::finish(t);
    }
}

impl Simulator {
    /// Creates a recording task, PREPARED (StartOnlineRecord), moved by hand with
    /// [`Simulator::update_record`].
    pub fn create_record(&self, sdk_app_id: u64, room_id: i64) -> String {
        self.create_record_with(sdk_app_id, room_id, None)
    }

    /// Creates a recording that runs through `plan` on its own (needs
    /// [`Simulator::spawn_lifecycle`]).
    pub fn create_record_with(&self, sdk_app_id: u64, room_id: i64, plan: Option<RecordPlan>) -> String {
        let task_id = super::random_task_id();
        let mut record = SimRecord::new(sdk_app_id, room_id, task_id.clone());
        record.plan = plan;
        self.shared.world().records.insert(task_id.clone(), record);
        task_id
    }

    /// Changes a recording by hand (see [`lifecycle`]); false when there is no such task.
    pub fn update_record(&self, task_id: &str, f: impl FnOnce(&mut SimRecord)) -> bool {
        let mut world = self.shared.world();
        let Some(t) = world.records.get_mut(task_id) else {
            return false;
        };
        move_record(&self.shared, t, f);
        true
    }

    /// The recording feature's callback URL and key of an app (SetOnlineRecordCallback(Key)).
    pub fn record_callback(&self, sdk_app_id: u64) -> (String, String) {
        self.shared
            .world()
            .record_callbacks
            .get(&sdk_app_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Registers the recording feature's callback URL and key of an app, as a school's backend
    /// would have with SetOnlineRecordCallback(Key).
    pub fn set_record_callback(&self, sdk_app_id: u64, url: &str, key: &str) {
        self.shared
            .world()
            .record_callbacks
            .insert(sdk_app_id, (url.to_string(), key.to_string()));
    }

    /// A copy of one recording task.
    pub fn record(&self, task_id: &str) -> Option<SimRecord> {
        self.shared.world().records.get(task_id).cloned()
    }
}

/// DescribeOnlineRecord.
pub(crate) fn describe(shared: &Shared, app: u64, params: &Value, rid: &str) -> Response {
    let Some(task_id) = params.get("TaskId").and_then(Value::as_str) else {
        return error(
            "MissingParameter",
            "The request is missing a required parameter `TaskId`.",
            rid,
        );
    };
    let mut world = shared.world();
    let Some(t) = world.records.get_mut(task_id).filter(|t| t.sdk_app_id == app) else {
        return error("InvalidParameter.TaskNotFound", "The task does not exist.", rid);
    };
    // Tencent's limits apply whether or not anyone moved the task since.
    move_record(shared, t, |_| {});
    if t.status == SimRecordStatus::Failed {
        return error("FailedOperation.Record", &t.failed_message, rid);
    }
    envelope(t.reply(), rid)
}

/// The `OnlineRecord` running list's items of `app`: (create time, id, status as listed).
pub(crate) fn listed(world: &World, app: u64, list_finished: bool) -> Vec<(i64, String, &'static str, i64)> {
    world
        .records
        .values()
        .filter(|t| t.sdk_app_id == app)
        .map(|t| (t.create_time, t.task_id.clone(), t.status.listed(), t.room_id))
        .filter(|(_, _, status, _)| list_finished || *status != "FINISHED")
        .collect()
}
